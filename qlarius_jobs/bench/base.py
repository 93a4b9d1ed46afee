"""What every benchmark shares: its results, its configuration, its queries (``bench.sql``),
timing, and in-process workers that run until a queue is empty."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import psycopg
from procrastinate import App

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.dev import reference, seed
from qlarius_jobs.worker import runner

SQL = QueryFile.named("bench/bench")


T = TypeVar("T")


@dataclass
class Result:
    size: int
    populations: int
    benchmark: str
    unit: str
    ours_count: int
    ours_seconds: float
    baseline: str = ""
    baseline_count: int = 0
    baseline_seconds: float = 0.0
    target: str = ""
    target_ratio: float | None = None  # ours/baseline must reach this
    target_rate: float | None = None  # and ours must reach this many units a second
    latency: bool = False  # ours_count is a latency in ms (lower is better), not a count
    latency_limit_ms: int | None = None
    clean: bool = True  # for the storm: no invariant broken

    @property
    def ours_rate(self) -> float:
        return self.ours_count / self.ours_seconds if self.ours_seconds else 0.0

    @property
    def baseline_rate(self) -> float:
        return self.baseline_count / self.baseline_seconds if self.baseline_seconds else 0.0

    @property
    def ratio(self) -> float | None:
        return self.ours_rate / self.baseline_rate if self.baseline_rate else None

    @property
    def passed(self) -> bool | None:
        if self.latency:
            return self.clean and self.ours_count < (self.latency_limit_ms or 0)
        if self.target_ratio is None or self.ratio is None:
            return None
        return self.ratio >= self.target_ratio and self.ours_rate >= (self.target_rate or 0)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            ours_rate=round(self.ours_rate, 1),
            baseline_rate=round(self.baseline_rate, 1),
            ratio=None if self.ratio is None else round(self.ratio, 3),
            passed=self.passed,
            us_per_unit=round(1e6 / self.ours_rate, 2) if self.ours_rate else None,
        )
        return data


BENCHMARKS = frozenset({"backfill", "populate", "sync", "runner", "console", "storm"})


@dataclass
class BenchConfig:
    sizes: list[int]
    targets: int = 6
    null_share: float = 0.3
    sample: int = 500
    noop_jobs: int = 3000
    concurrency: int = 10
    runner_processes: int = 2  # worker processes per side in the runner benchmark
    sync_backlogs: tuple[int, ...] = (1000, 100_000)
    rounds: int = 3
    storm_seconds: float = 60.0  # 0: no storm
    storm_me_files: int = 3000
    storm_workers: int = 3
    console_jobs: int = 1_000_000  # 0: no console row
    only: frozenset[str] = BENCHMARKS  # which benchmarks run (--only)
    storm_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # printed under the table
    results: list[Result] = field(default_factory=list)

    def runs(self, name: str) -> bool:
        """Whether benchmark ``name`` is to run (``--only``; storm and console also need their
        sizes above 0)."""
        return name in self.only and (
            (name != "storm" or bool(self.storm_seconds))
            and (name != "console" or bool(self.console_jobs))
        )


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


async def atimed(awaitable: Awaitable[T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = await awaitable
    return value, time.perf_counter() - started


def settle_tables(conn: psycopg.Connection) -> None:
    """Every side of a comparison starts from the same settled tables: vacuumed and analyzed
    (a freshly loaded data set is otherwise vacuumed by autovacuum during whichever side runs
    first: measured, the populate row's jobs ran beside a VACUUM of ``me_file_tags``), then
    checkpointed."""
    SQL.execute_sync(conn, "bench_vacuum_analyze")
    SQL.execute_sync(conn, "bench_checkpoint")


def against_baselines(
    cfg: BenchConfig,
    common: dict[str, Any],
    floor: tuple[str, int, float],
    row_by_row: tuple[str, int, float],
    same_work: tuple[str, int, float] | None = None,
    floor_ratio: float = 0.25,
) -> None:
    """The targets: ``floor_ratio`` of the floor's rate, 100 times the row-by-row way; and,
    without a target, the same computation as one statement with no job around it (what the
    job's own overhead costs)."""
    for (name, count, seconds), target, ratio in (
        (floor, f">= {floor_ratio:g}x", floor_ratio),
        (row_by_row, ">= 100x", 100.0),
    ):
        cfg.results.append(
            Result(
                **common,
                baseline=name,
                baseline_count=count,
                baseline_seconds=seconds,
                target=target,
                target_ratio=ratio,
            )
        )
    if same_work is not None:
        name, count, seconds = same_work
        cfg.results.append(
            Result(**common, baseline=name, baseline_count=count, baseline_seconds=seconds)
        )


def clear_for_a_first_populate(conn: psycopg.Connection, target_ids: list[int]) -> None:
    """The targets as before their first populate: no population, their campaigns no offer
    (a first populate's campaigns wait for it), nothing pending (what this set-up recorded is
    not the populate's: deleting the populations alone leaves a reconcile per MeFile, and the
    drain would withdraw offers while the populates run)."""
    SQL.execute_sync(conn, "bench_clear_populations", target_ids=target_ids)
    SQL.execute_sync(conn, "bench_clear_offers_of_targets", target_ids=target_ids)
    SQL.execute_sync(conn, "bench_forget_all_pending")


OFFER_INVARIANTS = ("missing_offers", "extra_offers", "wrong_offers", "stale_amounts")


def offers_against_reference(conn: psycopg.Connection) -> dict[str, int]:
    """The offer invariants the independent reference finds broken (empty: the offers are
    right). It reads every tag in Python: for data sets up to ~100,000 MeFiles."""
    found = reference.check(conn).as_dict()
    return {k: found[k] for k in OFFER_INVARIANTS if found[k]}


def seed_sizes(me_files: int, targets: int, null_share: float) -> seed.SeedSizes:
    """The data set every benchmark measures: one campaign per target, populated, a share of
    its snapshots NULL, ad events on a fifth of the offers."""
    return seed.SeedSizes(
        me_files=me_files,
        targets=targets,
        campaigns_per_target=1,
        populate=True,
        null_share=null_share,
        ad_event_share=0.2,
    )


def analyze_sync_tables(conninfo: str) -> None:
    """Fresh statistics for the tables a sync reads, before either side of its comparison."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        SQL.execute_sync(conn, "bench_analyze_sync_tables")


def analyze_jobs(conninfo: str) -> None:
    """Fresh statistics for the job table, before either stack drains it."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        SQL.execute_sync(conn, "bench_analyze_jobs")


def worker_env(conninfo: str) -> dict[str, str]:
    return {
        **os.environ,
        "QLARIUS_DATABASE_URL": conninfo,
        "QLARIUS_LOG_FORMAT": "json",
        "QLARIUS_LOG_LEVEL": "WARNING",
    }


async def run_until_done(
    app: App, conninfo: str, queues: dict[str, int], queues_filter: list[str] | None = None
) -> None:
    """In-process workers of ``app`` on ``queues`` until nothing is pending there."""

    for _ in range(1000):
        await runner.run_workers(
            app,
            queues,
            wait=False,
            install_signal_handlers=False,
            fetch_job_polling_interval=0.05,
            periodic=False,
        )
        with psycopg.connect(conninfo) as conn:
            pending = SQL.one_sync(conn, "bench_jobs_pending", queues=queues_filter or list(queues))
            if not pending or not pending["pending"]:
                return
    raise RuntimeError("jobs still pending after the benchmark's worker runs")


@contextlib.asynccontextmanager
async def workers_running(app: App, conninfo: str, queues: dict[str, int]) -> AsyncIterator[None]:
    """In-process workers of ``app`` on ``queues``, started and registered before the block
    runs (as production's workers are up before anything is deferred: a timed side that
    started its workers would time their start too), stopped when it ends."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        last = SQL.one_sync(conn, "bench_last_worker_id")
        assert last is not None
    task = asyncio.create_task(
        runner.run_workers(
            app,
            queues,
            install_signal_handlers=False,
            fetch_job_polling_interval=0.05,
            periodic=False,
        )
    )
    try:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as aconn:
            while True:
                if task.done():
                    task.result()  # its error, if it failed to start
                    raise RuntimeError("the benchmark's workers stopped before they started")
                row = await SQL.one(aconn, "bench_workers_since", after=last["id"])
                if row and row["n"] >= len(queues):
                    break
                await asyncio.sleep(0.02)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
