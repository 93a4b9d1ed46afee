"""Benchmark 1: the backfill of NULL snapshots (populations, offers, ad events).

Ours: the real ``backfill_missing_snapshots`` job, chunked, taken by one ``qlarius-jobs
worker`` process running one job at a time (``--queues maintenance=1``: the job's own pace),
by one process as shipped (the maintenance queue at its configured concurrency, 3: its chunk
jobs side by side) and by two such processes. Baselines: the floor (one plain UPDATE per
table writing a constant snapshot of median size), the same work with no job (one UPDATE per
table through the snapshot function) and the row-by-row way of the replaced system (one query
to read the tags and one update per row, on a sample).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from qlarius_jobs.bench.base import (
    SQL,
    BenchConfig,
    Result,
    against_baselines,
    settle_tables,
    timed,
    worker_env,
)
from qlarius_jobs.jobs.backfill import backfill_missing_snapshots
from qlarius_jobs.settings import Settings, parse_queue_spec
from qlarius_jobs.snapshots import SNAPSHOT_TABLES

# the maintenance queue's concurrency in QLARIUS_QUEUES's default: what a worker runs as shipped
SHIPPED_CONCURRENCY = parse_queue_spec(Settings.model_fields["queues"].default)["maintenance"]
ONE_AT_A_TIME = "1 worker process, one job at a time"
SHIPPED = f"1 worker process as shipped (maintenance concurrency {SHIPPED_CONCURRENCY})"
# row label -> (processes, ``worker --queues``)
RUNS = {
    ONE_AT_A_TIME: (1, "maintenance=1"),
    SHIPPED: (1, f"maintenance={SHIPPED_CONCURRENCY}"),
    "2 worker processes as shipped": (2, f"maintenance={SHIPPED_CONCURRENCY}"),
}


def old_way_snapshot(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The replaced system's way: build one snapshot in the application, from its own query."""
    parents: dict[int, list[Any]] = {}
    for r in rows:
        entry = parents.setdefault(
            r["parent_id"], [r["parent_id"], r["parent_name"], r["parent_order"], []]
        )
        entry[3].append([r["child_id"], r["value"], r["child_order"]])
    for entry in parents.values():
        entry[3].sort(key=lambda c: (c[2], c[0]))
    return {"tags": sorted(parents.values(), key=lambda e: (e[2], e[0]))}


def _saved(table: str) -> dict[str, str]:
    return {"table": table, "saved": f"bench_null_{table}"}


