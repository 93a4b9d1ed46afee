"""Populations: populate a target, sync changed MeFiles, fill one band's NULL snapshots."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import AsyncConnection

from qlarius_jobs import drains, snapshot, sql_files
from qlarius_jobs.jobs import BandArgs, JobRun, MeFileArgs, NoArgs, TargetArgs, job_task
from qlarius_jobs.settings import get_settings


@job_task(
    name="populate_target",
    queue="targets",
    args_model=TargetArgs,
    timeout_seconds=1800,
)
async def populate_target(run: JobRun, args: TargetArgs) -> dict[str, Any]:
    """Recompute a target's populations, snapshots inline, then mark it populated.

    One transaction: a crash leaves the previous populations as they were, and a trigger on
    the job's final state puts the status back when it ends without success, however it ends. The
    snapshots exist before the status says 'populated' (the seed note's main fix). It holds
    the target's populations scope: sync batches skip this target meanwhile and leave its part
    of each change for afterwards (see ``drains.py``); it never waits for a whole drain.
    Every population it changes records a reconcile of that MeFile's offers (a trigger).
    """
    async with run.transaction() as conn:
        await drains.ensure_target_locks(conn, args.target_id)
    async with (
        run.transaction() as conn,
        drains.scope_locked(conn, drains.SYNC, args.target_id) as found,
    ):
        if not found:
            run.log.warning(
                f"target {args.target_id} not found; nothing to populate",
                target_id=args.target_id,
            )
            return {"target_id": args.target_id, "found": False}
        changes = await snapshot.apply_band_memberships(conn, [args.target_id])
        await sql_files.execute(conn, "mark_target_populated", target_id=args.target_id)
        # syncs left this target's part of their changes for now: wake them at commit
        await sql_files.execute(conn, "wake_drains", kind="sync")
    return {
        "target_id": args.target_id,
        "members": changes.members,
        "inserted": changes.inserted,
        "deleted": changes.deleted,
        "refreshed": changes.refreshed,
    }


class TargetRowBusy(RuntimeError):
    """The application holds the target's row; the populate rolls back and tries again."""


async def _mark_populated(conn: AsyncConnection, target_id: int) -> None:
    """The targets row is the application's: wait for it only briefly. A long wait could only
    end in a deadlock (an application deleting the target waits for this job's rows) that the
    server might resolve by failing the application; failing this attempt instead is safe."""
    await sql_files.execute(conn, "set_local_lock_timeout", timeout="200ms")
    try:
        await sql_files.execute(conn, "mark_target_populated", target_id=target_id)
    except psycopg.errors.LockNotAvailable:
        raise TargetRowBusy(
            f"target {target_id}: its row is held by another transaction; populate retried"
        ) from None


async def apply_pending_syncs(
    conn: AsyncConnection, claimed: drains.Claimed
) -> drains.BatchOutcome:
    """A sync batch: the claimed MeFiles, across every target whose populations syncs keep
    (read after the scope rows were locked, so a populate that just finished is included)."""
    targets = [
        r["target_id"]
        for r in await sql_files.fetch_all(
            conn, "synced_targets_among", target_ids=claimed.free_targets
        )
    ]
    changes = await snapshot.apply_band_memberships(conn, targets, claimed.me_file_ids)
    return drains.BatchOutcome(
        counts={
            "inserted": changes.inserted,
            "deleted": changes.deleted,
            "refreshed": changes.refreshed,
        }
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


@job_task(name="sync_pending_me_files", queue="targets", args_model=NoArgs, timeout_seconds=300)
async def sync_pending_me_files(run: JobRun, args: NoArgs) -> dict[str, Any]:
    """Bring every MeFile whose tags changed into the right band of every populated target,
    in batches of ``QLARIUS_SYNC_BATCH_SIZE``, one set-based statement each."""
    return (await drain_pending_syncs(run)).summary()


@job_task(
    name="sync_me_file_to_target_populations",
    queue="targets",
    args_model=MeFileArgs,
    timeout_seconds=300,
)
async def sync_me_file_to_target_populations(run: JobRun, args: MeFileArgs) -> dict[str, Any]:
    """Sync one MeFile (from code or ``procrastinate defer``): record it as changed, then drain
    like ``sync_pending_me_files`` (or leave it to the drainer already at work). Populations
    that change record the reconcile of its offers."""
    async with run.transaction() as conn:
        recorded = await sql_files.fetch_one(
            conn, "record_pending", tables={"table": drains.SYNC.table}, me_file_id=args.me_file_id
        )
    if recorded is None:
        run.log.warning(
            f"me_file {args.me_file_id} not found; nothing to sync", me_file_id=args.me_file_id
        )
        return {"me_file_id": args.me_file_id, "found": False}
    return {"me_file_id": args.me_file_id, **(await drain_pending_syncs(run)).summary()}


@job_task(
    name="snapshot_band_populations", queue="targets", args_model=BandArgs, timeout_seconds=1800
)
async def snapshot_band_populations(run: JobRun, args: BandArgs) -> dict[str, Any]:
    """Fill the NULL snapshots of one band's populations (legacy data, manual repair).

    Batches by keyset, each batch its own guarded transaction: a crash keeps what was done.
    """
    batch_size = get_settings().snapshot_band_batch_size
    async with run.transaction() as conn:
        if await sql_files.fetch_one(conn, "band_exists", band_id=args.band_id) is None:
            run.log.warning(
                f"band {args.band_id} not found; nothing to snapshot", band_id=args.band_id
            )
            return {"band_id": args.band_id, "found": False}
    after_id, found, updated, batches = 0, 0, 0, 0
    while True:
        async with run.transaction() as conn:
            ids = [
                r["id"]
                for r in await sql_files.fetch_all(
                    conn,
                    "missing_population_ids_of_band",
                    band_id=args.band_id,
                    after_id=after_id,
                    batch_size=batch_size,
                )
            ]
            if not ids:
                break
            updated += len(await snapshot.fill_missing_population_snapshots(conn, ids))
        found += len(ids)
        batches += 1
        after_id = ids[-1]
    return {"band_id": args.band_id, "found": found, "updated": updated, "batches": batches}
