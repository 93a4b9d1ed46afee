"""Populations: populate a target, sync changed MeFiles, fill one band's NULL snapshots."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
from psycopg import AsyncConnection

from qlarius_jobs import snapshots
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs import drains, target_offers
from qlarius_jobs.jobs.arguments import BandArgs, MeFileArgs, NoArgs, TargetArgs
from qlarius_jobs.jobs.blueprint import JobBlueprint
from qlarius_jobs.jobs.run import JobRun
from qlarius_jobs.settings import get_settings

SQL = QueryFile.of(__file__)
blueprint = JobBlueprint()


class TargetBusy(RuntimeError):
    """The target's row stayed held by another transaction: the populate is left for later."""


STATUS_WRITE_TRIES = 40  # NOWAIT tries, backing off to 0.5 s: about 15 s in all
RETRY_SECONDS = 2.0


@blueprint.job(
    name="populate_target",
    queue="targets",
    args_model=TargetArgs,
    time_limit_seconds=1800,
)
async def populate_target(run: JobRun, args: TargetArgs) -> dict[str, Any]:
    """Recompute a target's populations, snapshots inline, then mark it populated.

    One transaction: a crash leaves the previous populations as they were, and a trigger on
    the job's final state puts the status back when it ends without success, however it ends. The
    snapshots exist before the status says 'populated' (the seed note's main fix). It holds
    the target's populations scope: sync batches skip this target meanwhile and leave its part
    of each change for afterwards (see ``drains.py``); it never waits for a whole drain.
    Every population it changes records a reconcile of that MeFile's offers in this target (a
    trigger); with its commit, it defers ``settle_target_offers`` (queue ``offers``), one
    set-based pass over the target's offers (``target_offers.py``), instead of leaving a
    reconcile per MeFile to the drain (which still applies whatever the pass could not take).

    Level-triggered: it consumes the target's pending rows (its criteria or traits changed)
    before it reads. It waits for nobody: a target or band being deleted leaves the populate
    for later (the target pending again), a MeFile being deleted leaves that MeFile to a sync,
    and the status is written with NOWAIT, again and again, rather than by waiting for an
    application transaction that holds the target's row.
    """
    async with run.transaction() as conn:
        await drains.ensure_target_locks(conn, args.target_id)
    async with (
        run.transaction() as conn,
        drains.scope_locked(conn, drains.SYNC, args.target_id) as state,
    ):
        if state == "gone":
            run.log.warning(
                f"target {args.target_id} not found; nothing to populate",
                target_id=args.target_id,
            )
            return {"target_id": args.target_id, "found": False}
        await SQL.count(conn, "take_pending_target", target_id=args.target_id)
        if state == "busy":
            return await _leave_for_later(
                run, conn, args.target_id, "it, or one of its bands, is being deleted"
            )
        try:
            async with conn.transaction():  # a savepoint: all of it, or none
                changes, statements = await snapshots.populate_in_ranges(
                    conn, args.target_id, get_settings().populate_range_size
                )
                if changes.skipped:
                    # MeFiles being deleted (or rows written) right now: a sync finishes them
                    await drains.requeue_pending(
                        conn,
                        drains.SYNC,
                        list(changes.skipped),
                        [dt.datetime.now(dt.UTC)] * len(changes.skipped),
                    )
                tries = await _mark_populated(conn, args.target_id)
        except TargetBusy as busy:
            # the application held the target's row all along (or waits for us): nothing of
            # this run is kept but the target's pending row, due again in a moment
            return await _leave_for_later(run, conn, args.target_id, str(busy))
        # syncs left this target's part of their changes for now: wake them at commit
        await drains.wake_drains(conn, drains.SYNC)
        # the offers its populations changed: one pass of their own job, due at this commit
        settle = await _defer_settle(conn, args.target_id)
    if settle == "skipped":
        run.log.info(
            f"target {args.target_id}: its settle_target_offers is being deferred elsewhere; "
            "not waited for",
            target_id=args.target_id,
        )
    return {
        "target_id": args.target_id,
        "members": changes.members,
        "inserted": changes.inserted,
        "deleted": changes.deleted,
        "refreshed": changes.refreshed,
        "left_for_later": len(changes.skipped),
        "statements": statements,
        "status_write_tries": tries,
        "offers_pass": settle,  # deferred, already waiting, or skipped (being deferred elsewhere)
    }


SETTLE_DEFER_WAIT = "50ms"


async def _defer_settle(conn: AsyncConnection, target_id: int) -> str:
    """Defer the target's ``settle_target_offers`` in the caller's transaction, waiting at
    most ``SETTLE_DEFER_WAIT`` for another transaction inserting the same waiting job (its
    queueing lock: an application deferring it in a transaction still open). Then that job is
    left to it ("skipped"): if it never commits, the reconcile drain applies the rows this
    populate recorded, as it does for any pass that does not run."""
    try:
        async with conn.transaction():  # a savepoint: a refused wait undoes only this
            bound = await SQL.one(conn, "bound_lock_waits", timeout=SETTLE_DEFER_WAIT)
            assert bound is not None
            job_id = await target_offers.settle_target_offers.defer(conn, target_id=target_id)
            await SQL.execute(conn, "unbound_lock_waits", previous=bound["previous"])
    except psycopg.errors.LockNotAvailable:
        return "skipped"
    return "deferred" if job_id is not None else "already waiting"


