"""Each worker keeps the last slot of a queue for the jobs that take it (the drains, the
rescue, jobs not ours): five long populates no longer hold back every sync of a worker
(migration 0029, ``worker/last_slot.py``)."""

from __future__ import annotations

import os
import time

import psycopg
import pytest

from qlarius_jobs.jobs import catalog
from tests.integration.factories import standard_world
from tests.integration.support import (
    TargetRowHolder,
    WorkerProcess,
    index_scans,
    statuses,
    wait_for,
)

OTHER_APPLICATION_TASK = "send_email"


def test_the_jobs_that_take_the_last_slot_are_the_catalogs_and_every_job_not_ours(sync_conn):
    specs = catalog.specs()
    queues = sorted({spec.queue for spec in specs.values()})
    taking = {(name, spec.queue) for name, spec in specs.items() if spec.takes_last_slot}
    assert taking == {
        ("sync_pending_me_files", "targets"),
        ("sync_me_file_to_target_populations", "targets"),
        ("reconcile_pending_offers", "offers"),
        ("reconcile_offers_for_me_file", "offers"),
        ("rescue_stalled_jobs", "maintenance"),
    }
    for name in [*specs, OTHER_APPLICATION_TASK]:
        for queue in queues:
            ours = name in specs and specs[name].queue == queue
            row = sync_conn.execute(
                "SELECT qlarius_job_takes_last_slot(%s, %s)", (name, queue)
            ).fetchone()
            assert row[0] == ((name, queue) in taking or not ours), (name, queue)


def _fetch(conn: psycopg.Connection, keep_last_slot: bool | None) -> str | None:
    if keep_last_slot is None:  # the two-argument call of a worker of the previous release
        row = conn.execute("SELECT task_name FROM qlarius_fetch_job(ARRAY['targets'], NULL)")
    else:
        row = conn.execute(
            "SELECT task_name FROM qlarius_fetch_job(ARRAY['targets'], NULL, %s)",
            (keep_last_slot,),
        )
    return row.fetchone()[0]


def test_a_fetch_keeping_the_last_slot_passes_over_the_long_jobs(sync_conn):
    sync_conn.execute("INSERT INTO targets (id, title) VALUES (1, 't'), (2, 't')")
    sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES "
        "('targets', 'populate_target', '{\"target_id\": 1}'), "
        "('targets', 'snapshot_band_populations', '{\"band_id\": 1}'), "
        "('targets', %s, '{}'), "
        "('targets', 'sync_pending_me_files', '{}'), "
        "('targets', 'populate_target', '{\"target_id\": 2}')",
        (OTHER_APPLICATION_TASK,),
    )
    assert _fetch(sync_conn, True) == OTHER_APPLICATION_TASK
    assert _fetch(sync_conn, True) == "sync_pending_me_files"
    assert _fetch(sync_conn, True) is None  # the long ones wait, oldest first
    assert _fetch(sync_conn, None) == "populate_target"
    assert _fetch(sync_conn, False) == "snapshot_band_populations"
    assert statuses(sync_conn, "populate_target") == ["doing", "todo"]


def test_the_filtered_fetch_reads_its_own_index_however_many_long_jobs_wait(sync_conn):
    """Found by a review: as one statement with the flag in it, the filtered fetch walked every
    waiting populate before the sync behind them (22 ms a fetch at 50,000). It reads the
    index of the jobs that take the last slot."""
    sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "SELECT 'targets', 'populate_target', jsonb_build_object('target_id', n) "
        "FROM generate_series(1, 3000) n"
    )
    sync_conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "VALUES ('targets', 'sync_pending_me_files', '{}')"
    )
    sync_conn.execute("ANALYZE procrastinate_jobs")
    before = index_scans(sync_conn, "qlarius_jobs_taking_last_slot_idx")
    assert _fetch(sync_conn, True) == "sync_pending_me_files"
    assert index_scans(sync_conn, "qlarius_jobs_taking_last_slot_idx") > before
    assert _fetch(sync_conn, True) is None
    assert _fetch(sync_conn, False) == "populate_target"


