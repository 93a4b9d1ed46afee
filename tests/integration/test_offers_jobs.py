"""create_initial_pending_offers, reconcile_offers_for_me_file and record_ad_event."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg
import pytest

from qlarius_jobs import api
from qlarius_jobs.api import record_ad_event
from qlarius_jobs.jobs.arguments import InvalidJobArguments
from qlarius_jobs.jobs.catalog import defer_job
from tests.integration.factories import StandardWorld, standard_world
from tests.integration.support import TEST_DB, drain, insert_job_by_hand, jobs, log_events


async def _defer(task: str, **kwargs) -> int | None:
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        job_id = await defer_job(conn, task, **kwargs)
        await conn.commit()
        return job_id


async def _populate(target_id: int) -> None:
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        await api.trigger_population(conn, target_id)
        await conn.commit()
    await drain()


def _offers(conn):
    return conn.execute(
        "SELECT me_file_id, target_band_id, offer_amt::text, marketer_cost_amt::text, "
        "matching_tags_snapshot, media_run_id FROM offers ORDER BY me_file_id, campaign_id"
    ).fetchall()


@dataclass(frozen=True)
class Market(StandardWorld):
    inner: int  # a MeFile of the bullseye
    middle_one: int  # ... of the middle ring (no bid there)
    outer_one: int  # ... of the outer ring
    campaign: int  # bids on the bullseye and the outer ring only
    first_run: int  # of its two media runs, the one offers use


@pytest.fixture
def market(sync_conn) -> Market:
    s = standard_world(sync_conn)
    w = s.w
    campaign = w.campaign(
        s.target, {s.bullseye: ("1.25", "2.00"), s.outer: ("0.50", "0.80")}, media_runs=2
    )
    return Market(
        **vars(s),
        inner=w.me_file([s.female, s.z10028, s.heat]),
        middle_one=w.me_file([s.female, s.z10001]),
        outer_one=w.me_file([s.female]),
        campaign=campaign,
        first_run=w.one("SELECT min(id) FROM media_runs WHERE campaign_id = %s", (campaign,)),
    )


async def test_initial_offers_one_per_population_with_a_bid(app, sync_conn, market):
    s = market
    await _populate(s.target)
    # a legacy population without snapshot must not give an offer without one
    sync_conn.execute(
        "UPDATE target_populations SET matching_tags_snapshot = NULL WHERE me_file_id = %s",
        (s.inner,),
    )
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo, autocommit=True) as conn:
        await api.offer_campaign(conn, s.campaign)
    await drain()
    offers = _offers(sync_conn)
    assert [(o[0], o[1], o[2], o[3], o[5]) for o in offers] == [
        (s.inner, s.bullseye, "1.25", "2.00", s.first_run),
        (s.outer_one, s.outer, "0.50", "0.80", s.first_run),
    ]
    populations = dict(
        sync_conn.execute(
            "SELECT me_file_id, matching_tags_snapshot FROM target_populations"
        ).fetchall()
    )
    for me_file, *_, snap, _run in offers:
        assert snap is not None and snap == populations[me_file]
    # rerun: nothing new
    await _defer("create_initial_pending_offers", campaign_id=s.campaign)
    await drain()
    assert _offers(sync_conn) == offers
    due = [
        j
        for j in jobs(sync_conn, "create_initial_pending_offers")
        if j["scheduled_at"] is None or j["scheduled_at"] <= dt.datetime.now(dt.UTC)
    ]
    assert len(due) >= 2 and {j["status"] for j in due} == {"succeeded"}


async def test_offers_wait_for_the_target_then_give_up_after_an_hour(
    app, sync_conn, market, caplog, settings
):
    s = market  # its campaign is launched (a trigger deferred its offers); not populated yet
    await drain()
    [first, again] = jobs(sync_conn, "create_initial_pending_offers")
    assert first["status"] == "succeeded" and again["status"] == "todo"
    delay = (again["scheduled_at"] - dt.datetime.now(dt.UTC)).total_seconds()
    assert 170 < delay <= 180
    assert again["args"] == {"campaign_id": s.campaign}  # nothing a caller could forge
    assert again["queueing_lock"] is None  # a later job never takes the waiting place
    assert any(
        "not populated yet" in e["event"] for e in log_events(caplog) if e["level"] == "warning"
    )
    assert _offers(sync_conn) == []
    with pytest.raises(InvalidJobArguments, match="waiting_since"):
        await _defer("create_initial_pending_offers", campaign_id=s.campaign, waiting_since=1)

    # an hour later, still not populated: the job fails for good, without retries
    sync_conn.execute("DELETE FROM procrastinate_jobs")
    sync_conn.execute("UPDATE qlarius_offer_waits SET since = now() - interval '61 minutes'")
    await _defer("create_initial_pending_offers", campaign_id=s.campaign)
    await drain()
    [gave_up] = jobs(sync_conn, "create_initial_pending_offers")
    assert gave_up["status"] == "failed" and gave_up["attempts"] == 1
    assert sync_conn.execute("SELECT count(*) FROM qlarius_offer_waits").fetchone()[0] == 0


async def test_offers_for_unknown_or_dead_campaign_write_nothing(app, sync_conn, market, caplog):
    s = market
    await _populate(s.target)
    dead = s.w.campaign(s.target, {s.outer: ("1", "1")}, deactivated=True)
    await _defer("create_initial_pending_offers", campaign_id=dead)
    await _defer("create_initial_pending_offers", campaign_id=999_999)
    with pytest.raises(InvalidJobArguments, match="campaign_id"):
        await _defer("create_initial_pending_offers", campaign_id=-1)
    insert_job_by_hand("create_initial_pending_offers", {"campaign_id": -1}, queue="default")
    await drain()
    # (the market's live campaign got its offers when the target was populated)
    assert (
        sync_conn.execute(
            "SELECT count(*) FROM offers WHERE campaign_id <> %s", (s.campaign,)
        ).fetchone()[0]
        == 0
    )
    statuses: dict[int, set[str]] = {}
    for j in jobs(sync_conn, "create_initial_pending_offers"):
        if j["args"]["campaign_id"] in (dead, 999_999, -1):
            statuses.setdefault(j["args"]["campaign_id"], set()).add(j["status"])
    # (the dead campaign's creation also left it pending: the sweep deferred a job of its own)
    assert statuses == {dead: {"succeeded"}, 999_999: {"succeeded"}, -1: {"failed"}}
    warned = " ".join(e["event"] for e in log_events(caplog) if e["level"] == "warning")
    # (a deactivated campaign is not an error: its job withdraws its open offers, none here)
    assert "999999" in warned and f"campaign {dead}" not in warned


def test_offer_creation_has_five_attempts_and_others_three(app):
    attempts = {
        name: task.retry_strategy.attempts
        for name, task in app.tasks.items()
        if hasattr(task.retry_strategy, "attempts")
    }
    assert attempts == {
        "populate_target": 3,
        "sync_me_file_to_target_populations": 3,
        "snapshot_band_populations": 3,
        "create_initial_pending_offers": 5,
        "reconcile_offers_for_me_file": 3,
        "settle_target_offers": 5,
        "sync_pending_me_files": 3,
        "reconcile_pending_offers": 3,
        "backfill_missing_snapshots": 3,
        "rescue_stalled_jobs": 1,
        "prune_finished_jobs": 3,
        "backfill_snapshot_chunk": 3,
    }


async def test_reconcile_after_a_band_move_leaves_exactly_one_offer_on_the_new_band(
    app, sync_conn, market
):
    s = market
    w = s.w
    await _populate(s.target)
    await _defer("create_initial_pending_offers", campaign_id=s.campaign)
    await drain()
    # outer_one moves to the bullseye, inner leaves the target altogether
    w.tag(s.outer_one, [s.z10028, s.story])
    w.untag(s.inner, [s.female])
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        await api.notify_tags_changed(conn, s.outer_one)
        await api.notify_tags_changed(conn, s.inner)
        await conn.commit()
    await drain()
    offers = _offers(sync_conn)
    assert [(o[0], o[1], o[2]) for o in offers] == [(s.outer_one, s.bullseye, "1.25")]
    assert offers[0][4]["tags"][-1][0] == s.props  # the snapshot of the new band
    # a rerun changes nothing
    await _defer("reconcile_offers_for_me_file", me_file_id=s.outer_one)
    await drain()
    assert _offers(sync_conn) == offers


async def test_reconcile_of_a_missing_me_file_and_bad_args(app, sync_conn, caplog):
    # deferring twice is harmless: each records the MeFile, one drain reconciles it
    assert await _defer("reconcile_offers_for_me_file", me_file_id=31337) is not None
    assert await _defer("reconcile_offers_for_me_file", me_file_id=31337) is not None
    with pytest.raises(InvalidJobArguments, match="extra"):
        await _defer("reconcile_offers_for_me_file", me_file_id=1, extra=1)
    insert_job_by_hand("reconcile_offers_for_me_file", {"me_file_id": 1, "extra": 1}, "offers")
    await drain()
    assert [j["status"] for j in jobs(sync_conn, "reconcile_offers_for_me_file")] == [
        "succeeded",
        "succeeded",
        "failed",
    ]
    assert any("31337" in e["event"] for e in log_events(caplog) if e["level"] == "warning")
    assert sync_conn.execute("SELECT count(*) FROM qlarius_pending_reconciles").fetchone()[0] == 0


async def test_record_ad_event_copies_or_computes_the_offer_snapshot(
    app, conn, sync_conn, market, caplog
):
    s = market
    await _populate(s.target)
    await _defer("create_initial_pending_offers", campaign_id=s.campaign)
    await drain()
    offer_id, offer_snap = sync_conn.execute(
        "SELECT id, matching_tags_snapshot FROM offers WHERE me_file_id = %s", (s.inner,)
    ).fetchone()
    event_id = await record_ad_event(conn, offer_id, is_offer_complete=True)
    row = sync_conn.execute(
        "SELECT offer_id, me_file_id, target_band_id, offer_amt::text, is_offer_complete, "
        "matching_tags_snapshot FROM ad_events WHERE id = %s",
        (event_id,),
    ).fetchone()
    assert row == (offer_id, s.inner, s.bullseye, "1.25", True, offer_snap)

    # an offer without snapshot, whose population is gone: computed from the tags, logged
    other_id = sync_conn.execute(
        "SELECT id FROM offers WHERE me_file_id = %s", (s.outer_one,)
    ).fetchone()[0]
    sync_conn.execute("UPDATE offers SET matching_tags_snapshot = NULL WHERE id = %s", (other_id,))
    sync_conn.execute("DELETE FROM target_populations WHERE me_file_id = %s", (s.outer_one,))
    event2 = await record_ad_event(conn, other_id)
    snap = sync_conn.execute(
        "SELECT matching_tags_snapshot FROM ad_events WHERE id = %s", (event2,)
    ).fetchone()[0]
    assert snap == {"tags": [[s.sex, "Sex (Biological)", 1, [[s.female, "Female", 1]]]]}
    assert (
        sync_conn.execute(
            "SELECT matching_tags_snapshot FROM offers WHERE id = %s", (other_id,)
        ).fetchone()[0]
        == snap
    )
    assert any(f"offer {other_id} had no snapshot" in e["event"] for e in log_events(caplog))

    with pytest.raises(LookupError, match="offer 424242 does not exist"):
        await record_ad_event(conn, 424242)
    with pytest.raises(ValueError, match="positive integer"):
        await record_ad_event(conn, 0)
    assert sync_conn.execute("SELECT count(*) FROM ad_events").fetchone()[0] == 2


async def test_trigger_population_for_unknown_target_changes_nothing(app, sync_conn):
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        with pytest.raises(LookupError, match="target 5150 does not exist"):
            await api.trigger_population(conn, 5150)
        with pytest.raises(ValueError, match="positive integer"):
            await api.notify_tags_changed(conn, -2)
        await conn.commit()
    assert jobs(sync_conn) == []
