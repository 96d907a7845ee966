"""The engines users deploy with, side by side on the CPU: the best candidate of each engine
on every ResNet-50 and MobileNet-v2 layer.

One ``convbench.sweep`` per thread count (default 1 and 2) over the distinct convolution layers
of the shipped ``resnet50`` and ``mobilenet_v2`` suites, each at batch n=1 and n=8 (float32,
channels_first), with the engines torch (its torch.compile candidates included), tensorflow,
onnxruntime, jax, openvino and numpy-im2col. Every candidate is verified against the float64
reference before it is timed. For each layer the script prints each engine's best candidate
(median time, GFLOP/s, percent of the numpy float32 GEMM rate the sweep measured at the start
of the run, and how many times slower than the layer's winner), then a summary per engine
(layers won, geometric mean of "x best"). An engine that is not installed, not registered or
unavailable is named with the reason, and the rest run.

    python benchmarks/engines_cpu.py [--threads 1,2] [--n 1,8] [--budget 0.5] [--timeout 120]
                                     [--engines torch,onnxruntime,...] [--out DIR] [--quick]

``--quick``: the two smallest layers of each suite, n=1, one thread, a tiny budget (a smoke
test of the script, not a measurement). Records go to ``--out`` (default: a new temporary
directory), one run directory per thread count; the tuned cache is left alone.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from typing import Any, Iterable, Optional, Sequence

import convbench
from convbench.environment import available_cores, cpu_info
from convbench.fmt import fmt_time, geomean
from convbench.registry import list_backends
from convbench.suites import load_suite, suite_from_specs
from convbench.table import print_table

ENGINES = ("torch", "tensorflow", "onnxruntime", "jax", "openvino", "numpy-im2col")
SUITES = ("resnet50", "mobilenet_v2")


def layer_specs(suites: Sequence[str], ns: Sequence[int], per_suite: Optional[int] = None) -> list:
    """The suites' layers at each batch size, named ``suite/layer/n<N>`` (``per_suite``: only
    that many smallest layers of each suite)."""
    specs = []
    for name in suites:
        problems = load_suite(name).problems
        if per_suite is not None:
            problems = sorted(problems, key=lambda p: p.spec.flops)[:per_suite]
        for n in ns:
            specs += [p.spec.replace(n=n, name=f"{name}/{p.name}/n{n}") for p in problems]
    return specs


def split_engines(engines: Sequence[str]) -> tuple[list[str], list[str]]:
    """(registered engines, engines with no registered backend of that name)."""
    known = set(list_backends())
    return [e for e in engines if e in known], [e for e in engines if e not in known]


def best_per_engine(records: Iterable[dict]) -> dict[str, dict[str, dict]]:
    """problem -> engine -> its fastest ``ok`` record (engines without one are absent)."""
    best: dict[str, dict[str, dict]] = {}
    for r in records:
        if r["status"] != "ok" or r.get("median_s") is None:
            continue
        row = best.setdefault(r["problem"], {})
        if r["backend"] not in row or r["median_s"] < row[r["backend"]]["median_s"]:
            row[r["backend"]] = r
    return best


def engine_troubles(records: Iterable[dict], engines: Sequence[str]) -> dict[str, str]:
    """engine -> why it has no ok record at all (its statuses and first message)."""
    by_engine: dict[str, list[dict]] = {e: [] for e in engines}
    for r in records:
        by_engine.setdefault(r["backend"], []).append(r)
    out = {}
    for engine, rs in by_engine.items():
        if any(r["status"] == "ok" for r in rs):
            continue
        if not rs:
            out[engine] = "no records"
            continue
        counts: dict[str, int] = {}
        for r in rs:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        msg = next((r["message"] for r in rs if r.get("message")), "")
        out[engine] = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + (f": {msg}" if msg else "")
    return out


def layer_rows(best: dict[str, dict[str, dict]], problems: Sequence[str], gemm: Optional[float]) -> list:
    """Table rows: per layer its engines' best candidates, fastest first (the first is the winner)."""
    rows = []
    for problem in problems:
        ranked = sorted(best.get(problem, {}).values(), key=lambda r: r["median_s"])
        for i, r in enumerate(ranked):
            pct = f"{100 * r['gflops'] / gemm:.0f}" if gemm else "-"
            rows.append([problem, r["backend"], r["algorithm"], fmt_time(r["median_s"]),
                         f"{r['gflops']:.1f}", pct, f"{r['median_s'] / ranked[0]['median_s']:.2f}",
                         "winner" if i == 0 else ""])
    return rows


