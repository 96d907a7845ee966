"""The numba backend: every algorithm against the float64 reference, refusals, threads, cache.

The first run compiles every kernel for float32 and float64 (numba's on-disk cache makes later
runs fast); the specs are kept small so the checks themselves are cheap.
"""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

import convbench as cb
from convbench.errors import UnsupportedError
from convbench.spec import TOLERANCES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# lazy imports and the install hint: test_testing.py checks every backend's declarations
numba = pytest.importorskip("numba", reason="numba is not installed: pip install convbench[numba]")


@pytest.fixture(scope="module")
def backend():
    return cb.get_backend("numba")


def _check(backend, spec, algorithm, seed=0):
    x, w = cb.make_inputs(spec, seed=seed)
    x0, w0 = x.copy(), w.copy()
    p = backend.prepare(spec, x, w, algorithm=algorithm)
    p.run()
    p.synchronize()
    y = p.result()
    assert y.shape == spec.output_shape and y.dtype == np.dtype(spec.dtype)
    assert np.array_equal(x, x0) and np.array_equal(w, w0), "inputs modified"
    err = cb.relative_error(y, cb.reference(spec, x, w))
    return err, p


def _spec(**kw):
    base = dict(n=2, c_in=4, c_out=6, input_size=(7, 6), kernel_size=3)
    base.update(kw)
    return cb.ConvSpec(**base)


DIRECT_SPECS = [
    _spec(input_size=(13,), kernel_size=5, stride=2, padding=((2, 1),), c_in=3, c_out=5),
    _spec(input_size=(13,), kernel_size=3, dilation=3, padding=3, layout="channels_last"),
    _spec(padding=1),
    _spec(padding=((1, 2), (0, 1)), stride=(2, 1), dilation=(1, 2), layout="channels_last"),
    _spec(kernel_size=(3, 2), stride=2, padding=((0, 2), (1, 0)), groups=2, dtype="float64"),
    _spec(c_in=6, c_out=6, groups=3, padding=1, layout="channels_last", dtype="float64"),
    _spec(c_in=5, c_out=5, groups=5, padding=1),  # depthwise through the generic kernel
    _spec(c_in=3, c_out=9, kernel_size=1),
    _spec(input_size=(5, 4, 5), padding=1, stride=(1, 2, 1)),
    _spec(input_size=(5, 4, 5), kernel_size=(2, 3, 2), dilation=(2, 1, 1), groups=2,
          layout="channels_last", dtype="float64"),
    # transposed: gather through the zero-upsampled input
    _spec(c_in=4, c_out=2, stride=2, padding=1, output_padding=1, transposed=True),
    _spec(c_in=4, c_out=6, groups=2, stride=(2, 3), padding=((0, 1), (2, 0)), dilation=(1, 2),
          transposed=True, layout="channels_last", dtype="float64"),
    _spec(input_size=(9,), c_in=3, c_out=3, kernel_size=4, padding=5, stride=3, transposed=True),
    _spec(input_size=(3, 4, 3), c_in=2, c_out=4, stride=2, transposed=True, layout="channels_last"),
    # more than one channel block and pixel block (tails on both)
    _spec(n=1, c_in=37, c_out=70, input_size=(11, 13), padding=1, layout="channels_last"),
    _spec(n=1, c_in=37, c_out=70, input_size=(11, 13), padding=1, stride=2),
]


@pytest.mark.parametrize("spec", DIRECT_SPECS, ids=lambda s: s.label)
def test_direct_matches_reference(backend, spec):
    err, p = _check(backend, spec, "direct")
    assert err <= TOLERANCES[spec.dtype], f"{spec.label}: {err:.2e}"
    assert "kernel" in p.info and "threads" in p.info


