"""How the runnable candidates of one problem are measured: the sweep's strategies.

A strategy is a function ``strategy(pool, problem_name, spec, candidates, make_task, emit)``
registered by name in :data:`STRATEGIES` (``convbench sweep --strategy NAME``).
``candidates`` are the problem's runnable candidates (unavailable and unsupported ones were
recorded before); ``make_task(candidate, **task_overrides)`` builds the worker
:class:`~convbench.worker.Task` with the sweep's settings; ``pool.run(task)`` measures it in
the candidate's worker process; ``emit(candidate, outcome)`` writes the candidate's record
(and returns it). A strategy emits exactly one outcome per candidate.

``exhaustive`` verifies and times every candidate with the full budget, one after the other.

``race`` (successive halving on confidence intervals) gives every candidate of a problem a
short first round, then keeps timing only those that could still win:

``race`` gives every candidate of a problem a short first round, then keeps timing only
those that could still win:

0. **Verification** (every candidate): checked against the float64 reference, the only
   verification (a wrong answer ends the candidate there and it is never timed). The
   verification call's duration, scaled to the full batch, estimates each candidate's cost.
1. **Round 1** (every verified candidate, cheapest estimate first, worker family by worker
   family, the family with the cheapest candidate first):
   ``RaceConfig.first_samples``..``first_max_samples`` samples (default 3..5) within
   ``first_fraction`` (0.1) of the per-candidate budget. Once some candidate has round-1
   samples, a candidate whose round-1 samples are *all* slower than ``decisive_ratio``
   (default 2) times the leader's slowest round-1 sample is dropped at once
   (``info["race"] = "dropped in round 1 (decisively slower)"``): every call more than twice
   as slow as the leader's slowest is not a close call, and the expensive losers (FFT and
   direct loops that take 0.1-1 s per call on a ResNet layer) cost three timed calls instead
   of ten or more. All of them, not the first: right after the warm-up, single samples were
   measured up to 16x slow (torch on resnet50 layer3.conv3: 19 ms against a 1.2 ms median)
   on the 2-core development machine. (``stop_above_s`` makes the worker stop timing such a
   candidate after its third sample.) Re-admission (step 5) still brings a dropped candidate
   back if the leader turns out slower in the final round.
2. After each round the *leader* is the candidate with the fastest median over all its
   samples so far. A candidate whose 95% CI lower bound of the median, over *this round's*
   samples, exceeds the leader's CI upper bound over this round's samples gets a **strike**:
   it was slower beyond doubt in that round. (With 5 or fewer samples the distribution-free
   CI is [min, max]: a strike means its fastest call was slower than the leader's slowest.)
   At ``strikes`` strikes (default 2) it is **dropped**. Two strikes come from two rounds,
   i.e. two separate windows in time, each with a fresh prepare and warm-up: on a loaded
   machine the speed of a multi-threaded call jumps between windows (measured on the
   2-core machine this was written on, shared with other jobs: numpy-im2col on a 1x1
   2048->512 7x7 problem with 2 threads had window medians of either 0.9-1.5 ms or 8.0 ms,
   changing from one short window to the next), and one unlucky window must not eliminate
   the true winner.
3. **Middle rounds** (``middle_fractions``, default one round with 0.25 of the budget and at
   least 8 new samples) give the unstruck survivors more samples, accumulated with the
   earlier ones; a struck candidate gets only a round-1-sized second look.
4. **Final round**: every survivor (also a lone one) is measured exactly as ``exhaustive``
   measures a candidate: the sweep's full budget, ``min_samples``, ``max_samples`` and CI
   stopping rule. Its record's statistics are those of the final round alone, so finalists'
   numbers are comparable with ``exhaustive`` ones (earlier rounds ran at other moments on a
   machine whose speed drifts; mixing them would widen the CIs and blur ties).

5. **Re-admission**: the machine can drift between rounds, so after the final round every
   dropped candidate whose samples are not clearly slower than the best finalist's final
   round (its CI lower bound <= that finalist's CI upper bound: winner selection would see
   it tied or faster) is re-admitted and measured in the final round too. Every candidate
   that can win or tie the winner has therefore had the full final measurement.

Every candidate ends with exactly one record, in the same schema as ``exhaustive``.
Finalists: ``info["race"] = "finalist"`` (or ``"finalist (re-admitted ...)"``). Dropped candidates: status ``ok``, statistics and
``samples_s`` over all the samples they got, ``info["race"] = "dropped in round k"``.
``info["race_rounds"]`` lists every round (its samples, budget, median), so no sample is
lost. ``wall_s``, ``warmup_calls`` and ``total_s`` add up all rounds. A candidate that is
not ok at verification keeps that outcome unchanged.

The saving over ``exhaustive`` comes from clear losers: the decisively slower stop after
three timed calls, the others after two short looks, instead of the full stopping rule;
finalists cost a little more than under ``exhaustive`` (one more prepare and warm-up per
round). Verification (the float64 reference) costs the same under both strategies, and so
do candidates over the per-call limit, which are recorded as ``timeout`` at verification.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from .errors import ConvbenchError
from .outcome import VERIFIED, Status
from .timing import summarize

#: emit(candidate, outcome) -> the stored record
Emit = Callable[[Any, Mapping[str, Any]], dict]
#: make_task(candidate, **task_overrides) -> convbench.worker.Task
MakeTask = Callable[..., Any]
Strategy = Callable[[Any, str, Any, Sequence[Any], MakeTask, Emit], None]


# ---- exhaustive ------------------------------------------------------------------------------
def exhaustive(pool: Any, problem_name: str, spec: Any, candidates: Sequence[Any],
               make_task: MakeTask, emit: Emit) -> None:
    """Verify and time every candidate with the full budget, one after the other."""
    for cand in candidates:
        emit(cand, pool.run(make_task(cand)))


# ---- race: its settings ----------------------------------------------------------------------
@dataclass(frozen=True)
class RaceConfig:
    """Knobs of the race (fractions are of the sweep's per-candidate budget)."""

    first_samples: int = 3          # samples every candidate gets in round 1 (at least)
    first_max_samples: int = 5      # ... and at most
    first_fraction: float = 0.1
    middle_fractions: tuple[float, ...] = (0.25,)
    middle_samples: tuple[int, ...] = (8,)   # minimum new samples per middle round
    strikes: int = 2                # rounds a candidate must lose beyond doubt before it is dropped
    decisive_ratio: Optional[float] = 2.0  # round 1: drop a candidate whose samples are all this
                                           # much slower than the leader's slowest; None: off

    def __post_init__(self) -> None:
        if not isinstance(self.first_samples, int) or self.first_samples < 1:
            raise ConvbenchError(f"first_samples: {self.first_samples!r} must be an integer >= 1")
        if not isinstance(self.first_max_samples, int) or self.first_max_samples < self.first_samples:
            raise ConvbenchError(f"first_max_samples: {self.first_max_samples!r} must be an integer "
                                 f">= first_samples ({self.first_samples})")
        if len(self.middle_fractions) != len(self.middle_samples):
            raise ConvbenchError("middle_fractions and middle_samples must have the same length")
        if not (self.first_fraction > 0 and all(f > 0 for f in self.middle_fractions)):
            raise ConvbenchError("race budget fractions must be > 0")
        if any(not isinstance(n, int) or n < 1 for n in self.middle_samples):
            raise ConvbenchError(f"middle_samples: {self.middle_samples!r} must be integers >= 1")
        if not isinstance(self.strikes, int) or self.strikes < 1:
            raise ConvbenchError(f"strikes: {self.strikes!r} must be an integer >= 1")
        if self.decisive_ratio is not None and not (
                isinstance(self.decisive_ratio, (int, float)) and self.decisive_ratio > 1):
            raise ConvbenchError(f"decisive_ratio: {self.decisive_ratio!r} must be a number > 1 (or None)")


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


RunRound = Callable[[Any, RoundParams], Mapping[str, Any]]


@dataclass
class _Entrant:
    candidate: Any
    outcomes: list[dict] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)   # rounds before the final one
    by_round: dict = field(default_factory=dict)         # round -> that round's samples
    strikes: int = 0
    dropped_in: Optional[int] = None
    failed: bool = False
    finalist: bool = False
    readmitted: bool = False
    decisive: bool = False               # dropped as decisively slower in round 1
    est_s: float = float("inf")          # verification call scaled to the full batch
    family: str = ""                     # the worker family that ran it (from verification)


