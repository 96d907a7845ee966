"""Tables, run-to-run comparisons and a self-contained HTML report over measured results.

Every function takes the DataFrame of :func:`convbench.results.load_results`, or anything
``load_results`` accepts (a run directory, several, or a glob). Candidates are named
``backend:algorithm@device``; "problem" is the problem's name in its suite.

- :func:`winners`: the fastest correct candidate per problem and device.
- :func:`pivot`: median time, GFLOP/s or percent of peak, problem x candidate.
- :func:`speedup`: baseline time / candidate time, problem x candidate (> 1: faster).
- :func:`geomean`: geometric means per suite (or any grouping) and candidate.
- :func:`status_counts`, :func:`warnings`: failures and noisy measurements.
- :func:`compare`: run B against run A with a significance test on the raw samples.
- :func:`html_report`: one HTML file, plots embedded, readable offline.

pandas, scipy and matplotlib are imported inside the functions.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, Union

from .errors import ConvbenchError, ResultsError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

from .outcome import FAILURES as _FAILURES, STATUSES

#: statuses that are reported as warnings (unsupported/unavailable are expected outcomes)
FAILURES = tuple(s.value for s in _FAILURES)
#: metric name -> (column, axis label, lower is better)
METRICS = {
    "time": ("median_s", "median time per call (s)", True),
    "gflops": ("gflops", "GFLOP/s", False),
    "peak": ("peak_pct", "% of measured GEMM peak", False),
}
VERDICTS = ("faster", "slower", "same", "ambiguous")
#: verdict of rows that cannot be compared (not ok in both runs, or missing from one)
NOT_COMPARABLE = "n/a"
NOISE_THRESHOLD = 0.10

Runs = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], "pd.DataFrame"]


# ---------------------------------------------------------------------------------------------
# loading helpers
# ---------------------------------------------------------------------------------------------
def _frame(runs: Any) -> "pd.DataFrame":
    """The results table of ``runs``; loaded from disk, rows follow each run's suite order
    (then candidate names)."""
    import pandas as pd

    if isinstance(runs, pd.DataFrame):
        df = runs
    else:
        from .results import find_runs, load_results, read_meta

        df = load_results(runs)
        order: dict[tuple[str, str], int] = {}
        for run in find_runs(runs):
            try:
                meta = read_meta(run)
            except ConvbenchError:
                continue
            for i, item in enumerate(meta.get("problem_list") or []):
                order.setdefault((str(meta.get("run_id")), str(item[0])), i)
        if order and len(df):
            runs_seen = list(dict.fromkeys(df["run_id"]))
            rank = [(runs_seen.index(r), order.get((str(r), str(p)), len(order)), str(c))
                    for r, p, c in zip(df["run_id"], df["problem"], df["candidate"])]
            df = df.iloc[sorted(range(len(df)), key=rank.__getitem__)].reset_index(drop=True)
    missing = [c for c in ("problem", "candidate", "status") if c not in df.columns]
    if missing:
        raise ResultsError(
            f"results table lacks column(s) {', '.join(missing)}; expected the DataFrame of "
            "convbench.load_results()")
    if "run_id" not in df.columns:
        df = df.assign(run_id="")
    return df


def _metric(metric: str) -> tuple[str, str, bool]:
    if metric not in METRICS:
        raise ConvbenchError(f"metric: {metric!r} is not supported; use one of {', '.join(METRICS)}")
    return METRICS[metric]


def _index_cols(df: "pd.DataFrame") -> list[str]:
    """Rows of per-problem tables: the problem, and the run when the frame holds several."""
    return ["run_id", "problem"] if df["run_id"].nunique(dropna=False) > 1 else ["problem"]


def _problem_index(df: "pd.DataFrame", cols: list[str]) -> "pd.Index":
    """Every problem in the frame, in order of first appearance."""
    import pandas as pd

    keys = df[cols].drop_duplicates()
    if len(cols) == 1:
        return pd.Index(keys[cols[0]].tolist(), name=cols[0])
    return pd.MultiIndex.from_frame(keys)


def _ok(df: "pd.DataFrame") -> "pd.DataFrame":
    import pandas as pd

    ok = df[df["status"] == "ok"]
    if "median_s" in ok.columns:
        ok = ok[pd.to_numeric(ok["median_s"], errors="coerce") > 0]
    return ok


def resolve_candidate(df: "pd.DataFrame", name: str) -> str:
    """The candidate of ``df`` that ``name`` designates: its full ``backend:algorithm@device``
    form, or a shorter unique prefix such as ``numpy-direct`` or ``torch:default``."""
    cands = sorted(set(df["candidate"].dropna()))
    if name in cands:
        return name
    matches = [c for c in cands
               if c.startswith(name + ":") or c.startswith(name + "@") or c == f"{name}@cpu"]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConvbenchError(
            f"baseline: {name!r} matches several candidates ({', '.join(matches)}); "
            "give the full backend:algorithm@device")
    raise ConvbenchError(
        f"baseline: {name!r} is not a candidate of these results; valid: {', '.join(cands) or 'none'}")


def default_baseline(df: "pd.DataFrame") -> Optional[str]:
    """The candidate that is ok on the most problems (ties: the first in alphabetical order)."""
    ok = _ok(_frame(df))
    if ok.empty:
        return None
    counts = ok.groupby("candidate")[_index_cols(ok)].apply(lambda g: len(g.drop_duplicates()))
    best = counts.max()
    return sorted(c for c, n in counts.items() if n == best)[0]


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def winners(df: Runs) -> "pd.DataFrame":
    """The winner per problem and device, chosen by :func:`convbench.selection.select_winners`
    (the same rule as the sweep and the tuned cache: the fastest ok median, or among
    candidates whose confidence intervals overlap it, the most robust).

    One row per problem and device (and run, when several are loaded), in suite order:
    suite, label, winner, median_s, gflops, peak_pct, runner_up, runner_up_s, margin
    (runner-up median / winner median - 1), decisive, rule, n_ok and n_candidates. Problems
    where no candidate is ok have winner None.
    """
    import numpy as np
    import pandas as pd

    from .selection import select_winners

    df = _frame(df)
    idx = _index_cols(df)
    rows = []
    for rid, run in df.groupby("run_id", sort=False, dropna=False):
        chosen = select_winners(run)
        for (problem, device), g in run.groupby(["problem", "device"], sort=False, dropna=False):
            first = g.iloc[0]
            w = chosen.get((str(problem), str(device)))
            row: dict[str, Any] = {"run_id": rid, "problem": problem, "device": device,
                                   "suite": first.get("suite"), "label": first.get("label"),
                                   "winner": None, "median_s": np.nan, "gflops": np.nan,
                                   "peak_pct": np.nan, "runner_up": None, "runner_up_s": np.nan,
                                   "margin": np.nan, "decisive": None, "rule": None,
                                   "n_ok": int(_ok(g)["candidate"].nunique()),
                                   "n_candidates": int(g["candidate"].nunique())}
            if w is not None:
                wr = g[g["candidate"] == w.candidate].iloc[-1]
                row.update(winner=w.candidate, median_s=_num(w.median_s),
                           gflops=_num(wr.get("gflops")), peak_pct=_num(wr.get("peak_pct")),
                           runner_up=w.runner_up, runner_up_s=_num(w.runner_up_median_s),
                           margin=_num(w.margin), decisive=bool(w.decisive), rule=w.tie_break_rule)
            rows.append(row)
    cols = idx + ["device", "suite", "label", "winner", "median_s", "gflops", "peak_pct",
                  "runner_up", "runner_up_s", "margin", "decisive", "rule", "n_ok", "n_candidates"]
    return pd.DataFrame(rows).reindex(columns=cols) if rows else pd.DataFrame(columns=cols)


def pivot(df: Runs, metric: str = "time") -> "pd.DataFrame":
    """Problem x candidate table of the metric over ok rows: "time" (median seconds per
    call), "gflops" or "peak" (percent of the machine's measured GEMM peak). Cells of
    candidates that were not ok are NaN; every problem of the results has a row."""
    df = _frame(df)
    col, _, _ = _metric(metric)
    idx = _index_cols(df)
    ok = _ok(df)
    # a pair recorded twice in one run (a resumed run): the later record counts
    table = ok.pivot_table(index=idx, columns="candidate", values=col, aggfunc="last")
    table = table.reindex(index=_problem_index(df, idx),
                          columns=sorted(set(df["candidate"].dropna())))
    table.columns.name = "candidate"
    return table


def speedup(df: Runs, baseline: Optional[str] = None) -> "pd.DataFrame":
    """Problem x candidate table of baseline median time / candidate median time (> 1: the
    candidate is faster than the baseline). ``baseline`` is a candidate name (or a unique
    prefix, see :func:`resolve_candidate`); None picks :func:`default_baseline`."""
    df = _frame(df)
    base = resolve_candidate(df, baseline) if baseline else default_baseline(df)
    if base is None:
        raise ConvbenchError("speedup: no candidate has status ok in these results")
    times = pivot(df, "time")
    out = times.rdiv(times[base], axis=0)
    out.attrs["baseline"] = base
    return out


def _gmean(values: Iterable[float]) -> float:
    import numpy as np

    v = np.asarray([x for x in values if x is not None and np.isfinite(x) and x > 0], dtype=float)
    return float(np.exp(np.mean(np.log(v)))) if len(v) else float("nan")


def geomean(df: Runs, by: Union[str, Sequence[str]] = "suite",
            baseline: Optional[str] = None) -> "pd.DataFrame":
    """Geometric means per group (``by``: column name(s), default the suite) and candidate.

    Columns: n_problems (problems in the group), n_ok, wins (problems where
    :func:`winners` chose it); geomean_s, geomean_gflops and geomean_peak_pct over its ok
    problems (compare candidates with equal n_ok only); vs_best, the geometric mean of its
    time / the fastest time over its ok problems (1.0 = the fastest everywhere); with a
    baseline, speedup (geometric mean of baseline time / its time over the problems where
    both are ok) and n_common.
    """
    import pandas as pd

    df = _frame(df)
    by = [by] if isinstance(by, str) else list(by)
    bad = [c for c in by if c not in df.columns]
    if bad:
        raise ConvbenchError(f"geomean: by={bad[0]!r} is not a column; use e.g. 'suite', "
                             "'run_id', 'device' or 'backend'")
    base = resolve_candidate(df, baseline) if baseline else None
    idx = _index_cols(df)
    ok = _ok(df).copy()
    ok["_best"] = ok.groupby(idx + ["device"])["median_s"].transform("min")
    if base is not None:
        keys = list(zip(*(ok[c] for c in idx + ["device"])))
        bt = {k: t for k, c, t in zip(keys, ok["candidate"], ok["median_s"]) if c == base}
        # the baseline is one device's candidate: compare every device's rows against it
        bt_any = {k[:-1]: t for k, t in bt.items()}
        ok["_base"] = pd.Series([bt_any.get(k[:-1], float("nan")) for k in keys],
                                index=ok.index, dtype=float)
    win = winners(df)
    win_keys = {tuple(r) for r in win[idx + ["device", "winner"]].itertuples(index=False)}
    ok["_won"] = [k in win_keys for k in ok[idx + ["device", "candidate"]].itertuples(index=False)]
    rows = []
    for gkey, g in df.groupby(by, sort=False, dropna=False):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        n_problems = len(g[idx].drop_duplicates())
        gok = ok.loc[ok.index.intersection(g.index)]
        for cand in sorted(set(g["candidate"].dropna())):
            c = gok[gok["candidate"] == cand]
            row: dict[str, Any] = dict(zip(by, gkey))
            row.update(candidate=cand, n_problems=n_problems, n_ok=len(c),
                       wins=int(c["_won"].sum()),
                       geomean_s=_gmean(c["median_s"]),
                       geomean_gflops=_gmean(c["gflops"]) if "gflops" in c else float("nan"),
                       geomean_peak_pct=_gmean(c["peak_pct"]) if "peak_pct" in c else float("nan"),
                       vs_best=_gmean(c["median_s"] / c["_best"]))
            if base is not None:
                both = c[c["_base"].notna()]
                row.update(speedup=_gmean(both["_base"] / both["median_s"]), n_common=len(both))
            rows.append(row)
    out = pd.DataFrame(rows)
    if base is not None:
        out.attrs["baseline"] = base
    return out


def status_counts(df: Runs, by: Union[str, Sequence[str]] = "candidate") -> "pd.DataFrame":
    """How many (problem, candidate) pairs ended in each status, per ``by`` (default the
    candidate); one column per status in STATUSES order (zeros included), plus total."""
    import pandas as pd

    df = _frame(df)
    by = [by] if isinstance(by, str) else list(by)
    counts = pd.crosstab([df[c] for c in by], df["status"])
    counts = counts.reindex(columns=list(STATUSES) + sorted(set(counts.columns) - set(STATUSES)),
                            fill_value=0)
    counts["total"] = counts.sum(axis=1)
    counts.columns.name = None
    return counts


def warnings(df: Runs, noise: float = NOISE_THRESHOLD) -> "pd.DataFrame":
    """Measurements to distrust: failures (wrong, crashed, timeout, oom, error) with their
    message, and noisy ok measurements whose IQR / median exceeds ``noise`` (default 10%).
    Columns: run_id, problem, candidate, kind (the status, or "noisy"), detail."""
    import pandas as pd

    df = _frame(df)
    rows = []
    for _, r in df.iterrows():
        status = r["status"]
        if status in FAILURES or status not in STATUSES:
            detail = str(r.get("message") or "")
            if status == "wrong" and _finite(r.get("max_error")):
                tol = r.get("tolerance")
                detail = (f"max error {float(r['max_error']):.3g} > tolerance "
                          f"{float(tol):.3g}" if _finite(tol) else
                          f"max error {float(r['max_error']):.3g}") + (f"; {detail}" if detail else "")
            rows.append(dict(run_id=r["run_id"], problem=r["problem"], candidate=r["candidate"],
                             kind=status, detail=detail))
        elif status == "ok" and _finite(r.get("iqr_s")) and _finite(r.get("median_s")) \
                and float(r["median_s"]) > 0:
            rel = float(r["iqr_s"]) / float(r["median_s"])
            if rel > noise:
                rows.append(dict(run_id=r["run_id"], problem=r["problem"], candidate=r["candidate"],
                                 kind="noisy",
                                 detail=f"IQR/median = {rel:.1%} (median {fmt_time(r['median_s'])}, "
                                        f"{_int(r.get('n_samples'))} samples)"))
    order = {k: i for i, k in enumerate(FAILURES + ("noisy",))}
    out = pd.DataFrame(rows, columns=["run_id", "problem", "candidate", "kind", "detail"])
    if len(out):
        out = out.iloc[sorted(range(len(out)), key=lambda i: order.get(out["kind"].iloc[i], -1))]
        out = out.reset_index(drop=True)
    return out


# ---------------------------------------------------------------------------------------------
# comparison of two runs
# ---------------------------------------------------------------------------------------------
def _machines(df: "pd.DataFrame") -> tuple[set, str]:
    """The env_ids of a frame and a description naming them and their CPU/GPU models."""
    ids = set(df["env_id"].dropna()) if "env_id" in df.columns else set()
    parts = []
    keys = ["env_id"] if ids else []
    cols = [c for c in ("env_cpu_model", "env_gpu_name", "env_threads") if c in df.columns]
    desc = df[keys + cols].drop_duplicates() if keys + cols else None
    if desc is not None:
        for _, r in desc.iterrows():
            bits = []
            if ids:
                bits.append(f"env_id {r['env_id']}")
            if "env_cpu_model" in r and isinstance(r["env_cpu_model"], str):
                bits.append(f"CPU {r['env_cpu_model']!r}")
            if "env_gpu_name" in r and isinstance(r["env_gpu_name"], str):
                bits.append(f"GPU {r['env_gpu_name']!r}")
            if "env_threads" in r and _finite(r["env_threads"]):
                bits.append(f"{int(r['env_threads'])} threads")
            if bits:
                parts.append(", ".join(bits))
    return ids, "; ".join(dict.fromkeys(parts)) or "unknown machine"


def _run_names(df: "pd.DataFrame") -> str:
    ids = [str(x) for x in dict.fromkeys(df["run_id"].dropna()) if str(x)]
    return ", ".join(ids) or "(unnamed run)"


def compare(run_a: Runs, run_b: Runs, *, min_effect: float = 0.02, alpha: float = 0.05,
            allow_different_machines: bool = False, n_boot: int = 2000,
            seed: int = 0) -> "pd.DataFrame":
    """Run B against run A, per problem and candidate.

    ratio = median time in B / median time in A (> 1: B is slower). Significance: a
    two-sided Mann-Whitney U test on the raw per-call samples (``samples_s``) at level
    ``alpha``, and a percentile bootstrap confidence interval (1 - alpha) of the ratio.
    Verdicts, with a band of ``min_effect`` (default 2%) around 1 (``1/(1+e) .. 1+e``):

    - "slower" / "faster": the test is significant and the ratio lies outside the band;
    - "same": the test is significant but the ratio is inside the band (a real but
      negligible difference), or it is not significant and the whole interval is inside;
    - "ambiguous": not significant, but the interval reaches outside the band (too noisy
      or too few samples to tell);
    - "n/a": not ok in both runs, or measured in one run only.

    The frame's ``attrs`` hold "geomean_ratio" (geometric mean of the ratios), "counts"
    (verdict -> rows), "run_a"/"run_b" (run ids) and "machines". Refuses (ConvbenchError)
    to compare runs from different machines (env_id, or CPU model when env_id is absent)
    unless ``allow_different_machines``.
    """
    import numpy as np
    import pandas as pd

    if not (isinstance(min_effect, (int, float)) and 0 <= min_effect < 1):
        raise ConvbenchError(f"min_effect: {min_effect!r} must be a fraction in [0, 1), e.g. 0.02")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ConvbenchError(f"alpha: {alpha!r} must be in (0, 1), e.g. 0.05")
    a, b = _frame(run_a), _frame(run_b)
    ids_a, desc_a = _machines(a)
    ids_b, desc_b = _machines(b)
    if ids_a and ids_b:
        different = ids_a != ids_b
    else:  # no env_id: fall back to the CPU model
        cpu = [set(x["env_cpu_model"].dropna()) if "env_cpu_model" in x.columns else set()
               for x in (a, b)]
        different = bool(cpu[0] and cpu[1] and cpu[0] != cpu[1])
    if different and not allow_different_machines:
        raise ConvbenchError(
            f"run A ({_run_names(a)}) was measured on {desc_a} and run B ({_run_names(b)}) on "
            f"{desc_b}: timings from different machines (or thread counts) say nothing about a "
            "regression. Pass "
            "allow_different_machines=True (shell: --allow-different-machines) to compare anyway.")

    key = ["problem", "spec_key", "candidate"] if "spec_key" in a and "spec_key" in b \
        else ["problem", "candidate"]
    a = a.drop_duplicates(key + ["run_id"], keep="last")
    b = b.drop_duplicates(key + ["run_id"], keep="last")
    for name, x in (("run_a", a), ("run_b", b)):
        dup = x.duplicated(key)
        if dup.any():
            r = x[dup].iloc[0]
            raise ConvbenchError(
                f"{name}: problem {r['problem']!r} / candidate {r['candidate']!r} appears more than "
                f"once (runs {_run_names(x)}); compare takes one run per side")
    keep = key + [c for c in ("label", "status", "median_s", "samples_s", "n_samples", "threads")
                  if c in a.columns or c in b.columns]
    m = a.reindex(columns=keep).merge(b.reindex(columns=keep), on=key, how="outer",
                                      suffixes=("_a", "_b"), sort=False)
    # outer merges sort their keys: restore A's order, then B's extra rows
    first: dict[tuple, int] = {}
    for x in (a, b):
        for k in x[key].itertuples(index=False):
            first.setdefault(tuple(k), len(first))
    m = m.iloc[sorted(range(len(m)), key=lambda i: first.get(tuple(m[key].iloc[i]), len(first)))]
    rng = np.random.default_rng(seed)
    lo_band, hi_band = 1.0 / (1.0 + min_effect), 1.0 + min_effect
    rows = []
    for _, r in m.iterrows():
        row: dict[str, Any] = {k: r[k] for k in key}
        row["label"] = r["label_a"] if isinstance(r.get("label_a"), str) else r.get("label_b")
        sa, sb = r.get("status_a"), r.get("status_b")
        row.update(status_a=sa if isinstance(sa, str) else "absent",
                   status_b=sb if isinstance(sb, str) else "absent",
                   median_a_s=np.nan, median_b_s=np.nan, ratio=np.nan, ci_low=np.nan,
                   ci_high=np.nan, p_value=np.nan, n_a=0, n_b=0, verdict=NOT_COMPARABLE)
        if sa == "ok" and sb == "ok" and _finite(r.get("median_s_a")) \
                and _finite(r.get("median_s_b")):
            xa = _samples(r.get("samples_s_a"))
            xb = _samples(r.get("samples_s_b"))
            ma, mb = float(r["median_s_a"]), float(r["median_s_b"])
            ratio = mb / ma
            row.update(median_a_s=ma, median_b_s=mb, ratio=ratio, n_a=len(xa), n_b=len(xb))
            verdict = "ambiguous"
            if len(xa) >= 2 and len(xb) >= 2:
                p = _mannwhitney(xa, xb)
                lo, hi = _bootstrap_ratio(xa, xb, alpha, n_boot, rng)
                row.update(p_value=p, ci_low=lo, ci_high=hi)
                if p < alpha:
                    verdict = "slower" if ratio >= hi_band else "faster" if ratio <= lo_band else "same"
                elif lo >= lo_band and hi <= hi_band:
                    verdict = "same"
            row["verdict"] = verdict
        rows.append(row)
    cols = key + ["label", "status_a", "status_b", "median_a_s", "median_b_s", "ratio", "ci_low",
                  "ci_high", "p_value", "n_a", "n_b", "verdict"]
    out = pd.DataFrame(rows, columns=cols)
    out.attrs.update(summarize_comparison(out))
    out.attrs.update(run_a=_run_names(a), run_b=_run_names(b), machines=(desc_a, desc_b),
                     different_machines=bool(different), min_effect=min_effect, alpha=alpha)
    threads = [set(x["threads"].dropna()) if "threads" in x.columns else set() for x in (a, b)]
    if threads[0] and threads[1] and threads[0] != threads[1]:
        out.attrs["notes"] = [f"thread counts differ: A {sorted(threads[0])}, B {sorted(threads[1])}"]
    return out


def summarize_comparison(cmp: "pd.DataFrame") -> dict[str, Any]:
    """Verdict counts (faster, slower, same, ambiguous, n/a) and the geometric mean of the
    B/A time ratios over the comparable rows of a :func:`compare` result."""
    counts = {v: int((cmp["verdict"] == v).sum()) for v in VERDICTS + (NOT_COMPARABLE,)}
    return {"counts": counts, "geomean_ratio": _gmean(cmp["ratio"].dropna())}


def _samples(value: Any) -> "Any":
    import numpy as np

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return np.zeros(0)
    arr = np.asarray(list(value), dtype=float)
    return arr[np.isfinite(arr)]


def _mannwhitney(xa: Any, xb: Any) -> float:
    from scipy.stats import mannwhitneyu

    if len(set(xa.tolist()) | set(xb.tolist())) == 1:
        return 1.0  # all samples identical: no evidence of a difference
    return float(mannwhitneyu(xa, xb, alternative="two-sided").pvalue)


def _bootstrap_ratio(xa: Any, xb: Any, alpha: float, n_boot: int, rng: Any) -> tuple[float, float]:
    """Percentile bootstrap interval of median(B) / median(A)."""
    import numpy as np

    ma = np.median(rng.choice(xa, size=(n_boot, len(xa)), replace=True), axis=1)
    mb = np.median(rng.choice(xb, size=(n_boot, len(xb)), replace=True), axis=1)
    ratios = mb / ma
    lo, hi = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------------
def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _num(v: Any) -> float:
    return float(v) if _finite(v) else float("nan")


def _int(v: Any) -> str:
    return str(int(v)) if _finite(v) else "?"


def fmt_time(seconds: Any) -> str:
    """Seconds in a readable unit with 3 significant digits (``1.23 ms``); "-" when missing."""
    if not _finite(seconds):
        return "-"
    s = float(seconds)
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(s) >= scale or unit == "ns":
            return f"{s / scale:.3g} {unit}"
    return f"{s:.3g} s"  # pragma: no cover


def fmt_value(value: Any, metric: str) -> str:
    """A metric value for display ("time" in seconds, "gflops", "peak" in percent)."""
    if not _finite(value):
        return "-"
    if metric == "time":
        return fmt_time(value)
    if metric == "peak":
        return f"{float(value):.3g}%"
    return f"{float(value):.4g}"


def fmt_ratio(value: Any) -> str:
    return f"{float(value):.3g}x" if _finite(value) else "-"


# ---------------------------------------------------------------------------------------------
# HTML report
# ---------------------------------------------------------------------------------------------
def _choice(row: Any) -> str:
    rule = str(row.get("rule") or "")
    if not isinstance(row.get("winner"), str):
        return "-"
    if row.get("decisive") is True:
        return "decisive" if "only" not in rule else "only one ok"
    return "tie, robust pick" if "tie" in rule else rule or "-"


def _metas(runs: Any) -> dict[str, dict[str, Any]]:
    """run_id -> meta.json of the runs behind ``runs`` ({} for a DataFrame)."""
    import pandas as pd

    if isinstance(runs, pd.DataFrame):
        return {}
    from .results import find_runs, read_meta

    out = {}
    for run in find_runs(runs):
        try:
            meta = read_meta(run)
        except ConvbenchError:
            continue
        out[str(meta.get("run_id") or run.name)] = meta
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


def _html_table(header: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    out = [f'<table class="{_e(cls)}"><thead><tr>']
    out += [f"<th>{_e(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{_e(_cell(v))}</td>" for v in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _kv_table(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_cell(v))}</td></tr>" for k, v in items)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return data


def _img(data: str, alt: str) -> str:
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _colors(cands: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {c: cmap(i % 20) for i, c in enumerate(sorted(cands))}


def candidate_family(candidate: str) -> str:
    """"fft" for FFT-based candidates (backend or algorithm mentions fft), else "direct"."""
    head = candidate.split("@", 1)[0].lower()
    return "fft" if "fft" in head else "direct"


def _bar_chart(g: "pd.DataFrame", metric: str, colors: dict) -> Optional[str]:
    import numpy as np
    from matplotlib.figure import Figure

    col, ylabel, _ = _metric(metric)
    table = pivot(g, metric).dropna(axis=1, how="all")
    if table.empty or table.notna().sum().sum() == 0:
        return None
    problems = [str(p if not isinstance(p, tuple) else p[-1]) for p in table.index]
    cands = list(table.columns)
    n_p, n_c = len(problems), len(cands)
    width = min(max(7.0, 1.2 + n_p * (0.35 + 0.12 * n_c)), 30.0)
    fig = Figure(figsize=(width, 4.8))
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
    ax.set_title(f"{ylabel} per problem and candidate" + (" (lower is better)" if metric == "time"
                                                            else " (higher is better)"))
    ax.grid(axis="y", alpha=0.3, which="major")
    ax.legend(fontsize=7, ncol=max(1, min(4, n_c // 6 + 1)), loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def _heat_map(g: "pd.DataFrame", baseline: str) -> Optional[str]:
    import numpy as np
    from matplotlib.figure import Figure

    sp = speedup(g, baseline)
    statuses = g.pivot_table(index=_index_cols(g), columns="candidate", values="status",
                             aggfunc="first").reindex(index=sp.index, columns=sp.columns)
    if sp.empty:
        return None
    vals = sp.to_numpy(dtype=float)
    logv = np.log2(np.where(vals > 0, vals, np.nan))
    lim = np.nanmax(np.abs(logv)) if np.isfinite(logv).any() else 1.0
    lim = max(float(lim), 0.25)
    n_p, n_c = vals.shape
    fig = Figure(figsize=(min(3.0 + 0.95 * n_c, 30.0), min(max(3.2, 1.8 + 0.38 * n_p), 40.0)))
    ax = fig.add_subplot()
    from matplotlib import colormaps

    cmap = colormaps["RdBu"].with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(logv), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(n_c))
    ax.set_xticklabels(list(sp.columns), rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(n_p))
    ax.set_yticklabels([str(p if not isinstance(p, tuple) else p[-1]) for p in sp.index], fontsize=8)
    if n_p * n_c <= 600:
        for i in range(n_p):
            for j in range(n_c):
                if np.isfinite(vals[i, j]):
                    v = vals[i, j]
                    txt = f"{v:.0f}x" if v >= 10 else f"{v:.2g}x"
                    dark = abs(logv[i, j]) > 0.6 * lim
                else:
                    st = statuses.iloc[i, j]
                    txt = st if isinstance(st, str) and st != "ok" else ""
                    dark = False
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
    return _png(fig)


def _roofline(g: "pd.DataFrame", colors: dict) -> Optional[str]:
    import numpy as np
    from matplotlib.figure import Figure

    ok = _ok(g)
    ok = ok[[_finite(v) and float(v) > 0 for v in ok.get("gflops", [])]] if "gflops" in ok else ok[:0]
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
    peak = _first_finite(g.get("peak_gemm_gflops"))
    bw = _first_finite(g.get("peak_bandwidth_gbs"))
    x_lo, x_hi = float(ai.min()) / 2, float(ai.max()) * 2
    if bw is not None and peak is not None:
        x_lo = min(x_lo, peak / bw / 4)
        x_hi = max(x_hi, peak / bw * 4)
    xs = np.geomspace(x_lo, x_hi, 200)
    if peak is not None:
        ax.axhline(peak, color="black", lw=1.2, ls="--", label=f"GEMM peak {peak:.4g} GFLOP/s")
    if bw is not None:
        ys = bw * xs
        if peak is not None:
            ys = np.minimum(ys, peak)
        ax.plot(xs, ys, color="dimgray", lw=1.2, label=f"bandwidth {bw:.4g} GB/s roof")
    ax.set_xlim(x_lo, x_hi)
    ax.set_xlabel("arithmetic intensity (FLOPs / byte of compulsory traffic)")
    ax.set_ylabel("attained GFLOP/s")
    ax.set_title("roofline (winners outlined)")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def _first_finite(col: Any) -> Optional[float]:
    if col is None:
        return None
    for v in col:
        if _finite(v) and float(v) > 0:
            return float(v)
    return None


_GRID_FIXED = ("n", "c_in", "c_out", "input_size", "stride", "dilation", "groups", "transposed",
               "output_padding", "dtype", "layout")


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    return v


def kernel_grid_series(df: Runs) -> list[tuple[str, "pd.DataFrame"]]:
    """Groups of problems that differ only in kernel size (padding may follow the kernel),
    each with at least two kernel sizes: [(description of the fixed part, rows)]. Groups are
    looked for in every suite named "kernel_grid", and in any run whose problems all differ
    only in kernel size."""
    df = _frame(df)
    cols = [f"spec_{f}" for f in _GRID_FIXED if f"spec_{f}" in df.columns]
    if "spec_kernel_size" not in df.columns or not cols:
        return []
    df = df.assign(**{c: df[c].map(_hashable) for c in cols + ["spec_kernel_size"]})
    out = []
    for run_id, r in df.groupby("run_id", sort=False):
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


def _kernel_extent(k: Any) -> float:
    k = tuple(k) if isinstance(k, (list, tuple)) else (k,)
    return float(k[0]) if len(set(k)) == 1 else float(math.prod(k)) ** (1.0 / len(k))


def crossover(g: "pd.DataFrame") -> dict[str, Any]:
    """For rows that differ only in kernel size: the best FFT and best direct time per kernel
    size, and the smallest kernel size from which the best FFT candidate is faster at every
    larger size (None when FFT never wins at the largest size or when a family is absent)."""
    ok = _ok(g)
    ks = sorted({_kernel_extent(k) for k in g["spec_kernel_size"]})
    best: dict[str, dict[float, float]] = {"fft": {}, "direct": {}}
    for _, r in ok.iterrows():
        fam = candidate_family(r["candidate"])
        k = _kernel_extent(r["spec_kernel_size"])
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


def _crossover_plot(desc: str, g: "pd.DataFrame", colors: dict) -> tuple[Optional[str], str]:
    import numpy as np
    from matplotlib.figure import Figure

    ok = _ok(g)
    if ok.empty:
        return None, "no candidate ok"
    info = crossover(g)
    fig = Figure(figsize=(8.5, 5.0))
    ax = fig.add_subplot()
    for c in sorted(set(ok["candidate"])):
        rows = ok[ok["candidate"] == c]
        pts = sorted((_kernel_extent(k), float(t)) for k, t in zip(rows["spec_kernel_size"], rows["median_s"]))
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
    if not info["compared"]:
        text = "FFT and direct candidates were not both ok at any kernel size."
    elif info["crossover"] is None:
        text = f"Direct convolution is fastest at the largest kernel size ({max(info['compared']):g})."
    elif info["crossover"] == min(info["compared"]):
        text = f"FFT is fastest at every kernel size measured (from {info['crossover']:g})."
    else:
        text = f"FFT becomes fastest from kernel size {info['crossover']:g} on."
    return _png(fig), text


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
    _metric(metric)
    df = _frame(runs)
    if df.empty:
        raise ResultsError("html_report: the results hold no records")
    metas = _metas(runs)
    base = resolve_candidate(df, baseline) if baseline else default_baseline(df)
    run_ids = [str(r) for r in dict.fromkeys(df["run_id"])]
    title = title or ("convbench report: " + ", ".join(run_ids))
    cands = sorted(set(df["candidate"].dropna()))
    colors = _colors(cands)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             f'<p class="muted">Generated {_e(now)} by convbench. Metric: {_e(_metric(metric)[1])}; '
             f"baseline for speedups: <code>{_e(base or '-')}</code>. Times are medians of "
             "per-call samples; speedup = baseline time / candidate time.</p>"]

    # -- runs and environments
    parts.append("<h2>Runs and environment</h2>")
    for rid in run_ids:
        r = df[df["run_id"] == rid]
        meta = metas.get(rid, {})
        parts.append(f"<h3>Run {_e(rid or '(unnamed)')}</h3>")
        items = [(k, " ".join(meta[k]) if k == "command" and isinstance(meta.get(k), list)
                  else meta.get(k)) for k in _META_KEYS if k in meta]
        if not items:
            items = [("run_id", rid), ("suite", r["suite"].iloc[0] if "suite" in r else None)]
        peak = meta.get("peak") or {}
        gemm = peak.get("gemm_gflops", _first_finite(r.get("peak_gemm_gflops")))
        bw = peak.get("bandwidth_gbs", _first_finite(r.get("peak_bandwidth_gbs")))
        items.append((f"peak GEMM GFLOP/s ({peak.get('gemm_dtype') or 'float32'})",
                      f"{gemm:.4g}" if _finite(gemm) else "not measured"))
        items.append(("peak bandwidth GB/s", f"{bw:.4g}" if _finite(bw) else "not measured"))
        items.append(("records", len(r)))
        parts.append('<div class="runinfo"><div><h4>Run</h4>' + _kv_table(items) + "</div>")
        env = meta.get("environment")
        if not env:
            env = {c[4:]: r[c].iloc[0] for c in r.columns if c.startswith("env_") and c != "env_id"}
        if env:
            parts.append("<div><h4>Environment fingerprint</h4>" + _kv_table(env.items()) + "</div>")
        parts.append("</div>")

    # -- winners
    parts.append("<h2>Winners</h2>")
    w = winners(df)
    sp_all = speedup(df, base) if base else None
    rows = []
    for _, r in w.iterrows():
        key = tuple(r[c] for c in _index_cols(df))
        key = key[0] if len(key) == 1 else key
        sp = sp_all.at[key, r["winner"]] if (sp_all is not None and isinstance(r["winner"], str)
                                              and key in sp_all.index) else None
        rows.append(([r["run_id"]] if "run_id" in w.columns else []) + [
            r["problem"], r["label"], r["device"], r["winner"] or "no candidate ok",
            fmt_time(r["median_s"]), fmt_value(r["gflops"], "gflops"), fmt_value(r["peak_pct"], "peak"),
            fmt_ratio(sp), r["runner_up"], f"{r['margin']:+.1%}" if _finite(r["margin"]) else "-",
            _choice(r), f"{r['n_ok']}/{r['n_candidates']}"])
    header = (["run"] if "run_id" in w.columns else []) + [
        "problem", "spec", "device", "winner", "median", "GFLOP/s", "% peak",
        f"speedup vs {base}" if base else "speedup", "runner-up", "margin", "choice", "ok"]
    parts.append(_html_table(header, rows, "winners"))
    parts.append('<p class="caption">margin = runner-up median / winner median - 1. choice: '
                 "decisive (the winner's 95% CI of the median is clear of the runner-up's), or a "
                 "tie (CIs overlap) settled for the most robust candidate, which may be slightly "
                 "slower (negative margin).</p>")

    # -- per run (suite)
    for rid in run_ids:
        g = df[df["run_id"] == rid]
        suite = str(g["suite"].iloc[0]) if "suite" in g.columns else ""
        parts.append(f"<h2>Suite {_e(suite)} <span class=\"muted\">({_e(rid)})</span></h2>")
        img = _bar_chart(g, metric, colors)
        if img:
            parts.append(_img(img, f"{metric} per problem and candidate, suite {suite}"))
            parts.append(f'<p class="caption">{_e(_metric(metric)[1])} of every candidate that '
                         "passed the correctness check; missing bars are not-ok candidates.</p>")
        if base is not None and base in set(g["candidate"]):
            img = _heat_map(g, base)
            if img:
                parts.append(_img(img, f"speedup over {base}, suite {suite}"))
                parts.append(f'<p class="caption">Speedup = time of {_e(base)} / time of the '
                             "candidate (colour scale log2); grey cells carry the status of "
                             "candidates that were not ok.</p>")
        img = _roofline(g, colors)
        if img:
            parts.append(_img(img, f"roofline, suite {suite}"))
            has_peak = _first_finite(g.get("peak_gemm_gflops")) is not None
            parts.append('<p class="caption">Arithmetic intensity = FLOPs / bytes of compulsory '
                         "traffic (inputs, weights, output once). "
                         + ("Lines: the machine's measured GEMM peak (float32) and memory-bandwidth "
                            "roof." if has_peak else "The run holds no measured peak: no roof lines.")
                         + "</p>")
        for desc, grid in kernel_grid_series(g):
            img, text = _crossover_plot(desc, grid, colors)
            if img:
                parts.append(f"<h3>FFT vs direct crossover: {_e(desc)}</h3>")
                parts.append(_img(img, f"FFT vs direct crossover, {desc}"))
                parts.append(f'<p class="caption">{_e(text)} Dashed lines: FFT candidates; '
                             "solid: direct (including im2col/GEMM and framework kernels).</p>")
        geo = geomean(g, by="suite", baseline=base if base in set(g["candidate"]) else None)
        if len(geo):
            parts.append("<h3>Candidates (geometric means)</h3>")
            has_sp = "speedup" in geo.columns
            parts.append(_html_table(
                ["candidate", "ok / problems", "wins", "geomean time", "geomean GFLOP/s",
                 "time / best"] + ([f"speedup vs {base}"] if has_sp else []),
                [[r["candidate"], f"{r['n_ok']}/{r['n_problems']}", r["wins"], fmt_time(r["geomean_s"]),
                  fmt_value(r["geomean_gflops"], "gflops"), fmt_ratio(r["vs_best"])]
                 + ([fmt_ratio(r["speedup"])] if has_sp else []) for _, r in geo.iterrows()],
                "geomean"))
        sc = status_counts(g)
        parts.append("<h3>Status counts</h3>")
        parts.append(_html_table(["candidate"] + list(sc.columns),
                                 [[idx] + list(row) for idx, row in sc.iterrows()], "status"))

    # -- warnings
    warn = warnings(df)
    parts.append(f"<h2>Warnings ({len(warn)})</h2>")
    if len(warn):
        parts.append('<ul class="warnings">')
        multi = df["run_id"].nunique() > 1
        for _, r in warn.iterrows():
            where = (f"{r['run_id']} / " if multi else "") + f"{r['problem']} / {r['candidate']}"
            parts.append(f'<li><span class="warn">{_e(r["kind"])}</span> {_e(where)}: '
                         f"{_e(r['detail'])}</li>")
        parts.append("</ul>")
    else:
        parts.append("<p>None: no failures and no measurement with IQR/median over "
                     f"{NOISE_THRESHOLD:.0%}.</p>")
    parts.append("</body></html>")

    out = Path(out_file)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def to_csv(df: Runs, path: Union[str, os.PathLike]) -> Path:
    """Write a results table (or any table of this module) as CSV; tuples, lists and dicts
    become JSON text."""
    import pandas as pd

    from .results import export

    out = Path(path)
    if out.suffix.lower() != ".csv":
        raise ConvbenchError(f"csv: {os.fspath(path)!r} must end in .csv")
    return export(df if isinstance(df, pd.DataFrame) else _frame(df), out)
