"""A short storm (``make storm`` runs the long one): worker processes, concurrent application
transactions, a worker killed with SIGKILL midway; then every invariant, checked against the
independent reference."""

from __future__ import annotations

import psycopg
import pytest

from qlarius_jobs.dev import seed
from qlarius_jobs.dev.storm import StormConfig, apply_storm_schedules, run_storm
from tests.integration.support import TEST_DB, server_log


@pytest.mark.slow
@pytest.mark.parametrize("through", ["direct", "pgbouncer"])
async def test_a_short_storm_breaks_no_invariant(tmp_path, request, through):
    # 16 s: every kind of change at least once (each starts with one), and two re-populations
    # (the next one comes 8-15 s after the first)
    config = StormConfig(
        seconds=16, workers=2, me_files=600, targets=3, changers=3, pooler=through != "direct"
    )
    pooled = None
    if config.pooler:
        pooled = request.getfixturevalue("pgbouncer_for_tests").conninfo(TEST_DB.conninfo)
    seed.seed(
        TEST_DB.conninfo,
        seed.SeedSizes(me_files=config.me_files, targets=config.targets, campaigns_per_target=2),
    )
    with psycopg.connect(TEST_DB.conninfo, autocommit=True) as conn:
        apply_storm_schedules(conn)  # as `make storm` runs it: the rescue every 2 s
    log = server_log()
    report = await run_storm(
        TEST_DB.conninfo, config, log_dir=tmp_path, server_log=log.path, pooled_conninfo=pooled
    )
    print("\n".join(report.lines()))
    assert report.problems() == [], "\n".join(report.lines())
    assert report.killed_pid is not None
    assert report.counts["tag changes"] > 100 and report.counts["re-populations"] >= 2
    # every other input of the rules changed too, with no call from the application
    for kind in (
        "criteria edits",
        "traits renamed",
        "bid amounts",
        "campaigns deactivated or back",
        "campaigns moved",
        "MeFiles deleted",
    ):
        assert report.counts.get(kind, 0) >= 1, (kind, report.counts)
    assert report.deadlocks == 0
    # The lag is measured and printed; its target (p99 < 5 s) is a benchmark's, checked by the
    # storm row of `make bench` and by `make storm`, not by a timed assertion here: with two
    # workers and one of them killed, a short storm on a loaded machine has shown a p99 bucket of
    # 10 s once in many runs.
    assert report.sync_lag_p99_ms is not None