DEPTHWISE_SPECS = [
    _spec(c_in=5, c_out=5, groups=5, padding=1),
    _spec(c_in=5, c_out=5, groups=5, padding=1, layout="channels_last"),
    _spec(n=1, c_in=6, c_out=6, groups=6, input_size=(9, 8), stride=2, padding=((1, 2), (0, 1)),
          dilation=(1, 2), layout="channels_last", dtype="float64"),
    _spec(n=1, c_in=6, c_out=6, groups=6, input_size=(9, 8), stride=2, padding=1, dtype="float64"),
    _spec(c_in=3, c_out=3, groups=3, input_size=(2, 2), padding=1),  # no interior pixel at all
    _spec(c_in=3, c_out=3, groups=3, input_size=(6, 7), padding=0, dilation=2, layout="channels_last"),
    _spec(c_in=3, c_out=3, groups=3, input_size=(6, 7), padding=((2, 0), (0, 2))),
    _spec(c_in=4, c_out=4, groups=4, input_size=(13,), kernel_size=5, stride=2, padding=2),
    _spec(c_in=4, c_out=4, groups=4, input_size=(5, 4, 5), padding=1, layout="channels_last"),
    _spec(n=1, c_in=16, c_out=16, groups=16, input_size=(12, 12), padding=1, layout="channels_last"),
    _spec(n=1, c_in=16, c_out=16, groups=16, input_size=(12, 12), padding=1),
]


@pytest.mark.parametrize("spec", DEPTHWISE_SPECS, ids=lambda s: s.label)
def test_depthwise_matches_reference(backend, spec):
    err, _ = _check(backend, spec, "depthwise")
    assert err <= TOLERANCES[spec.dtype], f"{spec.label}: {err:.2e}"


WINOGRAD = ["winograd-f2x3", "winograd-f4x3", "winograd-f2x3-pretransformed",
            "winograd-f4x3-pretransformed", "winograd-f2x3-pretransformed-blas",
            "winograd-f4x3-pretransformed-blas"]
WINOGRAD_SPECS = [
    _spec(n=2, c_in=8, c_out=16, input_size=(10, 9), padding=1),
    _spec(n=1, c_in=8, c_out=16, input_size=(10, 9), padding=1, layout="channels_last"),
    _spec(n=1, c_in=3, c_out=5, input_size=(7, 11), padding=0, layout="channels_last"),
    _spec(n=1, c_in=3, c_out=5, input_size=(7, 11), padding=((2, 0), (1, 3)), dtype="float64"),
    _spec(n=1, c_in=5, c_out=4, input_size=(3, 3), padding=2, layout="channels_last", dtype="float64"),
]


@pytest.mark.parametrize("algorithm", WINOGRAD)
@pytest.mark.parametrize("spec", WINOGRAD_SPECS, ids=lambda s: s.label)
def test_winograd_matches_reference(backend, spec, algorithm):
    err, p = _check(backend, spec, algorithm)
    assert err <= backend.tolerance(spec, "cpu", algorithm), f"{spec.label}: {err:.2e}"
    assert backend.tolerance(spec, "cpu", algorithm) == TOLERANCES[spec.dtype]
    expect = "prepare" if "-pretransformed" in algorithm else "every run"
    assert expect in p.info["weight_transform"]


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_matrices_compute_a_correlation(m):
    """A^T [(G g) * (B^T d)] is the valid 1-D correlation of d (m+2 values) with g (3 taps)."""
    from convbench_backends.numba_backend import winograd_matrices

    mats = winograd_matrices(m)
    rng = np.random.default_rng(m)
    d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
    expected = np.array([d[i:i + 3] @ g for i in range(m)])
    got = mats["AT"] @ ((mats["G"] @ g) * (mats["BT"] @ d))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_winograd_f4_error_measured_on_a_resnet_layer(backend):
    """F(4x4,3x3) loses accuracy against F(2x2,3x3) but stays within the float32 bound.

    Measured on this machine on the ResNet-50 3x3 layers (64x56, 128x28, 256x14, 512x7, n=1,
    float32, benchmarks/custom_kernels_cpu.py): norm-wise relative error 1.0e-6 to 3.0e-6 for
    F(4x4,3x3), 1.5e-7 to 5.0e-7 for F(2x2,3x3) (the BLAS variants at the top of both ranges),
    1.7e-7 to 4.0e-7 for direct.
    """
    spec = cb.ConvSpec(n=1, c_in=128, c_out=128, input_size=(28, 28), kernel_size=3, padding=1,
                       layout="channels_last")
    errs = {a: _check(backend, spec, a)[0] for a in ("direct",) + tuple(WINOGRAD)}
    assert max(errs.values()) <= TOLERANCES["float32"]
    for variant in ("", "-pretransformed", "-pretransformed-blas"):
        assert errs["winograd-f4x3" + variant] > errs["winograd-f2x3" + variant]
    assert backend.expected_failure(spec, "cpu", "winograd-f4x3") is None


