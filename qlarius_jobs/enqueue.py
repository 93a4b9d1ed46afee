"""Enqueueing from application code, inside the caller's transaction.

The job exists only if the caller's transaction commits, and sees what it committed.
"""

from __future__ import annotations

from psycopg import AsyncConnection

from qlarius_jobs import sql_files
from qlarius_jobs.jobs import defer_job
from qlarius_jobs.validation import positive_id


async def trigger_population(conn: AsyncConnection, target_id: int) -> int | None:
    """Mark the target 'populating' and defer ``populate_target``, in one transaction.

    Returns the job id. Raises ``LookupError`` (and changes nothing) for an unknown target.
    """
    target_id = positive_id("target_id", target_id)
    async with conn.transaction():
        row = await sql_files.fetch_one(conn, "mark_target_populating", target_id=target_id)
        if row is None:
            raise LookupError(f"target {target_id} does not exist")
        return await defer_job(conn, "populate_target", target_id=target_id)


async def notify_tags_changed(conn: AsyncConnection, me_file_id: int) -> int | None:
    """Defer the MeFile's sync; a no-op (None) when one is already waiting."""
    me_file_id = positive_id("me_file_id", me_file_id)
    return await defer_job(conn, "sync_me_file_to_target_populations", me_file_id=me_file_id)


async def offer_campaign(conn: AsyncConnection, campaign_id: int) -> int | None:
    """Defer ``create_initial_pending_offers`` for a launched campaign."""
    campaign_id = positive_id("campaign_id", campaign_id)
    return await defer_job(conn, "create_initial_pending_offers", campaign_id=campaign_id)
