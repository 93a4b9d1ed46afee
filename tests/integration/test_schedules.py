"""Schedules live in ``qlarius_schedules``: checked by the database, deferred once per tick
whatever the number of worker processes, a missed tick caught up once, a change followed by
running workers within seconds."""

from __future__ import annotations

import datetime as dt
import random
import re
import threading
import time

import croniter
import psycopg
import pytest

from qlarius_jobs.ops import controls
from qlarius_jobs.worker.scheduler import Schedule, Scheduler, due_ticks
from tests.integration.support import TEST_DB, WorkerProcess, cli, jobs, log_events

HOURLY = "0 * * * *"

# What the database refuses though croniter runs it: outside the dialect on purpose.
OUTSIDE_THE_DIALECT = [
    "0 0 L * *",  # last day of the month
    "0 0 * * 1#2",  # the second Monday
    "0 0 * * 5L",
    "5-2 * * * *",  # a range that wraps around
    "* * * * fri-mon",
    "* * * * * * *",  # a seventh field (years)
    "0 0 15W * *",
]
NAMES = [
    {},
    {},
    {},
    {
        m: i + 1
        for i, m in enumerate(
            ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        )
    },
    {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
    {},
]


BOUNDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7), (0, 59)]


def _outside_the_dialect(expression: str) -> bool:
    """L, W, #, seven fields, a range that wraps around (5-2), or a value out of its field's
    range (croniter lets some through, as day 0 in 0-0/3)."""
    fields = expression.lower().split()
    if len(fields) > 6 or re.search(r"\d[lw#]|\bl\b|#", expression.lower()):
        return True
    for field, names, (lowest, highest) in zip(fields, NAMES, BOUNDS, strict=False):
        values = re.findall(r"(?<![/\d])\d+", field)
        if any(not lowest <= int(v) <= highest for v in values):
            return True
        for item in field.split(","):
            bounds = re.match(r"^(\w+)-(\w+)", item)
            if bounds:
                low, high = (names.get(b, int(b) if b.isdigit() else -1) for b in bounds.groups())
                if low > high >= 0:
                    return True
    return False


def _croniter_runs(expression: str) -> bool:
    if not croniter.croniter.is_valid(expression):
        return False
    try:
        croniter.croniter(expression, dt.datetime(2026, 1, 1, tzinfo=dt.UTC)).get_next(dt.datetime)
    except (croniter.CroniterError, ValueError):
        return False
    return True


def _random_field(low: int, high: int, names: list[str]) -> str:
    def value() -> str:
        if names and random.random() < 0.2:
            return random.choice(names)
        return str(random.randint(low - 1, high + 1))

    kind = random.random()
    if kind < 0.2:
        return "*"
    if kind < 0.35:
        return f"*/{random.randint(0, 70)}"
    if kind < 0.55:
        return f"{value()}-{value()}" + (
            f"/{random.randint(1, 9)}" if random.random() < 0.3 else ""
        )
    if kind < 0.7:
        return ",".join(value() for _ in range(random.randint(2, 4)))
    return value()


def _random_expression() -> str:
    months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
    fields = [
        _random_field(0, 59, []),
        _random_field(0, 23, []),
        _random_field(1, 31, []),
        _random_field(1, 12, months),
        _random_field(0, 7, days),
    ]
    if random.random() < 0.2:
        fields.append(_random_field(0, 59, []))
    return " ".join(fields)


def test_the_databases_verdict_on_a_cron_expression_agrees_with_croniter(sync_conn):
    """Croniter is the independent reference: whatever the database accepts, croniter runs
    (and it fires); whatever it refuses, croniter cannot run, or it is outside the dialect."""
    random.seed(19)
    fixed = [
        "0 * * * *",
        "*/5 * * * *",
        "0 0 * * mon-fri",
        "0 12 1 jan,jul *",
        "@hourly",
        "@daily",
        "@weekly",
        "@monthly",
        "@yearly",
        "* * * * * */30",
        "0 0 29 2 *",
        "0 0 30 2 *",
        "0 0 31 2,4 *",
        "0 0 31 2-4 *",
        "0 0 31 2 */1",
        "0 0 31 2 0-6",
        "0 0 31 2 ?",
        "* * ? * ?",
        "0/15 * * * *",
        "60 * * * *",
        "*/0 * * * *",
        "0 0 0 * *",
        "* * * * 7",
        " @hourly",
        "@DAILY ",
        "0  *\t* * *",
        "banana",
        "",
        "* * * *",
        "0 0 1 1 *",
        "01 * * * *",
        "* * * JAN SUN",
        "? * * * *",
        "*-5 * * * *",
        "1,2,,3 * * * *",
        "@reboot",
        "H * * * *",
        *OUTSIDE_THE_DIALECT,
    ]
    expressions = fixed + [_random_expression() for _ in range(1500)]
    verdicts = sync_conn.execute(
        "SELECT e, qlarius_cron_problem(e), qlarius_cron_normalized(e) "
        "FROM unnest(%s::text[]) AS e",
        (expressions,),
    ).fetchall()
    accepted = refused = 0
    for expression, problem, stored in verdicts:
        runs = _croniter_runs(stored)  # what the workers are given
        if problem is None:
            accepted += 1
            assert runs, f"the database accepts {expression!r}, croniter cannot run it"
        else:
            refused += 1
            assert not runs or _outside_the_dialect(expression), (
                f"the database refuses {expression!r} ({problem}), croniter runs it"
            )
            assert ("\n" not in problem and expression in problem) or not expression
    assert accepted > 200 and refused > 200  # both sides were exercised


