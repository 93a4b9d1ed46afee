"""The console's two roles and its action log: a viewer (QLARIUS_WEB_READONLY_PASSWORD) reads
every page, sees no action and is refused each one (403, nothing changes, nothing logged); an
operator's actions are each a row of qlarius_console_actions (who, what, which, how many),
shown on the job's page and on /actions, newest first, in keyset pages."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import psycopg
import pytest
from starlette.testclient import TestClient

from qlarius_jobs.ops.console import ConsoleConfig, ConsoleRefused, build_console
from qlarius_jobs.ops.console_security import csrf_token
from tests.integration.factories import standard_world
from tests.integration.support import TEST_DB

SECRET = b"test-secret"
TOKEN = csrf_token(SECRET)
SCHEDULE = "backfill_missing_snapshots"


def _auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


OPERATOR = _auth("ana", "op-pass")
VIEWER = _auth("vic", "view-pass")


@pytest.fixture
def client() -> Iterator[TestClient]:
    config = ConsoleConfig(
        conninfo=TEST_DB.conninfo,
        secret=SECRET,
        extra_hosts=("testserver",),
        password="op-pass",
        readonly_password="view-pass",
    )
    config.check()
    with TestClient(build_console(config), raise_server_exceptions=False) as c:
        yield c


def _job(conn: psycopg.Connection, status: str) -> int:
    return conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
        "VALUES ('targets', 'populate_target', %s, %s) RETURNING id",
        (json.dumps({"target_id": 1}), status),
    ).fetchone()[0]


def _log(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT actor, kind, action, ids, names, count, detail FROM qlarius_console_actions "
        "ORDER BY id"
    ).fetchall()


def test_a_viewer_reads_every_page_but_every_action_is_hidden_and_refused(client, sync_conn):
    target = standard_world(sync_conn).target
    failed, waiting = _job(sync_conn, "failed"), _job(sync_conn, "todo")
    pages = ["/", "/jobs", f"/jobs/{failed}", f"/jobs/{waiting}", "/targets"]
    pages += ["/schedules", "/queues", "/actions", "/backfill", "/workers"]
    for path in pages:
        page = client.get(path, headers=VIEWER)
        assert page.status_code == 200, path
        assert 'method="post"' not in page.text and 'name="csrf"' not in page.text, path
        assert "read-only: viewer" in page.text, path
    # the operator sees the actions on the same pages
    assert 'id="retry"' in client.get(f"/jobs/{failed}", headers=OPERATOR).text
    assert "Re-populate" in client.get("/targets", headers=OPERATOR).text
    actions = [
        f"/jobs/{failed}/retry",
        f"/jobs/{waiting}/cancel",
        f"/jobs/{waiting}/abort",
        f"/targets/{target}/populate",
        f"/schedules/{SCHEDULE}/cron",
        f"/schedules/{SCHEDULE}/pause",
        f"/schedules/{SCHEDULE}/resume",
        f"/schedules/{SCHEDULE}/run",
        "/queues/targets/pause",
        "/queues/targets/resume",
        "/queues/targets/concurrency",
        f"/tasks/{SCHEDULE}/pause",
        f"/tasks/{SCHEDULE}/resume",
        "/jobs/bulk",
        "/jobs/bulk/apply",
    ]
    form = {
        "csrf": TOKEN,
        "confirm": "yes",
        "cron": "5 * * * *",
        "concurrency": "2",
        "action": "retry",
        "scope": "selected",
        "id": str(failed),
    }
    for path in actions:
        refused = client.post(path, data=form, headers=VIEWER, follow_redirects=False)
        assert refused.status_code == 403, path
        assert "read-only for viewers" in refused.text, path
    states = sync_conn.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE id = ANY(%s) ORDER BY id",
        ([failed, waiting],),
    ).fetchall()
    assert states == [("failed",), ("todo",)]
    assert sync_conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone()[0] == 2
    assert (
        sync_conn.execute(
            "SELECT population_status FROM targets WHERE id = %s", (target,)
        ).fetchone()[0]
        != "populating"
    )
    assert not sync_conn.execute(
        "SELECT count(*) FROM qlarius_queue_controls WHERE paused OR concurrency IS NOT NULL"
    ).fetchone()[0]
    assert sync_conn.execute(
        "SELECT enabled FROM qlarius_schedules WHERE task_name = %s", (SCHEDULE,)
    ).fetchone()[0]
    assert _log(sync_conn) == []
    # without a password nobody gets in, with a wrong one neither
    assert client.get("/").status_code == 401
    assert client.get("/", headers=_auth("vic", "nope")).status_code == 401


def test_two_passwords_must_be_two_and_the_viewers_needs_the_operators():
    with pytest.raises(ConsoleRefused, match="needs QLARIUS_WEB_PASSWORD"):
        ConsoleConfig(conninfo="", readonly_password="v").check()
    with pytest.raises(ConsoleRefused, match="choose two passwords"):
        ConsoleConfig(conninfo="", password="p", readonly_password="p").check()


def test_each_operator_action_is_logged_with_who_what_and_which(client, sync_conn):
    target = standard_world(sync_conn).target
    failed, waiting, running = (_job(sync_conn, s) for s in ("failed", "todo", "doing"))

    def post(path: str, **form: str) -> None:
        done = client.post(path, data={"csrf": TOKEN, **form}, headers=OPERATOR)
        assert done.status_code == 200, (path, done.text[-300:])

    post(f"/jobs/{failed}/retry")
    post(f"/jobs/{waiting}/cancel", confirm="yes")
    post(f"/jobs/{running}/abort", confirm="yes")
    post(f"/targets/{target}/populate", confirm="yes")
    post(f"/schedules/{SCHEDULE}/cron", cron="5 * * * *")
    post(f"/schedules/{SCHEDULE}/pause", confirm="yes")
    post("/queues/targets/concurrency", concurrency="3")
    post(f"/tasks/{SCHEDULE}/pause", confirm="yes")
    # refused actions change nothing and log nothing
    again = client.post(f"/jobs/{failed}/retry", data={"csrf": TOKEN}, headers=OPERATOR)
    assert again.status_code == 409
    bad = client.post(
        f"/schedules/{SCHEDULE}/cron", data={"csrf": TOKEN, "cron": "nope"}, headers=OPERATOR
    )
    assert bad.status_code == 400
    who = "console:ana"
    assert _log(sync_conn) == [
        (who, "job", "retry", [failed], [], 1, None),
        (who, "job", "cancel", [waiting], [], 1, None),
        (who, "job", "abort", [running], [], 1, None),
        (who, "target", "populate", [target], [], 1, None),
        (who, "schedule", "cron", [], [SCHEDULE], 1, "5 * * * *"),
        (who, "schedule", "pause", [], [SCHEDULE], 1, None),
        (who, "queue", "concurrency", [], ["targets"], 1, "3"),
        (who, "task", "pause", [], [SCHEDULE], 1, None),
    ]
    # the job's page shows the actions on it, and only those
    job_page = client.get(f"/jobs/{failed}", headers=VIEWER).text
    section = job_page.split('id="job-actions"', 1)[1].split("</table>", 1)[0]
    assert "console:ana" in section and "retry" in section and "cancel" not in section
    # /actions: newest first, each with who, what and which
    log_page = client.get("/actions", headers=VIEWER).text
    assert log_page.index("task pause") < log_page.index("queue concurrency")
    assert log_page.index("queue concurrency") < log_page.index("job retry")
    assert f'href="/jobs/{failed}"' in log_page and "console:ana" in log_page


def test_the_action_log_goes_back_by_keyset(client, sync_conn):
    sync_conn.execute(
        "INSERT INTO qlarius_console_actions (actor, kind, action, ids, count) "
        "SELECT 'console:ana', 'job', 'retry', ARRAY[n], 1 FROM generate_series(1, 60) n"
    )
    first = client.get("/actions", headers=OPERATOR).text
    assert 'href="/jobs/60"' in first and 'href="/jobs/11"' in first
    assert 'href="/jobs/10"' not in first
    assert 'href="/actions?before=11"' in first
    second = client.get("/actions?before=11", headers=OPERATOR).text
    assert 'href="/jobs/10"' in second and 'href="/jobs/1"' in second
    assert 'href="/jobs/11"' not in second and "Older actions" not in second
    assert client.get("/actions?before=abc", headers=OPERATOR).status_code == 400


def test_a_bulk_action_is_logged_once_with_every_job_it_changed(client, sync_conn):
    failed = [_job(sync_conn, "failed") for _ in range(3)]
    waiting = _job(sync_conn, "todo")  # not retryable: left alone, not logged
    done = client.post(
        "/jobs/bulk/apply",
        data={"csrf": TOKEN, "confirm": "yes", "action": "retry", "id": [*failed, waiting]},
        headers=OPERATOR,
    )
    assert done.status_code == 200, done.text[-300:]
    [(action, ids, count)] = sync_conn.execute(
        "SELECT action, ids, count FROM qlarius_console_actions"
    ).fetchall()
    assert (action, sorted(ids), count) == ("retry", sorted(failed), 3)
