"""The operator's console (``qlarius-jobs web``): server-rendered pages over the database,
Prometheus metrics and health probes. Starlette, Jinja2 (autoescaped), uvicorn; no JavaScript
and nothing fetched from elsewhere, so it works on a closed network.

Safety: it listens on 127.0.0.1 unless told otherwise, and refuses any other address without
``QLARIUS_WEB_PASSWORD`` (HTTP Basic; every page but the probes asks for it). Actions are
POSTs carrying a CSRF token; ``QLARIUS_WEB_READ_ONLY`` hides and refuses them. Every input is
checked (a bad one is a 400 page, never a traceback) and only reaches SQL as a parameter.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from qlarius_jobs import api
from qlarius_jobs.db import connection, migrate
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs import catalog
from qlarius_jobs.logs import get_logger
from qlarius_jobs.ops import charts, jobs, metrics, status
from qlarius_jobs.settings import get_settings

log = get_logger(__name__)

SQL = QueryFile.of(__file__)
READINGS = metrics.SQL  # what /metrics reads too: one query for both
HERE = Path(__file__).parent
OPEN_PATHS = ("/healthz", "/readyz", "/static/")  # probes need no password
STATE_COLOURS = {"succeeded": "#2e7d32", "failed": "#c62828", "aborted": "#ef6c00"}
CHART_HOURS, BACKFILL_DAYS = 3, 7
PROBE_TIMEOUT_SECONDS = 5
DONE_MESSAGES = {"retry": "retry", "cancel": "cancel", "abort": "abort"}  # ?done= shown, if known


class ConsoleRefused(ValueError):
    """The console will not start as configured; the message says why, in one line."""


@dataclass(frozen=True)
class ConsoleConfig:
    conninfo: str
    host: str = "127.0.0.1"
    port: int = 8000
    password: str | None = None
    read_only: bool = False
    secret: bytes = b""  # signs the CSRF token; random per process when empty

    # Host names the console answers to without a password (tests add their own).
    extra_hosts: tuple[str, ...] = ()

    def hosts(self) -> list[str]:
        return sorted({"127.0.0.1", "localhost", "::1", "[::1]", self.host, *self.extra_hosts})

    def check(self) -> None:
        if not _is_loopback(self.host) and not self.password:
            raise ConsoleRefused(
                f"refusing to listen on {self.host} without QLARIUS_WEB_PASSWORD: anyone who "
                "can reach it could read the jobs and retry, cancel or abort them; set a "
                "password, or listen on 127.0.0.1"
            )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


# --- the app ------------------------------------------------------------------------------


def build_console(config: ConsoleConfig) -> Starlette:
    secret = config.secret or secrets.token_bytes(32)
    csrf_token = hmac.new(secret, b"csrf", hashlib.sha256).hexdigest()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(
        csrf_token=csrf_token, read_only=config.read_only, states=jobs.STATES
    )
    templates.env.filters["ago"] = _ago
    templates.env.filters["when"] = _when
    templates.env.filters["short_json"] = lambda value: jobs.short_json(value, 80)
    pool = psycopg_pool.AsyncConnectionPool(
        config.conninfo,
        min_size=2,
        max_size=10,  # the overview reads side by side
        open=False,
        timeout=PROBE_TIMEOUT_SECONDS,  # a page waits this long for a connection, then 503
        kwargs={
            "autocommit": True,
            "application_name": "qlarius-jobs:console",
            "connect_timeout": PROBE_TIMEOUT_SECONDS,
            **connection.pooler_kwargs(),
        },
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open()
        try:
            yield
        finally:
            await pool.close()

    def page(name: str) -> Callable[[Callable[..., Awaitable[dict[str, Any]]]], Any]:
        def wrap(handler: Callable[..., Awaitable[dict[str, Any]]]) -> Any:
            async def endpoint(request: Request) -> Response:
                async with pool.connection() as conn:
                    context = await handler(request, conn)
                return templates.TemplateResponse(request, name, context)

            return endpoint

        return wrap

    async def apart(query: Callable[[psycopg.AsyncConnection], Awaitable[Any]]) -> Any:
        """One query on a connection of its own: the overview's run side by side."""
        async with pool.connection() as conn:
            return await query(conn)

    @page("overview.html")
    async def overview(request: Request, conn: psycopg.AsyncConnection) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        # Independent reads at once: on a table of millions of jobs the page costs its
        # slowest query, not their sum.
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
            periodic,
        ) = await asyncio.gather(
            apart(lambda c: SQL.many(c, "jobs_per_minute", hours=CHART_HOURS)),
            apart(lambda c: SQL.many(c, "backfill_chart", days=BACKFILL_DAYS)),
            apart(lambda c: READINGS.many(c, "jobs_by_queue_and_state")),
            apart(lambda c: SQL.many(c, "overview_last_hour_by_task")),
            apart(lambda c: READINGS.many(c, "oldest_waiting_jobs")),
            SQL.many(conn, "running_jobs"),
            apart(lambda c: SQL.many(c, "stalled_jobs")),
            apart(lambda c: READINGS.one(c, "null_snapshot_counts")),
            apart(lambda c: READINGS.many(c, "pending_work")),
            asyncio.to_thread(_periodic, config.conninfo),
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
        return {
            "queues": queues,
            "counts": table,
            "last_hour": last_hour,
            "oldest": oldest,
            "running": running,
            "stalled": stalled,
            "nulls": nulls,
            "pending": pending,
            "stuck_after": get_settings().stuck_pending_seconds,
            "periodic": periodic,
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

    @page("jobs.html")
    async def job_list(request: Request, conn: psycopg.AsyncConnection) -> dict[str, Any]:
        try:
            where = jobs.JobFilter(
                queue=_optional_text(request, "queue"),
                state=_optional_text(request, "state"),
                task=_optional_text(request, "task"),
                before=_query_id(request, "before"),
                limit=50,
            )
        except ValueError as exc:
            raise _bad(str(exc)) from None
        rows = await jobs.list_jobs(conn, where)
        return {
            "rows": rows,
            "where": where,
            "next_before": rows[-1]["id"] if len(rows) == where.limit else None,
            "tasks": sorted(catalog.specs()),
            "queues": sorted({s.queue for s in catalog.specs().values()}),
        }

    @page("job.html")
    async def job_page(request: Request, conn: psycopg.AsyncConnection) -> dict[str, Any]:
        id_ = _path_id(request)
        try:
            job = await jobs.show_job(conn, id_)
        except jobs.JobNotFound as exc:
            raise HTTPException(404, detail=str(exc)) from None
        locks = await SQL.many(
            conn, "job_locks", id=id_, lock=job["lock"], queueing_lock=job["queueing_lock"]
        )
        done = request.query_params.get("done")
        return {"job": job, "locks": locks, "message": done if done in DONE_MESSAGES else None}

    @page("targets.html")
    async def targets(request: Request, conn: psycopg.AsyncConnection) -> dict[str, Any]:
        populated = _query_id(request, "populated")
        message = f"target #{populated} is re-populating" if populated else None
        return {"targets": await SQL.many(conn, "targets"), "message": message}

    @page("backfill.html")
    async def backfill(request: Request, conn: psycopg.AsyncConnection) -> dict[str, Any]:
        before = _query_id(request, "before")
        rows = await SQL.many(conn, "backfill_runs", before=before, limit=50)
        return {"rows": rows, "next_before": rows[-1]["id"] if len(rows) == 50 else None}

    @page("workers.html")
    async def workers(request: Request, conn: psycopg.AsyncConnection) -> dict[str, Any]:
        return {"workers": await SQL.many(conn, "workers")}

    async def act(request: Request) -> Response:
        """retry / cancel / abort a job, or re-populate a target: POST, CSRF-checked."""
        if config.read_only:
            raise HTTPException(403, detail="the console is read-only (QLARIUS_WEB_READ_ONLY)")
        form = await request.form()
        token = str(form.get("csrf", "")).encode("utf-8", "replace")
        if not hmac.compare_digest(token, csrf_token.encode()):
            raise HTTPException(403, detail="missing or wrong CSRF token: reload the page")
        action = request.path_params["action"]
        on_target = str(request.scope["path"]).startswith("/targets/")
        id_ = _path_id(request, "target" if on_target else "job")
        async with pool.connection() as conn:
            if on_target:
                if action != "populate":
                    raise HTTPException(404, detail=f"no action {action!r} on a target")
                if await SQL.one(conn, "target_exists", id=id_) is None:
                    raise HTTPException(404, detail=f"no target #{id_}")
                await api.trigger_population(conn, id_)
                log.info("target re-populated from the console", target_id=id_)
                return RedirectResponse(f"/targets?populated={id_}", 303)
            handler = {"retry": jobs.retry_job, "cancel": jobs.cancel_job, "abort": jobs.abort_job}
            if action not in handler:
                raise HTTPException(404, detail=f"no action {action!r}")
            try:
                await handler[action](conn, id_)
            except jobs.JobNotFound as exc:
                raise HTTPException(404, detail=str(exc)) from None
            except jobs.WrongState as exc:
                raise HTTPException(409, detail=str(exc)) from None
        log.info(f"job {action} from the console", job_id=id_)
        return RedirectResponse(f"/jobs/{id_}?done={action}", 303)

    async def metrics_endpoint(request: Request) -> Response:
        registry = metrics.registry(config.conninfo)
        try:
            body = await asyncio.to_thread(generate_latest, registry)
        except psycopg.Error as exc:
            log.warning("metrics: database unavailable", error=str(exc).strip()[:300])
            return PlainTextResponse("database unavailable\n", status_code=503)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        return await readiness(config.conninfo)

    async def error_page(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error (see the log)"
        if isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout):
            code, detail = 503, "the database is unavailable; try again shortly"
            log.warning("console: database unavailable", path=request.url.path)
        elif code == 500:
            log.error("console error", path=request.url.path, error=repr(exc))
        return templates.TemplateResponse(
            request, "error.html", {"code": code, "detail": detail}, status_code=code
        )

    routes = [
        Route("/", overview),
        Route("/jobs", job_list),
        Route("/jobs/{id}", job_page),
        Route("/jobs/{id}/{action:str}", act, methods=["POST"]),
        Route("/targets", targets),
        Route("/targets/{id}/{action:str}", act, methods=["POST"]),
        Route("/backfill", backfill),
        Route("/workers", workers),
        Route("/metrics", metrics_endpoint),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders)]
    if not config.password:
        # Without a password, a page fetched through another host name (DNS rebinding: a web
        # page the operator visits, resolving its own name to 127.0.0.1) must get nothing.
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=config.hosts()))
    if config.password:
        middleware.insert(0, Middleware(BasicAuth, password=config.password))
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: error_page, Exception: error_page},
    )


