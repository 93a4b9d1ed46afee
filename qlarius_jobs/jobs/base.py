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
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

import psycopg
import structlog
from procrastinate import App, JobContext, exceptions, jobs, manager, retry, types
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.logs import get_logger
from qlarius_jobs.settings import Settings, get_settings
from qlarius_jobs.worker.procrastinate_adapter import pool as app_pool
from qlarius_jobs.worker.procrastinate_adapter import refusal_cause, refused_queueing_lock

log = get_logger(__name__)

SQL = QueryFile.of(__file__)

LIVE_CONNECTION_TRIES = 3
ERROR_LIMIT = 300  # characters of an error message in a log line


class InvalidJobArguments(ValueError):
    """The job's arguments are wrong: it fails at once, is not retried, and writes nothing."""


class JobGaveUp(RuntimeError):
    """The job decided to stop for good (e.g. waited too long): not retried."""


class JobTimeout(TimeoutError):
    """The job ran past its time limit; it was cancelled and counts as a failed attempt."""


NOT_RETRYABLE: tuple[type[BaseException], ...] = (InvalidJobArguments, JobGaveUp)


BIGINT_MAX = 2**63 - 1
# A row id: positive, and within PostgreSQL's bigint (a larger one fails every attempt).
RowId = Annotated[int, Field(gt=0, le=BIGINT_MAX)]


class JobArgs(BaseModel):
    # Strict: "5" is not an id, true is not an id, unknown keys are mistakes.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoArgs(JobArgs):
    # Procrastinate's periodic deferrer passes the tick's timestamp.
    timestamp: int | None = None


class TargetArgs(JobArgs):
    target_id: RowId


class MeFileArgs(JobArgs):
    me_file_id: RowId


class BandArgs(JobArgs):
    band_id: RowId


A = TypeVar("A", bound=JobArgs)


def parse_args(task_name: str, model: type[A], raw: Any) -> A:
    if not isinstance(raw, dict):
        raise InvalidJobArguments(f"{task_name}: invalid arguments: a JSON object is required")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_field(err['loc'])}: {err['msg']}"
            + ("" if err["type"] == "missing" else f" (got {_short(err.get('input'))})")
            for err in exc.errors()
        )
    # Raised outside the handler: no pydantic dump chained to the one-line message.
    raise InvalidJobArguments(f"{task_name}: invalid arguments: {problems}")


def _field(loc: tuple[Any, ...]) -> str:
    """A field's name for a one-line message: as it is when it is a plain name, else its repr
    (a key with a newline or quotes stays on one line), cut to 60 characters."""
    name = ".".join(str(p) for p in loc) or "arguments"
    return name if name.replace(".", "_").isidentifier() and len(name) <= 60 else _short(name)


