"""``GET /metrics``: Prometheus metrics read from the database at each scrape, so that one
scrape covers every worker process on every machine (nothing is kept in this process).

- ``qlarius_jobs{queue,state}``: jobs by queue and state.
- ``qlarius_oldest_waiting_job_seconds{queue}``: age of the oldest due, waiting job.
- ``qlarius_stalled_jobs``: running jobs whose worker stopped heartbeating.
- ``qlarius_pending_work{kind}``, ``qlarius_pending_work_waiting_for_a_target{kind}``,
  ``qlarius_pending_work_oldest_seconds{kind}``: pending syncs and reconciles, those left
  for a target a job holds, and the age of the oldest (0 when none). A drain applies a change
  within a second or so: an oldest age of minutes means the drains are stuck.
- ``qlarius_null_snapshots{table}``: the seed note's three counts.
- ``qlarius_backfill_rows_fixed{table}``: rows the backfill fixed, over the runs kept.
- ``qlarius_job_duration_seconds{task,outcome}``: a gauge histogram of how long the jobs that
  ended in the last hour took, by task and outcome (succeeded, failed, aborted).
- ``qlarius_queue_paused{queue}``, ``qlarius_task_paused{task}``: 1 when paused, 0 when not,
  a series for every row of ``qlarius_queue_controls`` and ``qlarius_task_controls``.
- ``qlarius_schedule_enabled{task}``: 1 when the schedule is enabled, 0 when paused.
- ``qlarius_schedule_last_tick_timestamp_seconds{task}``: the schedule's latest tick in the
  ticks' ledger (cron or run now), as a Unix time; 0 when it never ticked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.snapshots import SNAPSHOT_TABLES

SQL = QueryFile.of(__file__)

DURATION_BOUNDS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 1800.0)


class DatabaseCollector(Collector):
    """Every metric, from one short read-only transaction per scrape."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo

    def collect(self) -> Iterator[Any]:
        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
            jobs = SQL.many_sync(conn, "jobs_by_queue_and_state")
            oldest = SQL.many_sync(conn, "oldest_waiting_jobs")
            stalled = SQL.one_sync(conn, "metrics_stalled")
            pending = SQL.many_sync(conn, "pending_work")
            nulls = SQL.one_sync(conn, "null_snapshot_counts")
            fixed = SQL.one_sync(conn, "metrics_backfill_fixed")
            durations = SQL.many_sync(conn, "metrics_durations", bounds=list(DURATION_BOUNDS))
            queues_paused = SQL.many_sync(conn, "metrics_queues_paused")
            tasks_paused = SQL.many_sync(conn, "metrics_tasks_paused")
            schedules = SQL.many_sync(conn, "metrics_schedules")
        family = GaugeMetricFamily(
            "qlarius_jobs", "Jobs by queue and state", labels=["queue", "state"]
        )
        for row in jobs:
            family.add_metric([row["queue"], row["state"]], row["jobs"])
        yield family
        family = GaugeMetricFamily(
            "qlarius_oldest_waiting_job_seconds",
            "Age of the oldest due waiting job",
            labels=["queue"],
        )
        for row in oldest:
            family.add_metric([row["queue"]], row["waiting_seconds"] or 0.0)
        yield family
        yield GaugeMetricFamily(
            "qlarius_stalled_jobs",
            "Running jobs whose worker stopped heartbeating",
            value=(stalled or {}).get("jobs", 0),
        )
        yield from _pending(pending)
        family = GaugeMetricFamily(
            "qlarius_null_snapshots", "Rows whose matching_tags_snapshot is NULL", labels=["table"]
        )
        for table in SNAPSHOT_TABLES:
            family.add_metric([table], (nulls or {}).get(table, 0))
        yield family
        family = GaugeMetricFamily(
            "qlarius_backfill_rows_fixed",
            "Rows the backfill fixed, over the backfill runs kept",
            labels=["table"],
        )
        for table in SNAPSHOT_TABLES:
            family.add_metric([table], (fixed or {}).get(table, 0))
        yield family
        yield _durations(durations)
        yield from _controls(queues_paused, tasks_paused, schedules)


def _pending(rows: list[dict[str, Any]]) -> Iterator[GaugeMetricFamily]:
    for name, column, text in (
        ("qlarius_pending_work", "pending", "Pending syncs and reconciles"),
        (
            "qlarius_pending_work_waiting_for_a_target",
            "waiting_for_a_target",
            "Pending rows left for a target a populate or offers job holds",
        ),
        ("qlarius_pending_work_oldest_seconds", "oldest_s", "Age of the oldest pending row"),
    ):
        family = GaugeMetricFamily(name, text, labels=["kind"])
        for row in rows:
            family.add_metric([row["kind"]], float(row[column] or 0))
        yield family


def _controls(
    queues: list[dict[str, Any]], tasks: list[dict[str, Any]], schedules: list[dict[str, Any]]
) -> Iterator[GaugeMetricFamily]:
    """The queue and task pauses and the schedules (``qlarius_queue_controls``,
    ``qlarius_task_controls``, ``qlarius_schedules``): a series for every row."""
    for name, text, label, rows, column in (
        ("qlarius_queue_paused", "1 when the queue is paused", "queue", queues, "paused"),
        ("qlarius_task_paused", "1 when the task is paused", "task", tasks, "paused"),
        ("qlarius_schedule_enabled", "1 when enabled, 0 when paused", "task", schedules, "enabled"),
        (
            "qlarius_schedule_last_tick_timestamp_seconds",
            "The schedule's latest tick (cron or run now) as a Unix time, 0 when never",
            "task",
            schedules,
            "last_tick",
        ),
    ):
        family = GaugeMetricFamily(name, text, labels=[label])
        for row in rows:
            family.add_metric([row[label]], float(row[column]))
        yield family


def _durations(rows: list[dict[str, Any]]) -> GaugeHistogramMetricFamily:
    family = GaugeHistogramMetricFamily(
        "qlarius_job_duration_seconds",
        "How long the jobs that ended in the last hour took, by task and outcome",
        labels=["task", "outcome"],
    )
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row["task"], row["outcome"]), []).append(row)
    for (task, outcome), bounds in grouped.items():
        buckets = [(_le(b["le"]), float(b["below"])) for b in bounds]
        buckets.append(("+Inf", float(bounds[0]["jobs"])))
        family.add_metric([task, outcome], buckets, gsum_value=float(bounds[0]["seconds"] or 0))
    return family


def _le(value: float) -> str:
    return floatToGoString(value)  # "1.0", "0.05": as client libraries write bucket bounds


def registry(conninfo: str) -> CollectorRegistry:
    """A registry holding only the database's metrics (not this process's own)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DatabaseCollector(conninfo))
    return reg
