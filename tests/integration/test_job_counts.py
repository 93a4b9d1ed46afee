"""Jobs by queue and state on a large table (issue 21, migration 0025): waiting and running
always exact; the finished states exact below QLARIUS_JOB_COUNTS_EXACT_BELOW rows, estimated
from the planner's statistics above (the overview shows them ``~n``, /metrics says so)."""

from __future__ import annotations

import re

import psycopg

from tests.integration.support import console_client
from tests.integration.test_metrics import scrape


def _fill(conn: psycopg.Connection) -> None:
    """3,000 finished jobs (ours and another application's), 40 waiting and 2 running."""
    conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
        "SELECT q, t, '{}', s::procrastinate_job_status FROM generate_series(1, 3000) n, "
        "LATERAL (SELECT CASE WHEN n % 3 = 0 THEN 'their_queue' ELSE 'targets' END AS q, "
        "CASE WHEN n % 3 = 0 THEN 'their.task' ELSE 'populate_target' END AS t, "
        "CASE WHEN n % 10 = 1 THEN 'failed' ELSE 'succeeded' END AS s) x"
    )
    conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
        "SELECT 'their_queue', 'their.task', '{}', 'todo' FROM generate_series(1, 40)"
    )
    conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
        "SELECT 'their_queue', 'their.task', '{}', 'doing' FROM generate_series(1, 2)"
    )
    conn.execute("ANALYZE procrastinate_jobs")


def _exact(conn: psycopg.Connection, queue: str, state: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = %s AND status = %s",
        (queue, state),
    ).fetchone()[0]


def test_finished_states_are_estimated_past_the_limit_waiting_and_running_exact(
    sync_conn, settings
):
    _fill(sync_conn)
    settings.set(job_counts_exact_below=1000)
    # after the ANALYZE: ten more waiting jobs and 300 more succeeded, which only the exact
    # counts see
    sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
        "SELECT 'their_queue', 'their.task', '{}', 'todo' FROM generate_series(1, 10)"
    )
    with console_client() as client:
        series = scrape(client)
        assert series["qlarius_job_counts_estimated"] == 1.0
        assert series['qlarius_jobs{queue="their_queue",state="todo"}'] == 50
        assert series['qlarius_jobs{queue="their_queue",state="doing"}'] == 2
        for queue in ("targets", "their_queue"):
            for state in ("succeeded", "failed"):
                estimate = series[f'qlarius_jobs{{queue="{queue}",state="{state}"}}']
                exact = _exact(sync_conn, queue, state)
                assert abs(estimate - exact) <= 0.1 * exact, (queue, state, estimate, exact)
        overview = client.get("/").text
        assert re.search(r">~1[78]\d\d</a>", overview), overview[-3000:]

        settings.set(job_counts_exact_below=10_000_000)
        series = scrape(client)
        assert series["qlarius_job_counts_estimated"] == 0.0
        for state in ("succeeded", "failed", "todo"):
            assert series[f'qlarius_jobs{{queue="their_queue",state="{state}"}}'] == _exact(
                sync_conn, "their_queue", state
            )
        assert "~" not in client.get("/").text.split("Jobs by queue and state", 1)[1][:3000]


def test_a_role_that_does_not_own_the_table_gets_the_estimates_too(sync_conn):
    """pg_stats_ext shows extended statistics to the table owner's role alone: the counts read
    them through qlarius_job_count_shares (SECURITY DEFINER), so a read-only role gets them."""
    from psycopg import conninfo as pg_conninfo

    from qlarius_jobs.ops import metrics
    from tests.integration.support import TEST_DB

    _fill(sync_conn)
    sync_conn.execute(
        "DO $$ BEGIN CREATE ROLE qlarius_test_reader LOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    sync_conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO qlarius_test_reader")
    reader = pg_conninfo.make_conninfo(TEST_DB.conninfo, user="qlarius_test_reader")
    with psycopg.connect(reader, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_stats_ext").fetchone()[0] == 0
        rows = metrics.SQL.many_sync(conn, "jobs_by_queue_and_state", exact_below=1000)
    estimated = {(r["queue"], r["state"]): r["jobs"] for r in rows if r["estimated"]}
    assert abs(estimated[("targets", "succeeded")] - _exact(sync_conn, "targets", "succeeded")) < 50
