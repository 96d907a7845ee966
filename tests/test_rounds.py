"""Interleaved rounds: budget split, shuffled orders, per-round samples kept, intervals that
show between-round drift, failures in a later round, and the record schema they produce."""
from __future__ import annotations

import math
import random
import re
import statistics

import pytest

from convbench.errors import ConvbenchError
from convbench.outcome import RECORD_FIELDS
from convbench.rounds import Rounds, merge_rounds, round_order, run_rounds
from convbench.strategies import measure_candidates
from convbench.rounds import DEFAULT_ROUNDS, ROUND_WARMUP_S
from convbench.timing import summarize, summarize_rounds

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class Cand:
    def __init__(self, name: str, backend: str) -> None:
        self.name, self.backend = name, backend

    def __repr__(self) -> str:
        return self.name


def fake_runner(speeds, calls, *, drift=None, fail=None):
    """run_round that records each call; drift(name, round) scales a round's samples."""
    rng = random.Random(1)

    def run_round(cand, p):
        calls.append((cand.name, p))
        if fail and fail.get(cand.name) == p.round:
            return {"status": "crashed", "message": "boom", "info": {}}
        scale = drift(cand.name, p.round) if drift else 1.0
        xs = [speeds[cand.name] * scale * (1 + 0.005 * rng.random()) for _ in range(p.min_samples)]
        return {"status": "ok", "message": None, "samples_s": xs, "loops": 1, "converged": True,
                "warmup_calls": 3, "total_s": sum(xs), "wall_s": sum(xs) + 0.01,
                "max_error": 1e-7 if p.verify else None, "tolerance": 1e-4 if p.verify else None,
                "start_time": f"2025-01-01T00:00:0{p.round}.000Z",
                "end_time": f"2025-01-01T00:00:0{p.round}.500Z",
                "info": {"worker_family": cand.backend, "cpu_steal_pct": 0.0}, **summarize(xs)}
    return run_round


def test_rounds_split_the_budget_and_the_samples():
    p = Rounds(count=5, min_samples=3).params(1, budget_s=1.0, min_samples=10, max_samples=1000,
                                               rel_ci=0.01, verify=True)
    # a fifth of the budget to sample in, which the CI rule may not cut short, plus the warm-up
    assert p.min_time_s == pytest.approx(0.2) and p.budget_s == pytest.approx(0.2 + ROUND_WARMUP_S)
    assert p.min_samples == 3 and p.max_samples == 200
    p = Rounds(count=2).params(2, budget_s=1.0, min_samples=10, max_samples=10000, rel_ci=0.01,
                               verify=False)
    assert p.min_samples == 5 and not p.verify
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConvbenchError, match="rounds"):
            Rounds(count=bad)


def test_every_round_is_a_new_shuffled_order_grouped_by_family():
    cands = [Cand(f"{f}{i}", f) for f in "abc" for i in range(3)]
    calls: list = []
    run_rounds(cands, fake_runner({c.name: 1e-3 for c in cands}, calls), budget_s=1.0,
               min_samples=10, max_samples=100, rel_ci=0.01, rounds=Rounds(count=4),
               rng=random.Random(0))
    orders = [[n for n, p in calls if p.round == r] for r in range(1, 5)]
    assert all(sorted(o) == sorted(c.name for c in cands) for o in orders)
    assert len({tuple(o) for o in orders}) > 1                    # shuffled anew
    for o in orders:                                             # one block per family
        fams = [n[0] for n in o]
        assert sum(1 for i in range(1, len(fams)) if fams[i] != fams[i - 1]) == 2
    for prev, nxt in zip(orders, orders[1:]):                    # no switch between rounds
        assert prev[-1][0] == nxt[0][0]
    assert [p.verify for n, p in calls if n == "a0"] == [True, False, False, False]
    # round_order is deterministic for a seed (A/A runs use the same orders)
    fam = {i: "x" if i % 2 else "y" for i in range(6)}
    assert round_order(range(6), fam, random.Random(3)) == round_order(range(6), fam, random.Random(3))


def test_merged_record_keeps_rounds_and_pools_the_samples():
    cands = [Cand("fast", "a"), Cand("slow", "b")]
    calls: list = []
    out = dict(measure_candidates(cands, fake_runner({"fast": 1e-3, "slow": 3e-3}, calls),
                                  budget_s=1.0, min_samples=10, rounds=Rounds(count=5)))
    o = out[cands[0]]
    assert o["status"] == "ok" and len(o["round_samples_s"]) == len(o["round_medians_s"]) == 5
    assert o["samples_s"] == [s for r in o["round_samples_s"] for s in r]
    assert o["n_samples"] == 15 and o["median_s"] == statistics.median(o["round_medians_s"])
    assert o["round_medians_s"] == [statistics.median(r) for r in o["round_samples_s"]]
    assert o["ci_low_s"] <= o["median_s"] <= o["ci_high_s"]
    assert o["max_error"] == 1e-7 and o["tolerance"] == 1e-4       # from the verifying round
    assert o["start_time"] == "2025-01-01T00:00:01.000Z" and o["end_time"].startswith("2025-01-01T00:00:05")
    assert o["wall_s"] == pytest.approx(sum(o["samples_s"]) + 5 * 0.01)   # every round's time
    assert [r["round"] for r in o["info"]["rounds"]] == [1, 2, 3, 4, 5]
    assert o["noise"] == [] and o["round_spread"] < 0.01
    assert len(calls) == 10


