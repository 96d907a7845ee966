"""The timer: warm-up, loop calibration, adaptive stopping, statistics.

:func:`measure` times a :class:`~convbench.registry.Prepared` (its ``run()`` is one
convolution) following DESIGN.md "Measuring":

* the first call is discarded; warm-up is at least ``min_warmup_calls`` calls and
  ``min_warmup_s`` seconds;
* an inner loop count is calibrated so that one sample lasts at least ``min_sample_s``
  (on the device clock when there is one);
* samples are taken until the 95% confidence interval of the median lies within
  ``±rel_ci`` of the median (once ``min_samples`` are in) or the budget is spent
  (``min_samples`` are always taken);
* the garbage collector is off while timing and restored afterwards;
* host timing uses ``time.perf_counter_ns`` and calls ``prepared.synchronize()`` inside the
  timed region at the end of each sample; when ``prepared.device_timer()`` gives a
  :class:`~convbench.registry.DeviceTimer` (CUDA events) the device clock is used instead,
  started after ``synchronize()`` so earlier queued work is excluded;
* no sample is ever dropped: every per-call time is kept in ``samples_s``.

The confidence interval of the median is distribution-free (order statistics with
binomial coverage), so it does not assume normal timings.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import math
import os
import re
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

from .errors import InvalidInputError

DEFAULT_LLC_BYTES = 64 * 2**20
_MAX_LOOPS = 10**7


@dataclass
class TimingResult:
    """What one :func:`measure` call found; every time is seconds per call (one convolution)."""

    median_s: float
    iqr_s: float
    min_s: float
    mean_s: float
    stdev_s: float
    ci_low_s: float
    ci_high_s: float
    n_samples: int
    loops: int
    samples_s: list[float] = field(repr=False)
    timer: str = "perf_counter"
    cold_cache: bool = False
    converged: bool = False
    warmup_calls: int = 0
    total_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict with the field names above."""
        d = asdict(self)
        d["samples_s"] = [float(s) for s in self.samples_s]
        return d


# ---- statistics ---------------------------------------------------------------------------
def _normal_quantile(p: float) -> float:
    return statistics.NormalDist().inv_cdf(p)


