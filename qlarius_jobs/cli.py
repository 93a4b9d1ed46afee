"""``qlarius-jobs``: the operator's command line."""

from __future__ import annotations

import argparse
import asyncio
import decimal
import json
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from qlarius_jobs.db import connection, migrate
from qlarius_jobs.logs import configure_logging, get_logger
from qlarius_jobs.ops.jobs import JobActionRefused
from qlarius_jobs.settings import get_settings

log = get_logger(__name__)


def format_table(title: str, rows: Sequence[dict[str, Any]]) -> str:
    """A plain text table, for people; ``--json`` is for scripts."""
    if not rows:
        return f"{title}\n  (none)\n"
    headers = list(rows[0])
    cells = [[("" if r[h] is None else str(r[h])) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [title, "  " + line, "  " + "  ".join("-" * w for w in widths)]
    out += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out) + "\n"


def _database() -> str:
    """The configured database, else the embedded cluster (started if needed)."""
    from qlarius_jobs.app import door_database

    return door_database()


def _migrated_database() -> str:
    """For the demo and the generator: the database, started if embedded, and migrated."""
    conninfo = _database()
    migrate.migrate(conninfo)
    return conninfo


def _current_database() -> str:
    """For everything else: the database as it is. A schema behind this package is refused
    in one line (run `qlarius-jobs migrate`); nothing is changed."""
    conninfo = _database()
    migrate.require_current(conninfo)
    return conninfo


def _print_status(conninfo: str, limit: int = 10) -> None:
    from qlarius_jobs.ops import status

    for key, rows in status.collect(conninfo, limit=limit).items():
        short = [{status.SHORT_TITLES.get(k, k): v for k, v in row.items()} for row in rows]
        print(format_table(status.SECTION_TITLES.get(key, key), short))


def cmd_migrate(args: argparse.Namespace) -> int:
    conninfo = _database()
    report = migrate.migrate(conninfo)
    print(
        f"procrastinate schema: {report.procrastinate}; "
        f"applied {len(report.applied)} migration(s): {', '.join(report.applied) or 'none'}"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from qlarius_jobs.ops import status

    conninfo = _current_database()
    if args.json:
        print(json.dumps(status.collect(conninfo, limit=args.limit), default=_iso, indent=2))
    else:
        _print_status(conninfo, limit=args.limit)
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from qlarius_jobs.dev import embedded

    settings_url = get_settings().database_url
    if settings_url:
        if args.action == "url":
            print(settings_url)
        else:
            where = connection.describe(settings_url)
            print(f"DATABASE_URL is set ({where}): nothing to {args.action}")
        return 0
    cluster = embedded.locate_cluster()
    if args.action == "url":
        print(cluster.conninfo)
    elif args.action == "start":
        embedded.start_cluster(cluster)
        print(f"embedded PostgreSQL running: {cluster.datadir} (socket {cluster.socket_dir})")
    elif args.action == "stop":
        was = embedded.stop_cluster(cluster)
        print("embedded PostgreSQL stopped" if was else "embedded PostgreSQL was not running")
    else:
        running = embedded.is_running(cluster)
        print(f"{'running' if running else 'stopped'}: {cluster.datadir}")
        return 0 if running else 3
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from qlarius_jobs.app import build_app
    from qlarius_jobs.jobs import catalog
    from qlarius_jobs.worker import runner

    queues = runner.queues_to_run(catalog.specs(), args.queues)
    runner.check_task_timeouts(catalog.specs())
    if args.health_port:
        _port_free(args.health_host, args.health_port)
    conninfo = _current_database()
    connection.check_pooling(conninfo)
    pool = runner.fit_pool_to_connections(conninfo, queues)
    app = build_app(database=lambda: conninfo, pool_max_size=pool)

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


def _port_free(host: str, port: int) -> None:
    """One line now rather than a server's traceback later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


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


async def _beside(main: Any, server: Any) -> None:
    """Run ``main`` with an HTTP server beside it; the server stops when ``main`` ends."""
    serving = asyncio.create_task(server.serve())
    try:
        await main
    finally:
        server.should_exit = True
        await serving


def cmd_web(args: argparse.Namespace) -> int:
    """The operator's console: pages, /metrics, /healthz, /readyz."""
    from qlarius_jobs.ops import console

    config = console.config_from_settings("", args.host, args.port)
    config.check()  # before anything touches the database
    _port_free(config.host, config.port)
    conninfo = _current_database()
    config = console.config_from_settings(conninfo, args.host, args.port)
    print(f"console: http://{config.host}:{config.port}/", file=sys.stderr)
    asyncio.run(console.server(console.build_console(config), config.host, config.port).serve())
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from qlarius_jobs.dev import seed

    sizes = seed.SeedSizes(  # checked before anything touches the database
        me_files=args.me_files,
        parents=args.parents,
        targets=args.targets,
        campaigns_per_target=args.campaigns_per_target,
        populate=not args.no_populations,
        null_share=args.null_share,
        ad_event_share=args.ad_event_share,
    )
    conninfo = _migrated_database()
    print(json.dumps(seed.seed(conninfo, sizes)))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from qlarius_jobs.bench import harness

    return harness.main(
        args.sizes,
        args.output,
        sample=args.sample,
        noop_jobs=args.noop_jobs,
        sync_backlogs=args.sync_backlogs,
        rounds=args.rounds,
        storm_seconds=args.storm_seconds,
        storm_me_files=args.storm_me_files,
        console_jobs=args.console_jobs,
    )


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit every MeFile (or the given ones); exit 1 when drift was found."""
    from qlarius_jobs.jobs import audit

    conninfo = _current_database()

    async def go() -> tuple[audit.Audit, dict[str, int]]:
        async with await psycopg.AsyncConnection.connect(conninfo) as conn:
            result = await audit.audit(conn, args.me_file or None)
            repaired = await audit.repair(conn, result) if args.repair and result.total() else {}
            return result, repaired

    result, repaired = asyncio.run(go())
    report = {
        "me_files": "all" if result.audited is None else result.audited,
        "targets": result.targets,
        **result.counts(),
        "stuck_pending": result.stuck,
        **repaired,
        "examples": {k: v[:10] for k, v in result.found.items()},
    }
    for line in result.stuck_lines(get_settings().stuck_pending_seconds):
        log.warning(line, stuck=result.stuck)  # the line operators alert on
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for kind, words in audit.FINDINGS.items():
            print(f"{words}: {len(result.found.get(kind, []))}")
        for kind, stuck in result.stuck.items():
            print(
                f"pending {kind} rows stuck (older than "
                f"{get_settings().stuck_pending_seconds:g} s): {stuck['rows']}"
                + (f", oldest {stuck['oldest_s']:g} s" if stuck["rows"] else "")
            )
        if repaired:
            print(
                f"repair queued: {repaired['syncs_recorded']} syncs, "
                f"{repaired['reconciles_recorded']} reconciles (the workers apply them)"
            )
        elif sum(result.counts().values()):
            print("run again with --repair to hand these to the workers")
    return 1 if result.total() else 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """List, show, retry, cancel or abort jobs (what Procrastinate's shell did, checked)."""
    from qlarius_jobs.ops import jobs

    if args.action == "list":
        where = jobs.JobFilter(
            queue=args.queue, state=args.state, task=args.task, before=args.before, limit=args.limit
        )
    else:
        id_ = jobs.job_id(args.id)
    conninfo = _current_database()

    async def go() -> Any:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            if args.action == "list":
                return await jobs.list_jobs(conn, where)
            if args.action == "show":
                return await jobs.show_job(conn, id_)
            action = {"retry": jobs.retry_job, "cancel": jobs.cancel_job, "abort": jobs.abort_job}
            await action[args.action](conn, id_)
            return None

    result = asyncio.run(go())
    if args.action == "list":
        if args.json:
            print(json.dumps(result, default=_iso, indent=2))
            return 0
        rows = [
            {
                "id": r["id"],
                "queue": r["queue"],
                "task": r["task"],
                "state": r["state"],
                "attempts": r["attempts"],
                "args": jobs.short_json(r["args"]),
                "last event": _iso(r["last_event_at"]) if r["last_event_at"] else "",
            }
            for r in result
        ]
        print(format_table("Jobs, newest first", rows), end="")
        if len(result) == where.limit:
            print(f"  next page: --before {result[-1]['id']}")
        return 0
    if args.action == "show":
        if args.json:
            print(json.dumps(result, default=_iso, indent=2))
            return 0
        print(f"job #{result['id']}  {result['task']}  queue {result['queue']}  {result['state']}")
        print(
            f"  attempts: {result['attempts']}  lock: {result['lock'] or '-'}  "
            f"queueing lock: {result['queueing_lock'] or '-'}"
        )
        print(f"  arguments: {json.dumps(result['args'], default=str)}")
        print("  events:")
        for event in result["events"]:
            print(f"    {_iso(event['at'])}  {event['type']}")
        print("  errors:" if result["errors"] else "  errors: none")
        for error in result["errors"]:
            print(
                f"    attempt {error['attempt']} at {_iso(error['at'])}: "
                f"{error['error_type']}: {error['message']}"
            )
        return 0
    done = {"retry": "waits again", "cancel": "is cancelled", "abort": "is asked to stop"}
    print(f"job #{id_} {done[args.action]}")
    return 0


def _iso(value: Any) -> Any:
    """JSON for what json does not know: ISO 8601 times, numbers for decimals."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return str(value)


def cmd_faults(args: argparse.Namespace) -> int:
    from qlarius_jobs.dev import faults

    return faults.main(short=args.short)


def cmd_storm(args: argparse.Namespace) -> int:
    from qlarius_jobs.dev import storm

    return storm.main(
        storm.StormConfig(
            seconds=args.seconds,
            workers=args.workers,
            me_files=args.me_files,
            targets=args.targets,
            changers=args.changers,
            kill=not args.no_kill,
            pooler=args.pooler,
        )
    )


def cmd_run(args: argparse.Namespace) -> int:
    """The demo: database, migrations, demo data when empty, the jobs it triggers, workers."""
    from qlarius_jobs.app import build_app
    from qlarius_jobs.dev import seed
    from qlarius_jobs.jobs import catalog
    from qlarius_jobs.worker import runner

    conninfo = _migrated_database()
    if seed.database_is_empty(conninfo):
        seed.seed(conninfo, seed.SeedSizes(me_files=get_settings().demo_me_files))
        asyncio.run(seed.kick_off_demo(conninfo))
    _print_status(conninfo)
    from qlarius_jobs.ops import console

    config = console.config_from_settings(conninfo)
    config.check()
    web = console.server(console.build_console(config), config.host, config.port)
    print(
        f"console: http://{config.host}:{config.port}/ ; workers running on every queue; "
        "Ctrl-C stops them cleanly",
        file=sys.stderr,
    )
    app = build_app(database=lambda: conninfo)
    queues = runner.queues_to_run(catalog.specs())
    work = runner.run_workers(app, queues, graceful_timeout=args.grace)
    asyncio.run(_beside(work, web))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qlarius-jobs",
        description="Run and operate the audience jobs: workers, migrations, status, jobs.",
        epilog="Settings come from QLARIUS_* environment variables (see the README).",
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=None,
        help="log lines as JSON or for people (default: QLARIUS_LOG_FORMAT; auto: console on "
        "a terminal)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="apply Procrastinate's schema and sql/migrations (idempotent)")
    status = sub.add_parser("status", help="NULL-snapshot counts, jobs, backfill runs, errors")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=int, default=10, help="rows of runs and errors")
    db = sub.add_parser("db", help="the embedded PostgreSQL cluster")
    db.add_argument(
        "action",
        choices=["start", "stop", "status", "url"],
        help="start or stop the embedded cluster, say whether it runs, or print its URL",
    )
    run = sub.add_parser("run", help="database, migrations, demo data when empty, workers")
    run.add_argument(
        "--grace",
        type=_seconds,
        default=None,
        help="seconds running jobs get at stop (default: QLARIUS_SHUTDOWN_GRACE_SECONDS)",
    )
    worker = sub.add_parser("worker", help="run workers: every queue, each its own concurrency")
    worker.add_argument(
        "--queues",
        default=None,
        help="e.g. 'targets,offers=4' (default: QLARIUS_QUEUES, "
        "default=10,targets=5,offers=10,maintenance=3)",
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
        help="serve /healthz and /readyz on this port (for a supervisor's probes)",
    )
    worker.add_argument(
        "--health-host", default="0.0.0.0", help="address of the probes (default: every one)"
    )
    web = sub.add_parser("web", help="the operator's console, /metrics, /healthz, /readyz")
    web.add_argument("--host", default=None, help="address (default: QLARIUS_WEB_HOST, 127.0.0.1)")
    web.add_argument(
        "--port", type=_port, default=None, help="port (default: QLARIUS_WEB_PORT, 8000)"
    )
    bench = sub.add_parser("bench", help="benchmarks against baselines, in <db>_bench")
    bench.add_argument(
        "--sizes",
        default="5000,50000,500000",
        help="MeFiles per size, comma separated (populations: about twice)",
    )
    bench.add_argument(
        "--output", type=Path, default=Path("bench-results.json"), help="JSON results file"
    )
    bench.add_argument("--sample", type=int, default=500, help="rows for the row-by-row way")
    bench.add_argument(
        "--noop-jobs", type=int, default=3000, help="no-op jobs per round of the runner row"
    )
    bench.add_argument(
        "--sync-backlogs",
        default="1000,100000",
        help="changed MeFiles a sync drains, per row (capped at the size)",
    )
    bench.add_argument(
        "--storm-seconds", type=float, default=60, help="length of the storm row (0: none)"
    )
    bench.add_argument(
        "--storm-me-files", type=int, default=3000, help="MeFiles of the storm row's data set"
    )
    bench.add_argument(
        "--console-jobs",
        type=int,
        default=1_000_000,
        help="jobs in the table the console row renders against (0: no console row)",
    )
    bench.add_argument("--rounds", type=int, default=3, help="no-op runs per stack (best kept)")
    audit = sub.add_parser(
        "audit",
        help="compare populations, snapshots and offers with a fresh computation (exit 1 on drift)",
    )
    audit.add_argument("--me-file", type=int, action="append", help="only this MeFile (repeatable)")
    audit.add_argument("--repair", action="store_true", help="queue syncs and reconciles for drift")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    jobs_cmd = sub.add_parser(
        "jobs", help="list, show, retry, cancel or abort jobs", description=cmd_jobs.__doc__
    )
    jobs_sub = jobs_cmd.add_subparsers(dest="action", required=True)
    listing = jobs_sub.add_parser("list", help="jobs, newest first, a page at a time")
    listing.add_argument("--queue", help="only this queue")
    listing.add_argument(
        "--state",
        choices=["todo", "doing", "succeeded", "failed", "cancelled", "aborting", "aborted"],
        help="only jobs in this state",
    )
    listing.add_argument("--task", help="only this task")
    listing.add_argument("--before", type=int, help="the page after this job id (keyset)")
    listing.add_argument("--limit", type=int, default=20, help="jobs per page (1-500)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    for action, text in (
        ("show", "a job: arguments, attempts, error history, events"),
        ("retry", "a failed, cancelled or aborted job waits again for one more attempt"),
        ("cancel", "a waiting job is cancelled"),
        ("abort", "a running job is asked to stop"),
    ):
        one = jobs_sub.add_parser(action, help=text)
        one.add_argument("id", help="the job id")
        if action == "show":
            one.add_argument("--json", action="store_true", help="machine-readable output")
    faults = sub.add_parser(
        "faults", help="restart, crash and starve a throwaway server under workers; kill them"
    )
    faults.add_argument("--short", action="store_true", help="shorter outages and waits")
    storm = sub.add_parser(
        "storm", help="concurrent load and a killed worker, then every invariant checked"
    )
    storm.add_argument("--seconds", type=float, default=180.0, help="length of the load")
    storm.add_argument("--workers", type=int, default=3, help="worker processes")
    storm.add_argument("--me-files", type=int, default=3000, help="MeFiles generated")
    storm.add_argument("--targets", type=int, default=4, help="targets generated")
    storm.add_argument(
        "--changers", type=int, default=6, help="concurrent tag-changing transactions"
    )
    storm.add_argument("--no-kill", action="store_true", help="do not kill a worker midway")
    storm.add_argument(
        "--pooler",
        action="store_true",
        help="workers and application through PgBouncer in transaction mode",
    )
    seed_cmd = sub.add_parser("seed", help="generate a data set (set-based, server-side)")
    seed_cmd.add_argument("--me-files", type=int, default=3000, help="MeFiles to generate")
    seed_cmd.add_argument("--parents", type=int, default=30, help="parent traits (questions)")
    seed_cmd.add_argument("--targets", type=int, default=4, help="targets (3 bands each)")
    seed_cmd.add_argument(
        "--campaigns-per-target", type=int, default=1, help="live campaigns bidding on each target"
    )
    seed_cmd.add_argument(
        "--null-share",
        type=float,
        default=0.02,
        help="share of populations, offers, ad events left NULL",
    )
    seed_cmd.add_argument(
        "--ad-event-share", type=float, default=0.2, help="share of offers with an ad event"
    )
    seed_cmd.add_argument(
        "--no-populations",
        action="store_true",
        help="leave targets not populated (no populations, offers, events)",
    )
    return parser


COMMANDS = {
    "migrate": cmd_migrate,
    "status": cmd_status,
    "db": cmd_db,
    "run": cmd_run,
    "worker": cmd_worker,
    "bench": cmd_bench,
    "seed": cmd_seed,
    "storm": cmd_storm,
    "audit": cmd_audit,
    "faults": cmd_faults,
    "jobs": cmd_jobs,
    "web": cmd_web,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configure_logging(fmt=args.log_format)
        return COMMANDS[args.command](args)
    except (connection.DatabaseUnavailable, ValueError) as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"qlarius-jobs: {line}", file=sys.stderr)
        return 2
    except JobActionRefused as exc:
        print(f"qlarius-jobs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
