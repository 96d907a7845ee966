"""`convbench compare RUN_A RUN_B`: is B faster, slower or the same as A, per problem and candidate?

Exit status: 0 when the comparison was printed (whatever the verdicts, unless
--fail-on-slower is given: then 1 when any row is slower); 2 on errors, including runs from
different machines without --allow-different-machines.
"""
from __future__ import annotations

import argparse

from .report import Printer, resolve_runs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="compare two runs: faster / slower / same / ambiguous per problem and candidate",
        description="Compare run B against run A for every (problem, candidate) measured ok in both: "
                    "the ratio of median times B/A, a two-sided Mann-Whitney U test on the raw "
                    "samples and a bootstrap confidence interval of the ratio. Verdicts: faster / slower "
                    "(significant and beyond the minimum effect), same (negligible, or the interval is "
                    "inside the minimum-effect band), ambiguous (cannot tell), n/a (not ok in both). "
                    "The summary gives the counts and the geometric mean of the ratios.",
        epilog="RUN is a run directory, a records.jsonl file or a run id found under --results. "
               "Exit status: 0 on success (1 with --fail-on-slower when a row is slower); 2 on "
               "errors, e.g. runs from different machines without --allow-different-machines.")
    p.add_argument("run_a", metavar="RUN_A", help="the reference run")
    p.add_argument("run_b", metavar="RUN_B", help="the run compared against it")
    p.add_argument("--min-effect", type=float, default=0.02, metavar="FRACTION",
                   help="smallest relative change that counts as faster/slower (default 0.02 = 2%%)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="significance level of the test; the interval is (1 - alpha) (default 0.05)")
    p.add_argument("--allow-different-machines", action="store_true",
                   help="compare runs whose environment (env_id: CPU, ISA, cores, threads, GPU) differs")
    p.add_argument("--all", action="store_true", help="also list rows that are 'same' or n/a")
    p.add_argument("--csv", default=None, metavar="FILE", help="write the full comparison as CSV")
    p.add_argument("--fail-on-slower", action="store_true",
                   help="exit with status 1 when any row is slower (for CI)")
    p.add_argument("--results", default="results", metavar="DIR",
                   help="where to look up bare run ids (default: ./results)")
    p.add_argument("--plain", action="store_true", help="plain aligned text even on a terminal")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import report as rp

    path_a, path_b = resolve_runs([args.run_a, args.run_b], args.results)
    cmp = rp.compare(path_a, path_b, min_effect=args.min_effect, alpha=args.alpha,
                     allow_different_machines=args.allow_different_machines)
    out = Printer(args.plain)
    attrs = cmp.attrs
    out.line(f"A: {attrs['run_a']}  ({attrs['machines'][0]})")
    out.line(f"B: {attrs['run_b']}  ({attrs['machines'][1]})")
    if attrs.get("different_machines"):
        out.line("note: the runs come from different machines/configurations (allowed by "
                 "--allow-different-machines): differences need not be regressions")
    for note in attrs.get("notes", []):
        out.line(f"note: {note}")
    out.line()

    shown = cmp if args.all else cmp[~cmp["verdict"].isin(["same", rp.NOT_COMPARABLE])]
    rows = []
    for _, r in shown.iterrows():
        ci = (f"{r['ci_low']:.3f}-{r['ci_high']:.3f}" if rp._finite(r["ci_low"]) else "-")
        status = "" if (r["status_a"] == "ok" and r["status_b"] == "ok") else \
            f"{r['status_a']} -> {r['status_b']}"
        rows.append([r["problem"], r["candidate"], rp.fmt_time(r["median_a_s"]),
                     rp.fmt_time(r["median_b_s"]),
                     f"{r['ratio']:.3f}" if rp._finite(r["ratio"]) else "-", ci,
                     f"{r['p_value']:.2g}" if rp._finite(r["p_value"]) else "-",
                     r["verdict"] + (f" ({status})" if status else "")])
    hidden = len(cmp) - len(shown)
    title = (f"B vs A (ratio = B/A median time; > 1: B slower; {1 - args.alpha:.0%} bootstrap "
             f"interval; Mann-Whitney U p-value; min effect {args.min_effect:.0%})")
    if rows:
        out.table(title, ["problem", "candidate", "A", "B", "ratio", "interval", "p", "verdict"], rows,
                  right=("A", "B", "ratio", "interval", "p"))
    else:
        out.line(title)
        out.line("  (no row is faster, slower or ambiguous)")
    if hidden:
        out.line(f"({hidden} rows that are 'same' or n/a not listed; --all lists them)")

    counts = attrs["counts"]
    geo = attrs["geomean_ratio"]
    comparable = sum(counts[v] for v in rp.VERDICTS)
    out.line()
    out.line(f"{comparable} rows compared: " + ", ".join(f"{counts[v]} {v}" for v in rp.VERDICTS)
             + f"; {counts[rp.NOT_COMPARABLE]} n/a (not ok in both runs)")
    if rp._finite(geo):
        change = "slower" if geo > 1 else "faster"
        out.line(f"geometric mean of B/A: {geo:.4f} (B {abs(geo - 1):.1%} {change} overall)"
                 if abs(geo - 1) >= 5e-4 else f"geometric mean of B/A: {geo:.4f} (no overall change)")
    if args.csv:
        out.line(f"wrote {rp.to_csv(cmp, args.csv)}")
    return 1 if (args.fail_on_slower and counts["slower"]) else 0
