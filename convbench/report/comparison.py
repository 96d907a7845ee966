"""Run-to-run comparison: is run B faster, slower or the same as run A, per problem and
candidate, judged by each run's between-round variation and a minimum effect.

Samples within one run are not independent evidence about another run: a machine that drifts
between minutes makes two runs of unchanged code differ by more than their within-run
samples suggest (a Mann-Whitney test on the samples called 45 of 92 rows of an A/A pair
faster or slower). The unit of evidence is therefore the round: each record's
``round_medians_s`` (interleaved rounds, :mod:`convbench.rounds`), or, for records without
rounds, the medians of ``PSEUDO_ROUNDS`` consecutive blocks of its samples."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..errors import ConvbenchError
from ..fmt import geomean as _gmean
from ..outcome import Status
from ..selection import DEFAULT_MIN_EFFECT
from .formatting import finite
from .frame import Runs, load_frame

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

VERDICTS = ("faster", "slower", "same", "ambiguous")
#: verdict of rows that cannot be compared (not ok in both runs, or missing from one)
NOT_COMPARABLE = "n/a"
_COLUMNS = ["label", "status_a", "status_b", "median_a_s", "median_b_s", "ratio", "ci_low",
            "ci_high", "p_value", "n_a", "n_b", "rounds_a", "rounds_b", "noise_a", "noise_b",
            "verdict"]
#: blocks of consecutive samples that stand in for rounds in records measured without rounds
PSEUDO_ROUNDS = 5
#: noise flags that say the machine itself was disturbed while a record was timed: a row with
#: one of them on either side gets no faster/slower verdict (at most "same" or "ambiguous")
MACHINE_FLAGS = ("steal", "busy", "throttle", "freq")
#: share of a run's records with a MACHINE_FLAGS flag above which compare warns about the run
NOISY_RUN_SHARE = 0.1
#: paired records with a machine-speed canary needed before its median ratio counts
CANARY_MIN_PAIRS = 3


def compare(run_a: Runs, run_b: Runs, *, min_effect: float = DEFAULT_MIN_EFFECT,
            alpha: float = 0.05, allow_different_machines: bool = False) -> "pd.DataFrame":
    """Run B against run A, per problem and candidate.

    ratio = median time in B / median time in A (> 1: B is slower; each median is the median of
    its record's round medians). Its (1 - alpha) interval comes from the two runs'
    between-round variation: the Hodges-Lehmann interval of the shift between the runs' log
    round medians (distribution-free: one disturbed round cannot stretch it the way it stretches
    a t interval; :data:`PSEUDO_ROUNDS` blocks of samples stand in for rounds in records without
    them); ``p_value`` is the exact Mann-Whitney test's on the round medians. With the band
    ``1/(1+min_effect) .. 1+min_effect`` (default :data:`~convbench.selection.DEFAULT_MIN_EFFECT`,
    provisional until calibrated with A/A runs):

    - "slower" / "faster": the interval excludes 1 (p < alpha) and the ratio lies outside
      the band;
    - "same": the whole interval lies inside the band;
    - "ambiguous": anything else (too noisy, or too few rounds, to tell), and any faster/slower
      call on a row whose record on either side carries a :data:`MACHINE_FLAGS` noise flag
      (the machine was disturbed while it was timed: an A/A pair on a 2-vCPU Intel Xeon guest
      under hypervisor steal of up to 45% was 9% slower as a whole, and 61 of its 138 rows
      were called slower before this rule, 40 after it), and every faster/slower call when
      more than :data:`NOISY_RUN_SHARE` of either run's records carry such a flag (the rows
      without one were slowed too: the remaining 40 above; on a later A/A pair of `quick`
      sweeps under steal of up to 72%, the 2 rows called faster), and every faster/slower
      call when the machine-speed canary moved by more than ``min_effect`` between the runs
      (:func:`_canary_notes`; a `quick` A/A pair with run A at half speed and no other flag
      had 22 of 29 rows called faster, the canary 0.565x as long in B; a `resnet50` pair,
      1.125x; both with the pure-Python canary used before session 9), or moved by more than
      that on over :data:`NOISY_RUN_SHARE` of the records (not applied to runs of different
      machines, nor to runs that timed different canary workloads: a note says so);
    - "n/a": not ok in both runs, or measured in one run only.

    ``noise_a``/``noise_b`` are the records' noise flags (:mod:`convbench.noise`). The frame's
    ``attrs`` hold "geomean_ratio" (geometric mean of the ratios), "counts" (verdict -> rows),
    "run_a"/"run_b" (run ids), "machines", "disturbed" (the run-level rule above applied) and
    "notes" (why, when there is something to say). Refuses (ConvbenchError) to compare runs from
    different machines (env_id, or CPU model when env_id is absent) unless
    ``allow_different_machines``.
    """
    import pandas as pd

    if not (isinstance(min_effect, (int, float)) and 0 <= min_effect < 1):
        raise ConvbenchError(f"min_effect: {min_effect!r} must be a fraction in [0, 1), e.g. 0.05")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ConvbenchError(f"alpha: {alpha!r} must be in (0, 1), e.g. 0.05")
    a, b = load_frame(run_a), load_frame(run_b)
    different, machines = _check_machines(a, b, allow_different_machines)
    key = ["problem", "spec_key", "candidate"] if "spec_key" in a and "spec_key" in b \
        else ["problem", "candidate"]
    a, b = _one_run(a, key, "run_a"), _one_run(b, key, "run_b")
    test = dict(alpha=alpha, band=(1.0 / (1.0 + min_effect), 1.0 + min_effect))
    rows = [dict({k: r[k] for k in key}, **_compare_pair(r, **test))
            for _, r in _paired(a, b, key).iterrows()]
    out = pd.DataFrame(rows, columns=key + _COLUMNS)
    notes = _noisy_run_notes(a, "A") + _noisy_run_notes(b, "B")
    said: list[str] = []   # notes that withhold nothing
    if not different:   # across machines, a speed difference is what is being compared
        withhold, said = _canary_notes(a, b, key, min_effect)
        notes += withhold
    if notes:   # a disturbed run: its unflagged rows were slowed too, so no row gets a verdict
        out.loc[out["verdict"].isin(["faster", "slower"]), "verdict"] = "ambiguous"
    out.attrs.update(summarize_comparison(out))
    out.attrs.update(run_a=_run_names(a), run_b=_run_names(b), machines=machines,
                     different_machines=bool(different), min_effect=min_effect, alpha=alpha,
                     disturbed=bool(notes))
    notes = notes + said
    threads = [set(x["threads"].dropna()) if "threads" in x.columns else set() for x in (a, b)]
    if threads[0] and threads[1] and threads[0] != threads[1]:
        notes.append(f"thread counts differ: A {sorted(threads[0])}, B {sorted(threads[1])}")
    if notes:
        out.attrs["notes"] = notes
    return out


def _noisy_run_notes(x: "pd.DataFrame", side: str) -> list[str]:
    """A warning when many of a run's ok records were timed on a disturbed machine."""
    ok = x[x["status"] == Status.OK.value] if "status" in x.columns else x
    if "noise" not in ok.columns or not len(ok):
        return []
    hit = ok["noise"].map(lambda v: bool(set(_flag_list(v)) & set(MACHINE_FLAGS)))
    if hit.mean() <= NOISY_RUN_SHARE:
        return []
    return [f"run {side}: {int(hit.sum())} of {len(ok)} records were timed while the machine was "
            f"disturbed ({', '.join(MACHINE_FLAGS)} flags), so the rest of the run may have been "
            "slowed too: no row of this comparison gets a faster/slower verdict; rerun on a "
            "quiet machine (`convbench doctor`)"]


