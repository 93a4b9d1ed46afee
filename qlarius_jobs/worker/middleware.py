"""Worker middleware: the error history (Oban's ``errors``).

Installed as the App's worker defaults, so ``qlarius-jobs worker`` and a bare
``procrastinate --app=qlarius_jobs.app.app worker`` both run them.
"""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

import psycopg
from procrastinate import JobContext

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.logs import get_logger
from qlarius_jobs.worker.procrastinate_adapter import pool as app_pool

log = get_logger(__name__)

SQL = QueryFile.of(__file__)

TRACEBACK_LIMIT = 4000  # characters kept: the end of the traceback, where the cause is
MESSAGE_LIMIT = 2000


def _excerpt(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= TRACEBACK_LIMIT else "...\n" + text[-TRACEBACK_LIMIT:]


async def record_job_error(
    conn: psycopg.AsyncConnection, context: JobContext, exc: BaseException
) -> None:
    await SQL.execute(
        conn,
        "record_job_error",
        job_id=context.job.id,
        task_name=context.job.task_name,
        attempt=context.job.attempts + 1,
        error_type=type(exc).__name__,
        message=(str(exc) or repr(exc))[:MESSAGE_LIMIT],
        traceback=_excerpt(exc),
    )


class JobAborted(Exception):
    """How an attempt ended by cancellation is recorded (an abort, or a forced shutdown)."""


async def error_history(call_next: Any, context: JobContext, worker: Any) -> Any:
    """Record every attempt that ended without success (number, time, type, message,
    traceback excerpt): failed, timed out, or aborted (cancelled). A history row waits for a
    lost database (the job's own status does too; see resilience.py)."""
    try:
        return await call_next()
    except (Exception, asyncio.CancelledError) as exc:
        recorded: BaseException = exc
        if isinstance(exc, asyncio.CancelledError):
            recorded = JobAborted(
                f"{context.job.task_name} job {context.job.id} was aborted (an operator's "
                "abort, or a shutdown past its grace period)"
            )
        try:
            async with asyncio.timeout(HISTORY_WAIT_SECONDS):
                await _record(context, recorded)
        except Exception as record_exc:  # never let the history hide the job's own error
            log.error("could not record job error", job_id=context.job.id, error=repr(record_exc))
        raise


HISTORY_WAIT_SECONDS = 60.0


async def _record(context: JobContext, exc: BaseException) -> None:
    manager = context.app.job_manager
    availability = getattr(manager, "availability", None)

    async def write() -> None:
        async with app_pool(context.app).connection() as conn, conn.transaction():
            await record_job_error(conn, context, exc)

    if availability is not None:
        await availability.call(write)
    else:
        await write()


# A time limit is applied by the job itself (base.JobSpec.run): the history sees its JobTimeout.
WORKER_MIDDLEWARE = [error_history]
