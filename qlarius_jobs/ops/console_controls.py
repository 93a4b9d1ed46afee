"""The console's Schedules and Queues pages and their actions, over ``ops/controls.py`` (what
``qlarius-jobs schedules``, ``queues`` and ``tasks`` use too): the same rows, the same checks,
the same one-line refusals, and ``updated_by`` naming the console (``console:<user>``).

The controls are synchronous psycopg, so each request runs them in a thread on a connection of
its own (the console's pool is asynchronous): a page's reads where the pages read, read-only
(the standby when one is configured), an action on the primary (``console_db``). Actions are
POSTs carrying the CSRF token and refused in read-only mode, as the jobs' are; a pause also
carries ``confirm=yes``, which its form sends from a second button (the pages have no script
to ask with). A refusal of the controls (a cron expression the database rejects, a concurrency
out of range, an unknown name) is a 400 page with its message, and nothing changes. Every
action is logged (``console_actions``) in its own transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlencode

import psycopg
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from qlarius_jobs.jobs import catalog
from qlarius_jobs.logs import get_logger
from qlarius_jobs.ops import controls, jobs
from qlarius_jobs.ops.console_actions import Action, record_sync
from qlarius_jobs.ops.console_pages import reading, writing
from qlarius_jobs.ops.console_security import actor, check_csrf, refuse_if_read_only

log = get_logger(__name__)

TICKS_SHOWN = 20
# What each action did, for the page it returns to (?done=<action>): never echoed as given.
SCHEDULE_DONE = {
    "cron": "cron expression changed",
    "pause": "paused",
    "resume": "resumed",
    "run": "run now",
}
QUEUE_DONE = {"pause": "paused", "resume": "resumed", "concurrency": "concurrency changed"}
TASK_DONE = {"pause": "paused", "resume": "resumed"}
CONFIRMED = "yes"


# --- input --------------------------------------------------------------------------------


def _bad(message: str) -> HTTPException:
    return HTTPException(400, detail=message)


def _text(value: Any, what: str) -> str:
    """A short printable string: a NUL byte never reaches psycopg (a 500), nor a novel."""
    if not isinstance(value, str):
        raise _bad(f"{what} is missing")
    if len(value) > 200:
        raise _bad(f"{what} is too long")
    if not value.isprintable():
        raise _bad(f"{what} holds characters that are not printable")
    return value


def _name(request: Request) -> str:
    return _text(request.path_params["name"], "the name")


def _concurrency(form: FormData) -> int | None:
    raw = _text(form.get("concurrency", ""), "concurrency").strip()
    if raw == "":
        return None  # each worker process's own
    try:
        return int(raw)
    except ValueError:
        raise _bad(
            f"concurrency {raw!r} is not a whole number (1 to 10000, or empty: the workers' own)"
        ) from None


async def _action_form(request: Request) -> FormData:
    """The form of an action: refused in read-only mode, to a viewer and without the CSRF
    token."""
    refuse_if_read_only(request)
    form = await request.form()
    check_csrf(str(form.get("csrf", "")), request.app.state.csrf_token)
    return form


def _confirmed(form: FormData, what: str) -> None:
    if form.get("confirm") != CONFIRMED:
        raise _bad(f"pausing {what} needs confirming: press Pause, then the button it shows")


def _done(request: Request, messages: dict[str, str], names: set[str], key: str) -> str | None:
    """The page's line about the action just done, from ``?done=`` and the name it names, when
    both are known (nothing typed into the address is echoed)."""
    done, name = request.query_params.get("done"), request.query_params.get(key)
    if done in messages and name in names:
        return f"{name}: {messages[done]}"
    return None


# --- the database -------------------------------------------------------------------------


async def _read(request: Request, work: Callable[[psycopg.Connection], Any]) -> Any:
    """``work`` (a page's reads) on a read-only connection of its own where the pages read
    (``console_db``), in a thread."""
    where = await reading(request)

    def run() -> Any:
        with where.connect_sync() as conn:
            return work(conn)

    try:
        return await asyncio.to_thread(run)
    except controls.ControlError as exc:
        raise _bad(str(exc)) from None


async def _act(request: Request, work: Callable[[psycopg.Connection], Any], logged: Action) -> Any:
    """``work`` and its row in the action log, in one transaction on the primary, in a
    thread: a refusal leaves neither, and is a 400."""

    def both() -> Any:
        with writing(request).connect_sync() as conn, conn.transaction():
            result = work(conn)
            record_sync(conn, logged)
            return result

    try:
        return await asyncio.to_thread(both)
    except controls.ControlError as exc:
        raise _bad(str(exc)) from None


def _render(request: Request, name: str, context: dict[str, Any]) -> Response:
    return request.app.state.templates.TemplateResponse(request, name, context)


# --- the pages ----------------------------------------------------------------------------


async def schedules_page(request: Request) -> Response:
    """Each schedule (cron, enabled or paused, next runs, last tick) and the latest ticks, of
    all or of one (``?task=``), with their jobs."""
    task = request.query_params.get("task") or None
    if task is not None:
        _text(task, "task")

    def read(conn: psycopg.Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return controls.schedules(conn), controls.ticks(conn, task, TICKS_SHOWN)

    rows, ticks = await _read(request, read)
    names = {r["task_name"] for r in rows}
    if task is not None and task not in names:
        raise HTTPException(404, detail=f"no schedule for {task!r}")
    message = _done(request, SCHEDULE_DONE, names, "schedule")
    job_id = None
    if message and request.query_params.get("job"):
        try:
            job_id = jobs.job_id(request.query_params["job"])
        except ValueError as exc:
            raise _bad(f"job: {exc}") from None
    return _render(
        request,
        "schedules.html",
        {
            "schedules": rows,
            "ticks": ticks,
            "task": task,
            "ticks_shown": TICKS_SHOWN,
            "message": message,
            "ran": message is not None and request.query_params.get("done") == "run",
            "job_id": job_id,
        },
    )


async def queues_page(request: Request) -> Response:
    """Each queue (paused or running, its concurrency override, what waits and runs) and each
    task (paused or not)."""

    def read(conn: psycopg.Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return controls.queues(conn), controls.tasks(conn)

    queues, tasks = await _read(request, read)
    specs = catalog.specs()
    for row in tasks:
        spec = specs.get(row["task_name"])
        row["queue_name"] = spec.queue if spec else None
    message = _done(request, QUEUE_DONE, {q["queue_name"] for q in queues}, "queue") or _done(
        request, TASK_DONE, {t["task_name"] for t in tasks}, "task"
    )
    return _render(request, "queues.html", {"queues": queues, "tasks": tasks, "message": message})


# --- the actions --------------------------------------------------------------------------


async def schedule_act(request: Request) -> Response:
    """POST /schedules/{task}/{cron|pause|resume|run}."""
    form = await _action_form(request)
    task, action, who = _name(request), request.path_params["action"], actor(request.scope)
    work: Callable[[psycopg.Connection], dict[str, Any]]
    if action == "cron":
        cron = _text(form.get("cron"), "the cron expression")
        work = partial(controls.set_schedule, task_name=task, cron=cron, actor=who)
    elif action in ("pause", "resume"):
        if action == "pause":
            _confirmed(form, f"the schedule {task}")
        work = partial(
            controls.set_schedule_enabled, task_name=task, enabled=action == "resume", actor=who
        )
    elif action == "run":
        work = partial(controls.run_schedule_now, task_name=task, actor=who)
    else:
        raise HTTPException(404, detail=f"no action {action!r} on a schedule")
    detail = str(form.get("cron")) if action == "cron" else None
    row = await _act(request, work, Action(who, "schedule", action, names=[task], detail=detail))
    log.info(f"schedule {action} from the console", task=task, by=who)
    query = {"done": action, "schedule": task}
    if action == "run" and row.get("job_id") is not None:
        query["job"] = str(row["job_id"])
    return await writing(request).redirect(f"/schedules?{urlencode(query)}")


async def queue_act(request: Request) -> Response:
    """POST /queues/{queue}/{pause|resume|concurrency}."""
    form = await _action_form(request)
    queue, action, who = _name(request), request.path_params["action"], actor(request.scope)
    work: Callable[[psycopg.Connection], dict[str, Any]]
    detail = None
    if action in ("pause", "resume"):
        if action == "pause":
            _confirmed(form, f"the queue {queue}")
        work = partial(
            controls.set_queue_paused, queue_name=queue, paused=action == "pause", actor=who
        )
    elif action == "concurrency":
        concurrency = _concurrency(form)
        work = partial(
            controls.set_queue_concurrency, queue_name=queue, concurrency=concurrency, actor=who
        )
        detail = "the workers' own" if concurrency is None else str(concurrency)
    else:
        raise HTTPException(404, detail=f"no action {action!r} on a queue")
    await _act(request, work, Action(who, "queue", action, names=[queue], detail=detail))
    log.info(f"queue {action} from the console", queue=queue, by=who)
    return await writing(request).redirect(f"/queues?{urlencode({'done': action, 'queue': queue})}")


async def task_act(request: Request) -> Response:
    """POST /tasks/{task}/{pause|resume}."""
    form = await _action_form(request)
    task, action, who = _name(request), request.path_params["action"], actor(request.scope)
    if action not in TASK_DONE:
        raise HTTPException(404, detail=f"no action {action!r} on a task")
    if action == "pause":
        _confirmed(form, f"the task {task}")
    await _act(
        request,
        partial(controls.set_task_paused, task_name=task, paused=action == "pause", actor=who),
        Action(who, "task", action, names=[task]),
    )
    log.info(f"task {action} from the console", task=task, by=who)
    return await writing(request).redirect(f"/queues?{urlencode({'done': action, 'task': task})}")
