"""What ``qlarius-jobs status`` shows; every section is a view of ``sql/monitoring.sql``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import croniter
import psycopg

from qlarius_jobs import sql_files

SECTION_TITLES = {
    "jobs": "Jobs by queue and state",
    "stalled_jobs": "Stalled jobs (worker heartbeat stopped; rescued automatically)",
    "null_snapshots": "NULL matching_tags_snapshot (should be 0 after the inline fix)",
    "pending_work": "Pending syncs and reconciles (applied by the drains within a second or so)",
    "backfill_runs": "Last backfill runs",
    "periodic": "Periodic schedule",
    "recent_errors": "Recent errors",
}


def _periodic_schedule(conn: psycopg.Connection) -> list[dict[str, Any]]:
    from qlarius_jobs.app import app

    app.perform_import_paths()
    last = {r["task_name"]: r for r in sql_files.fetch_all_sync(conn, "status_periodic")}
    now = dt.datetime.now(dt.UTC)
    rows = []
    for periodic in app.periodic_registry.periodic_tasks.values():
        previous = last.get(periodic.task.name, {})
        rows.append(
            {
                "task_name": periodic.task.name,
                "cron": periodic.cron,
                "next_run": croniter.croniter(periodic.cron, now).get_next(dt.datetime),
                "last_tick": previous.get("last_tick"),
                "last_job_status": previous.get("last_job_status"),
            }
        )
    return sorted(rows, key=lambda r: r["task_name"])


def collect(conninfo: str, limit: int = 10) -> dict[str, list[dict[str, Any]]]:
    with psycopg.connect(conninfo) as conn:
        return {
            "jobs": sql_files.fetch_all_sync(conn, "status_job_counts"),
            "stalled_jobs": sql_files.fetch_all_sync(conn, "status_stalled_jobs"),
            "null_snapshots": sql_files.fetch_all_sync(conn, "null_snapshot_counts"),
            "pending_work": sql_files.fetch_all_sync(conn, "pending_counts"),
            "backfill_runs": sql_files.fetch_all_sync(conn, "status_backfill_runs", limit=limit),
            "periodic": _periodic_schedule(conn),
            "recent_errors": sql_files.fetch_all_sync(conn, "status_recent_errors", limit=limit),
        }
