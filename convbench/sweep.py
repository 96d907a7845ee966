"""``convbench.sweep``: every candidate on every problem of a suite, verified, timed, recorded.

For each problem (in an order shuffled with a recorded seed, so slow drift of the machine is
not confounded with shape order) and each candidate ``backend:algorithm@device`` of the
selected backends (also shuffled per problem), one record is written to
``<out>/<run_id>/records.jsonl`` as soon as it is known:

* ``unavailable``: the backend's dependency is missing (the worker that loaded it says why);
* ``unsupported``: ``Backend.supports`` says no, checked in this process before anything runs
  (cheap; the backend module is imported here, its framework is not);
* otherwise the candidate runs in its family's worker process (:mod:`convbench.worker`):
  verified against the float64 reference, then timed (:mod:`convbench.timing`), ending as
  ``ok``, ``wrong``, ``crashed``, ``timeout``, ``oom`` or ``error``.

How the runnable candidates of one problem are measured is a *strategy*: a function in
:data:`STRATEGIES` called as ``strategy(pool, problem_name, spec, candidates, make_task,
emit)``; ``make_task(candidate, **task_overrides)`` builds the :class:`~convbench.worker.Task`
and ``emit(candidate, outcome)`` writes the record (and returns it). ``"exhaustive"`` times
every candidate with the full budget.

The machine's peak GEMM rate and memory bandwidth are measured once per run, before the
sweep, by :func:`convbench.environment.measure_peak` in a fresh subprocess whose BLAS is
pinned to the run's thread count, and stored in meta.json (``peak``); each record's
``peak_pct`` is its GFLOP/s over that GEMM rate.
"""
from __future__ import annotations

import math
import os
import random
import secrets
import sqlite3
import sys
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from .errors import ConvbenchError, ResultsError, SuiteError, UnknownBackendError
from .outcome import make_record
from .registry import Candidate
from .spec import ConvSpec
from .suites import Problem, Suite, load_suite, suite_from_specs

#: Seconds of timing per candidate unless --budget says otherwise (the timer stops earlier when
#: the CI of the median is within +-1%). Chosen so `convbench sweep quick` stays under a
#: minute on 2 cores with the numpy/scipy/torch/tensorflow backends.
DEFAULT_BUDGET_S = 0.2
#: Hard limit per candidate (verification + preparation + timing) before its worker is killed.
DEFAULT_TIMEOUT_S = 120.0
#: a candidate whose single call exceeds this many seconds is recorded as timeout, not timed
DEFAULT_MAX_CALL_S = 1.0
#: Time spent measuring the peak GEMM rate and bandwidth at the start of a run.
PEAK_BUDGET_S = 1.0

Emit = Callable[[Candidate, Mapping[str, Any]], dict]
MakeTask = Callable[..., Any]


def _exhaustive(pool: Any, problem_name: str, spec: ConvSpec, candidates: Sequence[Candidate],
                make_task: MakeTask, emit: Emit) -> None:
    """Verify and time every candidate with the full budget, one after the other."""
    for cand in candidates:
        emit(cand, pool.run(make_task(cand)))


def _race(pool: Any, problem_name: str, spec: ConvSpec, candidates: Sequence[Candidate],
          make_task: MakeTask, emit: Emit) -> None:
    """Successive halving on confidence intervals (see convbench.tuner)."""
    from .tuner import race

    race(pool, problem_name, spec, candidates, make_task, emit)


#: name -> strategy(pool, problem_name, spec, candidates, make_task, emit) -> None
STRATEGIES: dict[str, Callable[..., None]] = {"exhaustive": _exhaustive, "race": _race}


# ---- results -------------------------------------------------------------------------------
@dataclass
class PlanEntry:
    """One (problem, candidate) pair as planned: run it, or record why not."""

    problem: str
    candidate: Candidate
    status: str  # "run", "unavailable", "unsupported", "done" (already recorded: resume)
    reason: Optional[str] = None


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

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return counts

    def table(self) -> str:
        """The winners per problem (runner-up and margin) as plain aligned text."""
        if self.dry_run:
            return format_plan(self)
        return format_winners(self)


