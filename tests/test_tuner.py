"""The race strategy: a verified leader, one screening look per candidate, the final rounds for
the few that can still win; every other candidate ends ``pruned`` with its measured lower bound;
wrong answers are never chosen."""
from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np
import pytest

import convbench as cb
from convbench import registry
from convbench.outcome import ABOVE, TIMING_FIELDS
from convbench.rounds import DEFAULT_ROUNDS
from convbench.reference import reference
from convbench.registry import Backend, Candidate, Capabilities, Prepared
from convbench.rounds import RoundParams
from convbench.selection import select_winners
from convbench.spec import numpy_dtype
from convbench.strategies import RaceConfig, RaceMemory, race_candidates
from convbench.timing import summarize

SPEC = cb.ConvSpec(n=1, c_in=2, c_out=3, input_size=(6, 6), kernel_size=3, padding=1, name="tiny")

SLEEP_S = {"fast": 0.001, "medium": 0.004, "slow": 0.02, "stuck": 30.0}


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


class StuckBackend(SleepBackend):
    """One candidate whose every call takes 30 s (same worker family as race-sleep)."""

    name = "race-stuck"

    def algorithms(self, device="cpu"):
        return ["stuck"] if device == "cpu" else []


# ---- the algorithm, without processes ------------------------------------------------------
class FakeWorker:
    """run_round(candidate, RoundParams) standing in for a worker process, as
    convbench.measure answers: candidate -> seconds per call (1% jitter); ``wrong`` fail
    verification; ``setup`` adds seconds to a screening look's first call; ``factor(cand, p)``
    scales one task's calls (a disturbed window). A screening look: the first call is stopped
    past ``screen_kill_s``, two calls over ``screen_above_s`` answer "above"; a timed look
    stops after three samples over ``stop_above_s``. Every task's params are kept in ``calls``."""

    def __init__(self, speeds, wrong=(), setup=None, factor=None, fail=None):
        self.speeds, self.wrong, self.setup = dict(speeds), set(wrong), dict(setup or {})
        self.factor = factor or (lambda cand, p: 1.0)
        self.fail = fail or (lambda cand, p: None)
        self.calls: dict = {}
        self.rng = np.random.default_rng(0)

    def __call__(self, cand, p: RoundParams) -> dict:
        self.calls.setdefault(cand, []).append(p)
        failed = self.fail(cand, p)
        if failed:
            return {"status": failed, "message": f"{failed} on purpose", "info": {}, "wall_s": 0.01}
        if p.verify and cand in self.wrong:
            return {"status": "wrong", "message": "off by one", "max_error": 1.0, "tolerance": 1e-4,
                    "info": {}, "wall_s": 0.01}
        if not p.time:
            return {"status": "verified", "max_error": 1e-7, "tolerance": 1e-4, "wall_s": 0.01,
                    "info": {}}
        t = self.speeds[cand] * self.factor(cand, p)
        info: dict = {}
        if p.screen_above_s is not None:
            screen = info["screen"] = {"above_s": p.screen_above_s, "kill_s": p.screen_kill_s,
                                       "calls_s": []}
            for tk in (t + self.setup.get(cand, 0.0), t):
                if tk > p.screen_kill_s:
                    screen["stopped_after_s"] = p.screen_kill_s
                    return {"status": "timeout", "message": "stopped", "info": info,
                            "wall_s": p.screen_kill_s}
                screen["calls_s"].append(tk)
                if tk <= p.screen_above_s:
                    break
            else:
                return {"status": ABOVE, "message": "two calls above", "info": info,
                        "wall_s": sum(screen["calls_s"])}
        n = p.min_samples if not p.final else max(p.min_samples, 12)
        samples = list(t * (1 + 0.01 * self.rng.random(n)))
        if p.stop_above_s is not None and min(samples[:3]) > p.stop_above_s:
            samples = samples[:3]
        return {"status": "ok", "message": None, "max_error": 1e-7 if p.verify else None,
                "tolerance": 1e-4 if p.verify else None, "samples_s": samples,
                "n_samples": len(samples), "loops": 1, "timer": "perf_counter", "converged": True,
                "warmup_calls": 3, "total_s": sum(samples), "wall_s": sum(samples) + 0.01,
                "info": info, "noise": [], **summarize(samples)}


