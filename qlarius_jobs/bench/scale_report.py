"""The cost curve's report: the table, the growth of each per-unit cost from the smallest
size to the largest against its target, the JSON, and the chart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from qlarius_jobs.bench.scale import SizeResult

GROWTH_TARGET = 1.3  # per-unit cost at the largest size over the smallest

GROWN = ("populate", "backfill", "sync")
SYNC_RATE_TARGET = 2000.0  # MeFiles a second, at the largest size
OFFERS_SETTLED_TARGET = 60.0  # seconds from the last populate's commit, at the largest size


def growth(results: Sequence[SizeResult], name: str) -> float | None:
    """Per-unit cost at the largest size over the smallest (1.0: flat)."""
    first, last = results[0].phase(name), results[-1].phase(name)
    if first is None or last is None or not first.us_per_unit:
        return None
    return last.us_per_unit / first.us_per_unit


def format_scale(results: Sequence[SizeResult]) -> str:
    lines = []
    header = ("MeFiles", "populations", "data set", "benchmark", "rate", "us/unit", "peak RSS")
    rows: list[tuple[str, ...]] = [header]
    for r in results:
        generated = f"{r.generated_seconds / 60:.1f} min" + (" (kept)" if r.reused_data_set else "")
        for p in r.phases:
            rate = f"{p.seconds:.1f} s" if p.unit == "s" else f"{p.rate:,.0f} {p.unit}/s"
            per = "-" if p.unit == "s" else f"{p.us_per_unit:.1f}"
            rows.append(
                (
                    f"{r.me_files:,}",
                    f"{r.counts.get('populations', 0):,}",
                    generated,
                    f"{p.name} ({p.note})" if p.note else p.name,
                    rate,
                    per,
                    f"{p.peak_rss_kib / 1024:.0f} MiB",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    for name in GROWN:
        grown = growth(results, name)
        if grown is not None:
            verdict = "met" if grown <= GROWTH_TARGET else "NOT met"
            lines.append(
                f"per-unit cost of {name}, {results[-1].me_files:,} vs {results[0].me_files:,} "
                f"MeFiles: {grown:.2f}x (target <= {GROWTH_TARGET}x: {verdict})"
            )
    largest = results[-1]
    if (sync := largest.phase("sync")) is not None:
        verdict = "met" if sync.rate >= SYNC_RATE_TARGET else "NOT met"
        lines.append(
            f"sync at {largest.me_files:,} MeFiles: {sync.rate:,.0f} MeFiles/s "
            f"(target >= {SYNC_RATE_TARGET:,.0f}/s: {verdict})"
        )
    if (settled := largest.phase("offers settled")) is not None:
        verdict = "met" if settled.seconds <= OFFERS_SETTLED_TARGET else "NOT met"
        lines.append(
            f"offers settled after the populates at {largest.me_files:,} MeFiles: "
            f"{settled.seconds:.1f} s (target <= {OFFERS_SETTLED_TARGET:.0f} s: {verdict})"
        )
    for r in results:
        tables = ", ".join(
            f"{t['table_name']} {t['bytes'] / 2**30:.2f} GiB" for t in r.largest_tables[:4]
        )
        lines.append(
            f"{r.me_files:,} MeFiles: database {r.database_bytes / 2**30:.2f} GiB; {tables}"
        )
    return "\n".join(lines)


def results_json(results: Sequence[SizeResult]) -> dict[str, Any]:
    return {
        "sizes": [
            {
                **asdict(r),
                "phases": [
                    {**asdict(p), "rate": round(p.rate, 1), "us_per_unit": round(p.us_per_unit, 2)}
                    for p in r.phases
                ],
            }
            for r in results
        ],
        "growth": {name: growth(results, name) for name in GROWN},
        "growth_target": GROWTH_TARGET,
    }


def draw_chart(results: Sequence[SizeResult], path: Path) -> None:
    """The cost curve: microseconds per unit by size (left) and relative to the smallest size,
    against the 1.3x target (right). SVG, reproducible byte for byte for the same figures."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    pyplot.rcParams["svg.hashsalt"] = "qlarius-bench-scale"
    sizes = [r.me_files for r in results]
    figure, (absolute, relative) = pyplot.subplots(1, 2, figsize=(10, 4))
    for name, colour in zip(GROWN, ("#1f77b4", "#ff7f0e", "#2ca02c"), strict=True):
        costs = [p.us_per_unit if (p := r.phase(name)) else float("nan") for r in results]
        absolute.plot(sizes, costs, marker="o", color=colour, label=name)
        if costs and costs[0]:
            relative.plot(
                sizes, [c / costs[0] for c in costs], marker="o", color=colour, label=name
            )
    relative.axhline(GROWTH_TARGET, color="#d62728", linestyle="--", label="target 1.3x")
    for axes, title, label in (
        (absolute, "cost per unit", "microseconds per row / MeFile"),
        (relative, "relative to the smallest size", "x of the smallest size's cost"),
    ):
        axes.set_xscale("log")
        axes.set_xlabel("MeFiles")
        axes.set_ylabel(label)
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    absolute.set_ylim(bottom=0)
    relative.set_ylim(bottom=0)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="svg", metadata={"Date": None})
    pyplot.close(figure)
