"""The timer's logic: statistics, calibration, stopping, GC, device timers, cold cache.

Timing-dependent behaviour is tested with a virtual clock (the fake prepared advances it),
so nothing here asserts on how fast this machine is.
"""
from __future__ import annotations

import gc
import json
import math
import types

import numpy as np
import pytest

from convbench import timing
from convbench.errors import InvalidInputError
from convbench.timing import TimingResult, measure, median_ci, summarize, time_callable

scipy_stats = pytest.importorskip("scipy.stats", reason="scipy gives the independent binomial")


# ---- statistics ---------------------------------------------------------------------------
def coverage(n: int, j: int) -> float:
    """P(x_(j) <= median <= x_(n-j+1)) for a continuous distribution (scipy's binomial)."""
    return 1.0 - 2.0 * scipy_stats.binom.cdf(j - 1, n, 0.5)


@pytest.mark.parametrize("n", list(range(6, 120)) + [250, 500, 999, 1000])
def test_median_ci_rank_is_the_tightest_with_95pct_coverage(n):
    xs = list(range(n))  # order statistic k-1 at index k-1
    lo, hi = median_ci(xs)
    j = lo + 1
    assert hi == n - j                      # symmetric ranks
    assert coverage(n, j) >= 0.95
    assert coverage(n, j + 1) < 0.95        # one rank tighter would under-cover


@pytest.mark.parametrize("n", [1001, 2000, 5000, 10000])
def test_median_ci_large_n_normal_approximation_covers(n):
    lo, _ = median_ci(range(n))
    j = lo + 1
    assert coverage(n, j) >= 0.95
    assert coverage(n, j + 2) < 0.95        # at most one rank conservative


def test_median_ci_small_samples_fall_back_to_range():
    assert median_ci([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)
    assert median_ci([7.0]) == (7.0, 7.0)
    with pytest.raises(InvalidInputError, match="samples"):
        median_ci([])
    with pytest.raises(InvalidInputError, match="confidence"):
        median_ci([1.0, 2.0], confidence=1.5)


@pytest.mark.parametrize("n", [10, 31, 200])
def test_median_ci_empirical_coverage(n):
    rng = np.random.default_rng(1234 + n)
    true_median = math.log(2.0)             # exponential(1)
    trials = 2000
    hits = 0
    for _ in range(trials):
        lo, hi = median_ci(rng.exponential(1.0, n))
        hits += lo <= true_median <= hi
    lo0, _ = median_ci(range(n))
    expected = coverage(n, lo0 + 1)
    se = math.sqrt(expected * (1 - expected) / trials)
    assert abs(hits / trials - expected) < 4 * se + 1e-9


def test_summarize_matches_numpy():
    rng = np.random.default_rng(0)
    xs = rng.lognormal(0.0, 0.5, 101)
    s = summarize(xs)
    assert s["median_s"] == pytest.approx(np.median(xs))
    assert s["iqr_s"] == pytest.approx(np.percentile(xs, 75) - np.percentile(xs, 25))
    assert s["min_s"] == xs.min()
    assert s["mean_s"] == pytest.approx(xs.mean())
    assert s["stdev_s"] == pytest.approx(xs.std(ddof=1))
    assert s["ci_low_s"] <= s["median_s"] <= s["ci_high_s"]


# ---- a virtual clock -----------------------------------------------------------------------
class VirtualClock:
    def __init__(self) -> None:
        self.ns = 0
        self.events: list[str] = []

    def perf_counter_ns(self) -> int:
        self.events.append("clock")
        return self.ns


@pytest.fixture
def clock(monkeypatch):
    c = VirtualClock()
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter_ns=c.perf_counter_ns))
    return c


class FakePrepared:
    """run() advances the virtual clock by the next duration; counts calls and syncs."""

    def __init__(self, clock: VirtualClock, durations_s, device_timer=None) -> None:
        self.clock = clock
        self.durations = durations_s if callable(durations_s) else (lambda: durations_s)
        self.calls = 0
        self.syncs = 0
        self.gc_during_run: set[bool] = set()
        self._timer = device_timer
        self.info: dict = {}

    def run(self) -> None:
        self.calls += 1
        self.gc_during_run.add(gc.isenabled())
        self.clock.ns += int(round(self.durations() * 1e9))
        self.clock.events.append("run")

    def synchronize(self) -> None:
        self.syncs += 1
        self.clock.events.append("sync")

    def device_timer(self):
        return self._timer


