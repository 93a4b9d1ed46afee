"""Oban-grade operations: error history, time limits, rescue, pruning, status, queues, ticks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from qlarius_jobs.jobs import catalog
from qlarius_jobs.jobs.catalog import defer_job
from qlarius_jobs.ops import controls
from qlarius_jobs.worker import runner
from tests.integration.support import (
    TEST_DB,
    TargetRowHolder,
    WorkerProcess,
    defer_with_cli,
    drain,
    insert_job_by_hand,
    jobs,
    log_events,
    wait_for,
)

BIN = Path(sys.executable).parent


def fast_ops_env() -> dict[str, str]:
    """The environment of now: the test's own database is in it."""
    return {
        **os.environ,
        "QLARIUS_LOG_FORMAT": "json",
        "QLARIUS_HEARTBEAT_SECONDS": "1",
        "QLARIUS_STALLED_AFTER_SECONDS": "3",
    }


@pytest.fixture(autouse=True)
def rescue_every_second(sync_conn) -> None:
    """Stalled jobs are rescued within a second or two of their worker's heartbeat stopping."""
    controls.apply_schedules(sync_conn, {"rescue_stalled_jobs": "* * * * * *"}, "test")


async def _defer(task: str, **kwargs) -> int | None:
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        job_id = await defer_job(conn, task, **kwargs)
        await conn.commit()
        return job_id


def _worker(*args: str, env: dict | None = None) -> WorkerProcess:
    return WorkerProcess(*args, env=env or fast_ops_env())


def _errors(conn, job_id: int) -> list[tuple]:
    return conn.execute(
        "SELECT attempt, error_type, message, traceback FROM qlarius_job_errors "
        "WHERE job_id = %s ORDER BY attempt",
        (job_id,),
    ).fetchall()


def test_queues_default_and_settable(settings):
    specs = catalog.specs()
    assert runner.queues_to_run(specs) == {
        "default": 10,
        "targets": 5,
        "offers": 10,
        "maintenance": 3,
    }
    assert runner.queues_to_run(specs, "targets,offers=4") == {"targets": 5, "offers": 4}
    settings.set(queues="default=2,maintenance=1")
    assert runner.queues_to_run(specs) == {"default": 2, "maintenance": 1}
    assert runner.queues_to_run(specs, "targets") == {"targets": 1}  # not configured: 1
    with pytest.raises(ValueError, match="positive integer"):
        runner.queues_to_run(specs, "offers=0")
    with pytest.raises(ValueError, match="unknown queue 'nosuch'"):
        runner.queues_to_run(specs, "nosuch")


async def test_every_failed_attempt_is_recorded_with_the_job(app, sync_conn):
    sync_conn.execute("INSERT INTO targets (id, title) VALUES (1, 't')")
    sync_conn.execute(
        "CREATE FUNCTION pg_temp.fail() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$"
    )
    sync_conn.execute(
        "CREATE TRIGGER test_fail BEFORE UPDATE ON targets FOR EACH ROW EXECUTE FUNCTION pg_temp.fail()"
    )
    try:
        job_id = await _defer("populate_target", target_id=1)
        bad = insert_job_by_hand("populate_target", {"target_id": "one"})
        await drain()
    finally:
        sync_conn.execute("DROP TRIGGER test_fail ON targets")
    errors = _errors(sync_conn, job_id)
    assert [e[0] for e in errors] == [1, 2, 3]
    assert {e[1] for e in errors} == {"RaiseException"}
    assert all("disk on fire" in e[2] and "Traceback" in e[3] for e in errors)
    [(attempt, kind, message, _)] = _errors(sync_conn, bad)
    assert (attempt, kind) == (1, "InvalidJobArguments") and "target_id" in message
    history = sync_conn.execute(
        "SELECT status, errors FROM qlarius_jobs_with_errors WHERE id = %s", (job_id,)
    ).fetchone()
    assert history[0] == "failed" and [e["attempt"] for e in history[1]] == [1, 2, 3]
    recent = sync_conn.execute("SELECT job_id FROM qlarius_recent_job_errors").fetchall()
    assert len(recent) == 4


