"""`make bench-scale` once, at a tiny scale: every row of the cost curve is measured by real
worker processes, the growth is computed, the chart drawn, and a second run reuses the data set
the first one generated instead of generating it again."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import psycopg.sql
import pytest
from psycopg import conninfo as pg_conninfo

from qlarius_jobs.bench.harness import bench_conninfo
from tests.integration.support import cli


def _bench_scale(tmp_path: Path, sizes: str, name: str) -> tuple[dict, str]:
    output, chart = tmp_path / f"{name}.json", tmp_path / f"{name}.svg"
    run = cli(
        "bench-scale",
        "--sizes",
        sizes,
        "--sync-backlog",
        "60",
        "--output",
        str(output),
        "--chart",
        str(chart),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    svg = chart.read_text()
    assert svg.startswith("<?xml") and "<svg" in svg and "MeFiles" in svg
    return json.loads(output.read_text()), run.stdout


def _drop_scale_databases(sizes: list[int]) -> None:
    conninfo = bench_conninfo()
    base = pg_conninfo.conninfo_to_dict(conninfo)["dbname"]
    with psycopg.connect(
        pg_conninfo.make_conninfo(conninfo, dbname="postgres"), autocommit=True
    ) as c:
        for size in sizes:
            name = psycopg.sql.Identifier(f"{base}_scale_{size}")
            c.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


@pytest.mark.slow
def test_bench_scale_measures_each_size_and_keeps_its_data_set(tmp_path):
    _drop_scale_databases([300, 600])
    try:
        data, stdout = _bench_scale(tmp_path, "600,300", "first")
        sizes = data["sizes"]
        assert [s["me_files"] for s in sizes] == [300, 600]  # smallest first
        for size in sizes:
            assert not size["reused_data_set"] and size["generated_seconds"] > 0
            assert size["counts"]["me_files"] == size["me_files"]
            phases = {p["name"]: p for p in size["phases"]}
            assert set(phases) == {"backfill", "populate", "offers settled", "sync"}
            assert phases["backfill"]["count"] > 0  # the data set's NULL snapshots
            assert phases["populate"]["count"] == size["counts"]["populations"]
            assert 0 < phases["sync"]["count"] <= 60
            for p in phases.values():
                assert p["seconds"] > 0 and p["peak_rss_kib"] > 10_000, p  # a real process
            tables = {t["table_name"] for t in size["largest_tables"]}
            assert "me_file_tags" in tables and size["database_bytes"] > 0
        for name in ("populate", "backfill", "sync"):
            assert data["growth"][name] > 0
            assert f"per-unit cost of {name}, 600 vs 300 MeFiles" in stdout
        assert data["growth_target"] == 1.3
        assert "sync at 600 MeFiles: " in stdout and "(target >= 2,000/s: " in stdout
        assert "offers settled after the populates at 600 MeFiles: " in stdout

        again, _ = _bench_scale(tmp_path, "300", "second")
        [kept] = again["sizes"]
        assert kept["reused_data_set"]
        assert kept["generated_seconds"] == sizes[0]["generated_seconds"]
        assert {p["name"] for p in kept["phases"]} == {
            "backfill",
            "populate",
            "offers settled",
            "sync",
        }
        backfilled = {p["name"]: p["count"] for p in kept["phases"]}["backfill"]
        # the copy starts from the data set, not from the state the last run left
        assert backfilled == {p["name"]: p["count"] for p in sizes[0]["phases"]}["backfill"]
    finally:
        _drop_scale_databases([300, 600])
