"""The Procrastinate ``App``; ``procrastinate --app=qlarius_jobs.app.app ...`` works anywhere.

``build_app`` registers the jobs of ``jobs/catalog.py`` (or other blueprints: the benchmarks
bring their own). Building it opens nothing: the pool connects when the app is opened, to the
database ``db/connection.py`` resolves then.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from procrastinate import App, PsycopgConnector

from qlarius_jobs.db import connection
from qlarius_jobs.jobs import catalog
from qlarius_jobs.jobs.base import CheckedJobManager, JobBlueprint, JobSpec
from qlarius_jobs.logs import configure_logging
from qlarius_jobs.settings import get_settings
from qlarius_jobs.worker.middleware import WORKER_MIDDLEWARE


def build_app(blueprints: Iterable[JobBlueprint] = catalog.BLUEPRINTS) -> App:
    settings = get_settings()
    connector = PsycopgConnector(
        # Resolved when a pool opens: open_pool for the asynchronous one (each open), and this
        # callable for the synchronous one Procrastinate builds for app.open() / task.defer().
        conninfo=connection.conninfo_once,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        max_idle=settings.pool_max_idle_seconds,  # idle connections go back to the server
        timeout=settings.pool_timeout_seconds,
        pool_factory=connection.open_pool,  # adds the conninfo, resolved when opened
        kwargs={
            # which process a connection belongs to, for pg_stat_activity
            "application_name": connection.application_name(),
            # A transaction pooler cannot keep prepared statements across transactions.
            **connection.pooler_kwargs(settings),
        },
    )
    app = App(
        connector=connector,
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
    specs: dict[str, JobSpec[Any]] = {}
    for blueprint in blueprints:
        blueprint.register(app, settings)
        specs.update(blueprint.specs)
    # Procrastinate's own doors (its CLI's defer, configure_task) check arguments too.
    app.job_manager = CheckedJobManager(connector, specs)
    return app


configure_logging()
app = build_app()
