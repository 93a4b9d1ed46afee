"""What operators do to jobs, in one place: list, show, retry, cancel, abort. Used by
``qlarius-jobs jobs`` and the console alike; every input is checked here and every statement
is a parameterised named query."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs.arguments import row_id

SQL = QueryFile.of(__file__)

STATES = ("todo", "doing", "succeeded", "failed", "cancelled", "aborting", "aborted")
RETRYABLE = ("failed", "cancelled", "aborted")
PAGE_MAX = 500


class JobActionRefused(Exception):
    """An operator's action that cannot be done; the message says why, in one line."""


class JobNotFound(JobActionRefused):
    """No job has this id."""


class WrongState(JobActionRefused):
    """The job is not in a state this action applies to."""


def job_id(raw: str | int, kind: str = "job") -> int:
    """An id from an operator: a positive integer within bigint, or a one-line error."""
    text = str(raw).strip()
    try:
        return row_id(kind, int(text) if text.isascii() and text.isdigit() else None)
    except ValueError:
        raise ValueError(f"{raw!r} is not a {kind} id (a positive integer)") from None


def short_json(value: Any, limit: int = 60) -> str:
    """A job's arguments on one line of a list, cut to ``limit`` characters."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a page shows; ``before`` is the keyset cursor (the last id of the page
    before)."""

    queue: str | None = None
    state: str | None = None
    task: str | None = None
    before: int | None = None
    limit: int = 50

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in STATES:
            raise ValueError(f"state {self.state!r} is not one of {', '.join(STATES)}")
        if not 1 <= self.limit <= PAGE_MAX:
            raise ValueError(f"limit must be between 1 and {PAGE_MAX}")
        if self.before is not None:
            job_id(self.before)
        for name in ("queue", "task"):
            value = getattr(self, name)
            if value is not None and (not value or len(value) > 200):
                raise ValueError(f"{name} must be a name of 1 to 200 characters")


async def list_jobs(conn: AsyncConnection, where: JobFilter) -> list[dict[str, Any]]:
    return await SQL.many(
        conn,
        "list_jobs",
        queue=where.queue,
        state=where.state,
        task=where.task,
        before=where.before,
        limit=where.limit,
    )


async def show_job(conn: AsyncConnection, id_: int) -> dict[str, Any]:
    """The job, its error history (every attempt that did not succeed) and its events."""
    job = await SQL.one(conn, "get_job", id=id_)
    if job is None:
        raise JobNotFound(f"no job #{id_}")
    return {
        **job,
        "errors": await SQL.many(conn, "job_errors", id=id_),
        "events": await SQL.many(conn, "job_events", id=id_),
    }


async def _state(conn: AsyncConnection, id_: int) -> str:
    job = await SQL.one(conn, "get_job", id=id_)
    if job is None:
        raise JobNotFound(f"no job #{id_}")
    return str(job["state"])


async def retry_job(conn: AsyncConnection, id_: int) -> None:
    """A failed, cancelled or aborted job waits again, now, for one more attempt."""
    if await SQL.one(conn, "retry_job", id=id_) is None:
        state = await _state(conn, id_)
        raise WrongState(f"job #{id_} is {state}; only {', '.join(RETRYABLE)} jobs can be retried")


async def cancel_job(conn: AsyncConnection, id_: int) -> None:
    """A waiting job is cancelled: it never runs."""
    row = await SQL.one(conn, "cancel_job", id=id_)
    if row is None or row["id"] is None:
        state = await _state(conn, id_)
        raise WrongState(f"job #{id_} is {state}; only waiting (todo) jobs can be cancelled")


async def abort_job(conn: AsyncConnection, id_: int) -> None:
    """A running job is asked to stop (a waiting one is cancelled)."""
    row = await SQL.one(conn, "abort_job", id=id_)
    if row is None or row["id"] is None:
        state = await _state(conn, id_)
        raise WrongState(f"job #{id_} is {state}; only running or waiting jobs can be aborted")
