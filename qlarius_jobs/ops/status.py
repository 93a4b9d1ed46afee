"""What ``qlarius-jobs status`` shows; every section is a view of ``sql/monitoring.sql``."""

from __future__ import annotations

from typing import Any

import psycopg

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.ops import controls

SQL = QueryFile.of(__file__)

SECTION_TITLES = {
    "jobs": "Jobs by queue and state",
    "stalled_jobs": "Stalled jobs (worker heartbeat stopped; rescued automatically)",
    "null_snapshots": "NULL matching_tags_snapshot (should be 0 after the inline fix)",
    "pending_work": "Pending syncs and reconciles (applied by the drains within a second or so)",
    "backfill_runs": "Last backfill runs",
    "schedules": "Schedules (qlarius_schedules; times in UTC)",
    "queues": "Queues (qlarius_queue_controls)",
    "paused": "Paused (no new job starts; schedules defer no tick)",
    "recent_errors": "Recent errors",
}


# Column titles of the text tables (``--json`` keeps the full names).
SHORT_TITLES = {
    "found_populations": "found_pop",
    "found_ad_events": "found_events",
    "updated_populations": "upd_pop",
    "updated_offers": "upd_offers",
    "updated_ad_events": "upd_events",
    "budget_exhausted": "out_of_time",
    "oldest_pending_seconds": "oldest_s",
}


def schedules(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Each schedule of ``qlarius_schedules``: its cron, whether enabled, its next run, its
    last tick and that tick's job."""
    return [
        {
            "task_name": row["task_name"],
            "cron": row["cron"],
            "enabled": row["enabled"],
            "next_run": row["next_runs"][0] if row["next_runs"] else None,
            "last_tick": row["last_deferred_at"],
            "last_job_status": row["last_job_status"],
        }
        for row in controls.schedules(conn)
    ]


def queues(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return [
        {k: row[k] for k in ("queue_name", "paused", "concurrency", "waiting", "running")}
        for row in controls.queues(conn)
    ]


def paused(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """What is paused (``qlarius_paused``): each queue, task and schedule, since when, by
    whom."""
    return SQL.many_sync(conn, "status_paused")


def collect(conninfo: str, limit: int = 10) -> dict[str, list[dict[str, Any]]]:
    with psycopg.connect(conninfo) as conn:
        return {
            "jobs": SQL.many_sync(conn, "status_job_counts"),
            "stalled_jobs": SQL.many_sync(conn, "status_stalled_jobs"),
            "null_snapshots": SQL.many_sync(conn, "status_null_snapshots"),
            "pending_work": SQL.many_sync(conn, "pending_counts"),
            "backfill_runs": SQL.many_sync(conn, "status_backfill_runs", limit=limit),
            "schedules": schedules(conn),
            "queues": queues(conn),
            "paused": paused(conn),
            "recent_errors": SQL.many_sync(conn, "status_recent_errors", limit=limit),
        }
