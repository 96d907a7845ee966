"""The NumPy/SciPy backends (numpy-direct, numpy-im2col, numpy-fft, scipy-fft, scipy-signal)
against the float64 reference, plus their declarations, refusals and info."""
import subprocess
import sys

import numpy as np
import pytest

import convbench as cb
from convbench.errors import InvalidInputError, UnsupportedError
from convbench.spec import numpy_dtype

pytest.importorskip("scipy", reason="scipy is needed by the scipy-* backends")

BACKENDS = {
    "numpy-direct": ["tensordot", "einsum"],
    "numpy-im2col": ["gemm"],
    "numpy-fft": ["rfft", "rfft-precomputed-weights"],
    "scipy-fft": ["rfft", "rfft-precomputed-weights"],
    "scipy-signal": ["correlate-direct", "correlate-fft", "oaconvolve"],
}
CANDIDATES = [(b, a) for b, algos in BACKENDS.items() for a in algos]
DIRECT = [("numpy-direct", "tensordot"), ("numpy-direct", "einsum"), ("numpy-im2col", "gemm"),
          ("scipy-signal", "correlate-direct")]


def _specs():
    S = cb.ConvSpec
    out = [
        S(n=2, c_in=3, c_out=4, input_size=(17,), kernel_size=5, padding=2),
        S(n=1, c_in=4, c_out=6, input_size=(16,), kernel_size=4, stride=3, padding=((2, 0),)),
        S(n=2, c_in=4, c_out=4, input_size=(15,), kernel_size=3, dilation=3, groups=2, padding=3,
          layout="channels_last"),
        S(n=1, c_in=6, c_out=3, input_size=(11,), kernel_size=4, stride=3, padding=1, dilation=2,
          groups=3, transposed=True, output_padding=2),
        S(n=2, c_in=4, c_out=5, input_size=(9, 8), kernel_size=(3, 2), stride=(2, 1),
          padding=((1, 2), (0, 1))),
        S(n=1, c_in=6, c_out=6, input_size=(8, 9), kernel_size=3, padding=1, groups=6,
          layout="channels_last"),
        S(n=1, c_in=6, c_out=12, input_size=(7, 7), kernel_size=3, padding=2, dilation=2, groups=6),
        S(n=2, c_in=4, c_out=6, input_size=(5, 6), kernel_size=3, stride=2, padding=((0, 1), (2, 1)),
          transposed=True, output_padding=1, groups=2, layout="channels_last"),
        S(n=1, c_in=3, c_out=2, input_size=(6, 5), kernel_size=(2, 3), stride=(3, 2), padding=(2, 0),
          dilation=(1, 2), transposed=True, output_padding=(2, 1)),
        S(n=1, c_in=5, c_out=4, input_size=(9, 10), kernel_size=1, stride=2),
        S(n=1, c_in=2, c_out=3, input_size=(5, 4, 6), kernel_size=(3, 2, 3), stride=(1, 2, 2),
          padding=((1, 0), (1, 1), (0, 2))),
        S(n=1, c_in=4, c_out=4, input_size=(4, 5, 4), kernel_size=3, padding=1, groups=4, dilation=(1, 2, 1),
          layout="channels_last"),
        S(n=2, c_in=2, c_out=4, input_size=(3, 4, 3), kernel_size=2, stride=2, padding=1,
          transposed=True, output_padding=1, groups=2),
        # a larger, realistic one: where FFT round-off accumulates over more terms
        S(n=1, c_in=16, c_out=16, input_size=(24, 24), kernel_size=5, padding=2),
    ]
    for dt in ("float64", "float16", "bfloat16"):
        for lay in ("channels_first", "channels_last"):
            out.append(S(n=2, c_in=4, c_out=6, input_size=(7, 6), kernel_size=3, stride=(1, 2),
                         padding=((1, 0), (1, 1)), groups=2, dtype=dt, layout=lay))
            out.append(S(n=1, c_in=4, c_out=2, input_size=(5, 4), kernel_size=3, stride=2, padding=1,
                         output_padding=1, transposed=True, dtype=dt, layout=lay))
        out.append(S(n=1, c_in=3, c_out=3, input_size=(6, 4, 5), kernel_size=2, dilation=2, padding=1,
                     groups=3, dtype=dt))
    return out


