"""One run of a job: its database connection, how its failures are retried, and the kinds of
failure that are never retried."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import psycopg
import structlog
from procrastinate import JobContext, jobs, retry
from psycopg import AsyncConnection

from qlarius_jobs.jobs.arguments import InvalidJobArguments
from qlarius_jobs.settings import get_settings
from qlarius_jobs.worker.procrastinate_adapter import pool as app_pool

LIVE_CONNECTION_TRIES = 3


class JobGaveUp(RuntimeError):
    """The job decided to stop for good (e.g. waited too long): not retried."""


class JobTimeout(TimeoutError):
    """The job ran past its time limit; it was cancelled and counts as a failed attempt."""


NOT_RETRYABLE: tuple[type[BaseException], ...] = (InvalidJobArguments, JobGaveUp)


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
