"""populate_target, sync_me_file_to_target_populations and snapshot_band_populations, run by a
real worker against the real database."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from qlarius_jobs import api, snapshots
from qlarius_jobs.jobs.arguments import InvalidJobArguments
from qlarius_jobs.jobs.catalog import defer_job
from tests.integration.factories import standard_world
from tests.integration.support import (
    TEST_DB,
    TargetRowHolder,
    drain,
    insert_job_by_hand,
    jobs,
    log_events,
)


async def _trigger(target_id: int) -> int | None:
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        job_id = await api.trigger_population(conn, target_id)
        await conn.commit()
        return job_id


async def _defer(task: str, **kwargs) -> int | None:
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        job_id = await defer_job(conn, task, **kwargs)
        await conn.commit()
        return job_id


def _population_state(conn, target_id):
    return conn.execute(
        "SELECT tp.me_file_id, tp.target_band_id, tp.matching_tags_snapshot "
        "FROM target_populations tp JOIN target_bands b ON b.id = tp.target_band_id "
        "WHERE b.target_id = %s ORDER BY tp.me_file_id",
        (target_id,),
    ).fetchall()


async def test_populate_target_puts_everyone_in_the_innermost_band_with_snapshots(
    app, conn, sync_conn
):
    s = standard_world(sync_conn)
    w = s.w
    inner = w.me_file([s.female, s.z10028, s.heat])
    middle = w.me_file([s.female, s.z10001])
    outer = w.me_file({s.female: None})
    w.me_file([s.male, s.z10028])  # matches nothing
    await _trigger(s.target)
    assert w.one("SELECT population_status FROM targets WHERE id = %s", (s.target,)) == "populating"
    await drain()
    status, last = sync_conn.execute(
        "SELECT population_status, last_populated_at FROM targets WHERE id = %s", (s.target,)
    ).fetchone()
    assert status == "populated" and last is not None
    assert w.populations(s.target) == {
        inner: s.bullseye,
        middle: s.middle,
        outer: s.outer,
    }
    expected = await snapshots.compute_snapshots(
        conn, [(inner, s.bullseye), (middle, s.middle), (outer, s.outer)]
    )
    for me_file, band, snap in _population_state(sync_conn, s.target):
        assert snap == expected[(me_file, band)]
    [job] = jobs(sync_conn, "populate_target")
    assert job["status"] == "succeeded" and job["lock"] == f"populate_target:{s.target}"


async def test_populate_rerun_duplicates_nothing_and_follows_tag_changes(app, sync_conn, caplog):
    s = standard_world(sync_conn)
    w = s.w
    moving = w.me_file([s.female, s.z10028])
    leaving = w.me_file([s.female])
    relabel = w.me_file({s.female: None, s.z10001: "10001"})
    await _trigger(s.target)
    await drain()
    first = _population_state(sync_conn, s.target)
    await _trigger(s.target)
    await drain()
    assert _population_state(sync_conn, s.target) == first  # rerun: same rows, no duplicates
    # tags change: one moves inward, one leaves, one keeps its band with a new tag value
    w.tag(moving, [s.story])
    w.untag(leaving, [s.female])
    w.tag(relabel, {s.z10001: "10001-1234"})
    caplog.clear()
    await _trigger(s.target)
    await drain()
    assert w.populations(s.target) == {moving: s.bullseye, relabel: s.middle}
    # The populate applies the changes, unless a sync that the tag changes woke took them
    # first: between them, each change is applied exactly once.
    ends = [
        e
        for e in log_events(caplog)
        if e["event"] in ("populate_target finished", "sync_pending_me_files finished")
    ]
    assert tuple(sum(e.get(k, 0) for e in ends) for k in ("inserted", "deleted", "refreshed")) == (
        1,
        2,
        1,
    )
    summary = next(e for e in ends if e["event"] == "populate_target finished")
    assert summary["elapsed_ms"] >= 0
    snap = dict((m, sn) for m, _, sn in _population_state(sync_conn, s.target))[relabel]
    assert ["10001-1234" in str(child) for parent in snap["tags"] for child in parent[3]].count(
        True
    ) == 1


def _memberships(conn, target_id):
    return dict(
        conn.execute(
            "SELECT me_file_id, band_id FROM qlarius_band_memberships WHERE target_id = %s",
            (target_id,),
        ).fetchall()
    )


async def _populated_as_band_matching(conn, sync_conn, target_id) -> int:
    """The target's rows are band matching's, each with its snapshot; returns how many."""
    wanted = _memberships(sync_conn, target_id)
    snaps = await snapshots.compute_snapshots(conn, list(wanted.items()))
    assert {(m, b): sn for m, b, sn in _population_state(sync_conn, target_id)} == snaps
    return len(wanted)


async def test_a_populate_by_ranges_of_me_files_is_the_populate_in_one_statement(
    app, conn, sync_conn, settings, caplog
):
    """A populate applies its MeFiles one range of ids at a time (QLARIUS_POPULATE_RANGE_SIZE),
    in one transaction: with ranges of two, every MeFile (on each edge, first and last
    included) gets the row and snapshot band matching gives, rows that no longer hold go, and
    the summary counts the statements."""
    settings.set(populate_range_size=2)
    s = standard_world(sync_conn)
    w = s.w
    variants = [
        [s.female, s.z10028, s.heat],
        [s.female, s.z10001],
        [s.female],
        [s.male, s.z10028],
        [s.female, s.z10028, s.story],
        [s.female, s.z10001, s.heat],
        [s.female],
    ]
    me_files = [w.me_file(tags) for tags in variants]
    # and one far out in the ids (imported, a sequence that jumped): ranges count MeFiles, so
    # it makes no stretch of empty ranges
    far = w.one("INSERT INTO me_files (id) VALUES (%s) RETURNING id", (max(me_files) + 10**12,))
    w.tag(far, [s.female])
    me_files.append(far)
    expected_statements = 4  # 8 MeFiles, two by two
    await _trigger(s.target)
    await drain()
    assert await _populated_as_band_matching(conn, sync_conn, s.target) == 7
    # the first and last MeFiles leave, one in the middle moves inward: a re-populate by ranges
    w.untag(me_files[0], [s.female])
    w.untag(me_files[-1], [s.female])
    w.tag(me_files[2], [s.z10028, s.story])
    caplog.clear()
    await _trigger(s.target)
    await drain()
    assert await _populated_as_band_matching(conn, sync_conn, s.target) == 5
    summary = next(e for e in log_events(caplog) if e["event"] == "populate_target finished")
    assert summary["statements"] == expected_statements


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({}, "target_id"),
        ({"target_id": "7"}, "target_id"),
        ({"target_id": 0}, "target_id"),
        ({"target_id": -3}, "target_id"),
        ({"target_id": True}, "target_id"),
        ({"target_id": 1, "force": True}, "force"),
    ],
)
async def test_bad_arguments_fail_at_once_without_retry_or_writes(
    app, sync_conn, caplog, args, field
):
    s = standard_world(sync_conn)
    s.w.me_file([s.female])
    # at the door: refused, naming the field, nothing written
    with pytest.raises(InvalidJobArguments, match=field):
        await _defer("populate_target", **args)
    assert jobs(sync_conn, "populate_target") == []
    # a row written by hand, past the door: the worker refuses it at once
    insert_job_by_hand("populate_target", args)
    await drain()
    [job] = jobs(sync_conn, "populate_target")
    assert job["status"] == "failed"
    assert job["attempts"] == 1  # not retried
    assert job["lock"] is None  # a malformed job never holds a real job's lock
    assert sync_conn.execute("SELECT count(*) FROM target_populations").fetchone()[0] == 0
    errors = [r for r in caplog.records if "invalid arguments" in str(r.exc_info and r.exc_info[1])]
    assert errors, "the failure names the problem"
    assert field in str(errors[0].exc_info[1])


async def test_unknown_target_warns_and_writes_nothing(app, sync_conn, caplog):
    await _defer("populate_target", target_id=424242)
    await drain()
    [job] = jobs(sync_conn, "populate_target")
    assert job["status"] == "succeeded"
    warnings = [e for e in log_events(caplog) if e.get("level") == "warning"]
    assert any("424242" in e["event"] for e in warnings)


async def test_populate_failing_for_good_keeps_populations_and_restores_status(app, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    kept = w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    before = _population_state(sync_conn, s.target)
    w.me_file([s.female, s.z10028])  # a newcomer the failed populate cannot insert
    # (this test is about the populate: its own sync would fail the same way meanwhile)
    sync_conn.execute("DELETE FROM qlarius_pending_syncs")
    sync_conn.execute(
        "CREATE FUNCTION pg_temp.fail() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$"
    )
    sync_conn.execute(
        "CREATE TRIGGER test_fail BEFORE INSERT ON target_populations "
        "FOR EACH ROW EXECUTE FUNCTION pg_temp.fail()"
    )
    try:
        await _trigger(s.target)
        await drain()
    finally:
        sync_conn.execute("DROP TRIGGER test_fail ON target_populations")
    [_, failed] = jobs(sync_conn, "populate_target")
    assert failed["status"] == "failed" and failed["attempts"] == 3
    assert _population_state(sync_conn, s.target) == before
    assert w.populations(s.target) == {kept: s.outer}
    assert w.one("SELECT population_status FROM targets WHERE id = %s", (s.target,)) == "populated"


async def test_two_populates_of_one_target_never_run_together(app, sync_conn):
    s = standard_world(sync_conn)
    s.w.me_file([s.female])
    first = await _defer("populate_target", target_id=s.target)
    second = await _defer("populate_target", target_id=s.target)
    # Hold the target row so the first populate blocks while running.
    blocker = TargetRowHolder(sync_conn, s.target)
    worker = asyncio.create_task(drain())
    try:
        for _ in range(100):
            states = {j["id"]: j["status"] for j in jobs(sync_conn, "populate_target")}
            if states[first] == "doing":
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # time enough for a second worker slot to take the job
        states = {j["id"]: j["status"] for j in jobs(sync_conn, "populate_target")}
        assert states == {first: "doing", second: "todo"}
    finally:
        blocker.release()
    await worker
    assert [j["status"] for j in jobs(sync_conn, "populate_target")] == ["succeeded", "succeeded"]


def _reconcile_runs(conn) -> int:
    """Pending reconciles taken by drains so far (the change-lag histogram's total)."""
    row = conn.execute(
        "SELECT changes FROM qlarius_change_lag WHERE kind = 'reconcile' "
        "AND le_ms = 9223372036854775807"
    ).fetchone()
    return row[0] if row else 0


async def test_a_tag_change_is_synced_with_no_call_and_reconciled_only_on_change(app, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    me_file = w.me_file([s.female])
    other_target = w.target("not populated")
    w.band(other_target, [s.g_sex])
    w.campaign(s.target, {b: ("1.00", "2.00") for b in (s.bullseye, s.middle, s.outer)})
    await _trigger(s.target)
    await drain()
    assert w.populations() == {me_file: s.outer}
    reconciled = _reconcile_runs(sync_conn)

    w.tag(me_file, [s.z10028, s.heat])  # committed; the application calls nothing
    assert w.count("SELECT count(*) FROM qlarius_pending_syncs WHERE me_file_id = %s", (me_file,))
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as aconn:
        await api.notify_tags_changed(aconn, me_file)  # explicit, twice: never refused
        await api.notify_tags_changed(aconn, me_file)
        await aconn.commit()
    await drain()
    assert w.populations() == {me_file: s.bullseye}  # the unpopulated target is left alone
    moved = _reconcile_runs(sync_conn)
    assert moved > reconciled  # its populations changed: its offers were reconciled
    assert w.one("SELECT target_band_id FROM offers WHERE me_file_id = %s", (me_file,)) == (
        s.bullseye
    )
    assert w.count("SELECT count(*) FROM qlarius_pending_syncs") == 0

    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as aconn:
        await api.notify_tags_changed(aconn, me_file)  # nothing changed this time
        await aconn.commit()
    await drain()
    assert _reconcile_runs(sync_conn) == moved  # no population changed: no reconcile
    [sync] = [
        j for j in jobs(sync_conn, "sync_pending_me_files") if j["status"] != "succeeded"
    ] or [None]
    assert sync is None


async def test_sync_and_populate_agree(app, sync_conn, conn):
    s = standard_world(sync_conn)
    w = s.w
    pool = [s.female, s.male, s.z10028, s.z10001, s.heat, s.story]
    ids = [w.me_file(pool[i % 3 : i % 3 + 2 + i % 4]) for i in range(12)]
    await _trigger(s.target)
    await drain()
    for i, me_file in enumerate(ids):  # every MeFile's tags change
        w.untag(me_file, pool[: 1 + i % 2])
        w.tag(me_file, pool[3 + i % 3 :])
        await _defer("sync_me_file_to_target_populations", me_file_id=me_file)
    await drain()
    by_sync = _population_state(sync_conn, s.target)
    await _trigger(s.target)
    await drain()
    assert _population_state(sync_conn, s.target) == by_sync


async def test_sync_of_unknown_me_file_and_bad_arguments(app, sync_conn, caplog):
    await _defer("sync_me_file_to_target_populations", me_file_id=777)
    with pytest.raises(InvalidJobArguments, match="me_file_id"):
        await _defer("sync_me_file_to_target_populations", me_file_id="seven")
    insert_job_by_hand("sync_me_file_to_target_populations", {"me_file_id": "seven"})
    await drain()
    statuses = sorted(j["status"] for j in jobs(sync_conn, "sync_me_file_to_target_populations"))
    assert statuses == ["failed", "succeeded"]
    assert any("777" in e["event"] and e["level"] == "warning" for e in log_events(caplog))
    assert sync_conn.execute("SELECT count(*) FROM qlarius_pending_syncs").fetchone()[0] == 0


async def test_snapshot_band_populations_fills_in_batches_without_overwriting(
    app, sync_conn, settings
):
    settings.set(snapshot_band_batch_size=2)
    s = standard_world(sync_conn)
    w = s.w
    members = [w.me_file([s.female]) for _ in range(5)]
    w.legacy_populations(s.outer, members, kept={members[0]: "kept"})
    await _defer("snapshot_band_populations", band_id=s.outer)
    await _defer("snapshot_band_populations", band_id=987654)
    await drain()
    snaps = {m: sn for m, _, sn in _population_state(sync_conn, s.target)}
    assert snaps[members[0]] == {"tags": "kept"}
    assert all(snaps[m]["tags"][0][3][0][1] == "Female" for m in members[1:])
    assert [j["status"] for j in jobs(sync_conn, "snapshot_band_populations")] == ["succeeded"] * 2
    await _defer("snapshot_band_populations", band_id=s.outer)
    await drain()
    assert (
        w.count("SELECT count(*) FROM target_populations WHERE matching_tags_snapshot IS NULL") == 0
    )
