"""Charts drawn on the server as SVG (no JavaScript, nothing fetched from elsewhere): the
console's backfill history and jobs per minute. Each function returns a complete ``<svg>``
whose text comes only from numbers and fixed labels (markupsafe escapes the rest)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 28


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    points: Sequence[tuple[dt.datetime, float]]


def _scale(value: float, low: float, high: float, out_low: float, out_high: float) -> float:
    if high == low:
        return (out_low + out_high) / 2
    return out_low + (value - low) * (out_high - out_low) / (high - low)


def _frame(title: str, top_value: float, start: dt.datetime, end: dt.datetime, body: str) -> Markup:
    labels = (
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{top_value:,.0f}</text>'
        f'<text x="{LEFT - 6}" y="{HEIGHT - BOTTOM}" text-anchor="end">0</text>'
        f'<text x="{LEFT}" y="{HEIGHT - 8}">{escape(start.strftime("%d %b %H:%M"))}</text>'
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">'
        f"{escape(end.strftime('%d %b %H:%M'))}</text>"
    )
    axes = (
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" '
        'class="axis"/>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" class="axis"/>'
    )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{axes}{body}{labels}</svg>"
    )


def line_chart(
    title: str, series: Sequence[Series], start: dt.datetime, end: dt.datetime
) -> Markup:
    """One polyline per series over [start, end]; an empty chart says so."""
    top = max((v for s in series for _, v in s.points), default=0.0)
    if top <= 0:
        return _frame(title, 0, start, end, _empty())
    t0, t1 = start.timestamp(), end.timestamp()
    body = []
    for s in series:
        if not s.points:
            continue
        coords = " ".join(
            f"{_scale(t.timestamp(), t0, t1, LEFT, WIDTH - RIGHT):.1f},"
            f"{_scale(v, 0, top, HEIGHT - BOTTOM, TOP):.1f}"
            for t, v in s.points
        )
        body.append(
            f'<polyline fill="none" stroke="{s.colour}" stroke-width="1.5" points="{coords}">'
            f"<title>{escape(s.name)}</title></polyline>"
        )
    return _frame(title, top, start, end, "".join(body) + _legend(series))


def bar_chart(
    title: str,
    bars: Sequence[tuple[dt.datetime, float, float]],
    start: dt.datetime,
    end: dt.datetime,
    names: tuple[str, str] = ("found", "fixed"),
) -> Markup:
    """Two bars per moment (e.g. rows found and rows fixed by a backfill run)."""
    top = max((max(a, b) for _, a, b in bars), default=0.0)
    if top <= 0:
        return _frame(title, 0, start, end, _empty() if not bars else _legend_pair(names))
    t0, t1 = start.timestamp(), end.timestamp()
    width = max(2.0, min(12.0, (WIDTH - LEFT - RIGHT) / max(1, len(bars)) / 2.5))
    body = []
    for when, first, second in bars:
        x = _scale(when.timestamp(), t0, t1, LEFT + width, WIDTH - RIGHT - width)
        for offset, value, css in ((-width, first, "bar-a"), (0.0, second, "bar-b")):
            y = _scale(value, 0, top, HEIGHT - BOTTOM, TOP)
            body.append(
                f'<rect class="{css}" x="{x + offset:.1f}" y="{y:.1f}" width="{width:.1f}" '
                f'height="{HEIGHT - BOTTOM - y:.1f}"><title>'
                f"{escape(when.strftime('%d %b %H:%M'))}: {value:,.0f}</title></rect>"
            )
    return _frame(title, top, start, end, "".join(body) + _legend_pair(names))


def _empty() -> str:
    return (
        f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="empty">'
        "nothing in this period</text>"
    )


def _legend(series: Sequence[Series]) -> str:
    return "".join(
        f'<text x="{WIDTH - RIGHT - 110 * (len(series) - i)}" y="{TOP + 8}" '
        f'fill="{s.colour}" class="legend">{escape(s.name)}</text>'
        for i, s in enumerate(series)
    )


def _legend_pair(names: tuple[str, str]) -> str:
    y, right = TOP + 8, WIDTH - RIGHT
    return (
        f'<text x="{right - 160}" y="{y}" class="bar-a-text">{escape(names[0])}</text>'
        f'<text x="{right - 70}" y="{y}" class="bar-b-text">{escape(names[1])}</text>'
    )
