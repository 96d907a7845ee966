"""int8 against float32 on the same layers: the best candidate of each, side by side.

Sweeps SUITE twice, back to back (every problem as int8, then as float32, same settings), or
reads two existing runs (``--runs INT8_RUN FLOAT_RUN``), and
prints per problem the fastest int8 candidate (GOP/s: 2 integer ops per multiply-add) next to
the fastest float32 one (GFLOP/s), the speedup of int8 over float32, and the geometric mean.
Also each int8 candidate's worst error in LSB over the run. The CPU is named.

    python benchmarks/int8_vs_float.py int8 --threads 2 --backends torch onnxruntime openvino numba \\
        --out results/int8-vs-float32-DATE
    python benchmarks/int8_vs_float.py --runs RUN_INT8 RUN_F32
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Optional, Sequence


def _best(df) -> dict:
    ok = df[df["status"] == "ok"]
    out = {}
    for prob, g in ok.groupby("problem"):
        r = g.loc[g["median_s"].idxmin()]
        out[prob] = r
    return out


def table(run_int8: str, run_f32: str) -> list[dict]:
    """One row per problem measured ok in both runs."""
    import convbench as cb

    a, b = cb.load_results(run_int8), cb.load_results(run_f32)
    bi, bf = _best(a), _best(b)
    rows = []
    for prob in [p for p in dict.fromkeys(a["problem"]) if p in bi and p in bf]:
        i, f = bi[prob], bf[prob]
        rows.append({"problem": prob, "int8": i["candidate"], "int8_s": float(i["median_s"]),
                     "gops": float(i["flops"]) / float(i["median_s"]) / 1e9,
                     "float32": f["candidate"], "float32_s": float(f["median_s"]),
                     "gflops": float(f["flops"]) / float(f["median_s"]) / 1e9,
                     "speedup": float(f["median_s"]) / float(i["median_s"])})
    return rows


def worst_lsb(run_int8: str) -> dict:
    import convbench as cb

    df = cb.load_results(run_int8)
    df = df[df["max_error"].notna()]
    return {c: float(g["max_error"].max()) for c, g in df.groupby("candidate")}


def sweep_pair(suite: str, args: argparse.Namespace) -> tuple[str, str]:
    """Both sweeps of the suite, int8 first, float32 right after, same settings."""
    import convbench as cb

    runs = []
    for dt in ("int8", "float32"):
        res = cb.sweep(suite, dtype=dt, backends=args.backends, threads=args.threads,
                       budget_s=args.budget, out=Path(args.out) / dt, update_cache=False,
                       progress=not args.quiet)
        runs.append(str(res.run_dir))
    return runs[0], runs[1]


def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", nargs="?", help="suite whose problems are swept in int8 and float32")
    ap.add_argument("--runs", nargs=2, metavar=("INT8_RUN", "FLOAT32_RUN"))
    ap.add_argument("--backends", nargs="+", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--budget", type=float, default=None)
    ap.add_argument("--out", default="results/int8-vs-float32")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    from convbench.environment import fingerprint

    if args.runs:
        run_i, run_f = args.runs
    elif args.suite:
        run_i, run_f = sweep_pair(args.suite, args)
    else:
        ap.error("give SUITE, or --runs INT8_RUN FLOAT32_RUN")
    rows = table(run_i, run_f)
    print(f"CPU: {fingerprint().get('cpu_model')}\nint8 run: {run_i}\nfloat32 run: {run_f}")
    print(f"{'problem':34} {'best int8':34} {'GOP/s':>8} {'best float32':34} {'GFLOP/s':>8} {'int8 x':>7}")
    for r in rows:
        print(f"{r['problem'][:34]:34} {r['int8'][:34]:34} {r['gops']:8.1f} {r['float32'][:34]:34} "
              f"{r['gflops']:8.1f} {r['speedup']:7.2f}")
    if rows:
        gm = math.exp(sum(math.log(r["speedup"]) for r in rows) / len(rows))
        print(f"geometric mean speedup of the best int8 over the best float32: {gm:.2f}x "
              f"over {len(rows)} problems")
    print("worst error per int8 candidate (LSB):",
          ", ".join(f"{c} {e:g}" for c, e in sorted(worst_lsb(run_i).items())))
    return rows


if __name__ == "__main__":
    main()
