"""Numbers of the report tables as text: "-" wherever a value is missing."""
from __future__ import annotations

import math
from typing import Any

from ..fmt import fmt_time


def finite(v: Any) -> bool:
    """Whether ``v`` is a finite number (None, NaN and text are not)."""
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def num(v: Any) -> float:
    """``v`` as a float; NaN when it is not a finite number."""
    return float(v) if finite(v) else float("nan")


def fmt_number(value: Any, spec: str = ".3g") -> str:
    """``value`` in the format ``spec`` (e.g. ``"+.1%"``, ``".3f"``); "-" when missing."""
    return format(float(value), spec) if finite(value) else "-"


def fmt_value(value: Any, metric: str) -> str:
    """A metric value for display ("time" in seconds, "gflops", "peak" in percent)."""
    if not finite(value):
        return "-"
    if metric == "time":
        return fmt_time(value)
    if metric == "peak":
        return f"{float(value):.3g}%"
    return f"{float(value):.4g}"


def fmt_ratio(value: Any) -> str:
    """A speedup or time ratio, e.g. ``4x``, ``0.825x``; "-" when missing."""
    return f"{float(value):.3g}x" if finite(value) else "-"


def choice_label(row: Any) -> str:
    """How a winners row's winner was chosen: decisive, only one ok, or a tie's robust pick."""
    rule = str(row.get("rule") or "")
    if not isinstance(row.get("winner"), str):
        return "-"
    if row.get("decisive") is True:
        return "decisive" if "only" not in rule else "only one ok"
    return "tie, robust pick" if "tie" in rule else rule or "-"
