"""A populate's offers are settled in one pass over its target's offers (issue 22) by the job
``settle_target_offers``, which the populate defers with its populations' commit; forced
interleavings included: the pass held at a chosen statement by another connection while the
application changes tags and bids, or killed before it could run. Every test ends with the
independent reference of DOMAIN.md's rules (``dev.reference``)."""

from __future__ import annotations

import asyncio

import psycopg
from psycopg.types.json import Jsonb

from qlarius_jobs import testing
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


def _waiting_settles(conn: psycopg.Connection) -> list[dict]:
    return [j["args"] for j in jobs(conn, "settle_target_offers") if j["status"] == "todo"]


async def test_a_repopulate_settles_its_offers_without_the_reconcile_drain(app, sync_conn):
    s = _market(sync_conn)
    w = s.w
    moving = w.me_file([s.female, s.z10028, s.story])
    leaving = w.me_file([s.female])
    staying = w.me_file([s.female, s.z10001])
    await _trigger(s.target)
    await drain(queues={"targets"})  # no worker on the offers queue: the populate alone
    # committed with the populations: one pass of the target's offers, waiting; nothing yet
    assert _waiting_settles(sync_conn) == [{"target_id": s.target}]
    assert _offers(sync_conn) == {}
    assert _reconciles(sync_conn, s.target) == 3
    summary = await testing.perform_job(app, "settle_target_offers", target_id=s.target)
    assert summary["offers"] == "settled" and summary["offer_rows_taken"] == 3
    assert summary["offers_created"] == 3
    assert _offers(sync_conn) == {moving: s.bullseye, leaving: s.outer, staying: s.middle}
    assert _reconciles(sync_conn) == 0
    # another target's reconcile is not the pass's to take
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
    # still one waiting pass for the target (its queueing lock): it takes every row when it runs
    assert _waiting_settles(sync_conn) == [{"target_id": s.target}]
    summary = await testing.perform_job(app, "settle_target_offers", target_id=s.target)
    # leaving: withdrawn; moving: withdrawn from the bullseye, offered in the middle ring
    assert (summary["offers_deleted"], summary["offers_created"]) == (2, 1)
    assert _offers(sync_conn) == {moving: s.middle, staying: s.middle}
    assert _reconciles(sync_conn, s.target) == 0
    assert _reconciles(sync_conn) == 1  # the other target's, left to the drain
    assert [j["status"] for j in jobs(sync_conn, "populate_target")] == ["succeeded"] * 2
    await drain()  # the waiting pass finds nothing left; the drain takes the other target's row
    [settle] = jobs(sync_conn, "settle_target_offers")
    assert settle["status"] == "succeeded"
    assert_all_invariants(sync_conn)


async def test_a_populate_never_waits_for_an_application_deferring_its_pass(app, sync_conn, caplog):
    """An application deferred the target's pass in a transaction it keeps open: the
    populate does not wait for it (it leaves that job to it); once it commits, its pass
    settles the offers."""
    s = _market(sync_conn)
    member = s.w.me_file([s.female, s.z10028, s.heat])
    application = psycopg.connect(TEST_DB.conninfo)
    try:
        application.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "VALUES ('offers', 'settle_target_offers', %s)",
            (Jsonb({"target_id": s.target}),),
        )
        await _trigger(s.target)
        await asyncio.wait_for(drain(queues={"targets"}), 15)
        assert [j["status"] for j in jobs(sync_conn, "populate_target")][-1:] == ["succeeded"]
        assert s.w.populations() == {member: s.bullseye}
        assert _waiting_settles(sync_conn) == []  # the application's is not committed yet
        passes = [
            e["offers_pass"] for e in log_events(caplog) if e["event"] == "populate_target finished"
        ]
        assert "skipped" in passes, passes
        application.commit()
    finally:
        application.close()
    assert _waiting_settles(sync_conn) == [{"target_id": s.target}]
    await drain()
    assert _offers(sync_conn) == {member: s.bullseye}
    assert _reconciles(sync_conn) == 0
    assert_all_invariants(sync_conn)


