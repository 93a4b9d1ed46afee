"""The Procrastinate ``App``; ``procrastinate --app=qlarius_jobs.app.app ...`` works anywhere.

The connector talks to the configured database; with none configured, opening the app starts
the project's embedded cluster first (see ``database.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool
from procrastinate import App, PsycopgConnector

from qlarius_jobs import database
from qlarius_jobs.logs import configure_logging
from qlarius_jobs.settings import get_settings


async def _configure_connection(conn: psycopg.AsyncConnection) -> None:
    # The jobs' locking protocol relies on READ COMMITTED (each statement sees what committed
    # before it: see drains.py), whatever the server's default_transaction_isolation says.
    await conn.set_isolation_level(psycopg.IsolationLevel.READ_COMMITTED)
    if not get_settings().behind_pooler:  # a session setting would leak to a pooler's others
        # A killed worker's statement is cancelled (and its locks released) within seconds,
        # not when it would have finished: the server checks that the client is still there.
        await conn.execute("SET client_connection_check_interval = '2s'")
        if not conn.autocommit:
            await conn.commit()


@dataclass
class PoolLimit:
    """A cap on the pool, set by a worker process that found too few connections free."""

    max_size: int | None = None


POOL_LIMIT = PoolLimit()


def _open_pool(**kwargs: Any) -> psycopg_pool.AsyncConnectionPool:
    # Resolved when the app opens, not at import: an embedded cluster is started if needed.
    kwargs["conninfo"] = database.ensure_database()
    kwargs["configure"] = _configure_connection
    if POOL_LIMIT.max_size is not None:
        kwargs["max_size"] = min(kwargs["max_size"], POOL_LIMIT.max_size)
        kwargs["min_size"] = min(kwargs["min_size"], kwargs["max_size"])
    return psycopg_pool.AsyncConnectionPool(**kwargs)


def application_name() -> str:
    return f"qlarius-jobs:{os.getpid()}"


def make_app() -> App:
    settings = get_settings()
    connector = PsycopgConnector(
        conninfo=database.conninfo(settings),
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        max_idle=settings.pool_max_idle_seconds,  # idle connections go back to the server
        timeout=settings.pool_timeout_seconds,
        pool_factory=_open_pool,
        kwargs={
            # which process a connection belongs to, for pg_stat_activity
            "application_name": application_name(),
            # A transaction pooler cannot keep prepared statements across transactions.
            **({"prepare_threshold": None} if settings.behind_pooler else {}),
        },
    )
    from qlarius_jobs.middleware import WORKER_MIDDLEWARE

    return App(
        connector=connector,
        import_paths=["qlarius_jobs.tasks"],
        # Also what a bare `procrastinate --app=qlarius_jobs.app.app worker` runs with.
        worker_defaults={
            "worker_middleware": list(WORKER_MIDDLEWARE),
            "update_heartbeat_interval": settings.heartbeat_seconds,
            "stalled_worker_timeout": settings.stalled_after_seconds,
            "shutdown_graceful_timeout": settings.shutdown_grace_seconds,
            # LISTEN needs a session; behind a transaction pooler, workers poll instead.
            "listen_notify": not settings.behind_pooler,
        },
    )


configure_logging()
app = make_app()
