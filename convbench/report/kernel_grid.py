"""Kernel-size grids: where FFT-based convolution starts to beat direct convolution."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .frame import Runs, load_frame, ok_rows

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: the spec fields a kernel-size series holds fixed
_GRID_FIXED = ("n", "c_in", "c_out", "input_size", "stride", "dilation", "groups", "transposed",
               "output_padding", "dtype", "layout")


def candidate_family(candidate: str) -> str:
    """"fft" for FFT-based candidates (backend or algorithm mentions fft), else "direct"."""
    head = candidate.split("@", 1)[0].lower()
    return "fft" if "fft" in head else "direct"


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    return v


def kernel_grid_series(df: Runs) -> list[tuple[str, "pd.DataFrame"]]:
    """Groups of problems that differ only in kernel size (padding may follow the kernel),
    each with at least two kernel sizes: [(description of the fixed part, rows)]. Groups are
    looked for in every suite named "kernel_grid", and in any run whose problems all differ
    only in kernel size."""
    df = load_frame(df)
    cols = [f"spec_{f}" for f in _GRID_FIXED if f"spec_{f}" in df.columns]
    if "spec_kernel_size" not in df.columns or not cols:
        return []
    df = df.assign(**{c: df[c].map(_hashable) for c in cols + ["spec_kernel_size"]})
    out = []
    for _, r in df.groupby("run_id", sort=False):
        suite = str(r["suite"].iloc[0]) if "suite" in r.columns else ""
        groups = list(r.groupby(cols, sort=False, dropna=False))
        if suite != "kernel_grid" and len(groups) != 1:
            continue
        for key, g in groups:
            if g["spec_kernel_size"].nunique() < 2:
                continue
            key = key if isinstance(key, tuple) else (key,)
            fixed = dict(zip([c[5:] for c in cols], key))
            desc = (f"n{fixed.get('n')} {fixed.get('c_in')}->{fixed.get('c_out')} "
                    f"{'x'.join(map(str, fixed.get('input_size') or ()))} "
                    f"{fixed.get('dtype', '')} {fixed.get('layout', '')}").strip()
            out.append((desc, g))
    return out


def kernel_extent(k: Any) -> float:
    """A kernel size as one number: its side when square, else the geometric mean of sides."""
    k = tuple(k) if isinstance(k, (list, tuple)) else (k,)
    return float(k[0]) if len(set(k)) == 1 else float(math.prod(k)) ** (1.0 / len(k))


def crossover(g: "pd.DataFrame") -> dict[str, Any]:
    """For rows that differ only in kernel size: the best FFT and best direct time per kernel
    size, and the smallest kernel size from which the best FFT candidate is faster at every
    larger size (None when FFT never wins at the largest size or when a family is absent)."""
    ks = sorted({kernel_extent(k) for k in g["spec_kernel_size"]})
    best: dict[str, dict[float, float]] = {"fft": {}, "direct": {}}
    for _, r in ok_rows(g).iterrows():
        fam = candidate_family(r["candidate"])
        k = kernel_extent(r["spec_kernel_size"])
        t = float(r["median_s"])
        if t < best[fam].get(k, math.inf):
            best[fam][k] = t
    both = [k for k in ks if k in best["fft"] and k in best["direct"]]
    cross = None
    for k in reversed(both):
        if best["fft"][k] < best["direct"][k]:
            cross = k
        else:
            break
    return {"kernel_sizes": ks, "best_fft": best["fft"], "best_direct": best["direct"],
            "crossover": cross, "compared": both}


def crossover_summary(info: dict[str, Any]) -> str:
    """One sentence on a :func:`crossover` result."""
    if not info["compared"]:
        return "FFT and direct candidates were not both ok at any kernel size."
    if info["crossover"] is None:
        return f"Direct convolution is fastest at the largest kernel size ({max(info['compared']):g})."
    if info["crossover"] == min(info["compared"]):
        return f"FFT is fastest at every kernel size measured (from {info['crossover']:g})."
    return f"FFT becomes fastest from kernel size {info['crossover']:g} on."
