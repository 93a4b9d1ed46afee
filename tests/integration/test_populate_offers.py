"""A populate settles its own target's offers, in one pass right after its populations commit
(issue 22), forced interleavings included: the pass held at a chosen statement by another
connection while the application changes tags and bids, or killed before it could run.
Every test ends with the independent reference of DOMAIN.md's rules (``dev.reference``)."""

from __future__ import annotations

import psycopg

from tests.integration.support import TEST_DB, drain, jobs
from tests.integration.test_concurrency import (
    _market,
    _trigger,
    assert_all_invariants,
    drain_syncs_now,
    running_workers,
    wait_until,
    wait_until_blocked,
)


def _reconciles(conn: psycopg.Connection, target: int | None = None) -> int:
    """Pending reconcile rows (naming ``target``, when given)."""
    return conn.execute(
        "SELECT count(*) FROM qlarius_pending_reconciles "
        "WHERE %s::bigint IS NULL OR target_id = %s",
        (target, target),
    ).fetchone()[0]


def _offers(conn: psycopg.Connection) -> dict[int, int]:
    return dict(conn.execute("SELECT me_file_id, target_band_id FROM offers"))


class OffersScopeHolder:
    """Holds a target's offers scope from another connection, as a running offers job of that
    target would: the populate's pass waits for it right after the populations commit."""

    def __init__(self, target_id: int) -> None:
        self.conn = psycopg.connect(TEST_DB.conninfo)
        self.conn.execute(
            "SELECT 1 FROM qlarius_target_locks WHERE target_id = %s AND scope = 'offers' "
            "FOR UPDATE",
            (target_id,),
        )

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()


async def test_a_repopulate_settles_its_offers_without_the_reconcile_drain(app, sync_conn):
    s = _market(sync_conn)
    w = s.w
    moving = w.me_file([s.female, s.z10028, s.story])
    leaving = w.me_file([s.female])
    staying = w.me_file([s.female, s.z10001])
    await _trigger(s.target)
    await drain(queues={"targets"})  # no worker on the offers queue: the populate alone
    assert _offers(sync_conn) == {moving: s.bullseye, leaving: s.outer, staying: s.middle}
    assert _reconciles(sync_conn) == 0
    # another target's reconcile is not the populate's to take
    other = w.target("another")
    sync_conn.execute(
        "INSERT INTO qlarius_pending_reconciles (me_file_id, target_id) VALUES (%s, %s)",
        (staying, other),
    )
    # the marketer edits the target: 'Multi-story' no longer counts, the outer ring needs a zip
    w.conn.execute(
        "DELETE FROM trait_group_traits WHERE trait_group_id = %s AND trait_id = %s",
        (s.g_props, s.story),
    )
    w.conn.execute("INSERT INTO target_band_trait_groups VALUES (%s, %s)", (s.outer, s.g_zip))
    await drain(queues={"targets"})
    assert _offers(sync_conn) == {moving: s.middle, staying: s.middle}
    assert _reconciles(sync_conn, s.target) == 0
    assert _reconciles(sync_conn) == 1  # the other target's, left to the drain
    [last] = [j for j in jobs(sync_conn, "populate_target")][-1:]
    assert last["status"] == "succeeded"
    await drain()
    assert_all_invariants(sync_conn)


async def test_a_populate_killed_before_its_offers_pass_leaves_them_to_the_drain(
    app, sync_conn, settings
):
    """The populations commit, the worker's connection dies before the pass: the reconciles
    the populations recorded are still pending, and the drain alone makes the offers right."""
    settings.set(retry_backoff_seconds=600)  # no retry's pass in this test
    s = _market(sync_conn)
    w = s.w
    members = [w.me_file([s.female]), w.me_file([s.female, s.z10028, s.heat])]
    await _trigger(s.target)
    holder = OffersScopeHolder(s.target)
    try:
        async with running_workers({"targets"}):
            await wait_until_blocked("qlarius_target_locks")
            assert w.one("SELECT population_status FROM targets") == "populated"
            [pid] = [
                r[0]
                for r in sync_conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%qlarius_target_locks%'"
                )
            ]
            sync_conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            await wait_until(
                lambda: sync_conn.execute("SELECT count(*) FROM qlarius_job_errors").fetchone()[0],
                20,
                "the populate's attempt to fail",
            )
    finally:
        holder.release()
    assert _offers(sync_conn) == {}
    assert _reconciles(sync_conn, s.target) == len(members)
    await drain(queues={"offers"})  # the reconcile drain, no populate
    assert _offers(sync_conn) == {members[0]: s.outer, members[1]: s.bullseye}
    assert_all_invariants(sync_conn)