def _records(out: dict) -> list[dict]:
    return [{"problem": "p", "device": "cpu", "spec_key": "k", "candidate": c, "backend": "x",
             "algorithm": c, **o} for c, o in out.items()]


def _stages(o: dict) -> list[str]:
    return [r["stage"] for r in o["info"]["race_rounds"]]


def test_slow_candidates_are_pruned_after_one_look_with_their_lower_bound():
    # input order = race order here: b leads, a beats it; g is fastest but wrong
    speeds = {"b": 1.05e-3, "a": 1e-3, "c": 1.8e-3, "d": 5e-3, "e": 30e-3, "f": 2.0, "g": 0.5e-3}
    w = FakeWorker(speeds, wrong={"g"})
    out = dict(race_candidates(list(speeds), w, budget_s=1.0, min_samples=10, max_call_s=1.0))
    assert list(out) == list(speeds)  # one outcome per candidate, input order
    # the two within reach: verified once, then exhaustive's measurement (5 rounds, full budget)
    for k in ("a", "b"):
        o = out[k]
        assert o["status"] == "ok" and o["info"]["race"] == "finalist"
        assert o["max_error"] == 1e-7 and sum(p.verify for p in w.calls[k]) == 1
        finals = [p for p in w.calls[k] if p.final]
        assert [p.round for p in finals] == list(range(3, 3 + DEFAULT_ROUNDS))
        assert sum(p.min_time_s for p in finals) == pytest.approx(1.0)   # the full budget to sample in
        assert o["n_samples"] == DEFAULT_ROUNDS * 12 and len(o["round_medians_s"]) == DEFAULT_ROUNDS
        assert o["median_s"] == pytest.approx(statistics.median(o["round_medians_s"]))
    assert _stages(out["b"])[0] == "leader" and _stages(out["a"])[:2] == ["screen", "verify"]
    # 30 ms (two calls over 3x the leader) and 2 s (stopped by the watchdog): pruned after one
    # look, never verified
    e, f = out["e"], out["f"]
    assert _stages(e) == _stages(f) == ["screen"] and not any(p.verify for p in w.calls["f"])
    for o in (e, f):
        assert o["status"] == "pruned" and all(o[k] is None for k in TIMING_FIELDS if k in o)
        assert o["info"]["pruned"]["how"] == "one look" and not o["info"]["pruned"]["verified"]
        assert o["info"]["pruned"]["leader"] == "a"
    assert e["info"]["pruned"]["lower_bound_s"] == pytest.approx(30e-3)  # two calls, both slow
    assert e["info"]["race_rounds"][0]["screen"]["calls_s"] == pytest.approx([30e-3, 30e-3])
    assert f["info"]["pruned"]["lower_bound_s"] == 0.5          # kill_floor_s: stopped there
    assert f["info"]["race_rounds"][0]["screen"]["stopped_after_s"] == 0.5
    assert "0.5 s per call" in f["message"] and "not verified" in f["message"]
    # 5 ms (under decisive_min_s): a timed look, stopped after three samples over 3x the
    # leader; a quiet window at 5x is enough. 1.8x is not decided on one window: two looks
    d, c = out["d"], out["c"]
    assert d["status"] == "pruned" and d["info"]["pruned"]["how"] == "one quiet look"
    assert _stages(d) == ["screen"] and d["info"]["race_rounds"][0]["n_samples"] == 3
    assert c["status"] == "pruned" and c["info"]["pruned"]["how"] == "two looks"
    assert _stages(c) == ["screen", "second look"]
    for o, ratio in ((c, 1.8), (d, 5.0)):
        assert o["info"]["pruned"]["ratio"] == pytest.approx(ratio, rel=0.03)
    # fastest but wrong: verified when it beat the leader, ended wrong, never chosen
    g = out["g"]
    assert g["status"] == "wrong" and g.get("median_s") is None and _stages(g) == ["screen", "verify"]
    assert select_winners(_records(out))[("p", "cpu")].candidate == "a"


def test_a_wrong_candidate_never_leads():
    speeds = {"w": 1e-3, "a": 2e-3, "b": 9e-3}
    fw = FakeWorker(speeds, wrong={"w"})
    out = dict(race_candidates(list(speeds), fw, budget_s=0.5, min_samples=10))
    assert out["w"]["status"] == "wrong" and _stages(out["w"]) == ["leader"]
    assert out["a"]["info"]["race"] == "finalist" and _stages(out["a"])[0] == "leader"
    assert out["b"]["status"] == "pruned" and out["b"]["info"]["pruned"]["leader"] == "a"


