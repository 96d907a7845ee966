"""The PyTorch backend on the CPU: every algorithm against the float64 reference."""
import os

import numpy as np
import pytest

import convbench as cb
from convbench.errors import UnsupportedError
from convbench.quant import lsb_error
from convbench.spec import TOLERANCES
from convbench.testing import check_default, fixed_specs

# lazy imports and the install hint: test_testing.py checks every backend's declarations
torch = pytest.importorskip("torch", reason="torch is not installed: pip install convbench[torch]")

import convbench_backends._torch_compile as torch_compile  # noqa: E402
from convbench_backends._int8_rules import x86_without_vnni  # noqa: E402
from convbench_backends._torch_interop import cuda_driver_devices  # noqa: E402


@pytest.fixture(scope="module")
def backend():
    return cb.get_backend("torch")


ALGOS = ["default", "channels_last", "native"]
COMPILE_ALGOS = ["compile", "compile-max-autotune"]

# a spread that exercises every branch of the backend (pad, crop, layout conversion, 1/2/3-D)
SPREAD = [
    cb.ConvSpec(n=2, c_in=4, c_out=6, input_size=(11,), kernel_size=3, stride=2, padding=[(1, 2)]),
    cb.ConvSpec(n=2, c_in=4, c_out=6, input_size=(9, 8), kernel_size=3, stride=(2, 1),
                padding=[(1, 2), (0, 1)], dilation=2, groups=2),
    cb.ConvSpec(n=1, c_in=4, c_out=8, input_size=(9, 8), kernel_size=3, padding=1, groups=4),  # dw x2
    cb.ConvSpec(n=1, c_in=4, c_out=6, input_size=(5, 6, 4), kernel_size=(3, 2, 2), stride=2,
                padding=[(1, 0), (0, 1), (1, 1)], dilation=(1, 2, 1), groups=2),
    cb.ConvSpec(n=2, c_in=4, c_out=6, input_size=(5,), kernel_size=3, stride=2, padding=[(1, 2)],
                transposed=True, output_padding=1, groups=2),
    cb.ConvSpec(n=2, c_in=4, c_out=6, input_size=(5, 4), kernel_size=3, stride=2,
                padding=[(2, 0), (0, 1)], dilation=(2, 1), transposed=True, output_padding=(1, 1)),
    cb.ConvSpec(n=1, c_in=4, c_out=6, input_size=(3, 4, 3), kernel_size=2, stride=(2, 1, 2),
                padding=[(1, 0), (0, 0), (0, 1)], transposed=True, groups=2),
    cb.ConvSpec(n=1, c_in=16, c_out=16, input_size=(12, 12), kernel_size=7, stride=2, padding=3),
]


def _cases():
    for i, s in enumerate(SPREAD):
        for dt in ("float64", "float32", "float16", "bfloat16"):
            for lay in ("channels_first", "channels_last"):
                yield pytest.param(s.replace(dtype=dt, layout=lay), id=f"s{i}-{dt}-{lay}")


@pytest.mark.parametrize("spec", list(_cases()))
def test_every_cpu_algorithm_matches_reference(backend, spec):
    x, w = cb.make_inputs(spec, seed=1)
    expected = cb.reference(spec, x, w)
    ran = 0
    for algo in ALGOS:
        sup = backend.supports(spec, "cpu", algo)
        if not sup:
            assert algo == "channels_last" and spec.dims == 1, sup.reason
            continue
        p = backend.prepare(spec, x, w, algorithm=algo)
        p.run()
        p.synchronize()
        y = p.result()
        assert y.shape == spec.output_shape and y.dtype == x.dtype
        err = cb.relative_error(y, expected)
        assert err <= backend.tolerance(spec, "cpu", algo), (algo, err)
        ran += 1
    assert ran >= 2


def test_hand_computed_1d_asymmetric():
    # x = [1, 2, 3, 4], w = [1, 0, -1], padding (1 before, 0 after): windows [0,1,2] [1,2,3] [2,3,4]
    spec = cb.ConvSpec(n=1, c_in=1, c_out=1, input_size=(4,), kernel_size=3, padding=[(1, 0)],
                       dtype="float64")
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    w = np.array([[[1.0, 0.0, -1.0]]])
    for algo in ("default", "native"):
        y = cb.convolve(spec, x, w, backend="torch", algorithm=algo)
        np.testing.assert_array_equal(y, [[[-2.0, -2.0, -2.0]]])


