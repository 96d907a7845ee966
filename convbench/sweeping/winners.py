"""What a sweep shows: the winners per problem (with a legend of the columns that need one)
and, for a dry run, the plan."""
from __future__ import annotations

from typing import Any, Optional

from .. import noise
from ..fmt import fmt_time
from ..outcome import STATUSES
from ..quant import FLOAT_RATE, rate_header

WINNER_HEADERS = ["problem", "shape", "winner", "median", "GFLOP/s", "runner-up", "margin", "verdict",
                  "noise"]
#: columns left out, in this order, when the table is wider than the terminal
WINNER_OPTIONAL = ("noise", "GFLOP/s", "shape", "runner-up", "verdict")
WINNER_RIGHT = ("median", "GFLOP/s", "margin")
#: what a column means, for the columns whose header does not say it all
WINNER_LEGEND = {
    "shape": "dims, batch n, channels in->out, input size, kernel k, stride s, padding p, dtype.",
    "median": "the winner's median time per call.",
    "runner-up": "the fastest other candidate that passed verification (in a race: finalists "
                 "only).",
    "margin": "runner-up median / winner median - 1 (negative when a tie went to a more robust, "
              "slightly slower candidate).",
}
#: what each kind of verdict means; the legend lists the kinds the table shows
VERDICTS = {
    "decisive": "the winner's 95% confidence interval of the median is clear of the runner-up's",
    "close": "the fastest median, but the runner-up's interval reaches into the winner's",
    "tie": "tie (N): N candidates' medians lie within the minimum effect (5%) of the fastest's, "
           "too close to matter",
    "robust pick": "the tie went to the most robust of them (declared backend robustness: "
                   "framework kernels, then array libraries, then JIT-compiled code), not the "
                   "fastest median",
    "only one ok": "no other candidate passed verification (or, in a race, reached the final "
                   "rounds: the others were pruned)",
}


def result_dtypes(result: Any) -> list[str]:
    """The dtypes of a SweepResult's problems (its records', else its suite's)."""
    found = [(r.get("spec") or {}).get("dtype") for r in result.records]
    if not found and result.suite:
        found = [s.dtype for s in result.suite.specs()]
    return [d for d in dict.fromkeys(found) if isinstance(d, str)]


def winner_unit(result: Any) -> str:
    """The unit of the winners table's rate column for a SweepResult's problems."""
    return rate_header(result_dtypes(result))


def winner_columns(result: Any) -> tuple[list[str], tuple[str, ...], tuple[str, ...]]:
    """(headers, right-aligned, optional) of the winners table of a SweepResult: the
    WINNER_* constants with the rate column headed by its unit (GOP/s for int8 problems,
    "GFLOP/s (GOP/s for int8)" when a suite mixes both: :func:`winner_unit`)."""
    unit = winner_unit(result)

    def swap(cols: Any) -> list[str]:
        return [unit if c == FLOAT_RATE else c for c in cols]
    return swap(WINNER_HEADERS), tuple(swap(WINNER_RIGHT)), tuple(swap(WINNER_OPTIONAL))


def verdict(w: Any) -> str:
    """How sure the win of Winner ``w`` is (see VERDICTS)."""
    if w.runner_up is None:
        return "only one ok"
    if w.decisive:
        return "decisive"
    if len(w.tied) < 2:
        return "close"
    return f"tie ({len(w.tied)})" + (", robust pick" if w.candidate != w.tied[0] else "")


def winner_rows(result: Any) -> list[list[str]]:
    """One row per problem of a SweepResult (WINNER_HEADERS), in suite order."""
    device = result.meta.get("device", "cpu")
    by_pair = {(r["problem"], r["candidate"]): r for r in result.records}
    problems = result.suite.problems if result.suite else []
    seen = {p.name for p in problems}
    names = [p.name for p in problems] + sorted({r["problem"] for r in result.records} - seen)
    labels = {p.name: p.spec.replace(name="").label for p in problems}
    rows = []
    for name in names:
        recs = [r for r in result.records if r["problem"] == name]
        if not recs:
            continue
        label = labels.get(name) or recs[0].get("label", "")
        w = result.winners.get((name, device))
        if w is None:
            rows.append([name, label, "(none ok)", "-", "-", "-", "-", status_summary(recs), "-"])
            continue
        rec = by_pair.get((name, w.candidate), {})
        gf = rec.get("gflops")
        margin = "-" if w.margin is None else f"{w.margin * 100:+.1f}%"
        flags = list(rec.get("noise") or [])
        rows.append([name, label, w.candidate, fmt_time(w.median_s) + (" !" if flags else ""),
                     "-" if gf is None else f"{gf:.3g}", w.runner_up or "-", margin, verdict(w),
                     noise.describe(flags)])
    return rows


def noisy_count(result: Any) -> int:
    """How many ok records of a SweepResult carry noise flags."""
    return sum(1 for r in result.records if r.get("status") == "ok" and r.get("noise"))


