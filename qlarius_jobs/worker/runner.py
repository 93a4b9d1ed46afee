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
from collections.abc import Coroutine, Mapping
from typing import Any

import psycopg
import psycopg_pool
from procrastinate import App
from procrastinate import worker as procrastinate_worker

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs import catalog
from qlarius_jobs.jobs.blueprint import JobSpec
from qlarius_jobs.logs import get_logger
from qlarius_jobs.settings import get_settings, parse_queue_spec
from qlarius_jobs.worker import process_metrics
from qlarius_jobs.worker.last_slot import LastSlot
from qlarius_jobs.worker.managers import CheckedJobManager
from qlarius_jobs.worker.procrastinate_adapter import (
    is_open,
    running_job_attempts,
    steady_pool_reconnects,
)
from qlarius_jobs.worker.procrastinate_adapter import pool as app_pool
from qlarius_jobs.worker.queue_controls import QueueControls, read_controls
from qlarius_jobs.worker.resilience import (
    Availability,
    JobNotRunningHere,
    ResilientJobManager,
)
from qlarius_jobs.worker.scheduler import Scheduler
from qlarius_jobs.worker.supervision import StopSignals, WorkersStopped, supervise
from qlarius_jobs.worker.wakeups import Wakeups

log = get_logger(__name__)

SQL = QueryFile.of(__file__)


def job_specs(app: App) -> dict[str, JobSpec[Any]]:
    """The jobs ``app`` runs (``build_app`` installs their checked manager)."""
    manager = app.job_manager
    assert isinstance(manager, CheckedJobManager), "an app made by app.build_app"
    return manager.specs


def queues_to_run(specs: Mapping[str, JobSpec[Any]], spec: str | None = None) -> dict[str, int]:
    """Which queues a worker process runs, with what concurrency: ``spec`` (``worker
    --queues``, e.g. ``"targets,offers=4"``; a bare name takes its ``QLARIUS_QUEUES``
    concurrency, else 1), or ``QLARIUS_QUEUES`` itself. Only the queues of ``specs``."""
    configured = parse_queue_spec(get_settings().queues)
    chosen = parse_queue_spec(spec) if spec else configured
    known = catalog.queues(specs)
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise ValueError(f"unknown queue {unknown[0]!r}; the queues are: {', '.join(known)}")
    return {name: n or configured.get(name) or 1 for name, n in chosen.items()}


LEFT_FREE = 3  # connections a worker process leaves for operators and the application


def check_task_timeouts(specs: Mapping[str, JobSpec[Any]]) -> None:
    """``QLARIUS_TASK_TIMEOUTS`` may only name jobs that exist (a typo would be ignored)."""
    unknown = sorted(set(get_settings().task_timeouts) - set(specs))
    if unknown:
        raise ValueError(
            f"invalid setting QLARIUS_TASK_TIMEOUTS: no such task: {', '.join(unknown)}"
        )


def fit_pool_to_connections(conninfo: str, queues: Mapping[str, int]) -> int:
    """Check that this process's connections fit in what the server has free, and cap the
    pool when they do not: never take the connections reserved for superusers (workers often
    connect as one), and leave a few for psql and the application. Says so in one line; raises
    ``ValueError`` (one line) when too few are free to work at all. Returns the pool size, for
    ``app.build_app(pool_max_size=...)``."""
    settings = get_settings()
    if settings.behind_pooler:
        return settings.pool_max_size  # the pooler, not this process, sizes the server's share
    listeners = len(queues) + 1  # one LISTEN per queue's worker, one for wake-ups
    with psycopg.connect(conninfo) as conn:
        budget = SQL.one_sync(conn, "connection_budget")
    free = budget["max_connections"] - budget["reserved"] - budget["in_use"] - LEFT_FREE
    wanted = settings.pool_max_size + listeners
    if wanted <= free:
        return settings.pool_max_size
    pool = free - listeners
    facts = (
        f"max_connections {budget['max_connections']}, {budget['reserved']} reserved, "
        f"{budget['in_use']} in use, {LEFT_FREE} left free for others"
    )
    if pool < 2:
        raise ValueError(
            f"not enough database connections for a worker: it needs {listeners + 2} or more, "
            f"{max(free, 0)} are free ({facts})"
        )
    log.warning(
        f"connection pool capped at {pool} (QLARIUS_POOL_MAX_SIZE is "
        f"{settings.pool_max_size}): {facts}",
        pool_max_size=pool,
    )
    return pool


