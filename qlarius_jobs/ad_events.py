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

    The event copies its offer, snapshot included. An offer without a snapshot gets one first
    (its population's, else computed from the MeFile's tags), and that is logged. Amounts
    default to the offer's. Never waits for a job: an offer that a reconcile is deleting right
    now raises ``LookupError`` at once, as does an unknown offer.
    """
    offer_id = positive_id("offer_id", offer_id)
    async with callers_transaction(conn):
        offer = await sql_files.fetch_one(conn, "offer_for_ad_event", offer_id=offer_id)
        if offer is None:
            present = await sql_files.fetch_one(conn, "offer_exists", offer_id=offer_id)
            if present and present["present"]:
                raise LookupError(
                    f"offer {offer_id} is being withdrawn (its MeFile left the band); "
                    "no ad event recorded"
                )
            raise LookupError(f"offer {offer_id} does not exist; no ad event recorded")
        computed = None
        if offer["matching_tags_snapshot"] is None:
            row = await sql_files.fetch_one(conn, "population_snapshot_of_offer", offer_id=offer_id)
            computed = row["snapshot"] if row else None
            if computed is None:
                pair = (offer["me_file_id"], offer["target_band_id"])
                computed = (await snapshot.compute_snapshots(conn, [pair]))[pair]
            await sql_files.execute(
                conn, "set_offer_snapshot_if_free", offer_id=offer_id, snapshot=Jsonb(computed)
            )
            log.warning(
                f"offer {offer_id} had no snapshot; computed it before recording the ad event",
                offer_id=offer_id,
                from_population=bool(row and row["snapshot"] is not None),
            )
        row = await sql_files.fetch_one(
            conn,
            "insert_ad_event",
            offer_id=offer_id,
            is_offer_complete=is_offer_complete,
            offer_amt=offer_amt,
            marketer_cost_amt=marketer_cost_amt,
            snapshot=Jsonb(computed) if computed is not None else None,
        )
    assert row is not None and row["matching_tags_snapshot"] is not None
    return int(row["id"])
