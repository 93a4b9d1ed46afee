"""Each race of issue 8, forced by hand: one connection holds a transaction open at a chosen
statement (or holds a lock a job needs, so the job waits exactly there) while another runs.
Every test ends with the independent reference of DOMAIN.md's rules (``dev.reference``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import conninfo as pg_conninfo

from qlarius_jobs import api
from qlarius_jobs.api import record_ad_event
from qlarius_jobs.dev import reference
from qlarius_jobs.jobs import drains
from qlarius_jobs.jobs.catalog import defer_job
from qlarius_jobs.jobs.populations import apply_pending_syncs
from qlarius_jobs.worker import runner
from qlarius_jobs.worker.wakeups import Wakeups
from tests.integration.factories import StandardWorld, standard_world
from tests.integration.support import (
    BIN,
    TEST_DB,
    TargetRowHolder,
    drain,
    jobs,
    project_app,
    server_log,
)


@contextlib.asynccontextmanager
async def running_workers(queues: set[str]) -> AsyncIterator[None]:
    """Workers on ``queues`` in this process, listening for wake-ups, until the block ends."""
    app = project_app()
    chosen = runner.queues_to_run(runner.job_specs(app), ",".join(sorted(queues)))
    task = asyncio.create_task(
        runner.run_workers(
            app,
            chosen,
            install_signal_handlers=False,
            fetch_job_polling_interval=0.05,
            periodic=False,
        )
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def drain_syncs_now() -> drains.DrainReport:
    """One sync drain, here and now (not through a job: the queue is busy on purpose)."""
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        return await drains.drain(
            conn, drains.SYNC, apply_pending_syncs, batch_size=100, budget_seconds=10
        )


async def wait_until_blocked(statement: str, timeout: float = 20) -> None:
    """Until a backend waits for a lock while running a statement that contains ``statement``."""
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo, autocommit=True) as conn:
        while time.monotonic() < deadline:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE %s",
                (f"%{statement}%",),
            )
            if (await cur.fetchone())[0]:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"no statement containing {statement!r} ever waited for a lock")


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def assert_all_invariants(conn: psycopg.Connection) -> None:
    found = reference.check(conn)
    assert found.total() == 0, found.examples


async def _trigger(target_id: int) -> None:
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        await api.trigger_population(conn, target_id)
        await conn.commit()


def _pending(conn, table: str, me_file: int, target: int | None = None) -> int:
    return conn.execute(
        f"SELECT count(*) FROM {table} WHERE me_file_id = %s AND target_id IS NOT DISTINCT FROM %s",
        (me_file, target),
    ).fetchone()[0]


@dataclass(frozen=True)
class Market(StandardWorld):
    campaign: int
    run: int  # the campaign's media run


def _market(sync_conn) -> Market:
    """The standard target, populated, with a live campaign bidding on all three bands."""
    s = standard_world(sync_conn)
    w = s.w
    campaign = w.campaign(
        s.target,
        {
            s.bullseye: ("3.00", "4.00"),
            s.middle: ("2.00", "3.00"),
            s.outer: ("1.00", "2.00"),
        },
    )
    run = w.one("SELECT id FROM media_runs WHERE campaign_id = %s", (campaign,))
    return Market(**vars(s), campaign=campaign, run=run)


# 1. A tag change is never lost --------------------------------------------------------------


async def test_a_tag_change_committed_while_a_drain_runs_stays_pending(app, sync_conn):
    s = _market(sync_conn)
    w = s.w
    me_file = w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    assert w.populations() == {me_file: s.outer}

    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as application:
        await application.execute(
            "INSERT INTO me_file_tags (me_file_id, trait_id) VALUES (%s, %s), (%s, %s)",
            (me_file, s.z10028, me_file, s.heat),
        )
        await api.notify_tags_changed(application, me_file)
        # a whole drain runs while the application's transaction is open: it cannot see it
        await drain()
        assert w.populations() == {me_file: s.outer}
        await application.commit()
    # the change is still pending after that drain: the level, not an edge that was used up
    assert _pending(sync_conn, "qlarius_pending_syncs", me_file) >= 1
    await drain()
    assert w.populations() == {me_file: s.bullseye}
    assert_all_invariants(sync_conn)


async def test_a_change_committed_after_the_waiting_drain_started_is_synced_unasked(app, sync_conn):
    """The race of the issue: a drain job waits, a worker takes it before the application
    commits; after the commit nothing is queued by hand, yet the population becomes right."""
    s = _market(sync_conn)
    w = s.w
    me_file = w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    async with running_workers({"targets", "offers"}):
        async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as application:
            await application.execute(
                "INSERT INTO me_file_tags (me_file_id, trait_id) VALUES (%s, %s), (%s, %s)",
                (me_file, s.z10028, me_file, s.heat),
            )
            async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as other:
                waiting = await drains.ensure_waiting_job(other, drains.SYNC)
            await wait_until(
                lambda: any(
                    j["id"] == waiting and j["status"] == "succeeded"
                    for j in jobs(sync_conn, "sync_pending_me_files")
                ),
                20,
                "the waiting drain to run before the commit",
            )
            await application.commit()
        await wait_until(
            lambda: w.populations() == {me_file: s.bullseye}, 15, "the change to be synced"
        )
        await wait_until(
            lambda: (
                w.count("SELECT count(*) FROM offers WHERE target_band_id = %s", (s.bullseye,)) == 1
            ),
            15,
            "its offer to follow",
        )
    await drain()
    assert_all_invariants(sync_conn)


# 2. No stale offer -----------------------------------------------------------------------


async def test_offers_job_racing_a_sync_and_its_reconcile_leaves_no_stale_offer(app, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    leaving, staying = w.me_file([s.female]), w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    # the campaign comes after the populate: no population change creates its offers
    campaign = w.campaign(s.target, {s.outer: ("1.00", "2.00")})
    run = w.one("SELECT id FROM media_runs WHERE campaign_id = %s", (campaign,))
    # hold an offer key the job will insert, so it stops inside its transaction, after it
    # read the populations and wrote the first offer
    holder = psycopg.connect(TEST_DB.conninfo)
    holder.execute(
        "INSERT INTO offers (campaign_id, me_file_id, media_run_id, target_band_id, offer_amt, "
        "marketer_cost_amt) VALUES (%s, %s, %s, %s, 1, 2)",
        (campaign, staying, run, s.outer),
    )
    try:
        async with running_workers({"default"}):
            async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
                await api.offer_campaign(conn, campaign)
                await conn.commit()
            await wait_until_blocked("INSERT INTO offers")
            # meanwhile the MeFile leaves the target; its sync and reconcile run to the end
            w.untag(leaving, [s.female])
            await drain(queues={"targets", "offers"})
            assert w.populations() == {staying: s.outer}
            # the reconcile could not touch the campaign's offers yet: it left them for later
            assert _pending(sync_conn, "qlarius_pending_reconciles", leaving, s.target) == 1
            holder.rollback()
            await wait_until(
                lambda: (
                    jobs(sync_conn, "create_initial_pending_offers")[0]["status"] == "succeeded"
                ),
                20,
                "the offers job",
            )
    finally:
        holder.close()
    await drain()
    assert [r[0] for r in sync_conn.execute("SELECT me_file_id FROM offers")] == [staying]
    assert_all_invariants(sync_conn)


# 3. Re-populating reconciles offers --------------------------------------------------------


async def test_repopulating_moves_and_removes_offers(app, sync_conn):
    s = _market(sync_conn)
    w = s.w
    moving = w.me_file([s.female, s.z10028, s.story])
    leaving = w.me_file([s.female])
    staying = w.me_file([s.female, s.z10001])
    await _trigger(s.target)
    await drain()
    offers = dict(sync_conn.execute("SELECT me_file_id, target_band_id FROM offers"))
    assert offers == {moving: s.bullseye, leaving: s.outer, staying: s.middle}
    # the marketer edits the target (no tag changes): 'Multi-story' no longer counts, and the
    # outer ring needs a zip too
    w.conn.execute(
        "DELETE FROM trait_group_traits WHERE trait_group_id = %s AND trait_id = %s",
        (s.g_props, s.story),
    )
    w.conn.execute("INSERT INTO target_band_trait_groups VALUES (%s, %s)", (s.outer, s.g_zip))
    await _trigger(s.target)
    await drain()
    offers = sync_conn.execute(
        "SELECT me_file_id, target_band_id, offer_amt::text FROM offers ORDER BY me_file_id"
    ).fetchall()
    assert offers == [(moving, s.middle, "2.00"), (staying, s.middle, "2.00")]
    assert_all_invariants(sync_conn)


# 4. The application never waits for a job, and never deadlocks with one -------------------


async def _application_work(order: list[int], me_file: int, offer_id: int) -> float:
    """What an application transaction does, timed: re-populate targets in the given order,
    record a tag change and an ad event."""
    started = time.monotonic()
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        await conn.execute("SET lock_timeout = '5s'")
        for target_id in order:
            await api.trigger_population(conn, target_id)
        await conn.execute(
            "UPDATE me_file_tags SET tag_value = 'x' WHERE me_file_id = %s", (me_file,)
        )
        await api.notify_tags_changed(conn, me_file)
        await record_ad_event(conn, offer_id)
        await conn.commit()
    return time.monotonic() - started


@pytest.mark.parametrize("job_held", ["populate", "sync"])
async def test_the_application_never_waits_for_a_running_job(app, sync_conn, job_held):
    s = _market(sync_conn)
    w = s.w
    other = w.target("another")
    w.band(other, [s.g_sex])
    member = w.me_file([s.female, s.z10028])
    mover = w.me_file([s.female])
    for target in (s.target, other):
        await _trigger(target)
    await drain()
    offer_id = w.one("SELECT id FROM offers WHERE me_file_id = %s", (member,))
    if job_held == "populate":
        # a MeFile only the populate will insert (its own sync is not this test's)
        newcomer = w.me_file([s.female])
        w.conn.execute("DELETE FROM qlarius_pending_syncs")
        blocked_row = (s.outer, newcomer)
    else:
        blocked_row = (s.middle, mover)  # the sync below moves it there
    # Stop the job mid-way, holding what it holds: the population row it must insert is being
    # inserted, uncommitted, by another transaction (the one wait the jobs keep: a row they
    # hold, or skip, is never waited for).
    holder = psycopg.connect(TEST_DB.conninfo)
    holder.execute(
        "INSERT INTO target_populations (target_band_id, me_file_id) VALUES (%s, %s)", blocked_row
    )
    try:
        async with running_workers({"targets"}):
            if job_held == "populate":
                async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
                    await defer_job(conn, "populate_target", target_id=s.target)
                    await conn.commit()
            else:
                w.tag(mover, [s.z10028])  # its sync must move it: delete the outer row
            await wait_until_blocked("target_populations")
            # both orders of two targets: nothing a job holds is in the way
            elapsed = [
                await asyncio.wait_for(_application_work(order, member, offer_id), 10)
                for order in ([s.target, other], [other, s.target])
            ]
            assert max(elapsed) < 2, elapsed
            holder.rollback()
    finally:
        holder.close()
    await drain()
    assert_all_invariants(sync_conn)


# 5. A first populate, deferred by hand, races no sync --------------------------------------


async def test_a_first_populate_deferred_by_hand_misses_no_concurrent_change(app, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    changing = w.me_file([s.female, s.z10028])
    blocked_on = w.me_file([s.female])
    await drain()  # the tags' own syncs: the target is not populated, nothing to do
    assert w.one("SELECT population_status FROM targets WHERE id = %s", (s.target,)) == (
        "not_populated"
    )
    holder = psycopg.connect(TEST_DB.conninfo)
    holder.execute(
        "INSERT INTO target_populations (target_band_id, me_file_id) VALUES (%s, %s)",
        (s.outer, blocked_on),
    )
    try:
        async with running_workers({"targets"}):
            async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
                # as `procrastinate defer populate_target` would: the status stays not_populated
                await defer_job(conn, "populate_target", target_id=s.target)
                await conn.commit()
            await wait_until_blocked("target_populations")
            w.tag(changing, [s.heat])  # after the populate read the tags
            await drain_syncs_now()
            # the sync saw the target busy and left this change for it, instead of skipping it
            assert _pending(sync_conn, "qlarius_pending_syncs", changing, s.target) == 1
            holder.rollback()
            await wait_until(
                lambda: jobs(sync_conn, "populate_target")[0]["status"] == "succeeded",
                20,
                "the populate",
            )
    finally:
        holder.close()
    await drain()
    assert w.populations() == {changing: s.bullseye, blocked_on: s.outer}
    assert_all_invariants(sync_conn)


# 6. "In the caller's transaction" always ------------------------------------------------------


async def test_enqueue_functions_never_commit_for_the_caller(app, sync_conn):
    s = _market(sync_conn)
    me_file = s.w.me_file([s.female])
    # (what building the market itself recorded or deferred is not this test's)
    sync_conn.execute("DELETE FROM qlarius_pending_syncs")
    sync_conn.execute("DELETE FROM procrastinate_jobs")
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:  # not autocommit
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        await api.notify_tags_changed(conn, me_file)
        await api.trigger_population(conn, s.target)
        await api.offer_campaign(conn, s.campaign)
        await conn.rollback()
    assert jobs(sync_conn) == []
    assert sync_conn.execute("SELECT count(*) FROM qlarius_pending_syncs").fetchone()[0] == 0
    assert s.w.one("SELECT population_status FROM targets") == "not_populated"
    # an autocommit connection has no caller's transaction: each call is its own, committed
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo, autocommit=True) as conn:
        await api.trigger_population(conn, s.target)
    assert s.w.one("SELECT population_status FROM targets") == "populating"
    assert [j["task_name"] for j in jobs(sync_conn)] == ["populate_target"]


# 7. A malformed deferral never takes a valid job's place ------------------------------------


def _cli_defer(task: str, args: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "procrastinate"), "--app=qlarius_jobs.app.app", "defer", task, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_malformed_deferral_never_takes_a_valid_jobs_place(app, sync_conn):
    s = _market(sync_conn)
    me_file = s.w.me_file([s.female])
    _cli_defer("sync_me_file_to_target_populations", {"me_file_id": str(me_file)})
    _cli_defer("backfill_missing_snapshots", {"timestamp": "yesterday"})
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
        await api.notify_tags_changed(conn, me_file)  # not refused
        assert await defer_job(conn, "backfill_missing_snapshots") is not None  # not refused
        await conn.commit()
    assert {j["queueing_lock"] for j in jobs(sync_conn) if j["args"].get("timestamp")} <= {None}


# 8. No refusal is an error ----------------------------------------------------------------


async def test_refusals_write_no_error_to_the_server_log(app, sync_conn):
    s = _market(sync_conn)
    me_file = s.w.me_file([s.female])
    log = server_log()
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo, autocommit=True) as conn:
        for _ in range(50):  # a change recorded while another is pending: 50 times
            await api.notify_tags_changed(conn, me_file)
        first = await defer_job(conn, "backfill_missing_snapshots")
        assert first is not None and await defer_job(conn, "backfill_missing_snapshots") is None
        assert await drains.ensure_waiting_job(conn, drains.SYNC) is not None
        assert await drains.ensure_waiting_job(conn, drains.SYNC) is None
    assert [line for line in log.new_lines() if "ERROR" in line] == []
    assert sync_conn.execute("SELECT count(*) FROM qlarius_pending_syncs").fetchone()[0] >= 50


# Found by review: each a forced interleaving ------------------------------------------------


LEASE_SECONDS = 4  # the dying drainer's lease


async def test_a_drainer_that_dies_holding_its_lease_loses_it_within_seconds(
    app, sync_conn, monkeypatch
):
    """A time limit (or a dead host) that lands just after the lease was granted, before the
    code learned it: no session holds anything, the row lapses on its own and the next drain
    takes over; meanwhile the wake-ups defer no job (the lease looks live)."""
    s = _market(sync_conn)
    me_file = s.w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    granted = drains.Lease.acquire

    async def acquire(lease, conn):
        assert await granted(lease, conn)  # committed on the server, then cancelled
        raise asyncio.CancelledError

    monkeypatch.setattr(drains.Lease, "acquire", acquire)
    async with app.connector.pool.connection() as conn:
        with pytest.raises(asyncio.CancelledError):
            await drains.drain(
                conn,
                drains.SYNC,
                apply_pending_syncs,
                batch_size=10,
                budget_seconds=5,
                # long enough that the steps up to the first check below fit in it on a slow
                # runner (a review: at 2 s, a stalled one could see it lapsed already)
                lease_seconds=LEASE_SECONDS,
            )
    monkeypatch.undo()
    [lease] = sync_conn.execute("SELECT kind FROM qlarius_drain_leases").fetchall()
    assert lease == ("sync",)
    s.w.tag(me_file, [s.z10028])
    assert await _ensure_sync_job_or_none() is None  # a live lease: its holder rechecks
    await asyncio.sleep(LEASE_SECONDS + 0.2)
    assert await _ensure_sync_job_or_none() is not None  # lapsed: a job is deferred
    report = await drain_syncs_now()
    assert report.drainer and report.me_files == 1
    assert s.w.populations() == {me_file: s.middle}


async def test_the_drainer_lease_ignores_other_databases_and_sessions(app, sync_conn):
    """Exclusivity lives in this database's rows: an advisory lock anywhere (the old drainer
    lock's keys, held by a session of another database or of this one) blocks nothing."""
    with (
        psycopg.connect(
            pg_conninfo.make_conninfo(TEST_DB.conninfo, dbname="postgres"), autocommit=True
        ) as other_db,
        psycopg.connect(TEST_DB.conninfo, autocommit=True) as here,
    ):
        other_db.execute("SELECT pg_advisory_lock(7361201, 1)")
        here.execute("SELECT pg_advisory_lock(7361201, 2)")
        s = _market(sync_conn)
        me_file = s.w.me_file([s.female])
        await _trigger(s.target)
        assert await _ensure_sync_job_or_none() is not None
        await drain()
        assert s.w.populations() == {me_file: s.outer}


