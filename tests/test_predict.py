"""The predictor for cache misses: nearest cached neighbours, then the documented heuristic."""
from __future__ import annotations

import math

import pytest

import convbench as cb
from convbench import cache as C
from convbench import predict as P
from convbench import registry
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


def test_scores_are_the_shrunk_weighted_mean_log_regret():
    a, b, far = small(8, 8), small(8, 16), big_kernel(64, 64)
    train = [entry(a, IM2COL, timings={IM2COL: 1.0, FFT: 2.0}),
             entry(b, FFT, timings={IM2COL: 1.5, FFT: 1.0}),
             entry(far, FFT, timings={IM2COL: 8.0, FFT: 1.0, DIRECT: 4.0})]
    p = P.Predictor(k=2, prior_weight=1.0).fit(train)
    q = small(8, 10)
    nb = {n.entry.spec_key: n.distance for n in p.neighbours(q, threads=2)}
    wa, wb = 1 / (nb[a.key] + 0.5), 1 / (nb[b.key] + 0.5)   # the two nearest
    prior_im2col = (0 + math.log(1.5) + math.log(8)) / 3
    prior_fft = (math.log(2) + 0 + 0) / 3
    got = p.scores(q, threads=2)
    assert got[IM2COL] == pytest.approx((wa * 0 + wb * math.log(1.5) + prior_im2col) / (wa + wb + 1))
    assert got[FFT] == pytest.approx((wa * math.log(2) + wb * 0 + prior_fft) / (wa + wb + 1))
    # only the far problem measured DIRECT: the neighbours know nothing of it, the prior decides
    assert got[DIRECT] == pytest.approx(math.log(4))
    assert p.predict(q, threads=2).candidate == min(got, key=got.get)


def test_the_prior_pulls_toward_the_candidate_that_is_good_everywhere():
    # FFT is never much slower and often far faster; IM2COL wins the one nearby problem by 5%
    near = entry(small(8, 8), IM2COL, timings={IM2COL: 1.0, FFT: 1.05})
    others = [entry(big_kernel(c, s), FFT, timings={IM2COL: 6.0, FFT: 1.0})
              for c in (16, 32, 64) for s in (32, 64)]
    q = small(8, 9)
    assert P.Predictor(k=1, prior_weight=0.0).fit([near, *others]).predict(q, threads=2).candidate == IM2COL
    assert P.Predictor(k=1, prior_weight=1.0).fit([near, *others]).predict(q, threads=2).candidate == FFT


def test_winner_only_entries_count_unlisted_candidates_as_2x_slower():
    e = entry(small(8, 8), IM2COL)               # no timings: an entry from an older cache
    assert e.timings == {}
    p = P.Predictor(k=1, prior_weight=0.0).fit([e])
    assert p.scores(small(8, 8), threads=2) == {IM2COL: 0.0}
    e2 = entry(small(8, 8), IM2COL)
    e2.runner_up, e2.margin = FFT, 3.0              # runner-up 4x slower
    p = P.Predictor(k=1, prior_weight=0.0).fit([e2, entry(big_kernel(8, 8), DIRECT)])
    s = p.scores(small(8, 8), threads=2)
    assert s[FFT] == pytest.approx(math.log(4)) and s[IM2COL] == 0.0
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
    p = P.Predictor(k=3).fit(train)
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
    p = P.Predictor(k=3).fit(train)
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


def test_auto_cross_validates_k_and_prior_weight_across_runs():
    def run(run_id, sizes):
        out = []
        for c in sizes:
            for e in (entry(small(c, 8), IM2COL, timings={IM2COL: 1.0, FFT: 2.0}),
                      entry(big_kernel(c, 64), FFT, timings={IM2COL: 4.0, FFT: 1.0})):
                e.run_id = run_id
                out.append(e)
        return out
    train = run("A", (4, 8, 16)) + run("B", (6, 12, 24))
    p = P.Predictor().fit(train)                     # k="auto"
    assert (p.k, p.prior_weight) in [(k, w) for k in P.K_GRID for w in P.PRIOR_GRID]
    # leave-one-run-out: every held-out problem has a same-kind neighbour in the other run
    assert p.cv_log_regret == pytest.approx(0.0)
    assert (p.k, p.prior_weight) == (1, 0.0)        # ties go to the smallest k and weight
    assert p.predict(small(10, 8), threads=2).candidate == IM2COL
    assert p.predict(big_kernel(10, 64), threads=2).candidate == FFT
    fixed = P.Predictor(k=5, prior_weight=3.0).fit(train)
    assert (fixed.k, fixed.prior_weight, fixed.cv_log_regret) == (5, 3.0, None)
    with pytest.raises(cb.ConvbenchError, match="k:"):
        P.Predictor(k="best")


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