def _canary_notes(a: "pd.DataFrame", b: "pd.DataFrame", key: list,
                  min_effect: float) -> tuple[list[str], list[str]]:
    """A note when the machine-speed canary (``info["canary_s"]``, convbench.noise.canary_s)
    of the paired records (at least :data:`CANARY_MIN_PAIRS`) moved by more than
    ``min_effect`` between the runs: as a whole (the median ratio), or on more than
    :data:`NOISY_RUN_SHARE` of the records (the machine's speed changed while they were timed;
    on a `quick` A/A pair whose canary medians agreed within 2% its per-record ratios ran
    0.54-1.58, rank-correlated 0.84 with the medians' ratios, and 6 of 29 rows were called
    different; those figures were measured with the pure-Python canary used before session 9).
    Either way the comparison is disturbed and gives no faster/slower verdict (see
    ``compare``): the first list of the result. Only canaries of one workload
    (``info["canary"]``, :data:`convbench.noise.CANARY`; records without it timed
    :data:`~convbench.noise.CANARY_LEGACY`) are set side by side; when the runs timed different
    ones, the second list says so and the rule is not applied."""
    import statistics

    from ..noise import CANARY_LEGACY

    def canaries(x: "pd.DataFrame") -> dict:
        if "info" not in x.columns:
            return {}
        out = {}
        for _, r in x.iterrows():
            info = r["info"] if isinstance(r["info"], dict) else {}
            c = info.get("canary_s")
            if isinstance(c, (int, float)) and math.isfinite(c) and c > 0:
                out[tuple(r[k] for k in key)] = (str(info.get("canary") or CANARY_LEGACY), float(c))
        return out

    ca, cb = canaries(a), canaries(b)
    both = [k for k in ca if k in cb]
    ratios = [cb[k][1] / ca[k][1] for k in both if ca[k][0] == cb[k][0]]
    if len(ratios) < CANARY_MIN_PAIRS:
        kinds = sorted({ca[k][0] for k in both}), sorted({cb[k][0] for k in both})
        if len(both) >= CANARY_MIN_PAIRS and kinds[0] != kinds[1]:
            return [], [f"the runs timed different machine-speed canaries (A: {', '.join(kinds[0])}; "
                        f"B: {', '.join(kinds[1])}), so whether the machine's own speed moved "
                        "between them is not checked"]
        return [], []
    band = (1.0 / (1.0 + min_effect), 1.0 + min_effect)
    r = statistics.median(ratios)
    moved = sum(not band[0] <= x <= band[1] for x in ratios)
    then = ("so no row of this comparison gets a faster/slower verdict (it would describe the "
            "machine, not the code); rerun both on a quiet machine (`convbench doctor`)")
    if not band[0] <= r <= band[1]:
        return [f"the machine-speed canary took {r:.2f}x as long in run B as in run A (median over "
                f"{len(ratios)} records): the machine itself ran at another speed, {then}"], []
    if moved > NOISY_RUN_SHARE * len(ratios):
        return [f"the machine-speed canary moved by more than {min_effect:.0%} between the runs on "
                f"{moved} of {len(ratios)} records (range {min(ratios):.2f}-{max(ratios):.2f}x): "
                f"the machine's speed changed while they were timed, {then}"], []
    return [], []


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
    keep = key + [c for c in ("label", "status", "median_s", "samples_s", "round_medians_s",
                              "noise", "n_samples", "threads")
                  if c in a.columns or c in b.columns]
    m = a.reindex(columns=keep).merge(b.reindex(columns=keep), on=key, how="outer",
                                      suffixes=("_a", "_b"), sort=False)
    first: dict[tuple, int] = {}
    for x in (a, b):
        for k in x[key].itertuples(index=False):
            first.setdefault(tuple(k), len(first))
    return m.iloc[sorted(range(len(m)), key=lambda i: first.get(tuple(m[key].iloc[i]), len(first)))]


