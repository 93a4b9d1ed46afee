"""Live pages without a script: the overview, the jobs list and a job's page reload themselves
every ``QLARIUS_WEB_REFRESH_SECONDS`` (``<meta http-equiv="refresh">``, which the CSP's
``script-src 'none'`` leaves alone), at their own address (its filters and page) less a
``?done=`` note. "Pause live updates" sets a cookie that stops it on every page until
"Resume"; both are plain links (``GET /live/off|on?back=<the page>``).

Also what every template gets from the request (``context``): the live state, and whether
actions are shown (not in read-only mode, nor to a viewer).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from qlarius_jobs.ops import console_security

COOKIE = "qlarius_live"
PAUSED = "off"
DROPPED = ("done",)  # a note about an action just done is not repeated at each refresh


def here(request: Request) -> str:
    """The page's own address (path and query, less ``done``), to reload or come back to."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in DROPPED]
    path = str(request.scope["path"])  # never built from the client's Host header
    return path + ("?" + urlencode(query) if query else "")


def context(request: Request) -> dict[str, Any]:
    """A Jinja2 context processor: ``live`` (seconds, paused, here), ``read_only`` and
    ``reading`` (where the page read)."""
    seconds = int(request.app.state.config.refresh_seconds)
    return {
        # where the page read (console_db.ReadFrom), once it read: the page says so
        "reading": getattr(request.state, "read_from", None),
        "read_only": console_security.read_only(request),
        "viewer": console_security.role(request.scope) == console_security.VIEWER,
        "live": {
            "seconds": seconds,
            "paused": request.cookies.get(COOKIE) == PAUSED,
            "here": here(request),
        },
    }


def _local(back: str | None) -> str:
    """Where to go back to: a path of this console, never another site (``//host``)."""
    if (
        not back
        or not back.startswith("/")
        or back.startswith(("//", "/\\"))
        or len(back) > 2000
        or not back.isprintable()
    ):
        return "/"
    return back


async def switch(request: Request) -> Response:
    """GET /live/off pauses live updates (a cookie), /live/on resumes them; back to ``back``."""
    state = request.path_params["state"]
    if state not in ("on", "off"):
        raise HTTPException(404, detail=f"no live state {state!r}: on or off")
    response = RedirectResponse(_local(request.query_params.get("back")), 303)
    if state == "off":
        response.set_cookie(COOKIE, PAUSED, path="/", httponly=True, samesite="lax")
    else:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
    return response