def test_an_invalid_schedule_is_refused_by_sql_and_the_command_line_and_changes_nothing(
    sync_conn,
):
    for bad, why in (("banana", "not a cron expression"), ("0 0 30 2 *", "never fires")):
        with pytest.raises(psycopg.errors.CheckViolation, match=why):
            sync_conn.execute(
                "UPDATE qlarius_schedules SET cron = %s WHERE task_name = 'prune_finished_jobs'",
                (bad,),
            )
        run = cli("schedules", "set", "prune_finished_jobs", bad)
        assert run.returncode == 2
        assert run.stderr.count("\n") == 1 and why in run.stderr, run.stderr
        assert "invalid schedule for prune_finished_jobs" in run.stderr
    with pytest.raises(psycopg.errors.CheckViolation):
        sync_conn.execute(
            "INSERT INTO qlarius_schedules (task_name, cron) VALUES ('x', '* * * * * * * *')"
        )
    [(cron,)] = sync_conn.execute(
        "SELECT cron FROM qlarius_schedules WHERE task_name = 'prune_finished_jobs'"
    ).fetchall()
    assert cron == "17 * * * *"
    run = cli("schedules", "set", "no_such_task", HOURLY)
    assert run.returncode == 2 and "no schedule for 'no_such_task'" in run.stderr


def _latest_tick(cron: str) -> dt.datetime:
    return croniter.croniter(cron, dt.datetime.now(dt.UTC)).get_prev(dt.datetime)


def _scheduler(pool) -> Scheduler:
    return Scheduler(pool, {"backfill_missing_snapshots": "maintenance"}, poll_seconds=1)


async def test_ticks_missed_while_no_worker_ran_are_caught_up_by_one_job_and_never_twice(
    sync_conn, app
):
    from qlarius_jobs.worker.procrastinate_adapter import pool

    latest = _latest_tick(HOURLY)
    # the workers were all down for five hours
    sync_conn.execute(
        "UPDATE qlarius_schedules SET last_tick_at = %s "
        "WHERE task_name = 'backfill_missing_snapshots'",
        (latest - dt.timedelta(hours=5),),
    )
    first, second = _scheduler(pool(app)), _scheduler(pool(app))
    await first.defer_due()
    await second.defer_due()  # another process, a moment later
    await first.defer_due()
    [job] = jobs(sync_conn, "backfill_missing_snapshots")
    assert job["args"] == {"timestamp": int(latest.timestamp())}
    [tick] = controls.ticks(sync_conn, "backfill_missing_snapshots")
    assert (tick["tick_at"], tick["missed"], tick["job_id"], tick["run_now"]) == (
        latest,
        4,  # one hour after another, four ticks stood for by this one
        job["id"],
        False,
    )


async def test_ticks_from_before_a_change_or_a_pause_never_fire(sync_conn, app):
    from qlarius_jobs.worker.procrastinate_adapter import pool

    actor = "test"
    scheduler = _scheduler(pool(app))
    # a new cron: its ticks before now are not due
    controls.set_schedule(sync_conn, "backfill_missing_snapshots", "*/5 * * * *", actor)
    await scheduler.defer_due()
    # paused, then resumed: what was missed meanwhile is not caught up
    controls.set_schedule_enabled(sync_conn, "backfill_missing_snapshots", False, actor)
    sync_conn.execute(
        "UPDATE qlarius_schedules SET last_tick_at = now() - interval '1 day' "
        "WHERE task_name = 'backfill_missing_snapshots'"
    )
    await scheduler.defer_due()  # paused: nothing
    controls.set_schedule_enabled(sync_conn, "backfill_missing_snapshots", True, actor)
    await scheduler.defer_due()
    assert jobs(sync_conn, "backfill_missing_snapshots") == []
    [row] = [
        s for s in controls.schedules(sync_conn) if s["task_name"] == "backfill_missing_snapshots"
    ]
    assert row["updated_by"] == actor and row["enabled"]
    assert row["last_tick_at"] > dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)


