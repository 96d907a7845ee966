"""Tables over measured results: winners, pivots, speedups, geometric means, status counts
and warnings."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from ..errors import ConvbenchError
from ..fmt import fmt_time, geomean as _gmean
from ..outcome import FAILURES as _FAILURES, STATUSES, Status
from .formatting import finite, num
from .frame import (Runs, default_baseline, index_cols, load_frame, metric_info, ok_rows,
                    problem_index, resolve_candidate)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: statuses reported as warnings (unsupported/unavailable are expected outcomes)
FAILURES = tuple(s.value for s in _FAILURES)
#: IQR / median above which an ok measurement is reported as noisy
NOISE_THRESHOLD = 0.10

_WINNER_COLS = ["device", "suite", "label", "dtype", "winner", "median_s", "gflops", "peak_pct",
                "runner_up", "runner_up_s", "margin", "decisive", "rule", "n_ok", "n_candidates"]


def winners(df: Runs) -> "pd.DataFrame":
    """The winner per problem and device, chosen by :func:`convbench.selection.select_winners`
    (the same rule as the sweep and the tuned cache: the fastest ok median, or among
    candidates whose confidence intervals overlap it, the most robust).

    One row per problem and device (and run, when several are loaded), in suite order:
    suite, label, dtype, winner, median_s, gflops (GOP/s for int8 problems: integer
    operations), peak_pct (of the dtype's own roof; empty for int8 without an int8 roof),
    runner_up, runner_up_s, margin (runner-up median / winner median - 1), decisive, rule,
    n_ok and n_candidates. Problems where no candidate is ok have winner None.
    """
    import pandas as pd

    from ..selection import select_winners

    df = load_frame(df)
    # a run measured on several machines (convbench sweep --scheduler): winners per machine
    by_machine = "machine" in df.columns and df["machine"].nunique() > 1
    rows = []
    for key, run in df.groupby(["run_id", "machine"] if by_machine else "run_id", sort=False, dropna=False):
        rid = key[0] if by_machine else key
        chosen = select_winners(run)
        for (problem, device), g in run.groupby(["problem", "device"], sort=False, dropna=False):
            rows.append(_winner_row(rid, problem, device, g, chosen.get((str(problem), str(device)))))
            if by_machine:
                rows[-1]["machine"] = key[1]
    cols = index_cols(df) + (["machine"] if by_machine else []) + _WINNER_COLS
    return pd.DataFrame(rows).reindex(columns=cols) if rows else pd.DataFrame(columns=cols)


def machine_winners(df: Runs) -> "pd.DataFrame":
    """The winner of every problem on every machine, side by side (for runs measured on
    several machines: ``convbench sweep --scheduler``).

    One row per run, problem and device: label, then per machine a column named by its
    label (the winning candidate, None if nothing was ok there) and ``<label> median_s``,
    then ``agree``: "yes" when every machine with a winner chose the same candidate, "NO"
    where they disagree, "-" with fewer than two winners. Machines (the ``machine`` column,
    a machine type's env_id) are labelled by their hostnames, with threads and then the id
    added where labels would clash; ``attrs["legend"]`` says which machine each label is.
    """
    import pandas as pd

    from ..selection import select_winners

    df = load_frame(df)
    if "machine" not in df.columns:
        df = df.assign(machine=df["env_id"] if "env_id" in df.columns else "")
    labels = _machine_labels(df)
    chosen = {(rid, mid): select_winners(g)
              for (rid, mid), g in df.groupby(["run_id", "machine"], sort=False, dropna=False)}
    rows = []
    for (rid, problem, device), g in df.groupby(["run_id", "problem", "device"], sort=False, dropna=False):
        row: dict[str, Any] = {"run_id": rid, "problem": problem, "device": device,
                               "label": g["label"].iloc[0] if "label" in g else None}
        picks = []
        for mid, label in labels.items():
            w = chosen.get((rid, mid), {}).get((str(problem), str(device)))
            row[label] = None if w is None else w.candidate
            row[f"{label} median_s"] = float("nan") if w is None else num(w.median_s)
            picks += [] if w is None else [w.candidate]
        row["agree"] = "-" if len(picks) < 2 else ("yes" if len(set(picks)) == 1 else "NO")
        rows.append(row)
    cols = (index_cols(df) + ["device", "label"]
            + [c for label in labels.values() for c in (label, f"{label} median_s")] + ["agree"])
    out = pd.DataFrame(rows).reindex(columns=cols) if rows else pd.DataFrame(columns=cols)
    out.attrs["legend"] = {label: f"the winner on machine {mid}" for mid, label in labels.items()}
    out.attrs["legend"]["agree"] = "NO where the machines' winners differ"
    return out


def _machine_labels(df: "pd.DataFrame") -> dict[Any, str]:
    """machine id -> a readable, unique label: its hostnames (+ threads, + id where they clash)."""
    parts = {}
    for mid, g in df.groupby("machine", sort=True, dropna=False):
        hosts = sorted(set(g["hostname"].dropna().astype(str))) if "hostname" in g else []
        threads = sorted(set(g["threads"].dropna().astype(int))) if "threads" in g else []
        parts[mid] = ["+".join(hosts) or str(mid)[:8],
                      "/".join(map(str, threads)) + "t", str(mid)[:6]]
    out = {mid: p[0] for mid, p in parts.items()}
    for extra in (1, 2):
        taken = list(out.values())
        out = {mid: f"{v} {parts[mid][extra]}" if taken.count(v) > 1 else v for mid, v in out.items()}
    return out


def _winner_row(run_id: Any, problem: Any, device: Any, g: "pd.DataFrame", w: Any) -> dict[str, Any]:
    nan = float("nan")
    first = g.iloc[0]
    row: dict[str, Any] = {"run_id": run_id, "problem": problem, "device": device,
                           "suite": first.get("suite"), "label": first.get("label"),
                           "dtype": first.get("spec_dtype"),
                           "winner": None, "median_s": nan, "gflops": nan, "peak_pct": nan,
                           "runner_up": None, "runner_up_s": nan, "margin": nan,
                           "decisive": None, "rule": None,
                           "n_ok": int(ok_rows(g)["candidate"].nunique()),
                           "n_candidates": int(g["candidate"].nunique())}
    if w is not None:
        wr = g[g["candidate"] == w.candidate].iloc[-1]
        row.update(winner=w.candidate, median_s=num(w.median_s), gflops=num(wr.get("gflops")),
                   peak_pct=num(wr.get("peak_pct")), runner_up=w.runner_up,
                   runner_up_s=num(w.runner_up_median_s), margin=num(w.margin),
                   decisive=bool(w.decisive), rule=w.tie_break_rule)
    return row


def pivot(df: Runs, metric: str = "time") -> "pd.DataFrame":
    """Problem x candidate table of the metric over ok rows: "time" (median seconds per
    call), "gflops" (GOP/s for int8 problems) or "peak" (percent of the machine's measured
    GEMM peak for the problem's dtype). Cells of
    candidates that were not ok are NaN; every problem of the results has a row."""
    df = load_frame(df)
    col, _, _ = metric_info(metric)
    idx = index_cols(df)
    # a pair recorded twice in one run (a resumed run): the later record counts
    table = ok_rows(df).pivot_table(index=idx, columns="candidate", values=col, aggfunc="last")
    table = table.reindex(index=problem_index(df, idx),
                          columns=sorted(set(df["candidate"].dropna())))
    table.columns.name = "candidate"
    return table


def speedup(df: Runs, baseline: Optional[str] = None) -> "pd.DataFrame":
    """Problem x candidate table of baseline median time / candidate median time (> 1: the
    candidate is faster than the baseline). ``baseline`` is a candidate name (or a unique
    prefix, see :func:`resolve_candidate`); None picks :func:`default_baseline`."""
    df = load_frame(df)
    base = resolve_candidate(df, baseline) if baseline else default_baseline(df)
    if base is None:
        raise ConvbenchError("speedup: no candidate has status ok in these results")
    times = pivot(df, "time")
    out = times.rdiv(times[base], axis=0)
    out.attrs["baseline"] = base
    return out


def geomean(df: Runs, by: Union[str, Sequence[str]] = "suite",
            baseline: Optional[str] = None) -> "pd.DataFrame":
    """Geometric means per group (``by``: column name(s), default the suite) and candidate.

    Columns: n_problems (problems in the group), n_ok, wins (problems where
    :func:`winners` chose it); geomean_s, geomean_gflops (GOP/s for int8 problems) and
    geomean_peak_pct over its ok
    problems (compare candidates with equal n_ok only); vs_best, the geometric mean of its
    time / the fastest time over its ok problems (1.0 = the fastest everywhere); with a
    baseline, speedup (geometric mean of baseline time / its time over the problems where
    both are ok) and n_common.
    """
    import pandas as pd

    df = load_frame(df)
    by = [by] if isinstance(by, str) else list(by)
    bad = [c for c in by if c not in df.columns]
    if bad:
        raise ConvbenchError(f"geomean: by={bad[0]!r} is not a column; use e.g. 'suite', "
                             "'run_id', 'device' or 'backend'")
    base = resolve_candidate(df, baseline) if baseline else None
    ok = _ok_with_references(df, base)
    idx = index_cols(df)
    rows = []
    for gkey, g in df.groupby(by, sort=False, dropna=False):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        n_problems = len(g[idx].drop_duplicates())
        gok = ok.loc[ok.index.intersection(g.index)]
        for cand in sorted(set(g["candidate"].dropna())):
            row: dict[str, Any] = dict(zip(by, gkey))
            row.update(candidate=cand, n_problems=n_problems)
            row.update(_candidate_means(gok[gok["candidate"] == cand], base is not None))
            rows.append(row)
    out = pd.DataFrame(rows)
    if base is not None:
        out.attrs["baseline"] = base
    return out


def _ok_with_references(df: "pd.DataFrame", base: Optional[str]) -> "pd.DataFrame":
    """The ok rows with _best (the problem's fastest time), _won (the winners' choice) and,
    with a baseline, _base (the baseline's time on that problem)."""
    import pandas as pd

    idx = index_cols(df)
    ok = ok_rows(df).copy()
    ok["_best"] = ok.groupby(idx + ["device"])["median_s"].transform("min")
    if base is not None:
        keys = list(zip(*(ok[c] for c in idx)))
        # the baseline is one device's candidate: every device's rows are compared with it
        base_time = {k: t for k, c, t in zip(keys, ok["candidate"], ok["median_s"]) if c == base}
        ok["_base"] = pd.Series([base_time.get(k, float("nan")) for k in keys],
                                index=ok.index, dtype=float)
    win = winners(df)
    won = {tuple(r) for r in win[idx + ["device", "winner"]].itertuples(index=False)}
    ok["_won"] = [k in won for k in ok[idx + ["device", "candidate"]].itertuples(index=False)]
    return ok


def _candidate_means(c: "pd.DataFrame", with_base: bool) -> dict[str, Any]:
    out = dict(n_ok=len(c), wins=int(c["_won"].sum()),
               geomean_s=_gmean(c["median_s"]),
               geomean_gflops=_gmean(c["gflops"]) if "gflops" in c else float("nan"),
               geomean_peak_pct=_gmean(c["peak_pct"]) if "peak_pct" in c else float("nan"),
               vs_best=_gmean(c["median_s"] / c["_best"]))
    if with_base:
        both = c[c["_base"].notna()]
        out.update(speedup=_gmean(both["_base"] / both["median_s"]), n_common=len(both))
    return out


def status_counts(df: Runs, by: Union[str, Sequence[str]] = "candidate") -> "pd.DataFrame":
    """How many (problem, candidate) pairs ended in each status, per ``by`` (default the
    candidate); one column per status in STATUSES order (zeros included), plus total."""
    import pandas as pd

    df = load_frame(df)
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
    Columns: run_id, problem, candidate, kind (the status, or "noisy"), detail; failures
    first."""
    import pandas as pd

    rows = []
    for _, r in load_frame(df).iterrows():
        kind, detail = _warning(r, noise)
        if kind:
            rows.append(dict(run_id=r["run_id"], problem=r["problem"], candidate=r["candidate"],
                             kind=kind, detail=detail))
    order = {k: i for i, k in enumerate(FAILURES + ("noisy",))}
    out = pd.DataFrame(rows, columns=["run_id", "problem", "candidate", "kind", "detail"])
    if len(out):
        out = out.iloc[sorted(range(len(out)), key=lambda i: order.get(out["kind"].iloc[i], -1))]
        out = out.reset_index(drop=True)
    return out


def _warning(r: "pd.Series", noise: float) -> tuple[Optional[str], str]:
    """(kind, detail) of a record worth a warning, else (None, "")."""
    status = r["status"]
    if status in FAILURES or status not in STATUSES:
        detail = str(r.get("message") or "")
        if status == Status.WRONG.value and finite(r.get("max_error")):
            tol = r.get("tolerance")
            error = f"max error {float(r['max_error']):.3g}" + (
                f" > tolerance {float(tol):.3g}" if finite(tol) else "")
            detail = error + (f"; {detail}" if detail else "")
        return status, detail
    if status == Status.OK.value and finite(r.get("iqr_s")) and finite(r.get("median_s")) \
            and float(r["median_s"]) > 0:
        rel = float(r["iqr_s"]) / float(r["median_s"])
        if rel > noise:
            n = str(int(r["n_samples"])) if finite(r.get("n_samples")) else "?"
            return "noisy", (f"IQR/median = {rel:.1%} (median {fmt_time(r['median_s'])}, "
                             f"{n} samples)")
    return None, ""


def to_csv(df: Runs, path: Union[str, os.PathLike]) -> Path:
    """Write a results table (or any table of this package) as CSV; tuples, lists and dicts
    become JSON text."""
    import pandas as pd

    from ..results import export

    out = Path(path)
    if out.suffix.lower() != ".csv":
        raise ConvbenchError(f"csv: {os.fspath(path)!r} must end in .csv")
    return export(df if isinstance(df, pd.DataFrame) else load_frame(df), out)
