"""``convbench.sweep()``: every candidate on every problem of a suite, verified, timed, recorded.

For each problem (in an order shuffled with a recorded seed) and each candidate
``backend:algorithm@device`` of the selected backends (also shuffled per problem), one record
is written to ``<out>/<run_id>/records.jsonl`` as soon as it is known:

* ``unavailable``: the backend's dependency is missing (the worker that loaded it says why);
* ``unsupported``: ``Backend.supports`` says no, checked in this process before anything runs
  (:mod:`convbench.sweeping.plan`);
* otherwise the candidate runs in its family's worker process (:mod:`convbench.worker`):
  verified against the float64 reference, then timed (:mod:`convbench.timing`), ending as
  ``ok``, ``wrong``, ``crashed``, ``timeout``, ``oom`` or ``error``. How the runnable
  candidates of one problem are measured is a strategy (:mod:`convbench.strategies`).

The steps: the options (:mod:`convbench.sweeping.options`, with ``--resume``'s reconciliation),
the plan (:mod:`convbench.sweeping.plan`), the run directory and the tuned-cache updates
(:mod:`convbench.sweeping.rundir`), the per-problem loop (here), the progress display
(:mod:`convbench.sweeping.progress`) and the winners table (:mod:`convbench.sweeping.winners`).
"""
from __future__ import annotations

import os
import random
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from ..errors import ConvbenchError
from ..outcome import make_record
from ..registry import Candidate
from ..spec import ConvSpec
from ..suites import Suite
from .options import Resumed, SweepOptions, resolve_suite, resume_run, select_backends
from .plan import DONE, RUN, BackendPlan, PlanEntry, ProblemPlan, describe_backends, make_plan
from .progress import Progress
from .rundir import CacheUpdates, finish_run, open_run


@dataclass
class SweepResult:
    """What a sweep produced: its run directory, records and winners."""

    run_dir: Optional[Path]
    records: list[dict]
    winners: dict
    meta: dict = field(default_factory=dict)
    suite: Optional[Suite] = None
    plan: list[PlanEntry] = field(default_factory=list)
    dry_run: bool = False
    interrupted: bool = False
    cache_report: Optional[str] = None
    cache_errors: list[str] = field(default_factory=list)   # failed tuned-cache writes

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return counts

    def table(self) -> str:
        """The winners per problem (runner-up, margin, verdict) as plain text, or a dry run's plan."""
        from .winners import format_plan, format_winners, records_line

        if self.meta.get("cluster"):  # winners per machine
            from .cluster_run import format_machine_winners

            return f"{format_machine_winners(self.records)}\n\n{records_line(self)}"
        return format_plan(self) if self.dry_run else format_winners(self)


