"""Benchmark 4: the job runner, as whole processes. A burn-down of no-op jobs, inserted in one
statement before any process starts, drained by ``qlarius-jobs worker`` processes (the stack
production runs: the resilient job manager, queue controls, wake-ups, the middleware, a
``JobSpec``'s argument check, time limit, summary log line and recorded counts, and in the
database the lock trigger and outcome counters of our jobs) against ``procrastinate worker``
processes (Procrastinate's own command line, a bare app with a no-op task), on the same
database, the same queue shape (one queue, served by every process), the same concurrency and
pool size; see ``noop.py`` for the two commands.

Measured interval (the table's row says which): from the moment the last of the processes
started its first job to the last job's end, from the job table's events, counting the jobs
that ended in it (process start-up excluded, equally for both); and, as a second row, the
wall time from starting the processes to the last job's end (start-up included). The two
sides alternate over ``cfg.rounds`` rounds; each side's median is kept. Then deferral by batch
against one job at a time.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from qlarius_jobs.app import build_app
from qlarius_jobs.bench import noop
from qlarius_jobs.bench.base import BenchConfig, Result, analyze_jobs, atimed, worker_env
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.logs import get_logger

log = get_logger(__name__)

SQL = QueryFile.of(__file__)

BURN_DOWN_LIMIT_SECONDS = 600.0


@dataclass(frozen=True)
class BurnDown:
    """One side's drain of the no-op jobs: the steady interval (every process working) and
    the wall time from the processes' start."""

    jobs: int
    steady_jobs: int
    steady_seconds: float
    wall_seconds: float


def _commands(ours: bool, concurrency: int) -> list[str]:
    python = sys.executable
    if ours:
        return [
            python,
            "-m",
            "qlarius_jobs.bench.noop",
            "--queues",
            f"{noop.OURS_QUEUE}={concurrency}",
        ]
    procrastinate = str(Path(python).parent / "procrastinate")
    return [
        procrastinate,
        "--app=qlarius_jobs.bench.noop.bare_app",
        "worker",
        "--queues",
        noop.BARE_QUEUE,
        "--concurrency",
        str(concurrency),
    ]


