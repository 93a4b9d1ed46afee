"""``GET /metrics``: Prometheus metrics read from the database at each scrape, so that one
scrape covers every worker process on every machine (nothing is kept in this process).

- ``qlarius_jobs{queue,state}``: jobs by queue and state, a series for every queue known (the
  catalog's, the controls', the job table's) and every state: 0 when none. Waiting and
  running: exact; the finished states of a table past ``QLARIUS_JOB_COUNTS_EXACT_BELOW`` rows:
  estimates from the planner's statistics (migration 0025).
- ``qlarius_job_counts_estimated``: 1 when this scrape's finished states are such estimates.
- ``qlarius_oldest_waiting_job_seconds{queue}``: age of the oldest due, waiting job; 0 when none.
- ``qlarius_stalled_jobs``: running jobs whose worker stopped heartbeating.
- ``qlarius_pending_work{kind}``, ``qlarius_pending_work_waiting_for_a_target{kind}``,
  ``qlarius_pending_work_oldest_seconds{kind}``: pending syncs and reconciles, those left
  for a target a job holds, and the age of the oldest (0 when none). A drain applies a change
  within a second or so: an oldest age of minutes means the drains are stuck.
- ``qlarius_null_snapshots{table}``: the seed note's three counts.
- ``qlarius_backfill_rows_fixed{table}``: rows the backfill fixed, over the runs kept.
- ``qlarius_job_outcomes_total{task,outcome}``: a counter of how our jobs ended (succeeded,
  failed, aborted; retried: an attempt failed and the job waits for another; cancelled before
  it started), kept in the database (migration 0017): every worker, across restarts and prunes.
- ``qlarius_job_duration_seconds{task,outcome}``: a cumulative histogram of how long those
  attempts took (not the cancels), kept in the database beside the counter.
- ``qlarius_audit_drift{kind}``, ``qlarius_audit_me_files``, ``qlarius_audit_timestamp_seconds``:
  what the latest drift audit found, by kind, in how many MeFiles, and when (0 when none ran).
- ``qlarius_database_up``: 1 when the scrape read the database; 0 when it could not (then
  nothing else: /metrics still answers 200, so that an alert can say the database is down).
- ``qlarius_read_database_up``, ``qlarius_read_replica_lag_seconds``,
  ``qlarius_read_replica_replay_paused``: only when ``QLARIUS_READ_DATABASE_URL`` names a
  standby, which every other metric is then read from: 1 when the scrape read it, 0 when it
  could not (then nothing else read from it; ``qlarius_database_up`` is then whether the
  primary answers); how far behind it is (0 while it streams and has replayed all it received,
  else now minus the commit time of the last transaction it replayed; no sample while it has
  replayed none since it started) and 1 while replay is paused.
- ``qlarius_queue_paused{queue}``, ``qlarius_task_paused{task}``: 1 when paused, 0 when not,
  a series for every row of ``qlarius_queue_controls`` and ``qlarius_task_controls``.
- ``qlarius_schedule_enabled{task}``: 1 when the schedule is enabled, 0 when paused.
- ``qlarius_schedule_last_tick_timestamp_seconds{task}``: the schedule's latest tick in the
  ticks' ledger (cron or run now), as a Unix time; 0 when it never ticked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs import audit, catalog
from qlarius_jobs.logs import get_logger
from qlarius_jobs.ops import console_db
from qlarius_jobs.ops.jobs import STATES
from qlarius_jobs.settings import get_settings
from qlarius_jobs.snapshots import SNAPSHOT_TABLES

log = get_logger(__name__)

SQL = QueryFile.of(__file__)

Row = dict[str, Any]


@dataclass
class Readings:
    """What one scrape read; empty, every family still comes out (with no series, or zeros)."""

    jobs: list[Row] = field(default_factory=list)
    oldest: list[Row] = field(default_factory=list)
    stalled: Row | None = None
    pending: list[Row] = field(default_factory=list)
    nulls: Row | None = None
    fixed: Row | None = None
    outcomes: list[Row] = field(default_factory=list)
    durations: list[Row] = field(default_factory=list)
    last_audit: Row | None = None
    queues_paused: list[Row] = field(default_factory=list)
    tasks_paused: list[Row] = field(default_factory=list)
    schedules: list[Row] = field(default_factory=list)
    replica: Row | None = None  # the read server's lag (console_db.replica_status)


def read(conninfo: str) -> Readings:
    """One short read-only transaction; raises ``psycopg.Error`` when the database is away."""
    tasks = sorted(catalog.specs())
    with console_db.read_only(conninfo) as conn:
        return Readings(
            jobs=SQL.many_sync(
                conn, "jobs_by_queue_and_state", exact_below=get_settings().job_counts_exact_below
            ),
            oldest=SQL.many_sync(conn, "oldest_waiting_jobs"),
            stalled=SQL.one_sync(conn, "metrics_stalled"),
            pending=SQL.many_sync(conn, "pending_work"),
            nulls=SQL.one_sync(conn, "null_snapshot_counts"),
            fixed=SQL.one_sync(conn, "metrics_backfill_fixed"),
            outcomes=SQL.many_sync(conn, "metrics_job_outcomes", tasks=tasks),
            durations=SQL.many_sync(conn, "metrics_job_durations", tasks=tasks),
            last_audit=SQL.one_sync(conn, "metrics_last_audit"),
            queues_paused=SQL.many_sync(conn, "metrics_queues_paused"),
            tasks_paused=SQL.many_sync(conn, "metrics_tasks_paused"),
            schedules=SQL.many_sync(conn, "metrics_schedules"),
            replica=console_db.replica_status(conn),
        )


class DatabaseCollector(Collector):
    """Every metric, from one short read-only transaction per scrape, on the standby when one
    is configured (``read_conninfo``); while the database read is away, its ``..._up 0``
    alone (and, with a standby, whether the primary answers)."""

    def __init__(self, conninfo: str, read_conninfo: str | None = None) -> None:
        self.conninfo = conninfo
        self.read_conninfo = read_conninfo

    def collect(self) -> Iterator[Metric]:
        standby = self.read_conninfo is not None
        if standby:
            yield _database_up(int(console_db.primary_up(self.conninfo)))
        try:
            readings = read(self.read_conninfo or self.conninfo)
        except psycopg.Error as exc:
            log.warning(
                "metrics: database unavailable", standby=standby, error=str(exc).strip()[:300]
            )
            yield _read_database_up(0) if standby else _database_up(0)
            return
        if standby:
            yield _read_database_up(1)
            yield from _replica(readings.replica or {})
        else:
            yield _database_up(1)
        yield from families(readings)


def _database_up(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "qlarius_database_up", "1 when this scrape read the database, 0 when it could not", value
    )


def _read_database_up(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "qlarius_read_database_up",
        "1 when this scrape read the read server (QLARIUS_READ_DATABASE_URL), 0 when it could not",
        value,
    )


def _replica(status: Row) -> Iterator[GaugeMetricFamily]:
    lag = GaugeMetricFamily(
        "qlarius_read_replica_lag_seconds",
        "0 while the read server streams and replayed all it received, else now minus the "
        "commit time of the last transaction it replayed (no sample: none since it started)",
    )
    if status.get("lag_seconds") is not None:
        lag.add_metric([], float(status["lag_seconds"]))
    yield lag
    yield GaugeMetricFamily(
        "qlarius_read_replica_replay_paused",
        "1 while the read server's replay is paused",
        float(bool(status.get("paused"))),
    )


def families(r: Readings) -> Iterator[Metric]:
    """The metric families of one scrape's readings."""
    queues = sorted(
        {*catalog.queues(), *(row["queue"] for row in r.queues_paused)}
        | {row["queue"] for row in r.jobs}
        | {row["queue"] for row in r.oldest}
    )
    counts = {(row["queue"], row["state"]): row["jobs"] for row in r.jobs}
    states = [s for s in STATES if s != "aborting"]  # legacy, never set since Procrastinate 3
    states += sorted({state for _, state in counts} - set(states))
    family = GaugeMetricFamily("qlarius_jobs", "Jobs by queue and state", labels=["queue", "state"])
    for queue in queues:
        for state in states:
            family.add_metric([queue, state], counts.get((queue, state), 0))
    yield family
    yield GaugeMetricFamily(
        "qlarius_job_counts_estimated",
        "1 when qlarius_jobs' finished states are estimates (a large job table), 0 when exact",
        int(any(row["estimated"] for row in r.jobs)),
    )
    waited = {row["queue"]: row["waiting_seconds"] or 0.0 for row in r.oldest}
    family = GaugeMetricFamily(
        "qlarius_oldest_waiting_job_seconds",
        "Age of the oldest due waiting job, 0 when none waits",
        labels=["queue"],
    )
    for queue in queues:
        family.add_metric([queue], waited.get(queue, 0.0))
    yield family
    yield GaugeMetricFamily(
        "qlarius_stalled_jobs",
        "Running jobs whose worker stopped heartbeating",
        value=(r.stalled or {}).get("jobs", 0),
    )
    yield from _pending(r.pending)
    family = GaugeMetricFamily(
        "qlarius_null_snapshots", "Rows whose matching_tags_snapshot is NULL", labels=["table"]
    )
    for table in SNAPSHOT_TABLES:
        family.add_metric([table], (r.nulls or {}).get(table, 0))
    yield family
    family = GaugeMetricFamily(
        "qlarius_backfill_rows_fixed",
        "Rows the backfill fixed, over the backfill runs kept",
        labels=["table"],
    )
    for table in SNAPSHOT_TABLES:
        family.add_metric([table], (r.fixed or {}).get(table, 0))
    yield family
    counter = CounterMetricFamily(
        "qlarius_job_outcomes",
        "How our jobs ended, per task and outcome, since the counters began",
        labels=["task", "outcome"],
    )
    for row in r.outcomes:
        counter.add_metric([row["task"], row["outcome"]], float(row["jobs"]))
    yield counter
    yield _durations(r.durations)
    yield from _audit(r.last_audit)
    yield from _controls(r.queues_paused, r.tasks_paused, r.schedules)


