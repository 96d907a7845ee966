"""The predictor for cache misses: nearest cached neighbours, then the documented heuristic."""
from __future__ import annotations

import math

import numpy as np
import pytest

import convbench as cb
from convbench import cache as C
from convbench import predict as P
from convbench import registry
from convbench.predict_cv import choose_feature_weights, cross_validate
from convbench.registry import Backend, Capabilities, Support


def entry(spec: cb.ConvSpec, candidate: str, *, machine: str | None = None, threads: int = 2,
          timings: dict | None = None) -> C.CacheEntry:
    c = cb.Candidate.parse(candidate)
    return C.CacheEntry(spec_key=spec.key, machine=machine or C.machine_key(C.current_environment(), "cpu"),
                        threads=threads, device="cpu", spec=spec.to_dict(), candidate=candidate,
                        backend=c.backend, algorithm=c.algorithm,
                        median_s=(timings or {}).get(candidate, 1e-3),
                        timestamp="2030-01-01T00:00:00+00:00", versions=C.current_versions(),
                        timings=timings or {})


IM2COL, FFT, DIRECT = "numpy-im2col:gemm@cpu", "numpy-fft:rfft@cpu", "numpy-direct:einsum@cpu"


def kernel(d: float, h: float) -> float:
    return math.exp(-0.5 * (d / h) ** 2)


def test_scores_are_the_kernel_weighted_shrunk_mean_log_regret():
    a, b, far = small(8, 8), small(8, 16), big_kernel(64, 64)
    train = [entry(a, IM2COL, timings={IM2COL: 1.0, FFT: 2.0}),
             entry(b, FFT, timings={IM2COL: 1.5, FFT: 1.0}),
             entry(far, FFT, timings={IM2COL: 8.0, FFT: 1.0, DIRECT: 4.0})]
    p = P.Predictor(bandwidth=0.7, prior_weight=1.0).fit(train)
    q = small(8, 10)
    w = {n.entry.spec_key: kernel(n.distance, 0.7) for n in p.neighbours(q, threads=2)}
    wa, wb, wf = w[a.key], w[b.key], w[far.key]
    prior_im2col = (0 + math.log(1.5) + math.log(8)) / 3
    prior_fft = (math.log(2) + 0 + 0) / 3
    got = p.scores(q, threads=2)
    assert got[IM2COL] == pytest.approx((wb * math.log(1.5) + wf * math.log(8) + prior_im2col)
                                        / (wa + wb + wf + 1))
    assert got[FFT] == pytest.approx((wa * math.log(2) + prior_fft) / (wa + wb + wf + 1))
    # only the far problem measured DIRECT: its kernel weight and the prior both say 4x
    assert got[DIRECT] == pytest.approx(math.log(4))
    assert p.predict(q, threads=2).candidate == min(got, key=got.get)


def test_prediction_says_how_sure_it_is():
    # three problems (too few to cross-validate): the pick's confidence is its score and the
    # kernel-weighted share of problems where it was within 5%, both shrunk toward the prior
    a, b, far = small(8, 8), small(8, 16), big_kernel(64, 64)
    train = [entry(a, IM2COL, timings={IM2COL: 1.0, FFT: 1.5}),
             entry(b, FFT, timings={IM2COL: 1.1, FFT: 1.0}),
             entry(far, FFT, timings={IM2COL: 8.0, FFT: 1.0})]
    p = P.Predictor(bandwidth=0.7, prior_weight=0.2).fit(train)
    assert p.cv_log_regret is None and p.cv_optimism == P.UNCHECKED_OPTIMISM
    q = small(8, 9)
    w = {n.entry.spec_key: kernel(n.distance, 0.7) for n in p.neighbours(q, threads=2)}
    wa, wb, wf = w[a.key], w[b.key], w[far.key]
    lr_b, lr_f = math.log(1.1), math.log(8)
    score = (wb * lr_b + wf * lr_f + 0.2 * (lr_b + lr_f) / 3) / (wa + wb + wf + 0.2)
    p_within = (wa * 1 + 0.2 * (1 / 3)) / (wa + wb + wf + 0.2)  # within 5% only on a
    pr = p.prediction(q, threads=2)
    assert pr.choice.candidate == IM2COL and pr.source == "predicted"
    assert pr.expected_regret == pytest.approx(math.exp(score + P.UNCHECKED_OPTIMISM))
    assert pr.p_within == pytest.approx(p_within)
    assert pr.support == pytest.approx(wa + wb + wf)
    # nothing cached: the heuristic, with the documented assumed regret and no probability
    h = P.Predictor().fit([]).prediction(q, threads=2, allow=lambda b, a, d: b == "numpy-im2col")
    assert (h.source, h.expected_regret, h.p_within) == ("heuristic", P.UNKNOWN_EXPECTED_REGRET, None)