def test_calibrates_loops_so_a_sample_lasts_min_sample_s(clock):
    p = FakePrepared(clock, 100e-6)          # 100 us per call
    r = measure(p, budget_s=10.0, min_samples=10)
    assert r.loops == 10                     # 10 x 100 us = 1 ms
    assert r.samples_s == [pytest.approx(100e-6)] * r.n_samples
    assert r.n_samples == 10 and r.converged  # zero spread: converges at min_samples
    assert r.median_s == pytest.approx(100e-6)
    # every call is accounted for: untimed ones + n_samples * loops
    assert p.calls == r.warmup_calls + r.n_samples * r.loops
    # warm-up: first call + at least 3 calls and 50 ms (here 500 calls of 100 us)
    assert r.warmup_calls >= 1 + 500
    assert r.timer == "perf_counter" and r.cold_cache is False


def test_slow_call_uses_one_loop_and_min_warmup_calls(clock):
    p = FakePrepared(clock, 0.2)             # 200 ms per call
    r = measure(p, budget_s=0.0, min_samples=4)
    assert r.loops == 1
    assert r.n_samples == 4                  # budget spent, min_samples still taken
    # first call + 3 warm-up calls (already past 50 ms); each is over 1 ms: no calibration sample
    assert r.warmup_calls == 1 + 3
    assert p.calls == r.warmup_calls + 4


def test_stop_above_ends_once_stop_after_samples_are_all_slower(clock):
    p = FakePrepared(clock, 0.2)
    r = measure(p, budget_s=10.0, min_samples=10, stop_above_s=0.1, stop_after=3)
    assert r.n_samples == 3 and r.median_s == pytest.approx(0.2) and not r.converged
    assert p.calls == 1 + 3 + 3
    p = FakePrepared(clock, 0.2)
    assert measure(p, budget_s=10.0, min_samples=10, stop_above_s=0.1, stop_after=1).n_samples == 1
    with pytest.raises(InvalidInputError, match="stop_after"):
        measure(p, stop_above_s=0.1, stop_after=0)


def test_stop_above_keeps_timing_a_candidate_that_is_fast_enough(clock):
    times = iter([0.2] * 4 + [0.05] + [0.2] * 100)   # warm-up, then a first sample under the bar
    p = FakePrepared(clock, lambda: next(times))
    r = measure(p, budget_s=0.0, min_samples=6, stop_above_s=0.1)
    assert r.n_samples == 6                  # a sample under 0.1 s: the minimum is taken
    with pytest.raises(InvalidInputError, match="stop_above_s"):
        measure(p, stop_above_s=0.0)


def test_stops_when_ci_within_rel_ci(clock):
    rng = np.random.default_rng(5)
    p = FakePrepared(clock, lambda: 1e-3 * rng.lognormal(0.0, 0.05))
    r = measure(p, budget_s=1e6, min_samples=10, rel_ci=0.01)
    assert r.converged
    assert r.n_samples > 10                  # noise needs more than the minimum
    lo, hi = median_ci(r.samples_s)
    assert lo >= r.median_s * 0.99 and hi <= r.median_s * 1.01
    # it stopped soon after converging: the CI was not yet within 1% a few % earlier
    early = r.samples_s[: int(r.n_samples * 0.9)]
    lo_e, hi_e = median_ci(early)
    med_e = float(np.median(early))
    assert not (lo_e >= med_e * 0.99 and hi_e <= med_e * 1.01)


def test_stops_on_budget_when_noise_is_large(clock):
    rng = np.random.default_rng(6)
    durations: list[float] = []

    def draw() -> float:
        durations.append(2e-3 * rng.lognormal(0.0, 1.0))
        return durations[-1]

    p = FakePrepared(clock, draw)
    r = measure(p, budget_s=0.1, min_samples=10, rel_ci=0.01)
    assert not r.converged
    assert r.n_samples >= 10
    assert r.total_s >= 0.1
    # every timed call is in the raw samples, outliers included (loops == 1 at 2 ms a call)
    assert r.loops == 1
    assert r.samples_s == pytest.approx(durations[-r.n_samples:], abs=1e-9)
    assert r.min_s == min(r.samples_s)


def test_max_samples_caps(clock):
    rng = np.random.default_rng(7)
    p = FakePrepared(clock, lambda: 1e-3 * rng.lognormal(0.0, 1.0))
    r = measure(p, budget_s=1e6, min_samples=10, max_samples=25)
    assert r.n_samples == 25


