"""The drift audit: `qlarius-jobs audit` and the sample each backfill run checks. Drift is made
by hand here and nothing records it, as after a bug, a hand edit or a restore from backup."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

import psycopg

from qlarius_jobs import api
from qlarius_jobs.dev import reference
from qlarius_jobs.jobs.catalog import defer_job
from tests.integration.factories import StandardWorld, standard_world
from tests.integration.support import BIN, TEST_DB, drain, log_events


@dataclass(frozen=True)
class Market(StandardWorld):
    people: list[int]  # one MeFile per band, and a second one in the outer band
    campaign: int


async def _world(sync_conn) -> Market:
    s = standard_world(sync_conn)
    w = s.w
    people = [
        w.me_file([s.female, s.z10028, s.heat]),
        w.me_file([s.female, s.z10001]),
        w.me_file([s.female]),
        w.me_file([s.female]),
    ]
    campaign = w.campaign(s.target, {b: ("1.00", "2.00") for b in (s.bullseye, s.middle, s.outer)})
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        await api.trigger_population(conn, s.target)
        await conn.commit()
    await drain()
    return Market(**vars(s), people=people, campaign=campaign)


def _drift(sync_conn, s) -> None:
    """One of each kind, recorded nowhere."""
    inner, middle, outer, other = s.people
    sync_conn.execute("DELETE FROM target_populations WHERE me_file_id = %s", (outer,))
    sync_conn.execute(
        "UPDATE target_populations SET matching_tags_snapshot = '{\"tags\": []}' "
        "WHERE me_file_id = %s",
        (middle,),
    )
    sync_conn.execute("DELETE FROM offers WHERE me_file_id = %s", (other,))
    sync_conn.execute(
        "UPDATE offers SET matching_tags_snapshot = '{\"tags\": 7}' WHERE me_file_id = %s",
        (inner,),
    )
    sync_conn.execute("DELETE FROM qlarius_pending_syncs")
    sync_conn.execute("DELETE FROM qlarius_pending_reconciles")


def _audit_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "qlarius-jobs"), "audit", "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_audit_finds_each_kind_of_drift_and_the_repair_mends_it(app, sync_conn):
    s = await _world(sync_conn)
    clean = _audit_cli()
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["drifted_population"] == 0
    _drift(sync_conn, s)
    found = _audit_cli()
    assert found.returncode == 1
    counts = json.loads(found.stdout)
    assert {k: counts[k] for k in counts if k.endswith(("population", "snapshot", "offer"))} | {
        "offer_without_eligibility": counts["offer_without_eligibility"]
    } == {
        "drifted_population": 1,  # the deleted population
        "stale_snapshot": 1,  # the hand-written snapshot
        "eligible_without_offer": 1,  # the deleted offer
        "stale_offer_snapshot": 2,  # the hand-written one, and the one of the stale population
        "offer_without_eligibility": 1,  # the offer left to the lost population
    }
    repaired = _audit_cli("--repair")
    assert json.loads(repaired.stdout)["syncs_recorded"] == 2
    await drain()
    assert _audit_cli().returncode == 0
    assert reference.check(sync_conn).total() == 0


async def test_each_backfill_run_audits_a_sample_and_says_what_it_found(
    app, sync_conn, settings, caplog
):
    settings.set(audit_sample_size=100)  # more than there are: every MeFile
    s = await _world(sync_conn)
    _drift(sync_conn, s)
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo, autocommit=True) as conn:
        await defer_job(conn, "backfill_missing_snapshots")
    await drain(queues={"maintenance"})
    row = sync_conn.execute(
        "SELECT audited_me_files, drifted_populations, stale_snapshots, "
        "offers_without_eligibility, eligible_without_offer, stale_offer_snapshots "
        "FROM backfill_runs"
    ).fetchone()
    assert row == (4, 1, 1, 1, 1, 2)
    warnings = " | ".join(e["event"] for e in log_events(caplog) if e["level"] == "warning")
    for words in ("stale snapshot", "offer without eligibility", "eligible MeFile without offer"):
        assert words in warnings
    await drain()  # the repairs the run queued
    assert reference.check(sync_conn).total() == 0


async def test_pending_work_that_no_drain_applies_is_reported_stuck(app, sync_conn):
    """With the drains stuck (no worker here), the MeFiles with pending rows are in flight
    for the drift check, so their drift hides: the audit says the work is stuck instead,
    exits 1 and logs one warning line per kind; work left for a busy target is not stuck."""
    s = await _world(sync_conn)
    inner, middle, _, _ = s.people
    sync_conn.execute("DELETE FROM target_populations WHERE me_file_id = %s", (inner,))
    sync_conn.execute(
        "INSERT INTO qlarius_pending_syncs (me_file_id, recorded_at) "
        "VALUES (%s, now() - interval '10 minutes')",
        (inner,),
    )
    sync_conn.execute(  # fresh: not stuck yet
        "INSERT INTO qlarius_pending_reconciles (me_file_id) VALUES (%s)", (middle,)
    )
    found = _audit_cli()
    assert found.returncode == 1
    report = json.loads(found.stdout)
    assert report["drifted_population"] == 0  # in flight, so not judged...
    assert report["stuck_pending"]["sync"]["rows"] == 1  # ...but stuck, and said so
    assert report["stuck_pending"]["sync"]["oldest_s"] >= 600
    assert report["stuck_pending"]["reconcile"] == {"rows": 0, "oldest_s": 0.0}
    warnings = [json.loads(line) for line in found.stderr.splitlines() if line.startswith("{")]
    assert [w["event"] for w in warnings if w["level"] == "warning"] == [
        "pending work stuck: 1 sync rows older than 120 s (oldest "
        f"{report['stuck_pending']['sync']['oldest_s']:g} s); are the drains running?"
    ]
    # left for a target a populate holds right now: waiting, not stuck
    sync_conn.execute("DELETE FROM qlarius_pending_syncs")
    sync_conn.execute(
        "INSERT INTO qlarius_pending_syncs (me_file_id, target_id, recorded_at) "
        "VALUES (%s, %s, now() - interval '10 minutes')",
        (inner, s.target),
    )
    with psycopg.connect(TEST_DB.conninfo) as holder:
        holder.execute(
            "SELECT 1 FROM qlarius_target_locks WHERE target_id = %s AND scope = 'populations' "
            "FOR UPDATE",
            (s.target,),
        )
        held = _audit_cli()
    assert json.loads(held.stdout)["stuck_pending"]["sync"]["rows"] == 0
    await drain()
    assert _audit_cli().returncode == 0
    assert reference.check(sync_conn).total() == 0


async def test_the_audit_finds_stale_amounts_and_open_offers_of_a_campaign_not_live(app, sync_conn):
    s = await _world(sync_conn)
    inner = s.people[0]
    second = s.w.campaign(s.target, {s.outer: ("1.00", "2.00")})
    await drain()
    sync_conn.execute(
        "UPDATE offers SET offer_amt = 99 WHERE me_file_id = %s AND campaign_id = %s",
        (inner, s.campaign),
    )
    sync_conn.execute("UPDATE campaigns SET deactivated_at = now() WHERE id = %s", (second,))
    # recorded nowhere, as after a hand edit with triggers off or a restore
    sync_conn.execute("DELETE FROM qlarius_pending_campaigns")
    sync_conn.execute("DELETE FROM qlarius_pending_reconciles")
    found = _audit_cli()
    assert found.returncode == 1
    counts = json.loads(found.stdout)
    assert counts["stale_offer_amount"] == 1
    assert counts["offer_of_a_campaign_not_live"] == 2  # the two MeFiles of the outer band
    assert reference.check(sync_conn).total() == 3
    _audit_cli("--repair")
    await drain()
    assert _audit_cli().returncode == 0
    assert reference.check(sync_conn).total() == 0