def _compare_pair(r: "pd.Series", *, alpha: float, band: tuple[float, float]) -> dict[str, Any]:
    """The comparison columns of one paired row (see :func:`compare` for the verdicts)."""
    nan = float("nan")
    sa, sb = r.get("status_a"), r.get("status_b")
    row: dict[str, Any] = dict(
        label=r["label_a"] if isinstance(r.get("label_a"), str) else r.get("label_b"),
        status_a=sa if isinstance(sa, str) else "absent",
        status_b=sb if isinstance(sb, str) else "absent",
        median_a_s=nan, median_b_s=nan, ratio=nan, ci_low=nan, ci_high=nan, p_value=nan,
        n_a=0, n_b=0, rounds_a=0, rounds_b=0, noise_a=_flags(r.get("noise_a")),
        noise_b=_flags(r.get("noise_b")), verdict=NOT_COMPARABLE)
    ok = Status.OK.value
    if not (sa == ok and sb == ok and finite(r.get("median_s_a")) and finite(r.get("median_s_b"))):
        return row
    ma, mb = float(r["median_s_a"]), float(r["median_s_b"])
    la = _log_rounds(r.get("round_medians_s_a"), r.get("samples_s_a"))
    lb = _log_rounds(r.get("round_medians_s_b"), r.get("samples_s_b"))
    row.update(median_a_s=ma, median_b_s=mb, ratio=mb / ma, n_a=len(_values(r.get("samples_s_a"))),
               n_b=len(_values(r.get("samples_s_b"))), rounds_a=len(la), rounds_b=len(lb),
               verdict="ambiguous")
    if len(la) >= 2 and len(lb) >= 2:
        lo, hi, p = _ratio_interval(la, lb, mb / ma, alpha)
        row.update(ci_low=lo, ci_high=hi, p_value=p)
        row["verdict"] = verdict(mb / ma, lo, hi, band)
        disturbed = set(_flag_list(r.get("noise_a"))) | set(_flag_list(r.get("noise_b")))
        if row["verdict"] in ("faster", "slower") and disturbed & set(MACHINE_FLAGS):
            row["verdict"] = "ambiguous"
    return row