@pytest.mark.parametrize("slow", [8.0, 15.0])
def test_one_disturbed_window_does_not_eliminate_the_winner(slow):
    """The fastest candidate is 8x (or 15x: over sure_ratio, but under decisive_min_s) slow
    in its screening look only, a window the worker flagged ``steal`` (a loaded machine): its
    second look, in another window, brings it to the final, where it wins."""
    speeds = {"b": 1.1e-3, "a": 1e-3, "c": 6e-3}
    normal = FakeWorker(speeds, factor=lambda cand, p: slow if (cand, p.round) == ("a", 1) else 1.0)

    def stolen(cand, p):
        out = normal(cand, p)
        if (cand, p.round) == ("a", 1):
            out["noise"] = ["steal"]
        return out

    out = dict(race_candidates(list(speeds), stolen, budget_s=1.0, min_samples=10))
    assert out["a"]["info"]["race"] == "finalist" and _stages(out["a"])[:2] == ["screen", "second look"]
    assert out["a"]["median_s"] == pytest.approx(1e-3, rel=0.02)  # final-round numbers
    assert select_winners(_records(out))[("p", "cpu")].candidate == "a"
    if slow > 10:  # without decisive_min_s, that look alone would have pruned it
        out0 = dict(race_candidates(list(speeds), stolen, budget_s=1.0, min_samples=10,
                                    config=RaceConfig(decisive_min_s=0.0)))
        assert out0["a"]["status"] == "pruned" and out0["a"]["info"]["pruned"]["how"] == "one look"


def test_a_noisy_window_is_looked_at_again():
    """A timed look 2.5x slower in a window flagged ``steal`` is not enough to prune; the
    same look in a quiet window is."""
    speeds = {"a": 1e-3, "b": 2.5e-3}

    for noise, stages in ((["steal"], ["screen", "second look"]), ([], ["screen"])):
        fw = FakeWorker(speeds)

        def with_noise(cand, p, fw=fw):
            out = fw(cand, p)
            if cand == "b" and out["status"] == "ok":
                out["noise"] = noise
            return out

        out = dict(race_candidates(list(speeds), with_noise, budget_s=0.5, min_samples=10,
                                   config=RaceConfig(screen_ratio=5.0)))
        assert out["b"]["status"] == "pruned" and _stages(out["b"]) == stages


def test_lone_leader_still_gets_the_full_final():
    speeds = {"a": 1e-3, "b": 50e-3}
    fw = FakeWorker(speeds)
    out = dict(race_candidates(list(speeds), fw, budget_s=0.5, min_samples=10))
    assert out["b"]["status"] == "pruned"
    finals = [p for p in fw.calls["a"] if p.final]
    assert len(finals) == DEFAULT_ROUNDS and sum(p.min_time_s for p in finals) == pytest.approx(0.5)
    assert out["a"]["info"]["race"] == "finalist"


def test_pruned_candidate_that_would_beat_a_drifted_final_is_readmitted():
    """Everything runs 3x slower in the final rounds (the machine drifted): a candidate pruned
    at 1.8x would look faster than the finalists' final numbers, so it is measured in full."""
    speeds = {"a": 1e-3, "b": 1.01e-3, "c": 1.8e-3, "d": 30e-3}
    fw = FakeWorker(speeds, factor=lambda cand, p: 3.0 if p.final else 1.0)
    out = dict(race_candidates(list(speeds), fw, budget_s=1.0, min_samples=10))
    assert out["c"]["info"]["race"] == "finalist (re-admitted after being pruned)"
    assert out["c"]["median_s"] == pytest.approx(5.4e-3, rel=0.02)  # its own final rounds
    assert out["c"]["max_error"] == 1e-7                             # verified in them
    assert out["d"]["status"] == "pruned"                           # 30x: not re-run
    assert select_winners(_records(out))[("p", "cpu")].candidate in ("a", "b")


def test_when_no_finalist_ends_ok_every_pruned_candidate_is_measured():
    speeds = {"a": 1e-3, "b": 40e-3}
    fw = FakeWorker(speeds, fail=lambda cand, p: "crashed" if cand == "a" and p.final else None)
    out = dict(race_candidates(list(speeds), fw, budget_s=0.5, min_samples=10))
    assert out["a"]["status"] == "crashed" and out["a"]["info"]["race"] == "failed in the final rounds"
    assert out["b"]["status"] == "ok" and out["b"]["info"]["race"].startswith("finalist (re-admitted")
    assert select_winners(_records(out))[("p", "cpu")].candidate == "b"


