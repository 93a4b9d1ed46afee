"""Benchmark 3: a backlog of changed MeFiles drained by one worker process (the drain job, in
batches), against the floor: one set-based apply of the same MeFiles' changes, all at once.

Measured with nothing else pending: whatever earlier benchmarks left (a populate's reconciles,
the offers jobs of its campaigns) is drained first, so the syncs compete with nothing."""

from __future__ import annotations

import time

import psycopg
from procrastinate import App

from qlarius_jobs import snapshots
from qlarius_jobs.bench.base import SQL, BenchConfig, Result, analyze_sync_tables, run_until_done


async def bench_sync(app: App, conninfo: str, cfg: BenchConfig, size: int, pops: int) -> None:
    for backlog in sorted({min(n, size) for n in cfg.sync_backlogs}):
        await run_until_done(app, conninfo, {"targets": 5, "offers": 10, "default": 2})
        with psycopg.connect(conninfo, autocommit=True) as conn:
            left = SQL.one_sync(conn, "bench_jobs_pending", queues=["targets", "offers", "default"])
            assert left is not None and not left["pending"], "work left before the sync row"
            changed = sorted(
                {r["me_file_id"] for r in SQL.many_sync(conn, "bench_change_tags", count=backlog)}
            )
            targets = [r["target_id"] for r in SQL.many_sync(conn, "bench_synced_targets")]
        analyze_sync_tables(conninfo)
        started = time.perf_counter()
        await run_until_done(app, conninfo, {"targets": 5}, queues_filter=["targets"])
        seconds = time.perf_counter() - started
        await run_until_done(app, conninfo, {"offers": 10})  # the reconciles the syncs recorded
        # the floor: the same MeFiles change again, applied in one statement
        with psycopg.connect(conninfo, autocommit=True) as conn:
            SQL.execute_sync(conn, "bench_change_tags_of", me_file_ids=changed)
            SQL.execute_sync(conn, "bench_forget_pending")
        analyze_sync_tables(conninfo)
        async with await psycopg.AsyncConnection.connect(conninfo) as aconn:
            started = time.perf_counter()
            await snapshots.apply_band_memberships(aconn, targets, changed)
            await aconn.commit()
            floor_seconds = time.perf_counter() - started
        await run_until_done(app, conninfo, {"offers": 10})
        cfg.results.append(
            Result(
                size=size,
                populations=pops,
                unit="MeFiles",
                benchmark=f"sync, backlog of {len(changed):,} changed MeFiles, 1 worker process, "
                "nothing else pending",
                ours_count=len(changed),
                ours_seconds=seconds,
                baseline="floor: one apply of all of them at once",
                baseline_count=len(changed),
                baseline_seconds=floor_seconds,
                target=">= 0.5x and >= 2,000/s",
                target_ratio=0.5,
                target_rate=2000,
            )
        )
