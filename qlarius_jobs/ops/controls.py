"""Schedules and queue controls, as operators change them: ``qlarius-jobs schedules`` and
``queues``, the console's Schedules and Queues pages. The tables are the truth (see
``sql/migrations/0016_schedules_and_queue_controls.sql``); plain SQL on them works the same,
and every worker process follows them within seconds (``worker/scheduler.py``,
``worker/queue_controls.py``).

Every write names who made it (``actor``: ``cli:user@host``, ``console:user``), for the
row's ``updated_by``. Bad input raises ``ControlError`` in one line and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import getpass
import socket
from collections.abc import Callable, Mapping
from typing import Any

import croniter
import psycopg

from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs import catalog

SQL = QueryFile.of(__file__)

NEXT_RUNS = 3  # how many next runs a schedule shows


class ControlError(ValueError):
    """A control that cannot be changed as asked; the message says why, in one line."""


def cli_actor() -> str:
    return f"cli:{getpass.getuser()}@{socket.gethostname()}"


def next_runs(cron: str, after: dt.datetime, count: int = NEXT_RUNS) -> list[dt.datetime]:
    """The next ``count`` times ``cron`` fires after ``after`` (UTC)."""
    runs = croniter.croniter(cron, after)
    return [runs.get_next(dt.datetime) for _ in range(count)]


def schedules(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every schedule: its cron, enabled or paused, its next runs (none while paused), its
    last tick and that tick's job."""
    now = dt.datetime.now(dt.UTC)
    rows = SQL.many_sync(conn, "schedules")
    for row in rows:
        row["queue_name"] = _queue_of(row["task_name"])
        try:
            row["next_runs"] = next_runs(row["cron"], now) if row["enabled"] else []
        except (croniter.CroniterError, ValueError):
            row["next_runs"] = []  # the database checked it; croniter differs: shown, not run
    return rows


def ticks(
    conn: psycopg.Connection, task_name: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """The latest ticks, newest first: when, whether run by hand, how many missed ticks each
    caught up, and its job (None when the previous tick's job was still waiting)."""
    return SQL.many_sync(conn, "ticks", task_name=task_name, limit=limit)


def set_schedule(conn: psycopg.Connection, task_name: str, cron: str, actor: str) -> dict[str, Any]:
    """Change a schedule's cron expression; the database refuses one that does not parse or
    never fires. Ticks of the new expression before now do not fire."""
    return _write(
        conn,
        actor,
        _schedule(task_name),
        lambda: SQL.one_sync(conn, "set_schedule_cron", task_name=task_name, cron=cron.strip()),
    )


def set_schedule_enabled(
    conn: psycopg.Connection, task_name: str, enabled: bool, actor: str
) -> dict[str, Any]:
    """Pause (``enabled=False``) or resume a schedule. Ticks missed while it was paused are
    not caught up."""
    return _write(
        conn,
        actor,
        _schedule(task_name),
        lambda: SQL.one_sync(conn, "set_schedule_enabled", task_name=task_name, enabled=enabled),
    )


def run_schedule_now(conn: psycopg.Connection, task_name: str, actor: str) -> dict[str, Any]:
    """One job of the schedule's task now, through the ticks' ledger: ``job_id`` is None when
    a job of the task is still waiting (it will do the work)."""
    spec = catalog.specs().get(task_name)
    if spec is None or spec.schedule is None:
        raise ControlError(_schedule(task_name))
    with conn.transaction():
        SQL.execute_sync(conn, "set_actor", actor=actor)
        row = SQL.one_sync(conn, "run_schedule_now", task_name=task_name, queue=spec.queue)
    if row is None:
        return {"task_name": task_name, "tick_at": None, "job_id": None}
    return row


def apply_schedules(conn: psycopg.Connection, crons: Mapping[str, str | None], actor: str) -> None:
    """Set several schedules in one statement: each one's cron, or disabled (None). For the
    tooling and the tests, which run workers on schedules of their own."""
    try:
        with conn.transaction():
            SQL.execute_sync(conn, "set_actor", actor=actor)
            rows = SQL.many_sync(
                conn, "apply_schedules", tasks=list(crons), crons=list(crons.values())
            )
    except psycopg.errors.CheckViolation as exc:
        raise ControlError(exc.diag.message_primary or str(exc)) from None
    missing = set(crons) - {r["task_name"] for r in rows}
    if missing:
        raise ControlError(_schedule(sorted(missing)[0]))


def queues(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every queue: paused or not, its concurrency override, and its waiting and running
    jobs."""
    return SQL.many_sync(conn, "queues")


def set_queue_paused(
    conn: psycopg.Connection, queue_name: str, paused: bool, actor: str
) -> dict[str, Any]:
    """Pause a queue (its running jobs finish; no new one starts, on any worker process) or
    resume it."""
    return _write(
        conn,
        actor,
        f"no such queue: {queue_name}",
        lambda: SQL.one_sync(conn, "set_queue_paused", queue_name=queue_name, paused=paused),
    )


def set_queue_concurrency(
    conn: psycopg.Connection, queue_name: str, concurrency: int | None, actor: str
) -> dict[str, Any]:
    """At most ``concurrency`` jobs of the queue at once in each worker process (None: each
    process's own setting). It cannot raise a process above what it started with."""
    if concurrency is not None and not 1 <= concurrency <= 10_000:
        raise ControlError(f"queue {queue_name}: concurrency must be 1 to 10000")
    return _write(
        conn,
        actor,
        f"no such queue: {queue_name}",
        lambda: SQL.one_sync(
            conn, "set_queue_concurrency", queue_name=queue_name, concurrency=concurrency
        ),
    )


def tasks(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return SQL.many_sync(conn, "tasks")


def set_task_paused(
    conn: psycopg.Connection, task_name: str, paused: bool, actor: str
) -> dict[str, Any]:
    """Pause every job of one task (the other tasks of its queue go on), or resume it."""
    return _write(
        conn,
        actor,
        f"no such task: {task_name}",
        lambda: SQL.one_sync(conn, "set_task_paused", task_name=task_name, paused=paused),
    )


def schedule_names() -> list[str]:
    """The tasks that have a schedule."""
    return sorted(s.name for s in catalog.specs().values() if s.schedule is not None)


def _schedule(task_name: str) -> str:
    """The error for an unknown schedule (checked against the rows by the write itself)."""
    return f"no schedule for {task_name!r}; the schedules are: {', '.join(schedule_names())}"


def _queue_of(task_name: str) -> str | None:
    spec = catalog.specs().get(task_name)
    return spec.queue if spec else None


def _write(
    conn: psycopg.Connection,
    actor: str,
    missing: str,
    write: Callable[[], dict[str, Any] | None],
) -> dict[str, Any]:
    """``write()`` in a transaction naming ``actor``; ``missing`` when it changed no row, the
    database's refusal (a cron expression, a concurrency) as ``ControlError``."""
    try:
        with conn.transaction():
            SQL.execute_sync(conn, "set_actor", actor=actor)
            row = write()
    except psycopg.errors.CheckViolation as exc:
        raise ControlError(exc.diag.message_primary or str(exc)) from None
    if row is None:
        raise ControlError(missing)
    return row