def test_two_processes_deferring_the_same_tick_make_one_job(sync_conn):
    """Forced: the first holds its claim open; the second waits on the schedule's row, then
    finds the tick taken."""
    tick = _latest_tick(HOURLY)
    sync_conn.execute(
        "UPDATE qlarius_schedules SET last_tick_at = %s - interval '1 hour' "
        "WHERE task_name = 'backfill_missing_snapshots'",
        (tick,),
    )
    claim = (
        "SELECT * FROM qlarius_defer_ticks(ARRAY['backfill_missing_snapshots'], ARRAY[%s], "
        "ARRAY[%s::timestamptz], ARRAY['maintenance'], ARRAY[0], false)"
    )
    first = psycopg.connect(TEST_DB.conninfo)
    second = psycopg.connect(TEST_DB.conninfo, autocommit=True)
    try:
        assert len(first.execute(claim, (HOURLY, tick)).fetchall()) == 1  # not committed yet
        result: list = []
        waiting = threading.Thread(
            target=lambda: result.append(second.execute(claim, (HOURLY, tick)).fetchall())
        )
        waiting.start()
        _wait_for_lock_wait(sync_conn)
        first.commit()
        waiting.join(10)
        assert result == [[]]  # the tick was taken: no job from the second
    finally:
        first.close()
        second.close()
    assert len(jobs(sync_conn, "backfill_missing_snapshots")) == 1


def test_a_tick_computed_from_a_cron_changed_meanwhile_is_not_deferred(sync_conn):
    """Forced: an operator's change of the cron is not committed yet when a worker, which
    read the old one, claims its tick; once the change commits the claim finds nothing."""
    tick = _latest_tick(HOURLY)
    sync_conn.execute(
        "UPDATE qlarius_schedules SET last_tick_at = %s - interval '1 hour' "
        "WHERE task_name = 'backfill_missing_snapshots'",
        (tick,),
    )
    operator = psycopg.connect(TEST_DB.conninfo)
    worker = psycopg.connect(TEST_DB.conninfo, autocommit=True)
    try:
        operator.execute(
            "UPDATE qlarius_schedules SET cron = '30 * * * *' "
            "WHERE task_name = 'backfill_missing_snapshots'"
        )
        result: list = []
        claim = threading.Thread(
            target=lambda: result.append(
                worker.execute(
                    "SELECT * FROM qlarius_defer_ticks(ARRAY['backfill_missing_snapshots'], "
                    "ARRAY[%s], ARRAY[%s::timestamptz], ARRAY['maintenance'], ARRAY[0], false)",
                    (HOURLY, tick),
                ).fetchall()
            )
        )
        claim.start()
        _wait_for_lock_wait(sync_conn)
        operator.commit()
        claim.join(10)
        assert result == [[]]
    finally:
        operator.close()
        worker.close()
    assert jobs(sync_conn, "backfill_missing_snapshots") == []


def _wait_for_lock_wait(conn: psycopg.Connection) -> None:
    for _ in range(100):
        if conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        ).fetchone():
            return
        time.sleep(0.05)
    raise AssertionError("the second transaction never waited on the first")


def test_run_now_defers_one_job_through_the_ledger(sync_conn):
    actor = "cli:test"
    first = controls.run_schedule_now(sync_conn, "prune_finished_jobs", actor)
    assert first["job_id"] is not None
    # the backfill's job waits (its queueing lock): a second one would do nothing more
    backfill = controls.run_schedule_now(sync_conn, "backfill_missing_snapshots", actor)
    again = controls.run_schedule_now(sync_conn, "backfill_missing_snapshots", actor)
    assert backfill["job_id"] is not None and again["job_id"] is None
    assert len(jobs(sync_conn, "backfill_missing_snapshots")) == 1
    ticks = controls.ticks(sync_conn)
    assert all(t["run_now"] for t in ticks) and len(ticks) >= 2
    with pytest.raises(controls.ControlError, match="no schedule for 'populate_target'"):
        controls.run_schedule_now(sync_conn, "populate_target", actor)
    run = cli("schedules", "run", "rescue_stalled_jobs")
    assert run.returncode == 0 and "deferred" in run.stdout, run.stderr
    assert len(jobs(sync_conn, "rescue_stalled_jobs")) == 1


