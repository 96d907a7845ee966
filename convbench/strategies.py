"""How the runnable candidates of one problem are measured: the sweep's strategies.

A strategy is a function ``strategy(pool, problem_name, spec, candidates, make_task, emit)``
registered by name in :data:`STRATEGIES` (``convbench sweep --strategy NAME``).
``candidates`` are the problem's runnable candidates (unavailable and unsupported ones were
recorded before); ``make_task(candidate, **task_overrides)`` builds the worker
:class:`~convbench.worker.Task` with the sweep's settings; ``pool.run(task)`` measures it in
the candidate's worker process; ``emit(candidate, outcome)`` writes the candidate's record
(and returns it). A strategy emits exactly one outcome per candidate.

**Rounds** (both strategies): the timing of a problem's candidates is split into
``Rounds.count`` interleaved rounds (default :data:`DEFAULT_ROUNDS`), each with
``1/count`` of the per-candidate budget and at least ``Rounds.min_samples`` samples. Every
round visits the candidates in a new shuffled order (worker families in shuffled order, the
candidates of a family shuffled, so each round switches families once per family: see
``convbench.pool.SETTLE_S``), with a fresh prepare and warm-up each time. Drift over minutes
then hits every candidate alike, and each record shows how far its median moves between
rounds: ``round_samples_s`` (raw samples per round), ``round_medians_s``, ``round_spread``
(slowest round median / fastest - 1). Its ``median_s`` and statistics are over the pooled
samples; its ``ci_low_s``/``ci_high_s`` is the wider of the pooled samples' interval and the
between-round interval (:func:`convbench.timing.summarize_rounds`). A candidate that fails in
a later round ends with that failure (its earlier rounds in ``info["rounds"]``).

``exhaustive`` measures every candidate in rounds with the full budget (the first round also
verifies; a candidate that is not ok there leaves the rounds).

``race`` (successive halving on confidence intervals) screens first, then measures only the
candidates that could still win, in rounds exactly as ``exhaustive`` does:

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
4. **Final rounds**: every survivor (also a lone one) is measured exactly as ``exhaustive``
   measures a candidate: the sweep's full budget split over interleaved rounds, with
   ``min_samples``, ``max_samples`` and the CI stopping rule shared out likewise. Its
   record's statistics are those of the final rounds alone, so finalists' numbers are
   comparable with ``exhaustive`` ones (the screening rounds ran with other budgets).

5. **Re-admission**: the machine can drift between rounds, so after the final rounds every
   dropped candidate whose samples are not clearly slower than the best finalist's final
   rounds (its CI lower bound <= that finalist's CI upper bound) is re-admitted and measured
   in final rounds too. Every candidate
   that can win or tie the winner has therefore had the full final measurement.

Every candidate ends with exactly one record, in the same schema as ``exhaustive``
(dropped candidates have one round per screening round that timed them).
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

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from .errors import ConvbenchError
from .outcome import VERIFIED, Status
from .rounds import DEFAULT_ROUNDS, RoundParams, Rounds, RunRound, merge_rounds, run_rounds
from .timing import summarize, summarize_rounds

#: emit(candidate, outcome) -> the stored record
Emit = Callable[[Any, Mapping[str, Any]], dict]
#: make_task(candidate, **task_overrides) -> convbench.worker.Task
MakeTask = Callable[..., Any]
Strategy = Callable[[Any, str, Any, Sequence[Any], MakeTask, Emit], None]


def _pool_runner(pool: Any, make_task: MakeTask) -> RunRound:
    """run_round(candidate, params): one worker task for one round of one candidate."""
    def run_round(cand: Any, p: RoundParams) -> dict[str, Any]:
        task = make_task(cand, budget_s=p.budget_s, min_samples=p.min_samples,
                         max_samples=max(p.max_samples, p.min_samples), rel_ci=p.rel_ci,
                         verify=p.verify, time=p.time, stop_above_s=p.stop_above_s)
        return dict(pool.run(task))
    return run_round


def _shuffler(problem_name: str, seed: Any) -> random.Random:
    """The round orders' random source: the same for the same problem and seed (A/A runs)."""
    return random.Random(f"{problem_name}/{seed}")