async def readiness(conninfo: str) -> Response:
    """200 when the database answers and its schema is current, else 503 with the reason."""
    try:
        behind = await asyncio.wait_for(
            asyncio.to_thread(migrate.pending, conninfo, PROBE_TIMEOUT_SECONDS),
            PROBE_TIMEOUT_SECONDS * 2,
        )
    except (psycopg.Error, TimeoutError) as exc:
        # the reason goes to the log, not to whoever asks (the probes need no password)
        log.warning("not ready: database unavailable", error=str(exc).strip()[:300])
        return PlainTextResponse("database unavailable\n", status_code=503)
    if behind:
        return PlainTextResponse(
            f"schema behind: {len(behind)} migration(s) not applied\n", status_code=503
        )
    return PlainTextResponse("ready\n")


class BasicAuth(BaseHTTPMiddleware):
    """Every page but the probes asks for QLARIUS_WEB_PASSWORD (any user name)."""

    def __init__(self, app: Any, password: str) -> None:
        super().__init__(app)
        self.password = password.encode()

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        # scope["path"] is what the router serves; request.url is built from the client's
        # Host header and must never decide who gets in.
        if str(request.scope["path"]).startswith(OPEN_PATHS):
            return await call_next(request)
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                _, _, given = base64.b64decode(encoded, validate=True).partition(b":")
            except (binascii.Error, ValueError):
                given = b""
            if hmac.compare_digest(given, self.password):
                return await call_next(request)
        return PlainTextResponse(
            "password required\n",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="qlarius-jobs", charset="UTF-8"'},
        )


class SecurityHeaders(BaseHTTPMiddleware):
    """No framing, no sniffing, no scripts from anywhere: the pages need none."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'"
        )
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        return response


def _periodic(conninfo: str) -> list[dict[str, Any]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return status.periodic_schedule(conn)


def _ago(value: Any) -> str:
    if value is None:
        return "-"
    seconds = int((dt.datetime.now(dt.UTC) - value).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _when(value: Any) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def config_from_settings(
    conninfo: str, host: str | None = None, port: int | None = None
) -> ConsoleConfig:
    settings = get_settings()
    password = settings.web_password.get_secret_value() if settings.web_password else None
    return ConsoleConfig(
        conninfo=conninfo,
        host=host or settings.web_host,
        port=port or settings.web_port,
        password=password or None,
        read_only=settings.web_read_only,
    )


def server(app: Any, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for ``app`` that logs through this project's logging, quietly."""
    return uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    )


def probes(conninfo: str) -> Starlette:
    """``/healthz`` and ``/readyz`` alone, for ``qlarius-jobs worker --health-port``: a worker
    whose event loop is stuck answers neither, so its supervisor can restart it."""

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        return await readiness(conninfo)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz)])
