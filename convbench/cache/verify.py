"""Re-checking cached winners: re-time a sample of cached problems and compare."""
from __future__ import annotations

import contextlib
import math
import random
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from ..errors import CacheError
from .entry import CacheEntry
from ..files import PathLike
from .runs import CacheArg, UpdateReport, update_from_run

# ---- re-checking cached winners -----------------------------------------------------------
@dataclass
class VerifyRow:
    """One cached entry, re-timed now."""

    entry: CacheEntry
    winner_now: Optional[str] = None      # None: no candidate is ok now
    cached_now_s: Optional[float] = None  # the cached choice's median now (None: not ok now)
    fastest_now_s: Optional[float] = None
    verdict: str = "no candidate ok now"  # or "same winner", "tie with <candidate>", "CHANGED"

    @property
    def changed(self) -> bool:
        return self.verdict == "CHANGED"

    @property
    def regret(self) -> Optional[float]:
        """The cached choice's median now / the fastest median now; inf when the cached choice
        is not ok now, None when nothing is."""
        if self.winner_now is None or not self.fastest_now_s:
            return None
        return self.cached_now_s / self.fastest_now_s if self.cached_now_s else math.inf


@dataclass
class VerifyReport:
    """What :func:`verify` found."""

    path: str
    available: int                        # entries of this machine in the cache
    rows: list[VerifyRow] = field(default_factory=list)
    run_dirs: list[str] = field(default_factory=list)         # re-timing runs kept (``out``)
    updates: list[UpdateReport] = field(default_factory=list)  # with ``update=True``

    @property
    def changed(self) -> int:
        return sum(r.changed for r in self.rows)

    @property
    def regrets(self) -> list[float]:
        """The finite regrets (entries whose cached choice is still ok)."""
        return [r.regret for r in self.rows if r.regret is not None and math.isfinite(r.regret)]


def verify(cache: CacheArg = None, *, sample: int = 5, seed: int = 0,
           budget_s: Optional[float] = None, backends: Optional[Sequence[str]] = None,
           strategy: str = "exhaustive", update: bool = False, out: Optional[PathLike] = None,
           log: Optional[Callable[[str], None]] = None) -> VerifyReport:
    """Re-time ``sample`` entries of this machine (0: all; picked with ``seed``) in fresh worker
    processes and report whether each cached winner still wins.

    ``backends``/``budget_s``/``strategy`` are the sweep's. ``update=True`` stores the
    re-measured winners; ``out`` keeps the re-timing runs there (default: a temporary
    directory, removed). ``log`` receives progress lines.
    """
    from .store import open_cache, stale_here
    from ..selection import select_winners

    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
        raise CacheError(f"--sample: {sample!r} must be an integer >= 0 (0: every entry)")
    from ..sweeping.options import SweepOptions

    SweepOptions.from_arguments(budget_s=budget_s, strategy=strategy, backends=backends)  # checks
    tc = open_cache(cache, create=False)
    if update:
        tc.check_writable()  # before measuring, not after
    mine = [e for e in tc.entries() if stale_here(e) is not None]
    report = VerifyReport(path=str(tc.path), available=len(mine))
    if not mine:
        return report
    picked = mine if sample == 0 or sample >= len(mine) else random.Random(seed).sample(mine, sample)
    if log:
        log(f"re-timing {len(picked)} of {len(mine)} entries of this machine in fresh worker "
            f"processes ...")
    groups: dict[tuple[int, str], list[CacheEntry]] = {}
    for e in picked:
        groups.setdefault((e.threads, e.device), []).append(e)
    opts = dict(backends=backends, budget_s=budget_s, strategy=strategy)
    for (threads, device), ents in sorted(groups.items()):
        names = _problem_names(ents)
        with contextlib.ExitStack() as stack:
            out_dir = out or stack.enter_context(tempfile.TemporaryDirectory(prefix="convbench-verify-"))
            res = _retime(ents, names, device, threads, out_dir, opts)
            if update:
                report.updates.append(update_from_run(res.run_dir, cache=tc))
            if out:
                report.run_dirs.append(str(res.run_dir))
        winners = select_winners(res.records)
        report.rows.extend(_judge(e, winners.get((name, device)), [r for r in res.records
                                                                   if r["problem"] == name])
                           for name, e in zip(names, ents))
    return report


def _problem_names(entries: Sequence[CacheEntry]) -> list[str]:
    """Problem names for re-timing: the ones swept under when those are unique."""
    names = [str(e.spec.get("name") or "") for e in entries]
    if not all(names) or len(set(names)) != len(names):
        names = [f"entry{i + 1}" for i in range(len(entries))]
    return names


def _retime(entries: Sequence[CacheEntry], names: Sequence[str], device: str, threads: int,
            out_dir: PathLike, opts: dict) -> Any:
    from ..spec import ConvSpec
    from ..sweeping import sweep

    specs = [ConvSpec.from_dict({**e.spec, "name": nm}) for nm, e in zip(names, entries)]
    return sweep(specs, device=device, threads=threads or None, out=out_dir, progress=False,
                 update_cache=False, command=["convbench", "cache", "verify"],
                 peak={"gemm_gflops": None, "gemm_dtype": "float32", "bandwidth_gbs": None,
                       "note": "not measured by cache verify"}, **opts)


def _judge(e: CacheEntry, w: Any, records: Sequence[Mapping[str, Any]]) -> VerifyRow:
    """Compare the cached winner ``e`` with the winner now ``w`` (a selection.Winner, None if
    nothing is ok now) and the re-timed records of its problem."""
    recs = {r["candidate"]: r for r in records}
    if w is None:
        return VerifyRow(e)
    old = recs.get(e.candidate)
    cached_now = old.get("median_s") if old and old.get("status") == "ok" else None
    fastest = min(r["median_s"] for r in recs.values() if r.get("status") == "ok")
    if w.candidate == e.candidate:
        verdict = "same winner"
    elif e.candidate in (w.tied or []):
        verdict = f"tie with {w.candidate}"
    else:
        verdict = "CHANGED"
    return VerifyRow(e, str(w.candidate), cached_now, fastest, verdict)
