"""Queue controls: every worker process follows ``qlarius_queue_controls`` (and
``qlarius_task_controls``).

A paused queue (or task) starts no new job: the fetch itself leaves its jobs waiting
(``qlarius_fetch_job``, sql/migrations/0016, 0026 and 0029), so a pause holds from the
commit on, on every machine; running jobs finish. On resume the process wakes the queue's
worker at once, so that waiting jobs start within ``controls_poll_seconds`` (and at once
when the NOTIFY is heard), even behind a pooler, where no "job inserted" notification comes.

A queue's ``concurrency`` caps how many of its jobs each process runs at once; a process
cannot go above what it started with (its own setting, or a higher override read at start).
The pause lives in the table, so it survives every restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import psycopg_pool
from procrastinate import worker as procrastinate_worker

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.logs import get_logger
from qlarius_jobs.worker.procrastinate_adapter import running_job_attempts, wake
from qlarius_jobs.worker.resilience import Availability, is_connection_error, ride_out

log = get_logger(__name__)

SQL = QueryFile.of(__file__)


async def read_controls(
    pool: psycopg_pool.AsyncConnectionPool, queues: list[str]
) -> tuple[dict[str, tuple[bool, int | None]], set[str]]:
    """queue -> (paused, concurrency override) for ``queues`` (those with a row), and the
    tasks paused now."""
    async with pool.connection() as conn:
        rows = await SQL.many(conn, "queue_controls", queues=queues)
    controls = {r["queue_name"]: (r["paused"], r["concurrency"]) for r in rows if r["queue_name"]}
    return controls, set(rows[0]["paused_tasks"]) if rows else set()


def starting_concurrency(
    own: Mapping[str, int], controls: Mapping[str, tuple[bool, int | None]]
) -> dict[str, int]:
    """What each queue's worker starts with: its own concurrency, or a higher override."""
    return {q: max(n, controls.get(q, (False, None))[1] or 0) for q, n in own.items()}


class QueueControls:
    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool,
        own: Mapping[str, int],
        *,
        poll_seconds: float,
        availability: Availability | None = None,
        controls: Mapping[str, tuple[bool, int | None]] | None = None,
    ) -> None:
        self.pool = pool
        self.own = dict(own)  # queue -> this process's own concurrency
        self.capacity = starting_concurrency(own, controls or {})
        self.workers: list[procrastinate_worker.Worker] = []  # one per queue, set once built
        self.poll_seconds = poll_seconds
        self.availability = availability or Availability(float("inf"))
        self.controls: dict[str, tuple[bool, int | None]] = dict(controls or {})
        self.paused_tasks: set[str] = set()
        self.changed = asyncio.Event()

    def notify(self) -> None:
        self.changed.set()

    def paused(self, queue: str) -> bool:
        return self.controls.get(queue, (False, None))[0]

    def limit(self, queue: str) -> int:
        """How many jobs of ``queue`` this process may run at once now."""
        override = self.controls.get(queue, (False, None))[1]
        return min(override or self.own[queue], self.capacity[queue])

    def wake(self, queue: str) -> None:
        """Have the queue's worker look for a job now, and again a moment later: a wake that
        lands while its fetch is in flight is cleared when that fetch ends (Procrastinate
        clears its event then)."""
        loop = asyncio.get_running_loop()
        for worker in self.workers:
            if worker.queues == [queue]:
                wake(worker)
                loop.call_later(0.3, wake, worker)

    def may_start(self, worker_id: int) -> bool:
        """Whether a worker is below its queue's concurrency override (the semaphore holds
        the rest). At the cap, it is woken shortly to look again (a check in memory, no
        query): a running job that ends frees a slot that no notification announces."""
        running = len(running_job_attempts(self.workers, worker_id))
        for worker in self.workers:
            capped = bool(worker.queues) and running >= self.limit(worker.queues[0])
            if worker.worker_id == worker_id and capped:
                asyncio.get_running_loop().call_later(0.1, wake, worker)
                return False
        return True

    async def refresh(self) -> None:
        before = {q: (self.paused(q), self.limit(q)) for q in self.own}
        tasks_before = self.paused_tasks
        self.controls, self.paused_tasks = await read_controls(self.pool, list(self.own))
        for task in sorted(self.paused_tasks ^ tasks_before):
            log.info("task paused" if task in self.paused_tasks else "task resumed", task=task)
        if tasks_before - self.paused_tasks:
            for queue in self.own:  # a resumed task's jobs start now, in whichever queue
                self.wake(queue)
        for queue, (was_paused, was_limit) in before.items():
            paused, limit = self.paused(queue), self.limit(queue)
            if paused != was_paused:
                log.info(
                    "queue paused: no new job starts" if paused else "queue resumed",
                    queue=queue,
                )
            if limit != was_limit:
                log.info("queue concurrency changed", queue=queue, concurrency=limit)
            if (was_paused and not paused) or limit > was_limit:
                self.wake(queue)

    async def _serve(self) -> None:
        while True:
            self.changed.clear()
            try:
                await self.refresh()
            except Exception as exc:
                if is_connection_error(exc):
                    raise
                # a statement timeout, say: the controls stay as last read, tried again soon
                log.warning("queue controls not read", error=(str(exc).splitlines() or [""])[0])
            self.availability.succeeded()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=self.poll_seconds)

    async def run(self) -> None:
        await ride_out(self.availability, self._serve)
