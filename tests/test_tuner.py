"""The race strategy: the fastest survives, clear losers are dropped, wrong answers are never timed."""
from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np
import pytest

import convbench as cb
from convbench import registry
from convbench.reference import reference
from convbench.registry import Backend, Capabilities, Prepared
from convbench.spec import numpy_dtype
from convbench.timing import summarize
from convbench.strategies import RaceConfig, RoundParams, race_candidates

SPEC = cb.ConvSpec(n=1, c_in=2, c_out=3, input_size=(6, 6), kernel_size=3, padding=1, name="tiny")

SLEEP_S = {"fast": 0.001, "medium": 0.004, "slow": 0.02}


class _SleepPrepared(Prepared):
    def __init__(self, spec, x, w, seconds, offset=0.0, counter=None):
        self.spec = spec
        self.out = (reference(spec, x, w) + offset).astype(numpy_dtype(spec.dtype))
        self.seconds = seconds
        self.counter = counter
        self.info = {"sleep_s": seconds}

    def run(self):
        if self.counter:
            with open(self.counter, "ab") as fh:
                fh.write(b".")
        time.sleep(self.seconds)

    def result(self):
        return self.out.copy()


class SleepBackend(Backend):
    """Candidates with known speeds: run() sleeps; 'wrong' answers off by one."""

    name = "race-sleep"
    family = "race-test"
    capabilities = Capabilities(dtypes=frozenset({"float32"}))

    def algorithms(self, device="cpu"):
        return ["fast", "medium", "slow", "wrong"] if device == "cpu" else []

    def _prepare(self, spec, x, w, algorithm, device):
        if algorithm == "wrong":
            return _SleepPrepared(spec, x, w, 0.0001, offset=1.0,
                                  counter=os.environ.get("CONVBENCH_RACE_COUNTER"))
        return _SleepPrepared(spec, x, w, SLEEP_S[algorithm])


# ---- the algorithm, without processes ------------------------------------------------------
def _fake_round(speeds: dict, calls: dict, wrong: set = frozenset(), rng_seed: int = 0):
    rng = np.random.default_rng(rng_seed)

    def run_round(cand, p: RoundParams):
        calls.setdefault(cand, []).append(p)
        if p.verify and cand in wrong:
            return {"status": "wrong", "message": "off by one", "max_error": 1.0, "info": {},
                    "median_s": None, "samples_s": None, "n_samples": None}
        if not p.time:  # round 0: verification only; the verify call estimates the cost
            return {"status": "verified", "message": None, "max_error": 1e-7, "tolerance": 1e-4,
                    "wall_s": 0.01, "info": {"verify_est_s": speeds[cand] * 1.5,
                                             "verify_call_s": speeds[cand] * 1.5}}
        n = p.min_samples if not p.final else max(p.min_samples, 12)
        samples = list(speeds[cand] * (1 + 0.01 * rng.random(n)))
        st = summarize(samples)
        return {"status": "ok", "message": None, "max_error": 1e-7 if p.verify else None,
                "tolerance": 1e-4 if p.verify else None, "samples_s": samples, "n_samples": n,
                "loops": 1, "timer": "perf_counter", "converged": True, "warmup_calls": 3,
                "total_s": sum(samples), "wall_s": sum(samples) + 0.01, "info": {"round": p.round},
                **st}
    return run_round