def test_far_from_everything_falls_back_to_the_prior_best():
    # the neighbours say IM2COL; across the training set FFT is best. A float64 query (no cached
    # problem has that dtype) is far from all of them: the prior decides and confidence drops
    near = [entry(small(c, 8), IM2COL, timings={IM2COL: 1.0, FFT: 1.3}) for c in (4, 8)]
    others = [entry(big_kernel(c, 32), FFT, timings={IM2COL: 5.0, FFT: 1.0}) for c in (4, 8, 16)]
    p = P.Predictor(bandwidth=1.0, prior_weight=0.1).fit(near + others)
    close = p.prediction(small(6, 8), threads=2)
    away = p.prediction(small(6, 8).replace(dtype="float64"), threads=2)
    assert close.choice.candidate == IM2COL and away.choice.candidate == FFT
    assert away.support < 1e-3 < close.support
    assert away.expected_regret > close.expected_regret and away.p_within < close.p_within


def test_the_prior_pulls_toward_the_candidate_that_is_good_everywhere():
    # FFT is never much slower and often far faster; IM2COL wins the one nearby problem by 5%
    near = entry(small(8, 8), IM2COL, timings={IM2COL: 1.0, FFT: 1.05})
    others = [entry(big_kernel(c, s), FFT, timings={IM2COL: 6.0, FFT: 1.0})
              for c in (16, 32, 64) for s in (32, 64)]
    q, train = small(8, 9), [near, *others]
    assert P.Predictor(bandwidth=0.25, prior_weight=0.0).fit(train).predict(q, threads=2).candidate == IM2COL
    assert P.Predictor(bandwidth=0.25, prior_weight=3.0).fit(train).predict(q, threads=2).candidate == FFT


def test_winner_only_entries_count_unlisted_candidates_as_2x_slower():
    e = entry(small(8, 8), IM2COL)               # no timings: an entry from an older cache
    assert e.timings == {}
    p = P.Predictor(bandwidth=1.0, prior_weight=0.0).fit([e])
    assert p.scores(small(8, 8), threads=2) == {IM2COL: 0.0}
    e2 = entry(small(8, 8), IM2COL)
    e2.runner_up, e2.margin = FFT, 3.0              # runner-up 4x slower
    p = P.Predictor(bandwidth=0.1, prior_weight=0.0).fit([e2, entry(big_kernel(8, 8), DIRECT)])
    s = p.scores(small(8, 8), threads=2)
    assert s[FFT] == pytest.approx(math.log(4)) and s[IM2COL] == pytest.approx(0.0)
    assert s[DIRECT] == pytest.approx(math.log(4))  # not listed: at least as slow as the runner-up


def small(c: int, s: int) -> cb.ConvSpec:
    return cb.ConvSpec(n=1, c_in=c, c_out=c, input_size=(s, s), kernel_size=3, padding=1)


def big_kernel(c: int, s: int) -> cb.ConvSpec:
    return cb.ConvSpec(n=1, c_in=c, c_out=c, input_size=(s, s), kernel_size=11, padding=5)


