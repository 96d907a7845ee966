"""The self-contained HTML report: run metadata, tables and plots embedded as PNG."""
from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, Union

from .. import noise
from ..errors import ResultsError
from ..fmt import fmt_time
from .formatting import choice_label, finite, fmt_number, fmt_ratio, fmt_value
from ..quant import is_quantized, rate_unit
from .frame import (DEFAULT_BASELINE_RULE, Runs, default_baseline, frame_dtypes, index_cols,
                    load_frame, load_metas, metric_info, metric_label, rate_label,
                    resolve_candidate)
from .kernel_grid import kernel_grid_series
from .plots import (bar_chart, candidate_colors, crossover_plot, first_finite, heat_map,
                    plot_peaks, roofline)
from .tables import (NOISE_THRESHOLD, geomean, machine_winners, speedup, status_counts, warnings,
                     winners)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;
max-width:1400px;padding:0 16px;color:#222;background:#fff}
h1{font-size:1.6em;margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
h3{margin-top:24px}table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
thead th{background:#f0f3f7}table.kv th{background:#f7f7f7;font-weight:600}
td.num{text-align:right}img.plot{max-width:100%;display:block;margin:8px 0 4px;border:1px solid #eee}
.caption{color:#555;font-size:13px;margin:0 0 16px}.warn{color:#a33}.muted{color:#777}
ul.warnings li{margin:2px 0;font-size:13px}.runinfo{display:flex;flex-wrap:wrap;gap:24px;
align-items:flex-start}.runinfo>div{flex:1 1 0;min-width:360px}.runinfo table{width:100%}
.runinfo h4{margin:4px 0}.runinfo td{word-break:break-word}code{background:#f3f3f3;padding:0 3px}
"""

_META_KEYS = ("run_id", "suite", "created", "finished", "command", "seed", "shuffle_seed", "threads",
              "device", "budget_s", "strategy", "problems", "candidates", "convbench_version",
              "env_id")


def html_report(runs: Runs, out_file: Union[str, os.PathLike], *, baseline: Optional[str] = None,
                metric: str = "time", title: Optional[str] = None) -> Path:
    """Write one self-contained HTML file (plots embedded as PNG, no external assets).

    It shows each run's metadata and environment, the winners table and, per run (suite):
    a grouped bar chart of ``metric`` per problem and candidate, a heat map of the speedup
    over ``baseline`` (None: :func:`default_baseline`), a roofline-style scatter against the
    machine's measured GEMM peak and bandwidth, the FFT-vs-direct crossover for kernel-size
    grids, status counts and the warnings. Returns the path written.
    """
    metric_info(metric)
    df = load_frame(runs)
    if df.empty:
        raise ResultsError("html_report: the results hold no records")
    base = resolve_candidate(df, baseline) if baseline else default_baseline(df)
    run_ids = [str(r) for r in dict.fromkeys(df["run_id"])]
    title = title or ("convbench report: " + ", ".join(run_ids))
    colors = candidate_colors(sorted(set(df["candidate"].dropna())))
    parts = [_head(title, metric_label(metric, df), base, chosen=bool(baseline)),
             _runs_section(df, load_metas(runs), run_ids),
             _winners_section(df, base)]
    if "machine" in df.columns and df["machine"].nunique() > 1:
        parts.append(_machines_section(df))
    for rid in run_ids:
        parts.append(_suite_section(df[df["run_id"] == rid], rid, metric, base, colors))
    parts += [_warnings_section(df), "</body></html>"]
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f'<table class="{_e(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _kv_table(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_cell(v))}</td></tr>" for k, v in items)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _img(data: str, alt: str) -> str:
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _caption(text: str) -> str:
    return f'<p class="caption">{_e(text)}</p>'


def _head(title: str, metric_text: str, base: Optional[str], chosen: bool) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    why = "chosen by the user" if chosen else DEFAULT_BASELINE_RULE
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
            f"<h1>{_e(title)}</h1>\n"
            f'<p class="muted">Generated {_e(now)} by convbench. Metric: {_e(metric_text)}; '
            f"baseline for speedups: <code>{_e(base or '-')}</code> ({_e(why)}). Times are medians "
            "of per-call samples; speedup = baseline time / candidate time (&gt; 1: faster than "
            "the baseline).</p>")


def _runs_section(df: "pd.DataFrame", metas: dict[str, dict], run_ids: list[str]) -> str:
    parts = ["<h2>Runs and environment</h2>"]
    for rid in run_ids:
        r = df[df["run_id"] == rid]
        meta = metas.get(rid, {})
        parts.append(f"<h3>Run {_e(rid or '(unnamed)')}</h3>")
        parts.append('<div class="runinfo"><div><h4>Run</h4>' + _kv_table(_run_items(rid, r, meta))
                     + "</div>")
        env = meta.get("environment") or {c[4:]: r[c].iloc[0] for c in r.columns
                                          if c.startswith("env_") and c != "env_id"}
        if env:
            parts.append("<div><h4>Environment fingerprint</h4>" + _kv_table(env.items()) + "</div>")
        parts.append("</div>")
    return "\n".join(parts)


def _run_items(rid: str, r: "pd.DataFrame", meta: dict[str, Any]) -> list[tuple[str, Any]]:
    """The facts of one run: its metadata, measured peaks and record count."""
    items = [(k, " ".join(meta[k]) if k == "command" and isinstance(meta.get(k), list)
              else meta.get(k)) for k in _META_KEYS if k in meta]
    if not items:
        items = [("run_id", rid), ("suite", r["suite"].iloc[0] if "suite" in r else None)]
    peak = meta.get("peak") or {}
    gemm = peak.get("gemm_gflops", first_finite(r.get("peak_gemm_gflops")))
    bw = peak.get("bandwidth_gbs", first_finite(r.get("peak_bandwidth_gbs")))
    items.append((f"peak GEMM GFLOP/s ({peak.get('gemm_dtype') or 'float32'}, "
                  f"{peak.get('gemm_source') or 'numpy'})",
                  f"{gemm:.4g}" if finite(gemm) else "not measured"))
    for dtype, roof in (peak.get("roofs") or {}).items():
        items.append((f"roofs {dtype}", ", ".join(
            f"{k.replace('_gflops', '')} {v:.4g} {rate_unit(dtype)}" for k, v in roof.items()
            if k.endswith("_gflops") and finite(v)) + (f" (GEMM: {roof['gemm_source']})"
                                                        if roof.get("gemm_source") else "")))
    for phase in ("noise_start", "noise_end"):
        if meta.get(phase):
            items.append((phase.replace("_", " at "), "; ".join(meta[phase])))
    items.append(("peak bandwidth GB/s", f"{bw:.4g}" if finite(bw) else "not measured"))
    items.append(("records", len(r)))
    return items


def _winners_section(df: "pd.DataFrame", base: Optional[str]) -> str:
    w = winners(df)
    sp = speedup(df, base) if base else None
    multi = "run_id" in w.columns
    by_machine = "machine" in w.columns  # a run on several machines: one row per machine
    rows = []
    for _, r in w.iterrows():
        key = tuple(r[c] for c in index_cols(df))
        key = key[0] if len(key) == 1 else key
        s = sp.at[key, r["winner"]] if (sp is not None and isinstance(r["winner"], str)
                                        and key in sp.index) else None
        rows.append(([r["run_id"]] if multi else []) + ([r["machine"]] if by_machine else []) + [
            r["problem"], r["label"], r["device"], r["winner"] or "no candidate ok",
            fmt_time(r["median_s"]), fmt_value(r["gflops"], "gflops"), fmt_value(r["peak_pct"], "peak"),
            fmt_ratio(s), r["runner_up"], fmt_number(r["margin"], "+.1%"), choice_label(r),
            f"{r['n_ok']}/{r['n_candidates']}", _winner_noise(df, r)])
    header = (["run"] if multi else []) + (["machine"] if by_machine else []) + [
        "problem", "spec", "device", "winner", "median", rate_label(w), "% peak",
        f"speedup vs {base}" if base else "speedup", "runner-up", "margin", "choice", "ok", "noise"]
    return "\n".join([
        "<h2>Winners</h2>", _table(header, rows, "winners"),
        _caption("margin = runner-up median / winner median - 1. choice: decisive (the winner's "
                 "95% interval of the median, between-round spread included, is clear of the "
                 "runner-up's), or a tie (medians within the minimum effect) settled for the most "
                 "robust candidate, which may be slightly slower (negative margin). ok = "
                 "candidates that passed the correctness check / candidates tried. % peak: of the "
                 "best GEMM rate measured for the dtype (the record's peak_roof names it); int8 "
                 "rates are GOP/s (integer operations) and their % peak is left empty when the "
                 "run measured no int8 roof. noise: "
                 "what may have spoiled the winner's timing - " + "; ".join(
                     f"{k}: {v}" for k, v in noise.FLAGS.items()) + ".")])


def _machines_section(df: "pd.DataFrame") -> str:
    """Each machine's winners side by side, for runs measured on several machines."""
    t = machine_winners(df)
    fixed = ("run_id", "problem", "device", "label", "agree")
    labels = [c for c in t.columns if c not in fixed and not c.endswith(" median_s")]
    lead = [c for c in ("run_id", "problem", "label", "device") if c in t.columns]
    rows = [[r[c] for c in lead] + [v for m in labels for v in (r[m], fmt_time(r[f"{m} median_s"]))]
            + ["NO: the machines disagree" if r["agree"] == "NO" else r["agree"]] for _, r in t.iterrows()]
    header = [{"run_id": "run", "label": "spec"}.get(c, c) for c in lead] + [
        h for m in labels for h in (m, "median")] + ["same winner"]
    legend = "; ".join(f"{m}: {text}" for m, text in t.attrs.get("legend", {}).items() if m in labels)
    return "\n".join(["<h2>Winners per machine</h2>", _table(header, rows, "machines"),
                      _caption(f"Each machine's winner, chosen among its own records only. {legend}.")])


def _winner_noise(df: "pd.DataFrame", w: "pd.Series") -> str:
    """The noise flags of the winner's record (``-``: none), marked when present."""
    if "noise" not in df.columns or not isinstance(w.get("winner"), str):
        return "-"
    rows = df[(df["problem"] == w["problem"]) & (df["candidate"] == w["winner"])]
    if "run_id" in w.index and "run_id" in df.columns:
        rows = rows[rows["run_id"] == w["run_id"]]
    flags = [str(f) for v in rows["noise"] if isinstance(v, (list, tuple)) for f in v]
    return ("noisy: " + noise.describe(list(dict.fromkeys(flags)))) if flags else "-"


def _suite_section(g: "pd.DataFrame", rid: str, metric: str, base: Optional[str],
                   colors: dict) -> str:
    suite = str(g["suite"].iloc[0]) if "suite" in g.columns else ""
    parts = [f'<h2>Suite {_e(suite)} <span class="muted">({_e(rid)})</span></h2>']
    parts += _suite_plots(g, suite, metric, base, colors)
    parts += _crossover_plots(g, colors)
    parts += _candidates_table(g, base)
    sc = status_counts(g)
    parts += ["<h3>Status counts</h3>",
              _table(["candidate"] + list(sc.columns), [[i] + list(row) for i, row in sc.iterrows()],
                     "status")]
    return "\n".join(parts)


def _suite_plots(g: "pd.DataFrame", suite: str, metric: str, base: Optional[str],
                 colors: dict) -> list[str]:
    parts = []
    img = bar_chart(g, metric, colors)
    if img:
        parts += [_img(img, f"{metric} per problem and candidate, suite {suite}"),
                  _caption(f"{metric_label(metric, g)} of every candidate that passed the "
                           "correctness check; missing bars are not-ok candidates.")]
    img = heat_map(g, base) if base is not None and base in set(g["candidate"]) else None
    if img:
        parts += [_img(img, f"speedup over {base}, suite {suite}"),
                  _caption(f"Speedup = time of {base} / time of the candidate (colour scale "
                           "log2); grey cells carry the status of candidates that were not ok.")]
    img = roofline(g, colors)
    if img:
        parts += [_img(img, f"roofline, suite {suite}"), _caption(_roofline_caption(g))]
    return parts


def _roofline_caption(g: "pd.DataFrame") -> str:
    quant = [d for d in frame_dtypes(g) if is_quantized(d)]
    peaks = list(plot_peaks(g))
    text = ("Arithmetic intensity = " + ("operations" if quant else "FLOPs")
            + " / bytes of compulsory traffic (inputs, weights, output once). ")
    if quant:
        text += f"{', '.join(quant)} problems count integer operations (GOP/s). "
    bw = first_finite(g.get("peak_bandwidth_gbs")) is not None
    lines = peaks + (["the measured memory-bandwidth roof"] if bw else [])
    if not peaks:
        text += "The run holds no measured GEMM peak for these dtypes. "
    return text + ("Lines: " + "; ".join(lines) + "." if lines else "No roof lines.")


def _crossover_plots(g: "pd.DataFrame", colors: dict) -> list[str]:
    parts = []
    for desc, grid in kernel_grid_series(g):
        img, text = crossover_plot(desc, grid, colors)
        if img:
            parts += [f"<h3>FFT vs direct crossover: {_e(desc)}</h3>",
                      _img(img, f"FFT vs direct crossover, {desc}"),
                      _caption(f"{text} Dashed lines: FFT candidates; solid: direct (including "
                               "im2col/GEMM and framework kernels).")]
    return parts


def _candidates_table(g: "pd.DataFrame", base: Optional[str]) -> list[str]:
    geo = geomean(g, by="suite", baseline=base if base in set(g["candidate"]) else None)
    if not len(geo):
        return []
    has_sp = "speedup" in geo.columns
    header = ["candidate", "ok / problems", "wins", "geomean time", f"geomean {rate_label(g)}",
              "time / best"] + ([f"speedup vs {base}"] if has_sp else [])
    rows = [[r["candidate"], f"{r['n_ok']}/{r['n_problems']}", r["wins"], fmt_time(r["geomean_s"]),
             fmt_value(r["geomean_gflops"], "gflops"), fmt_ratio(r["vs_best"])]
            + ([fmt_ratio(r["speedup"])] if has_sp else []) for _, r in geo.iterrows()]
    return ["<h3>Candidates (geometric means)</h3>", _table(header, rows, "geomean"),
            _caption("Geometric means over each candidate's ok problems: compare times only "
                     "between candidates ok on the same problems. time / best = how many times "
                     "slower than the fastest candidate of each problem (1x: fastest everywhere)."
                     + (f" speedup = time of {base} / time of the candidate, over the problems "
                        "where both are ok." if has_sp else ""))]


def _warnings_section(df: "pd.DataFrame") -> str:
    warn = warnings(df)
    parts = [f"<h2>Warnings ({len(warn)})</h2>"]
    if not len(warn):
        parts.append("<p>None: no failures and no measurement with IQR/median over "
                     f"{NOISE_THRESHOLD:.0%}.</p>")
        return "\n".join(parts)
    multi = df["run_id"].nunique() > 1
    parts.append('<ul class="warnings">')
    for _, r in warn.iterrows():
        where = (f"{r['run_id']} / " if multi else "") + f"{r['problem']} / {r['candidate']}"
        parts.append(f'<li><span class="warn">{_e(r["kind"])}</span> {_e(where)}: '
                     f"{_e(r['detail'])}</li>")
    parts.append("</ul>")
    return "\n".join(parts)
