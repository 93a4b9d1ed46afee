"""Changes committed side by side, and the application holding rows at the wrong moment: what a
hostile review of the level-triggered inputs (issue 17) found, each forced deterministically
with two connections, one transaction held open at a chosen statement, most ending with the
independent reference of DOMAIN.md's rules."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg

from qlarius_jobs import api, testing
from qlarius_jobs.dev import reference
from qlarius_jobs.worker.wakeups import SQL as WAKEUPS
from qlarius_jobs.worker.wakeups import Wakeups
from tests.integration.factories import standard_world
from tests.integration.support import TEST_DB, drain, insert_job_by_hand, jobs
from tests.integration.test_concurrency import wait_until_blocked
from tests.integration.test_every_change import _populated_market


def assert_all_invariants(conn: psycopg.Connection) -> None:
    found = reference.check(conn)
    assert found.total() == 0, found.examples


# 1. Write skew in the criteria triggers: each trigger finds the targets concerned by reading
# other tables under its own snapshot, so two concurrent criteria changes each miss the
# other's half, and the populate that runs between the two commits reads only one of them.


async def test_a_trait_added_to_a_group_while_the_group_is_added_to_a_band(app, sync_conn):
    s = await _populated_market(sync_conn)
    w, p = s.w, s.people
    # a new group (no band uses it yet) holding "Multi-story"
    vip = w.group("vip", s.props, [s.story])
    await drain()
    with psycopg.connect(TEST_DB.conninfo) as marketer_a:
        # A adds "Central Heat/AC" to the group: no band uses the group (in A's snapshot), so
        # the trigger records no target
        marketer_a.execute(
            "INSERT INTO trait_group_traits (trait_group_id, trait_id) VALUES (%s, %s)",
            (vip, s.heat),
        )
        # B adds the group to the bullseye and commits: target pending, populate runs and
        # reads the group without A's trait (uncommitted)
        w.conn.execute(
            "INSERT INTO target_band_trait_groups (target_band_id, trait_group_id) VALUES (%s, %s)",
            (s.bullseye, vip),
        )
        await drain()
        assert w.populations()[p["inner"]] == s.middle  # heat is not in vip yet
        marketer_a.commit()
    await drain()
    # "inner" has Central Heat/AC, now in vip: it belongs in the bullseye again
    assert_all_invariants(sync_conn)
    assert w.populations()[p["inner"]] == s.bullseye


async def test_a_trait_renamed_while_it_is_added_to_a_group(app, sync_conn):
    s = await _populated_market(sync_conn)
    w = s.w
    cellar = w.child(s.props, "Cellar", 9)
    someone = w.me_file([s.female, s.z10028, cellar])
    await drain()
    with psycopg.connect(TEST_DB.conninfo) as editor:
        # the trait is in no group (in the editor's snapshot): its rename records no target
        editor.execute("UPDATE traits SET trait_name = 'Wine cellar' WHERE id = %s", (cellar,))
        # a marketer adds it to the props group and commits: the populate snapshots "Cellar"
        w.conn.execute(
            "INSERT INTO trait_group_traits (trait_group_id, trait_id) VALUES (%s, %s)",
            (s.g_props, cellar),
        )
        await drain()
        assert w.populations()[someone] == s.bullseye
        editor.commit()
    await drain()
    snapshot = w.one(
        "SELECT matching_tags_snapshot FROM target_populations WHERE me_file_id = %s",
        (someone,),
    )
    assert_all_invariants(sync_conn)
    assert snapshot["tags"][2][3] == [[cellar, "Wine cellar", 9]]


# 2. A band moved to another target: its campaigns' offers on it are never withdrawn.


async def test_a_band_moved_to_another_target_takes_no_offer_of_the_old_campaign_with_it(
    app, sync_conn
):
    s = await _populated_market(sync_conn)
    w, p = s.w, s.people
    other = w.target("other")
    men = w.group("men", s.sex, [s.male])
    w.band(other, [men])
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        await api.trigger_population(conn, other)
        await conn.commit()
    await drain()
    assert _offer_count(w, s.campaign, p["outer"]) == 1
    # the outer ring (women) moves to the other target; the campaign stays on the first
    w.conn.execute("UPDATE target_bands SET target_id = %s WHERE id = %s", (other, s.outer))
    await drain()
    assert w.populations(other)[p["outer"]] == s.outer
    # the campaign's target no longer has that band: no offer of it may remain there
    assert_all_invariants(sync_conn)


def _offer_count(w, campaign: int, me_file: int) -> int:
    return w.count(
        "SELECT count(*) FROM offers WHERE campaign_id = %s AND me_file_id = %s",
        (campaign, me_file),
    )


# 3. The sweep drops the pending rows of a target whose first populate, deferred by hand, is
# running (its status is still 'not_populated'): a criteria change committed during it is lost.


async def test_a_criteria_change_during_a_first_populate_deferred_by_hand_is_not_lost(
    app, sync_conn
):
    s = standard_world(sync_conn)
    w = s.w
    inner = w.me_file([s.female, s.z10028, s.heat])
    await drain()
    with psycopg.connect(TEST_DB.conninfo) as blocker:
        # holds the populate mid-statement (the one wait left: a row inserted with its key)
        blocker.execute(
            "INSERT INTO target_populations (target_band_id, me_file_id) VALUES (%s, %s)",
            (s.bullseye, inner),
        )
        # a first populate deferred by hand (README: "a first populate deferred by hand for a
        # not_populated target ... see every change"), running: its job row is 'doing'
        job_id = insert_job_by_hand("populate_target", {"target_id": s.target})
        sync_conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job_id,))
        job = asyncio.create_task(testing.perform_job(app, "populate_target", target_id=s.target))
        await wait_until_blocked("apply_band_memberships")
        # the application removes "Central Heat/AC" from the props group, and commits
        w.conn.execute("DELETE FROM trait_group_traits WHERE trait_id = %s", (s.heat,))
        assert w.count("SELECT count(*) FROM qlarius_pending_criteria") == 1
        # a worker's periodic sweep runs meanwhile
        await Wakeups(
            app.connector.pool, lambda: TEST_DB.conninfo, listen=False, sweep_seconds=1
        ).sweep_once()
        blocker.rollback()
        await asyncio.wait_for(job, 20)
        sync_conn.execute(
            "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", (job_id,)
        )
    await drain()
    assert w.one("SELECT population_status FROM targets WHERE id = %s", (s.target,)) == (
        "populated"
    )
    assert_all_invariants(sync_conn)


# 4. The sweep waits for an application transaction: its single statement inserts offers jobs
# with ON CONFLICT on the queueing lock, which waits for a job row the application is
# inserting (api.offer_campaign in its open transaction), holding the sweep lock that every
# worker process's sweep queues on.


async def test_the_sweep_never_waits_for_an_application_transaction(app, sync_conn):
    s = await _populated_market(sync_conn)
    w = s.w
    # a committed change: the campaign is pending, no offers job waits yet
    w.conn.execute("UPDATE bids SET offer_amt = 9 WHERE campaign_id = %s", (s.campaign,))
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as application:
        # the application re-offers the campaign in a transaction it has not committed yet
        assert await api.offer_campaign(application, s.campaign) is not None
        sweep = asyncio.create_task(
            Wakeups(
                app.connector.pool, lambda: TEST_DB.conninfo, listen=False, sweep_seconds=1
            ).sweep_once()
        )
        done, _ = await asyncio.wait({sweep}, timeout=5)
        waiting = w.conn.execute(
            "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 60) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND query LIKE '%%ensure_scope_jobs%%'"
        ).fetchall()
        await application.rollback()
        await asyncio.wait_for(sweep, 10)  # ends once the application's transaction does
        assert done, f"the sweep waited 5 s for the application: {waiting}"


# 5. An application transaction holding the target's row (any UPDATE of the target) for
# longer than the populate's NOWAIT retries (~15 s per attempt, 3 attempts) fails the populate
# for good. (STATUS_WRITE_TRIES is shortened only to keep the tests fast; with the default 40
# tries the same happens after ~45 s.)


async def _first_populate_while_the_application_holds_the_target(app, w, s, application):
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        await api.trigger_population(conn, s.target)
        await conn.commit()
    # e.g. a marketer renaming the target in a transaction that stays open a while
    application.execute("UPDATE targets SET title = 'renamed' WHERE id = %s", (s.target,))
    run = asyncio.create_task(testing.drain(app, ["targets"], rounds=3))
    await asyncio.wait({run}, timeout=15)
    return run


async def test_a_failed_populate_s_status_write_never_waits_for_the_application(app, sync_conn):
    """A populate that fails while the application holds its target's row: the job's final
    status write (whose trigger restores the target) used to wait for the application; now it
    never waits, and the workers' sweep restores the target once the row is free."""
    s = standard_world(sync_conn)
    w = s.w
    # (building the world recorded criteria changes: not this test's)
    sync_conn.execute("DELETE FROM qlarius_pending_criteria")
    sync_conn.execute("DELETE FROM qlarius_pending_targets")
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        await api.trigger_population(conn, s.target)
        await conn.commit()
    (job,) = (j["id"] for j in jobs(sync_conn, "populate_target"))
    sync_conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job,))
    with psycopg.connect(TEST_DB.conninfo) as application:
        application.execute("UPDATE targets SET title = 'renamed' WHERE id = %s", (s.target,))
        with psycopg.connect(TEST_DB.conninfo, autocommit=True) as worker:
            worker.execute("SET statement_timeout = '3s'")
            worker.execute("SELECT procrastinate_finish_job_v1(%s, 'failed', false)", (job,))
        assert w.one("SELECT population_status FROM targets WHERE id = %s", (s.target,)) == (
            "populating"
        )
        application.commit()
    await Wakeups(
        app.connector.pool, lambda: TEST_DB.conninfo, listen=False, sweep_seconds=1
    ).sweep_once()
    assert w.one("SELECT population_status FROM targets WHERE id = %s", (s.target,)) == (
        "not_populated"
    )