def test_features_are_log_scaled():
    spec = cb.ConvSpec(n=4, c_in=64, c_out=128, input_size=(16, 64), kernel_size=(3, 3), stride=2,
                       padding=1, groups=2, dtype="float16")
    f = dict(zip(P.FEATURES, P.features(spec, threads=8)))
    assert f["log2_n"] == 2 and f["log2_c_in"] == 6 and f["log2_c_out"] == 7
    assert f["log2_spatial"] == pytest.approx((4 + 6) / 2)  # geometric-mean side: 32
    assert f["log2_aspect"] == 2 and f["log2_stride"] == 1 and f["log2_groups"] == 1
    assert f["log2_kernel"] == pytest.approx(math.log2(3))
    assert f["dims"] == 2 and f["transposed"] == 0 and f["log2_itemsize"] == 1
    assert f["log2_flops"] == pytest.approx(math.log2(spec.flops))
    assert f["log2_intensity"] == pytest.approx(math.log2(spec.arithmetic_intensity))
    assert f["log2_threads"] == 3


def test_nearest_neighbours_vote():
    train = ([entry(small(c, s), "numpy-im2col:gemm@cpu") for c in (4, 8, 16) for s in (8, 16)]
             + [entry(big_kernel(c, s), "numpy-fft:rfft@cpu") for c in (4, 8, 16) for s in (32, 64)])
    p = P.Predictor(bandwidth=1.0, prior_weight=0.3).fit(train)
    assert len(p) == 12
    a = p.predict(small(12, 12), threads=2)
    assert (a.candidate, a.source) == ("numpy-im2col:gemm@cpu", "predicted")
    b = p.predict(big_kernel(12, 48), threads=2)
    assert (b.candidate, b.source) == ("numpy-fft:rfft@cpu", "predicted")
    nb = p.neighbours(small(8, 8), threads=2, k=1)[0]
    assert nb.entry.spec_key == small(8, 8).key and nb.distance == pytest.approx(0.0, abs=1e-9)


class NeverBackend(Backend):
    """Registered but supports nothing: a neighbour's winner that cannot run the new spec."""

    name = "never-supports"
    family = "test"
    capabilities = Capabilities()

    def algorithms(self, device="cpu"):
        return ["x"] if device == "cpu" else []

    def _supports(self, spec, device, algorithm):
        return Support.no("test backend supports nothing")

    def _prepare(self, spec, x, w, algorithm, device):  # pragma: no cover
        raise AssertionError


@pytest.fixture
def never_backend():
    registry.register(NeverBackend)
    yield
    registry.unregister(NeverBackend.name)


def test_unsupported_neighbour_winner_is_skipped(never_backend):
    train = ([entry(small(c, 8), "never-supports:x@cpu") for c in (4, 8, 16)]
             + [entry(small(c, 32), "numpy-direct:einsum@cpu") for c in (4, 8)])
    p = P.Predictor(bandwidth=1.0, prior_weight=0.3).fit(train)
    ch = p.predict(small(8, 9), threads=2)
    assert ch.candidate == "numpy-direct:einsum@cpu" and ch.source == "predicted"
    # an allow filter works the same way
    ch = p.predict(small(8, 30), threads=2, allow=lambda b, a, d: b != "numpy-direct")
    assert ch.source == "heuristic" and ch.backend != "numpy-direct"


def test_heuristic_fallback_rules():
    only_numpy = lambda b, a, d: b.startswith(("numpy-", "scipy-"))  # noqa: E731
    big = cb.ConvSpec(n=1, c_in=3, c_out=8, input_size=(32, 32), kernel_size=7, padding=3)
    assert P.heuristic_choice(big, allow=only_numpy).candidate == "numpy-fft:rfft@cpu"
    strided = big.replace(stride=2)
    assert P.heuristic_choice(strided, allow=only_numpy).candidate == "numpy-im2col:gemm@cpu"
    assert P.heuristic_choice(small(4, 8), allow=only_numpy).candidate == "numpy-im2col:gemm@cpu"
    torch_ok = bool(cb.get_backend("torch").available()) if "torch" in cb.list_backends() else False
    if torch_ok:
        assert P.heuristic_choice(small(4, 8)).candidate == "torch:default@cpu"
    with pytest.raises(cb.UnsupportedError):
        P.heuristic_choice(small(4, 8), allow=lambda b, a, d: False)


