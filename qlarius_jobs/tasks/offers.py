"""Offers: the initial pending offers of a campaign, and a MeFile's reconciliation."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from pydantic import AwareDatetime, Field, PositiveInt

from qlarius_jobs import drains, snapshot, sql_files
from qlarius_jobs.jobs import JobArgs, JobGaveUp, JobRun, MeFileArgs, NoArgs, defer_job, job_task
from qlarius_jobs.settings import get_settings


class CampaignArgs(JobArgs):
    campaign_id: PositiveInt
    # Set by the job itself when it re-defers while the target is not populated yet; JSON
    # carries it as ISO text, hence not strict.
    waiting_since: AwareDatetime | None = Field(default=None, strict=False)


@dataclass(frozen=True)
class OfferChanges:
    deleted: int
    created: int
    refreshed: int
    snapshots_filled: int
    blocked: frozenset[int]  # MeFiles with an offer locked elsewhere: left for a later batch

    def counts(self) -> dict[str, int]:
        return {
            "deleted": self.deleted,
            "created": self.created,
            "refreshed": self.refreshed,
            "snapshots_filled": self.snapshots_filled,
        }


async def reconcile_offers(
    conn: AsyncConnection,
    *,
    free_targets: list[int],
    me_file_ids: list[int] | None = None,
    campaign_id: int | None = None,
) -> OfferChanges:
    """Make the offers of some MeFiles (or of one campaign), in the given targets' campaigns,
    exactly the eligible ones: delete the ineligible ones, **then** create the missing ones,
    and refresh the snapshot of those whose population's changed. Each step one statement.

    Offers are locked first without waiting; a MeFile with an offer locked elsewhere is left
    out (``blocked``) for the caller to retry. An offer never copies a NULL snapshot: a legacy
    population behind one is filled first (a population being written elsewhere gets its
    snapshot there, and that change records a reconcile).
    """
    scope: dict[str, Any] = {
        "free_targets": free_targets,
        "me_file_ids": me_file_ids,
        "campaign_id": campaign_id,
    }
    blocked = [
        r["me_file_id"]
        for r in await sql_files.fetch_all(conn, "lock_offers_for_reconcile", **scope)
    ]
    scope["blocked"] = blocked
    missing = await sql_files.fetch_all(conn, "eligible_populations_missing_snapshot", **scope)
    filled = await snapshot.fill_missing_population_snapshots(conn, [r["id"] for r in missing])
    deleted = await sql_files.execute(conn, "delete_ineligible_offers", **scope)
    upserted = await sql_files.fetch_all(
        conn,
        "upsert_eligible_offers",
        pending_seconds=get_settings().offer_pending_seconds,
        **scope,
    )
    created = sum(1 for r in upserted if r["created"])
    return OfferChanges(
        deleted=deleted,
        created=created,
        refreshed=len(upserted) - created,
        snapshots_filled=filled,
        blocked=frozenset(blocked),
    )


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
        if campaign is not None:
            await drains.ensure_target_locks(conn, campaign["target_id"])
    async with run.transaction() as conn:
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
        # The target's offers scope: reconcile batches leave this target's campaigns to
        # afterwards, so none can miss an offer this job writes (see drains.py).
        async with drains.scope_locked(conn, drains.RECONCILE, campaign["target_id"]):
            changes = await reconcile_offers(
                conn, free_targets=[campaign["target_id"]], campaign_id=args.campaign_id
            )
            if changes.blocked:
                # offers locked by the application right now: reconcile those MeFiles later
                await sql_files.execute(
                    conn,
                    "requeue_pending",
                    tables={"table": drains.RECONCILE.table},
                    me_file_ids=sorted(changes.blocked),
                    recorded_at=[dt.datetime.now(dt.UTC)] * len(changes.blocked),
                    retry_seconds=2,
                )
            await sql_files.execute(conn, "wake_drains", kind="reconcile")
    return {
        "campaign_id": args.campaign_id,
        **changes.counts(),
        "left_for_later": len(changes.blocked),
    }


async def apply_pending_reconciles(
    conn: AsyncConnection, claimed: drains.Claimed
) -> drains.BatchOutcome:
    changes = await reconcile_offers(
        conn, free_targets=claimed.free_targets, me_file_ids=claimed.me_file_ids
    )
    return drains.BatchOutcome(counts=changes.counts(), left_for_later=set(changes.blocked))


async def drain_pending_reconciles(run: JobRun) -> drains.DrainReport:
    settings = get_settings()
    async with run.connection() as conn:
        return await drains.drain(
            conn,
            drains.RECONCILE,
            apply_pending_reconciles,
            batch_size=settings.reconcile_batch_size,
            budget_seconds=settings.drain_time_budget_seconds,
        )


@job_task(name="reconcile_pending_offers", queue="offers", args_model=NoArgs, timeout_seconds=300)
async def reconcile_pending_offers(run: JobRun, args: NoArgs) -> dict[str, Any]:
    """Reconcile the offers of every MeFile whose populations changed, in batches of
    ``QLARIUS_RECONCILE_BATCH_SIZE``: delete the ineligible ones, then create the missing."""
    return (await drain_pending_reconciles(run)).summary()


@job_task(
    name="reconcile_offers_for_me_file", queue="offers", args_model=MeFileArgs, timeout_seconds=300
)
async def reconcile_offers_for_me_file(run: JobRun, args: MeFileArgs) -> dict[str, Any]:
    """Reconcile one MeFile's offers (from code or ``procrastinate defer``): record it, then
    drain like ``reconcile_pending_offers`` (or leave it to the drainer already at work).

    Deleting before creating matters: a MeFile that moved to another band of the same campaign
    keeps the same (campaign, me_file, media_run) key, so the new offer can only exist once
    the old one is gone.
    """
    async with run.transaction() as conn:
        recorded = await sql_files.fetch_one(
            conn,
            "record_pending",
            tables={"table": drains.RECONCILE.table},
            me_file_id=args.me_file_id,
        )
    if recorded is None:
        run.log.warning(
            f"me_file {args.me_file_id} not found; no offers reconciled",
            me_file_id=args.me_file_id,
        )
        return {"me_file_id": args.me_file_id, "found": False}
    return {"me_file_id": args.me_file_id, **(await drain_pending_reconciles(run)).summary()}
