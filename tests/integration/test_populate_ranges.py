"""A populate by ranges of MeFiles (QLARIUS_POPULATE_RANGE_SIZE) and the EXCEPT differences of
the skipped/blocked arrays, as a hostile review tried them: interleavings forced by hand (a populate held at the
start of one range's statement by a population row being inserted elsewhere), killed
populates, and odd settings. Every test ends with the independent reference."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
import pytest

from qlarius_jobs import snapshots
from qlarius_jobs.api import record_ad_event
from qlarius_jobs.db.queries import QueryFile
from qlarius_jobs.jobs import offers as offers_jobs
from tests.integration.support import TEST_DB, drain, jobs, log_events
from tests.integration.test_concurrency import (
    _market,
    _trigger,
    assert_all_invariants,
    drain_syncs_now,
    running_workers,
    wait_until,
    wait_until_blocked,
)

INSERTING = "INSERT INTO target_populations"


def _status(conn, target):
    return conn.execute(
        "SELECT population_status FROM targets WHERE id = %s", (target,)
    ).fetchone()[0]


def _population_rows(conn, target):
    return conn.execute(
        "SELECT tp.id, tp.me_file_id, tp.target_band_id, tp.matching_tags_snapshot::text "
        "FROM target_populations tp JOIN target_bands b ON b.id = tp.target_band_id "
        "WHERE b.target_id = %s ORDER BY tp.id",
        (target,),
    ).fetchall()


def _ten_me_files(s):
    """Ten MeFiles, all members, in five ranges of two."""
    w = s.w
    variants = [
        [s.female],
        [s.female, s.z10001],
        [s.female, s.z10028, s.heat],
        [s.female, s.z10001, s.story],
        [s.female, s.z10028],  # m4: the one the populate is held on (range 3)
        [s.female, s.heat],
        [s.female, s.z10001],
        [s.female, s.z10028],
        [s.female, s.z10028, s.story],
        [s.female],
    ]
    return [w.me_file(tags) for tags in variants]


async def _let_the_populate_finish(holder, sync_conn, *, sync_first: bool = True) -> None:
    """Drain the syncs the changes recorded (the target's part stays pending: the populate
    holds its scope), let the held populate go, and wait until it has succeeded."""
    if sync_first:
        await drain_syncs_now()
    holder.rollback()
    await wait_until(
        lambda: jobs(sync_conn, "populate_target")[-1]["status"] == "succeeded",
        30,
        "the populate",
    )


async def _hold_populate_at_range_three(sync_conn, s, ms):
    """The target populated; then m4's population row goes (by hand), and another
    connection inserts it, uncommitted: the re-populate waits there, in its third range's
    statement, its first two ranges done in its open transaction."""
    await _trigger(s.target)
    await drain()
    assert_all_invariants(sync_conn)
    band = sync_conn.execute(
        "SELECT target_band_id FROM target_populations WHERE me_file_id = %s", (ms[4],)
    ).fetchone()[0]
    sync_conn.execute("DELETE FROM target_populations WHERE me_file_id = %s", (ms[4],))
    await drain()
    holder = psycopg.connect(TEST_DB.conninfo)
    holder.execute(
        "INSERT INTO target_populations (target_band_id, me_file_id) VALUES (%s, %s)",
        (band, ms[4]),
    )
    return holder


@contextlib.asynccontextmanager
async def _populate_held_at_range_three(sync_conn, s, ms) -> AsyncIterator[None]:
    """The target's re-populate, run by workers, held at the start of its third range
    (``_hold_populate_at_range_three``) while the body changes things; then let go, and
    waited for until it has succeeded."""
    holder = await _hold_populate_at_range_three(sync_conn, s, ms)
    try:
        await _trigger(s.target)
        async with running_workers({"targets"}):
            await wait_until_blocked(INSERTING)
            yield
            await _let_the_populate_finish(holder, sync_conn)
    finally:
        holder.close()


async def test_changes_committed_between_ranges_of_one_populate_are_not_lost(
    app, sync_conn, settings, caplog
):
    settings.set(populate_range_size=2)
    s = _market(sync_conn)
    w = s.w
    ms = _ten_me_files(s)
    async with _populate_held_at_range_three(sync_conn, s, ms):
        # range 1 (done): m1 moves to the bullseye; m0 is deleted
        w.tag(ms[1], [s.z10028, s.heat])
        w.conn.execute("DELETE FROM me_files WHERE id = %s", (ms[0],))
        # range 3 (its statement's snapshot taken): m5 leaves
        w.untag(ms[5], [s.female])
        # range 4 (not done): m7 leaves, m6 moves to the bullseye
        w.untag(ms[7], [s.female])
        w.tag(ms[6], [s.heat])
        # range 5 (not done): m9 is deleted
        w.conn.execute("DELETE FROM me_files WHERE id = %s", (ms[9],))
        # created mid-populate, its id above every range start
        newcomer = w.me_file([s.female, s.z10001, s.heat])
    await drain()
    summary = [e for e in log_events(caplog) if e["event"] == "populate_target finished"][-1]
    assert summary["statements"] == 5
    assert _status(sync_conn, s.target) == "populated"
    pops = w.populations(s.target)
    assert ms[0] not in pops and ms[9] not in pops and ms[5] not in pops and ms[7] not in pops
    assert pops[ms[1]] == s.bullseye and pops[ms[6]] == s.bullseye
    assert pops[newcomer] == s.bullseye
    assert_all_invariants(sync_conn)


async def test_a_me_file_deleted_mid_populate_after_its_range_inserted_its_row(
    app, sync_conn, settings
):
    """A MeFile of a range already done, whose row the populate inserted (it holds its key
    share lock): its delete waits for the populate, then goes; nothing is left behind."""
    settings.set(populate_range_size=2)
    s = _market(sync_conn)
    w = s.w
    ms = _ten_me_files(s)
    holder = await _hold_populate_at_range_three(sync_conn, s, ms)
    # m1's row goes too: range 1 re-inserts it (and key-share locks m1)
    sync_conn.execute("DELETE FROM target_populations WHERE me_file_id = %s", (ms[1],))
    deleting = await psycopg.AsyncConnection.connect(TEST_DB.conninfo)
    try:
        await _trigger(s.target)
        async with running_workers({"targets"}):
            await wait_until_blocked(INSERTING)
            delete = asyncio.create_task(
                deleting.execute("DELETE FROM me_files WHERE id = %s", (ms[1],))
            )
            await asyncio.sleep(0.5)
            assert not delete.done()  # it waits for the populate's key share lock on m1
            holder.rollback()
            await asyncio.wait_for(delete, 20)
            await deleting.commit()
            await wait_until(
                lambda: jobs(sync_conn, "populate_target")[-1]["status"] == "succeeded",
                30,
                "the populate",
            )
    finally:
        holder.close()
        await deleting.close()
    await drain()
    assert ms[1] not in w.populations(s.target)
    assert_all_invariants(sync_conn)


async def test_a_populate_killed_between_ranges_leaves_the_previous_populations(
    app, sync_conn, settings
):
    settings.set(populate_range_size=2, retry_backoff_seconds=600)
    s = _market(sync_conn)
    ms = _ten_me_files(s)
    holder = await _hold_populate_at_range_three(sync_conn, s, ms)
    # ranges 1 and 2 have work to do: m0 moved by hand (deleted row, re-inserted), m3 a stale
    # snapshot (refreshed), and a row that does not hold (deleted)
    sync_conn.execute(
        "UPDATE target_populations SET matching_tags_snapshot = '{\"tags\": []}' "
        "WHERE me_file_id = %s",
        (ms[3],),
    )
    sync_conn.execute(
        "UPDATE target_populations SET target_band_id = %s WHERE me_file_id = %s",
        (s.outer, ms[0]),
    )
    sync_conn.execute("DELETE FROM qlarius_pending_reconciles")
    before = _population_rows(sync_conn, s.target)
    try:
        await _trigger(s.target)
        async with running_workers({"targets"}):
            await wait_until_blocked(INSERTING)
            [pid] = [
                r[0]
                for r in sync_conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE %s",
                    (f"%{INSERTING}%",),
                )
            ]
            sync_conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            await wait_until(
                lambda: sync_conn.execute("SELECT count(*) FROM qlarius_job_errors").fetchone()[0],
                20,
                "the populate's attempt to fail",
            )
            # a retry is due later: 'populating' until then (the trigger restores the status
            # only at the job's final state); the populations are the previous ones
            assert _status(sync_conn, s.target) == "populating"
    finally:
        holder.rollback()
        holder.close()
    assert _population_rows(sync_conn, s.target) == before
    settings.set(retry_backoff_seconds=0)
    sync_conn.execute("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE status = 'todo'")
    await drain()
    assert jobs(sync_conn, "populate_target")[-1]["status"] == "succeeded"
    assert _status(sync_conn, s.target) == "populated"
    assert_all_invariants(sync_conn)


@pytest.mark.parametrize("size", [1, 2, 3])
async def test_a_range_size_of_n_makes_one_statement_per_n_me_files(
    app, sync_conn, settings, caplog, size
):
    """QLARIUS_POPULATE_RANGE_SIZE=1 (a PositiveInt: accepted) should mean one MeFile per
    statement; 7 MeFiles make ceil(7 / size) statements."""
    settings.set(populate_range_size=size)
    s = _market(sync_conn)
    w = s.w
    for _ in range(7):
        w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    summary = [e for e in log_events(caplog) if e["event"] == "populate_target finished"][-1]
    assert summary["members"] == 7
    assert_all_invariants(sync_conn)
    assert summary["statements"] == -(-7 // size)


async def test_ranges_on_an_empty_and_a_one_me_file_table(app, sync_conn, settings, caplog):
    settings.set(populate_range_size=1)
    s = _market(sync_conn)
    await _trigger(s.target)
    await drain()
    assert _status(sync_conn, s.target) == "populated"
    s.w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    assert_all_invariants(sync_conn)


# Offers: blocked and skipped while rows are held elsewhere --------------------------------

OFFERS_SQL = QueryFile.of(offers_jobs.__file__)


async def test_lock_ineligible_offers_reports_held_offers_as_blocked(app, sync_conn, conn):
    """Two ineligible offers of one MeFile (two campaigns), one held by an ad event being
    recorded: the MeFile is blocked once, the free one locked; a third MeFile, its ineligible
    offer deleted by a committed MeFile delete after the read, is harmless."""
    s = _market(sync_conn)
    w = s.w
    second = w.campaign(s.target, {s.outer: ("1.00", "2.00")})
    leaving = w.me_file([s.female])
    staying = w.me_file([s.female, s.z10001])
    await _trigger(s.target)
    await drain()
    offer_ids = dict(
        sync_conn.execute(
            "SELECT campaign_id, id FROM offers WHERE me_file_id = %s", (leaving,)
        ).fetchall()
    )
    assert set(offer_ids) == {s.campaign, second}
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as application:
        await record_ad_event(application, offer_ids[s.campaign])  # open: key share
        w.untag(leaving, [s.female])
        await drain(queues={"targets"})  # the sync: the population goes
        row = await OFFERS_SQL.one(
            conn,
            "lock_ineligible_offers",
            free_targets=[s.target],
            me_file_ids=None,
            campaign_id=None,
        )
        assert row["blocked"] == [leaving]
        assert row["locked_ids"] == [offer_ids[second]]
        await conn.rollback()
        # the whole reconcile: the held MeFile is blocked, nothing else touched
        changes = await offers_jobs.reconcile_offers(conn, free_targets=[s.target])
        assert changes.blocked == frozenset({leaving})
        await conn.commit()
        await application.commit()
    await drain()
    assert staying in dict(sync_conn.execute("SELECT me_file_id, 1 FROM offers").fetchall())
    assert_all_invariants(sync_conn)


@pytest.mark.parametrize("delete_commits", [False, True])
async def test_a_me_file_being_deleted_is_blocked_in_every_offers_statement(
    app, sync_conn, conn, delete_commits
):
    s = _market(sync_conn)
    w = s.w
    gone = w.me_file([s.female, s.z10001])
    other = w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    # gone's offer deleted by hand (to be created), other's population moved (offer stale)
    sync_conn.execute("DELETE FROM offers WHERE me_file_id = %s", (gone,))
    deleter = psycopg.connect(TEST_DB.conninfo)
    deleter.execute("DELETE FROM me_files WHERE id = %s", (gone,))  # open
    try:
        changes = await asyncio.wait_for(
            offers_jobs.reconcile_offers(conn, free_targets=[s.target], me_file_ids=[gone, other]),
            5,
        )
        assert gone in changes.blocked and other not in changes.blocked
        await offers_jobs.reconcile_later(conn, changes.blocked)
        await conn.commit()
        if delete_commits:
            deleter.commit()
        else:
            deleter.rollback()  # the delete changed its mind
    finally:
        deleter.close()
    sync_conn.execute("UPDATE qlarius_pending_reconciles SET retry_after = NULL")
    await drain()
    assert sync_conn.execute(
        "SELECT count(*) FROM offers WHERE me_file_id = %s", (gone,)
    ).fetchone()[0] == (0 if delete_commits else 1)
    assert sync_conn.execute("SELECT count(*) FROM qlarius_pending_reconciles").fetchone()[0] == 0
    assert_all_invariants(sync_conn)


async def test_apply_band_memberships_skips_a_me_file_being_deleted_in_a_range(
    app, sync_conn, conn
):
    """A range statement meeting a MeFile being deleted (its rows locked by the cascade):
    skipped, once; the others of the range applied."""
    s = _market(sync_conn)
    w = s.w
    a = w.me_file([s.female])
    b = w.me_file([s.female, s.z10001])
    c = w.me_file([s.female, s.z10028, s.heat])
    await _trigger(s.target)
    await drain()
    sync_conn.execute("UPDATE target_populations SET matching_tags_snapshot = '{\"tags\": []}'")
    deleter = psycopg.connect(TEST_DB.conninfo)
    deleter.execute("DELETE FROM me_files WHERE id = %s", (b,))
    try:
        changes = await asyncio.wait_for(
            snapshots.apply_band_memberships(conn, [s.target], id_range=(a, c)), 5
        )
        assert changes.skipped == (b,)
        assert changes.refreshed == 1 and changes.members == 2
        await conn.rollback()
    finally:
        deleter.rollback()
        deleter.close()
    await _trigger(s.target)
    await drain()
    assert_all_invariants(sync_conn)


async def test_criteria_and_trait_changes_between_ranges_end_in_a_consistent_population(
    app, sync_conn, settings
):
    """Ranges 1-3 read the old criteria and trait names, ranges 4-5 the new ones: the
    populate's result mixes both, and the change's pending row must bring a re-populate."""
    from qlarius_jobs.worker.wakeups import Wakeups

    settings.set(populate_range_size=2)
    s = _market(sync_conn)
    w = s.w
    ms = _ten_me_files(s)
    async with _populate_held_at_range_three(sync_conn, s, ms):
        w.conn.execute("DELETE FROM trait_group_traits WHERE trait_id = %s", (s.heat,))
        w.conn.execute(
            "UPDATE traits SET trait_name = 'Zip', display_order = 99 WHERE id = %s",
            (s.zip,),
        )
        w.conn.execute(
            "UPDATE me_file_tags SET tag_value = 'renamed' WHERE me_file_id = ANY(%s)",
            ([ms[0], ms[8]],),
        )
        await Wakeups(
            app.connector.pool, lambda: TEST_DB.conninfo, listen=False, sweep_seconds=1
        ).sweep_once()
    await drain()
    assert _status(sync_conn, s.target) == "populated"
    assert_all_invariants(sync_conn)


async def test_a_range_start_deleted_and_ids_below_the_first_start_created_mid_populate(
    app, sync_conn, settings
):
    """The MeFile whose id starts range 4 is deleted, and MeFiles are created with ids below
    every MeFile and far above, while range 3 is held."""
    settings.set(populate_range_size=2)
    s = _market(sync_conn)
    w = s.w
    ms = _ten_me_files(s)
    async with _populate_held_at_range_three(sync_conn, s, ms):
        w.conn.execute("DELETE FROM me_files WHERE id = %s", (ms[6],))  # starts range 4
        low = w.one("INSERT INTO me_files (id) VALUES (-5) RETURNING id")
        w.tag(low, [s.female, s.z10028])
        high = w.one("INSERT INTO me_files (id) VALUES (%s) RETURNING id", (10**15,))
        w.tag(high, [s.female, s.story])
        mid = w.one("INSERT INTO me_files (id) VALUES (%s) RETURNING id", (ms[6],))
        w.tag(mid, [s.female, s.z10001, s.heat])  # the deleted id, reused
    await drain()
    pops = w.populations(s.target)
    assert pops[low] == s.middle and pops[high] == s.outer and pops[mid] == s.bullseye
    assert_all_invariants(sync_conn)


async def test_a_reconcile_batch_and_an_ad_event_while_a_populate_is_between_ranges(
    app, sync_conn, settings
):
    """While the populate is held at range 3: an ad event is recorded (open) on an offer of a
    MeFile of range 4 that leaves the target, and the reconcile drain runs."""
    settings.set(populate_range_size=2)
    s = _market(sync_conn)
    w = s.w
    ms = _ten_me_files(s)
    holder = await _hold_populate_at_range_three(sync_conn, s, ms)
    offer = w.one("SELECT id FROM offers WHERE me_file_id = %s", (ms[7],))
    application = await psycopg.AsyncConnection.connect(TEST_DB.conninfo)
    try:
        await _trigger(s.target)
        async with running_workers({"targets", "offers"}):
            await wait_until_blocked(INSERTING)
            await record_ad_event(application, offer)  # open
            w.untag(ms[7], [s.female])  # range 4: the populate deletes its row
            w.tag(ms[2], [s.male])  # range 1: still a member
            await _let_the_populate_finish(holder, sync_conn)
            await asyncio.sleep(0.5)
            # the offer of ms[7] is held: blocked, not deleted, not lost
            assert w.one("SELECT count(*) FROM offers WHERE id = %s", (offer,)) == 1
            await application.commit()
    finally:
        holder.close()
        await application.close()
    sync_conn.execute("UPDATE qlarius_pending_reconciles SET retry_after = NULL")
    await drain()
    assert w.one("SELECT count(*) FROM offers WHERE me_file_id = %s", (ms[7],)) == 0
    assert_all_invariants(sync_conn)


@pytest.mark.parametrize("size", [2**31, 2**63, 10**30])
async def test_a_huge_range_size_is_one_statement(app, sync_conn, settings, caplog, size):
    settings.set(populate_range_size=size)
    s = _market(sync_conn)
    for _ in range(3):
        s.w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    summary = [e for e in log_events(caplog) if e["event"] == "populate_target finished"][-1]
    assert summary["statements"] == 1 and summary["members"] == 3
    assert_all_invariants(sync_conn)


async def test_a_first_populate_by_ranges_misses_no_change_to_a_range_already_done(
    app, sync_conn, settings
):
    settings.set(populate_range_size=2)
    s = _market(sync_conn)
    w = s.w
    ms = _ten_me_files(s)
    outsider = w.me_file([s.male])  # the last range: not a member
    await drain()
    assert _status(sync_conn, s.target) == "not_populated"
    holder = psycopg.connect(TEST_DB.conninfo)
    band = w.one("SELECT band_id FROM qlarius_band_memberships WHERE me_file_id = %s", (ms[4],))
    holder.execute(
        "INSERT INTO target_populations (target_band_id, me_file_id) VALUES (%s, %s)",
        (band, ms[4]),
    )
    try:
        await _trigger(s.target)
        async with running_workers({"targets"}):
            await wait_until_blocked(INSERTING)
            w.untag(ms[0], [s.female])  # range 1, done: leaves
            w.tag(ms[3], [s.z10028, s.heat])  # range 2, done: moves
            w.tag(outsider, [s.female])  # last range, not done: joins
            await _let_the_populate_finish(holder, sync_conn)
    finally:
        holder.close()
    await drain()
    pops = w.populations(s.target)
    assert ms[0] not in pops and pops[ms[3]] == s.bullseye and pops[outsider] == s.outer
    assert_all_invariants(sync_conn)


async def test_a_criteria_change_between_ranges_of_a_first_populate(app, sync_conn, settings):
    from qlarius_jobs.worker.wakeups import Wakeups

    settings.set(populate_range_size=2)
    s = _market(sync_conn)
    w = s.w
    ms = _ten_me_files(s)
    await drain()
    band = w.one("SELECT band_id FROM qlarius_band_memberships WHERE me_file_id = %s", (ms[4],))
    holder = psycopg.connect(TEST_DB.conninfo)
    holder.execute(
        "INSERT INTO target_populations (target_band_id, me_file_id) VALUES (%s, %s)",
        (band, ms[4]),
    )
    try:
        await _trigger(s.target)
        async with running_workers({"targets"}):
            await wait_until_blocked(INSERTING)
            w.conn.execute("DELETE FROM trait_group_traits WHERE trait_id = %s", (s.z10001,))
            await Wakeups(
                app.connector.pool, lambda: TEST_DB.conninfo, listen=False, sweep_seconds=1
            ).sweep_once()
            await _let_the_populate_finish(holder, sync_conn, sync_first=False)
    finally:
        holder.close()
    await drain()
    assert_all_invariants(sync_conn)


async def test_a_populate_by_ranges_of_one_under_a_stream_of_changes(app, sync_conn, settings):
    """300 MeFiles, ranges of 3, while another connection moves, deletes and creates MeFiles
    and a sync drain runs, all through the populate; then the reference."""
    settings.set(populate_range_size=3)
    s = _market(sync_conn)
    w = s.w
    shapes = [
        [s.female],
        [s.female, s.z10001],
        [s.female, s.z10028, s.heat],
        [s.male, s.z10028],
        [s.female, s.story],
    ]
    ms = [w.me_file(shapes[i % len(shapes)]) for i in range(300)]
    await _trigger(s.target)
    await drain()
    stop = asyncio.Event()

    async def churn():
        async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo, autocommit=True) as c:
            i = 0
            while not stop.is_set():
                m = ms[(i * 37) % len(ms)]
                if i % 11 == 0:
                    await c.execute("DELETE FROM me_files WHERE id = %s", (m,))
                elif i % 7 == 0:
                    cur = await c.execute("INSERT INTO me_files DEFAULT VALUES RETURNING id")
                    new = (await cur.fetchone())[0]
                    await c.execute(
                        "INSERT INTO me_file_tags (me_file_id, trait_id) VALUES (%s, %s), (%s, %s)",
                        (new, s.female, new, s.z10028),
                    )
                elif i % 2:
                    await c.execute(
                        "DELETE FROM me_file_tags WHERE me_file_id = %s AND trait_id = %s",
                        (m, s.female),
                    )
                else:
                    await c.execute(
                        "INSERT INTO me_file_tags (me_file_id, trait_id) "
                        "SELECT id, %s FROM me_files WHERE id = %s ON CONFLICT DO NOTHING",
                        (s.heat if i % 4 else s.female, m),
                    )
                i += 1
                await asyncio.sleep(0.002)

    before = len(jobs(sync_conn, "populate_target"))
    for _ in range(3):
        stop.clear()
        task = asyncio.create_task(churn())
        await _trigger(s.target)
        async with running_workers({"targets", "offers"}):
            await asyncio.sleep(2)
        stop.set()
        await task
    await drain()
    done = [j for j in jobs(sync_conn, "populate_target")[before:] if j["status"] == "succeeded"]
    assert len(done) >= 3
    assert _status(sync_conn, s.target) == "populated"
    assert_all_invariants(sync_conn)


async def test_me_files_being_deleted_in_two_ranges_are_each_skipped_once(app, sync_conn, conn):
    s = _market(sync_conn)
    ms = _ten_me_files(s)
    await _trigger(s.target)
    await drain()
    sync_conn.execute("UPDATE target_populations SET matching_tags_snapshot = '{\"tags\": []}'")
    deleters = [psycopg.connect(TEST_DB.conninfo) for _ in range(2)]
    deleters[0].execute("DELETE FROM me_files WHERE id = %s", (ms[1],))
    deleters[1].execute("DELETE FROM me_files WHERE id = %s", (ms[8],))
    try:
        changes, statements = await asyncio.wait_for(
            snapshots.populate_in_ranges(conn, s.target, 2), 10
        )
        assert statements == 5
        assert changes.skipped == (ms[1], ms[8])
        assert changes.refreshed == 8 and changes.members == 10
        await conn.rollback()
    finally:
        for d in deleters:
            d.rollback()
            d.close()
    await _trigger(s.target)
    await drain()
    assert_all_invariants(sync_conn)
