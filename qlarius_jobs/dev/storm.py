"""The storm: concurrent load and a killed worker, then a check of every invariant.

``qlarius-jobs storm`` (``make storm``) in a database of its own (``<db>_storm``), and a short
version inside the tests. Several ``qlarius-jobs worker`` processes run while application-like
transactions change tags (each with its notify), re-populate targets, re-offer campaigns and
change bids, record ad events and defer backfills; midway one worker process is killed with
SIGKILL. Then everything drains, and the independent reference (``dev/reference.py``) checks
DOMAIN.md's invariants: populations, snapshots, offers, no stuck or failed job, no deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import conninfo as pg_conninfo

from qlarius_jobs import testing
from qlarius_jobs.db import migrate
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.dev import embedded, pooler, reference, seed
from qlarius_jobs.dev.marketplace import Application, World
from qlarius_jobs.dev.processes import NO_BACKFILL_OR_PRUNE, WorkerProcess
from qlarius_jobs.jobs.catalog import defer_job
from qlarius_jobs.logs import get_logger
from qlarius_jobs.ops import controls

log = get_logger(__name__)

SQL = QueryFile.of(__file__)


@dataclass(frozen=True)
class StormConfig:
    seconds: float = 180.0
    workers: int = 3
    me_files: int = 3000
    targets: int = 4
    changers: int = 6  # application transactions changing tags at the same time
    kill: bool = True
    catch_up_seconds: float = 240.0
    seed: float = 0.42
    # workers and application through a PgBouncer in transaction mode (QLARIUS_BEHIND_POOLER)
    pooler: bool = False


@dataclass
class StormReport:
    config: StormConfig
    counts: dict[str, int] = field(default_factory=dict)
    app_errors: list[str] = field(default_factory=list)
    killed_pid: int | None = None
    load_seconds: float = 0.0
    catch_up_seconds: float | None = None
    syncs_per_second: float = 0.0
    sync_lag_p99_ms: float | None = None  # math.inf: the last bucket (+Inf)
    reconcile_lag_p99_ms: float | None = None
    violations: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    stuck_jobs: int = 0
    failed_jobs: list[str] = field(default_factory=list)
    # periodic ticks that died with the killed worker: failed by the rescue (one attempt),
    # replaced by the next tick; reported, not counted as problems
    ticks_lost: list[str] = field(default_factory=list)
    deadlocks: int | None = None  # None: the server log could not be read
    worker_exits: list[int | None] = field(default_factory=list)
    log_dir: Path | None = None

    def problems(self) -> list[str]:
        found = [f"{name}: {n}" for name, n in self.violations.items() if n]
        if self.catch_up_seconds is None:
            found.append("jobs never caught up")
        if self.stuck_jobs:
            found.append(f"stuck jobs: {self.stuck_jobs}")
        found += [f"failed job: {j}" for j in self.failed_jobs]
        if self.deadlocks:
            found.append(f"deadlocks in the server log: {self.deadlocks}")
        found += [f"application error: {e}" for e in self.app_errors]
        if any(code not in (0, None) for code in self.worker_exits):
            found.append(f"worker exit codes: {self.worker_exits}")
        return found

    def lines(self) -> list[str]:
        c = self.config
        out = [
            f"storm: {c.seconds:g} s of load, {c.workers} worker processes, "
            f"{c.me_files} MeFiles, {c.targets} targets"
            + (", through PgBouncer (transaction mode)" if c.pooler else "")
            + (
                f", worker pid {self.killed_pid} killed with SIGKILL midway"
                if self.killed_pid
                else ""
            ),
            "changes made: " + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())),
            f"syncs: {self.syncs_per_second:.0f} pending changes applied per second; "
            f"p99 from a tag change's commit to its population being right: "
            f"<= {_ms(self.sync_lag_p99_ms)} (reconciles: <= {_ms(self.reconcile_lag_p99_ms)})",
            "caught up "
            + (
                f"{self.catch_up_seconds:.1f} s after the load stopped"
                if self.catch_up_seconds is not None
                else "NEVER"
            ),
            "invariant violations: " + ", ".join(f"{k} {v}" for k, v in self.violations.items()),
            f"jobs stuck in todo/doing: {self.stuck_jobs}; failed jobs: {len(self.failed_jobs)} "
            f"(and {len(self.ticks_lost)} periodic ticks lost with the killed worker); "
            f"deadlocks: {'not checked' if self.deadlocks is None else self.deadlocks}; "
            f"application errors: {len(self.app_errors)}",
        ]
        out += [f"  example: {e}" for e in self.examples[:10]]
        out += [f"  problem: {p}" for p in self.problems()]
        out.append("storm: OK" if not self.problems() else "storm: FAILED")
        return out


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "+Inf" if value == math.inf else f"{value:g} ms"


def storm_conninfo(base: str) -> str:
    """``<db>_storm`` beside the database ``base``."""
    name = pg_conninfo.conninfo_to_dict(base).get("dbname", "qlarius_jobs")
    return pg_conninfo.make_conninfo(base, dbname=f"{name}_storm")


# --- the workers ------------------------------------------------------------------------


def _worker_env(conninfo: str, pooled: bool) -> dict[str, str]:
    return {
        **os.environ,
        "QLARIUS_DATABASE_URL": conninfo,
        "QLARIUS_BEHIND_POOLER": "true" if pooled else "false",
        # behind a pooler workers poll: once a second rather than every 5 s
        "QLARIUS_FETCH_POLLING_SECONDS": "1" if pooled else "5",
        "QLARIUS_LOG_FORMAT": "json",
        "QLARIUS_LOG_LEVEL": os.environ.get("QLARIUS_STORM_WORKER_LOG_LEVEL", "WARNING"),
        # a killed worker's jobs are rescued within seconds
        "QLARIUS_HEARTBEAT_SECONDS": "1",
        "QLARIUS_STALLED_AFTER_SECONDS": "5",
        "QLARIUS_RETRY_BACKOFF_SECONDS": "1",
    }


class Workers:
    """``count`` worker processes, as operators run them."""

    def __init__(self, conninfo: str, count: int, log_dir: Path, pooled: bool = False) -> None:
        env = _worker_env(conninfo, pooled)
        self.processes = [
            WorkerProcess(env=env, log_path=log_dir / f"worker-{i}.log") for i in range(count)
        ]

    def kill_one(self) -> int:
        self.processes[0].kill()
        return self.processes[0].pid

    def stop(self) -> list[int | None]:
        """SIGTERM to all at once, then each one's exit code (None for the one we killed)."""
        for process in self.processes:
            process.terminate()
        codes: list[int | None] = []
        for process in self.processes:
            process.stop()
            # the killed one ended by our SIGKILL: not a worker's own failure
            code = process.returncode
            codes.append(None if code == -signal.SIGKILL else code)
        return codes


