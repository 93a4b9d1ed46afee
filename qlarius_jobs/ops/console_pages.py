"""The console's pages and actions: module-level Starlette handlers that find what they need
on ``request.app.state``, put there by ``console.build_console``: ``config`` (a
``ConsoleConfig``), ``reads`` and ``writes`` (``console_db``: a page reads through
``reading``, read-only, on the standby when one is configured; an action writes through
``writing``, on the primary), ``templates`` and ``csrf_token``.

Every input is checked here (a bad one is a 400 page, never a traceback) and only reaches SQL
as a parameter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import psycopg_pool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from qlarius_jobs import api
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.logs import get_logger
from qlarius_jobs.ops import charts, jobs, metrics, status
from qlarius_jobs.ops.console_actions import Action, on_job, record
from qlarius_jobs.ops.console_db import ReadFrom, Reads, RecoveryConflict, Writes
from qlarius_jobs.ops.console_security import actor, check_csrf, refuse_if_read_only
from qlarius_jobs.settings import get_settings

log = get_logger(__name__)

SQL = QueryFile.of(__file__)
READINGS = metrics.SQL  # what /metrics reads too: one query for both
STATE_COLOURS = {"succeeded": "#2e7d32", "failed": "#c62828", "aborted": "#ef6c00"}
CHART_HOURS, BACKFILL_DAYS = 3, 7
# What an operator may do to a job from its page (a POST); ?done=<action> then says it was done.
JOB_ACTIONS = {"retry": jobs.retry_job, "cancel": jobs.cancel_job, "abort": jobs.abort_job}
# What cannot be undone is confirmed: the form's first button shows a second one, which sends
# confirm=yes (no script needed).
CONFIRMED_ACTIONS = ("cancel", "abort", "populate")

Context = dict[str, Any]
Page = Callable[[Request, psycopg.AsyncConnection], Awaitable[Context]]


# --- input --------------------------------------------------------------------------------


def _bad(message: str) -> HTTPException:
    return HTTPException(400, detail=message)


def _query_id(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return jobs.job_id(raw)
    except ValueError as exc:
        raise _bad(f"{name}: {exc}") from None


def _path_id(request: Request, kind: str = "job") -> int:
    try:
        return jobs.job_id(request.path_params["id"], kind)
    except ValueError as exc:
        raise _bad(str(exc)) from None


def _optional_text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and len(value) > 200:
        raise _bad(f"{name} is too long")
    if value is not None and not value.isprintable():
        raise _bad(f"{name} holds characters that are not printable")
    return value


# --- the pages ----------------------------------------------------------------------------


async def reading(request: Request) -> ReadFrom:
    """Where this request's pages read (``console_db``): read-only connections, on the standby
    when one is configured."""
    reads: Reads = request.app.state.reads
    return await reads.where(request)


def writing(request: Request) -> Writes:
    """Where actions go: the primary."""
    return request.app.state.writes


def page(name: str) -> Callable[[Page], Callable[[Request], Awaitable[Response]]]:
    """A handler that returns its template's context, on a read-only connection, made an
    endpoint that renders ``name``. A page whose reads the standby cancelled (a conflict with
    recovery) is read once more before the page says so."""

    def wrap(handler: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            for attempt in (1, 2):
                try:
                    async with (await reading(request)).connection() as conn:
                        context = await handler(request, conn)
                    break
                except RecoveryConflict:
                    if attempt == 2:
                        raise
            return request.app.state.templates.TemplateResponse(request, name, context)

        return endpoint

    return wrap


async def apart(
    request: Request, query: Callable[[psycopg.AsyncConnection], Awaitable[Any]]
) -> Any:
    """One query on a connection of its own: the overview's run side by side."""
    async with (await reading(request)).connection() as conn:
        return await query(conn)


@page("overview.html")
async def overview(request: Request, conn: psycopg.AsyncConnection) -> Context:
    now = dt.datetime.now(dt.UTC)
    # Independent reads at once: on a table of millions of jobs the page costs its slowest
    # query, not their sum.
    (
        per_minute,
        backfill,
        counts,
        last_hour,
        oldest,
        running,
        stalled,
        nulls,
        pending,
        last_audit,
        (periodic, paused),
    ) = await asyncio.gather(
        apart(request, lambda c: SQL.many(c, "jobs_per_minute", hours=CHART_HOURS)),
        apart(request, lambda c: SQL.many(c, "backfill_chart", days=BACKFILL_DAYS)),
        apart(
            request,
            lambda c: READINGS.many(
                c, "jobs_by_queue_and_state", exact_below=get_settings().job_counts_exact_below
            ),
        ),
        apart(request, lambda c: SQL.many(c, "overview_last_hour_by_task")),
        apart(request, lambda c: READINGS.many(c, "oldest_waiting_jobs")),
        SQL.many(conn, "running_jobs"),
        apart(request, lambda c: SQL.many(c, "stalled_jobs")),
        apart(request, lambda c: READINGS.one(c, "null_snapshot_counts")),
        apart(request, lambda c: READINGS.many(c, "pending_work")),
        apart(request, lambda c: SQL.one(c, "last_audit")),
        asyncio.to_thread(_periodic, await reading(request)),
    )
    series = [
        charts.Series(
            state,
            colour,
            [(r["minute"], float(r["jobs"])) for r in per_minute if r["type"] == state],
        )
        for state, colour in STATE_COLOURS.items()
    ]
    queues = sorted({r["queue"] for r in counts})
    table = {(r["queue"], r["state"]): r["jobs"] for r in counts}
    estimated = {(r["queue"], r["state"]) for r in counts if r["estimated"]}
    return {
        "queues": queues,
        "counts": table,
        "estimated": estimated,
        "last_hour": last_hour,
        "oldest": oldest,
        "running": running,
        "stalled": stalled,
        "nulls": nulls,
        "pending": pending,
        "last_audit": last_audit,
        "stuck_after": get_settings().stuck_pending_seconds,
        "periodic": periodic,
        "paused": paused,
        "jobs_chart": charts.line_chart(
            f"Jobs ended per minute, last {CHART_HOURS} hours",
            series,
            now - dt.timedelta(hours=CHART_HOURS),
            now,
        ),
        "backfill_chart": charts.bar_chart(
            f"Backfill runs, last {BACKFILL_DAYS} days: rows found and fixed",
            [(r["started_at"], float(r["found"]), float(r["fixed"])) for r in backfill],
            now - dt.timedelta(days=BACKFILL_DAYS),
            now,
        ),
    }


