"""Benchmark: how long after a full populate the target's offers are right, i.e. no reconcile
is pending any more for the data set (and the offers match the independent reference).

Every target is populated from scratch while its live campaign waits with no offers (a first
populate; a full re-populate changes as many rows), populates of all targets side by side
through in-process workers on the ``targets`` and ``offers`` queues. A poller notes when the
last target's populate has committed (its status reads ``populated``); the figure is the
seconds from then until no job of those queues is due or running and no reconcile is
pending. A latency row: lower is better, no baseline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import psycopg
from procrastinate import App
from psycopg import AsyncConnection

from qlarius_jobs.bench.base import (
    SQL,
    BenchConfig,
    Result,
    clear_for_a_first_populate,
    offers_against_reference,
    settle_tables,
    workers_running,
)
from qlarius_jobs.jobs.populations import populate_target

# the reference (pure Python) reads every tag: checked up to this size
REFERENCE_MAX_ME_FILES = 100_000


POLL_SECONDS = 0.02


async def _first_time(conninfo: str, holds: Callable[[AsyncConnection], Awaitable[bool]]) -> float:
    """perf_counter() when ``holds`` (a read on its own connection) first holds, polled."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        while not await holds(conn):
            await asyncio.sleep(POLL_SECONDS)
    return time.perf_counter()


async def populates_committed(conninfo: str, target_ids: list[int]) -> tuple[float, float]:
    """Defer a populate of every target (its workers already running); perf_counter() at the
    first deferral, and when every target reads ``populated`` (the last populate committed)."""

    async def populated(conn: AsyncConnection) -> bool:
        row = await SQL.one(conn, "bench_targets_populated", target_ids=target_ids)
        return bool(row and row["populated"])

    started = time.perf_counter()
    committed = asyncio.create_task(_first_time(conninfo, populated))
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as aconn:
        for target_id in target_ids:
            await populate_target.defer(aconn, target_id=target_id)
    return started, await asyncio.wait_for(committed, 600)


async def nothing_pending_at(conninfo: str, queues: list[str]) -> float:
    """perf_counter() when no job of ``queues`` is due or running and nothing is pending for
    them (``bench_jobs_pending``)."""

    async def nothing_pending(conn: AsyncConnection) -> bool:
        row = await SQL.one(conn, "bench_jobs_pending", queues=queues)
        return not row or not row["pending"]

    return await _first_time(conninfo, nothing_pending)


async def bench_offers_after_populate(
    app: App, conninfo: str, cfg: BenchConfig, size: int, pops: int
) -> Result:
    """Appends (and returns) the row "offers right after a full populate"."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        targets = SQL.one_sync(conn, "bench_target_ids")
        assert targets is not None
        target_ids: list[int] = targets["ids"]
        clear_for_a_first_populate(conn, target_ids)
        SQL.execute_sync(conn, "bench_clear_jobs")
        SQL.execute_sync(conn, "bench_clear_waiting_jobs", queues=["targets", "offers"])
        settle_tables(conn)
    async with workers_running(app, conninfo, {"targets": 5, "offers": 10}):
        _, committed = await populates_committed(conninfo, target_ids)
        done = await nothing_pending_at(conninfo, ["targets", "offers"])
    clean = True
    with psycopg.connect(conninfo, autocommit=True) as conn:
        counted = SQL.one_sync(conn, "bench_offer_count")
        offers = int(counted["n"]) if counted else 0
        if size <= REFERENCE_MAX_ME_FILES:
            clean = not offers_against_reference(conn)
    result = Result(
        size=size,
        populations=pops,
        unit="ms",
        benchmark=f"offers right after a full populate ({offers:,} offers): populate's commit "
        "-> no reconcile pending",
        ours_count=max(1, round((done - committed) * 1000)),
        ours_seconds=1.0,
        target="< 60,000 ms, offers as the reference",
        latency=True,
        latency_limit_ms=60_000,
        clean=clean,
    )
    cfg.results.append(result)
    return result
