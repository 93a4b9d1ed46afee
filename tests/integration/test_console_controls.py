"""The console's Schedules and Queues pages against the real database (httpx, Starlette's
TestClient): what they show, their actions changing the rows (and naming the console in
``updated_by``), the database's refusals as 400 pages that change nothing, read-only mode,
CSRF, the overview's paused section, and the controls' series in ``/metrics``."""

from __future__ import annotations

import base64
import html
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from qlarius_jobs.ops import controls
from qlarius_jobs.ops.console_security import csrf_token
from tests.integration.support import CONSOLE_SECRET, console_client, csrf_of

SCHEDULE = "backfill_missing_snapshots"
PASSWORD = "s3cret"
SECRET = CONSOLE_SECRET


@pytest.fixture
def client() -> Iterator[TestClient]:
    with console_client() as c:
        yield c


def _schedule(conn: psycopg.Connection, task: str = SCHEDULE) -> dict[str, Any]:
    cur = conn.execute(
        "SELECT cron, enabled, updated_at, updated_by FROM qlarius_schedules WHERE task_name = %s",
        (task,),
    )
    names = [c.name for c in cur.description]
    return dict(zip(names, cur.fetchone(), strict=True))


def _queue(conn: psycopg.Connection, queue: str) -> tuple[bool, int | None, str]:
    return conn.execute(
        "SELECT paused, concurrency, updated_by FROM qlarius_queue_controls WHERE queue_name = %s",
        (queue,),
    ).fetchone()


def _task(conn: psycopg.Connection, task: str) -> tuple[bool, str]:
    return conn.execute(
        "SELECT paused, updated_by FROM qlarius_task_controls WHERE task_name = %s", (task,)
    ).fetchone()


def _row(page: str, row_id: str) -> str:
    """The HTML of one table row of a page, by its id."""
    match = re.search(rf'<tr id="{re.escape(row_id)}"[^>]*>(.*?)</tr>', page, re.S)
    assert match, f"no row {row_id}"
    return match[1]


# --- the pages ----------------------------------------------------------------------------


def test_the_schedules_page_shows_each_schedule_its_next_runs_and_its_ticks(client, sync_conn):
    sync_conn.execute(
        "UPDATE qlarius_schedules SET cron = '*/5 * * * *' WHERE task_name = %s", (SCHEDULE,)
    )
    ran = controls.run_schedule_now(sync_conn, "prune_finished_jobs", "test")
    assert ran["job_id"] is not None
    sync_conn.execute(
        "INSERT INTO qlarius_schedule_ticks (task_name, tick_at, missed, job_id) "
        "VALUES (%s, now() - interval '1 hour', 4, NULL)",
        (SCHEDULE,),
    )
    page = client.get("/schedules")
    assert page.status_code == 200
    for task in ("backfill_missing_snapshots", "rescue_stalled_jobs", "prune_finished_jobs"):
        assert f'id="schedule-{task}"' in page.text
    row = _row(page.text, f"schedule-{SCHEDULE}")
    assert "<code>*/5 * * * *</code>" in row and ">enabled<" in row
    # its next three runs, each on a five-minute mark, in the cell after its state (the row's
    # last-changed time, also followed by <br>, lands on a whole minute one time in sixty)
    next_runs = re.search(r'class="schedule-state">[^<]*</td>\s*<td>(.*?)</td>', row, re.S)
    assert next_runs is not None, row
    runs = re.findall(r"\d{4}-\d\d-\d\d \d\d:(\d\d):00 UTC<br>", next_runs[1])
    assert len(runs) == 3 and all(int(m) % 5 == 0 for m in runs)
    prune = _row(page.text, "schedule-prune_finished_jobs")
    assert f'<a href="/jobs/{ran["job_id"]}">#{ran["job_id"]}</a> todo' in prune
    ticks = page.text.split('id="ticks"', 1)[1]
    assert "<strong>run now</strong>" in ticks and f'href="/jobs/{ran["job_id"]}"' in ticks
    assert "none (the previous job was waiting)" in ticks and '<td class="num">4</td>' in ticks
    # one schedule's ticks alone
    alone = client.get(f"/schedules?task={SCHEDULE}").text.split('id="ticks"', 1)[1]
    assert "none (the previous job was waiting)" in alone and "run now</strong>" not in alone
    assert client.get("/schedules?task=nope").status_code == 404
    assert client.get("/schedules?task=a%00b").status_code == 400


