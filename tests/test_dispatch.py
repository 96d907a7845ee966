"""convbench.conv(): right answers, the caller's type back, cache/predictor/tune policies."""
from __future__ import annotations

import numpy as np
import pytest

import convbench as cb
from convbench import cache as C
from convbench import dispatch as D
from convbench.errors import InvalidInputError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache and a clean memo."""
    monkeypatch.setenv("CONVBENCH_CACHE", str(tmp_path / "tuned.sqlite"))
    D.clear_memo()
    yield tmp_path / "tuned.sqlite"
    D.clear_memo()


def put(path, spec: cb.ConvSpec, candidate: str, runner_up: str | None = None) -> None:
    c = cb.Candidate.parse(candidate)
    C.TunedCache(path).put(C.CacheEntry(
        spec_key=spec.key, machine=C.machine_key(C.current_environment(), "cpu"),
        threads=C.default_threads(), device="cpu", spec=spec.to_dict(), candidate=candidate,
        backend=c.backend, algorithm=c.algorithm, median_s=1e-4, runner_up=runner_up,
        runner_up_median_s=2e-4 if runner_up else None, timestamp="2030-01-01T00:00:00+00:00",
        versions=C.current_versions()))


CASES = [
    dict(x=(2, 3, 10, 9), w=(4, 3, 3, 3), kw=dict(padding=1)),
    dict(x=(1, 4, 11), w=(6, 2, 5), kw=dict(stride=2, padding=2, dilation=1, groups=2)),
    dict(x=(1, 4, 9, 9), w=(4, 1, 3, 3), kw=dict(padding=((1, 0), (2, 1)), groups=4)),       # asymmetric, dw
    dict(x=(1, 3, 7, 7), w=(3, 5, 3, 3), kw=dict(stride=2, padding=1, transposed=True, output_padding=1)),
    dict(x=(1, 2, 5, 6, 4), w=(3, 2, 2, 3, 1), kw=dict(dilation=(1, 2, 1))),
]


def _arrays(case, dtype=np.float32, layout="channels_first", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, case["x"]).astype(dtype)
    if layout == "channels_last":
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    w = rng.uniform(-1, 1, case["w"]).astype(dtype)
    return x, w


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("candidate", ["numpy-im2col:gemm@cpu", "numpy-direct:einsum@cpu"])
def test_numpy_inputs_cached_numpy_candidate_matches_reference(private_cache, case, candidate):
    x, w = _arrays(case)
    spec = D.spec_from_arrays(x, w, **case["kw"])
    put(private_cache, spec, candidate)
    y = cb.conv(x, w, **case["kw"])
    assert type(y) is np.ndarray and y.dtype == np.float32 and y.shape == spec.output_shape
    assert cb.relative_error(y, cb.reference(spec, x, w)) < 1e-5
    p = D.plan(x, w, **case["kw"])
    assert p.choice.candidate == candidate and p.choice.source == "cache"


def test_channels_last_numpy(private_cache):
    case = CASES[0]
    x, w = _arrays(case, layout="channels_last")
    spec = D.spec_from_arrays(x, w, layout="channels_last", **case["kw"])
    assert spec.layout == "channels_last" and spec.c_in == 3
    put(private_cache, spec, "numpy-im2col:gemm@cpu")
    y = cb.conv(x, w, layout="channels_last", **case["kw"])
    assert y.shape == spec.output_shape
    assert cb.relative_error(y, cb.reference(spec, x, w)) < 1e-5


def test_memo_makes_repeated_calls_skip_planning(private_cache, monkeypatch):
    x, w = _arrays(CASES[0])
    put(private_cache, D.spec_from_arrays(x, w, padding=1), "numpy-im2col:gemm@cpu")
    y1 = cb.conv(x, w, padding=1)
    calls = []
    real = D._plan_for
    monkeypatch.setattr(D, "_plan_for", lambda *a: calls.append(a) or real(*a))
    y2 = cb.conv(x, w, padding=1)
    assert calls == []  # served from the memo
    np.testing.assert_array_equal(y1, y2)
    cb.conv(x, w, padding=[1, 1])  # a list cannot be a dict key: planned again, still right
    assert len(calls) == 1


def test_miss_uses_the_predictor(private_cache):
    # cached neighbours all won by numpy-direct:einsum -> an unseen shape is predicted the same
    for c in (2, 3, 4):
        put(private_cache, cb.ConvSpec(n=2, c_in=c, c_out=4, input_size=(10, 9), kernel_size=3, padding=1),
            "numpy-direct:einsum@cpu")
    x = np.random.default_rng(1).uniform(-1, 1, (2, 5, 10, 9)).astype(np.float32)
    w = np.random.default_rng(2).uniform(-1, 1, (4, 5, 3, 3)).astype(np.float32)
    p = D.plan(x, w, padding=1)
    assert (p.choice.source, p.choice.candidate) == ("predicted", "numpy-direct:einsum@cpu")
    assert cb.lookup(p.spec) is None
    y = cb.conv(x, w, padding=1)
    assert cb.relative_error(y, cb.reference(p.spec, x, w)) < 1e-5


def test_cached_winner_ineligible_for_input_type_uses_runner_up(private_cache):
    x, w = _arrays(CASES[0])
    spec = D.spec_from_arrays(x, w, padding=1)
    put(private_cache, spec, "tensorflow:eager@cpu", runner_up="numpy-im2col:gemm@cpu")
    p = D.plan(x, w, padding=1)
    assert (p.choice.candidate, p.choice.source) == ("numpy-im2col:gemm@cpu", "cache-runner-up")


def test_memo_follows_cache_updates_made_after_planning(private_cache, monkeypatch):
    monkeypatch.setattr(D, "RECHECK_S", 0.0)
    monkeypatch.setattr(D, "_next_check", 0.0)
    x, w = _arrays(CASES[0])
    spec = D.spec_from_arrays(x, w, padding=1)
    put(private_cache, spec, "numpy-direct:einsum@cpu")
    cb.conv(x, w, padding=1)
    assert [p.choice.candidate for p in D._MEMO.values()] == ["numpy-direct:einsum@cpu"]
    cb.conv(x, w, padding=1)
    assert len(D._MEMO) == 1                       # unchanged cache: the plan is kept
    put(private_cache, spec, "numpy-im2col:gemm@cpu")   # e.g. a sweep in another process
    y = cb.conv(x, w, padding=1)
    assert [p.choice.candidate for p in D._MEMO.values()] == ["numpy-im2col:gemm@cpu"]
    assert cb.relative_error(y, cb.reference(spec, x, w)) < 1e-5


def test_eligibility_rules():
    s = cb.ConvSpec(n=1, c_in=4, c_out=4, input_size=(8, 8), kernel_size=3, padding=1)
    assert D.eligible("numpy", "numpy-im2col", "gemm", "cpu", spec=s)
    assert not D.eligible("numpy", "numpy-fft", "rfft-precomputed-weights", "cpu", spec=s)  # untimed precompute
    assert not D.eligible("numpy", "tensorflow", "eager", "cpu", spec=s)                    # copies inputs
    assert not D.eligible("numpy", "numba", "direct", "cpu", spec=s)                        # copies inputs
    assert not D.eligible("numpy", "numpy-im2col", "gemm", "cuda", spec=s)                  # data is on the cpu
    assert D.eligible("torch-cpu", "numpy-im2col", "gemm", "cpu", spec=s)
    assert not D.eligible("torch-cpu", "numpy-im2col", "gemm", "cpu", spec=s, requires_grad=True)
    assert not D.eligible("torch-cuda", "numpy-im2col", "gemm", "cpu", spec=s)
    assert not D.eligible("numpy", "no-such-backend", "x", "cpu", spec=s)


def test_tune_policy_times_and_stores_an_entry(private_cache, monkeypatch):
    monkeypatch.setattr(D, "TUNE_BACKENDS", ["numpy-im2col", "numpy-direct"])
    monkeypatch.setattr(D, "TUNE_BUDGET_S", 0.02)
    x, w = _arrays(CASES[0])
    spec = D.spec_from_arrays(x, w, padding=1)
    assert cb.lookup(spec) is None
    y = cb.conv(x, w, padding=1, policy="tune")
    assert cb.relative_error(y, cb.reference(spec, x, w)) < 1e-5
    ch = cb.lookup(spec)
    assert ch is not None and ch.backend in ("numpy-im2col", "numpy-direct")
    e = C.TunedCache(private_cache).get(spec)
    assert e.source == "conv(tune, numpy input)" and e.median_s > 0 and e.max_error < 1e-4
    # all three candidates were looked at: timed ok, or pruned by the race with its estimate
    # (under a parallel test worker one can be pruned, and then there is no runner-up)
    assert len(e.timings) == 3 and e.candidate in e.timings
    assert e.runner_up is None or e.runner_up in e.timings
    D.clear_memo()
    assert D.plan(x, w, padding=1, policy="tune").choice.source == "cache"  # a hit now: no re-tuning


def test_input_errors():
    x, w = _arrays(CASES[0])
    cb.conv(x, w, stride=1, padding=1)               # a memoised plan for stride 1 ...
    with pytest.raises(InvalidInputError, match="not True/False"):
        cb.conv(x, w, stride=True, padding=1)        # ... must not serve stride=True
    with pytest.raises(InvalidInputError, match="not True/False"):
        cb.conv(x, w, padding=True)
    with pytest.raises(InvalidInputError, match="w.shape"):
        cb.conv(x, w[:, :2], padding=1)
    with pytest.raises(InvalidInputError, match="dtype"):
        cb.conv(x, w.astype(np.float64), padding=1)
    with pytest.raises(InvalidInputError, match="does not move data"):
        cb.conv(x, w, padding=1, device="cuda")
    with pytest.raises(InvalidInputError, match="numpy arrays or torch tensors"):
        cb.conv(x.tolist(), w)
    with pytest.raises(InvalidInputError, match="policy"):
        cb.conv(x, w, policy="fastest")
    with pytest.raises(InvalidInputError, match="3, 4 or 5"):
        cb.conv(x[0, 0], w[0, 0])


# ---- torch ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_torch_tensors_match_torch_and_reference(case):
    torch = pytest.importorskip("torch", reason="torch not installed")
    import torch.nn.functional as F

    x, w = _arrays(case)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    kw = case["kw"]
    y = cb.conv(xt, wt, **kw)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.device.type == "cpu"
    spec = D.spec_from_arrays(x, w, **kw)
    assert cb.relative_error(y.numpy(), cb.reference(spec, x, w)) < 1e-5
    if not kw.get("transposed") and spec.symmetric_padding:
        fn = getattr(F, f"conv{spec.dims}d")
        ref = fn(xt, wt, stride=spec.stride, padding=tuple(a for a, _ in spec.padding),
                 dilation=spec.dilation, groups=spec.groups)
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    if kw.get("transposed"):
        ref = F.conv_transpose2d(xt, wt, stride=2, padding=1, output_padding=1)
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_torch_numpy_candidate_gives_tensor_back(private_cache):
    torch = pytest.importorskip("torch", reason="torch not installed")
    x, w = _arrays(CASES[0])
    spec = D.spec_from_arrays(x, w, padding=1)
    put(private_cache, spec, "numpy-im2col:gemm@cpu")
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    p = D.plan(xt, wt, padding=1)
    assert p.choice.candidate == "numpy-im2col:gemm@cpu"
    y = cb.conv(xt, wt, padding=1)
    assert isinstance(y, torch.Tensor)
    assert cb.relative_error(y.numpy(), cb.reference(spec, x, w)) < 1e-5
    # a tensor that requires grad cannot go through numpy: torch is used, gradients flow
    xg = xt.clone().requires_grad_(True)
    pg = D.plan(xg, wt, padding=1)
    assert pg.choice.backend == "torch"
    cb.conv(xg, wt, padding=1).sum().backward()
    assert xg.grad is not None and xg.grad.shape == xg.shape


@pytest.mark.parametrize("case", CASES[:4])
def test_torch_dispatch_callable_matches_torch_backend_for_every_algorithm(case):
    """The torch hook for conv() reproduces each torch backend algorithm (no silent drift)."""
    pytest.importorskip("torch", reason="torch not installed")
    x, w = _arrays(case)
    spec = D.spec_from_arrays(x, w, **case["kw"])
    b = cb.get_backend("torch")
    for algo in b.algorithms("cpu"):
        if not b.supports(spec, "cpu", algo):
            continue
        if not D.eligible("numpy", "torch", algo, "cpu", spec=spec):
            # torch.compile candidates have no conv() hook by design: never dispatched
            assert "compile" in algo
            continue
        mine = D.runner(spec, "numpy", "torch", algo, "cpu")(x, w)
        theirs = cb.convolve(spec, x, w, backend="torch", algorithm=algo)
        assert type(mine) is np.ndarray and mine.shape == theirs.shape
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_torch_bfloat16_numpy_zero_copy_path():
    torch = pytest.importorskip("torch", reason="torch not installed")
    import ml_dtypes

    x, w = _arrays(CASES[0])
    xb, wb = x.astype(ml_dtypes.bfloat16), w.astype(ml_dtypes.bfloat16)
    spec = D.spec_from_arrays(xb, wb, padding=1)
    assert spec.dtype == "bfloat16"
    y = D.runner(spec, "numpy", "torch", "default", "cpu")(xb, wb)
    assert y.dtype == np.dtype(ml_dtypes.bfloat16)
    assert cb.relative_error(y, cb.reference(spec, xb, wb)) < 2e-2
    assert torch.from_numpy(xb.view(np.int16)).data_ptr() == xb.__array_interface__["data"][0]


@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, padding=1, transposed=True, output_padding=1)])
def test_eligible_numpy_family_candidates_do_not_copy_inputs_in_prepare(kw):
    """conv() calls prepare() per call; eligible means prepare() reads the caller's arrays, not
    a copy (checked by changing the arrays after prepare: run() must see the change)."""
    x, w = _arrays(CASES[3] if kw.get("transposed") else CASES[0])
    spec = D.spec_from_arrays(x, w, **kw)
    cands = D.eligible_candidates(spec, "numpy", "cpu", backends=["numpy-*", "scipy-*"])
    assert {c.backend for c in cands} >= {"numpy-im2col", "numpy-direct"}
    for c in cands:
        xa, wa = x.copy(), w.copy()
        p = cb.get_backend(c.backend).prepare(spec, xa, wa, c.algorithm)
        xa *= 2
        wa *= 3
        p.run()
        assert cb.relative_error(p.result(), cb.reference(spec, xa, wa)) < 1e-4, str(c)


def test_tune_with_torch_tensors_verifies_and_times_through_the_hooks(private_cache, monkeypatch):
    torch = pytest.importorskip("torch", reason="torch not installed")
    monkeypatch.setattr(D, "TUNE_BACKENDS", ["torch", "numpy-im2col"])
    monkeypatch.setattr(D, "TUNE_BUDGET_S", 0.02)
    x, w = _arrays(CASES[1])
    spec = D.spec_from_arrays(x, w, **CASES[1]["kw"])
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    y = cb.conv(xt, wt, policy="tune", **CASES[1]["kw"])
    assert isinstance(y, torch.Tensor)
    assert cb.relative_error(y.numpy(), cb.reference(spec, x, w)) < 1e-5
    e = C.TunedCache(private_cache).get(spec)
    assert e.source == "conv(tune, torch-cpu input)" and e.max_error < 1e-4
    # torch's algorithms and numpy-im2col were all verified and timed on tensors
    assert {c.split(":")[0] for c in e.timings} == {"torch", "numpy-im2col"}


class _ThirdParty(cb.Backend):
    """A third-party backend that offers conv() a zero-copy callable for numpy input only."""

    name = "third-party-dispatch"
    family = "third-party"
    capabilities = cb.Capabilities(dims=frozenset({2}), dtypes=frozenset({"float32"}))
    calls: list = []

    def algorithms(self, device="cpu"):
        return ["ref"] if device == "cpu" else []

    def _prepare(self, spec, x, w, algorithm, device):  # pragma: no cover - conv() does not prepare
        raise AssertionError

    def dispatch_callable(self, spec, algorithm, device, kind):   # the four-argument form
        if kind != "numpy":
            return None

        def run(x, w):
            type(self).calls.append(x.shape)
            return cb.reference(spec, x, w).astype(np.float32)
        return run


def test_a_third_party_backend_reaches_conv_through_its_hook(private_cache):
    from convbench import registry

    registry.register(_ThirdParty)
    try:
        x, w = _arrays(CASES[0])
        spec = D.spec_from_arrays(x, w, padding=1)
        assert D.eligible("numpy", "third-party-dispatch", "ref", "cpu", spec=spec)
        assert not D.eligible("torch-cpu", "third-party-dispatch", "ref", "cpu", spec=spec)
        put(private_cache, spec, "third-party-dispatch:ref@cpu")
        y = cb.conv(x, w, padding=1)
        assert _ThirdParty.calls == [x.shape]
        assert cb.relative_error(y, cb.reference(spec, x, w)) < 1e-6
    finally:
        registry.unregister(_ThirdParty.name)


# ---- input kinds asked of the backends; tune's records -------------------------------------
class Box:
    """A framework's array, as far as conv() is concerned."""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a
        self.shape, self.dtype = a.shape, a.dtype
        self.device = "cpu"
        self.requires_grad = False


