"""Where a command's database comes from, and the commands about it: db, migrate, status.

Every other command group takes its database from here (``current_database`` or
``migrated_database``), so that all of them agree on the rule."""

from __future__ import annotations

import argparse
import json

from qlarius_jobs.cli.output import format_table, iso
from qlarius_jobs.db import connection, migrate
from qlarius_jobs.settings import get_settings


def database() -> str:
    """The configured database, else the embedded cluster (started if needed)."""
    from qlarius_jobs.app import door_database

    return door_database()


def migrated_database() -> str:
    """For the demo and the generator: the database, started if embedded, and migrated."""
    conninfo = database()
    migrate.migrate(conninfo)
    return conninfo


def current_database() -> str:
    """For everything else: the database as it is. A schema behind this package is refused
    in one line (run `qlarius-jobs migrate`); nothing is changed."""
    conninfo = database()
    migrate.require_current(conninfo)
    return conninfo


def print_status(conninfo: str, limit: int = 10) -> None:
    """The status tables, for `status` and for the demo's start (`run`)."""
    from qlarius_jobs.ops import status

    for key, rows in status.collect(conninfo, limit=limit).items():
        short = [{status.SHORT_TITLES.get(k, k): v for k, v in row.items()} for row in rows]
        print(format_table(status.SECTION_TITLES.get(key, key), short))


def add_migrate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = sub.add_parser(
        "migrate", help="apply Procrastinate's schema and sql/migrations (idempotent)"
    )
    command.set_defaults(handler=cmd_migrate)


def cmd_migrate(args: argparse.Namespace) -> int:
    conninfo = database()
    report = migrate.migrate(conninfo)
    print(
        f"procrastinate schema: {report.procrastinate}; "
        f"applied {len(report.applied)} migration(s): {', '.join(report.applied) or 'none'}"
    )
    return 0


def add_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser("status", help="NULL-snapshot counts, jobs, backfill runs, errors")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=int, default=10, help="rows of runs and errors")
    status.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from qlarius_jobs.ops import status

    conninfo = current_database()
    if args.json:
        print(json.dumps(status.collect(conninfo, limit=args.limit), default=iso, indent=2))
    else:
        print_status(conninfo, limit=args.limit)
    return 0


def add_db(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="the embedded PostgreSQL cluster")
    db.add_argument(
        "action",
        choices=["start", "stop", "status", "url"],
        help="start or stop the embedded cluster, say whether it runs, or print its URL",
    )
    db.set_defaults(handler=cmd_db)


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
