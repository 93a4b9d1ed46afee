"""The job-table benchmark's data (job_table.py): a fresh database, and a job table of
millions of finished jobs with their events, errors and results, written set-based
(``sql/queries/bench/bench.sql``, ``bench_jobs_*``)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from qlarius_jobs.bench.base import SQL, timed
from qlarius_jobs.db import migrate
from qlarius_jobs.dev import seed
from qlarius_jobs.logs import get_logger
from qlarius_jobs.ops import controls

log = get_logger(__name__)

# The jobs were deferred over the last DAYS days; the oldest ones (what the prune row deletes)
# before RETENTION_DAYS days ago, the others after.
DAYS, RETENTION_DAYS = 28, 14


def fresh_database(conninfo: str) -> None:
    seed.recreate_database(conninfo)
    migrate.migrate(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn:  # no periodic job measured
        controls.apply_schedules(conn, dict.fromkeys(controls.schedule_names()), "bench")


def fill(conninfo: str, jobs: int, old: int) -> dict[str, float]:
    """The big table, set-based; how long each step took (the README quotes them)."""
    took: dict[str, float] = {}
    ages = {"old": old, "days": DAYS, "old_before_days": RETENTION_DAYS}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        steps: list[tuple[str, Callable[[], object]]] = [
            ("jobs", lambda: SQL.count_sync(conn, "bench_jobs_fill", jobs=jobs)),
            ("drop keys", lambda: SQL.execute_sync(conn, "bench_jobs_fill_drop_keys")),
            ("events", lambda: SQL.count_sync(conn, "bench_jobs_fill_events", **ages)),
            ("analyze", lambda: SQL.execute_sync(conn, "bench_jobs_analyze")),
            ("side tables", lambda: SQL.one_sync(conn, "bench_jobs_fill_side_tables")),
            ("restore keys", lambda: SQL.execute_sync(conn, "bench_jobs_fill_restore_keys")),
            ("vacuum analyze", lambda: SQL.execute_sync(conn, "bench_jobs_vacuum")),
        ]
        for name, step in steps:
            _, seconds = timed(step)
            took[name] = seconds
            log.info("bench-jobs fill", step=name, jobs=jobs, elapsed_ms=int(seconds * 1000))
        size = SQL.one_sync(conn, "bench_jobs_table_size")
    took["bytes"] = float(size["bytes"] if size else 0)
    return took