class _Boxed(cb.Backend):
    """A third-party backend whose framework's arrays are Box objects (input kind boxed-cpu)."""

    name = "boxed-dispatch"
    family = "boxed"
    capabilities = cb.Capabilities(dims=frozenset({2}), dtypes=frozenset({"float32"}))
    native_kinds = ("boxed-cpu",)
    syncs: list = []
    wrong = False

    def algorithms(self, device="cpu"):
        return ["ref"] if device == "cpu" else []

    def _prepare(self, spec, x, w, algorithm, device):  # pragma: no cover - conv() does not prepare
        raise AssertionError

    def native_kind(self, a):
        return "boxed-cpu" if isinstance(a, Box) else None

    def to_native(self, a, kind):
        return Box(a.copy())

    def from_native(self, t):
        return np.array(t.a)

    def synchronize_native(self, kind):
        type(self).syncs.append(kind)

    def expected_failure(self, spec, device, algorithm):
        return "the boxed kernel adds one on purpose" if type(self).wrong else None

    def dispatch_callable(self, spec, algorithm, device, kind, requires_grad=False):
        if kind != "boxed-cpu":
            return None
        off = 1.0 if type(self).wrong else 0.0
        return lambda x, w: Box((cb.reference(spec, x.a, w.a) + off).astype(np.float32))


