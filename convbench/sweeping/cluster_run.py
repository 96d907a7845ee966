"""The client's side of a sweep on a Dask cluster (:mod:`convbench.sweeping.distributed`):
plan every problem on every machine type, submit one task per (problem, machine type), write
the records as they arrive (the first of each (problem, candidate, machine) counts), store
each machine's winners in the tuned cache under its own machine key, and show the winners
of every machine side by side."""
from __future__ import annotations

import dataclasses

import queue
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from ..errors import ConvbenchError
from ..outcome import Status, make_record
from .distributed import (WATCH_S, Machine, adopt, backend_plans, close_pools, connect, discover,
                          machine_run_meta, machines_meta, measure_problem, resource, setup)


# ---- the run, as the client drives it --------------------------------------------------------
@dataclass
class _Job:
    """One (problem, machine type) task: its runnable candidates and its future."""

    key: str                  # the task key
    pp: Any                   # plan.ProblemPlan
    machine: Optional[str]    # None when spread
    cands: dict               # candidate name -> Candidate
    future: Any = None        # of its latest attempt
    attempts: int = 0
    finished: bool = False


class ClusterSweep:
    """Plans problems x machine types, submits one task per pair, writes what comes back."""

    def __init__(self, client: Any, machines: dict[str, Machine], opts: Any, suite: Any, *,
                 spread: bool, threads: Optional[int], prog: Any) -> None:
        self.client, self.machines, self.opts, self.suite = client, machines, opts, suite
        self.spread, self.threads, self.prog = spread, threads, prog
        self.token = secrets.token_hex(4)
        self.jobs: dict[str, _Job] = {}
        self.pending: list[tuple[Any, str, Any, dict]] = []  # (pp, machine, candidate, outcome)
        self.entries: list[Any] = []
        self.records: list[dict] = []
        self.by_problem: dict[str, dict[str, list[dict]]] = {}  # problem -> machine -> records
        self.seen: set[tuple[str, str, str]] = set()
        self.targets: dict[str, str] = {}   # backend name -> its "module:Class"
        self.duplicates = 0
        self.writer: Any = None
        self.events: "queue.Queue[Any]" = queue.Queue()
        self.topic = ""
        self.done: Any = None    # distributed.as_completed over the tasks

    # -- planning ------------------------------------------------------------------------------
    def plan(self, shuffle_seed: int, done_records: Sequence[Mapping[str, Any]]) -> None:
        """Every problem's candidates on every machine type (spread: on the first one)."""
        from .plan import DONE, RUN, make_plan

        for r in done_records:
            self.seen.add(self._key(r["problem"], r["candidate"], r.get("machine") or r.get("env_id")))
        for mid in sorted(self.machines)[:1] if self.spread else sorted(self.machines):
            bplans = backend_plans(self.machines[mid], self.prog.note)
            self.targets.update((bp.name, bp.target) for bp in bplans)
            done = {(p, c) for p, c, m in self.seen if m == self._mkey(mid)}
            for pp in make_plan(self.suite, bplans, self.opts.device, random.Random(shuffle_seed), done):
                self.entries += pp.entries
                for e in pp.entries:
                    if e.status not in (RUN, DONE):
                        out = {"status": e.status, "message": e.reason, "_measured": False}
                        self.pending.append((pp, mid, e.candidate, out))
                if pp.runnable:
                    key = f"convbench-{self.token}-{mid}-{pp.index}"
                    self.jobs[key] = _Job(key, pp, None if self.spread else mid,
                                          {str(c): c for c in pp.runnable})
        self.prog.set_total(sum(len(j.cands) for j in self.jobs.values()))

    def _mkey(self, machine: Optional[str]) -> str:
        return "" if self.spread else str(machine)

    def _key(self, problem: str, cand: str, machine: Optional[str]) -> tuple[str, str, str]:
        return (str(problem), str(cand), self._mkey(machine))

    @property
    def n_candidates(self) -> int:
        return len({str(e.candidate) for e in self.entries})

    # -- measuring -----------------------------------------------------------------------------
    def run(self, writer: Any, updates: Any) -> None:
        """Submit every task; write records as they arrive, until every task is done."""
        from distributed import as_completed

        self.writer = writer
        for pp, mid, cand, out in self.pending:
            self._write(pp, mid, sorted(self.machines[mid].hostnames)[0], cand, out)
        self.topic = f"convbench-records-{writer.meta['run_id']}-{self.token}"
        self.client.subscribe_topic(self.topic, lambda event: self.events.put(event[1]))
        try:
            self.done = as_completed([self._submit(job) for job in self.jobs.values()])
            watch = _Watch(self)
            while not self.done.is_empty():
                self._drain(0.2)
                if self.done.has_ready():
                    for fut in self.done.next_batch(block=False):
                        job = self.jobs[fut.key.rpartition("-a")[0]]
                        if fut is job.future:  # not an attempt given up by resubmit()
                            self._drain(0.0)
                            self._finish(job, fut, updates)
                watch.check()
            self._drain(0.0)
        finally:
            self.client.unsubscribe_topic(self.topic)

    def resubmit(self, machines: set) -> None:
        """Submit again the unfinished tasks of ``machines`` that wait for a worker (Dask does
        not reconsider them when a worker gains their resource; it does for new tasks)."""
        running = {k for keys in self.client.processing().values() for k in keys}
        for job in self.jobs.values():
            if not job.finished and job.machine in machines and job.future.key not in running:
                self.client.cancel(job.future)
                self.done.add(self._submit(job))

    def _submit(self, job: _Job) -> Any:
        spec = {"key": job.key, "topic": self.topic, "done_at": self._done_at(job),
                "problem": job.pp.problem.name,
                "spec": job.pp.problem.spec.to_dict(), "strategy": self.opts.strategy,
                "rounds": self.opts.rounds,
                "threads": self.threads, "settings": self.opts.task_settings(),
                "candidates": [[c.backend, self.targets.get(c.backend, ""), c.algorithm, c.device]
                               for c in job.cands.values()]}
        job.attempts += 1
        job.future = self.client.submit(measure_problem, spec, key=f"{job.key}-a{job.attempts}",
                                        pure=False, retries=1,
                                        resources={resource(job.machine, self.opts.device): 1},
                                        priority=-job.pp.index)
        return job.future

    @staticmethod
    def _done_at(job: _Job) -> list[str]:
        """Where the scheduler's metadata keeps the candidates of ``job`` measured so far."""
        return ["convbench-done", job.key]

    def _drain(self, wait_s: float) -> None:
        """Write the records that arrived (waiting up to ``wait_s`` for the first)."""
        try:
            msg = self.events.get(timeout=wait_s) if wait_s > 0 else self.events.get_nowait()
        except queue.Empty:
            return
        while True:
            self._arrived(msg)
            try:
                msg = self.events.get_nowait()
            except queue.Empty:
                return

    def _arrived(self, msg: Mapping[str, Any]) -> None:
        job = self.jobs.get(msg.get("job"))
        if job is None or msg["candidate"] not in job.cands:
            return  # an event of another client session
        mid = msg["machine"]
        if mid not in self.machines:  # spread: a machine type that joined later
            self.machines[mid] = Machine(mid, msg["threads"], msg["environment"], False,
                                         hostnames={msg["hostname"]})
            self.writer.update_meta(machines=machines_meta(self.machines))
        self._write(job.pp, mid, msg["hostname"], job.cands[msg["candidate"]], msg["outcome"])

    def _write(self, pp: Any, mid: str, hostname: str, cand: Any, outcome: Mapping[str, Any]) -> None:
        key = self._key(pp.problem.name, str(cand), mid)
        if key in self.seen:
            self.duplicates += 1
            return
        self.seen.add(key)
        m, spec, meta = self.machines[mid], pp.problem.spec, self.writer.meta
        base = {"run_id": meta["run_id"], "problem": pp.problem.name, "suite": self.suite.name,
                "spec": spec.to_dict(), "spec_key": spec.key, "label": spec.replace(name="").label}
        rec = make_record(base, spec, cand, outcome, threads=m.threads, env_id=mid, peak=m.peak,
                          cold_cache=self.opts.cold_cache, machine=mid, hostname=hostname)
        self.writer.append(rec)
        self.records.append(rec)
        self.by_problem.setdefault(pp.problem.name, {}).setdefault(mid, []).append(rec)
        self.prog.finish_one(rec, measured=outcome.get("_measured", True), index=pp.index)

    def _finish(self, job: _Job, fut: Any, updates: Any) -> None:
        """A task ended: record what never arrived, store the winners, forget the task."""
        first = sorted(self.machines)[0]
        if fut.status == "finished":
            res = fut.result()
            mid, host = job.machine or res["machine"], res["hostname"]
            why = {"status": Status.ERROR.value, "message": "measured, but its record never "
                   "reached the client; --resume the run to measure it again"}
        else:
            exc = fut.exception()
            mid = job.machine or first
            host = sorted(self.machines[mid].hostnames)[0]
            kind = Status.CRASHED if type(exc).__name__ == "KilledWorker" else Status.ERROR
            why = {"status": kind.value, "message": f"Dask task failed: {type(exc).__name__}: {exc}"}
        mid = mid if mid in self.machines else first
        for name, cand in job.cands.items():
            if self._key(job.pp.problem.name, name, mid) not in self.seen:
                self._write(job.pp, mid, host, cand, why)
        # released, a finished task is not recomputed when the worker holding its result dies
        fut.release()
        job.future, job.finished = None, True
        self.client.set_metadata(self._done_at(job), None)
        if updates is not None:
            for m, recs in self.by_problem.get(job.pp.problem.name, {}).items():
                if job.machine is None or m == job.machine:
                    updates.store(recs, machine_run_meta(self.writer.meta, m))


