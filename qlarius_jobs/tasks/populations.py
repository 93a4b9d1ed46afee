"""Populations: populate a target, sync one MeFile, fill one band's NULL snapshots."""

from __future__ import annotations

from typing import Any

from qlarius_jobs import snapshot, sql_files
from qlarius_jobs.jobs import BandArgs, JobRun, MeFileArgs, TargetArgs, defer_job, job_task
from qlarius_jobs.settings import get_settings


async def _restore_target_status(run: JobRun, args: TargetArgs, exc: BaseException) -> None:
    async with run.transaction() as conn:
        row = await sql_files.fetch_one(conn, "restore_target_status", target_id=args.target_id)
    run.log.error(
        "populate_target failed for good; populations left as they were",
        target_id=args.target_id,
        restored_status=row["population_status"] if row else None,
        error=repr(exc),
    )


@job_task(
    name="populate_target",
    queue="targets",
    args_model=TargetArgs,
    on_give_up=_restore_target_status,
    timeout_seconds=1800,
)
async def populate_target(run: JobRun, args: TargetArgs) -> dict[str, Any]:
    """Recompute a target's populations, snapshots inline, then mark it populated.

    One transaction: a crash leaves the previous populations and status as they were.
    The snapshots exist before the status says 'populated' (the seed note's main fix).
    """
    async with run.transaction() as conn:
        target = await sql_files.fetch_one(
            conn, "lock_target_for_populate", target_id=args.target_id
        )
        if target is None:
            run.log.warning(
                f"target {args.target_id} not found; nothing to populate", target_id=args.target_id
            )
            return {"target_id": args.target_id, "found": False}
        changes = await snapshot.apply_band_memberships(conn, [args.target_id])
        await sql_files.execute(conn, "mark_target_populated", target_id=args.target_id)
    return {
        "target_id": args.target_id,
        "members": changes.members,
        "inserted": changes.inserted,
        "deleted": changes.deleted,
        "refreshed": changes.refreshed,
    }


@job_task(
    name="sync_me_file_to_target_populations",
    queue="targets",
    args_model=MeFileArgs,
    timeout_seconds=120,
)
async def sync_me_file_to_target_populations(run: JobRun, args: MeFileArgs) -> dict[str, Any]:
    """After a MeFile's tags change: put it in the right band of every populated target.

    Uses the same matching statement as populating. When its populations changed, the offer
    reconciliation is deferred in the same transaction.
    """
    async with run.transaction() as conn:
        if await sql_files.fetch_one(conn, "me_file_exists", me_file_id=args.me_file_id) is None:
            run.log.warning(
                f"me_file {args.me_file_id} not found; nothing to sync", me_file_id=args.me_file_id
            )
            return {"me_file_id": args.me_file_id, "found": False}
        targets = [r["id"] for r in await sql_files.fetch_all(conn, "lock_targets_for_sync")]
        changes = await snapshot.apply_band_memberships(conn, targets, [args.me_file_id])
        reconcile_job = None
        if changes.deleted or changes.inserted:
            reconcile_job = await defer_job(
                conn, "reconcile_offers_for_me_file", me_file_id=args.me_file_id
            )
    return {
        "me_file_id": args.me_file_id,
        "targets": len(targets),
        "inserted": changes.inserted,
        "deleted": changes.deleted,
        "refreshed": changes.refreshed,
        "reconcile_deferred": bool(changes.deleted or changes.inserted),
        "reconcile_job_id": reconcile_job,
    }


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
            updated += await snapshot.fill_missing_population_snapshots(conn, ids)
        found += len(ids)
        batches += 1
        after_id = ids[-1]
    return {"band_id": args.band_id, "found": found, "updated": updated, "batches": batches}