SPECS = _specs()


@pytest.fixture(scope="module")
def cases():
    """(spec, x, w, float64 reference) per spec, computed once."""
    out = []
    for i, spec in enumerate(SPECS):
        x, w = cb.make_inputs(spec, seed=i)
        out.append((spec, x, w, cb.reference(spec, x, w)))
    return out


@pytest.mark.parametrize("backend,algorithm", CANDIDATES)
def test_matches_reference(cases, backend, algorithm):
    b = cb.get_backend(backend)
    assert b.available(), b.available().reason
    errors = {}
    for spec, x, w, ref in cases:
        assert b.supports(spec, "cpu", algorithm), f"{spec.label}: {b.supports(spec, 'cpu', algorithm).reason}"
        x0, w0 = x.copy(), w.copy()
        p = b.prepare(spec, x, w, algorithm=algorithm)
        p.run()
        p.synchronize()
        y = p.result()
        assert isinstance(y, np.ndarray)
        assert y.shape == spec.output_shape, spec.label
        assert y.dtype == numpy_dtype(spec.dtype), spec.label
        assert np.array_equal(x, x0) and np.array_equal(w, w0), f"inputs modified: {spec.label}"
        err = cb.relative_error(y, ref)
        assert err <= cb.tolerance(spec.dtype), f"{backend}:{algorithm} {spec.label}: error {err:.2e}"
        errors[spec.dtype] = max(errors.get(spec.dtype, 0.0), err)
        # run() is repeatable and result() is a copy the caller may keep
        y[...] = 0
        p.run()
        assert cb.relative_error(p.result(), ref) <= cb.tolerance(spec.dtype)
        p.close()
    assert set(errors) == {"float64", "float32", "float16", "bfloat16"}


@pytest.mark.parametrize("backend,algorithm", DIRECT)
def test_direct_methods_exact_on_integer_inputs(backend, algorithm):
    """With small-integer inputs every product and partial sum is exact in float32: methods
    without transforms must reproduce the reference bit for bit (FFT methods cannot)."""
    b = cb.get_backend(backend)
    for spec in SPECS:
        if spec.dtype == "float64":
            continue
        x, w = cb.make_inputs(spec, seed=3, fill="exact")
        ref = cb.reference(spec, x, w)
        y = cb.convolve(spec, x, w, backend=backend, algorithm=algorithm)
        assert np.array_equal(y.astype(np.float64), ref), f"{backend}:{algorithm} {spec.label}"


