"""The console's /metrics (issue 20): job outcome counters and the duration histogram kept in
the database (migration 0017), zero series, the latest audit's drift, the database's being up
or not, and a worker's own /metrics on its health port."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest
from starlette.testclient import TestClient

from qlarius_jobs.jobs import audit
from qlarius_jobs.ops.console import ConsoleConfig, build_console
from tests.integration.support import (
    TEST_DB,
    TargetRowHolder,
    WorkerProcess,
    defer_with_cli,
    free_port,
    jobs,
)

OUTCOMES = ("succeeded", "failed", "retried", "aborted", "cancelled")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(client: TestClient) -> dict[str, float]:
    """Every sample of /metrics, by its line's name and labels."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    out = {}
    for line in response.text.splitlines():
        if match := SAMPLE.match(line):
            out[match[1] + (match[2] or "")] = float(match[3])
    return out


def end_job(
    conn: psycopg.Connection,
    task: str,
    queue: str,
    outcome: str,
    seconds: float = 0.0,
    args: dict | None = None,
) -> int:
    """A job of ``task`` that starts, runs ``seconds`` (by its 'started' event) and ends as
    ``outcome`` (through Procrastinate's own status writes: 'retried' goes back to todo,
    'cancelled' ends before it starts)."""
    job = conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES (%s, %s, %s) "
        "RETURNING id",
        (queue, task, json.dumps(args if args is not None else {"n": time.monotonic_ns()})),
    ).fetchone()[0]
    if outcome == "cancelled":
        conn.execute("SELECT procrastinate_cancel_job_v1(%s, false, false)", (job,))
        return job
    conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job,))
    conn.execute(
        "UPDATE procrastinate_events SET at = at - make_interval(secs => %s) "
        "WHERE job_id = %s AND type = 'started'",
        (seconds, job),
    )
    if outcome == "retried":
        conn.execute("SELECT procrastinate_retry_job_v1(%s, now(), NULL, NULL, NULL)", (job,))
    elif outcome == "aborted":
        conn.execute("UPDATE procrastinate_jobs SET abort_requested = true WHERE id = %s", (job,))
        conn.execute("SELECT procrastinate_finish_job_v1(%s, 'aborted', false)", (job,))
    else:
        conn.execute("SELECT procrastinate_finish_job_v1(%s, %s, false)", (job, outcome))
    return job


@pytest.fixture
def client() -> Iterator[TestClient]:
    config = ConsoleConfig(conninfo=TEST_DB.conninfo, extra_hosts=("testserver",))
    with TestClient(build_console(config), raise_server_exceptions=False) as c:
        yield c


def _outcome(task: str, outcome: str) -> str:
    return f'qlarius_job_outcomes_total{{outcome="{outcome}",task="{task}"}}'


def _bucket(task: str, outcome: str, le: str) -> str:
    return f'qlarius_job_duration_seconds_bucket{{le="{le}",outcome="{outcome}",task="{task}"}}'


def test_outcomes_are_counted_per_task_and_survive_the_prune(client, sync_conn):
    before = scrape(client)
    assert before["qlarius_database_up"] == 1.0
    assert before[_outcome("populate_target", "succeeded")] == 0.0  # a series from the start
    for outcome, seconds in (
        ("succeeded", 0.3),
        ("succeeded", 3.0),
        ("failed", 0.02),
        ("retried", 40.0),
        ("aborted", 0.2),
        ("cancelled", 0.0),
    ):
        end_job(sync_conn, "populate_target", "targets", outcome, seconds)
    # another application's job, and one of ours deferred to another queue: not ours
    end_job(sync_conn, "their_task", "theirs", "succeeded", 1.0)
    end_job(sync_conn, "populate_target", "default", "succeeded", 1.0)
    after = scrape(client)
    counted = {o: after[_outcome("populate_target", o)] for o in OUTCOMES}
    assert counted == {"succeeded": 2, "failed": 1, "retried": 1, "aborted": 1, "cancelled": 1}
    assert not [k for k in after if "their_task" in k]
    series = 'outcome="succeeded",task="populate_target"}'
    assert after[_bucket("populate_target", "succeeded", "0.1")] == 0.0
    assert after[_bucket("populate_target", "succeeded", "0.5")] == 1.0
    assert after[_bucket("populate_target", "succeeded", "5.0")] == 2.0
    assert after[_bucket("populate_target", "succeeded", "+Inf")] == 2.0
    assert after["qlarius_job_duration_seconds_count{" + series] == 2.0
    assert after["qlarius_job_duration_seconds_sum{" + series] == pytest.approx(3.3, abs=0.2)
    assert after[_bucket("populate_target", "retried", "30.0")] == 0.0
    assert after[_bucket("populate_target", "retried", "120.0")] == 1.0
    assert not [k for k in after if "cancelled" in k and "duration" in k]  # never started
    # the prune deletes finished jobs: the counters stay where they were
    sync_conn.execute("DELETE FROM procrastinate_jobs WHERE status <> 'todo'")
    pruned = scrape(client)
    for key, value in after.items():
        if key.startswith(("qlarius_job_outcomes_total", "qlarius_job_duration_seconds")):
            assert pruned[key] == value, key