async def _ensure_sync_job_or_none() -> int | None:
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo, autocommit=True) as conn:
        return await drains.ensure_waiting_job(conn, drains.SYNC)


async def test_a_retry_racing_a_new_deferral_never_sticks_in_doing(app, sync_conn):
    """The retry of a drain job while a fresh one is being inserted (not yet committed)."""
    first = await _ensure_sync_job()
    sync_conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (first,))
    inserting = psycopg.connect(TEST_DB.conninfo)
    try:
        second = inserting.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "VALUES ('targets', 'sync_pending_me_files', '{}') RETURNING id"
        ).fetchone()[0]  # uncommitted, invisible to any check the retry could make
        retry = asyncio.create_task(
            asyncio.to_thread(
                lambda: psycopg.connect(TEST_DB.conninfo, autocommit=True).execute(
                    "SELECT procrastinate_retry_job_v2(%s, now() + interval '10 s', NULL, NULL, "
                    "NULL)",
                    (first,),
                )
            )
        )
        await asyncio.sleep(0.5)
        inserting.commit()
        await asyncio.wait_for(retry, 10)
    finally:
        inserting.close()
    states = {j["id"]: (j["status"], j["queueing_lock"]) for j in jobs(sync_conn)}
    assert states == {first: ("todo", None), second: ("todo", "sync_pending_me_files")}


