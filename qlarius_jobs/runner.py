"""Running workers: every queue in one process, each with its own concurrency (Oban's
``queues:``). Several such processes, on several machines, may share one database.

SIGTERM or SIGINT stops fetching and lets running jobs finish within the grace period; a
second signal exits at once (the jobs it leaves are rescued later, see ``maintenance``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Mapping

from procrastinate import exceptions as procrastinate_exceptions
from procrastinate import worker as procrastinate_worker

from qlarius_jobs.app import app
from qlarius_jobs.logs import get_logger
from qlarius_jobs.settings import get_settings
from qlarius_jobs.wakeups import Wakeups

log = get_logger(__name__)


def configured_queues() -> dict[str, int]:
    """The ``QLARIUS_QUEUES`` setting (default ``default=10,targets=5,offers=10,maintenance=3``)."""
    return parse_queues(get_settings().queues, defaults={})


def parse_queues(spec: str | None, defaults: Mapping[str, int] | None = None) -> dict[str, int]:
    """``"targets,offers=4"`` -> ``{"targets": 5, "offers": 4}`` (unlisted concurrency: default)."""
    if defaults is None:
        defaults = configured_queues()
    if not spec:
        return dict(defaults)
    queues: dict[str, int] = {}
    for item in spec.split(","):
        name, _, concurrency = item.strip().partition("=")
        if not name:
            continue
        if concurrency:
            if not concurrency.isdigit() or int(concurrency) < 1:
                raise ValueError(f"queue {name!r}: concurrency must be a positive integer")
            queues[name] = int(concurrency)
        else:
            queues[name] = defaults.get(name, 1)
    if not queues:
        raise ValueError(f"no queue in {spec!r}")
    return queues


async def run_workers(
    queues: Mapping[str, int],
    *,
    wait: bool = True,
    graceful_timeout: float | None = None,  # default: the setting (with wait=False: no limit)
    install_signal_handlers: bool = True,
    fetch_job_polling_interval: float = 5.0,
    periodic: bool = True,
) -> None:
    """Run one Procrastinate worker per queue, concurrently, until stopped (or, with
    ``wait=False``, until the queues are empty). ``periodic=False`` defers no periodic job
    (tests, benchmarks: a tick would add jobs nobody asked for)."""
    host = socket.gethostname()
    if graceful_timeout is None and wait:
        graceful_timeout = get_settings().shutdown_grace_seconds
    # With wait=False the worker stops because its queue is empty, not because it was asked
    # to: running jobs then finish however long they take (graceful_timeout None).
    async with contextlib.AsyncExitStack() as stack:
        try:
            app.connector.pool  # noqa: B018 - raises when the app is not open yet
        except procrastinate_exceptions.AppNotOpen:
            await stack.enter_async_context(app.open_async())
        workers = [
            procrastinate_worker.Worker(
                app=app,
                **{
                    **app.worker_defaults,  # middleware, heartbeats (see app.py)
                    "shutdown_graceful_timeout": graceful_timeout,
                },
                queues=[queue],
                name=f"{host}:{os.getpid()}:{queue}",
                concurrency=concurrency,
                wait=wait,
                install_signal_handlers=False,
                fetch_job_polling_interval=fetch_job_polling_interval,
            )
            for queue, concurrency in queues.items()
        ]
        app.perform_import_paths()
        loop = asyncio.get_running_loop()
        signals_seen = 0

        def on_signal(signum: int) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen == 1:
                log.info(
                    "stop requested: no new jobs; waiting for running jobs",
                    signal=signal.Signals(signum).name,
                    graceful_timeout_s=graceful_timeout,
                )
                for worker in workers:
                    worker.stop()
            else:
                log.warning("second stop signal: exiting now", signal=signal.Signals(signum).name)
                sys.stderr.flush()
                os._exit(130)

        if install_signal_handlers:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, on_signal, signum)
        log.info("workers starting", queues=dict(queues), pid=os.getpid(), host=host)
        registry = app.periodic_registry
        schedule = registry.periodic_tasks
        if not periodic:
            registry.periodic_tasks = {}
        settings = get_settings()
        pool = app.connector.pool
        wakeups = Wakeups(
            pool,
            lambda: str(pool.conninfo),
            listen=not settings.behind_pooler,
            sweep_seconds=settings.wakeup_sweep_seconds,
        )
        wakeup_task: asyncio.Task[None] | None = None
        if wait:
            wakeup_task = asyncio.create_task(wakeups.run(), name="wakeups")
        else:
            await wakeups.sweep_once()  # pending work left by earlier runs gets its jobs
        try:
            await asyncio.gather(*(w.run() for w in workers))
        finally:
            if wakeup_task is not None:
                wakeup_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await wakeup_task
            registry.periodic_tasks = schedule
            if install_signal_handlers:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)
        log.info("workers stopped", queues=dict(queues))