def _spec(c: int, size: int = 28, k: int = 3) -> cb.ConvSpec:
    return cb.ConvSpec(n=1, c_in=c, c_out=c, input_size=(size, size), kernel_size=k, padding=k // 2)


def test_memory_orders_candidates_and_prunes_the_hopeless_by_its_neighbours():
    mem = RaceMemory()
    for c in (64, 128):  # two earlier problems: z was 50x slower than the fastest on both
        mem.add(_spec(c), 1, f"c{c}", {"a": 1.0, "b": 1.4, "z": 50.0})
    speeds = {"b": 1.3e-3, "z": 40e-3, "a": 1e-3}
    fw = FakeWorker(speeds)
    out = dict(race_candidates(list(speeds), fw, budget_s=0.5, min_samples=10, spec=_spec(96),
                               memory=mem, name="c96", rank=lambda c: 0.0))
    assert _stages(out["a"])[0] == "leader"  # a did best nearby: it leads
    z = out["z"]
    assert z["status"] == "pruned" and "z" not in fw.calls  # not run at all
    ev = z["info"]["pruned"]
    assert ev["how"] == "predicted" and [n["problem"] for n in ev["neighbours"]] == ["c128", "c64"]
    assert all(n["ratio"] == 50.0 for n in ev["neighbours"]) and "not run" in z["message"]
    # the race is remembered: measured times over the fastest (z: nothing measured)
    dist, name, ratio = mem.nearest(_spec(96), 1, "b")[0]
    assert name == "c96" and dist == 0.0 and ratio == pytest.approx(1.3, rel=0.05)
    assert [n for _, n, _ in mem.nearest(_spec(96), 1, "z")] == ["c128", "c64"]


def test_a_predicted_hopeless_candidate_is_measured_when_nothing_else_works():
    mem = RaceMemory()
    for c in (64, 128):
        mem.add(_spec(c), 1, f"c{c}", {"a": 1.0, "z": 50.0})
    fw = FakeWorker({"a": 1e-3, "w": 2e-3, "z": 40e-3}, wrong={"a", "w"})
    out = dict(race_candidates(["a", "w", "z"], fw, budget_s=0.5, min_samples=10,
                               spec=_spec(96), memory=mem))
    assert out["a"]["status"] == out["w"]["status"] == "wrong"
    assert out["z"]["status"] == "ok" and out["z"]["info"]["race"].startswith("finalist (re-admitted")
    assert select_winners(_records(out))[("p", "cpu")].candidate == "z"


@pytest.mark.parametrize("problems", [
    [_spec(64)],                                 # one neighbour is not enough
    [_spec(64), _spec(64, size=224, k=11)],      # the second is too far away
])
def test_prediction_needs_enough_near_neighbours(problems):
    mem = RaceMemory()
    for i, s in enumerate(problems):
        mem.add(s, 1, f"p{i}", {"a": 1.0, "z": 50.0})
    fw = FakeWorker({"a": 1e-3, "z": 40e-3})
    out = dict(race_candidates(["a", "z"], fw, budget_s=0.5, min_samples=10, spec=_spec(96),
                               memory=mem))
    assert "z" in fw.calls and out["z"]["info"]["pruned"]["how"] == "one look"


def test_a_finalist_slower_than_the_best_in_every_round_leaves_the_final_early():
    speeds = {"a": 1e-3, "b": 1.2e-3, "c": 1.04e-3}   # b and c within reach (final_ratio 1.3)
    fw = FakeWorker(speeds)
    out = dict(race_candidates(list(speeds), fw, budget_s=1.0, min_samples=10))
    b = out["b"]
    assert b["status"] == "ok" and b["info"]["race"].startswith("finalist (left the final rounds after 3")
    assert b["info"]["cut"]["best"] == "a" and b["info"]["cut"]["after_rounds"] == 3
    assert all(r >= 1.1 for r in b["info"]["cut"]["round_ratios"])
    assert len(b["round_medians_s"]) == 3 and b["max_error"] == 1e-7   # verified, timed 3 rounds
    # the best and a rival within 10% get every round
    for k in ("a", "c"):
        assert len(out[k]["round_medians_s"]) == DEFAULT_ROUNDS and "cut" not in out[k]["info"]
    assert select_winners(_records(out))[("p", "cpu")].candidate == "a"
    # one round where b is not 1.1x slower (the machine, or b, differed then): b is kept
    fw = FakeWorker(speeds, factor=lambda cand, p: 0.8 if (cand, p.round) == ("b", 4) else 1.0)
    out = dict(race_candidates(list(speeds), fw, budget_s=1.0, min_samples=10))
    assert len(out["b"]["round_medians_s"]) == DEFAULT_ROUNDS and "cut" not in out["b"]["info"]
    # cut_ratio None: every finalist gets every round
    out = dict(race_candidates(list(speeds), FakeWorker(speeds), budget_s=1.0, min_samples=10,
                               config=RaceConfig(cut_ratio=None)))
    assert len(out["b"]["round_medians_s"]) == DEFAULT_ROUNDS


def test_race_config_validation():
    with pytest.raises(cb.ConvbenchError, match="first_samples"):
        RaceConfig(first_samples=0)
    with pytest.raises(cb.ConvbenchError, match="final_ratio"):
        RaceConfig(final_ratio=1.0)
    with pytest.raises(cb.ConvbenchError, match="sure_ratio"):
        RaceConfig(sure_ratio=2.5)  # below screen_ratio (3)
    with pytest.raises(cb.ConvbenchError, match="hopeless_ratio"):
        RaceConfig(hopeless_ratio=1.0)
    with pytest.raises(cb.ConvbenchError, match="kill_floor_s"):
        RaceConfig(kill_floor_s=0)
    assert RaceConfig(hopeless_ratio=None).hopeless_ratio is None
    with pytest.raises(cb.ConvbenchError, match="cut_ratio"):
        RaceConfig(cut_ratio=1.0)
    with pytest.raises(cb.ConvbenchError, match="cut_rounds"):
        RaceConfig(cut_rounds=0)


# ---- the screening look, in this process and in a worker -----------------------------------
def _sleeper(seconds):
    from convbench.timing import CallablePrepared

    return lambda: CallablePrepared(lambda: time.sleep(seconds))


def test_screening_look_in_process():
    from convbench.measure import Screen, TimingParams, verify_and_time

    quick = TimingParams(budget_s=0.0, min_samples=3, min_warmup_calls=1, min_warmup_s=0.0)
    above = verify_and_time(_sleeper(0.02), check=None, timing=quick, screen=Screen(0.005, 5.0))
    assert above["status"] == "above" and above["median_s"] is None
    calls = above["info"]["screen"]["calls_s"]
    assert len(calls) == 2 and min(calls) >= 0.02 and "stopped_after_s" not in above["info"]["screen"]
    ok = verify_and_time(_sleeper(0.001), check=None, timing=quick, screen=Screen(0.5, 5.0))
    assert ok["status"] == "ok" and ok["n_samples"] >= 3 and len(ok["info"]["screen"]["calls_s"]) == 1
    limit = verify_and_time(_sleeper(0.02), check=None, timing=quick, screen=Screen(0.005, 5.0),
                            max_call_s=0.01)
    assert limit["status"] == "timeout" and "max_call_s=0.01" in limit["message"]


@pytest.fixture
def sleep_backend():
    registry.register(SleepBackend)
    registry.register(StuckBackend)
    yield
    registry.unregister(SleepBackend.name)
    registry.unregister(StuckBackend.name)


def test_a_stuck_candidate_is_stopped_by_the_watchdog_in_its_worker(sleep_backend):
    """A 30 s call, with the leader at 1 ms: stopped after kill_floor_s (0.5 s), its worker
    replaced, the race goes on."""
    from convbench.strategies import _pool_runner
    from convbench.worker import Task, WorkerPool

    here = os.path.dirname(os.path.abspath(__file__))
    cands = [Candidate("race-sleep", "fast"), Candidate("race-stuck", "stuck")]
    with WorkerPool(threads=1, extra_sys_path=[here]) as pool:
        def make_task(c, **kw):
            return Task(**{**dict(spec=SPEC.to_dict(), backend=c.backend, algorithm=c.algorithm,
                                  budget_s=0.1, max_call_s=1.0, timeout_s=60.0), **kw})

        t0 = time.perf_counter()
        out = dict(race_candidates(cands, _pool_runner(pool, make_task), budget_s=0.1,
                                   max_call_s=1.0, rank=lambda c: c.algorithm == "stuck"))
        took = time.perf_counter() - t0
        assert pool.workers_started == 2  # the stuck call's worker was ended and replaced
    stuck = out[cands[1]]
    assert stuck["status"] == "pruned" and stuck["info"]["pruned"]["lower_bound_s"] == 0.5
    assert stuck["info"]["race_rounds"][0]["screen"]["stopped_after_s"] == 0.5
    assert stuck["wall_s"] < 10 and took < 25  # far from the 30 s call
    assert out[cands[0]]["status"] == "ok" and out[cands[0]]["info"]["race"] == "finalist"


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
    slow = recs["slow"]  # 20x the leader: pruned on its look, the lower bound recorded
    assert slow["status"] == "pruned" and slow["median_s"] is None
    assert slow["info"]["pruned"]["lower_bound_s"] >= 0.019  # sleep never returns early
    assert slow["info"]["pruned"]["ratio"] >= 3 and "s per call" in slow["message"]
    assert recs["medium"]["status"] in ("pruned", "ok")
    assert recs["fast"]["info"]["race"] == "finalist"
    assert recs["fast"]["n_samples"] >= 10
    # the wrong candidate: recorded as wrong, no timing recorded; its last task was the
    # verification that failed (as the leader, after beating the leader, or in the first final
    # round); run() ran only in its looks and once for that verification
    wrong = recs["wrong"]
    assert wrong["status"] == "wrong" and wrong["median_s"] is None and wrong["samples_s"] is None
    rounds = wrong["info"]["race_rounds"]
    assert rounds[-1]["stage"] in ("leader", "verify", "final") and rounds[-1]["status"] == "wrong"
    assert all(r["status"] in ("ok", "above") for r in rounds[:-1])
    looked = sum(len((r.get("screen") or {}).get("calls_s") or ())
                 + (r["n_samples"] or 0) * (r["loops"] or 0) for r in rounds)
    warm = (wrong["info"].get("timing") or {}).get("warmup_calls") or 0
    assert len(counter.read_bytes()) == looked + warm + 1, rounds
    # same record schema as exhaustive
    from convbench.results import RECORD_FIELDS

    assert all(set(RECORD_FIELDS) <= set(r) for r in res.records)
    with open(res.run_dir / "meta.json") as fh:
        assert json.load(fh)["strategy"] == "race"
    # and the winner went to the cache given to the sweep
    ch = cb.lookup(SPEC, threads=1, cache=cache)
    assert ch is not None and ch.candidate == "race-sleep:fast@cpu"
    # the run reads back; pruned records count in the tables and teach the cache their bound
    from convbench.cache import entries_from_run, read_run
    from convbench.report import status_counts, warnings

    records, meta = read_run(res.run_dir)
    counts = status_counts(res.run_dir)
    assert counts.loc["race-sleep:slow@cpu", "pruned"] == 1
    assert "race-sleep:slow@cpu" not in set(warnings(res.run_dir)["candidate"])
    (entry,), _, _ = entries_from_run(records, meta)
    assert entry.timings["race-sleep:slow@cpu"] == slow["info"]["pruned"]["lower_bound_s"]


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


def test_googlenet_v3_suite_is_the_whole_network():
    """suites/googlenet_v3.txt (oneDNN's layer list, batch 1): 43 distinct shapes; with the
    repeat counts oneDNN writes into the names ("*K"), 94 convolutions and 5.711 GMACs, plus
    the 2048x1000 classifier the 5.71 GFLOPS torchvision lists for inception_v3."""
    import re

    from convbench.suites import load_suite

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "suites", "googlenet_v3.txt")
    suite = load_suite(path)
    assert len(suite.problems) == len({p.spec.key for p in suite.problems}) == 43
    counts = [int(m.group(1)) if (m := re.search(r"\*(\d+)$", p.name)) else 1 for p in suite.problems]
    macs = sum(k * p.spec.flops / 2 for k, p in zip(counts, suite.problems)) + 2048 * 1000
    assert sum(counts) == 94 and macs / 1e9 == pytest.approx(5.71, abs=0.01)
    first = suite.problems[0].spec
    assert (first.n, first.c_in, first.c_out, first.input_size, first.stride) == \
        (1, 3, 32, (299, 299), (2, 2))
