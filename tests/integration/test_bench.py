"""`make bench` once, at a tiny scale: every benchmark runs and reports sane figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_bench_runs_at_a_tiny_scale(tmp_path):
    output = tmp_path / "bench.json"
    run = subprocess.run(
        [
            str(BIN / "qlarius-jobs"),
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
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(output.read_text())
    assert data["machine"]["cpus"] >= 1 and data["machine"]["postgresql"]
    names = [r["benchmark"] for r in data["results"]]
    for expected in (
        "backfill NULL snapshots, 1 worker process",
        "backfill NULL snapshots, 2 worker processes",
        "chunked backfill, 2 worker processes",
        "populate_target (all targets)",
        "sync, backlog of 40 changed MeFiles, 1 worker process",
        "sync, backlog of 100 changed MeFiles, 1 worker process",
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
    [storm] = [r for r in data["results"] if r["benchmark"].startswith("storm")]
    assert storm["latency"] and storm["clean"], run.stdout[-3000:]
    assert "storm: OK" in run.stdout
