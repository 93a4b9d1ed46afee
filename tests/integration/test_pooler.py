"""Behind a real PgBouncer in transaction mode (Debian's pgbouncer, started by the suite): what
works, what a misconfigured worker says, and that no session state leaks to other clients."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import time

import psycopg
import pytest
from psycopg import conninfo as pg_conninfo
from psycopg import sql

from qlarius_jobs.db import migrate
from qlarius_jobs.dev import reference
from tests.integration.factories import standard_world
from tests.integration.support import (
    BIN,
    TEST_DB,
    WorkerProcess,
    server_log,
    unmigrated_database,
)


def _pooled_env(pooled: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "QLARIUS_DATABASE_URL": pooled,
        "QLARIUS_LOG_FORMAT": "json",
        "QLARIUS_BEHIND_POOLER": "true",
        "QLARIUS_FETCH_POLLING_SECONDS": "0.5",
        "QLARIUS_WAKEUP_SWEEP_SECONDS": "0.5",
        **extra,
    }
    return env


def _pending(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT (SELECT count(*) FROM qlarius_pending_syncs) "
        "     + (SELECT count(*) FROM qlarius_pending_reconciles)"
    ).fetchone()[0]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _change(pooled: str, s: dict, me_files: list[int], round_: int) -> None:
    """One application connection through the pooler moving MeFiles between bands, one
    transaction each."""
    with psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as app:
        for i, me_file in enumerate(me_files):
            traits = [s.z10028, s.heat] if (i + round_) % 2 == 0 else [s.z10001]
            with app.transaction():
                app.execute(
                    "DELETE FROM me_file_tags WHERE me_file_id = %s AND trait_id <> %s",
                    (me_file, s.female),
                )
                for trait in traits:
                    app.execute(
                        "INSERT INTO me_file_tags (me_file_id, trait_id) VALUES (%s, %s)",
                        (me_file, trait),
                    )


def test_a_worker_pointed_at_a_pooler_without_the_setting_refuses_in_one_line(pooled_conninfo):
    env = _pooled_env(pooled_conninfo)
    del env["QLARIUS_BEHIND_POOLER"]
    run = subprocess.run(
        [str(BIN / "qlarius-jobs"), "worker", "--queues", "targets"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1, lines
    assert "transaction pooler" in lines[0] and "QLARIUS_BEHIND_POOLER=true" in lines[0]


def test_a_direct_connection_or_a_session_pooler_is_not_taken_for_a_transaction_pooler():
    from qlarius_jobs.db import connection
    from qlarius_jobs.dev import pooler

    assert connection.transactions_share_a_session(TEST_DB.conninfo)
    with pooler.pgbouncer(TEST_DB.conninfo, pool_mode="session") as session_pooler:
        assert connection.transactions_share_a_session(session_pooler.conninfo())
        assert session_pooler.logfile.exists()
    assert not session_pooler.folder.exists()  # stopped: its folder goes, no litter in /tmp


@pytest.mark.slow
def test_behind_the_pooler_every_round_of_changes_is_applied(sync_conn, pooled_conninfo):
    """The drains keep draining through the pooler (their exclusivity is a lease in a row,
    not a session lock that the pooler runs on one session and releases on another): five
    rounds of tag changes, each fully applied, by two worker processes; the server log has
    no 'you don't own a lock', and no session of the pooler is ever left LISTENing."""
    s = standard_world(sync_conn)
    w = s.w
    me_files = [w.me_file([s.female]) for _ in range(30)]
    w.campaign(s.target, {s.bullseye: ("3.00", "4.00"), s.outer: ("1.00", "2.00")})
    log = server_log()
    workers = [
        WorkerProcess(env=_pooled_env(pooled_conninfo, QLARIUS_LOG_LEVEL="WARNING"))
        for _ in range(2)
    ]
    try:
        with psycopg.connect(pooled_conninfo, autocommit=True, prepare_threshold=None) as app:
            app.execute(
                "UPDATE targets SET population_status = 'populating', "
                "status_before_populating = 'not_populated' WHERE id = %s",
                (s.target,),
            )
            app.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
                "VALUES ('targets', 'populate_target', %s)",
                (psycopg.types.json.Jsonb({"target_id": s.target}),),
            )
            _wait(
                lambda: (
                    w.one("SELECT population_status FROM targets WHERE id = %s", (s.target,))
                    == "populated"
                ),
                60,
                "the first populate",
            )
            listening: set[str] = set()
            for round_ in range(5):
                # four application connections at once: the pooler's sessions all in use
                with concurrent.futures.ThreadPoolExecutor(4) as pool:
                    list(
                        pool.map(
                            lambda part, r=round_: _change(pooled_conninfo, s, part, r),
                            [me_files[i::4] for i in range(4)],
                        )
                    )
                _wait(lambda: _pending(sync_conn) == 0, 60, f"round {round_} to be applied")
                for _ in range(20):  # transactions land on the pooler's various sessions
                    listening |= {
                        r[0] for r in app.execute("SELECT pg_listening_channels()").fetchall()
                    }
                _wait(
                    lambda: reference.check(sync_conn).total() == 0,
                    30,
                    f"round {round_}'s populations and offers",
                )
        assert listening == set()
    finally:
        outputs = [proc.stop() for proc in workers]
    assert [proc.poll() for proc in workers] == [0, 0], outputs
    assert not [line for line in log.new_lines() if "don't own a lock" in line]


def test_migrate_runs_through_the_pooler_and_concurrent_runs_take_turns(pgbouncer_for_tests):
    with unmigrated_database() as fresh:
        pooled = pgbouncer_for_tests.conninfo(fresh)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            reports = list(pool.map(migrate.migrate, [pooled, pooled]))
        # step by step, each migration applied by exactly one of the two runs
        applied = [name for r in reports for name in r.applied]
        assert sorted(applied) == sorted(f"{m.version:04d}_{m.name}" for m in migrate.migrations())
        assert migrate.pending(pooled) == []
        with psycopg.connect(fresh, autocommit=True) as conn:
            versions = conn.execute(
                "SELECT count(*), count(DISTINCT version) FROM qlarius_schema_migrations"
            ).fetchone()
        assert versions == (len(migrate.migrations()), len(migrate.migrations()))


def test_the_console_and_status_read_through_the_pooler(pooled_conninfo, sync_conn):
    from qlarius_jobs.ops import status

    collected = status.collect(pooled_conninfo)
    assert {r["kind"] for r in collected["pending_work"]} == {
        "sync",
        "reconcile",
        "target",
        "campaign",
    }


def test_the_pooler_fixture_really_pools_transactions(pooled_conninfo):
    """The deployments above are real: two transactions of one client connection do run on
    different server sessions through this pooler (when another client holds the first)."""
    from qlarius_jobs.db import connection

    assert not connection.transactions_share_a_session(pooled_conninfo)
    name = pg_conninfo.conninfo_to_dict(pooled_conninfo)["dbname"]
    with psycopg.connect(pooled_conninfo, autocommit=True, prepare_threshold=None) as conn:
        assert conn.execute(sql.SQL("SELECT current_database()")).fetchone()[0] == name