def test_predict_trains_on_this_machines_cache(tmp_path):
    path = tmp_path / "c.sqlite"
    tc = C.TunedCache(path)
    tc.put_many([entry(small(c, 8), "numpy-direct:einsum@cpu") for c in (4, 8, 16)]
                + [entry(small(c, 9), "numpy-fft:rfft@cpu", machine="0" * 16) for c in (4, 8, 16)])
    ch = P.predict(small(8, 9), cache=path)
    assert ch.candidate == "numpy-direct:einsum@cpu"  # the other machine's entries do not count
    assert P.predictor_for("cpu", cache=path).entries[0].machine != "0" * 16
    # the predictor refits when the cache changes
    tc.put_many([entry(small(c, 9), "numpy-im2col:gemm@cpu") for c in (4, 8, 16)])
    assert P.predict(small(8, 9), cache=path).candidate == "numpy-im2col:gemm@cpu"
    # no cache at all: the heuristic
    assert P.predict(small(8, 9), cache=tmp_path / "none.sqlite").source == "heuristic"


def test_regret_and_geomean():
    times = {"a": {"x": 1.0, "y": 2.0}, "b": {"x": 3.0, "y": 1.5}, "c": {"x": 1.0}}
    r = P.regret({"a": "y", "b": "y", "c": "z"}, times)
    assert r == {"a": 2.0, "b": 1.0}
    assert P.geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert math.isnan(P.geomean([]))


def test_auto_cross_validates_bandwidth_and_prior_weight():
    def run(run_id, sizes):
        out = []
        for c in sizes:
            for e in (entry(small(c, 8), IM2COL, timings={IM2COL: 1.0, FFT: 2.0}),
                      entry(big_kernel(c, 64), FFT, timings={IM2COL: 4.0, FFT: 1.0})):
                e.run_id = run_id
                out.append(e)
        return out
    train = run("A", (4, 8, 16)) + run("B", (6, 12, 24))
    p = P.Predictor().fit(train)                     # "auto" for both
    assert p.bandwidth in P.BANDWIDTHS and p.prior_weight in P.PRIOR_WEIGHTS
    # every held-out problem (other run, other shape) has same-kind neighbours left
    assert p.cv_log_regret == pytest.approx(0.0)
    assert p.predict(small(10, 8), threads=2).candidate == IM2COL
    assert p.predict(big_kernel(10, 64), threads=2).candidate == FFT
    fixed = P.Predictor(bandwidth=2.0, prior_weight=3.0).fit(train)
    assert (fixed.bandwidth, fixed.prior_weight) == (2.0, 3.0) and fixed.cv_log_regret is not None
    # every held-out pick was the fastest (within 5%) while the prior pulls p_within toward
    # each candidate's half share: the cross-validated gap is positive and raises p_within
    q = small(10, 8)
    assert fixed.cv_within_gap > 0
    raw = fixed.estimates(q, threads=2)[IM2COL][1]
    assert fixed.prediction(q, threads=2).p_within == pytest.approx(min(raw + fixed.cv_within_gap, 1.0))
    for bad in (dict(bandwidth=0), dict(bandwidth="best"), dict(prior_weight=-1.0),
                dict(prior_weight=True), dict(bandwidth=float("inf"))):
        with pytest.raises(cb.ConvbenchError, match=next(iter(bad))):
            P.Predictor(**bad)


