"""The operator's console (``qlarius-jobs web``): server-rendered pages over the database,
Prometheus metrics and health probes. Starlette, Jinja2 (autoescaped), uvicorn; no JavaScript
and nothing fetched from elsewhere, so it works on a closed network.

Safety: it listens on 127.0.0.1 unless told otherwise, and refuses any other address without
``QLARIUS_WEB_PASSWORD`` (HTTP Basic; every page but the probes asks for it). Actions are
POSTs carrying a CSRF token; ``QLARIUS_WEB_READ_ONLY`` hides and refuses them, and so does
``QLARIUS_WEB_READONLY_PASSWORD`` for whoever gives it (a viewer). Every action is logged
(``console_actions``); the live pages reload themselves (``console_live``). Every input is
checked (a bad one is a 400 page, never a traceback) and only reaches SQL as a parameter.

This module builds the app: its configuration, routes, pools and state, and the metrics and
probe endpoints. The pages are in ``console_pages`` (the jobs list and its bulk actions in
``console_jobs``, the Schedules and Queues pages in ``console_controls``), the password,
host, CSRF and header rules in ``console_security``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from qlarius_jobs.db import migrate
from qlarius_jobs.logs import get_logger
from qlarius_jobs.ops import (
    console_actions,
    console_controls,
    console_db,
    console_jobs,
    console_live,
    console_security,
    jobs,
    metrics,
)
from qlarius_jobs.ops import console_pages as pages
from qlarius_jobs.settings import get_settings

log = get_logger(__name__)

HERE = Path(__file__).parent
PROBE_TIMEOUT_SECONDS = 5


class ConsoleRefused(ValueError):
    """The console will not start as configured; the message says why, in one line."""


@dataclass(frozen=True)
class ConsoleConfig:
    conninfo: str  # the primary: every action
    read_conninfo: str | None = None  # the pages and /metrics read it (a standby); None: conninfo
    host: str = "127.0.0.1"
    port: int = 8000
    password: str | None = None  # an operator's
    readonly_password: str | None = None  # a viewer's: every page, no action
    read_only: bool = False
    refresh_seconds: int = 5  # the live pages reload this often (0: never)
    secret: bytes = b""  # signs the CSRF token; random per process when empty

    # Host names the console answers to without a password (tests add their own).
    extra_hosts: tuple[str, ...] = ()

    def hosts(self) -> list[str]:
        return sorted({"127.0.0.1", "localhost", "::1", "[::1]", self.host, *self.extra_hosts})

    def check(self) -> None:
        if not console_security.is_loopback(self.host) and not self.password:
            raise ConsoleRefused(
                f"refusing to listen on {self.host} without QLARIUS_WEB_PASSWORD: anyone who "
                "can reach it could read the jobs and retry, cancel or abort them; set a "
                "password, or listen on 127.0.0.1"
            )
        if self.readonly_password and not self.password:
            raise ConsoleRefused(
                "QLARIUS_WEB_READONLY_PASSWORD needs QLARIUS_WEB_PASSWORD: without the "
                "operator's password anyone could act"
            )
        if self.readonly_password and self.readonly_password == self.password:
            raise ConsoleRefused(
                "QLARIUS_WEB_READONLY_PASSWORD is QLARIUS_WEB_PASSWORD: a viewer would be "
                "an operator; choose two passwords"
            )


# --- the app ------------------------------------------------------------------------------


def build_console(config: ConsoleConfig) -> Starlette:
    """The console's app. Its handlers are module-level and read what they share from
    ``app.state``: ``config``, ``reads`` and ``writes`` (``console_db``; their pools opened and
    closed by the lifespan), ``templates`` and ``csrf_token``."""
    csrf_token = console_security.csrf_token(config.secret or secrets.token_bytes(32))
    routes = [
        Route("/", pages.overview),
        Route("/jobs", console_jobs.job_list),
        Route("/jobs/bulk", console_jobs.bulk_confirm, methods=["POST"]),
        Route("/jobs/bulk/apply", console_jobs.bulk_apply, methods=["POST"]),
        Route("/jobs/{id}", pages.job_page),
        Route("/jobs/{id}/{action:str}", pages.act, methods=["POST"]),
        Route("/targets", pages.targets),
        Route("/targets/{id}/{action:str}", pages.act, methods=["POST"]),
        Route("/backfill", pages.backfill),
        Route("/workers", pages.workers),
        Route("/actions", console_actions.actions_page),
        Route("/live/{state:str}", console_live.switch),
        Route("/schedules", console_controls.schedules_page),
        Route("/schedules/{name}/{action:str}", console_controls.schedule_act, methods=["POST"]),
        Route("/queues", console_controls.queues_page),
        Route("/queues/{name}/{action:str}", console_controls.queue_act, methods=["POST"]),
        Route("/tasks/{name}/{action:str}", console_controls.task_act, methods=["POST"]),
        Route("/metrics", metrics_endpoint),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=console_security.middleware(
            config.password, config.hosts(), config.readonly_password
        ),
        lifespan=_lifespan,
        exception_handlers={HTTPException: pages.error_page, Exception: pages.error_page},
    )
    app.state.config = config
    app.state.csrf_token = csrf_token
    app.state.templates = _templates(csrf_token, config.read_only)
    # Two ways to the database, named for what they do (console_db): pages read through
    # ``reads`` (the standby when configured, always in read-only transactions), actions go
    # through ``writes`` (the primary). No handler holds a pool that could do the other.
    primary = console_db.pool(config.conninfo)
    app.state.reads = console_db.Reads(primary, config.conninfo, config.read_conninfo)
    app.state.writes = console_db.Writes(
        primary, config.conninfo, track=config.read_conninfo is not None
    )
    return app


def _templates(csrf_token: str, read_only: bool) -> Jinja2Templates:
    templates = Jinja2Templates(
        directory=str(HERE / "templates"), context_processors=[console_live.context]
    )
    # read_only: the process's; console_live.context gives each request its own (viewers)
    templates.env.globals.update(csrf_token=csrf_token, read_only=read_only, states=jobs.STATES)
    templates.env.filters["ago"] = _ago
    templates.env.filters["when"] = _when
    templates.env.filters["short_json"] = lambda value: jobs.short_json(value, 80)
    templates.env.filters["duration"] = _duration
    templates.env.filters["counts"] = _counts
    return templates


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    reads: console_db.Reads = app.state.reads
    writes: console_db.Writes = app.state.writes
    await writes.pool.open()
    await reads.open()
    try:
        yield
    finally:
        await reads.close()
        await writes.pool.close()


async def metrics_endpoint(request: Request) -> Response:
    """Always 200: while the database is away, ``qlarius_database_up 0`` says so (and
    ``qlarius_read_database_up 0`` while the standby the pages read is)."""
    config = request.app.state.config
    registry = metrics.registry(config.conninfo, config.read_conninfo)
    body = await asyncio.to_thread(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def process_metrics(request: Request) -> Response:
    """This process's own metrics (prometheus-client's registry): for a worker, its pool and
    the jobs it runs now (``worker/process_metrics.py``)."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def readyz(request: Request) -> Response:
    return await readiness(request.app.state.config.conninfo)


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