def winner_legend(rows: list[list[str]], unit: str = FLOAT_RATE) -> dict[str, str]:
    """Header -> meaning, for the columns that need it; the verdict kinds that ``rows`` show.
    ``unit``: the rate column's header (:func:`winner_columns`), explained unless GFLOP/s."""
    shown = [r[-2] for r in rows if r[2] != "(none ok)"]
    kinds = [k for k in VERDICTS if any(k in v for v in shown)]
    legend = dict(WINNER_LEGEND)
    if unit != FLOAT_RATE:
        legend[unit] = ("the winner's rate: the convolution's operations / median time; int8 "
                        "problems count integer multiply-adds (2 per MAC) in GOP/s.")
    if kinds:
        legend["verdict"] = "; ".join(VERDICTS[k] if k == "tie" else f"{k}: {VERDICTS[k]}"
                                      for k in kinds) + "."
    flags = [f for r in rows for f in r[-1].split(", ") if f in noise.FLAGS]
    if flags:
        legend["median"] = WINNER_LEGEND["median"] + " ! marks a timing with noise flags."
        legend["noise"] = ("what may have spoiled the winner's timing: "
                           + "; ".join(f"{k}: {noise.FLAGS[k]}" for k in noise.FLAGS if k in flags)
                           + ". See convbench doctor.")
    return legend


def status_summary(records: list[dict]) -> str:
    """``ok 3, wrong 1``: how many records ended in each status, in STATUSES order."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return ", ".join(f"{s} {counts[s]}" for s in [*STATUSES, *sorted(set(counts) - set(STATUSES))]
                     if s in counts) or "none"


def records_line(result: Any) -> str:
    """``24 records in <run dir>: ok 20, wrong 4``."""
    where = f" in {result.run_dir}" if result.run_dir else ""
    return f"{len(result.records)} records{where}: {status_summary(result.records)}"


def format_winners(result: Any, width: Optional[int] = None) -> str:
    """The winners table as plain text (unlimited width by default), its legend, the records line."""
    from ..table import format_table

    rows = winner_rows(result)
    if not rows:
        return f"(no records)\n\n{records_line(result)}"
    noisy = noisy_count(result)
    notes = ["", records_line(result)]
    if noisy:
        notes.append(f"{noisy} ok records carry noise flags (records' `noise` field): their "
                     "timings may be spoiled; see `convbench doctor`")
    headers, right, optional = winner_columns(result)
    return format_table(headers, rows, right=right, drop=optional, width=width or 10 ** 6,
                        legend=winner_legend(rows, winner_unit(result)), notes=notes)


def plan_rows(result: Any) -> list[list[str]]:
    """problem, shape, how many candidates run, how many are unsupported."""
    rows = []
    for p in (result.suite.problems if result.suite else []):
        es = [e for e in result.plan if e.problem == p.name]
        rows.append([p.name, p.spec.replace(name="").label, str(sum(e.status == "run" for e in es)),
                     str(sum(e.status == "unsupported" for e in es))])
    return rows


def plan_summary(result: Any) -> list[str]:
    """The lines above a dry run's table: pairs, budget, candidates, unavailable ones."""
    from .options import DEFAULT_BUDGET_S

    counts: dict[str, int] = {}
    for e in result.plan:
        counts[e.status] = counts.get(e.status, 0) + 1
    cands = sorted({str(e.candidate) for e in result.plan})
    reasons = sorted({(str(e.candidate), e.reason) for e in result.plan if e.status == "unavailable"})
    budget = result.meta.get("budget_s") or DEFAULT_BUDGET_S
    lines = [f"dry run: {len(result.suite or [])} problems x {len(cands)} candidates "
             f"= {len(result.plan)} pairs: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
             f"timing budget: {budget:g} s per candidate, so at most ~{counts.get('run', 0) * budget:.0f} s "
             "of timing (verification, warm-up and worker start-up come on top)",
             "candidates: " + ", ".join(cands)]
    lines += [f"  {cand}: unavailable: {reason}" for cand, reason in reasons]
    return lines


PLAN_HEADERS = ["problem", "shape", "run", "unsupported"]


def format_plan(result: Any, width: Optional[int] = None) -> str:
    """A dry run's plan as plain text."""
    from ..table import format_table

    return "\n".join(plan_summary(result)) + "\n\n" + format_table(
        PLAN_HEADERS, plan_rows(result), right=("run", "unsupported"), width=width or 10 ** 6)


__all__ = ["WINNER_HEADERS", "WINNER_OPTIONAL", "WINNER_LEGEND", "VERDICTS", "verdict", "noisy_count",
           "winner_columns", "winner_unit", "result_dtypes",
           "winner_rows", "winner_legend", "status_summary", "records_line", "format_winners",
           "plan_rows", "plan_summary", "format_plan", "PLAN_HEADERS"]