async def run_workers(
    app: App,
    queues: Mapping[str, int],
    *,
    wait: bool = True,
    graceful_timeout: float | None = None,  # default: the setting (with wait=False: no limit)
    install_signal_handlers: bool = True,
    fetch_job_polling_interval: float | None = None,  # default: the setting
    periodic: bool = True,
    signals: StopSignals | None = None,
) -> bool:
    """Run one Procrastinate worker of ``app`` per queue, concurrently, until stopped (or, with
    ``wait=False``, until the queues are empty); True when a stop signal ended them.
    The process follows the database's queue controls (``queue_controls.py``) and defers
    the ticks of its schedules (``scheduler.py``; with ``wait=False``, the due ones once, at
    the start). ``periodic=False`` defers no periodic job (tests, benchmarks: a tick would
    add jobs nobody asked for).

    A lost database is waited for (see ``resilience.py``). Any worker that stops on its own,
    for whatever reason, stops them all: ``WorkersStopped`` says why (the process then exits
    non-zero, so that a supervisor restarts it; it is never left half alive).
    """
    host = socket.gethostname()
    settings = get_settings()
    if fetch_job_polling_interval is None:
        fetch_job_polling_interval = settings.fetch_polling_seconds
    if graceful_timeout is None and wait:
        graceful_timeout = settings.shutdown_grace_seconds
    # With wait=False the worker stops because its queue is empty, not because it was asked
    # to: running jobs then finish however long they take (graceful_timeout None).
    async with contextlib.AsyncExitStack() as stack:
        if not is_open(app):
            await stack.enter_async_context(app.open_async())
        pool = app_pool(app)
        steady_pool_reconnects()
        availability = Availability(settings.database_outage_limit_seconds, pool)
        base_manager = app.job_manager
        assert isinstance(base_manager, CheckedJobManager)  # build_app installs it
        job_manager = ResilientJobManager(base_manager, availability)
        app.job_manager = job_manager  # worker processes only: the CLI's defer keeps failing fast
        stack.callback(setattr, app, "job_manager", base_manager)
        controls, _ = await availability.call(read_controls, pool, list(queues))

        queue_controls = QueueControls(
            pool,
            queues,
            poll_seconds=settings.controls_poll_seconds,
            availability=availability,
            controls=controls,
        )
        workers = [
            procrastinate_worker.Worker(
                app=app,
                **{
                    **app.worker_defaults,  # middleware, heartbeats (see app.py)
                    "shutdown_graceful_timeout": graceful_timeout,
                },
                queues=[queue],
                name=f"{host}:{os.getpid()}:{queue}",
                concurrency=queue_controls.capacity[queue],
                wait=wait,
                install_signal_handlers=False,
                fetch_job_polling_interval=fetch_job_polling_interval,
                # abort requests come by NOTIFY too, or (behind a pooler) by this poll
                abort_job_polling_interval=fetch_job_polling_interval,
            )
            for queue in queues
        ]

        queue_controls.workers = workers
        stack.enter_context(process_metrics.watching(pool, workers))
        job_manager.running_jobs = lambda worker_id: running_job_attempts(workers, worker_id)
        job_manager.may_start = queue_controls.may_start
        if wait:  # a round until empty keeps no slot (last_slot.py)
            job_manager.last_slot = LastSlot(
                base_manager.specs, queues, queue_controls.limit, queue_controls.wake
            )
        loop = asyncio.get_running_loop()
        stack.callback(loop.set_exception_handler, loop.get_exception_handler())
        loop.set_exception_handler(_dropped_result_in_one_line)
        stop_requested = asyncio.Event()

        def on_signal(signum: int) -> None:
            stop_requested.set()
            availability.stopping = True
            log.info(
                "stop requested: no new jobs; waiting for running jobs",
                signal=signal.Signals(signum).name,
                graceful_timeout_s=graceful_timeout,
            )
            for worker in workers:
                worker.stop()

        own_signals = signals is None and install_signal_handlers
        if signals is None:
            signals = StopSignals()
        if own_signals:
            signals.install(loop)
        signals.listeners.append(on_signal)
        if signals.received:
            on_signal(signals.received)
        log.info(
            "workers starting",
            queues=dict(queues),
            paused=sorted(q for q in queues if queue_controls.paused(q)),
            pid=os.getpid(),
            host=host,
        )
        scheduler = Scheduler(
            pool,
            {name: spec.queue for name, spec in job_specs(app).items()},
            poll_seconds=settings.controls_poll_seconds,
            availability=availability,
        )

        def controls_changed() -> None:
            scheduler.notify()
            queue_controls.notify()

        wakeups = Wakeups(
            pool,
            lambda: str(pool.conninfo),
            availability=availability,
            listen=not settings.behind_pooler,
            sweep_seconds=settings.wakeup_sweep_seconds,
            on_controls=controls_changed,
        )
        # side loops of a process that runs for good; a run that ends when its queues are
        # empty does their work once, at its start, instead
        helpers: dict[str, Coroutine[Any, Any, None]] = {}
        if wait:
            helpers = {"wake-ups listener": wakeups.run(), "queue controls": queue_controls.run()}
            if periodic:
                helpers["scheduler"] = scheduler.run()
        introductions = asyncio.create_task(
            _introduce(workers, pool, host, dict(queues), job_manager.introductions)
        )
        stack.callback(introductions.cancel)
        try:
            if not wait:
                await wakeups.sweep_once()  # pending work left by earlier runs gets its jobs
                if periodic:
                    await availability.call(scheduler.defer_due)  # ticks missed meanwhile
            failure = await supervise(workers, helpers, stop_requested, wait, availability)
        finally:
            signals.listeners.remove(on_signal)
            if own_signals:
                signals.uninstall(loop)
        if failure:
            log.error("workers stopped on their own", reason=failure)
            raise WorkersStopped(failure)
        log.info("workers stopped", queues=dict(queues))
        return stop_requested.is_set()


