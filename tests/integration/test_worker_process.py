"""Real worker processes: the seed note's race, the command line, signals."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from qlarius_jobs.dev import seed
from qlarius_jobs.jobs.catalog import defer_job
from tests.integration.support import (
    TEST_DB,
    TargetRowHolder,
    WorkerProcess,
    defer_with_cli,
    jobs,
    wait_for,
)

BIN = Path(sys.executable).parent


def worker_env() -> dict[str, str]:
    """The environment of now: the test's own database is in it."""
    return {**os.environ, "QLARIUS_OFFERS_RETRY_DELAY_SECONDS": "1", "QLARIUS_LOG_FORMAT": "json"}


def _wait_until_done(conn, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        ).fetchone()[0]
        if not left:
            return
        time.sleep(0.2)
    raise AssertionError(f"jobs still pending: {jobs(conn)}")


def _start_worker(*args: str) -> WorkerProcess:
    return WorkerProcess(*args, env=worker_env())


def _stop(proc: WorkerProcess) -> str:
    return proc.stop()


@pytest.mark.slow
async def test_offers_racing_populate_never_copy_a_null_snapshot(sync_conn):
    """The seed note's race: offers created as soon as a target says 'populated'. With inline
    snapshots, an offer job running at the same time as the populate never copies a NULL."""
    seed.seed(
        TEST_DB.conninfo,
        seed.SeedSizes(
            me_files=1500, parents=12, targets=4, campaigns_per_target=2, populate=False
        ),
    )
    targets = [r[0] for r in sync_conn.execute("SELECT id FROM targets ORDER BY id")]
    campaigns = [r[0] for r in sync_conn.execute("SELECT id FROM campaigns ORDER BY id")]
    proc = _start_worker()
    try:
        async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
            # all deferred in one transaction: offers first, so they race the populates
            for target in targets:
                await conn.execute(
                    "UPDATE targets SET population_status = 'populating' WHERE id = %s", (target,)
                )
            for campaign in campaigns:
                await defer_job(conn, "create_initial_pending_offers", campaign_id=campaign)
            for target in targets:
                await defer_job(conn, "populate_target", target_id=target)
            await conn.commit()
        _wait_until_done(sync_conn)
    finally:
        output = _stop(proc)
    statuses = {j["status"] for j in jobs(sync_conn)}
    assert statuses == {"succeeded"}, output[-3000:]
    offers, null_offers = sync_conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE matching_tags_snapshot IS NULL) FROM offers"
    ).fetchone()
    expected = sync_conn.execute("SELECT count(*) FROM qlarius_eligible_offers").fetchone()[0]
    assert offers == expected > 0
    assert null_offers == 0
    assert (
        sync_conn.execute(
            "SELECT count(*) FROM target_populations WHERE matching_tags_snapshot IS NULL"
        ).fetchone()[0]
        == 0
    )


