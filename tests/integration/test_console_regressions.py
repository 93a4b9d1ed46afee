"""Regressions found by a hostile review of the console and metrics (outcome counters, job
results, bulk actions, search, live pages). Each test failed against the code it reviewed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.types.json import Jsonb
from starlette.testclient import TestClient

from qlarius_jobs.db.queries import QueryFile
from tests.integration.support import TEST_DB, console_client, csrf_of


@pytest.fixture
def client() -> Iterator[TestClient]:
    with console_client() as c:
        yield c


def _counted(conn: psycopg.Connection, task: str, outcome: str) -> int:
    return conn.execute(
        "SELECT COALESCE(sum(jobs), 0) FROM qlarius_job_outcome_counts "
        "WHERE task_name = %s AND outcome = %s",
        (task, outcome),
    ).fetchone()[0]


def _job(conn: psycopg.Connection, task: str, queue: str, args: dict | None = None) -> int:
    return conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES (%s, %s, %s) "
        "RETURNING id",
        (queue, task, json.dumps(args if args is not None else {"n": time.monotonic_ns()})),
    ).fetchone()[0]


def test_jobs_a_lost_fetch_claimed_are_not_counted_as_retried_attempts(sync_conn):
    """resilience.py's requeue_unclaimed_jobs puts back jobs a fetch claimed on the server but
    whose answer the worker never got: they never ran. The trigger counts each as an attempt
    that failed ('retried'), with a duration, because it is a doing -> todo status write."""
    worker = sync_conn.execute(
        "INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id"
    ).fetchone()[0]
    job = _job(sync_conn, "populate_target", "targets", {"target_id": 1})
    sync_conn.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
        (worker, job),
    )
    sql = QueryFile.named("worker/resilience")
    with psycopg.connect(TEST_DB.conninfo, autocommit=True) as conn:
        requeued = sql.one_sync(conn, "requeue_unclaimed_jobs", worker_id=worker, running=[])
    assert requeued["requeued"] == [job]
    assert (
        sync_conn.execute(
            "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (job,)
        ).fetchone()[0]
        == "todo"
    )
    assert _counted(sync_conn, "populate_target", "retried") == 0  # it never ran


def test_a_rescued_jobs_late_body_records_counts_on_a_job_that_never_succeeded(sync_conn, client):
    """A worker that lost its heartbeat has its job rescued (rescue_stalled_jobs: failed, no
    attempt left); its body still returns, and _record_counts writes the counts before the
    guarded finish (finish_job_of_worker) refuses the late result. record_job_result checks
    neither the job's status nor its worker: the console shows a failed job with the counts
    of a 'success' that was never written. Now it writes only for a job still 'doing' on the
    worker that records."""
    stale_worker = sync_conn.execute(
        "INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id"
    ).fetchone()[0]
    job = _job(sync_conn, "populate_target", "targets", {"target_id": 1})
    sync_conn.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
        (stale_worker, job),
    )
    with psycopg.connect(TEST_DB.conninfo, autocommit=True) as conn:
        conn.execute(
            "SELECT procrastinate_finish_job_v1(%s, 'failed', false)", (job,)
        )  # what rescue_stalled_jobs does to a job with no attempt left
    # the stale worker's body returns now: JobSpec._record_counts' statement
    blueprint = QueryFile.named("jobs/blueprint")
    with psycopg.connect(TEST_DB.conninfo, autocommit=True) as conn:
        blueprint.execute_sync(
            conn,
            "record_job_result",
            job_id=job,
            worker_id=stale_worker,
            counts=Jsonb({"inserted": 5}),
        )
    recorded = sync_conn.execute(
        "SELECT count(*) FROM qlarius_job_results WHERE job_id = %s", (job,)
    ).fetchone()[0]
    assert recorded == 0, "counts recorded for a job that failed"


BAD_SEARCHES = [
    "a:b:c",
    "me_file_id:1e400",
    "#99999999999999999999",
    "99999999999999999999",
    "me_file_id:99999999999999999999999",
    'me_file_id:"x"',
    'me_file_id:{"a":1}',
    "ü:1",
    "me_file_id:é",
    "me_file_id:\U0001f600",
    "#-1",
    "#",
    ":",
    "a:",
    "x:1 x:2",
    "1 2",
    "me_file_id:-9223372036854775809",
    "me_file_id:\\u0000",
]


@pytest.mark.parametrize("q", BAD_SEARCHES)
def test_no_search_is_a_500(client, q):
    response = client.get("/jobs", params={"q": q})
    assert response.status_code in (200, 400), (q, response.status_code, response.text[:300])


@pytest.mark.parametrize(
    "params",
    [
        {"before": "99999999999999999999"},
        {"before": "0"},
        {"state": "aborting"},
        {"state": "nope"},
        {"queue": "x" * 201},
        {"task": "\x00"},
        {"count": "9" * 100, "done": "retry"},
        {"internal": "1", "q": "sync_pending_me_files"},
    ],
)
def test_no_filter_is_a_500(client, params):
    response = client.get("/jobs", params=params)
    assert response.status_code in (200, 400), (params, response.status_code, response.text[:300])


@pytest.mark.parametrize("path", ["/jobs/bulk", "/jobs/bulk/apply", "/jobs/99999999999999999999"])
def test_gets_on_bulk_paths_are_not_500(client, path):
    response = client.get(path)
    assert response.status_code in (400, 404, 405), (path, response.status_code)


@pytest.mark.parametrize(
    "back",
    [
        "//evil.com",
        "/\\evil.com",
        "/%2F%2Fevil.com",
        "https:evil.com",
        "/\r\nSet-Cookie: x=1",
        "/\tevil.com",
        "\\\\evil.com",
        "/\u3000/evil.com",
        "/%5C%5Cevil.com",
        "http://evil.com",
        "///evil.com",
    ],
)
def test_live_back_never_leaves_the_console(client, back):
    response = client.get("/live/on", params={"back": back}, follow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location
    assert "\r" not in location and "\n" not in location


def test_bulk_apply_posting_more_ids_than_the_cap_is_refused(client, sync_conn, settings):
    settings.set(web_bulk_limit=2)
    ids = [_job(sync_conn, "populate_target", "targets", {"target_id": i}) for i in range(5)]
    token = csrf_of(client.get("/jobs").text)
    form = {"csrf": token, "action": "cancel", "confirm": "yes", "id": [str(i) for i in ids]}
    response = client.post("/jobs/bulk/apply", data=form, follow_redirects=False)
    assert response.status_code == 400, response.text[:500]
    # the same id many times: still counted against the cap (no free pass), and no 500
    form = {"csrf": token, "action": "cancel", "confirm": "yes", "id": [str(ids[0])] * 3}
    assert client.post("/jobs/bulk/apply", data=form, follow_redirects=False).status_code == 400