def test_the_queues_page_shows_each_queue_and_task(client, sync_conn):
    sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) VALUES "
        "('targets', 'populate_target', '{\"target_id\": 1}', 'todo'), "
        "('targets', 'populate_target', '{\"target_id\": 2}', 'todo'), "
        "('targets', 'snapshot_band_populations', '{\"band_id\": 1}', 'doing')"
    )
    sync_conn.execute(
        "UPDATE qlarius_queue_controls SET concurrency = 2 WHERE queue_name = 'offers'"
    )
    page = client.get("/queues")
    assert page.status_code == 200
    for queue in ("default", "maintenance", "offers", "targets"):
        assert f'id="queue-{queue}"' in page.text
    targets = _row(page.text, "queue-targets")
    assert ">running<" in targets and "workers' own" in targets
    assert '/jobs?queue=targets&amp;state=todo">2</a>' in targets
    assert '/jobs?queue=targets&amp;state=doing">1</a>' in targets
    offers = _row(page.text, "queue-offers")
    assert "at most 2 per worker process" in offers and 'value="2"' in offers
    task = _row(page.text, "task-populate_target")
    assert "<td>targets</td>" in task and ">running<" in task


def test_the_pages_are_in_the_nav(client):
    page = client.get("/").text
    assert '<a href="/schedules">Schedules</a>' in page and '<a href="/queues">Queues</a>' in page


# --- the actions --------------------------------------------------------------------------