def verdict(ratio: float, lo: float, hi: float, band: tuple[float, float]) -> str:
    """faster / slower / same / ambiguous for a ratio B/A, its interval [lo, hi] and the band
    of the minimum effect (see :func:`compare`)."""
    if lo > 1.0 and ratio >= band[1]:
        return "slower"
    if hi < 1.0 and ratio <= band[0]:
        return "faster"
    if lo >= band[0] and hi <= band[1]:
        return "same"
    return "ambiguous"


def _flag_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return [str(v) for v in list(value)]
    return []


def _flags(value: Any) -> str:
    return ",".join(_flag_list(value))


def _values(value: Any) -> list[float]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return [float(v) for v in list(value) if v is not None and math.isfinite(float(v))]


def _log_rounds(round_medians: Any, samples: Any) -> list[float]:
    """Log round medians; without rounds, log medians of PSEUDO_ROUNDS consecutive blocks."""
    import statistics

    meds = [m for m in _values(round_medians) if m > 0]
    if len(meds) < 2:
        xs = [x for x in _values(samples) if x > 0]
        k = min(PSEUDO_ROUNDS, len(xs))
        meds = [statistics.median(xs[i * len(xs) // k:(i + 1) * len(xs) // k]) for i in range(k)]
    return [math.log(m) for m in meds]


def _ratio_interval(la: list[float], lb: list[float], ratio: float,
                    alpha: float) -> tuple[float, float, float]:
    """(low, high) of the ratio's (1 - alpha) Hodges-Lehmann interval (the distribution-free
    interval of the shift between the two runs' log round medians, from the Mann-Whitney
    null distribution), widened to contain ``ratio``, and the exact two-sided Mann-Whitney
    p-value. Too few rounds for that confidence (e.g. 3 against 3 at alpha 0.05): (0, inf)."""
    from scipy.stats import mannwhitneyu

    diffs = sorted(b - a for a in la for b in lb)
    k = _mwu_critical(len(la), len(lb), alpha) + 1   # 1-based rank of the lower end
    p = float(mannwhitneyu(lb, la, alternative="two-sided", method="exact").pvalue) \
        if len(la) * len(lb) <= MAX_EXACT_PAIRS else \
        float(mannwhitneyu(lb, la, alternative="two-sided").pvalue)
    if k < 1:
        return 0.0, math.inf, p
    lo, hi = math.exp(diffs[k - 1]), math.exp(diffs[len(diffs) - k])
    return min(lo, ratio), max(hi, ratio), p


#: beyond this many round pairs the Mann-Whitney null distribution is taken as normal
MAX_EXACT_PAIRS = 400


def _mwu_critical(n: int, m: int, alpha: float) -> int:
    """The largest u with P(U <= u) <= alpha / 2 under the null (U: Mann-Whitney statistic of
    samples of sizes n and m without ties); -1 when even u = 0 is more likely than that."""
    if n * m > MAX_EXACT_PAIRS:
        from scipy.stats import norm

        mu, sd = n * m / 2.0, math.sqrt(n * m * (n + m + 1) / 12.0)
        return int(math.floor(mu + sd * float(norm.ppf(alpha / 2)) - 0.5))
    # counts[u]: arrangements of n and m ranks with statistic u (recurrence over the largest rank)
    table = {(0, j): [1] for j in range(m + 1)}
    table.update({(i, 0): [1] for i in range(n + 1)})
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            a, b = table[(i - 1, j)], table[(i, j - 1)]   # largest rank in the first / second sample
            row = [0] * (i * j + 1)
            for u, c in enumerate(a):
                row[u + j] += c
            for u, c in enumerate(b):
                row[u] += c
            table[(i, j)] = row
    counts = table[(n, m)]
    total, cum, crit = sum(counts), 0, -1
    for u, c in enumerate(counts):
        cum += c
        if cum / total > alpha / 2:
            break
        crit = u
    return crit
