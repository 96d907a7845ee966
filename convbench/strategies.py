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

``race`` spends the full measurement only on candidates that can still win, and records what
it learnt about the others (:mod:`convbench.race`; settings in :class:`RaceConfig`, defaults
in brackets). ``L`` below is the leader's median per call.

1. **Order.** Candidates are ordered by how they did on the nearest problems this worker pool
   (one machine, one thread count) raced before (:class:`~convbench.race.RaceMemory`, distances
   between :func:`convbench.predict.features` vectors), then by their backends' declared
   ``heuristic_rank``. A candidate that was at least ``hopeless_ratio`` [20] times slower than
   the fastest on each of the ``hopeless_neighbours`` [2] nearest earlier problems that
   measured it, all within ``hopeless_radius`` [3.0 log2 units], is **pruned by prediction**
   and not run; its record names those problems and ratios. (Replayed problem by problem in
   recorded order with ``python benchmarks/race_vs_exhaustive.py --replay RUN ...`` on the
   committed runs of 2026-11-22 — the exhaustive ``resnet50`` runs ``*-040651-*``,
   ``*-053803-*``, ``*-061132-*``, ``*-073459-*``, the ``alexnet`` and ``mobilenet_v2`` runs
   and ``quick`` — the rule skipped 565 of 2459 candidates, the fastest of them 4.2x its
   problem's fastest; on the two ``engines-cpu`` runs of 2026-12-01, 25 of 1588, the fastest
   15.6x.)
2. **Leader.** The first candidate in that order is verified against the float64 reference
   and given a short **look** (``first_samples``..``first_max_samples`` [3..5] samples within
   ``first_fraction`` [0.1] of the budget, after the usual warm-up); if it is not ok the next
   one is tried. Its look's median is ``L``.