def reset_nulls(conninfo: str) -> None:
    """The rows that were NULL before a measurement are NULL again; no job, no run left."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for table in SNAPSHOT_TABLES:
            SQL.execute_sync(conn, "bench_reset_null_rows", tables=_saved(table))
        SQL.execute_sync(conn, "bench_clear_jobs")
        SQL.execute_sync(conn, "bench_clear_backfill_runs")
        settle_tables(conn)


async def bench_backfill(conninfo: str, cfg: BenchConfig, size: int, pops: int) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for table in SNAPSHOT_TABLES:
            SQL.execute_sync(conn, "bench_save_null_rows", tables=_saved(table))
        typical = SQL.one_sync(conn, "bench_typical_snapshot")
        assert typical is not None
        snapshot = Jsonb(typical["snapshot"])
        settle_tables(conn)

    with psycopg.connect(conninfo, autocommit=True) as conn:
        floor_rows, floor_seconds = 0, 0.0
        for table in SNAPSHOT_TABLES:
            rows, seconds = timed(
                lambda t=table: SQL.count_sync(
                    conn, "bench_floor_fill", tables={"table": t}, snapshot=snapshot
                )
            )
            floor_rows, floor_seconds = floor_rows + rows, floor_seconds + seconds
    reset_nulls(conninfo)

    with psycopg.connect(conninfo, autocommit=True) as conn:
        _, compute_seconds = timed(
            lambda: SQL.one_sync(conn, "bench_compute_null_population_snapshots")
        )
        same_rows, same_seconds = timed(
            lambda: SQL.count_sync(conn, "bench_same_work_fill_populations")
        )
        same_populations_seconds = same_seconds
        for table in SNAPSHOT_TABLES[1:]:
            rows, seconds = timed(
                lambda t=table: SQL.count_sync(
                    conn, "bench_same_work_fill_copies", tables={"table": t}
                )
            )
            same_rows, same_seconds = same_rows + rows, same_seconds + seconds
    reset_nulls(conninfo)

    with psycopg.connect(conninfo, autocommit=True) as conn:
        sample = SQL.many_sync(conn, "bench_sample_null_populations", sample=cfg.sample)
        started = time.perf_counter()
        for row in sample:
            tags = SQL.many_sync(
                conn,
                "bench_old_way_read_tags",
                me_file_id=row["me_file_id"],
                band_id=row["target_band_id"],
            )
            SQL.execute_sync(
                conn, "bench_old_way_update", id=row["id"], snapshot=Jsonb(old_way_snapshot(tags))
            )
        old_seconds = time.perf_counter() - started
    reset_nulls(conninfo)

    runs = {}
    for label, (processes, queues) in RUNS.items():
        runs[label] = await backfill_with_processes(conninfo, processes, queues)
        reset_nulls(conninfo)
    # the job's own timers add up to its wall time only when one job runs at a time
    rows, seconds, phase_ms = runs[ONE_AT_A_TIME]
    cfg.notes.append(
        breakdown(rows, seconds, phase_ms, compute_seconds, same_populations_seconds, same_rows)
    )
    for label, (rows, seconds, _) in runs.items():
        common = dict(
            size=size,
            populations=pops,
            unit="rows",
            ours_count=rows,
            ours_seconds=seconds,
            benchmark=f"backfill NULL snapshots, {label}",
        )
        against_baselines(
            cfg,
            common,
            ("floor: one UPDATE per table, constant JSON", floor_rows, floor_seconds),
            ("row by row: read + update per row (sample)", len(sample), old_seconds),
            (
                "same work, no job: one UPDATE per table (snapshot function)",
                same_rows,
                same_seconds,
            ),
            floor_ratio=0.5,
        )
    cfg.results.append(
        Result(
            size=size,
            populations=pops,
            benchmark="chunked backfill, 1 worker process as shipped",
            unit="rows",
            ours_count=runs[SHIPPED][0],
            ours_seconds=runs[SHIPPED][1],
            baseline="the same, one job at a time",
            baseline_count=runs[ONE_AT_A_TIME][0],
            baseline_seconds=runs[ONE_AT_A_TIME][1],
        )
    )


def breakdown(
    rows: int,
    seconds: float,
    phase_ms: dict[str, int],
    compute_seconds: float,
    same_populations_seconds: float,
    same_rows: int,
) -> str:
    """The one-process run's time by phase, as measured inside the job, and what is left
    outside its phases (the jobs' fetch, start and end, logging, the bench's polling)."""
    inside = sum(phase_ms.values())
    written = same_populations_seconds - compute_seconds
    phases = ", ".join(f"{name} {ms:,}" for name, ms in phase_ms.items())
    return (
        f"backfill, 1 worker process, {rows:,} rows in {seconds * 1000:,.0f} ms; by phase (ms): "
        f"{phases}; outside them {seconds * 1000 - inside:,.0f} (the audit overlaps the fills). "
        "The same work with no job "
        f"({same_rows:,} rows): populations' snapshots computed (SELECT alone) "
        f"{compute_seconds * 1000:,.0f} ms, written {written * 1000:,.0f} ms"
    )


async def backfill_with_processes(
    conninfo: str, processes: int, queues: str
) -> tuple[int, float, dict[str, int]]:
    """The real backfill job, taken by ``processes`` ``qlarius-jobs worker --queues queues``."""
    exe = str(Path(sys.executable).parent / "qlarius-jobs")
    workers = [
        subprocess.Popen(
            [exe, "worker", "--queues", queues],
            env=worker_env(conninfo),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            while _count(SQL.one_sync(conn, "bench_worker_count"), "n") < processes:
                await asyncio.sleep(0.1)  # every process is up and listening
            started = time.perf_counter()
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as aconn:
                await backfill_missing_snapshots.defer(aconn)
            while _count(
                SQL.one_sync(conn, "bench_jobs_pending", queues=["maintenance"]), "pending"
            ):
                await asyncio.sleep(0.02)
            seconds = time.perf_counter() - started
            rows = _count(SQL.one_sync(conn, "bench_updated_by_backfill"), "rows")
            phases = SQL.one_sync(conn, "bench_backfill_phase_ms")
            phase_ms = dict(phases["phase_ms"]) if phases else {}
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=60)
    return rows, seconds, phase_ms


def _count(row: dict[str, Any] | None, key: str) -> int:
    return int(row[key]) if row else 0
