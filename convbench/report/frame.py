"""Loading results for the report functions, the rows they count, and the baseline."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from ..errors import ConvbenchError, ResultsError
from ..outcome import Status
from ..quant import rate_header

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: what the report functions take: run directories, globs, or the DataFrame of load_results
Runs = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], "pd.DataFrame"]

#: metric name -> (column, axis label, lower is better)
METRICS = {
    "time": ("median_s", "median time per call (s)", True),
    "gflops": ("gflops", "GFLOP/s", False),   # GOP/s for int8 problems: see rate_label
    "peak": ("peak_pct", "% of measured GEMM peak", False),   # int8: of the int8 roof
}


def load_frame(runs: Runs) -> "pd.DataFrame":
    """The results table of ``runs`` (anything :func:`convbench.load_results` accepts, or its
    DataFrame). Loaded from disk, rows follow each run's suite order, then candidate names."""
    import pandas as pd

    df = runs if isinstance(runs, pd.DataFrame) else _suite_ordered(runs)
    missing = [c for c in ("problem", "candidate", "status") if c not in df.columns]
    if missing:
        raise ResultsError(
            f"results table lacks column(s) {', '.join(missing)}; expected the DataFrame of "
            "convbench.load_results()")
    if "run_id" not in df.columns:
        df = df.assign(run_id="")
    return df


def _suite_ordered(runs: Runs) -> "pd.DataFrame":
    from ..results import load_results

    df = load_results(runs)
    order: dict[tuple[str, str], int] = {}
    for run_id, meta in load_metas(runs).items():
        for i, item in enumerate(meta.get("problem_list") or []):
            order.setdefault((run_id, str(item[0])), i)
    if not order or not len(df):
        return df
    runs_seen = list(dict.fromkeys(df["run_id"]))
    rank = [(runs_seen.index(r), order.get((str(r), str(p)), len(order)), str(c))
            for r, p, c in zip(df["run_id"], df["problem"], df["candidate"])]
    return df.iloc[sorted(range(len(df)), key=rank.__getitem__)].reset_index(drop=True)


def load_metas(runs: Runs) -> dict[str, dict[str, Any]]:
    """run_id -> meta.json of the runs behind ``runs`` ({} for a DataFrame; unreadable
    metadata is left out)."""
    import pandas as pd

    if isinstance(runs, pd.DataFrame):
        return {}
    from ..results import find_runs, read_meta

    out = {}
    for run in find_runs(runs):
        try:
            meta = read_meta(run)
        except ConvbenchError:
            continue
        out[str(meta.get("run_id") or run.name)] = meta
    return out


def metric_info(metric: str) -> tuple[str, str, bool]:
    """(column, axis label, lower is better) of a metric name of METRICS."""
    if metric not in METRICS:
        raise ConvbenchError(f"metric: {metric!r} is not supported; use one of {', '.join(METRICS)}")
    return METRICS[metric]


def frame_dtypes(df: "pd.DataFrame") -> list[str]:
    """The dtypes of the problems in a results frame (its ``spec_dtype`` column; a frame
    with a ``dtype`` column, such as :func:`convbench.report.winners`, gives that)."""
    col = "spec_dtype" if "spec_dtype" in df.columns else "dtype" if "dtype" in df.columns else None
    return [] if col is None else [str(d) for d in dict.fromkeys(df[col].dropna())]


def rate_label(df: "pd.DataFrame") -> str:
    """The unit of the rates of ``df``'s problems: "GFLOP/s", "GOP/s" (int8: integer
    operations) or "GFLOP/s (GOP/s for int8)" when both kinds are present."""
    return rate_header(frame_dtypes(df))


def metric_label(metric: str, df: Optional["pd.DataFrame"] = None) -> str:
    """The axis label of ``metric`` for the problems of ``df``: as :func:`metric_info`, with
    the rate unit of :func:`rate_label` for "gflops"."""
    label = metric_info(metric)[1]
    return rate_label(df) if metric == "gflops" and df is not None else label


def index_cols(df: "pd.DataFrame") -> list[str]:
    """Rows of per-problem tables: the problem, and the run when the frame holds several."""
    return ["run_id", "problem"] if df["run_id"].nunique(dropna=False) > 1 else ["problem"]


def problem_index(df: "pd.DataFrame", cols: list[str]) -> "pd.Index":
    """Every problem in the frame, in order of first appearance."""
    import pandas as pd

    keys = df[cols].drop_duplicates()
    if len(cols) == 1:
        return pd.Index(keys[cols[0]].tolist(), name=cols[0])
    return pd.MultiIndex.from_frame(keys)


def ok_rows(df: "pd.DataFrame") -> "pd.DataFrame":
    """The rows with status ok and a positive median time."""
    import pandas as pd

    ok = df[df["status"] == Status.OK.value]
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


#: why :func:`default_baseline` picks its candidate, for captions and footnotes
DEFAULT_BASELINE_RULE = "the candidate ok on the most problems (ties: the first by name)"


def default_baseline(df: Runs) -> Optional[str]:
    """The candidate that is ok on the most problems (ties: the first in alphabetical order):
    the one every other can be compared with most often."""
    ok = ok_rows(load_frame(df))
    if ok.empty:
        return None
    counts = ok.groupby("candidate")[index_cols(ok)].apply(lambda g: len(g.drop_duplicates()))
    best = counts.max()
    return sorted(c for c, n in counts.items() if n == best)[0]