def summary_rows(best: dict[str, dict[str, dict]], engines: Sequence[str]) -> list:
    """Per engine: layers measured, layers won, geomean of its time over the winner's."""
    rows = []
    for engine in engines:
        ratios, wins = [], 0
        for per_engine in best.values():
            if engine not in per_engine:
                continue
            fastest = min(r["median_s"] for r in per_engine.values())
            ratios.append(per_engine[engine]["median_s"] / fastest)
            wins += per_engine[engine]["median_s"] == fastest
        rows.append([engine, len(ratios), wins, f"{geomean(ratios):.2f}" if ratios else "-"])
    return rows


def report(result: Any, engines: Sequence[str], problems: Sequence[str], threads: int) -> None:
    """Print one sweep's tables: best candidate per engine per layer, then the summary."""
    peak = result.meta.get("peak") or {}
    gemm = peak.get("gemm_gflops")
    print(f"\n== threads={threads}: numpy float32 GEMM {gemm:.1f} GFLOP/s" if gemm else
          f"\n== threads={threads}: numpy GEMM rate not measured ({peak.get('error', 'no peak')})")
    best = best_per_engine(result.records)
    for engine, why in engine_troubles(result.records, engines).items():
        print(f"# {engine}: no measured candidate ({why})")
    print_table(["layer", "engine", "best algorithm", "median", "GFLOP/s", "%GEMM", "x best", ""],
                layer_rows(best, problems, gemm), group="layer",
                right=["median", "GFLOP/s", "%GEMM", "x best"],
                title=f"Best candidate per engine, {threads} thread(s)")
    print_table(["engine", "layers", "wins", "geomean x best"], summary_rows(best, engines),
                right=["layers", "wins", "geomean x best"], title=f"Engines, {threads} thread(s)")
    print(f"records: {result.run_dir}")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=_ints, default=None, help="thread counts (default 1,2)")
    ap.add_argument("--n", type=_ints, default=None, help="batch sizes (default 1,8)")
    ap.add_argument("--budget", type=float, default=None, help="timing budget per candidate, s (0.5)")
    ap.add_argument("--timeout", type=float, default=120.0, help="hard limit per candidate, s")
    ap.add_argument("--max-call", type=float, default=None,
                    help="a candidate whose one call takes longer is recorded as timeout (sweep default)")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated backend names")
    ap.add_argument("--out", help="parent of the run directories (default: a new temporary directory)")
    ap.add_argument("--quick", action="store_true", help="few layers, n=1, 1 thread, tiny budget")
    args = ap.parse_args(argv)
    args.threads = args.threads or ([1] if args.quick else [1, 2])
    args.n = args.n or ([1] if args.quick else [1, 8])
    args.budget = args.budget or (0.01 if args.quick else 0.5)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    wanted = [e.strip() for e in args.engines.split(",") if e.strip()]
    engines, missing = split_engines(wanted)
    print(f"CPU: {cpu_info().get('cpu_model') or 'unknown'} ({available_cores()} usable cores)")
    for engine in missing:
        print(f"# {engine}: not registered (its backend is not installed in this environment); skipped")
    if not engines:
        print("no engine to run", file=sys.stderr)
        return 1
    specs = layer_specs(SUITES, args.n, per_suite=2 if args.quick else None)
    suite = suite_from_specs(specs, name="engines-cpu", source="resnet50 + mobilenet_v2 suites")
    problems = [p.name for p in suite.problems]
    out = args.out or tempfile.mkdtemp(prefix="convbench-engines-")
    command = ["benchmarks/engines_cpu.py", *(sys.argv[1:] if argv is None else argv)]
    for threads in args.threads:
        if threads > available_cores():
            print(f"# threads={threads}: skipped, only {available_cores()} usable cores")
            continue
        result = convbench.sweep(suite, backends=engines, threads=threads, budget_s=args.budget,
                                 timeout_s=args.timeout, max_call_s=args.max_call, out=out,
                                 update_cache=False, command=command)
        report(result, engines, problems, threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
