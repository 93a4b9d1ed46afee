"""Queues (and tasks) paused and resumed from the database: every worker process, direct or
behind PgBouncer, starts no new job of a paused queue, lets its running jobs finish, and
starts again within 2 s of the resume; the pause outlives the workers."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import psycopg
import pytest

from qlarius_jobs.ops import controls
from tests.integration.support import (
    TEST_DB,
    TargetRowHolder,
    WorkerProcess,
    cli,
    statuses,
    wait_for,
)


def _workers_up(conn: psycopg.Connection, count: int) -> Callable[[], bool]:
    return lambda: conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0] >= count


def _defer_prunes(conn: psycopg.Connection, count: int) -> None:
    conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "SELECT 'maintenance', 'prune_finished_jobs', '{}' FROM generate_series(1, %s)",
        (count,),
    )


def _fetch(conn: psycopg.Connection, queues: list[str] | None) -> str | None:
    row = conn.execute("SELECT task_name FROM qlarius_fetch_job(%s, NULL)", (queues,)).fetchone()
    return row[0] if row else None


def test_the_fetch_leaves_paused_queues_and_tasks_waiting_and_no_one_elses_jobs(sync_conn):
    sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES "
        "('maintenance', 'prune_finished_jobs', '{}'), "
        "('maintenance', 'rescue_stalled_jobs', '{}'), "
        "('maintenance', 'app_task_of_their_own', '{}')"
    )
    actor = "test"
    controls.set_queue_paused(sync_conn, "maintenance", True, actor)
    assert _fetch(sync_conn, ["maintenance"]) is None
    assert _fetch(sync_conn, None) is None
    # Procrastinate's own fetch (an application's workers) is not ours to change
    their = sync_conn.execute(
        "SELECT task_name FROM procrastinate_fetch_job_v2(ARRAY['maintenance'], NULL)"
    ).fetchone()
    assert their == ("prune_finished_jobs",)
    sync_conn.execute("UPDATE procrastinate_jobs SET status = 'todo', worker_id = NULL")
    controls.set_queue_paused(sync_conn, "maintenance", False, actor)
    controls.set_task_paused(sync_conn, "prune_finished_jobs", True, actor)
    assert _fetch(sync_conn, ["maintenance"]) == "rescue_stalled_jobs"  # the others go on
    assert statuses(sync_conn, "prune_finished_jobs") == ["todo"]
    [queue] = [q for q in controls.queues(sync_conn) if q["queue_name"] == "maintenance"]
    assert (queue["paused"], queue["updated_by"]) == (False, actor)
    with pytest.raises(controls.ControlError, match="no such queue: nope"):
        controls.set_queue_paused(sync_conn, "nope", True, actor)
    with pytest.raises(controls.ControlError, match="concurrency must be 1 to 10000"):
        controls.set_queue_concurrency(sync_conn, "maintenance", 0, actor)


@pytest.mark.slow
def test_a_queue_paused_by_sql_starts_nothing_on_two_workers_then_drains_after_resume(
    sync_conn, pooled_conninfo
):
    """One worker process straight to the server, one behind a transaction-mode PgBouncer
    (no LISTEN there): both leave the paused queue's jobs waiting, both start again within
    2 s of the resume."""
    controls.apply_schedules(sync_conn, dict.fromkeys(controls.schedule_names()), "test")
    sync_conn.execute(
        "UPDATE qlarius_queue_controls SET paused = true WHERE queue_name = 'maintenance'"
    )
    pooled_env = {
        **os.environ,
        "QLARIUS_DATABASE_URL": pooled_conninfo,
        "QLARIUS_BEHIND_POOLER": "true",
    }
    workers = [
        WorkerProcess("--queues", "maintenance=2"),
        WorkerProcess("--queues", "maintenance=2", env=pooled_env),
    ]
    try:
        wait_for(_workers_up(sync_conn, 2), 30, "both workers registered")
        _defer_prunes(sync_conn, 20)
        time.sleep(3)
        assert set(statuses(sync_conn, "prune_finished_jobs")) == {"todo"}
        sync_conn.execute(
            "UPDATE qlarius_queue_controls SET paused = false WHERE queue_name = 'maintenance'"
        )
        started_after = wait_for(
            lambda: "todo" not in statuses(sync_conn, "prune_finished_jobs"),
            10,
            "every waiting job started after the resume",
        )
        assert started_after < 2.5, f"the last job started {started_after:.1f} s after resume"
        wait_for(
            lambda: set(statuses(sync_conn, "prune_finished_jobs")) == {"succeeded"}, 30, "done"
        )
        heard_after = wait_for(
            lambda: all("queue resumed" in w.output() for w in workers), 5, "both heard it"
        )
        assert started_after + heard_after < 2.5
        # the pooled worker alone: paused again, then resumed, it drains on its own
        sync_conn.execute(
            "UPDATE qlarius_queue_controls SET paused = true WHERE queue_name = 'maintenance'"
        )
        time.sleep(1.5)
        workers[0].stop()
        _defer_prunes(sync_conn, 5)
        time.sleep(2)
        assert statuses(sync_conn, "prune_finished_jobs").count("todo") == 5
        sync_conn.execute(
            "UPDATE qlarius_queue_controls SET paused = false WHERE queue_name = 'maintenance'"
        )
        behind_the_pooler = wait_for(
            lambda: "todo" not in statuses(sync_conn, "prune_finished_jobs"), 10, "drained"
        )
        assert behind_the_pooler < 2.5, f"{behind_the_pooler:.1f} s behind the pooler"
    finally:
        for worker in workers:
            worker.stop()


@pytest.mark.slow
def test_pausing_lets_the_running_job_finish_and_the_pause_survives_a_restart(sync_conn):
    for target in (1, 2):
        sync_conn.execute("INSERT INTO targets (id, title) VALUES (%s, 't')", (target,))
    holder = TargetRowHolder(sync_conn, 1)
    worker = WorkerProcess("--queues", "targets")
    try:
        sync_conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "VALUES ('targets', 'populate_target', '{\"target_id\": 1}')"
        )
        wait_for(lambda: statuses(sync_conn, "populate_target") == ["doing"], 30, "started")
        run = cli("queues", "pause", "targets")
        assert run.returncode == 0 and "paused" in run.stdout, run.stderr
        sync_conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "VALUES ('targets', 'populate_target', '{\"target_id\": 2}')"
        )
        holder.release()  # the running populate goes on and finishes
        wait_for(lambda: statuses(sync_conn, "populate_target")[0] == "succeeded", 30, "finished")
        time.sleep(2)
        assert statuses(sync_conn, "populate_target") == ["succeeded", "todo"]
        first_output = worker.stop()
        assert "queue paused: no new job starts" in first_output, first_output[-2000:]
        worker = WorkerProcess("--queues", "targets")  # restarted: still paused
        wait_for(_workers_up(sync_conn, 1), 30, "the new worker registered")
        time.sleep(2)
        assert statuses(sync_conn, "populate_target") == ["succeeded", "todo"]
        listing = cli("queues", "list").stdout
        [line] = [ln for ln in listing.splitlines() if ln.strip().startswith("targets")]
        assert "PAUSED" in line and "cli:" in line, listing
        as_json = cli("queues", "list", "--json").stdout
        [targets] = [q for q in json.loads(as_json) if q["queue_name"] == "targets"]
        assert targets["paused"] and targets["waiting"] >= 1 and targets["running"] == 0
        sync_conn.execute(
            "UPDATE qlarius_queue_controls SET paused = false WHERE queue_name = 'targets'"
        )
        wait_for(
            lambda: statuses(sync_conn, "populate_target") == ["succeeded", "succeeded"],
            10,
            "the waiting populate ran after the resume",
        )
    finally:
        holder.release()
        output = worker.stop()
    assert '"paused": ["targets"]' in output  # it said so when it started


@pytest.mark.slow
def test_a_queue_concurrency_override_caps_each_worker_and_lifts(sync_conn):
    """Concurrency 1 for targets: a worker started with 3 runs one populate at a time; set
    back to the workers' own, the second starts at once."""
    holders = [TargetRowHolder(sync_conn, t) for t in (1, 2)]
    controls.set_queue_concurrency(sync_conn, "targets", 1, "test")
    worker = WorkerProcess("--queues", "targets=3")
    try:
        sync_conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES "
            "('targets', 'populate_target', '{\"target_id\": 1}'), "
            "('targets', 'populate_target', '{\"target_id\": 2}')"
        )
        wait_for(lambda: "doing" in statuses(sync_conn, "populate_target"), 30, "one started")
        time.sleep(2)
        assert sorted(statuses(sync_conn, "populate_target")) == ["doing", "todo"]
        run = cli("queues", "concurrency", "targets", "default")
        assert run.returncode == 0, run.stderr
        wait_for(
            lambda: statuses(sync_conn, "populate_target") == ["doing", "doing"],
            3,
            "the second started once the cap was lifted",
        )
    finally:
        for holder in holders:
            holder.release()
        worker.stop()


