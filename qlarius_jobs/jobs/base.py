"""What every job shares: validated arguments, attempts with exponential backoff, a time
limit, one summary log event per run, a transaction helper, and deferral inside the caller's
transaction.

A job module declares its jobs on a ``JobBlueprint`` (after Procrastinate's
``builtin_tasks.py``); importing it creates no app and opens nothing. ``app.py`` registers
every blueprint of ``jobs/catalog.py`` on the one App::

    blueprint = JobBlueprint()

    @blueprint.job(name="populate_target", queue="targets", args_model=TargetArgs,
                   time_limit_seconds=1800)
    async def populate_target(run: JobRun, args: TargetArgs) -> dict[str, int]: ...

Procrastinate's own ``Blueprint`` is not used: registering one on an app prefixes every task
name with a namespace (``populations:populate_target``), which would rename the jobs already
queued, the task names the migrations' triggers match, and the operators' ``procrastinate
defer populate_target`` commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psycopg
import structlog
from procrastinate import App, JobContext, jobs, retry, types
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, PositiveInt, ValidationError

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.logs import get_logger
from qlarius_jobs.settings import Settings, get_settings

log = get_logger(__name__)

SQL = QueryFile.beside(__file__)

LIVE_CONNECTION_TRIES = 3


class InvalidJobArguments(ValueError):
    """The job's arguments are wrong: it fails at once, is not retried, and writes nothing."""


class JobGaveUp(RuntimeError):
    """The job decided to stop for good (e.g. waited too long): not retried."""


class JobTimeout(TimeoutError):
    """The job ran past its time limit; it was cancelled and counts as a failed attempt."""


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

    context: JobContext
    log: structlog.stdlib.BoundLogger

    @property
    def job_id(self) -> int | None:
        return self.context.job.id

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
        assert self.context.app is not None
        pool = self.context.app.connector.pool  # type: ignore[attr-defined]
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


TaskBody = Callable[[JobRun, A], Awaitable[dict[str, Any]]]
Schedule = Callable[[Settings], str]  # a cron expression, read from the settings


def time_limit(task_name: str, default: float | None) -> float | None:
    """A job's time limit: ``QLARIUS_TASK_TIMEOUTS`` (``{"task": seconds}``) over its own."""
    return get_settings().task_timeouts.get(task_name, default)


@dataclass(frozen=True)
class JobSpec(Generic[A]):
    """One job: its name and queue, its argument model, and its options."""

    name: str
    queue: str
    args_model: type[A]
    body: TaskBody[A]
    attempts: int = 3
    # cancelled past this (a failed attempt, JobTimeout); None: no limit
    time_limit_seconds: float | None = None
    # deferred on this cron schedule by every worker (one job per tick)
    schedule: Schedule | None = None

    @property
    def retry_strategy(self) -> Backoff:
        return Backoff(attempts=self.attempts)

    async def run(self, context: JobContext, **raw_args: Any) -> dict[str, Any]:
        """What the worker runs: validate, bind a logger, apply the time limit, run the body,
        log one summary event (``<name> finished``, the body's counts, ``elapsed_ms``).

        What must happen however a job ends (failed, timed out, aborted, rescued) is done by
        triggers on the job table, not here."""
        started = time.monotonic()
        bound = log.bind(task=self.name, job_id=context.job.id, attempt=context.job.attempts + 1)
        args = parse_args(self.name, self.args_model, raw_args)
        limit = time_limit(self.name, self.time_limit_seconds)
        run = JobRun(context=context, log=bound)
        try:
            async with asyncio.timeout(limit):
                summary = await self.body(run, args)
        except TimeoutError as exc:
            if isinstance(exc, JobTimeout) or limit is None:
                raise
            raise JobTimeout(
                f"{self.name} job {context.job.id} exceeded its time limit of {limit:g} s "
                "and was cancelled"
            ) from None
        bound.info(
            f"{self.name} finished", elapsed_ms=int((time.monotonic() - started) * 1000), **summary
        )
        return summary

    async def defer(
        self,
        conn: AsyncConnection,
        *,
        schedule_in: types.TimeDeltaParams | None = None,
        **task_kwargs: Any,
    ) -> int | None:
        """Defer this job with ``conn``: in its open transaction (it exists only if that
        commits), or, on an autocommit connection outside a transaction, at once.

        The arguments are checked against the model first (``InvalidJobArguments``, nothing
        written). A job already waiting with the same queueing lock makes this a quiet no-op
        (returns None): the database refuses nothing, so nothing is logged as an error.
        """
        parse_args(self.name, self.args_model, task_kwargs)
        delay = dt.timedelta(**schedule_in).total_seconds() if schedule_in else None
        row = await SQL.one(
            conn,
            "defer_job",
            queue=self.queue,
            task_name=self.name,
            args=Jsonb(task_kwargs),
            delay_seconds=delay,
        )
        if row is None:
            log.debug("job already waiting, not deferred again", task=self.name, args=task_kwargs)
            return None
        return int(row["id"])

    async def defer_many(self, conn: AsyncConnection, many_kwargs: list[dict[str, Any]]) -> int:
        """Defer one job per item of ``many_kwargs`` in one statement, on the terms of
        ``defer`` (all checked before any is written); returns how many were deferred."""
        for task_kwargs in many_kwargs:
            parse_args(self.name, self.args_model, task_kwargs)
        if not many_kwargs:
            return 0
        rows = await SQL.many(
            conn,
            "defer_jobs",
            queue=self.queue,
            task_name=self.name,
            args=[Jsonb(k) for k in many_kwargs],
        )
        return len(rows)


@dataclass
class JobBlueprint:
    """The jobs of one module, declared without an app; ``register`` puts them on one."""

    specs: dict[str, JobSpec[Any]] = field(default_factory=dict)

    def job(
        self,
        *,
        name: str,
        queue: str,
        args_model: type[A],
        attempts: int = 3,
        time_limit_seconds: float | None = None,
        schedule: Schedule | None = None,
    ) -> Callable[[TaskBody[A]], JobSpec[A]]:
        """Declare ``body`` as the job ``name``; the decorated name becomes its ``JobSpec``."""

        def decorator(body: TaskBody[A]) -> JobSpec[A]:
            if name in self.specs:
                raise ValueError(f"job {name} is declared twice")
            spec = JobSpec(
                name=name,
                queue=queue,
                args_model=args_model,
                body=body,
                attempts=attempts,
                time_limit_seconds=time_limit_seconds,
                schedule=schedule,
            )
            self.specs[name] = spec
            return spec

        return decorator

    def register(self, app: App, settings: Settings) -> None:
        """Each job as a Procrastinate task of ``app`` (periodic ones with their schedule)."""
        for spec in self.specs.values():
            task = app.task(
                name=spec.name, queue=spec.queue, retry=spec.retry_strategy, pass_context=True
            )(_task_function(spec))
            if spec.schedule is not None:
                app.periodic(cron=spec.schedule(settings), periodic_id=spec.name)(task)


def _task_function(spec: JobSpec[Any]) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def run_task(context: JobContext, **raw_args: Any) -> dict[str, Any]:
        return await spec.run(context, **raw_args)

    run_task.__name__ = run_task.__qualname__ = spec.body.__name__
    run_task.__doc__ = spec.body.__doc__
    return run_task