def test_hand_computed_transposed_crop():
    # transposed 1-D, stride 2, w = [1, 10]: full output [1, 10, 2, 20, 3, 30]; padding (1, 0) drops the first
    spec = cb.ConvSpec(n=1, c_in=1, c_out=1, input_size=(3,), kernel_size=2, stride=2, padding=[(1, 0)],
                       transposed=True, dtype="float64")
    x = np.array([[[1.0, 2.0, 3.0]]])
    w = np.array([[[1.0, 10.0]]])
    y = cb.convolve(spec, x, w, backend="torch")
    np.testing.assert_array_equal(y, [[[10.0, 2.0, 20.0, 3.0, 30.0]]])


def test_conformance_suite_passes(backend):
    # the torch.compile candidates compile every spec (about a minute each): see the slow test below
    report = cb.check_backend(backend, algorithms=ALGOS)
    assert report.ok, report.summary()
    assert report.count("pass") > 100


@pytest.mark.slow
@pytest.mark.fresh_process
@pytest.mark.parametrize("algo", COMPILE_ALGOS)
def test_conformance_suite_passes_compiled(backend, algo, fresh_process):
    if not fresh_process:
        return  # the child's outcome was asserted by the fixture
    report = cb.check_backend(backend, algorithms=[algo], declarations=False)
    assert report.ok, report.summary()
    int8 = [r for r in report.results if r.spec.dtype == "int8"]   # compile has no int8 kernel
    assert all(r.status == "refused" for r in int8)
    assert report.count("pass") == report.n_specs - len(int8)


def test_native_disables_mkldnn_and_default_uses_it(backend):
    # big enough for torch to pick oneDNN (it keeps its own kernels for tiny n=1 inputs)
    spec = cb.ConvSpec(n=1, c_in=32, c_out=32, input_size=(32, 32), kernel_size=3, padding=1)
    x, w = cb.make_inputs(spec)
    before = torch.backends.mkldnn.enabled
    p_def = backend.prepare(spec, x, w, algorithm="default")
    p_nat = backend.prepare(spec, x, w, algorithm="native")
    p_nat.run()
    assert torch.backends.mkldnn.enabled == before  # restored after run()
    assert p_def.info["conv_backend"] == "Mkldnn"
    assert p_nat.info["conv_backend"] is not None and not p_nat.info["conv_backend"].startswith("Mkldnn")
    assert p_def.info["mkldnn_enabled"] is True and p_nat.info["mkldnn_enabled"] is False
    np.testing.assert_allclose(p_nat.result(), cb.reference(spec, x, w), rtol=0, atol=1e-4)


def test_layout_conversions_declared(backend):
    s = cb.ConvSpec(n=1, c_in=8, c_out=8, input_size=(6, 6), kernel_size=3, padding=1)
    x, w = cb.make_inputs(s)
    assert backend.prepare(s, x, w, "default").info["layout_conversion_in_run"] == []
    assert backend.prepare(s, x, w, "channels_last").info["layout_conversion_in_run"] == ["input", "output"]
    cl = s.replace(layout="channels_last")
    x, w = cb.make_inputs(cl)
    assert backend.prepare(cl, x, w, "channels_last").info["layout_conversion_in_run"] == []
    p = backend.prepare(cl, x, w, "default")
    assert p.info["layout_conversion_in_run"] == ["input", "output"]
    assert p.info["memory_format"] == "contiguous"


def test_unsupported_specs_refused_with_reason(backend):
    s1 = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(8,), kernel_size=3)
    x, w = cb.make_inputs(s1)
    sup = backend.supports(s1, "cpu", "channels_last")
    assert not sup and "1-D" in sup.reason
    with pytest.raises(UnsupportedError, match="1-D"):
        backend.prepare(s1, x, w, algorithm="channels_last")
    assert backend.supports(s1, "cpu")  # another algorithm can
    s64 = s1.replace(dtype="float64")
    sup = backend.supports(s64, "cuda", "cudnn-tf32")
    assert not sup and "float32" in sup.reason
    sup = backend.supports(s1, "cpu", "cudnn")
    assert not sup and "unknown algorithm" in sup.reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
def test_cuda_without_gpu_is_refused(backend):
    s = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(8, 8), kernel_size=3)
    x, w = cb.make_inputs(s)
    sup = backend.supports(s, "cuda")
    assert not sup and "no CUDA device" in sup.reason
    with pytest.raises(UnsupportedError, match="no CUDA device"):
        backend.prepare(s, x, w, device="cuda")
    assert backend.algorithms("cuda")[0] == "cudnn"


def test_tf32_candidate_held_to_tf32_bound(backend):
    s = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(8, 8), kernel_size=3)
    assert backend.tolerance(s, "cuda", "cudnn-tf32") == TOLERANCES["tf32"]
    assert backend.tolerance(s, "cuda", "cudnn") == TOLERANCES["float32"]


