"""The console's jobs list (search, the drains' jobs hidden, durations and recorded counts)
and its bulk actions (confirmed, capped, one statement), the confirmation of every action that
cannot be undone, and the Backfill runs page's chunks; through the ASGI app against the real
database."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import psycopg
import pytest
from starlette.testclient import TestClient

from qlarius_jobs import api, testing
from tests.integration.factories import standard_world
from tests.integration.support import console_client, csrf_of


@pytest.fixture
def client() -> Iterator[TestClient]:
    with console_client() as c:
        yield c


def _csrf(client: TestClient) -> str:
    return csrf_of(client.get("/jobs").text)


def _job(conn: psycopg.Connection, task: str, args: dict, status: str = "todo") -> int:
    return conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
        "VALUES ('targets', %s, %s, %s) RETURNING id",
        (task, json.dumps(args), status),
    ).fetchone()[0]


def _states(conn: psycopg.Connection, ids: list[int]) -> list[str]:
    return [
        conn.execute("SELECT status::text FROM procrastinate_jobs WHERE id = %s", (i,)).fetchone()[
            0
        ]
        for i in ids
    ]


def _shown(page: str) -> set[int]:
    return {int(i) for i in re.findall(r'href="/jobs/(\d+)"', page)}


def test_search_by_id_and_by_arguments_anded_with_the_filters(client, sync_conn):
    a = _job(sync_conn, "sync_me_file", {"me_file_id": 42, "target_id": 7}, "failed")
    b = _job(sync_conn, "sync_me_file", {"me_file_id": 42, "target_id": 8})
    c = _job(sync_conn, "populate_target", {"target_id": 7})
    assert _shown(client.get("/jobs", params={"q": "me_file_id:42"}).text) == {a, b}
    assert _shown(client.get("/jobs", params={"q": "me_file_id:42 target_id:7"}).text) == {a}
    assert _shown(client.get("/jobs", params={"q": "target_id:7"}).text) == {a, c}
    both = client.get("/jobs", params={"q": "target_id:7", "task": "populate_target"})
    assert _shown(both.text) == {c}
    assert _shown(client.get("/jobs", params={"q": "me_file_id:42", "state": "todo"}).text) == {b}
    assert _shown(client.get("/jobs", params={"q": f"#{b}"}).text) == {b}
    assert _shown(client.get("/jobs", params={"q": f"{b} me_file_id:41"}).text) == set()
    # the search stays in the link to older jobs
    assert 'value="me_file_id:42"' in client.get("/jobs", params={"q": "me_file_id:42"}).text


@pytest.mark.parametrize(
    "search, line",
    [
        ("nope", "is neither a job id nor name:value"),
        ("me_file_id:", "is not name:value"),
        ("1x:2", "is not name:value"),
        ("0", "is neither a job id"),
        ("a:1 a:2", "gives a two values"),
        ("1 2", "two job ids"),
        ("x" * 201, "search is too long"),
        ("a:\x00", "not printable"),
        (f"{2**63}", "is neither a job id"),
    ],
)
def test_a_bad_search_is_a_400_with_one_line(client, search, line):
    page = client.get("/jobs", params={"q": search})
    assert page.status_code == 400
    error = re.search(r'<p class="error">(.*?)</p>', page.text, re.S)
    assert error and line in error[1].replace("&#39;", "'") and "\n" not in error[1]


def test_the_search_has_its_gin_index(sync_conn):
    index = sync_conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'qlarius_jobs_args_search_idx'"
    ).fetchone()
    assert index and "gin (args jsonb_path_ops)" in index[0]
    sync_conn.execute("SET enable_seqscan = off")
    plan = sync_conn.execute(
        "EXPLAIN SELECT id FROM procrastinate_jobs WHERE args @> '{\"me_file_id\": 42}'"
    ).fetchall()
    assert "qlarius_jobs_args_search_idx" in " ".join(r[0] for r in plan)


def test_the_drains_jobs_are_hidden_unless_asked(client, sync_conn):
    drain = _job(sync_conn, "sync_pending_me_files", {})
    other = _job(sync_conn, "reconcile_pending_offers", {})
    job = _job(sync_conn, "populate_target", {"target_id": 1})
    assert _shown(client.get("/jobs").text) == {job}
    assert _shown(client.get("/jobs?internal=1").text) == {drain, other, job}
    assert _shown(client.get("/jobs?task=sync_pending_me_files").text) == {drain}
    assert _shown(client.get("/jobs", params={"q": str(other)}).text) == {other}


def test_duration_and_recorded_counts(client, sync_conn):
    job = _job(sync_conn, "populate_target", {"target_id": 1}, "succeeded")
    sync_conn.execute(
        "INSERT INTO procrastinate_events (job_id, type, at) VALUES "
        "(%s, 'started', now() - interval '2.5 s'), (%s, 'succeeded', now())",
        (job, job),
    )
    sync_conn.execute(
        "INSERT INTO qlarius_job_results (job_id, counts) VALUES (%s, %s)",
        (job, json.dumps({"inserted": 1200, "bands": 3})),
    )
    row = re.search(rf'<tr[^>]*id="job-{job}">(.*?)</tr>', client.get("/jobs").text, re.S)
    assert row and '<td class="num duration">2.5 s</td>' in row[1]
    assert '<td class="counts">bands 3, inserted 1,200</td>' in row[1]


async def test_a_job_that_succeeds_records_its_counts_and_loses_them_with_it(app, conn, sync_conn):
    s = standard_world(sync_conn)
    s.w.me_file([s.female, s.z10028])
    await api.trigger_population(conn, s.target)
    outcomes = await testing.drain(app, ["targets", "offers"])
    assert outcomes["succeeded"] >= 1 and outcomes["failed"] == 0
    job, counts = sync_conn.execute(
        "SELECT j.id, r.counts FROM procrastinate_jobs j JOIN qlarius_job_results r "
        "ON r.job_id = j.id WHERE j.task_name = 'populate_target'"
    ).fetchone()
    assert counts and all(isinstance(v, int | float) for v in counts.values())
    sync_conn.execute("DELETE FROM procrastinate_jobs WHERE id = %s", (job,))  # as the prune
    gone = "SELECT count(*) FROM qlarius_job_results WHERE job_id = %s"
    assert sync_conn.execute(gone, (job,)).fetchone()[0] == 0


def test_bulk_retry_of_the_ticked_jobs_is_confirmed_then_one_statement(client, sync_conn):
    failed = [_job(sync_conn, "populate_target", {"target_id": i}, "failed") for i in (1, 2)]
    waiting = _job(sync_conn, "populate_target", {"target_id": 3})
    token = _csrf(client)
    ticked = {"csrf": token, "action": "retry", "scope": "selected", "id": [*failed, waiting]}
    confirm = client.post("/jobs/bulk", data=ticked)
    assert confirm.status_code == 200
    assert "This will retry 2 job(s): of the 3 ticked" in confirm.text
    assert _states(sync_conn, failed) == ["failed", "failed"]  # nothing yet
    apply = {"csrf": token, "action": "retry", "id": [*failed, waiting]}
    assert client.post("/jobs/bulk/apply", data=apply).status_code == 400  # not confirmed
    done = client.post("/jobs/bulk/apply", data={**apply, "confirm": "yes"}, follow_redirects=False)
    assert done.status_code == 303 and "done=retry&count=2" in done.headers["location"]
    assert _states(sync_conn, [*failed, waiting]) == ["todo", "todo", "todo"]
    assert "Done: retried 2 job(s)." in client.get(done.headers["location"]).text


def test_bulk_over_every_matching_job_is_capped(client, sync_conn, settings):
    settings.set(web_bulk_limit=3)
    ids = [_job(sync_conn, "populate_target", {"target_id": i, "kind": "x"}) for i in range(5)]
    other = _job(sync_conn, "populate_target", {"target_id": 9})
    token = _csrf(client)
    form = {"csrf": token, "action": "cancel", "scope": "matching", "q": "kind:x"}
    confirm = client.post("/jobs/bulk", data=form)
    assert "More than 3 jobs match the filter" in confirm.text and "capped by" in confirm.text
    chosen = [int(i) for i in re.findall(r'name="id" value="(\d+)"', confirm.text)]
    assert chosen == sorted(ids, reverse=True)[:3]
    done = client.post(
        "/jobs/bulk/apply", data={"csrf": token, "action": "cancel", "confirm": "yes", "id": chosen}
    )
    assert done.status_code == 200
    assert _states(sync_conn, ids) == ["todo", "todo", "cancelled", "cancelled", "cancelled"]
    assert _states(sync_conn, [other]) == ["todo"]
    too_many = {"csrf": token, "action": "cancel", "confirm": "yes", "id": ids}
    assert client.post("/jobs/bulk/apply", data=too_many).status_code == 400


def test_bulk_abort_asks_running_jobs_to_stop(client, sync_conn):
    running = _job(sync_conn, "populate_target", {"target_id": 1}, "doing")
    failed = _job(sync_conn, "populate_target", {"target_id": 2}, "failed")
    token = _csrf(client)
    form = {"csrf": token, "action": "abort", "confirm": "yes", "id": [running, failed]}
    assert "count=1" in client.post("/jobs/bulk/apply", data=form).url.query.decode()
    assert sync_conn.execute(
        "SELECT abort_requested FROM procrastinate_jobs WHERE id = %s", (running,)
    ).fetchone()[0]
    assert _states(sync_conn, [failed]) == ["failed"]


def test_bulk_actions_need_the_csrf_token_and_are_refused_read_only(client, sync_conn):
    failed = _job(sync_conn, "populate_target", {"target_id": 1}, "failed")
    form = {"action": "retry", "confirm": "yes", "id": [failed], "scope": "selected"}
    for path in ("/jobs/bulk", "/jobs/bulk/apply"):
        assert client.post(path, data={**form, "csrf": "x"}).status_code == 403
    with console_client(read_only=True) as c:
        assert 'id="bulk-retry"' not in c.get("/jobs").text
        assert c.post("/jobs/bulk/apply", data={**form, "csrf": "x"}).status_code == 403
    token = _csrf(client)
    bad = {**form, "csrf": token}
    assert client.post("/jobs/bulk", data={**bad, "action": "explode"}).status_code == 400
    assert client.post("/jobs/bulk", data={**bad, "scope": "nope"}).status_code == 400
    assert client.post("/jobs/bulk", data={**bad, "id": ["x"]}).status_code == 400
    assert _states(sync_conn, [failed]) == ["failed"]


def test_cancel_abort_and_repopulate_need_confirming(client, sync_conn):
    s = standard_world(sync_conn)
    waiting = _job(sync_conn, "populate_target", {"target_id": 1})
    running = _job(sync_conn, "populate_target", {"target_id": 2}, "doing")
    token = _csrf(client)
    page = client.get(f"/jobs/{waiting}").text
    assert '<details class="confirm"><summary id="cancel">' in page
    for path in (f"/jobs/{waiting}/cancel", f"/jobs/{running}/abort"):
        refused = client.post(path, data={"csrf": token})
        assert refused.status_code == 400 and "needs confirming" in refused.text
    assert _states(sync_conn, [waiting, running]) == ["todo", "doing"]
    assert client.post(f"/targets/{s.target}/populate", data={"csrf": token}).status_code == 400
    status = "SELECT population_status FROM targets WHERE id = %s"
    assert sync_conn.execute(status, (s.target,)).fetchone()[0] != "populating"


def test_backfill_runs_show_the_chunks_deferred_not_the_batches(client, sync_conn):
    sync_conn.execute(
        "INSERT INTO backfill_runs (started_at, batches, chunks_deferred, elapsed_ms) "
        "VALUES (now(), 3, 0, 10), (now(), 2, 5, 10)"
    )
    cells = re.findall(r'<td class="num chunks">(\d+)</td>', client.get("/backfill").text)
    assert cells == ["5", "0"]
