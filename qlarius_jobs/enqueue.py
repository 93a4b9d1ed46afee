"""Enqueueing from application code, inside the caller's transaction.

Each function runs its statements on the caller's connection and never commits for it: in an
open transaction, or on a non-autocommit connection (whose first statement opens the
transaction the caller then commits or rolls back), the work exists only if the caller
commits. On an autocommit connection outside any transaction there is no caller's
transaction to join; the function then runs in a short one of its own, committed at once.

Tag changes need no call at all: a trigger on ``me_file_tags`` records every committed
change (``notify_tags_changed`` remains for changes made with triggers disabled, or to force
a MeFile's sync).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus

from qlarius_jobs import drains, sql_files
from qlarius_jobs.jobs import defer_job
from qlarius_jobs.validation import positive_id


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
    target_id = positive_id("target_id", target_id)
    async with callers_transaction(conn):
        row = await sql_files.fetch_one(conn, "mark_target_populating", target_id=target_id)
        if row is None:
            raise LookupError(f"target {target_id} does not exist")
        return await defer_job(conn, "populate_target", target_id=target_id)


async def notify_tags_changed(conn: AsyncConnection, me_file_id: int) -> None:
    """Record that the MeFile's tags changed: its sync will run after the caller commits.

    Never refused and never waits: a change recorded while another is pending simply adds a
    row (the drain takes both at once). Raises ``LookupError`` for an unknown MeFile.
    """
    me_file_id = positive_id("me_file_id", me_file_id)
    async with callers_transaction(conn):
        row = await sql_files.fetch_one(
            conn, "record_pending", tables={"table": drains.SYNC.table}, me_file_id=me_file_id
        )
    if row is None:
        raise LookupError(f"me_file {me_file_id} does not exist")


async def offer_campaign(conn: AsyncConnection, campaign_id: int) -> int | None:
    """Defer ``create_initial_pending_offers`` for a launched campaign."""
    campaign_id = positive_id("campaign_id", campaign_id)
    async with callers_transaction(conn):
        return await defer_job(conn, "create_initial_pending_offers", campaign_id=campaign_id)
