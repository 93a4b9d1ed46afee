"""Operations plugins, as Oban's: rescue of stalled jobs (Lifeline) and pruning (Pruner)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from procrastinate import App

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs.arguments import NoArgs
from qlarius_jobs.jobs.blueprint import JobBlueprint
from qlarius_jobs.jobs.run import Backoff, JobRun
from qlarius_jobs.settings import get_settings

SQL = QueryFile.of(__file__)
blueprint = JobBlueprint()


def _attempt_limits(app: App) -> tuple[list[str], list[int]]:
    """Each task's total attempts, so a rescued job that used its last one fails instead."""
    names, limits = [], []
    for name, task in app.tasks.items():
        strategy = task.retry_strategy
        names.append(name)
        limits.append(strategy.attempts if isinstance(strategy, Backoff) else 1)
    return names, limits


@blueprint.job(
    name="rescue_stalled_jobs",
    queue="maintenance",
    args_model=NoArgs,
    attempts=1,
    time_limit_seconds=60,
    schedule=lambda settings: settings.rescue_cron,
    quiet_when_idle=True,
    takes_last_slot=True,
)
async def rescue_stalled_jobs(run: JobRun, args: NoArgs) -> dict[str, Any]:
    """Requeue the jobs of workers whose heartbeat stopped (SIGKILL, lost machine)."""
    settings = get_settings()
    assert run.context.app is not None
    names, limits = _attempt_limits(run.context.app)
    rescue = {
        "stalled_after_seconds": settings.stalled_after_seconds,
        "task_names": names,
        "max_attempts": limits,
    }
    async with run.transaction() as conn:
        try:
            async with conn.transaction():  # a savepoint: a failure leaves the others to do
                rescued = await SQL.many(conn, "rescue_stalled_jobs", only_ids=None, **rescue)
        except psycopg.DatabaseError as exc:
            if isinstance(exc, psycopg.OperationalError):
                raise
            # One job's rescue failed (a trigger on it, say): the others must not wait for it.
            # Each on its own, so that one bad job never blocks the rest (a round trip each,
            # on a path that should never be taken).
            run.log.error(
                "stalled jobs' rescue failed as a batch; rescuing them one by one",
                error=f"{type(exc).__name__}: {exc}",
            )
            rescued = []
            for row in await SQL.many(
                conn, "stalled_job_ids", stalled_after_seconds=settings.stalled_after_seconds
            ):
                try:
                    async with conn.transaction():
                        rescued += await SQL.many(
                            conn, "rescue_stalled_jobs", only_ids=[row["id"]], **rescue
                        )
                except psycopg.DatabaseError as one_exc:
                    if isinstance(one_exc, psycopg.OperationalError):
                        raise
                    run.log.error(
                        f"stalled job {row['id']} could not be rescued",
                        rescued_job_id=row["id"],
                        error=f"{type(one_exc).__name__}: {one_exc}",
                    )
        pruned = await SQL.many(
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


@blueprint.job(
    name="prune_finished_jobs",
    queue="maintenance",
    args_model=NoArgs,
    attempts=3,
    time_limit_seconds=1800,
    quiet_when_idle=True,
    schedule=lambda settings: settings.prune_cron,
)
async def prune_finished_jobs(run: JobRun, args: NoArgs) -> dict[str, Any]:
    """Delete finished jobs (with their events, errors and results) older than their state's
    retention, in bounded batches, each its own short transaction, up to the first job too
    young for any retention (``prune_horizon``)."""
    settings = get_settings()
    days = settings.prune_retention_days()
    after_id, deleted, batches = 0, 0, 0
    async with run.transaction() as conn:
        row = await SQL.one(conn, "prune_horizon", retention_days=min(days.values()))
    horizon = row["horizon"] if row else None
    rested = 0.0
    while True:
        started = time.monotonic()
        async with run.transaction() as conn:
            row = await SQL.one(
                conn,
                "prune_finished_jobs",
                after_id=after_id,
                horizon=horizon,
                batch_size=settings.prune_batch_size,
                succeeded_days=days["succeeded"],
                failed_days=days["failed"],
                cancelled_days=days["cancelled"],
            )
        assert row is not None
        if row["last_candidate"] is None:
            break
        after_id = row["last_candidate"]
        deleted += row["deleted"]
        batches += 1
        # Rest in proportion to the batch's own time, so that a prune of millions takes a
        # bounded share of the server (measured: without it, a runner beside a prune of 1M
        # jobs ran at 0.66x); the busier the server, the longer each batch and each rest.
        rest = (time.monotonic() - started) * settings.prune_rest_ratio
        rested += rest
        await asyncio.sleep(rest)
    async with run.transaction() as conn:
        runs = await SQL.count(
            conn, "prune_backfill_runs", retention_days=settings.backfill_history_days
        )
        ticks = await SQL.count(
            conn, "prune_schedule_ticks", retention_days=settings.prune_after_days
        )
    return {
        "jobs_deleted": deleted,
        "batches": batches,
        "horizon_job_id": horizon,
        "rested_ms": int(rested * 1000),
        "backfill_runs_deleted": runs,
        "schedule_ticks_deleted": ticks,
    }