def test_threads_honoured(backend):
    old = torch.get_num_threads()
    try:
        backend.set_threads(1)
        assert torch.get_num_threads() == 1
        s = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(8, 8), kernel_size=3)
        x, w = cb.make_inputs(s)
        p = backend.prepare(s, x, w)
        assert p.info["threads"] == 1 and p.info["threads_requested"] == 1
    finally:
        backend.set_threads(old)
    assert torch.get_num_threads() == old


def test_info_and_versions(backend):
    v = backend.versions()
    assert v["torch"] == torch.__version__
    s = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(8, 8), kernel_size=3, dtype="bfloat16")
    x, w = cb.make_inputs(s)
    p = backend.prepare(s, x, w)
    assert isinstance(p.info["cpu_native_bf16"], bool)
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as fh:
            flags = fh.read().split()
        assert p.info["cpu_native_bf16"] == ("avx512_bf16" in flags or "amx_bf16" in flags)
    with pytest.raises(RuntimeError):
        p.result()


# ---- torch.compile candidates ----------------------------------------------------------------
COMPILE_SPECS = [
    cb.ConvSpec(n=2, c_in=4, c_out=6, input_size=(11,), kernel_size=3, stride=2, padding=[(1, 2)]),
    cb.ConvSpec(n=2, c_in=4, c_out=6, input_size=(9, 8), kernel_size=3, stride=(2, 1),
                padding=[(1, 2), (0, 1)], dilation=2, groups=2, layout="channels_last"),
    cb.ConvSpec(n=1, c_in=4, c_out=6, input_size=(5, 6, 4), kernel_size=(3, 2, 2), stride=2,
                padding=1, groups=2),
    cb.ConvSpec(n=2, c_in=4, c_out=6, input_size=(5, 4), kernel_size=3, stride=2,
                padding=[(2, 0), (0, 1)], transposed=True, output_padding=(1, 1), layout="channels_last"),
    cb.ConvSpec(n=1, c_in=4, c_out=4, input_size=(8, 8), kernel_size=3, padding=1, groups=4,
                dtype="bfloat16"),
]


@pytest.mark.fresh_process
@pytest.mark.skipif(torch_compile.cxx_compiler() is None, reason="no C++ compiler for inductor")
@pytest.mark.parametrize("algo", COMPILE_ALGOS)
@pytest.mark.parametrize("spec", COMPILE_SPECS, ids=lambda s: s.label)
def test_compiled_candidates_match_reference(backend, spec, algo, fresh_process):
    if not fresh_process:
        return  # the child's outcome was asserted by the fixture
    x, w = cb.make_inputs(spec, seed=3)
    p = backend.prepare(spec, x, w, algorithm=algo)
    with pytest.raises(RuntimeError):  # the compiling call in prepare() leaves no result behind
        p.result()
    p.run()
    y = p.result()
    assert y.shape == spec.output_shape and y.dtype == x.dtype
    assert cb.relative_error(y, cb.reference(spec, x, w)) <= backend.tolerance(spec, "cpu", algo)
    assert isinstance(p.info["compile_s"], float) and p.info["compile_s"] > 0
    assert p.info["compile_mode"] == ("default" if algo == "compile" else "max-autotune")
    assert p.info["weights_precomputed"] is False and not backend.precomputes_weights(algo)
    p.close()


@pytest.mark.fresh_process
@pytest.mark.skipif(torch_compile.cxx_compiler() is None, reason="no C++ compiler for inductor")
def test_each_prepare_compiles_its_own_code(backend, fresh_process):
    if not fresh_process:
        return  # the child's outcome was asserted by the fixture
    # dynamo keeps compiled entries on the code object; a shared one would hit the limit here
    import torch._dynamo

    s = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(6, 6), kernel_size=3)
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):
        for size in (6, 7):
            spec = s.replace(input_size=(size, size))
            x, w = cb.make_inputs(spec)
            p = backend.prepare(spec, x, w, algorithm="compile")
            p.run()
            assert cb.relative_error(p.result(), cb.reference(spec, x, w)) <= 1e-4
            p.close()


