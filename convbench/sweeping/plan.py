"""The sweep's plan: which candidates the selected backends offer (asked of their workers),
and for each problem which of them run, which are unavailable or unsupported, and which a
resumed run already recorded.

Support is checked in this process before anything runs (cheap: the backend module is
imported here, its framework is not). A check that would import a framework (a module some
backend declares in ``Backend.framework_modules``) is refused, not performed: the worker
then decides, and records "unsupported" itself if need be.
"""
from __future__ import annotations

import random
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

from ..errors import ConvbenchError
from ..registry import Backend, Candidate, Support
from ..spec import ConvSpec
from ..suites import Problem, Suite

#: what a plan entry says of a (problem, candidate) pair
RUN, UNAVAILABLE, UNSUPPORTED, DONE = "run", "unavailable", "unsupported", "done"


@dataclass
class BackendPlan:
    """A selected backend as its worker described it."""

    name: str
    target: str
    available: bool
    reason: Optional[str]
    algorithms: list[str]
    backend: Optional[Backend]  # the instance in this process (for supports), or None


@dataclass
class PlanEntry:
    """One (problem, candidate) pair as planned: run it, or record why not."""

    problem: str
    candidate: Candidate
    status: str  # RUN, UNAVAILABLE, UNSUPPORTED or DONE (already recorded: resume)
    reason: Optional[str] = None


@dataclass
class ProblemPlan:
    """One problem, in the run's shuffled order (``index`` counts from 1), and its entries."""

    index: int
    problem: Problem
    entries: list[PlanEntry] = field(default_factory=list)

    @property
    def runnable(self) -> list[Candidate]:
        return [e.candidate for e in self.entries if e.status == RUN]


# ---- the backends, described by their workers ----------------------------------------------
def describe_backends(pool: Any, names: Sequence[str], device: str,
                      note: Callable[[str], None]) -> list[BackendPlan]:
    """The selected backends that have candidates on ``device`` (or are unavailable). Each
    family's worker imports its framework while answering; the families load concurrently."""
    from ..registry import backend_target, get_backend

    loaded: dict[str, tuple[str, Backend]] = {}
    broken: dict[str, str] = {}
    for name in names:
        try:
            loaded[name] = (backend_target(name), get_backend(name))  # the module, no framework
        except ConvbenchError as exc:
            broken[name] = str(exc)
    descs = _describe_by_family(pool, {n: t for n, (t, _) in loaded.items()})
    plans = []
    for name in names:
        if name in broken:
            plans.append(BackendPlan(name, "", False, broken[name], ["default"], None))
            continue
        target, backend = loaded[name]
        plan = _backend_plan(name, target, backend, descs[name], device)
        if plan is None:
            note(f"{name}: no candidate on device {device!r}; skipped")
        else:
            plans.append(plan)
    return plans


def _describe_by_family(pool: Any, targets: dict[str, str]) -> dict[str, dict]:
    """pool.describe() of every backend, one thread per worker family."""
    by_family: dict[str, list[str]] = {}
    for name, target in targets.items():
        by_family.setdefault(pool.family_of(target, name), []).append(name)
    descs: dict[str, dict] = {}

    def describe_family(members: list[str]) -> None:
        for member in members:
            try:
                descs[member] = pool.describe(member)
            except ConvbenchError as exc:
                descs[member] = {"available": False, "reason": str(exc)}

    threads = [threading.Thread(target=describe_family, args=(members,), daemon=True)
               for members in by_family.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return descs


def _backend_plan(name: str, target: str, backend: Backend, desc: dict,
                  device: str) -> Optional[BackendPlan]:
    avail = bool(desc.get("available"))
    algos = list((desc.get("algorithms") or {}).get(device) or [])
    devices = desc.get("devices") or sorted(backend.capabilities.devices)
    if device not in devices or (avail and not algos):
        return None
    if not algos:  # unavailable, and it cannot list its algorithms without its framework
        algos = ["default"]
    # the worker's answer is the truth; taking it keeps available() from importing here
    backend.assume_available(Support(avail, desc.get("reason") or ""))
    return BackendPlan(name, target, avail, desc.get("reason"), algos, backend)


# ---- support, checked without importing a framework ----------------------------------------
class FrameworkImportBlocker:
    """A sys.meta_path finder that refuses imports of ``modules`` not imported yet, while
    installed (``tripped`` says whether it refused one)."""

    def __init__(self, modules: Iterable[str]) -> None:
        self.modules = frozenset(modules)
        self.tripped = False

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        top = name.partition(".")[0]
        if top in self.modules and top not in sys.modules:
            self.tripped = True
            raise ImportError(f"convbench sweep: {name!r} is only imported in worker processes")
        return None

    def __enter__(self) -> "FrameworkImportBlocker":
        sys.meta_path.insert(0, self)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


def parent_support(bp: BackendPlan, spec: ConvSpec, device: str, algorithm: str,
                   frameworks: Iterable[str]) -> tuple[bool, Optional[str]]:
    """(runnable, reason if not), by ``Backend.supports`` in this process. A check that needs
    a framework (an import of ``frameworks`` is refused) or fails leaves it to the worker."""
    assert bp.backend is not None
    with FrameworkImportBlocker(frameworks) as blocker:
        try:
            s = bp.backend.supports(spec, device, algorithm)
        except Exception:  # noqa: BLE001 - the worker will tell
            return True, None
    if blocker.tripped or s:
        return True, None
    return False, s.reason


# ---- the plan ------------------------------------------------------------------------------
def make_plan(suite: Suite, bplans: Sequence[BackendPlan], device: str, rng: random.Random,
              done_pairs: set[tuple[str, str]]) -> list[ProblemPlan]:
    """Every problem (in an order shuffled by ``rng``, so slow drift of the machine is not
    confounded with shape order) with every candidate (shuffled per problem) and its status."""
    from ..registry import framework_modules

    frameworks = framework_modules()
    order = list(range(len(suite.problems)))
    rng.shuffle(order)
    problems = []
    for i, idx in enumerate(order):
        prob = suite.problems[idx]
        cands = [(bp, Candidate(bp.name, a, device)) for bp in bplans for a in bp.algorithms]
        rng.shuffle(cands)
        pp = ProblemPlan(i + 1, prob)
        for bp, cand in cands:
            if (prob.name, str(cand)) in done_pairs:
                pp.entries.append(PlanEntry(prob.name, cand, DONE))
            elif not bp.available:
                pp.entries.append(PlanEntry(prob.name, cand, UNAVAILABLE, bp.reason))
            else:
                ok, why = parent_support(bp, prob.spec, device, cand.algorithm, frameworks)
                pp.entries.append(PlanEntry(prob.name, cand, RUN if ok else UNSUPPORTED, why))
        problems.append(pp)
    return problems


__all__ = ["BackendPlan", "PlanEntry", "ProblemPlan", "FrameworkImportBlocker", "describe_backends",
           "parent_support", "make_plan", "RUN", "UNAVAILABLE", "UNSUPPORTED", "DONE"]
