"""Filling the tuned cache from sweep runs, and re-checking cached winners by re-timing them."""
from __future__ import annotations

import contextlib
import math
import random
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

from .cache_entry import CacheEntry
from .environment import default_threads, machine_description, machine_key, versions_from_environment
from .errors import CacheError
from .files import PathLike

if TYPE_CHECKING:
    from .cache import TunedCache

CacheArg = Union[None, PathLike, "TunedCache"]


# ---- from sweep results -------------------------------------------------------------------
@dataclass
class UpdateReport:
    """What update_from_run did."""

    run_id: Optional[str]
    written: int = 0
    kept_newer: int = 0      # an entry measured later was already cached
    no_winner: int = 0       # problems where nothing was ok
    duplicates: int = 0      # problems sharing a spec key with another problem of the run
    path: str = ""

    def __str__(self) -> str:
        return (f"cache {self.path}: {self.written} entr{'y' if self.written == 1 else 'ies'} "
                f"written from run {self.run_id}, {self.kept_newer} kept (newer cached), "
                f"{self.no_winner} problem(s) without a winner")


def read_run(run_dir: PathLike) -> tuple[list[dict], dict]:
    """(records, meta) of a run directory."""
    from .results import read_meta, read_records

    return list(read_records(run_dir)), dict(read_meta(run_dir))


def entries_from_run(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], *,
                     source: Optional[str] = None) -> tuple[list[CacheEntry], int, int]:
    """Cache entries (winner per problem and device) for a run; also no-winner and duplicate counts."""
    from .selection import select_winners

    env = dict(meta.get("environment") or {})
    winners = select_winners(list(records))
    timings: dict[tuple, dict[str, float]] = {}
    for r in records:
        t = _record_time(r)
        if t is not None:
            timings.setdefault((r.get("problem"), r.get("device")), {})[str(r["candidate"])] = t
    by_key: dict[tuple, CacheEntry] = {}
    duplicates = 0
    for (problem, device), win in winners.items():
        rec = next((r for r in records if r.get("problem") == problem
                    and r.get("candidate") == str(win.candidate) and r.get("status") == "ok"), None)
        if rec is None:
            continue
        entry = _entry(rec, win, device, env, meta, source, timings.get((problem, device), {}))
        if entry.key in by_key:
            duplicates += 1
            # the same shape under two problem names: keep the faster measured winner
            if (entry.median_s or math.inf) >= (by_key[entry.key].median_s or math.inf):
                continue
        by_key[entry.key] = entry
    no_winner = len({(r.get("problem"), r.get("device")) for r in records}) - len(winners)
    return list(by_key.values()), max(no_winner, 0), duplicates


def _entry(rec: Mapping[str, Any], win: Any, device: str, env: Mapping[str, Any],
           meta: Mapping[str, Any], source: Optional[str], timings: dict) -> CacheEntry:
    """The cache entry for one problem's winner ``win`` (a selection.Winner) and its record."""
    dev = rec.get("device") or device
    threads = 0 if dev == "cuda" else int(rec.get("threads") or meta.get("threads") or default_threads())
    return CacheEntry(
        spec_key=rec["spec_key"], machine=machine_key(env, dev), threads=threads, device=dev,
        spec=dict(rec["spec"]), candidate=str(win.candidate), backend=rec["backend"],
        algorithm=rec["algorithm"], median_s=_f(win.median_s), ci_low_s=_f(rec.get("ci_low_s")),
        ci_high_s=_f(rec.get("ci_high_s")), n_samples=_i(rec.get("n_samples")),
        runner_up=None if win.runner_up is None else str(win.runner_up),
        runner_up_median_s=_f(win.runner_up_median_s), margin=_f(win.margin),
        decisive=bool(win.decisive), tie_rule=win.tie_break_rule or None,
        max_error=_f(rec.get("max_error")), run_id=rec.get("run_id") or meta.get("run_id"),
        timestamp=rec.get("timestamp") or meta.get("created"),
        env_id=rec.get("env_id") or meta.get("env_id"), machine_desc=machine_description(env, dev),
        versions=versions_from_environment(env),
        source=source or f"sweep ({meta.get('strategy') or 'exhaustive'})", timings=timings)


def _record_time(r: Mapping[str, Any]) -> Optional[float]:
    """Seconds per call of a record for CacheEntry.timings (None: nothing measured)."""
    if r.get("status") == "ok":
        return _f(r.get("median_s"))
    if r.get("status") == "timeout":
        return _f((r.get("info") or {}).get("verify_est_s"))
    return None


def _f(v: Any) -> Optional[float]:
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _i(v: Any) -> Optional[int]:
    return None if v is None else int(v)


def update_from_run(run_dir: PathLike, cache: CacheArg = None) -> UpdateReport:
    """Store the winner per problem and device of a finished run (``results/<run_id>``).

    Newer measurements replace older entries for the same key; the replaced entry goes to
    the history table and its run id stays on the new entry.
    """
    from .cache import open_cache

    records, meta = read_run(run_dir)
    entries, no_winner, dups = entries_from_run(records, meta)
    tc = open_cache(cache)
    written = tc.put_many(entries, replace="newer")
    return UpdateReport(run_id=meta.get("run_id"), written=written, kept_newer=len(entries) - written,
                        no_winner=no_winner, duplicates=dups, path=str(tc.path))


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
    from .cache import open_cache, stale_here
    from .selection import select_winners

    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
        raise CacheError(f"--sample: {sample!r} must be an integer >= 0 (0: every entry)")
    tc = open_cache(cache, create=False)
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
    from .spec import ConvSpec
    from .sweeping import sweep

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