# ---- race: the rounds ------------------------------------------------------------------------
class _Race:
    """The state of one race: its entrants and the rounds run on them (see the module docstring)."""

    def __init__(self, candidates: Sequence[Any], run_round: RunRound, cfg: RaceConfig, *,
                 budget_s: float, min_samples: int, max_samples: int, rel_ci: float) -> None:
        self.entrants = [_Entrant(c) for c in candidates]
        self.run_round = run_round
        self.cfg = cfg
        self.budget_s, self.rel_ci = budget_s, rel_ci
        self.min_samples, self.max_samples = min_samples, max_samples
        self.first_max = max(cfg.first_samples, min(cfg.first_max_samples, max_samples))

    def run(self, e: _Entrant, p: RoundParams) -> None:
        """One round of one entrant; its samples (or its failure) are kept."""
        out = dict(self.run_round(e.candidate, p))
        out["_round"] = p.round
        out["_budget_s"] = p.budget_s
        e.outcomes.append(out)
        status = out.get("status")
        if status == VERIFIED and not p.time:
            info = out.get("info") or {}
            est = info.get("verify_est_s")
            e.est_s = float(est) if isinstance(est, (int, float)) else float("inf")
            e.family = str(info.get("worker_family") or "")
        elif status != Status.OK:
            e.failed = True
        elif not p.final:
            got = [float(s) for s in (out.get("samples_s") or [])]
            e.samples.extend(got)
            e.by_round[p.round] = got

    def alive(self) -> list[_Entrant]:
        return [e for e in self.entrants if not e.failed and e.dropped_in is None and e.samples]

    def short_look(self, round_no: int, stop_above_s: Optional[float] = None) -> RoundParams:
        """A round-1-sized round: a few samples on a tenth of the budget."""
        return RoundParams(round_no, self.budget_s * self.cfg.first_fraction, self.cfg.first_samples,
                           self.first_max, self.rel_ci, verify=False, final=False,
                           stop_above_s=stop_above_s)

    def verify_all(self) -> None:
        """Round 0: verify every entrant; the verification call estimates its cost."""
        verify = RoundParams(0, 0.0, 1, 1, self.rel_ci, verify=True, final=False, time=False)
        for e in self.entrants:
            self.run(e, verify)

    def first_round(self) -> None:
        """Round 1: the cheapest-looking first (family by family: switching worker families
        costs a settling pause, see convbench.worker.SETTLE_S), so that a leader exists before
        the expensive ones are timed; the decisively slower are dropped at once."""
        ok = [e for e in self.entrants if not e.failed]
        fam_est = {f: min(e.est_s for e in ok if e.family == f) for f in {e.family for e in ok}}
        for e in sorted(ok, key=lambda e: (fam_est[e.family], e.family, e.est_s)):
            stop = self._decisive_limit()
            self.run(e, self.short_look(1, stop))
            got = e.by_round.get(1)
            if stop is not None and got and min(got) > stop:
                e.dropped_in = 1
                e.decisive = True
        self.cull(1)

    def _decisive_limit(self) -> Optional[float]:
        """decisive_ratio times the round-1 leader's slowest sample (None: no leader yet)."""
        timed = [x for x in self.entrants if x.by_round.get(1)]
        if self.cfg.decisive_ratio is None or not timed:
            return None
        leader = min(timed, key=lambda x: summarize(x.by_round[1])["median_s"])
        return self.cfg.decisive_ratio * max(leader.by_round[1])

    def middle_rounds(self) -> int:
        """The middle rounds; returns the number of the last round run."""
        rnd = 1
        for frac, n_new in zip(self.cfg.middle_fractions, self.cfg.middle_samples):
            live = self.alive()
            if len(live) < 2:
                break
            rnd += 1
            p = RoundParams(rnd, self.budget_s * frac, n_new, max(n_new, self.max_samples),
                            self.rel_ci, verify=False, final=False)
            for e in live:  # one already struck only needs a cheap second look, in a new window
                self.run(e, self.short_look(rnd) if e.strikes else p)
            self.cull(rnd)
        return rnd

    def cull(self, round_no: int) -> None:
        """Strike every entrant slower than the leader beyond doubt in this round's samples;
        drop it at cfg.strikes strikes (rounds are separate windows in time)."""
        live = [e for e in self.alive() if e.by_round.get(round_no)]
        if len(live) < 2:
            return
        leader = min(live, key=lambda e: summarize(e.samples)["median_s"])
        hi = summarize(leader.by_round[round_no])["ci_high_s"]
        for e in live:
            if e is not leader and summarize(e.by_round[round_no])["ci_low_s"] > hi:
                e.strikes += 1
                if e.strikes >= self.cfg.strikes:
                    e.dropped_in = round_no

    def final_round(self, round_no: int) -> RoundParams:
        """Every survivor measured as exhaustive measures a candidate; returns the round."""
        final = RoundParams(round_no, self.budget_s, self.min_samples, self.max_samples,
                            self.rel_ci, verify=False, final=True)
        for e in self.alive():
            e.finalist = True
            self.run(e, final)
        return final

    def readmit(self, final: RoundParams) -> None:
        """The machine may have drifted between the rounds: a dropped entrant whose samples
        are not clearly slower than the best finalist's final round would compete (tie or
        win) in winner selection with few, older samples; it gets the final round too."""
        while True:
            done = [e for e in self.entrants if e.finalist and not e.failed]
            if not done:
                return
            best_hi = min(done, key=lambda e: e.outcomes[-1]["median_s"]).outcomes[-1]["ci_high_s"]
            back = [e for e in self.entrants if e.dropped_in is not None and not e.finalist
                    and not e.failed and e.samples and summarize(e.samples)["ci_low_s"] <= best_hi]
            if not back:
                return
            for e in back:
                e.finalist = True
                e.readmitted = True
                self.run(e, final)


