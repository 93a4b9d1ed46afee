"""The benchmark report: ratios, verdicts, and the row-by-row baseline's own snapshot."""

from __future__ import annotations

import pytest

from qlarius_jobs.bench.backfill import old_way_snapshot
from qlarius_jobs.bench.base import Result
from qlarius_jobs.bench.harness import format_results


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


def test_only_names_the_benchmarks_that_run():
    from qlarius_jobs.bench.base import BENCHMARKS, BenchConfig
    from qlarius_jobs.bench.harness import _only

    assert _only("") == BENCHMARKS
    assert _only(" backfill, populate ") == {"backfill", "populate"}
    with pytest.raises(ValueError, match="unknown benchmarks"):
        _only("backfill,nope")
    cfg = BenchConfig(sizes=[50], only=_only("backfill,storm"), storm_seconds=0)
    assert cfg.runs("backfill") and not cfg.runs("populate")
    assert not cfg.runs("storm")  # named, but a storm of 0 s is none