def test_the_scheduler_skips_what_it_cannot_run_and_defers_the_rest():
    now = dt.datetime(2026, 12, 5, 10, 30, tzinfo=dt.UTC)
    long_ago = now - dt.timedelta(days=3)
    due = due_ticks(
        [
            Schedule("a", HOURLY, True, long_ago),
            Schedule("b", HOURLY, False, long_ago),  # paused
            Schedule("c", HOURLY, True, now),  # its last tick is later than the cron's
            Schedule("unknown_to_this_worker", HOURLY, True, long_ago),
        ],
        {"a": "qa", "b": "qb", "c": "qc"},
        now,
    )
    assert [(d.task_name, d.tick_at, d.queue, d.missed) for d in due] == [
        ("a", dt.datetime(2026, 12, 5, 10, tzinfo=dt.UTC), "qa", 3 * 24 - 1)
    ]


@pytest.mark.slow
def test_a_schedule_changed_by_sql_while_two_workers_run_changes_their_ticks(sync_conn):
    """Two worker processes; the rescue's schedule changed by SQL to every second: within
    seconds both follow it, one job per tick; paused by SQL, the ticks stop."""
    controls.apply_schedules(sync_conn, dict.fromkeys(controls.schedule_names()), "test")
    env_workers = [WorkerProcess("--queues", "maintenance") for _ in range(2)]
    try:
        time.sleep(3)  # both are up and following the (all disabled) schedules
        assert jobs(sync_conn, "rescue_stalled_jobs") == []
        changed_at = time.monotonic()
        sync_conn.execute(
            "UPDATE qlarius_schedules SET cron = '* * * * * *', enabled = true "
            "WHERE task_name = 'rescue_stalled_jobs'"
        )
        while not jobs(sync_conn, "rescue_stalled_jobs") and time.monotonic() - changed_at < 10:
            time.sleep(0.1)
        followed_after = time.monotonic() - changed_at
        assert followed_after < 3, f"the first tick came {followed_after:.1f} s after the change"
        time.sleep(6)
        sync_conn.execute(
            "UPDATE qlarius_schedules SET enabled = false WHERE task_name = 'rescue_stalled_jobs'"
        )
        time.sleep(2)  # a tick claimed just before the pause may still come
        count_at_pause = len(jobs(sync_conn, "rescue_stalled_jobs"))
        time.sleep(3)
        assert len(jobs(sync_conn, "rescue_stalled_jobs")) == count_at_pause
    finally:
        outputs = [w.stop() for w in env_workers]
    runs = jobs(sync_conn, "rescue_stalled_jobs")
    ticks = [j["args"]["timestamp"] for j in runs]
    assert len(ticks) >= 5, outputs[0][-2000:]
    assert len(ticks) == len(set(ticks))  # one job per tick
    ledger = sync_conn.execute(
        "SELECT count(*), count(job_id), count(DISTINCT tick_at) FROM qlarius_schedule_ticks "
        "WHERE task_name = 'rescue_stalled_jobs'"
    ).fetchone()
    # a tick whose job finds the previous one still waiting adds none (job_id NULL)
    assert ledger[1] == len(ticks) and ledger[0] == ledger[2] >= len(ticks)
    assert max(ticks) - min(ticks) <= len(ticks) + 1  # no gap beyond a tick at the edges
    assert all(j["status"] == "succeeded" for j in runs)


async def test_pruning_keeps_each_schedules_latest_tick_and_the_recent_ones(sync_conn, app):
    from qlarius_jobs import testing

    sync_conn.execute(
        "INSERT INTO qlarius_schedule_ticks (task_name, tick_at, deferred_at) VALUES "
        "('prune_finished_jobs', now() - interval '30 days', now() - interval '30 days'), "
        "('prune_finished_jobs', now() - interval '20 days', now() - interval '20 days'), "
        "('rescue_stalled_jobs', now() - interval '20 days', now() - interval '20 days'), "
        "('rescue_stalled_jobs', now() - interval '1 day', now() - interval '1 day')"
    )
    summary = await testing.perform_job(app, "prune_finished_jobs")
    assert summary["schedule_ticks_deleted"] == 2
    left = sync_conn.execute(
        "SELECT task_name, extract(day FROM now() - tick_at)::int FROM qlarius_schedule_ticks "
        "ORDER BY 1"
    ).fetchall()
    assert left == [("prune_finished_jobs", 20), ("rescue_stalled_jobs", 1)]


