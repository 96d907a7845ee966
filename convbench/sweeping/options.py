"""What a sweep is asked to do: its settings (validated in one place), its suite, its
backends, and, for ``--resume``, the run it continues and the settings that run fixed."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..errors import (ConvbenchError, InvalidSpecError, ResultsError, RunFormatError, SuiteError,
                      UnknownBackendError)
from ..rounds import DEFAULT_ROUNDS, with_rounds
from ..spec import ConvSpec
from ..suites import Problem, Suite, load_suite, suite_from_specs

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
DEVICES = ("cpu", "cuda")
#: the largest input seed (numpy's generators take any integer >= 0; this keeps it a JSON int64)
MAX_SEED = 2 ** 63 - 1

#: settings a run records at the top of meta.json and keeps when resumed
RUN_SETTINGS = ("seed", "threads", "device", "budget_s", "strategy", "cold_cache", "timeout_s",
                "max_call_s", "rounds")
#: most interleaved rounds a sweep may ask for
MAX_ROUNDS = 100
#: problem overrides a run records under meta["overrides"]
OVERRIDES = ("n", "dtype", "layout")


@dataclass(frozen=True)
class SweepOptions:
    """Every setting of one sweep; an invalid value is a ConvbenchError naming it."""

    threads: int
    device: str = "cpu"
    budget_s: float = DEFAULT_BUDGET_S
    seed: int = 0
    strategy: str = "exhaustive"
    rounds: int = DEFAULT_ROUNDS          # interleaved rounds per problem (convbench.rounds)
    cold_cache: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_call_s: float = DEFAULT_MAX_CALL_S  # <= 0: no limit
    backends: Optional[tuple[str, ...]] = None  # name patterns as given; None: every backend
    n: Optional[int] = None                     # overrides applied to every problem
    dtype: Optional[str] = None
    layout: Optional[str] = None
    verify_batch: int = 2
    min_samples: int = 10
    max_samples: int = 10000
    rel_ci: float = 0.01
    remote: bool = False   # measured on a cluster: threads are the remote machines', not checked here

    def __post_init__(self) -> None:
        from ..strategies import STRATEGIES

        if self.device not in DEVICES:
            raise ConvbenchError(f"device: {self.device!r} is not a device; use cpu or cuda")
        _check_threads(self.threads, self.remote)
        for what in ("budget_s", "timeout_s"):
            value = getattr(self, what)
            if not (_is_number(value) and math.isfinite(value) and value > 0):
                raise ConvbenchError(f"{what.replace('_s', '')}: {value!r} must be a finite number "
                                     f"of seconds > 0")
        if self.budget_s >= self.timeout_s:
            raise ConvbenchError(f"budget: {self.budget_s!r} s must be below the timeout "
                                 f"({self.timeout_s!r} s), which stops a candidate's whole run")
        if not (_is_number(self.max_call_s) and math.isfinite(self.max_call_s)):
            raise ConvbenchError(f"max_call: {self.max_call_s!r} must be a finite number of seconds "
                                 f"(0: no limit)")
        if not (_is_int(self.seed) and 0 <= self.seed <= MAX_SEED):
            raise ConvbenchError(f"seed: {self.seed!r} must be an integer from 0 to {MAX_SEED}")
        if self.strategy not in STRATEGIES:
            raise ConvbenchError(f"strategy: {self.strategy!r} is not a strategy; use one of "
                                 f"{', '.join(sorted(STRATEGIES))}")
        if not (_is_int(self.rounds) and 1 <= self.rounds <= MAX_ROUNDS):
            raise ConvbenchError(f"rounds: {self.rounds!r} must be an integer from 1 to {MAX_ROUNDS}")
        with_rounds(STRATEGIES[self.strategy], self.rounds)  # refused here, before anything is written
        self._check_tuning()

    def _check_tuning(self) -> None:
        if not (_is_int(self.min_samples) and _is_int(self.max_samples)
                and 1 <= self.min_samples <= self.max_samples):
            raise ConvbenchError(f"min_samples: {self.min_samples!r} must be an integer between 1 "
                                 f"and max_samples ({self.max_samples!r})")
        if not (_is_int(self.verify_batch) and self.verify_batch >= 1):
            raise ConvbenchError(f"verify_batch: {self.verify_batch!r} must be an integer >= 1")
        if not (_is_number(self.rel_ci) and 0 < self.rel_ci < 1):
            raise ConvbenchError(f"rel_ci: {self.rel_ci!r} must be a number between 0 and 1 "
                                 f"(e.g. 0.01 for +-1%)")
        if self.n is not None and not (_is_int(self.n) and self.n >= 1):
            raise ConvbenchError(f"n: {self.n!r} must be an integer batch size >= 1")
        if self.backends is not None and not all(isinstance(b, str) for b in self.backends):
            raise ConvbenchError(f"backends: {self.backends!r} must be backend name patterns")

    @classmethod
    def from_arguments(cls, **given: Any) -> "SweepOptions":
        """The options of :func:`convbench.sweep`'s keyword arguments (None: the default)."""
        from ..environment import available_cores

        values = {k: v for k, v in given.items() if v is not None}
        values.setdefault("threads", available_cores())
        for what, kind in (("threads", int), ("seed", int), ("n", int), ("rounds", int), ("budget_s", float),
                           ("timeout_s", float), ("max_call_s", float), ("rel_ci", float)):
            if what in values:
                values[what] = _convert(what, values[what], kind)
        if "cold_cache" in values and not isinstance(values["cold_cache"], bool):
            raise ConvbenchError(f"cold_cache: {values['cold_cache']!r} is not a bool")
        if isinstance(values.get("backends"), str):
            values["backends"] = (values["backends"],)
        if values.get("backends") is not None:
            values["backends"] = tuple(values["backends"])
        return cls(**values)

    def task_settings(self) -> dict[str, Any]:
        """The worker Task fields every candidate of this sweep shares."""
        return dict(seed=self.seed, budget_s=self.budget_s, timeout_s=self.timeout_s, verify=True,
                    verify_batch=self.verify_batch, cold_cache=self.cold_cache,
                    min_samples=self.min_samples, max_samples=self.max_samples, rel_ci=self.rel_ci,
                    max_call_s=self.max_call_s if self.max_call_s > 0 else None)

    def run_meta(self) -> dict[str, Any]:
        """What meta.json records of these options (and --resume reads back)."""
        meta = {k: getattr(self, k) for k in RUN_SETTINGS}
        meta["backends"] = None if self.backends is None else list(self.backends)
        meta["overrides"] = {k: getattr(self, k) for k in OVERRIDES}
        return meta


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _convert(what: str, value: Any, kind: type) -> Any:
    """``value`` as an int or float (an integral float is an int; nothing is rounded)."""
    try:
        if isinstance(value, bool) or isinstance(value, (str, bytes)) and kind is int:
            raise TypeError
        out = kind(value)
        if kind is int and out != value:
            raise ValueError
        return out
    except (TypeError, ValueError, OverflowError):
        kind_name = "an integer" if kind is int else "a number"
        raise ConvbenchError(f"{what}: {value!r} is not {kind_name}") from None


