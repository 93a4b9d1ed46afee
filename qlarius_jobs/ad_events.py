"""Ad events, written by the application when a person engages with an offer."""

from __future__ import annotations

from decimal import Decimal

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from qlarius_jobs import snapshot, sql_files
from qlarius_jobs.enqueue import callers_transaction
from qlarius_jobs.logs import get_logger
from qlarius_jobs.validation import positive_id

log = get_logger(__name__)


async def record_ad_event(
    conn: AsyncConnection,
    offer_id: int,
    *,
    is_offer_complete: bool = False,
    offer_amt: Decimal | None = None,
    marketer_cost_amt: Decimal | None = None,
) -> int:
    """Record an ad event for ``offer_id`` in the caller's transaction (see ``enqueue``);
    return its id.

    The event copies its offer, snapshot included. An offer without a snapshot gets one
    first (from its population, else computed from the MeFile's tags), and that is logged.
    Amounts default to the offer's.
    """
    offer_id = positive_id("offer_id", offer_id)
    async with callers_transaction(conn):
        offer = await sql_files.fetch_one(conn, "offer_for_ad_event", offer_id=offer_id)
        if offer is None:
            raise LookupError(f"offer {offer_id} does not exist; no ad event recorded")
        if offer["matching_tags_snapshot"] is None:
            filled = await snapshot.fill_missing_copied_snapshots(conn, "offers", [offer_id])
            if not filled.updated:
                # no population to copy from (or it is being written right now): compute it
                pair = (offer["me_file_id"], offer["target_band_id"])
                computed = (await snapshot.compute_snapshots(conn, [pair]))[pair]
                await sql_files.execute(
                    conn,
                    "set_snapshot_if_missing",
                    tables={"table": "offers"},
                    id=offer_id,
                    snapshot=Jsonb(computed),
                )
            log.warning(
                f"offer {offer_id} had no snapshot; computed it before recording the ad event",
                offer_id=offer_id,
                from_population=bool(filled.updated),
            )
        row = await sql_files.fetch_one(
            conn,
            "insert_ad_event",
            offer_id=offer_id,
            is_offer_complete=is_offer_complete,
            offer_amt=offer_amt,
            marketer_cost_amt=marketer_cost_amt,
        )
    assert row is not None and row["matching_tags_snapshot"] is not None
    return int(row["id"])