def test_a_counter_that_cannot_be_written_never_fails_the_status_write(sync_conn):
    job = sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "VALUES ('targets', 'snapshot_band_populations', '{\"band_id\": 1}') RETURNING id"
    ).fetchone()[0]
    sync_conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job,))
    with psycopg.connect(TEST_DB.conninfo) as holder:
        holder.execute("LOCK TABLE qlarius_job_outcome_counts IN ACCESS EXCLUSIVE MODE")
        sync_conn.execute("SET lock_timeout = '200ms'")
        sync_conn.execute("SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)", (job,))
        sync_conn.execute("RESET lock_timeout")
        holder.rollback()
    assert jobs(sync_conn)[0]["status"] == "succeeded"


def test_workers_ending_jobs_at_once_lose_no_count(sync_conn):
    """Eight connections ending 100 jobs each of one task, side by side: every ending counted,
    spread over several rows (shards) rather than queued on one."""
    per_thread, threads = 100, 8
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with psycopg.connect(TEST_DB.conninfo, autocommit=True) as conn:
                for _ in range(per_thread):
                    end_job(conn, "reconcile_pending_offers", "offers", "succeeded", 0.0)
        except BaseException as exc:
            errors.append(exc)

    started = time.monotonic()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    elapsed = time.monotonic() - started
    assert not errors, errors
    total, shards = sync_conn.execute(
        "SELECT sum(jobs), count(DISTINCT shard) FROM qlarius_job_outcome_counts "
        "WHERE task_name = 'reconcile_pending_offers'"
    ).fetchone()
    assert total == per_thread * threads
    assert shards > 1
    print(f"{per_thread * threads} jobs ended by {threads} connections in {elapsed:.2f} s")


def test_every_queue_and_state_has_a_series_and_nothing_waiting_reads_0(client, sync_conn):
    samples = scrape(client)
    for queue in ("targets", "offers", "default", "maintenance"):
        for state in ("todo", "doing", "succeeded", "failed", "cancelled", "aborted"):
            assert samples[f'qlarius_jobs{{queue="{queue}",state="{state}"}}'] == 0.0
        assert samples[f'qlarius_oldest_waiting_job_seconds{{queue="{queue}"}}'] == 0.0
    for kind in ("sync", "reconcile", "target", "campaign"):
        assert samples[f'qlarius_pending_work_oldest_seconds{{kind="{kind}"}}'] == 0.0
    for kind in audit.FINDINGS:
        assert samples[f'qlarius_audit_drift{{kind="{kind}"}}'] == 0.0
    assert samples["qlarius_audit_timestamp_seconds"] == 0.0


def test_the_latest_audit_drift_is_a_gauge_per_kind(client, sync_conn):
    for found, at in ((7, "now() - interval '2 hours'"), (3, "now() - interval '1 hour'")):
        sync_conn.execute(
            "INSERT INTO backfill_runs (started_at, finished_at, own_part_ended, "
            "audited_me_files, drifted_populations, stale_offer_snapshots) "
            f"VALUES ({at}, {at}, true, 100, %s, 1)",
            (found,),
        )
    # a run that audited nothing (the sample size 0) says nothing about drift
    sync_conn.execute(
        "INSERT INTO backfill_runs (finished_at, own_part_ended, audited_me_files) "
        "VALUES (now(), true, 0)"
    )
    samples = scrape(client)
    assert samples['qlarius_audit_drift{kind="drifted_population"}'] == 3.0
    assert samples['qlarius_audit_drift{kind="stale_offer_snapshot"}'] == 1.0
    assert samples['qlarius_audit_drift{kind="stale_snapshot"}'] == 0.0
    assert samples["qlarius_audit_me_files"] == 100.0
    assert time.time() - samples["qlarius_audit_timestamp_seconds"] == pytest.approx(3600, abs=60)


def test_while_the_database_is_down_metrics_say_so_with_a_200():
    config = ConsoleConfig(
        conninfo=f"postgresql://nobody@127.0.0.1:{free_port()}/none?connect_timeout=2",
        extra_hosts=("testserver",),
    )
    with TestClient(build_console(config), raise_server_exceptions=False) as c:
        response = c.get("/metrics")
    assert response.status_code == 200
    assert "qlarius_database_up 0.0" in response.text
    assert "qlarius_jobs{" not in response.text


def test_a_worker_serves_its_own_metrics_on_its_health_port(sync_conn):
    port = free_port()
    with TargetRowHolder(sync_conn) as holder:
        proc = WorkerProcess(
            "--queues", "targets", "--health-port", str(port), "--health-host", "127.0.0.1"
        )
        try:
            defer_with_cli("populate_target", {"target_id": 1})
            deadline = time.monotonic() + 30
            body = ""
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
                        body = r.read().decode()
                except OSError:
                    body = ""
                if 'qlarius_worker_jobs_running{queue="targets"} 1.0' in body:
                    break
                time.sleep(0.2)
            assert 'qlarius_worker_jobs_running{queue="targets"} 1.0' in body, body[-3000:]
            assert 'qlarius_worker_concurrency{queue="targets"}' in body
            in_use = float(
                re.search(r'^qlarius_worker_pool_connections\{state="in_use"\} (\S+)$', body, re.M)[
                    1
                ]
            )
            assert in_use >= 1
            opened = re.search(
                r'^qlarius_worker_pool_connections\{state="open"\} (\S+)$', body, re.M
            )
            assert float(opened[1]) >= in_use
            assert (
                float(re.search(r"^qlarius_worker_pool_max_connections (\S+)$", body, re.M)[1]) >= 2
            )
            assert "process_resident_memory_bytes" in body  # prometheus-client's own
            assert "qlarius_jobs{" not in body  # the database's metrics are the console's
            holder.release()
        finally:
            proc.stop()