def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def _winner_rows(result: SweepResult) -> tuple[list[str], list[list[str]]]:
    head = ["problem", "shape", "winner", "median", "GFLOP/s", "runner-up", "margin", "verdict"]
    rows = []
    device = result.meta.get("device", "cpu")
    by_pair = {(r["problem"], r["candidate"]): r for r in result.records}
    problems = result.suite.problems if result.suite else []
    seen = {p.name for p in problems}
    names = [p.name for p in problems] + sorted({r["problem"] for r in result.records} - seen)
    labels = {p.name: p.spec.replace(name="").label for p in problems}
    for name in names:
        recs = [r for r in result.records if r["problem"] == name]
        if not recs:
            continue
        label = labels.get(name) or recs[0].get("label", "")
        w = result.winners.get((name, device))
        if w is None:
            statuses: dict[str, int] = {}
            for r in recs:
                statuses[r["status"]] = statuses.get(r["status"], 0) + 1
            summary = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
            rows.append([name, label, "(none ok)", "-", "-", "-", "-", summary])
            continue
        rec = by_pair.get((name, w.candidate), {})
        gf = rec.get("gflops")
        margin = "-" if w.margin is None else f"{w.margin * 100:+.1f}%"
        verdict = ("only one ok" if w.runner_up is None else "decisive" if w.decisive
                   else f"tie ({len(w.tied)}), robust pick" if w.candidate != w.tied[0] else f"tie ({len(w.tied)})")
        rows.append([name, label, w.candidate, fmt_time(w.median_s), "-" if gf is None else f"{gf:.3g}",
                     w.runner_up or "-", margin, verdict])
    return head, rows


