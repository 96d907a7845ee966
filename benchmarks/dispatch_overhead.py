"""Dispatch overhead: ``convbench.conv(x, w, ...)`` versus calling the chosen candidate directly.

"Directly" means what a user would write without convbench, with the same candidate:

* torch tensors, candidate ``torch:default``: ``F.conv2d(x, w, None, stride, padding,
  dilation, groups)``;
* numpy arrays, candidate ``torch:default``: ``torch.from_numpy`` on both, ``F.conv2d``,
  ``.numpy()`` (zero-copy views, as conv() does);
* numpy arrays, candidate ``numpy-im2col:gemm``: ``backend.prepare(spec, x, w, "gemm")``,
  ``run()``, ``result()`` (the backend's public API).

The cache is a temporary file holding the chosen candidate for each shape, so conv() takes
the memoised fast path after its first call. Calls are timed in blocks of about
``--block-ms`` milliseconds, alternating direct / conv() blocks for ``--rounds`` rounds (a
shared machine drifts; the pairs stay close in time). The table shows, per call, the
median over rounds of each side, the median of the per-round differences (conv()'s
overhead) with its 10th..90th percentiles, and the difference of the two sides' fastest
blocks (less sensitive to other processes' load).

A last line times the dispatch machinery alone: conv() with every memoised plan's callable
replaced by a no-op, against calling the no-op directly (no convolution at all).

    python benchmarks/dispatch_overhead.py [--block-ms 10] [--rounds 21] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block-ms", type=float, default=10.0, help="length of one timed block (ms)")
    ap.add_argument("--rounds", type=int, default=21, help="alternating direct/conv() block pairs")
    ap.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (set before import)")
    args = ap.parse_args(argv)

    from convbench.environment import set_thread_env

    os.environ.update(set_thread_env(args.threads))
    with tempfile.TemporaryDirectory(prefix="convbench-dispatch-") as tmp:
        os.environ["CONVBENCH_CACHE"] = os.path.join(tmp, "tuned.sqlite")
        return _run(args)


def _run(args: argparse.Namespace) -> int:

    import numpy as np

    import convbench as cb
    from convbench import cache as C
    from convbench import dispatch as D

    def pin(spec: cb.ConvSpec, candidate: str) -> None:
        c = cb.Candidate.parse(candidate)
        C.TunedCache().put(C.CacheEntry(
            spec_key=spec.key, machine=C.machine_key(C.current_environment(), "cpu"),
            threads=C.default_threads(), device="cpu", spec=spec.to_dict(), candidate=candidate,
            backend=c.backend, algorithm=c.algorithm, median_s=None,
            timestamp="2030-01-01T00:00:00+00:00", versions=C.current_versions()))

    def bench(direct, dispatched) -> tuple[float, float, list[float], float]:
        clock = time.perf_counter_ns
        t0 = clock()
        n = 0
        while clock() - t0 < 50e6 or n < 5:  # warm-up, and an estimate of one call
            direct()
            dispatched()
            n += 1
        calls = max(5, int(args.block_ms * 1e6 / ((clock() - t0) / n / 2)))
        d_times, c_times = [], []
        for _ in range(args.rounds):
            for fn, out in ((direct, d_times), (dispatched, c_times)):
                t0 = clock()
                for _ in range(calls):
                    fn()
                out.append((clock() - t0) / calls / 1e3)
        diffs = [c - d for c, d in zip(c_times, d_times)]
        return statistics.median(d_times), statistics.median(c_times), diffs, min(c_times) - min(d_times)

    rows = []
    rng = np.random.default_rng(0)
    shapes = [((1, 8, 8, 8), (8, 8, 3, 3)), ((1, 32, 28, 28), (32, 32, 3, 3))]
    try:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
        print("torch not installed: torch rows skipped", file=sys.stderr)

    for xs, ws in shapes:
        x = rng.uniform(-1, 1, xs).astype(np.float32)
        w = rng.uniform(-1, 1, ws).astype(np.float32)
        spec = D.spec_from_arrays(x, w, padding=1)
        label = f"{xs[1]}->{ws[0]} {xs[2]}x{xs[3]} k3"
        if torch is not None:
            pin(spec, "torch:default@cpu")
            xt, wt = torch.from_numpy(x), torch.from_numpy(w)
            assert D.plan(xt, wt, padding=1).choice.candidate == "torch:default@cpu"
            s, p, dl = (1, 1), (1, 1), (1, 1)
            rows.append(("torch tensors", "torch:default", label,
                         *bench(lambda: F.conv2d(xt, wt, None, s, p, dl, 1),
                                lambda: cb.conv(xt, wt, padding=1))))
            rows.append(("numpy arrays", "torch:default", label,
                         *bench(lambda: F.conv2d(torch.from_numpy(x), torch.from_numpy(w), None, s, p, dl, 1).numpy(),
                                lambda: cb.conv(x, w, padding=1))))
            D.clear_memo()
        pin(spec, "numpy-im2col:gemm@cpu")
        assert D.plan(x, w, padding=1).choice.candidate == "numpy-im2col:gemm@cpu"
        b = cb.get_backend("numpy-im2col")

        def direct_np() -> None:
            pr = b.prepare(spec, x, w, "gemm")
            pr.run()
            pr.result()

        rows.append(("numpy arrays", "numpy-im2col:gemm", label,
                     *bench(direct_np, lambda: cb.conv(x, w, padding=1))))
        D.clear_memo()

    # the dispatch machinery alone: memoised plans whose callable does nothing
    x, w = rng.uniform(-1, 1, (1, 4, 6, 6)).astype(np.float32), rng.uniform(-1, 1, (4, 4, 3, 3)).astype(np.float32)
    pin(D.spec_from_arrays(x, w, padding=1), "numpy-im2col:gemm@cpu")
    noop = lambda a, b: None  # noqa: E731
    machinery = []
    inputs = [("numpy arrays", x, w)]
    if torch is not None:
        inputs.append(("torch tensors", torch.from_numpy(x), torch.from_numpy(w)))
    for inp, xa, wa in inputs:
        cb.conv(xa, wa, padding=1)
        for plan in D._MEMO.values():
            plan.run = noop
        machinery.append((inp, *bench(lambda: noop(xa, wa), lambda: cb.conv(xa, wa, padding=1))))

    print(f"dispatch overhead, {args.threads} thread(s), {args.rounds} alternating rounds of "
          f"~{args.block_ms:g} ms blocks, per call in us")
    head = (f"{'input':<14} {'candidate':<18} {'shape':<16} {'direct':>9} {'conv()':>9} {'overhead':>9} "
            f"{'p10..p90':>17} {'min-min':>8}")
    print(head)
    print("-" * len(head))
    for inp, cand, label, d, c, diffs, mm in rows + [(i, "(no-op plan)", "-", *r) for i, *r in machinery]:
        q = statistics.quantiles(diffs, n=10) if len(diffs) >= 2 else [diffs[0]] * 9
        print(f"{inp:<14} {cand:<18} {label:<16} {d:9.2f} {c:9.2f} {statistics.median(diffs):9.2f} "
              f"{q[0]:8.2f}..{q[-1]:<7.2f} {mm:8.2f}")
    print("overhead: median over rounds of (conv() block - direct block); min-min: fastest conv() block "
          "- fastest direct block. Bound: 20 us.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