REFUSED = [
    (_spec(dtype="float16"), "direct", "float16"),
    (_spec(dtype="bfloat16", layout="channels_last"), "winograd-f2x3", "bfloat16"),
    (_spec(padding=1, stride=2), "winograd-f4x3", "stride"),
    (_spec(padding=1, dilation=2), "winograd-f2x3-pretransformed", "dilation"),
    (_spec(kernel_size=(3, 5), padding=1), "winograd-f4x3-pretransformed", "kernel"),
    (_spec(c_in=4, c_out=4, groups=2, padding=1), "winograd-f2x3", "groups"),
    (_spec(input_size=(9,), padding=1), "winograd-f2x3", "1-D"),
    (_spec(padding=1, transposed=True), "winograd-f2x3", "transposed"),
    (_spec(padding=1), "depthwise", "groups"),
    (_spec(c_in=3, c_out=6, groups=3, padding=1), "depthwise", "multiplier"),
    (_spec(c_in=3, c_out=3, groups=3, padding=1, transposed=True), "depthwise", "transposed"),
]


@pytest.mark.parametrize("spec,algorithm,word", REFUSED, ids=lambda v: getattr(v, "label", str(v)))
def test_unsupported_specs_are_refused_with_a_reason(backend, spec, algorithm, word):
    sup = backend.supports(spec, "cpu", algorithm)
    assert not sup and word in sup.reason
    x, w = cb.make_inputs(spec)
    with pytest.raises(UnsupportedError):
        backend.prepare(spec, x, w, algorithm=algorithm)


def test_no_cuda_device(backend):
    assert backend.algorithms("cuda") == []
    assert not backend.supports(_spec(), "cuda")


def test_compilation_happens_in_prepare_not_in_run(backend):
    from convbench_backends import _numba_kernels as k

    spec = _spec(n=1, c_in=3, c_out=4, input_size=(6, 5), padding=1, layout="channels_last")
    x, w = cb.make_inputs(spec)
    for algorithm in ("direct", "winograd-f2x3", "winograd-f4x3-pretransformed-blas"):
        p = backend.prepare(spec, x, w, algorithm=algorithm)
        kernels = (k.stage_input, k.direct_conv, k._mk_p4q4, k._mk_p4q1, k.winograd_conv,
                   k.wino_input, k.wino_output, k.wino_weights)
        before = [(len(f.signatures), sum(f.stats.cache_misses.values())) for f in kernels]
        p.run()
        assert [(len(f.signatures), sum(f.stats.cache_misses.values())) for f in kernels] == before
        assert p.info["numba_cache"] in ("compiled", "loaded from cache", "already in memory")


def test_threads_are_set_and_recorded(backend):
    spec = _spec(n=1, padding=1)
    x, w = cb.make_inputs(spec)
    try:
        backend.set_threads(1)
        p = backend.prepare(spec, x, w, algorithm="direct")
        assert p.info["threads"] == 1 and numba.get_num_threads() == 1
        backend.set_threads(10_000)
        p = backend.prepare(spec, x, w, algorithm="direct")
        assert p.info["threads"] == numba.config.NUMBA_NUM_THREADS
        assert "NUMBA_NUM_THREADS" in p.info["threads_note"]
    finally:
        backend.set_threads(numba.config.NUMBA_NUM_THREADS)


