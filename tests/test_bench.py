"""`make bench` once, at a tiny scale: every benchmark runs and reports sane figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qlarius_jobs.bench import Result, format_results, old_way_snapshot

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
        "no-op jobs, concurrency 10",
        "deferral: batch_defer",
    ):
        assert expected in names
    for r in data["results"]:
        assert r["ours_count"] > 0 and r["ours_rate"] > 0, r
        if r["baseline"]:
            assert r["baseline_rate"] > 0 and r["ratio"] > 0, r
    assert "ratio" in run.stdout and "baseline" in run.stdout
    [storm] = [r for r in data["results"] if r["benchmark"].startswith("storm")]
    assert storm["latency"] and storm["clean"], run.stdout[-3000:]
    assert "storm: OK" in run.stdout


def test_ratio_and_verdict():
    r = Result(
        size=1,
        populations=2,
        benchmark="b",
        unit="rows",
        ours_count=100,
        ours_seconds=1.0,
        baseline="floor",
        baseline_count=300,
        baseline_seconds=1.0,
        target=">= 0.25x",
        target_ratio=0.25,
    )
    assert r.ratio == pytest.approx(1 / 3) and r.passed is True
    r.target_ratio = 0.5
    assert r.passed is False
    assert "0.33x" in format_results([r])


def test_old_way_snapshot_orders_like_the_sql():
    rows = [
        {
            "parent_id": 9,
            "parent_name": "B",
            "parent_order": 2,
            "child_id": 12,
            "value": "y",
            "child_order": 1,
        },
        {
            "parent_id": 5,
            "parent_name": "A",
            "parent_order": 2,
            "child_id": 8,
            "value": "x",
            "child_order": 3,
        },
        {
            "parent_id": 5,
            "parent_name": "A",
            "parent_order": 2,
            "child_id": 7,
            "value": "w",
            "child_order": 3,
        },
    ]
    assert old_way_snapshot(rows) == {
        "tags": [[5, "A", 2, [[7, "w", 3], [8, "x", 3]]], [9, "B", 2, [[12, "y", 1]]]]
    }
