"""`make bench` once, at a tiny scale: every benchmark runs and reports sane figures."""

from __future__ import annotations

import json

import pytest

from tests.integration.support import cli


@pytest.mark.slow
def test_bench_runs_at_a_tiny_scale(tmp_path):
    output = tmp_path / "bench.json"
    run = cli(
        "bench",
        "--sizes",
        "300",
        "--sample",
        "20",
        "--noop-jobs",
        "100",
        "--sync-backlogs",
        "40,100",
        "--storm-seconds",
        "6",
        "--storm-me-files",
        "300",
        "--rounds",
        "1",
        "--console-jobs",
        "3000",
        "--output",
        str(output),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(output.read_text())
    assert data["machine"]["cpus"] >= 1 and data["machine"]["postgresql"]
    names = [r["benchmark"] for r in data["results"]]
    for expected in (
        "backfill NULL snapshots, 1 worker process, one job at a time",
        "backfill NULL snapshots, 1 worker process as shipped (maintenance concurrency 3)",
        "backfill NULL snapshots, 2 worker processes as shipped",
        "chunked backfill, 1 worker process as shipped",
        "populate_target (all targets, until the last one commits)",
        "sync, backlog of 40 changed MeFiles, 1 worker process, nothing else pending",
        "sync, backlog of 100 changed MeFiles, 1 worker process, nothing else pending",
        "no-op jobs, 2 worker processes x concurrency 10, all processes working -> last "
        "job's end (median of 1)",
        "no-op jobs, 2 worker processes x concurrency 10, wall time from process start "
        "(median of 1)",
        "deferral: batch_defer",
        "console: overview, 3,000 jobs, p95 of 40 renders",
        "console: jobs page, 3,000 jobs, p95 of 40 renders",
    ):
        assert expected in names
    for r in data["results"]:
        assert r["ours_count"] > 0 and r["ours_rate"] > 0, r
        if r["baseline"]:
            assert r["baseline_rate"] > 0 and r["ratio"] > 0, r
    assert "ratio" in run.stdout and "baseline" in run.stdout
    console = [r for r in data["results"] if r["benchmark"].startswith("console")]
    assert len(console) == 3 and all(r["latency"] and r["passed"] for r in console), console
    [offers] = [r for r in data["results"] if r["benchmark"].startswith("offers right after")]
    assert offers["latency"] and offers["clean"], offers
    [storm] = [r for r in data["results"] if r["benchmark"].startswith("storm")]
    assert storm["latency"] and storm["clean"], run.stdout[-3000:]
    assert "storm: OK" in run.stdout


@pytest.mark.slow
def test_bench_jobs_runs_at_a_tiny_scale(tmp_path):
    """`make bench-jobs` once, on a table of 3,000 jobs: every row, sane figures."""
    output = tmp_path / "bench-jobs.json"
    run = cli(
        "bench-jobs",
        "--jobs",
        "3000",
        "--prune",
        "1000",
        "--noop-jobs",
        "100",
        "--rounds",
        "1",
        "--renders",
        "5",
        "--output",
        str(output),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(output.read_text())
    rows = {r["benchmark"].removeprefix("job table of 3,000: "): r for r in data["results"]}
    for name in (
        "no-op jobs fetched and run, concurrency 10",
        "overview, p95 of 5 renders",
        "jobs page, p95 of 5 renders",
        "failed jobs page, p95 of 5 renders",
        "/metrics, p95 of 5 renders",
        "no-op jobs during the prune",
        "overview p95 during the prune",
    ):
        assert name in rows, sorted(rows)
    assert all(r["ours_count"] > 0 and r["ours_rate"] > 0 for r in rows.values()), rows
    # the prune deleted the 1,000 oldest but another application's share (1 in 50)
    [prune] = [r for name, r in rows.items() if name.startswith("prune_finished_jobs")]
    assert prune["ours_count"] == 980, prune
    fetch = rows["no-op jobs fetched and run, concurrency 10"]
    assert fetch["baseline"] == "the same runner, empty job table" and fetch["ratio"] > 0
    assert "ratio" in run.stdout and "load average" in run.stdout