async def test_a_long_application_transaction_on_the_target_row_does_not_lose_its_populate(
    app, sync_conn, monkeypatch
):
    """5b. The populate failed for good restores 'not_populated'; nothing populates the
    target again: the committed trigger_population is lost."""
    from qlarius_jobs.jobs import populations

    monkeypatch.setattr(populations, "STATUS_WRITE_TRIES", 3)
    s = standard_world(sync_conn)
    w = s.w
    inner = w.me_file([s.female, s.z10028, s.heat])
    with psycopg.connect(TEST_DB.conninfo) as application:
        run = await _first_populate_while_the_application_holds_the_target(app, w, s, application)
        application.commit()
        with contextlib.suppress(AssertionError):
            await asyncio.wait_for(run, 30)
    # the populate left the target pending, due again RETRY_SECONDS later
    await asyncio.sleep(populations.RETRY_SECONDS)
    await drain()
    assert w.one("SELECT population_status FROM targets WHERE id = %s", (s.target,)) == (
        "populated"
    )
    assert w.populations() == {inner: s.bullseye}


# 6. Whether an offer is completed is an input of invariant 3 (a deactivated campaign keeps
# only completed offers; an open offer follows its bid's amounts), but no trigger watches
# ad_events: removing the completing event leaves the offer as it was.