def _dropped_result_in_one_line(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A job's late result dropped (``JobNotRunningHere``: a rescue gave the job to another
    run) ends Procrastinate's task for the job, which nobody awaits: one warning line, not
    asyncio's "Task exception was never retrieved" and a traceback. Anything else as
    asyncio reports it."""
    if isinstance(context.get("exception"), JobNotRunningHere):
        log.warning(str(context["exception"]))
        return
    loop.default_exception_handler(context)


async def _introduce(
    workers: list[procrastinate_worker.Worker],
    pool: psycopg_pool.AsyncConnectionPool,
    host: str,
    queues: dict[str, int],
    known: dict[int, dict[str, Any]],
) -> None:
    """Record which queue each worker serves, and where, once Procrastinate has registered it
    (for the console's Workers page; the row goes with the worker's own), and keep it in
    ``known`` (given again if a rescue removes the worker's row). Best effort: a worker is no
    less a worker for not being introduced."""
    introduced: set[int] = set()
    for _ in range(200):
        for worker in workers:
            if worker.worker_id is None or worker.worker_id in introduced:
                continue
            queue = (worker.queues or ["?"])[0]
            introduction = {
                "queue": queue,
                "host": host,
                "pid": os.getpid(),
                "concurrency": queues.get(queue, 1),
            }
            known[worker.worker_id] = introduction
            try:
                async with pool.connection() as conn:
                    await SQL.execute(
                        conn, "introduce_worker", worker_id=worker.worker_id, **introduction
                    )
            except psycopg.Error as exc:
                log.debug("worker not introduced", worker_id=worker.worker_id, error=str(exc))
            introduced.add(worker.worker_id)
        if len(introduced) == len(workers):
            return
        await asyncio.sleep(0.1)


async def run_until_empty(
    app: App, queues: Mapping[str, int], conninfo: str, graceful_timeout: float | None = None
) -> None:
    """``worker --until-empty``: work until no job is due in ``queues``. A due job that a
    round could not take (its lock held by a job running elsewhere) is waited for, not left
    behind."""
    loop = asyncio.get_running_loop()
    signals = StopSignals()
    signals.install(loop)
    periodic = True  # the first round defers the ticks missed meanwhile; later ones none
    try:
        while True:
            await run_workers(
                app,
                queues,
                wait=False,
                graceful_timeout=graceful_timeout,
                install_signal_handlers=False,
                signals=signals,
                periodic=periodic,
            )
            periodic = False
            if signals.received:
                return  # SIGTERM or Ctrl-C: stop, whatever is still due
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                row = await SQL.one(conn, "due_jobs", queues=list(queues))
            if not row or not row["due"]:
                return
            log.debug(
                "due jobs still waiting (held by running jobs); another round", due=row["due"]
            )
            await asyncio.sleep(0.5)
            if signals.received:
                return
    finally:
        signals.uninstall(loop)
