"""Every CPU candidate of torch and TensorFlow (and the NumPy/SciPy backends) on five layers.

One table, measured side by side in one run: median time per convolution, IQR, GFLOP/s and
percent of the numpy float32 GEMM rate measured in the same run (before and after the
candidates, in a fresh process with the same thread count), on

* ResNet-50 3x3: n=1, 64->64, 56x56, k3, pad 1
* ResNet-50 stem: n=1, 3->64, 224x224, k7, stride 2, pad 3
* 1x1: n=1, 256->64, 56x56
* MobileNet depthwise 3x3: n=1, 256 channels, 56x56, pad 1, groups 256
* 1-D: n=1, 512->512, length 4096, k3, pad 1

All float32, channels_first (PyTorch's layout; TensorFlow's CPU candidates transpose inside
``run()``, as they must for a user holding NCHW data; ``--layout channels_last`` flips that).
Each backend family runs in its own worker process (convbench.worker.WorkerPool), every
candidate is checked against the float64 reference before it is timed, and timing is
convbench.timing.measure with the given per-candidate budget.

    python benchmarks/framework_cpu.py [--threads 2] [--budget 1.0] [--numpy default|all|none]
                                       [--layout channels_first] [--layers a,b] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from convbench.environment import measure_peak
from convbench.registry import list_backends
from convbench.spec import ConvSpec
from convbench.worker import Task, WorkerPool

LAYERS = [
    ("resnet50-3x3", dict(n=1, c_in=64, c_out=64, input_size=(56, 56), kernel_size=3, padding=1)),
    ("resnet50-stem-7x7/2", dict(n=1, c_in=3, c_out=64, input_size=(224, 224), kernel_size=7,
                                 stride=2, padding=3)),
    ("1x1-256->64", dict(n=1, c_in=256, c_out=64, input_size=(56, 56), kernel_size=1)),
    ("mobilenet-dw-3x3", dict(n=1, c_in=256, c_out=256, input_size=(56, 56), kernel_size=3,
                              padding=1, groups=256)),
    ("conv1d-512-L4096-k3", dict(n=1, c_in=512, c_out=512, input_size=(4096,), kernel_size=3, padding=1)),
]

def _note(info: dict) -> str:
    parts = []
    if info.get("conv_backend"):
        parts.append(str(info["conv_backend"]))
    if info.get("op"):
        parts.append(f"{info['op']}/{info.get('padding')}")
    if info.get("transpose_in_run"):
        parts.append("NCHW<->NHWC in run")
    if info.get("layout_conversion_in_run"):
        parts.append("layout conv. in run")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=1.0, help="timing budget per candidate, seconds")
    ap.add_argument("--timeout", type=float, default=90.0, help="hard limit per candidate, seconds")
    ap.add_argument("--numpy", choices=("default", "all", "none"), default="default",
                    help="NumPy/SciPy backends: their default algorithm, all algorithms, or none")
    ap.add_argument("--layout", choices=("channels_first", "channels_last"), default="channels_first")
    ap.add_argument("--layers", help="comma-separated subset of: " + ", ".join(n for n, _ in LAYERS))
    ap.add_argument("--json", help="write every outcome to this JSON file")
    args = ap.parse_args(argv)
    layers = LAYERS
    if args.layers:
        wanted = args.layers.split(",")
        unknown = sorted(set(wanted) - {n for n, _ in LAYERS})
        if unknown:
            ap.error(f"--layers: unknown {', '.join(unknown)}")
        layers = [(n, f) for n, f in LAYERS if n in wanted]

    t_start = time.time()
    load_before = os.getloadavg()
    peak_before = measure_peak(args.threads, budget_s=2.0)
    rows = []
    with WorkerPool(threads=args.threads) as pool:
        candidates: list[tuple[str, str]] = []
        for name in ("torch", "tensorflow"):
            d = pool.describe(name)
            if not d["available"]:
                print(f"# {name}: unavailable: {d['reason']}", file=sys.stderr)
                continue
            print(f"# {name}: {d['versions']}")
            candidates += [(name, a) for a in d["algorithms"].get("cpu", [])]
        if args.numpy != "none":
            for name in list_backends():
                if name in ("torch", "tensorflow"):
                    continue
                try:
                    d = pool.describe(name)
                except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not fatal
                    print(f"# {name}: {exc}", file=sys.stderr)
                    continue
                if d.get("family") != "numpy" or not d["available"]:
                    continue
                algos = d["algorithms"].get("cpu", [])
                candidates += [(name, a) for a in (algos if args.numpy == "all" else algos[:1])]

        for label, fields in layers:
            spec = ConvSpec(**fields, dtype="float32", layout=args.layout, name=label)
            for backend, algo in candidates:
                out = pool.run(Task(spec=spec, backend=backend, algorithm=algo, budget_s=args.budget,
                                    timeout_s=args.timeout))
                rows.append({"layer": label, "spec": spec.to_dict(), "flops": spec.flops,
                             "candidate": f"{backend}:{algo}@cpu", **out})
                took = "" if out["median_s"] is None else f"{out['median_s'] * 1e3:9.3f} ms"
                print(f"  {label:22s} {backend}:{algo:26s} {out['status']:11s} {took}",
                      file=sys.stderr, flush=True)
    peak_after = measure_peak(args.threads, budget_s=2.0)
    load_after = os.getloadavg()
    gemm = peak_before["gemm_gflops"]

    print()
    print(f"threads={args.threads}  budget={args.budget:g}s/candidate  layout={args.layout}  dtype=float32")
    print(f"numpy float32 GEMM (2048^3, same threads): {peak_before['gemm_gflops']:.1f} GFLOP/s before, "
          f"{peak_after['gemm_gflops']:.1f} GFLOP/s after the candidates")
    print(f"machine: {os.cpu_count()} logical CPUs; load average (1/5/15 min) "
          f"{'/'.join(f'{v:.1f}' for v in load_before)} before, "
          f"{'/'.join(f'{v:.1f}' for v in load_after)} after")
    head = f"{'layer':22s} {'candidate':42s} {'status':8s} {'median ms':>10s} {'IQR ms':>8s} " \
           f"{'GFLOP/s':>8s} {'%GEMM':>6s} {'x best':>7s}  notes"
    for label, fields in layers:
        spec = ConvSpec(**fields)
        print()
        print(f"{label}: {spec.label}, {spec.flops / 1e9:.3f} GFLOP")
        print(head)
        layer_rows = [r for r in rows if r["layer"] == label]
        best = min((r["median_s"] for r in layer_rows if r["status"] == "ok"), default=None)
        for r in sorted(layer_rows, key=lambda r: (r["median_s"] is None, r["median_s"] or 0)):
            if r["status"] == "ok":
                g = r["flops"] / r["median_s"] / 1e9
                print(f"{label:22s} {r['candidate']:42s} {'ok':8s} {r['median_s'] * 1e3:10.3f} "
                      f"{r['iqr_s'] * 1e3:8.3f} {g:8.1f} {100 * g / gemm:6.1f} "
                      f"{r['median_s'] / best:7.2f}  {_note(r['info'] or {})}")
            else:
                msg = (r["message"] or "").replace("\n", " ")
                print(f"{label:22s} {r['candidate']:42s} {r['status']:8s} {'':>10s} {'':>8s} {'':>8s} "
                      f"{'':>6s} {'':>7s}  {msg[:110]}")
    print(f"\n(total wall time {time.time() - t_start:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"threads": args.threads, "budget_s": args.budget, "layout": args.layout,
                       "loadavg_before": load_before, "loadavg_after": load_after,
                       "peak_before": peak_before, "peak_after": peak_after, "rows": rows}, fh,
                      indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