def test_the_queue_commands_say_what_is_wrong_in_one_line(sync_conn):
    for args, message in (
        (["queues", "pause", "nope"], "no such queue: nope"),
        (["queues", "concurrency", "targets", "x"], "concurrency must be a number"),
        (["tasks", "pause", "nope"], "no such task: nope"),
    ):
        run = cli(*args)
        assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
        assert message in run.stderr
    assert not sync_conn.execute(
        "SELECT 1 FROM qlarius_queue_controls WHERE paused OR concurrency IS NOT NULL "
        "UNION ALL SELECT 1 FROM qlarius_task_controls WHERE paused"
    ).fetchall()
    with psycopg.connect(TEST_DB.conninfo) as conn:
        assert controls.tasks(conn)  # a row for every task


@pytest.mark.slow
def test_a_higher_concurrency_found_at_start_raises_the_workers_own(sync_conn):
    """Started with 1, raised to 3 by the queue's row: two populates at once, and the third
    waits (the cap is the concurrency whose last slot is kept for the syncs, last_slot.py)."""
    holders = [TargetRowHolder(sync_conn, t) for t in (1, 2, 3)]
    sync_conn.execute(
        "UPDATE qlarius_queue_controls SET concurrency = 3 WHERE queue_name = 'targets'"
    )
    worker = WorkerProcess("--queues", "targets=1")
    try:
        sync_conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES "
            "('targets', 'populate_target', '{\"target_id\": 1}'), "
            "('targets', 'populate_target', '{\"target_id\": 2}'), "
            "('targets', 'populate_target', '{\"target_id\": 3}')"
        )
        wait_for(
            lambda: statuses(sync_conn, "populate_target") == ["doing", "doing", "todo"],
            30,
            "two populates running at once",
        )
        time.sleep(1.0)  # what a third fetch would have started by now
        assert statuses(sync_conn, "populate_target") == ["doing", "doing", "todo"]
    finally:
        for holder in holders:
            holder.release()
        worker.stop()


