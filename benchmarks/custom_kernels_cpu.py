"""numba's custom kernels next to torch and TensorFlow on the CPU, measured side by side.

One run, one thread count (default 2), every candidate in its backend family's own worker
process (numba, torch, TensorFlow: convbench.worker.WorkerPool), verified against the float64
reference at batch 2 before it is timed with convbench.timing.measure. Problems (float32):

* ResNet-50 3x3 layers: 64->64 56x56, 128->128 28x28, 256->256 14x14, 512->512 7x7, pad 1,
  at n=1 and n=8;
* MobileNet-v2 depthwise 3x3 layers: 144ch 56x56, 192ch 28x28, 384ch 14x14, 960ch 7x7,
  stride 1, pad 1, at n=1 and n=8;

in channels_last and channels_first (each candidate gets data in the spec's layout; layout
conversions a candidate needs happen inside its timed call). Candidates: numba direct, the
six numba Winograd variants (ResNet layers), numba depthwise (MobileNet layers), every torch
and TensorFlow CPU algorithm. The numpy float32 GEMM rate (2048^3, same threads, fresh
process) is measured before and after. Winograd rates are "effective": direct-convolution
FLOPs over time. At the end: the float32 error of each Winograd variant on the ResNet layers
(norm-wise relative, the convbench measure, and max-abs relative), measured in this process.

    python benchmarks/custom_kernels_cpu.py [--threads 2] [--budget 1.0] [--batches 1,8]
        [--layouts channels_last,channels_first] [--omp-wait-policy unset|passive|active]
        [--layers a,b] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from convbench.environment import measure_peak
from convbench.spec import ConvSpec
from convbench.worker import Task, WorkerPool

RESNET = [("res-64x56", 64, 56), ("res-128x28", 128, 28), ("res-256x14", 256, 14), ("res-512x7", 512, 7)]
MOBILENET = [("mbv2-dw144x56", 144, 56), ("mbv2-dw192x28", 192, 28), ("mbv2-dw384x14", 384, 14),
             ("mbv2-dw960x7", 960, 7)]
WINOGRAD = ["winograd-f2x3", "winograd-f4x3", "winograd-f2x3-pretransformed", "winograd-f4x3-pretransformed",
            "winograd-f2x3-pretransformed-blas", "winograd-f4x3-pretransformed-blas"]
FRAMEWORKS = ("torch", "tensorflow")


def problems(batches: list[int], layouts: list[str]) -> list[tuple[str, str, ConvSpec]]:
    out = []
    for kind, table in (("resnet", RESNET), ("mobilenet", MOBILENET)):
        for name, c, hw in table:
            for n in batches:
                for layout in layouts:
                    groups = c if kind == "mobilenet" else 1
                    spec = ConvSpec(n=n, c_in=c, c_out=c, input_size=(hw, hw), kernel_size=3, padding=1,
                                    groups=groups, dtype="float32", layout=layout, name=f"{name}-n{n}")
                    out.append((kind, name, spec))
    return out


def winograd_errors(only: list[str] | None = None) -> list[str]:
    """Float32 errors of each Winograd variant (and direct) on the ResNet layers, n=1."""
    import convbench as cb

    b = cb.get_backend("numba")
    lines = []
    worst: dict[str, float] = {}
    for name, c, hw in RESNET:
        if only and name not in only:
            continue
        spec = ConvSpec(n=1, c_in=c, c_out=c, input_size=(hw, hw), kernel_size=3, padding=1,
                        layout="channels_last")
        x, w = cb.make_inputs(spec, seed=0)
        ref = cb.reference(spec, x, w)
        parts = []
        for algo in ["direct"] + WINOGRAD:
            y = cb.convolve(spec, x, w, backend="numba", algorithm=algo).astype(np.float64)
            e = cb.relative_error(y, ref)
            m = float(np.abs(y - ref).max() / np.abs(ref).max())
            worst[algo] = max(worst.get(algo, 0.0), e)
            parts.append(f"{algo} {e:.1e}/{m:.1e}")
        lines.append(f"  {name:12s} " + " | ".join(parts))
    lines.append("  worst norm-wise: " + ", ".join(f"{a} {e:.1e}" for a, e in worst.items())
                 + f"  (float32 bound {cb.tolerance('float32'):.0e})")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=1.0, help="timing budget per candidate, seconds")
    ap.add_argument("--timeout", type=float, default=180.0, help="hard limit per candidate, seconds")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--layouts", default="channels_last,channels_first")
    ap.add_argument("--omp-wait-policy", choices=("unset", "passive", "active"), default="unset",
                    help="OMP_WAIT_POLICY for every worker (numba's and torch's OpenMP pools); "
                         "unset: the environment's")
    ap.add_argument("--layers", help="comma-separated subset of: "
                    + ", ".join(n for n, _, _ in RESNET + MOBILENET))
    ap.add_argument("--json", help="write every outcome to this JSON file")
    args = ap.parse_args(argv)
    if args.layers:
        unknown = set(args.layers.split(",")) - {n for n, _, _ in RESNET + MOBILENET}
        if unknown:
            ap.error(f"--layers: unknown {', '.join(sorted(unknown))}")
    batches = [int(v) for v in args.batches.split(",")]
    layouts = args.layouts.split(",")

    t_start = time.time()
    load_before = os.getloadavg()
    peak_before = measure_peak(args.threads, budget_s=2.0)
    rows = []
    env = dict(os.environ)
    if args.omp_wait_policy != "unset":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    with WorkerPool(threads=args.threads, env=env) as pool:
        algos: dict[str, list[str]] = {}
        for name in ("numba",) + FRAMEWORKS:
            d = pool.describe(name)
            if not d["available"]:
                print(f"# {name}: unavailable: {d['reason']}", file=sys.stderr)
                continue
            print(f"# {name}: {d['versions']}")
            algos[name] = list(d["algorithms"].get("cpu", []))
        for kind, layer, spec in problems(batches, layouts):
            if args.layers and layer not in args.layers.split(","):
                continue
            cands = []
            if "numba" in algos:
                cands.append(("numba", "direct"))
                cands += [("numba", a) for a in (WINOGRAD if kind == "resnet" else ["depthwise"])]
            for fw in FRAMEWORKS:
                cands += [(fw, a) for a in algos.get(fw, [])]
            for backend, algo in cands:
                out = pool.run(Task(spec=spec, backend=backend, algorithm=algo, budget_s=args.budget,
                                    timeout_s=args.timeout))
                rows.append({"kind": kind, "layer": layer, "n": spec.n, "layout": spec.layout,
                             "spec": spec.to_dict(), "flops": spec.flops, "backend": backend,
                             "algorithm": algo, **out})
                took = "" if out["median_s"] is None else f"{spec.flops / out['median_s'] / 1e9:8.1f} GF/s"
                print(f"  {spec.name:18s} {spec.layout:15s} {backend}:{algo:30s} {out['status']:10s} {took}",
                      file=sys.stderr, flush=True)
    peak_after = measure_peak(args.threads, budget_s=2.0)
    load_after = os.getloadavg()
    gemm = peak_before["gemm_gflops"]

    def gf(r: dict) -> float:
        return r["flops"] / r["median_s"] / 1e9

    print()
    print(f"threads={args.threads}  budget={args.budget:g} s/candidate  float32  "
          f"OMP_WAIT_POLICY={env.get('OMP_WAIT_POLICY', 'unset')}  (GFLOP/s = direct-conv FLOPs / median time)")
    print(f"numpy float32 GEMM (2048^3, {args.threads} threads): {peak_before['gemm_gflops']:.1f} GFLOP/s before, "
          f"{peak_after['gemm_gflops']:.1f} after")
    print(f"machine: {os.cpu_count()} logical CPUs, shared; load average (1/5/15 min) "
          f"{'/'.join(f'{v:.1f}' for v in load_before)} before, {'/'.join(f'{v:.1f}' for v in load_after)} after")
    summary = []
    for kind in ("resnet", "mobilenet"):
        table = RESNET if kind == "resnet" else MOBILENET
        for layer, _, _ in table:
            for n in batches:
                sel = [r for r in rows if r["layer"] == layer and r["n"] == n]
                if not sel:
                    continue
                cands = sorted({(r["backend"], r["algorithm"]) for r in sel})
                print()
                spec0 = ConvSpec.from_dict(sel[0]["spec"])
                print(f"{layer} n={n}: {spec0.replace(layout='channels_first').label}, {spec0.flops / 1e9:.3f} GFLOP")
                print(f"  {'candidate':42s} " + " ".join(f"{lay:>22s}" for lay in layouts))
                for b, a in cands:
                    cells = []
                    for lay in layouts:
                        r = next((r for r in sel if r["backend"] == b and r["algorithm"] == a and r["layout"] == lay), None)
                        if r is None:
                            cells.append(f"{'':>22s}")
                        elif r["status"] == "ok":
                            cells.append(f"{gf(r):8.1f} ({100 * gf(r) / gemm:4.0f}% GEMM)")
                        else:
                            cells.append(f"{r['status']:>22s}")
                    print(f"  {b + ':' + a:42s} " + " ".join(cells))

                def best(pred):
                    ok = [r for r in sel if r["status"] == "ok" and pred(r)]
                    return max(ok, key=gf) if ok else None

                fw = best(lambda r: r["backend"] in FRAMEWORKS)
                tb = best(lambda r: r["backend"] == "torch")
                fw_s = f"{fw['backend']}:{fw['algorithm']}/{fw['layout']} {gf(fw):.1f}" if fw else "none"
                if kind == "resnet":
                    d = best(lambda r: r["backend"] == "numba" and r["algorithm"] == "direct")
                    wg = best(lambda r: r["backend"] == "numba" and r["algorithm"].startswith("winograd"))
                    line = f"{layer} n={n}: "
                    if d:
                        line += f"numba direct {gf(d):.1f} = {100 * gf(d) / gemm:.0f}% of GEMM; "
                    if wg:
                        line += (f"best Winograd {wg['algorithm']}/{wg['layout']} {gf(wg):.1f} vs best framework "
                                 f"{fw_s} -> x{gf(wg) / gf(fw):.2f}" if fw else f"best Winograd {gf(wg):.1f}")
                    summary.append(line)
                else:
                    dw = best(lambda r: r["backend"] == "numba" and r["algorithm"] == "depthwise")
                    if dw and tb:
                        summary.append(f"{layer} n={n}: numba depthwise/{dw['layout']} {gf(dw):.1f} vs torch best "
                                       f"{tb['algorithm']}/{tb['layout']} {gf(tb):.1f} -> x{gf(dw) / gf(tb):.2f}; "
                                       f"best framework {fw_s}")
    print()
    print("summary (best layout of each candidate):")
    for line in summary:
        print("  " + line)
    print()
    print("float32 error, ResNet layers n=1 channels_last (norm-wise relative / max-abs relative):")
    for line in winograd_errors(args.layers.split(",") if args.layers else None):
        print(line)
    print(f"\n(total wall time {time.time() - t_start:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"threads": args.threads, "budget_s": args.budget, "loadavg_before": load_before,
                       "loadavg_after": load_after, "peak_before": peak_before, "peak_after": peak_after,
                       "rows": rows}, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
