"""A sweep's run directory (meta.json and records.jsonl, new or resumed) and the tuned-cache
updates it makes as each problem finishes.

The machine's peak GEMM rate and memory bandwidth are measured once per new run, before the
sweep, by :func:`convbench.environment.measure_peak` in a fresh subprocess whose BLAS is
pinned to the run's thread count, and stored in meta.json (``peak``); each record's
``peak_pct`` is its GFLOP/s over that GEMM rate.
"""
from __future__ import annotations

import os
import sqlite3
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ..errors import ConvbenchError, ResultsError
from ..outcome import now_iso
from ..suites import Suite
from .options import PEAK_BUDGET_S, Resumed, SweepOptions


def load_avg() -> Optional[float]:
    """The 1-minute load average (recorded in meta: timings taken on a busy machine are suspect)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _peak(threads: int, note: Callable[[str], None]) -> dict[str, Any]:
    from ..environment import measure_peak

    note("measuring peak GEMM rate and memory bandwidth ...")
    try:
        return measure_peak(threads, PEAK_BUDGET_S)
    except ConvbenchError as exc:
        warnings.warn(f"peak calibration failed, peak_pct will be null: {exc}", stacklevel=3)
        return {"gemm_gflops": None, "gemm_dtype": "float32", "bandwidth_gbs": None, "error": str(exc)}


def open_run(out_dir: Path, suite: Suite, opts: SweepOptions, resumed: Optional[Resumed], *,
             n_candidates: int, shuffle_seed: int, peak: Optional[Mapping[str, Any]],
             command: Optional[Sequence[str]], note: Callable[[str], None]) -> Any:
    """The RunWriter of a new run under ``out_dir``, or of the ``resumed`` one reopened (on
    the machine it was started on: ResultsError otherwise)."""
    from .. import __version__
    from ..environment import env_id, fingerprint
    from ..results import RunWriter, new_run_id

    fp = fingerprint(opts.threads)
    eid = env_id(fp)
    if resumed is not None:
        if resumed.meta.get("env_id") and resumed.meta["env_id"] != eid:
            raise ResultsError(
                f"--resume: this machine's env_id {eid} differs from the run's "
                f"{resumed.meta['env_id']} (another machine, CPU or thread count); start a new run")
        writer = RunWriter.reopen(resumed.run_dir, lock=resumed.lock)
        # `finished` stays until the first new record: a resume with nothing to do keeps it
        writer.update_meta(candidates=n_candidates, env_id=resumed.meta.get("env_id") or eid,
                           resumed=list(resumed.meta.get("resumed") or []) + [now_iso()])
        return writer
    peak = dict(peak) if peak is not None else _peak(opts.threads, note)
    run_id = new_run_id(suite.name)
    meta = {
        "run_id": run_id, "suite": suite.name, "created": now_iso(),
        "command": list(sys.argv if command is None else command),
        **opts.run_meta(),  # seed, threads, device, budget_s, strategy, ..., backends, overrides
        "convbench_version": __version__, "environment": fp, "env_id": eid, "peak": peak,
        "shuffle_seed": shuffle_seed, "problems": len(suite.problems), "candidates": n_candidates,
        "finished": None, "load_avg_start": load_avg(),
        "noise_start": _noise_now(opts.threads, note, "at the start"),
        # beyond the schema: what --resume needs to continue the same run
        "suite_source": suite.path or suite.source,
        "problem_list": [[p.name, p.spec.to_dict(), suite.counts.get(p.name, 1)] for p in suite.problems],
    }
    return RunWriter(out_dir / run_id, meta)


def finish_run(writer: Any, threads: int, stream: Any) -> None:
    """Mark the run finished; warn when the machine was busy, or its own speed moved (the
    records' machine-speed canaries, :func:`convbench.noise.canary_drift`), while it measured."""
    from ..environment import available_cores
    from ..noise import CANARY_SPREAD

    end = load_avg()
    writer.update_meta(load_avg_end=end, noise_end=_noise_now(
        threads, lambda line: print(f"convbench sweep: {line}", file=stream), "at the end"))
    records = _records(writer)
    drifts = _canary_drift(records)
    if drifts:
        writer.update_meta(canary_drift=drifts)
    writer.finish()
    busy = max([v for v in (writer.meta.get("load_avg_start"), end) if v is not None] or [0.0])
    cores = available_cores()
    if busy > cores + 1:  # the sweep itself keeps about `threads` cores busy
        print(f"convbench sweep: warning: the machine was busy while measuring (1-minute load "
              f"average {busy:.1f} on {cores} usable cores, threads={threads}); other processes "
              f"shared the cores, so these timings are not trustworthy - re-run on a quiet machine",
              file=stream)
    for drift in drifts:
        if max(drift["spread"], abs(drift["trend"])) > CANARY_SPREAD:
            where = f" on {drift['host']}" if len(drifts) > 1 and drift.get("host") else ""
            print(f"convbench sweep: warning: the machine's own speed moved while it measured"
                  f"{where}: the machine-speed canary ran {drift['p10_s'] * 1e6:.0f}-"
                  f"{drift['p90_s'] * 1e6:.0f} us over the run's records (10th-90th percentile), "
                  f"{drift['first_s'] * 1e6:.0f} us in the first tenth and "
                  f"{drift['last_s'] * 1e6:.0f} us in the last; the medians carry that, and "
                  "`compare` against another run withholds its verdicts when the canary moved "
                  "between them (meta.json: canary_drift; `convbench doctor`)", file=stream)
    flagged = sum(1 for r in records if r.get("status") == "ok" and r.get("noise"))
    if flagged:
        print(f"convbench sweep: warning: {flagged} ok records carry noise flags (steal, busy, "
              "tick, throttle, freq, drift: their `noise` field); see `convbench doctor`",
              file=stream)


def _noise_now(threads: int, note: Callable[[str], None], when: str) -> list[str]:
    """What disturbs measuring now (convbench.noise.run_warnings), each line noted as a warning."""
    from ..noise import run_warnings

    found = run_warnings(threads)
    for line in found:
        note(f"warning {when} of the run: {line}; timings may be spoiled (convbench doctor)")
    return found


def _records(writer: Any) -> list:
    """The run's records as written (none if they cannot be read: the warnings are skipped)."""
    from ..results import read_records

    try:
        return read_records(writer.run_dir)
    except (ConvbenchError, OSError, ValueError):
        return []


def _canary_drift(records: Sequence[Mapping[str, Any]]) -> list[dict]:
    """convbench.noise.canary_drift over a run's records, one entry per host (a record's
    ``hostname``, else its ``machine``; None for records naming neither), each with its
    ``host``, so that a cluster run's machines are not taken for one machine changing speed;
    hosts with too few records are left out."""
    from ..noise import canary_drift

    hosts: dict[Optional[str], list] = {}
    for r in records:
        hosts.setdefault(r.get("hostname") or r.get("machine"), []).append(r)
    out = []
    for host, recs in hosts.items():
        drift = canary_drift(recs)
        if drift is not None:
            out.append({"host": host, **drift})
    return out


class CacheUpdates:
    """Stores winners in the tuned cache as each problem finishes, so a killed or interrupted
    sweep keeps what it finished (and concurrent sweeps interleave their transactions). The
    cache is checked, writability included, before anything is measured; an entry that then
    fails to be written is an error in the report (``errors``) and never stops the entries
    after it."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.tc: Any = None
        self.written = self.unchanged = self.no_winner = 0
        self.errors: list[str] = []

    @property
    def error(self) -> Optional[str]:
        """The first failure (None: every write succeeded)."""
        return self.errors[0] if self.errors else None

    def open(self) -> None:
        """Open and validate the cache and check it can be written, before measuring: a file
        that is not a convbench cache, or one this process cannot write, stops the sweep with
        its CacheError here, not after an hour."""
        from ..cache import open_cache

        self.tc = open_cache(self.cache)
        self.tc.entries(spec_key="")  # reads it: validation happens on the first connection
        self.tc.check_writable()

    def store(self, records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> None:
        """Store the winner of the problem(s) ``records`` belong to, one entry at a time."""
        if not records:
            return
        from ..cache import entries_from_run, open_cache

        problem = records[0].get("problem")
        try:
            if self.tc is None:
                self.tc = open_cache(self.cache)
            entries, no_winner, _ = entries_from_run(list(records), meta)
        except (ConvbenchError, sqlite3.Error, OSError, ValueError, TypeError, KeyError) as exc:
            self._failed(problem, exc)
            return
        self.no_winner += no_winner
        for entry in entries:
            try:
                written = self.tc.put(entry, replace="newer")
            except (ConvbenchError, sqlite3.Error, OSError) as exc:
                self._failed(problem, exc)
                continue
            self.written += written
            self.unchanged += not written

    def _failed(self, problem: Any, exc: BaseException) -> None:
        text = str(exc) if isinstance(exc, ConvbenchError) else f"{type(exc).__name__}: {exc}"
        self.errors.append(f"problem {problem}: {text}")

    def store_finished(self, records: Sequence[Mapping[str, Any]], unfinished: set[str],
                       meta: Mapping[str, Any]) -> None:
        """Store the problems of a resumed run that its earlier process finished."""
        by_problem: dict[str, list[Mapping[str, Any]]] = {}
        for r in records:
            if r["problem"] not in unfinished:
                by_problem.setdefault(r["problem"], []).append(r)
        for recs in by_problem.values():
            self.store(recs, meta)

    def report(self, run_id: Optional[str]) -> str:
        path = self.tc.path if self.tc is not None else "(none)"
        text = (f"cache {path}: {self.written} entr{'y' if self.written == 1 else 'ies'} written from "
                f"run {run_id} as problems finished, {self.unchanged} unchanged or kept (newer "
                f"cached), {self.no_winner} problem(s) without a winner")
        if self.errors:
            text += (f"\nerror: the tuned cache was not updated for {len(self.errors)} entr"
                     f"{'y' if len(self.errors) == 1 else 'ies'} (the run's records are complete; "
                     f"store them later with convbench.cache.update_from_run):\n  "
                     + "\n  ".join(self.errors))
        return text


__all__ = ["open_run", "finish_run", "load_avg", "CacheUpdates"]
