"""Live pages without a script: the overview, the jobs list and a job's page reload themselves
(``<meta http-equiv="refresh">``) at their own address, filters and page kept, until paused by
a cookie; and the overview's panel of the last drift audit. (The browser test sees a state
change appear on an open page: test_console_browser.py.)"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import psycopg
import pytest
from starlette.testclient import TestClient

from qlarius_jobs.ops.console import config_from_settings
from qlarius_jobs.settings import get_settings
from tests.integration.support import console_client

REFRESH = re.compile(r'<meta http-equiv="refresh" content="(\d+); url=([^"]*)">')


@pytest.fixture
def client() -> Iterator[TestClient]:
    with console_client(refresh_seconds=3) as c:
        yield c


def _job(conn: psycopg.Connection) -> int:
    return conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
        "VALUES ('targets', 'populate_target', %s, 'failed') RETURNING id",
        (json.dumps({"target_id": 1}),),
    ).fetchone()[0]


def test_live_pages_reload_themselves_at_their_own_address(client, sync_conn):
    job = _job(sync_conn)
    for path, url in [
        ("/", "/"),
        ("/jobs", "/jobs"),
        ("/jobs?state=failed&before=99", "/jobs?state=failed&amp;before=99"),
        (f"/jobs/{job}?done=retry", f"/jobs/{job}"),  # the note is not repeated
    ]:
        page = client.get(path).text
        assert REFRESH.findall(page) == [("3", url)], path
        assert 'id="live-switch"' in page and "Pause live updates" in page
    for path in ("/schedules", "/queues", "/targets", "/actions"):
        assert "http-equiv" not in client.get(path).text, path


def test_pause_stops_every_live_page_until_resumed(client, sync_conn):
    job = _job(sync_conn)
    paused = client.get("/live/off?back=/jobs%3Fstate%3Dfailed", follow_redirects=False)
    assert paused.status_code == 303 and paused.headers["location"] == "/jobs?state=failed"
    assert "qlarius_live=off" in paused.headers["set-cookie"]
    for path in ("/", "/jobs?state=failed", f"/jobs/{job}"):
        page = client.get(path).text
        assert "http-equiv" not in page and "Resume live updates" in page, path
    resumed = client.get(f"/live/on?back=/jobs/{job}", follow_redirects=False)
    assert resumed.headers["location"] == f"/jobs/{job}"
    assert REFRESH.search(client.get(f"/jobs/{job}").text)


@pytest.mark.parametrize("back", ["//evil.example/x", "/\\evil.example", "https://evil.example"])
def test_the_switch_never_sends_elsewhere(client, back):
    response = client.get("/live/off", params={"back": back}, follow_redirects=False)
    assert response.headers["location"] == "/"
    assert client.get("/live/sideways", follow_redirects=False).status_code == 404


def test_no_refresh_when_the_setting_is_zero(monkeypatch):
    monkeypatch.setenv("QLARIUS_WEB_REFRESH_SECONDS", "7")
    get_settings.cache_clear()
    assert config_from_settings("").refresh_seconds == 7
    get_settings.cache_clear()  # read again, without it, by whoever comes next
    with console_client(refresh_seconds=0) as c:
        page = c.get("/").text
        assert "http-equiv" not in page and 'id="live-switch"' not in page


def test_the_overview_shows_the_last_audit(client, sync_conn):
    assert "no audit recorded yet" in client.get("/").text
    sync_conn.execute(
        "INSERT INTO backfill_runs (own_part_ended, finished_at, audited_me_files, "
        "drifted_populations, stale_snapshots, offers_without_eligibility, "
        "eligible_without_offer, stale_offer_snapshots, stale_offer_amounts, "
        "offers_of_campaigns_not_live) VALUES "
        "(true, now() - interval '1 hour', 500, 9, 9, 9, 9, 9, 9, 9), "
        "(true, now(), 1000, 3, 0, 1, 0, 0, 2, 0), "
        "(false, NULL, 0, 0, 0, 0, 0, 0, 0, 0)"  # a run still going: its audit is not done
    )
    page = client.get("/").text
    panel = page.split('id="last-audit"', 1)[1].split("</div>", 1)[0]
    assert "backfill run #2" in panel and "1000 MeFiles" in panel
    cells = re.findall(r"<td>([^<]+)</td><td class=\"num\">(\d+)</td>", panel)
    assert cells == [
        ("population drift", "3"),
        ("stale snapshots", "0"),
        ("offers without eligibility", "1"),
        ("eligible without offer", "0"),
        ("stale offer snapshots", "0"),
        ("offers without their bid&#39;s amounts", "2"),
        ("offers of campaigns not live", "0"),
    ]