def test_cross_validation_by_hand():
    # three problems, two candidates, each problem its own held-out group; a huge bandwidth makes
    # every weight 1, so with prior weight 0 a score is the plain mean over the other problems
    y = np.array([[0.0, 0.2], [0.5, 0.0], [0.0, 0.9]])
    x = np.array([[0.0], [1.0], [2.0]])
    groups = [[np.array([0]), np.array([1]), np.array([2])]]
    cv = cross_validate(x, y, groups, np.ones(3, bool), [1e6], [0.0])
    # held out 0: means (0.25, 0.45) -> pick 0, lr 0, predicted 0.25
    # held out 1: means (0.0, 0.55)  -> pick 0, lr 0.5, predicted 0.0
    # held out 2: means (0.25, 0.1)  -> pick 1, lr 0.9, predicted 0.1
    assert cv.log_regret == pytest.approx((0 + 0.5 + 0.9) / 3)
    assert cv.optimism == pytest.approx(((0 - 0.25) + (0.5 - 0) + (0.9 - 0.1)) / 3)
    # p_within of the picks (share of the other problems where the pick was within 5%):
    # held out 0: candidate 0 within on 2 of {1, 2}: 0.5, measured within (1);
    # held out 1: candidate 0 within on both of {0, 2}: 1.0, measured 0.5 over (0);
    # held out 2: candidate 1 within on 1 of {0, 1}: 0.5, measured 0.9 over (0)
    assert cv.within_gap == pytest.approx(((1 - 0.5) + (0 - 1.0) + (0 - 0.5)) / 3)
    # local structure: a small bandwidth beats the global average and is chosen
    x = np.array([[0.0], [0.1], [5.0], [5.1]])
    y = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    groups = [[np.array([i]) for i in range(4)]]
    cv = cross_validate(x, y, groups, np.ones(4, bool), [0.5, 1e6], [0.0])
    assert (cv.bandwidth, cv.log_regret) == (0.5, pytest.approx(0.0))
    assert cross_validate(x, y, groups, np.ones(4, bool), [1e6], [0.0]).log_regret == pytest.approx(1.0)


def test_feature_weights_silence_a_feature_that_does_not_tell_the_winner():
    # feature 0 says which candidate wins (two clusters); feature 1 is noise spread 10x wider, so
    # with equal weights a problem's nearest neighbours are random; feature 2 is constant
    rng = np.random.default_rng(3)
    side = np.repeat([0, 1], 12)
    x = np.column_stack([side + rng.normal(0, 0.05, 24), rng.uniform(-10, 10, 24), np.zeros(24)])
    y = np.where(side[:, None] == 0, [0.0, 1.0], [1.0, 0.0])
    groups = [[np.array([i]) for i in range(24)]]
    equal = cross_validate(x, y, groups, np.ones(24, bool), [0.5], [0.0])
    weights, cv = choose_feature_weights(x, y, groups, np.ones(24, bool), [0.5], [0.0])
    assert equal.log_regret > 0.2          # random neighbours pick wrong often
    assert weights[1] == 0 and weights[0] > 0 and weights[2] == 1
    assert cv.log_regret == pytest.approx(0.0)
    assert cv == cross_validate(x * weights, y, groups, np.ones(24, bool), [0.5], [0.0])


def _cv_one_by_one(x, y, groups, bw, lam, devices):
    """The module docstring's cross-validation, one held-out problem at a time (a reference)."""
    losses = []
    for scheme in groups:
        got = []
        for group in scheme:
            keep = np.ones(len(x), bool)
            keep[group] = False
            for i in group:
                prior = np.nanmean(np.where(keep[:, None], y, np.nan), axis=0)
                near = keep & (devices == devices[i])
                w = np.exp(-0.5 * ((x - x[i]) ** 2).sum(axis=1) / bw ** 2) * near
                m = ~np.isnan(y)
                score = ((w[:, None] * np.where(m, y, 0)).sum(0) + lam * prior) / ((w[:, None] * m).sum(0) + lam)
                inside = (m & (np.where(m, y, 9) <= math.log(1.05))).astype(float)
                prior_in = (keep[:, None] * inside).sum(0) / (keep[:, None] * m).sum(0)
                p_in = ((w[:, None] * inside).sum(0) + lam * prior_in) / ((w[:, None] * m).sum(0) + lam)
                score = np.where(m[i] & ~np.isnan(prior) & np.isfinite(score), score, np.inf)
                j = np.argmin(score)
                got.append((y[i, j], y[i, j] - score[j], (y[i, j] <= math.log(1.05)) - p_in[j])
                           if np.isfinite(score).any() else (np.nanmax(y[i]), 0.0, 0.0))
        losses.append(np.mean(got, axis=0))
    # (mean log-regret of the picks, mean measured - predicted, mean within - p_within)
    return np.mean(losses, axis=0)


