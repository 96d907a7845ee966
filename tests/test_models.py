"""convbench.tune_model / use_tuned on a small hand-built torch model: every convolution found
with the right problem, winners in the cache, the rebound model computing what the eager one
does, untuned shapes and autograd keeping the module's own forward."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import convbench as cb
from convbench import cache as C
from convbench.errors import ConvbenchError
from convbench.models import bindings, model_owner, race_pair

torch = pytest.importorskip("torch", reason="tune_model/use_tuned need torch: pip install convbench[torch]")
nn = torch.nn

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

PEAK = {"gemm_gflops": 50.0, "gemm_dtype": "float32", "bandwidth_gbs": 5.0}
OWN = "torch:default@cpu"


class OwnForward(nn.Conv2d):
    """A conv subclass with a forward of its own: listed, never rebound."""

    def forward(self, x):
        return super().forward(x) * 2


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2, bias=False)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, padding_mode="reflect")
        self.t = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
        self.same = nn.Conv2d(4, 4, (2, 4), padding="same")
        self.c5 = nn.Conv3d(2, 3, (1, 3, 3), padding=(0, 1, 1))
        self.odd = OwnForward(3, 2, 1)

    def forward(self, x1, x2, x3):
        a = self.c1(x1)
        b = self.same(self.t(self.dw(self.c3(self.c2(x2)))))
        b = b + torch.nn.functional.conv2d(b, torch.ones(4, 4, 1, 1) / 4)   # functional: listed
        return a, b, self.c5(x3), self.odd(x2)


#: what each module computes on INPUTS, written out by hand
EXPECTED = {
    "c1": cb.ConvSpec(n=1, c_in=3, c_out=4, input_size=(16,), kernel_size=3, padding=1),
    "c2": cb.ConvSpec(n=1, c_in=3, c_out=8, input_size=(12, 12), kernel_size=3, stride=2, padding=1),
    "c3": cb.ConvSpec(n=1, c_in=8, c_out=8, input_size=(6, 6), kernel_size=3, padding=2, dilation=2,
                      groups=2),
    "dw": cb.ConvSpec(n=1, c_in=8, c_out=8, input_size=(8, 8), kernel_size=3, groups=8),  # reflect-padded
    "t": cb.ConvSpec(n=1, c_in=8, c_out=4, input_size=(6, 6), kernel_size=3, stride=2, padding=1,
                     transposed=True, output_padding=1),
    "same": cb.ConvSpec(n=1, c_in=4, c_out=4, input_size=(12, 12), kernel_size=(2, 4),
                        padding=((0, 1), (1, 2))),
    "c5": cb.ConvSpec(n=1, c_in=2, c_out=3, input_size=(3, 6, 6), kernel_size=(1, 3, 3),
                      padding=(0, 1, 1)),
}


def inputs(n: int = 1, size: int = 12):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(n, 3, 16, generator=g), torch.randn(n, 3, size, size, generator=g),
            torch.randn(n, 2, 3, 6, 6, generator=g))


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return Net().eval()


def channels_last_net() -> nn.Module:
    """make_net() with every 2-D/3-D convolution's weights in channels-last memory format."""
    m = make_net()
    for mod in m.modules():
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            mod.to(memory_format=torch.channels_last)
        elif isinstance(mod, nn.Conv3d):
            mod.to(memory_format=torch.channels_last_3d)
    return m


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """An empty cache per test; no torch.compile candidates (no C++ compiler is found)."""
    monkeypatch.setenv("CONVBENCH_CACHE", str(tmp_path / "tuned.sqlite"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    return tmp_path / "tuned.sqlite"


def put(path, spec: cb.ConvSpec, timings: dict[str, float]) -> None:
    """A cache entry for ``spec`` whose winner is the fastest of ``timings``."""
    winner = min(timings, key=timings.get)
    c = cb.Candidate.parse(winner)
    C.TunedCache(path).put(C.CacheEntry(
        spec_key=spec.key, machine=C.machine_key(C.current_environment(), "cpu"),
        threads=C.default_threads(), device="cpu", spec=spec.to_dict(), candidate=winner,
        backend=c.backend, algorithm=c.algorithm, median_s=timings[winner],
        timestamp="2030-01-01T00:00:00+00:00", versions=C.current_versions(), timings=timings))


def outputs(model, xs, grad=False):
    with torch.set_grad_enabled(grad):
        return model(*xs)


def assert_close(tuned, eager) -> None:
    for yt, ye in zip(tuned, eager):
        assert yt.shape == ye.shape and yt.dtype == ye.dtype
        err = cb.relative_error(yt.detach().numpy(), ye.detach().numpy().astype(np.float64))
        assert err < cb.tolerance("float32"), err


# ---- collecting -------------------------------------------------------------------------------
def test_collect_finds_every_convolution_with_its_problem():
    m = make_net()
    convs = model_owner(m).collect_convs(m, inputs())
    by_layer = {c.layer: c for c in convs}
    for layer, spec in EXPECTED.items():
        c = by_layer[layer]
        assert c.reason is None and c.spec == spec, (layer, c)
        assert c.own == OWN and c.kind == "torch-cpu" and c.calls == 1
    functional = [c for c in convs if c.module == "Net"]
    assert len(functional) == 1 and "F.conv2d" in functional[0].reason
    assert functional[0].spec == cb.ConvSpec(n=1, c_in=4, c_out=4, input_size=(12, 12), kernel_size=1)
    assert "overrides" in by_layer["odd"].reason and by_layer["odd"].spec is not None
    assert len(convs) == len(EXPECTED) + 2


def test_channels_last_input_is_a_channels_last_problem_run_by_torch_channels_last():
    m = channels_last_net()
    x1, x2, x3 = inputs()
    convs = model_owner(m).collect_convs(m, (x1, x2.to(memory_format=torch.channels_last), x3))
    c2 = next(c for c in convs if c.layer == "c2")
    assert c2.spec == EXPECTED["c2"].replace(layout="channels_last")
    assert c2.own == "torch:channels_last@cpu"


def test_not_a_torch_model_is_a_clear_error():
    for fn in (cb.tune_model, cb.use_tuned):
        with pytest.raises(ConvbenchError, match="not a model any backend handles.*torch"):
            fn(object())
    with pytest.raises(ConvbenchError, match="example_inputs"):
        cb.tune_model(make_net(), torch.zeros(1, 1))


def test_core_imports_no_torch():
    code = "import sys, convbench.models; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- use_tuned with hand-written cache entries --------------------------------------------------
def test_rebound_layers_run_the_cached_choice_and_match_eager(private_cache):
    m = make_net()
    xs = inputs()
    for spec in EXPECTED.values():
        put(private_cache, spec, {OWN: 1e-3, "numpy-im2col:gemm@cpu": 1e-4})
    fast = cb.use_tuned(m, confirm=False)
    assert fast is not m and fast.c2.forward is not m.c2.forward
    assert_close(outputs(fast, xs), outputs(m, xs))
    got = {d["layer"]: d["candidate"] for d in bindings(fast)}
    assert got == {layer: "numpy-im2col:gemm@cpu" for layer in EXPECTED}
    assert "odd" not in got                      # its own forward: never rebound
    # a second call reuses the decisions
    assert_close(outputs(fast, xs), outputs(m, xs))
    assert len(bindings(fast)) == len(EXPECTED)


def test_channels_last_layers_rebound_match_eager(private_cache):
    m = channels_last_net()
    x1, x2, x3 = inputs()
    xs = (x1, x2.to(memory_format=torch.channels_last), x3.to(memory_format=torch.channels_last_3d))
    convs = model_owner(m).collect_convs(m, xs)
    for c in convs:
        if c.reason is None:
            put(private_cache, c.spec, {c.own: 1e-3, "numpy-im2col:gemm@cpu": 1e-4})
    assert any(c.spec.layout == "channels_last" for c in convs if c.reason is None)
    fast = cb.use_tuned(m, confirm=False)
    assert_close(outputs(fast, xs), outputs(m, xs))
    assert all(d["candidate"] == "numpy-im2col:gemm@cpu" for d in bindings(fast))


def test_untuned_shapes_and_the_own_call_winning_keep_the_own_forward(private_cache):
    m = make_net()
    put(private_cache, EXPECTED["c2"], {OWN: 1e-4, "numpy-im2col:gemm@cpu": 1e-3})
    put(private_cache, EXPECTED["c3"], {OWN: 1e-4, "numpy-im2col:gemm@cpu": 0.99e-4})   # within 5%
    fast = cb.use_tuned(m, confirm=False, inplace=True)
    assert fast is m
    xs = inputs(size=14)                          # other shapes than tuned: nothing cached
    assert_close(outputs(fast, xs), outputs(make_net(), xs))
    assert all(d["candidate"] is None for d in bindings(fast))
    outputs(fast, inputs())
    why = {d["layer"]: d["why"] for d in bindings(fast) if "12x12" in d["spec"] or d["layer"] == "c3"}
    assert "own call" in why["c2"] and "fastest" in why["c2"]
    assert "5%" in why["c3"]


def test_autograd_uses_only_candidates_that_keep_the_graph(private_cache):
    m = make_net()
    xs = inputs()
    put(private_cache, EXPECTED["c2"], {OWN: 1e-3, "numpy-im2col:gemm@cpu": 1e-5, "torch:native@cpu": 1e-4})
    put(private_cache, EXPECTED["c3"], {OWN: 1e-3, "numpy-im2col:gemm@cpu": 1e-5})
    fast = cb.use_tuned(m, confirm=False)
    (_, yt, _, _), (_, ye, _, _) = outputs(fast, xs, grad=True), outputs(m, xs, grad=True)
    yt.square().sum().backward()
    ye.square().sum().backward()
    got = {d["layer"]: d["candidate"] for d in bindings(fast)}
    assert got["c2"] == "torch:native@cpu" and got["c3"] is None
    for layer in ("c2", "c3", "t"):
        gt, ge = getattr(fast, layer).weight.grad, getattr(m, layer).weight.grad
        assert cb.relative_error(gt.numpy(), ge.numpy().astype(np.float64)) < 1e-4


def test_confirming_on_the_real_tensors_can_overrule_the_cache(private_cache, monkeypatch):
    import convbench.models as M

    m = make_net()
    put(private_cache, EXPECTED["c2"], {OWN: 1e-3, "numpy-im2col:gemm@cpu": 1e-4})
    monkeypatch.setattr(M, "race_pair", lambda a, b, x, w, sync=None: (2e-4, 1e-4))
    fast = cb.use_tuned(m)
    outputs(fast, inputs())
    (d,) = [d for d in bindings(fast) if d["layer"] == "c2"]
    assert d["candidate"] is None and "own call kept" in d["why"] and d["tuned_s"] == 2e-4
    monkeypatch.setattr(M, "race_pair", lambda a, b, x, w, sync=None: (1e-5, 1e-4))
    fast = cb.use_tuned(m)
    outputs(fast, inputs())
    (d,) = [d for d in bindings(fast) if d["layer"] == "c2"]
    assert d["candidate"] == "numpy-im2col:gemm@cpu" and d["own_s"] == 1e-4


# ---- the whole-model check ----------------------------------------------------------------------
class _Clock:
    """A stand-in for time.perf_counter that a model call advances by its cost: the check's
    arithmetic is tested, not this machine's load (parallel test workers share the cores)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


_CLOCK = _Clock()


def _spin(seconds):
    _CLOCK.now += seconds


@pytest.fixture
def quick_check(monkeypatch):
    import time

    import convbench.models as M

    monkeypatch.setattr(M, "MODEL_CHECK_SETTLE_S", 0.002)
    monkeypatch.setattr(M, "MODEL_CHECK_SAMPLE_S", 0.004)
    monkeypatch.setattr(time, "perf_counter", _CLOCK)
    return M


def test_model_configs_are_none_all_and_all_but_each():
    from convbench.models import model_configs

    assert model_configs(["a"]) == [(), ("a",)]
    assert model_configs(["b", "a", "c"]) == [(), ("a", "b", "c"), ("b", "c"), ("a", "c"), ("a", "b")]


@pytest.mark.parametrize("cost, expected", [
    # seconds per model call by enabled candidates: a helps, b hurts the whole model
    ({(): 2e-3, ("a",): 1e-3, ("b",): 3e-3, ("a", "b"): 2.5e-3}, ["a"]),
    # every rebind slows the model down as a whole: none is kept
    ({(): 1e-3, ("a",): 2e-3, ("b",): 2e-3, ("a", "b"): 3e-3}, []),
    # all help
    ({(): 3e-3, ("a",): 2e-3, ("b",): 2e-3, ("a", "b"): 1e-3}, ["a", "b"]),
])
def test_check_model_keeps_the_configuration_the_whole_model_runs_fastest_with(quick_check, cost,
                                                                                 expected):
    got = quick_check.check_model(lambda enabled: _spin(cost[tuple(sorted(enabled))]), ["a", "b"],
                                  0.05)
    assert got["chosen"] == expected, got["why"]
    assert got["rounds"] >= quick_check.MODEL_CHECK_MIN_ROUNDS
    assert {tuple(r["candidates"]) for r in got["configs"]} == {(), ("a", "b"), ("a",), ("b",)}


def test_check_model_needs_more_than_the_minimum_gain(quick_check):
    got = quick_check.check_model(lambda enabled: _spin(2e-3 if not enabled else 1.9e-3), ["a"], 0.2)
    assert got["chosen"] == [] and "20%" in got["why"]


def test_use_tuned_runs_what_the_whole_model_check_chose(private_cache, monkeypatch):
    import convbench.models as M

    m = make_net()
    xs = inputs()
    for spec in EXPECTED.values():
        put(private_cache, spec, {OWN: 1e-3, "numpy-im2col:gemm@cpu": 1e-4})
    monkeypatch.setattr(M, "race_pair", lambda a, b, x, w, sync=None: (1e-5, 1e-4))
    seen = []
    monkeypatch.setattr(M, "check_model", lambda run, bound, min_gain, sync=None: (
        seen.append(list(bound)) or {"chosen": [], "configs": [], "rounds": 5,
                                     "why": "stand-in: the whole model ran slower"}))
    answers = []
    real = M.Binder.allows

    def allows(self, cand):
        answers.append(real(self, cand))
        return answers[-1]
    monkeypatch.setattr(M.Binder, "allows", allows)
    fast = cb.use_tuned(m)
    assert_close(outputs(fast, xs), outputs(m, xs))
    assert seen == [["numpy-im2col:gemm@cpu"]]
    (check,) = M.model_checks(fast)
    assert check["chosen"] == [] and check["candidates"] == ["numpy-im2col:gemm@cpu"]
    decided = bindings(fast)
    assert all(d["used"] is False and "stand-in" in d["why"] for d in decided if d["candidate"])
    answers.clear()
    assert_close(outputs(fast, xs), outputs(m, xs))      # the next call: own forwards
    assert len(answers) >= len(EXPECTED) and not any(answers)
    assert M._BINDERS[fast].allows("numpy-im2col:gemm@cpu")   # outside a model call: allowed
    assert len(M.model_checks(fast)) == 1                 # decided once per signature


def test_a_model_in_training_mode_is_not_rerun_for_the_check(private_cache, monkeypatch):
    import convbench.models as M

    m = make_net().train()
    for spec in EXPECTED.values():
        put(private_cache, spec, {OWN: 1e-3, "numpy-im2col:gemm@cpu": 1e-4})
    monkeypatch.setattr(M, "race_pair", lambda a, b, x, w, sync=None: (1e-5, 1e-4))
    monkeypatch.setattr(M, "check_model", lambda *a, **k: pytest.fail("re-ran a training model"))
    fast = cb.use_tuned(m)
    with torch.no_grad():
        fast(*inputs())
    (check,) = M.model_checks(fast)
    assert "training" in check["why"] and check["chosen"] == ["numpy-im2col:gemm@cpu"]


def test_race_pair_times_both_callables():
    calls = {"a": 0, "b": 0}

    def a(x, w):
        calls["a"] += 1

    def b(x, w):
        calls["b"] += 1
        sum(range(2000))
    ta, tb = race_pair(a, b, None, None)
    assert 0 < ta < tb
    assert calls["a"] >= 7 and calls["b"] >= 7


def test_min_gain_is_checked():
    with pytest.raises(ConvbenchError, match="min_gain"):
        cb.use_tuned(make_net(), min_gain=-1)


# ---- tune_model: a real sweep -----------------------------------------------------------------
def test_tune_model_sweeps_every_layer_and_caches_the_winners(tmp_path, private_cache):
    m = make_net()
    xs = inputs()
    df = cb.tune_model(m, *xs, backends=["numpy-im2col"], budget_s=0.01, threads=1, out=tmp_path,
                       peak=PEAK, progress=False, min_samples=3, max_samples=20)
    tuned = df[df.status != "not tuned"]
    assert sorted(tuned.layer) == sorted(EXPECTED)                       # one row per layer
    for row in tuned.itertuples():
        spec = EXPECTED[row.layer]
        assert row.spec_key == spec.key and row.own == OWN
        assert row.status == "tuned", row
        choice = cb.lookup(spec, threads=1)
        assert choice is not None and choice.candidate == row.winner
        assert row.winner.split(":")[0] in ("torch", "numpy-im2col")     # torch added: own call
        if row.own_median_s == row.own_median_s:
            assert row.speedup == pytest.approx(row.own_median_s / row.winner_median_s)
    rest = df[df.status == "not tuned"]
    assert sorted(rest.layer) == ["", "odd"] and rest.note.str.len().min() > 10
    fast = cb.use_tuned(m, threads=1)
    assert_close(outputs(fast, xs), outputs(m, xs))
    assert {d["layer"] for d in bindings(fast)} == set(EXPECTED)
    xs8 = inputs(n=2)                                                     # untuned batch: own forward
    assert_close(outputs(fast, xs8), outputs(m, xs8))
    assert all(d["why"] == "not in the tuned cache" for d in bindings(fast) if "n2" in d["spec"])