def race_candidates(candidates: Sequence[Any], run_round: RunRound, *, budget_s: float,
                    min_samples: int = 10, max_samples: int = 10000, rel_ci: float = 0.01,
                    config: Optional[RaceConfig] = None) -> list[tuple[Any, dict[str, Any]]]:
    """Race ``candidates``; returns (candidate, outcome for its record) in the input order.

    ``run_round(candidate, params)`` verifies (``params.verify``) and times one candidate and
    returns a worker outcome dict (``convbench.outcome.OUTCOME_KEYS``). ``budget_s``,
    ``min_samples``, ``max_samples`` and ``rel_ci`` are the sweep's per-candidate settings,
    used unchanged for the final round.
    """
    race = _Race(candidates, run_round, config or RaceConfig(), budget_s=budget_s,
                 min_samples=min_samples, max_samples=max_samples, rel_ci=rel_ci)
    race.verify_all()
    race.first_round()
    last = race.middle_rounds()
    race.readmit(race.final_round(last + 1))
    return [(e.candidate, _merge(e)) for e in race.entrants]


# ---- race: the recorded outcome --------------------------------------------------------------
def _round_info(o: Mapping[str, Any]) -> dict[str, Any]:
    return {"round": o.get("_round"), "budget_s": o.get("_budget_s"), "status": o.get("status"),
            "n_samples": o.get("n_samples"), "median_s": o.get("median_s"), "loops": o.get("loops"),
            "samples_s": o.get("samples_s")}


