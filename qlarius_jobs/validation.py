"""Checks on the ids that application code hands to the library functions."""

from __future__ import annotations


def positive_id(name: str, value: object) -> int:
    """``value`` when it is a positive integer (not a bool); otherwise a clear ValueError."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
