"""Offers: the initial pending offers of a campaign, and a MeFile's reconciliation."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import AwareDatetime, Field, PositiveInt

from qlarius_jobs import snapshot, sql_files
from qlarius_jobs.jobs import JobArgs, JobGaveUp, JobRun, MeFileArgs, defer_job, job_task
from qlarius_jobs.settings import get_settings


class CampaignArgs(JobArgs):
    campaign_id: PositiveInt
    # Set by the job itself when it re-defers while the target is not populated yet; JSON
    # carries it as ISO text, hence not strict.
    waiting_since: AwareDatetime | None = Field(default=None, strict=False)


async def _fill_populations_behind_offers(
    conn: Any, *, campaign_id: int | None = None, me_file_id: int | None = None
) -> int:
    """An offer is never created with a NULL snapshot: fill its population's first."""
    missing = await sql_files.fetch_all(
        conn,
        "eligible_populations_missing_snapshot",
        campaign_id=campaign_id,
        me_file_id=me_file_id,
    )
    return await snapshot.fill_missing_population_snapshots(conn, [r["id"] for r in missing])


@job_task(
    name="create_initial_pending_offers",
    queue="default",
    args_model=CampaignArgs,
    attempts=5,
    timeout_seconds=600,
)
async def create_initial_pending_offers(run: JobRun, args: CampaignArgs) -> dict[str, Any]:
    """One pending offer per population whose band has a bid, copying its snapshot.

    Until the target is populated, the job defers itself again (3 minutes by default) and
    gives up with an error after an hour.
    """
    settings = get_settings()
    async with run.transaction() as conn:
        campaign = await sql_files.fetch_one(
            conn, "campaign_for_offers", campaign_id=args.campaign_id
        )
        if campaign is None:
            run.log.warning(
                f"campaign {args.campaign_id} not found; no offers created",
                campaign_id=args.campaign_id,
            )
            return {"campaign_id": args.campaign_id, "found": False}
        if campaign["deactivated_at"] is not None or campaign["launched_at"] is None:
            run.log.warning(
                f"campaign {args.campaign_id} is not live (not launched or deactivated); "
                "no offers created",
                campaign_id=args.campaign_id,
            )
            return {"campaign_id": args.campaign_id, "live": False, "created": 0}
        if campaign["population_status"] != "populated":
            now = dt.datetime.now(dt.UTC)
            waiting_since = args.waiting_since or now
            waited = (now - waiting_since).total_seconds()
            if waited >= settings.offers_give_up_after_seconds:
                raise JobGaveUp(
                    f"campaign {args.campaign_id}: target {campaign['target_id']} still not "
                    f"populated after {int(waited)} s; giving up"
                )
            next_job = await defer_job(
                conn,
                "create_initial_pending_offers",
                schedule_in={"seconds": settings.offers_retry_delay_seconds},
                campaign_id=args.campaign_id,
                waiting_since=waiting_since.isoformat(),
            )
            run.log.warning(
                f"target {campaign['target_id']} of campaign {args.campaign_id} is not "
                f"populated yet ({campaign['population_status']}); trying again in "
                f"{settings.offers_retry_delay_seconds} s",
                campaign_id=args.campaign_id,
                target_id=campaign["target_id"],
                next_job_id=next_job,
                waited_s=int(waited),
            )
            return {"campaign_id": args.campaign_id, "created": 0, "rescheduled": True}
        filled = await _fill_populations_behind_offers(conn, campaign_id=args.campaign_id)
        created = await sql_files.execute(
            conn,
            "create_eligible_offers",
            campaign_id=args.campaign_id,
            me_file_id=None,
            pending_seconds=settings.offer_pending_seconds,
        )
    return {"campaign_id": args.campaign_id, "created": created, "snapshots_filled": filled}


@job_task(
    name="reconcile_offers_for_me_file", queue="offers", args_model=MeFileArgs, timeout_seconds=120
)
async def reconcile_offers_for_me_file(run: JobRun, args: MeFileArgs) -> dict[str, Any]:
    """Delete the MeFile's offers that are no longer eligible, then create the missing ones.

    Deleting first matters: a MeFile that moved to another band of the same campaign keeps
    the same (campaign, me_file, media_run) key, so the new offer can only exist once the old
    one is gone.
    """
    async with run.transaction() as conn:
        if await sql_files.fetch_one(conn, "me_file_exists", me_file_id=args.me_file_id) is None:
            run.log.warning(
                f"me_file {args.me_file_id} not found; no offers reconciled",
                me_file_id=args.me_file_id,
            )
            return {"me_file_id": args.me_file_id, "found": False}
        deleted = await sql_files.execute(
            conn, "delete_ineligible_offers", me_file_id=args.me_file_id
        )
        filled = await _fill_populations_behind_offers(conn, me_file_id=args.me_file_id)
        created = await sql_files.execute(
            conn,
            "create_eligible_offers",
            campaign_id=None,
            me_file_id=args.me_file_id,
            pending_seconds=get_settings().offer_pending_seconds,
        )
    return {
        "me_file_id": args.me_file_id,
        "deleted": deleted,
        "created": created,
        "snapshots_filled": filled,
    }
