"""The numba int8 kernels on ResNet-50 int8 layers, next to the machine's int8 roofs.

One run, one thread count (default 2). The roofs come first, from
``convbench.environment.measure_peak`` in a fresh process: the best measured int8 GEMM (the
backends' declared ``gemm_rate("int8")``: torch's ``_int_mm`` / quantized linear) and the ISA's
int8 multiply-add peak at the measured clock (AVX-512 VNNI: 64 int8 MACs per ``vpdpbusd``, two
per cycle per core, 2 ops per MAC). Then every numba int8 candidate (int8-direct, int8-vnni,
int8-vnni-prepacked; ``--also torch,onnxruntime`` adds those backends' int8 candidates) runs
in its family's worker process, is verified against the exact int8 reference (0 LSB for numba)
and timed with convbench's timer. GOP/s counts 2 ops per int8 multiply-add, padding included.

    python benchmarks/int8_numba.py [--threads 2] [--budget 1.0] [--batches 1]
        [--layouts channels_last] [--layers a,b] [--also torch] [--peak-budget 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from convbench.environment import cpu_info, measure_peak
from convbench.spec import ConvSpec
from convbench.worker import Task, WorkerPool

#: name, c_in, c_out, input size, kernel, stride, padding
LAYERS = [
    ("res2-1x1-64x56", 64, 64, 56, 1, 1, 0),
    ("res2-3x3-64x56", 64, 64, 56, 3, 1, 1),
    ("res2-1x1-64to256", 64, 256, 56, 1, 1, 0),
    ("res3-3x3-128x28", 128, 128, 28, 3, 1, 1),
    ("res4-3x3-256x14", 256, 256, 14, 3, 1, 1),
    ("res5-3x3-512x7", 512, 512, 7, 3, 1, 1),
    ("res5-1x1-512to2048", 512, 2048, 7, 1, 1, 0),
]
INT8_ISA = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512bw", "avx2", "asimddp", "i8mm")


def problems(batches: list[int], layouts: list[str], only: list[str] | None) -> list[ConvSpec]:
    return [ConvSpec(n=n, c_in=ci, c_out=co, input_size=(hw, hw), kernel_size=k, stride=s, padding=p,
                     dtype="int8", layout=lay, name=f"{name}-n{n}")
            for name, ci, co, hw, k, s, p in LAYERS if not only or name in only
            for n in batches for lay in layouts]


def roof_lines(peak: dict, threads: int) -> tuple[list[str], dict]:
    info = cpu_info()
    roof = (peak.get("roofs") or {}).get("int8") or {}
    isa = [f for f in INT8_ISA if f in info["cpu_isa"]]
    gemm = roof.get("gemm_gflops")
    rates = ", ".join(f"{k} {v:.1f}" for k, v in (roof.get("gemm_rates") or {}).items()) or "none"
    lines = [f"CPU: {info['cpu_model']} ({', '.join(isa) or 'no int8 multiply-add ISA flags'}); "
             f"{threads} threads on {peak.get('fma_cores')} physical cores, clock {peak.get('clock_mhz')} MHz",
             f"int8 GEMM (best measured, {roof.get('gemm_source') or '-'}): "
             + (f"{gemm:.1f} GOP/s" if gemm else "not measured") + f"   [all: {rates}]",
             "int8 ISA peak (" + ("VNNI vpdpbusd" if "avx512_vnni" in isa else "best int8 multiply-add")
             + ", 2 ops per MAC): " + (f"{roof['fma_gflops']:.1f} GOP/s" if roof.get("fma_gflops")
                                       else "unknown (no clock or no int8 instructions)")]
    return lines, roof


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=1.0, help="timing budget per candidate, seconds")
    ap.add_argument("--timeout", type=float, default=300.0, help="hard limit per candidate, seconds")
    ap.add_argument("--batches", default="1")
    ap.add_argument("--layouts", default="channels_last")
    ap.add_argument("--layers", help="comma-separated subset of: " + ", ".join(n for n, *_ in LAYERS))
    ap.add_argument("--also", default="", help="other backends whose int8 candidates to add (e.g. torch)")
    ap.add_argument("--peak-budget", type=float, default=2.0, help="roof calibration budget, seconds")
    ap.add_argument("--json", help="write every outcome and the roofs to this JSON file")
    args = ap.parse_args(argv)
    only = args.layers.split(",") if args.layers else None
    if only and set(only) - {n for n, *_ in LAYERS}:
        ap.error(f"--layers: unknown {', '.join(sorted(set(only) - {n for n, *_ in LAYERS}))}")
    specs = problems([int(v) for v in args.batches.split(",")], args.layouts.split(","), only)

    peak = measure_peak(args.threads, budget_s=args.peak_budget)
    head, roof = roof_lines(peak, args.threads)
    print("\n".join(head), flush=True)
    rows = []
    with WorkerPool(threads=args.threads) as pool:
        cands = []
        for name in ["numba"] + [b for b in args.also.split(",") if b]:
            d = pool.describe(name)
            if not d["available"]:
                print(f"# {name}: unavailable: {d['reason']}", file=sys.stderr)
                continue
            algos = [a for a in d["algorithms"].get("cpu", []) if name != "numba" or a.startswith("int8-")]
            cands += [(name, a) for a in algos]
        for spec in specs:
            for backend, algo in cands:
                out = pool.run(Task(spec=spec, backend=backend, algorithm=algo, budget_s=args.budget,
                                    timeout_s=args.timeout))
                rows.append({"spec": spec.to_dict(), "flops": spec.flops, "backend": backend,
                             "algorithm": algo, **out})
    print_table(rows, roof)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peak": peak, "rows": rows}, f, indent=1, default=str)
    return 0


def print_table(rows: list[dict], roof: dict) -> None:
    gemm, isa_peak = roof.get("gemm_gflops"), roof.get("fma_gflops")
    print(f"\n{'layer':24s} {'layout':14s} {'candidate':32s} {'status':8s} {'GOP/s':>8s} "
          f"{'%GEMM':>6s} {'%peak':>6s} {'max LSB':>7s}")
    for r in rows:
        spec = ConvSpec.from_dict(r["spec"])
        ok = r["status"] == "ok"
        gops = r["flops"] / r["median_s"] / 1e9 if ok else None

        def pct(roof_rate):
            return f"{100 * gops / roof_rate:6.1f}" if gops and roof_rate else f"{'':6s}"

        err = r.get("max_error")
        print(f"{spec.name:24s} {spec.layout:14s} {r['backend'] + ':' + r['algorithm']:32s} {r['status']:8s} "
              f"{(f'{gops:8.1f}' if gops else ''):>8s} {pct(gemm)} {pct(isa_peak)} "
              f"{(f'{err:7.0f}' if err is not None else ''):>7s}")
    print(f"\nGOP/s: 2 x int8 multiply-adds (padding included) / median time; %GEMM of the int8 GEMM "
          f"roof ({gemm and f'{gemm:.1f}'} GOP/s), %peak of the ISA peak ({isa_peak and f'{isa_peak:.1f}'} GOP/s); "
          f"load average now {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    sys.exit(main())