def sweep(suite: Union[str, os.PathLike, Suite, ConvSpec, Sequence[Any], None] = None, *,
          backends: Optional[Sequence[str]] = None, device: Optional[str] = None,
          dtype: Optional[str] = None, layout: Optional[str] = None, n: Optional[int] = None,
          threads: Optional[int] = None, budget_s: Optional[float] = None,
          out: Optional[Union[str, os.PathLike]] = None,
          resume: Optional[Union[str, os.PathLike]] = None, dry_run: bool = False,
          seed: Optional[int] = None, strategy: Optional[str] = None, rounds: Optional[int] = None,
          cold_cache: Optional[bool] = None, timeout_s: Optional[float] = None,
          progress: bool = True, update_cache: bool = True,
          command: Optional[Sequence[str]] = None, verify_batch: int = 2,
          min_samples: int = 10, max_samples: int = 10000, rel_ci: float = 0.01,
          peak: Optional[Mapping[str, Any]] = None, stream: Any = None,
          cache: Any = None, max_call_s: Optional[float] = None, pool: Any = None,
          scheduler: Optional[str] = None, spread: bool = False) -> SweepResult:
    """Measure every candidate of the selected backends on every problem of ``suite``.

    ``suite``: a shipped suite name, a suite TOML or benchdnn batch file, a Suite, a ConvSpec
    or a list of specs/benchdnn descriptors (optional with ``resume``). ``backends``: name
    patterns with wildcards (default: every registered backend). ``device``: "cpu" (default)
    or "cuda". ``n``/``dtype``/``layout`` override every problem. ``threads``: default all
    usable cores. ``budget_s``: timing budget per candidate (default DEFAULT_BUDGET_S).
    ``out``: parent of the run directory (default ``./results``). ``resume``: a run directory
    (or run id under ``out``) to continue: pairs already recorded (any status) are skipped and
    the run's settings are kept (giving a different value is an error). ``seed`` (default 0)
    seeds the inputs. ``strategy``: a name in :data:`convbench.strategies.STRATEGIES`
    (default "exhaustive"). ``rounds``: interleaved rounds per problem (default
    :data:`convbench.rounds.DEFAULT_ROUNDS`): more rounds narrow the between-round interval
    that ties and ``compare`` use, at a fixed budget. ``dry_run`` plans without measuring or writing anything.
    ``update_cache``: store each problem's winner in the tuned cache as soon as the problem
    is finished; ``cache``: its path (default: the default cache). ``peak``: an already
    measured ``{"gemm_gflops", "gemm_dtype", "bandwidth_gbs"}`` to store instead of
    calibrating (tests, repeated sweeps). ``max_call_s`` (default DEFAULT_MAX_CALL_S; 0 or
    less: no limit): a candidate whose one verification call, scaled to the full batch, takes
    longer is recorded as ``timeout`` and not timed. ``verify_batch``, ``min_samples``,
    ``max_samples``, ``rel_ci``: the verification batch and the timer's stopping rule.
    ``pool``: a :class:`~convbench.worker.WorkerPool` with the same thread count to use
    (and leave open) instead of starting one. Progress goes to ``stream`` (default stderr).
    ``scheduler``: measure on a Dask cluster instead (``tcp://HOST:PORT`` of a running
    scheduler, or ``local:N`` for N local worker processes): every problem on every machine
    type, or once on any machine with ``spread`` (:mod:`convbench.sweeping.distributed`).
    """
    stream = stream or sys.stderr
    out_dir = Path(out) if out is not None else Path.cwd() / "results"
    given = dict(backends=backends, device=device, dtype=dtype, layout=layout, n=n, threads=threads,
                 budget_s=budget_s, seed=seed, strategy=strategy, rounds=rounds, cold_cache=cold_cache,
                 timeout_s=timeout_s, max_call_s=max_call_s)
    tuning = dict(verify_batch=verify_batch, min_samples=min_samples, max_samples=max_samples,
                  rel_ci=rel_ci)
    resumed: Optional[Resumed] = None
    if resume is not None:
        opts, the_suite, resumed = resume_run(resume, out_dir, suite, given, tuning)
    else:
        opts = SweepOptions.from_arguments(**given, **tuning, remote=scheduler is not None)
        the_suite = resolve_suite(suite, opts)
    names = select_backends(opts.backends)
    shuffle_seed = int(resumed.meta["shuffle_seed"]) if resumed else secrets.randbits(32)
    updates = CacheUpdates(cache) if update_cache and not dry_run else None
    if updates is not None:
        updates.open()
    if scheduler is not None or (resumed is not None and resumed.meta.get("cluster")):
        return _sweep_on_cluster(scheduler, spread, dry_run, threads, opts=opts, suite=the_suite,
                                 resumed=resumed, names=names, out_dir=out_dir,
                                 shuffle_seed=shuffle_seed, updates=updates, peak=peak,
                                 command=command, progress=progress, stream=stream)
    run = _Run(opts, the_suite, resumed, Progress(progress, len(the_suite.problems), stream),
               pool, stream)
    try:
        problems = run.plan(names, random.Random(shuffle_seed))
        if dry_run:
            return run.dry_result(problems)
        run.open(out_dir, problems, shuffle_seed, peak, command)
        run.measure(problems, updates)
        finish_run(run.writer, opts.threads, stream)
    except KeyboardInterrupt:
        run.report_interrupt(updates)
        raise
    finally:
        run.close()
    return run.result(updates, show_cache=progress)


