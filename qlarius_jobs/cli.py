"""``qlarius-jobs``: the operator's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from qlarius_jobs.db import connection, migrate
from qlarius_jobs.logs import configure_logging, get_logger
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


def _ready_database() -> str:
    """The database, started if it is the embedded one, and migrated."""
    conninfo = connection.ready_conninfo()
    migrate.migrate(conninfo)
    return conninfo


def _print_status(conninfo: str, limit: int = 10) -> None:
    from qlarius_jobs.ops import status

    for key, rows in status.collect(conninfo, limit=limit).items():
        print(format_table(status.SECTION_TITLES.get(key, key), rows))


def cmd_migrate(args: argparse.Namespace) -> int:
    conninfo = connection.ready_conninfo()
    report = migrate.migrate(conninfo)
    print(
        f"procrastinate schema: {report.procrastinate}; "
        f"applied {len(report.applied)} migration(s): {', '.join(report.applied) or 'none'}"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from qlarius_jobs.ops import status

    conninfo = _ready_database()
    if args.json:
        print(json.dumps(status.collect(conninfo, limit=args.limit), default=str, indent=2))
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
    from qlarius_jobs.jobs import runner

    queues = runner.parse_queues(args.queues)
    conninfo = _ready_database()
    runner.fit_pool_to_connections(conninfo, queues)
    try:
        asyncio.run(
            runner.run_workers(queues, wait=not args.until_empty, graceful_timeout=args.grace)
        )
    except runner.WorkersStopped as exc:
        print(f"qlarius-jobs: worker stopped: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from qlarius_jobs.dev import seed

    conninfo = _ready_database()
    sizes = seed.SeedSizes(
        me_files=args.me_files,
        parents=args.parents,
        targets=args.targets,
        campaigns_per_target=args.campaigns_per_target,
        populate=not args.no_populations,
        null_share=args.null_share,
        ad_event_share=args.ad_event_share,
    )
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
    )


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit every MeFile (or the given ones); exit 1 when drift was found."""
    from qlarius_jobs.jobs import audit

    conninfo = _ready_database()

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
        **repaired,
        "examples": {k: v[:10] for k, v in result.found.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for kind, words in audit.FINDINGS.items():
            print(f"{words}: {len(result.found.get(kind, []))}")
        if repaired:
            print(
                f"repair queued: {repaired['syncs_recorded']} syncs, "
                f"{repaired['reconciles_recorded']} reconciles (the workers apply them)"
            )
        elif result.total():
            print("run again with --repair to hand these to the workers")
    return 1 if result.total() else 0


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
        )
    )


def cmd_run(args: argparse.Namespace) -> int:
    """The demo: database, migrations, demo data when empty, the jobs it triggers, workers."""
    from qlarius_jobs.dev import seed
    from qlarius_jobs.jobs import runner

    conninfo = _ready_database()
    if seed.database_is_empty(conninfo):
        seed.seed(conninfo, seed.SeedSizes(me_files=get_settings().demo_me_files))
        asyncio.run(seed.kick_off_demo())
    _print_status(conninfo)
    print("workers running on every queue; Ctrl-C stops them cleanly", file=sys.stderr)
    asyncio.run(runner.run_workers(runner.configured_queues(), graceful_timeout=args.grace))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qlarius-jobs", description=__doc__)
    parser.add_argument("--log-format", choices=["auto", "json", "console"], default=None)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "migrate", help="apply Procrastinate's schema and qlarius_jobs/db/migrations (idempotent)"
    )
    status = sub.add_parser("status", help="NULL-snapshot counts, jobs, backfill runs, errors")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=int, default=10, help="rows of runs and errors")
    db = sub.add_parser("db", help="the embedded PostgreSQL cluster")
    db.add_argument("action", choices=["start", "stop", "status", "url"])
    run = sub.add_parser("run", help="database, migrations, demo data when empty, workers")
    run.add_argument(
        "--grace",
        type=float,
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
        type=float,
        default=None,
        help="seconds running jobs get at stop (default: QLARIUS_SHUTDOWN_GRACE_SECONDS)",
    )
    worker.add_argument("--until-empty", action="store_true", help="stop once the queues are empty")
    bench = sub.add_parser("bench", help="benchmarks against baselines, in <db>_bench")
    bench.add_argument(
        "--sizes",
        default="5000,50000,500000",
        help="MeFiles per size, comma separated (populations: about twice)",
    )
    bench.add_argument("--output", type=Path, default=Path("bench-results.json"))
    bench.add_argument("--sample", type=int, default=500, help="rows for the row-by-row way")
    bench.add_argument("--noop-jobs", type=int, default=3000)
    bench.add_argument(
        "--sync-backlogs",
        default="1000,100000",
        help="changed MeFiles a sync drains, per row (capped at the size)",
    )
    bench.add_argument(
        "--storm-seconds", type=float, default=60, help="length of the storm row (0: none)"
    )
    bench.add_argument("--storm-me-files", type=int, default=3000)
    bench.add_argument("--rounds", type=int, default=3, help="no-op runs per stack (best kept)")
    audit = sub.add_parser(
        "audit",
        help="compare populations, snapshots and offers with a fresh computation (exit 1 on drift)",
    )
    audit.add_argument("--me-file", type=int, action="append", help="only this MeFile (repeatable)")
    audit.add_argument("--repair", action="store_true", help="queue syncs and reconciles for drift")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    faults = sub.add_parser(
        "faults", help="restart, crash and starve a throwaway server under workers; kill them"
    )
    faults.add_argument("--short", action="store_true", help="shorter outages and waits")
    storm = sub.add_parser(
        "storm", help="concurrent load and a killed worker, then every invariant checked"
    )
    storm.add_argument("--seconds", type=float, default=180.0, help="length of the load")
    storm.add_argument("--workers", type=int, default=3, help="worker processes")
    storm.add_argument("--me-files", type=int, default=3000)
    storm.add_argument("--targets", type=int, default=4)
    storm.add_argument(
        "--changers", type=int, default=6, help="concurrent tag-changing transactions"
    )
    storm.add_argument("--no-kill", action="store_true", help="do not kill a worker midway")
    seed_cmd = sub.add_parser("seed", help="generate a data set (set-based, server-side)")
    seed_cmd.add_argument("--me-files", type=int, default=3000)
    seed_cmd.add_argument("--parents", type=int, default=30, help="parent traits (questions)")
    seed_cmd.add_argument("--targets", type=int, default=4)
    seed_cmd.add_argument("--campaigns-per-target", type=int, default=1)
    seed_cmd.add_argument(
        "--null-share",
        type=float,
        default=0.02,
        help="share of populations, offers, ad events left NULL",
    )
    seed_cmd.add_argument("--ad-event-share", type=float, default=0.2)
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
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configure_logging(fmt=args.log_format)
        return COMMANDS[args.command](args)
    except (connection.DatabaseUnavailable, ValueError) as exc:
        print(f"qlarius-jobs: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
