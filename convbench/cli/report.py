"""`convbench report`: winners, speedups and warnings of one or more runs; HTML and CSV.

Exit status: 0 when the report was printed (and written), 2 on errors (unknown run, bad
baseline, unreadable results).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

MAX_WARNINGS = 15


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="tables of winners, speedups and warnings; HTML report with plots",
        description="Summarise measured runs: the winner per problem, speedups over a baseline "
                    "candidate, geometric means per candidate and a short list of warnings (failures, "
                    "wrong results, noisy measurements with IQR/median over 10%). Optionally write a "
                    "self-contained HTML report with plots and/or the full table as CSV.",
        epilog="RUN is a run directory, a records.jsonl file, a results root, a glob such as "
               "'results/*-resnet50-*', or a run id found under --results. "
               "Exit status: 0 on success, 2 on errors.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run(s) to report on")
    p.add_argument("--baseline", default=None, metavar="CANDIDATE",
                   help="candidate to compute speedups against, e.g. numpy-direct:einsum@cpu or a unique "
                        "prefix such as torch:default (default: the candidate ok on the most problems)")
    p.add_argument("--metric", choices=("time", "gflops", "peak"), default="time",
                   help="what the tables and the bar chart show: median time, GFLOP/s or %% of the "
                        "measured GEMM peak (default: time)")
    p.add_argument("--html", default=None, metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--csv", default=None, metavar="FILE", help="write every record as CSV")
    p.add_argument("--results", default="results", metavar="DIR",
                   help="where to look up bare run ids (default: ./results)")
    p.add_argument("--plain", action="store_true",
                   help="plain aligned text even on a terminal with rich installed (always plain when "
                        "the output is not a terminal)")
    p.set_defaults(func=run)


def resolve_runs(items: Sequence[str], results_dir: str = "results") -> list[str]:
    """Paths for RUN arguments: existing paths and globs as given; otherwise a run id (or a
    unique prefix of one) under ``results_dir``."""
    from ..errors import ResultsError

    out = []
    for item in items:
        if os.path.exists(item) or any(ch in item for ch in "*?["):
            out.append(item)
            continue
        root = Path(results_dir)
        if (root / item).is_dir():
            out.append(str(root / item))
            continue
        matches = sorted(d for d in root.glob(f"{item}*") if d.is_dir()) if root.is_dir() else []
        if len(matches) == 1:
            out.append(str(matches[0]))
        elif matches:
            raise ResultsError(f"run {item!r} matches {len(matches)} runs under {root}: "
                               + ", ".join(d.name for d in matches[:5]) + "; give the full id")
        else:
            raise ResultsError(f"run {item!r}: no such file, directory or run id under {root}")
    return out


class Printer:
    """Tables through rich when available (and not --plain), else plain aligned text."""

    def __init__(self, plain: bool = False) -> None:
        self.console: Any = None
        if not plain and sys.stdout.isatty():  # rich guesses 80 columns for pipes: plain there
            try:
                from rich.console import Console

                self.console = Console(highlight=False)
            except ImportError:
                self.console = None

    def line(self, text: str = "") -> None:
        if self.console is not None:
            self.console.print(text, markup=False, highlight=False)
        else:
            print(text)

    def table(self, title: str, header: Sequence[str], rows: Sequence[Sequence[Any]],
              right: Sequence[str] = ()) -> None:
        if self.console is not None:
            from rich.table import Table

            t = Table(title=title, title_justify="left")
            for h in header:
                t.add_column(h, justify="right" if h in right else "left",
                             overflow="fold")
            for r in rows:
                t.add_row(*[str(v) for v in r])
            self.console.print(t)
            return
        print(title)
        print(format_table(header, rows, right))
        print()


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[str] = ()) -> str:
    """Plain text table with aligned columns."""
    cells = [[str(h) for h in header]] + [[str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if h in right else v.ljust(w)
                         for v, w, h in zip(r, widths, header)).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from .. import report as rp

    paths = resolve_runs(args.runs, args.results)
    df = rp._frame(paths)
    out = Printer(args.plain)
    if df.empty:
        out.line("no records in " + ", ".join(paths))
        return 0
    metric = args.metric
    base = rp.resolve_candidate(df, args.baseline) if args.baseline else rp.default_baseline(df)
    metas = rp._metas(paths)
    multi = df["run_id"].nunique() > 1

    for rid in dict.fromkeys(df["run_id"]):
        meta = metas.get(str(rid), {})
        env = meta.get("environment") or {}
        peak = meta.get("peak") or {}
        bits = [f"run {rid}", f"suite {meta.get('suite', df.loc[df['run_id'] == rid, 'suite'].iloc[0])}"]
        for k in ("created", "device", "threads", "budget_s"):
            if meta.get(k) is not None:
                bits.append(f"{k} {meta[k]}")
        if env.get("cpu_model"):
            bits.append(f"cpu {env['cpu_model']}")
        if env.get("gpu_name"):
            bits.append(f"gpu {env['gpu_name']}")
        if rp._finite(peak.get("gemm_gflops")):
            bits.append(f"peak {float(peak['gemm_gflops']):.4g} GFLOP/s")
        out.line(" | ".join(str(b) for b in bits))
    out.line()

    w = rp.winners(df)
    sp = rp.speedup(df, base) if base else None
    rows = []
    for _, r in w.iterrows():
        key = (r["run_id"], r["problem"]) if multi else r["problem"]
        s = sp.at[key, r["winner"]] if (sp is not None and isinstance(r["winner"], str)) else None
        value = {"time": r["median_s"], "gflops": r["gflops"], "peak": r["peak_pct"]}[metric]
        rows.append(([r["run_id"]] if multi else []) + [
            r["problem"], r["winner"] or "(none ok)", rp.fmt_value(value, metric),
            rp.fmt_ratio(s), r["runner_up"] or "-",
            f"{r['margin']:+.1%}" if rp._finite(r["margin"]) else "-",
            f"{r['n_ok']}/{r['n_candidates']}"])
    vhead = {"time": "median", "gflops": "GFLOP/s", "peak": "% peak"}[metric]
    shead = "speedup"
    out.table(f"Winners (speedup = time of {base or '-'} / time of the winner)", (["run"] if multi else []) + ["problem", "winner", vhead, shead,
                                                       "runner-up", "margin", "ok"],
              rows, right=(vhead, shead, "margin", "ok"))

    geo = rp.geomean(df, by="run_id" if multi else "suite", baseline=base)
    gcol = {"time": "geomean_s", "gflops": "geomean_gflops", "peak": "geomean_peak_pct"}[metric]
    rows = []
    for _, r in geo.iterrows():
        rows.append(([r["run_id"]] if multi else []) + [
            r["candidate"], f"{r['n_ok']}/{r['n_problems']}", r["wins"],
            rp.fmt_value(r[gcol], metric), rp.fmt_ratio(r["vs_best"]),
            rp.fmt_ratio(r.get("speedup")) if base else "-"])
    ghead = f"geomean {vhead}"
    out.table(f"Candidates (geometric means over their ok problems; speedup over {base or '-'})",
              (["run"] if multi else []) + ["candidate", "ok", "wins", ghead, "time / best",
                                            "speedup"],
              rows, right=("ok", "wins", ghead, "time / best", "speedup"))

    counts = df["status"].value_counts()
    out.line(f"{len(df)} records: " + ", ".join(f"{s} {int(counts[s])}" for s in rp.STATUSES
                                                  if s in counts))
    warn = rp.warnings(df)
    if len(warn):
        out.line(f"Warnings ({len(warn)}):")
        for _, r in warn.head(MAX_WARNINGS).iterrows():
            where = (f"{r['run_id']} / " if multi else "") + f"{r['problem']} / {r['candidate']}"
            out.line(f"  {r['kind']}: {where}: {r['detail']}")
        if len(warn) > MAX_WARNINGS:
            out.line(f"  ... and {len(warn) - MAX_WARNINGS} more (see --html or --csv)")
    else:
        out.line("Warnings: none")

    if args.csv:
        path = rp.to_csv(df, args.csv)
        out.line(f"wrote {path}")
    if args.html:
        path = rp.html_report(paths, args.html, baseline=base, metric=metric)
        out.line(f"wrote {path}")
    return 0