def _check_threads(threads: Any, remote: bool) -> None:
    from ..environment import available_cores

    cores = 1 << 20 if remote else available_cores()
    if not (_is_int(threads) and 1 <= threads <= cores):
        raise ConvbenchError(f"threads: {threads!r} must be an integer from 1 to {cores} (the cores "
                             f"this process may use)")


def resolve_suite(suite: Any, opts: SweepOptions) -> Suite:
    """The suite to sweep, the overrides applied; SuiteError if there is none or it is empty."""
    over = dict(n=opts.n, dtype=opts.dtype, layout=opts.layout)
    if suite is None:
        raise SuiteError("no suite given: name a suite, a suite/batch file or --spec descriptors")
    if isinstance(suite, Suite):
        the_suite = suite.with_overrides(**over)
    elif isinstance(suite, (ConvSpec, list, tuple)):
        specs = [suite] if isinstance(suite, ConvSpec) else suite
        the_suite = suite_from_specs(specs).with_overrides(**over)
    elif isinstance(suite, (str, os.PathLike)):
        the_suite = load_suite(suite, **over)
    else:
        raise SuiteError(f"suite: {suite!r} is not a suite name, file, Suite, ConvSpec or list of specs")
    if not the_suite.problems:
        raise SuiteError(f"suite {the_suite.name!r} has no problems")
    return the_suite


def select_backends(patterns: Optional[Sequence[str]]) -> list[str]:
    """The registered backend names matching ``patterns`` (comma-separated allowed; None: all)."""
    from ..registry import list_backends

    if patterns is None:
        return list_backends()
    pats = [p.strip() for item in patterns for p in str(item).split(",") if p.strip()]
    names = list_backends(pats)
    if not names:
        raise UnknownBackendError(f"--backends {' '.join(pats)}: matches no backend; known backends: "
                                  f"{', '.join(list_backends()) or 'none'}")
    return names


# ---- --resume ------------------------------------------------------------------------------
@dataclass
class Resumed:
    """The run a sweep continues: its directory, meta, the records it already holds, and the
    run's writer lock, held from before its files were read (the RunWriter takes it over)."""

    run_dir: Path
    meta: dict[str, Any]
    records: list[dict] = field(default_factory=list)
    lock: Any = None

    @property
    def done_pairs(self) -> set[tuple[str, str]]:
        return {(r.get("problem"), r.get("candidate")) for r in self.records}