async def test_a_failing_pass_is_retried_alone(app, sync_conn, settings):
    """The pass's connection dies while it waits for the target's offers scope: the populate
    has succeeded and is not run again; the pass is retried on its own."""
    settings.set(retry_backoff_seconds=1)
    s = _market(sync_conn)
    member = s.w.me_file([s.female, s.z10028, s.heat])
    await _trigger(s.target)
    await drain(queues={"targets"})
    holder = OffersScopeHolder(s.target)
    try:
        async with running_workers({"offers"}):
            await wait_until_blocked("qlarius_target_locks")
            _terminate_the_waiting_pass(sync_conn)
            holder.release()
            await wait_until(
                lambda: (
                    [j["status"] for j in jobs(sync_conn, "settle_target_offers")] == ["succeeded"]
                ),
                20,
                "the pass's retry",
            )
    finally:
        holder.release()
    [settle] = jobs(sync_conn, "settle_target_offers")
    assert settle["attempts"] == 2
    assert [j["attempts"] for j in jobs(sync_conn, "populate_target")] == [1]
    assert _offers(sync_conn) == {member: s.bullseye}
    assert_all_invariants(sync_conn)


async def _settle(app, target_id: int) -> dict:
    """The target's pass, run here as a worker would run its job."""
    return await testing.perform_job(app, "settle_target_offers", target_id=target_id)


def _terminate_the_waiting_pass(conn: psycopg.Connection) -> None:
    [pid] = [
        r[0]
        for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%qlarius_target_locks%'"
        )
    ]
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def test_a_pass_killed_before_it_takes_its_rows_leaves_them_to_the_drain(
    app, sync_conn, settings
):
    """The populations commit, the pass's connection dies before it takes its rows: the
    reconciles the populations recorded are still pending, and the drain alone makes the
    offers right."""
    settings.set(retry_backoff_seconds=600)  # no retry's pass in this test
    s = _market(sync_conn)
    w = s.w
    members = [w.me_file([s.female]), w.me_file([s.female, s.z10028, s.heat])]
    await _trigger(s.target)
    await drain(queues={"targets"})
    assert w.one("SELECT population_status FROM targets") == "populated"
    holder = OffersScopeHolder(s.target)
    try:
        async with running_workers({"offers"}):
            await wait_until_blocked("qlarius_target_locks")
            _terminate_the_waiting_pass(sync_conn)
            await wait_until(
                lambda: sync_conn.execute("SELECT count(*) FROM qlarius_job_errors").fetchone()[0],
                20,
                "the pass's attempt to fail",
            )
    finally:
        holder.release()
    assert _offers(sync_conn) == {}
    assert _reconciles(sync_conn, s.target) == len(members)
    # the pass never comes back (its retries given up, say): the reconcile drain alone
    sync_conn.execute("DELETE FROM procrastinate_jobs WHERE task_name = 'settle_target_offers'")
    await drain(queues={"offers"})
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
    await drain(queues={"targets"})
    holder = OffersScopeHolder(s.target)
    try:
        # the pass alone (no reconcile drain beside it), waiting for the scope
        settle = asyncio.create_task(_settle(app, s.target))
        await wait_until_blocked("qlarius_target_locks")
        # populations committed, pass waiting: the MeFile moves, and its sync runs now
        w.tag(mover, [s.z10028, s.heat])
        await drain_syncs_now()
        await wait_until(lambda: w.populations() == {mover: s.bullseye}, 15, "the sync")
        assert _reconciles(sync_conn, s.target) >= 1
        holder.release()
        summary = await asyncio.wait_for(settle, 20)
        assert summary["offers"] == "settled" and summary["offers_created"] == 1
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
        await drain(queues={"targets"})
        assert w.populations() == {blocked_on: s.outer, mover: s.middle}
        # the pass alone (no reconcile drain beside it), stopped on blocked_on's offer
        settle = asyncio.create_task(_settle(app, s.target))
        await wait_until_blocked("INSERT INTO offers")
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
        summary = await asyncio.wait_for(settle, 20)
        assert summary["offers"] == "settled"
        assert _reconciles(sync_conn, s.target) >= 1
        assert sync_conn.execute("SELECT count(*) FROM qlarius_pending_campaigns").fetchone()[0]
    finally:
        holder.close()
    await drain()
    assert sync_conn.execute(
        "SELECT offer_amt::text FROM offers WHERE me_file_id = %s", (mover,)
    ).fetchone() == ("9.00",)
    assert_all_invariants(sync_conn)
