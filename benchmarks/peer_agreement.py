"""Do convbench's medians agree with other timers' on the same candidates? In one run.

Sweeps SUITE (convbench's own path: worker processes, rounds) to find the ok (problem,
candidate) pairs, then times every pair again in ``--cycles`` (3) interleaved cycles, each in
a shuffled order of the three timers, so a machine that changes speed over minutes changes
it for all three alike:

- **convbench**: one timing task in convbench's worker process for the candidate's family
  (the sweep's own measurement: warm-up, samples, noise flags), not verified again;
- **torch_timer**: ``torch.utils.benchmark.Timer.blocked_autorange`` in this process on the
  same inputs (when torch is installed);
- **pyperf**: ``python -m pyperf timeit`` in its own worker processes (thread variables
  inherited).

Each timer's figure for a pair is the median of its cycles' medians. Prints each peer's ratio
to convbench's, and the share within --within (5%) over all pairs and over the **steady**
pairs: convbench's own cycle medians within --within of each other and no ``steal``/``busy``
flag on them, i.e. the machine held still while the pair was timed (the goal, "within 5%
where the machine is quiet", is read there). The sweep's median is shown beside them.

    python benchmarks/peer_agreement.py quick --backends numpy-im2col torch --threads 2

Writes ``peer_agreement.json`` (every cycle of every timer) into the sweep's run directory.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import convbench as cb
from convbench.environment import set_thread_env

_SETUP = ("import json; import convbench as cb; spec = cb.ConvSpec.from_dict(json.loads({spec!r})); "
          "x, w = cb.make_inputs(spec, seed=0); b = cb.get_backend({backend!r}); "
          "b.set_threads({threads}); p = b.prepare(spec, x, w, algorithm={algorithm!r}, "
          "device={device!r})")
TIMERS = ("convbench", "torch_timer", "pyperf")
MACHINE = frozenset({"steal", "busy"})


def pyperf_median(rec: dict, threads: int, args: argparse.Namespace) -> Optional[float]:
    """pyperf timeit's median seconds per call of the record's candidate, or None if it failed."""
    setup = _SETUP.format(spec=json.dumps(rec["spec"]), backend=rec["backend"], threads=threads,
                          algorithm=rec["algorithm"], device=rec["device"])
    env = set_thread_env(threads)
    inherit = ",".join(k for k in env if k.endswith("_THREADS") or k in ("MKL_DYNAMIC", "OMP_DYNAMIC",
                                                                          "PYTHONPATH"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [sys.executable, "-m", "pyperf", "timeit", "--quiet", "-o", str(out),
               "--processes", str(args.pyperf_processes), "--values", str(args.pyperf_values),
               "--min-time", str(args.pyperf_min_time), "--inherit-environ", inherit,
               "-s", setup, "p.run(); p.synchronize()"]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if res.returncode != 0 or not out.exists():
            print(f"  pyperf failed for {rec['candidate']}: {res.stderr.strip()[-300:]}", file=sys.stderr)
            return None
        import pyperf

        return float(pyperf.Benchmark.load(str(out)).median())


class TorchTimer:
    """``blocked_autorange`` medians of one candidate prepared once in this process."""

    def __init__(self, rec: dict, threads: int, min_run_time: float) -> None:
        from torch.utils.benchmark import Timer

        spec = cb.ConvSpec.from_dict(rec["spec"])
        x, w = cb.make_inputs(spec, seed=0)
        b = cb.get_backend(rec["backend"])
        b.set_threads(threads)
        self.prepared = b.prepare(spec, x, w, algorithm=rec["algorithm"], device=rec["device"])
        self.timer = Timer("p.run(); p.synchronize()", globals={"p": self.prepared},
                           num_threads=threads)
        self.threads, self.min_run_time = threads, min_run_time

    def __call__(self) -> float:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.threads):
            return float(self.timer.blocked_autorange(min_run_time=self.min_run_time).median)

    def close(self) -> None:
        self.prepared.close()


def convbench_median(pool: Any, rec: dict, budget_s: float) -> tuple[Optional[float], list]:
    """One timing task of the record's candidate in convbench's worker: (median, noise flags)."""
    from convbench.pool import Task

    out = pool.run(Task(spec=rec["spec"], backend=rec["backend"], algorithm=rec["algorithm"],
                        device=rec["device"], seed=0, budget_s=budget_s, verify=False))
    if out.get("status") != "ok":
        return None, []
    return float(out["median_s"]), list(out.get("noise") or [])


def time_pair(pool: Any, rec: dict, threads: int, args: argparse.Namespace,
              rng: random.Random) -> dict[str, Any]:
    """Every timer on one pair, ``args.cycles`` times, each cycle in a shuffled order."""
    torch_timer = None
    if not args.no_torch_timer:
        try:
            torch_timer = TorchTimer(rec, threads, args.torch_min_run_time)
        except ImportError:
            pass
        except Exception as exc:   # the candidate does not run in this process: no figure
            print(f"  torch timer skipped for {rec['candidate']}: {exc}", file=sys.stderr)
    cycles: dict[str, list] = {k: [] for k in TIMERS}
    noise: set = set()
    try:
        for _ in range(args.cycles):
            order = list(TIMERS)
            rng.shuffle(order)
            for t in order:
                if t == "convbench":
                    m, flags = convbench_median(pool, rec, args.cycle_budget)
                    noise.update(flags)
                elif t == "torch_timer":
                    m = torch_timer() if torch_timer is not None else None
                else:
                    m = None if args.no_pyperf else pyperf_median(rec, threads, args)
                if m is not None:
                    cycles[t].append(m)
    finally:
        if torch_timer is not None:
            torch_timer.close()
    row: dict[str, Any] = {"problem": rec["problem"], "candidate": rec["candidate"],
                           "sweep_s": rec["median_s"], "cycles_s": cycles,
                           "noise": sorted(noise)}
    for t in TIMERS:
        row[f"{t}_s"] = statistics.median(cycles[t]) if cycles[t] else None
    own = cycles["convbench"]
    row["steady"] = bool(len(own) == args.cycles and max(own) <= (1 + args.within) * min(own)
                         and not noise & MACHINE)
    return row


def agreement(rows: list[dict], key: str, within: float) -> str:
    def share(rs: list[dict]) -> str:
        pairs = [r for r in rs if r.get(key) and r.get("convbench_s")]
        close = sum(abs(r[key] / r["convbench_s"] - 1) <= within for r in pairs)
        return f"{close}/{len(pairs)}"
    steady = [r for r in rows if r["steady"]]
    return f"{key[:-2]} within {within:.0%}: {share(rows)} of all pairs, {share(steady)} steady"


def main(argv: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite")
    ap.add_argument("--backends", nargs="+", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--budget", type=float, default=None, help="the sweep's budget per candidate")
    ap.add_argument("--max-pairs", type=int, default=None, help="time at most this many pairs")
    ap.add_argument("--within", type=float, default=0.05)
    ap.add_argument("--cycles", type=int, default=3, help="interleaved cycles per pair (default 3)")
    ap.add_argument("--cycle-budget", type=float, default=0.2,
                    help="convbench's timing budget per cycle, seconds (default 0.2)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the timers' order per cycle")
    ap.add_argument("--torch-min-run-time", type=float, default=0.2)
    ap.add_argument("--pyperf-processes", type=int, default=1)
    ap.add_argument("--pyperf-values", type=int, default=3)
    ap.add_argument("--pyperf-min-time", type=float, default=0.05)
    ap.add_argument("--no-pyperf", action="store_true")
    ap.add_argument("--no-torch-timer", action="store_true")
    ap.add_argument("--peak-gflops", type=float, default=None, help="skip peak calibration (tests)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.cycles < 1:
        ap.error(f"--cycles {args.cycles}: must be at least 1")
    kw: dict[str, Any] = {}
    if args.peak_gflops:
        kw["peak"] = {"gemm_gflops": args.peak_gflops, "gemm_dtype": "float32"}
    res = cb.sweep(args.suite, backends=args.backends, threads=args.threads, budget_s=args.budget,
                   out=args.out or tempfile.mkdtemp(prefix="convbench-peers-"), update_cache=False,
                   progress=False, **kw)
    from convbench.pool import WorkerPool

    threads = int(res.meta["threads"])
    ok = [r for r in res.records if r["status"] == "ok"][: args.max_pairs]
    rng = random.Random(args.seed)
    rows = []
    with WorkerPool(threads) as pool:
        for rec in ok:
            row = time_pair(pool, rec, threads, args, rng)
            rows.append(row)
            base = row["convbench_s"]
            print(f"{row['problem']:<28} {row['candidate']:<34} convbench "
                  + (f"{base * 1e3:9.4f} ms" if base else "   failed   ")
                  + f"  sweep {row['sweep_s'] / base:6.3f}x" * bool(base)
                  + "".join(f"  {k[:-2]} {row[k] / base:6.3f}x" for k in ("torch_timer_s", "pyperf_s")
                            if row[k] and base)
                  + f"  {'steady' if row['steady'] else 'unsteady'} {','.join(row['noise']) or '-'}",
                  flush=True)
    (Path(res.run_dir) / "peer_agreement.json").write_text(json.dumps(rows, indent=1))
    print(f"run {res.run_dir}, {threads} threads, {args.cycles} cycles per pair; "
          f"{sum(r['steady'] for r in rows)} of {len(rows)} pairs steady")
    for k in ("sweep_s", "torch_timer_s", "pyperf_s"):
        print("  " + agreement(rows, k, args.within))
    return rows


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
