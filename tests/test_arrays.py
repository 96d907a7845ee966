"""conv() and convolve() on the arrays users hold: any strides, either byte order, Fortran
order, read-only and misaligned buffers -- the right answer, or a ConvbenchError naming the
problem."""
from __future__ import annotations

import numpy as np
import pytest

import convbench as cb
from convbench import dispatch as D
from convbench.errors import InvalidInputError
from convbench.reference import as_numpy, check_inputs

SPEC = cb.ConvSpec(n=2, c_in=4, c_out=6, input_size=(7, 6), kernel_size=3, padding=1, groups=2)
CPU_CANDIDATES = ["numpy-direct:tensordot", "numpy-direct:einsum", "numpy-im2col:gemm", "numpy-fft:rfft",
                  "scipy-fft:rfft", "scipy-signal:correlate-direct", "scipy-signal:oaconvolve",
                  "torch:default", "torch:channels_last", "torch:native"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVBENCH_CACHE", str(tmp_path / "tuned.sqlite"))
    D.clear_memo()
    yield
    D.clear_memo()


def _unaligned(a: np.ndarray) -> np.ndarray:
    buf = np.zeros(a.nbytes + 1, np.uint8)[1:].view(a.dtype).reshape(a.shape)
    buf[...] = a
    return buf


def _spaced(a: np.ndarray) -> np.ndarray:
    big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
    every_other = tuple(slice(None, None, 2) for _ in a.shape)
    big[every_other] = a
    return big[every_other]


def _readonly(a: np.ndarray) -> np.ndarray:
    r = a.copy()
    r.flags.writeable = False
    return r


VARIANTS = {
    "fortran": np.asfortranarray,
    "negative-strides": lambda a: a[..., ::-1].copy()[..., ::-1],
    "big-endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "spaced": _spaced,
    "read-only": _readonly,
    "broadcast": lambda a: np.broadcast_to(a, a.shape),
    "misaligned": _unaligned,
}


def _inputs():
    x, w = cb.make_inputs(SPEC, seed=3)
    return x, w, cb.reference(SPEC, x, w)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_are_what_they_claim(variant):
    x = VARIANTS[variant](cb.make_inputs(SPEC)[0])
    claims = {"fortran": x.flags.f_contiguous and not x.flags.c_contiguous,
              "negative-strides": min(x.strides) < 0, "big-endian": not x.dtype.isnative,
              "spaced": not x.flags.c_contiguous and not x.flags.f_contiguous,
              "read-only": not x.flags.writeable, "broadcast": not x.flags.writeable,
              "misaligned": not x.flags.aligned}
    assert claims[variant]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("candidate", CPU_CANDIDATES)
def test_convolve_takes_any_numpy_array(variant, candidate):
    backend, algorithm = candidate.split(":")
    x, w, expected = _inputs()
    y = cb.convolve(SPEC, VARIANTS[variant](x), VARIANTS[variant](w), backend=backend, algorithm=algorithm)
    assert y.dtype == np.float32 and y.dtype.isnative
    assert cb.relative_error(y, expected) < 1e-5


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("candidate", [c for c in CPU_CANDIDATES if "fft" not in c and "oa" not in c])
def test_conv_runners_take_any_numpy_array(variant, candidate):
    backend, algorithm = candidate.split(":")
    x, w, expected = _inputs()
    fn = D.runner(SPEC, "numpy", backend, algorithm, "cpu")
    y = fn(VARIANTS[variant](x), VARIANTS[variant](w))
    assert cb.relative_error(np.asarray(y), expected) < 1e-5


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_conv_reuses_a_plan_made_for_ordinary_arrays_on_odd_ones(variant):
    """The memo is keyed by shape and dtype, not strides: a plan made for a C-contiguous array
    must also serve a negative-stride or Fortran array of the same shape."""
    x, w, expected = _inputs()
    kw = dict(padding=1, groups=2, policy="heuristic")
    assert cb.relative_error(cb.conv(x, w, **kw), expected) < 1e-5
    y = cb.conv(VARIANTS[variant](x), VARIANTS[variant](w), **kw)
    assert cb.relative_error(np.asarray(y), expected) < 1e-5


def test_conv_on_big_endian_arrays_with_the_tune_policy_times_native_copies():
    x, w, expected = _inputs()
    xb, wb = VARIANTS["big-endian"](x), VARIANTS["big-endian"](w)
    D.TUNE_BACKENDS = ["numpy-direct", "numpy-im2col"]
    try:
        y = cb.conv(xb, wb, padding=1, groups=2, policy="tune")
    finally:
        D.TUNE_BACKENDS = None
    assert cb.relative_error(np.asarray(y), expected) < 1e-5


def test_masked_arrays_are_refused_naming_the_mask():
    x, w, _ = _inputs()
    masked = np.ma.masked_array(x, x > 0.5)
    with pytest.raises(InvalidInputError, match="x: a masked array.*ignore its mask"):
        cb.conv(masked, w, padding=1, groups=2)
    with pytest.raises(InvalidInputError, match="masked array"):
        cb.convolve(SPEC, masked, w, backend="numpy-direct")


def test_api_arguments_are_checked_before_anything_runs():
    x, w, _ = _inputs()
    with pytest.raises(InvalidInputError, match="transposed: 'yes' must be True or False"):
        cb.conv(x, w, padding=1, groups=2, transposed="yes")
    with pytest.raises(InvalidInputError, match="cache: 123 is not a cache"):
        cb.conv(x, w, padding=1, groups=2, cache=123)
    with pytest.raises(InvalidInputError, match="cache: 123"):
        cb.conv(x, w, padding=1, groups=2, cache=123, policy="tune")
    with pytest.raises(cb.ConvbenchError, match="stride: 0"):
        cb.conv(x, w, stride=0, groups=2, policy="tune")
    with pytest.raises(InvalidInputError, match="device: 'gpu' is not a device"):
        cb.convolve(SPEC, x, w, backend="numpy-direct", device="gpu")


def test_check_inputs_returns_native_aligned_arrays_and_views_the_rest():
    x, w, _ = _inputs()
    xb, wf = VARIANTS["big-endian"](x), np.asfortranarray(w)
    xn, wn = check_inputs(SPEC, xb, wf)
    assert xn.dtype.isnative and np.array_equal(xn, x)
    assert wn is wf  # any strides: no copy
    xn, _ = check_inputs(SPEC, _unaligned(x), w)
    assert xn.flags.aligned and np.array_equal(xn, x)
    with pytest.raises(InvalidInputError, match="x: dtype float64 does not match spec.dtype float32"):
        check_inputs(SPEC, x.astype(np.float64), w)


def test_as_numpy_names_what_is_wrong():
    with pytest.raises(InvalidInputError, match="w: expected a numpy array, got list"):
        as_numpy("w", [[1.0]])

    class NotAnArray:
        shape = (1,)
        dtype = "float32"

        def __array__(self, *args, **kwargs):
            raise RuntimeError("lives on another device")
    with pytest.raises(InvalidInputError, match="x: a NotAnArray that numpy cannot view.*another device"):
        as_numpy("x", NotAnArray())


# ---- torch tensors ---------------------------------------------------------------------------
def _tensor_variants(torch, x):
    t = torch.from_numpy(x)
    cl = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, 1, -1))).permute(0, 3, 1, 2)
    spaced = torch.from_numpy(np.repeat(x, 2, axis=-1))[..., ::2]
    return {"contiguous": t, "channels-last-memory": cl, "spaced": spaced,
            "channels-last-format": t.contiguous(memory_format=torch.channels_last)}