def _audit(last: Row | None) -> Iterator[GaugeMetricFamily]:
    family = GaugeMetricFamily(
        "qlarius_audit_drift", "What the latest drift audit found, by kind", labels=["kind"]
    )
    for kind in audit.FINDINGS:
        family.add_metric([kind], float((last or {}).get(kind, 0)))
    yield family
    yield GaugeMetricFamily(
        "qlarius_audit_me_files",
        "MeFiles the latest drift audit sampled, 0 when none ran",
        float((last or {}).get("audited_me_files", 0)),
    )
    yield GaugeMetricFamily(
        "qlarius_audit_timestamp_seconds",
        "When the latest drift audit's run started, as a Unix time, 0 when none ran",
        float((last or {}).get("at", 0)),
    )


def _pending(rows: list[Row]) -> Iterator[GaugeMetricFamily]:
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
    queues: list[Row], tasks: list[Row], schedules: list[Row]
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


def _durations(rows: list[Row]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "qlarius_job_duration_seconds",
        "How long our jobs' attempts took, per task and outcome, since the counters began",
        labels=["task", "outcome"],
    )
    grouped: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        grouped.setdefault((row["task"], row["outcome"]), []).append(row)
    for (task, outcome), bounds in grouped.items():
        buckets = [(_le(b["le"]), b["below"]) for b in bounds]  # the last is +Inf
        family.add_metric([task, outcome], buckets, sum_value=bounds[-1]["seconds"])
    return family


def _le(value: float) -> str:
    return floatToGoString(
        value
    )  # "+Inf" too  # "1.0", "0.05": as client libraries write bucket bounds


def registry(conninfo: str, read_conninfo: str | None = None) -> CollectorRegistry:
    """A registry holding only the database's metrics (not this process's own), read from
    ``read_conninfo`` when given (a standby), else from ``conninfo``."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DatabaseCollector(conninfo, read_conninfo))
    return reg