def _sweep_on_cluster(scheduler: Optional[str], spread: bool, dry_run: bool,
                      threads: Optional[int], **kw: Any) -> SweepResult:
    from .cluster_run import sweep_on_cluster

    if scheduler is None:
        raise ConvbenchError(f"--resume: run {kw['resumed'].run_dir} was measured on a Dask "
                             "cluster; give --scheduler ADDRESS (tcp://HOST:PORT or local:N)")
    if dry_run:
        raise ConvbenchError("--dry-run: not available with --scheduler (each machine's workers "
                             "decide which candidates it has); leave one of them out")
    return sweep_on_cluster(scheduler, spread=spread, threads=threads, **kw)


class _Run:
    """One sweep in progress: its worker pool, plan, run directory and records."""

    def __init__(self, opts: SweepOptions, suite: Suite, resumed: Optional[Resumed],
                 prog: Progress, pool: Any, stream: Any) -> None:
        from ..worker import WorkerPool

        if pool is not None and pool.threads != opts.threads:
            raise ConvbenchError(f"pool: its workers run {pool.threads} threads, this sweep {opts.threads}")
        self.opts, self.suite, self.resumed, self.prog, self.stream = opts, suite, resumed, prog, stream
        self.own_pool = pool is None
        self.pool = WorkerPool(opts.threads) if pool is None else pool
        self.records: list[dict] = list(resumed.records) if resumed else []
        self.bplans: dict[str, BackendPlan] = {}
        self.writer: Any = None
        self.entries: list[PlanEntry] = []

    def plan(self, names: list[str], rng: random.Random) -> list[ProblemPlan]:
        """The backends described by their workers, and every problem's candidates."""
        o = self.opts
        self.prog.note(f"convbench sweep {self.suite.name}: {len(self.suite.problems)} problems, "
                       f"loading {len(names)} backends ({o.threads} threads, {o.device})")
        bplans = describe_backends(self.pool, names, o.device, self.prog.note)
        if not bplans:
            raise ConvbenchError(f"no selected backend has a candidate on device {o.device!r}")
        self.bplans = {bp.name: bp for bp in bplans}
        done = self.resumed.done_pairs if self.resumed else set()
        problems = make_plan(self.suite, bplans, o.device, rng, done)
        self.entries = [e for p in problems for e in p.entries]
        self.prog.set_total(sum(e.status == RUN for e in self.entries))
        return problems

    @property
    def n_candidates(self) -> int:
        return len({str(e.candidate) for e in self.entries})

    def dry_result(self, problems: list[ProblemPlan]) -> SweepResult:
        o = self.opts
        meta = {"suite": self.suite.name, "budget_s": o.budget_s, "device": o.device,
                "threads": o.threads, "strategy": o.strategy, "rounds": o.rounds, "seed": o.seed,
                "problems": len(self.suite.problems), "candidates": self.n_candidates}
        return SweepResult(None, [], {}, meta, self.suite, self.entries, dry_run=True)

    def open(self, out_dir: Path, problems: list[ProblemPlan], shuffle_seed: int,
             peak: Optional[Mapping[str, Any]], command: Optional[Sequence[str]]) -> None:
        """Create (or reopen) the run directory."""
        self.writer = open_run(out_dir, self.suite, self.opts, self.resumed,
                               n_candidates=self.n_candidates, shuffle_seed=shuffle_seed,
                               peak=peak, command=command, note=self.prog.note)
        self.prog.note(f"run {self.writer.meta['run_id']}: {self.prog.total} candidate runs, "
                       f"results in {self.writer.run_dir}")

    def measure(self, problems: list[ProblemPlan], updates: Optional[CacheUpdates]) -> None:
        """Every problem in turn: record what does not run, measure the rest by the strategy,
        store the problem's winner in the tuned cache."""
        from ..rounds import with_rounds
        from ..strategies import STRATEGIES

        if updates is not None and self.resumed and self.resumed.records:
            unfinished = {e.problem for e in self.entries if e.status == RUN}
            updates.store_finished(self.resumed.records, unfinished, self.writer.meta)
        for pp in problems:
            emit = self._emitter(pp)
            for e in pp.entries:
                if e.status not in (RUN, DONE):
                    emit(e.candidate, {"status": e.status, "message": e.reason, "_measured": False})
            if pp.runnable:
                strategy = with_rounds(STRATEGIES[self.opts.strategy], self.opts.rounds)
                strategy(self.pool, pp.problem.name, pp.problem.spec, pp.runnable,
                         self._task_maker(pp), emit)
                if updates is not None:
                    updates.store([r for r in self.records if r["problem"] == pp.problem.name],
                                  self.writer.meta)

    def _emitter(self, pp: ProblemPlan) -> Any:
        """emit(candidate, outcome): write the record of one candidate of ``pp``."""
        spec = pp.problem.spec
        base = {"run_id": self.writer.meta["run_id"], "problem": pp.problem.name,
                "suite": self.suite.name, "spec": spec.to_dict(), "spec_key": spec.key,
                "label": spec.replace(name="").label}
        meta = self.writer.meta

        def emit(cand: Candidate, outcome: Mapping[str, Any]) -> dict:
            rec = make_record(base, spec, cand, outcome, threads=self.opts.threads,
                              env_id=meta.get("env_id"),
                              hostname=(meta.get("environment") or {}).get("hostname"),
                              gemm_peak=(meta.get("peak") or {}).get("gemm_gflops"),
                              peak=meta.get("peak"), cold_cache=self.opts.cold_cache)
            self.writer.append(rec)
            self.records.append(rec)
            self.prog.finish_one(rec, measured=outcome.get("_measured", True), index=pp.index)
            return rec

        return emit

    def _task_maker(self, pp: ProblemPlan) -> Any:
        """make_task(candidate, **overrides): the worker Task of one candidate of ``pp``."""
        from ..worker import Task

        def make_task(cand: Candidate, **overrides: Any) -> Task:
            self.prog.start(pp.index, pp.problem.name, str(cand))
            kw = dict(spec=pp.problem.spec.to_dict(), backend=cand.backend,
                      target=self.bplans[cand.backend].target, algorithm=cand.algorithm,
                      device=cand.device, **self.opts.task_settings())
            kw.update(overrides)
            return Task(**kw)

        return make_task

    def report_interrupt(self, updates: Optional[CacheUpdates]) -> None:
        """Ctrl-C: say what was kept and how to continue."""
        if self.writer is None:
            return
        self.prog.close()
        kept = (f"; the winners of finished problems are in the tuned cache ({updates.written} "
                f"entries)" if updates is not None and updates.error is None else "")
        print(f"\nconvbench sweep: interrupted; {self.writer.written} records written{kept}. "
              f"Continue with --resume {self.writer.run_dir}", file=self.stream)

    def close(self) -> None:
        self.prog.close()
        if self.own_pool:
            self.pool.close()
        if self.writer is not None:
            self.writer.close()

    def result(self, updates: Optional[CacheUpdates], show_cache: bool) -> SweepResult:
        """The finished sweep (printing the cache report when ``show_cache``)."""
        from ..selection import select_winners

        meta = dict(self.writer.meta) if self.writer is not None else {}
        result = SweepResult(self.writer.run_dir, self.records, select_winners(self.records), meta,
                             self.suite, self.entries)
        if updates is not None:
            result.cache_report = updates.report(meta.get("run_id"))
            result.cache_errors = list(updates.errors)
            if show_cache or updates.errors:
                print(result.cache_report, file=self.stream)
        return result


__all__ = ["sweep", "SweepResult"]
