"""The one place that knows Procrastinate's (and psycopg_pool's) internals.

Everything this project uses of them that is not Procrastinate's documented API goes through
here: private attributes, the versioned SQL functions our queries call, and the columns of
``procrastinate_jobs`` our queries write. ``tests/unit/test_procrastinate_adapter.py`` fails
on a Procrastinate version that lacks any of them, and when code elsewhere reaches one
directly. Procrastinate is pinned to the minor release tested here (``pyproject.toml``); the
README's "Upgrading" says how to move to the next.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg_pool
import psycopg_pool.base
from procrastinate import App, BaseConnector, exceptions, jobs
from procrastinate import worker as procrastinate_worker

# Procrastinate's fetch, which qlarius_fetch_job (sql/migrations/0016, 0026, 0029) repeats
# with the paused queues and tasks left out: its text, as of the tested release (an upgrade that
# changes it fails tests/unit/test_procrastinate_adapter.py, to be looked at).
FETCH_FUNCTION = "procrastinate_fetch_job_v2"
FETCH_FUNCTION_MD5 = "6e0906e2a5765ba6712446c4b6cdc383"  # of the text between its $$
# Procrastinate's heartbeat, which our workers' (heartbeat_of_worker, sql/queries/worker/
# resilience.sql) repeats, registering a worker again if a rescue removed its row; the same.
HEARTBEAT_FUNCTION = "procrastinate_update_heartbeat_v1"
HEARTBEAT_FUNCTION_MD5 = "3be7254d443daa709bf935899e2f8e22"
# Versioned SQL functions of Procrastinate's schema that our SQL calls.
SQL_FUNCTIONS = (
    "procrastinate_finish_job_v1",
    "procrastinate_retry_job_v2",
    "procrastinate_cancel_job_v1",
)
# Columns of procrastinate_jobs that our .sql files write (deferrals, rescues, requeues).
JOB_COLUMNS = (
    "id",
    "queue_name",
    "task_name",
    "args",
    "status",
    "scheduled_at",
    "attempts",
    "lock",
    "queueing_lock",
    "worker_id",
    "abort_requested",
)
# The unique index behind a queueing lock (a refused deferral names it).
QUEUEING_LOCK_INDEX = "procrastinate_jobs_queueing_lock_idx_v1"


def pool(app_or_connector: App | BaseConnector) -> psycopg_pool.AsyncConnectionPool:
    """The open app's (or connector's) connection pool (``PsycopgConnector.pool``; raises
    ``AppNotOpen`` when the app is not open)."""
    connector = (
        app_or_connector.connector if isinstance(app_or_connector, App) else app_or_connector
    )
    return connector.pool  # type: ignore[attr-defined,no-any-return]


def is_open(app: App) -> bool:
    try:
        pool(app)
    except exceptions.AppNotOpen:
        return False
    return True


def pool_kwargs(app: App) -> dict[str, Any]:
    """The connection options the app's pool will open connections with."""
    return dict(app.connector._pool_args.get("kwargs", {}))  # type: ignore[attr-defined]


def running_jobs(worker: procrastinate_worker.Worker) -> int:
    """How many jobs a worker runs now."""
    return len(worker._running_jobs)


def running_job_attempts(
    workers: Iterable[procrastinate_worker.Worker], worker_id: int
) -> dict[int, int]:
    """The jobs a worker runs now, by id, each with its attempts when it was fetched (a rescue
    since has added one). Procrastinate keeps them privately."""
    return {
        context.job.id: context.job.attempts
        for w in workers
        if w.worker_id == worker_id
        for context in w._running_jobs.values()
        if context.job.id is not None
    }


def wake(worker: procrastinate_worker.Worker) -> None:
    """Have an idle worker look for a job now, as a "job inserted" notification does (a
    queue resumed, a concurrency raised: behind a pooler no notification comes)."""
    worker._new_job_event.set()


def job_from_row(row: dict[str, Any]) -> jobs.Job:
    """A fetched row of ``procrastinate_jobs`` as the job the worker runs."""
    return jobs.Job.from_row(row)


def refused_queueing_lock(exc: exceptions.AlreadyEnqueued) -> str | None:
    """The queueing lock a refused deferral collided with (on the chained UniqueViolation)."""
    cause = exc.__cause__
    return getattr(cause, "queueing_lock", None)


def refusal_cause(exc: exceptions.AlreadyEnqueued) -> BaseException | None:
    """The ``UniqueViolation`` a refused deferral is chained to, as Procrastinate chains it
    (``constraint_name``, ``queueing_lock``), made quiet for Procrastinate's command line,
    which prints the message of every exception down the chain: without a message of its own
    and without the driver's error behind it (whose text those two attributes already say),
    ``procrastinate defer`` answers a duplicate with our one line."""
    cause = exc.__cause__
    if isinstance(cause, exceptions.UniqueViolation):
        cause.args = ()
        cause.__context__ = None
        cause.__suppress_context__ = True
    return cause


def steady_pool_reconnects() -> None:
    """psycopg_pool retries a failed connection with a delay that doubles from 1 s (1, 2, 4,
    8, 16 s...): after a 20 s outage its next attempt could come 10 s after the server is back,
    and every job waits for it. Worker processes retry every second instead (the class is named
    directly by the pool's code, so this is process-wide; only ``qlarius-jobs worker`` calls it)."""
    psycopg_pool.base.AttemptWithBackoff.DELAY_BACKOFF = 1.0
