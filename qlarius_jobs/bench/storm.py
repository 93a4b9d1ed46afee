"""Benchmark: the storm's p99 from a tag change's commit to its population being right."""

from __future__ import annotations

import asyncio

from qlarius_jobs.bench.base import BenchConfig, Result
from qlarius_jobs.dev import storm


async def bench_storm(conninfo: str, cfg: BenchConfig) -> None:
    config = storm.StormConfig(
        seconds=cfg.storm_seconds, me_files=cfg.storm_me_files, workers=cfg.storm_workers
    )
    report = await asyncio.to_thread(storm.run_in_fresh_database, config, conninfo)
    cfg.storm_lines = report.lines()
    cfg.results.append(
        Result(
            size=config.me_files,
            populations=0,
            unit="ms",
            benchmark=f"storm ({config.seconds:g} s, {config.workers} workers, 1 killed): "
            "p99 tag change -> population right",
            ours_count=report.sync_lag_p99_ms or 0,
            ours_seconds=1.0,
            target="< 5,000 ms, 0 violations",
            latency=True,
            latency_limit_ms=5000,
            clean=not report.problems(),
        )
    )