def _with_race_note(o: Mapping[str, Any], note: str) -> dict[str, Any]:
    out = dict(o)
    out["info"] = dict(o.get("info") or {})
    out["info"]["race"] = note
    return out


def _verdict(e: _Entrant) -> dict[str, Any]:
    """The outcome of the round that decides an entrant's record, with info["race"] saying why."""
    last = e.outcomes[-1]
    if len(e.outcomes) == 1 and last.get("status") != Status.OK:
        return dict(last)  # not ok when verified (unsupported, wrong, crashed, ...): as is
    if e.finalist and last.get("status") == Status.OK:  # the final round, measured like exhaustive
        return _with_race_note(last, f"finalist (re-admitted after being dropped in round {e.dropped_in})"
                               if e.readmitted else "finalist")
    if last.get("status") != Status.OK:  # failed after passing earlier rounds: that is the news
        rnd = last.get("_round")
        return _with_race_note(last, f"failed in round {rnd} after passing verification" if rnd == 1
                               else f"failed in round {rnd} after passing earlier rounds")
    out = _with_race_note(last, f"dropped in round {e.dropped_in}"
                          + (" (decisively slower)" if e.decisive else ""))
    out.update(summarize(e.samples))  # dropped: every sample it got
    out.update(samples_s=list(e.samples), n_samples=len(e.samples), converged=False)
    return out