def test_between_round_drift_widens_the_interval_and_is_flagged():
    cands = [Cand("steady", "a"), Cand("drifting", "a")]
    drift = lambda name, rnd: 1.0 + (0.08 * rnd if name == "drifting" else 0.0)  # noqa: E731
    out = dict(measure_candidates(cands, fake_runner({"steady": 1e-3, "drifting": 1e-3}, [],
                                                     drift=drift), budget_s=1.0, min_samples=15))
    d = out[cands[1]]
    pooled = summarize(d["samples_s"])
    assert d["ci_high_s"] > pooled["ci_high_s"] and d["ci_low_s"] < pooled["ci_low_s"]
    assert d["round_spread"] == pytest.approx(max(d["round_medians_s"]) / min(d["round_medians_s"]) - 1)
    assert "drift" in d["noise"] and "drift" not in out[cands[0]]["noise"]


def test_disturbed_rounds_cannot_move_the_median_however_many_samples_they_hold():
    quiet = [1.0, 1.01, 0.99]
    slow = [1.6] * 40                           # two rounds of five, each with many samples
    st = summarize_rounds([quiet, slow, quiet, slow, quiet])
    assert st["median_s"] == 1.0                # the pooled median would be 1.6
    assert statistics.median([x for r in [quiet, slow, quiet, slow, quiet] for x in r]) == 1.6
    assert st["ci_low_s"] <= 1.0 and st["ci_high_s"] >= 1.6    # [min, max] of five round medians
    assert st["min_s"] == 0.99                                  # pooled


def test_summarize_rounds_is_the_pooled_summary_when_rounds_agree():
    rounds = [[1.0, 1.1, 0.9, 1.0]] * 3
    st = summarize_rounds(rounds)
    pooled = summarize([x for r in rounds for x in r])
    assert st["ci_low_s"] == pooled["ci_low_s"] and st["ci_high_s"] == pooled["ci_high_s"]
    assert st["round_spread"] == 0.0 and st["round_medians_s"] == [1.0] * 3
    one = summarize_rounds([[1.0, 2.0, 3.0]])
    assert one["round_spread"] is None and one["median_s"] == 2.0
    with pytest.raises(ConvbenchError):
        summarize_rounds([])


def test_a_failure_in_a_later_round_ends_the_candidate_with_that_failure():
    cands = [Cand("good", "a"), Cand("flaky", "a")]
    calls: list = []
    out = dict(measure_candidates(cands, fake_runner({"good": 1e-3, "flaky": 1e-3}, calls,
                                                     fail={"flaky": 3}), budget_s=1.0))
    f = out[cands[1]]
    assert f["status"] == "crashed" and "after 2 ok rounds" in f["message"]
    assert [r["status"] for r in f["info"]["rounds"]] == ["ok", "ok", "crashed"]
    assert [p.round for n, p in calls if n == "flaky"] == [1, 2, 3]      # no round after it
    assert out[cands[0]]["status"] == "ok" and len(out[cands[0]]["round_samples_s"]) == DEFAULT_ROUNDS
    with pytest.raises(ConvbenchError):
        merge_rounds([])


def test_a_sweep_record_has_rounds_times_and_seconds_keys(fakes, tmp_path):
    from convbench.sweeping import sweep
    from convbench.spec import ConvSpec

    res = sweep(ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3),
                backends=["fake-ok", "fake-wrong"], threads=1, budget_s=0.05, out=tmp_path,
                progress=False, update_cache=False, min_samples=5,
                peak={"gemm_gflops": 50.0, "gemm_dtype": "float32", "bandwidth_gbs": 5.0})
    ok = next(r for r in res.records if r["status"] == "ok")
    assert list(ok) == list(RECORD_FIELDS)
    assert len(ok["round_samples_s"]) == DEFAULT_ROUNDS and all(len(r) >= 3 for r in ok["round_samples_s"])
    assert ok["n_samples"] == len(ok["samples_s"]) == sum(len(r) for r in ok["round_samples_s"])
    assert isinstance(ok["noise"], list) and ok["round_spread"] >= 0
    canaries = [r["canary_s"] for r in ok["info"]["rounds"] if r.get("status") == "ok"]
    assert len(canaries) == DEFAULT_ROUNDS and ok["info"]["canary_s"] == statistics.median(canaries)
    for r in res.records:
        assert ISO.match(r["start_time"]) and ISO.match(r["end_time"]) and r["start_time"] <= r["end_time"]
    wrong = next(r for r in res.records if r["status"] == "wrong")
    assert wrong["round_samples_s"] is None and wrong["noise"] is None

    def timing_keys(obj, path=""):
        """Keys holding a time: numbers (or lists of numbers) under timing-like names."""
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from timing_keys(v, f"{path}.{k}")
        elif isinstance(obj, list):
            for v in obj:
                yield from timing_keys(v, path)
        elif isinstance(obj, float) and re.search(r"(time|sample|median|min|mean|stdev|iqr|ci_)",
                                                  path.rsplit(".", 1)[-1]):
            yield path

    for path in set(timing_keys(ok)):
        assert path.endswith("_s"), f"timing figure {path} does not end in _s"
    assert math.isfinite(ok["median_s"])
