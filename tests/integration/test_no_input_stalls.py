"""No input can stall the runtime: an id past bigint (between 2^63 and 10^19, which the old
19-digit check let through), a job whose rescue fails for whatever reason. Each bad job fails
on its own; every other job goes on."""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

from qlarius_jobs import api, testing
from tests.integration.support import TEST_DB, jobs

PAST_BIGINT = 9_999_999_999_999_999_999  # 19 digits, > 2^63 - 1


def _hand_written(conn: psycopg.Connection, task: str, args: dict, queue: str, **cols) -> int:
    names = ", ".join(["queue_name", "task_name", "args", *cols])
    marks = ", ".join(["%s"] * (3 + len(cols)))
    return conn.execute(
        f"INSERT INTO procrastinate_jobs ({names}) VALUES ({marks}) RETURNING id",
        (queue, task, Jsonb(args), *cols.values()),
    ).fetchone()[0]


def _dead_worker(conn: psycopg.Connection) -> int:
    return conn.execute(
        "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '1 hour') "
        "RETURNING id"
    ).fetchone()[0]


async def _populating(conn: psycopg.Connection, target_id: int) -> None:
    conn.execute("INSERT INTO targets (id, title) VALUES (%s, 't')", (target_id,))
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as aconn:
        await api.trigger_population(aconn, target_id)
        await aconn.commit()


async def test_an_id_past_bigint_fails_its_job_and_nothing_else(app, sync_conn):
    await _populating(sync_conn, 1)
    bad = _hand_written(sync_conn, "populate_target", {"target_id": PAST_BIGINT}, "targets")
    outcomes = await testing.drain(app, ["targets"])
    by_id = {j["id"]: j for j in jobs(sync_conn, "populate_target")}
    assert by_id[bad]["status"] == "failed" and by_id[bad]["attempts"] == 1  # not retried
    assert by_id[bad]["lock"] is None  # no lock derived from an id that is not one
    assert outcomes["succeeded"] >= 1
    assert sync_conn.execute("SELECT population_status FROM targets").fetchone() == ("populated",)


async def test_a_stalled_job_with_an_id_past_bigint_never_blocks_the_rescue(app, sync_conn):
    """The job-ending triggers read ids safely: the rescue of a healthy populate whose worker
    died is not failed by a bad job beside it (it used to fail every 30 s, for good)."""
    await _populating(sync_conn, 1)
    dead = _dead_worker(sync_conn)
    sync_conn.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s "
        "WHERE task_name = 'populate_target'",
        (dead,),
    )
    bad = _hand_written(
        sync_conn,
        "populate_target",
        {"target_id": PAST_BIGINT},
        "targets",
        status="doing",
        worker_id=dead,
        attempts=2,  # its last attempt: the rescue fails it, and its triggers run
    )
    summary = await testing.perform_job(app, "rescue_stalled_jobs")
    assert summary["requeued"] == 1 and summary["failed"] == 1
    states = {j["id"]: j["status"] for j in jobs(sync_conn, "populate_target")}
    assert states[bad] == "failed"
    await testing.drain(app, ["targets"])
    assert sync_conn.execute("SELECT population_status FROM targets").fetchone() == ("populated",)


async def test_one_job_whose_rescue_fails_leaves_the_others_rescued(app, sync_conn, caplog):
    """Whatever makes one job's rescue fail (here a trigger of the database's owner that
    refuses that one job's status change), the others are rescued, and the failure is one
    error line naming the job."""
    await _populating(sync_conn, 1)
    dead = _dead_worker(sync_conn)
    sync_conn.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s "
        "WHERE task_name = 'populate_target'",
        (dead,),
    )
    stuck = _hand_written(
        sync_conn, "backfill_missing_snapshots", {}, "maintenance", status="doing", worker_id=dead
    )
    sync_conn.execute(
        f"""
        CREATE FUNCTION test_refuse_job() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'job % may not change', NEW.id;
        END $$;
        CREATE TRIGGER test_refuse_job BEFORE UPDATE ON procrastinate_jobs FOR EACH ROW
            WHEN (NEW.id = {stuck}) EXECUTE FUNCTION test_refuse_job();
        """
    )
    try:
        summary = await testing.perform_job(app, "rescue_stalled_jobs")
    finally:
        sync_conn.execute(
            "DROP TRIGGER test_refuse_job ON procrastinate_jobs; DROP FUNCTION test_refuse_job()"
        )
    assert summary["requeued"] == 1
    states = {j["id"]: j["status"] for j in jobs(sync_conn)}
    assert states[stuck] == "doing"
    assert [s for i, s in states.items() if i != stuck] == ["todo"]
    errors = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.levelname == "ERROR"]
    assert any(e["event"] == f"stalled job {stuck} could not be rescued" for e in errors)