3. **Screening**, every other candidate, worker family by family (the leader's first, so a
   family switch and its settling pause come once per family): one **screening look**, not
   verified (``Screen`` in :mod:`convbench.measure`). Its first calls run under a watchdog that
   stops them after ``max(sure_ratio * L, kill_floor_s)`` [10 L, at least 0.5 s: stopping ends
   the worker process, and a fresh one costs a process start]. When the first call (set-up
   included) took longer than ``screen_ratio * L`` [3 L] and than ``decisive_min_s`` [20 ms],
   one more call is made, and if that one did too the look ends there, nothing timed.
   Otherwise the look is a short timing that stops once three samples are all over ``3 L``.
   A look is **decisive** when its fastest sample or call (or the watchdog's limit) is at least
   ``10 L`` and at least ``decisive_min_s`` (shorter calls can be one-time costs or a busy
   machine's time slices: on the 2-core development VM single calls of torch on a resnet50
   layer were measured 16x slow right after a warm-up, 19 ms against a 1.2 ms median): the
   candidate is pruned at once. A look whose median beats ``L``
   makes the candidate the leader once it passes verification (a wrong answer ends it as
   ``wrong``: no candidate leads, or is chosen, unverified).
4. **Who can still win**, judged against the final leader: a timed look within
   ``final_ratio * L`` [1.3 L] goes to the final rounds; a decisive look is pruned; a timed
   look at least ``prune_ratio * L`` [2 L] in a quiet window (no ``steal``, ``busy``,
   ``throttle`` or ``freq`` noise flag) is pruned; any other candidate gets a **second look**
   in a later window (timed, unless its first two calls are over ``10 L`` and 20 ms) and is
   pruned unless that look is within ``1.3 L``. (On a shared 2-core VM one window's speed can
   be 5-8x off for seconds, so a near loss is never decided on one window. Over three race
   runs on the 2-vCPU Intel Xeon VM, 3 of the 133 candidates pruned on one quiet look 2-3x
   the leader's time were within 5% of their problem's best in the ``exhaustive`` run, 0 of
   the 96 at 3x or more; but a ``prune_ratio`` of 3 made the race on GoogLeNet-v3 layers
   2.49x cheaper than ``exhaustive`` instead of 3.08x (2.74x on a rerun with 2), at a regret
   of 1.059 instead of 1.032 (1.028): the second looks cost more than the rare winner they
   save.)
5. **Final rounds**: the leader and the candidates within reach are measured exactly as
   ``exhaustive`` measures a candidate (the sweep's full budget over interleaved rounds); the
   first final round verifies those not verified yet. Their records' statistics are the final
   rounds' own, comparable with ``exhaustive`` records. After ``cut_rounds`` [3] rounds, and
   after each later one, a finalist whose median was at least ``cut_ratio`` [1.1] times the
   best finalist's in every round so far (the best: lowest median of its round medians)
   leaves the rounds: its record is ``ok`` with the rounds it had, ``info["cut"]`` gives the
   round and the per-round ratios. Rounds pair the candidates in time, so a drift that slows
   one round slows both sides of each ratio.
6. **Re-admission**: a pruned candidate whose fastest look is not slower than the best
   finalist's final interval (the machine drifted) gets final rounds too; when no finalist
   ended ok, every pruned candidate does, so a problem ``exhaustive`` finds a winner for
   always gets one.

Every candidate ends with exactly one record. Finalists are ``ok`` (``info["race"] =
"finalist"``). A candidate the race stopped measuring is ``pruned`` (never chosen; timing
fields null): ``info["pruned"]`` holds how (``one look``, ``one quiet look``, ``two looks``,
``predicted``), the measured lower bound per call (``lower_bound_s``: its fastest sample or
call, or the watchdog's limit), its ratio to the leader, the leader, each look, and whether
it was verified; its message says the same. Failures keep their status (a screening call
stopped at twice the per-call limit is ``timeout``, as in ``exhaustive``).
``info["race_rounds"]`` lists every task (stage, samples, screening calls), so no sample is
lost; ``wall_s``, ``warmup_calls`` and ``total_s`` add up all tasks.

Where the saving comes from, against ``exhaustive`` (which verifies every candidate and
measures each in every round): hopeless candidates cost nothing once neighbours are known,
slow ones one or two calls (or the watchdog's 0.5 s and a process start) instead of
verification plus five rounds of warm-up and samples, near ones a look or two, and only the
leader and its near rivals are verified and measured in full.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Mapping, Optional, Sequence

from .race import RaceConfig, RaceMemory, heuristic_rank, memory_for, run_race
from .rounds import DEFAULT_ROUNDS, RoundParams, Rounds, RunRound, merge_rounds, run_rounds

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
                         verify=p.verify, time=p.time, stop_above_s=p.stop_above_s,
                         min_time_s=p.min_time_s,
                         screen_above_s=p.screen_above_s, screen_kill_s=p.screen_kill_s)
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


# ---- race ----------------------------------------------------------------------------------
def race_candidates(candidates: Sequence[Any], run_round: RunRound, *, budget_s: float,
                    min_samples: int = 10, max_samples: int = 10000, rel_ci: float = 0.01,
                    config: Optional[RaceConfig] = None, rounds: Optional[Rounds] = None,
                    rng: Optional[random.Random] = None, spec: Any = None, threads: int = 1,
                    memory: Optional[RaceMemory] = None, max_call_s: Optional[float] = None,
                    name: str = "", rank: Optional[Callable[[Any], float]] = None,
                    ) -> list[tuple[Any, dict[str, Any]]]:
    """Race ``candidates``; returns (candidate, outcome for its record) in the input order.

    ``run_round(candidate, params)`` runs one task (verification, a look, a screening look or
    a final round, as ``params`` says) and returns a worker outcome dict
    (``convbench.outcome.OUTCOME_KEYS``). ``budget_s``, ``min_samples``, ``max_samples`` and
    ``rel_ci`` are the sweep's per-candidate settings, shared over the final ``rounds`` as
    ``exhaustive`` shares them. ``spec``, ``threads`` and ``memory`` (a RaceMemory, which this
    problem, named ``name``, is added to) order the candidates and prune the hopeless;
    ``max_call_s`` is the sweep's per-call limit; ``rank(candidate)`` orders candidates nothing
    was measured for (default: the backends' heuristic rank for ``spec``).
    """
    if rank is None:
        rank = heuristic_rank(spec) if spec is not None else (lambda c: 0.0)
    settings = dict(budget_s=float(budget_s), min_samples=min_samples, max_samples=max_samples,
                    rel_ci=rel_ci)
    return run_race(candidates, run_round, config or RaceConfig(), name=name, settings=settings,
                    rounds=rounds or Rounds(), rng=rng or random.Random(0), spec=spec,
                    threads=threads, memory=memory, max_call_s=max_call_s, rank=rank)


def race(pool: Any, problem_name: str, spec: Any, candidates: Sequence[Any], make_task: MakeTask,
         emit: Emit, *, config: Optional[RaceConfig] = None, rounds: Optional[Rounds] = None) -> None:
    """A leader, one screening look per candidate, the final rounds for those that can still
    win (see the module docstring); remembers what it measured in the pool's RaceMemory."""
    if not candidates:
        return
    t = make_task(candidates[0])
    for cand, outcome in race_candidates(
            candidates, _pool_runner(pool, make_task), budget_s=float(t.budget_s),
            min_samples=t.min_samples, max_samples=t.max_samples, rel_ci=t.rel_ci, config=config,
            rounds=rounds, rng=_shuffler(problem_name, t.seed), spec=spec,
            threads=int(getattr(pool, "threads", 1) or 1), memory=memory_for(pool),
            max_call_s=t.max_call_s, name=problem_name):
        emit(cand, outcome)


#: name -> strategy(pool, problem_name, spec, candidates, make_task, emit); add one to plug it in
STRATEGIES: dict[str, Strategy] = {"exhaustive": exhaustive, "race": race}

__all__ = ["STRATEGIES", "Strategy", "Emit", "MakeTask", "exhaustive", "race", "race_candidates",
           "measure_candidates", "RaceConfig", "RaceMemory", "RoundParams", "Rounds",
           "DEFAULT_ROUNDS"]
