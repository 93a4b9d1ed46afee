"""The Procrastinate ``App``; ``procrastinate --app=qlarius_jobs.app.app ...`` works anywhere.

The connector talks to the configured database; with none configured, opening the app starts
the project's embedded cluster first (see ``database.py``).
"""

from __future__ import annotations

from typing import Any

import psycopg_pool
from procrastinate import App, PsycopgConnector

from qlarius_jobs import database
from qlarius_jobs.logs import configure_logging
from qlarius_jobs.settings import get_settings


def _open_pool(**kwargs: Any) -> psycopg_pool.AsyncConnectionPool:
    # Resolved when the app opens, not at import: an embedded cluster is started if needed.
    kwargs["conninfo"] = database.ensure_database()
    return psycopg_pool.AsyncConnectionPool(**kwargs)


def make_app() -> App:
    settings = get_settings()
    connector = PsycopgConnector(
        conninfo=database.conninfo(settings),
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        pool_factory=_open_pool,
    )
    return App(connector=connector, import_paths=["qlarius_jobs.tasks"])


configure_logging()
app = make_app()
