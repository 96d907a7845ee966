"""The report's plots, each returned as base64 PNG text (None when there is nothing to
plot). matplotlib is imported inside the functions."""
from __future__ import annotations

import base64
import io
import math
from typing import TYPE_CHECKING, Any, Optional, Sequence

from ..quant import is_quantized, rate_unit
from .formatting import finite
from .frame import frame_dtypes, index_cols, metric_label, ok_rows, rate_label
from .kernel_grid import candidate_family, crossover, crossover_summary, kernel_extent
from .tables import pivot, speedup, winners

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def png(fig: Any) -> str:
    """A matplotlib figure as base64 PNG text."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def candidate_colors(cands: Sequence[str]) -> dict[str, Any]:
    """One colour per candidate, the same in every plot of a report."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {c: cmap(i % 20) for i, c in enumerate(sorted(cands))}


def first_finite(col: Any) -> Optional[float]:
    """The first positive finite value of a column (None when there is none)."""
    if col is None:
        return None
    for v in col:
        if finite(v) and float(v) > 0:
            return float(v)
    return None


def _problem_labels(index: Any) -> list[str]:
    return [str(p if not isinstance(p, tuple) else p[-1]) for p in index]


def bar_chart(g: "pd.DataFrame", metric: str, colors: dict) -> Optional[str]:
    """Grouped bars of ``metric`` per problem and ok candidate."""
    import numpy as np
    from matplotlib.figure import Figure

    ylabel = metric_label(metric, g)
    table = pivot(g, metric).dropna(axis=1, how="all")
    if table.empty or table.notna().sum().sum() == 0:
        return None
    problems, cands = _problem_labels(table.index), list(table.columns)
    n_p, n_c = len(problems), len(cands)
    fig = Figure(figsize=(min(max(7.0, 1.2 + n_p * (0.35 + 0.12 * n_c)), 30.0), 4.8))
    ax = fig.add_subplot()
    bw = 0.8 / n_c
    x = np.arange(n_p)
    for i, c in enumerate(cands):
        ax.bar(x - 0.4 + bw * (i + 0.5), table[c].to_numpy(dtype=float), bw, label=c,
               color=colors.get(c))
    ax.set_xticks(x)
    ax.set_xticklabels(problems, rotation=45 if n_p > 4 else 0, ha="right" if n_p > 4 else "center",
                       fontsize=8)
    if metric == "time":
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} per problem and candidate"
                 + (" (lower is better)" if metric == "time" else " (higher is better)"))
    ax.grid(axis="y", alpha=0.3, which="major")
    ax.legend(fontsize=7, ncol=max(1, min(4, n_c // 6 + 1)), loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
    return png(fig)


def heat_map(g: "pd.DataFrame", baseline: str) -> Optional[str]:
    """Speedup over ``baseline`` per problem and candidate, log2 colour scale; cells of
    candidates that were not ok show their status."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    sp = speedup(g, baseline)
    if sp.empty:
        return None
    statuses = g.pivot_table(index=index_cols(g), columns="candidate", values="status",
                             aggfunc="first").reindex(index=sp.index, columns=sp.columns)
    vals = sp.to_numpy(dtype=float)
    logv = np.log2(np.where(vals > 0, vals, np.nan))
    lim = max(float(np.nanmax(np.abs(logv))) if np.isfinite(logv).any() else 1.0, 0.25)
    n_p, n_c = vals.shape
    fig = Figure(figsize=(min(3.0 + 0.95 * n_c, 30.0), min(max(3.2, 1.8 + 0.38 * n_p), 40.0)))
    ax = fig.add_subplot()
    cmap = colormaps["RdBu"].with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(logv), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(n_c))
    ax.set_xticklabels(list(sp.columns), rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(n_p))
    ax.set_yticklabels(_problem_labels(sp.index), fontsize=8)
    if n_p * n_c <= 600:
        for i in range(n_p):
            for j in range(n_c):
                v, st = vals[i, j], statuses.iloc[i, j]
                txt = (f"{v:.0f}x" if v >= 10 else f"{v:.2g}x") if np.isfinite(v) else \
                    (st if isinstance(st, str) and st != "ok" else "")
                dark = bool(np.isfinite(v)) and abs(logv[i, j]) > 0.6 * lim
                ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    step = max(1, math.ceil(2 * lim / 8))
    top = int(math.floor(lim / step)) * step
    ticks = list(range(-top, top + 1, step)) or [0]
    cb.set_ticks(ticks)
    cb.set_ticklabels([f"{2.0 ** t:.3g}x" for t in ticks])
    cb.set_label("speedup (blue: faster than the baseline)")
    ax.set_title(f"speedup over {baseline}")
    return png(fig)


def roofline(g: "pd.DataFrame", colors: dict) -> Optional[str]:
    """Attained GFLOP/s (GOP/s for int8 problems) against arithmetic intensity, winners
    outlined, under the machine's measured GEMM peak and bandwidth roofs when the run holds
    them (for int8 problems the int8 roof their ``peak_pct`` was taken against, if any)."""
    import numpy as np
    from matplotlib.figure import Figure

    ok = ok_rows(g)
    ok = ok[[finite(v) and float(v) > 0 for v in ok["gflops"]]] if "gflops" in ok else ok[:0]
    if ok.empty or "flops" not in ok or "bytes" not in ok:
        return None
    ai = ok["flops"].astype(float) / ok["bytes"].astype(float)
    fig = Figure(figsize=(8.5, 5.5))
    ax = fig.add_subplot()
    win = winners(g)
    win_keys = set(zip(win["problem"], win["winner"]))
    for c in sorted(set(ok["candidate"])):
        m = (ok["candidate"] == c).to_numpy()
        is_w = np.array([(p, c) in win_keys for p in ok["problem"][m]])
        ax.scatter(ai[m], ok["gflops"][m].astype(float), s=np.where(is_w, 60, 22), label=c,
                   color=colors.get(c), linewidths=np.where(is_w, 1.2, 0.0),
                   edgecolors=[(0, 0, 0, 1) if w else (0, 0, 0, 0) for w in is_w], alpha=0.9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _roofs(ax, float(ai.min()) / 2, float(ai.max()) * 2, plot_peaks(ok),
           first_finite(g.get("peak_bandwidth_gbs")))
    ops = "operations" if any(is_quantized(d) for d in frame_dtypes(ok)) else "FLOPs"
    ax.set_xlabel(f"arithmetic intensity ({ops} / byte of compulsory traffic)")
    ax.set_ylabel(f"attained {rate_label(ok)}")
    ax.set_title("roofline (winners outlined)")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png(fig)


def dtype_roof(g: "pd.DataFrame", dtype: str) -> Optional[float]:
    """The GEMM roof ``dtype``'s records were measured against (their rate / peak_pct), or None
    when none of them has a ``peak_pct``."""
    if "spec_dtype" not in g or "peak_pct" not in g or "gflops" not in g:
        return None
    rows = g[g["spec_dtype"] == dtype]
    return first_finite(float(r) * 100.0 / float(p) if finite(r) and finite(p) and float(p) > 0
                        else None for r, p in zip(rows["gflops"], rows["peak_pct"]))


def plot_peaks(g: "pd.DataFrame") -> dict[str, float]:
    """Roof label -> rate for a roofline of ``g``: the run's float32 GEMM peak when it holds
    float problems, each quantized dtype's own roof (from its records) when it has one."""
    dtypes = frame_dtypes(g) or ["float32"]
    out = {}
    peak = first_finite(g.get("peak_gemm_gflops"))
    if peak is not None and not all(is_quantized(d) for d in dtypes):
        out[f"GEMM peak {peak:.4g} GFLOP/s"] = peak
    for d in dtypes:
        roof = dtype_roof(g, d) if is_quantized(d) else None
        if roof is not None:
            out[f"{d} GEMM peak {roof:.4g} {rate_unit(d)}"] = roof
    return out


def _roofs(ax: Any, x_lo: float, x_hi: float, peaks: dict[str, float], bw: Optional[float]) -> None:
    import numpy as np

    top = max(peaks.values(), default=None)
    if bw is not None and top is not None:
        x_lo, x_hi = min(x_lo, min(peaks.values()) / bw / 4), max(x_hi, top / bw * 4)
    xs = np.geomspace(x_lo, x_hi, 200)
    for (label, peak), ls in zip(peaks.items(), ("--", "-.", ":")):
        ax.axhline(peak, color="black", lw=1.2, ls=ls, label=label)
    if bw is not None:
        ys = bw * xs if top is None else np.minimum(bw * xs, top)
        ax.plot(xs, ys, color="dimgray", lw=1.2, label=f"bandwidth {bw:.4g} GB/s roof")
    ax.set_xlim(x_lo, x_hi)


def crossover_plot(desc: str, g: "pd.DataFrame", colors: dict) -> tuple[Optional[str], str]:
    """Time against kernel size for rows of one kernel-size series (see
    :func:`convbench.report.kernel_grid_series`), FFT dashed, direct solid, with the
    crossover marked; and one sentence saying where FFT wins."""
    from matplotlib.figure import Figure

    ok = ok_rows(g)
    if ok.empty:
        return None, "no candidate ok"
    info = crossover(g)
    fig = Figure(figsize=(8.5, 5.0))
    ax = fig.add_subplot()
    for c in sorted(set(ok["candidate"])):
        rows = ok[ok["candidate"] == c]
        pts = sorted((kernel_extent(k), float(t)) for k, t in zip(rows["spec_kernel_size"], rows["median_s"]))
        fam = candidate_family(c)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1,
                ls="--" if fam == "fft" else "-", color=colors.get(c), label=f"{c} [{fam}]", alpha=0.8)
    for fam, style in (("fft", "--"), ("direct", "-")):
        pts = sorted(info[f"best_{fam}"].items())
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls=style, lw=3, color="black",
                    alpha=0.35, label=f"best {fam}")
    if info["crossover"] is not None:
        ax.axvline(info["crossover"], color="crimson", lw=1, ls=":")
        ax.annotate(f"FFT fastest from k={info['crossover']:g}", (info["crossover"], 0.95),
                    xycoords=("data", "axes fraction"), color="crimson", fontsize=8,
                    ha="left", va="top")
    ax.set_yscale("log")
    ax.set_xlabel("kernel size (per dimension)")
    ax.set_ylabel("median time per call (s)")
    ax.set_title(f"FFT vs direct by kernel size: {desc}")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png(fig), crossover_summary(info)