def test_a_schedule_deleted_by_hand_comes_back_from_the_settings_at_the_next_migrate(sync_conn):
    from qlarius_jobs.db import migrate

    controls.set_schedule(sync_conn, "rescue_stalled_jobs", "* * * * *", "test")
    sync_conn.execute("DELETE FROM qlarius_schedules WHERE task_name = 'prune_finished_jobs'")
    migrate.migrate(TEST_DB.conninfo)
    crons = {s["task_name"]: s["cron"] for s in controls.schedules(sync_conn)}
    # the one deleted comes back with its setting; the one changed stays as the operator left it
    assert crons["prune_finished_jobs"] == "17 * * * *"
    assert crons["rescue_stalled_jobs"] == "* * * * *"


async def test_a_tick_the_database_refuses_stops_neither_the_scheduler_nor_the_worker(
    sync_conn, app, caplog
):
    """A trigger of someone's refusing our job: said once, tried again, deferred once gone."""
    import asyncio

    from qlarius_jobs.worker.procrastinate_adapter import pool

    sync_conn.execute(
        "UPDATE qlarius_schedules SET last_tick_at = last_tick_at - interval '2 hours' "
        "WHERE task_name = 'backfill_missing_snapshots'"
    )
    sync_conn.execute(
        "CREATE FUNCTION refuse_backfills() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.task_name = 'backfill_missing_snapshots' THEN RAISE EXCEPTION 'no backfill'; "
        "END IF; RETURN NEW; END $$"
    )
    sync_conn.execute(
        "CREATE TRIGGER refuse_backfills BEFORE INSERT ON procrastinate_jobs "
        "FOR EACH ROW EXECUTE FUNCTION refuse_backfills()"
    )
    scheduler = Scheduler(
        pool(app), {"backfill_missing_snapshots": "maintenance"}, poll_seconds=0.2
    )
    running = asyncio.create_task(scheduler.run())
    try:
        await asyncio.sleep(1.5)
        assert not running.done()
        assert jobs(sync_conn, "backfill_missing_snapshots") == []
        said = [e for e in log_events(caplog) if e["event"] == "schedules not deferred"]
        assert len(said) == 1 and "no backfill" in said[0]["error"]
    finally:
        sync_conn.execute("DROP TRIGGER refuse_backfills ON procrastinate_jobs")
        sync_conn.execute("DROP FUNCTION refuse_backfills()")
    for _ in range(40):
        if jobs(sync_conn, "backfill_missing_snapshots"):
            break
        await asyncio.sleep(0.1)
    running.cancel()
    assert len(jobs(sync_conn, "backfill_missing_snapshots")) == 1


@pytest.mark.slow
def test_two_workers_back_after_an_outage_run_the_missed_hourly_backfill_once(sync_conn):
    """Every worker was down for five hours: the two that start run the backfill once, and a
    third started later does not run it again."""
    controls.apply_schedules(
        sync_conn, dict.fromkeys(["rescue_stalled_jobs", "prune_finished_jobs"]), "test"
    )
    latest = _latest_tick(HOURLY)
    sync_conn.execute(
        "UPDATE qlarius_schedules SET last_tick_at = %s "
        "WHERE task_name = 'backfill_missing_snapshots'",
        (latest - dt.timedelta(hours=5),),
    )
    workers = [WorkerProcess("--queues", "maintenance") for _ in range(2)]
    try:
        for _ in range(300):
            runs = jobs(sync_conn, "backfill_missing_snapshots")
            if runs and runs[0]["status"] == "succeeded":
                break
            time.sleep(0.1)
        workers.append(WorkerProcess("--queues", "maintenance"))
        time.sleep(4)
    finally:
        outputs = [w.stop() for w in workers]
    [run] = jobs(sync_conn, "backfill_missing_snapshots")
    assert run["status"] == "succeeded", outputs[0][-2000:]
    assert run["args"] == {"timestamp": int(latest.timestamp())}
    [tick] = controls.ticks(sync_conn, "backfill_missing_snapshots")
    assert (tick["missed"], tick["job_id"]) == (4, run["id"])
    caught_up = [o for o in outputs if "one job catches them up" in o]
    assert len(caught_up) == 1  # said by the process that deferred it