def _align(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    lines = ["  ".join(str(v).ljust(wd) for v, wd in zip(r, widths)).rstrip() for r in [head] + rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    return "\n".join(lines)


def format_winners(result: SweepResult) -> str:
    head, rows = _winner_rows(result)
    counts = result.status_counts()
    summary = ", ".join(f"{k} {counts[k]}" for k in sorted(counts, key=lambda s: (s != "ok", s)))
    where = f" in {result.run_dir}" if result.run_dir else ""
    text = _align(head, rows) if rows else "(no records)"
    return f"{text}\n\n{len(result.records)} records{where}: {summary or 'none'}"


def format_plan(result: SweepResult) -> str:
    counts: dict[str, int] = {}
    for e in result.plan:
        counts[e.status] = counts.get(e.status, 0) + 1
    cands = sorted({str(e.candidate) for e in result.plan})
    reasons = sorted({(str(e.candidate), e.reason) for e in result.plan if e.status == "unavailable"})
    lines = [f"dry run: {len(result.suite or [])} problems x {len(cands)} candidates "
             f"= {len(result.plan)} pairs: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))]
    budget = result.meta.get("budget_s") or DEFAULT_BUDGET_S
    lines.append(f"timing budget: {budget:g} s per candidate, so at most ~{counts.get('run', 0) * budget:.0f} s "
                 "of timing (verification, warm-up and worker start-up come on top)")
    lines.append("candidates: " + ", ".join(cands))
    for cand, reason in reasons:
        lines.append(f"  {cand}: unavailable: {reason}")
    head = ["problem", "shape", "run", "unsupported"]
    rows = []
    for p in (result.suite.problems if result.suite else []):
        es = [e for e in result.plan if e.problem == p.name]
        rows.append([p.name, p.spec.replace(name="").label, str(sum(e.status == "run" for e in es)),
                     str(sum(e.status == "unsupported" for e in es))])
    return "\n".join(lines) + "\n\n" + _align(head, rows)


# ---- progress ------------------------------------------------------------------------------
class _Progress:
    """Progress display: rich's bar on a terminal when rich is installed, a plain ``\\r`` line
    on a terminal otherwise, one line per finished candidate when not a terminal."""

    def __init__(self, enabled: bool, total: int, n_problems: int, stream: Any = None) -> None:
        self.enabled = enabled
        self.total = max(total, 0)
        self.n_problems = n_problems
        self.stream = stream or sys.stderr
        self.done = 0
        self.run_time = 0.0
        self.t0 = time.monotonic()
        self.current = ""
        self._measuring = False
        self._rich = None
        self._task = None
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if enabled and self.tty:
            try:
                from rich.console import Console
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                           TimeElapsedColumn, TimeRemainingColumn)

                self._rich = Progress(TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                                      TimeRemainingColumn(), console=Console(file=self.stream),
                                      transient=True)
                self._rich.start()
                self._task = self._rich.add_task("starting", total=self.total or None)
            except ImportError:
                self._rich = None

    def set_total(self, total: int) -> None:
        self.total = max(total, 0)
        if self._rich is not None:
            self._rich.update(self._task, total=self.total or None)

    def eta(self) -> Optional[float]:
        if self.done == 0:
            return None
        return (time.monotonic() - self.t0) / self.done * (self.total - self.done)

    def start(self, index: int, problem: str, candidate: str) -> None:
        if not self._measuring:  # the ETA counts from the first measured candidate
            self._measuring = True
            self.t0 = time.monotonic()
        if not self.enabled:
            return
        self.current = f"problem {index}/{self.n_problems} {problem} {candidate}"
        if self._rich is not None:
            self._rich.update(self._task, description=self.current)
        elif self.tty:
            eta = self.eta()
            text = (f"{self.done}/{self.total} {self.current}"
                    + (f"  ETA {_fmt_eta(eta)}" if eta is not None else ""))
            self.stream.write("\r\x1b[K" + text[:200])
            self.stream.flush()

    def finish_one(self, record: Mapping[str, Any], measured: bool, index: int = 0) -> None:
        if measured:
            self.done += 1
            if self._rich is not None:
                self._rich.update(self._task, advance=1)
        if not self.enabled or self._rich is not None or self.tty:
            return
        status = record["status"]
        detail = fmt_time(record.get("median_s")) if status == "ok" else (record.get("message") or "")
        eta = self.eta()
        line = (f"[{self.done}/{self.total}] problem {index}/{self.n_problems} {record['problem']} "
                f"{record['candidate']}: {status}"
                + (f" {detail[:120]}" if detail else "")
                + (f" (ETA {_fmt_eta(eta)})" if measured and eta is not None else ""))
        print(line, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.console.print(text)
        else:
            if self.tty:
                self.stream.write("\r\x1b[K")
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif self.enabled and self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _fmt_eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


# ---- the sweep -----------------------------------------------------------------------------
def _resolve_suite(suite: Any, n: Optional[int], dtype: Optional[str], layout: Optional[str]) -> Suite:
    if isinstance(suite, Suite):
        return suite.with_overrides(n=n, dtype=dtype, layout=layout)
    if isinstance(suite, ConvSpec):
        suite = [suite]
    if isinstance(suite, (list, tuple)):
        return suite_from_specs(suite).with_overrides(n=n, dtype=dtype, layout=layout)
    if isinstance(suite, (str, os.PathLike)):
        return load_suite(suite, n=n, dtype=dtype, layout=layout)
    raise SuiteError(f"suite: {suite!r} is not a suite name, file, Suite, ConvSpec or list of specs")


def _suite_from_meta(meta: Mapping[str, Any]) -> Suite:
    items = meta.get("problem_list")
    if not items:
        raise ResultsError("the run's meta.json holds no problem_list; it cannot be resumed")
    suite = Suite(name=str(meta.get("suite") or "resumed"), source=str(meta.get("suite_source") or ""))
    for item in items:
        name, spec_dict = item[0], item[1]
        count = int(item[2]) if len(item) > 2 else 1
        suite.problems.append(Problem(name, ConvSpec.from_dict(spec_dict)))
        suite.counts[name] = count
    return suite


def _select_backends(patterns: Optional[Sequence[str]]) -> list[str]:
    from .registry import list_backends

    if patterns is None:
        return list_backends()
    if isinstance(patterns, str):
        patterns = [patterns]
    pats = [p.strip() for item in patterns for p in str(item).split(",") if p.strip()]
    names = list_backends(pats)
    if not names:
        raise UnknownBackendError(f"--backends {' '.join(pats)}: matches no backend; known backends: "
                                  f"{', '.join(list_backends()) or 'none'}")
    return names


@dataclass
class _BackendPlan:
    name: str
    target: str
    available: bool
    reason: Optional[str]
    algorithms: list[str]
    backend: Any  # the Backend instance in this process (for supports), or None


def _describe_backends(pool: Any, names: Sequence[str], device: str, note: Callable[[str], None]) -> list[_BackendPlan]:
    from .registry import backend_target, get_backend

    loaded: dict[str, tuple[str, Any]] = {}
    broken: dict[str, str] = {}
    by_family: dict[str, list[str]] = {}
    for name in names:
        try:
            target = backend_target(name)
            backend = get_backend(name)  # imports the backend module only, never its framework
        except ConvbenchError as exc:
            broken[name] = str(exc)
            continue
        loaded[name] = (target, backend)
        by_family.setdefault(pool.family_of(target, name), []).append(name)

    # Each family's worker imports its framework while answering describe; the families load
    # concurrently (one thread per family, so each worker is still used by one thread only).
    descs: dict[str, dict] = {}

    def describe_family(members: list[str]) -> None:
        for member in members:
            try:
                descs[member] = pool.describe(member)
            except ConvbenchError as exc:
                descs[member] = {"available": False, "reason": str(exc)}

    import threading

    threads = [threading.Thread(target=describe_family, args=(members,), daemon=True)
               for members in by_family.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    plans = []
    for name in names:
        if name in broken:
            plans.append(_BackendPlan(name, "", False, broken[name], ["default"], None))
            continue
        target, backend = loaded[name]
        desc = descs[name]
        avail = bool(desc.get("available"))
        algos = list((desc.get("algorithms") or {}).get(device) or [])
        devices = desc.get("devices") or sorted(backend.capabilities.devices)
        if device not in devices or (avail and not algos):
            note(f"{name}: no candidate on device {device!r}; skipped")
            continue
        if not algos:  # unavailable, and it cannot list its algorithms without its framework
            algos = ["default"]
        from .registry import Support

        # the worker's answer is the truth; seeding it keeps available() from importing here
        backend._available_cache = Support(avail, desc.get("reason") or "")
        plans.append(_BackendPlan(name, target, avail, desc.get("reason"), algos, backend))
    return plans


#: Top-level modules the sweep's parent process must never import (frameworks and JITs).
FRAMEWORK_MODULES = ("torch", "tensorflow", "keras", "jax", "jaxlib", "numba", "llvmlite", "triton",
                     "cupy", "tensorrt", "onnxruntime")


class _FrameworkImportBlocker:
    """A sys.meta_path finder that refuses framework imports while installed (records that it did)."""

    def __init__(self) -> None:
        self.tripped = False

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        top = name.partition(".")[0]
        if top in FRAMEWORK_MODULES and top not in sys.modules:
            self.tripped = True
            raise ImportError(f"convbench sweep: {name!r} is only imported in worker processes")
        return None

    def __enter__(self) -> "_FrameworkImportBlocker":
        sys.meta_path.insert(0, self)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


def _support(bp: _BackendPlan, spec: ConvSpec, device: str, algorithm: str) -> tuple[bool, Optional[str]]:
    """The parent-side check: (runnable, reason if not).

    The capability table is checked here; the backend's own rules (``_supports``) too, unless
    they need the framework (an import is refused here, never performed) or fail: then the
    worker decides, and its "unsupported" answer is recorded like this one. Availability was
    answered by the worker (describe) and seeded into the backend, so it is not re-checked here.
    """
    b = bp.backend
    basic = b.capabilities.check(spec, device)
    if not basic:
        return False, basic.reason
    with _FrameworkImportBlocker() as blocker:
        try:
            s = b._supports(spec, device, algorithm)
        except Exception:
            return True, None
    if blocker.tripped:
        return True, None
    return (True, None) if s else (False, s.reason)


def _load_avg() -> Optional[float]:
    """The 1-minute load average (recorded in meta: timings taken on a busy machine are suspect)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _now_iso() -> str:
    from .results import now_iso

    return now_iso()


def _check_same(what: str, given: Any, recorded: Any) -> None:
    if given is not None and recorded is not None and given != recorded:
        raise ConvbenchError(f"--resume: {what}={given!r} conflicts with the run's {what}={recorded!r}; "
                             f"leave it out to keep the run's value")


def sweep(suite: Union[str, os.PathLike, Suite, ConvSpec, Sequence[Any], None] = None, *,
          backends: Optional[Sequence[str]] = None, device: Optional[str] = None,
          dtype: Optional[str] = None, layout: Optional[str] = None, n: Optional[int] = None,
          threads: Optional[int] = None, budget_s: Optional[float] = None,
          out: Optional[Union[str, os.PathLike]] = None,
          resume: Optional[Union[str, os.PathLike]] = None, dry_run: bool = False,
          seed: Optional[int] = None, strategy: Optional[str] = None,
          cold_cache: Optional[bool] = None, timeout_s: Optional[float] = None,
          progress: bool = True, update_cache: bool = True,
          command: Optional[Sequence[str]] = None, verify_batch: int = 2,
          min_samples: int = 10, max_samples: int = 10000, rel_ci: float = 0.01,
          peak: Optional[Mapping[str, Any]] = None, stream: Any = None,
          cache: Any = None, max_call_s: Optional[float] = None, pool: Any = None) -> SweepResult:
    """Measure every candidate of the selected backends on every problem of ``suite``.

    ``suite``: a shipped suite name, a suite TOML or benchdnn batch file, a Suite, a ConvSpec
    or a list of specs/benchdnn descriptors (optional with ``resume``). ``backends``: name
    patterns with wildcards (default: every registered backend). ``device``: "cpu" (default)
    or "cuda". ``n``/``dtype``/``layout`` override every problem. ``threads``: default all
    usable cores. ``budget_s``: timing budget per candidate (default DEFAULT_BUDGET_S).
    ``out``: parent of the run directory (default ``./results``). ``resume``: a run directory
    (or run id under ``out``) to continue: pairs already recorded (any status) are skipped and
    the run's seed, threads, device, budget and strategy are kept (giving a different value is
    an error). ``seed`` (default 0) seeds the inputs. ``dry_run`` plans without measuring or
    writing anything. ``update_cache``: store each problem's winner in the tuned cache as soon
    as the problem is finished; ``cache``: its path (default: the default cache).
    ``peak``: an already measured ``{"gemm_gflops", "gemm_dtype", "bandwidth_gbs"}`` to store
    instead of calibrating (tests, repeated sweeps). ``max_call_s`` (default
    DEFAULT_MAX_CALL_S; 0 or a negative value: no limit): a candidate whose one verification
    call, scaled to the full batch, takes longer is recorded as ``timeout`` and not timed, so
    that 10 mandatory samples of a hopeless candidate do not stall the sweep.
    ``pool``: a :class:`~convbench.worker.WorkerPool` with the same thread count to use
    (and leave open) instead of starting one: back-to-back sweeps then share warm workers.
    Progress goes to ``stream`` (default stderr).
    """
    from . import __version__
    from .environment import available_cores, env_id, fingerprint, measure_peak
    from .results import RunWriter, new_run_id, read_meta, read_records
    from .selection import select_winners
    from .worker import Task, WorkerPool

    stream = stream or sys.stderr
    out_dir = Path(out) if out is not None else Path.cwd() / "results"
    resume_meta: Optional[dict] = None
    done_pairs: set[tuple[str, str]] = set()
    old_records: list[dict] = []
    run_dir: Optional[Path] = None
    if resume is not None:
        run_dir = Path(resume)
        if not run_dir.is_dir() and (out_dir / str(resume)).is_dir():
            run_dir = out_dir / str(resume)
        if not run_dir.is_dir():
            raise ResultsError(f"--resume {resume}: no such run directory")
        resume_meta = read_meta(run_dir)
        for what, given in (("seed", seed), ("threads", threads), ("device", device),
                            ("budget_s", budget_s), ("strategy", strategy),
                            ("cold_cache", cold_cache), ("timeout_s", timeout_s),
                            ("max_call_s", max_call_s)):
            _check_same(what, given, resume_meta.get(what))
        rec_over = resume_meta.get("overrides") or {}
        for what, given, recorded in (("n", n, rec_over.get("n")), ("dtype", dtype, rec_over.get("dtype")),
                                      ("layout", layout, rec_over.get("layout")),
                                      ("backends", None if backends is None else list(backends),
                                       resume_meta.get("backends"))):
            if given is not None and given != recorded:
                raise ConvbenchError(f"--resume: {what}={given!r} conflicts with the run's "
                                     f"{what}={recorded!r}; leave it out to keep the run's value")
        seed = resume_meta.get("seed", 0)
        threads = resume_meta.get("threads")
        device = resume_meta.get("device", "cpu")
        budget_s = resume_meta.get("budget_s", DEFAULT_BUDGET_S)
        strategy = resume_meta.get("strategy", "exhaustive")
        cold_cache = bool(resume_meta.get("cold_cache", False))
        timeout_s = resume_meta.get("timeout_s", DEFAULT_TIMEOUT_S)
        max_call_s = resume_meta.get("max_call_s", DEFAULT_MAX_CALL_S)
        backends = resume_meta.get("backends")
        the_suite = _suite_from_meta(resume_meta)
        old_records = read_records(run_dir) if (run_dir / "records.jsonl").exists() else []
        done_pairs = {(r.get("problem"), r.get("candidate")) for r in old_records}
        if suite is not None:
            given_suite = _resolve_suite(suite, n, dtype, layout)
            if [(p.name, p.spec.key) for p in given_suite] != [(p.name, p.spec.key) for p in the_suite]:
                raise ConvbenchError(f"--resume: suite {given_suite.name!r} is not the run's suite "
                                     f"({the_suite.name!r}); leave SUITE out to resume")
    else:
        if suite is None:
            raise SuiteError("no suite given: name a suite, a suite/batch file or --spec descriptors")
        the_suite = _resolve_suite(suite, n, dtype, layout)
        if not the_suite.problems:
            raise SuiteError(f"suite {the_suite.name!r} has no problems")

    seed = 0 if seed is None else int(seed)
    device = device or "cpu"
    if device not in ("cpu", "cuda"):
        raise ConvbenchError(f"device: {device!r} is not a device; use cpu or cuda")
    threads = available_cores() if threads is None else int(threads)
    budget_s = DEFAULT_BUDGET_S if budget_s is None else float(budget_s)
    if not budget_s > 0:
        raise ConvbenchError(f"budget: {budget_s!r} must be a number of seconds > 0")
    timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)
    max_call_s = DEFAULT_MAX_CALL_S if max_call_s is None else float(max_call_s)
    if not timeout_s > 0:
        raise ConvbenchError(f"timeout: {timeout_s!r} must be a number of seconds > 0")
    strategy = strategy or "exhaustive"
    if strategy not in STRATEGIES:
        raise ConvbenchError(f"strategy: {strategy!r} is not a strategy; use one of {', '.join(sorted(STRATEGIES))}")
    cold_cache = bool(cold_cache)
    names = _select_backends(backends)

    shuffle_seed = int(resume_meta["shuffle_seed"]) if resume_meta else secrets.randbits(32)
    rng = random.Random(shuffle_seed)
    order = list(range(len(the_suite.problems)))
    rng.shuffle(order)

    prog = _Progress(progress, 0, len(the_suite.problems), stream)
    own_pool = pool is None
    if own_pool:
        pool = WorkerPool(threads)
    elif pool.threads != threads:
        raise ConvbenchError(f"pool: its workers run {pool.threads} threads, this sweep {threads}")
    writer: Optional[RunWriter] = None
    records: list[dict] = list(old_records)
    plan: list[PlanEntry] = []
    interrupted = False
    result_meta: dict = {}
    updates = _CacheUpdates(cache) if update_cache and not dry_run else None
    if updates is not None:
        updates.open()
    try:
        prog.note(f"convbench sweep {the_suite.name}: {len(the_suite.problems)} problems, "
                  f"loading {len(names)} backends ({threads} threads, {device})")
        bplans = _describe_backends(pool, names, device, prog.note)
        if not bplans:
            raise ConvbenchError(f"no selected backend has a candidate on device {device!r}")
        per_problem: list[tuple[int, Problem, list[tuple[_BackendPlan, Candidate]]]] = []
        for i, idx in enumerate(order):
            prob = the_suite.problems[idx]
            cands = [(bp, Candidate(bp.name, a, device)) for bp in bplans for a in bp.algorithms]
            rng.shuffle(cands)
            per_problem.append((i + 1, prob, cands))
            for bp, cand in cands:
                if (prob.name, str(cand)) in done_pairs:
                    plan.append(PlanEntry(prob.name, cand, "done"))
                elif not bp.available:
                    plan.append(PlanEntry(prob.name, cand, "unavailable", bp.reason))
                else:
                    ok, why = _support(bp, prob.spec, device, cand.algorithm)
                    plan.append(PlanEntry(prob.name, cand, "run" if ok else "unsupported", why))
        n_candidates = len({str(c) for _, _, cs in per_problem for _, c in cs})
        prog.set_total(sum(e.status == "run" for e in plan))

        if dry_run:
            result_meta = {"suite": the_suite.name, "budget_s": budget_s, "device": device,
                           "threads": threads, "strategy": strategy, "seed": seed,
                           "problems": len(the_suite.problems), "candidates": n_candidates}
            return SweepResult(None, [], {}, result_meta, the_suite, plan, dry_run=True)

        fp = fingerprint(threads)
        eid = env_id(fp)
        if resume_meta is not None:
            if resume_meta.get("env_id") and resume_meta["env_id"] != eid:
                raise ResultsError(
                    f"--resume: this machine's env_id {eid} differs from the run's "
                    f"{resume_meta['env_id']} (another machine, CPU or thread count); start a new run")
            writer = RunWriter.reopen(run_dir)
            writer.update_meta(candidates=n_candidates, finished=None,
                               resumed=list(resume_meta.get("resumed") or []) + [_now_iso()])
            peak = dict(writer.meta.get("peak") or {})
        else:
            if peak is not None:
                peak = dict(peak)
            else:
                prog.note("measuring peak GEMM rate and memory bandwidth ...")
                try:
                    peak = measure_peak(threads, PEAK_BUDGET_S)
                except ConvbenchError as exc:
                    warnings.warn(f"peak calibration failed, peak_pct will be null: {exc}", stacklevel=2)
                    peak = {"gemm_gflops": None, "gemm_dtype": "float32", "bandwidth_gbs": None,
                            "error": str(exc)}
            run_id = new_run_id(the_suite.name)
            run_dir = out_dir / run_id
            meta = {
                "run_id": run_id, "suite": the_suite.name, "created": _now_iso(),
                "command": list(sys.argv if command is None else command), "seed": seed,
                "threads": threads, "device": device, "budget_s": budget_s, "strategy": strategy,
                "convbench_version": __version__, "environment": fp, "env_id": eid, "peak": peak,
                "shuffle_seed": shuffle_seed, "problems": len(the_suite.problems),
                "candidates": n_candidates, "finished": None, "load_avg_start": _load_avg(),
                # beyond the schema: what --resume needs to continue the same run
                "suite_source": the_suite.path or the_suite.source,
                "backends": None if backends is None else list(backends),
                "overrides": {"n": n, "dtype": dtype, "layout": layout},
                "cold_cache": cold_cache, "timeout_s": timeout_s, "max_call_s": max_call_s,
                "problem_list": [[p.name, p.spec.to_dict(), the_suite.counts.get(p.name, 1)]
                                 for p in the_suite.problems],
            }
            writer = RunWriter(run_dir, meta)
        run_id = writer.meta["run_id"]
        gemm_peak = peak.get("gemm_gflops")
        prog.note(f"run {run_id}: {prog.total} candidate runs, results in {run_dir}")

        status_of = {(e.problem, str(e.candidate)): e for e in plan}
        if updates is not None and old_records:  # resumed: problems the earlier process finished
            unfinished = {e.problem for e in plan if e.status == "run"}
            done_before: dict[str, list[dict]] = {}
            for r in old_records:
                if r["problem"] not in unfinished:
                    done_before.setdefault(r["problem"], []).append(r)
            for recs in done_before.values():
                updates.store(recs, writer.meta)
        for index, prob, cands in per_problem:
            spec = prob.spec
            base = {
                "run_id": run_id, "problem": prob.name, "suite": the_suite.name,
                "spec": spec.to_dict(), "spec_key": spec.key, "label": spec.replace(name="").label,
            }

            def emit(cand: Candidate, outcome: Mapping[str, Any], _base: dict = base,
                     _spec: ConvSpec = spec, _index: int = index) -> dict:
                rec = make_record(_base, _spec, cand, outcome, threads=threads, env_id=eid,
                                   gemm_peak=gemm_peak, cold_cache=cold_cache)
                writer.append(rec)
                records.append(rec)
                prog.finish_one(rec, measured=outcome.get("_measured", True), index=_index)
                return rec

            def make_task(cand: Candidate, _index: int = index, _prob: Problem = prob,
                          **overrides: Any) -> Task:
                prog.start(_index, _prob.name, str(cand))
                bp = next(b for b in bplans if b.name == cand.backend)
                kw = dict(spec=_prob.spec.to_dict(), backend=cand.backend, target=bp.target,
                          algorithm=cand.algorithm, device=cand.device, seed=seed, budget_s=budget_s,
                          timeout_s=timeout_s, verify=True, verify_batch=verify_batch,
                          cold_cache=cold_cache, min_samples=min_samples, max_samples=max_samples,
                          rel_ci=rel_ci, max_call_s=max_call_s if max_call_s > 0 else None)
                kw.update(overrides)
                return Task(**kw)

            runnable = []
            for bp, cand in cands:
                entry = status_of[(prob.name, str(cand))]
                if entry.status == "run":
                    runnable.append(cand)
                elif entry.status in ("unavailable", "unsupported"):
                    emit(cand, {"status": entry.status, "message": entry.reason, "_measured": False})
            if runnable:
                STRATEGIES[strategy](pool, prob.name, spec, runnable, make_task, emit)
                if updates is not None:
                    updates.store([r for r in records if r["problem"] == prob.name], writer.meta)
        load_end = _load_avg()
        writer.update_meta(load_avg_end=load_end)
        writer.finish()
        result_meta = dict(writer.meta)
        busy = max([v for v in (writer.meta.get("load_avg_start"), load_end) if v is not None] or [0.0])
        cores = available_cores()
        if busy > cores + 1:  # the sweep itself keeps about `threads` cores busy
            print(f"convbench sweep: warning: the machine was busy while measuring (1-minute load "
                  f"average {busy:.1f} on {cores} usable cores, threads={threads}); other processes "
                  f"shared the cores, so these timings are not trustworthy - re-run on a quiet machine",
                  file=stream)
    except KeyboardInterrupt:
        interrupted = True
        if writer is not None:
            prog.close()
            kept = (f"; the winners of finished problems are in the tuned cache ({updates.written} "
                    f"entries)" if updates is not None and updates.error is None else "")
            print(f"\nconvbench sweep: interrupted; {writer.written} records written{kept}. Continue with "
                  f"--resume {run_dir}", file=stream)
        raise
    finally:
        prog.close()
        if own_pool:
            pool.close()
        if writer is not None:
            result_meta = dict(writer.meta)
            writer.close()

    winners = select_winners(records)
    result = SweepResult(run_dir, records, winners, result_meta, the_suite, plan,
                         interrupted=interrupted)
    if updates is not None and not interrupted:
        result.cache_report = updates.report(result_meta.get("run_id"))
        if progress:
            print(result.cache_report, file=stream)
    return result


class _CacheUpdates:
    """Stores winners in the tuned cache as each problem finishes, so a killed or interrupted
    sweep keeps what it finished (and concurrent sweeps interleave their transactions). A
    cache that cannot be written is reported once at the end; measuring goes on."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.tc: Any = None
        self.written = self.unchanged = self.no_winner = 0
        self.error: Optional[str] = None

    def open(self) -> None:
        """Open (creating or validating) the cache before measuring: a file that is not a
        convbench cache stops the sweep with its CacheError here, not after an hour."""
        from .cache import open_cache

        self.tc = open_cache(self.cache)
        self.tc.entries(spec_key="")  # reads it: validation happens on the first connection

    def store(self, records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> None:
        if self.error is not None or not records:
            return
        from .cache import entries_from_run, open_cache

        try:
            if self.tc is None:
                self.tc = open_cache(self.cache)
            entries, no_winner, _ = entries_from_run(list(records), meta)
            written = self.tc.put_many(entries, replace="newer")
        except (ConvbenchError, sqlite3.Error, OSError) as exc:
            self.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ConvbenchError) else str(exc)
            return
        self.written += written
        self.unchanged += len(entries) - written
        self.no_winner += no_winner

    def report(self, run_id: Optional[str]) -> str:
        if self.error is not None:
            return f"tuned cache not updated: {self.error}"
        path = self.tc.path if self.tc is not None else "(none)"
        return (f"cache {path}: {self.written} entr{'y' if self.written == 1 else 'ies'} written from "
                f"run {run_id} as problems finished, {self.unchanged} unchanged or kept (newer "
                f"cached), {self.no_winner} problem(s) without a winner")


__all__ = ["sweep", "SweepResult", "STRATEGIES", "DEFAULT_BUDGET_S", "DEFAULT_TIMEOUT_S", "DEFAULT_MAX_CALL_S",
           "PlanEntry", "format_winners", "format_plan", "fmt_time"]


class _CallableModule(types.ModuleType):
    """``import convbench.sweep`` rebinds ``convbench.sweep`` to this module (the package's
    lazy attribute of the same name is the function): calling the module runs the sweep, so
    ``convbench.sweep(...)`` works whichever of the two the name refers to."""

    def __call__(self, *args: Any, **kwargs: Any) -> SweepResult:
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