async def burn_down(
    conninfo: str, ours: bool, jobs: int, concurrency: int, processes: int
) -> BurnDown:
    """``jobs`` no-op jobs inserted, then drained by ``processes`` worker processes of one
    side, each serving the side's one queue with ``concurrency``; the processes are stopped
    (SIGTERM) once the queue is empty and the interval read."""
    queue, task = (noop.OURS_QUEUE, noop.OURS_TASK) if ours else (noop.BARE_QUEUE, noop.BARE_TASK)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        SQL.execute_sync(conn, "bench_runner_clear", queues=[noop.OURS_QUEUE, noop.BARE_QUEUE])
        SQL.count_sync(conn, "bench_runner_insert", queue=queue, task=task, jobs=jobs)
    analyze_jobs(conninfo)
    env = {**worker_env(conninfo), "QLARIUS_LOG_LEVEL": "INFO"}  # as production logs
    started = time.perf_counter()
    workers = [
        subprocess.Popen(
            _commands(ours, concurrency),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            while True:
                row = SQL.one_sync(conn, "bench_runner_left", queue=queue)
                if row is not None and not row["left"]:
                    break
                if time.perf_counter() - started > BURN_DOWN_LIMIT_SECONDS or any(
                    w.poll() is not None for w in workers
                ):
                    raise RuntimeError(f"the no-op burn-down on {queue} did not finish")
                await asyncio.sleep(0.02)
            wall = time.perf_counter() - started  # to the poll that saw the queue empty
            window = SQL.one_sync(conn, "bench_runner_window", queue=queue)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=60)
    assert window is not None and window["succeeded"] == jobs, window
    # a tiny burn-down (the tests' 100 jobs) may end within one clock tick of its start
    steady = max((window["last_end"] - window["steady_from"]).total_seconds(), 1e-3)
    log.info(
        "runner burn-down",
        side="ours" if ours else "bare",
        jobs=jobs,
        workers=window["workers"],
        steady_jobs=window["ended_after"],
        steady_ms=int(steady * 1000),
        wall_ms=int(wall * 1000),
    )
    return BurnDown(jobs, int(window["ended_after"]), steady, wall)


async def compare_runners(
    conninfo: str, jobs: int, concurrency: int, processes: int, rounds: int
) -> tuple[list[BurnDown], list[BurnDown]]:
    """Both sides' burn-downs, alternating who goes first, ``rounds`` each: (ours, bare)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        SQL.execute_sync(conn, "bench_runner_count_noop_as_ours")
    runs: dict[bool, list[BurnDown]] = {True: [], False: []}
    for round_ in range(rounds):
        for ours in (True, False) if round_ % 2 == 0 else (False, True):
            runs[ours].append(await burn_down(conninfo, ours, jobs, concurrency, processes))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        SQL.execute_sync(conn, "bench_runner_clear", queues=[noop.OURS_QUEUE, noop.BARE_QUEUE])
    return runs[True], runs[False]


def _median_rate(runs: list[BurnDown], steady: bool) -> tuple[int, float]:
    """(jobs, seconds) whose ratio is the median rate of ``runs``."""
    rate = statistics.median(
        r.steady_jobs / r.steady_seconds if steady else r.jobs / r.wall_seconds for r in runs
    )
    return runs[0].jobs, runs[0].jobs / rate


async def bench_runner(conninfo: str, cfg: BenchConfig, size: int, pops: int) -> None:
    ours, bare = await compare_runners(
        conninfo, cfg.noop_jobs, cfg.concurrency, cfg.runner_processes, cfg.rounds
    )
    shape = (
        f"{cfg.runner_processes} worker process{'es' if cfg.runner_processes > 1 else ''} "
        f"x concurrency {cfg.concurrency}"
    )
    for steady, what in (
        (True, "all processes working -> last job's end"),
        (False, "wall time from process start"),
    ):
        ours_jobs, ours_seconds = _median_rate(ours, steady)
        bare_jobs, bare_seconds = _median_rate(bare, steady)
        cfg.results.append(
            Result(
                size=size,
                populations=pops,
                benchmark=f"no-op jobs, {shape}, {what} (median of {cfg.rounds})",
                unit="jobs",
                ours_count=ours_jobs,
                ours_seconds=ours_seconds,
                baseline="procrastinate worker processes, same database",
                baseline_count=bare_jobs,
                baseline_seconds=bare_seconds,
                target=">= 0.9x" if steady else "",
                target_ratio=0.9 if steady else None,
            )
        )
    await bench_deferral(conninfo, cfg, size, pops)


async def bench_deferral(conninfo: str, cfg: BenchConfig, size: int, pops: int) -> None:
    """Deferral by batch (``batch_defer_async``) against one ``defer_async`` per job."""
    app = build_app([noop.blueprint], database=lambda: conninfo)
    jobs_args = [{"n": i} for i in range(cfg.noop_jobs)]
    single = max(cfg.noop_jobs // 10, 1)
    task = app.configure_task(noop.OURS_TASK)
    async with app.open_async():
        _, batch_seconds = await atimed(task.batch_defer_async(*jobs_args))
        started = time.perf_counter()
        for args in jobs_args[:single]:
            await task.defer_async(**args)
        single_seconds = time.perf_counter() - started
    with psycopg.connect(conninfo, autocommit=True) as conn:
        SQL.execute_sync(conn, "bench_runner_clear", queues=[noop.OURS_QUEUE])
    cfg.results.append(
        Result(
            size=size,
            populations=pops,
            benchmark="deferral: batch_defer",
            unit="jobs",
            ours_count=cfg.noop_jobs,
            ours_seconds=batch_seconds,
            baseline="one defer per job",
            baseline_count=single,
            baseline_seconds=single_seconds,
        )
    )
