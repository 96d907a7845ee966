"""Do convbench's medians agree with other timers' on the same candidates? In one run.

Sweeps SUITE (convbench's own path: worker processes, rounds), then times every ok
(problem, candidate) again, in this process and on the same inputs, with
``torch.utils.benchmark.Timer.blocked_autorange`` (when torch is installed) and with pyperf
(``python -m pyperf timeit`` in its own worker processes, thread variables inherited).
Prints each median next to convbench's and the share of pairs within --within (5%) of it
(goal: within 5% where the machine is quiet; run `convbench doctor` first).

    python benchmarks/peer_agreement.py quick --backends numpy-im2col torch --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
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


def torch_median(rec: dict, threads: int, min_run_time: float) -> Optional[float]:
    """torch.utils.benchmark.Timer.blocked_autorange's median on a candidate prepared here."""
    try:
        from torch.utils.benchmark import Timer
    except ImportError:
        return None
    from threadpoolctl import threadpool_limits

    spec = cb.ConvSpec.from_dict(rec["spec"])
    x, w = cb.make_inputs(spec, seed=0)
    b = cb.get_backend(rec["backend"])
    b.set_threads(threads)
    p = b.prepare(spec, x, w, algorithm=rec["algorithm"], device=rec["device"])
    try:
        with threadpool_limits(limits=threads):
            m = Timer("p.run(); p.synchronize()", globals={"p": p}, num_threads=threads)
            return float(m.blocked_autorange(min_run_time=min_run_time).median)
    finally:
        p.close()


def agreement(rows: list[dict], key: str, within: float) -> str:
    pairs = [r for r in rows if r.get(key)]
    close = sum(abs(r[key] / r["convbench_s"] - 1) <= within for r in pairs)
    return f"{key}: {close}/{len(pairs)} within {within:.0%}" if pairs else f"{key}: not measured"


def main(argv: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite")
    ap.add_argument("--backends", nargs="+", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--budget", type=float, default=None)
    ap.add_argument("--max-pairs", type=int, default=None, help="time at most this many pairs")
    ap.add_argument("--within", type=float, default=0.05)
    ap.add_argument("--torch-min-run-time", type=float, default=0.5)
    ap.add_argument("--pyperf-processes", type=int, default=4)
    ap.add_argument("--pyperf-values", type=int, default=3)
    ap.add_argument("--pyperf-min-time", type=float, default=0.1)
    ap.add_argument("--no-pyperf", action="store_true")
    ap.add_argument("--peak-gflops", type=float, default=None, help="skip peak calibration (tests)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    kw: dict[str, Any] = {}
    if args.peak_gflops:
        kw["peak"] = {"gemm_gflops": args.peak_gflops, "gemm_dtype": "float32"}
    res = cb.sweep(args.suite, backends=args.backends, threads=args.threads, budget_s=args.budget,
                   out=args.out or tempfile.mkdtemp(prefix="convbench-peers-"), update_cache=False,
                   progress=False, **kw)
    threads = int(res.meta["threads"])
    ok = [r for r in res.records if r["status"] == "ok"][: args.max_pairs]
    rows = []
    for rec in ok:
        row = {"problem": rec["problem"], "candidate": rec["candidate"], "convbench_s": rec["median_s"],
               "noise": ",".join(rec.get("noise") or []) or "-",
               "torch_timer_s": torch_median(rec, threads, args.torch_min_run_time),
               "pyperf_s": None if args.no_pyperf else pyperf_median(rec, threads, args)}
        rows.append(row)
        print(f"{row['problem']:<28} {row['candidate']:<34} convbench {row['convbench_s'] * 1e3:9.4f} ms"
              + "".join(f"  {k[:-2]} {row[k] / row['convbench_s']:6.3f}x" for k in
                        ("torch_timer_s", "pyperf_s") if row[k]) + f"  noise {row['noise']}")
    print(f"run {res.run_dir}, {threads} threads; " + "; ".join(
        agreement(rows, k, args.within) for k in ("torch_timer_s", "pyperf_s")))
    return rows


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