class _Watch:
    """Watches the cluster: adopts workers that join (a restarted one, or a new machine of a
    planned type; with spread, of any type) and says when a machine type with work left has
    no worker (its tasks wait for one)."""

    def __init__(self, run: ClusterSweep) -> None:
        self.run, self.next, self.warned = run, time.monotonic() + WATCH_S, set()
        self.known = set().union(*(m.workers for m in run.machines.values()))

    def check(self) -> None:
        if time.monotonic() < self.next:
            return
        self.next = time.monotonic() + WATCH_S
        run = self.run
        alive = set(run.client.scheduler_info()["workers"])
        joined = sorted(alive - self.known)
        self.known |= alive
        if joined:
            before = set(run.machines)
            taken = set(adopt(run.client, run.machines, run.threads, run.opts.device, workers=joined,
                              new_types=run.spread))
            if set(run.machines) != before:
                run.writer.update_meta(machines=machines_meta(run.machines))
            types = {mid for mid, m in run.machines.items() if m.workers & taken}
            if types:
                run.resubmit({None} | types if run.spread else types)
        waiting = {j.machine for j in run.jobs.values() if not j.finished} - {None}
        for mid in waiting:
            m = run.machines[mid]
            if not (m.workers & alive) and mid not in self.warned:
                self.warned.add(mid)
                run.prog.note(f"machine {mid} ({', '.join(sorted(m.hostnames))}): no Dask worker "
                              f"left; its problems wait until one returns (Ctrl-C, then --resume, "
                              f"to stop here)")
            elif m.workers & alive:
                self.warned.discard(mid)