@pytest.mark.parametrize("candidate", ["torch:default", "torch:native", "numpy-im2col:gemm",
                                       "numpy-direct:einsum"])
def test_torch_tensors_of_any_strides(candidate):
    torch = pytest.importorskip("torch", reason="torch not installed")
    backend, algorithm = candidate.split(":")
    x, w, expected = _inputs()
    fn = D.runner(SPEC, "torch-cpu", backend, algorithm, "cpu")
    wt = torch.from_numpy(w)
    for name, xt in _tensor_variants(torch, x).items():
        assert cb.relative_error(fn(xt, wt).numpy(), expected) < 1e-5, name
        assert cb.relative_error(fn(xt, wt.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)).numpy(),
                                 expected) < 1e-5, name


def test_conv_on_expanded_torch_tensors():
    torch = pytest.importorskip("torch", reason="torch not installed")
    x, w, _ = _inputs()
    xe = torch.from_numpy(x[:1]).expand(3, *x.shape[1:])  # stride 0 along the batch
    y = cb.conv(xe, torch.from_numpy(w), padding=1, groups=2)
    spec = SPEC.replace(n=3)
    assert cb.relative_error(y.numpy(), cb.reference(spec, np.repeat(x[:1], 3, axis=0), w)) < 1e-5


def test_convolve_accepts_cpu_tensors_as_arrays():
    torch = pytest.importorskip("torch", reason="torch not installed")
    x, w, expected = _inputs()
    y = cb.convolve(SPEC, torch.from_numpy(x), torch.from_numpy(w), backend="numpy-im2col")
    assert cb.relative_error(y, expected) < 1e-5


def test_torch_read_only_numpy_views_do_not_warn(recwarn):
    pytest.importorskip("torch", reason="torch not installed")
    x, w, expected = _inputs()
    fn = D.runner(SPEC, "numpy", "torch", "default", "cpu")
    y = fn(_readonly(x), np.broadcast_to(w, w.shape))
    assert cb.relative_error(y, expected) < 1e-5
    assert not [r for r in recwarn if "not writable" in str(r.message)]
