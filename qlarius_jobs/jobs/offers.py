"""Offers: the initial pending offers of a campaign, and a MeFile's reconciliation."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from qlarius_jobs import snapshots
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs import drains
from qlarius_jobs.jobs.base import (
    JobArgs,
    JobBlueprint,
    JobGaveUp,
    JobRun,
    MeFileArgs,
    NoArgs,
    RowId,
)
from qlarius_jobs.settings import get_settings

SQL = QueryFile.beside(__file__)
blueprint = JobBlueprint()


class CampaignArgs(JobArgs):
    campaign_id: RowId


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

    Never waits on a row someone else holds: a MeFile whose ineligible offer is locked (the
    application recording an ad event on it), or whose NULL-snapshot population is being
    written, is left out (``blocked``) for the caller to retry. An offer never copies a NULL
    snapshot: a legacy population behind one is filled first.
    """
    scope: dict[str, Any] = {
        "free_targets": free_targets,
        "me_file_ids": me_file_ids,
        "campaign_id": campaign_id,
    }
    ineligible = await SQL.many(conn, "lock_ineligible_offers", **scope)
    blocked = {r["me_file_id"] for r in ineligible if not r["locked"]}
    deleted = await SQL.count(
        conn, "delete_ineligible_offers", offer_ids=[r["id"] for r in ineligible if r["locked"]]
    )
    missing = await SQL.many(
        conn, "eligible_populations_missing_snapshot", blocked=sorted(blocked), **scope
    )
    filled = set(
        await snapshots.fill_missing_population_snapshots(conn, [r["id"] for r in missing])
    )
    blocked |= {r["me_file_id"] for r in missing if r["id"] not in filled}
    upserted = await SQL.many(
        conn,
        "upsert_eligible_offers",
        pending_seconds=get_settings().offer_pending_seconds,
        blocked=sorted(blocked),
        **scope,
    )
    created = sum(1 for r in upserted if r["created"])
    return OfferChanges(
        deleted=deleted,
        created=created,
        refreshed=len(upserted) - created,
        snapshots_filled=len(filled),
        blocked=frozenset(blocked),
    )


@blueprint.job(
    name="create_initial_pending_offers",
    queue="default",
    args_model=CampaignArgs,
    attempts=5,
    time_limit_seconds=600,
)
async def create_initial_pending_offers(run: JobRun, args: CampaignArgs) -> dict[str, Any]:
    """One pending offer per population whose band has a bid, copying its snapshots.

    Until the target is populated, the job defers itself again (3 minutes by default) and
    gives up with an error after an hour.
    """
    async with run.transaction() as conn:
        campaign = await SQL.one(conn, "campaign_for_offers", campaign_id=args.campaign_id)
        if campaign is not None:
            await drains.ensure_target_locks(conn, campaign["target_id"])
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
    if campaign["launches_later"]:
        # launched in the future: come back at launch time (nothing else would)
        async with run.transaction() as conn:
            next_job = await create_initial_pending_offers.defer(
                conn,
                schedule_in={"seconds": float(campaign["seconds_to_launch"])},
                campaign_id=args.campaign_id,
            )
        run.log.info(
            f"campaign {args.campaign_id} launches at {campaign['launched_at'].isoformat()}; "
            "offers then",
            campaign_id=args.campaign_id,
            next_job_id=next_job,
        )
        return {"campaign_id": args.campaign_id, "created": 0, "rescheduled": True}
    if "populated" not in (campaign["population_status"], campaign["status_before_populating"]):
        # never populated yet: nothing to offer on. (A target being re-populated keeps its
        # populations meanwhile, and its populate records the reconciles of what it changes.)
        return await _wait_for_population(run, args.campaign_id, campaign)
    async with run.transaction() as conn:
        # The campaign, then the target's offers scope: reconcile batches leave this target's
        # campaigns to afterwards, so none can miss an offer this job writes (see drains.py).
        if await SQL.one(conn, "lock_campaign_row", campaign_id=args.campaign_id):
            async with drains.scope_locked(conn, drains.RECONCILE, campaign["target_id"]) as found:
                if found:
                    return await _offer_campaign(conn, args.campaign_id, campaign["target_id"])
    run.log.warning(
        f"campaign {args.campaign_id} or its target was deleted meanwhile; no offers created",
        campaign_id=args.campaign_id,
    )
    return {"campaign_id": args.campaign_id, "found": False}


