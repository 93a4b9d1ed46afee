"""What every job shares: its ``JobSpec`` (arguments checked, a time limit, one summary log
event per run, deferral inside the caller's transaction) and the ``JobBlueprint`` that
declares it.

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
import datetime as dt
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, runtime_checkable

import psycopg
import structlog
from procrastinate import App, JobContext, types
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs.arguments import A, InvalidJobArguments, cut, parse_args, short_repr
from qlarius_jobs.jobs.run import Backoff, JobRun, JobTimeout
from qlarius_jobs.logs import get_logger
from qlarius_jobs.settings import Settings, get_settings

log = get_logger(__name__)

SQL = QueryFile.of(__file__)

ERROR_LIMIT = 300  # characters of an error message in a log line

TaskBody = Callable[[JobRun, A], Awaitable[dict[str, Any]]]
Schedule = Callable[[Settings], str]  # a default cron expression, read from the settings


def time_limit(task_name: str, default: float | None) -> float | None:
    """A job's time limit: ``QLARIUS_TASK_TIMEOUTS`` (``{"task": seconds}``) over its own."""
    return get_settings().task_timeouts.get(task_name, default)


@runtime_checkable
class ResultKeeper(Protocol):
    """A job manager that writes a success's summary counts with the success itself (ours,
    in worker processes: ``worker/resilience.py``)."""

    def keep_result(self, job_id: int, counts: dict[str, int | float]) -> None: ...


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
    # its schedule's default (``migrate`` fills qlarius_schedules with it the first time)
    schedule: Schedule | None = None
    # a run whose summary counts are all 0 (a maintenance tick that found nothing) logs at DEBUG
    quiet_when_idle: bool = False
    # may take a worker's last free slot of its queue (the drains, the rescue: short, and what
    # must never wait behind long jobs); every other job of ours leaves it free (migration 0029)
    takes_last_slot: bool = False

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
                error=f"{type(exc).__name__}: {cut(str(exc), ERROR_LIMIT)}",
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
        await self._record_counts(context, bound, summary)
        return summary

    async def _record_counts(
        self,
        context: JobContext,
        bound: structlog.stdlib.BoundLogger,
        summary: dict[str, Any],
    ) -> None:
        """The summary's numbers in ``qlarius_job_results`` (migration 0019), for the console.
        In our worker processes they are handed to the job manager, which writes them with
        the job's success, in the same statement (no round trip, no commit of their own);
        under any other worker (a bare ``procrastinate worker`` on our app), by one statement
        here. Losing them costs a column of a page, never the job: an error is logged and the
        job still succeeds."""
        counts = {
            k: v
            for k, v in summary.items()
            if isinstance(v, int | float)
            and not isinstance(v, bool)
            and not (isinstance(v, float) and not math.isfinite(v))  # not JSON
        }
        if not counts or context.job.id is None or context.app is None:
            return
        manager = context.app.job_manager
        if isinstance(manager, ResultKeeper):
            manager.keep_result(context.job.id, counts)
            return
        try:
            async with JobRun(context=context, log=bound).connection() as conn:
                await SQL.execute(
                    conn,
                    "record_job_result",
                    job_id=context.job.id,
                    worker_id=context.job.worker_id,
                    counts=Jsonb(counts),
                )
        except psycopg.Error as exc:
            bound.warning("job counts not recorded", error=cut(str(exc), ERROR_LIMIT))

    async def _run_body(
        self, context: JobContext, bound: structlog.stdlib.BoundLogger, raw_args: dict[str, Any]
    ) -> dict[str, Any]:
        if context.job.queue != self.queue:
            # written by hand into another queue: not one of our jobs to the database (no lock
            # derived for it), so not run as one
            raise InvalidJobArguments(
                f"{self.name} runs on queue {self.queue}, not {short_repr(context.job.queue)}"
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
        takes_last_slot: bool = False,
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
                takes_last_slot=takes_last_slot,
            )
            self.specs[name] = spec
            return spec

        return decorator

    def register(self, app: App, settings: Settings) -> None:
        """Each job as a Procrastinate task of ``app``. Schedules are not Procrastinate's
        periodic tasks: they live in ``qlarius_schedules`` (``worker/scheduler.py``)."""
        for spec in self.specs.values():
            app.task(
                name=spec.name, queue=spec.queue, retry=spec.retry_strategy, pass_context=True
            )(_task_function(spec))


def _task_function(spec: JobSpec[Any]) -> Callable[..., Awaitable[dict[str, Any]]]:
    # context is positional-only: an argument named "context" in a job row is an unknown
    # argument (refused by the model), not a clash with this parameter.
    async def run_task(context: JobContext, /, **raw_args: Any) -> dict[str, Any]:
        return await spec.run(context, **raw_args)

    run_task.__name__ = run_task.__qualname__ = spec.body.__name__
    run_task.__doc__ = spec.body.__doc__
    return run_task