# ---- exhaustive ------------------------------------------------------------------------------
def measure_candidates(candidates: Sequence[Any], run_round: RunRound, *, budget_s: float,
                       min_samples: int = 10, max_samples: int = 10000, rel_ci: float = 0.01,
                       rounds: Optional[Rounds] = None,
                       rng: Optional[random.Random] = None) -> list[tuple[Any, dict[str, Any]]]:
    """Verify and time every candidate in interleaved rounds; (candidate, outcome for its
    record) in the input order. The settings are the whole timing's, shared over the rounds."""
    raw = run_rounds(candidates, run_round, budget_s=budget_s, min_samples=min_samples,
                     max_samples=max_samples, rel_ci=rel_ci, rounds=rounds or Rounds(),
                     rng=rng or random.Random(0))
    return [(c, merge_rounds(outs)) for c, outs in zip(candidates, raw)]


def exhaustive(pool: Any, problem_name: str, spec: Any, candidates: Sequence[Any],
               make_task: MakeTask, emit: Emit, *, rounds: Optional[Rounds] = None) -> None:
    """Verify and time every candidate with the full budget, in interleaved rounds."""
    if not candidates:
        return
    t = make_task(candidates[0])
    for cand, outcome in measure_candidates(
            candidates, _pool_runner(pool, make_task), budget_s=float(t.budget_s),
            min_samples=t.min_samples, max_samples=t.max_samples, rel_ci=t.rel_ci,
            rounds=rounds, rng=_shuffler(problem_name, t.seed)):
        emit(cand, outcome)


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
    final: Optional[dict] = None         # the outcome of its final rounds, merged
    est_s: float = float("inf")          # verification call scaled to the full batch
    family: str = ""                     # the worker family that ran it (from verification)


# ---- race: the rounds ------------------------------------------------------------------------
class _Race:
    """The state of one race: its entrants and the rounds run on them (see the module docstring)."""

    def __init__(self, candidates: Sequence[Any], run_round: RunRound, cfg: RaceConfig, *,
                 budget_s: float, min_samples: int, max_samples: int, rel_ci: float,
                 rounds: Rounds, rng: random.Random) -> None:
        self.entrants = [_Entrant(c) for c in candidates]
        self.run_round = run_round
        self.cfg = cfg
        self.rounds, self.rng = rounds, rng
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

    def final_rounds(self, entrants: Sequence[_Entrant], first_round: int) -> int:
        """``entrants`` measured as exhaustive measures candidates (interleaved rounds, the
        full budget); returns the number of the next round."""
        raw = run_rounds([e.candidate for e in entrants], self.run_round, budget_s=self.budget_s,
                         min_samples=self.min_samples, max_samples=self.max_samples,
                         rel_ci=self.rel_ci, rounds=self.rounds, rng=self.rng,
                         first_round=first_round, verify=False)
        for e, outs in zip(entrants, raw):
            e.finalist = True
            e.outcomes.extend(outs)
            e.final = merge_rounds(outs)
            e.failed = e.final.get("status") != Status.OK
        return first_round + self.rounds.count

    def readmit(self, next_round: int) -> None:
        """The machine may have drifted between the rounds: a dropped entrant whose samples
        are not clearly slower than the best finalist's final rounds would compete (tie or
        win) in winner selection with few, older samples; it gets final rounds too."""
        while True:
            done = [e.final for e in self.entrants if e.final is not None and not e.failed]
            if not done:
                return
            best_hi = min(done, key=lambda o: o["median_s"])["ci_high_s"]
            back = [e for e in self.entrants if e.dropped_in is not None and not e.finalist
                    and not e.failed and e.samples and summarize(e.samples)["ci_low_s"] <= best_hi]
            if not back:
                return
            for e in back:
                e.readmitted = True
            next_round = self.final_rounds(back, next_round)