@pytest.mark.parametrize("per_call, loops", [(2e-3, 1), (400e-6, 3)])
def test_host_timer_syncs_inside_the_timed_region(clock, per_call, loops):
    p = FakePrepared(clock, per_call)
    r = measure(p, budget_s=0.0, min_samples=3)
    assert r.loops == loops
    pattern = ["clock"] + ["run"] * loops + ["sync", "clock"]
    ev = clock.events
    hits = sum(ev[i:i + len(pattern)] == pattern for i in range(len(ev)))
    assert hits >= r.n_samples               # one sync per sample, before the closing clock


class FakeDeviceTimer:
    """Reports 5 us per run() queued between start() and stop()."""

    def __init__(self, prepared_ref: list) -> None:
        self.ref = prepared_ref
        self.order: list[str] = []

    def start(self) -> None:
        self.order.append(f"start(syncs={self.ref[0].syncs})")
        self._calls0 = self.ref[0].calls

    def stop(self) -> float:
        self.order.append("stop")
        return (self.ref[0].calls - self._calls0) * 5e-6


def test_device_timer_path(clock):
    ref: list = []
    dt = FakeDeviceTimer(ref)
    p = FakePrepared(clock, 1e-3, device_timer=dt)   # host sees 1 ms, the device 5 us
    ref.append(p)
    r = measure(p, budget_s=0.0, min_samples=5)
    assert r.timer == "cuda_event"
    assert r.samples_s == [pytest.approx(5e-6)] * 5  # the device clock, not the host's
    # synchronize() ran before every start()
    starts = [o for o in dt.order if o.startswith("start")]
    assert len(starts) == dt.order.count("stop") >= r.n_samples
    syncs = [int(s.split("=")[1].rstrip(")")) for s in starts]
    assert all(b > a for a, b in zip(syncs, syncs[1:]))


def test_gc_disabled_while_timing_and_restored(clock):
    assert gc.isenabled()
    p = FakePrepared(clock, 1e-3)
    measure(p, budget_s=0.0, min_samples=3)
    assert p.gc_during_run == {False}
    assert gc.isenabled()
    gc.disable()
    try:
        measure(FakePrepared(clock, 1e-3), budget_s=0.0, min_samples=3)
        assert not gc.isenabled()             # a disabled GC stays disabled
    finally:
        gc.enable()


def test_gc_restored_after_exception(clock):
    calls = {"n": 0}

    def boom() -> float:
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("kernel failed")
        return 1e-3

    with pytest.raises(RuntimeError, match="kernel failed"):
        measure(FakePrepared(clock, boom), budget_s=1.0)
    assert gc.isenabled()


def test_cold_cache_flushes_before_each_sample(clock):
    p = FakePrepared(clock, 100e-6)
    flushes = []
    p.flush_device_cache = lambda: flushes.append(p.calls)
    r = measure(p, budget_s=0.0, min_samples=6, cold_cache=True, flush_bytes=1 << 20)
    assert r.cold_cache is True
    assert r.loops == 1                       # one call per sample, no calibration
    assert len(flushes) == r.n_samples == 6
    assert p.calls == r.warmup_calls + r.n_samples


def test_llc_detection_and_flush_size():
    llc = timing.last_level_cache_bytes()
    if llc is None:
        assert timing.default_flush_bytes() == 64 * 2**20
    else:
        assert llc > 0
        assert timing.default_flush_bytes() > llc


def test_time_callable_real_clock_counts_calls():
    n = {"calls": 0, "syncs": 0}

    def f() -> None:
        n["calls"] += 1

    def s() -> None:
        n["syncs"] += 1

    r = time_callable(f, sync=s, budget_s=0.05, min_samples=5, min_warmup_s=0.0)
    assert r.loops > 1                        # a trivial call needs many loops for 1 ms
    assert n["calls"] == r.warmup_calls + r.n_samples * r.loops
    assert n["syncs"] >= r.n_samples
    assert all(x > 0 for x in r.samples_s)


def test_to_dict_is_json():
    r = TimingResult(median_s=1.0, iqr_s=0.1, min_s=0.9, mean_s=1.0, stdev_s=0.1, ci_low_s=0.95,
                     ci_high_s=1.05, n_samples=3, loops=1, samples_s=[0.9, 1.0, 1.1])
    d = json.loads(json.dumps(r.to_dict()))
    assert d["samples_s"] == [0.9, 1.0, 1.1] and d["timer"] == "perf_counter"


@pytest.mark.parametrize("knob, value", [("min_samples", 0), ("max_samples", 3), ("rel_ci", 0),
                                         ("budget_s", -1), ("min_sample_s", -1.0)])
def test_invalid_knobs(knob, value):
    with pytest.raises(InvalidInputError, match=knob):
        time_callable(lambda: None, **{knob: value})
    with pytest.raises(InvalidInputError, match="fn"):
        time_callable(42)  # type: ignore[arg-type]