@functools.lru_cache(maxsize=4096)
def _median_ci_rank(n: int, confidence: float) -> int:
    """The largest 1-based rank j (>= 1) with P(x_(j) <= median <= x_(n-j+1)) >= confidence.

    The coverage of [x_(j), x_(n-j+1)] is 1 - 2 P(B <= j-1), B ~ Binomial(n, 1/2).
    """
    alpha2 = (1.0 - confidence) / 2.0
    if n > 1000:
        # normal approximation of the binomial, accurate to a rank at these sizes
        z = _normal_quantile(1.0 - alpha2)
        j = int(math.floor(n / 2.0 - z * math.sqrt(n) / 2.0))
        return max(1, min(j, n // 2))
    log_half_n = n * math.log(0.5)
    lg_n1 = math.lgamma(n + 1)
    cdf = 0.0  # P(B <= i - 1) before adding term i
    j = 1
    for i in range(0, (n + 1) // 2):
        cdf += math.exp(lg_n1 - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n)
        if cdf > alpha2:  # cdf = P(B <= i): rank i + 1 would cover less than asked
            break
        j = i + 1
    return max(1, min(j, n // 2))


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median of ``samples``.

    Uses order statistics: [x_(j), x_(n-j+1)] where j is the largest rank whose binomial
    coverage is at least ``confidence`` (exact up to 1000 samples, normal approximation
    above). With too few samples for that coverage (n < 6 at 95%) the interval is
    [min, max], whose coverage 1 - 2**(1-n) is then below ``confidence``.
    """
    if not 0.0 < confidence < 1.0:
        raise InvalidInputError(f"confidence: {confidence!r} must be strictly between 0 and 1")
    xs = sorted(float(s) for s in samples)
    n = len(xs)
    if n == 0:
        raise InvalidInputError("samples: need at least one sample to compute a median interval")
    j = _median_ci_rank(n, confidence)
    return xs[j - 1], xs[n - j]


def _quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of sorted xs."""
    n = len(xs)
    if n == 1:
        return xs[0]
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples_s: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """median, IQR, min, mean, stdev and the median's confidence interval of per-call times."""
    xs = sorted(float(s) for s in samples_s)
    lo, hi = median_ci(xs, confidence)
    return {
        "median_s": statistics.median(xs),
        "iqr_s": _quantile(xs, 0.75) - _quantile(xs, 0.25),
        "min_s": xs[0],
        "mean_s": statistics.fmean(xs),
        "stdev_s": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "ci_low_s": lo,
        "ci_high_s": hi,
    }


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (scipy), the normal quantile for df = inf."""
    if not math.isfinite(df):
        return _normal_quantile(p)
    from scipy.stats import t

    return float(t.ppf(p, df))


def round_spread(round_medians_s: Sequence[float]) -> Optional[float]:
    """How far a median moved between rounds: slowest round median / fastest - 1 (None: < 2 rounds)."""
    ms = [float(m) for m in round_medians_s if m and m > 0]
    return max(ms) / min(ms) - 1.0 if len(ms) >= 2 else None


def round_quartile_spread(round_medians_s: Sequence[float]) -> Optional[float]:
    """Interquartile range of the round medians over their median (None: < 2 rounds): how
    much a typical round moved, which one disturbed round hardly changes."""
    ms = sorted(float(m) for m in round_medians_s if m and m > 0)
    if len(ms) < 2:
        return None
    return (_quantile(ms, 0.75) - _quantile(ms, 0.25)) / statistics.median(ms)


#: relative shift of a whole run against a repeat of it, beyond what its rounds show: the
#: 95th percentile of |log(median B / median A)| over unchanged rows of back-to-back A/A
#: pairs of `quick` sweeps (10 and 5 rounds, 2-vCPU Intel Xeon @ 2.60GHz guest, 2 threads)
#: was 2.4% and 2.8%; the repeat interval adds it in quadrature (log scale)
RUN_SHIFT = 0.03
#: bootstrap resamples behind the repeat interval (fixed seed: the same record, the same interval)
REPEAT_RESAMPLES = 2000


def repeat_interval(round_medians_s: Sequence[float], confidence: float = 0.95,
                    run_shift: float = RUN_SHIFT) -> Optional[tuple[float, float]]:
    """Where a repeat run's median of this candidate is expected to fall (``confidence``), or
    None with fewer than two rounds.

    Two things move it: which rounds a run happens to get (the bootstrap distribution of
    log(median of k resampled round medians / median of another k), k the number of rounds,
    a fixed seed) and the run-level shift of the machine between runs, which no run shows
    by itself (:data:`RUN_SHIFT`, measured, added in quadrature on the log scale). Unlike the
    median's confidence interval (``ci_low_s``..``ci_high_s``: where the true median of this
    run's conditions lies), this interval answers "would a rerun reproduce this number?"."""
    import numpy as np

    ms = np.log(np.asarray([float(m) for m in round_medians_s if m and m > 0]))
    if len(ms) < 2:
        return None
    rng = np.random.default_rng(0)
    k = len(ms)
    a = np.median(rng.choice(ms, (REPEAT_RESAMPLES, k)), axis=1)
    b = np.median(rng.choice(ms, (REPEAT_RESAMPLES, k)), axis=1)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(a - b, [tail, 1.0 - tail])
    shift = run_shift * _normal_quantile(1.0 - tail) / _normal_quantile(0.975)
    center = float(np.median(ms))
    return (math.exp(center - math.hypot(float(-lo), shift)),
            math.exp(center + math.hypot(float(hi), shift)))


def summarize_rounds(round_samples_s: Sequence[Sequence[float]],
                     confidence: float = 0.95) -> dict[str, Any]:
    """:func:`summarize` of several rounds: ``median_s`` is the median of the round medians
    (every round weighs the same, so a minority of disturbed rounds cannot move it, however
    many samples they hold), the interval reflects the rounds too, plus ``round_medians_s``
    ``round_spread``, ``round_quartile_spread`` and the :func:`repeat_interval` (``repeat_low_s``,
    ``repeat_high_s``; its run-level shift at least the round medians' quartile spread, and
    the interval at least the median's confidence interval). ``min_s``, ``iqr_s``, ``mean_s``
    and ``n_samples`` stay over the pooled samples.

    The interval is the wider of the pooled samples' order-statistics interval (within-round
    noise) and the order-statistics interval of the median of the round medians (between-round
    noise: drift from one window in time to the next; with five rounds their [min, max], 94%
    coverage), so one stable-looking window cannot make a drifting candidate look precise.
    Measured on a 2-vCPU Intel Xeon @ 2.60GHz guest (two back-to-back ``quick`` sweeps at
    budget 1 s): medians within 5% of the other run's went from 83% (pooled median) to 93%.
    """
    rounds = [[float(s) for s in r] for r in round_samples_s if r]
    if not rounds:
        raise InvalidInputError("round_samples_s: need at least one round with samples")
    stats: dict[str, Any] = summarize([s for r in rounds for s in r], confidence)
    medians = [statistics.median(r) for r in rounds]
    stats["round_medians_s"] = medians
    stats["round_spread"] = round_spread(medians)
    stats["round_quartile_spread"] = round_quartile_spread(medians)
    stats["repeat_low_s"] = stats["repeat_high_s"] = None
    if len(medians) >= 2:
        med = stats["median_s"] = statistics.median(medians)
        ordered = sorted(medians)
        j = _median_ci_rank(len(ordered), confidence)
        stats["ci_low_s"] = min(stats["ci_low_s"], ordered[j - 1], med)
        stats["ci_high_s"] = max(stats["ci_high_s"], ordered[len(ordered) - j], med)
        stats["repeat_low_s"], stats["repeat_high_s"] = repeat_bounds(
            medians, stats["ci_low_s"], stats["ci_high_s"], confidence)
    return stats


def repeat_bounds(round_medians_s: Sequence[float], ci_low_s: float, ci_high_s: float,
                  confidence: float = 0.95) -> tuple[Optional[float], Optional[float]]:
    """A record's repeat interval: :func:`repeat_interval` with a run-level shift of at least
    the round medians' quartile spread (a rerun moves at least as much as a typical round
    moved within this run), widened to contain the median's confidence interval (a rerun's
    median is never known better than this run's own). (None, None) with < 2 rounds."""
    spread = round_quartile_spread(round_medians_s) or 0.0
    # the spread is relative (IQR / median); the shift is on the log scale
    rep = repeat_interval(round_medians_s, confidence, run_shift=max(RUN_SHIFT, math.log1p(spread)))
    if rep is None:
        return None, None
    return min(rep[0], ci_low_s), max(rep[1], ci_high_s)


def _ci_within(xs_sorted: list[float], rel_ci: float) -> bool:
    med = statistics.median(xs_sorted)
    n = len(xs_sorted)
    j = _median_ci_rank(n, 0.95)
    lo, hi = xs_sorted[j - 1], xs_sorted[n - j]
    return med > 0 and lo >= med * (1.0 - rel_ci) and hi <= med * (1.0 + rel_ci)


# ---- cache flushing -----------------------------------------------------------------------
def _parse_size(text: str) -> Optional[int]:
    m = re.match(r"\s*([\d.]+)\s*([KMG]?)i?B?", text.strip(), re.IGNORECASE)
    if not m:
        return None
    mult = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[m.group(2).upper()]
    return int(float(m.group(1)) * mult)


_LLC_CACHE: Optional[int] = None


def last_level_cache_bytes() -> Optional[int]:
    """Size of the CPU's last-level cache in bytes (sysfs, then lscpu), or None if unknown."""
    global _LLC_CACHE
    if _LLC_CACHE is not None:
        return _LLC_CACHE or None
    best: tuple[int, int] = (-1, 0)
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            if not entry.startswith("index"):
                continue
            try:
                with open(os.path.join(base, entry, "level")) as f:
                    level = int(f.read().strip())
                with open(os.path.join(base, entry, "type")) as f:
                    kind = f.read().strip()
                with open(os.path.join(base, entry, "size")) as f:
                    size = _parse_size(f.read())
            except (OSError, ValueError):
                continue
            if kind == "Instruction" or not size:
                continue
            if level > best[0]:
                best = (level, size)
    except OSError:
        pass
    if best[1] <= 0:
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
            for level in ("L3", "L2"):
                m = re.search(rf"^{level} cache:\s*(.+)$", out, re.MULTILINE)
                if m:
                    # "36 MiB (1 instance)" or "36608K"
                    size = _parse_size(m.group(1).split("(")[0])
                    if size:
                        best = (int(level[1]), size)
                        break
        except (OSError, subprocess.SubprocessError):
            pass
    _LLC_CACHE = best[1] if best[1] > 0 else 0
    return _LLC_CACHE or None


def default_flush_bytes() -> int:
    """Bytes written between cold-cache samples: twice the LLC (at least 8 MiB), else 64 MiB."""
    llc = last_level_cache_bytes()
    if not llc:
        return DEFAULT_LLC_BYTES
    return max(2 * llc, 8 * 2**20)


class _CacheFlusher:
    """Evicts the CPU caches by reading and writing a buffer larger than the last-level cache."""

    def __init__(self, nbytes: int) -> None:
        import numpy as np

        self.nbytes = int(nbytes)
        self._buf = np.zeros(max(self.nbytes // 8, 1), dtype=np.int64)

    def __call__(self) -> None:
        self._buf += 1  # read + write every line


# ---- the timer ----------------------------------------------------------------------------
def _check_knobs(budget_s: float, min_samples: int, max_samples: int, rel_ci: float,
                 min_warmup_s: float, min_warmup_calls: int, min_sample_s: float) -> None:
    def bad(name: str, value: Any, rule: str) -> InvalidInputError:
        return InvalidInputError(f"{name}: {value!r} {rule}")

    if not (isinstance(budget_s, (int, float)) and budget_s >= 0 and math.isfinite(budget_s)):
        raise bad("budget_s", budget_s, "must be a finite number of seconds >= 0")
    if not isinstance(min_samples, int) or min_samples < 1:
        raise bad("min_samples", min_samples, "must be an integer >= 1")
    if not isinstance(max_samples, int) or max_samples < min_samples:
        raise bad("max_samples", max_samples, f"must be an integer >= min_samples ({min_samples})")
    if not (isinstance(rel_ci, (int, float)) and rel_ci > 0):
        raise bad("rel_ci", rel_ci, "must be > 0 (e.g. 0.01 for ±1%)")
    if not (isinstance(min_warmup_s, (int, float)) and min_warmup_s >= 0):
        raise bad("min_warmup_s", min_warmup_s, "must be >= 0")
    if not isinstance(min_warmup_calls, int) or min_warmup_calls < 0:
        raise bad("min_warmup_calls", min_warmup_calls, "must be an integer >= 0")
    if not (isinstance(min_sample_s, (int, float)) and min_sample_s >= 0):
        raise bad("min_sample_s", min_sample_s, "must be >= 0")


def measure(prepared: Any, *, budget_s: float = 2.0, min_samples: int = 10,
            max_samples: int = 10000, rel_ci: float = 0.01, min_warmup_s: float = 0.05,
            min_warmup_calls: int = 3, min_sample_s: float = 1e-3, cold_cache: bool = False,
            flush_bytes: Optional[int] = None, stop_above_s: Optional[float] = None,
            stop_after: int = 3, min_time_s: float = 0.0) -> TimingResult:
    """Time ``prepared.run()`` (one convolution per call) and return per-call statistics.

    ``budget_s`` bounds the whole measurement (warm-up included) except that
    ``min_samples`` samples are always taken. ``cold_cache=True`` writes through a buffer
    larger than the last-level cache (``flush_bytes``, default :func:`default_flush_bytes`)
    before each sample, outside the timed region, and times one call per sample; if the
    prepared object has a ``flush_device_cache()`` method (e.g. a GPU L2 flush) it is called
    too. ``warmup_calls`` in the result counts every untimed call: the discarded first call,
    the warm-up and the calibration samples.

    ``min_time_s``: seconds of sampling before the confidence-interval rule may stop it (a
    round of :mod:`convbench.rounds` spends its share of the budget, so its median covers a
    window of time rather than three back-to-back calls); the budget still ends it.

    ``stop_above_s`` (used by the ``race`` strategy): once ``stop_after`` samples are in, stop
    as soon as every sample so far is slower than this many seconds per call, even before
    ``min_samples`` - the caller only needs to know that the candidate is slower than that.
    ``converged`` is then False. (Not after one sample: right after the warm-up, the first
    samples of a multi-threaded call were measured up to 16x slow on the 2-core development
    machine, while the previous worker process's threads were still spin-waiting.)
    """
    _check_knobs(budget_s, min_samples, max_samples, rel_ci, min_warmup_s, min_warmup_calls,
                 min_sample_s)
    _check_stop(stop_above_s, stop_after)
    flush = _cache_flush(prepared, flush_bytes) if cold_cache else None
    clock = time.perf_counter_ns
    with _gc_off():
        t_begin = clock()
        dtimer = prepared.device_timer()
        sample = _sampler(prepared, dtimer, flush, clock)
        warmup_calls, per_call = _warm_up(prepared, min_warmup_calls, min_warmup_s, clock)
        loops, calibration_calls = _calibrate(sample, per_call, min_sample_s, cold_cache)
        samples, converged, stopped_above = _take_samples(
            sample, loops, deadline_ns=t_begin + budget_s * 1e9, clock=clock,
            ci_from_ns=clock() + min_time_s * 1e9,
            min_samples=min_samples, max_samples=max_samples, rel_ci=rel_ci,
            stop_above_s=stop_above_s, stop_after=stop_after)
        total_s = (clock() - t_begin) * 1e-9
    stats = summarize(samples)
    if not converged and not stopped_above:
        converged = _ci_within(sorted(samples), rel_ci)
    return TimingResult(n_samples=len(samples), loops=loops, samples_s=samples,
                        timer="cuda_event" if dtimer is not None else "perf_counter",
                        cold_cache=bool(cold_cache), converged=converged,
                        warmup_calls=warmup_calls + calibration_calls, total_s=total_s, **stats)


def _check_stop(stop_above_s: Optional[float], stop_after: int) -> None:
    if stop_above_s is not None and not (isinstance(stop_above_s, (int, float)) and stop_above_s > 0):
        raise InvalidInputError(f"stop_above_s: {stop_above_s!r} must be a number of seconds > 0 (or None)")
    if isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1:
        raise InvalidInputError(f"stop_after: {stop_after!r} must be an integer >= 1")


def _cache_flush(prepared: Any, flush_bytes: Optional[int]) -> Callable[[], None]:
    """What runs before each cold-cache sample: the CPU cache flush, then the device's."""
    nbytes = default_flush_bytes() if flush_bytes is None else flush_bytes
    if not isinstance(nbytes, int) or nbytes <= 0:
        raise InvalidInputError(f"flush_bytes: {flush_bytes!r} must be a positive integer")
    flusher = _CacheFlusher(nbytes)
    device_flush = getattr(prepared, "flush_device_cache", None)
    if device_flush is None:
        return flusher

    def flush() -> None:
        flusher()
        device_flush()
    return flush


@contextlib.contextmanager
def _gc_off() -> Iterator[None]:
    """The garbage collector off (after a collection), restored as it was afterwards."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _sampler(prepared: Any, dtimer: Any, flush: Optional[Callable[[], None]],
             clock: Callable[[], int]) -> Callable[[int], float]:
    """sample(loops): seconds for ``loops`` calls, synchronised inside the timed region (on the
    device clock when there is one, started after a synchronize)."""
    run, sync = prepared.run, prepared.synchronize

    def sample(loops: int) -> float:
        if flush is not None:
            flush()
        if dtimer is not None:
            sync()
            dtimer.start()
            for _ in range(loops):
                run()
            return float(dtimer.stop())
        t0 = clock()
        for _ in range(loops):
            run()
        sync()
        return (clock() - t0) * 1e-9
    return sample


def _warm_up(prepared: Any, min_calls: int, min_s: float, clock: Callable[[], int]) -> tuple[int, float]:
    """The discarded first call (lazy loading, autotuning, allocation), then at least
    ``min_calls`` calls and ``min_s`` seconds; returns (calls made, seconds per warm call)."""
    run, sync = prepared.run, prepared.synchronize
    run()
    sync()
    calls = 1
    w0 = clock()
    while calls - 1 < min_calls or (clock() - w0) * 1e-9 < min_s:
        run()
        sync()
        calls += 1
        if calls > 1_000_000:  # a no-op run(); enough
            break
    n_warm = calls - 1
    return calls, max((clock() - w0) * 1e-9 / max(n_warm, 1), 1e-9)


def _calibrate(sample: Callable[[int], float], per_call: float, min_sample_s: float,
               cold_cache: bool) -> tuple[int, int]:
    """(loops per sample so that one sample lasts >= min_sample_s, calls spent finding it).
    Cold cache, or a warm-up call already that long: one call per sample, no calibration."""
    if cold_cache or per_call >= min_sample_s:
        return 1, 0
    loops = min(_MAX_LOOPS, math.ceil(min_sample_s / per_call))
    calls = 0
    for _ in range(8):
        t = sample(loops)
        calls += loops
        if t >= min_sample_s or loops >= _MAX_LOOPS:
            break
        grow = min_sample_s / t * 1.2 if t > 0 else 10.0
        loops = min(_MAX_LOOPS, max(loops + 1, math.ceil(loops * grow)))
    return loops, calls


def _take_samples(sample: Callable[[int], float], loops: int, *, deadline_ns: float,
                  clock: Callable[[], int], min_samples: int, max_samples: int, rel_ci: float,
                  stop_above_s: Optional[float], stop_after: int,
                  ci_from_ns: float = 0.0) -> tuple[list[float], bool, bool]:
    """Per-call times until the stopping rule holds; (samples, converged, stopped above)."""
    samples: list[float] = []
    next_check = min_samples
    fastest = math.inf
    while True:
        t_call = sample(loops) / loops
        samples.append(t_call)
        fastest = min(fastest, t_call)
        n = len(samples)
        if n >= max_samples:
            return samples, False, False
        if stop_above_s is not None and n >= stop_after and fastest > stop_above_s:
            return samples, False, True
        if n >= next_check and clock() >= ci_from_ns:
            if _ci_within(sorted(samples), rel_ci):
                return samples, True, False
            # re-check every sample while few, then every ~3%: sorting each time is O(n log n)
            next_check = n + max(1, n // 32)
        if n >= min_samples and clock() >= deadline_ns:
            return samples, False, False


class CallablePrepared:
    """A plain callable as the part of the Prepared interface that :func:`measure` and
    verification use: ``run()`` calls ``fn()``, ``synchronize()`` calls ``sync``.

    With ``to_numpy``, ``run()`` keeps ``fn()``'s output and ``result()`` returns
    ``to_numpy(output)``; without it the output is dropped at once, as a timing loop should.
    """

    def __init__(self, fn: Callable[[], Any], sync: Optional[Callable[[], Any]] = None,
                 device_timer: Any = None, to_numpy: Optional[Callable[[Any], Any]] = None) -> None:
        if not callable(fn):
            raise InvalidInputError(f"fn: {fn!r} is not callable")
        if sync is not None and not callable(sync):
            raise InvalidInputError(f"sync: {sync!r} is not callable (or None)")
        self.run = fn if to_numpy is None else self._run_keeping_output
        self._fn = fn
        self._to_numpy = to_numpy
        self._output: Any = None
        self.synchronize = sync if sync is not None else _noop
        self._device_timer = device_timer
        self.info: dict = {}

    def _run_keeping_output(self) -> None:
        self._output = self._fn()

    def result(self) -> Any:
        if self._to_numpy is None:
            raise InvalidInputError("result(): this CallablePrepared was made without to_numpy")
        return self._to_numpy(self._output)

    def device_timer(self) -> Any:
        return self._device_timer

    def close(self) -> None:
        self._output = None


def _noop() -> None:
    return None


def time_callable(fn: Callable[[], Any], sync: Optional[Callable[[], Any]] = None,
                  **knobs: Any) -> TimingResult:
    """Time ``fn()`` with the same rules as :func:`measure` (same keyword knobs).

    ``sync`` is called at the end of each sample, inside the timed region (e.g.
    a CUDA synchronize), so asynchronous work is counted.
    """
    return measure(CallablePrepared(fn, sync), **knobs)


__all__ = ["TimingResult", "measure", "time_callable", "CallablePrepared", "median_ci",
           "summarize", "summarize_rounds", "round_spread", "round_quartile_spread", "repeat_interval", "repeat_bounds", "RUN_SHIFT", "t_quantile", "last_level_cache_bytes", "default_flush_bytes"]
