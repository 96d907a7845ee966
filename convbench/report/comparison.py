"""Run-to-run comparison: is run B faster, slower or the same as run A, per problem and
candidate, with a significance test on the raw samples."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..errors import ConvbenchError
from ..fmt import geomean as _gmean
from ..outcome import Status
from .formatting import finite
from .frame import Runs, load_frame

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

VERDICTS = ("faster", "slower", "same", "ambiguous")
#: verdict of rows that cannot be compared (not ok in both runs, or missing from one)
NOT_COMPARABLE = "n/a"
_COLUMNS = ["label", "status_a", "status_b", "median_a_s", "median_b_s", "ratio", "ci_low",
            "ci_high", "p_value", "n_a", "n_b", "verdict"]


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
    a, b = load_frame(run_a), load_frame(run_b)
    different, machines = _check_machines(a, b, allow_different_machines)
    key = ["problem", "spec_key", "candidate"] if "spec_key" in a and "spec_key" in b \
        else ["problem", "candidate"]
    a, b = _one_run(a, key, "run_a"), _one_run(b, key, "run_b")
    rng = np.random.default_rng(seed)
    test = dict(alpha=alpha, band=(1.0 / (1.0 + min_effect), 1.0 + min_effect), n_boot=n_boot,
                rng=rng)
    rows = [dict({k: r[k] for k in key}, **_compare_pair(r, **test))
            for _, r in _paired(a, b, key).iterrows()]
    out = pd.DataFrame(rows, columns=key + _COLUMNS)
    out.attrs.update(summarize_comparison(out))
    out.attrs.update(run_a=_run_names(a), run_b=_run_names(b), machines=machines,
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


def _check_machines(a: "pd.DataFrame", b: "pd.DataFrame", allow: bool) -> tuple[bool, tuple[str, str]]:
    """Whether A and B come from different machines (refused unless ``allow``), and a
    description of each side's machine."""
    ids_a, desc_a = _machines(a)
    ids_b, desc_b = _machines(b)
    if ids_a and ids_b:
        different = ids_a != ids_b
    else:  # no env_id: fall back to the CPU model
        cpu = [set(x["env_cpu_model"].dropna()) if "env_cpu_model" in x.columns else set()
               for x in (a, b)]
        different = bool(cpu[0] and cpu[1] and cpu[0] != cpu[1])
    if different and not allow:
        raise ConvbenchError(
            f"run A ({_run_names(a)}) was measured on {desc_a} and run B ({_run_names(b)}) on "
            f"{desc_b}: timings from different machines (or thread counts) say nothing about a "
            "regression. Pass "
            "allow_different_machines=True (shell: --allow-different-machines) to compare anyway.")
    return different, (desc_a, desc_b)


def _machines(df: "pd.DataFrame") -> tuple[set, str]:
    """The env_ids of a frame and a description naming them and their CPU/GPU models."""
    ids = set(df["env_id"].dropna()) if "env_id" in df.columns else set()
    keys = (["env_id"] if ids else []) + [c for c in ("env_cpu_model", "env_gpu_name", "env_threads")
                                          if c in df.columns]
    parts = []
    for _, r in (df[keys].drop_duplicates().iterrows() if keys else ()):
        bits = [f"env_id {r['env_id']}"] if ids else []
        if isinstance(r.get("env_cpu_model"), str):
            bits.append(f"CPU {r['env_cpu_model']!r}")
        if isinstance(r.get("env_gpu_name"), str):
            bits.append(f"GPU {r['env_gpu_name']!r}")
        if finite(r.get("env_threads")):
            bits.append(f"{int(r['env_threads'])} threads")
        if bits:
            parts.append(", ".join(bits))
    return ids, "; ".join(dict.fromkeys(parts)) or "unknown machine"


def _run_names(df: "pd.DataFrame") -> str:
    ids = [str(x) for x in dict.fromkeys(df["run_id"].dropna()) if str(x)]
    return ", ".join(ids) or "(unnamed run)"


def _one_run(x: "pd.DataFrame", key: list[str], side: str) -> "pd.DataFrame":
    """``x`` with one record per key (a resumed run's later record); refused when the side
    holds several runs."""
    x = x.drop_duplicates(key + ["run_id"], keep="last")
    dup = x.duplicated(key)
    if dup.any():
        r = x[dup].iloc[0]
        raise ConvbenchError(
            f"{side}: problem {r['problem']!r} / candidate {r['candidate']!r} appears more than "
            f"once (runs {_run_names(x)}); compare takes one run per side")
    return x


def _paired(a: "pd.DataFrame", b: "pd.DataFrame", key: list[str]) -> "pd.DataFrame":
    """A and B side by side (suffixes _a, _b), in A's order, then B's extra rows."""
    keep = key + [c for c in ("label", "status", "median_s", "samples_s", "n_samples", "threads")
                  if c in a.columns or c in b.columns]
    m = a.reindex(columns=keep).merge(b.reindex(columns=keep), on=key, how="outer",
                                      suffixes=("_a", "_b"), sort=False)
    first: dict[tuple, int] = {}
    for x in (a, b):
        for k in x[key].itertuples(index=False):
            first.setdefault(tuple(k), len(first))
    return m.iloc[sorted(range(len(m)), key=lambda i: first.get(tuple(m[key].iloc[i]), len(first)))]


def _compare_pair(r: "pd.Series", *, alpha: float, band: tuple[float, float], n_boot: int,
                  rng: Any) -> dict[str, Any]:
    """The comparison columns of one paired row (see :func:`compare` for the verdicts)."""
    nan = float("nan")
    sa, sb = r.get("status_a"), r.get("status_b")
    row: dict[str, Any] = dict(
        label=r["label_a"] if isinstance(r.get("label_a"), str) else r.get("label_b"),
        status_a=sa if isinstance(sa, str) else "absent",
        status_b=sb if isinstance(sb, str) else "absent",
        median_a_s=nan, median_b_s=nan, ratio=nan, ci_low=nan, ci_high=nan, p_value=nan,
        n_a=0, n_b=0, verdict=NOT_COMPARABLE)
    ok = Status.OK.value
    if not (sa == ok and sb == ok and finite(r.get("median_s_a")) and finite(r.get("median_s_b"))):
        return row
    xa, xb = _samples(r.get("samples_s_a")), _samples(r.get("samples_s_b"))
    ma, mb = float(r["median_s_a"]), float(r["median_s_b"])
    ratio = mb / ma
    row.update(median_a_s=ma, median_b_s=mb, ratio=ratio, n_a=len(xa), n_b=len(xb),
               verdict="ambiguous")
    if len(xa) >= 2 and len(xb) >= 2:
        p = _mannwhitney(xa, xb)
        lo, hi = _bootstrap_ratio(xa, xb, alpha, n_boot, rng)
        row.update(p_value=p, ci_low=lo, ci_high=hi)
        if p < alpha:
            row["verdict"] = "slower" if ratio >= band[1] else "faster" if ratio <= band[0] else "same"
        elif lo >= band[0] and hi <= band[1]:
            row["verdict"] = "same"
    return row


def _samples(value: Any) -> Any:
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
    lo, hi = np.quantile(mb / ma, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