def test_cross_validation_matches_one_problem_at_a_time():
    rng = np.random.default_rng(6)     # a seed where the bias comes out both ways (below)
    x = rng.normal(size=(30, 3))
    y = rng.exponential(0.3, size=(30, 4))
    y[rng.random((30, 4)) < 0.25] = np.nan          # not every candidate measured everywhere
    y[0] = np.nan
    y[0, 2] = 0.0                                   # only candidate 2 here: measured elsewhere too
    y[np.isnan(y).all(axis=1), 1] = 0.5
    y -= np.nanmin(y, axis=1, keepdims=True)        # log-regret: the fastest of each problem is 0
    devices = np.array(["cpu"] * 20 + ["cuda"] * 10, dtype=object)
    groups = [[np.arange(i, min(i + 4, 30)) for i in range(0, 30, 4)], [np.array([i]) for i in range(30)]]
    gaps = []
    for bw, lam in ((0.5, 0.1), (2.0, 1.0), (0.5, 3.0)):
        cv = cross_validate(x, y, groups, np.ones(30, bool), [bw], [lam], devices=devices)
        loss, gap, pgap = _cv_one_by_one(x, y, groups, bw, lam, devices)
        assert (cv.log_regret, cv.optimism) == (pytest.approx(loss), pytest.approx(gap))
        assert cv.within_gap == pytest.approx(pgap)
        gaps.append(gap)
    # the bias is kept with its sign: scores that ran high (pessimistic) are corrected down too
    assert min(gaps) < 0 < max(gaps)


def test_predictor_feature_weights_option():
    assert (P.Predictor(feature_weights="equal").fit([]).feature_weights == 1).all()
    with pytest.raises(cb.ConvbenchError, match="feature_weights"):
        P.Predictor(feature_weights="learned")


class DeclaredFirst(NeverBackend):
    """Supports everything and declares the lowest heuristic rank on the cpu only."""

    name = "declared-first"

    def _supports(self, spec, device, algorithm):
        return Support.yes()

    def heuristic_rank(self, spec, device):
        return -1.0 if device == "cpu" else super().heuristic_rank(spec, device)


def test_heuristic_order_is_what_backends_declare():
    registry.register(DeclaredFirst)
    try:
        assert P.heuristic_choice(small(4, 8)).candidate == "declared-first:x@cpu"
        # a backend's default rank puts it after every built-in that declares one
        ranked = [n for n, _ in P._by_heuristic_rank(small(4, 8), "cuda")]
        assert ranked.index("declared-first") > max(ranked.index(n) for n in ("torch", "triton", "tensorflow"))
    finally:
        registry.unregister(DeclaredFirst.name)


