"""The timer's own cost, and agreement of its medians with torch.utils.benchmark and pyperf.

Part 1 times a trivial callable (``def f(): pass``) four ways: a bare ``for`` loop around
``perf_counter_ns``, convbench's ``time_callable``, ``torch.utils.benchmark.Timer
.blocked_autorange`` and pyperf (``Runner.bench_func`` in its own worker processes). The
difference to the bare loop (run in blocks as long as the timer's calibrated inner loop)
is the timer's overhead per call. It also shows convbench's
fixed cost per sample (one call per sample, ``min_sample_s=0``), which calibration
amortises over the inner loop.

Part 2 times one real candidate, ``torch.nn.functional.conv2d`` on a 1x64x56x56 float32
input with a 64x64x3x3 kernel (padding 1, CPU), with convbench, torch's Timer and pyperf
back to back, for several rounds (load drifts on a shared machine, so each round's ratios
are printed next to each other), and prints the medians' ratios. To separate the effect of
sample length from the method, it also runs convbench with samples as long as torch's
blocks (``min_sample_s`` = torch's calls per block x its median).

    python benchmarks/timer_overhead.py [--threads 1] [--budget 2] [--rounds 3]

The torch parts are skipped when torch is missing; the pyperf parts when pyperf is.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from convbench.environment import set_thread_env
from convbench.timing import time_callable


def f() -> None:
    pass


def bare_loop_ns(fn, n: int, repeats: int) -> float:
    """Median over repeats of (time of n calls in a plain loop) / n, in ns.

    n should match the timer's calibrated inner loop: on a loaded machine a longer block is
    more likely to be preempted, which inflates its per-call time.
    """
    clock = time.perf_counter_ns
    per_call = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(n):
            fn()
        per_call.append((clock() - t0) / n)
    return statistics.median(per_call)


PYPERF_SCRIPT = r'''
import os, pyperf
# pyperf re-runs this script in its worker processes with its own arguments: use the env
what, threads = os.environ["CB_PYPERF_WHAT"], int(os.environ["CB_PYPERF_THREADS"])
runner = pyperf.Runner()
if what == "noop":
    def f():
        pass
    runner.bench_func("noop", f)
else:
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 64, 56, 56, generator=g)
    w = torch.rand(64, 64, 3, 3, generator=g)
    runner.bench_func("conv", F.conv2d, x, w, None, 1, 1)
'''


def pyperf_median_s(what: str, threads: int) -> float | None:
    try:
        import pyperf
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "bench.py")
        out = os.path.join(tmp, "out.json")
        with open(script, "w") as fh:
            fh.write(PYPERF_SCRIPT)
        env = set_thread_env(threads)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env["CB_PYPERF_WHAT"], env["CB_PYPERF_THREADS"] = what, str(threads)
        cmd = [sys.executable, script, "--quiet", "-o", out,
               "--processes", "3", "--values", "3", "--warmups", "1",
               "--inherit-environ", "PYTHONPATH,OMP_NUM_THREADS,MKL_NUM_THREADS,OPENBLAS_NUM_THREADS,"
               "CB_PYPERF_WHAT,CB_PYPERF_THREADS"]
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        return pyperf.Benchmark.load(out).median()


def fmt_s(s: float | None) -> str:
    if s is None:
        return "      n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= scale:
            return f"{s / scale:8.3f} {unit}"
    return f"{s / 1e-9:8.3f} ns"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:6.3f}" if a is not None and b else "   n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds per measurement (default 2)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds of every method (default 3): load drifts on shared machines")
    args = ap.parse_args()
    try:
        import torch
        import torch.utils.benchmark as tbench
    except ImportError:
        torch = None
        tbench = None

    print(f"== Part 1: overhead on a trivial callable (def f(): pass), {args.rounds} interleaved rounds ==")
    res: dict[str, list[float]] = {"bare": [], "ours": [], "torch": [], "pyperf": [], "sample": []}
    loops = []
    for r in range(args.rounds):
        ours = time_callable(f, budget_s=args.budget / 2)
        res["bare"].append(bare_loop_ns(f, n=ours.loops, repeats=max(11, ours.n_samples)) * 1e-9)
        res["ours"].append(ours.median_s)
        loops.append(ours.loops)
        res["sample"].append(time_callable(f, budget_s=0.25, min_sample_s=0.0).median_s)  # loops = 1
        if tbench:
            res["torch"].append(tbench.Timer(stmt="f()", globals={"f": f})
                                .blocked_autorange(min_run_time=args.budget / 2).median)
        if r == 0:
            pp = pyperf_median_s("noop", args.threads)
            if pp is not None:
                res["pyperf"].append(pp)
    med = {k: (statistics.median(v) if v else None) for k, v in res.items()}
    bare = med["bare"]
    print(f"{'method':<42}{'per call':>12}{'x bare':>9}{'overhead/call':>16}   rounds")
    rows = [("bare for-loop, same block length", "bare"),
            (f"convbench time_callable (loops~{statistics.median(loops):.0f})", "ours"),
            ("torch.utils.benchmark blocked_autorange", "torch"),
            ("pyperf bench_func (3 procs x 3 values)", "pyperf")]
    for name, key in rows:
        v = med[key]
        ov = f"{(v - bare) * 1e9:+10.1f} ns" if v is not None else "       n/a"
        each = " ".join(f"{x * 1e9:.1f}" for x in res[key]) or "-"
        print(f"{name:<42}{fmt_s(v):>12}{ratio(v, bare):>9}{ov:>16}   {each} ns")
    print(f"convbench fixed cost per sample (loops=1: call + timer + sync + loop setup): "
          f"{med['sample'] * 1e9:.0f} ns; amortised over loops~{statistics.median(loops):.0f}: "
          f"{med['sample'] * 1e9 / statistics.median(loops):.3f} ns/call")

    print()
    print("== Part 2: agreement on torch F.conv2d 1x64x56x56, 64->64, 3x3, pad 1, float32, CPU ==")
    if torch is None:
        print("torch is not installed: skipped")
        return 0
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 64, 56, 56, generator=g)
    w = torch.rand(64, 64, 3, 3, generator=g)

    def conv() -> None:
        F.conv2d(x, w, None, 1, 1)

    print(f"threads={args.threads}, torch {torch.__version__}; one row per round, methods run back to back")
    print(f"{'round':<6}{'convbench':>11}{'CI±%':>6}{'n':>5}{'torch Timer':>13}{'block':>7}"
          f"{'cb, same block':>16}{'pyperf':>11}{'torch/cb':>10}{'torch/cb-block':>16}{'pyperf/cb':>11}")
    conv_rows = []
    for r in range(args.rounds):
        ours = time_callable(conv, budget_s=args.budget)
        tm = tbench.Timer(stmt="F.conv2d(x, w, None, 1, 1)", globals={"F": F, "x": x, "w": w},
                          num_threads=args.threads).blocked_autorange(min_run_time=args.budget)
        # convbench with samples as long as torch's blocks: separates sample length from method
        block_s = tm.number_per_run * tm.median
        blk = time_callable(conv, budget_s=args.budget, min_sample_s=0.9 * block_s)
        pmed = pyperf_median_s("conv", args.threads)
        ci = (ours.ci_high_s - ours.ci_low_s) / 2 / ours.median_s * 100
        conv_rows.append({"convbench_s": ours.median_s, "torch_timer_s": tm.median,
                          "torch_block_calls": tm.number_per_run, "convbench_same_block_s": blk.median_s,
                          "convbench_same_block_loops": blk.loops, "pyperf_s": pmed,
                          "convbench_ci_pct": ci, "n": ours.n_samples, "loops": ours.loops})
        print(f"{r + 1:<6}{fmt_s(ours.median_s):>11}{ci:6.1f}{ours.n_samples:5d}{fmt_s(tm.median):>13}"
              f"{tm.number_per_run:7d}{fmt_s(blk.median_s):>16}{fmt_s(pmed):>11}"
              f"{ratio(tm.median, ours.median_s):>10}{ratio(tm.median, blk.median_s):>16}"
              f"{ratio(pmed, ours.median_s):>11}")
    print("block: calls per torch Timer measurement; 'cb, same block' is convbench with "
          "min_sample_s set to that block's length")
    print(json.dumps({"overhead": {k: v for k, v in med.items()}, "conv": conv_rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
