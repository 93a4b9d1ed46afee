"""The console's jobs list and its bulk actions: filters, the search (a job id, arguments by
JSONB containment), the internal drain jobs hidden unless asked, each job's duration and
recorded counts; and retry, cancel or abort for the jobs ticked or for every job matching the
filter, at most ``QLARIUS_WEB_BULK_LIMIT`` at once.

A bulk action takes two POSTs, both CSRF-checked and refused in read-only mode: the first
(``/jobs/bulk``) changes nothing and answers a confirmation page saying how many jobs it will
touch, and whether the cap cut them; its button posts those ids (``/jobs/bulk/apply``) with
``confirm=yes``, and one statement per action does it (``ops/jobs.py``: the same statement as
one job's, so the same rules of which states it applies to). No script.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import psycopg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from qlarius_jobs.jobs import catalog
from qlarius_jobs.logs import get_logger
from qlarius_jobs.ops import jobs
from qlarius_jobs.ops.console_actions import Action, record
from qlarius_jobs.ops.console_pages import Context, page, writing
from qlarius_jobs.ops.console_security import actor, check_csrf, refuse_if_read_only
from qlarius_jobs.settings import get_settings

log = get_logger(__name__)

PAGE_SIZE = 50
DONE = {"retry": "retried", "cancel": "cancelled", "abort": "aborted or cancelled"}
FILTERS = ("queue", "state", "task", "q", "internal")


def _bad(message: str) -> HTTPException:
    return HTTPException(400, detail=message)


def _text(values: Mapping[str, Any], name: str) -> str | None:
    value = values.get(name) or None
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise _bad(f"{name} is too long")
    if not value.isprintable():
        raise _bad(f"{name} holds characters that are not printable")
    return value


def where_of(values: Mapping[str, Any], before: int | None = None) -> jobs.JobFilter:
    """The filter of a page or a bulk form: queue, state, task, the search ``q``, and
    ``internal=1`` to show the drains' jobs. A bad one is a 400 with its line."""
    try:
        found_id, args = jobs.parse_search(str(values.get("q") or ""))
        return jobs.JobFilter(
            queue=_text(values, "queue"),
            state=_text(values, "state"),
            task=_text(values, "task"),
            before=before,
            limit=PAGE_SIZE,
            id=found_id,
            args=args,
            hidden=() if values.get("internal") == "1" else jobs.INTERNAL_TASKS,
        )
    except ValueError as exc:
        raise _bad(str(exc)) from None


def filter_query(values: Mapping[str, Any]) -> dict[str, str]:
    """The filters as given (checked by ``where_of`` first), for links and hidden fields."""
    return {name: str(values[name]) for name in FILTERS if values.get(name)}


@page("jobs.html")
async def job_list(request: Request, conn: psycopg.AsyncConnection) -> Context:
    raw_before = request.query_params.get("before")
    try:
        before = jobs.job_id(raw_before) if raw_before else None
    except ValueError as exc:
        raise _bad(f"before: {exc}") from None
    where = where_of(request.query_params, before)
    rows = await jobs.list_jobs(conn, where)
    shown = filter_query(request.query_params)
    done, count = request.query_params.get("done"), request.query_params.get("count", "")
    message = None
    if done in DONE and count.isascii() and count.isdigit() and len(count) < 7:
        message = f"{DONE[done]} {int(count)} job(s)"
    return {
        "rows": rows,
        "where": where,
        "q": shown.get("q", ""),
        "internal": shown.get("internal") == "1",
        "filters": shown,
        "older": urlencode({**shown, "before": rows[-1]["id"]}) if len(rows) == PAGE_SIZE else None,
        "tasks": sorted(catalog.specs()),
        "queues": catalog.queues(),
        "message": message,
        "bulk_limit": get_settings().web_bulk_limit,
    }


async def _form(request: Request) -> Any:
    refuse_if_read_only(request)  # read-only mode, or a viewer
    form = await request.form()
    check_csrf(str(form.get("csrf", "")), request.app.state.csrf_token)
    return form


def _action(value: Any) -> str:
    if value not in jobs.ACTION_STATES:
        raise _bad("the action must be retry, cancel or abort")
    return str(value)


def _ids(form: Any, cap: int) -> list[int]:
    given = form.getlist("id")
    if len(given) > cap:
        raise _bad(f"at most {cap} jobs at once (QLARIUS_WEB_BULK_LIMIT)")
    try:
        return sorted({jobs.job_id(str(raw)) for raw in given}, reverse=True)
    except ValueError as exc:
        raise _bad(str(exc)) from None


async def bulk_confirm(request: Request) -> Response:
    """POST /jobs/bulk: the confirmation page of a bulk action (nothing changes yet)."""
    form = await _form(request)
    action, scope = _action(form.get("action")), form.get("scope")
    cap = get_settings().web_bulk_limit
    # on the primary, as the action will be: the count is of what the action will find
    async with writing(request).connection() as conn:
        if scope == "selected":
            ids = await jobs.applicable_ids(conn, _ids(form, cap), action)
            given, capped = len(form.getlist("id")), False
        elif scope == "matching":
            where = where_of(form)
            ids = await jobs.matching_ids(conn, where, action, cap + 1)
            capped, ids = len(ids) > cap, ids[:cap]
            given = None
        else:
            raise _bad("the scope must be selected or matching")
    context = {
        "action": action,
        "scope": scope,
        "ids": ids,
        "given": given,
        "capped": capped,
        "cap": cap,
        "states": jobs.ACTION_STATES[action],
        "filters": filter_query(form),
        "back": urlencode(filter_query(form)),
    }
    return request.app.state.templates.TemplateResponse(request, "bulk.html", context)


async def bulk_apply(request: Request) -> Response:
    """POST /jobs/bulk/apply: the confirmed action over the ids the confirmation page showed,
    in one statement (jobs that changed state meanwhile are left alone)."""
    form = await _form(request)
    action = _action(form.get("action"))
    if form.get("confirm") != "yes":
        raise _bad(f"a bulk {action} needs confirming: its confirmation page's button")
    ids = _ids(form, get_settings().web_bulk_limit)
    async with writing(request).transaction() as conn:
        done = await jobs.act_on_jobs(conn, action, ids) if ids else []
        if done:  # logged with the jobs it changed, in the action's transaction
            await record(conn, Action(actor(request.scope), "job", action, ids=done))
    log.info(f"bulk {action} from the console", jobs=len(done), asked=len(ids))
    back = {**filter_query(form), "done": action, "count": str(len(done))}
    return await writing(request).redirect(f"/jobs?{urlencode(back)}")