async def test_an_offer_no_longer_completed_is_withdrawn_from_a_deactivated_campaign(
    app, sync_conn
):
    s = await _populated_market(sync_conn)
    w, p = s.w, s.people
    completed = w.one("SELECT id FROM offers WHERE me_file_id = %s", (p["inner"],))
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo, autocommit=True) as conn:
        await api.record_ad_event(conn, completed, is_offer_complete=True)
    w.conn.execute("UPDATE campaigns SET deactivated_at = now() WHERE id = %s", (s.campaign,))
    await drain()
    assert_all_invariants(sync_conn)
    w.conn.execute("DELETE FROM ad_events WHERE offer_id = %s", (completed,))  # or TRUNCATE
    await drain()
    assert_all_invariants(sync_conn)


# From a second review.

# A. One application transaction re-offering one campaign (api.offer_campaign, not committed
# yet) stops every other campaign's offers: ensure_offers_jobs is one INSERT for all
# campaigns; it waits on that one campaign's queueing lock, times out after 200 ms, and the
# whole statement is given up, so no campaign gets its job while that transaction is open.


async def test_an_open_offer_campaign_does_not_hold_up_other_campaigns(app, sync_conn):
    s = await _populated_market(sync_conn)
    w = s.w
    a = s.campaign
    b = w.campaign(s.target, {s.outer: ("1.00", "2.00")})
    await drain()
    assert_all_invariants(sync_conn)
    # a committed change to campaign A (it is pending, as in test_changes_side_by_side #4)
    w.conn.execute("UPDATE bids SET offer_amt = 9 WHERE campaign_id = %s", (a,))
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as application:
        # the application re-offers campaign A and keeps its transaction open
        assert await api.offer_campaign(application, a) is not None
        # a marketer changes campaign B's bid: committed, B is pending
        w.conn.execute("UPDATE bids SET offer_amt = 7 WHERE campaign_id = %s", (b,))
        for _ in range(3):  # several sweeps, as the workers would run them
            await Wakeups(
                app.connector.pool, lambda: TEST_DB.conninfo, listen=False, sweep_seconds=1
            ).sweep_once()
        waiting_for_b = [
            j
            for j in jobs(sync_conn, "create_initial_pending_offers")
            if j["args"] == {"campaign_id": b} and j["status"] == "todo"
        ]
        pending_b = w.count(
            "SELECT count(*) FROM qlarius_pending_campaigns WHERE campaign_id = %s", (b,)
        )
        await application.rollback()
    assert waiting_for_b, f"campaign {b} pending ({pending_b} rows) but no offers job deferred"


