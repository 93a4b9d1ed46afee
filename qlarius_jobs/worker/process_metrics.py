"""A worker process's own metrics, served on ``qlarius-jobs worker --health-port``'s
``/metrics`` from prometheus-client's registry (beside its ``process_*`` and ``python_*``):

- ``qlarius_worker_pool_connections{state}``: the connection pool's connections, ``in_use``
  and ``open``; ``qlarius_worker_pool_max_connections``: the most it may open.
- ``qlarius_worker_jobs_running{queue}``: the jobs this process runs now;
  ``qlarius_worker_concurrency{queue}``: how many it may run at once.

The database's metrics (every worker's jobs) are the console's ``/metrics``, not these.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import psycopg_pool
from procrastinate import worker as procrastinate_worker
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qlarius_jobs.worker.procrastinate_adapter import running_jobs

Watched = tuple[psycopg_pool.AsyncConnectionPool, Sequence[procrastinate_worker.Worker]]


class WorkerCollector(Collector):
    """What the running ``run_workers`` of this process hold now (none: no series)."""

    def __init__(self) -> None:
        self.watched: list[Watched] = []
        self.lock = threading.Lock()  # scrapes may come from another thread

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            watched = list(self.watched)
        connections = GaugeMetricFamily(
            "qlarius_worker_pool_connections",
            "This worker's pooled connections: in_use, and open (in use or idle)",
            labels=["state"],
        )
        most = GaugeMetricFamily(
            "qlarius_worker_pool_max_connections", "The most connections the pool may open"
        )
        running = GaugeMetricFamily(
            "qlarius_worker_jobs_running", "Jobs this worker runs now", labels=["queue"]
        )
        concurrency = GaugeMetricFamily(
            "qlarius_worker_concurrency", "Jobs this worker may run at once", labels=["queue"]
        )
        if watched:
            stats = [pool.get_stats() for pool, _ in watched]
            size = sum(s.get("pool_size", 0) for s in stats)
            connections.add_metric(
                ["in_use"], size - sum(s.get("pool_available", 0) for s in stats)
            )
            connections.add_metric(["open"], size)
            most.add_metric([], sum(pool.max_size for pool, _ in watched))
        by_queue: dict[str, tuple[int, int]] = {}
        for _, workers in watched:
            for w in workers:
                for queue in w.queues or ["all"]:
                    now, limit = by_queue.get(queue, (0, 0))
                    by_queue[queue] = (now + running_jobs(w), limit + w.concurrency)
        for queue, (now, limit) in sorted(by_queue.items()):
            running.add_metric([queue], now)
            concurrency.add_metric([queue], limit)
        yield from (connections, most, running, concurrency)


_collector: WorkerCollector | None = None
_registering = threading.Lock()


def collector() -> WorkerCollector:
    """The process's one collector, registered in prometheus-client's registry at first use."""
    global _collector
    with _registering:
        if _collector is None:
            _collector = WorkerCollector()
            REGISTRY.register(_collector)
        return _collector


@contextlib.contextmanager
def watching(
    pool: psycopg_pool.AsyncConnectionPool, workers: Sequence[procrastinate_worker.Worker]
) -> Iterator[None]:
    """While inside, the process's metrics include this pool and these workers."""
    c = collector()
    entry: Watched = (pool, workers)
    with c.lock:
        c.watched.append(entry)
    try:
        yield
    finally:
        with c.lock:
            c.watched.remove(entry)