def test_race_keeps_the_fastest_and_drops_clear_losers():
    speeds = {"a": 1e-3, "b": 1.005e-3, "c": 5e-3, "d": 20e-3, "e": 1e-3}
    calls: dict = {}
    out = dict(race_candidates(list(speeds), _fake_round(speeds, calls, wrong={"e"}), budget_s=1.0,
                               min_samples=10, config=RaceConfig(decisive_ratio=None)))
    assert list(out) == list(speeds)  # one outcome per candidate, input order
    # the clear losers stop after two short looks (two strikes); the near-tie goes to the final
    assert out["c"]["info"]["race"] == "dropped in round 2"
    assert out["d"]["info"]["race"] == "dropped in round 2"
    assert [(p.round, p.min_samples) for p in calls["c"]] == [(0, 1), (1, 3), (2, 3)]  # round-1-sized look
    assert out["a"]["info"]["race"] == out["b"]["info"]["race"] == "finalist"
    # the final is exhaustive's measurement: 5 interleaved rounds sharing the budget and min_samples
    assert [(p.round, p.min_samples) for p in calls["a"]] == [(0, 1), (1, 3), (2, 8)] + [
        (r, 3) for r in range(3, 8)]
    assert all(p.final for p in calls["a"][3:])
    assert sum(p.budget_s for p in calls["a"][3:]) == pytest.approx(1.0)
    # dropped: ok, statistics over every sample they got
    for k in ("c", "d"):
        o = out[k]
        assert o["status"] == "ok" and o["n_samples"] == len(o["samples_s"]) == 6
        assert o["median_s"] == pytest.approx(statistics.median(o["samples_s"]))
    # finalists: the final rounds' statistics, earlier rounds kept in info
    fa = out["a"]
    assert fa["n_samples"] == 5 * 12 and fa["median_s"] == pytest.approx(statistics.median(fa["samples_s"]))
    assert len(fa["round_samples_s"]) == len(fa["round_medians_s"]) == 5
    rounds = fa["info"]["race_rounds"]
    assert [r["round"] for r in rounds] == list(range(8)) and all(r["samples_s"] for r in rounds[1:])
    assert rounds[0]["status"] == "verified" and not calls["a"][0].time
    assert fa["max_error"] == 1e-7  # from the verification round
    assert fa["info"]["verify_est_s"] == pytest.approx(1.5e-3)
    assert fa["wall_s"] == pytest.approx(0.01 + sum(sum(r["samples_s"]) + 0.01 for r in rounds[1:]))
    # the wrong one: verified once, never timed
    assert out["e"]["status"] == "wrong" and out["e"]["median_s"] is None
    assert len(calls["e"]) == 1 and calls["e"][0].verify
    assert [p.verify for p in calls["a"]] == [True] + [False] * 7  # verification happens once


def test_round_one_runs_cheapest_first_and_drops_the_decisively_slower_at_once():
    speeds = {"d": 20e-3, "c": 5e-3, "b": 1.005e-3, "a": 1e-3, "e": 1.9e-3}
    calls: dict = {}
    order: list = []
    fake = _fake_round(speeds, calls)

    def run_round(cand, p):
        if p.round == 1:
            order.append(cand)
        out = fake(cand, p)
        if cand == "b" and p.round == 1:   # one slow first sample (threads waking up): not decisive
            out["samples_s"] = [out["samples_s"][0] * 20] + out["samples_s"][1:]
            out.update(summarize(out["samples_s"]))
        return out

    out = dict(race_candidates(list(speeds), run_round, budget_s=1.0, min_samples=10))
    assert order == ["a", "b", "e", "c", "d"]           # by the verification estimate
    assert calls["a"][1].stop_above_s is None          # nobody to compare with yet
    leader_max = max(out["a"]["info"]["race_rounds"][1]["samples_s"])
    assert calls["c"][1].stop_above_s == pytest.approx(2 * leader_max)
    for k in ("c", "d"):                               # all > 2x the leader's slowest: out
        assert out[k]["info"]["race"] == "dropped in round 1 (decisively slower)"
        assert out[k]["n_samples"] == 3 and len(calls[k]) == 2
        assert out[k]["status"] == "ok" and out[k]["median_s"] == pytest.approx(speeds[k], rel=0.02)
    # 1.9x slower is not decisive: it gets the normal rounds (and two strikes)
    assert out["e"]["info"]["race"] == "dropped in round 2" and out["e"]["n_samples"] == 6
    assert out["a"]["info"]["race"] == "finalist"
    assert out["b"]["info"]["race"].startswith("finalist")   # its one slow sample did not drop it


