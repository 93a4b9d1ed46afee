"""``qlarius-jobs bench-scale`` (``make bench-scale``): how the cost grows with the data.

For each size (MeFiles), on a copy of a generated data set:

1. the backfill of NULL snapshots, 2. ``populate_target`` of every target, with the offers it
leads to, 3. a sync backlog of a fixed number of changed MeFiles (nothing else pending) — each
taken by one real ``qlarius-jobs worker`` process started for it, whose peak memory (VmHWM) is
read before it stops. Then the per-unit cost at the largest size over the smallest (target:
at most 1.3x), the largest tables on disk, and a chart (``docs/bench-scale.svg``).

Generating 2 million MeFiles takes a quarter of an hour, so each size's data set is kept in a
template database (``<db>_scale_<size>``) that records what generated it and how long it took;
a later run with the same parameters copies it (``CREATE DATABASE ... TEMPLATE``) instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql
from psycopg import conninfo as pg_conninfo
from psycopg.types.json import Jsonb

from qlarius_jobs.bench.base import SQL as BENCH_SQL
from qlarius_jobs.bench.base import (
    clear_for_a_first_populate,
    offers_against_reference,
    seed_sizes,
    worker_env,
)
from qlarius_jobs.db import migrate
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.dev import seed
from qlarius_jobs.logs import get_logger
from qlarius_jobs.ops import controls

log = get_logger(__name__)

SQL = QueryFile.of(__file__)


@dataclass
class Phase:
    """One benchmark at one size: units done, seconds, the worker process's peak memory."""

    name: str
    unit: str
    count: int
    seconds: float
    peak_rss_kib: int
    note: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    @property
    def us_per_unit(self) -> float:
        return 1e6 * self.seconds / self.count if self.count else 0.0


@dataclass
class SizeResult:
    me_files: int
    counts: dict[str, int]
    generated_seconds: float
    reused_data_set: bool
    phases: list[Phase] = field(default_factory=list)
    largest_tables: list[dict[str, Any]] = field(default_factory=list)
    database_bytes: int = 0

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)


@dataclass
class ScaleConfig:
    targets: int = 6
    null_share: float = 0.3
    sync_backlog: int = 10_000
    regenerate: bool = False
    chart: Path | None = Path("docs/bench-scale.svg")

    def seed_sizes(self, me_files: int) -> seed.SeedSizes:
        return seed_sizes(me_files, self.targets, self.null_share)


def _named(conninfo: str, dbname: str) -> str:
    return pg_conninfo.make_conninfo(conninfo, dbname=dbname)


def _admin(conninfo: str) -> str:
    return _named(conninfo, "postgres")


def data_set(conninfo: str, cfg: ScaleConfig, me_files: int) -> tuple[str, dict[str, Any], bool]:
    """The template database holding ``me_files``' data set, generated unless an earlier run
    left one from the same parameters; returns its conninfo, what it records, and whether it
    was reused."""
    base = pg_conninfo.conninfo_to_dict(conninfo).get("dbname", "qlarius_jobs")
    template = _named(conninfo, f"{base}_scale_{me_files}")
    # what generated it: the sizes and the generator's own text (a changed generator, a new set)
    params = {
        **asdict(cfg.seed_sizes(me_files)),
        "generator_md5": hashlib.md5(seed.SQL.path.read_bytes()).hexdigest(),
    }
    if not cfg.regenerate:
        recorded = _recorded_data_set(template)
        if recorded is not None and recorded["params"] == params:
            return template, recorded, True
    seed.recreate_database(template)
    migrate.migrate(template)
    started = time.monotonic()
    counts = seed.seed(template, cfg.seed_sizes(me_files))
    generated = time.monotonic() - started
    with psycopg.connect(template, autocommit=True) as conn:
        SQL.execute_sync(conn, "scale_create_data_set_table")
        SQL.execute_sync(
            conn,
            "scale_record_data_set",
            params=Jsonb(params),
            counts=Jsonb(counts),
            generated_seconds=generated,
        )
    return template, {"params": params, "counts": counts, "generated_seconds": generated}, False


def _recorded_data_set(template: str) -> dict[str, Any] | None:
    try:
        with psycopg.connect(template, autocommit=True) as conn:
            SQL.execute_sync(conn, "scale_create_data_set_table")
            return SQL.one_sync(conn, "scale_data_set")
    except psycopg.OperationalError:  # no such database yet
        return None


def copy_of(template: str, target: str) -> None:
    """``target`` recreated as a file copy of ``template`` (seconds, not a regeneration)."""
    src = psycopg.sql.Identifier(pg_conninfo.conninfo_to_dict(template)["dbname"])
    dst = psycopg.sql.Identifier(pg_conninfo.conninfo_to_dict(target)["dbname"])
    with psycopg.connect(_admin(target), autocommit=True) as conn:
        # Composed: database names are identifiers, never parameters.
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(dst))
        conn.execute(
            psycopg.sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY = FILE_COPY").format(dst, src)
        )


