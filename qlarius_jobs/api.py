"""What application code calls: enqueueing and ad events, inside the caller's transaction.

Each function runs its statements on the caller's connection and never commits for it: in an
open transaction, or on a non-autocommit connection (whose first statement opens the
transaction the caller then commits or rolls back), the work exists only if the caller
commits. On an autocommit connection outside any transaction there is no caller's
transaction to join; the function then runs in a short one of its own, committed at once.

Tag changes need no call at all: a trigger on ``me_file_tags`` records every committed
change (``notify_tags_changed`` remains for changes made with triggers disabled, or to force
a MeFile's sync). Bad ids are refused with a one-line ``ValueError``, unknown rows with
``LookupError``; either way nothing is written.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from qlarius_jobs import snapshots
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs import drains
from qlarius_jobs.jobs.arguments import row_id
from qlarius_jobs.jobs.catalog import defer_job
from qlarius_jobs.logs import get_logger

log = get_logger(__name__)

SQL = QueryFile.of(__file__)


@contextlib.asynccontextmanager
async def callers_transaction(conn: AsyncConnection) -> AsyncIterator[None]:
    """Join the caller's transaction; only an autocommit connection with none open gets one
    of its own (``conn.transaction()`` on an idle connection would commit by itself)."""
    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        async with conn.transaction():
            yield
    else:
        yield


async def trigger_population(conn: AsyncConnection, target_id: int) -> int | None:
    """Mark the target 'populating' and defer ``populate_target``, atomically with the caller.

    Returns the job id. Raises ``LookupError`` (and changes nothing) for an unknown target.
    Never waits for a running job: jobs do not lock the ``targets`` row while they work.
    """
    target_id = row_id("target_id", target_id)
    async with callers_transaction(conn):
        row = await SQL.one(conn, "mark_target_populating", target_id=target_id)
        if row is None:
            raise LookupError(f"target {target_id} does not exist")
        return await defer_job(conn, "populate_target", target_id=target_id)


async def notify_tags_changed(conn: AsyncConnection, me_file_id: int) -> None:
    """Record that the MeFile's tags changed: its sync will run after the caller commits.

    Never refused and never waits: a change recorded while another is pending simply adds a
    row (the drain takes both at once). Raises ``LookupError`` for an unknown MeFile.
    """
    me_file_id = row_id("me_file_id", me_file_id)
    async with callers_transaction(conn):
        recorded = await drains.record_pending(conn, drains.SYNC, me_file_id)
    if not recorded:
        raise LookupError(f"me_file {me_file_id} does not exist")


async def offer_campaign(conn: AsyncConnection, campaign_id: int) -> int | None:
    """Defer ``create_initial_pending_offers`` for a launched campaign."""
    campaign_id = row_id("campaign_id", campaign_id)
    async with callers_transaction(conn):
        return await defer_job(conn, "create_initial_pending_offers", campaign_id=campaign_id)


async def record_ad_event(
    conn: AsyncConnection,
    offer_id: int,
    *,
    is_offer_complete: bool = False,
    offer_amt: Decimal | None = None,
    marketer_cost_amt: Decimal | None = None,
) -> int:
    """Record an ad event for ``offer_id`` in the caller's transaction (see above);
    return its id.

    The event copies its offer, snapshot included. An offer without a snapshot gets one first
    (its population's, else computed from the MeFile's tags), and that is logged. Amounts
    default to the offer's. Never waits for a job: an offer that a reconcile is deleting right
    now raises ``LookupError`` at once, as does an unknown offer.
    """
    offer_id = row_id("offer_id", offer_id)
    async with callers_transaction(conn):
        offer = await SQL.one(conn, "offer_for_ad_event", offer_id=offer_id)
        if offer is None:
            present = await SQL.one(conn, "offer_exists", offer_id=offer_id)
            if present and present["present"]:
                raise LookupError(
                    f"offer {offer_id} is being withdrawn (its MeFile left the band); "
                    "no ad event recorded"
                )
            raise LookupError(f"offer {offer_id} does not exist; no ad event recorded")
        computed = None
        if offer["matching_tags_snapshot"] is None:
            computed = await snapshots.give_offer_a_snapshot(conn, offer)
        row = await SQL.one(
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