async def test_a_job_over_its_time_limit_is_cancelled_and_counts_as_failed(
    app, sync_conn, settings
):
    settings.set(task_timeouts={"populate_target": 0.5})
    holder = TargetRowHolder(sync_conn)  # every attempt blocks
    try:
        job_id = await _defer("populate_target", target_id=1)
        started = time.monotonic()
        await drain()
        assert time.monotonic() - started < 20
    finally:
        holder.release()
    [job] = jobs(sync_conn, "populate_target")
    assert job["status"] == "failed" and job["attempts"] == 3
    errors = _errors(sync_conn, job_id)
    assert [e[1] for e in errors] == ["JobTimeout"] * 3
    assert "exceeded its time limit of 0.5 s" in errors[0][2]
    # the cancelled transaction left no lock behind: the target can be populated now
    settings.set(task_timeouts={})
    await _defer("populate_target", target_id=1)
    await drain()
    assert jobs(sync_conn, "populate_target")[-1]["status"] == "succeeded"


async def test_pruning_deletes_old_finished_jobs_in_batches(app, sync_conn, settings, caplog):
    settings.set(prune_batch_size=2)
    ids = [await _defer("populate_target", target_id=n) for n in range(1, 7)]
    await drain()  # six finished jobs (unknown targets: succeeded with a warning)
    sync_conn.execute(
        "INSERT INTO qlarius_job_errors (job_id, task_name, attempt, error_type, message) "
        "VALUES (%s, 'populate_target', 1, 'X', 'old')",
        (ids[0],),
    )
    old = ids[:4]
    sync_conn.execute(
        "UPDATE procrastinate_events SET at = now() - interval '8 days' WHERE job_id = ANY(%s)",
        (old,),
    )
    waiting = await _defer(  # waiting (scheduled later): never pruned, not run by the drain
        "populate_target", target_id=99, schedule_in={"hours": 1}
    )
    sync_conn.execute(
        "UPDATE procrastinate_events SET at = now() - interval '30 days' WHERE job_id = %s",
        (waiting,),
    )
    sync_conn.execute(
        "INSERT INTO backfill_runs (started_at) VALUES (now() - interval '100 days'), (now())"
    )
    caplog.clear()
    await _defer("prune_finished_jobs")
    await drain()
    remaining = {j["id"] for j in jobs(sync_conn)}
    assert not (set(old) & remaining)
    assert set(ids[4:]) | {waiting} <= remaining
    assert sync_conn.execute("SELECT count(*) FROM qlarius_job_errors").fetchone()[0] == 0
    assert sync_conn.execute("SELECT count(*) FROM backfill_runs").fetchone()[0] == 1
    summary = next(e for e in log_events(caplog) if e["event"] == "prune_finished_jobs finished")
    # the walk stops at the first job deferred within the retention (ids[4]): the four old
    # ones are its only candidates, two per batch; the recent ones are never read
    assert summary["horizon_job_id"] == ids[4]
    assert summary["jobs_deleted"] == 4 and summary["batches"] == 2