@pytest.fixture
def boxed(monkeypatch):
    from convbench import registry

    registry.register(_Boxed)
    monkeypatch.setattr(D, "TUNE_BACKENDS", ["boxed-dispatch"])
    monkeypatch.setattr(D, "TUNE_BUDGET_S", 0.02)
    _Boxed.syncs, _Boxed.wrong = [], False
    yield _Boxed
    registry.unregister(_Boxed.name)


def test_input_kinds_are_asked_of_the_registered_backends(boxed):
    x, w = _arrays(CASES[0])
    assert "boxed-cpu" in D.input_kinds()
    assert D.input_kind(Box(x), Box(w)) == "boxed-cpu"
    assert D.input_kind(x, w) == "numpy"
    with pytest.raises(InvalidInputError, match="does not convert"):
        D.input_kind(x, Box(w))
    with pytest.raises(InvalidInputError, match="boxed tensors"):
        D.input_kind(x.tolist(), w)


def test_tune_on_a_native_kind_syncs_through_the_backend_and_stores_a_record(boxed, private_cache,
                                                                             monkeypatch):
    import re

    from convbench.outcome import RECORD_FIELDS

    seen = []
    real = C.entries_from_run
    monkeypatch.setattr(C, "entries_from_run",
                        lambda recs, meta, **kw: seen.append(recs) or real(recs, meta, **kw))
    x, w = _arrays(CASES[0])
    y = cb.conv(Box(x), Box(w), padding=1, policy="tune")
    spec = D.spec_from_arrays(x, w, padding=1)
    assert isinstance(y, Box) and cb.relative_error(y.a, cb.reference(spec, x, w)) < 1e-5
    assert set(boxed.syncs) == {"boxed-cpu"}         # Backend.synchronize_native, per sample
    e = C.TunedCache(private_cache).get(spec)
    assert e.source == "conv(tune, boxed-cpu input)" and e.candidate == "boxed-dispatch:ref@cpu"
    assert re.fullmatch(r"\d{8}-\d{6}-conv-tune-[0-9a-f]{6}", e.run_id)   # results.new_run_id
    (rec,) = seen[0]
    assert tuple(rec) == RECORD_FIELDS                 # outcome.make_record, as a sweep writes
    assert rec["status"] == "ok" and rec["env_id"] and rec["gflops"] > 0 and rec["run_id"] == e.run_id


