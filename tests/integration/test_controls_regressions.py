"""Schedules and queue controls against what a hostile reviewer tried (migration 0016): each
test forces one case that broke a first version (a run looping behind a paused lock head, a
resumed task's jobs waiting for a poll, a NULL last tick, an @-name with spaces, claims that
notified every worker, a worker's clock ahead of the database's, a fetch racing a pause, the
session's time zone in the missed count, a statement timeout on a held schedule row)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import subprocess
import threading
import time
import types

import croniter
import psycopg
import pytest

from qlarius_jobs.ops import controls
from qlarius_jobs.worker import scheduler as scheduler_module
from qlarius_jobs.worker.scheduler import Scheduler
from qlarius_jobs.worker.wakeups import Wakeups
from tests.integration.support import BIN, TEST_DB, WorkerProcess, jobs, statuses, wait_for


def _no_schedules(conn: psycopg.Connection, **crons: str) -> None:
    """Every schedule disabled, but those given."""
    controls.apply_schedules(conn, {**dict.fromkeys(controls.schedule_names()), **crons}, "review")


# --- 1. worker --until-empty loops forever on a job held behind a paused one -------------


@pytest.mark.parametrize("paused", ["task", "queue"])
def test_until_empty_ends_when_a_due_job_waits_behind_a_paused_job_of_its_lock(sync_conn, paused):
    """A paused task's (or queue's) job heads a lock group; a job of a running task and
    queue waits behind it in that lock. ``due_jobs`` counts the second (neither its task
    nor its queue is paused), no fetch can take it (its lock's head is paused): `worker
    --until-empty` goes round forever instead of ending and leaving both waiting."""
    _no_schedules(sync_conn)
    if paused == "task":
        controls.set_task_paused(sync_conn, "prune_finished_jobs", True, "review")
        head = ("maintenance", "prune_finished_jobs")
    else:
        controls.set_queue_paused(sync_conn, "targets", True, "review")
        head = ("targets", "populate_target")
    sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, lock) VALUES "
        "(%s, %s, '{}', 'one-lock'), ('maintenance', 'rescue_stalled_jobs', '{}', 'one-lock')",
        head,
    )
    try:
        run = subprocess.run(
            [str(BIN / "qlarius-jobs"), "worker", "--queues", "maintenance", "--until-empty"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("worker --until-empty still running after 20 s") from None
    assert run.returncode == 0, run.stderr[-2000:]
    assert statuses(sync_conn, "rescue_stalled_jobs") == ["todo"]


async def test_drain_ends_when_a_due_job_waits_behind_a_paused_tasks_job_of_its_lock(
    sync_conn, app
):
    """The same with ``testing.drain``: 20 rounds, then 'jobs still due' (work_left counts
    the job behind the paused one)."""
    from qlarius_jobs import testing

    controls.set_task_paused(sync_conn, "prune_finished_jobs", True, "review")
    sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, lock) VALUES "
        "('maintenance', 'prune_finished_jobs', '{}', 'one-lock'), "
        "('maintenance', 'rescue_stalled_jobs', '{}', 'one-lock')"
    )
    outcomes = await testing.drain(app, ["maintenance"], rounds=3)
    assert outcomes["succeeded"] == 0


# --- 2. a resumed task waits for the fetch poll (5 s), not the controls' 1 s --------------


@pytest.mark.slow
def test_a_resumed_tasks_waiting_jobs_start_within_2_s(sync_conn):
    """Queue resumes wake the queue's worker; task resumes wake nothing (QueueControls reads
    only qlarius_queue_controls), so the jobs wait for Procrastinate's poll,
    QLARIUS_FETCH_POLLING_SECONDS (5 s)."""
    _no_schedules(sync_conn)
    controls.set_task_paused(sync_conn, "prune_finished_jobs", True, "review")
    worker = WorkerProcess("--queues", "maintenance")
    try:
        wait_for(
            lambda: sync_conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0],
            30,
            "the worker registered",
        )
        time.sleep(1)
        sync_conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "VALUES ('maintenance', 'prune_finished_jobs', '{}')"
        )
        time.sleep(1)  # the insert's NOTIFY woke the worker; its fetch left the job waiting
        assert statuses(sync_conn, "prune_finished_jobs") == ["todo"]
        sync_conn.execute(
            "UPDATE qlarius_task_controls SET paused = false "
            "WHERE task_name = 'prune_finished_jobs'"
        )
        started_after = wait_for(
            lambda: statuses(sync_conn, "prune_finished_jobs") != ["todo"], 10, "started"
        )
        assert started_after < 2.5, f"the resumed task's job started {started_after:.1f} s later"
    finally:
        worker.stop()


# --- 3. a NULL last_tick_at (plain SQL) kills every worker process -----------------------


@pytest.mark.slow
def test_a_schedule_with_a_null_last_tick_at_does_not_stop_the_worker(sync_conn):
    """``last_tick_at`` was nullable and the trigger left an UPDATE's NULL alone; the
    scheduler compared it with a datetime (TypeError) and the process exited, at every
    restart. Now the database refuses the NULL, and the worker runs."""
    with pytest.raises(psycopg.errors.NotNullViolation):
        sync_conn.execute(
            "UPDATE qlarius_schedules SET last_tick_at = NULL "
            "WHERE task_name = 'rescue_stalled_jobs'"
        )
    worker = WorkerProcess("--queues", "maintenance")
    try:
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(8)
        assert worker.alive, f"the worker exited ({worker.returncode}): {worker.last_line()}"
    finally:
        worker.stop()


# --- 4. the database accepts crons croniter cannot run -----------------------------------


@pytest.mark.parametrize("cron", [" @hourly", "@daily "])
def test_a_cron_the_database_accepts_is_one_the_scheduler_and_the_listing_can_run(sync_conn, cron):
    """``qlarius_cron_problem`` trims before checking the @-names, the table stores the cron
    untrimmed, croniter refuses an @-name with a space around it: the schedule is accepted
    (plain SQL; the CLI strips) then never fires (the scheduler skips it), and `schedules
    list` dies on it."""
    try:
        sync_conn.execute(
            "UPDATE qlarius_schedules SET cron = %s WHERE task_name = 'prune_finished_jobs'",
            (cron,),
        )
    except psycopg.errors.CheckViolation:
        return  # refused: fine
    run = subprocess.run(
        [str(BIN / "qlarius-jobs"), "schedules", "list"], capture_output=True, text=True
    )
    [(stored,)] = sync_conn.execute(
        "SELECT cron FROM qlarius_schedules WHERE task_name = 'prune_finished_jobs'"
    ).fetchall()
    runnable = croniter.croniter.is_valid(stored)  # what the workers are given
    assert (runnable, run.returncode) == (True, 0), run.stderr.strip().splitlines()[-1:]


# --- 5. the scheduler's own claims broadcast 'controls'; a skewed clock spins -----------


def _controls_notifications(listener: psycopg.Connection, seconds: float) -> int:
    count = 0
    for notify in listener.notifies(timeout=seconds):
        count += notify.payload == "controls"
    return count


def test_a_claim_that_changes_nothing_notifies_no_worker(sync_conn):
    """Every qlarius_defer_ticks call runs an UPDATE of qlarius_schedules, whose statement
    trigger NOTIFYs 'controls' whether or not a row changed: each claim (lost, refused, or
    a run now) wakes every worker process's scheduler and queue controls."""
    listener = psycopg.connect(TEST_DB.conninfo, autocommit=True)
    try:
        listener.execute("LISTEN qlarius_wakeup")
        future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        sync_conn.execute(
            "SELECT * FROM qlarius_defer_ticks(ARRAY['backfill_missing_snapshots'], "
            "ARRAY['0 * * * *'], ARRAY[%s::timestamptz], ARRAY['maintenance'], ARRAY[0], false)",
            (future,),
        )  # a tick not yet due: refused, nothing written
        assert _controls_notifications(listener, 0.5) == 0
    finally:
        listener.close()


async def test_a_worker_whose_clock_runs_ahead_of_the_database_neither_stalls_nor_spins(
    sync_conn, app, monkeypatch
):
    """A worker clock 2 s ahead of the database's (as across machines): for a per-second
    schedule, every tick it computes is later than the database's now(), so its claim is
    refused, forever; the refused claim NOTIFYs 'controls' (test above), which the process
    hears itself, so it reads the schedules and claims again at once: a hot loop, each turn
    waking every other worker process too."""
    from qlarius_jobs.worker.procrastinate_adapter import pool

    class Ahead(dt.datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return dt.datetime.now(tz) + dt.timedelta(seconds=2)

    monkeypatch.setattr(
        scheduler_module,
        "dt",
        types.SimpleNamespace(datetime=Ahead, UTC=dt.UTC, timedelta=dt.timedelta),
    )
    _no_schedules(sync_conn, rescue_stalled_jobs="* * * * * *")
    scheduler = Scheduler(pool(app), {"rescue_stalled_jobs": "maintenance"}, poll_seconds=1)
    rounds = 0
    defer_due = scheduler.defer_due

    async def counted():
        nonlocal rounds
        rounds += 1
        return await defer_due()

    scheduler.defer_due = counted  # type: ignore[method-assign]
    wakeups = Wakeups(
        pool(app),
        lambda: TEST_DB.conninfo,
        listen=True,
        sweep_seconds=60,
        on_controls=scheduler.notify,
    )
    tasks = [asyncio.create_task(scheduler.run()), asyncio.create_task(wakeups.run())]
    await asyncio.sleep(4)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # ticks claimed (no worker runs the first job, so later ticks add none: the ledger says)
    deferred = sync_conn.execute(
        "SELECT count(*) FROM qlarius_schedule_ticks WHERE task_name = 'rescue_stalled_jobs'"
    ).fetchone()[0]
    assert rounds < 15 and deferred >= 2, (
        f"{rounds} rounds in 4 s, {deferred} ticks deferred for a per-second schedule"
    )


# --- 6. a fetch in flight when a pause commits starts a job after it -------------------


def test_no_fetch_started_after_a_queue_pause_has_committed_starts_a_job(sync_conn):
    """Forced: a fetch that read the (empty) paused list, then waits on the job table (here:
    a lock held by another session); the operator's pause commits. That fetch, in flight
    when the pause committed, may still start one job (the README says so); a fetch that
    starts after the commit starts none."""
    sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "VALUES ('maintenance', 'prune_finished_jobs', '{}'), "
        "('maintenance', 'prune_finished_jobs', '{}')"
    )
    blocker = psycopg.connect(TEST_DB.conninfo)
    fetcher = psycopg.connect(TEST_DB.conninfo, autocommit=True)
    try:
        blocker.execute("LOCK TABLE procrastinate_jobs IN EXCLUSIVE MODE")
        result: list = []
        fetch = threading.Thread(
            target=lambda: result.append(
                fetcher.execute(
                    "SELECT id FROM qlarius_fetch_job(ARRAY['maintenance'], NULL)"
                ).fetchone()
            )
        )
        fetch.start()
        for _ in range(100):
            if sync_conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%%qlarius_fetch_job%%'"
            ).fetchone():
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the fetch never waited")
        controls.set_queue_paused(sync_conn, "maintenance", True, "review")  # committed
        after = psycopg.connect(TEST_DB.conninfo, autocommit=True)
        later: list = []
        second = threading.Thread(
            target=lambda: later.append(
                after.execute(
                    "SELECT id FROM qlarius_fetch_job(ARRAY['maintenance'], NULL)"
                ).fetchone()
            )
        )
        second.start()
        time.sleep(0.3)
        blocker.commit()
        fetch.join(10)
        second.join(10)
        after.close()
        assert later == [(None,)], f"job {later} started by a fetch begun after the pause"
        assert len(result) == 1  # the one in flight: at most one job
    finally:
        blocker.close()
        fetcher.close()


# --- 7. run now in another second, a backfill already waiting: no job, one ledger row ------


def test_run_now_of_a_waiting_backfill_in_another_second_adds_no_job(sync_conn):
    """The README's 'no tick adds a job while one of its task still waits', for a run now a
    second later (not the same-second ledger key)."""
    first = controls.run_schedule_now(sync_conn, "backfill_missing_snapshots", "review")
    time.sleep(1.1)
    again = controls.run_schedule_now(sync_conn, "backfill_missing_snapshots", "review")
    assert first["job_id"] is not None and again["job_id"] is None and again["tick_at"]
    assert len(jobs(sync_conn, "backfill_missing_snapshots")) == 1
    ledger = sync_conn.execute(
        "SELECT count(*), count(job_id) FROM qlarius_schedule_ticks "
        "WHERE task_name = 'backfill_missing_snapshots'"
    ).fetchone()
    assert ledger == (2, 1)


async def test_a_cron_tick_behind_a_waiting_backfill_moves_the_schedule_and_logs_no_job(
    sync_conn, app
):
    from qlarius_jobs.worker.procrastinate_adapter import pool

    tick = croniter.croniter("0 * * * *", dt.datetime.now(dt.UTC)).get_prev(dt.datetime)
    sync_conn.execute(
        "UPDATE qlarius_schedules SET last_tick_at = %s - interval '1 hour' "
        "WHERE task_name = 'backfill_missing_snapshots'",
        (tick,),
    )
    sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "VALUES ('maintenance', 'backfill_missing_snapshots', '{}')"
    )
    scheduler = Scheduler(pool(app), {"backfill_missing_snapshots": "maintenance"}, poll_seconds=1)
    await scheduler.defer_due()
    await scheduler.defer_due()
    assert len(jobs(sync_conn, "backfill_missing_snapshots")) == 1
    rows = sync_conn.execute(
        "SELECT tick_at, job_id FROM qlarius_schedule_ticks "
        "WHERE task_name = 'backfill_missing_snapshots'"
    ).fetchall()
    assert rows == [(tick, None)]
    [(last,)] = sync_conn.execute(
        "SELECT last_tick_at FROM qlarius_schedules WHERE task_name = 'backfill_missing_snapshots'"
    ).fetchall()
    assert last == tick and scheduler.deferred == 0


# --- 8. the ledger's missed count depends on the database session's TimeZone -------------


def test_the_missed_count_does_not_depend_on_the_sessions_time_zone():
    """psycopg returns last_tick_at in the session's TimeZone (the server's default, often
    local); croniter's set_current adopts that zone, so the ticks between are counted in
    it: five hours down, hourly cron, 'missed' is 4 in UTC and 5 in Asia/Kolkata (+05:30)."""
    import zoneinfo

    from qlarius_jobs.worker.scheduler import Schedule, due_ticks

    now = dt.datetime(2026, 12, 5, 10, 40, tzinfo=dt.UTC)
    last = dt.datetime(2026, 12, 5, 5, 0, tzinfo=dt.UTC)
    counts = {
        zone: due_ticks(
            [Schedule("a", "0 * * * *", True, last.astimezone(zoneinfo.ZoneInfo(zone)))],
            {"a": "q"},
            now,
        )[0].missed
        for zone in ("UTC", "Asia/Kolkata")
    }
    assert counts == {"UTC": 4, "Asia/Kolkata": 4}


# --- 9. a claim that waits on an operator's open transaction, under lock_timeout ---------


@pytest.mark.slow
def test_a_schedule_row_held_by_an_operator_does_not_stop_a_worker_under_statement_timeout(
    sync_conn,
):
    """Databases often set statement_timeout for the application's role. An operator's
    transaction left open on a schedule row (psql: BEGIN; UPDATE qlarius_schedules ...)
    makes the due tick's claim time out: QueryCanceled is deliberately no connection error,
    ride_out re-raises, and the worker process exits (every process, every restart, while
    the transaction stays open). (With lock_timeout instead, LockNotAvailable passes for a
    lost database: the worker survives but logs 'database unavailable' every second.)"""
    _no_schedules(sync_conn, rescue_stalled_jobs="* * * * * *")
    operator = psycopg.connect(TEST_DB.conninfo)
    worker = None
    try:
        operator.execute(
            "SELECT 1 FROM qlarius_schedules WHERE task_name = 'rescue_stalled_jobs' FOR UPDATE"
        )
        env = {**os.environ, "PGOPTIONS": "-c statement_timeout=1s"}
        worker = WorkerProcess("--queues", "maintenance", env=env)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(8)
        assert worker.alive, f"the worker exited ({worker.returncode}): {worker.last_line()}"
    finally:
        operator.close()
        if worker is not None:
            worker.stop()