def test_a_second_process_loads_the_compiled_kernels_from_the_cache(backend):
    """Kernels compiled here (or in an earlier run) are cached on disk; a new process loads them."""
    from convbench_backends import _numba_kernels as k

    spec = _spec(n=1, padding=1, layout="channels_last")
    x, w = cb.make_inputs(spec)
    backend.prepare(spec, x, w, algorithm="direct")  # compiles or loads; either way writes the cache
    cache_dir = k.direct_conv._cache._cache_path
    assert glob.glob(os.path.join(cache_dir, "_numba_kernels.direct_conv-*.nbi"))
    assert glob.glob(os.path.join(cache_dir, "_numba_kernels.direct_conv-*.nbc"))
    code = ("import convbench as cb; b = cb.get_backend('numba'); "
            "s = cb.ConvSpec(n=1, c_in=4, c_out=6, input_size=(7, 6), kernel_size=3, padding=1, "
            "layout='channels_last'); x, w = cb.make_inputs(s); "
            "print(b.prepare(s, x, w, algorithm='direct').info['numba_cache'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "loaded from cache"


@pytest.mark.slow
def test_cold_cache_compiles_then_loads(tmp_path):
    """With an empty NUMBA_CACHE_DIR the first process compiles, the second loads."""
    code = ("import convbench as cb; b = cb.get_backend('numba'); "
            "s = cb.ConvSpec(n=1, c_in=4, c_out=6, input_size=(7, 6), kernel_size=3, padding=1); "
            "x, w = cb.make_inputs(s); print(b.prepare(s, x, w, algorithm='direct').info['numba_cache'])")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().splitlines()[-1] == "compiled"
    assert glob.glob(os.path.join(str(tmp_path), "**", "*.nbi"), recursive=True)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().splitlines()[-1] == "loaded from cache"


def test_check_backend_passes(backend):
    testing = pytest.importorskip("convbench.testing")
    report = testing.check_backend(backend)
    assert report.ok, report.summary()
    assert report.count("pass") > 0


@pytest.mark.slow
def test_check_backend_extended(backend):
    from convbench.testing import check_backend

    report = check_backend(backend, level="extended")
    assert report.ok, report.summary()


# ---- int8 -----------------------------------------------------------------------------------------
INT8 = ["int8-direct", "int8-vnni", "int8-vnni-prepacked"]


def _i8(**kw):
    return _spec(**{"dtype": "int8", **kw})


INT8_SPECS = [
    _i8(input_size=(13,), kernel_size=5, stride=2, padding=((2, 1),), c_in=3, c_out=5),
    _i8(padding=1),
    _i8(padding=((1, 2), (0, 1)), stride=(2, 1), dilation=(1, 2), layout="channels_last"),
    _i8(kernel_size=(3, 2), stride=2, padding=((0, 2), (1, 0)), groups=2),
    _i8(c_in=6, c_out=9, groups=3, padding=1, layout="channels_last"),
    _i8(c_in=5, c_out=5, groups=5, padding=1),  # depthwise
    _i8(c_in=6, c_out=6, groups=6, input_size=(9, 8), stride=2, padding=((1, 2), (0, 1)),
        dilation=(1, 2), layout="channels_last"),
    _i8(c_in=3, c_out=9, kernel_size=1),
    _i8(input_size=(5, 4, 5), padding=1, stride=(1, 2, 1), layout="channels_last"),
    _i8(c_in=4, c_out=2, stride=2, padding=1, output_padding=1, transposed=True),
    _i8(c_in=4, c_out=6, groups=2, stride=(2, 3), padding=((0, 1), (2, 0)), dilation=(1, 2),
        transposed=True, layout="channels_last"),
    _i8(c_in=3, c_out=3, groups=3, input_size=(9,), kernel_size=4, padding=2, stride=3, transposed=True),
    # several pixel and channel blocks with tails (32-channel VNNI blocks: 70 = 2 x 32 + 6)
    _i8(n=1, c_in=37, c_out=70, input_size=(11, 13), padding=1, layout="channels_last"),
    _i8(n=1, c_in=37, c_out=70, input_size=(11, 13), padding=1, stride=2),
    # ResNet-like: 1x1 over 64 channels, and a long accumulation (K = 256 x 9)
    _i8(n=1, c_in=64, c_out=48, input_size=(7, 7), kernel_size=1, layout="channels_last"),
    _i8(n=1, c_in=256, c_out=20, input_size=(6, 5), padding=1),
]


def _run_int8(backend, spec, algorithm, x, w):
    sup = backend.supports(spec, "cpu", algorithm)
    if not sup:
        if any(word in sup.reason for word in ("VNNI", "avx512vnni", "NUMBA_CPU")):
            pytest.skip(sup.reason)  # no VNNI target here
        assert algorithm.startswith("int8-vnni") and spec.depthwise, sup.reason
        return None
    p = backend.prepare(spec, x, w, algorithm=algorithm)
    p.run()
    p.synchronize()
    return p, p.result()


@pytest.mark.parametrize("algorithm", INT8)
@pytest.mark.parametrize("spec", INT8_SPECS, ids=lambda s: s.label)
def test_int8_is_exact(backend, spec, algorithm):
    """Bit-exact (0 LSB) against convbench.reference's integer accumulators + requantisation."""
    x, w = cb.make_inputs(spec, seed=3)
    x0, w0 = x.copy(), w.copy()
    out = _run_int8(backend, spec, algorithm, x, w)
    if out is None:
        return
    p, y = out
    assert y.dtype == np.int8 and y.shape == spec.output_shape
    assert np.array_equal(x, x0) and np.array_equal(w, w0), "inputs modified"
    assert np.array_equal(y, cb.reference(spec, x, w)), f"{spec.label}: max diff " \
        f"{np.abs(y.astype(int) - cb.reference(spec, x, w).astype(int)).max()} LSB"
    assert "kernel" in p.info and "exact" in p.info["requantisation"]


def test_int8_is_exact_on_random_specs(backend):
    """The conformance suite's random spread (1-3-D, strides, paddings incl. "same" and cropping
    transposed ones, dilation, groups, layouts) as int8: every candidate that takes it, 0 LSB."""
    from convbench.testing import random_specs

    checked = 0
    for spec in random_specs(40, seed=17):
        spec = spec.replace(dtype="int8")
        x, w = cb.make_inputs(spec, seed=1)
        ref = cb.reference(spec, x, w)
        for algorithm in INT8:
            if backend.supports(spec, "cpu", algorithm):
                y = cb.convolve(spec, x, w, backend="numba", algorithm=algorithm)
                assert np.array_equal(y, ref), f"{algorithm} {spec.label}"
                checked += 1
    assert checked >= 40


@pytest.mark.parametrize("algorithm", INT8)
def test_int8_extreme_values_and_saturation(backend, algorithm):
    """-128 inputs and weights (the VNNI kernel's x + 128 is then 0) and outputs that saturate."""
    spec = _i8(n=1, c_in=8, c_out=20, input_size=(6, 7), padding=1, layout="channels_last")
    rng = np.random.default_rng(1)
    x = rng.choice(np.array([-128, 127, -1, 0, 1], dtype=np.int8), size=spec.input_shape)
    w = rng.choice(np.array([-128, 127, -127, 0], dtype=np.int8), size=spec.weight_shape)
    out = _run_int8(backend, spec, algorithm, x, w)
    p, y = out
    ref = cb.reference(spec, x, w)
    assert np.array_equal(y, ref)
    assert (ref == 127).any() and (ref == -128).any(), "the test should reach both saturation limits"


def test_int8_requantisation_rounds_half_to_even_and_saturates():
    from convbench_backends import _numba_int8 as k

    acc = np.array([[1, 3, 5, -1, -3, -5, 7, 1000, -1000, 255, 254]], dtype=np.int32)
    mult = np.full(acc.shape[1], 0.5)
    out = np.empty(acc.shape, dtype=np.int8)
    k.requant_array(acc, mult, out)
    # hand-computed: ties go to the even neighbour; beyond the int8 range the limits
    assert out.tolist() == [[0, 2, 2, 0, -2, -2, 4, 127, -128, 127, 127]]
    rng = np.random.default_rng(0)
    acc = rng.integers(-2**20, 2**20, size=(50, 9), dtype=np.int32)
    mult = rng.uniform(1e-5, 3e-4, size=9)
    out = np.empty(acc.shape, dtype=np.int8)
    k.requant_array(acc, mult, out)
    assert np.array_equal(out, np.clip(np.rint(acc * mult), -128, 127).astype(np.int8))


def test_int8_refusals_and_declarations(backend):
    f32, i8 = _spec(padding=1), _i8(padding=1)
    for algorithm in INT8:
        sup = backend.supports(f32, "cpu", algorithm)
        assert not sup and "int8" in sup.reason
        assert backend.tolerance(i8, "cpu", algorithm) == 0.0
    sup = backend.supports(i8, "cpu", "direct")
    assert not sup and "int8-direct" in sup.reason
    for algorithm in ("int8-vnni", "int8-vnni-prepacked"):
        sup = backend.supports(_i8(c_in=5, c_out=5, groups=5), "cpu", algorithm)
        assert not sup and "int8-direct" in sup.reason
    # accumulations that could overflow int32 are refused, per kernel (VNNI adds x + 128)
    big = _i8(n=1, c_in=8192, c_out=4, input_size=(3, 3))  # K = 73,728
    assert backend.supports(big, "cpu", "int8-direct")
    assert "overflow" in backend.supports(big, "cpu", "int8-vnni").reason
    huge = _i8(n=1, c_in=16384, c_out=4, input_size=(3, 3))  # K = 147,456
    assert "overflow" in backend.supports(huge, "cpu", "int8-direct").reason
    assert backend.precomputes_weights("int8-vnni-prepacked")
    assert not backend.precomputes_weights("int8-vnni") and not backend.precomputes_weights("int8-direct")
    assert backend.default_algorithm("cpu", _i8(c_in=5, c_out=5, groups=5)) == "int8-direct"


def test_int8_prepacked_packs_in_prepare_only(backend):
    spec = _i8(n=1, c_in=8, c_out=20, input_size=(6, 7), padding=1)
    x, w = cb.make_inputs(spec)
    if not backend.supports(spec, "cpu", "int8-vnni"):
        pytest.skip(backend.supports(spec, "cpu", "int8-vnni").reason)
    pre = backend.prepare(spec, x, w, algorithm="int8-vnni-prepacked")
    per_run = backend.prepare(spec, x, w, algorithm="int8-vnni")
    assert pre.info["weight_packing"] == "prepare()" and per_run.info["weight_packing"] == "every run()"
    pre.w[:] = 0  # the kernel's own weight copy: only a run() that packs sees the change
    per_run.w[:] = 0
    pre.run()
    per_run.run()
    assert np.array_equal(pre.result(), cb.reference(spec, x, w))
    assert not per_run.result().any()


def _asm_of(py_func, *args):
    """The assembly of py_func compiled afresh here (cached kernels cannot be inspected)."""
    fn = numba.njit(py_func)
    fn(*args)
    return "\n".join(fn.inspect_asm().values())


def test_int8_kernels_compile_to_integer_multiply_adds():
    """x86: the portable dot product becomes (v)pmaddwd (or VNNI's vpdpwssd); the VNNI kernel's
    micro-kernel is vpdpbusd."""
    import platform
    import re

    from convbench.environment import cpu_info
    from convbench_backends import _numba_int8 as k

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip(f"x86 instructions checked; this is {platform.machine()}")
    x = np.arange(-64, 64, dtype=np.int8)
    asm = _asm_of(k._dot.py_func, x, 0, x, 0, 64)
    assert re.search(r"\b(v?pmaddwd|vpdpwssd)\b", asm), "no int16 multiply-add in the dot product"
    if "avx512_vnni" not in cpu_info()["cpu_isa"]:
        pytest.skip("no AVX-512 VNNI on this CPU: the VNNI kernel is not compiled")
    from convbench_backends import _numba_vnni as v

    mk = v.mk_6x32

    def tile(xu, xoffs, tapoff, nk4, wp, wbase, acc0, acc):
        mk(xu, xoffs, tapoff, nk4, wp, wbase, acc0, acc)

    xu = np.arange(256, dtype=np.uint8)
    wp = np.arange(-64, 64, dtype=np.int8).repeat(2)
    acc0 = np.arange(32, dtype=np.int32)
    acc = np.empty(6 * 32, dtype=np.int32)
    xoffs = np.arange(6, dtype=np.int64) * 8
    asm = _asm_of(tile, xu, xoffs, np.zeros(1, np.int64), 1, wp, 0, acc0, acc)
    assert len(re.findall(r"\bvpdpbusd\b", asm)) >= 12
    # and the tile computed acc0 + sum_k xu[xoffs[p] + k] * w[j, k] (4 input channels, 32 outputs)
    wmat = wp[:128].reshape(32, 4).astype(np.int64)
    expected = acc0 + np.stack([xu[o: o + 4].astype(np.int64) @ wmat.T for o in xoffs])
    assert np.array_equal(acc.reshape(6, 32), expected)


def test_int8_compilation_happens_in_prepare_not_in_run(backend):
    from convbench_backends import _numba_int8 as k

    spec = _i8(n=1, c_in=3, c_out=4, input_size=(6, 5), padding=1, layout="channels_last")
    x, w = cb.make_inputs(spec)
    for algorithm in INT8:
        if not backend.supports(spec, "cpu", algorithm):
            continue
        p = backend.prepare(spec, x, w, algorithm=algorithm)
        before = [(len(f.signatures), sum(f.stats.cache_misses.values())) for f in p.kernels]
        p.run()
        assert [(len(f.signatures), sum(f.stats.cache_misses.values())) for f in p.kernels] == before
        assert p.info["numba_cache"] in ("compiled", "loaded from cache", "already in memory")
    assert k.stage_i8 in p.kernels
