"""What ``qlarius-jobs status`` shows; every section is a view of ``sql/monitoring.sql``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import croniter
import psycopg

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs import catalog
from qlarius_jobs.settings import get_settings

SQL = QueryFile.of(__file__)

SECTION_TITLES = {
    "jobs": "Jobs by queue and state",
    "stalled_jobs": "Stalled jobs (worker heartbeat stopped; rescued automatically)",
    "null_snapshots": "NULL matching_tags_snapshot (should be 0 after the inline fix)",
    "pending_work": "Pending syncs and reconciles (applied by the drains within a second or so)",
    "backfill_runs": "Last backfill runs",
    "periodic": "Periodic schedule",
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


def periodic_schedule(conn: psycopg.Connection) -> list[dict[str, Any]]:
    settings = get_settings()
    last = {r["task_name"]: r for r in SQL.many_sync(conn, "status_periodic")}
    now = dt.datetime.now(dt.UTC)
    rows = []
    for spec in catalog.specs().values():
        if spec.schedule is None:
            continue
        cron = spec.schedule(settings)
        previous = last.get(spec.name, {})
        rows.append(
            {
                "task_name": spec.name,
                "cron": cron,
                "next_run": croniter.croniter(cron, now).get_next(dt.datetime),
                "last_tick": previous.get("last_tick"),
                "last_job_status": previous.get("last_job_status"),
            }
        )
    return sorted(rows, key=lambda r: r["task_name"])


def collect(conninfo: str, limit: int = 10) -> dict[str, list[dict[str, Any]]]:
    with psycopg.connect(conninfo) as conn:
        return {
            "jobs": SQL.many_sync(conn, "status_job_counts"),
            "stalled_jobs": SQL.many_sync(conn, "status_stalled_jobs"),
            "null_snapshots": SQL.many_sync(conn, "status_null_snapshots"),
            "pending_work": SQL.many_sync(conn, "pending_counts"),
            "backfill_runs": SQL.many_sync(conn, "status_backfill_runs", limit=limit),
            "periodic": periodic_schedule(conn),
            "recent_errors": SQL.many_sync(conn, "status_recent_errors", limit=limit),
        }