# ---- the sweep -------------------------------------------------------------------------------
def cluster_settings(resumed: Any, spread: bool, threads: Optional[int]) -> tuple[bool, Optional[int]]:
    """(spread, threads) of a cluster sweep; a resumed run keeps its own (ConvbenchError when
    ``spread`` contradicts it)."""
    if resumed is None:
        return spread, threads
    kept = resumed.meta.get("cluster")
    if not kept:
        raise ConvbenchError(f"--scheduler: run {resumed.run_dir} was measured on one machine; "
                             "resume it without --scheduler")
    if spread and not kept.get("spread"):
        raise ConvbenchError("--spread: the run measures every problem on every machine type; "
                             "leave --spread out to resume it")
    return bool(kept.get("spread")), kept.get("threads")


def sweep_on_cluster(scheduler: str, *, opts: Any, suite: Any, resumed: Any, names: Sequence[str],
                     spread: bool, threads: Optional[int], out_dir: Any, shuffle_seed: int,
                     updates: Any, peak: Optional[Mapping[str, Any]], command: Any,
                     progress: bool, stream: Any) -> Any:
    """:func:`convbench.sweep` on the Dask cluster at ``scheduler`` (see the module docstring).
    ``threads``: as given (None: every machine uses all its cores)."""
    from . import SweepResult
    from .progress import Progress
    from .rundir import finish_run

    spread, threads = cluster_settings(resumed, spread, threads)
    prog = Progress(progress, len(suite.problems), stream)
    client, cluster = connect(scheduler)
    writer = None
    try:
        machines = discover(client, threads, opts.device)
        prog.note(f"convbench sweep {suite.name} on {scheduler}: {len(machines)} machine type(s): "
                  + "; ".join(f"{mid} = {', '.join(sorted(m.hostnames))} ({m.threads} threads"
                              f"{', GPU' if m.gpu else ''})" for mid, m in sorted(machines.items())))
        setup(client, machines, threads, names, opts.device, peak)
        run = ClusterSweep(client, machines, opts, suite, spread=spread, threads=threads, prog=prog)
        run.plan(shuffle_seed, resumed.records if resumed else [])
        writer = _open(out_dir, suite, opts, resumed, run, shuffle_seed, command,
                       cluster={"scheduler": scheduler, "spread": spread, "threads": threads})
        prog.note(f"run {writer.meta['run_id']}: {prog.total} candidate runs, results in {writer.run_dir}")
        try:
            run.run(writer, updates)
        except KeyboardInterrupt:
            prog.close()
            print(f"\nconvbench sweep: interrupted; {writer.written} records written. Continue with "
                  f"--resume {writer.run_dir} --scheduler ADDRESS", file=stream)
            raise
        writer.update_meta(cluster={**writer.meta["cluster"], "dropped_duplicates": run.duplicates})
        finish_run(writer, opts.threads, stream)
        if run.duplicates:
            prog.note(f"{run.duplicates} record(s) measured twice (a task re-run after a worker "
                      "died) were dropped; the first of each was kept")
    finally:
        prog.close()
        if writer is not None:
            writer.close()
        if cluster is not None:  # ours: stop its workers' worker processes first
            client.run(close_pools)
            client.close()
            cluster.close()
        else:  # a shared cluster's workers keep theirs for the next sweep
            client.close()
    records = list(resumed.records if resumed else []) + run.records
    result = SweepResult(writer.run_dir, records, _winners(records), dict(writer.meta), suite,
                         run.entries)
    if updates is not None:
        result.cache_report = updates.report(writer.meta.get("run_id"))
        result.cache_errors = list(updates.errors)
        if progress or result.cache_errors:
            print(result.cache_report, file=stream)
    return result


