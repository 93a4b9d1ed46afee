"""Wake-ups: defer a job when pending work appears (see ``jobs/drains.py``): a drain job for
pending syncs and reconciles, a populate for a pending target, an offers job for a pending
campaign.

Pending rows NOTIFY ``qlarius_wakeup`` when they commit. Each worker process LISTENs and, on a
notification, makes sure a drain job of that kind is waiting: a waiting job has not started
yet, so it will see the rows that sent the notification. Notifications can be lost (the
listening connection drops, or a pooler forbids LISTEN), so every ``wakeup_sweep_seconds``
the process also looks for pending work and does the same. Losing the database only pauses
this loop; it reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import psycopg
import psycopg_pool

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs import drains
from qlarius_jobs.logs import get_logger
from qlarius_jobs.worker.resilience import Availability, ride_out

log = get_logger(__name__)

CHANNEL = "qlarius_wakeup"
SCOPES = {"target", "campaign"}  # notifications of pending scopes (the rest are drain kinds)
CONTROLS = "controls"  # a schedule, queue or task control changed

SQL = QueryFile.of(__file__)


class Wakeups:
    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool,
        conninfo: Callable[[], str],
        *,
        listen: bool,
        sweep_seconds: float,
        availability: Availability | None = None,
        on_controls: Callable[[], None] | None = None,
    ) -> None:
        self.pool = pool
        # a schedule or a queue control changed (see worker/scheduler.py, queue_controls.py)
        self.on_controls = on_controls or (lambda: None)
        self.conninfo = conninfo
        self.listen = listen
        self.sweep_seconds = sweep_seconds
        self.availability = availability or Availability(float("inf"))
        self.application_name = f"qlarius-jobs:{os.getpid()}"
        self.deferred = 0  # drain jobs this process deferred (for tests and logs)

    async def _ensure(self, kinds: set[str]) -> None:
        for name in sorted(kinds & set(drains.KINDS)):
            async with self.pool.connection() as conn:
                if await drains.ensure_waiting_job(conn, drains.KINDS[name]) is not None:
                    self.deferred += 1
        if kinds & SCOPES:
            async with self.pool.connection() as conn, conn.transaction():
                await SQL.execute(conn, "scope_sweep_lock")
                # criteria changes become pending targets and campaigns first (a statement
                # of their own: the next one sees the rows this one writes)
                await SQL.one(conn, "resolve_pending_criteria")
                row = await SQL.one(conn, "ensure_scope_jobs")
                offers = await SQL.one(conn, "ensure_offers_jobs")
            if row:
                self.deferred += int(row["populates"])
            if offers:
                self.deferred += int(offers["offers"])

    async def _sweep(self) -> set[str]:
        """The kinds with work a drain could take now (not only rows left for a busy target)."""
        async with self.pool.connection() as conn:
            async with conn.transaction():
                # targets written with triggers off get their scope rows here at the latest
                await drains.ensure_target_locks(conn)
            kinds = {
                name
                for name, kind in drains.KINDS.items()
                if await drains.has_processable(conn, kind)
            }
            row = await SQL.one(conn, "pending_scopes")
            if row and row["pending"]:
                kinds |= SCOPES
            return kinds

    async def sweep_once(self) -> None:
        """Defer a drain job for every kind with pending work (a worker run that will stop when
        its queues are empty starts with this instead of listening)."""
        await self._ensure(await self._sweep())

    async def _wait_for_notifications(
        self, conn: psycopg.AsyncConnection | None, timeout: float
    ) -> set[str]:
        if conn is None:
            await asyncio.sleep(timeout)
            return set()
        kinds: set[str] = set()
        async for notify in conn.notifies(timeout=timeout, stop_after=1):
            kinds.add(notify.payload)
        if CONTROLS in kinds:
            self.on_controls()
        return kinds

    async def _serve(self) -> None:
        listener: psycopg.AsyncConnection | None = None
        try:
            if self.listen:
                listener = await psycopg.AsyncConnection.connect(
                    self.conninfo(), autocommit=True, application_name=self.application_name
                )
                await listener.execute(f"LISTEN {CHANNEL}")
            # A fresh listener may have missed notifications: sweep at once.
            next_sweep = 0.0
            while True:
                kinds: set[str] = set()
                if time.monotonic() >= next_sweep:
                    kinds |= await self._sweep()
                    next_sweep = time.monotonic() + self.sweep_seconds
                    self.availability.succeeded()
                await self._ensure(kinds)
                kinds = await self._wait_for_notifications(
                    listener, max(0.0, next_sweep - time.monotonic())
                )
                await self._ensure(kinds)
        finally:
            if listener is not None:
                await listener.close()

    async def run(self) -> None:
        """Until cancelled. A lost database is waited for with backoff and jitter (past the
        outage limit, ``DatabaseGone``)."""
        await ride_out(self.availability, self._serve)