# ---- benchmarks/predictor_regret.py: leave one suite out over run directories ---------------
def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "predictor_regret.py"
    spec = importlib.util.spec_from_file_location("predictor_regret", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_run(root, run_id: str, suite: str, problems: dict) -> None:
    """A run directory: problems = name -> (spec, {candidate: median ms})."""
    import json

    d = root / run_id
    d.mkdir(parents=True)
    meta = {"run_id": run_id, "suite": suite, "threads": 2, "device": "cpu", "strategy": "exhaustive",
            "created": "2026-01-01T00:00:00Z", "env_id": "env-t",
            "environment": {"cpu_model": "Test CPU 9000", "threads": 2}}
    (d / "meta.json").write_text(json.dumps(meta))
    with open(d / "records.jsonl", "w") as fh:
        for name, (spec, times) in problems.items():
            for cand, ms in times.items():
                c = cb.Candidate.parse(cand)
                fh.write(json.dumps({
                    "run_id": run_id, "problem": name, "suite": suite, "spec": spec.to_dict(),
                    "spec_key": spec.key, "label": spec.label, "backend": c.backend,
                    "algorithm": c.algorithm, "device": "cpu", "candidate": cand, "status": "ok",
                    "median_s": ms * 1e-3, "ci_low_s": ms * 1e-3, "ci_high_s": ms * 1e-3,
                    "n_samples": 10, "threads": 2, "env_id": "env-t", "info": {},
                    "timestamp": "2026-01-01T00:00:00Z"}) + "\n")


def test_regret_benchmark_leaves_one_suite_out(tmp_path, capsys):
    root = tmp_path / "results"
    fast_small = {IM2COL: 1.0, FFT: 4.0}
    sizes = (4, 5, 7, 8)
    _write_run(root, "r-small", "small", {f"s{c}": (small(c, 8), fast_small) for c in sizes})
    # the same suite measured again, IM2COL 4x slower there: merged by geometric mean (2x)
    _write_run(root, "r-small-2", "small", {f"s{c}": (small(c, 8), {IM2COL: 4.0, FFT: 4.0}) for c in sizes})
    big = {f"b{c}": (big_kernel(c, 32), {IM2COL: 5.0, FFT: 1.0}) for c in sizes}
    big["odd"] = (small(6, 8), {IM2COL: 9.0, FFT: 1.0})     # net1's shape, measured otherwise here
    _write_run(root, "r-big", "big", big)
    _write_run(root, "r-engines", "engines", {"net1/x": (small(6, 8), {IM2COL: 1.0, FFT: 3.0}),
                                              "net2/y": (big_kernel(6, 32), {IM2COL: 4.0, FFT: 1.0})})
    _write_run(root, "r-synthetic-x1.1", "small", {"s4": (small(4, 8), {IM2COL: 99.0, FFT: 1.0})})
    (root / "broken").mkdir()
    (root / "broken" / "records.jsonl").write_text("{not json\n")
    B = _bench()
    runs = B.find_runs([str(root)], ["*-x1.1"])
    assert sorted(r.name for r in runs) == ["broken", "r-big", "r-engines", "r-small", "r-small-2"]
    train, test, specs, cpus = B.load(runs)
    assert "skipped" in capsys.readouterr().err            # the unreadable run is named
    suites = sorted({k[3] for k in test})
    assert suites == ["big", "net1", "net2", "small"]      # NET/LAYER problems split by network
    small4 = next(k for k in test if k[4] == small(4, 8).key)
    assert test[small4][IM2COL] == pytest.approx(2e-3) and test[small4][FFT] == pytest.approx(4e-3)
    import argparse
    rows = dict(B.loso(train, test, specs, argparse.Namespace(bandwidth="auto", prior_weight="auto")))
    by_suite = {name.split()[1]: r for name, r in rows.items()}
    assert sorted(by_suite) == suites
    net1 = by_suite["net1"]
    # trained on small, big (without its copy of net1's shape: shapes of the held-out suite
    # never train) and net2: its small neighbours say IM2COL (1x); the best fixed
    # candidate on those problems is FFT (3x here); the oracle fixed is IM2COL
    assert net1["predictor"] == [pytest.approx(1.0)] and net1["fixed"] == [pytest.approx(3.0)]
    assert net1["names"] == [FFT, IM2COL] and net1["oracle"] == [pytest.approx(1.0)]
    assert by_suite["net2"]["predictor"] == [pytest.approx(1.0)]
    # the predictor's pick is Predictor.prediction's: the equal-weights column agrees here
    assert by_suite["net2"]["equal"] == [pytest.approx(1.0)]
    B.print_table(list(rows.items()), cpus)
    out = capsys.readouterr().out
    assert "all held-out problems" in out and "net1" in out and "machine " in out