async def _ensure_sync_job() -> int:
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo, autocommit=True) as conn:
        job = await drains.ensure_waiting_job(conn, drains.SYNC)
    assert job is not None
    return job


@pytest.mark.parametrize("ending", ["time_limit", "rescued_on_last_attempt", "cancelled"])
async def test_a_populate_ending_without_success_restores_the_status(
    app, sync_conn, settings, ending
):
    s = _market(sync_conn)
    s.w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    await _trigger(s.target)  # re-populate: 'populating', to go back to 'populated'
    [job] = [j for j in jobs(sync_conn, "populate_target") if j["status"] == "todo"]
    if ending == "time_limit":
        settings.set(task_timeouts={"populate_target": 0.2})
        with TargetRowHolder(sync_conn, s.target):  # each attempt waits, then times out
            await drain(queues={"targets"})
        assert jobs(sync_conn, "populate_target")[-1]["status"] == "failed"
    elif ending == "rescued_on_last_attempt":
        # what the Lifeline does for a killed worker's job on its last attempt
        sync_conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job["id"],)
        )
        sync_conn.execute("SELECT procrastinate_finish_job_v1(%s, 'failed', false)", (job["id"],))
    else:
        sync_conn.execute("SELECT procrastinate_cancel_job_v1(%s, false, false)", (job["id"],))
    status = s.w.one("SELECT population_status FROM targets WHERE id = %s", (s.target,))
    assert status == "populated"


