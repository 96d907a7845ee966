"""`convbench report`: winners, speedups and warnings of one or more runs; HTML and CSV.

Exit status: 0 when the report was printed (and written), 2 on errors (unknown run, bad
baseline, unreadable results).
"""
from __future__ import annotations

import argparse
from typing import Any, Optional

from ._runs import add_runs_command, resolve_runs
from ..table import print_table, print_text

MAX_WARNINGS = 15
#: metric -> (winners column, geomean column, header, what it is)
_METRIC_COLUMNS = {
    "time": ("median_s", "geomean_s", "median", "median time per call"),
    "gflops": ("gflops", "geomean_gflops", "GFLOP/s", "GFLOP/s (the convolution's FLOPs / median time)"),
    "peak": ("peak_pct", "geomean_peak_pct", "% peak", "rate as % of the machine's measured GEMM peak "
             "for the dtype (empty for int8 without a measured int8 roof)"),
}


def _metric_columns(metric: str, df: Any) -> tuple[str, str, str, str]:
    """_METRIC_COLUMNS[metric], its rate unit following the problems' dtypes (GOP/s: int8)."""
    from .. import report as rp

    col, gcol, vhead, meaning = _METRIC_COLUMNS[metric]
    if metric == "gflops":
        vhead = rp.rate_label(df)
        if vhead == "GOP/s":
            meaning = ("GOP/s (the convolution's integer operations / median time; int8 "
                       "problems count integer multiply-adds, 2 per MAC)")
        elif vhead != "GFLOP/s":
            meaning = ("rate: the convolution's operations / median time, in GFLOP/s, and in "
                       "GOP/s for int8 problems (integer multiply-adds, 2 per MAC)")
    return col, gcol, vhead, meaning