def test_a_decisively_dropped_candidate_is_readmitted_when_the_leader_slows_down():
    speeds = {"a": 1e-3, "b": 3e-3}
    calls: dict = {}
    normal = _fake_round(speeds, calls)

    def drifting(cand, p):  # a is fast in round 1 only; in the final it is 5x slower than b
        out = normal(cand, p)
        if cand == "a" and p.final:
            out["samples_s"] = [s * 15 for s in out["samples_s"]]
            out.update(summarize(out["samples_s"]))
        return out

    out = dict(race_candidates(list(speeds), drifting, budget_s=1.0, min_samples=10))
    assert out["b"]["info"]["race"] == "finalist (re-admitted after being dropped in round 1)"
    assert out["b"]["n_samples"] >= 10


def test_race_lone_survivor_still_gets_the_full_final_round():
    speeds = {"a": 1e-3, "b": 9e-3}
    calls: dict = {}
    cfg = RaceConfig(strikes=1, decisive_ratio=None)
    out = dict(race_candidates(list(speeds), _fake_round(speeds, calls), budget_s=0.5, min_samples=10,
                               config=cfg))
    assert out["b"]["info"]["race"] == "dropped in round 1"
    assert out["a"]["info"]["race"] == "finalist"
    assert [p.round for p in calls["a"]] == list(range(7))  # no middle round with one survivor
    assert all(p.final for p in calls["a"][2:])
    assert sum(p.budget_s for p in calls["a"][2:]) == pytest.approx(0.5)


def test_one_unlucky_window_does_not_eliminate_the_winner():
    """The fastest candidate is 8x slow in round 1 only (a loaded machine): it must survive."""
    speeds = {"a": 1e-3, "b": 2e-3, "c": 6e-3}
    calls: dict = {}
    normal = _fake_round(speeds, calls)

    def unlucky(cand, p):
        out = normal(cand, p)
        if cand == "a" and p.round == 1:
            out["samples_s"] = [s * 8 for s in out["samples_s"]]
            out.update(summarize(out["samples_s"]))
        return out

    out = dict(race_candidates(list(speeds), unlucky, budget_s=1.0, min_samples=10))
    assert out["a"]["info"]["race"] == "finalist"
    assert out["a"]["median_s"] == pytest.approx(1e-3, rel=0.02)  # final-round numbers
    assert out["c"]["info"]["race"].startswith("dropped")
    # with a single strike, the same unlucky window would have eliminated it
    calls.clear()
    out1 = dict(race_candidates(list(speeds), unlucky, budget_s=1.0, min_samples=10,
                                config=RaceConfig(strikes=1)))
    assert out1["a"]["info"]["race"] == "dropped in round 1"


def test_race_config_validation():
    with pytest.raises(cb.ConvbenchError, match="first_samples"):
        RaceConfig(first_samples=0)
    with pytest.raises(cb.ConvbenchError, match="same length"):
        RaceConfig(middle_fractions=(0.1, 0.2), middle_samples=(3,))
    with pytest.raises(cb.ConvbenchError, match="decisive_ratio"):
        RaceConfig(decisive_ratio=1.0)


# ---- the sweep strategy, with worker processes ---------------------------------------------
@pytest.fixture
def sleep_backend():
    registry.register(SleepBackend)
    yield
    registry.unregister(SleepBackend.name)


