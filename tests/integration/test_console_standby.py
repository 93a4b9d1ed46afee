"""The console and /metrics reading from a real streaming standby of the tests' server
(``QLARIUS_READ_DATABASE_URL``; the ``standby_server`` fixture), its actions going to the
primary: what shows once replayed, what a paused replay and a stopped standby look like, and
that an operator sees their own action at once although the standby has not replayed it."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import conninfo as pg_conninfo

from qlarius_jobs.dev import embedded, standby
from qlarius_jobs.ops import console_db
from qlarius_jobs.ops.console import ConsoleConfig, build_console
from tests.integration.support import (
    TEST_DB,
    console_client,
    csrf_of,
    insert_job_by_hand,
    statuses,
    wait_for,
)

TASK = "populate_target"
STANDBY_LINE = "Read from the standby"
CAUGHT_UP = "0 s behind the primary (streaming; all it received is replayed)"


def _replay_paused(conninfo: str, paused: bool) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")


def _caught_up(conninfo: str) -> None:
    """Until the standby replayed everything the primary flushed so far."""
    with psycopg.connect(TEST_DB.conninfo, autocommit=True) as primary:
        lsn = primary.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()[0]

    def replayed() -> bool:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            return conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[
                0
            ]

    wait_for(replayed, 30, "the standby replaying the primary")


@pytest.fixture
def standby_db(standby_server: embedded.EmbeddedCluster) -> Iterator[str]:
    """The test database on the standby, caught up with the freshly reset primary; replaying
    and running again afterwards, whatever the test did to it."""
    conninfo = pg_conninfo.make_conninfo(standby_server.conninfo, dbname=TEST_DB.name)
    _caught_up(conninfo)
    yield conninfo
    if not embedded.is_running(standby_server):
        standby.resume(standby_server)
    _replay_paused(conninfo, False)


def _lag(page: str) -> int:
    match = re.search(r"(\d+) s behind the primary", page)
    assert match, "no lag on the page"
    return int(match[1])


def _queue_row(page: str) -> str:
    match = re.search(r'<tr id="queue-targets"[^>]*>(.*?)</tr>', page, re.S)
    assert match, "no row for the targets queue"
    return match[1]


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"no {name} in /metrics"
    return float(match[1])


def test_every_page_reads_from_the_standby_and_shows_a_job_once_replayed(standby_db: str) -> None:
    with console_client(read_conninfo=standby_db) as c:
        job_id = insert_job_by_hand(TASK, {"target_id": 1})
        wait_for(lambda: f'href="/jobs/{job_id}"' in c.get("/jobs").text, 30, "the job, replayed")
        # every page reads on the standby, in read-only transactions: one that wrote would fail
        for path in ("/", "/jobs", f"/jobs/{job_id}", "/targets", "/backfill", "/workers",
                     "/schedules", "/queues", "/actions"):  # fmt: skip
            response = c.get(path)
            assert response.status_code == 200, (path, response.text[-300:])
            assert STANDBY_LINE in response.text, path
        # an idle primary: caught up, 0 s behind, and so again well after the last commit (the
        # time since the last replayed commit, which grows, is not a lag while everything
        # received is replayed). Read until it shows: the server's own background work
        # (autovacuum) streams WAL without committing, and while some is in flight the lag is
        # the time since the last replayed commit, by design (a review measured 46 of 50 reads
        # at 1 s or more during a long uncommitted write).
        wait_for(lambda: CAUGHT_UP in c.get("/jobs").text, 30, "caught up")
        time.sleep(1.5)
        wait_for(lambda: _lag(c.get("/jobs").text) == 0, 30, "the page reading 0 behind")
        wait_for(
            lambda: _metric(c.get("/metrics").text, "qlarius_read_replica_lag_seconds") == 0,
            30,
            "the metric reading 0 behind",
        )
        with psycopg.connect(standby_db, autocommit=True) as conn:
            sessions = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (console_db.APPLICATION,),
            ).fetchone()[0]
        assert sessions >= 1  # the console's pool is on the standby


def test_replay_paused_the_lag_grows_and_the_new_job_is_absent(standby_db: str) -> None:
    with console_client(read_conninfo=standby_db) as c:
        _replay_paused(standby_db, True)
        job_id = insert_job_by_hand(TASK, {"target_id": 1})
        first, first_metric = (
            _lag(c.get("/jobs").text),
            _metric(c.get("/metrics").text, "qlarius_read_replica_lag_seconds"),
        )
        time.sleep(2.5)
        page, metrics = c.get("/jobs").text, c.get("/metrics").text
        assert _lag(page) >= first + 2
        assert "replay paused" in page
        assert f'href="/jobs/{job_id}"' not in page
        assert _metric(metrics, "qlarius_read_replica_lag_seconds") >= first_metric + 2
        assert _metric(metrics, "qlarius_read_replica_replay_paused") == 1
        assert _metric(metrics, "qlarius_read_database_up") == 1
        assert _metric(metrics, "qlarius_database_up") == 1
        # /metrics read the standby too: the primary's job is not counted yet
        assert _metric(metrics, 'qlarius_jobs{queue="targets",state="todo"}') == 0
        _replay_paused(standby_db, False)
        wait_for(lambda: f'href="/jobs/{job_id}"' in c.get("/jobs").text, 30, "the job, replayed")
        assert _metric(c.get("/metrics").text, 'qlarius_jobs{queue="targets",state="todo"}') == 1


def test_an_action_changes_the_primary_and_its_page_shows_it_before_the_standby_does(
    standby_db: str, sync_conn: psycopg.Connection
) -> None:
    job_id = insert_job_by_hand(TASK, {"target_id": 1})
    with console_client(read_conninfo=standby_db) as c:
        wait_for(lambda: "todo</span>" in c.get(f"/jobs/{job_id}").text, 30, "the job, replayed")
        _replay_paused(standby_db, True)
        page = c.get(f"/jobs/{job_id}").text
        done = c.post(f"/jobs/{job_id}/cancel", data={"csrf": csrf_of(page), "confirm": "yes"})
        # the primary changed, and its action log says so
        assert statuses(sync_conn, TASK) == ["cancelled"]
        logged = sync_conn.execute("SELECT count(*) FROM qlarius_console_actions").fetchone()[0]
        assert logged == 1
        # the redirected page, and its reloads, read the primary until the standby replayed it
        assert done.status_code == 200 and "cancelled</span>" in done.text
        assert "Read from the primary: the standby has not replayed your last action" in done.text
        assert "cancelled</span>" in c.get(f"/jobs/{job_id}").text
        # whoever did not act reads the standby, which has not replayed it
        with console_client(read_conninfo=standby_db) as other:
            theirs = other.get(f"/jobs/{job_id}").text
            assert "todo</span>" in theirs and STANDBY_LINE in theirs
        _replay_paused(standby_db, False)
        wait_for(lambda: STANDBY_LINE in c.get(f"/jobs/{job_id}").text, 30, "back on the standby")
        assert "cancelled</span>" in c.get(f"/jobs/{job_id}").text


def test_a_control_goes_to_the_primary_and_its_page_shows_it_before_the_standby_does(
    standby_db: str, sync_conn: psycopg.Connection
) -> None:
    with console_client(read_conninfo=standby_db) as c:
        token = csrf_of(c.get("/queues").text)
        _replay_paused(standby_db, True)
        paused = c.post("/queues/targets/pause", data={"csrf": token, "confirm": "yes"})
        row = sync_conn.execute(
            "SELECT paused FROM qlarius_queue_controls WHERE queue_name = 'targets'"
        ).fetchone()
        assert row == (True,)  # on the primary
        assert paused.status_code == 200 and "Done: targets: paused." in paused.text
        assert "Read from the primary: the standby has not replayed your last action" in (
            paused.text
        )
        assert ">paused<" in _queue_row(paused.text)
        with console_client(read_conninfo=standby_db) as other:  # the standby: not yet
            theirs = other.get("/queues").text
            assert STANDBY_LINE in theirs and ">paused<" not in _queue_row(theirs)


def test_a_bulk_action_confirms_and_applies_on_the_primary(
    standby_db: str, sync_conn: psycopg.Connection
) -> None:
    with console_client(read_conninfo=standby_db) as c:
        token = csrf_of(c.get("/jobs").text)
        _replay_paused(standby_db, True)
        job_id = insert_job_by_hand(TASK, {"target_id": 1})  # not on the standby
        form = {"csrf": token, "action": "cancel", "scope": "matching", "q": "target_id:1"}
        confirm = c.post("/jobs/bulk", data=form)
        assert re.findall(r'name="id" value="(\d+)"', confirm.text) == [str(job_id)]
        done = c.post(
            "/jobs/bulk/apply",
            data={"csrf": token, "action": "cancel", "confirm": "yes", "id": [job_id]},
        )
        assert statuses(sync_conn, TASK) == ["cancelled"]
        assert "cancelled 1 job(s)" in done.text and f'href="/jobs/{job_id}"' in done.text
        assert "Read from the primary" in done.text


def test_the_standby_stopped_metrics_say_so_pages_say_so_actions_still_work(
    standby_db: str, standby_server: embedded.EmbeddedCluster, sync_conn: psycopg.Connection
) -> None:
    job_id = insert_job_by_hand(TASK, {"target_id": 1})
    with console_client(read_conninfo=standby_db) as c:
        csrf = csrf_of(c.get("/jobs").text)
        embedded.stop_cluster(standby_server)
        metrics = c.get("/metrics")
        assert metrics.status_code == 200
        assert _metric(metrics.text, "qlarius_read_database_up") == 0
        assert _metric(metrics.text, "qlarius_database_up") == 1
        assert "qlarius_jobs{" not in metrics.text
        for path in ("/jobs", "/schedules", "/"):
            page = c.get(path)
            assert page.status_code == 503, path
            assert "the read server (QLARIUS_READ_DATABASE_URL, a standby) is unavailable" in (
                page.text
            )
            assert "Traceback" not in page.text
        acted = c.post(
            f"/jobs/{job_id}/cancel", data={"csrf": csrf, "confirm": "yes"}, follow_redirects=False
        )
        assert acted.status_code == 303
        assert statuses(sync_conn, TASK) == ["cancelled"]


async def test_a_read_connection_cannot_write_on_either_server(standby_db: str) -> None:
    app = build_console(ConsoleConfig(conninfo=TEST_DB.conninfo, read_conninfo=standby_db))
    reads: console_db.Reads = app.state.reads
    await app.state.writes.pool.open()
    await reads.open()
    try:
        for where in (reads.primary, reads.standby):
            assert where is not None
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                async with where.connection() as conn:
                    await conn.execute("DELETE FROM procrastinate_jobs")
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), where.connect_sync() as c:
                c.execute("DELETE FROM procrastinate_jobs")
    finally:
        await reads.close()
        await app.state.writes.pool.close()


def test_the_setting_names_the_read_server(settings) -> None:
    from qlarius_jobs.ops.console import config_from_settings

    assert config_from_settings(TEST_DB.conninfo).read_conninfo is None
    settings.set(read_database_url="host=standby.example dbname=qlarius_jobs")
    config = config_from_settings(TEST_DB.conninfo)
    assert config.read_conninfo == "host=standby.example dbname=qlarius_jobs"
    assert config.conninfo == TEST_DB.conninfo  # the actions' server is unchanged


# --- recovery conflicts (hot_standby_feedback off, the default) -------------------------------


@pytest.fixture
def impatient_standby(standby_db: str) -> Iterator[str]:
    """The standby cancels a conflicting query at once (max_standby_streaming_delay = 0)."""
    with psycopg.connect(standby_db, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET max_standby_streaming_delay = 0")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield standby_db
    finally:
        with psycopg.connect(standby_db, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET max_standby_streaming_delay")
            conn.execute("SELECT pg_reload_conf()")


def _conflict(standby_conninfo: str) -> None:
    """An ACCESS EXCLUSIVE lock of the jobs table on the primary, committed: replaying it, the
    standby must take the lock too, and cancels whoever reads the table there; until it has."""
    with psycopg.connect(TEST_DB.conninfo, autocommit=True) as conn, conn.transaction():
        conn.execute("LOCK TABLE procrastinate_jobs IN ACCESS EXCLUSIVE MODE")
    _caught_up(standby_conninfo)


@pytest.mark.parametrize("conflicts", [1, 2])
def test_a_page_whose_reads_the_standby_cancels_is_read_again_then_says_so(
    impatient_standby: str, conflicts: int
) -> None:
    from starlette.routing import Route

    from qlarius_jobs.ops.console_pages import page

    calls = []

    @page("error.html")
    async def reads_the_jobs(request, conn):  # a page's reads, interleaved with the replay
        calls.append(1)
        await conn.execute("SELECT count(*) FROM procrastinate_jobs")  # the table's lock, held
        if len(calls) <= conflicts:
            await asyncio.to_thread(_conflict, impatient_standby)
        await conn.execute("SELECT count(*) FROM procrastinate_jobs")
        return {"code": 200, "detail": "read"}

    with console_client(read_conninfo=impatient_standby) as c:
        c.app.router.routes.insert(0, Route("/conflicted", reads_the_jobs))
        response = c.get("/conflicted")
    assert len(calls) == 2
    if conflicts == 1:
        assert response.status_code == 200 and "read" in response.text
    else:
        assert response.status_code == 503
        assert "the standby cancelled this page's reads to replay the primary's changes" in (
            html.unescape(response.text)
        )


def test_a_standby_that_replayed_nothing_since_it_started_says_so(
    standby_db: str, standby_server: embedded.EmbeddedCluster
) -> None:
    # A restartpoint after everything committed so far: restarted, it replays no commit again.
    # A commit elsewhere on the primary (autovacuum's ANALYZE) between the restartpoint and the
    # pause is replayed: that set-up is tried again, the page's verdict never is.
    for _ in range(5):
        with psycopg.connect(TEST_DB.conninfo, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        _caught_up(standby_db)
        with psycopg.connect(standby_db, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        embedded.stop_cluster(standby_server)
        standby.resume(standby_server)
        _replay_paused(standby_db, True)
        with psycopg.connect(standby_db, autocommit=True) as conn:
            if conn.execute("SELECT pg_last_xact_replay_timestamp() IS NULL").fetchone()[0]:
                break
        _replay_paused(standby_db, False)
    else:
        pytest.fail("a commit was replayed after every restart of the standby")
    job_id = insert_job_by_hand(TASK, {"target_id": 1})  # received, not replayed
    with console_client(read_conninfo=standby_db) as c:
        wait_for(lambda: "no replay yet" in c.get("/jobs").text, 30, "no replay yet")
        page = c.get("/jobs").text
        assert "replay paused" in page and f'href="/jobs/{job_id}"' not in page
        metrics = c.get("/metrics").text
        assert _metric(metrics, "qlarius_read_database_up") == 1
        assert not re.search(r"^qlarius_read_replica_lag_seconds ", metrics, re.MULTILINE)
