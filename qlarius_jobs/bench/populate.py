"""Benchmark 2: ``populate_target`` for every target through the worker, against the floor
(one INSERT ... SELECT of the same pairs with a constant snapshot) and the row-by-row way of the
replaced system (a sample)."""

from __future__ import annotations

import time

import psycopg
from procrastinate import App
from psycopg.types.json import Jsonb

from qlarius_jobs.bench.backfill import old_way_snapshot
from qlarius_jobs.bench.base import (
    SQL,
    BenchConfig,
    against_baselines,
    settle_tables,
    timed,
    workers_running,
)
from qlarius_jobs.bench.offers_after_populate import populates_committed


async def _populate_all(app: App, conninfo: str, target_ids: list[int]) -> float:
    """Seconds from the first deferral until every target's populate has committed (each
    target reads ``populated``): the populations, what the baselines write, on the ``targets``
    queue as shipped (concurrency 5), its workers already running. The
    ``settle_target_offers`` pass each populate defers runs on the ``offers`` queue: it has
    its own row (offers_after_populate.py)."""
    async with workers_running(app, conninfo, {"targets": 5}):
        started, committed = await populates_committed(conninfo, target_ids)
    return committed - started


async def bench_populate(app: App, conninfo: str, cfg: BenchConfig, size: int, pops: int) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        targets = SQL.one_sync(conn, "bench_target_ids")
        typical = SQL.one_sync(conn, "bench_typical_snapshot")
        assert targets is not None and typical is not None
        target_ids: list[int] = targets["ids"]
        snapshot = Jsonb(typical["snapshot"])
        sample = SQL.many_sync(
            conn, "bench_sample_memberships", target_ids=target_ids, sample=cfg.sample
        )
        SQL.execute_sync(conn, "bench_clear_populations", target_ids=target_ids)
        SQL.execute_sync(conn, "bench_clear_jobs")
        settle_tables(conn)
        # what every side reads, read once before the first side: none reads a cold cache
        SQL.one_sync(conn, "bench_memberships_with_snapshots", target_ids=target_ids)

    ours_seconds = await _populate_all(app, conninfo, target_ids)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        counted = SQL.one_sync(conn, "bench_population_count")
        inserted = int(counted["n"]) if counted else 0
        SQL.execute_sync(conn, "bench_clear_populations", target_ids=target_ids)
        settle_tables(conn)
        floor_rows, floor_seconds = timed(
            lambda: SQL.count_sync(
                conn, "bench_floor_populate", snapshot=snapshot, target_ids=target_ids
            )
        )
        SQL.execute_sync(conn, "bench_clear_populations", target_ids=target_ids)
        settle_tables(conn)
        _, members_seconds = timed(
            lambda: SQL.one_sync(conn, "bench_memberships_only", target_ids=target_ids)
        )
        _, computed_seconds = timed(
            lambda: SQL.one_sync(conn, "bench_memberships_with_snapshots", target_ids=target_ids)
        )
        same_rows, same_seconds = timed(
            lambda: SQL.count_sync(conn, "bench_same_work_populate", target_ids=target_ids)
        )
        SQL.execute_sync(conn, "bench_clear_populations", target_ids=target_ids)
        settle_tables(conn)
        started = time.perf_counter()
        for pair in sample:
            tags = SQL.many_sync(conn, "bench_old_way_read_tags", **pair)
            SQL.execute_sync(
                conn, "bench_old_way_insert", **pair, snapshot=Jsonb(old_way_snapshot(tags))
            )
        old_seconds = time.perf_counter() - started
        SQL.execute_sync(conn, "bench_clear_populations", target_ids=target_ids)

    await _populate_all(app, conninfo, target_ids)  # populated again for what follows

    common = dict(
        size=size,
        populations=pops,
        benchmark="populate_target (all targets, until the last one commits)",
        unit="rows",
        ours_count=inserted,
        ours_seconds=ours_seconds,
    )
    against_baselines(
        cfg,
        common,
        ("floor: one INSERT ... SELECT, constant JSON", floor_rows, floor_seconds),
        ("row by row: read + insert per row (sample)", len(sample), old_seconds),
        ("same work, no job: one INSERT ... SELECT (snapshot function)", same_rows, same_seconds),
        floor_ratio=0.8,
    )
    ms = {
        "members": members_seconds * 1000,
        "snapshots": (computed_seconds - members_seconds) * 1000,
        "writing": (same_seconds - computed_seconds) * 1000,
    }
    cfg.notes.append(
        f"populate_target, {inserted:,} rows in {ours_seconds * 1000:,.0f} ms ({len(target_ids)} "
        f"jobs). The same work with no job, {same_seconds * 1000:,.0f} ms: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in ms.items())
        + f" (each a SELECT alone, then the INSERT); the jobs around it "
        f"{(ours_seconds - same_seconds) * 1000:,.0f}. The floor, {floor_seconds * 1000:,.0f} ms: "
        f"members {members_seconds * 1000:,.0f}, a constant written "
        f"{(floor_seconds - members_seconds) * 1000:,.0f}"
    )