async def test_offers_job_never_makes_the_application_wait(app, sync_conn):
    s = _market(sync_conn)
    w = s.w
    kept, refreshed, withdrawn = (w.me_file([s.female]) for _ in range(3))
    blocked_on = w.me_file([s.female, s.z10001])
    await _trigger(s.target)
    await drain()
    offer = dict(sync_conn.execute("SELECT me_file_id, id FROM offers"))
    # a stale offer snapshot to refresh, and an offer to withdraw (its bid band changed)
    sync_conn.execute(
        "UPDATE offers SET matching_tags_snapshot = '{\"tags\": 1}' WHERE id = %s",
        (offer[refreshed],),
    )
    sync_conn.execute(
        "UPDATE offers SET target_band_id = %s WHERE id = %s", (s.middle, offer[withdrawn])
    )
    sync_conn.execute("DELETE FROM offers WHERE me_file_id = %s", (blocked_on,))
    sync_conn.execute("DELETE FROM procrastinate_jobs")
    holder = psycopg.connect(TEST_DB.conninfo)
    holder.execute(
        "INSERT INTO offers (campaign_id, me_file_id, media_run_id, target_band_id, offer_amt, "
        "marketer_cost_amt) VALUES (%s, %s, %s, %s, 1, 2)",
        (s.campaign, blocked_on, s.run, s.middle),
    )
    try:
        async with running_workers({"default"}):
            async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
                await api.offer_campaign(conn, s.campaign)
                await conn.commit()
            await wait_until_blocked("INSERT INTO offers")  # holding what it deleted/refreshed
            async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
                started = time.monotonic()
                await asyncio.wait_for(record_ad_event(conn, offer[kept]), 5)
                await asyncio.wait_for(record_ad_event(conn, offer[refreshed]), 5)
                with pytest.raises(LookupError, match="being withdrawn"):
                    await asyncio.wait_for(record_ad_event(conn, offer[withdrawn]), 5)
                await conn.commit()
                assert time.monotonic() - started < 1
            holder.rollback()
            await wait_until(
                lambda: (
                    jobs(sync_conn, "create_initial_pending_offers")[0]["status"] == "succeeded"
                ),
                20,
                "the offers job",
            )
    finally:
        holder.close()
    await drain()
    assert_all_invariants(sync_conn)


