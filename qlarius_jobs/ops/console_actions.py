"""The console's action log: every action an operator takes from the console (a job's retry,
cancel or abort, a target's re-populate, a schedule's, queue's or task's control) is a row of
``qlarius_console_actions`` (migration 0020): who, when, which action on which jobs, targets
or names, and how many. The row is written in the transaction of the action itself, so a
refused or failed action leaves none. Shown on a job's page (the actions on it) and on
``/actions`` (newest first, keyset pages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.ops import jobs

SQL = QueryFile.of(__file__)
PAGE = 50
ON_A_JOB_PAGE = 20


@dataclass(frozen=True)
class Action:
    """One action: ``kind`` is job, target, schedule, queue or task; ``ids`` the jobs or
    targets, ``names`` the schedules, queues or tasks it touched; ``count`` how many (by
    default, how many it names)."""

    actor: str
    kind: str
    action: str
    ids: Sequence[int] = ()
    names: Sequence[str] = ()
    detail: str | None = None
    count: int | None = None

    def how_many(self) -> int:
        return self.count if self.count is not None else len(self.ids) + len(self.names)


def _row(action: Action) -> dict[str, Any]:
    return {
        "actor": action.actor,
        "kind": action.kind,
        "action": action.action,
        "ids": list(action.ids),
        "names": list(action.names),
        "count": action.how_many(),
        "detail": action.detail,
    }


async def record(conn: psycopg.AsyncConnection, action: Action) -> None:
    """The action's row, on ``conn`` (in the caller's transaction)."""
    await SQL.execute(conn, "record_console_action", **_row(action))


def record_sync(conn: psycopg.Connection, action: Action) -> None:
    """``record`` for the controls, which are synchronous."""
    SQL.execute_sync(conn, "record_console_action", **_row(action))


async def on_job(conn: psycopg.AsyncConnection, job_id: int) -> list[dict[str, Any]]:
    """The latest actions that named the job, newest first."""
    return await SQL.many(conn, "job_console_actions", id=job_id, limit=ON_A_JOB_PAGE)


async def actions_page(request: Request) -> Response:
    """GET /actions: the log, newest first; ``?before=<id>`` is the next page."""
    raw = request.query_params.get("before")
    before = None
    if raw not in (None, ""):
        try:
            before = jobs.job_id(raw, "action")
        except ValueError as exc:
            raise HTTPException(400, detail=f"before: {exc}") from None
    async with (await request.app.state.reads.where(request)).connection() as conn:
        rows = await SQL.many(conn, "console_actions", before=before, limit=PAGE)
    return request.app.state.templates.TemplateResponse(
        request,
        "actions.html",
        {"rows": rows, "next_before": rows[-1]["id"] if len(rows) == PAGE else None},
    )
