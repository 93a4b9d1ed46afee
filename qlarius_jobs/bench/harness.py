"""``qlarius-jobs bench`` (``make bench``): this project's speed, side by side with baselines
measured in the same run, on the same rows, in a database of its own (``<db>_bench``).

For each size (MeFiles; populations are about twice that):

1. backfill of NULL snapshots (populations, offers, ad events) through the real job (one
   worker process one job at a time, one as shipped, two as shipped), against the floor (one
   plain UPDATE per table writing a constant snapshot of median size), the same work with no
   job and the row-by-row way (one query to read the tags and one update per row, a sample);
2. ``populate_target`` for every target through the worker, against the floor (one
   INSERT ... SELECT of the same pairs with a constant snapshot) and row by row (a sample);
3. offers right after a full populate: from the populate's commit until no reconcile is
   pending (and the offers match the reference);
4. ``sync_me_file_to_target_populations``: syncs per second over many MeFiles and targets,
   with nothing else pending;
5. the job runner, as whole processes: a burn-down of no-op jobs drained by ``qlarius-jobs
   worker`` processes against ``procrastinate worker`` processes on a bare app (same
   database, queue shape, concurrency, pool), and deferral by batch against one job at a
   time (``runner.py``);
6. the chunked backfill: one worker process as shipped (its chunk jobs side by side)
   against the same process running one job at a time.

Figures are ratios to baselines from the same run, since these machines are noisy. One module
per benchmark (``backfill``, ``populate``, ``offers_after_populate``, ``sync``, ``runner``,
``storm``); this one drives them. The benchmarks live outside the job runtime: nothing in it
imports them.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import tqdm
from psycopg import conninfo as pg_conninfo

from qlarius_jobs.app import build_app, door_database
from qlarius_jobs.bench.backfill import bench_backfill
from qlarius_jobs.bench.base import BENCHMARKS, SQL, BenchConfig, Result, seed_sizes
from qlarius_jobs.bench.console import bench_console
from qlarius_jobs.bench.offers_after_populate import bench_offers_after_populate
from qlarius_jobs.bench.populate import bench_populate
from qlarius_jobs.bench.runner import bench_runner
from qlarius_jobs.bench.storm import bench_storm
from qlarius_jobs.bench.sync import bench_sync
from qlarius_jobs.db import migrate
from qlarius_jobs.dev import seed
from qlarius_jobs.logs import get_logger
from qlarius_jobs.ops import controls
from qlarius_jobs.settings import get_settings

log = get_logger(__name__)


def bench_conninfo() -> str:
    base = door_database()
    name = pg_conninfo.conninfo_to_dict(base).get("dbname", "qlarius_jobs")
    return pg_conninfo.make_conninfo(base, dbname=f"{name}_bench")


def point_app_at(conninfo: str) -> None:
    # the settings (and the worker processes the benchmarks start) name the bench database
    os.environ["QLARIUS_DATABASE_URL"] = conninfo
    get_settings.cache_clear()


def run(cfg: BenchConfig) -> list[Result]:
    conninfo = bench_conninfo()
    point_app_at(conninfo)

    per_size = [b for b in ("backfill", "populate", "sync", "runner") if cfg.runs(b)]
    progress = BenchProgress(  # populate's row is followed by the offers after it
        steps=(1 + len(per_size) + cfg.runs("populate")) * len(cfg.sizes)
        + (1 if cfg.runs("storm") else 0)
        + (1 if cfg.runs("console") else 0)
    )
    for size in cfg.sizes if per_size else []:
        seed.recreate_database(conninfo)
        migrate.migrate(conninfo)
        with psycopg.connect(conninfo, autocommit=True) as conn:  # no periodic job measured
            controls.apply_schedules(conn, dict.fromkeys(controls.schedule_names()), "bench")
        progress.step(f"{size:,} MeFiles: data set")
        counts = seed.seed(conninfo, seed_sizes(size, cfg.targets, cfg.null_share))
        pops = int(counts["populations"])

        async def measure(size: int = size, pops: int = pops) -> None:
            # it runs workers in this process (populate, sync): a worker process's app
            app = build_app(database=lambda: conninfo, worker_process=True)
            async with app.open_async():
                if cfg.runs("backfill"):
                    progress.step(f"{size:,} MeFiles: backfill")
                    await bench_backfill(conninfo, cfg, size, pops)
                if cfg.runs("populate"):
                    progress.step(f"{size:,} MeFiles: populate")
                    await bench_populate(app, conninfo, cfg, size, pops)
                    progress.step(f"{size:,} MeFiles: offers after a populate")
                    await bench_offers_after_populate(app, conninfo, cfg, size, pops)
                if cfg.runs("sync"):
                    progress.step(f"{size:,} MeFiles: sync")
                    await bench_sync(app, conninfo, cfg, size, pops)
            if cfg.runs("runner"):
                # The runner benchmark opens apps of its own: fresh pools, as the bare app gets.
                progress.step(f"{size:,} MeFiles: job runner")
                await bench_runner(conninfo, cfg, size, pops)

        asyncio.run(measure())
    if cfg.runs("console"):
        progress.step(f"console, {cfg.console_jobs:,} jobs")
        bench_console(conninfo, cfg)
    if cfg.runs("storm"):
        progress.step("storm")
        asyncio.run(bench_storm(conninfo, cfg))
    progress.close()
    return cfg.results


class BenchProgress:
    """Which benchmark runs now: a progress bar on a terminal, an event per step otherwise."""

    def __init__(self, steps: int) -> None:
        self.steps, self.done = steps, 0
        self.started = time.monotonic()
        self.bar = (
            tqdm.tqdm(total=steps, desc="bench", unit="step", file=sys.stderr)
            if sys.stderr.isatty()
            else None
        )

    def step(self, what: str) -> None:
        if self.bar is not None:
            self.bar.update(1 if self.done else 0)
            self.bar.set_postfix_str(what)
        else:
            log.info(
                "bench progress",
                step=self.done + 1,
                steps=self.steps,
                running=what,
                elapsed_ms=int((time.monotonic() - self.started) * 1000),
            )
        self.done += 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.close()


def machine(conninfo: str) -> dict[str, Any]:
    cpu = ""
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with psycopg.connect(conninfo) as conn:
        row = SQL.one_sync(conn, "bench_server_version")
        version = row["version"] if row else "?"
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "postgresql": version,
        "platform": platform.platform(),
    }


def format_results(results: Sequence[Result]) -> str:
    header = (
        "size",
        "benchmark",
        "ours/s",
        "baseline",
        "baseline/s",
        "ratio",
        "target",
        "ok",
        "us/unit",
    )
    rows = [header]
    for r in results:
        rows.append(
            (
                f"{r.size:,} jobs"
                if r.benchmark.startswith(("job table", "console"))
                else f"{r.size:,} MeFiles / {r.populations:,} pops",
                r.benchmark,
                f"<= {r.ours_count:,} ms" if r.latency else f"{r.ours_rate:,.0f} {r.unit}",
                r.baseline or "-",
                f"{r.baseline_rate:,.0f}" if r.baseline else "-",
                f"{r.ratio:.2f}x" if r.ratio is not None else "-",
                r.target or "-",
                {True: "yes", False: "NO", None: "-"}[r.passed],
                f"{1e6 / r.ours_rate:.1f}" if r.ours_rate and not r.latency else "-",
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def results_json(results: Sequence[Result], conninfo: str) -> dict[str, Any]:
    return {"machine": machine(conninfo), "results": [r.as_dict() for r in results]}


def parse_sizes(spec: str) -> Iterator[int]:
    for part in spec.split(","):
        value = int(part.strip().replace("_", ""))
        if value < 50:
            raise ValueError("each size needs at least 50 MeFiles")
        yield value


def _only(spec: str) -> frozenset[str]:
    names = frozenset(p.strip() for p in spec.split(",") if p.strip()) or BENCHMARKS
    unknown = names - BENCHMARKS
    if unknown:
        raise ValueError(f"unknown benchmarks {sorted(unknown)}; known: {sorted(BENCHMARKS)}")
    return names


def main(
    sizes: str,
    output: Path,
    *,
    sample: int,
    noop_jobs: int,
    sync_backlogs: str,
    rounds: int,
    storm_seconds: float,
    storm_me_files: int,
    console_jobs: int = 1_000_000,
    only: str = "",
) -> int:
    cfg = BenchConfig(
        sizes=list(parse_sizes(sizes)),
        sample=sample,
        noop_jobs=noop_jobs,
        sync_backlogs=tuple(int(n.replace("_", "")) for n in sync_backlogs.split(",")),
        rounds=rounds,
        storm_seconds=storm_seconds,
        storm_me_files=storm_me_files,
        console_jobs=console_jobs,
        only=_only(only),
    )
    results = run(cfg)
    print(format_results(results))
    for line in [*cfg.notes, *cfg.storm_lines]:
        print(line)
    data = results_json(results, get_settings().database_url or "")
    data["notes"] = cfg.notes
    output.write_text(json.dumps(data, indent=2, default=str))
    print(
        f"\nmachine: {data['machine']['cpus']} cpus, {data['machine']['cpu']}, "
        f"PostgreSQL {data['machine']['postgresql']}; JSON written to {output}"
    )
    return 0