def test_compile_refused_without_a_cxx_compiler(backend, monkeypatch):
    monkeypatch.setattr(torch_compile, "cxx_compiler", lambda: None)
    s = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(8, 8), kernel_size=3)
    x, w = cb.make_inputs(s)
    for algo in COMPILE_ALGOS:
        sup = backend.supports(s, "cpu", algo)
        assert not sup and sup.reason == "torch.compile needs a C++ compiler (inductor): install g++"
        with pytest.raises(UnsupportedError, match="C\\+\\+ compiler"):
            backend.prepare(s, x, w, algorithm=algo)
    assert backend.supports(s, "cpu", "default")  # the other candidates are unaffected
    assert set(COMPILE_ALGOS) <= set(backend.algorithms("cpu"))


def test_compile_listed_on_cuda_only_with_a_driver(backend):
    listed = set(COMPILE_ALGOS) <= set(backend.algorithms("cuda"))
    assert listed == (cuda_driver_devices() > 0)


# ---- int8: torch's quantized engines (convbench_backends._torch_quantized) -----------------------
INT8_ALGOS = ["int8-x86", "int8-fbgemm", "int8-onednn", "int8-qnnpack"]


def _int8_algos(backend):
    engines = torch.backends.quantized.supported_engines
    return [a for a in INT8_ALGOS if a.split("-", 1)[1] in engines]


def _runnable(backend, spec):
    """The int8 engines that run ``spec`` here (x86/fbgemm/onednn need AVX-512 VNNI on x86-64)."""
    out = []
    for algo in _int8_algos(backend):
        sup = backend.supports(spec, "cpu", algo)
        assert sup or "VNNI" in sup.reason, sup.reason
        if sup:
            out.append(algo)
    assert "int8-qnnpack" in out or "int8-qnnpack" not in _int8_algos(backend)
    return out


def _run(backend, spec, x, w, algo):
    p = backend.prepare(spec, x, w, algorithm=algo)
    p.run()
    y = p.result()
    p.close()
    return y


def test_int8_conformance_suite_passes(backend):
    algos = _int8_algos(backend)
    int8_specs = [s for s in fixed_specs() if s.dtype == "int8"]
    report = cb.check_backend(backend, algorithms=algos, specs=int8_specs, declarations=False)
    assert report.ok, report.summary()
    assert report.count("fail") == 0 and report.count("xfail") == 0
    assert report.max_error["int8"] <= 1.0
    for algo in algos:  # each engine runs every direct fixed spec (on a VNNI CPU for x86/fbgemm/oneDNN)
        refused = [r for r in report.results if r.algorithm == algo and r.status == "refused"]
        assert all(r.spec.transposed or "VNNI" in r.message for r in refused), (algo, refused)
    assert report.count("pass") >= sum(not s.transposed for s in int8_specs)  # qnnpack at least
    for spec in int8_specs:  # supports() without an algorithm means prepare() without one runs
        d = check_default(backend, spec)
        assert d is None or d.status == "pass", d


def test_int8_float_candidates_refuse_int8_and_back(backend):
    s = cb.ConvSpec(n=1, c_in=4, c_out=4, input_size=(6, 6), kernel_size=3, padding=1, dtype="int8")
    for algo in ALGOS:
        sup = backend.supports(s, "cpu", algo)
        assert not sup and "int8" in sup.reason
    sup = backend.supports(s.replace(dtype="float32"), "cpu", "int8-x86")
    assert not sup and "float" in sup.reason
    sup = backend.supports(s, "cuda")
    assert not sup
    x, w = cb.make_inputs(s)
    p = backend.prepare(s, x, w)  # the default for an int8 problem is the first int8 engine
    assert p.algorithm == _runnable(backend, s)[0] and backend.precomputes_weights(p.algorithm)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_int8_resnet_layer_against_reference(backend, layout):
    # ResNet-50 res3 3x3 conv (reduced spatially), int8: the exact reference vs each engine
    spec = cb.ConvSpec(n=1, c_in=128, c_out=128, input_size=(14, 14), kernel_size=3, padding=1,
                       dtype="int8", layout=layout)
    x, w = cb.make_inputs(spec, seed=5)
    expected = cb.reference(spec, x, w)
    assert expected.dtype == np.int8 and np.abs(expected.astype(int)).max() >= 100  # uses the range
    for algo in _runnable(backend, spec):
        y = _run(backend, spec, x, w, algo)
        assert y.dtype == np.int8 and y.shape == spec.output_shape
        diff = np.abs(y.astype(int) - expected.astype(int))
        assert diff.max() <= 1, (algo, diff.max())          # worst difference in LSB
        assert np.mean(diff != 0) < 1e-3, (algo, np.mean(diff != 0))  # ties only


