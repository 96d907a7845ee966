"""Interleaved rounds: a problem's candidates timed in several short windows, shuffled anew
each round, so drift hits every candidate alike and each record shows its between-round
spread (see :mod:`convbench.strategies`, whose strategies both measure this way).

:func:`run_rounds` runs the rounds through a ``run_round(candidate, RoundParams)`` callable
(a worker task per call) and returns every raw outcome; :func:`merge_rounds` turns one
candidate's outcomes into the outcome its record is made from.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from . import noise
from .errors import ConvbenchError
from .outcome import Status
from .timing import summarize_rounds

#: rounds per problem unless the caller asks for another count. Ten: measured on a 2-vCPU
#: Intel Xeon @ 2.60GHz guest (two back-to-back `quick` sweeps, torch + numpy-im2col, 2
#: threads, budget 0.2 s), `compare` called 0 of 29 unchanged rows different with 5 rounds and
#: 1 of 29 with 10, and caught 20 of 29 rows slowed by 10% with 5 rounds, 27 of 29 with 10 (a
#: 10-against-10 Mann-Whitney interval tolerates a disturbed round; 5 against 5 hardly does).
#: The sweep took 1.7x as long.
DEFAULT_ROUNDS = 10
#: what a round's budget holds beyond its share of the sampling time: the warm-up (at least
#: 50 ms, timing.measure's default) and the inner-loop calibration
ROUND_WARMUP_S = 0.06


@dataclass
class RoundParams:
    """What one round asks of one candidate (becomes a worker Task)."""

    round: int
    budget_s: float
    min_samples: int
    max_samples: int
    rel_ci: float
    verify: bool
    final: bool
    time: bool = True                    # False: verification only (round 0)
    stop_above_s: Optional[float] = None  # see timing.measure
    screen_above_s: Optional[float] = None  # a screening look (measure.Screen), with...
    screen_kill_s: Optional[float] = None   # ... both set
    min_time_s: float = 0.0                 # sampling before the CI rule may stop (timing.measure)


RunRound = Callable[[Any, RoundParams], Mapping[str, Any]]


@dataclass(frozen=True)
class Rounds:
    """How a problem's candidates share their timing budget: ``count`` interleaved rounds,
    each sampling for ``budget_s / count`` (its own warm-up, ROUND_WARMUP_S, comes on top)
    with at least ``min_samples`` samples (more when the sweep's ``min_samples`` divided over
    the rounds asks for more). A round spends its share: the confidence-interval rule may
    not stop it earlier, so each round median covers a window of time (without this, rounds
    at the default budget were three back-to-back calls after a warm-up that used up the
    share: a 2-vCPU Intel Xeon @ 2.60GHz guest showed round spreads of 24-62% (median))."""

    count: int = DEFAULT_ROUNDS
    min_samples: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ConvbenchError(f"rounds: {self.count!r} must be an integer >= 1")
        if isinstance(self.min_samples, bool) or not isinstance(self.min_samples, int) \
                or self.min_samples < 1:
            raise ConvbenchError(f"min_samples per round: {self.min_samples!r} must be an integer >= 1")

    def params(self, round_no: int, *, budget_s: float, min_samples: int, max_samples: int,
               rel_ci: float, verify: bool) -> RoundParams:
        """The RoundParams of one round of a candidate whose whole timing has these settings."""
        n = max(self.min_samples, math.ceil(min_samples / self.count))
        share = budget_s / self.count
        return RoundParams(round_no, share + ROUND_WARMUP_S, n,
                           max(n, math.ceil(max_samples / self.count)), rel_ci, verify=verify,
                           final=True, min_time_s=share)


def round_order(items: Sequence[int], families: Mapping[int, str], rng: random.Random,
                first: Optional[str] = None) -> list[int]:
    """``items`` shuffled: families in a random order (``first``, the family the previous
    round ended with, leads: one family switch fewer), each family's items shuffled."""
    groups: dict[str, list[int]] = {}
    for i in items:
        groups.setdefault(families.get(i, ""), []).append(i)
    fams = sorted(groups)
    rng.shuffle(fams)
    if first in groups:
        fams.remove(first)
        fams.insert(0, first)
    order: list[int] = []
    for f in fams:
        members = list(groups[f])
        rng.shuffle(members)
        order.extend(members)
    return order


def run_rounds(candidates: Sequence[Any], run_round: RunRound, *, budget_s: float,
               min_samples: int, max_samples: int, rel_ci: float, rounds: Rounds,
               rng: random.Random, first_round: int = 1, verify: bool = True,
               cut: Optional[Callable[[list[list[dict]], list[int]], Iterable[int]]] = None
               ) -> list[list[dict]]:
    """Every candidate's raw round outcomes (``_round`` set), in the input order.

    Round ``first_round`` also verifies when ``verify``; a candidate leaves the rounds at its
    first outcome that is not ok. The worker family a task reports groups later rounds.
    ``cut(raw, live)``, called after each round but the last, names candidates (indices among
    ``live``, those still in the rounds) that leave the rounds with what they have.
    """
    raw: list[list[dict]] = [[] for _ in candidates]
    families = {i: str(getattr(c, "backend", "")) for i, c in enumerate(candidates)}
    live = list(range(len(candidates)))
    last: Optional[str] = None
    for k in range(rounds.count):
        for i in round_order(live, families, rng, first=last):
            p = rounds.params(first_round + k, budget_s=budget_s, min_samples=min_samples,
                              max_samples=max_samples, rel_ci=rel_ci, verify=verify and k == 0)
            out = dict(run_round(candidates[i], p))
            out["_round"] = p.round
            out["_budget_s"] = p.budget_s
            raw[i].append(out)
            families[i] = last = str((out.get("info") or {}).get("worker_family") or families[i])
            if out.get("status") != Status.OK:
                live.remove(i)
        if cut is not None and k < rounds.count - 1 and live:
            gone = set(cut(raw, list(live)))
            live = [i for i in live if i not in gone]
    return raw