def test_channels_last_matches_channels_first():
    """Same data in both layouts gives the same numbers (each layout has its own code path)."""
    cf = cb.ConvSpec(n=2, c_in=6, c_out=4, input_size=(9, 7), kernel_size=3, stride=2, padding=1, groups=2)
    cl = cf.replace(layout="channels_last")
    x, w = cb.make_inputs(cf, seed=5)
    x_cl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    for backend, algorithm in CANDIDATES:
        y_cf = cb.convolve(cf, x, w, backend=backend, algorithm=algorithm)
        y_cl = cb.convolve(cl, x_cl, w, backend=backend, algorithm=algorithm)
        np.testing.assert_allclose(np.moveaxis(y_cl, -1, 1), y_cf, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", ["numpy-fft", "scipy-fft", "scipy-signal"])
def test_outputs_reading_only_padding_are_exact_zeros(backend):
    # stride 3 in the last dim lands every window on padding: the whole output is zero
    spec = cb.ConvSpec(n=1, c_in=3, c_out=2, input_size=(6, 2), kernel_size=1, stride=(2, 3),
                       padding=(0, 1), dilation=(2, 1))
    x, w = cb.make_inputs(spec)
    assert not cb.reference(spec, x, w).any()
    for algo in BACKENDS[backend]:
        assert not cb.convolve(spec, x, w, backend=backend, algorithm=algo).any()


def test_fft_float32_error_on_long_signal():
    """A long 1-D signal with a wide kernel: float32 FFT round-off stays far inside 1e-4."""
    spec = cb.ConvSpec(n=1, c_in=8, c_out=8, input_size=(4099,), kernel_size=63, padding=31)
    x, w = cb.make_inputs(spec, seed=2)
    ref = cb.reference(spec, x, w)
    for backend in ("numpy-fft", "scipy-fft"):
        y = cb.convolve(spec, x, w, backend=backend)
        assert y.dtype == np.float32
        assert cb.relative_error(y, ref) < 1e-5


def test_info_declares_what_ran():
    spec = cb.ConvSpec(n=1, c_in=4, c_out=4, input_size=(8, 8), kernel_size=3, padding=1, dtype="float16")
    x, w = cb.make_inputs(spec)
    for backend, algos in BACKENDS.items():
        for algo in algos:
            info = cb.get_backend(backend).prepare(spec, x, w, algorithm=algo).info
            assert info["numpy"] == np.__version__
            assert info["compute_dtype"] == "float32"
            assert info["algorithm"] == algo
            assert "blas_threads" in info
    fft = cb.get_backend("numpy-fft")
    assert fft.prepare(spec, x, w, algorithm="rfft").info["weight_spectra"] == "computed in run()"
    assert fft.prepare(spec, x, w, algorithm="rfft-precomputed-weights").info["weight_spectra"] == \
        "precomputed in prepare()"
    assert "prepare()" in fft.algorithm_descriptions["rfft-precomputed-weights"]


def test_scipy_fft_workers_follow_set_threads():
    import scipy.fft

    spec = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(33,), kernel_size=3)
    x, w = cb.make_inputs(spec)
    b = type(cb.get_backend("scipy-fft"))()  # a fresh instance: do not change the shared one
    b.set_threads(2)
    p = b.prepare(spec, x, w)
    assert p.info["fft_workers"] == 2 and p.info["threads_requested"] == 2
    assert p.info["fft_shape"] == [scipy.fft.next_fast_len(33, real=True)]
    # numpy-fft transforms at the exact size
    assert cb.get_backend("numpy-fft").prepare(spec, x, w).info["fft_shape"] == [33]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="threads"):
            b.set_threads(bad)


def test_declarations():
    for name, algos in BACKENDS.items():
        b = cb.get_backend(name)
        assert b.name == name and b.family == "numpy"
        assert b.algorithms("cpu") == algos
        assert b.algorithms("cuda") == []
        spec = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(8,), kernel_size=3)
        s = b.supports(spec, device="cuda")
        assert not s and "cuda" in s.reason
        assert "numpy" in b.versions()


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_refuses_work_buffers_beyond_the_limit(backend):
    huge = cb.ConvSpec(n=256, c_in=512, c_out=512, input_size=(224, 224), kernel_size=3, padding=1)
    b = cb.get_backend(backend)
    s = b.supports(huge)
    assert not s and "GiB" in s.reason
    tiny = np.zeros((1,), np.float32)  # never looked at: supports() refuses before the inputs
    with pytest.raises(UnsupportedError, match="GiB"):
        b.prepare(huge, tiny, tiny)


def test_modules_import_without_scipy():
    code = ("import sys, convbench_backends.fft, convbench_backends.scipy_signal, "
            "convbench_backends.numpy_direct, convbench_backends.numpy_im2col; "
            "print(any(m.startswith('scipy') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_conformance_suite(backend):
    from convbench.testing import check_backend

    report = check_backend(cb.get_backend(backend))
    assert report.ok, report.summary()
    # these backends refuse none of the suite's float specs, and every int8 one (no int8 kernel)
    int8 = [r for r in report.results if r.spec.dtype == "int8"]
    assert int8 and all(r.status == "refused" for r in int8)
    assert report.count("pass") == report.n_specs - len(int8)


@pytest.mark.slow
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_conformance_suite_extended(backend):
    from convbench.testing import check_backend

    report = check_backend(cb.get_backend(backend), level="extended", seed=11)
    assert report.ok, report.summary()
