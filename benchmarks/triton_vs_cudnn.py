"""Triton against cuDNN, per layer: the best triton candidate, the best torch cuDNN candidate,
their GFLOP/s and the ratio triton/cuDNN (above 1: Triton is faster).

    python benchmarks/triton_vs_cudnn.py RUN [RUN ...] [--csv FILE]

RUN is anything convbench.load_results reads (a run directory, a results root, a glob). Only
``ok`` records on ``cuda`` count. Layers are compared within one math mode: a float32 layer
has a ``float32`` row (IEEE float32: ``cudnn*`` against ``igemm-*``) and a ``tf32`` row
(``cudnn-tf32`` against ``igemm-*-tf32``), so TF32 on and off are never mixed. The ``note``
column says when the best cuDNN candidate converts the activation layout inside its timed
call (a channels_first candidate on a channels_last problem). Where the runs hold no such
pair (a CPU run, a sweep that measured nothing) it says there is nothing to compare and
exits 0; unreadable runs exit 2.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from convbench.table import format_table  # noqa: E402
from convbench.fmt import geomean  # noqa: E402

TRITON = "triton"
CUDNN = "cudnn"
HEADERS = ["suite", "layer", "math", "triton", "triton GFLOP/s", "cuDNN", "cuDNN GFLOP/s", "triton/cuDNN",
           "note"]


def math_mode(dtype: str, algorithm: str) -> str:
    """``tf32`` for a TF32 candidate (its name carries a ``tf32`` part), else the dtype."""
    return "tf32" if "tf32" in str(algorithm).split("-") else str(dtype)


def side(backend: str, algorithm: str) -> Optional[str]:
    """Which side of the comparison a candidate is on: TRITON, CUDNN or None."""
    if backend == "triton":
        return TRITON
    if backend == "torch" and str(algorithm).startswith("cudnn"):
        return CUDNN
    return None


def _best(records: Any) -> Optional[Any]:
    return None if records.empty else records.loc[records["gflops"].idxmax()]


def compare(df: Any) -> list[dict[str, Any]]:
    """One dict per (suite, layer, math mode) with a triton or a cuDNN result, sorted by those."""
    if df.empty:
        return []
    ok = df[(df["status"] == "ok") & (df["device"] == "cuda") & df["gflops"].notna()].copy()
    if ok.empty:
        return []
    ok["side"] = [side(b, a) for b, a in zip(ok["backend"], ok["algorithm"])]
    ok["math"] = [math_mode(d, a) for d, a in zip(ok["spec_dtype"], ok["algorithm"])]
    ok = ok[ok["side"].notna()]
    rows = []
    for (suite, layer, mode), g in ok.groupby(["suite", "problem", "math"], sort=True):
        t = _best(g[g["side"] == TRITON])
        c = _best(g[g["side"] == CUDNN])
        conv = (c["info"] or {}).get("layout_conversion_in_run") if c is not None else None
        rows.append({
            "suite": suite, "layer": layer, "math": mode,
            "triton": None if t is None else t["algorithm"],
            "triton_gflops": None if t is None else float(t["gflops"]),
            "cudnn": None if c is None else c["algorithm"],
            "cudnn_gflops": None if c is None else float(c["gflops"]),
            "ratio": float(t["gflops"] / c["gflops"]) if t is not None and c is not None else None,
            "note": "cuDNN times a layout conversion" if conv else "",
        })
    return rows


def _num(v: Optional[float], fmt: str) -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, fmt)


def render(rows: list[dict[str, Any]], width: int = 160) -> str:
    """The table, then the geometric mean of the ratio per suite and math mode."""
    cells = [[r["suite"], r["layer"], r["math"], r["triton"] or "-", _num(r["triton_gflops"], ".1f"),
              r["cudnn"] or "-", _num(r["cudnn_gflops"], ".1f"), _num(r["ratio"], ".2f"), r["note"]]
             for r in rows]
    right = ("triton GFLOP/s", "cuDNN GFLOP/s", "triton/cuDNN")
    out = [format_table(HEADERS, cells, right=right, width=width)]
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r["ratio"] is not None:
            groups.setdefault((r["suite"], r["math"]), []).append(r["ratio"])
    for (suite, mode), ratios in groups.items():
        out.append(f"{suite} {mode}: triton/cuDNN geometric mean {geomean(ratios):.2f} "
                   f"over {len(ratios)} layers")
    if not groups:
        out.append("no layer has both a triton and a cuDNN result: no ratio")
    return "\n".join(out)


def _nothing(df: Any, runs: Sequence[str]) -> str:
    if df.empty:
        return f"nothing to compare: no records in {' '.join(runs)}"
    seen = df.groupby(["device", "status"]).size().to_dict()
    counts = ", ".join(f"{dev} {st}: {n}" for (dev, st), n in sorted(seen.items()))
    return (f"nothing to compare: no ok cuda records of triton or torch cuDNN candidates in "
            f"{' '.join(runs)} ({len(df)} records: {counts})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories, results roots or globs")
    ap.add_argument("--csv", metavar="FILE", help="also write the rows as CSV")
    args = ap.parse_args(argv)
    import convbench as cb

    try:
        df = cb.load_results(args.runs)
    except cb.ConvbenchError as exc:
        print(f"triton_vs_cudnn: cannot read {' '.join(args.runs)}: {exc}", file=sys.stderr)
        return 2
    rows = compare(df)
    if not rows:
        print(_nothing(df, args.runs))
        return 0
    cols = os.environ.get("COLUMNS", "")
    print(render(rows, width=int(cols) if cols.isdigit() and int(cols) > 0 else 160))
    if args.csv:
        import pandas as pd

        pd.DataFrame(rows).to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
