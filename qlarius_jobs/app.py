"""The Procrastinate ``App``: ``build_app`` makes one; ``app`` is the door for Procrastinate's
own command line (``procrastinate --app=qlarius_jobs.app.app ...``).

Importing this module builds nothing and opens nothing. ``build_app`` registers the jobs of
``jobs/catalog.py`` (or other blueprints: the benchmarks bring their own); its pool connects
when the app is opened, to the database ``database()`` names then. ``app`` is built on first
use, with logging set up, on ``door_database``: the configured database, else the embedded
cluster (started if needed), as every door of the project does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from procrastinate import App, PsycopgConnector

from qlarius_jobs.db import connection
from qlarius_jobs.jobs import catalog
from qlarius_jobs.jobs.blueprint import JobBlueprint, JobSpec
from qlarius_jobs.logs import configure_logging
from qlarius_jobs.settings import get_settings
from qlarius_jobs.worker.managers import CheckedJobManager
from qlarius_jobs.worker.middleware import WORKER_MIDDLEWARE


def build_app(
    blueprints: Iterable[JobBlueprint] = catalog.BLUEPRINTS,
    *,
    database: Callable[[], str] = connection.ready_conninfo,
    pool_max_size: int | None = None,
    worker_process: bool = False,
) -> App:
    """An app running ``blueprints`` on ``database()`` (resolved when its pool opens), its
    pool capped at ``pool_max_size`` when given (see ``worker.runner.fit_pool_to_connections``);
    ``worker_process``: the app of a ``qlarius-jobs worker`` process (its pool's check, see
    ``connection.pool_factory``), never an application's."""
    settings = get_settings()
    connector = PsycopgConnector(
        # The synchronous pool Procrastinate builds for app.open() / task.defer() calls this
        # for each connection: the database is resolved once, on first use.
        conninfo=functools.cache(database),
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        max_idle=settings.pool_max_idle_seconds,  # idle connections go back to the server
        timeout=settings.pool_timeout_seconds,
        pool_factory=connection.pool_factory(
            database, pool_max_size, worker_process=worker_process
        ),
        kwargs={
            # which process a connection belongs to, for pg_stat_activity
            "application_name": connection.application_name(),
            # A transaction pooler cannot keep prepared statements across transactions.
            **connection.pooler_kwargs(settings),
        },
    )
    app = App(
        connector=connector,
        # Also what a bare `procrastinate --app=qlarius_jobs.app.app worker` runs with; such a
        # worker neither defers the schedules nor honours pauses (`qlarius-jobs worker` does).
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


def door_database() -> str:
    """The database of the doors (this command line, Procrastinate's): the configured one,
    checked; with none configured, the embedded cluster, created and started if needed."""
    if get_settings().database_url:
        return connection.ready_conninfo()
    # Imported here: a process given DATABASE_URL never loads the embedded-cluster tooling.
    from qlarius_jobs.dev import embedded

    return embedded.start()


@functools.cache
def _door_app() -> App:
    configure_logging()
    return build_app(database=door_database)


def __getattr__(name: str) -> Any:
    # `procrastinate --app=qlarius_jobs.app.app` reads this attribute: built on that first read.
    if name == "app":
        return _door_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