def test_status_shows_every_section_as_json_and_tables(sync_conn):
    worker_id = sync_conn.execute(
        "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '10 minutes') "
        "RETURNING id"
    ).fetchone()[0]
    job_id = sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, worker_id) "
        "VALUES ('targets', 'populate_target', '{\"target_id\": 1}', 'doing', %s) RETURNING id",
        (worker_id,),
    ).fetchone()[0]
    sync_conn.execute(
        "INSERT INTO qlarius_job_errors (job_id, task_name, attempt, error_type, message) "
        "VALUES (%s, 'populate_target', 1, 'ValueError', 'boom')",
        (job_id,),
    )
    out = subprocess.run(
        [str(BIN / "qlarius-jobs"), "status", "--json"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert set(status) == {
        "jobs",
        "stalled_jobs",
        "null_snapshots",
        "pending_work",
        "backfill_runs",
        "schedules",
        "queues",
        "paused",
        "recent_errors",
    }
    assert {row["kind"] for row in status["pending_work"]} == {
        "sync",
        "reconcile",
        "target",
        "campaign",
    }
    assert status["jobs"] == [
        {"queue": "targets", "status": "doing", "jobs": 1, "earliest_scheduled": None}
    ]
    assert [s["job_id"] for s in status["stalled_jobs"]] == [job_id]
    assert [e["message"] for e in status["recent_errors"]] == ["boom"]
    periodic = {p["task_name"]: p for p in status["schedules"]}
    assert set(periodic) == {
        "backfill_missing_snapshots",
        "rescue_stalled_jobs",
        "prune_finished_jobs",
    }
    assert periodic["backfill_missing_snapshots"]["next_run"].endswith(":00:00+00:00")
    tables = subprocess.run(
        [str(BIN / "qlarius-jobs"), "status"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "Stalled jobs" in tables and "Schedules" in tables and "boom" in tables


@pytest.mark.slow
def test_a_killed_workers_job_is_rescued_once_and_a_live_one_is_left_alone(sync_conn):
    holder = TargetRowHolder(sync_conn)
    doomed = _worker("--queues", "targets")
    rescuer = None
    try:
        wait_for(
            lambda: (
                sync_conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0] >= 1
            ),
            30,
            "the first worker",
        )
        defer_with_cli("populate_target", {"target_id": 1}, env=fast_ops_env())
        wait_for(
            lambda: jobs(sync_conn, "populate_target")[0]["status"] == "doing",
            30,
            "the job to start",
        )
        rescuer = _worker("--queues", "maintenance,targets")
        time.sleep(6)  # twice the stalled threshold: a live worker's job is not touched
        [job] = jobs(sync_conn, "populate_target")
        assert job["status"] == "doing" and job["attempts"] == 0
        assert _errors(sync_conn, job["id"]) == []

        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        wait_for(lambda: _errors(sync_conn, job["id"]) != [], 30, "the rescue")
        holder.release()  # let the rescued run through
        wait_for(
            lambda: jobs(sync_conn, "populate_target")[0]["status"] == "succeeded",
            30,
            "the rescued job to succeed",
        )
    finally:
        holder.release()
        if doomed.poll() is None:
            doomed.kill()
        if rescuer is not None:
            output = rescuer.stop(timeout=30)
    [job] = jobs(sync_conn, "populate_target")
    assert job["attempts"] == 2  # the killed run counts as one attempt
    [(attempt, kind, message, _)] = _errors(sync_conn, job["id"])
    assert (attempt, kind) == (1, "WorkerLost") and "queued again" in message
    assert sync_conn.execute("SELECT population_status FROM targets").fetchone()[0] == "populated"
    assert "stalled job" in output


@pytest.mark.slow
def test_a_second_signal_exits_at_once(sync_conn):
    holder = TargetRowHolder(sync_conn)
    proc = _worker("--queues", "targets", "--grace", "60")
    try:
        defer_with_cli("populate_target", {"target_id": 1}, env=fast_ops_env())
        wait_for(
            lambda: jobs(sync_conn, "populate_target")[0]["status"] == "doing",
            30,
            "the job to start",
        )
        proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert proc.poll() is None  # the first signal waits for the job
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 130
        assert time.monotonic() - started < 5
    finally:
        holder.release()
        if proc.poll() is None:
            proc.kill()


def test_behind_a_transaction_pooler_workers_poll_and_never_prepare(sync_conn, settings):
    from qlarius_jobs.app import build_app

    settings.set(behind_pooler=True)
    pooled = build_app()
    assert pooled.worker_defaults["listen_notify"] is False
    assert pooled.connector._pool_args["kwargs"]["prepare_threshold"] is None
    subprocess.run(
        [
            str(BIN / "procrastinate"),
            "--app=qlarius_jobs.app.app",
            "defer",
            "backfill_missing_snapshots",
            "{}",
        ],
        env=fast_ops_env(),
        check=True,
        capture_output=True,
        timeout=60,
    )
    out = subprocess.run(
        [str(BIN / "qlarius-jobs"), "worker", "--queues", "maintenance", "--until-empty"],
        env={**fast_ops_env(), "QLARIUS_BEHIND_POOLER": "true"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    deferred = [j for j in jobs(sync_conn, "backfill_missing_snapshots") if not j["args"]]
    assert [j["status"] for j in deferred] == ["succeeded"]