async def _leave_for_later(
    run: JobRun, conn: AsyncConnection, target_id: int, why: str
) -> dict[str, Any]:
    """The populate cannot run now: the target stays pending, due again in RETRY_SECONDS,
    when the workers' sweep defers a populate (this job ends, succeeded, having waited for
    nobody)."""
    await SQL.execute(
        conn, "leave_pending_target", target_id=target_id, retry_seconds=RETRY_SECONDS
    )
    run.log.info(f"target {target_id} left for later: {why}", target_id=target_id, busy=True)
    return {"target_id": target_id, "busy": True}


async def _mark_populated(conn: AsyncConnection, target_id: int) -> int:
    """Mark the target populated without ever waiting on its row (NOWAIT in a savepoint,
    backing off); returns the tries it took. ``TargetBusy`` when the row stays held, or at
    once when its holder waits for this transaction (a delete of the target)."""
    delay = 0.05
    for attempt in range(1, STATUS_WRITE_TRIES + 1):
        try:
            async with conn.transaction():
                await SQL.one(conn, "lock_target_for_status", target_id=target_id)
                await SQL.execute(conn, "mark_target_populated", target_id=target_id)
            return attempt
        except psycopg.errors.LockNotAvailable:
            blocked = await SQL.one(conn, "someone_waits_for_this_transaction")
            if blocked and blocked["waiting"]:
                raise TargetBusy(
                    f"target {target_id}: its row is held by a transaction that waits for this "
                    "populate (the target being deleted?); the populate gives way"
                ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
    raise TargetBusy(
        f"target {target_id}: its row stayed locked by another transaction; not marked "
        "populated (the populate runs again in a moment)"
    )


async def apply_pending_syncs(
    conn: AsyncConnection, claimed: drains.Claimed
) -> drains.BatchOutcome:
    """A sync batch: the claimed MeFiles, across every target whose populations syncs keep
    (read after the scope rows were locked, so a populate that just finished is included)."""
    targets = [
        r["target_id"]
        for r in await SQL.many(conn, "synced_targets_among", target_ids=claimed.free_targets)
    ]
    changes = await snapshots.apply_band_memberships(conn, targets, claimed.me_file_ids)
    return drains.BatchOutcome(
        counts={
            "inserted": changes.inserted,
            "deleted": changes.deleted,
            "refreshed": changes.refreshed,
        },
        # MeFiles being deleted, or rows written elsewhere: not waited for, back in a moment
        left_for_later=set(changes.skipped),
    )


async def drain_pending_syncs(run: JobRun) -> drains.DrainReport:
    settings = get_settings()
    async with run.connection() as conn:
        return await drains.drain(
            conn,
            drains.SYNC,
            apply_pending_syncs,
            batch_size=settings.sync_batch_size,
            budget_seconds=settings.drain_time_budget_seconds,
        )


@blueprint.job(
    name="sync_pending_me_files",
    queue="targets",
    args_model=NoArgs,
    time_limit_seconds=300,
    quiet_when_idle=True,
    takes_last_slot=True,
)
async def sync_pending_me_files(run: JobRun, args: NoArgs) -> dict[str, Any]:
    """Bring every MeFile whose tags changed into the right band of every populated target,
    in batches of ``QLARIUS_SYNC_BATCH_SIZE``, one set-based statement each."""
    return (await drain_pending_syncs(run)).summary()


@blueprint.job(
    name="sync_me_file_to_target_populations",
    queue="targets",
    args_model=MeFileArgs,
    time_limit_seconds=300,
    takes_last_slot=True,
)
async def sync_me_file_to_target_populations(run: JobRun, args: MeFileArgs) -> dict[str, Any]:
    """Sync one MeFile (from code or ``procrastinate defer``): record it as changed, then drain
    like ``sync_pending_me_files`` (or leave it to the drainer already at work). Populations
    that change record the reconcile of its offers."""
    async with run.transaction() as conn:
        recorded = await drains.record_pending(conn, drains.SYNC, args.me_file_id)
    if not recorded:
        run.log.warning(
            f"me_file {args.me_file_id} not found; nothing to sync", me_file_id=args.me_file_id
        )
        return {"me_file_id": args.me_file_id, "found": False}
    return {"me_file_id": args.me_file_id, **(await drain_pending_syncs(run)).summary()}


@blueprint.job(
    name="snapshot_band_populations", queue="targets", args_model=BandArgs, time_limit_seconds=1800
)
async def snapshot_band_populations(run: JobRun, args: BandArgs) -> dict[str, Any]:
    """Fill the NULL snapshots of one band's populations (legacy data, manual repair).

    Batches by keyset, each batch its own guarded transaction: a crash keeps what was done.
    """
    batch_size = get_settings().snapshot_band_batch_size
    async with run.transaction() as conn:
        if await SQL.one(conn, "band_exists", band_id=args.band_id) is None:
            run.log.warning(
                f"band {args.band_id} not found; nothing to snapshot", band_id=args.band_id
            )
            return {"band_id": args.band_id, "found": False}
    after_id, found, updated, batches = 0, 0, 0, 0
    while True:
        async with run.transaction() as conn:
            ids = [
                r["id"]
                for r in await SQL.many(
                    conn,
                    "missing_population_ids_of_band",
                    band_id=args.band_id,
                    after_id=after_id,
                    batch_size=batch_size,
                )
            ]
            if not ids:
                break
            updated += len(await snapshots.fill_missing_population_snapshots(conn, ids))
        found += len(ids)
        batches += 1
        after_id = ids[-1]
    return {"band_id": args.band_id, "found": found, "updated": updated, "batches": batches}