def test_tune_keeps_the_backends_expected_failure_note(boxed):
    from convbench.errors import UnsupportedError

    boxed.wrong = True
    x, w = _arrays(CASES[0])
    with pytest.raises(UnsupportedError, match="expected failure declared by the backend: "
                                               "the boxed kernel adds one on purpose"):
        cb.conv(Box(x), Box(w), padding=1, policy="tune")


# ---- int8: conv() on int8 arrays, user scales, the cache --------------------------------------
from convbench.quant import quant_params  # noqa: E402
from convbench.registry import Backend, Capabilities, register, unregister  # noqa: E402


class _Int8Numpy(Backend):
    """An int8 candidate for numpy inputs: the exact int8 reference of the spec it is given
    (so its output follows the plan's scales), returned as the caller's numpy type."""

    name = "test-int8-numpy"
    family = "test-int8"
    capabilities = Capabilities(dtypes=frozenset({"int8"}))

    def algorithms(self, device="cpu"):
        return ["ref"] if device == "cpu" else []

    def _prepare(self, spec, x, w, algorithm, device):  # pragma: no cover - conv() only
        raise AssertionError("conv() uses dispatch_callable")

    def dispatch_callable(self, spec, algorithm, device, kind, requires_grad=False):
        if kind != "numpy" or device != "cpu":
            return None
        return lambda x, w: cb.reference(spec, x, w)


