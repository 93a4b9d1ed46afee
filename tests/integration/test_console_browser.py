"""The console in a real headless browser (Debian's chromium, driven by Playwright): the
overview, a failed job followed from it, retry pressed, the job waiting again; a queue paused
from the Queues page through its confirmation, which needs no script; a job's state change
appearing on its open page by itself, and not once live updates are paused. The overview's screenshot
is the README's (docs/console.png)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from qlarius_jobs.ops.console import ConsoleConfig, build_console
from tests.integration.factories import standard_world
from tests.integration.support import TEST_DB, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"


@pytest.fixture(autouse=True, scope="module")
def chromium_installed() -> None:
    """A real browser or a failure saying so, never a skip."""
    if CHROMIUM is None:
        pytest.fail("no chromium on this machine: apt-get install chromium (.ci/run does)")


@pytest.fixture
def console_url() -> Iterator[str]:
    with _serving() as url:
        yield url


@contextlib.contextmanager
def _serving(**options: Any) -> Iterator[str]:
    port = free_port()
    config = ConsoleConfig(conninfo=TEST_DB.conninfo, port=port, **options)
    server = uvicorn.Server(
        uvicorn.Config(build_console(config), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the console did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=20)


def _demo(sync_conn) -> int:
    s = standard_world(sync_conn)
    w = s.w
    for tags in ([s.female, s.z10028], [s.female, s.z10001, s.story], [s.male]):
        w.me_file(tags)
    failed = sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts) "
        "VALUES ('targets', 'populate_target', %s, 'failed', 3) RETURNING id",
        (json.dumps({"target_id": s.target}),),
    ).fetchone()[0]
    for attempt in (1, 2, 3):
        sync_conn.execute(
            "INSERT INTO qlarius_job_errors (job_id, task_name, attempt, error_type, message, "
            "traceback, at) VALUES (%s, 'populate_target', %s, 'TargetRowBusy', "
            "'its row is held by another transaction', 'Traceback (most recent call last): ...', "
            "now() - make_interval(mins => 10 - %s))",
            (failed, attempt, attempt),
        )
    sync_conn.execute(
        "INSERT INTO procrastinate_events (job_id, type, at) VALUES (%s, 'failed', now())",
        (failed,),
    )
    # some history for the charts: jobs that ended over the last hours, backfill runs
    sync_conn.execute(
        "WITH j AS (INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
        "SELECT 'targets', 'sync_pending_me_files', '{}', 'succeeded' FROM generate_series(1, 400) "
        "RETURNING id) INSERT INTO procrastinate_events (job_id, type, at) "
        "SELECT id, 'succeeded', now() - make_interval(secs => (random() * 10000)::int) FROM j"
    )
    sync_conn.execute(
        "INSERT INTO backfill_runs (started_at, finished_at, found_populations, found_offers, "
        "found_ad_events, updated_populations, updated_offers, updated_ad_events, elapsed_ms) "
        "SELECT now() - make_interval(hours => h), now() - make_interval(hours => h), "
        "(h % 7) * 3, h % 4, h % 3, (h % 7) * 3, h % 4, 0, 40 FROM generate_series(1, 150, 6) h"
    )
    return failed


def test_follow_a_failed_job_from_the_overview_and_retry_it(sync_conn, console_url):
    from playwright.sync_api import sync_playwright

    failed = _demo(sync_conn)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(console_url + "/")
            assert page.locator("h1").inner_text() == "Overview"
            assert page.locator("svg.chart").count() == 2
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            page.get_by_role("link", name="1", exact=True).first.click()  # the failed count
            page.get_by_role("link", name=f"#{failed}").click()
            assert page.locator("h1").inner_text().startswith(f"Job #{failed}")
            assert "TargetRowBusy" in page.content()
            page.locator("#retry").click()
            page.wait_for_url(f"**/jobs/{failed}?done=retry")
            assert "Done: retry" in page.content()
            assert page.locator("h1 .state").inner_text() == "todo"
        finally:
            browser.close()
    assert (
        sync_conn.execute(
            "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (failed,)
        ).fetchone()[0]
        == "todo"
    )
    assert SCREENSHOT.stat().st_size > 10_000


def test_pause_a_queue_through_its_confirmation_without_a_script(sync_conn, console_url):
    """The pages forbid scripts (CSP): the pause is confirmed by a second button that its
    first one, a <details>, shows."""
    from playwright.sync_api import sync_playwright

    def paused() -> bool:
        return sync_conn.execute(
            "SELECT paused FROM qlarius_queue_controls WHERE queue_name = 'targets'"
        ).fetchone()[0]

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(console_url + "/")
            page.get_by_role("link", name="Queues", exact=True).click()
            page.wait_for_url("**/queues")
            row = page.locator("#queue-targets")
            confirm = row.get_by_role("button", name="Pause queue targets")
            assert not confirm.is_visible()  # hidden until "Pause…" is pressed
            row.get_by_text("Pause…").click()
            assert not paused()
            confirm.click()
            page.wait_for_url("**/queues?done=pause&queue=targets")
            assert "Done: targets: paused." in page.content()
            assert page.locator("#queue-targets .queue-state").inner_text() == "paused"
            page.locator("#queue-targets").get_by_role("button", name="Resume").click()
            page.wait_for_url("**/queues?done=resume&queue=targets")
            assert page.locator("#queue-targets .queue-state").inner_text() == "running"
        finally:
            browser.close()
    assert not paused()
    updated_by = sync_conn.execute(
        "SELECT updated_by FROM qlarius_queue_controls WHERE queue_name = 'targets'"
    ).fetchone()[0]
    assert updated_by == "console"


def test_a_state_change_appears_on_the_open_page_unless_paused(sync_conn):
    """No script: the page reloads itself (a meta refresh) every second here; paused, it
    stays as it was until reloaded by hand."""
    from playwright.sync_api import expect, sync_playwright

    def job(status: str) -> int:
        return sync_conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
            "VALUES ('targets', 'populate_target', '{\"target_id\": 1}', %s) RETURNING id",
            (status,),
        ).fetchone()[0]

    def set_state(id_: int, status: str) -> None:
        sync_conn.execute("UPDATE procrastinate_jobs SET status = %s WHERE id = %s", (status, id_))

    live, paused = job("todo"), job("todo")
    with _serving(refresh_seconds=1) as url, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(java_script_enabled=False)  # works with scripts off
            page.goto(f"{url}/jobs/{live}")
            state = page.locator("h1 .state")
            assert state.inner_text() == "todo"
            set_state(live, "doing")
            expect(state).to_have_text("doing", timeout=10_000)  # no click
            page.goto(f"{url}/jobs?state=doing")  # the list keeps its filter as it reloads
            expect(page.locator(f'a[href="/jobs/{live}"]')).to_be_visible()
            set_state(live, "succeeded")
            expect(page.locator(f'a[href="/jobs/{live}"]')).to_have_count(0, timeout=10_000)
            assert page.url.endswith("/jobs?state=doing")

            page.goto(f"{url}/jobs/{paused}")
            page.get_by_role("link", name="Pause live updates").click()
            page.wait_for_url(f"**/jobs/{paused}")
            assert page.get_by_role("link", name="Resume live updates").is_visible()
            set_state(paused, "doing")
            page.wait_for_timeout(3_000)  # three refreshes' worth
            assert state.inner_text() == "todo"
            page.get_by_role("link", name="Resume live updates").click()
            expect(state).to_have_text("doing", timeout=10_000)
        finally:
            browser.close()


def _browser(p):
    return p.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
    )


def _jobs(sync_conn, rows: list[tuple[str, dict, str]]) -> list[int]:
    return [
        sync_conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
            "VALUES ('targets', %s, %s, %s) RETURNING id",
            (task, json.dumps(args), state),
        ).fetchone()[0]
        for task, args, state in rows
    ]


def test_each_legend_label_of_jobs_per_minute_has_its_series_colour(sync_conn, console_url):
    """A `.chart text` fill rule once beat every label's own fill attribute: all grey."""
    from playwright.sync_api import sync_playwright

    _demo(sync_conn)
    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page()
            page.goto(console_url + "/")
            labels = page.locator("svg.chart text.legend")
            assert labels.all_text_contents() == ["succeeded", "failed", "aborted"]
            fills = labels.evaluate_all("els => els.map(e => getComputedStyle(e).fill)")
        finally:
            browser.close()
    assert fills == ["rgb(46, 125, 50)", "rgb(198, 40, 40)", "rgb(239, 108, 0)"]


