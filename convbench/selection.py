"""Choosing the winner per problem from measured records.

The rule (used by the sweep's table, the tuned cache and reports):

1. Only records with ``status == "ok"`` compete.
2. The candidate with the fastest median is the *fastest*. Every other candidate whose median
   lies inside the fastest's 95% confidence interval of the median (``other.median_s <=
   fastest.ci_high_s``) is *tied* with it: within the fastest's own uncertainty, the
   measurements cannot tell them apart. (Mere overlap of the two CIs is not enough: a noisy
   candidate with a wide CI could then "tie" while being many times slower.)
3. No tie: the fastest wins. The win is *decisive* when its CI is clear of the runner-up's
   (``winner.ci_high_s < runner_up.ci_low_s``); a win over a runner-up whose wide CI reaches
   down into the winner's is not decisive.
4. A tie: the most robust tied candidate wins, by :func:`robustness_rank`, in this order:

   a. candidates that do not precompute anything from the weights ahead of time (a record
      whose ``info`` says ``"weights_precomputed": true``, or whose backend declares the
      algorithm in ``Backend.precomputes_weights``) before those that do;
   b. the robustness the backend declares (``Backend.robustness``): frameworks (maintained
      kernels, their own shape heuristics) < array libraries (no compilation step) <
      JIT-compiled kernels (compile cost, cache files) < undeclared; a backend that is not
      registered here or fails to load counts as undeclared;
   c. the faster median; d. the candidate name (so the choice is deterministic).

   Such a win is never decisive; ``margin`` may then be negative (the robust choice is
   slower than the runner-up by an amount the measurements cannot resolve).

``runner_up`` is the fastest candidate other than the winner; ``margin`` is
``runner_up_median / winner_median - 1``; when the winner ran alone, ``runner_up`` and
``margin`` are None and ``decisive`` is True (vacuously).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from .errors import ConvbenchError, ResultsError
from .registry import Backend, Robustness, get_backend

RULE_ONLY = "only candidate ok"
RULE_FASTEST = "fastest median (no other median inside its CI)"
RULE_TIE = ("tie (medians inside the fastest's CI): most robust wins - no weight precomputation, then "
            "declared robustness (framework > library > JIT > undeclared), then median")


@dataclass
class Winner:
    """The chosen candidate for one (problem, device)."""

    problem: str
    spec_key: str
    device: str
    candidate: str
    median_s: float
    runner_up: Optional[str]
    runner_up_median_s: Optional[float]
    margin: Optional[float]
    decisive: bool
    tie_break_rule: str
    #: candidates whose medians lay inside the fastest's CI (the fastest included), fastest first
    tied: list[str] = field(default_factory=list)
    #: how many candidates were ok
    n_ok: int = 0


def _num(v: Any) -> Optional[float]:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _backend_of(record: Mapping[str, Any]) -> Optional[Backend]:
    """The registered backend a record names, or None (unknown or failing to load)."""
    try:
        return get_backend(str(record.get("backend")))
    except ConvbenchError:
        return None


def precomputes_weights(record: Mapping[str, Any]) -> bool:
    """Whether the candidate transforms the weights ahead of time (the record's info flag, or
    its backend's declaration for its algorithm)."""
    info = record.get("info") or {}
    if isinstance(info, Mapping) and info.get("weights_precomputed"):
        return True
    b = _backend_of(record)
    return b is not None and bool(b.precomputes_weights(str(record.get("algorithm") or "")))


def robustness_rank(record: Mapping[str, Any]) -> tuple:
    """Sort key for tied candidates: lower is preferred (see the module docstring)."""
    b = _backend_of(record)
    return (int(precomputes_weights(record)),
            int(b.robustness) if b is not None else int(Robustness.UNKNOWN),
            _num(record.get("median_s")) or math.inf,
            str(record.get("candidate")))


def _ci(rec: Mapping[str, Any]) -> tuple[float, float]:
    med = _num(rec.get("median_s"))
    lo = _num(rec.get("ci_low_s"))
    hi = _num(rec.get("ci_high_s"))
    return (med if lo is None else lo), (med if hi is None else hi)


def _as_records(records: Any) -> list[Mapping[str, Any]]:
    if hasattr(records, "to_dict") and hasattr(records, "columns"):  # a DataFrame
        return records.to_dict("records")
    return list(records)


def select_winners(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Winner]:
    """The winner per (problem, device) among ``ok`` records (dicts or a DataFrame's rows).

    Problems with no ok candidate have no entry. When a candidate appears more than once for
    a problem (several runs), its latest record (by timestamp) counts. Records of one
    (problem, device) must share one spec_key; ResultsError otherwise.
    """
    groups: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
    keys: dict[tuple[str, str], str] = {}
    for rec in _as_records(records):
        problem, device = str(rec.get("problem")), str(rec.get("device") or "cpu")
        gk = (problem, device)
        sk = rec.get("spec_key")
        if sk is not None:
            if gk in keys and keys[gk] != sk:
                raise ResultsError(
                    f"problem {problem!r} on {device} has records of two different specs "
                    f"({keys[gk]} and {sk}); select winners per run or per spec")
            keys.setdefault(gk, sk)
        if rec.get("status") != "ok" or _num(rec.get("median_s")) is None:
            continue
        cand = str(rec.get("candidate"))
        bucket = groups.setdefault(gk, {})
        old = bucket.get(cand)
        if old is None or str(rec.get("timestamp") or "") >= str(old.get("timestamp") or ""):
            bucket[cand] = rec

    winners: dict[tuple[str, str], Winner] = {}
    for gk, bucket in groups.items():
        ranked = sorted(bucket.values(), key=lambda r: (_num(r["median_s"]), str(r.get("candidate"))))
        fastest = ranked[0]
        _, fast_hi = _ci(fastest)
        tied = [r for r in ranked if r is fastest or _num(r["median_s"]) <= fast_hi]
        if len(ranked) == 1:
            win, rule = fastest, RULE_ONLY
        elif len(tied) == 1:
            win, rule = fastest, RULE_FASTEST
        else:
            win, rule = min(tied, key=robustness_rank), RULE_TIE
        others = [r for r in ranked if r is not win]
        runner = others[0] if others else None
        win_med = _num(win["median_s"])
        run_med = _num(runner["median_s"]) if runner is not None else None
        margin = (run_med / win_med - 1.0) if (run_med is not None and win_med) else None
        decisive = runner is None or _ci(win)[1] < _ci(runner)[0]
        winners[gk] = Winner(
            problem=gk[0], spec_key=str(keys.get(gk, win.get("spec_key"))), device=gk[1],
            candidate=str(win.get("candidate")), median_s=win_med, runner_up=None if runner is None
            else str(runner.get("candidate")), runner_up_median_s=run_med, margin=margin,
            decisive=bool(decisive), tie_break_rule=rule,
            tied=[str(r.get("candidate")) for r in tied], n_ok=len(ranked))
    return winners


__all__ = ["Winner", "select_winners", "robustness_rank", "precomputes_weights"]