def _merge(e: _Entrant) -> dict[str, Any]:
    """The outcome recorded for one entrant of a race: its deciding round, plus what every
    round added (verification error, calls, time) and the rounds themselves in info."""
    first = e.outcomes[0]
    out = _verdict(e)
    if out.get("status") == Status.OK or len(e.outcomes) > 1:
        out["max_error"] = first.get("max_error")
        out["tolerance"] = first.get("tolerance")
        for k in ("warmup_calls", "total_s", "wall_s"):
            vals = [o.get(k) for o in e.outcomes if o.get(k) is not None]
            out[k] = sum(vals) if vals else None
        out["info"]["race_rounds"] = [_round_info(o) for o in e.outcomes]
        for k in ("verify_call_s", "verify_est_s"):
            v = (first.get("info") or {}).get(k)
            if v is not None:
                out["info"].setdefault(k, v)
    out.pop("_round", None)
    out.pop("_budget_s", None)
    return out


# ---- race: the strategy ----------------------------------------------------------------------
def race(pool: Any, problem_name: str, spec: Any, candidates: Sequence[Any], make_task: MakeTask,
         emit: Emit, *, config: Optional[RaceConfig] = None) -> None:
    """Successive halving on confidence intervals (see the module docstring)."""
    if not candidates:
        return
    template = make_task(candidates[0])

    def run_round(cand: Any, p: RoundParams) -> dict[str, Any]:
        task = make_task(cand, budget_s=p.budget_s, min_samples=p.min_samples,
                         max_samples=max(p.max_samples, p.min_samples), rel_ci=p.rel_ci,
                         verify=p.verify, time=p.time, stop_above_s=p.stop_above_s)
        return dict(pool.run(task))

    for cand, outcome in race_candidates(candidates, run_round, budget_s=float(template.budget_s),
                                         min_samples=template.min_samples,
                                         max_samples=template.max_samples,
                                         rel_ci=template.rel_ci, config=config):
        emit(cand, outcome)


#: name -> strategy(pool, problem_name, spec, candidates, make_task, emit); add one to plug it in
STRATEGIES: dict[str, Strategy] = {"exhaustive": exhaustive, "race": race}

__all__ = ["STRATEGIES", "Strategy", "Emit", "MakeTask", "exhaustive", "race", "race_candidates",
           "RaceConfig", "RoundParams"]
