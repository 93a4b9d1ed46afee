"""qlarius_jobs.testing, as the README shows it to the application's developers."""

from __future__ import annotations

import pytest

from qlarius_jobs import api, testing
from qlarius_jobs.jobs.arguments import InvalidJobArguments
from tests.integration.factories import standard_world
from tests.integration.support import jobs


async def test_the_readme_example_holds(app, conn, sync_conn):
    s = standard_world(sync_conn)
    w = s.w
    me_file = w.me_file([s.female, s.z10028])
    campaign = w.campaign(s.target, {s.middle: ("1.50", "2.00")})
    await api.trigger_population(conn, s.target)
    await testing.assert_enqueued(conn, "populate_target")  # any arguments
    await testing.refute_enqueued(conn, "populate_target", target_id=s.target + 1)
    outcomes = await testing.drain(app, ["targets", "offers"])
    assert outcomes["failed"] == 0 and outcomes["succeeded"] >= 1
    await api.offer_campaign(conn, campaign)
    job = await testing.assert_enqueued(conn, "create_initial_pending_offers", campaign_id=campaign)
    assert job["queue"] == "default"
    assert len(await testing.all_enqueued(conn)) == 1
    outcomes = await testing.drain(app, ["default", "offers"])
    assert outcomes["succeeded"] >= 1 and outcomes["failed"] == outcomes["aborted"] == 0
    assert await testing.all_enqueued(conn, "create_initial_pending_offers") == []
    assert w.populations(s.target) == {me_file: s.middle}
    offers = sync_conn.execute(
        "SELECT me_file_id FROM offers WHERE campaign_id = %s", (campaign,)
    ).fetchall()
    assert offers == [(me_file,)]
    before = len(jobs(sync_conn))
    summary = await testing.perform_job(app, "reconcile_offers_for_me_file", me_file_id=me_file)
    assert summary["me_file_id"] == me_file
    assert len(jobs(sync_conn)) == before  # performed in-process: no job row


async def test_the_helpers_fail_with_what_they_found(app, conn):
    await api.offer_campaign(conn, 5)
    with pytest.raises(
        AssertionError,
        match=r"waiting create_initial_pending_offers jobs: \[\{'campaign_id': 5\}\]",
    ):
        await testing.assert_enqueued(conn, "create_initial_pending_offers", campaign_id=6)
    with pytest.raises(AssertionError, match=r"found job\(s\) #1 \{'campaign_id': 5\}"):
        await testing.refute_enqueued(conn, "create_initial_pending_offers")
    with pytest.raises(InvalidJobArguments, match="no such task: populate"):
        await testing.assert_enqueued(conn, "populate", target_id=1)
    with pytest.raises(InvalidJobArguments, match="target_id: Input should be greater than 0"):
        await testing.perform_job(app, "populate_target", target_id=0)


async def test_drain_runs_the_app_it_is_given_on_that_apps_queues(conn, sync_conn):
    from qlarius_jobs.app import build_app
    from qlarius_jobs.jobs import populations

    only_populations = build_app([populations.blueprint])
    sync_conn.execute("INSERT INTO targets (id, title) VALUES (1, 't')")
    await api.trigger_population(conn, 1)
    await api.offer_campaign(conn, 5)  # a job of the default queue: not this app's
    async with only_populations.open_async():
        outcomes = await testing.drain(only_populations)
    assert outcomes["succeeded"] >= 1 and outcomes["failed"] == 0
    await testing.refute_enqueued(conn, "populate_target")
    await testing.assert_enqueued(conn, "create_initial_pending_offers", campaign_id=5)
