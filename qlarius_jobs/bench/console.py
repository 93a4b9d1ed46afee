"""Benchmark: the console's overview and a jobs page rendered against a job table of
1,000,000 rows (through the ASGI app, as a browser would get them); p95 of each must stay
under 300 ms."""

from __future__ import annotations

import time

import psycopg
from starlette.testclient import TestClient

from qlarius_jobs.bench.base import SQL, BenchConfig, Result
from qlarius_jobs.ops.console import ConsoleConfig, build_console

LIMIT_MS = 300
RENDERS = 40


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def bench_console(conninfo: str, cfg: BenchConfig) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        SQL.execute_sync(conn, "bench_clear_jobs")
        jobs = SQL.count_sync(conn, "bench_fill_job_table", jobs=cfg.console_jobs)
        SQL.count_sync(conn, "bench_fill_recent_events", recent=min(54_000, cfg.console_jobs))
        SQL.execute_sync(conn, "bench_analyze_console_tables")
    app = build_console(ConsoleConfig(conninfo=conninfo, extra_hosts=("testserver",)))
    pages = {
        "overview": "/",
        "jobs page": "/jobs",
        "failed jobs page": "/jobs?state=failed",
    }
    with TestClient(app) as client:
        for name, path in pages.items():
            client.get(path)  # warm: the pool's first connection, the plans
            samples = []
            for _ in range(RENDERS):
                started = time.perf_counter()
                response = client.get(path)
                samples.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text[:500]
            cfg.results.append(
                Result(
                    size=jobs,
                    populations=0,
                    benchmark=f"console: {name}, {jobs:,} jobs, p95 of {RENDERS} renders",
                    unit="ms",
                    ours_count=round(_p95(samples)),
                    ours_seconds=1.0,
                    target=f"< {LIMIT_MS} ms",
                    latency=True,
                    latency_limit_ms=LIMIT_MS,
                )
            )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        SQL.execute_sync(conn, "bench_clear_jobs")