def _ago(value: Any) -> str:
    if value is None:
        return "-"
    seconds = int((dt.datetime.now(dt.UTC) - value).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def _counts(counts: dict[str, Any] | None) -> str:
    if not counts:
        return "-"
    return ", ".join(f"{k} {v:,}" for k, v in counts.items())


def _when(value: Any) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def config_from_settings(
    conninfo: str, host: str | None = None, port: int | None = None
) -> ConsoleConfig:
    settings = get_settings()
    password = settings.web_password.get_secret_value() if settings.web_password else None
    viewers = settings.web_readonly_password
    return ConsoleConfig(
        conninfo=conninfo,
        read_conninfo=settings.read_database_url or None,
        host=host or settings.web_host,
        port=port or settings.web_port,
        password=password or None,
        readonly_password=(viewers.get_secret_value() if viewers else None) or None,
        read_only=settings.web_read_only,
        refresh_seconds=settings.web_refresh_seconds,
    )


def server(app: Any, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for ``app`` that logs through this project's logging, quietly."""
    return uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    )


def probes(conninfo: str) -> Starlette:
    """``/healthz``, ``/readyz`` and the process's own ``/metrics``, for ``qlarius-jobs worker
    --health-port``: a worker whose event loop is stuck answers none, so its supervisor can
    restart it."""
    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", process_metrics),
        ]
    )
    # the console's own readyz, which reads only the conninfo of the config
    app.state.config = ConsoleConfig(conninfo=conninfo)
    return app