async def _offer_campaign(
    conn: AsyncConnection, campaign_id: int, target_id: int
) -> dict[str, Any]:
    """Reconcile one campaign's offers, its target's offers scope held."""
    changes = await reconcile_offers(conn, free_targets=[target_id], campaign_id=campaign_id)
    if changes.blocked:
        # rows held elsewhere right now: reconcile those MeFiles a little later
        await drains.requeue_pending(
            conn,
            drains.RECONCILE,
            sorted(changes.blocked),
            [dt.datetime.now(dt.UTC)] * len(changes.blocked),
        )
    await SQL.execute(conn, "end_offer_wait", campaign_id=campaign_id)
    await drains.wake_drains(conn, drains.RECONCILE)
    return {"campaign_id": campaign_id, **changes.counts(), "left_for_later": len(changes.blocked)}


async def _wait_for_population(
    run: JobRun, campaign_id: int, campaign: dict[str, Any]
) -> dict[str, Any]:
    """The target is not populated yet: try again later, and give up after a while (measured
    from the first wait, kept in the database rather than in arguments anyone could set)."""
    settings = get_settings()
    async with run.transaction() as conn:
        started = await SQL.one(conn, "offer_wait_since", campaign_id=campaign_id)
        assert started is not None
        waited = (dt.datetime.now(dt.UTC) - started["since"]).total_seconds()
        if waited >= settings.offers_give_up_after_seconds:
            await SQL.execute(conn, "end_offer_wait", campaign_id=campaign_id)
            give_up = True
        else:
            give_up = False
            next_job = await create_initial_pending_offers.defer(
                conn,
                schedule_in={"seconds": settings.offers_retry_delay_seconds},
                campaign_id=campaign_id,
            )
    if give_up:
        raise JobGaveUp(
            f"campaign {campaign_id}: target {campaign['target_id']} still not "
            f"populated after {int(waited)} s; giving up"
        )
    run.log.warning(
        f"target {campaign['target_id']} of campaign {campaign_id} is not "
        f"populated yet ({campaign['population_status']}); trying again in "
        f"{settings.offers_retry_delay_seconds} s",
        campaign_id=campaign_id,
        target_id=campaign["target_id"],
        next_job_id=next_job,
        waited_s=int(waited),
    )
    return {"campaign_id": campaign_id, "created": 0, "rescheduled": True}


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


@blueprint.job(
    name="reconcile_pending_offers",
    queue="offers",
    args_model=NoArgs,
    time_limit_seconds=300,
    quiet_when_idle=True,
)
async def reconcile_pending_offers(run: JobRun, args: NoArgs) -> dict[str, Any]:
    """Reconcile the offers of every MeFile whose populations changed, in batches of
    ``QLARIUS_RECONCILE_BATCH_SIZE``: delete the ineligible ones, then create the missing."""
    return (await drain_pending_reconciles(run)).summary()


@blueprint.job(
    name="reconcile_offers_for_me_file",
    queue="offers",
    args_model=MeFileArgs,
    time_limit_seconds=300,
)
async def reconcile_offers_for_me_file(run: JobRun, args: MeFileArgs) -> dict[str, Any]:
    """Reconcile one MeFile's offers (from code or ``procrastinate defer``): record it, then
    drain like ``reconcile_pending_offers`` (or leave it to the drainer already at work).

    Deleting before creating matters: a MeFile that moved to another band of the same campaign
    keeps the same (campaign, me_file, media_run) key, so the new offer can only exist once
    the old one is gone.
    """
    async with run.transaction() as conn:
        recorded = await drains.record_pending(conn, drains.RECONCILE, args.me_file_id)
    if not recorded:
        run.log.warning(
            f"me_file {args.me_file_id} not found; no offers reconciled",
            me_file_id=args.me_file_id,
        )
        return {"me_file_id": args.me_file_id, "found": False}
    return {"me_file_id": args.me_file_id, **(await drain_pending_reconciles(run)).summary()}
