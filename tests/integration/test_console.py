"""The console through its ASGI app (httpx, Starlette's TestClient) against the real
database: every page and action, bad inputs, CSRF, the password, read-only mode, metrics and
probes."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from starlette.testclient import TestClient

from qlarius_jobs.ops.console import ConsoleConfig, ConsoleRefused, build_console
from tests.integration.factories import StandardWorld, standard_world
from tests.integration.support import TEST_DB, console_client, csrf_of, unmigrated_database


@pytest.fixture
def client() -> Iterator[TestClient]:
    with console_client() as c:
        yield c


def _job(
    conn: psycopg.Connection, task: str, args: dict, status: str = "todo", attempts: int = 0
) -> int:
    return conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts) "
        "VALUES ('targets', %s, %s, %s, %s) RETURNING id",
        (task, json.dumps(args), status, attempts),
    ).fetchone()[0]


def _state(conn: psycopg.Connection, job_id: int) -> str:
    return conn.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (job_id,)
    ).fetchone()[0]


@dataclass(frozen=True)
class ConsoleData(StandardWorld):
    failed: int  # a failed populate_target job, with its error
    waiting: int  # a waiting snapshot_band_populations job
    worker: int  # a worker serving the targets queue


@pytest.fixture
def data(sync_conn) -> ConsoleData:
    s = standard_world(sync_conn)
    s.w.me_file([s.female, s.z10028])
    failed = _job(sync_conn, "populate_target", {"target_id": s.target}, "failed", 3)
    sync_conn.execute(
        "INSERT INTO qlarius_job_errors (job_id, task_name, attempt, error_type, message, traceback) "
        "VALUES (%s, 'populate_target', 3, 'RuntimeError', 'boom <b>', 'Traceback: line 1')",
        (failed,),
    )
    sync_conn.execute(
        "INSERT INTO procrastinate_events (job_id, type, at) VALUES (%s, 'failed', now())",
        (failed,),
    )
    waiting = _job(sync_conn, "snapshot_band_populations", {"band_id": s.bullseye})
    sync_conn.execute(
        "INSERT INTO backfill_runs (found_populations, found_offers, found_ad_events, "
        "updated_populations, updated_offers, updated_ad_events, finished_at, elapsed_ms) "
        "VALUES (4, 2, 1, 4, 2, 0, now(), 15)"
    )
    worker = sync_conn.execute(
        "INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id"
    ).fetchone()[0]
    sync_conn.execute(
        "INSERT INTO qlarius_worker_queues (worker_id, queue, host, pid, concurrency) "
        "VALUES (%s, 'targets', 'box-1', 4242, 5)",
        (worker,),
    )
    return ConsoleData(**vars(s), failed=failed, waiting=waiting, worker=worker)


def test_every_page_shows_the_database(client, data):
    page = client.get("/")
    assert page.status_code == 200
    assert "Jobs by queue and state" in page.text and "<svg" in page.text
    assert "Backfill runs, last 7 days" in page.text and "Jobs ended per minute" in page.text
    assert "rescue_stalled_jobs" in page.text  # the periodic schedule
    assert "<script" not in page.text  # nothing to load from elsewhere
    jobs_page = client.get("/jobs?state=failed")
    assert f'href="/jobs/{data.failed}"' in jobs_page.text
    assert f'/jobs/{data.waiting}"' not in jobs_page.text
    job = client.get(f"/jobs/{data.failed}")
    assert job.status_code == 200
    assert (
        "attempt 3" in job.text and "RuntimeError" in job.text and "Traceback: line 1" in job.text
    )
    assert "boom &lt;b&gt;" in job.text  # escaped
    assert 'id="retry"' in job.text
    targets = client.get("/targets")
    assert "NYC women with homes" in targets.text and "Re-populate" in targets.text
    backfill = client.get("/backfill")
    assert "4 / 2 / 1" in backfill.text and "4 / 2 / 0" in backfill.text
    workers = client.get("/workers")
    assert "box-1:4242" in workers.text and ">targets<" in workers.text


def test_jobs_pages_go_back_by_keyset(client, sync_conn):
    ids = [_job(sync_conn, "snapshot_band_populations", {"band_id": n}) for n in range(1, 61)]
    first = client.get("/jobs")
    assert f"before={ids[10]}" in first.text  # 50 newest: ids[59]..ids[10]
    second = client.get(f"/jobs?before={ids[10]}")
    shown = [int(i) for i in re.findall(r'href="/jobs/(\d+)"', second.text)]
    assert shown == list(reversed(ids[:10]))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/jobs/abc", "&#39;abc&#39; is not a job id"),
        ("/jobs/0", "&#39;0&#39; is not a job id"),
        (f"/jobs/{2**63}", "is not a job id"),
        ("/jobs?state=nope", "state &#39;nope&#39; is not one of"),
        ("/jobs?before=x", "before: &#39;x&#39; is not a job id"),
        ("/jobs?queue=" + "q" * 201, "queue is too long"),
        ("/backfill?before=-3", "before: &#39;-3&#39; is not a job id"),
    ],
)
def test_a_bad_input_is_a_400_page_never_a_traceback(client, path, message):
    page = client.get(path)
    assert page.status_code == 400
    assert message in page.text and "Traceback" not in page.text


def test_unknown_things_are_404_pages(client):
    assert client.get("/jobs/99999").status_code == 404
    assert "no job #99999" in client.get("/jobs/99999").text
    assert client.get("/nowhere").status_code == 404


def test_typed_strings_never_become_sql(client, data):
    page = client.get(
        "/jobs", params={"task": "x' OR 1=1 --", "queue": "targets'; DROP TABLE targets; --"}
    )
    assert page.status_code == 200 and "no job matches" in page.text


def test_actions_need_the_csrf_token(client, data, sync_conn):
    for token in (None, "", "0" * 64):
        form = {} if token is None else {"csrf": token}
        refused = client.post(f"/jobs/{data.failed}/retry", data=form, follow_redirects=False)
        assert refused.status_code == 403 and "CSRF" in refused.text
    assert _state(sync_conn, data.failed) == "failed"


def test_retry_cancel_abort_and_repopulate(client, data, sync_conn):
    token = csrf_of(client.get(f"/jobs/{data.failed}").text)
    done = client.post(f"/jobs/{data.failed}/retry", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/jobs/{data.failed}?done=retry"
    assert _state(sync_conn, data.failed) == "todo"
    again = client.post(f"/jobs/{data.failed}/retry", data={"csrf": token})
    assert (
        again.status_code == 409
        and "only failed, cancelled, aborted jobs can be retried" in again.text
    )
    sure = {"csrf": token, "confirm": "yes"}
    assert client.post(f"/jobs/{data.waiting}/cancel", data=sure).status_code == 200
    assert _state(sync_conn, data.waiting) == "cancelled"
    running = _job(sync_conn, "populate_target", {"target_id": 1}, "doing")
    assert client.post(f"/jobs/{running}/abort", data=sure).status_code == 200
    assert sync_conn.execute(
        "SELECT abort_requested FROM procrastinate_jobs WHERE id = %s", (running,)
    ).fetchone()[0]
    assert client.post("/jobs/abc/retry", data={"csrf": token}).status_code == 400
    assert client.post("/jobs/99999/retry", data={"csrf": token}).status_code == 404
    assert client.post(f"/jobs/{running}/explode", data={"csrf": token}).status_code == 404
    populates = "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'populate_target'"
    before = sync_conn.execute(populates).fetchone()[0]
    populated = client.post(f"/targets/{data.target}/populate", data=sure)
    assert populated.status_code == 200
    assert f"target #{data.target} is re-populating" in populated.text
    status = sync_conn.execute(
        "SELECT population_status FROM targets WHERE id = %s", (data.target,)
    ).fetchone()[0]
    assert status == "populating"
    assert sync_conn.execute(populates).fetchone()[0] == before + 1
    assert client.post("/targets/99999/populate", data=sure).status_code == 404


def test_read_only_hides_and_refuses_every_action(data, sync_conn):
    with console_client(read_only=True) as c:
        job = c.get(f"/jobs/{data.failed}")
        assert (
            "read-only" in job.text
            and 'id="retry"' not in job.text
            and 'name="csrf"' not in job.text
        )
        assert "Re-populate" not in c.get("/targets").text
        refused = c.post(f"/jobs/{data.failed}/retry", data={"csrf": "x"})
        # the refusal's own line (every page of a read-only console says "read-only")
        assert refused.status_code == 403
        assert '<p class="error">the console is read-only' in refused.text
    assert _state(sync_conn, data.failed) == "failed"


def test_the_password_guards_every_page_but_the_probes(data):
    with console_client(password="s3cret", host="0.0.0.0") as c:
        for path in ("/", "/jobs", f"/jobs/{data.failed}", "/metrics", "/static/console.css"):
            if path.startswith("/static"):
                continue
            assert c.get(path).status_code == 401
        wrong = base64.b64encode(b"ops:nope").decode()
        assert c.get("/", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
        assert c.get("/", headers={"Authorization": "Basic !!!"}).status_code == 401
        right = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}
        assert c.get("/", headers=right).status_code == 200
        assert c.post(f"/jobs/{data.failed}/retry", data={"csrf": "x"}).status_code == 401
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200


def test_a_public_address_without_a_password_is_refused():
    with pytest.raises(
        ConsoleRefused, match=r"refusing to listen on 0\.0\.0\.0 without QLARIUS_WEB_PASSWORD"
    ):
        ConsoleConfig(conninfo="", host="0.0.0.0").check()
    for host in ("127.0.0.1", "::1", "localhost"):
        ConsoleConfig(conninfo="", host=host).check()


def test_metrics_list_every_family(client, data):
    body = client.get("/metrics").text
    for name in (
        'qlarius_jobs{queue="targets",state="failed"} 1.0',
        'qlarius_oldest_waiting_job_seconds{queue="targets"}',
        "qlarius_stalled_jobs",
        'qlarius_null_snapshots{table="offers"}',
        'qlarius_backfill_rows_fixed{table="target_populations"} 4.0',
        "# TYPE qlarius_job_duration_seconds histogram",
        # both kinds always, 0 when nothing is pending (the data's tags left syncs pending)
        'qlarius_pending_work{kind="sync"} ',
        'qlarius_pending_work{kind="reconcile"} 0.0',
        'qlarius_pending_work_waiting_for_a_target{kind="sync"} 0.0',
        'qlarius_pending_work_oldest_seconds{kind="reconcile"} 0.0',
    ):
        assert name in body, name


def test_pending_work_shows_on_the_overview_and_in_the_metrics(client, data, sync_conn):
    me_file = sync_conn.execute("SELECT min(id) FROM me_files").fetchone()[0]
    sync_conn.execute(
        "INSERT INTO qlarius_pending_syncs (me_file_id, recorded_at) "
        "VALUES (%s, now() - interval '5 minutes'), (%s, now())",
        (me_file, me_file),
    )
    pending = sync_conn.execute("SELECT count(*) FROM qlarius_pending_syncs").fetchone()[0]
    body = client.get("/metrics").text
    assert f'qlarius_pending_work{{kind="sync"}} {float(pending)}' in body
    [oldest] = [
        line
        for line in body.splitlines()
        if line.startswith('qlarius_pending_work_oldest_seconds{kind="sync"}')
    ]
    assert float(oldest.split()[-1]) >= 300
    page = client.get("/").text
    assert "Pending work" in page
    assert '<tr class="warn"><td>sync</td>' in page  # older than the stuck threshold


def test_job_durations_are_a_histogram_per_task_and_outcome(client, sync_conn):
    job = _job(sync_conn, "populate_target", {"target_id": 1}, "todo")
    sync_conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job,))
    sync_conn.execute(
        "UPDATE procrastinate_events SET at = at - interval '2 seconds' "
        "WHERE job_id = %s AND type = 'started'",
        (job,),
    )
    sync_conn.execute("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", (job,))
    body = client.get("/metrics").text
    assert (
        'qlarius_job_duration_seconds_bucket{le="1.0",outcome="succeeded",task="populate_target"} 0.0'
        in body
    )
    assert (
        'qlarius_job_duration_seconds_bucket{le="5.0",outcome="succeeded",task="populate_target"} 1.0'
        in body
    )


def test_readyz_says_when_the_schema_is_behind():
    with (
        unmigrated_database() as behind,
        TestClient(build_console(ConsoleConfig(conninfo=behind, extra_hosts=("testserver",)))) as c,
    ):
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "schema behind" in ready.text
        assert c.get("/healthz").status_code == 200


def test_pages_carry_headers_that_forbid_scripts_and_framing(client):
    page = client.get("/")
    assert "script-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_actions_belong_to_their_kind_and_messages_are_never_echoed(client, data, sync_conn):
    token = csrf_of(client.get(f"/jobs/{data.failed}").text)
    assert client.post(f"/jobs/{data.target}/populate", data={"csrf": token}).status_code == 404
    assert client.post(f"/targets/{data.failed}/retry", data={"csrf": token}).status_code == 404
    assert _state(sync_conn, data.failed) == "failed"
    page = client.get(f"/jobs/{data.failed}?done=<b>hacked</b>")
    assert "hacked" not in page.text
    assert "hacked" not in client.get("/targets?populated=1&done=hacked").text
    assert client.get("/targets?populated=x").status_code == 400


def test_the_host_header_never_decides_who_gets_in_or_what_an_action_hits(data, sync_conn):
    """A reviewer's attacks: request.url is built from the Host header; the checks must use
    the path the router serves."""
    with console_client(password="pw", host="0.0.0.0") as c:
        for host in ("x/healthz?", "x/static/", "x/readyz#", "x/healthz"):
            assert c.get("/jobs", headers={"Host": host}).status_code == 401, host
    with console_client() as c:
        token = csrf_of(c.get(f"/jobs/{data.failed}").text)
        confused = c.post(
            f"/jobs/{data.target}/populate", data={"csrf": token}, headers={"Host": "x/targets/"}
        )
        assert confused.status_code in (400, 404)
    status = sync_conn.execute(
        "SELECT population_status FROM targets WHERE id = %s", (data.target,)
    ).fetchone()[0]
    assert status != "populating"


def test_without_a_password_other_host_names_get_nothing(data):
    """DNS rebinding: a page the operator visits resolves its own name to 127.0.0.1."""
    config = ConsoleConfig(conninfo=TEST_DB.conninfo, secret=b"s")
    with TestClient(build_console(config), base_url="http://127.0.0.1:8000") as c:
        assert c.get("/").status_code == 200
        assert c.get("/", headers={"Host": "localhost:8000"}).status_code == 200
        refused = c.get("/", headers={"Host": "rebind.attacker.example"})
        assert refused.status_code == 400 and "csrf" not in refused.text


def test_odd_characters_are_400_not_500(client, data):
    for params in ({"queue": "\x00"}, {"task": "a\x00b"}, {"queue": "a\nb"}):
        assert client.get("/jobs", params=params).status_code == 400, params
    refused = client.post(f"/jobs/{data.failed}/retry", data={"csrf": "é"})
    assert refused.status_code == 403
