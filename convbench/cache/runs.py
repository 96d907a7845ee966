"""Filling the tuned cache from sweep runs."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

from .entry import CacheEntry
from ..environment import default_threads, machine_description, machine_key, versions_from_environment
from ..files import PathLike

if TYPE_CHECKING:
    from .store import TunedCache

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
    from ..results import read_meta, read_records

    return list(read_records(run_dir)), dict(read_meta(run_dir))


def entries_from_run(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], *,
                     source: Optional[str] = None) -> tuple[list[CacheEntry], int, int]:
    """Cache entries (winner per problem and device) for a run; also no-winner and duplicate counts."""
    from ..selection import select_winners

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
    if r.get("status") == "pruned":  # the race's measured lower bound (none when predicted)
        return _f(((r.get("info") or {}).get("pruned") or {}).get("lower_bound_s"))
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
    from .store import open_cache

    records, meta = read_run(run_dir)
    entries, no_winner, dups = entries_from_run(records, meta)
    tc = open_cache(cache)
    written = tc.put_many(entries, replace="newer")
    return UpdateReport(run_id=meta.get("run_id"), written=written, kept_newer=len(entries) - written,
                        no_winner=no_winner, duplicates=dups, path=str(tc.path))