DESCRIPTION = """
Summarise measured runs: the winner per problem, speedups over a baseline candidate, geometric
means per candidate and a short list of warnings (failures, wrong results, noisy measurements
with IQR/median over 10%). Optionally write a self-contained HTML report with plots and/or the
full table as CSV.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_runs_command(
        sub, "report", description=DESCRIPTION,
        help="tables of winners, speedups and warnings; HTML report with plots",
        exit_status="0 on success, 2 on errors.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run(s) to report on")
    p.add_argument("--baseline", default=None, metavar="CANDIDATE",
                   help="candidate to compute speedups against, e.g. numpy-direct:einsum@cpu or a unique "
                        "prefix such as torch:default (default: the candidate ok on the most problems)")
    p.add_argument("--metric", choices=("time", "gflops", "peak"), default="time",
                   help="what the tables show: median time, GFLOP/s (GOP/s for int8 problems) "
                        "or %% of the measured GEMM peak of the dtype (default: time)")
    p.add_argument("--html", default=None, metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--csv", default=None, metavar="FILE", help="write every record as CSV")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import report as rp

    paths = resolve_runs(args.runs, args.results)
    df = rp.load_frame(paths)
    if df.empty:
        print_text("no records in " + ", ".join(paths))
        return 0
    base = rp.resolve_candidate(df, args.baseline) if args.baseline else rp.default_baseline(df)
    why = ("the baseline you chose with --baseline" if args.baseline else
           f"the baseline: {rp.DEFAULT_BASELINE_RULE}, so that most rows can be compared; "
           "choose another with --baseline")
    _print_runs(df, rp.load_metas(paths))
    _print_winners(df, base, why, args.metric, args.plain)
    if "machine" in df.columns and df["machine"].nunique() > 1:  # a run on several machines
        from ..sweeping.cluster_run import format_machine_winners

        print_text("Winners per machine (each chosen among that machine's records only):")
        print(format_machine_winners(df) + "\n")
    _print_candidates(df, base, args.metric, args.plain)
    _print_warnings(df)
    if args.csv:
        print_text(f"wrote {rp.to_csv(df, args.csv)}")
    if args.html:
        print_text(f"wrote {rp.html_report(paths, args.html, baseline=base, metric=args.metric)}")
    return 0


def _print_runs(df: Any, metas: dict[str, dict]) -> None:
    """One paragraph per run: what was measured, where and when."""
    from .. import report as rp

    for rid in dict.fromkeys(df["run_id"]):
        meta = metas.get(str(rid), {})
        env = meta.get("environment") or {}
        suite = meta.get("suite", df.loc[df["run_id"] == rid, "suite"].iloc[0])
        bits = [f"suite {suite}"]
        bits += [f"{key} {meta[key]}" for key in ("created", "device", "threads")
                 if meta.get(key) is not None]
        if meta.get("budget_s") is not None:
            bits.append(f"timing budget {meta['budget_s']} s per candidate")
        bits += [f"{label} {env[k]}" for k, label in (("cpu_model", "CPU"), ("gpu_name", "GPU"))
                 if env.get(k)]
        peak = rp.fmt_number((meta.get("peak") or {}).get("gemm_gflops"), ".4g")
        if peak != "-":
            bits.append(f"measured GEMM peak {peak} GFLOP/s")
        for dtype, roof in ((meta.get("peak") or {}).get("roofs") or {}).items():
            rate = rp.fmt_number((roof or {}).get("gemm_gflops"), ".4g")
            if rate != "-" and rp.rate_unit(dtype) != "GFLOP/s":
                bits.append(f"{dtype} GEMM peak {rate} {rp.rate_unit(dtype)}")
        print_text(f"Run {rid}: " + ", ".join(str(b) for b in bits))
    print_text()


def _print_winners(df: Any, base: Optional[str], why: str, metric: str, plain: bool) -> None:
    from .. import report as rp

    multi = df["run_id"].nunique() > 1
    col, _, vhead, meaning = _metric_columns(metric, df)
    w = rp.winners(df)
    sp = rp.speedup(df, base) if base else None
    rows = []
    for _, r in w.iterrows():
        key = (r["run_id"], r["problem"]) if multi else r["problem"]
        s = sp.at[key, r["winner"]] if (sp is not None and isinstance(r["winner"], str)) else None
        rows.append(([r["run_id"]] if multi else []) + [
            r["problem"] + (f" @{str(r['machine'])[:8]}" if "machine" in w.columns else ""),
            r["winner"] or "(none ok)", rp.fmt_value(r[col], metric), rp.fmt_ratio(s),
            r["runner_up"] or "-", rp.fmt_number(r["margin"], "+.1%"),
            f"{r['n_ok']}/{r['n_candidates']}"])
    legend = {
        vhead: f"the winner's {meaning}.",
        "speedup": f"how many times faster the winner is than {base}, {why}. Below 1x: the "
                   "baseline's median was lower but within its noise, and the tie went to "
                   "the more robust winner." if base else
                   "no candidate is ok anywhere: no baseline.",
        "runner-up": "the candidate that came second.",
        "margin": "how much slower the runner-up is (its median / the winner's - 1); negative "
                  "when a tie went to the more robust candidate.",
        "ok": "candidates that passed the correctness check / candidates tried.",
    }
    print_table((["run"] if multi else []) + ["problem", "winner", vhead, "speedup", "runner-up",
                                              "margin", "ok"], rows,
                title="Winners: the fastest correct candidate per problem",
                right=(vhead, "speedup", "margin", "ok"), drop=("runner-up", "margin"),
                group="run" if multi else None, legend=legend, plain=plain)
    print_text()


def _print_candidates(df: Any, base: Optional[str], metric: str, plain: bool) -> None:
    from .. import report as rp

    multi = df["run_id"].nunique() > 1
    _, gcol, vhead, meaning = _metric_columns(metric, df)
    geo = rp.geomean(df, by="run_id" if multi else "suite", baseline=base)
    rows = [([r["run_id"]] if multi else []) + [
        r["candidate"], f"{r['n_ok']}/{r['n_problems']}", r["wins"], rp.fmt_value(r[gcol], metric),
        rp.fmt_ratio(r["vs_best"]), rp.fmt_ratio(r.get("speedup")) if base else "-"]
        for _, r in geo.iterrows()]
    ghead = f"geomean {vhead}"
    legend = {
        "ok": "problems where the candidate passed the correctness check / problems.",
        "wins": "problems it won.",
        ghead: f"geometric mean of its {meaning} over its ok problems (compare candidates "
               "with equal ok counts only).",
        "time / best": "geometric mean of its time / the fastest time on each of its ok "
                       "problems (1x: the fastest everywhere).",
        "speedup": f"how many times faster than {base} (the baseline above), as a geometric "
                   "mean over the problems where both are ok.",
    }
    print_table((["run"] if multi else []) + ["candidate", "ok", "wins", ghead, "time / best",
                                              "speedup"], rows,
                title="Candidates, summarised over the problems",
                right=("ok", "wins", ghead, "time / best", "speedup"),
                group="run" if multi else None, legend=legend, plain=plain)
    print_text()


def _print_warnings(df: Any) -> None:
    from .. import report as rp

    multi = df["run_id"].nunique() > 1
    counts = df["status"].value_counts()
    print_text(f"{len(df)} records (one per problem and candidate): "
               + ", ".join(f"{s} {int(counts[s])}" for s in rp.STATUSES if s in counts))
    warn = rp.warnings(df)
    if not len(warn):
        print_text("Warnings: none")
        return
    print_text(f"Warnings ({len(warn)}): failures, and noisy timings (IQR/median over "
               f"{rp.NOISE_THRESHOLD:.0%}):")
    for _, r in warn.head(MAX_WARNINGS).iterrows():
        where = (f"{r['run_id']} / " if multi else "") + f"{r['problem']} / {r['candidate']}"
        print_text(f"{r['kind']}: {where}: {r['detail']}", first="  ", indent="      ")
    if len(warn) > MAX_WARNINGS:
        print_text(f"... and {len(warn) - MAX_WARNINGS} more (see --html or --csv)", first="  ")