def test_bulk_retry_of_ticked_jobs_through_its_confirmation(sync_conn, console_url):
    from playwright.sync_api import sync_playwright

    failed = _jobs(sync_conn, [("populate_target", {"target_id": i}, "failed") for i in (1, 2, 3)])
    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(console_url + "/jobs?state=failed")
            for id_ in failed[:2]:
                page.get_by_label(f"select job {id_}").check()
            page.locator("#bulk-retry").click()
            page.wait_for_url("**/jobs/bulk")
            assert "This will retry 2 job(s)" in page.locator("#bulk-summary").inner_text()
            states = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'"
            assert sync_conn.execute(states).fetchone()[0] == 0  # nothing until confirmed
            page.locator("#confirm").click()
            page.wait_for_url("**/jobs?state=failed&done=retry&count=2")
            assert "Done: retried 2 job(s)." in page.content()
            assert {
                int(i)
                for i in page.locator("tr[id^=job-]").evaluate_all(
                    "rows => rows.map(r => r.id.slice(4))"
                )
            } == {failed[2]}
        finally:
            browser.close()
    rows = sync_conn.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE id = ANY(%s) ORDER BY id", (failed,)
    ).fetchall()
    assert [r[0] for r in rows] == ["todo", "todo", "failed"]


def test_search_jobs_by_argument(sync_conn, console_url):
    from playwright.sync_api import sync_playwright

    a, b, _ = _jobs(
        sync_conn,
        [
            ("sync_me_file", {"me_file_id": 42, "target_id": 7}, "todo"),
            ("populate_target", {"target_id": 7}, "failed"),
            ("sync_me_file", {"me_file_id": 43, "target_id": 7}, "todo"),
        ],
    )
    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(console_url + "/jobs")
            page.locator("#search").fill("me_file_id:42 target_id:7")
            page.get_by_role("button", name="Filter").click()
            page.wait_for_url("**/jobs?q=*")
            assert page.locator("tr[id^=job-]").count() == 1
            assert page.locator(f"#job-{a}").is_visible()
            page.locator("#search").fill("target_id:7")
            page.get_by_label("state").select_option("failed")
            page.get_by_role("button", name="Filter").click()
            page.wait_for_url("**state=failed*")
            assert page.locator("tr[id^=job-]").count() == 1
            assert page.locator(f"#job-{b}").is_visible()
            page.locator("#search").fill("target_id:")
            page.get_by_role("button", name="Filter").click()
            assert page.locator("h1").inner_text() == "400"
            assert "is not name:value" in page.locator(".error").inner_text()
        finally:
            browser.close()