@pytest.fixture
def int8_backend():
    register(_Int8Numpy)
    yield _Int8Numpy.name
    unregister(_Int8Numpy.name)


Q8 = cb.ConvSpec(n=1, c_in=4, c_out=3, input_size=(7, 6), kernel_size=3, padding=1, dtype="int8")
SCALES = (0.02, [0.004, 0.001, 0.0025], 0.05)


def test_conv_on_int8_numpy_returns_int8(private_cache, int8_backend):
    x, w = cb.make_inputs(Q8, seed=2)
    spec = D.spec_from_arrays(x, w, padding=1)
    assert spec == Q8 and spec.dtype == "int8" and spec.quant is None
    put(private_cache, spec, f"{int8_backend}:ref@cpu")
    y = cb.conv(x, w, padding=1)
    assert type(y) is np.ndarray and y.dtype == np.int8 and y.shape == Q8.output_shape
    np.testing.assert_array_equal(y, cb.reference(Q8, x, w))
    assert D.plan(x, w, padding=1).choice.source == "cache"


def test_conv_scales_reach_the_candidate_and_key_the_memo(private_cache, int8_backend):
    x, w = cb.make_inputs(Q8, seed=2)
    put(private_cache, Q8, f"{int8_backend}:ref@cpu")   # one cache entry serves every scale
    user = Q8.replace(quant=SCALES)
    y_default = cb.conv(x, w, padding=1)
    y_user = cb.conv(x, w, padding=1, scales=SCALES)
    np.testing.assert_array_equal(y_user, cb.reference(user, x, w))
    assert np.abs(y_user.astype(int) - y_default.astype(int)).max() > 1
    p = D.plan(x, w, padding=1, scales=SCALES)
    assert p.spec.quant == quant_params(user) and p.choice.source == "cache"
    # memo: one plan per scales; arrays of scales work and hit the same plan
    assert len(D._MEMO) == 2
    again = cb.conv(x, w, padding=1, scales=(0.02, np.array(SCALES[1]), 0.05))
    np.testing.assert_array_equal(again, y_user)
    assert len(D._MEMO) == 2
    np.testing.assert_array_equal(cb.conv(x, w, padding=1), y_default)


