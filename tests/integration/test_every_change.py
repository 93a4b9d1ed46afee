"""Every change the marketplace makes reaches the data, with no call from the application:
band criteria, traits, bids, campaigns, deletions (issue 17). Each defect of the issue is
forced here, most with two connections, one held open at a chosen statement; each test ends
with the independent reference of DOMAIN.md's rules."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import psycopg
import pytest

from qlarius_jobs import api, testing
from qlarius_jobs.dev import reference
from qlarius_jobs.jobs import drains
from qlarius_jobs.jobs.populations import apply_pending_syncs
from tests.integration.factories import StandardWorld, standard_world
from tests.integration.support import TEST_DB, drain, jobs


def assert_all_invariants(conn: psycopg.Connection) -> None:
    found = reference.check(conn)
    assert found.total() == 0, found.examples


@dataclass(frozen=True)
class Market(StandardWorld):
    people: dict[str, int]  # "inner", "middle", "outer", "none": MeFile ids
    campaign: int


async def _populated_market(sync_conn) -> Market:
    """The standard target, populated, a live campaign bidding on its three bands, and four
    MeFiles: one per band, and one in none."""
    s = standard_world(sync_conn)
    w = s.w
    people = {
        "inner": w.me_file([s.female, s.z10028, s.heat]),
        "middle": w.me_file([s.female, s.z10001]),
        "outer": w.me_file([s.female]),
        "none": w.me_file([s.male, s.z10028]),
    }
    campaign = w.campaign(
        s.target,
        {
            s.bullseye: ("3.00", "4.00"),
            s.middle: ("2.00", "3.00"),
            s.outer: ("1.00", "2.00"),
        },
    )
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        await api.trigger_population(conn, s.target)
        await conn.commit()
    await drain()
    assert_all_invariants(sync_conn)
    return Market(**vars(s), people=people, campaign=campaign)


def _offer(w, campaign: int, me_file: int) -> tuple | None:
    return w.conn.execute(
        "SELECT target_band_id, offer_amt::text, marketer_cost_amt::text FROM offers "
        "WHERE campaign_id = %s AND me_file_id = %s",
        (campaign, me_file),
    ).fetchone()


# 1. Band criteria and traits ---------------------------------------------------------------


async def test_a_trait_added_to_a_group_moves_the_me_files_it_now_matches(app, sync_conn):
    s = await _populated_market(sync_conn)
    w, p = s.w, s.people
    story_only = w.me_file([s.female, s.z10028, s.story])
    cellar = w.child(s.props, "Cellar", 9)
    w.tag(story_only, [cellar])
    await drain()
    assert w.populations()[story_only] == s.bullseye
    w.conn.execute("DELETE FROM trait_group_traits WHERE trait_id = %s", (s.story,))
    await drain()  # no call from the application
    assert w.populations()[story_only] == s.middle
    w.conn.execute(
        "INSERT INTO trait_group_traits (trait_group_id, trait_id) VALUES (%s, %s)",
        (s.g_props, cellar),
    )
    await drain()
    assert w.populations()[story_only] == s.bullseye
    assert w.populations()[p["inner"]] == s.bullseye
    assert_all_invariants(sync_conn)


async def test_a_new_inner_band_and_a_deleted_band_move_me_files_between_rings(app, sync_conn):
    s = await _populated_market(sync_conn)
    w, p = s.w, s.people
    # a deleted bullseye: its MeFile falls back to the next ring
    w.conn.execute("DELETE FROM target_bands WHERE id = %s", (s.bullseye,))
    await drain()
    assert w.populations()[p["inner"]] == s.middle
    # a new band with one more group than any other: the new innermost ring
    vip = w.group("heat only", s.props, [s.heat])
    new_inner = w.band(s.target, [s.g_sex, s.g_zip, s.g_props, vip], bullseye=True)
    await drain()
    assert w.populations()[p["inner"]] == new_inner
    # a group removed from a band: its criteria loosen
    w.conn.execute(
        "DELETE FROM target_band_trait_groups WHERE target_band_id = %s AND trait_group_id = %s",
        (s.middle, s.g_zip),
    )
    await drain()
    assert w.populations()[p["middle"]] == s.middle  # the middle ring ties with the outer
    assert_all_invariants(sync_conn)


async def test_renaming_or_reordering_a_trait_refreshes_every_snapshot_that_carries_it(
    app, sync_conn
):
    s = await _populated_market(sync_conn)
    w, p = s.w, s.people
    w.conn.execute("UPDATE traits SET trait_name = 'Sex' WHERE id = %s", (s.sex,))
    w.conn.execute("UPDATE traits SET display_order = 1 WHERE id = %s", (s.story,))
    w.conn.execute("UPDATE traits SET trait_name = 'Central air' WHERE id = %s", (s.heat,))
    await drain()
    snapshot = w.one(
        "SELECT matching_tags_snapshot FROM target_populations WHERE me_file_id = %s",
        (p["inner"],),
    )
    assert snapshot["tags"][0][1] == "Sex"
    assert snapshot["tags"][2][3] == [[s.heat, "Central air", 2]]
    offer = w.one("SELECT matching_tags_snapshot FROM offers WHERE me_file_id = %s", (p["inner"],))
    assert offer == snapshot  # offers follow their population
    assert_all_invariants(sync_conn)


async def test_a_criteria_change_committed_while_its_populate_runs_is_not_lost(app, sync_conn):
    """The populate consumes the target's pending rows in its transaction, before it reads:
    a change committed after that is left pending and runs the populate again."""
    s = await _populated_market(sync_conn)
    w, p = s.w, s.people
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as application:
        await application.execute("DELETE FROM trait_group_traits WHERE trait_id = %s", (s.heat,))
        # a whole populate runs while the change is uncommitted
        await testing.perform_job(app, "populate_target", target_id=s.target)
        assert w.populations()[p["inner"]] == s.bullseye
        await application.commit()
    await drain()
    assert w.populations()[p["inner"]] == s.middle
    assert_all_invariants(sync_conn)


# 2. Bids and campaigns --------------------------------------------------------------------


async def test_a_bid_change_reaches_open_offers_and_completed_ones_keep_theirs(app, sync_conn):
    s = await _populated_market(sync_conn)
    w, p = s.w, s.people
    completed = w.one(
        "SELECT id FROM offers WHERE me_file_id = %s AND campaign_id = %s",
        (p["middle"], s.campaign),
    )
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo, autocommit=True) as conn:
        await api.record_ad_event(conn, completed, is_offer_complete=True)
    w.conn.execute(
        "UPDATE bids SET offer_amt = 9.50, marketer_cost_amt = 12.00 WHERE campaign_id = %s",
        (s.campaign,),
    )
    await drain()
    assert _offer(w, s.campaign, p["inner"]) == (s.bullseye, "9.50", "12.00")
    assert _offer(w, s.campaign, p["middle"]) == (s.middle, "2.00", "3.00")  # completed
    # an ad event now copies the new amounts
    open_offer = w.one("SELECT id FROM offers WHERE me_file_id = %s", (p["outer"],))
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo, autocommit=True) as conn:
        event = await api.record_ad_event(conn, open_offer)
    assert w.conn.execute(
        "SELECT offer_amt::text FROM ad_events WHERE id = %s", (event,)
    ).fetchone() == ("9.50",)
    assert_all_invariants(sync_conn)


async def test_a_deactivated_campaign_withdraws_its_open_offers_and_keeps_completed_ones(
    app, sync_conn
):
    s = await _populated_market(sync_conn)
    w, p = s.w, s.people
    completed = w.one("SELECT id FROM offers WHERE me_file_id = %s", (p["inner"],))
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo, autocommit=True) as conn:
        await api.record_ad_event(conn, completed, is_offer_complete=True)
    w.conn.execute("UPDATE campaigns SET deactivated_at = now() WHERE id = %s", (s.campaign,))
    await drain()
    assert w.conn.execute(
        "SELECT id FROM offers WHERE campaign_id = %s", (s.campaign,)
    ).fetchall() == [(completed,)]
    assert_all_invariants(sync_conn)
    w.conn.execute("UPDATE campaigns SET deactivated_at = NULL WHERE id = %s", (s.campaign,))
    await drain()
    assert w.count("SELECT count(*) FROM offers WHERE campaign_id = %s", (s.campaign,)) == 3
    assert_all_invariants(sync_conn)


async def test_a_campaign_moved_to_another_target_follows_it(app, sync_conn):
    s = await _populated_market(sync_conn)
    w, p = s.w, s.people
    other = w.target("men")
    men = w.group("men", s.sex, [s.male])
    [band] = w.nested_bands(other, [men])
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        await api.trigger_population(conn, other)
        await conn.commit()
    await drain()
    with w.conn.transaction():
        w.conn.execute("UPDATE campaigns SET target_id = %s WHERE id = %s", (other, s.campaign))
        w.conn.execute("DELETE FROM bids WHERE campaign_id = %s", (s.campaign,))
        w.conn.execute(
            "INSERT INTO bids (campaign_id, target_band_id, offer_amt, marketer_cost_amt) "
            "VALUES (%s, %s, 5, 6)",
            (s.campaign, band),
        )
    await drain()
    assert w.conn.execute(
        "SELECT me_file_id, target_band_id FROM offers WHERE campaign_id = %s", (s.campaign,)
    ).fetchall() == [(p["none"], band)]
    assert_all_invariants(sync_conn)


async def test_a_bid_change_committed_after_its_offers_job_started_is_not_lost(app, sync_conn):
    """The race of the old design: the bid's trigger found an offers job waiting and deferred
    none; that job then ran before the change committed. The pending campaign row, consumed
    only by a job that reads after it, leaves the change for the next one."""
    s = await _populated_market(sync_conn)
    w, p = s.w, s.people
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as application:
        await application.execute(
            "UPDATE bids SET offer_amt = 7.00 WHERE campaign_id = %s AND target_band_id = %s",
            (s.campaign, s.outer),
        )
        await testing.perform_job(app, "create_initial_pending_offers", campaign_id=s.campaign)
        await application.commit()
    await drain()
    assert _offer(w, s.campaign, p["outer"])[1] == "7.00"
    assert_all_invariants(sync_conn)


# 3. Deletions never fail or block a job ------------------------------------------------------


async def test_a_me_file_being_deleted_never_fails_or_blocks_the_populate(app, sync_conn):
    s = await _populated_market(sync_conn)
    w = s.w
    doomed = w.me_file([s.female, s.z10028])
    kept = w.me_file([s.female, s.z10001])
    await drain()
    for outcome in ("commit", "rollback"):
        with psycopg.connect(TEST_DB.conninfo) as deleting:
            victim = doomed if outcome == "commit" else kept
            deleting.execute("DELETE FROM me_files WHERE id = %s", (victim,))
            async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
                await api.trigger_population(conn, s.target)
                await conn.commit()
            started = time.monotonic()
            outcomes = await testing.drain(app, ["targets"], rounds=3)
            assert time.monotonic() - started < 15
            assert outcomes["failed"] == 0
            if outcome == "commit":
                deleting.commit()
            else:
                deleting.rollback()
        await drain()
        assert_all_invariants(sync_conn)
    assert kept in w.populations()


async def test_a_batch_meeting_a_target_being_deleted_does_not_wait(app, sync_conn):
    """The drains' rows left for a busy target had a foreign key to it: a batch inserting one
    waited, barrier held, for the application deleting that target."""
    s = await _populated_market(sync_conn)
    w, p = s.w, s.people
    other = w.target("doomed", status="populated")
    await drain()
    with psycopg.connect(TEST_DB.conninfo) as deleting:
        deleting.execute("DELETE FROM targets WHERE id = %s", (other,))
        w.tag(p["outer"], [s.z10028])
        async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
            report = await asyncio.wait_for(
                drains.drain(
                    conn, drains.SYNC, apply_pending_syncs, batch_size=100, budget_seconds=10
                ),
                10,
            )
        assert report.me_files == 1
        assert w.populations()[p["outer"]] == s.middle
        deleting.commit()
    await drain()
    assert w.count("SELECT count(*) FROM qlarius_pending_syncs") == 0
    assert_all_invariants(sync_conn)


async def test_a_band_being_deleted_leaves_the_populate_for_later(app, sync_conn):
    s = await _populated_market(sync_conn)
    w, p = s.w, s.people
    with psycopg.connect(TEST_DB.conninfo) as deleting:
        deleting.execute("DELETE FROM target_bands WHERE id = %s", (s.bullseye,))
        summary = await asyncio.wait_for(
            testing.perform_job(app, "populate_target", target_id=s.target), 10
        )
        assert summary["busy"] is True
        deleting.commit()
    await drain()
    assert w.populations()[p["inner"]] == s.middle
    assert_all_invariants(sync_conn)


# 4. No batch locks a row it will not change ----------------------------------------------------


async def test_an_application_holding_an_offer_never_stalls_a_reconcile(app, sync_conn):
    """``ON CONFLICT DO UPDATE ... WHERE`` locked every conflicting offer, changed or not: an
    application transaction holding one stalled the whole batch. Now a batch locks only the
    offers it changes, SKIP LOCKED, and sends the MeFiles it could not finish back."""
    s = await _populated_market(sync_conn)
    w, p = s.w, s.people
    held_offer = w.one("SELECT id FROM offers WHERE me_file_id = %s", (p["middle"],))
    with psycopg.connect(TEST_DB.conninfo) as application:
        application.execute("SELECT 1 FROM offers WHERE id = %s FOR UPDATE", (held_offer,))
        w.conn.execute("UPDATE bids SET offer_amt = 8 WHERE campaign_id = %s", (s.campaign,))
        async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
            await drains.record_pending_many(conn, drains.RECONCILE, sorted(p.values()))
            await conn.commit()
        outcomes = await asyncio.wait_for(testing.drain(app, ["offers"], rounds=2), 15)
        assert outcomes["failed"] == 0
        assert _offer(w, s.campaign, p["inner"])[1] == "8.00"  # not held: done
        assert _offer(w, s.campaign, p["middle"])[1] == "2.00"  # held: left for later
        application.rollback()
    await drain()
    assert _offer(w, s.campaign, p["middle"])[1] == "8.00"
    assert_all_invariants(sync_conn)


# 5. What the README promises ----------------------------------------------------------------


async def test_a_populate_never_waits_on_the_application_holding_its_targets_row(app, sync_conn):
    s = await _populated_market(sync_conn)
    w = s.w
    with psycopg.connect(TEST_DB.conninfo) as application:
        # what an application's UPDATE of the target (its name, its status) holds
        application.execute("SELECT 1 FROM targets WHERE id = %s FOR NO KEY UPDATE", (s.target,))
        waits: list[int] = []
        stop = threading.Event()

        def watch() -> None:
            with psycopg.connect(TEST_DB.conninfo, autocommit=True) as watcher:
                while not stop.is_set():
                    waits.append(
                        watcher.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                            "'Lock' AND (query LIKE '%%qlarius: mark_target_populated%%' "
                            "OR query LIKE '%%qlarius: lock_target_for_status%%')"
                        ).fetchone()[0]
                    )
                    time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        job = asyncio.create_task(testing.perform_job(app, "populate_target", target_id=s.target))
        await asyncio.sleep(1.5)
        application.rollback()
        summary = await asyncio.wait_for(job, 20)
        stop.set()
        watcher.join()
    assert summary["status_write_tries"] > 1
    assert not any(waits)  # never queued behind the application's lock
    assert w.one("SELECT population_status FROM targets WHERE id = %s", (s.target,)) == (
        "populated"
    )


async def test_the_drainer_does_not_spin_on_rows_left_for_a_target_it_cannot_take(app, sync_conn):
    s = await _populated_market(sync_conn)
    w, p = s.w, s.people
    w.conn.execute(
        "INSERT INTO qlarius_pending_syncs (me_file_id, target_id) VALUES (%s, %s)",
        (p["inner"], s.target),
    )
    with psycopg.connect(TEST_DB.conninfo) as application:
        # the target's row held as a delete would (its scope row stays free)
        application.execute("SELECT 1 FROM targets WHERE id = %s FOR UPDATE", (s.target,))
        async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
            report = await asyncio.wait_for(
                drains.drain(
                    conn, drains.SYNC, apply_pending_syncs, batch_size=100, budget_seconds=5
                ),
                3,
            )
        assert report.batches == 0 and not report.budget_spent
        application.rollback()
    await drain()
    assert_all_invariants(sync_conn)


async def test_truncating_the_tags_empties_the_populations(app, sync_conn):
    s = await _populated_market(sync_conn)
    w = s.w
    w.conn.execute("TRUNCATE me_file_tags")
    await drain()
    assert w.populations() == {}
    assert w.count("SELECT count(*) FROM offers") == 0
    assert_all_invariants(sync_conn)


async def test_truncating_the_bids_withdraws_every_open_offer(app, sync_conn):
    s = await _populated_market(sync_conn)
    w = s.w
    assert w.count("SELECT count(*) FROM offers") == 3
    w.conn.execute("TRUNCATE bids")
    await drain()
    assert w.count("SELECT count(*) FROM offers") == 0
    assert_all_invariants(sync_conn)


async def test_a_target_never_populated_asks_nothing_of_a_criteria_change(app, sync_conn):
    """Its first populate computes from scratch: the change leaves no populate behind."""
    s = standard_world(sync_conn)
    w = s.w
    w.me_file([s.female])
    await drain()
    w.conn.execute("DELETE FROM trait_group_traits WHERE trait_id = %s", (s.heat,))
    assert w.count("SELECT count(*) FROM qlarius_pending_criteria") == 1
    await drain()
    assert w.count("SELECT count(*) FROM qlarius_pending_targets") == 0
    assert jobs(sync_conn, "populate_target") == []
    assert w.one("SELECT population_status FROM targets WHERE id = %s", (s.target,)) == (
        "not_populated"
    )
    assert w.populations() == {}


@pytest.mark.parametrize("run", range(3))
async def test_a_populate_ending_while_the_waiting_one_is_cancelled_restores_the_status(
    app, sync_conn, run
):
    """Write skew: the running populate ends while the waiting one is cancelled, in concurrent
    transactions; each saw the other still there, and neither restored the status."""
    s = await _populated_market(sync_conn)
    w = s.w
    started: list[int] = []
    for _ in range(2):  # one waiting populate per target: the second once the first runs
        async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
            await api.trigger_population(conn, s.target)
            await conn.commit()
        (todo,) = (j["id"] for j in jobs(sync_conn, "populate_target") if j["status"] == "todo")
        started.append(todo)
        if not started[1:]:
            sync_conn.execute(
                "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (todo,)
            )
    running, waiting = started
    assert w.one("SELECT population_status FROM targets WHERE id = %s", (s.target,)) == (
        "populating"
    )
    with psycopg.connect(TEST_DB.conninfo) as a, psycopg.connect(TEST_DB.conninfo) as b:
        a.execute("SELECT procrastinate_finish_job_v1(%s, 'failed', false)", (running,))

        def cancel_waiting() -> None:
            b.execute(
                "UPDATE procrastinate_jobs SET status = 'cancelled' WHERE id = %s", (waiting,)
            )
            b.commit()

        other = threading.Thread(target=cancel_waiting)
        other.start()
        await asyncio.sleep(0.5)
        a.commit()
        other.join(10)
        assert not other.is_alive()
    assert w.one("SELECT population_status FROM targets WHERE id = %s", (s.target,)) == (
        "populated"
    )