async def test_deleting_a_target_during_its_populate_does_not_deadlock(app, sync_conn):
    s = _market(sync_conn)
    w = s.w
    mover = w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    sync_conn.execute("DELETE FROM campaigns")  # (a target with campaigns cannot be deleted)
    newcomer = w.me_file([s.female])
    sync_conn.execute("DELETE FROM qlarius_pending_syncs")  # the populate inserts it
    log = server_log()
    # the populate stops on the population row it must insert, being inserted elsewhere
    holder = psycopg.connect(TEST_DB.conninfo)
    holder.execute(
        "INSERT INTO target_populations (target_band_id, me_file_id) VALUES (%s, %s)",
        (s.outer, newcomer),
    )
    try:
        async with running_workers({"targets"}):
            w.conn.execute(
                "UPDATE me_file_tags SET tag_value = 'y' WHERE me_file_id = %s", (mover,)
            )
            async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as conn:
                await defer_job(conn, "populate_target", target_id=s.target)
                await conn.commit()
            await wait_until_blocked("target_populations")
            deleting = await psycopg.AsyncConnection.connect(TEST_DB.conninfo)
            delete = asyncio.create_task(
                deleting.execute("DELETE FROM targets WHERE id = %s", (s.target,))
            )
            await asyncio.sleep(0.5)  # the delete waits for the populate's rows...
            holder.rollback()  # ... and the populate goes on to its targets row
            await asyncio.wait_for(delete, 15)  # no deadlock: the populate gave way
            await deleting.commit()
            await deleting.close()
            await wait_until(
                lambda: jobs(sync_conn, "populate_target")[-1]["status"] == "succeeded",
                40,
                "the populate's retry to find the target gone",
            )
    finally:
        holder.close()
    assert [line for line in log.new_lines() if "deadlock detected" in line] == []
    assert w.count("SELECT count(*) FROM targets") == 0