@pytest.mark.parametrize("scales,match", [
    ((0.02, [0.1, 0.1], 0.05), r"scales: quant\.w_scale: has shape \(2,\), but c_out is 3"),
    ((0.02, 0.1, -1.0), r"scales: quant\.y_scale: -1\.0 must be positive"),
    ({"x": 1}, r"scales: quant: \['x'\] must be exactly"),
])
def test_conv_bad_scales_are_named(private_cache, int8_backend, scales, match):
    x, w = cb.make_inputs(Q8, seed=2)
    with pytest.raises(InvalidInputError, match=match):
        cb.conv(x, w, padding=1, scales=scales)


def test_conv_scales_on_float_inputs_are_refused(private_cache):
    x, w = _arrays(CASES[0])
    with pytest.raises(InvalidInputError, match=r"scales: given for float32 arrays; .* only for int8"):
        cb.conv(x, w, padding=1, scales=SCALES)


def test_cache_stores_and_finds_int8_entries_apart_from_float(private_cache):
    put(private_cache, Q8, "onnxruntime:qlinearconv@cpu")
    hit = cb.lookup(Q8)
    assert hit is not None and hit.candidate == "onnxruntime:qlinearconv@cpu"
    assert hit.spec_key == Q8.key and "int8" in Q8.key
    assert cb.lookup(Q8.replace(quant=SCALES)).candidate == hit.candidate   # scales: same problem
    assert cb.lookup(Q8.replace(dtype="float32")) is None                   # float: another one
    (entry,) = C.TunedCache(private_cache).entries()
    assert cb.ConvSpec.from_dict(entry.spec) == Q8 and entry.spec["dtype"] == "int8"


