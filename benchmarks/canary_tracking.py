"""Does a machine-speed canary track what convolutions see? One run, side by side.

Times torch convolutions (3x3, depthwise 3x3, 1x1, at --threads) and candidate canaries
alternately, one call each in a shuffled order per iteration, for --seconds. Then, per window
of 1 s and 5 s, the median of each kernel and of each kernel divided by each canary. A canary
that tracks the machine's speed makes the divided window medians vary less than the kernel's
own (log standard deviation, lower is better); one that tracks something else makes them vary
more. The candidates:

- ``simd``: convbench's canary (:func:`convbench.noise.canary_s`'s workload, numpy float32
  multiply-add, single-threaded);
- ``python``: the pure-Python loop convbench used before (``sum(range(20000))``);
- ``gemm128``: a 128x128 float32 matrix product through numpy's BLAS, held to 1 thread.

    python benchmarks/canary_tracking.py --threads 2 --seconds 60
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from typing import Callable, Optional, Sequence


def _kernels(threads: int) -> dict[str, Callable[[], object]]:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x, w = torch.randn(1, 128, 28, 28), torch.randn(128, 128, 3, 3)
    xd, wd = torch.randn(1, 256, 56, 56), torch.randn(256, 1, 3, 3)
    x1, w1 = torch.randn(1, 256, 14, 14), torch.randn(1024, 256, 1, 1)
    f = torch.nn.functional
    return {"conv3x3": lambda: f.conv2d(x, w, padding=1),
            "depthwise3x3": lambda: f.conv2d(xd, wd, padding=1, groups=256),
            "conv1x1": lambda: f.conv2d(x1, w1)}


def _canaries() -> dict[str, Callable[[], object]]:
    import numpy as np

    from convbench import noise

    g = np.random.default_rng(0).random((128, 128), dtype=np.float32)
    return {"simd": noise._canary_work, "python": lambda: sum(range(20_000)),
            "gemm128": lambda: g @ g}


def _log_sd(xs: Sequence[float]) -> float:
    """Population standard deviation of the logs."""
    return statistics.pstdev(math.log(x) for x in xs)


def run(threads: int, seconds: float, seed: int = 0) -> dict:
    """Time the kernels and canaries alternately for ``seconds`` (module docstring); torch's
    thread count and the BLAS limit are put back afterwards."""
    import numpy  # noqa: F401 - loaded first, so that the limit below reaches its BLAS
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    try:
        with threadpool_limits(1, user_api="blas"):   # no BLAS threads spinning beside torch's
            return _run(threads, seconds, seed)
    finally:
        torch.set_num_threads(before)


def _run(threads: int, seconds: float, seed: int) -> dict:
    kernels, canaries = _kernels(threads), _canaries()
    every = {**kernels, **canaries}
    for fn in every.values():
        for _ in range(20):
            fn()
    names, rng = list(every), random.Random(seed)
    times: dict[str, list[float]] = {n: [] for n in names}
    starts: list[float] = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        rng.shuffle(names)
        starts.append(time.perf_counter())
        for n in names:
            t0 = time.perf_counter()
            every[n]()
            times[n].append(time.perf_counter() - t0)
    out = {"iterations": len(starts), "windows": {}}
    for win in (1.0, 5.0):
        idx = [int((t - starts[0]) // win) for t in starts]
        nwin = max(idx)   # the last window is partial: left out
        if nwin < 2:
            continue
        per: dict[str, list[list[float]]] = {n: [[] for _ in range(nwin)] for n in times}
        for n, vs in times.items():
            for v, j in zip(vs, idx):
                if j < nwin:
                    per[n][j].append(v)
        full = [i for i in range(nwin) if all(per[n][i] for n in per)]   # a stall can empty one
        med = {n: [statistics.median(per[n][i]) for i in full] for n in per}
        rows = {}
        for k in list(kernels) + list(canaries):
            row = {"raw": _log_sd(med[k])}
            for c in canaries:
                if c != k:
                    row[c] = _log_sd([r / m for r, m in zip(med[k], med[c])])
            rows[k] = row
        nwin = len(full)
        out["windows"][win] = (nwin, rows)
    out["canary_ms"] = {c: 1e3 * statistics.median(times[c]) for c in canaries}
    return out


def main(argv: Optional[Sequence[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args(argv)
    if args.threads < 1 or args.seconds < 10:
        ap.error("--threads must be >= 1 and --seconds >= 10")
    res = run(args.threads, args.seconds)
    from convbench.environment import cpu_info

    print(f"{cpu_info()['cpu_model']}, torch at {args.threads} thread(s), {args.seconds:g} s, "
          f"{res['iterations']} iterations; canary medians: "
          + ", ".join(f"{c} {ms:.3f} ms" for c, ms in res["canary_ms"].items()))
    for win, (nwin, rows) in res["windows"].items():
        cols = ["raw"] + list(res["canary_ms"])
        print(f"\nlog standard deviation of {win:g}-s window medians ({nwin} windows); "
              "divided by each canary:")
        print(f"  {'kernel':14s}" + "".join(f"{c:>10s}" for c in cols))
        for k, row in rows.items():
            print(f"  {k:14s}" + "".join(f"{row[c]:10.3f}" if c in row else f"{'':>10s}" for c in cols))
    return res


if __name__ == "__main__":
    main()
