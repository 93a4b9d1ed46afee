"""The long-running commands: run (the demo), worker, web; and what they share: the
listening checks, an HTTP server beside the workers, the option types."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Sequence
from typing import Any

from qlarius_jobs.cli.database import current_database, migrated_database, print_status
from qlarius_jobs.db import connection
from qlarius_jobs.settings import Settings, get_settings


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def _port_free(host: str, port: int) -> None:
    """One line now rather than a server's traceback later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def _beside(main: Any, server: Any) -> None:
    """Run ``main`` with an HTTP server beside it; the server stops when ``main`` ends."""
    serving = asyncio.create_task(server.serve())
    try:
        await main
    finally:
        server.should_exit = True
        await serving


def add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="database, migrations, demo data when empty, workers")
    run.add_argument(
        "--grace",
        type=_seconds,
        default=None,
        help="seconds running jobs get at stop (default: QLARIUS_SHUTDOWN_GRACE_SECONDS)",
    )
    run.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    """The demo: database, migrations, demo data when empty, the jobs it triggers, workers."""
    from qlarius_jobs.app import build_app
    from qlarius_jobs.dev import seed
    from qlarius_jobs.jobs import catalog
    from qlarius_jobs.worker import runner

    conninfo = migrated_database()
    if seed.database_is_empty(conninfo):
        seed.seed(conninfo, seed.SeedSizes(me_files=get_settings().demo_me_files))
        asyncio.run(seed.kick_off_demo(conninfo))
    print_status(conninfo)
    from qlarius_jobs.ops import console

    config = console.config_from_settings(conninfo)
    config.check()
    web = console.server(console.build_console(config), config.host, config.port)
    print(
        f"console: http://{config.host}:{config.port}/ ; workers running on every queue; "
        "Ctrl-C stops them cleanly",
        file=sys.stderr,
    )
    app = build_app(database=lambda: conninfo, worker_process=True)
    queues = runner.queues_to_run(catalog.specs())
    work = runner.run_workers(app, queues, graceful_timeout=args.grace)
    asyncio.run(_beside(work, web))
    return 0


def add_worker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser("worker", help="run workers: every queue, each its own concurrency")
    worker.add_argument(
        "--queues",
        default=None,
        help="e.g. 'targets,offers=4' (default: QLARIUS_QUEUES, "
        f"{Settings.model_fields['queues'].default})",
    )
    worker.add_argument(
        "--grace",
        type=_seconds,
        default=None,
        help="seconds running jobs get at stop (default: QLARIUS_SHUTDOWN_GRACE_SECONDS)",
    )
    worker.add_argument(
        "--until-empty", action="store_true", help="stop once no job is due in its queues"
    )
    worker.add_argument(
        "--health-port",
        type=_port,
        default=None,
        help="serve /healthz, /readyz (for a supervisor's probes) and this process's /metrics",
    )
    worker.add_argument(
        "--health-host", default="0.0.0.0", help="address of the probes (default: every one)"
    )
    worker.set_defaults(handler=cmd_worker)


def cmd_worker(args: argparse.Namespace, blueprints: Sequence[Any] | None = None) -> int:
    """``qlarius-jobs worker``: the jobs of ``jobs/catalog.py``, or ``blueprints`` (the
    runner benchmark's worker processes add a no-op job to them, see ``bench/noop.py``)."""
    from qlarius_jobs.app import build_app
    from qlarius_jobs.jobs import catalog
    from qlarius_jobs.worker import runner

    if blueprints is None:
        blueprints = catalog.BLUEPRINTS
    specs = {name: spec for bp in blueprints for name, spec in bp.specs.items()}
    queues = runner.queues_to_run(specs, args.queues)
    runner.check_task_timeouts(specs)
    if args.health_port:
        _port_free(args.health_host, args.health_port)
    conninfo = current_database()
    connection.check_pooling(conninfo)
    pool = runner.fit_pool_to_connections(conninfo, queues)
    app = build_app(blueprints, database=lambda: conninfo, pool_max_size=pool, worker_process=True)

    async def work() -> None:
        if args.until_empty:
            await runner.run_until_empty(app, queues, conninfo, graceful_timeout=args.grace)
        else:
            await runner.run_workers(app, queues, graceful_timeout=args.grace)

    try:
        if args.health_port:
            from qlarius_jobs.ops import console

            probes = console.server(console.probes(conninfo), args.health_host, args.health_port)
            asyncio.run(_beside(work(), probes))
        else:
            asyncio.run(work())
    except runner.WorkersStopped as exc:
        print(f"qlarius-jobs: worker stopped: {exc}", file=sys.stderr)
        return 1
    return 0


def add_web(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    web = sub.add_parser("web", help="the operator's console, /metrics, /healthz, /readyz")
    web.add_argument("--host", default=None, help="address (default: QLARIUS_WEB_HOST, 127.0.0.1)")
    web.add_argument(
        "--port", type=_port, default=None, help="port (default: QLARIUS_WEB_PORT, 8000)"
    )
    web.set_defaults(handler=cmd_web)


def cmd_web(args: argparse.Namespace) -> int:
    """The operator's console: pages, /metrics, /healthz, /readyz."""
    from qlarius_jobs.ops import console

    config = console.config_from_settings("", args.host, args.port)
    config.check()  # before anything touches the database
    _port_free(config.host, config.port)
    conninfo = current_database()
    config = console.config_from_settings(conninfo, args.host, args.port)
    print(f"console: http://{config.host}:{config.port}/", file=sys.stderr)
    asyncio.run(console.server(console.build_console(config), config.host, config.port).serve())
    return 0