def _short(value: Any, limit: int = 60) -> str:
    """A value as it was given (repr), cut to ``limit`` characters."""
    return _cut(repr(value), limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        pool = app_pool(self.context.app)
        for _ in range(LIVE_CONNECTION_TRIES):
            async with pool.connection() as conn:
                try:
                    await pool.check_connection(conn)
                except psycopg.OperationalError:
                    await conn.close()  # the pool replaces a closed connection
                    continue
                try:
                    yield conn
                except psycopg.InternalError as exc:
                    if exc.sqlstate is None:
                        # psycopg lost track of the answers on the wire (behind PgBouncer, a
                        # server restart mid-COMMIT): never hand this connection out again
                        await conn.close()
                    raise
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
    # a run whose summary counts are all 0 (a maintenance tick that found nothing) logs at DEBUG
    quiet_when_idle: bool = False

    @property
    def retry_strategy(self) -> Backoff:
        return Backoff(attempts=self.attempts)

    async def run(self, context: JobContext, /, **raw_args: Any) -> dict[str, Any]:
        """What the worker runs: validate, bind a logger, apply the time limit, run the body,
        log one summary event (``<name> finished``, the body's counts, ``elapsed_ms``).

        What must happen however a job ends (failed, timed out, aborted, rescued) is done by
        triggers on the job table, not here."""
        started = time.monotonic()
        bound = log.bind(task=self.name, job_id=context.job.id, attempt=context.job.attempts + 1)

        def elapsed_ms() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            summary = await self._run_body(context, bound, raw_args)
        except asyncio.CancelledError:
            bound.warning(f"{self.name} aborted", outcome="aborted", elapsed_ms=elapsed_ms())
            raise
        except Exception as exc:
            retrying = self.retry_strategy.will_retry(exc, context.job.attempts)
            bound.log(
                logging.WARNING if retrying else logging.ERROR,
                f"{self.name} failed" + (", will retry" if retrying else ""),
                outcome="retrying" if retrying else "failed",
                error=f"{type(exc).__name__}: {_cut(str(exc), ERROR_LIMIT)}",
                elapsed_ms=elapsed_ms(),
            )
            raise
        idle = self.quiet_when_idle and not any(
            v for v in summary.values() if isinstance(v, int | float) and not isinstance(v, bool)
        )
        bound.log(
            logging.DEBUG if idle else logging.INFO,
            f"{self.name} finished",
            outcome="succeeded",
            elapsed_ms=elapsed_ms(),
            **summary,
        )
        return summary

    async def _run_body(
        self, context: JobContext, bound: structlog.stdlib.BoundLogger, raw_args: dict[str, Any]
    ) -> dict[str, Any]:
        if context.job.queue != self.queue:
            # written by hand into another queue: not one of our jobs to the database (no lock
            # derived for it), so not run as one
            raise InvalidJobArguments(
                f"{self.name} runs on queue {self.queue}, not {_short(context.job.queue)}"
            )
        args = parse_args(self.name, self.args_model, raw_args)
        limit = time_limit(self.name, self.time_limit_seconds)
        run = JobRun(context=context, log=bound)
        try:
            async with asyncio.timeout(limit):
                return await self.body(run, args)
        except TimeoutError as exc:
            if isinstance(exc, JobTimeout) or limit is None:
                raise
            timed_out = JobTimeout(
                f"{self.name} job {context.job.id} exceeded its time limit of {limit:g} s "
                "and was cancelled"
            )
        raise timed_out

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


class CheckedJobManager(manager.JobManager):
    """Procrastinate's job manager with this project's doors: every deferral through
    Procrastinate (``procrastinate defer``, ``configure_task(...).defer_async``, batches) is
    checked against its job's model before anything is written, and a duplicate says which
    job it duplicates, in one line."""

    def __init__(self, connector: Any, specs: dict[str, JobSpec[Any]]) -> None:
        super().__init__(connector)
        self.specs = specs

    def check(self, batch: list[jobs.Job]) -> None:
        for job in batch:
            spec = self.specs.get(job.task_name)
            if spec is None:
                if job.task_name.startswith("procrastinate."):
                    continue  # Procrastinate's own builtin tasks
                raise InvalidJobArguments(f"no such task: {_cut(job.task_name, 80)}")
            if job.queue != spec.queue:
                raise InvalidJobArguments(
                    f"{spec.name} runs on queue {spec.queue}, not {_short(job.queue)}"
                )
            if job.lock is not None or job.queueing_lock is not None:
                raise InvalidJobArguments(
                    f"{spec.name}: its locks are derived from its arguments; "
                    "--lock and --queueing-lock are not accepted"
                )
            parse_args(job.task_name, spec.args_model, job.task_kwargs)

    async def batch_defer_jobs_async(
        self, jobs: list[jobs.Job], connection: Any | None = None
    ) -> list[jobs.Job]:
        self.check(jobs)
        try:
            return await super().batch_defer_jobs_async(jobs, connection=connection)
        except exceptions.AlreadyEnqueued as exc:
            # Procrastinate's contract: chained to the UniqueViolation (constraint_name,
            # queueing_lock); the message says which job it duplicates.
            raise _duplicate_message(exc, await self._waiting_job(exc)) from refusal_cause(exc)

    def batch_defer_jobs(
        self, jobs: list[jobs.Job], connection: Any | None = None
    ) -> list[jobs.Job]:
        self.check(jobs)
        try:
            return super().batch_defer_jobs(jobs, connection=connection)
        except exceptions.AlreadyEnqueued as exc:
            raise _duplicate_message(exc, None) from refusal_cause(exc)

    async def _waiting_job(self, exc: exceptions.AlreadyEnqueued) -> int | None:
        """The job a refused deferral duplicates: best effort (the app may not be open, the
        caller's transaction may be aborted by the refusal); the refusal itself is what
        matters."""
        lock = refused_queueing_lock(exc)
        if lock is None:
            return None
        try:
            async with app_pool(self.connector).connection() as conn:
                row = await SQL.one(conn, "waiting_job_with_lock", lock=lock)
        except Exception as lookup_error:
            log.debug("duplicate's job not looked up", error=repr(lookup_error))
            return None
        return None if row is None else int(row["id"])


def _duplicate_message(
    exc: exceptions.AlreadyEnqueued, waiting: int | None
) -> exceptions.AlreadyEnqueued:
    lock = refused_queueing_lock(exc) or "?"
    task = lock.split(":", 1)[0]
    where = f"as job #{waiting}" if waiting is not None else f"(queueing lock {lock})"
    return exceptions.AlreadyEnqueued(f"{task}: already enqueued {where}")


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
        quiet_when_idle: bool = False,
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
                quiet_when_idle=quiet_when_idle,
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
    # context is positional-only: an argument named "context" in a job row is an unknown
    # argument (refused by the model), not a clash with this parameter.
    async def run_task(context: JobContext, /, **raw_args: Any) -> dict[str, Any]:
        return await spec.run(context, **raw_args)

    run_task.__name__ = run_task.__qualname__ = spec.body.__name__
    run_task.__doc__ = spec.body.__doc__
    return run_task
