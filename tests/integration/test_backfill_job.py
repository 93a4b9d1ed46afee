"""backfill_missing_snapshots: the hourly safety net of the seed note."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from qlarius_jobs.jobs.backfill_phases import PHASES
from qlarius_jobs.jobs.catalog import defer_job
from qlarius_jobs.ops import controls
from tests.integration.factories import StandardWorld, standard_world
from tests.integration.support import TEST_DB, drain, jobs, log_events

WORKER = "BackfillMissingSnapshotsWorker"


async def _backfill() -> int | None:
    """Run a backfill alone (the maintenance queue): filling a population records a reconcile
    of its offers, which would otherwise race the backfill to the same offers."""
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        job_id = await defer_job(conn, "backfill_missing_snapshots")
        await conn.commit()
    await drain(queues={"maintenance"})
    return job_id


@dataclass(frozen=True)
class LegacyData(StandardWorld):
    people: list[int]  # MeFiles with populations, offers (and people[1] an ad event)
    orphan: int  # a MeFile with an offer and an ad event but no population
    offers: dict[int, int]  # MeFile -> offer id
    events: dict[int, int]  # MeFile -> ad event id


def _legacy_data(sync_conn) -> LegacyData:
    """Populations, offers and ad events with NULL snapshots; one offer and one event orphaned."""
    s = standard_world(sync_conn)
    w = s.w
    people = [w.me_file([s.female]) for _ in range(4)]
    orphan_person = w.me_file([s.female])
    w.legacy_populations(s.outer, people, kept={people[0]: "hand-kept"})
    campaign = w.campaign(s.target, {s.outer: ("1.00", "2.00")})
    run = w.one("SELECT id FROM media_runs WHERE campaign_id = %s", (campaign,))
    offers = {}
    for m in [*people, orphan_person]:
        offers[m] = w.one(
            "INSERT INTO offers (campaign_id, me_file_id, media_run_id, target_band_id, offer_amt, "
            "marketer_cost_amt) VALUES (%s, %s, %s, %s, 1, 2) RETURNING id",
            (campaign, m, run, s.outer),
        )
    events = {}
    for m in (people[1], orphan_person):
        events[m] = w.one(
            "INSERT INTO ad_events (offer_id, campaign_id, me_file_id, target_band_id, media_run_id, "
            "offer_amt, marketer_cost_amt) VALUES (%s, %s, %s, %s, %s, 1, 2) RETURNING id",
            (offers[m], campaign, m, s.outer, run),
        )
    _forget_pending_work(sync_conn)
    return LegacyData(**vars(s), people=people, orphan=orphan_person, offers=offers, events=events)


def _forget_pending_work(sync_conn) -> None:
    """Legacy rows predate the triggers that record pending syncs and reconciles: no pending
    work describes them, so only the backfill repairs them."""
    sync_conn.execute("DELETE FROM qlarius_pending_syncs")
    sync_conn.execute("DELETE FROM qlarius_pending_reconciles")


async def test_backfill_fills_all_three_tables_with_true_counts(app, sync_conn, caplog):
    s = _legacy_data(sync_conn)
    job_id = await _backfill()
    w = s.w
    pops = dict(
        sync_conn.execute("SELECT me_file_id, matching_tags_snapshot FROM target_populations")
    )
    assert pops[s.people[0]] == {"tags": "hand-kept"}  # never overwritten
    female = [[s.sex, "Sex (Biological)", 1, [[s.female, "Female", 1]]]]
    assert all(pops[m] == {"tags": female} for m in s.people[1:])
    offers = dict(sync_conn.execute("SELECT me_file_id, matching_tags_snapshot FROM offers"))
    assert offers[s.people[0]] == {"tags": "hand-kept"}  # copied from its population
    assert offers[s.orphan] is None  # no population: stays NULL
    events = dict(sync_conn.execute("SELECT me_file_id, matching_tags_snapshot FROM ad_events"))
    assert events[s.people[1]] == {"tags": female} and events[s.orphan] is None

    messages = [e["event"] for e in log_events(caplog)]
    assert f"{WORKER}: Found 3 populations with missing snapshots" in messages
    assert (
        f"No snapshot found for offer {s.offers[s.orphan]} (me_file: {s.orphan}, band: {s.outer})"
    ) in messages
    assert (
        f"No snapshot found for ad_event {s.events[s.orphan]} "
        f"(me_file: {s.orphan}, band: {s.outer})"
    ) in messages
    summary = next(
        e for e in log_events(caplog) if e["event"] == "backfill_missing_snapshots finished"
    )
    assert (summary["found_populations"], summary["found_offers"], summary["found_ad_events"]) == (
        3,
        5,
        2,
    )
    assert (
        summary["updated_populations"],
        summary["updated_offers"],
        summary["updated_ad_events"],
    ) == (3, 4, 1)
    assert (summary["orphan_offers"], summary["orphan_ad_events"]) == (1, 1)
    assert "elapsed_ms" in summary
    run = sync_conn.execute(
        "SELECT job_id, found_populations, updated_populations, updated_offers, updated_ad_events, "
        "orphan_offers, orphan_ad_events, finished_at IS NOT NULL, budget_exhausted FROM backfill_runs"
    ).fetchall()
    assert run == [(job_id, 3, 3, 4, 1, 1, 1, True, False)]
    assert (
        w.count("SELECT count(*) FROM target_populations WHERE matching_tags_snapshot IS NULL") == 0
    )

    caplog.clear()
    await _backfill()  # the second run finds only the two orphans, and updates nothing
    summary = next(
        e for e in log_events(caplog) if e["event"] == "backfill_missing_snapshots finished"
    )
    assert (
        summary["updated_offers"]
        == summary["updated_ad_events"]
        == summary["updated_populations"]
        == 0
    )


async def test_a_clean_database_logs_no_missing_snapshots(app, sync_conn, caplog):
    await _backfill()
    assert f"{WORKER}: No missing snapshots found" in [e["event"] for e in log_events(caplog)]
    assert sync_conn.execute("SELECT found_populations, batches FROM backfill_runs").fetchall() == [
        (0, 0)
    ]


async def test_batches_and_offers_filled_even_when_their_population_was_fine(
    app, sync_conn, caplog, settings
):
    settings.set(backfill_batch_size=2)
    s = _legacy_data(sync_conn)
    # populations all fine already: offers must still be repaired from them
    sync_conn.execute(
        "UPDATE target_populations SET matching_tags_snapshot = '{\"tags\": []}' "
        "WHERE matching_tags_snapshot IS NULL"
    )
    _forget_pending_work(sync_conn)
    await _backfill()
    offers = dict(sync_conn.execute("SELECT me_file_id, matching_tags_snapshot FROM offers"))
    assert all(offers[m] is not None for m in s.people)
    batches = [e for e in log_events(caplog) if e["event"].startswith(f"{WORKER}: batch of")]
    assert [b["table"] for b in batches] == ["offers"] * 3 + ["ad_events"]
    assert [b["rows"] for b in batches] == [2, 2, 1, 2]


async def test_time_budget_stops_the_run_cleanly(app, sync_conn, caplog, settings):
    settings.set(backfill_time_budget_seconds=1e-9)
    _legacy_data(sync_conn)
    await _backfill()
    assert any("time budget" in e["event"] for e in log_events(caplog) if e["level"] == "warning")
    assert sync_conn.execute("SELECT budget_exhausted, batches FROM backfill_runs").fetchone() == (
        True,
        0,
    )
    nulls = sync_conn.execute(
        "SELECT count(*) FROM target_populations WHERE matching_tags_snapshot IS NULL"
    ).fetchone()[0]
    assert nulls == 3  # left for the next run
    [job] = jobs(sync_conn, "backfill_missing_snapshots")
    assert job["status"] == "succeeded"


async def test_deferring_while_one_waits_adds_nothing(app, sync_conn):
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        assert await defer_job(conn, "backfill_missing_snapshots") is not None
        assert await defer_job(conn, "backfill_missing_snapshots") is None
        await conn.commit()
    [job] = jobs(sync_conn, "backfill_missing_snapshots")
    assert job["queueing_lock"] == job["lock"] == "backfill_missing_snapshots"


def test_backfill_is_scheduled_at_minute_zero(sync_conn):
    schedules = {s["task_name"]: s for s in controls.schedules(sync_conn)}
    assert schedules["backfill_missing_snapshots"]["cron"] == "0 * * * *"
    assert all(r.minute == 0 for r in schedules["backfill_missing_snapshots"]["next_runs"])


async def test_a_large_backlog_is_shared_out_as_chunk_jobs(app, sync_conn, caplog, settings):
    settings.set(backfill_chunk_size=2)
    s = _legacy_data(sync_conn)  # 3 NULL populations, 5 offers, 2 ad events
    await _backfill()
    chunks = jobs(sync_conn, "backfill_snapshot_chunk")
    assert [j["args"]["table"] for j in chunks] == ["target_populations"] * 2 + ["offers"] * 3
    assert all(j["status"] == "succeeded" for j in chunks)
    assert (
        chunks[0]["queueing_lock"]
        == f"backfill_snapshot_chunk:target_populations:{chunks[0]['args']['first_id']}"
    )
    row = sync_conn.execute(
        "SELECT found_populations, found_offers, found_ad_events, updated_populations, "
        "updated_offers, updated_ad_events, orphan_offers, orphan_ad_events, chunks_deferred "
        "FROM backfill_runs"
    ).fetchone()
    assert row == (3, 5, 2, 3, 4, 1, 1, 1, 5)  # true counts, chunks included
    offers = dict(sync_conn.execute("SELECT me_file_id, matching_tags_snapshot FROM offers"))
    assert all(offers[m] is not None for m in s.people) and offers[s.orphan] is None
    assert any("shared out 3 chunk jobs for offers" in e["event"] for e in log_events(caplog))


async def test_a_run_leaves_a_tables_rows_to_its_chunks_still_queued(
    app, sync_conn, caplog, settings
):
    _legacy_data(sync_conn)
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        await defer_job(
            conn,
            "backfill_snapshot_chunk",
            schedule_in={"hours": 1},
            run_id=1,
            table="offers",
            first_id=1,
            last_id=2,
        )
        await conn.commit()
    await _backfill()
    left = [e for e in log_events(caplog) if "still queued or running" in e["event"]]
    assert [e["table"] for e in left] == ["offers"]
    nulls = sync_conn.execute(
        "SELECT (SELECT count(*) FROM target_populations WHERE matching_tags_snapshot IS NULL), "
        "(SELECT count(*) FROM offers WHERE matching_tags_snapshot IS NULL), "
        "(SELECT count(*) FROM ad_events WHERE matching_tags_snapshot IS NULL)"
    ).fetchone()
    assert nulls == (0, 5, 1)  # offers left to their chunk; the rest filled (1 orphan event)


async def test_a_fanned_out_run_finishes_with_its_last_chunk_and_counts_orphans_once(
    app, sync_conn, caplog, settings
):
    settings.set(backfill_chunk_size=2, backfill_batch_size=1)
    s = _legacy_data(sync_conn)  # 5 offers (1 orphan, id 5), 2 ad events (1 orphan)
    # one more fixable legacy offer, id 100: chunks of 2 are [1, 2] [3, 4] [5, 100], so its
    # chunk counts the orphan (id 5) in its first batch, then fails once on id 100 and is
    # retried: it must resume after id 5, not count that orphan again
    w = s.w
    late = w.me_file([s.female])
    w.legacy_populations(s.outer, [late])
    campaign, run = w.conn.execute(
        "SELECT campaign_id, media_run_id FROM offers LIMIT 1"
    ).fetchone()
    w.conn.execute(
        "INSERT INTO offers (id, campaign_id, me_file_id, media_run_id, target_band_id, "
        "offer_amt, marketer_cost_amt) VALUES (100, %s, %s, %s, %s, 1, 2)",
        (campaign, late, run, s.outer),
    )
    _forget_pending_work(sync_conn)
    sync_conn.execute("CREATE SEQUENCE test_failures")
    sync_conn.execute(
        "CREATE FUNCTION test_fail_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.id = 100 AND nextval('test_failures') = 1 THEN "
        "RAISE EXCEPTION 'transient'; END IF; RETURN NEW; END $$"
    )
    sync_conn.execute(
        "CREATE TRIGGER test_fail_once BEFORE UPDATE ON offers FOR EACH ROW "
        "EXECUTE FUNCTION test_fail_once()"
    )
    try:
        async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
            await defer_job(conn, "backfill_missing_snapshots")
            await conn.commit()
        await drain(queues={"maintenance"})
    finally:
        sync_conn.execute("DROP TRIGGER test_fail_once ON offers")
        sync_conn.execute("DROP FUNCTION test_fail_once()")
        sync_conn.execute("DROP SEQUENCE test_failures")
    retried = [j for j in jobs(sync_conn, "backfill_snapshot_chunk") if j["attempts"] > 1]
    assert len(retried) == 1  # the transient failure really happened, once
    row = sync_conn.execute(
        "SELECT updated_populations, updated_offers, updated_ad_events, orphan_offers, "
        "orphan_ad_events, chunks_deferred, chunks_pending, chunks_failed, "
        "finished_at IS NOT NULL, elapsed_ms > 0 FROM backfill_runs"
    ).fetchone()
    assert row == (4, 5, 1, 1, 1, 5, 0, 0, True, True)
    finished = [
        e for e in log_events(caplog) if e["event"].endswith("finished") and "run" in e["event"]
    ]
    assert [e["event"] for e in finished] == [f"{WORKER}: run 1 finished"]
    assert finished[0]["orphan_offers"] == 1 and finished[0]["updated_offers"] == 5
    # where the whole run's time went (its own part and its chunks'), in milliseconds
    phases = {p: finished[0][f"{p}_ms"] for p in PHASES}
    assert all(isinstance(ms, int) and ms >= 0 for ms in phases.values())
    assert sum(phases.values()) > 0
    [stored] = sync_conn.execute("SELECT phase_ms FROM backfill_runs").fetchone()
    assert set(stored) == set(PHASES) and stored == phases


async def test_a_run_with_chunks_left_is_not_finished_yet(app, sync_conn, settings):
    settings.set(backfill_chunk_size=2)
    _legacy_data(sync_conn)
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        await defer_job(conn, "backfill_missing_snapshots")
        await conn.commit()
    # the chunks are deferred for later: the run itself ends, the run does not
    sync_conn.execute(
        "CREATE FUNCTION test_later() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.task_name = 'backfill_snapshot_chunk' THEN "
        "NEW.scheduled_at := now() + interval '1 hour'; END IF; RETURN NEW; END $$"
    )
    sync_conn.execute(
        "CREATE TRIGGER test_later BEFORE INSERT ON procrastinate_jobs FOR EACH ROW "
        "EXECUTE FUNCTION test_later()"
    )
    try:
        await drain(queues={"maintenance"})
    finally:
        sync_conn.execute("DROP TRIGGER test_later ON procrastinate_jobs")
        sync_conn.execute("DROP FUNCTION test_later()")
    row = sync_conn.execute(
        "SELECT chunks_deferred, chunks_pending, finished_at FROM backfill_runs"
    ).fetchone()
    assert row[0] >= 1 and row[1] == row[0] and row[2] is None


async def test_a_runs_own_part_ends_once_and_a_finished_run_stays_finished(conn, sync_conn):
    """A worker killed after the run's job ended its part, but before its status was written:
    the rescued job ends it again. That must not finish the run while a chunk still runs, and
    the chunk's end must not un-finish it (make faults' kill_backfill found both)."""
    from qlarius_jobs.jobs import audit
    from qlarius_jobs.jobs.backfill import SQL as BACKFILL

    drift = {"audited_me_files": 0, **dict.fromkeys(audit.FINDINGS, 0)}
    run = await BACKFILL.one(
        conn,
        "start_backfill_run",
        job_id=None,
        found_populations=0,
        found_offers=40,
        found_ad_events=0,
    )
    run_id = run["id"]
    await BACKFILL.execute(
        conn, "register_backfill_chunks", run_id=run_id, table_name="offers", first_ids=[1]
    )

    async def finish() -> dict | None:
        return await BACKFILL.one(
            conn,
            "finish_backfill_run",
            run_id=run_id,
            budget_exhausted=False,
            phase_ms=Jsonb({"fill": 5}),
            **drift,
        )

    assert (await finish())["run_finished"] is False
    assert await finish() is None  # the retried job: its part had ended already
    ended = await BACKFILL.one(conn, "chunk_ended", run_id=run_id, table_name="offers", first_id=1)
    assert ended["run_finished"] is True
    assert (
        await BACKFILL.one(conn, "chunk_ended", run_id=run_id, table_name="offers", first_id=1)
        is None
    )
    row = sync_conn.execute(
        "SELECT chunks_pending, finished_at IS NOT NULL, phase_ms FROM backfill_runs WHERE id = %s",
        (run_id,),
    ).fetchone()
    assert row == (0, True, {"fill": 5})  # the part's times added once too