@page("job.html")
async def job_page(request: Request, conn: psycopg.AsyncConnection) -> Context:
    id_ = _path_id(request)
    try:
        job = await jobs.show_job(conn, id_)
    except jobs.JobNotFound as exc:
        raise HTTPException(404, detail=str(exc)) from None
    locks = await SQL.many(
        conn, "job_locks", id=id_, lock=job["lock"], queueing_lock=job["queueing_lock"]
    )
    done = request.query_params.get("done")
    return {
        "job": job,
        "locks": locks,
        "message": done if done in JOB_ACTIONS else None,
        "actions": await on_job(conn, id_),
    }


@page("targets.html")
async def targets(request: Request, conn: psycopg.AsyncConnection) -> Context:
    populated = _query_id(request, "populated")
    message = f"target #{populated} is re-populating" if populated else None
    return {"targets": await SQL.many(conn, "targets"), "message": message}


@page("backfill.html")
async def backfill(request: Request, conn: psycopg.AsyncConnection) -> Context:
    before = _query_id(request, "before")
    rows = await SQL.many(conn, "backfill_runs", before=before, limit=50)
    return {"rows": rows, "next_before": rows[-1]["id"] if len(rows) == 50 else None}


@page("workers.html")
async def workers(request: Request, conn: psycopg.AsyncConnection) -> Context:
    return {"workers": await SQL.many(conn, "workers")}


async def act(request: Request) -> Response:
    """retry / cancel / abort a job, or re-populate a target: POST, CSRF-checked, logged in
    its own transaction (``console_actions``)."""
    refuse_if_read_only(request)
    form = await request.form()
    check_csrf(str(form.get("csrf", "")), request.app.state.csrf_token)
    action = request.path_params["action"]
    # scope["path"], not request.url: the latter is built from the client's Host header
    on_target = str(request.scope["path"]).startswith("/targets/")
    id_ = _path_id(request, "target" if on_target else "job")
    kind, who = "target" if on_target else "job", actor(request.scope)
    async with writing(request).transaction() as conn:
        if on_target:
            if action != "populate":
                raise HTTPException(404, detail=f"no action {action!r} on a target")
            _confirmed(form.get("confirm"), action)
            if await SQL.one(conn, "target_exists", id=id_) is None:
                raise HTTPException(404, detail=f"no target #{id_}")
            await api.trigger_population(conn, id_)
        else:
            if action not in JOB_ACTIONS:
                raise HTTPException(404, detail=f"no action {action!r}")
            _confirmed(form.get("confirm"), action)
            try:
                await JOB_ACTIONS[action](conn, id_)
            except jobs.JobNotFound as exc:
                raise HTTPException(404, detail=str(exc)) from None
            except jobs.WrongState as exc:
                raise HTTPException(409, detail=str(exc)) from None
        await record(conn, Action(who, kind, action, ids=[id_]))
    # committed: the redirect's page shows it (console_db: read your own writes)
    if on_target:
        log.info("target re-populated from the console", target_id=id_)
        return await writing(request).redirect(f"/targets?populated={id_}")
    log.info(f"job {action} from the console", job_id=id_)
    return await writing(request).redirect(f"/jobs/{id_}?done={action}")


def _confirmed(given: object, action: str) -> None:
    if action in CONFIRMED_ACTIONS and given != "yes":
        raise _bad(
            f"{action} needs confirming: press {action.capitalize()}, then the button it shows"
        )


async def error_page(request: Request, exc: Exception) -> Response:
    """Every error as a page: the status and a line for people, never a traceback."""
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error (see the log)"
    if isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout):
        code, detail = 503, "the database is unavailable; try again shortly"
        log.warning("console: database unavailable", path=request.url.path)
    elif code == 500:
        log.error("console error", path=request.url.path, error=repr(exc))
    return request.app.state.templates.TemplateResponse(
        request, "error.html", {"code": code, "detail": detail}, status_code=code
    )


# --- helpers ------------------------------------------------------------------------------


def _periodic(where: ReadFrom) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The schedules (with their next runs, computed here) and what is paused."""
    with where.connect_sync() as conn:
        return status.schedules(conn), status.paused(conn)
