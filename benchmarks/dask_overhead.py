"""What a sweep on a Dask cluster spends outside measuring, and the estimate for a large sweep.

Measures, on a LocalCluster of 2 worker processes on this machine:

* the scheduler's cost per task: no-op tasks needing a machine type's resource (as sweep
  tasks do), submitted at once, wall time / tasks;
* the cost per measuring task and per candidate on a Dask worker: the real
  :func:`convbench.sweeping.distributed.measure_problem` with a strategy that measures
  nothing (machine identity, the host lock, the done list, and per candidate one event to the
  client plus one metadata update, each a round trip to the scheduler); the settle pause
  before the host lock is released (at most ``convbench.pool.SETTLE_S``, while other worker
  processes still use CPU) waits nothing here, as no worker process runs, and is added back
  in the estimate at its most;
* the client's cost per record: :meth:`ClusterSweep._write` (make_record, one JSON line
  appended and fsync'd, the exactly-once bookkeeping), and per finished (problem, machine)
  its winner stored in a tuned cache, in a temporary directory.

Then it states what ``--problems`` x ``--candidates`` on ``--machines`` machine types (default
1,000 x 50 on 64) would spend outside measuring: serial work on the scheduler and the client,
and the overhead on each machine's critical path.

    python benchmarks/dask_overhead.py [--tasks 2000] [--client-problems 40]

Run it on a quiet machine: every figure is a wall-clock time.
"""
from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from pathlib import Path


def _noop(i: int) -> int:
    return i


def null_strategy(pool, problem_name, spec, candidates, make_task, emit) -> None:
    """Emits a typical ok outcome per candidate without measuring anything."""
    samples = [1e-3 * (1 + 0.01 * k) for k in range(60)]
    for cand in candidates:
        emit(cand, {"status": "ok", "median_s": 1e-3, "iqr_s": 1e-5, "min_s": 9.9e-4, "n_samples": 60,
                    "loops": 4, "samples_s": samples, "round_samples_s": [samples[:20]] * 3,
                    "round_medians_s": [1e-3] * 3, "timer": "perf_counter", "wall_s": 0.3,
                    "start_time": "2026-01-01T00:00:00.000Z", "end_time": "2026-01-01T00:00:00.300Z",
                    "info": {"threads": 2}})


def _install_null_strategy() -> None:
    from convbench.strategies import STRATEGIES

    STRATEGIES["bench-null"] = null_strategy


def scheduler_per_task(client, res: dict, n: int) -> float:
    """Seconds per no-op task needing the machine type's resource, n submitted at once."""
    client.gather(client.map(_noop, range(50), pure=False, resources=res))  # warm up
    t0 = time.perf_counter()
    futs = client.map(_noop, range(n), pure=False, resources=res)
    client.gather(futs)
    return (time.perf_counter() - t0) / n