def test_int8_run_records_fill_the_cache_like_a_sweep(private_cache):
    from convbench.cache import entries_from_run
    from convbench.outcome import make_record

    base = {"run_id": "r", "problem": "q", "suite": "int8", "spec": Q8.to_dict(),
            "spec_key": Q8.key, "label": Q8.label}
    recs = [make_record(base, Q8, cb.Candidate.parse(c), {"status": "ok", "median_s": m,
                                                           "ci_low_s": m * 0.99, "ci_high_s": m * 1.01},
                        threads=C.default_threads(), env_id="e")
            for c, m in (("onnxruntime:qlinearconv@cpu", 1e-4), ("numba:int8@cpu", 3e-4))]
    meta = {"run_id": "r", "threads": C.default_threads(), "environment": C.current_environment()}
    entries, no_winner, _ = entries_from_run(recs, meta)
    assert no_winner == 0 and [e.candidate for e in entries] == ["onnxruntime:qlinearconv@cpu"]
    C.TunedCache(private_cache).put_many(entries)
    hit = cb.lookup(Q8)
    assert hit is not None and (hit.candidate, hit.runner_up) == ("onnxruntime:qlinearconv@cpu",
                                                                  "numba:int8@cpu")


# ---- policy="auto": cached choice, else the prediction, tuned once its expected loss pays ----
def _prediction(candidate: str, expected_regret: float):
    from convbench.predict import Prediction

    c = cb.Candidate.parse(candidate)
    choice = C.Choice(candidate=candidate, backend=c.backend, algorithm=c.algorithm, device="cpu",
                      median_s=None, margin=None, source="predicted")
    return Prediction(choice, expected_regret, 0.5, 1.0)


def test_auto_runner_tunes_once_the_expected_loss_exceeds_the_cost(monkeypatch):
    from convbench.dispatch import auto as A

    ticks = iter(np.arange(0.0, 100.0, 0.5))
    monkeypatch.setattr(A, "perf_counter", lambda: float(next(ticks)))   # every call takes 0.5 s
    tuned_choice = _prediction("numpy-direct:einsum@cpu", 1.0).choice
    tunes = []
    run = A.AutoRunner(_prediction("numpy-im2col:gemm@cpu", 2.0), lambda x, w: "predicted",
                       lambda x, w: tunes.append((x, w)) or (tuned_choice, lambda x, w: "tuned"),
                       cost_s=1.2)
    # expected loss per call: 0.5 s * (1 - 1/2) = 0.25 s; above 1.2 s after the 5th call
    assert [run(i, -i) for i in range(8)] == ["predicted"] * 5 + ["tuned"] * 3
    assert tunes == [(5, -5)]                     # once, on the 6th call's own arrays
    assert run.calls == 5 and run.lost_s == pytest.approx(1.25) and run.choice is tuned_choice


