"""Operations plugins, as Oban's: rescue of stalled jobs (Lifeline) and pruning (Pruner)."""

from __future__ import annotations

from typing import Any

from qlarius_jobs import sql_files
from qlarius_jobs.app import app
from qlarius_jobs.jobs import JobRun, NoArgs, job_task
from qlarius_jobs.settings import get_settings


def _attempt_limits() -> tuple[list[str], list[int]]:
    """Each task's total attempts, so a rescued job that used its last one fails instead."""
    names, limits = [], []
    for name, task in app.tasks.items():
        attempts = getattr(task.retry_strategy, "attempts", None)
        names.append(name)
        limits.append(attempts if attempts is not None else 1)
    return names, limits


@job_task(
    name="rescue_stalled_jobs",
    queue="maintenance",
    args_model=NoArgs,
    attempts=1,
    timeout_seconds=60,
    periodic_cron=get_settings().rescue_cron,
)
async def rescue_stalled_jobs(run: JobRun, args: NoArgs) -> dict[str, Any]:
    """Requeue the jobs of workers whose heartbeat stopped (SIGKILL, lost machine)."""
    settings = get_settings()
    names, limits = _attempt_limits()
    async with run.transaction() as conn:
        rescued = await sql_files.fetch_all(
            conn,
            "rescue_stalled_jobs",
            stalled_after_seconds=settings.stalled_after_seconds,
            task_names=names,
            max_attempts=limits,
        )
        pruned = await sql_files.fetch_all(
            conn, "prune_stalled_workers", stalled_after_seconds=settings.stalled_after_seconds
        )
    for job in rescued:
        run.log.warning(
            f"stalled job {job['id']} ({job['task_name']}) "
            + ("queued again" if job["retry"] else "failed: no attempt left"),
            rescued_job_id=job["id"],
            rescued_task=job["task_name"],
            requeued=job["retry"],
        )
    return {
        "requeued": sum(1 for j in rescued if j["retry"]),
        "failed": sum(1 for j in rescued if not j["retry"]),
        "workers_pruned": len(pruned),
    }


@job_task(
    name="prune_finished_jobs",
    queue="maintenance",
    args_model=NoArgs,
    attempts=3,
    timeout_seconds=1800,
    periodic_cron=get_settings().prune_cron,
)
async def prune_finished_jobs(run: JobRun, args: NoArgs) -> dict[str, Any]:
    """Delete finished jobs (with their events and errors) older than the retention, in
    bounded batches, each its own short transaction."""
    settings = get_settings()
    after_id, deleted, batches = 0, 0, 0
    while True:
        async with run.transaction() as conn:
            row = await sql_files.fetch_one(
                conn,
                "prune_finished_jobs",
                after_id=after_id,
                batch_size=settings.prune_batch_size,
                retention_days=settings.prune_after_days,
            )
        assert row is not None
        if row["last_candidate"] is None:
            break
        after_id = row["last_candidate"]
        deleted += row["deleted"]
        batches += 1
    async with run.transaction() as conn:
        runs = await sql_files.execute(
            conn, "prune_backfill_runs", retention_days=settings.backfill_history_days
        )
    return {"jobs_deleted": deleted, "batches": batches, "backfill_runs_deleted": runs}