@asynccontextmanager
async def worker_process(conninfo: str, queues: str | None) -> AsyncIterator[WorkerProcess]:
    """A real ``qlarius-jobs worker`` process on ``queues``, up and registered when entered."""
    process = WorkerProcess(conninfo, queues)
    try:
        await process.started()
        yield process
    finally:
        process.stop()


class WorkerProcess:
    def __init__(self, conninfo: str, queues: str | None) -> None:
        exe = str(Path(sys.executable).parent / "qlarius-jobs")
        self.conninfo = conninfo
        self.popen = subprocess.Popen(
            [exe, "worker", *(["--queues", queues] if queues else [])],
            env=worker_env(conninfo),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def started(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            for _ in range(600):
                if self.popen.poll() is not None:
                    raise RuntimeError(f"the worker process exited {self.popen.returncode}")
                row = BENCH_SQL.one_sync(conn, "bench_worker_count")
                if row and row["n"]:
                    return
                await asyncio.sleep(0.1)
        raise RuntimeError("the worker process did not register within a minute")

    def peak_rss_kib(self) -> int:
        """The process's high-water mark of resident memory (its children: none)."""
        try:
            with open(f"/proc/{self.popen.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


async def wait_until(conninfo: str, started: float, done: Any, poll: float = 0.05) -> float:
    """Seconds from ``started`` until ``done(work_left_row)`` holds, polling the work left."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while True:
            row = SQL.one_sync(conn, "scale_work_left")
            assert row is not None
            if done(row):
                return time.perf_counter() - started
            await asyncio.sleep(poll)


def _nothing_left(row: dict[str, Any]) -> bool:
    return not (row["jobs"] or row["syncs"] or row["reconciles"])


def _jobs_done(row: dict[str, Any]) -> bool:
    return not row["jobs"]


def _syncs_done(row: dict[str, Any]) -> bool:
    return not (row["jobs"] or row["syncs"])


def _count(conninfo: str, row_of: Any) -> int:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = row_of(conn)
    assert row is not None
    return int(next(iter(row.values())))


def _clean_slate(conninfo: str) -> None:
    """No finished job left from the phase before, fresh statistics and visibility maps."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        BENCH_SQL.execute_sync(conn, "bench_clear_jobs")
        BENCH_SQL.execute_sync(conn, "bench_vacuum_analyze")


async def backfill_phase(conninfo: str) -> Phase:
    """The hourly safety net on the data set's NULL snapshots (populations, offers, events)."""
    from qlarius_jobs.jobs.backfill import backfill_missing_snapshots

    async with worker_process(conninfo, QUEUES) as worker:
        started = time.perf_counter()
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as aconn:
            await backfill_missing_snapshots.defer(aconn)
        seconds = await wait_until(conninfo, started, _jobs_done)
        peak = worker.peak_rss_kib()
    rows = _count(conninfo, lambda c: BENCH_SQL.one_sync(c, "bench_updated_by_backfill"))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = BENCH_SQL.one_sync(conn, "bench_backfill_phase_ms")
    # where the run's time went, as the job measured it (ms, summed over its chunk jobs)
    phases = ", ".join(f"{k} {v:,}" for k, v in (row["phase_ms"] if row else {}).items() if v)
    return Phase("backfill", "rows", rows, seconds, peak, f"default queues; ms: {phases}")


async def populate_phases(conninfo: str, me_files: int) -> list[Phase]:
    """A first populate of every target (``clear_for_a_first_populate``), then
    ``populate_target`` of each: the populations' rows per second until the last populate's
    commit (targets ``populated``), then the seconds from that commit until the offers are
    settled (each populate's ``settle_target_offers`` pass, then whatever it left to the
    reconcile drain), the offers checked against the reference up to the size it reads in
    reasonable time."""
    from qlarius_jobs.jobs.populations import populate_target

    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = BENCH_SQL.one_sync(conn, "bench_target_ids")
        assert row is not None
        target_ids: list[int] = row["ids"] or []
        clear_for_a_first_populate(conn, target_ids)
    _clean_slate(conninfo)
    async with worker_process(conninfo, QUEUES) as worker:
        started = time.perf_counter()
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as aconn:
            for target_id in target_ids:
                await populate_target.defer(aconn, target_id=target_id)
        populated = await wait_until(conninfo, started, _populations_done)
        settled = await wait_until(conninfo, time.perf_counter(), _nothing_left)
        peak = worker.peak_rss_kib()
    rows = _count(conninfo, lambda c: BENCH_SQL.one_sync(c, "bench_population_count"))
    offers = _count(conninfo, lambda c: BENCH_SQL.one_sync(c, "bench_offer_count"))
    return [
        Phase("populate", "rows", rows, populated, peak, "every target, until its commit"),
        Phase(
            "offers settled",
            "s",
            rows,
            settled,
            peak,
            f"from the last populate's commit until no reconcile is pending; {offers:,} offers"
            + _offers_checked(conninfo, me_files),
        ),
    ]


def _offers_checked(conninfo: str, me_files: int) -> str:
    """Whether the settled offers equal the independent reference's: the bench measures right
    offers, not just quiet queues (a difference fails the run)."""
    from qlarius_jobs.bench.offers_after_populate import REFERENCE_MAX_ME_FILES

    if me_files > REFERENCE_MAX_ME_FILES:
        return " (not checked against the reference at this size)"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        wrong = offers_against_reference(conn)
    if wrong:
        raise RuntimeError(f"offers after the populates differ from the reference: {wrong}")
    return ", equal to the reference's"


def _populations_done(row: dict[str, Any]) -> bool:
    return not row["unpopulated"]  # every populate's population transaction has committed


QUEUES: str | None = None  # the worker's default queues: what production runs
SYNC_ROUNDS = 3


async def sync_phase(conninfo: str, backlog: int, rounds: int = SYNC_ROUNDS) -> Phase:
    """``backlog`` MeFiles' tags changed in one commit while nothing else is pending, drained
    by one worker process already up (woken by the change, as in production); ``rounds``
    times, other MeFiles each time, the median kept (one round lasts a second or two, within
    this machine's noise)."""
    _clean_slate(conninfo)
    timings: list[tuple[float, int]] = []
    async with worker_process(conninfo, QUEUES) as worker:
        for _ in range(rounds):
            await wait_until(conninfo, time.perf_counter(), _nothing_left)
            with psycopg.connect(conninfo, autocommit=True) as conn:
                changed = BENCH_SQL.many_sync(conn, "bench_change_tags", count=backlog)
            started = time.perf_counter()  # the change has committed: the drain may start
            seconds = await wait_until(conninfo, started, _syncs_done)
            timings.append((seconds, len({r["me_file_id"] for r in changed})))
        peak = worker.peak_rss_kib()
        await wait_until(conninfo, time.perf_counter(), _nothing_left)  # reconciles, untimed
    seconds, count = sorted(timings)[len(timings) // 2]
    rates = ", ".join(f"{n / t:,.0f}" for t, n in timings)
    return Phase(
        "sync", "MeFiles", count, seconds, peak, f"nothing else pending; median of {rates}/s"
    )


async def measure_size(conninfo: str, cfg: ScaleConfig, me_files: int) -> SizeResult:
    template, recorded, reused = data_set(conninfo, cfg, me_files)
    copy_of(template, conninfo)
    migrate.migrate(conninfo)  # migrations newer than the data set
    with psycopg.connect(conninfo, autocommit=True) as conn:  # no periodic job measured
        controls.apply_schedules(conn, dict.fromkeys(controls.schedule_names()), "bench")
    result = SizeResult(
        me_files=me_files,
        counts={k: int(v) for k, v in recorded["counts"].items()},
        generated_seconds=float(recorded["generated_seconds"]),
        reused_data_set=reused,
    )
    _clean_slate(conninfo)
    result.phases.append(await backfill_phase(conninfo))
    result.phases.extend(await populate_phases(conninfo, me_files))
    result.phases.append(await sync_phase(conninfo, min(cfg.sync_backlog, me_files // 2)))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        result.largest_tables = SQL.many_sync(conn, "scale_largest_tables", limit=6)
        row = SQL.one_sync(conn, "scale_database_bytes")
        result.database_bytes = int(row["bytes"]) if row else 0
    log.info(
        "bench-scale size measured",
        me_files=me_files,
        **{f"{p.name.replace(' ', '_')}_per_s": round(p.rate, 1) for p in result.phases},
    )
    return result


def main(sizes: Sequence[int], output: Path, cfg: ScaleConfig) -> int:
    from qlarius_jobs.bench import scale_report
    from qlarius_jobs.bench.harness import bench_conninfo, point_app_at

    conninfo = bench_conninfo()
    point_app_at(conninfo)
    results = []
    for me_files in sorted(sizes):
        results.append(asyncio.run(measure_size(conninfo, cfg, me_files)))
    print(scale_report.format_scale(results))
    output.write_text(json.dumps(scale_report.results_json(results), indent=2, default=str))
    if cfg.chart is not None:
        scale_report.draw_chart(results, cfg.chart)
        print(f"chart written to {cfg.chart}")
    print(f"JSON written to {output}")
    return 0