def race_candidates(candidates: Sequence[Any], run_round: RunRound, *, budget_s: float,
                    min_samples: int = 10, max_samples: int = 10000, rel_ci: float = 0.01,
                    config: Optional[RaceConfig] = None, rounds: Optional[Rounds] = None,
                    rng: Optional[random.Random] = None) -> list[tuple[Any, dict[str, Any]]]:
    """Race ``candidates``; returns (candidate, outcome for its record) in the input order.

    ``run_round(candidate, params)`` verifies (``params.verify``) and times one candidate and
    returns a worker outcome dict (``convbench.outcome.OUTCOME_KEYS``). ``budget_s``,
    ``min_samples``, ``max_samples`` and ``rel_ci`` are the sweep's per-candidate settings,
    shared over the final ``rounds`` as ``exhaustive`` shares them.
    """
    race = _Race(candidates, run_round, config or RaceConfig(), budget_s=budget_s,
                 min_samples=min_samples, max_samples=max_samples, rel_ci=rel_ci,
                 rounds=rounds or Rounds(), rng=rng or random.Random(0))
    race.verify_all()
    race.first_round()
    last = race.middle_rounds()
    race.readmit(race.final_rounds(race.alive(), last + 1))
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
    if e.final is not None and e.final.get("status") == Status.OK:  # measured like exhaustive
        return _with_race_note(e.final, f"finalist (re-admitted after being dropped in round "
                               f"{e.dropped_in})" if e.readmitted else "finalist")
    if last.get("status") != Status.OK:  # failed after passing earlier rounds: that is the news
        rnd = last.get("_round")
        return _with_race_note(last, f"failed in round {rnd} after passing verification" if rnd == 1
                               else f"failed in round {rnd} after passing earlier rounds")
    out = _with_race_note(last, f"dropped in round {e.dropped_in}"
                          + (" (decisively slower)" if e.decisive else ""))
    screened = [e.by_round[r] for r in sorted(e.by_round)]
    out.update(summarize_rounds(screened))  # dropped: every sample it got, round by round
    out.update(samples_s=list(e.samples), round_samples_s=screened, n_samples=len(e.samples),
               converged=False)
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
        out["start_time"] = first.get("start_time") or out.get("start_time")
        for k in ("verify_call_s", "verify_est_s"):
            v = (first.get("info") or {}).get(k)
            if v is not None:
                out["info"].setdefault(k, v)
    out.pop("_round", None)
    out.pop("_budget_s", None)
    return out


# ---- race: the strategy ----------------------------------------------------------------------
def race(pool: Any, problem_name: str, spec: Any, candidates: Sequence[Any], make_task: MakeTask,
         emit: Emit, *, config: Optional[RaceConfig] = None, rounds: Optional[Rounds] = None) -> None:
    """Successive halving on confidence intervals (see the module docstring)."""
    if not candidates:
        return
    t = make_task(candidates[0])
    for cand, outcome in race_candidates(candidates, _pool_runner(pool, make_task),
                                         budget_s=float(t.budget_s), min_samples=t.min_samples,
                                         max_samples=t.max_samples, rel_ci=t.rel_ci, config=config,
                                         rounds=rounds, rng=_shuffler(problem_name, t.seed)):
        emit(cand, outcome)


#: name -> strategy(pool, problem_name, spec, candidates, make_task, emit); add one to plug it in
STRATEGIES: dict[str, Strategy] = {"exhaustive": exhaustive, "race": race}

__all__ = ["STRATEGIES", "Strategy", "Emit", "MakeTask", "exhaustive", "race", "race_candidates",
           "measure_candidates", "RaceConfig", "RoundParams", "Rounds", "DEFAULT_ROUNDS"]
