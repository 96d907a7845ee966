"""Choosing the winner per problem from measured records.

The rule (used by the sweep's table, the tuned cache and reports):

1. Only records with ``status == "ok"`` compete.
2. The candidate with the fastest median is the *fastest*. Every other candidate whose median
   lies within the *minimum effect* of it (``other.median_s <= fastest.median_s * (1 +
   min_effect)``, default :data:`DEFAULT_MIN_EFFECT`) is *tied* with it: a difference that
   small is not one worth choosing on. A tie never comes from wide intervals: a candidate
   whose median is far from the fastest's (say 1.5x) is never tied with it, however noisy
   either measurement was.
3. No tie: the fastest wins. The win is *decisive* when its interval is clear of the
   runner-up's (``winner.ci_high_s < runner_up.ci_low_s``; with rounds the intervals include
   the between-round spread, :func:`convbench.timing.summarize_rounds`); otherwise it is
   *close*: the fastest median, but the measurements do not rule out the runner-up.
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
   slower than the runner-up by less than the minimum effect).

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

#: the smallest relative difference of medians that counts as a difference, in winner selection
#: and in `convbench compare`. Provisional: to be calibrated with A/A runs
#: (benchmarks/aa_compare.py) on quiet and on shared machines.
DEFAULT_MIN_EFFECT = 0.05

RULE_ONLY = "only candidate ok"
RULE_FASTEST = "fastest median (no other median within the minimum effect)"
RULE_TIE = ("tie (medians within the minimum effect of the fastest): most robust wins - no weight "
            "precomputation, then declared robustness (framework > library > JIT > undeclared), "
            "then median")


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
    #: candidates whose medians lay within the minimum effect of the fastest's (it included),
    #: fastest first
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


def select_winners(records: Iterable[Mapping[str, Any]], *,
                   min_effect: float = DEFAULT_MIN_EFFECT) -> dict[tuple[str, str], Winner]:
    """The winner per (problem, device) among ``ok`` records (dicts or a DataFrame's rows).
    Medians within ``min_effect`` (a fraction) of the fastest's are tied with it.

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

    if not (isinstance(min_effect, (int, float)) and 0 <= min_effect < 1):
        raise ConvbenchError(f"min_effect: {min_effect!r} must be a fraction in [0, 1), e.g. 0.05")
    winners: dict[tuple[str, str], Winner] = {}
    for gk, bucket in groups.items():
        ranked = sorted(bucket.values(), key=lambda r: (_num(r["median_s"]), str(r.get("candidate"))))
        fastest = ranked[0]
        # the relative slack keeps a median exactly at the edge (1.05 vs 1.00) inside it
        edge = _num(fastest["median_s"]) * (1.0 + min_effect) * (1.0 + 1e-12)
        tied = [r for r in ranked if r is fastest or _num(r["median_s"]) <= edge]
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


__all__ = ["Winner", "select_winners", "robustness_rank", "precomputes_weights", "DEFAULT_MIN_EFFECT"]
