"""What the commands print: plain text tables for people, JSON values for scripts."""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from typing import Any


def format_table(title: str, rows: Sequence[dict[str, Any]]) -> str:
    """A plain text table, for people; ``--json`` is for scripts."""
    if not rows:
        return f"{title}\n  (none)\n"
    headers = list(rows[0])
    cells = [[("" if r[h] is None else str(r[h])) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [title, "  " + line, "  " + "  ".join("-" * w for w in widths)]
    out += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out) + "\n"


def iso(value: Any) -> Any:
    """JSON for what json does not know: ISO 8601 times, numbers for decimals."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return str(value)