def find_run_dir(resume: Any, out_dir: Path) -> Path:
    """The run directory ``resume`` names (a path, or a run id under ``out_dir``). A folder
    of runs (such as ``--out``) is refused with the runs it holds, most recently written first."""
    run_dir = Path(resume)
    if not run_dir.is_dir() and (out_dir / str(resume)).is_dir():
        run_dir = out_dir / str(resume)
    if not run_dir.is_dir():
        raise ResultsError(f"--resume {resume}: no such run directory")
    if not (run_dir / "meta.json").is_file():
        metas = [p / "meta.json" for p in run_dir.iterdir() if (p / "meta.json").is_file()]
        runs = [m.parent.name for m in sorted(metas, key=lambda m: m.stat().st_mtime, reverse=True)]
        if runs:
            more = f" and {len(runs) - 5} more" if len(runs) > 5 else ""
            raise ResultsError(
                f"--resume {resume}: this folder holds runs, not a run; pass the run to continue, "
                f"e.g. --resume {run_dir / runs[0]} (runs here, most recent first: "
                f"{', '.join(runs[:5])}{more})")
    return run_dir


def _suite_from_meta(meta: Mapping[str, Any], where: str) -> Suite:
    items = meta.get("problem_list")
    if not items:
        raise RunFormatError(where, "problem_list", "missing or empty: the run cannot be resumed")
    if not isinstance(meta.get("shuffle_seed"), int):
        raise RunFormatError(where, "shuffle_seed", "missing: the run cannot be resumed in its order")
    suite = Suite(name=str(meta.get("suite") or "resumed"), source=str(meta.get("suite_source") or ""))
    for i, item in enumerate(items):  # their shape was checked when meta.json was read
        name, spec_dict = item[0], item[1]
        if name in suite.counts:
            raise RunFormatError(where, f"problem_list[{i}]", f"problem {name!r} is listed twice")
        try:
            suite.problems.append(Problem(name, ConvSpec.from_dict(spec_dict)))
        except (InvalidSpecError, TypeError) as exc:
            raise RunFormatError(where, f"problem_list[{i}]", f"not a valid problem: {exc}") from None
        suite.counts[name] = item[2] if len(item) > 2 else 1
    return suite


def _recorded_options(meta: Mapping[str, Any], tuning: Mapping[str, Any], where: str) -> SweepOptions:
    defaults = {"seed": 0, "device": "cpu", "budget_s": DEFAULT_BUDGET_S, "strategy": "exhaustive",
                "cold_cache": False, "timeout_s": DEFAULT_TIMEOUT_S, "max_call_s": DEFAULT_MAX_CALL_S,
                "rounds": DEFAULT_ROUNDS}  # runs that predate a setting were measured with its default
    values = {k: meta.get(k, defaults.get(k)) for k in RUN_SETTINGS}
    overrides = meta.get("overrides") or {}
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise RunFormatError(where, "overrides", f"unknown override(s) {', '.join(unknown)}")
    values.update(overrides.items())
    values["backends"] = meta.get("backends")
    values["remote"] = bool(meta.get("cluster"))
    try:
        return SweepOptions.from_arguments(**values, **tuning)
    except ConvbenchError as exc:
        raise RunFormatError(where, None, f"the run's recorded settings cannot be used here: {exc}") from None


def resume_run(resume: Any, out_dir: Path, suite: Any, given: Mapping[str, Any],
               tuning: Mapping[str, Any]) -> tuple[SweepOptions, Suite, Resumed]:
    """The options and suite of the run ``resume`` continues. A setting given now must equal
    the run's (ConvbenchError naming both otherwise): a resumed run keeps its settings. The
    run is locked for writing first (RunLockedError while another process writes it)."""
    from ..runlock import lock_run

    run_dir = find_run_dir(resume, out_dir)
    lock = lock_run(run_dir)
    try:
        return _resume_locked(run_dir, lock, suite, given, tuning)
    except BaseException:
        lock.release()
        raise


def _resume_locked(run_dir: Path, lock: Any, suite: Any, given: Mapping[str, Any],
                   tuning: Mapping[str, Any]) -> tuple[SweepOptions, Suite, Resumed]:
    from ..results import read_meta, read_records

    meta = read_meta(run_dir)
    where = str(run_dir / "meta.json")
    opts = _recorded_options(meta, tuning, where)
    recorded = asdict(opts)
    recorded["backends"] = meta.get("backends")
    for what, value in given.items():
        if what == "backends" and value is not None:
            value = [value] if isinstance(value, str) else list(value)
        if value is not None and value != recorded[what]:
            raise ConvbenchError(f"--resume: {what}={value!r} conflicts with the run's "
                                 f"{what}={recorded[what]!r}; leave it out to keep the run's value")
    the_suite = _suite_from_meta(meta, where)
    if suite is not None:
        given_suite = resolve_suite(suite, opts)
        if [(p.name, p.spec.key) for p in given_suite] != [(p.name, p.spec.key) for p in the_suite]:
            raise ConvbenchError(f"--resume: suite {given_suite.name!r} is not the run's suite "
                                 f"({the_suite.name!r}); leave SUITE out to resume")
    records = read_records(run_dir) if (run_dir / "records.jsonl").exists() else []
    return opts, the_suite, Resumed(run_dir, meta, records, lock)


__all__ = ["SweepOptions", "Resumed", "resolve_suite", "select_backends", "find_run_dir",
           "resume_run", "DEFAULT_BUDGET_S", "DEFAULT_TIMEOUT_S", "DEFAULT_MAX_CALL_S",
           "PEAK_BUDGET_S"]