def test_plain_sql_records_its_database_user(sync_conn):
    sync_conn.execute("UPDATE qlarius_queue_controls SET paused = true WHERE queue_name = 'offers'")
    [(by, user)] = sync_conn.execute(
        "SELECT updated_by, current_user FROM qlarius_queue_controls WHERE queue_name = 'offers'"
    ).fetchall()
    assert by == user
    [paused] = sync_conn.execute("SELECT kind, name FROM qlarius_paused").fetchall()
    assert paused == ("queue", "offers")


async def test_runs_until_empty_end_leaving_a_paused_queues_jobs_waiting(sync_conn, app):
    from qlarius_jobs import testing

    controls.apply_schedules(sync_conn, dict.fromkeys(controls.schedule_names()), "test")
    controls.set_queue_paused(sync_conn, "maintenance", True, "test")
    _defer_prunes(sync_conn, 2)
    run = cli("worker", "--queues", "maintenance", "--until-empty")
    assert run.returncode == 0, run.stderr[-2000:]
    outcomes = await testing.drain(app, ["maintenance"])
    assert outcomes["succeeded"] == 0
    assert statuses(sync_conn, "prune_finished_jobs") == ["todo", "todo"]
    assert testing.work_left(sync_conn, ["maintenance"]) == 0
    assert testing.work_left(sync_conn, ["maintenance"], later=True) == 2