def test_int8_extreme_values_and_saturation(backend):
    # -128 and 127 inputs (make_inputs never draws -128) and outputs saturating at both ends
    spec = cb.ConvSpec(n=1, c_in=8, c_out=2, input_size=(5,), kernel_size=1, dtype="int8")
    x = np.empty((1, 8, 5), dtype=np.int8)
    x[0, :, 0], x[0, :, 1], x[0, :, 2:] = -128, 127, np.arange(-12, 12).reshape(8, 3)
    w = np.stack([np.full((8, 1), 127), np.arange(-127, 129, 32).reshape(8, 1)]).astype(np.int8)
    expected = cb.reference(spec, x, w)
    assert expected.min() == -128 and expected.max() == 127  # both ends saturate
    for algo in _runnable(backend, spec):
        np.testing.assert_array_equal(_run(backend, spec, x, w, algo), expected, err_msg=algo)


def test_int8_asymmetric_padding_and_transposed_crop(backend):
    direct = cb.ConvSpec(n=2, c_in=8, c_out=16, input_size=(9, 8), kernel_size=3, stride=(2, 1),
                         padding=[(2, 0), (0, 1)], dilation=(1, 2), dtype="int8", layout="channels_last")
    transposed = cb.ConvSpec(n=1, c_in=8, c_out=6, input_size=(5, 6), kernel_size=3, stride=2,
                             padding=[(1, 2), (0, 1)], output_padding=1, transposed=True, dtype="int8")
    for spec in (direct, transposed):
        x, w = cb.make_inputs(spec, seed=2)
        expected = cb.reference(spec, x, w)
        ran = 0
        for algo in _int8_algos(backend):
            sup = backend.supports(spec, "cpu", algo)
            if not sup:
                assert (spec.transposed and algo != "int8-qnnpack") or "VNNI" in sup.reason
                continue
            p = backend.prepare(spec, x, w, algorithm=algo)
            assert p.info["explicit_pad_in_run"] == (not spec.transposed)
            assert p.info["crop_in_run"] == spec.transposed
            p.run()
            assert lsb_error(p.result(), expected) <= 1, algo
            ran += 1
        assert ran >= 1


def test_int8_refusals_are_what_the_engines_do(backend):
    """The refused cases fail when run anyway (a fixed torch would make these fail: drop the rule)."""
    from convbench_backends._torch_quantized import TorchQuantizedPrepared

    dw = cb.ConvSpec(n=1, c_in=32, c_out=32, input_size=(14, 14), kernel_size=3, padding=1, groups=32,
                     dtype="int8")
    t3 = cb.ConvSpec(n=1, c_in=4, c_out=6, input_size=(4, 5, 4), kernel_size=3, stride=2, padding=1,
                     transposed=True, dtype="int8")
    cases = [(dw, "int8-fbgemm", "depthwise"), (t3, "int8-qnnpack", "3-D transposed")]
    for spec, algo, why in cases:
        if algo not in _int8_algos(backend) or (algo == "int8-fbgemm" and x86_without_vnni()):
            continue
        sup = backend.supports(spec, "cpu", algo)
        assert not sup and why in sup.reason and "LSB" in sup.reason
        x, w = cb.make_inputs(spec, seed=1)
        p = TorchQuantizedPrepared(spec, x, w, algo, None)  # past supports(): what the engine gives
        p.run()
        assert lsb_error(p.result(), cb.reference(spec, x, w)) > 10, algo
    assert set(_runnable(backend, dw)) >= {"int8-qnnpack"} | ({"int8-onednn"} if not x86_without_vnni() else set())
    t2 = cb.ConvSpec(n=1, c_in=4, c_out=6, input_size=(5, 6), kernel_size=3, stride=2, padding=1,
                     transposed=True, dtype="int8")
    for algo in ("int8-x86", "int8-fbgemm", "int8-onednn"):
        sup = backend.supports(t2, "cpu", algo)
        assert not sup and "Per Channel Quantization is currently disabled" in sup.reason


def test_int8_without_vnni_refuses_the_saturating_engines(backend, monkeypatch):
    import platform

    import convbench.environment as env

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the rule is about x86-64 CPUs")
    real = env.cpu_info()
    monkeypatch.setattr(env, "cpu_info", lambda: {**real, "cpu_isa": [f for f in real["cpu_isa"]
                                                                      if f != "avx512_vnni"]})
    s = cb.ConvSpec(n=1, c_in=16, c_out=16, input_size=(8, 8), kernel_size=3, padding=1, dtype="int8")
    for algo in set(_int8_algos(backend)) - {"int8-qnnpack"}:
        sup = backend.supports(s, "cpu", algo)
        assert not sup and "VNNI" in sup.reason
    assert backend.supports(s, "cpu", "int8-qnnpack")
