"""Every door checks a job's arguments before anything is written, duplicates say which job
they duplicate, read-only commands change nothing, and operators have `qlarius-jobs jobs`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from qlarius_jobs.jobs.arguments import InvalidJobArguments
from qlarius_jobs.ops import controls
from tests.integration.support import cli, jobs, unmigrated_database

BIN = Path(sys.executable).parent


def _procrastinate_defer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "procrastinate"), "--app=qlarius_jobs.app.app", "defer", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "QLARIUS_LOG_FORMAT": "json"},
    )


@pytest.mark.parametrize(
    ("task", "args", "message"),
    [
        (
            "populate_target",
            {"target_id": "abc"},
            "target_id: Input should be a valid integer (got 'abc')",
        ),
        ("populate_target", {"target_id": -5}, "target_id: Input should be greater than 0"),
        ("populate_target", {"target_id": 0}, "target_id: Input should be greater than 0"),
        ("populate_target", {}, "target_id: Field required"),
        (
            "populate_target",
            {"target_id": 1, "force": True},
            "force: Extra inputs are not permitted",
        ),
        (
            "populate_target",
            {"target_id": 2**63},
            "target_id: Input should be less than or equal to",
        ),
        (
            "sync_me_file_to_target_populations",
            {"me_file_id": "42"},
            "me_file_id: Input should be a valid integer",
        ),
        (
            "backfill_missing_snapshots",
            {"timestamp": "yesterday"},
            "timestamp: Input should be a valid integer",
        ),
        (
            "backfill_snapshot_chunk",
            {"run_id": 1, "table": "offers", "first_id": 1, "last_id": 2**64},
            "last_id: Input should be less than or equal to 9223372036854775807",
        ),
        (
            "create_initial_pending_offers",
            {"campaign_id": 1, "waiting_since": 1},
            "waiting_since: Extra inputs",
        ),
    ],
)
def test_procrastinate_defer_refuses_bad_arguments_in_one_line(sync_conn, task, args, message):
    run = _procrastinate_defer(task, json.dumps(args))
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last == f"{task}: invalid arguments: {message}" or last.startswith(
        f"{task}: invalid arguments: {message}"
    ), run.stderr
    assert "Traceback" not in run.stderr and "pydantic" not in run.stderr
    assert jobs(sync_conn) == []


async def test_the_python_api_of_procrastinate_refuses_them_too(app, sync_conn):
    with pytest.raises(InvalidJobArguments, match="target_id: Input should be greater than 0"):
        await app.configure_task("populate_target").defer_async(target_id=-1)
    with pytest.raises(InvalidJobArguments, match="me_file_id"):
        await app.configure_task("sync_me_file_to_target_populations").batch_defer_async(
            {"me_file_id": 1}, {"me_file_id": "2"}
        )
    assert jobs(sync_conn) == []  # the good one of the batch was not written either


def test_a_duplicate_says_which_job_it_duplicates(sync_conn):
    first = _procrastinate_defer("backfill_missing_snapshots", "{}")
    assert first.returncode == 0, first.stderr
    [job] = jobs(sync_conn)
    second = _procrastinate_defer("backfill_missing_snapshots", "{}")
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        "Launching a job: backfill_missing_snapshots()",
        f"backfill_missing_snapshots: already enqueued as job #{job['id']}",
    ]
    ignored = _procrastinate_defer("--ignore-already-enqueued", "backfill_missing_snapshots", "{}")
    assert ignored.returncode == 0
    assert f"already enqueued as job #{job['id']} (ignored)" in ignored.stderr
    assert len(jobs(sync_conn)) == 1


def test_status_and_worker_never_migrate_a_schema_that_is_behind():
    with unmigrated_database() as behind:
        for command in (["status"], ["status", "--json"], ["worker"], ["jobs", "list"]):
            run = cli(*command, QLARIUS_DATABASE_URL=behind)
            assert run.returncode == 2, (command, run.stderr)
            lines = run.stderr.strip().splitlines()
            assert len(lines) == 1, lines
            assert "the database schema is behind this version of qlarius-jobs" in lines[0]
            assert "run `qlarius-jobs migrate` first" in lines[0]
        with psycopg.connect(behind) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            ).fetchone()[0]
        assert tables == 0  # nothing was created


def test_status_json_has_full_names_and_iso_times(sync_conn):
    sync_conn.execute(
        "INSERT INTO backfill_runs (found_populations, found_offers, found_ad_events, "
        "updated_populations, updated_offers, updated_ad_events, elapsed_ms) "
        "VALUES (3, 2, 1, 3, 2, 1, 12)"
    )
    run = cli("status", "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    [backfill] = data["backfill_runs"]
    assert backfill["found_populations"] == 3 and backfill["updated_ad_events"] == 1
    assert "found_pop" not in backfill and "upd_pop" not in backfill
    assert "T" in backfill["started_at"] and backfill["started_at"].endswith("+00:00")
    assert all("T" in p["next_run"] for p in data["schedules"])
    assert "oldest_pending_seconds" in data["pending_work"][0]


def test_jobs_commands_list_show_retry_cancel_with_one_line_errors(sync_conn):
    ids = [
        sync_conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts) "
            "VALUES ('targets', 'populate_target', %s, %s, %s) RETURNING id",
            (json.dumps({"target_id": n}), status, attempts),
        ).fetchone()[0]
        for n, status, attempts in ((1, "failed", 3), (2, "todo", 0), (3, "succeeded", 1))
    ]
    failed, waiting, done = ids
    sync_conn.execute(
        "INSERT INTO qlarius_job_errors (job_id, task_name, attempt, error_type, message) "
        "VALUES (%s, 'populate_target', 3, 'RuntimeError', 'boom')",
        (failed,),
    )
    listed = cli("jobs", "list", "--state", "failed", "--json")
    assert [j["id"] for j in json.loads(listed.stdout)] == [failed]
    page = cli("jobs", "list", "--limit", "2")
    assert f"next page: --before {waiting}" in page.stdout
    assert str(failed) in cli("jobs", "list", "--before", str(waiting)).stdout
    shown = cli("jobs", "show", str(failed))
    assert "attempt 3" in shown.stdout and "RuntimeError: boom" in shown.stdout
    assert cli("jobs", "retry", str(failed)).stdout.strip() == f"job #{failed} waits again"
    row = sync_conn.execute(
        "SELECT status::text, attempts FROM procrastinate_jobs WHERE id = %s", (failed,)
    ).fetchone()
    assert row == ("todo", 3)  # one more attempt, the history kept
    assert cli("jobs", "cancel", str(waiting)).returncode == 0
    for args, code, line in (
        (
            ["retry", str(done)],
            1,
            f"job #{done} is succeeded; only failed, cancelled, aborted jobs can be retried",
        ),
        (
            ["cancel", str(done)],
            1,
            f"job #{done} is succeeded; only waiting (todo) jobs can be cancelled",
        ),
        (["retry", "9999"], 1, "no job #9999"),
        (["show", "9999"], 1, "no job #9999"),
        (["cancel", "abc"], 2, "'abc' is not a job id (a positive integer)"),
        (["retry", str(2**63)], 2, f"'{2**63}' is not a job id (a positive integer)"),
    ):
        run = cli("jobs", *args)
        assert run.returncode == code, (args, run.stderr)
        assert run.stderr.strip() == f"qlarius-jobs: {line}", run.stderr


async def test_until_empty_waits_for_a_job_held_behind_a_running_ones_lock(sync_conn):
    sync_conn.execute("INSERT INTO targets (id, title) VALUES (1, 't')")
    # a populate of target 1 runs elsewhere (its lock is taken); a second one waits behind it
    running = sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, lock) "
        "VALUES ('targets', 'populate_target', '{\"target_id\": 1}', 'doing', 'populate_target:1') "
        "RETURNING id"
    ).fetchone()[0]
    waiting = sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "VALUES ('targets', 'populate_target', '{\"target_id\": 1}') RETURNING id"
    ).fetchone()[0]
    worker = subprocess.Popen(
        [str(BIN / "qlarius-jobs"), "worker", "--queues", "targets", "--until-empty"],
        env={**os.environ, "QLARIUS_LOG_FORMAT": "json"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await asyncio.sleep(4)
        assert worker.poll() is None  # a due job is left: it does not stop
        sync_conn.execute(
            "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", (running,)
        )
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    state = sync_conn.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (waiting,)
    ).fetchone()[0]
    assert state == "succeeded"


def test_a_job_writes_one_line_and_idle_ticks_and_registration_write_none(sync_conn):
    sync_conn.execute("INSERT INTO targets (id, title) VALUES (1, 't')")
    sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES "
        "('targets', 'populate_target', '{\"target_id\": 1}'), "
        "('maintenance', 'rescue_stalled_jobs', '{}')"
    )
    # no periodic job of its own: only the two jobs above
    controls.apply_schedules(sync_conn, dict.fromkeys(controls.schedule_names()), "test")
    run = cli("worker", "--queues", "targets,maintenance", "--until-empty")
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    job_lines = [e for e in events if "job_id" in e]
    assert [e["event"] for e in job_lines] == ["populate_target finished"], job_lines
    [end] = job_lines
    assert end["outcome"] == "succeeded" and end["attempt"] == 1 and end["elapsed_ms"] >= 0
    assert "inserted" in end and "members" in end
    assert not [e for e in events if "egistering" in e["event"] or "action" in e]
    assert len(events) <= 6, events  # starting, the job, stopping


async def test_a_failing_job_writes_one_line_per_attempt_with_its_outcome(sync_conn):
    sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES "
        "('targets', 'populate_target', '{\"target_id\": 1, \"x\": \"%s\"}')" % ("y" * 100_000)
    )
    run = cli("worker", "--queues", "targets", "--until-empty")
    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    [end] = [e for e in events if "job_id" in e]
    assert end["event"] == "populate_target failed" and end["outcome"] == "failed"
    assert "Extra inputs are not permitted" in end["error"]
    assert len(run.stderr) < 5_000  # the 100 kB argument is not copied into the log


@pytest.mark.parametrize(
    ("options", "line"),
    [
        (
            ["--queue", "nosuch", "populate_target", '{"target_id": 1}'],
            "populate_target runs on queue targets, not 'nosuch'",
        ),
        (
            ["--lock", "mine", "populate_target", '{"target_id": 1}'],
            "populate_target: its locks are derived from its arguments",
        ),
        (["--unknown", "populate_targets", '{"target_id": 1}'], "no such task: populate_targets"),
        (
            ["populate_target", '{"target_id": 1, "x\\ny": 2}'],
            "populate_target: invalid arguments: 'x\\ny': Extra inputs",
        ),
        (
            ["populate_target", '{"target_id": 1, "' + "k" * 3000 + '": 2}'],
            "populate_target: invalid arguments: 'kkkk",
        ),
    ],
)
def test_procrastinate_defer_options_cannot_slip_past_the_door(sync_conn, options, line):
    run = _procrastinate_defer(*options)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(line) and len(last) < 400, last
    assert jobs(sync_conn) == []


def test_rows_written_by_hand_fail_once_or_are_refused_by_the_database(sync_conn):
    with pytest.raises(psycopg.errors.CheckViolation):
        sync_conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "VALUES ('targets', 'populate_target', '[1]')"
        )
    sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "VALUES ('targets', 'populate_target', '{\"target_id\": 1, \"context\": 1}')"
    )
    run = cli("worker", "--queues", "targets", "--until-empty")
    assert run.returncode == 0, run.stderr
    [job] = jobs(sync_conn, "populate_target")
    assert job["status"] == "failed" and job["attempts"] == 1  # not retried
    message = sync_conn.execute("SELECT message FROM qlarius_job_errors").fetchone()[0]
    assert "context: Extra inputs are not permitted" in message


def test_until_empty_stops_on_sigterm_even_with_jobs_held_behind_a_lock(sync_conn):
    sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, lock) "
        "VALUES ('targets', 'populate_target', '{\"target_id\": 1}', 'doing', 'populate_target:1')"
    )
    sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "VALUES ('targets', 'populate_target', '{\"target_id\": 1}')"
    )
    worker = subprocess.Popen(
        [str(BIN / "qlarius-jobs"), "worker", "--queues", "targets", "--until-empty"],
        env={**os.environ, "QLARIUS_LOG_FORMAT": "json"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)
        assert worker.poll() is None
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
    finally:
        if worker.poll() is None:
            worker.kill()


def test_ports_and_grace_are_checked_before_anything_starts():
    for args, line in (
        (["web", "--port", "70000"], "argument --port: '70000' is not a port (1-65535)"),
        (["worker", "--health-port", "0"], "argument --health-port: '0' is not a port"),
        (["worker", "--grace", "nan"], "argument --grace: 'nan' is not a number of seconds"),
        (["worker", "--grace", "-5"], "argument --grace: '-5' is not a number of seconds"),
    ):
        run = cli(*args)
        assert run.returncode == 2 and line in run.stderr, (args, run.stderr)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = cli("worker", "--health-port", str(port), "--health-host", "127.0.0.1")
        assert run.returncode == 2
        assert (
            run.stderr.strip()
            == f"qlarius-jobs: cannot listen on 127.0.0.1:{port}: Address already in use"
        )