@pytest.mark.parametrize("behind", ["direct", "pgbouncer"])
def test_two_long_populates_leave_a_tag_change_its_slot_on_a_worker_of_two(
    sync_conn, request, behind
):
    """Targets concurrency 2, two populates held running (their scope held from another
    connection, as a longer populate would): only one starts, and a tag change is synced into
    a third target while it runs. Without the kept slot both populates took both slots and
    the sync waited for them. Released, the second populate starts at once: the worker wakes
    itself when the first one's outcome is written (behind PgBouncer no notification comes,
    and the next poll is 5 s away)."""
    env = None
    if behind == "pgbouncer":
        pooled = request.getfixturevalue("pooled_conninfo")
        env = {**os.environ, "QLARIUS_DATABASE_URL": pooled, "QLARIUS_BEHIND_POOLER": "true"}
    s = standard_world(sync_conn)
    w = s.w
    # a target populated earlier (no MeFile yet), nothing of its making left pending
    sync_conn.execute("DELETE FROM qlarius_pending_criteria")
    sync_conn.execute("DELETE FROM qlarius_pending_targets")
    sync_conn.execute(
        "UPDATE targets SET population_status = 'populated' WHERE id = %s", (s.target,)
    )
    long_ones = [w.target("long one"), w.target("long two")]
    holders = [TargetRowHolder(sync_conn, t) for t in long_ones]
    worker = WorkerProcess("--queues", "targets=2", env=env)
    try:
        for target_id in long_ones:
            sync_conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
                "VALUES ('targets', 'populate_target', jsonb_build_object('target_id', %s))",
                (target_id,),
            )
        wait_for(lambda: "doing" in statuses(sync_conn, "populate_target"), 30, "a populate")
        time.sleep(1.0)  # what a second fetch would have started by now
        assert statuses(sync_conn, "populate_target") == ["doing", "todo"]

        me_file = w.me_file([s.female, s.z10028, s.heat])
        wait_for(
            lambda: w.populations(s.target) == {me_file: s.bullseye},
            10,
            "the tag change synced while a populate holds a slot",
        )
        assert statuses(sync_conn, "populate_target") == ["doing", "todo"]

        for holder in holders:
            holder.release()
        wait_for(
            lambda: statuses(sync_conn, "populate_target") == ["succeeded", "succeeded"],
            10,
            "both populates, once released",
        )
        gap = sync_conn.execute(
            "SELECT extract(epoch FROM max(e.at) FILTER (WHERE e.type = 'started')"
            " - min(e.at) FILTER (WHERE e.type = 'succeeded')) "
            "FROM procrastinate_events e JOIN procrastinate_jobs j ON j.id = e.job_id "
            "WHERE j.task_name = 'populate_target'"
        ).fetchone()[0]
        assert gap < 2.0, f"the second populate started {gap:.1f} s after the first ended"
    finally:
        for holder in holders:
            holder.release()
        worker.stop()


def test_a_round_until_empty_keeps_no_slot(sync_conn):
    """``worker --until-empty``: a round ends at the first fetch that finds nothing, so a
    filtered fetch would end it with populates waiting (the next round started them after the
    held one ended, found by a review). Targets 2, the first populate held: the second runs
    beside it, in this round."""
    held, free = 1, 2
    holder = TargetRowHolder(sync_conn, held)
    sync_conn.execute("INSERT INTO targets (id, title) VALUES (%s, 't')", (free,))
    for target_id in (held, free):
        sync_conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "VALUES ('targets', 'populate_target', jsonb_build_object('target_id', %s))",
            (target_id,),
        )
    worker = WorkerProcess("--until-empty", "--queues", "targets=2")
    try:
        wait_for(
            lambda: statuses(sync_conn, "populate_target") == ["doing", "succeeded"],
            30,
            "the free populate, beside the held one",
        )
    finally:
        holder.release()
        assert worker.wait(60) == 0
    assert statuses(sync_conn, "populate_target") == ["succeeded", "succeeded"]
