"""Workers that ride out a lost database.

A database restart, failover or network cut breaks every connection of a worker process at
once. Procrastinate's worker treats any database error in its fetch loop or side tasks
(heartbeat, LISTEN, periodic deferrer) as fatal: it stops, and the process used to exit with
status 0. Here, in worker processes only, Procrastinate's job manager is replaced by one whose
calls wait for the database instead, with backoff and jitter:

- one line when the database goes away, one when it is back (``Availability``), and a check
  of the pool's idle connections then, so that dead ones are not handed out;
- a job's final status (or its retry) is written once the database is back: a job whose
  transaction committed is recorded as succeeded, one that failed with the connection is
  retried. The write is guarded by the job's worker: if another worker rescued the job in the
  meantime, this one's late result is dropped, never written over the other run;
- a fetch whose answer was lost with the connection may have claimed a job on the server:
  such jobs (``doing`` for this worker, not running here) are put back before fetching again;
- past ``QLARIUS_DATABASE_OUTAGE_LIMIT_SECONDS`` the worker gives up: ``DatabaseGone``, and
  the process exits non-zero with one line saying why (see ``runner.py``);
- a worker whose row a rescue removed (its heartbeat older than
  ``QLARIUS_STALLED_AFTER_SECONDS``: the process was paused, or the database away that long)
  is registered again under its own id, with one line, by its next heartbeat or fetch (the
  jobs table's foreign key refuses a fetch for a worker with no row). The jobs it runs that
  no rescue took yet (the deletion only cleared their worker: same attempt) stay its own and
  their ends are written; what it writes of the ones a rescue took is dropped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from procrastinate import exceptions, jobs, utils

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.logs import get_logger
from qlarius_jobs.settings import get_settings
from qlarius_jobs.worker.last_slot import LastSlot
from qlarius_jobs.worker.managers import CheckedJobManager
from qlarius_jobs.worker.procrastinate_adapter import job_from_row

log = get_logger(__name__)

SQL = QueryFile.of(__file__)

T = TypeVar("T")

# Retries while the database is away back off up to this (x 0.5-1.5 jitter): once it is back,
# work resumes within about 3 s.
MAX_BACKOFF_SECONDS = 2.0


class DatabaseGone(RuntimeError):
    """The database stayed unreachable past the outage limit."""


WORKER_FOREIGN_KEY = "procrastinate_jobs_worker_id_fkey"


def is_worker_gone(exc: BaseException) -> bool:
    """The fetch named a worker whose row is gone (the jobs table's foreign key refused it),
    seen through Procrastinate's wrapping."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, psycopg.errors.ForeignKeyViolation):
            return seen.diag.constraint_name == WORKER_FOREIGN_KEY
        seen = seen.__cause__ or seen.__context__
    return False


def is_connection_error(exc: BaseException) -> bool:
    """A lost or refused connection (not a bug in a query), seen through Procrastinate's
    wrapping: the database is away, and the same call can succeed once it is back."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(
            seen,
            psycopg.OperationalError | psycopg.InterfaceError | psycopg_pool.PoolTimeout,
        ) and not isinstance(seen, psycopg.errors.QueryCanceled):
            return True
        if isinstance(seen, psycopg.InternalError) and seen.sqlstate is None:
            # raised by psycopg itself, not the server: the answers on the wire no longer
            # match the commands (seen behind PgBouncer while the server restarts: "received
            # 2 results from command 'COMMIT'"). The connection is lost, not the query wrong.
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reason(exc: BaseException) -> str:
    text = str(exc.__cause__ or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Availability:
    """Whether this process can reach the database; one per process."""

    def __init__(
        self, limit_seconds: float, pool: psycopg_pool.AsyncConnectionPool | None = None
    ) -> None:
        self.limit_seconds = limit_seconds
        self.pool = pool
        self.lost_since: float | None = None
        self.outages = 0
        self.gone: str | None = None  # why the process gave up on the database, if it did
        # set with gone: the process stops (a failed side task alone may go unnoticed:
        # Procrastinate's worker watches its side tasks only until the first one ends)
        self.gave_up = asyncio.Event()
        self.stopping = False  # the process was asked to stop: stop waiting for the database
        self._checking: asyncio.Task[None] | None = None

    def _check_pool(self) -> None:
        """Weed out the pool's dead connections (all of them, after a restart)."""
        if self.pool is not None and (self._checking is None or self._checking.done()):
            self._checking = asyncio.get_running_loop().create_task(self.pool.check())

    def failed(self, exc: BaseException) -> float:
        """A call failed for want of the database; returns seconds lost so far, or raises
        ``DatabaseGone`` past the limit (at once once the process gave up)."""
        if self.gone:
            raise DatabaseGone(self.gone)
        now = time.monotonic()
        if self.lost_since is None:
            self.lost_since = now
            self.outages += 1
            log.warning("database unavailable; waiting for it", error=_reason(exc))
            self._check_pool()
        lost = now - self.lost_since
        if lost > self.limit_seconds:
            self.gone = (
                f"the database has been unreachable for {lost:.0f} s "
                f"(QLARIUS_DATABASE_OUTAGE_LIMIT_SECONDS={self.limit_seconds:g}): {_reason(exc)}"
            )
            self.gave_up.set()
            raise DatabaseGone(self.gone)
        return lost

    def succeeded(self) -> None:
        if self.lost_since is not None:
            log.info(
                "database available again",
                unavailable_s=round(time.monotonic() - self.lost_since, 1),
            )
            self.lost_since = None
            self._check_pool()

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``fn(...)``, again and again (backoff with jitter) while the database is away."""
        delay = 0.1
        while True:
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                self.failed(exc)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                continue
            self.succeeded()
            return result


async def ride_out(availability: Availability, serve: Callable[[], Awaitable[None]]) -> None:
    """Run a process's side loop (``serve``: wake-ups, scheduler, queue controls) until
    cancelled: a lost database is waited for, then ``serve`` starts again (past the outage
    limit, ``DatabaseGone``). Any other error is raised."""
    await availability.call(serve)


# worker id -> the jobs it runs now: id -> attempts when fetched
RunningJobs = Callable[[int], dict[int, int]]


class JobNotRunningHere(exceptions.ConnectorException):
    """A job's outcome could not be written: it is no longer running for the worker that ran
    it (another worker rescued it while this one had lost the database). Dropped, not
    written over the other run."""

    def __init__(self, job: jobs.Job, status: str) -> None:
        super().__init__(
            f"job #{job.id} ({job.task_name}) is not running for worker {job.worker_id} any more "
            f"(rescued by another worker?): its {status} here is dropped"
        )
        self.job_id = job.id


class ResilientJobManager(CheckedJobManager):
    """Procrastinate's job manager, as workers use it, riding out a lost database."""

    def __init__(self, base: CheckedJobManager, availability: Availability) -> None:
        super().__init__(base.connector, base.specs)
        self.availability = availability
        self.running_jobs: RunningJobs = lambda _worker_id: {}
        # whether a worker may start one more job now (its queue's concurrency override)
        self.may_start: Callable[[int], bool] = lambda _worker_id: True
        # each queue's last slot, kept for the drains and the rescue (runner.py sets it)
        self.last_slot: LastSlot | None = None
        self._suspect_workers: set[int] = set()
        self._unregistered_workers: set[int] = set()  # a fetch met their row gone
        # a success's summary counts (JobSpec.run), written by finish_job with the success
        self._results: dict[int, dict[str, int | float]] = {}
        # worker id -> its introduction (queue, host, pid, concurrency; runner.py), given again
        # with the worker's row if a rescue removes it
        self.introductions: dict[int, dict[str, Any]] = {}

    def keep_result(self, job_id: int, counts: dict[str, int | float]) -> None:
        """``JobSpec``'s ``ResultKeeper``: the counts of a job that just succeeded here."""
        self._results[job_id] = counts

    async def fetch_job(self, queues: Iterable[str] | None, worker_id: int) -> jobs.Job | None:
        """Procrastinate's fetch, leaving paused queues' and tasks' jobs waiting, and none
        for a worker at its queue's concurrency override; riding out a lost database."""
        if not self.may_start(worker_id):
            return None  # woken again when the override is raised, or polls
        while True:
            if self.availability.stopping and self.availability.lost_since is not None:
                return None  # asked to stop while the database is away: no job, stop now
            try:
                if worker_id in self._unregistered_workers:
                    await self._beat(worker_id)
                    self._unregistered_workers.discard(worker_id)
                if worker_id in self._suspect_workers:
                    # a fetch of ours failed with its connection: it may have claimed a job on
                    # the server that we never got. Nothing else of this worker is fetching.
                    # through the connector, as every query here: errors come wrapped in
                    # ConnectorException, as from any JobManager call
                    row = await SQL.one_via_connector(
                        self.connector,
                        "requeue_unclaimed_jobs",
                        worker_id=worker_id,
                        running=sorted(self.running_jobs(worker_id)),
                    )
                    if row["requeued"]:
                        log.warning(
                            "jobs claimed by a fetch whose answer was lost are queued again",
                            jobs=row["requeued"],
                        )
                    self._suspect_workers.discard(worker_id)
                row = await SQL.one_via_connector(
                    self.connector,
                    "fetch_job",
                    queues=None if queues is None else list(queues),
                    worker_id=worker_id,
                    keep_last_slot=bool(self.last_slot and self.last_slot.keep(worker_id, queues)),
                )
                job = job_from_row(row) if row and row["id"] is not None else None
                if job is not None and self.last_slot is not None:
                    self.last_slot.started(worker_id, job)
            except Exception as exc:
                if is_worker_gone(exc):
                    # a rescue removed the worker's row: back (as the heartbeat does) at the
                    # top of the loop, inside its try (a lost database then is ridden out, a
                    # stop request heeded), then fetch again
                    self._unregistered_workers.add(worker_id)
                    continue
                if not is_connection_error(exc):
                    raise
                self._suspect_workers.add(worker_id)
                self.availability.failed(exc)
                await asyncio.sleep(random.uniform(0.2, 1.0))
                continue
            self.availability.succeeded()
            return job

    async def finish_job(self, job: jobs.Job, status: jobs.Status, delete_job: bool) -> None:
        """Procrastinate's ``finish_job``, guarded by the job's worker and riding out a lost
        database. A job that is no longer running for that worker (rescued by another one
        while this one lost the database) raises ``JobNotRunningHere``, as Procrastinate's
        own raises for a job it cannot finish: this late result is not written, nor are the
        counts its body returned (kept by ``keep_result``; written by the same statement)."""
        counts = self._results.pop(job.id, None) if job.id is not None else None
        row = await self._write_outcome(
            job,
            lambda: SQL.one_via_connector(
                self.connector,
                "finish_job_of_worker",
                job_id=job.id,
                worker_id=job.worker_id,
                attempts=job.attempts,
                status=status.value,
                delete_job=delete_job,
                counts=counts,
            ),
        )
        if not row["finished"]:
            raise JobNotRunningHere(job, status.value)

    async def retry_job(
        self,
        job: jobs.Job,
        retry_at: dt.datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        lock: str | None = None,
    ) -> None:
        """Procrastinate's ``retry_job``, guarded and riding out a lost database like
        ``finish_job``."""
        if job.id is not None:
            self._results.pop(job.id, None)  # a success's counts only
        row = await self._write_outcome(
            job,
            lambda: SQL.one_via_connector(
                self.connector,
                "retry_job_of_worker",
                job_id=job.id,
                worker_id=job.worker_id,
                attempts=job.attempts,
                retry_at=retry_at or utils.utcnow(),
                priority=priority,
                queue=queue,
                lock=lock,
            ),
        )
        if not row["retried"]:
            raise JobNotRunningHere(job, "todo (retry)")

    async def _write_outcome(
        self, job: jobs.Job, write: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """A job's outcome, written by ``write`` (riding out a lost database); its slot free
        for ``last_slot`` however that ends."""
        try:
            return await self.availability.call(write)
        finally:
            if self.last_slot is not None:
                self.last_slot.ended(job)

    async def register_worker(self) -> int:
        return await self.availability.call(super().register_worker)

    async def prune_stalled_workers(self, seconds_since_heartbeat: float) -> list[int]:
        return await self.availability.call(super().prune_stalled_workers, seconds_since_heartbeat)

    async def unregister_worker(self, worker_id: int) -> None:
        if self.availability.gone or self.availability.lost_since is not None:
            return  # a worker row left behind is pruned by the others' heartbeat check
        try:
            await super().unregister_worker(worker_id)
        except exceptions.ConnectorException as exc:
            if not is_connection_error(exc):
                raise
            # a worker row left behind is pruned by the others' heartbeat check

    async def update_heartbeat(self, worker_id: int) -> None:
        try:
            await self._beat(worker_id)
        except exceptions.ConnectorException as exc:
            if not is_connection_error(exc):
                raise
            self.availability.failed(exc)  # DatabaseGone past the limit stops the worker
            return
        self.availability.succeeded()

    async def _beat(self, worker_id: int) -> None:
        """The heartbeat, registering the worker again if a rescue removed its row, with the
        jobs still running here that no rescue took (the row's deletion cleared their
        worker)."""
        introduction = self.introductions.get(worker_id)
        running = self.running_jobs(worker_id)
        row = await SQL.one_via_connector(
            self.connector,
            "heartbeat_of_worker",
            worker_id=worker_id,
            running=list(running),
            attempts=list(running.values()),
            **(introduction or dict.fromkeys(("queue", "host", "pid", "concurrency"))),
        )
        if row["registered_again"]:
            log.warning(
                f"worker {worker_id} was removed as stalled by a rescue (its heartbeat older "
                f"than QLARIUS_STALLED_AFTER_SECONDS={get_settings().stalled_after_seconds:g}); "
                "registered again",
                worker_id=worker_id,
                jobs_kept=row["reattached"] or [],
            )

    async def list_jobs_to_abort_async(self, queue: str | None = None) -> Iterable[int]:
        try:
            return await super().list_jobs_to_abort_async(queue)
        except exceptions.ConnectorException as exc:
            if not is_connection_error(exc):
                raise
            self.availability.failed(exc)
            return []

    async def listen_for_jobs(self, *, on_notification: Any, queues: Any = None) -> None:
        delay = 0.2
        while True:
            try:
                await super().listen_for_jobs(on_notification=on_notification, queues=queues)
            except exceptions.ConnectorException as exc:
                if not is_connection_error(exc):
                    raise
                self.availability.failed(exc)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