async def test_a_tag_change_synced_before_the_pass_takes_its_rows_is_settled_by_it(app, sync_conn):
    s = _market(sync_conn)
    w = s.w
    mover = w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    sync_conn.execute("DELETE FROM offers")
    await _trigger(s.target)  # a re-populate (which finds the populations right)
    holder = OffersScopeHolder(s.target)
    try:
        async with running_workers({"targets"}):
            await wait_until_blocked("qlarius_target_locks")
            # populations committed, pass waiting: the MeFile moves, and its sync runs now
            w.tag(mover, [s.z10028, s.heat])
            await drain_syncs_now()
            await wait_until(lambda: w.populations() == {mover: s.bullseye}, 15, "the sync")
            assert _reconciles(sync_conn, s.target) >= 1
            holder.release()
            await wait_until(
                lambda: jobs(sync_conn, "populate_target")[-1]["status"] == "succeeded",
                20,
                "the populate",
            )
    finally:
        holder.release()
    # the pass took the sync's row too (committed before it took them): nothing pending
    assert _reconciles(sync_conn) == 0
    assert _offers(sync_conn) == {mover: s.bullseye}
    assert_all_invariants(sync_conn)


async def test_changes_committed_while_the_pass_writes_stay_pending(app, sync_conn):
    """The pass stopped on an offer it inserts (the key being inserted elsewhere, uncommitted):
    a MeFile moved and a bid withdrawn meanwhile commit after it took its rows, so their work
    stays pending, and is done after it."""
    s = _market(sync_conn)
    w = s.w
    blocked_on, mover = w.me_file([s.female]), w.me_file([s.female, s.z10001])
    await _trigger(s.target)
    await drain()
    sync_conn.execute("DELETE FROM offers")
    sync_conn.execute("DELETE FROM target_populations")  # a first populate, again
    sync_conn.execute("DELETE FROM qlarius_pending_reconciles")
    holder = psycopg.connect(TEST_DB.conninfo)
    holder.execute(
        "INSERT INTO offers (campaign_id, me_file_id, media_run_id, target_band_id, offer_amt, "
        "marketer_cost_amt) VALUES (%s, %s, %s, %s, 1, 2)",
        (s.campaign, blocked_on, s.run, s.outer),
    )
    try:
        await _trigger(s.target)
        async with running_workers({"targets"}):
            await wait_until_blocked("INSERT INTO offers")
            assert w.populations() == {blocked_on: s.outer, mover: s.middle}
            w.tag(mover, [s.z10028, s.heat])  # to the bullseye
            await drain_syncs_now()
            await wait_until(
                lambda: w.populations() == {blocked_on: s.outer, mover: s.bullseye}, 15, "the sync"
            )
            w.conn.execute(
                "UPDATE bids SET offer_amt = 9 WHERE campaign_id = %s AND target_band_id = %s",
                (s.campaign, s.bullseye),
            )
            # recorded after the pass took its rows: still pending
            assert _reconciles(sync_conn, s.target) >= 1
            holder.rollback()
            await wait_until(
                lambda: jobs(sync_conn, "populate_target")[-1]["status"] == "succeeded",
                20,
                "the populate",
            )
        assert _reconciles(sync_conn, s.target) >= 1
        assert sync_conn.execute("SELECT count(*) FROM qlarius_pending_campaigns").fetchone()[0]
    finally:
        holder.close()
    await drain()
    assert sync_conn.execute(
        "SELECT offer_amt::text FROM offers WHERE me_file_id = %s", (mover,)
    ).fetchone() == ("9.00",)
    assert_all_invariants(sync_conn)