def _open(out_dir: Any, suite: Any, opts: Any, resumed: Any, run: ClusterSweep, shuffle_seed: int,
          command: Any, cluster: dict) -> Any:
    """The run directory's writer, its meta naming every machine (top-level environment,
    env_id and peak: the first machine type's, for readers that know one machine)."""
    from .rundir import open_run

    first = run.machines[sorted(run.machines)[0]]
    reopen = None if resumed is None else dataclasses.replace(  # (keeps the run's lock)
        resumed, meta={**resumed.meta, "env_id": None})  # the client's machine is not checked
    writer = open_run(out_dir, suite, opts, reopen, n_candidates=run.n_candidates,
                      shuffle_seed=shuffle_seed, peak=first.peak, command=command, note=run.prog.note)
    known = dict((resumed.meta.get("machines") or {}) if resumed else {})
    writer.update_meta(cluster=cluster, machines={**known, **machines_meta(run.machines)},
                       environment=first.environment, env_id=first.id, peak=first.peak)
    return writer


def _winners(records: Sequence[Mapping[str, Any]]) -> dict:
    """select_winners of a run on one machine type; {} otherwise (winners per (problem,
    device) would mix machines: see format_machine_winners)."""
    from ..selection import select_winners

    return select_winners(records) if len({r.get("machine") for r in records}) == 1 else {}


def format_machine_winners(records: Any) -> str:
    """The winner of every problem on every machine, side by side, as plain text (``records``:
    a list of records or the DataFrame of :func:`convbench.load_results`)."""
    import pandas as pd

    from ..fmt import fmt_time
    from ..report.tables import machine_winners
    from ..table import format_table

    table = machine_winners(records if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records)))
    if table.empty:
        return "(no records)"
    cols = [c for c in table.columns if c not in ("run_id", "device")]
    rows = [[fmt_time(v) if c.endswith("median_s") else "-" if v is None or v != v else str(v)
             for c, v in zip(cols, row)] for row in table[cols].itertuples(index=False)]
    return format_table([c.replace("median_s", "median") for c in cols], rows, width=10 ** 6,
                        legend=dict(table.attrs.get("legend") or {}))


__all__ = ["ClusterSweep", "sweep_on_cluster", "cluster_settings", "format_machine_winners"]
