"""The scheduler: every worker process defers the ticks of ``qlarius_schedules``.

The table is the one source of truth (``migrate`` fills it from the settings the first time;
operators change it with SQL, ``qlarius-jobs schedules`` or the console). Each process reads
it when told a schedule changed (``NOTIFY qlarius_wakeup 'controls'``, heard by the wake-ups
listener) and at least every ``controls_poll_seconds`` (the safety net, and the only way
behind a transaction pooler), and sleeps until the next tick in between.

Exactly one job per tick, however many processes run: the schedule's ``last_tick_at`` only
moves forward, and only for the cron expression the tick was computed from, under the row's
lock; the ledger ``qlarius_schedule_ticks`` is keyed by (task, tick). A tick missed while no
worker ran is caught up by one job, for the latest missed tick, whatever the outage's length
(the ledger says how many it stands for); ticks from before a schedule was created, changed
or enabled again never fire. Times are UTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import croniter
import psycopg_pool

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.logs import get_logger
from qlarius_jobs.worker.resilience import Availability, is_connection_error, ride_out

log = get_logger(__name__)

SQL = QueryFile.of(__file__)

MISSED_COUNTED = 10_000  # missed ticks are counted up to this (a per-second cron, days down)


@dataclass(frozen=True)
class Schedule:
    task_name: str
    cron: str
    enabled: bool
    last_tick_at: dt.datetime


@dataclass(frozen=True)
class DueTick:
    task_name: str
    cron: str
    tick_at: dt.datetime
    queue: str
    missed: int  # earlier ticks since the last one deferred, caught up by this one


def due_ticks(
    schedules: Iterable[Schedule], queues: Mapping[str, str], now: dt.datetime
) -> list[DueTick]:
    """For each enabled schedule of a task in ``queues`` (task -> queue), its latest tick at
    or before ``now`` when that is later than its last tick deferred."""
    due = []
    now = now.astimezone(dt.UTC)  # croniter computes in the zone of the time it is given
    for schedule in schedules:
        if not schedule.enabled or schedule.task_name not in queues:
            continue
        last = schedule.last_tick_at.astimezone(dt.UTC)
        ticks = croniter.croniter(schedule.cron, now)
        latest = ticks.get_prev(dt.datetime)
        if latest <= last:
            continue
        missed = 0
        ticks.set_current(last)
        while missed < MISSED_COUNTED and ticks.get_next(dt.datetime) < latest:
            missed += 1
        due.append(
            DueTick(schedule.task_name, schedule.cron, latest, queues[schedule.task_name], missed)
        )
    return due


def next_tick(schedules: Iterable[Schedule], now: dt.datetime) -> dt.datetime | None:
    """When the next enabled schedule fires after ``now``."""
    upcoming = [
        croniter.croniter(s.cron, now).get_next(dt.datetime) for s in schedules if s.enabled
    ]
    return min(upcoming, default=None)


class Scheduler:
    """One per worker process; ``queues`` maps the tasks it may defer to their queue."""

    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool,
        queues: Mapping[str, str],
        *,
        poll_seconds: float,
        availability: Availability | None = None,
    ) -> None:
        self.pool = pool
        self.queues = dict(queues)
        self.poll_seconds = poll_seconds
        self.availability = availability or Availability(float("inf"))
        self.changed = asyncio.Event()
        self.deferred = 0  # jobs this process deferred (for tests and logs)
        self._refused: set[tuple[str, str]] = set()  # (task, cron) croniter cannot run
        self._last_error: tuple[str, float] = ("", 0.0)  # said once a minute at most

    def notify(self) -> None:
        """A schedule changed (a NOTIFY): read them again now."""
        self.changed.set()

    async def _schedules(self) -> tuple[list[Schedule], dt.datetime]:
        """The schedules croniter can run, and the database's time now."""
        async with self.pool.connection() as conn:
            rows = await SQL.many(conn, "schedules")
        db_now = rows[0]["db_now"].astimezone(dt.UTC) if rows else dt.datetime.now(dt.UTC)
        schedules = []
        for row in rows:
            # in UTC: croniter computes in the zone of the time it is given (the session's)
            schedule = Schedule(
                row["task_name"],
                row["cron"],
                row["enabled"],
                row["last_tick_at"].astimezone(dt.UTC),
            )
            try:
                croniter.croniter(schedule.cron, schedule.last_tick_at).get_next(dt.datetime)
            except (croniter.CroniterError, ValueError) as exc:
                # the database checks every expression; one it let through that croniter
                # cannot run is skipped, said once, and never stops the other schedules
                if (schedule.task_name, schedule.cron) not in self._refused:
                    self._refused.add((schedule.task_name, schedule.cron))
                    log.error(
                        "schedule skipped: its cron expression cannot be run",
                        task=schedule.task_name,
                        cron=schedule.cron,
                        error=str(exc),
                    )
                continue
            schedules.append(schedule)
        return schedules, db_now

    async def defer_due(self) -> tuple[list[Schedule], dt.datetime]:
        """Defer a job for every due tick (those another process did not defer first), ticks
        computed on the database's clock; returns the schedules read and that time."""
        schedules, db_now = await self._schedules()
        due = due_ticks(schedules, self.queues, db_now)
        if not due:
            return schedules, db_now
        async with self.pool.connection() as conn:
            rows = await SQL.many(
                conn,
                "defer_ticks",
                tasks=[t.task_name for t in due],
                crons=[t.cron for t in due],
                ticks=[t.tick_at for t in due],
                queues=[t.queue for t in due],
                missed=[t.missed for t in due],
            )
        for row in rows:
            self.deferred += row["job_id"] is not None
            fields = {
                "task": row["task_name"],
                "tick_at": row["tick_at"].isoformat(),
                "deferred_job_id": row["job_id"],
            }
            if row["missed"]:
                log.info(
                    "periodic ticks missed: one job catches them up",
                    missed=row["missed"],
                    **fields,
                )
            elif row["job_id"] is None:
                log.debug("periodic tick: no job, one of the task still waits", **fields)
            else:
                log.debug("periodic job deferred", **fields)
        return schedules, db_now

    async def _serve(self) -> None:
        while True:
            self.changed.clear()
            wait = self.poll_seconds
            try:
                schedules, db_now = await self.defer_due()
            except Exception as exc:
                if is_connection_error(exc):
                    raise
                # a refusal by the database (a trigger, a statement timeout on a row someone
                # holds) must not stop the worker, nor the schedules for long: said once a
                # minute at most, and tried again at the next poll
                error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
                if error != self._last_error[0] or time.monotonic() - self._last_error[1] > 60:
                    log.error("schedules not deferred", error=error)
                    self._last_error = (error, time.monotonic())
            else:
                upcoming = next_tick(schedules, db_now)
                if upcoming is not None:
                    wait = min(wait, (upcoming - db_now).total_seconds() + 0.01)
            self.availability.succeeded()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=max(wait, 0.01))

    async def run(self) -> None:
        """Until cancelled; a lost database is waited for (see ``resilience.ride_out``)."""
        await ride_out(self.availability, self._serve)