@pytest.mark.slow
def test_every_task_can_be_deferred_with_the_procrastinate_cli_from_any_folder(sync_conn, tmp_path):
    seed.seed(
        TEST_DB.conninfo,
        seed.SeedSizes(me_files=50, parents=5, targets=1, populate=True, null_share=0.5),
    )
    target, band, campaign, me_file = sync_conn.execute(
        "SELECT t.id, b.id, c.id, (SELECT min(id) FROM me_files) FROM targets t "
        "JOIN target_bands b ON b.target_id = t.id JOIN campaigns c ON c.target_id = t.id LIMIT 1"
    ).fetchone()
    calls = {
        "populate_target": {"target_id": target},
        "sync_me_file_to_target_populations": {"me_file_id": me_file},
        "snapshot_band_populations": {"band_id": band},
        "create_initial_pending_offers": {"campaign_id": campaign},
        "reconcile_offers_for_me_file": {"me_file_id": me_file},
        "backfill_missing_snapshots": {},
    }
    for task, args in calls.items():
        result = subprocess.run(
            [
                str(BIN / "procrastinate"),
                "--app=qlarius_jobs.app.app",
                "defer",
                task,
                json.dumps(args),
            ],
            cwd=tmp_path,
            env=worker_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    again = subprocess.run(
        [
            str(BIN / "procrastinate"),
            "--app=qlarius_jobs.app.app",
            "defer",
            "backfill_missing_snapshots",
            "{}",
        ],
        cwd=tmp_path,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "already" in (again.stdout + again.stderr).lower()
    assert {j["task_name"] for j in jobs(sync_conn)} == set(calls)
    assert len(jobs(sync_conn)) == len(calls)
    proc = subprocess.run(
        [str(BIN / "qlarius-jobs"), "worker", "--until-empty"],
        cwd=tmp_path,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # (periodic maintenance jobs a tick may have added meanwhile are not this test's)
    ours = [j for j in jobs(sync_conn) if "timestamp" not in j["args"]]
    assert {j["status"] for j in ours} == {"succeeded"}, [
        (j["task_name"], j["status"], j["args"], j["scheduled_at"])
        for j in ours
        if j["status"] != "succeeded"
    ]
    nulls = sync_conn.execute(
        "SELECT (SELECT count(*) FROM target_populations WHERE matching_tags_snapshot IS NULL) + "
        "(SELECT count(*) FROM ad_events a JOIN target_populations tp ON "
        " tp.me_file_id = a.me_file_id AND tp.target_band_id = a.target_band_id "
        " WHERE a.matching_tags_snapshot IS NULL)"
    ).fetchone()[0]
    assert nulls == 0


@pytest.mark.slow
def test_sigterm_lets_the_running_job_finish_then_exits(sync_conn):
    proc = _start_worker("--queues", "targets=2", "--grace", "20")
    try:
        time.sleep(2)
        # a populate that blocks on a row we hold, so it is running when the signal comes
        holder = _held_populate_running(sync_conn)
        proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert proc.poll() is None  # still finishing the job
        holder.release()
        assert proc.wait(timeout=30) == 0
    finally:
        out = _stop(proc)
    assert jobs(sync_conn, "populate_target")[0]["status"] == "succeeded", out[-2000:]


@pytest.mark.slow
def test_until_empty_lets_a_long_job_finish_past_the_grace_period(sync_conn):
    holder = TargetRowHolder(sync_conn)  # the job runs ~4 s
    defer_with_cli("populate_target", {"target_id": 1}, env=worker_env())
    proc = WorkerProcess(
        "--queues",
        "targets",
        "--until-empty",
        env={**worker_env(), "QLARIUS_SHUTDOWN_GRACE_SECONDS": "1"},
    )
    try:
        time.sleep(4)
        holder.release()
        proc.wait(timeout=60)
        out = proc.output()
    finally:
        holder.release()
        proc.kill()
    [job] = jobs(sync_conn, "populate_target")
    assert (job["status"], job["attempts"]) == ("succeeded", 1), out[-2000:]


def test_a_worker_process_log_of_its_own_making_goes_with_it():
    """A WorkerProcess given no log path writes to a temporary file of its own, removed once
    the object is gone (the suite starts hundreds: none is left in /tmp)."""
    proc = WorkerProcess("--queues", "no_such_queue", env=worker_env())  # refuses at once
    proc.wait(timeout=60)
    log_path = proc.log_path
    assert log_path.exists() and proc.output()
    del proc
    gc.collect()
    assert not log_path.exists()


def _last_worker_id(sync_conn) -> int:
    """The newest worker row's id (0: none): the workers a test starts come after it."""
    return sync_conn.execute("SELECT coalesce(max(id), 0) FROM procrastinate_workers").fetchone()[0]


def _held_populate_running(sync_conn) -> TargetRowHolder:
    """A populate deferred and running, blocked on the target's row, which the returned
    holder keeps until released."""
    holder = TargetRowHolder(sync_conn)
    defer_with_cli("populate_target", {"target_id": 1}, env=worker_env())
    wait_for(
        lambda: jobs(sync_conn, "populate_target")[0]["status"] == "doing",
        30,
        "the populate running",
    )
    return holder


def _removed_as_stalled(sync_conn, env: dict[str, str], then_defer: bool) -> str:
    """A worker process on the default queue whose worker row a rescue removed (as it does
    when the heartbeat looked stalled: the process paused, or the database away for longer
    than QLARIUS_STALLED_AFTER_SECONDS, with the 300 s outage limit not reached), deleted here
    once it registered. The worker must carry on under its own id, introduced again; returns
    its output."""
    before = _last_worker_id(sync_conn)
    proc = WorkerProcess("--queues", "default=2", env={**worker_env(), **env})

    def introduced() -> list[tuple]:
        return sync_conn.execute(
            "SELECT w.id, q.queue, q.pid FROM procrastinate_workers w "
            "JOIN qlarius_worker_queues q ON q.worker_id = w.id WHERE w.id > %s",
            [before],
        ).fetchall()

    try:
        wait_for(introduced, 30, "the worker registered and introduced")
        first = introduced()
        assert (
            sync_conn.execute("DELETE FROM procrastinate_workers WHERE id > %s", [before]).rowcount
            == 1
        )
        if then_defer:
            defer_with_cli("create_initial_pending_offers", {"campaign_id": 1}, env=worker_env())
            _wait_until_done(sync_conn, timeout=30)
        wait_for(introduced, 30, "the worker registered again")
        assert introduced() == first == [(first[0][0], "default", proc.pid)]
        assert proc.alive, proc.output()[-2000:]
    finally:
        out = proc.stop()
    assert proc.returncode == 0, out[-2000:]
    return out


def test_a_worker_removed_as_stalled_registers_again_at_its_next_heartbeat(sync_conn):
    out = _removed_as_stalled(sync_conn, {"QLARIUS_HEARTBEAT_SECONDS": "0.5"}, then_defer=False)
    assert out.count("was removed as stalled by a rescue") == 1, out[-2000:]
    assert "QLARIUS_STALLED_AFTER_SECONDS=45" in out


def test_a_worker_removed_as_stalled_registers_again_at_its_next_fetch(sync_conn):
    """The heartbeat is far off: the fetch of the job deferred meets the jobs table's foreign
    key to the worker first; the worker registers again and runs the job."""
    out = _removed_as_stalled(
        sync_conn,
        {"QLARIUS_HEARTBEAT_SECONDS": "60", "QLARIUS_STALLED_AFTER_SECONDS": "300"},
        then_defer=True,
    )
    assert out.count("was removed as stalled by a rescue") == 1, out[-2000:]
    assert "ForeignKeyViolation" not in out
    assert [j["status"] for j in jobs(sync_conn, "create_initial_pending_offers")] == ["succeeded"]


@pytest.mark.parametrize(
    "heartbeat",
    ["0.5", "60"],
    ids=["taken-back-by-its-heartbeat", "finished-before-its-next-heartbeat"],
)
def test_a_worker_removed_as_stalled_keeps_the_jobs_it_is_running(sync_conn, heartbeat):
    """The row deleted while a populate runs (held on the target's row) clears the job's
    worker (ON DELETE SET NULL). Registering again takes it back; or, the heartbeat far off,
    the job's end is still written (no rescue took it: the same attempt). Either way no
    rescue runs it a second time: it ends succeeded after one run."""
    before = _last_worker_id(sync_conn)
    env = {"QLARIUS_HEARTBEAT_SECONDS": heartbeat, "QLARIUS_STALLED_AFTER_SECONDS": "300"}
    proc = WorkerProcess("--queues", "targets=2", env={**worker_env(), **env})

    def job_worker() -> int | None:
        return sync_conn.execute(
            "SELECT worker_id FROM procrastinate_jobs WHERE task_name = 'populate_target'"
        ).fetchone()[0]

    try:
        holder = _held_populate_running(sync_conn)
        worker = job_worker()
        assert worker is not None and worker > before
        sync_conn.execute("DELETE FROM procrastinate_workers WHERE id = %s", [worker])
        if heartbeat == "0.5":
            wait_for(lambda: job_worker() == worker, 30, "the job taken back by its worker")
        else:
            assert job_worker() is None
        holder.release()
        wait_for(
            lambda: jobs(sync_conn, "populate_target")[0]["status"] != "doing",
            60,
            "the populate ended",
        )
        # its next fetch (or heartbeat) registers it again
        wait_for(
            lambda: sync_conn.execute(
                "SELECT count(*) FROM procrastinate_workers WHERE id = %s", [worker]
            ).fetchone()[0],
            30,
            "the worker registered again",
        )
        assert proc.alive
    finally:
        out = proc.stop()
    [job] = jobs(sync_conn, "populate_target")
    assert (job["status"], job["attempts"]) == ("succeeded", 1), out[-2000:]  # one run
    assert out.count("was removed as stalled by a rescue") == 1, out[-2000:]
    assert "JobNotRunningHere" not in out


def test_a_late_result_dropped_is_one_warning_line(sync_conn):
    """A job a rescue took from a worker that still ran it (here: put back in the queue, due
    in an hour, while its populate is held): the worker's late end is dropped, said in one
    warning line, not asyncio's "Task exception was never retrieved" and a traceback."""
    proc = WorkerProcess("--queues", "targets=2", env=worker_env())
    try:
        holder = _held_populate_running(sync_conn)
        sync_conn.execute(
            "UPDATE procrastinate_jobs SET status = 'todo', worker_id = NULL, "
            "attempts = attempts + 1, scheduled_at = now() + interval '1 hour' "
            "WHERE task_name = 'populate_target'"
        )
        holder.release()
        wait_for(lambda: "is not running for worker" in proc.output(), 30, "the dropped end")
        assert proc.alive
    finally:
        out = proc.stop()
    assert proc.returncode == 0, out[-2000:]
    [line] = [ln for ln in out.splitlines() if "is not running for worker" in ln]
    assert '"level": "warning"' in line, line
    assert "never retrieved" not in out and "Traceback" not in out, out[-3000:]
    assert jobs(sync_conn, "populate_target")[0]["status"] == "todo"
