"""Formatting and small statistics shared by the sweep, the cache, reports and the CLI."""
from __future__ import annotations

import math
from typing import Any, Iterable


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def fmt_time(seconds: Any) -> str:
    """Seconds in a readable unit with 3 significant digits (``1.23 ms``, ``45.6 µs``); "-"
    when missing or not finite."""
    if not _finite(seconds):
        return "-"
    s = float(seconds)
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(s) >= scale or unit == "ns":
            return f"{s / scale:.3g} {unit}"
    return f"{s:.3g} s"  # pragma: no cover


def geomean(values: Iterable[float]) -> float:
    """Geometric mean of the positive finite values (nan when there are none)."""
    vals = [float(v) for v in values if _finite(v) and float(v) > 0]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else float("nan")


__all__ = ["fmt_time", "geomean"]