async def test_an_application_recording_an_ad_event_never_holds_up_syncs(app, sync_conn):
    """A legacy offer and population without snapshot: the application computes the event's
    snapshot, writes none of the population's, so a sync of that MeFile goes on meanwhile."""
    s = _market(sync_conn)
    w = s.w
    person = w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    sync_conn.execute("UPDATE target_populations SET matching_tags_snapshot = NULL")
    sync_conn.execute("UPDATE offers SET matching_tags_snapshot = NULL")
    sync_conn.execute("DELETE FROM qlarius_pending_reconciles")
    offer_id = w.one("SELECT id FROM offers")
    async with await psycopg.AsyncConnection.connect(TEST_DB.conninfo) as application:
        await record_ad_event(application, offer_id)  # transaction left open
        w.tag(person, [s.z10001])
        report = await asyncio.wait_for(drain_syncs_now(), 5)
        assert report.me_files == 1
        await application.commit()
    await drain()
    assert_all_invariants(sync_conn)


async def test_a_population_being_written_elsewhere_delays_its_offer_not_loses_it(app, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    person = w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    sync_conn.execute("UPDATE target_populations SET matching_tags_snapshot = NULL")
    campaign = w.campaign(s.target, {s.outer: ("1.00", "2.00")})
    holder = psycopg.connect(TEST_DB.conninfo)  # a writer that will roll back
    holder.execute("SELECT 1 FROM target_populations WHERE me_file_id = %s FOR UPDATE", (person,))
    try:
        await drain(queues={"default"})  # the campaign's offers job (deferred by its bids)
        assert w.count("SELECT count(*) FROM offers") == 0
        assert _pending(sync_conn, "qlarius_pending_reconciles", person) == 1  # left for later
    finally:
        holder.rollback()
        holder.close()
    sync_conn.execute("UPDATE qlarius_pending_reconciles SET retry_after = NULL")
    await drain()
    assert w.one("SELECT campaign_id FROM offers WHERE me_file_id = %s", (person,)) == campaign
    assert_all_invariants(sync_conn)


async def test_offers_follow_bids_media_runs_launches_and_reactivation(app, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    inner = w.me_file([s.female, s.z10028, s.heat])
    outer = w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    campaign = w.campaign(s.target, {s.outer: ("1.00", "2.00")}, media_runs=0)
    await drain()
    assert w.count("SELECT count(*) FROM offers") == 0  # no media run: nothing to offer on
    w.conn.execute("INSERT INTO media_runs (campaign_id) VALUES (%s)", (campaign,))
    await drain()
    assert dict(sync_conn.execute("SELECT me_file_id, target_band_id FROM offers")) == {
        outer: s.outer
    }
    w.conn.execute(
        "INSERT INTO bids (campaign_id, target_band_id, offer_amt, marketer_cost_amt) "
        "VALUES (%s, %s, 5, 6)",
        (campaign, s.bullseye),
    )
    w.conn.execute(
        "DELETE FROM bids WHERE campaign_id = %s AND target_band_id = %s", (campaign, s.outer)
    )
    await drain()
    assert dict(sync_conn.execute("SELECT me_file_id, target_band_id FROM offers")) == {
        inner: s.bullseye
    }
    w.conn.execute("UPDATE campaigns SET deactivated_at = now() WHERE id = %s", (campaign,))
    w.conn.execute("DELETE FROM offers")
    w.conn.execute("UPDATE campaigns SET deactivated_at = NULL WHERE id = %s", (campaign,))
    await drain()
    assert w.count("SELECT count(*) FROM offers") == 1
    # launched a little in the future: its offers come at launch time, unasked
    later = w.campaign(s.target, {s.outer: ("1.00", "2.00")}, launched=False)
    w.conn.execute(
        "UPDATE campaigns SET launched_at = now() + interval '1 second' WHERE id = %s", (later,)
    )
    await drain()
    assert w.count("SELECT count(*) FROM offers WHERE campaign_id = %s", (later,)) == 0
    await asyncio.sleep(1.2)
    await drain()
    assert w.count("SELECT count(*) FROM offers WHERE campaign_id = %s", (later,)) == 1
    assert_all_invariants(sync_conn)


async def test_the_sweep_ignores_work_that_waits_for_a_busy_target(app, sync_conn):
    s = _market(sync_conn)
    person = s.w.me_file([s.female])
    sync_conn.execute("DELETE FROM qlarius_pending_syncs")
    sync_conn.execute(
        "INSERT INTO qlarius_pending_syncs (me_file_id, target_id) VALUES (%s, %s)",
        (person, s.target),
    )
    wakeups = Wakeups(app.connector.pool, lambda: TEST_DB.conninfo, listen=False, sweep_seconds=1)
    with TargetRowHolder(sync_conn, s.target):
        assert "sync" not in await wakeups._sweep()
    assert "sync" in await wakeups._sweep()


async def test_a_bid_removed_while_its_target_is_repopulated_takes_its_offers_away(app, sync_conn):
    """Found by the storm: the campaign's re-offer waited for the re-populate to end (3 min),
    as if the target had never been populated."""
    s = _market(sync_conn)
    w = s.w
    outer = w.me_file([s.female])
    await _trigger(s.target)
    await drain()
    assert w.count("SELECT count(*) FROM offers WHERE me_file_id = %s", (outer,)) == 1
    with TargetRowHolder(sync_conn, s.target):  # a re-populate waiting to run
        await _trigger(s.target)
        w.conn.execute(
            "DELETE FROM bids WHERE campaign_id = %s AND target_band_id = %s",
            (s.campaign, s.outer),
        )
        await drain(queues={"default", "offers"})
        assert w.count("SELECT count(*) FROM offers WHERE me_file_id = %s", (outer,)) == 0
    await drain()
    assert_all_invariants(sync_conn)
