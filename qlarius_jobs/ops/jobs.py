"""What operators do to jobs, in one place: list (filtered, searched), show, retry, cancel,
abort, one job or a batch. Used by ``qlarius-jobs jobs`` and the console alike; every input is
checked here and every statement is a parameterised named query. One job's action is the
batch's statement over one id: the rules of which states an action applies to are written
once, in ``sql/queries/ops/jobs.sql``."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs.arguments import row_id

SQL = QueryFile.of(__file__)

STATES = ("todo", "doing", "succeeded", "failed", "cancelled", "aborting", "aborted")
RETRYABLE = ("failed", "cancelled", "aborted")
PAGE_MAX = 500
# The drains' own jobs: deferred by the hundred, so the console's list leaves them out unless
# asked (or unless their task is the filter).
INTERNAL_TASKS = ("sync_pending_me_files", "reconcile_pending_offers")
# Which states each action applies to: what its statement in jobs.sql changes, one job or a
# batch alike.
ACTION_STATES = {"retry": RETRYABLE, "cancel": ("todo",), "abort": ("todo", "doing")}
SEARCH_MAX = 200
_SEARCH_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SEARCH_INT = re.compile(r"-?[0-9]{1,18}")


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
    id: int | None = None  # the search's job id
    args: dict[str, Any] | None = None  # the search's arguments: the jobs' args contain them
    hidden: tuple[str, ...] = ()  # tasks left out (unless one is the task filter)

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


def _filter(where: JobFilter) -> dict[str, Any]:
    """The filter's parameters, as list_jobs and matching_jobs take them."""
    return {
        "queue": where.queue,
        "state": where.state,
        "task": where.task,
        "id": where.id,
        "args": Jsonb(where.args) if where.args else None,
        # a task asked for, or a job by its id, is shown whatever is hidden
        "hidden": [] if where.id else [t for t in where.hidden if t != where.task],
    }


def parse_search(text: str) -> tuple[int | None, dict[str, Any] | None]:
    """An operator's search: a job id (``123`` or ``#123``) and/or arguments (``me_file_id:42
    target_id:7``, all of them: a job's arguments must contain each). A number is a JSON
    number, ``true``/``false`` a boolean, anything else a string. A one-line ValueError when
    it is not that."""
    text = text.strip()
    if len(text) > SEARCH_MAX:
        raise ValueError(f"search is too long (at most {SEARCH_MAX} characters)")
    if not text.isprintable():
        raise ValueError("search holds characters that are not printable")
    found_id: int | None = None
    args: dict[str, Any] = {}
    for term in text.split():
        key, colon, raw = term.partition(":")
        if not colon:
            try:
                given = job_id(term.removeprefix("#"))
            except ValueError:
                raise ValueError(
                    f"search term {term!r} is neither a job id nor name:value (me_file_id:42)"
                ) from None
            if found_id is not None and found_id != given:
                raise ValueError("search names two job ids; a job has one")
            found_id = given
            continue
        if not _SEARCH_KEY.fullmatch(key) or not raw:
            raise ValueError(
                f"search term {term!r} is not name:value (a name of letters, digits and _)"
            )
        value: Any = raw
        if _SEARCH_INT.fullmatch(raw):
            value = int(raw)
        elif raw in ("true", "false"):
            value = raw == "true"
        if key in args and args[key] != value:
            raise ValueError(f"search gives {key} two values; a job's argument has one")
        args[key] = value
    return found_id, args or None


async def list_jobs(conn: AsyncConnection, where: JobFilter) -> list[dict[str, Any]]:
    return await SQL.many(
        conn,
        "list_jobs",
        **_filter(where),
        before=where.before,
        limit=where.limit,
    )


async def matching_ids(
    conn: AsyncConnection, where: JobFilter, action: str, limit: int
) -> list[int]:
    """The ids of at most ``limit`` jobs matching ``where`` that ``action`` applies to, newest
    first (``before`` and the page size are not used: every page of the filter counts)."""
    rows = await SQL.many(
        conn, "matching_jobs", **_filter(where), states=list(ACTION_STATES[action]), limit=limit
    )
    return [r["id"] for r in rows]


async def applicable_ids(conn: AsyncConnection, ids: list[int], action: str) -> list[int]:
    """Of ``ids``, those ``action`` applies to now, newest first."""
    rows = await SQL.many(conn, "applicable_jobs", ids=ids, states=list(ACTION_STATES[action]))
    return [r["id"] for r in rows]


async def act_on_jobs(conn: AsyncConnection, action: str, ids: list[int]) -> list[int]:
    """retry, cancel or abort these jobs in one statement; the ids it changed (a job in a state
    the action does not apply to is left alone)."""
    if action == "retry":
        rows = await SQL.many(conn, "retry_jobs", ids=ids)
    elif action == "cancel":
        rows = await SQL.many(conn, "cancel_jobs", ids=ids)
    elif action == "abort":
        rows = await SQL.many(conn, "abort_jobs", ids=ids)
    else:
        raise ValueError(f"no action {action!r} on jobs")
    return [r["id"] for r in rows]


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
    if not await act_on_jobs(conn, "retry", [id_]):
        state = await _state(conn, id_)
        raise WrongState(f"job #{id_} is {state}; only {', '.join(RETRYABLE)} jobs can be retried")


async def cancel_job(conn: AsyncConnection, id_: int) -> None:
    """A waiting job is cancelled: it never runs."""
    if not await act_on_jobs(conn, "cancel", [id_]):
        state = await _state(conn, id_)
        raise WrongState(f"job #{id_} is {state}; only waiting (todo) jobs can be cancelled")


async def abort_job(conn: AsyncConnection, id_: int) -> None:
    """A running job is asked to stop (a waiting one is cancelled)."""
    if not await act_on_jobs(conn, "abort", [id_]):
        state = await _state(conn, id_)
        raise WrongState(f"job #{id_} is {state}; only running or waiting jobs can be aborted")