def test_schedule_actions_change_the_row_and_name_the_console(client, sync_conn):
    token = csrf_of(client.get("/schedules").text)
    done = client.post(
        f"/schedules/{SCHEDULE}/cron",
        data={"csrf": token, "cron": " 15 * * * * "},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/schedules?done=cron&schedule={SCHEDULE}"
    row = _schedule(sync_conn)
    assert row["cron"] == "15 * * * *" and row["updated_by"] == "console"
    page = client.get(done.headers["location"]).text
    assert f"Done: {SCHEDULE}: cron expression changed." in page

    # a pause needs confirming: the bare POST changes nothing
    unconfirmed = client.post(f"/schedules/{SCHEDULE}/pause", data={"csrf": token})
    assert unconfirmed.status_code == 400 and "needs confirming" in unconfirmed.text
    assert _schedule(sync_conn)["enabled"] is True
    paused = client.post(f"/schedules/{SCHEDULE}/pause", data={"csrf": token, "confirm": "yes"})
    assert paused.status_code == 200 and f"Done: {SCHEDULE}: paused." in paused.text
    assert _schedule(sync_conn)["enabled"] is False
    row_html = _row(paused.text, f"schedule-{SCHEDULE}")
    assert ">paused<" in row_html and "- (paused)" in row_html and "/resume" in row_html

    resumed = client.post(f"/schedules/{SCHEDULE}/resume", data={"csrf": token})
    assert resumed.status_code == 200 and _schedule(sync_conn)["enabled"] is True

    ran = client.post(f"/schedules/{SCHEDULE}/run", data={"csrf": token}, follow_redirects=False)
    assert ran.status_code == 303
    job = sync_conn.execute(
        "SELECT job_id FROM qlarius_schedule_ticks WHERE task_name = %s AND run_now",
        (SCHEDULE,),
    ).fetchone()[0]
    assert job is not None
    assert ran.headers["location"] == f"/schedules?done=run&schedule={SCHEDULE}&job={job}"
    assert sync_conn.execute(
        "SELECT task_name, status::text FROM procrastinate_jobs WHERE id = %s", (job,)
    ).fetchone() == (SCHEDULE, "todo")
    shown = client.get(ran.headers["location"]).text
    assert f'run now: <a href="/jobs/{job}">job #{job}</a>' in shown

    assert client.post(f"/schedules/{SCHEDULE}/explode", data={"csrf": token}).status_code == 404
    unknown = client.post("/schedules/nope/run", data={"csrf": token})
    assert unknown.status_code == 400 and "no schedule for &#39;nope&#39;" in unknown.text


def test_an_invalid_cron_is_a_400_with_the_databases_line_and_changes_nothing(client, sync_conn):
    before = _schedule(sync_conn)
    token = csrf_of(client.get("/schedules").text)
    for cron, line in (
        ("banana", f"invalid schedule for {SCHEDULE}: 'banana' is not a cron expression"),
        ("0 0 30 2 *", "'0 0 30 2 *' never fires: no month has that day"),
        ("", "a cron expression is needed"),
    ):
        refused = client.post(f"/schedules/{SCHEDULE}/cron", data={"csrf": token, "cron": cron})
        assert refused.status_code == 400, cron
        assert line in html.unescape(refused.text) and "Traceback" not in refused.text
    nul = client.post(f"/schedules/{SCHEDULE}/cron", data={"csrf": token, "cron": "0 \x00 * * *"})
    assert nul.status_code == 400 and "not printable" in nul.text
    assert _schedule(sync_conn) == before


def test_queue_and_task_actions_change_the_rows_and_name_the_console_user(sync_conn):
    auth = {"Authorization": "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()}
    with console_client(password=PASSWORD, host="0.0.0.0") as c:
        token = csrf_of(c.get("/queues", headers=auth).text)

        def post(path: str, **form: str) -> Any:
            return c.post(path, data={"csrf": token, **form}, headers=auth)

        unconfirmed = post("/queues/targets/pause")
        assert unconfirmed.status_code == 400 and _queue(sync_conn, "targets")[0] is False
        paused = post("/queues/targets/pause", confirm="yes")
        assert paused.status_code == 200 and "Done: targets: paused." in paused.text
        assert _queue(sync_conn, "targets") == (True, None, "console:alice")
        assert ">paused<" in _row(paused.text, "queue-targets")
        assert post("/queues/targets/resume").status_code == 200
        assert _queue(sync_conn, "targets")[0] is False

        assert post("/queues/offers/concurrency", concurrency="3").status_code == 200
        assert _queue(sync_conn, "offers")[1] == 3
        for bad, message in (
            ("abc", "concurrency &#39;abc&#39; is not a whole number"),
            ("0", "queue offers: concurrency must be 1 to 10000"),
            ("10001", "concurrency must be 1 to 10000"),
        ):
            refused = post("/queues/offers/concurrency", concurrency=bad)
            assert refused.status_code == 400 and message in refused.text, bad
        assert _queue(sync_conn, "offers")[1] == 3
        assert post("/queues/offers/concurrency", concurrency="").status_code == 200
        assert _queue(sync_conn, "offers")[1] is None  # the workers' own again
        unknown = post("/queues/nope/pause", confirm="yes")
        assert unknown.status_code == 400 and "no such queue: nope" in unknown.text

        assert post("/tasks/populate_target/pause").status_code == 400
        assert _task(sync_conn, "populate_target")[0] is False
        task_paused = post("/tasks/populate_target/pause", confirm="yes")
        assert task_paused.status_code == 200 and "Done: populate_target: paused." in (
            task_paused.text
        )
        assert _task(sync_conn, "populate_target") == (True, "console:alice")
        assert post("/tasks/populate_target/resume").status_code == 200
        assert _task(sync_conn, "populate_target")[0] is False
        assert post("/tasks/populate_target/explode").status_code == 404


def test_read_only_hides_and_refuses_the_controls(sync_conn):
    before = (
        _schedule(sync_conn),
        _queue(sync_conn, "targets"),
        _task(sync_conn, "populate_target"),
    )
    with console_client(read_only=True) as c:
        for path in ("/schedules", "/queues"):
            page = c.get(path)
            assert page.status_code == 200 and "read-only" in page.text
            assert 'name="csrf"' not in page.text and "<form" not in page.text
        assert 'id="queue-targets"' in c.get("/queues").text  # shown, not acted on
        for path, form in (
            (f"/schedules/{SCHEDULE}/pause", {"confirm": "yes"}),
            (f"/schedules/{SCHEDULE}/cron", {"cron": "1 * * * *"}),
            (f"/schedules/{SCHEDULE}/run", {}),
            ("/queues/targets/pause", {"confirm": "yes"}),
            ("/queues/targets/concurrency", {"concurrency": "1"}),
            ("/tasks/populate_target/pause", {"confirm": "yes"}),
        ):
            # the right token: the refusal is read-only mode's, not the token's
            refused = c.post(path, data={"csrf": csrf_token(SECRET), **form})
            assert refused.status_code == 403, path
            assert '<p class="error">the console is read-only' in refused.text, path
    after = (
        _schedule(sync_conn),
        _queue(sync_conn, "targets"),
        _task(sync_conn, "populate_target"),
    )
    assert after == before
    assert sync_conn.execute("SELECT count(*) FROM qlarius_schedule_ticks").fetchone()[0] == 0


def test_the_controls_need_the_csrf_token(client, sync_conn):
    before = (
        _schedule(sync_conn),
        _queue(sync_conn, "targets"),
        _task(sync_conn, "populate_target"),
    )
    for token in (None, "", "0" * 64):
        form = {} if token is None else {"csrf": token}
        for path, extra in (
            (f"/schedules/{SCHEDULE}/pause", {"confirm": "yes"}),
            (f"/schedules/{SCHEDULE}/cron", {"cron": "1 * * * *"}),
            (f"/schedules/{SCHEDULE}/run", {}),
            ("/queues/targets/pause", {"confirm": "yes"}),
            ("/queues/targets/concurrency", {"concurrency": "1"}),
            ("/tasks/populate_target/pause", {"confirm": "yes"}),
        ):
            refused = client.post(path, data={**form, **extra}, follow_redirects=False)
            assert refused.status_code == 403 and "CSRF" in refused.text, (path, token)
    after = (
        _schedule(sync_conn),
        _queue(sync_conn, "targets"),
        _task(sync_conn, "populate_target"),
    )
    assert after == before
    assert sync_conn.execute("SELECT count(*) FROM qlarius_schedule_ticks").fetchone()[0] == 0


def test_done_lines_never_echo_what_the_address_says(client):
    page = client.get("/schedules?done=<b>x</b>&schedule=backfill_missing_snapshots").text
    assert "Done:" not in page and "&lt;b&gt;" not in page
    assert "Done:" not in client.get("/schedules?done=pause&schedule=<i>nope</i>").text
    assert "nope" not in client.get("/queues?done=pause&queue=nope").text
    assert client.get("/schedules?done=run&schedule=prune_finished_jobs&job=x").status_code == 400


# --- the overview -------------------------------------------------------------------------


def test_the_overview_shows_what_is_paused_and_a_paused_schedule(client, sync_conn):
    assert 'id="paused"' not in client.get("/").text  # nothing paused, no section
    sync_conn.execute("UPDATE qlarius_queue_controls SET paused = true WHERE queue_name = 'offers'")
    sync_conn.execute(
        "UPDATE qlarius_task_controls SET paused = true WHERE task_name = 'populate_target'"
    )
    sync_conn.execute(
        "UPDATE qlarius_schedules SET enabled = false WHERE task_name = 'prune_finished_jobs'"
    )
    page = client.get("/")
    assert page.status_code == 200
    section = page.text.split('id="paused"', 1)[1].split("</section>", 1)[0]
    assert '<td>queue</td>\n    <td><a href="/queues">offers</a>' in section
    assert '<td>task</td>\n    <td><a href="/queues">populate_target</a>' in section
    assert '<td>schedule</td>\n    <td><a href="/schedules">prune_finished_jobs</a>' in section
    periodic = page.text.split("Periodic schedule", 1)[1]
    prune = periodic.split("prune_finished_jobs", 1)[1].split("</tr>", 1)[0]
    assert "<td>paused</td><td>- (paused)</td>" in prune


# --- /metrics -----------------------------------------------------------------------------


def _series(body: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line and not line.startswith("#")
    }


def test_metrics_show_the_controls(client, sync_conn):
    sync_conn.execute("UPDATE qlarius_queue_controls SET paused = true WHERE queue_name = 'offers'")
    sync_conn.execute(
        "UPDATE qlarius_task_controls SET paused = true WHERE task_name = 'populate_target'"
    )
    sync_conn.execute(
        "UPDATE qlarius_schedules SET enabled = false WHERE task_name = 'prune_finished_jobs'"
    )
    sync_conn.execute(
        "INSERT INTO qlarius_schedule_ticks (task_name, tick_at) "
        "VALUES ('rescue_stalled_jobs', '2024-05-01 12:00:00+00')"
    )
    series = _series(client.get("/metrics").text)
    assert series['qlarius_queue_paused{queue="offers"}'] == 1.0
    for queue in ("default", "maintenance", "targets"):
        assert series[f'qlarius_queue_paused{{queue="{queue}"}}'] == 0.0
    tasks = sync_conn.execute("SELECT task_name FROM qlarius_task_controls").fetchall()
    assert {k for k in series if k.startswith("qlarius_task_paused{")} == {
        f'qlarius_task_paused{{task="{t}"}}' for (t,) in tasks
    }
    assert series['qlarius_task_paused{task="populate_target"}'] == 1.0
    assert series['qlarius_task_paused{task="sync_pending_me_files"}'] == 0.0
    assert series['qlarius_schedule_enabled{task="prune_finished_jobs"}'] == 0.0
    assert series[f'qlarius_schedule_enabled{{task="{SCHEDULE}"}}'] == 1.0
    last = "qlarius_schedule_last_tick_timestamp_seconds"
    assert series[f'{last}{{task="rescue_stalled_jobs"}}'] == 1714564800.0
    assert series[f'{last}{{task="{SCHEDULE}"}}'] == 0.0  # never ticked


def test_promtool_finds_the_metrics_clean(client, sync_conn):
    assert shutil.which("promtool"), "no promtool: apt-get install prometheus (.ci/run does)"
    sync_conn.execute("UPDATE qlarius_queue_controls SET paused = true WHERE queue_name = 'offers'")
    controls.run_schedule_now(sync_conn, SCHEDULE, "test")
    body = client.get("/metrics").text
    assert "qlarius_schedule_last_tick_timestamp_seconds" in body
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), (
        checked.stdout + checked.stderr
    )