# B. A target left 'populating' with no status_before_populating (the replaced system's
# crashed populate, DOMAIN.md "Known defects"; or any row written 'populating' by the
# application): the sweep's `stranded` restore sets COALESCE(NULL, 'populating'), i.e. the
# same status, so pending_scopes stays true and every sweep of every worker rewrites (and
# row-locks) the target, forever; nothing ever populates it.


async def test_a_legacy_target_left_populating_is_not_swept_forever(app, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    w.me_file([s.female, s.z10028, s.heat])
    await drain()
    # legacy data: the old populate crashed mid-way, before this project's column existed
    w.conn.execute(
        "UPDATE targets SET population_status = 'populating', status_before_populating = NULL "
        "WHERE id = %s",
        (s.target,),
    )
    before = w.one("SELECT updated_at FROM targets WHERE id = %s", (s.target,))
    await Wakeups(
        app.connector.pool, lambda: TEST_DB.conninfo, listen=False, sweep_seconds=1
    ).sweep_once()
    await drain()
    await Wakeups(
        app.connector.pool, lambda: TEST_DB.conninfo, listen=False, sweep_seconds=1
    ).sweep_once()
    still = w.one("SELECT population_status FROM targets WHERE id = %s", (s.target,))
    after = w.one("SELECT updated_at FROM targets WHERE id = %s", (s.target,))
    async with app.connector.pool.connection() as conn:
        pending = (await WAKEUPS.one(conn, "pending_scopes"))["pending"]
    assert not (still == "populating" and pending), (
        f"status {still!r}, pending_scopes {pending}, updated_at {before} -> {after} "
        "(rewritten by every sweep)"
    )
