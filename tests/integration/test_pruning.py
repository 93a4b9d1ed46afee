"""Retention per state (issue 21): the prune keeps failures longer than successes when told
to, each finished state past its own retention, and never another application's jobs. Real
rows with chosen ages; the prune job's own body runs against them."""

from __future__ import annotations

import time

import psycopg
from psycopg.types.json import Jsonb

from qlarius_jobs import testing
from qlarius_jobs.settings import Settings


def _job(
    conn: psycopg.Connection,
    state: str,
    days_ago: float,
    *,
    task: str = "populate_target",
    queue: str = "targets",
    last_event_days_ago: float | None = None,
) -> int:
    """A job deferred ``days_ago`` days ago, in ``state``, whose last event (its end, for a
    finished one) was ``last_event_days_ago`` days ago (default: the same day), with an error
    and a result row beside it."""
    job_id = conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts) "
        "VALUES (%s, %s, %s, %s, 1) RETURNING id",
        (queue, task, Jsonb({"target_id": 1}), state),
    ).fetchone()[0]
    ended = days_ago if last_event_days_ago is None else last_event_days_ago
    # Rows inserted in a state other than todo get no event from Procrastinate's trigger: the
    # job's history is written here, at the chosen times.
    conn.execute(
        "INSERT INTO procrastinate_events (job_id, type, at) VALUES "
        "(%(id)s, 'deferred', now() - make_interval(secs => %(deferred)s * 86400)), "
        "(%(id)s, 'started', now() - make_interval(secs => %(ended)s * 86400 + 5))"
        + (
            ", (%(id)s, %(state)s::procrastinate_job_event_type, "
            "now() - make_interval(secs => %(ended)s * 86400))"
            if state in ("succeeded", "failed", "cancelled", "aborted")
            else ""
        ),
        {"id": job_id, "deferred": days_ago, "ended": ended, "state": state},
    )
    conn.execute(
        "INSERT INTO qlarius_job_errors (job_id, task_name, attempt, error_type, message) "
        "VALUES (%s, %s, 1, 'X', 'boom')",
        (job_id, task),
    )
    conn.execute(
        "INSERT INTO qlarius_job_results (job_id, counts) VALUES (%s, '{\"n\": 1}')", (job_id,)
    )
    return job_id


def _left(conn: psycopg.Connection, table: str = "procrastinate_jobs") -> set[int]:
    column = "id" if table == "procrastinate_jobs" else "job_id"
    return {r[0] for r in conn.execute(f"SELECT DISTINCT {column} FROM {table}").fetchall()}


async def test_each_finished_state_goes_after_its_own_retention(app, sync_conn, settings):
    settings.set(
        prune_after_days=7,
        prune_succeeded_after_days=3,
        prune_failed_after_days=10,
        prune_cancelled_after_days=5,
        prune_batch_size=2,  # several batches, each its own transaction
    )
    # In the order of time, as ids are in production: the oldest first.
    j = {
        "other app, succeeded 100 d": _job(
            sync_conn, "succeeded", 100, task="their_app.send", queue="their_queue"
        ),
        "ours in another queue, 100 d": _job(sync_conn, "succeeded", 100, queue="their_queue"),
        "waiting, deferred 40 d": _job(sync_conn, "todo", 40),
        "failed 11 d": _job(sync_conn, "failed", 11),
        "retried long after, succeeded 1 d": _job(
            sync_conn, "succeeded", 30, last_event_days_ago=1
        ),
        "failed 8 d": _job(sync_conn, "failed", 8),
        "cancelled 6 d": _job(sync_conn, "cancelled", 6),
        "aborted 6 d": _job(sync_conn, "aborted", 6),
        "succeeded 4 d": _job(sync_conn, "succeeded", 4),
        "cancelled 4 d": _job(sync_conn, "cancelled", 4),
        "aborted 4 d": _job(sync_conn, "aborted", 4),
        "running, deferred 4 d": _job(sync_conn, "doing", 4),
        "succeeded 2 d": _job(sync_conn, "succeeded", 2),
        "failed 2 d": _job(sync_conn, "failed", 2),
    }
    gone = {"failed 11 d", "cancelled 6 d", "aborted 6 d", "succeeded 4 d"}

    summary = await testing.perform_job(app, "prune_finished_jobs")

    left = _left(sync_conn)
    assert {name for name, id_ in j.items() if id_ not in left} == gone
    # their errors and results went with them; the others' stayed
    kept = {id_ for name, id_ in j.items() if name not in gone}
    assert _left(sync_conn, "qlarius_job_errors") == kept
    assert _left(sync_conn, "qlarius_job_results") == kept
    assert summary["jobs_deleted"] == 4
    # the walk stopped at the first job deferred within the shortest retention (3 days)
    assert summary["horizon_job_id"] == j["succeeded 2 d"]


async def test_a_state_without_its_own_retention_keeps_prune_after_days(app, sync_conn, settings):
    settings.set(prune_after_days=5, prune_failed_after_days=20)
    j = {
        "succeeded 6 d": _job(sync_conn, "succeeded", 6),
        "cancelled 6 d": _job(sync_conn, "cancelled", 6),
        "aborted 6 d": _job(sync_conn, "aborted", 6),
        "failed 6 d": _job(sync_conn, "failed", 6),
        "failed 19 d": _job(sync_conn, "failed", 19),
        "succeeded 4 d": _job(sync_conn, "succeeded", 4),
    }
    await testing.perform_job(app, "prune_finished_jobs")
    left = _left(sync_conn)
    assert {name for name, id_ in j.items() if id_ in left} == {
        "failed 6 d",
        "failed 19 d",
        "succeeded 4 d",
    }


async def test_no_job_deferred_within_the_retention_means_no_horizon(app, sync_conn, settings):
    """With nothing recent, the walk has no bound and still finds every old job."""
    settings.set(prune_after_days=7, prune_batch_size=1, prune_rest_ratio=0)
    old = [_job(sync_conn, "succeeded", 9) for _ in range(3)]
    summary = await testing.perform_job(app, "prune_finished_jobs")
    assert summary["horizon_job_id"] is None and summary["jobs_deleted"] == 3
    assert not (_left(sync_conn) & set(old))
    assert summary["rested_ms"] == 0


async def test_the_prune_rests_between_batches_in_proportion_to_them(app, sync_conn, settings):
    """QLARIUS_PRUNE_REST_RATIO: after each batch, that many times the batch's own time."""
    settings.set(prune_after_days=7, prune_batch_size=1, prune_rest_ratio=20)
    for _ in range(3):
        _job(sync_conn, "succeeded", 9)
    started = time.monotonic()
    summary = await testing.perform_job(app, "prune_finished_jobs")
    took_ms = (time.monotonic() - started) * 1000
    assert summary["jobs_deleted"] == 3 and summary["batches"] == 3
    # rested 20 times what the batches took: most of the job's time, but never all of it
    assert 0.5 * took_ms < summary["rested_ms"] < took_ms, (summary, took_ms)


def test_each_retention_defaults_to_prune_after_days(monkeypatch):
    monkeypatch.setenv("QLARIUS_PRUNE_AFTER_DAYS", "9")
    monkeypatch.setenv("QLARIUS_PRUNE_FAILED_AFTER_DAYS", "30")
    assert Settings().prune_retention_days() == {
        "succeeded": 9,
        "failed": 30,
        "cancelled": 9,
        "aborted": 9,
    }
    monkeypatch.setenv("QLARIUS_PRUNE_CANCELLED_AFTER_DAYS", "2")
    assert Settings().prune_retention_days()["aborted"] == 2
