"""docs/grafana-dashboard.json parses, and every metric its queries use is one that the
console's /metrics or a worker's /metrics exports (as the collectors build them, not a list
kept by hand), so the dashboard cannot drift from the metrics. No database."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.core import Metric

from qlarius_jobs.ops import metrics
from qlarius_jobs.worker.process_metrics import WorkerCollector

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def _sample_names(families: Iterator[Metric]) -> set[str]:
    names = set()
    for family in families:
        for suffix in SUFFIXES[family.type]:
            names.add(family.name + suffix)
    return names


def exported(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """What the console's /metrics (the database up, and not) and a worker's export."""
    monkeypatch.setattr(metrics, "read", lambda conninfo: metrics.Readings())
    return _sample_names(metrics.DatabaseCollector("").collect()) | _sample_names(
        WorkerCollector().collect()
    )


def _queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"], "a dashboard without panels"
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_the_dashboard_uses_only_metrics_that_are_exported(monkeypatch):
    names = exported(monkeypatch)
    assert {"qlarius_job_outcomes_total", "qlarius_job_duration_seconds_bucket"} <= names
    used = {m for expr in _queries() for m in re.findall(r"\bqlarius_[a-z0-9_]+", expr)}
    assert used, "no qlarius metric in the dashboard's queries"
    assert not used - names, f"the dashboard uses metrics nobody exports: {used - names}"


def test_the_dashboard_covers_what_operators_watch():
    text = " ".join(_queries())
    for needed in (
        "rate(qlarius_job_outcomes_total",  # throughput, failures
        "histogram_quantile(",
        "qlarius_oldest_waiting_job_seconds",
        "qlarius_pending_work",
        "qlarius_null_snapshots",
        "qlarius_backfill_rows_fixed",
        "qlarius_audit_drift",
    ):
        assert needed in text, needed
