"""Offers: the initial pending offers of a campaign, and a MeFile's reconciliation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from qlarius_jobs import snapshots
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs import drains
from qlarius_jobs.jobs.arguments import JobArgs, MeFileArgs, NoArgs, RowId
from qlarius_jobs.jobs.blueprint import JobBlueprint
from qlarius_jobs.jobs.run import JobGaveUp, JobRun
from qlarius_jobs.settings import get_settings

SQL = QueryFile.of(__file__)
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
    exactly the eligible ones: delete the ineligible ones (a campaign that is not live keeps
    its completed ones), **then** create the missing ones, and bring the others in line with
    their population's snapshot and, until completed, their bid's amounts. Each step one
    statement.

    Never waits on a row someone else holds, and locks only the rows it changes: a MeFile
    whose offer is locked (the application recording an ad event on one being withdrawn), or
    being deleted, or whose NULL-snapshot population is being written, is left out
    (``blocked``) for the caller to retry. An offer never copies a NULL snapshot: a legacy
    population behind one is filled first.
    """
    scope: dict[str, Any] = {
        "free_targets": free_targets,
        "me_file_ids": me_file_ids,
        "campaign_id": campaign_id,
    }
    ineligible = await SQL.one(conn, "lock_ineligible_offers", **scope)
    assert ineligible is not None
    blocked = set(ineligible["blocked"])
    deleted = await SQL.count(conn, "delete_ineligible_offers", offer_ids=ineligible["locked_ids"])
    missing = await SQL.many(
        conn, "eligible_populations_missing_snapshot", blocked=sorted(blocked), **scope
    )
    filled = set(
        await snapshots.fill_missing_population_snapshots(conn, [r["id"] for r in missing])
    )
    blocked |= {r["me_file_id"] for r in missing if r["id"] not in filled}
    created = await SQL.one(
        conn,
        "insert_missing_offers",
        pending_seconds=get_settings().offer_pending_seconds,
        blocked=sorted(blocked),
        **scope,
    )
    refreshed = await SQL.one(conn, "refresh_stale_offers", blocked=sorted(blocked), **scope)
    assert created is not None and refreshed is not None
    blocked |= set(created["skipped"]) | set(refreshed["skipped"])
    return OfferChanges(
        deleted=deleted,
        created=int(created["created"]),
        refreshed=int(refreshed["refreshed"]),
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
    """Make the campaign's offers exactly the eligible ones: one pending offer per population
    whose band it bids on, copying the population's snapshot and the bid's amounts; not live
    (deactivated), its offers not yet completed are withdrawn.

    Level-triggered: it consumes the campaign's pending rows (left by any change to the
    campaign, its bids or its media runs) in the transaction that reads the campaign. Until
    the target is populated, the job defers itself again (3 minutes by default) and gives up
    with an error after an hour; launched in the future, it comes back at launch time.
    """
    async with run.transaction() as conn:
        campaign = await SQL.one(conn, "campaign_for_offers", campaign_id=args.campaign_id)
        if campaign is not None:
            await drains.ensure_target_locks(conn, campaign["target_id"])
    if campaign is None:
        return _campaign_gone(run, args.campaign_id)
    async with run.transaction() as conn:
        # The campaign first (never waiting for a delete), then its pending rows, then what
        # they ask: read after they were taken, so a change committed later is left pending.
        if await SQL.one(conn, "lock_campaign_row", campaign_id=args.campaign_id) is None:
            if await SQL.one(conn, "campaign_for_offers", campaign_id=args.campaign_id) is None:
                return _campaign_gone(run, args.campaign_id)
            return await _leave_for_later(run, conn, args.campaign_id, "the campaign is busy")
        await SQL.count(conn, "take_pending_campaign", campaign_id=args.campaign_id)
        campaign = await SQL.one(conn, "campaign_for_offers", campaign_id=args.campaign_id)
        assert campaign is not None  # key-share locked: not deleted
        populated = "populated" in (
            campaign["population_status"],
            campaign["status_before_populating"],
        )
        waited: float | None = None
        if campaign["live"] and not populated:
            # never populated yet: nothing to offer on. (A target being re-populated keeps its
            # populations meanwhile, and its populate records the reconciles of what it changes.)
            waited = await _wait_for_population(run, conn, args.campaign_id, campaign)
            if waited is None:
                return {"campaign_id": args.campaign_id, "created": 0, "rescheduled": True}
        else:
            return await _reconcile_campaign(run, conn, args.campaign_id, campaign)
    # committed: the wait ended, the pending rows taken
    raise JobGaveUp(
        f"campaign {args.campaign_id}: target {campaign['target_id']} still not "
        f"populated after {int(waited)} s; giving up"
    )


async def _reconcile_campaign(
    run: JobRun, conn: AsyncConnection, campaign_id: int, campaign: dict[str, Any]
) -> dict[str, Any]:
    """Live on a populated target: reconcile. Not live: withdraw what is not completed. The
    target's offers scope first: reconcile batches leave this target's campaigns to
    afterwards, so none can miss an offer this job writes (see drains.py)."""
    target_id = campaign["target_id"]
    async with drains.scope_locked(conn, drains.RECONCILE, target_id) as state:
        if state == "gone":
            return _campaign_gone(run, campaign_id)
        if state == "busy":
            return await _leave_for_later(
                run,
                conn,
                campaign_id,
                "its target, or a band, campaign or media run of it, is being deleted",
            )
        result = await _offer_campaign(conn, campaign_id, target_id)
    if campaign["launches_later"]:
        # launched in the future: come back at launch time (nothing else would)
        next_job = await create_initial_pending_offers.defer(
            conn,
            schedule_in={"seconds": float(campaign["seconds_to_launch"])},
            campaign_id=campaign_id,
        )
        run.log.info(
            f"campaign {campaign_id} launches at {campaign['launched_at'].isoformat()}; "
            "offers then",
            campaign_id=campaign_id,
            next_job_id=next_job,
        )
        result["rescheduled"] = True
    elif not campaign["live"]:
        result["live"] = False
    return result


def _campaign_gone(run: JobRun, campaign_id: int) -> dict[str, Any]:
    run.log.warning(f"campaign {campaign_id} not found; no offers created", campaign_id=campaign_id)
    return {"campaign_id": campaign_id, "found": False}


async def _leave_for_later(
    run: JobRun, conn: AsyncConnection, campaign_id: int, why: str
) -> dict[str, Any]:
    """A row this job needs is held (being deleted): not waited for; the campaign is pending
    again in a moment, and the workers' sweep defers its job then."""
    await SQL.execute(
        conn, "leave_pending_campaign", campaign_id=campaign_id, retry_seconds=RETRY_SECONDS
    )
    run.log.info(
        f"campaign {campaign_id} left for later: {why}", campaign_id=campaign_id, busy=True
    )
    return {"campaign_id": campaign_id, "busy": True}


RETRY_SECONDS = 2.0


async def reconcile_later(conn: AsyncConnection, me_file_ids: Collection[int]) -> None:
    """MeFiles whose offer rows another transaction held right now: pending again, due now,
    for the reconcile drain to do a little later."""
    if me_file_ids:
        await drains.requeue_pending(
            conn,
            drains.RECONCILE,
            sorted(me_file_ids),
            [dt.datetime.now(dt.UTC)] * len(me_file_ids),
        )


async def _offer_campaign(
    conn: AsyncConnection, campaign_id: int, target_id: int
) -> dict[str, Any]:
    """Reconcile one campaign's offers, its target's offers scope held."""
    changes = await reconcile_offers(conn, free_targets=[target_id], campaign_id=campaign_id)
    await reconcile_later(conn, changes.blocked)
    await SQL.execute(conn, "end_offer_wait", campaign_id=campaign_id)
    await drains.wake_drains(conn, drains.RECONCILE)
    return {"campaign_id": campaign_id, **changes.counts(), "left_for_later": len(changes.blocked)}


async def _wait_for_population(
    run: JobRun, conn: AsyncConnection, campaign_id: int, campaign: dict[str, Any]
) -> float | None:
    """The target is not populated yet: try again later, and give up after a while (measured
    from the first wait, kept in the database rather than in arguments anyone could set).
    Returns the seconds waited when it is time to give up (the caller raises once this
    transaction committed), else None."""
    settings = get_settings()
    started = await SQL.one(conn, "offer_wait_since", campaign_id=campaign_id)
    assert started is not None
    waited = (dt.datetime.now(dt.UTC) - started["since"]).total_seconds()
    if waited >= settings.offers_give_up_after_seconds:
        await SQL.execute(conn, "end_offer_wait", campaign_id=campaign_id)
        return waited
    next_job = await create_initial_pending_offers.defer(
        conn,
        schedule_in={"seconds": settings.offers_retry_delay_seconds},
        campaign_id=campaign_id,
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
    return None


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
    takes_last_slot=True,
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
    takes_last_slot=True,
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