def measuring_task(client, res: dict, n_tasks: int, n_cands: int) -> float:
    """Wall seconds of one measure_problem task with ``n_cands`` candidates (nothing measured),
    tasks run one after another as the host lock makes them."""
    from convbench.sweeping.distributed import measure_problem

    client.run(_install_null_strategy)
    topic = f"bench-{secrets.token_hex(4)}"
    client.subscribe_topic(topic, lambda event: None)
    spec = {"n": 1, "c_in": 4, "c_out": 4, "input_size": [8, 8], "kernel_size": [3, 3]}
    times = []
    for i in range(n_tasks):
        key = f"bench-{secrets.token_hex(4)}-{i}"
        job = {"key": key, "topic": topic, "done_at": ["bench-done", key], "problem": f"p{i}",
               "spec": _spec_dict(spec), "strategy": "bench-null", "threads": 1, "settings": {},
               "candidates": [["fake", "", f"a{k}", "cpu"] for k in range(n_cands)]}
        t0 = time.perf_counter()
        client.submit(measure_problem, job, key=key, pure=False, resources=res).result()
        times.append(time.perf_counter() - t0)
        client.set_metadata(["bench-done", key], None)
    client.unsubscribe_topic(topic)
    return sorted(times)[len(times) // 2]


def _spec_dict(kw: dict) -> dict:
    from convbench import ConvSpec

    return ConvSpec(**kw).to_dict()


def client_costs(n_problems: int, n_cands: int) -> tuple[float, float]:
    """Seconds the client spends per arriving record (ClusterSweep._write) and per finished
    (problem, machine) storing its winner in the tuned cache (CacheUpdates.store)."""
    from convbench import ConvSpec
    from convbench.registry import Candidate
    from convbench.results import RunWriter
    from convbench.suites import Problem
    from convbench.sweeping.cluster_run import ClusterSweep
    from convbench.sweeping.distributed import Machine, machine_run_meta, machines_meta
    from convbench.sweeping.options import SweepOptions
    from convbench.sweeping.plan import ProblemPlan
    from convbench.sweeping.progress import Progress
    from convbench.sweeping.rundir import CacheUpdates

    m = Machine("m" * 16, 2, {"hostname": "h", "cpu_model": "bench"}, False, {"127.0.0.1"}, {"h"},
                peak={"gemm_gflops": 50.0})
    run = ClusterSweep(None, {m.id: m}, SweepOptions.from_arguments(threads=1), None, spread=False,
                       threads=None, prog=Progress(False, n_problems))
    run.suite = type("S", (), {"name": "bench"})()
    outcome: dict = {}
    null_strategy(None, "p", None, ["x"], None, lambda c, o: outcome.update(o))
    write_s = store_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        run.writer = RunWriter(Path(tmp) / "run", {"run_id": "bench", "machines": machines_meta({m.id: m})})
        updates = CacheUpdates(Path(tmp) / "cache.db")
        updates.open()
        meta = machine_run_meta(run.writer.meta, m.id)
        for i in range(n_problems):
            spec = ConvSpec(n=1, c_in=4 + i, c_out=4, input_size=(8, 8), kernel_size=3, name=f"p{i}")
            pp = ProblemPlan(i + 1, Problem(f"p{i}", spec))
            t0 = time.perf_counter()
            for k in range(n_cands):
                run._write(pp, m.id, "h", Candidate("numpy-direct", f"a{k}", "cpu"), outcome)
            t1 = time.perf_counter()
            updates.store(run.by_problem[f"p{i}"][m.id], meta)
            write_s += t1 - t0
            store_s += time.perf_counter() - t1
        run.writer.close()
        assert updates.written == n_problems, updates.report("bench")
    return write_s / (n_problems * n_cands), store_s / n_problems


def estimate(t_task: float, t_problem: float, n_cands_measured: int, t_record: float,
             t_store: float, problems: int, candidates: int, machines: int) -> list[str]:
    """The large sweep's time outside measuring, from the measured figures."""
    from convbench.pool import SETTLE_S

    per_cand = t_problem / n_cands_measured
    tasks, records = problems * machines, problems * candidates * machines
    per_machine = problems * (t_task + per_cand * candidates + SETTLE_S)
    return [
        f"{problems} problems x {candidates} candidates on {machines} machine types: {tasks:,} tasks, "
        f"{records:,} records",
        f"  scheduler, serial: {tasks:,} tasks x {t_task * 1e3:.2f} ms + {records:,} records x "
        f"{per_cand * 1e3:.2f} ms (event + done mark, measured end to end: an upper bound) = "
        f"{(tasks * t_task + records * per_cand) / 60:.0f} min",
        f"  client, serial: {records:,} records x {t_record * 1e3:.2f} ms + {tasks:,} cache stores x "
        f"{t_store * 1e3:.1f} ms = {(records * t_record + tasks * t_store) / 60:.0f} min (overlaps the "
        "measuring: on the critical path only where it exceeds the measuring time)",
        f"  each machine's critical path: {problems} tasks x ({t_task * 1e3:.2f} ms dispatch + "
        f"{candidates} x {per_cand * 1e3:.2f} ms messages + {SETTLE_S:g} s settle pause) = "
        f"{per_machine / 60:.1f} min outside measuring",
        f"  with --spread on {machines} identical machines: {problems:,} tasks, "
        f"{problems * candidates:,} records: client "
        f"{problems * candidates * t_record + problems * t_store:.0f} s, "
        f"per machine {per_machine / machines:.0f} s",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=2000, help="no-op tasks for the scheduler figure")
    ap.add_argument("--problem-tasks", type=int, default=20, help="measuring tasks (nothing measured)")
    ap.add_argument("--task-candidates", type=int, default=50, help="candidates per measuring task")
    ap.add_argument("--client-problems", type=int, default=40,
                    help="problems (of --task-candidates records each) for the client figures")
    ap.add_argument("--problems", type=int, default=1000)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--machines", type=int, default=64)
    a = ap.parse_args()

    from distributed import Client, LocalCluster

    from convbench.sweeping.distributed import discover, resource

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cl, \
            Client(cl) as client:
        (mid,) = discover(client, 1, "cpu")  # labels the workers as a sweep does
        res = {resource(mid, "cpu"): 1}
        t_task = scheduler_per_task(client, res, a.tasks)
        t_problem = measuring_task(client, res, a.problem_tasks, a.task_candidates)
    t_record, t_store = client_costs(a.client_problems, a.task_candidates)
    print(f"scheduler, per no-op task ({a.tasks} at once): {t_task * 1e3:.3f} ms")
    print(f"measuring task with {a.task_candidates} candidates, nothing measured (median of "
          f"{a.problem_tasks}): {t_problem * 1e3:.1f} ms = {t_problem / a.task_candidates * 1e3:.2f} ms "
          "per candidate (host lock, done list, event, done mark)")
    print(f"client, per record ({a.client_problems * a.task_candidates} written): {t_record * 1e3:.3f} ms; "
          f"per finished problem, its winner into the tuned cache: {t_store * 1e3:.2f} ms")
    for line in estimate(t_task, t_problem, a.task_candidates, t_record, t_store, a.problems,
                         a.candidates, a.machines):
        print(line)


if __name__ == "__main__":
    main()