def test_min_time_keeps_sampling_although_the_interval_is_already_narrow():
    from convbench.timing import CallablePrepared, measure

    steady = CallablePrepared(lambda: None)
    quick = measure(steady, budget_s=1.0, min_samples=3, rel_ci=0.5, min_warmup_s=0.0,
                    min_sample_s=1e-4)
    spent = measure(steady, budget_s=1.0, min_samples=3, rel_ci=0.5, min_warmup_s=0.0,
                    min_sample_s=1e-4, min_time_s=0.05)
    # +-50%: it stops once converged, after a few samples (three on a quiet core; more when a
    # parallel test worker disturbs one), long before 40 ms of sampling
    assert quick.converged and sum(quick.samples_s) * quick.loops < 0.04
    assert spent.n_samples > quick.n_samples and sum(spent.samples_s) * spent.loops >= 0.04


# ---- between-round statistics: quartile spread and the repeat interval ----------------------
def test_round_quartile_spread_ignores_one_odd_round():
    from convbench.timing import round_quartile_spread

    steady = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.01, 0.99, 3.0]   # one disturbed round
    assert round_quartile_spread(steady) < 0.05
    assert round_quartile_spread([1.0, 2.0]) == pytest.approx(0.5 / 1.5)
    assert round_quartile_spread([1.0]) is None


def test_repeat_interval_holds_the_run_shift_and_the_rounds_scatter():
    import math

    from convbench.timing import RUN_SHIFT, repeat_interval

    assert repeat_interval([1.0]) is None
    lo, hi = repeat_interval([1.0] * 10)          # no scatter: the run-level shift alone
    assert lo == pytest.approx(math.exp(-RUN_SHIFT)) and hi == pytest.approx(math.exp(RUN_SHIFT))
    wide = repeat_interval([0.8, 1.2, 0.9, 1.1, 1.0, 0.85, 1.15, 0.95, 1.05, 1.0])
    assert wide[0] < lo and wide[1] > hi
    assert repeat_interval([0.8, 1.2, 0.9, 1.1]) == repeat_interval([0.8, 1.2, 0.9, 1.1])


def test_repeat_interval_covers_a_simulated_repeat_run():
    """Runs of 10 rounds whose round medians scatter (lognormal, sigma 5%) around a level that
    itself shifts between runs (sigma 1.5%, inside RUN_SHIFT's allowance): the interval of run
    A contains run B's median in at least 90% of pairs (95% nominal)."""
    import random
    import statistics

    from convbench.timing import repeat_interval

    rng = random.Random(3)

    def run():
        level = rng.gauss(0.0, 0.015)
        return [math.exp(level + rng.gauss(0.0, 0.05)) for _ in range(10)]

    hits = 0
    for _ in range(300):
        lo, hi = repeat_interval(run())
        hits += lo <= statistics.median(run()) <= hi
    assert hits / 300 >= 0.90


def test_a_records_repeat_bounds_hold_its_confidence_interval_and_its_rounds_spread():
    from convbench.timing import repeat_bounds, repeat_interval, round_quartile_spread

    scattered = [1.0, 1.3, 0.8, 1.2, 0.9, 1.25, 0.85, 1.1, 0.95, 1.0]
    lo, hi = repeat_bounds(scattered, 0.5, 2.0)               # a wide CI is kept
    assert (lo, hi) == (0.5, 2.0)
    lo, hi = repeat_bounds(scattered, 0.99, 1.01)
    plain = repeat_interval(scattered)                         # shift RUN_SHIFT only
    assert round_quartile_spread(scattered) > 0.2
    assert lo < plain[0] and hi > plain[1]                     # the spread widens the shift
    assert repeat_bounds([1.0], 0.9, 1.1) == (None, None)
    st = timing.summarize_rounds([[x] * 3 for x in scattered])
    assert st["repeat_low_s"] <= st["ci_low_s"] <= st["median_s"] <= st["ci_high_s"] <= st["repeat_high_s"]


def test_repeat_bounds_of_wildly_different_rounds_stay_finite():
    from convbench.timing import repeat_bounds

    # rounds of 18 us and 16 ms (a candidate that sometimes takes a slow path): IQR 850x median
    rounds = [1.88e-05, 1.92e-05, 1.84e-05, 0.01598, 0.01598, 0.01597, 1.9e-05, 1.9e-05]
    lo, hi = repeat_bounds(rounds, 1.8e-05, 0.016)
    assert 0 < lo <= 1.8e-05 and 0.016 <= hi < 10.0