# --- the run ------------------------------------------------------------------------------


def _lag_histogram(conn: psycopg.Connection, kind: str) -> dict[float, int]:
    """Bucket upper bound in ms (``math.inf`` for +Inf, as the monitoring view writes it)."""
    rows = SQL.many_sync(conn, "change_lag_histogram", kind=kind)
    return {float(r["le_ms"]): r["changes"] for r in rows}


def _p99(histogram: dict[float, int]) -> float | None:
    total = histogram.get(math.inf, 0)
    if not total:
        return None
    for le, n in sorted(histogram.items()):
        if n >= 0.99 * total:
            return le
    return math.inf


async def _catch_up(conninfo: str, timeout: float) -> float | None:
    """Seconds until nothing is due, running or pending (twice in a row), or None."""
    started = time.monotonic()
    quiet = 0
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while time.monotonic() - started < timeout:
            quiet = quiet + 1 if testing.work_left(conn, later=True) == 0 else 0
            if quiet >= 2:
                return time.monotonic() - started
            await asyncio.sleep(0.5)
    return None


async def run_storm(
    conninfo: str,
    config: StormConfig,
    log_dir: Path | None = None,
    server_log: Path | None = None,
    pooled_conninfo: str | None = None,
) -> StormReport:
    """Run the storm against ``conninfo`` (seeded, migrated) and return its report;
    ``server_log`` (the PostgreSQL log file) is searched for deadlocks. With
    ``pooled_conninfo`` (the same database through a transaction pooler), the workers and the
    application go through it; the checks read ``conninfo`` directly."""
    via = pooled_conninfo or conninfo
    report = StormReport(config=config)
    rng = random.Random(config.seed)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        world = World.load(conn)
        SQL.execute_sync(conn, "reset_change_lag")
    log_start = server_log.stat().st_size if server_log and server_log.exists() else None
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="qlarius-storm-"))
    workers = Workers(via, config.workers, log_dir, pooled=pooled_conninfo is not None)
    try:
        await asyncio.sleep(2)  # the workers start listening
        started = time.monotonic()
        app = Application(via, world, started + config.seconds, rng, config.changers)
        load = asyncio.create_task(app.run())
        if config.kill and config.workers > 1:
            await asyncio.sleep(config.seconds / 2)
            report.killed_pid = workers.kill_one()
            log.info("storm: killed a worker with SIGKILL", pid=report.killed_pid)
        await load
        report.load_seconds = time.monotonic() - started
        report.counts, report.app_errors = app.counts, app.errors
        report.catch_up_seconds = await _catch_up(conninfo, config.catch_up_seconds)
        # legacy rows of the generator: the safety net's last pass, as the hour would bring
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as aconn:
            await defer_job(aconn, "backfill_missing_snapshots")
        if report.catch_up_seconds is not None and await _catch_up(conninfo, 120) is None:
            report.catch_up_seconds = None
        with psycopg.connect(conninfo, autocommit=True) as conn:
            seen_through = int(SQL.one_sync(conn, "last_job_id")["id"])
    finally:
        report.worker_exits = workers.stop()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        syncs = _lag_histogram(conn, "sync")
        report.syncs_per_second = syncs.get(math.inf, 0) / max(report.load_seconds, 1e-9)
        report.sync_lag_p99_ms = _p99(syncs)
        report.reconcile_lag_p99_ms = _p99(_lag_histogram(conn, "reconcile"))
        found = reference.check(conn)
        report.violations, report.examples = found.as_dict(), found.examples
        report.stuck_jobs = int(SQL.one_sync(conn, "stuck_job_count", through_id=seen_through)["n"])
        for job in SQL.many_sync(conn, "failed_jobs"):
            args, error_type = job["args"], job["error_type"]
            text = f"{job['task_name']} #{job['id']} {args}: {error_type} {job['message']}"
            if error_type == "WorkerLost" and "timestamp" in args:
                report.ticks_lost.append(text)
            else:
                report.failed_jobs.append(text)
    if server_log is not None and log_start is not None:
        with server_log.open(errors="replace") as text:
            text.seek(log_start)
            report.deadlocks = sum(1 for line in text if "deadlock detected" in line)
    return report


