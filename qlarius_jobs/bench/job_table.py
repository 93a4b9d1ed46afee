"""``qlarius-jobs bench-jobs`` (``make bench-jobs``): this project against a job table of
millions of finished jobs, as Oban's, River's and Procrastinate's users see theirs slow down at
5-13 million rows (issue 21).

In ``<db>_bench`` (``conninfo``) the table gets ``jobs`` finished jobs, set-based, in a few
statements: deferred one after the other over four weeks, mostly succeeded, some failed (three
attempts, their error history) or cancelled, a share of them another application's, with their
``procrastinate_events`` and our results. Then, each figure against a baseline from the same run:

1. fetch throughput: ``worker.runner.run_workers`` draining no-op jobs on the big table against
   the same on an empty one (``<db>_bench_empty``), alternating, best of each (>= 0.8x);
2. the console's overview, jobs and failed-jobs pages (p95 < 300 ms) and ``/metrics``
   (p95 < 500 ms), through the ASGI app;
3. ``prune_finished_jobs`` deleting the ``prune`` oldest jobs (retention 14 days), while a runner
   drains no-op jobs and the overview is rendered again and again: the runner's rate and the
   overview's p95 during the prune against the same load without it.

``bench_job_table`` returns ``Result`` rows (the harness's table and JSON format them).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from procrastinate import App
from psycopg import conninfo as pg_conninfo
from starlette.testclient import TestClient

from qlarius_jobs.app import build_app
from qlarius_jobs.bench import noop
from qlarius_jobs.bench.base import SQL, Result
from qlarius_jobs.bench.job_fill import RETENTION_DAYS, fill, fresh_database
from qlarius_jobs.jobs import maintenance
from qlarius_jobs.logs import get_logger
from qlarius_jobs.ops.console import ConsoleConfig, build_console
from qlarius_jobs.settings import get_settings
from qlarius_jobs.worker import runner

log = get_logger(__name__)

PAGES = {  # name: (path, p95 limit in ms)
    "overview": ("/", 300),
    "jobs page": ("/jobs", 300),
    "failed jobs page": ("/jobs?state=failed", 300),
    "/metrics": ("/metrics", 500),
}


@dataclass
class JobTableConfig:
    jobs: int = 10_000_000
    prune: int = 1_000_000  # the oldest jobs, past the retention (capped at half the table)
    noop_jobs: int = 3000
    concurrency: int = 10
    rounds: int = 2
    renders: int = 40
    results: list[Result] = field(default_factory=list)


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _sibling(conninfo: str, suffix: str) -> str:
    name = pg_conninfo.conninfo_to_dict(conninfo).get("dbname", "qlarius_jobs")
    return pg_conninfo.make_conninfo(conninfo, dbname=f"{name}{suffix}")


async def _drain(app: App, queue: str, concurrency: int) -> None:
    await runner.run_workers(
        app,
        {queue: concurrency},
        wait=False,
        install_signal_handlers=False,
        fetch_job_polling_interval=0.05,
        periodic=False,
    )


async def _timed_drain(app: App, conninfo: str, cfg: JobTableConfig) -> float:
    """Defer ``noop_jobs`` no-op jobs, then the seconds one runner takes to run them all."""
    await app.configure_task(noop.OURS_TASK).batch_defer_async(
        *({"n": i} for i in range(cfg.noop_jobs))
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        SQL.execute_sync(conn, "bench_analyze_jobs")
    started = time.perf_counter()
    await _drain(app, noop.OURS_QUEUE, cfg.concurrency)
    return time.perf_counter() - started


class Renders:
    """A thread rendering one console page again and again until stopped: its latencies."""

    def __init__(self, conninfo: str, path: str) -> None:
        self.conninfo, self.path = conninfo, path
        self.samples: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        app = build_console(ConsoleConfig(conninfo=self.conninfo, extra_hosts=("testserver",)))
        with TestClient(app) as client:
            client.get(self.path)  # warm
            while not self.stop.is_set():
                started = time.perf_counter()
                response = client.get(self.path)
                self.samples.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text[:500]

    def __enter__(self) -> Renders:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _pages(conninfo: str, cfg: JobTableConfig) -> None:
    app = build_console(ConsoleConfig(conninfo=conninfo, extra_hosts=("testserver",)))
    with TestClient(app) as client:
        for name, (path, limit) in PAGES.items():
            client.get(path)  # warm: the pool's first connection, the plans
            samples = []
            for _ in range(cfg.renders):
                started = time.perf_counter()
                response = client.get(path)
                samples.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text[:500]
            cfg.results.append(
                _latency(cfg, f"{name}, p95 of {cfg.renders} renders", samples, limit)
            )


def _latency(cfg: JobTableConfig, what: str, samples: list[float], limit: int) -> Result:
    return Result(
        size=cfg.jobs,
        populations=0,
        benchmark=f"job table of {cfg.jobs:,}: {what}",
        unit="ms",
        ours_count=max(1, round(_p95(samples))),
        ours_seconds=1.0,
        target=f"< {limit} ms",
        latency=True,
        latency_limit_ms=limit,
    )


async def _fetch_rates(
    big: App, empty: App, conninfo: str, empty_conninfo: str, cfg: JobTableConfig
) -> None:
    best = {"big": float("inf"), "empty": float("inf")}
    for round_ in range(cfg.rounds):  # alternate who goes first; keep each one's best
        order = ["big", "empty"] if round_ % 2 == 0 else ["empty", "big"]
        for which in order:
            app, info = (big, conninfo) if which == "big" else (empty, empty_conninfo)
            best[which] = min(best[which], await _timed_drain(app, info, cfg))
    cfg.results.append(
        Result(
            size=cfg.jobs,
            populations=0,
            benchmark=f"job table of {cfg.jobs:,}: no-op jobs fetched and run, "
            f"concurrency {cfg.concurrency}",
            unit="jobs",
            ours_count=cfg.noop_jobs,
            ours_seconds=best["big"],
            baseline="the same runner, empty job table",
            baseline_count=cfg.noop_jobs,
            baseline_seconds=best["empty"],
            target=">= 0.8x",
            target_ratio=0.8,
        )
    )


async def _under_load(
    app: App, conninfo: str, cfg: JobTableConfig, prune: asyncio.Task[None] | None
) -> tuple[float, int, list[float]]:
    """Runner drains (at least one; while the prune runs, until it ends) with the overview
    rendered meanwhile: (seconds, jobs run, overview latencies)."""
    seconds, ran = 0.0, 0
    with Renders(conninfo, "/") as overview:
        while True:
            seconds += await _timed_drain(app, conninfo, cfg)
            ran += cfg.noop_jobs
            if prune is None or prune.done():
                break
    return seconds, ran, overview.samples


async def _prune(app: App, conninfo: str, cfg: JobTableConfig) -> None:
    without = await _under_load(app, conninfo, cfg, None)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        before = SQL.one_sync(conn, "bench_jobs_finished")
    await app.configure_task("prune_finished_jobs").defer_async()
    started = time.perf_counter()
    ended: list[float] = []
    prune = asyncio.create_task(_drain(app, "maintenance", 1))
    prune.add_done_callback(lambda _: ended.append(time.perf_counter()))
    during = await _under_load(app, conninfo, cfg, prune)
    await prune
    prune_seconds = ended[0] - started
    with psycopg.connect(conninfo, autocommit=True) as conn:
        after = SQL.one_sync(conn, "bench_jobs_finished")
    deleted = int(before["n"]) - int(after["n"]) if before and after else 0
    log.info("bench-jobs prune", deleted=deleted, elapsed_ms=int(prune_seconds * 1000))
    common = {"size": cfg.jobs, "populations": 0}
    cfg.results += [
        Result(
            **common,
            benchmark=f"job table of {cfg.jobs:,}: prune_finished_jobs, {deleted:,} deleted",
            unit="jobs",
            ours_count=deleted,
            ours_seconds=prune_seconds,
        ),
        Result(
            **common,
            benchmark=f"job table of {cfg.jobs:,}: no-op jobs during the prune",
            unit="jobs",
            ours_count=during[1],
            ours_seconds=during[0],
            baseline="the same load, no prune",
            baseline_count=without[1],
            baseline_seconds=without[0],
            target=">= 0.8x",
            target_ratio=0.8,
        ),
        _latency(cfg, "overview p95 during the prune", during[2], 300),
        _latency(cfg, "overview p95, same load without the prune", without[2], 300),
    ]


def bench_job_table(conninfo: str, cfg: JobTableConfig) -> list[Result]:
    """Every row of this benchmark, measured in ``conninfo`` (recreated) and a sibling
    ``<db>_empty`` (the empty table's baseline); appended to ``cfg.results`` and returned."""
    empty_conninfo = _sibling(conninfo, "_empty")
    os.environ.update(  # the prune row: every state past the same retention
        QLARIUS_DATABASE_URL=conninfo,
        QLARIUS_PRUNE_AFTER_DAYS=str(RETENTION_DAYS),
        QLARIUS_PRUNE_BATCH_SIZE=os.environ.get("QLARIUS_PRUNE_BATCH_SIZE", "1000"),
    )
    get_settings.cache_clear()
    for info in (conninfo, empty_conninfo):
        fresh_database(info)
    old = min(cfg.prune, cfg.jobs // 2)
    took = fill(conninfo, cfg.jobs, old)
    fill_seconds = sum(v for k, v in took.items() if k != "bytes")
    cfg.results.append(
        Result(
            size=cfg.jobs,
            populations=0,
            benchmark=f"job table of {cfg.jobs:,}: fill (jobs, events, errors, results, "
            f"vacuum; {took['bytes'] / 2**30:.1f} GiB)",
            unit="jobs",
            ours_count=cfg.jobs,
            ours_seconds=fill_seconds,
        )
    )
    blueprints = [noop.blueprint, maintenance.blueprint]

    async def measure() -> None:
        # they run workers in this process: a worker process's apps
        big = build_app(blueprints, database=lambda: conninfo, worker_process=True)
        empty = build_app(blueprints, database=lambda: empty_conninfo, worker_process=True)
        async with big.open_async(), empty.open_async():
            await _fetch_rates(big, empty, conninfo, empty_conninfo, cfg)
            await asyncio.to_thread(_pages, conninfo, cfg)
            await _prune(big, conninfo, cfg)

    asyncio.run(measure())
    return cfg.results


def main(cfg: JobTableConfig, output: Path) -> int:
    """The CLI's door: every row, as ``make bench``'s table, and its JSON in ``output``."""
    from qlarius_jobs.bench import harness

    conninfo = harness.bench_conninfo()
    started = time.monotonic()
    results = bench_job_table(conninfo, cfg)
    print(harness.format_results(results))
    data = harness.results_json(results, conninfo)
    data["load_average"] = os.getloadavg()
    data["elapsed_seconds"] = round(time.monotonic() - started)
    output.write_text(json.dumps(data, indent=2, default=str))
    print(
        f"\nmachine: {data['machine']['cpus']} cpus, {data['machine']['cpu']}, "
        f"PostgreSQL {data['machine']['postgresql']}, load average at the end "
        f"{data['load_average'][0]:.1f}; JSON written to {output}"
    )
    return 0