def test_sweep_race_with_workers(tmp_path, monkeypatch, sleep_backend):
    from convbench.strategies import STRATEGIES
    from convbench.sweeping import sweep

    assert "race" in STRATEGIES
    counter = tmp_path / "wrong-calls"
    monkeypatch.setenv("CONVBENCH_RACE_COUNTER", str(counter))
    cache = tmp_path / "c.sqlite"
    peak = {"gemm_gflops": 50.0, "gemm_dtype": "float32", "bandwidth_gbs": 5.0}  # skip calibration
    res = sweep([SPEC], backends=["race-sleep"], strategy="race", threads=1, budget_s=0.3,
                out=tmp_path / "runs", progress=False, cache=cache, peak=peak)
    recs = {r["algorithm"]: r for r in res.records}
    assert set(recs) == {"fast", "medium", "slow", "wrong"}
    w = res.winners[("tiny", "cpu")]
    assert w.candidate == "race-sleep:fast@cpu"
    slow = recs["slow"]
    assert slow["status"] == "ok" and slow["info"]["race"].startswith("dropped in round")
    assert slow["median_s"] >= 0.019  # sleep never returns early
    assert recs["fast"]["info"]["race"] == "finalist"
    assert recs["fast"]["n_samples"] >= 10
    # the wrong candidate: recorded as wrong, never timed: run() ran once, for verification
    wrong = recs["wrong"]
    assert wrong["status"] == "wrong" and wrong["median_s"] is None and wrong["samples_s"] is None
    assert counter.read_bytes() == b"."
    # same record schema as exhaustive
    from convbench.results import RECORD_FIELDS

    assert all(set(RECORD_FIELDS) <= set(r) for r in res.records)
    with open(res.run_dir / "meta.json") as fh:
        assert json.load(fh)["strategy"] == "race"
    # and the winner went to the cache given to the sweep
    ch = cb.lookup(SPEC, threads=1, cache=cache)
    assert ch is not None and ch.candidate == "race-sleep:fast@cpu"


def test_cache_verify_reports_a_changed_winner(tmp_path, capsys, sleep_backend):
    """`convbench cache verify` re-times an entry whose cached winner is the slow candidate."""
    from convbench import cache as C
    from convbench.cli import main

    path = tmp_path / "c.sqlite"
    C.TunedCache(path).put(C.CacheEntry(
        spec_key=SPEC.key, machine=C.machine_key(C.current_environment(), "cpu"), threads=1,
        device="cpu", spec=SPEC.to_dict(), candidate="race-sleep:slow@cpu", backend="race-sleep",
        algorithm="slow", median_s=0.001, timestamp="2030-01-01T00:00:00+00:00",
        versions=C.current_versions()))
    rc = main(["cache", "verify", "--cache", str(path), "--sample", "0", "--budget", "0.2",
               "-b", "race-sleep"])
    out = capsys.readouterr().out
    assert rc == 1 and "CHANGED" in out and "1 of 1 winners changed" in out
    # the cached (slow, 20 ms) choice against the fastest (1 ms): regret well above 1
    ratio = float(out.split("geometric mean ")[1].split(",")[0])
    assert ratio > 5


def test_dropped_candidate_that_would_beat_a_drifted_final_is_readmitted():
    """Everything runs 3x slower in the final round (the machine drifted): a candidate dropped
    earlier would look faster than the finalists' final numbers, so it is re-measured."""
    from convbench.selection import select_winners

    speeds = {"a": 1e-3, "b": 1.01e-3, "c": 2e-3, "d": 30e-3}
    calls: dict = {}
    normal = _fake_round(speeds, calls)

    def drifting(cand, p):
        out = normal(cand, p)
        if p.final:
            out["samples_s"] = [s * 3 for s in out["samples_s"]]
            out.update(summarize(out["samples_s"]))
        return out

    out = dict(race_candidates(list(speeds), drifting, budget_s=1.0, min_samples=10))
    assert out["c"]["info"]["race"] == "finalist (re-admitted after being dropped in round 2)"
    assert out["c"]["median_s"] == pytest.approx(6e-3, rel=0.02)  # its own final round
    assert out["d"]["info"]["race"] == "dropped in round 1 (decisively slower)"  # still: not re-run
    recs = [{"problem": "p", "device": "cpu", "spec_key": "k", "candidate": c, "backend": "x",
             "algorithm": c, **o} for c, o in out.items()]
    assert select_winners(recs)[("p", "cpu")].candidate in ("a", "b")