def apply_storm_schedules(conn: psycopg.Connection) -> None:
    """The storm's schedules: a killed worker's jobs are rescued within seconds (every 2 s;
    stalled after 5 s, see ``_worker_env``); the storm defers backfills itself; no pruning
    mid-check."""
    controls.apply_schedules(
        conn, {**NO_BACKFILL_OR_PRUNE, "rescue_stalled_jobs": "* * * * * */2"}, "storm"
    )


def run_in_fresh_database(config: StormConfig, base: str) -> StormReport:
    """A fresh ``<db>_storm`` beside the database ``base``, seeded and stormed; its report."""
    conninfo = storm_conninfo(base)
    seed.recreate_database(conninfo)
    migrate.migrate(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        apply_storm_schedules(conn)
    seed.seed(
        conninfo,
        seed.SeedSizes(
            me_files=config.me_files, targets=config.targets, campaigns_per_target=2, parents=16
        ),
    )
    log_dir = Path(tempfile.mkdtemp(prefix="qlarius-storm-"))
    with contextlib.ExitStack() as stack:
        pooled = None
        if config.pooler:
            pooled = stack.enter_context(pooler.pgbouncer(conninfo)).conninfo(conninfo)
        report = asyncio.run(
            run_storm(conninfo, config, log_dir, embedded.embedded_server_log(conninfo), pooled)
        )
    report.log_dir = log_dir
    return report


def main(config: StormConfig, base: str) -> int:
    """``qlarius-jobs storm``: prints the report; exits 1 when anything went wrong."""
    report = run_in_fresh_database(config, base)
    for line in report.lines():
        print(line)
    print(f"worker logs: {report.log_dir}")
    return 0 if not report.problems() else 1
