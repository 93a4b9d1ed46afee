"""What every task shares: validated arguments, attempts with exponential backoff, one summary
log event per run, a transaction helper, and deferral inside the caller's transaction.

A task module only declares its argument model and writes the body::

    @job_task(name="populate_target", queue="targets", args_model=TargetArgs)
    async def populate_target(run: JobRun, args: TargetArgs) -> dict[str, int]: ...
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import structlog
from procrastinate import JobContext, jobs, retry, types
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, PositiveInt, ValidationError

from qlarius_jobs import sql_files
from qlarius_jobs.app import app
from qlarius_jobs.logs import get_logger
from qlarius_jobs.settings import get_settings

log = get_logger(__name__)

LIVE_CONNECTION_TRIES = 3


class InvalidJobArguments(ValueError):
    """The job's arguments are wrong: it fails at once, is not retried, and writes nothing."""


class JobGaveUp(RuntimeError):
    """The job decided to stop for good (e.g. waited too long): not retried."""


NOT_RETRYABLE: tuple[type[BaseException], ...] = (InvalidJobArguments, JobGaveUp)


class JobArgs(BaseModel):
    # Strict: "5" is not an id, true is not an id, unknown keys are mistakes.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoArgs(JobArgs):
    # Procrastinate's periodic deferrer passes the tick's timestamp.
    timestamp: int | None = None


class TargetArgs(JobArgs):
    target_id: PositiveInt


class MeFileArgs(JobArgs):
    me_file_id: PositiveInt


class BandArgs(JobArgs):
    band_id: PositiveInt


A = TypeVar("A", bound=JobArgs)


def parse_args(task_name: str, model: type[A], raw: dict[str, Any]) -> A:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidJobArguments(f"{task_name}: invalid arguments: {problems}") from None


@dataclass(frozen=True)
class Backoff(retry.BaseRetryStrategy):
    """``attempts`` runs in all, waiting backoff, 2x backoff, 4x backoff... in between."""

    attempts: int
    backoff_seconds: float | None = None  # None: the setting, read when a job fails

    def will_retry(self, exception: BaseException, attempts_done: int) -> bool:
        return not isinstance(exception, NOT_RETRYABLE) and attempts_done + 1 < self.attempts

    def get_retry_decision(
        self, *, exception: BaseException, job: jobs.Job
    ) -> retry.RetryDecision | None:
        if not self.will_retry(exception, job.attempts):
            return None
        base = self.backoff_seconds
        if base is None:
            base = get_settings().retry_backoff_seconds
        return retry.RetryDecision(retry_in={"seconds": int(base * 2**job.attempts)})


@dataclass
class JobRun:
    """One run of a task: its context, a logger bound to it, and database access."""

    context: JobContext | None
    log: structlog.stdlib.BoundLogger

    @property
    def job_id(self) -> int | None:
        return self.context.job.id if self.context else None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection inside one transaction: committed at the end, or rolled back."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """A live pooled connection of its own (like the pool's ``connection()``: a
        transaction left open is committed at the end, rolled back on an exception). Checked
        first: after a database restart the pool may still hold dead connections, and a job
        should not spend an attempt on one."""
        pool = app.connector.pool
        for _ in range(LIVE_CONNECTION_TRIES):
            async with pool.connection() as conn:
                try:
                    await pool.check_connection(conn)
                except psycopg.OperationalError:
                    await conn.close()  # the pool replaces a closed connection
                    continue
                yield conn
                return
        raise psycopg.OperationalError("no live connection to the database")


# The argument model of every task, by name: one source of truth for the worker's check and
# for deferral's.
TASK_ARGS: dict[str, type[JobArgs]] = {}


async def defer_job(
    conn: AsyncConnection,
    task_name: str,
    *,
    schedule_in: types.TimeDeltaParams | None = None,
    **task_kwargs: Any,
) -> int | None:
    """Defer a job with ``conn``: in its open transaction (it exists only if that commits), or,
    on an autocommit connection outside a transaction, at once.

    The arguments are checked against the task's model first (``InvalidJobArguments``, nothing
    written). A job already waiting with the same queueing lock makes this a quiet no-op
    (returns None): the database refuses nothing, so nothing is logged as an error.
    """
    if task_name not in TASK_ARGS:
        app.perform_import_paths()  # the task modules register themselves when imported
    model = TASK_ARGS.get(task_name)
    if model is None:
        raise InvalidJobArguments(f"{task_name}: no such task")
    parse_args(task_name, model, task_kwargs)
    delay = None
    if schedule_in:
        delay = dt.timedelta(**schedule_in).total_seconds()
    row = await sql_files.fetch_one(
        conn,
        "defer_job",
        queue=app.tasks[task_name].queue,
        task_name=task_name,
        args=Jsonb(task_kwargs),
        delay_seconds=delay,
    )
    if row is None:
        log.debug("job already waiting, not deferred again", task=task_name, args=task_kwargs)
        return None
    return int(row["id"])


TaskBody = Callable[[JobRun, A], Awaitable[dict[str, Any]]]


def job_task(
    *,
    name: str,
    queue: str,
    args_model: type[A],
    attempts: int = 3,
    periodic_cron: str | None = None,
    timeout_seconds: float | None = None,
) -> Callable[[TaskBody], Any]:
    """Register ``body`` as the Procrastinate task ``name`` on ``queue``.

    The wrapper validates the arguments, binds a logger, times the run and logs one summary
    event (``<name> finished``, the body's counts, ``elapsed_ms``). ``timeout_seconds`` is
    the task's default time limit (see ``middleware.py``). What must happen however a job ends
    (failed, timed out, aborted, rescued) is done by triggers on the job table, not here.
    """
    strategy = Backoff(attempts=attempts)

    def decorator(body: TaskBody) -> Any:
        async def run_task(context: JobContext, **raw_args: Any) -> dict[str, Any]:
            started = time.monotonic()
            bound = log.bind(task=name, job_id=context.job.id, attempt=context.job.attempts + 1)
            args = parse_args(name, args_model, raw_args)
            summary = await body(JobRun(context=context, log=bound), args)
            bound.info(
                f"{name} finished",
                elapsed_ms=int((time.monotonic() - started) * 1000),
                **summary,
            )
            return summary

        run_task.__name__ = body.__name__
        run_task.__qualname__ = body.__qualname__
        run_task.__doc__ = body.__doc__
        task = app.task(name=name, queue=queue, retry=strategy, pass_context=True)(run_task)
        TASK_ARGS[name] = args_model
        if periodic_cron is not None:
            app.periodic(cron=periodic_cron, periodic_id=name)(task)
        task.timeout_seconds = timeout_seconds
        return task

    return decorator