_ROUND_FACTS = ("round", "n_samples", "median_s", "loops", "cpu_steal_pct", "procs_running",
                "other_cpu_s", "canary_s", "tick_s", "start_time", "end_time")


def _round_summary(o: Mapping[str, Any]) -> dict[str, Any]:
    info = o.get("info") or {}
    out = {k: o.get(k, info.get(k)) for k in _ROUND_FACTS}
    out["round"] = o.get("_round")
    out["status"] = o.get("status")
    return {k: v for k, v in out.items() if v is not None}


def _median(values: Sequence[float]) -> Optional[float]:
    import statistics

    return statistics.median(values) if values else None


def _merged_noise(ok: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The noise facts of several rounds as one: the worst steal and runnable count, other
    processes' CPU time and the timed windows summed (busy judged on the sums), tick-quantised
    in any round, throttle events summed, the clock from first to last round, the median of
    the rounds' canaries (:func:`convbench.noise.canary_s`)."""
    infos = [o.get("info") or {} for o in ok]

    def worst(key: str) -> Any:
        vals = [i[key] for i in infos if i.get(key) is not None]
        return max(vals) if vals else None

    other = [i["other_cpu_s"] for i in infos if i.get("other_cpu_s") is not None]
    window = [i["window_s"] for i in infos if i.get("window_s") is not None]
    summed = len(other) == len(window) == len(infos) and bool(infos)
    out = {"cpu_steal_pct": worst("cpu_steal_pct"), "procs_running": worst("procs_running"),
           "other_cpu_s": round(sum(other), 4) if summed else None,
           "window_s": round(sum(window), 6) if summed else None,
           # other processes' CPU use over all rounds together: one round's 10 ms clock ticks
           # are too coarse to judge alone
           "busy": noise.busy(sum(other), sum(window)) if summed
           else (any(i.get("busy") for i in infos) or None),
           "tick_s": worst("tick_s"),
           "throttle_events": sum(i.get("throttle_events") or 0 for i in infos) or None,
           "canary_s": _median([i["canary_s"] for i in infos if i.get("canary_s") is not None]),
           "freq_mhz_before": infos[0].get("freq_mhz_before"),
           "freq_mhz_after": infos[-1].get("freq_mhz_after")}
    return {k: v for k, v in out.items() if v is not None}


def merge_rounds(outcomes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The outcome of one candidate measured in rounds (see :mod:`convbench.strategies`)."""
    if not outcomes:
        raise ConvbenchError("merge_rounds: no outcome to merge")
    first, last = outcomes[0], outcomes[-1]
    ok = [o for o in outcomes if o.get("status") == Status.OK]
    if last.get("status") != Status.OK:
        out = {k: v for k, v in last.items() if not k.startswith("_")}
        if ok:
            out["info"] = dict(out.get("info") or {})
            out["info"]["rounds"] = [_round_summary(o) for o in outcomes]
            out["message"] = (f"{out.get('message') or out.get('status')} (in round "
                              f"{len(outcomes)} of the timing, after {len(ok)} ok rounds)")
        return out
    out = {k: v for k, v in last.items() if not k.startswith("_")}
    rounds = [list(o.get("samples_s") or []) for o in ok]
    out.update(summarize_rounds(rounds))
    out.update(samples_s=[s for r in rounds for s in r], round_samples_s=rounds,
               n_samples=sum(len(r) for r in rounds),
               loops=max(int(o.get("loops") or 1) for o in ok),
               converged=all(bool(o.get("converged")) for o in ok),
               max_error=first.get("max_error"), tolerance=first.get("tolerance"),
               start_time=first.get("start_time"), end_time=last.get("end_time"))
    for k in ("warmup_calls", "total_s", "wall_s"):
        vals = [o.get(k) for o in outcomes if o.get(k) is not None]
        out[k] = sum(vals) if vals else None
    info = dict(last.get("info") or {})
    for k in ("cpu_steal_pct", "procs_running", "busy", "tick_s", "throttle_events",
              "freq_mhz_before", "freq_mhz_after", "other_cpu_s", "window_s", "canary_s"):
        info.pop(k, None)
    info.update(_merged_noise(ok))
    for k in ("verify_call_s", "verify_est_s"):
        v = (first.get("info") or {}).get(k)
        if v is not None:
            info.setdefault(k, v)
    info["rounds"] = [_round_summary(o) for o in outcomes]
    out["info"] = info
    out["noise"] = noise.flags({**info, "round_quartile_spread": out.get("round_quartile_spread")})
    return out


__all__ = ["DEFAULT_ROUNDS", "Rounds", "RoundParams", "RunRound", "round_order", "run_rounds",
           "merge_rounds"]


def with_rounds(strategy: Callable[..., Any], count: int) -> Callable[..., Any]:
    """``strategy`` (a :data:`convbench.strategies.STRATEGIES` value) set to measure in
    ``count`` rounds. A strategy that takes no ``rounds`` keyword (one written for the
    six-argument signature) is returned unchanged for the default count, and refused with a
    ConvbenchError for any other."""
    import functools
    import inspect

    try:
        takes = "rounds" in inspect.signature(strategy).parameters
    except (TypeError, ValueError):
        takes = False
    if takes:
        return functools.partial(strategy, rounds=Rounds(count))
    if count != DEFAULT_ROUNDS:
        raise ConvbenchError(f"rounds: strategy {getattr(strategy, '__name__', strategy)!r} takes no "
                             f"rounds keyword, so it cannot measure in {count} rounds")
    return strategy
