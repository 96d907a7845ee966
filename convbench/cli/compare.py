"""`convbench compare RUN_A RUN_B`: is B faster, slower or the same as A, per problem and candidate?

Exit status: 0 when the comparison was printed (whatever the verdicts, unless
--fail-on-slower is given: then 1 when any row is slower); 2 on errors, including runs from
different machines without --allow-different-machines.
"""
from __future__ import annotations

import argparse
import math
from typing import Any

from ._runs import add_runs_command, resolve_runs
from ..selection import DEFAULT_MIN_EFFECT
from ..table import print_table, print_text


DESCRIPTION = """
Compare run B against run A for every (problem, candidate) measured ok in both: the ratio of
median times B/A and its confidence interval from both runs' between-round variation (each
record's round medians; blocks of samples for runs without rounds), with a t test on the same.
Verdicts: faster / slower (significant and beyond the minimum effect), same (the whole interval
inside the minimum-effect band), ambiguous (cannot tell), n/a (not ok in both). The summary
gives the counts and the geometric mean of the ratios.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_runs_command(
        sub, "compare", description=DESCRIPTION,
        help="compare two runs: faster / slower / same / ambiguous per problem and candidate",
        exit_status="0 on success (1 with --fail-on-slower when a row is slower); 2 on errors, "
                    "e.g. runs from different machines without --allow-different-machines.")
    p.add_argument("run_a", metavar="RUN_A", help="the reference run")
    p.add_argument("run_b", metavar="RUN_B", help="the run compared against it")
    p.add_argument("--min-effect", type=float, default=DEFAULT_MIN_EFFECT, metavar="FRACTION",
                   help="smallest relative change that counts as faster/slower; 'same' needs the "
                        f"whole interval inside it (default {DEFAULT_MIN_EFFECT:g} = "
                        f"{DEFAULT_MIN_EFFECT * 100:.0f}%%; provisional)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="significance level of the test; the interval is (1 - alpha) (default 0.05)")
    p.add_argument("--allow-different-machines", action="store_true",
                   help="compare runs whose environment (env_id: CPU, ISA, cores, threads, GPU) differs")
    p.add_argument("--all", action="store_true", help="also list rows that are 'same' or n/a")
    p.add_argument("--csv", default=None, metavar="FILE",
                   help="write the full comparison as CSV (columns include candidate and verdict)")
    p.add_argument("--fail-on-slower", action="store_true",
                   help="exit with status 1 when any row is slower (for CI)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import report as rp

    path_a, path_b = resolve_runs([args.run_a, args.run_b], args.results)
    cmp = rp.compare(path_a, path_b, min_effect=args.min_effect, alpha=args.alpha,
                     allow_different_machines=args.allow_different_machines)
    attrs = cmp.attrs
    print_text(f"A (the reference): {attrs['run_a']}, on {attrs['machines'][0]}")
    print_text(f"B (compared with A): {attrs['run_b']}, on {attrs['machines'][1]}")
    if attrs.get("different_machines"):
        print_text("note: the runs come from different machines/configurations (allowed by "
                   "--allow-different-machines): differences need not be regressions")
    for note in attrs.get("notes", []):
        print_text(f"note: {note}")
    print_text()
    shown = cmp if args.all else cmp[~cmp["verdict"].isin(["same", rp.NOT_COMPARABLE])]
    _print_rows(shown, args)
    hidden = len(cmp) - len(shown)
    if hidden:
        print_text(f"({hidden} rows that are 'same' or n/a not listed; --all lists them)")
    print_text()
    _print_summary(attrs)
    if args.csv:
        print_text(f"wrote {rp.to_csv(cmp, args.csv)}")
    return 1 if (args.fail_on_slower and attrs["counts"]["slower"]) else 0


def _print_rows(shown: Any, args: argparse.Namespace) -> None:
    """The compared rows, grouped by problem."""
    from .. import report as rp

    title = "B against A, per problem and candidate"
    if not len(shown):
        print_text(f"{title}: no row is faster, slower or ambiguous")
        return
    rows = []
    for _, r in shown.iterrows():
        lo, hi = rp.fmt_number(r["ci_low"], ".3f"), rp.fmt_number(r["ci_high"], ".3f")
        both_ok = r["status_a"] == "ok" and r["status_b"] == "ok"
        rows.append([r["problem"], r["candidate"], rp.fmt_time(r["median_a_s"]),
                     rp.fmt_time(r["median_b_s"]), rp.fmt_number(r["ratio"], ".3f"),
                     "-" if lo == "-" else f"{lo}-{hi}", rp.fmt_number(r["p_value"], ".2g"),
                     r["verdict"] + ("" if both_ok else f" ({r['status_a']} -> {r['status_b']})"),
                     _noise(r)])
    effect, level = f"{args.min_effect:.0%}", f"{1 - args.alpha:.0%}"
    legend = {
        "A": "median time per call in run A; B: the same in run B.",
        "ratio": "B / A median time (> 1: B is slower).",
        "interval": f"{level} confidence interval of the ratio, from both runs' between-round "
                    "variation.",
        "p": "p-value of a t test on the two runs' round medians (small: a real difference).",
        "verdict": f"faster / slower: significant (p < {args.alpha:g}) and a change of more "
                   f"than {effect} (--min-effect); same: the whole interval within {effect}; "
                   "ambiguous: too noisy to tell.",
        "noise": "what may have spoiled the timings in A / B (steal, busy, tick, throttle, "
                 "freq, drift; see convbench doctor).",
    }
    print_table(["problem", "candidate", "A", "B", "ratio", "interval", "p", "verdict", "noise"],
                rows, title=title, right=("A", "B", "ratio", "interval", "p"),
                drop=("noise", "p", "interval"), group="problem", legend=legend, plain=args.plain)


def _noise(r: Any) -> str:
    a, b = r.get("noise_a") or "", r.get("noise_b") or ""
    return f"{a or '-'} / {b or '-'}" if a or b else "-"


def _print_summary(attrs: dict) -> None:
    from .. import report as rp

    counts = attrs["counts"]
    geo = attrs["geomean_ratio"]
    comparable = sum(counts[v] for v in rp.VERDICTS)
    print_text(f"{comparable} rows compared: " + ", ".join(f"{counts[v]} {v}" for v in rp.VERDICTS)
               + f"; {counts[rp.NOT_COMPARABLE]} n/a (not ok in both runs)")
    if math.isfinite(geo):
        change = "slower" if geo > 1 else "faster"
        print_text(f"geometric mean of B/A: {geo:.4f} (B {abs(geo - 1):.1%} {change} overall)"
                   if abs(geo - 1) >= 5e-4 else f"geometric mean of B/A: {geo:.4f} (no overall change)")
