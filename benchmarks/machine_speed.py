"""Where does this machine's speed move: our own load, the process, or the moment?

Two checks, one after another, on the canary's workload (:func:`convbench.noise.canary_s`)
and, with torch installed, a single-threaded 3x3 convolution (1x128x28x28, 128 filters):

1. **Own load on the other CPU.** The canary pinned to one CPU, alone, then with a process
   spinning on another CPU (pure Python, then the canary's own SIMD work). A slowdown means
   the two CPUs share a physical core (SMT siblings) or a power budget.
2. **Fresh processes.** --processes fresh Python processes one after another, each timing the
   kernels in four 0.2-s windows: the log standard deviation of the per-process medians
   (between processes: memory layout, or the moment) against the mean within-process one.
   A process whose windows differ by much more than the others' saw the machine change
   under it.

    python benchmarks/machine_speed.py --processes 12
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Optional, Sequence

_CHILD = r"""
import json, sys, time
from convbench import noise
def window(f, s):
    ts = []
    end = time.perf_counter() + s
    while time.perf_counter() < end:
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]
noise._canary_work()
out = {"canary": [window(noise._canary_work, 0.2) for _ in range(4)]}
if sys.argv[1] == "torch":
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, w = torch.randn(1, 128, 28, 28), torch.randn(128, 128, 3, 3)
    f = lambda: torch.nn.functional.conv2d(x, w, padding=1)
    for _ in range(20):
        f()
    out["conv3x3"] = [window(f, 0.2) for _ in range(4)]
print(json.dumps(out))
"""

# each spinner says "ready" once it spins, then spins for 2 s more
_SPIN = {"python": "import os, time\nos.sched_setaffinity(0, {CPU})\nwork = lambda: None\n",
         "simd": "import os, time\nos.sched_setaffinity(0, {CPU})\nfrom convbench import noise\n"
                 "work = noise._canary_work\n"}
_SPIN_LOOP = ("work()\nprint('ready', flush=True)\nend = time.time() + 2.0\n"
              "while time.time() < end: work()\n")


def _log_sd(xs: Sequence[float]) -> float:
    """Population standard deviation of the logs."""
    return statistics.pstdev(math.log(x) for x in xs)


def own_load(repeats: int = 3) -> list[dict]:
    """The canary on the first usable CPU, alone and beside a spinner on another one."""
    from convbench import noise

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return []
    here, there = cpus[0], cpus[1]
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {here})
    try:
        def window(s: float = 1.0) -> float:
            ts = []
            end = time.perf_counter() + s
            while time.perf_counter() < end:
                t = time.perf_counter()
                noise._canary_work()
                ts.append(time.perf_counter() - t)
            return statistics.median(ts)
        noise._canary_work()
        out = []
        for _ in range(repeats):
            alone = window()
            for name, code in _SPIN.items():
                p = subprocess.Popen([sys.executable, "-c",
                                      code.replace("{CPU}", "{%d}" % there) + _SPIN_LOOP],
                                     stdout=subprocess.PIPE, text=True)
                if p.stdout.readline().strip() != "ready":
                    p.wait()
                    raise RuntimeError(f"the {name} spinner did not start (exit status {p.returncode})")
                time.sleep(0.2)
                busy = window()
                p.wait()
                out.append({"spinner": name, "alone_s": alone, "beside_s": busy})
        return out
    finally:
        os.sched_setaffinity(0, old)


def fresh_processes(n: int, with_torch: bool) -> dict[str, dict]:
    runs = []
    for _ in range(n):
        done = subprocess.run([sys.executable, "-c", _CHILD, "torch" if with_torch else "numpy"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"a timing process failed (exit status {done.returncode}):\n"
                               f"{done.stderr[-2000:]}")
        runs.append(json.loads(done.stdout))
    out = {}
    for k in runs[0]:
        per = [statistics.median(r[k]) for r in runs]
        out[k] = {"per_process_s": per, "windows_s": [r[k] for r in runs],
                  "between_log_sd": _log_sd(per), "within_log_sd": sum(_log_sd(r[k]) for r in runs) / n,
                  "max_over_min": max(per) / min(per)}
    return out


def main(argv: Optional[Sequence[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=12)
    args = ap.parse_args(argv)
    if args.processes < 2:
        ap.error("--processes must be >= 2")
    try:
        import torch  # noqa: F401
        with_torch = True
    except ImportError:
        with_torch = False
    from convbench.environment import cpu_info

    print(f"{cpu_info()['cpu_model']}, {os.cpu_count()} CPUs")
    load = own_load()
    print("\n1. the canary on one CPU, alone and beside a spinner on another CPU:")
    if not load:
        print("   (one usable CPU: skipped)")
    for r in load:
        print(f"   alone {1e6 * r['alone_s']:.0f} us; beside a {r['spinner']} spinner "
              f"{1e6 * r['beside_s']:.0f} us ({r['beside_s'] / r['alone_s']:.2f}x)")
    fresh = fresh_processes(args.processes, with_torch)
    print(f"\n2. {args.processes} fresh processes, four 0.2-s windows each (medians, us):")
    for i in range(args.processes):
        print(f"   {i:2d} " + "; ".join(
            f"{k} " + " ".join(f"{1e6 * v:.0f}" for v in f["windows_s"][i]) for k, f in fresh.items()))
    for k, f in fresh.items():
        print(f"   {k}: between processes log-sd {f['between_log_sd']:.3f} (max/min "
              f"{f['max_over_min']:.2f}); within a process, mean log-sd {f['within_log_sd']:.3f}")
    return {"own_load": load, "fresh": fresh}


if __name__ == "__main__":
    main()
