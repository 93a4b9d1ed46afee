"""``qlarius-jobs``: the operator's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

import psycopg

from qlarius_jobs import database, migrations, sql_files
from qlarius_jobs.logs import configure_logging, get_logger

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


def _ready_database(migrate: bool = True) -> str:
    conninfo = database.ensure_database()
    if migrate:
        migrations.migrate(conninfo)
    return conninfo


def cmd_migrate(args: argparse.Namespace) -> int:
    conninfo = database.ensure_database()
    report = migrations.migrate(conninfo)
    print(
        f"procrastinate schema: {report.procrastinate}; "
        f"applied {len(report.applied)} migration(s): {', '.join(report.applied) or 'none'}"
    )
    return 0


def status_sections(conninfo: str) -> dict[str, list[dict[str, Any]]]:
    with psycopg.connect(conninfo) as conn:
        counts = sql_files.fetch_all_sync(conn, "null_snapshot_counts")
        return {"null_snapshots": counts}


def cmd_status(args: argparse.Namespace) -> int:
    conninfo = _ready_database()
    sections = status_sections(conninfo)
    if args.json:
        print(json.dumps(sections, default=str, indent=2))
        return 0
    titles = {"null_snapshots": "NULL matching_tags_snapshot (should be 0 after the inline fix)"}
    for key, rows in sections.items():
        print(format_table(titles.get(key, key), rows))
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    settings_url = database.get_settings().database_url
    if args.action == "url":
        print(database.conninfo())
        return 0
    if settings_url:
        print(f"DATABASE_URL is set ({database.describe(settings_url)}): nothing to {args.action}")
        return 0
    cluster = database.locate_cluster()
    if args.action == "start":
        database.start_cluster(cluster)
        print(f"embedded PostgreSQL running: {cluster.datadir} (socket {cluster.socket_dir})")
    elif args.action == "stop":
        was = database.stop_cluster(cluster)
        print("embedded PostgreSQL stopped" if was else "embedded PostgreSQL was not running")
    else:
        running = database.is_running(cluster)
        print(f"{'running' if running else 'stopped'}: {cluster.datadir}")
        return 0 if running else 3
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    conninfo = _ready_database()
    for key, rows in status_sections(conninfo).items():
        print(format_table(key, rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qlarius-jobs", description=__doc__)
    parser.add_argument("--log-format", choices=["auto", "json", "console"], default=None)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="apply Procrastinate's schema and sql/migrations (idempotent)")
    status = sub.add_parser("status", help="NULL-snapshot counts, jobs, backfill runs, errors")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    db = sub.add_parser("db", help="the embedded PostgreSQL cluster")
    db.add_argument("action", choices=["start", "stop", "status", "url"])
    sub.add_parser("run", help="start the database, migrate, and run")
    return parser


COMMANDS = {"migrate": cmd_migrate, "status": cmd_status, "db": cmd_db, "run": cmd_run}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(fmt=args.log_format)
    try:
        result = COMMANDS[args.command](args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except database.DatabaseUnavailable as exc:
        print(f"qlarius-jobs: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