def test_auto_runner_never_tunes_a_sure_prediction_and_keeps_it_when_tuning_fails(monkeypatch):
    from convbench.dispatch import auto as A
    from convbench.errors import UnsupportedError

    sure = A.AutoRunner(_prediction("numpy-im2col:gemm@cpu", 1.0), lambda x, w: 1,
                        lambda x, w: pytest.fail("tuned a prediction expected to lose nothing"), cost_s=0.0)
    assert [sure(None, None) for _ in range(20)] == [1] * 20 and not sure.tuned
    attempts = []

    def failing(x, w):
        attempts.append(1)
        raise UnsupportedError("no candidate runs")
    run = A.AutoRunner(_prediction("numpy-im2col:gemm@cpu", 1.5), lambda x, w: 2, failing, cost_s=0.0)
    assert run(None, None) == 2                   # the first call only measures
    with pytest.warns(A.AutoTuneWarning, match="keeping the predicted numpy-im2col:gemm@cpu"):
        assert run(None, None) == 2
    assert [run(None, None) for _ in range(5)] == [2] * 5 and attempts == [1]   # tried once
    assert A.tuning_cost_s(7, 0.1) == pytest.approx(0.7) and A.tuning_cost_s(7, 0.1, 2.0) == 2.0


def test_auto_policy_uses_a_hit_else_predicts_then_tunes(private_cache, monkeypatch):
    from convbench.dispatch.auto import AutoRunner

    monkeypatch.setattr(D, "TUNE_BACKENDS", ["numpy-im2col", "numpy-direct"])
    monkeypatch.setattr(D, "TUNE_BUDGET_S", 0.02)
    x, w = _arrays(CASES[0])
    spec = D.spec_from_arrays(x, w, padding=1)
    p = D.plan(x, w, padding=1, policy="auto")    # empty cache: the heuristic, assumed 1.5x
    assert isinstance(p.run, AutoRunner) and p.prediction.source == "heuristic"
    n = len(D.eligible_candidates(spec, "numpy", "cpu", backends=["numpy-im2col", "numpy-direct"]))
    assert n >= 2 and p.run.cost_s == pytest.approx(n * 0.02)
    monkeypatch.setattr(D, "AUTO_TUNE_COST_S", 0.0)   # any expected loss pays for tuning
    y1 = cb.conv(x, w, padding=1, policy="auto")
    assert cb.lookup(spec) is None                # the first call ran the prediction only
    y2 = cb.conv(x, w, padding=1, policy="auto")   # the second one tuned first
    e = C.TunedCache(private_cache).get(spec)
    assert e is not None and e.source == "conv(tune, numpy input)"
    for y in (y1, y2):
        assert cb.relative_error(y, cb.reference(spec, x, w)) < 1e-5
    D.clear_memo()
    hit = D.plan(x, w, padding=1, policy="auto")
    assert (hit.choice.source, hit.prediction) == ("cache", None) and not isinstance(hit.run, AutoRunner)


def test_auto_policy_prediction_comes_with_its_confidence(private_cache):
    machine = C.machine_key(C.current_environment(), "cpu")
    entries = []
    for c in (2, 3, 4, 6):
        s = cb.ConvSpec(n=2, c_in=c, c_out=4, input_size=(10, 9), kernel_size=3, padding=1)
        entries.append(C.CacheEntry(
            spec_key=s.key, machine=machine, threads=C.default_threads(), device="cpu", spec=s.to_dict(),
            candidate="numpy-direct:einsum@cpu", backend="numpy-direct", algorithm="einsum",
            median_s=1e-4, timestamp="2030-01-01T00:00:00+00:00", versions=C.current_versions(),
            run_id=f"run{c}", timings={"numpy-direct:einsum@cpu": 1e-4, "numpy-im2col:gemm@cpu": 3e-4}))
    C.TunedCache(private_cache).put_many(entries)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 5, 10, 9)).astype(np.float32)
    w = np.random.default_rng(2).uniform(-1, 1, (4, 5, 3, 3)).astype(np.float32)
    p = D.plan(x, w, padding=1, policy="auto")
    assert (p.choice.source, p.choice.candidate) == ("predicted", "numpy-direct:einsum@cpu")
    # every neighbour had it fastest, the alternative 3x slower: sure, and never worth tuning
    assert p.prediction.expected_regret == pytest.approx(1.0) and p.prediction.p_within == pytest.approx(1.0)
    assert p.run.loss_fraction == 0.0
    assert cb.relative_error(cb.conv(x, w, padding=1, policy="auto"), cb.reference(p.spec, x, w)) < 1e-5
