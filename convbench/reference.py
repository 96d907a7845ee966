"""The float64 reference convolution, input generation and the error measure.

The reference is deliberately plain: one BLAS contraction per kernel tap (gather for the
direct convolution, scatter for the transposed one), everything in float64. It shares no code
with any backend.
"""
from __future__ import annotations

import itertools
import math
import os
from typing import Any, Optional

import numpy as np

from .errors import InvalidInputError, InvalidSpecError
from .quant import INT8_TOLERANCE_LSB, QMAX, is_quantized, lsb_error, requantize
from .spec import TOLERANCES, ConvSpec, numpy_dtype

FILLS = ("random", "exact")


def to_channels_first(a: np.ndarray, layout: str) -> np.ndarray:
    """View an activation tensor as (N, C, *spatial)."""
    if layout == "channels_first":
        return a
    return np.moveaxis(a, -1, 1)


def from_channels_first(a: np.ndarray, layout: str) -> np.ndarray:
    """Turn an (N, C, *spatial) tensor into the given layout (a view where possible)."""
    if layout == "channels_first":
        return a
    return np.moveaxis(a, 1, -1)


def as_numpy(name: str, arr: Any) -> np.ndarray:
    """``arr`` as a numpy array that any backend can read: itself when its byte order is native
    and its data aligned (any strides, Fortran order and negative strides included), else a
    native, aligned copy. Objects with ``__array__`` (e.g. CPU tensors) are viewed through it;
    InvalidInputError names what is wrong with anything else (masked arrays: the mask would be
    ignored)."""
    if isinstance(arr, np.ma.MaskedArray):
        raise InvalidInputError(f"{name}: a masked array; convbench would ignore its mask: pass "
                                f"{name}.filled(0) (masked entries as zeros) or {name}.data")
    if not isinstance(arr, np.ndarray):
        if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
            raise InvalidInputError(f"{name}: expected a numpy array, got {type(arr).__name__}")
        try:
            arr = np.asarray(arr)
        except Exception as exc:  # noqa: BLE001 - e.g. a GPU tensor, an unsupported dtype
            raise InvalidInputError(f"{name}: a {type(arr).__name__} that numpy cannot view "
                                    f"({type(exc).__name__}: {exc}); pass a numpy array") from exc
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if not arr.flags.aligned:
        arr = arr.copy()
    return arr


def check_inputs(spec: ConvSpec, x: Any, w: Any, *, check_dtype: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(x, w)`` as numpy arrays any backend can read (:func:`as_numpy`: a copy only for
    non-native byte order or misaligned data); InvalidInputError unless they have the spec's
    shapes (and dtype)."""
    out = []
    for name, arr, shape in (("x", x, spec.input_shape), ("w", w, spec.weight_shape)):
        arr = as_numpy(name, arr)
        if tuple(arr.shape) != tuple(shape):
            what = "input" if name == "x" else "weight"
            raise InvalidInputError(
                f"{name}: shape {tuple(arr.shape)} does not match the spec's {what} shape "
                f"{tuple(shape)} ({spec.layout}, {spec.label})")
        if check_dtype and arr.dtype != numpy_dtype(spec.dtype):
            raise InvalidInputError(
                f"{name}: dtype {arr.dtype.name} does not match spec.dtype {spec.dtype}; "
                f"convert with {name}.astype(...)")
        out.append(arr)
    return out[0], out[1]


def make_inputs(spec: ConvSpec, seed: int = 0, fill: str = "random") -> tuple[np.ndarray, np.ndarray]:
    """Reproducible (x, w) numpy arrays of spec.dtype in spec.layout.

    ``fill="random"``: uniform in [-1, 1), weights scaled by 1/sqrt(fan_in) so outputs stay O(1).
    int8 problems (:mod:`convbench.quant`): integers uniform in [-127, 127] for both fills;
    their scales are :func:`convbench.quant.quant_params`.
    ``fill="exact"``: small integers (x in [-2, 2], w in [-1, 1], as oneDNN's benchdnn does), so
    every product and partial sum is an exact integer in every dtype as long as the reduction
    stays below the dtype's integer range (2**8 terms of magnitude 2 for bfloat16, 2**11 for
    float16): results can then be compared bit for bit.
    """
    if fill not in FILLS:
        raise InvalidSpecError(f"fill: {fill!r} is not a fill; use one of {', '.join(FILLS)}")
    _check_input_args(spec, seed)
    rng = np.random.default_rng(int(seed))
    dt = numpy_dtype(spec.dtype)
    xs_cf = (spec.n, spec.c_in, *spec.input_size)
    if is_quantized(spec.dtype):  # the same draws for both fills: integers are exact
        x = rng.integers(-QMAX, QMAX + 1, size=xs_cf, dtype=np.int64)
        w = rng.integers(-QMAX, QMAX + 1, size=spec.weight_shape, dtype=np.int64)
    elif fill == "exact":
        x = rng.integers(-2, 3, size=xs_cf).astype(np.float64)
        w = rng.integers(-1, 2, size=spec.weight_shape).astype(np.float64)
    else:
        x = rng.uniform(-1.0, 1.0, size=xs_cf)
        fan_in = (spec.c_in // spec.groups) * int(np.prod(spec.kernel_size))
        w = rng.uniform(-1.0, 1.0, size=spec.weight_shape) / np.sqrt(fan_in)
    x = np.ascontiguousarray(from_channels_first(x, spec.layout)).astype(dt)
    return x, np.ascontiguousarray(w.astype(dt))


def _check_input_args(spec: Any, seed: Any) -> None:
    """InvalidSpecError for a seed numpy cannot use, or inputs this machine cannot hold."""
    if not isinstance(spec, ConvSpec):
        raise InvalidSpecError(f"spec: expected a ConvSpec, got {type(spec).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidSpecError(f"seed: {seed!r} must be an integer >= 0")
    values = math.prod(spec.input_shape) + math.prod(spec.weight_shape)
    need = values * 16  # a float64 draw and its cast, for x and for w
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # not on this OS: no limit known
        return
    if need > have:
        raise InvalidSpecError(f"{spec.label}: its inputs ({values:,} values, about "
                               f"{need / 2 ** 30:,.1f} GiB while generated) exceed this machine's "
                               f"memory ({have / 2 ** 30:,.1f} GiB)")


def _tap_slices(offset: tuple[int, ...], stride: tuple[int, ...], count: tuple[int, ...]) -> tuple:
    return tuple(slice(o, o + s * (c - 1) + 1, s) for o, s, c in zip(offset, stride, count))


def reference(spec: ConvSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The convolution in float64 (cross-correlation, PyTorch conventions), in spec.layout.

    For an int8 problem: the exact answer, int8, requantised from the exact accumulators
    (:func:`reference_accumulators`, :func:`convbench.quant.requantize`)."""
    if is_quantized(spec.dtype):
        acc = reference_accumulators(spec, x, w)
        return requantize(acc, spec, channel_axis=1 if spec.layout == "channels_first" else -1)
    return _reference_float64(spec, x, w)


def reference_accumulators(spec: ConvSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """An integer problem's exact accumulators (int64, in spec.layout): the float64 reference
    of integer inputs is exact while every partial sum stays below 2**53 (127 * 127 * K does
    for any K below 5.5e11), so it is rounded, checked and returned as integers."""
    if not is_quantized(spec.dtype):
        raise InvalidSpecError(f"dtype: {spec.dtype} is not quantized; accumulators are for int8")
    y = _reference_float64(spec, x, w)
    acc = np.rint(y).astype(np.int64)
    return acc


def _reference_float64(spec: ConvSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    x, w = check_inputs(spec, x, w, check_dtype=False)
    g = spec.groups
    x64 = to_channels_first(x.astype(np.float64), spec.layout)
    w64 = w.astype(np.float64)
    n, d = spec.n, spec.dims
    cig, cog = spec.c_in // g, spec.c_out // g
    xg = x64.reshape(n, g, cig, *spec.input_size)
    out_size = spec.output_size
    taps = list(itertools.product(*[range(k) for k in spec.kernel_size]))

    if not spec.transposed:
        pad = [(0, 0)] * 3 + list(spec.padding)
        xp = np.pad(xg, pad)
        wg = w64.reshape(g, cog, cig, *spec.kernel_size)
        y = np.zeros((n, g, cog, *out_size))
        for tap in taps:
            off = tuple(t * dl for t, dl in zip(tap, spec.dilation))
            window = xp[(slice(None),) * 3 + _tap_slices(off, spec.stride, out_size)]
            # (n, g, cig, *o) x (g, cog, cig) -> (n, g, cog, *o)
            y += np.einsum("ngc...,goc->ngo...", window, wg[(Ellipsis, *tap)], optimize=True)
    else:
        wg = w64.reshape(g, cig, cog, *spec.kernel_size)
        full = [(i - 1) * s + dl * (k - 1) + 1 + op for i, s, dl, k, op in
                zip(spec.input_size, spec.stride, spec.dilation, spec.kernel_size, spec.output_padding)]
        yfull = np.zeros((n, g, cog, *full))
        for tap in taps:
            off = tuple(t * dl for t, dl in zip(tap, spec.dilation))
            contrib = np.einsum("ngc...,gco->ngo...", xg, wg[(Ellipsis, *tap)], optimize=True)
            yfull[(slice(None),) * 3 + _tap_slices(off, spec.stride, spec.input_size)] += contrib
        crop = tuple(slice(pb, f - pa) for (pb, pa), f in zip(spec.padding, full))
        y = yfull[(slice(None),) * 3 + crop]
    y = y.reshape(n, spec.c_out, *out_size)
    return np.ascontiguousarray(from_channels_first(y, spec.layout))


def relative_error(result: np.ndarray, expected: np.ndarray) -> float:
    """Norm-wise relative error ||result - expected||_2 / ||expected||_2, computed in float64."""
    r = np.asarray(result).astype(np.float64)
    e = np.asarray(expected).astype(np.float64)
    if r.shape != e.shape:
        raise InvalidInputError(f"result shape {r.shape} != expected shape {e.shape}")
    if not np.all(np.isfinite(r)):
        return float("inf")
    denom = float(np.linalg.norm(e.ravel()))
    num = float(np.linalg.norm((r - e).ravel()))
    if denom == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / denom


def output_error(result: np.ndarray, expected: np.ndarray) -> float:
    """The error measure verification uses: for an integer ``expected`` (int8 problems) the
    largest difference in LSB (:func:`convbench.quant.lsb_error`), else the norm-wise
    relative error (:func:`relative_error`)."""
    e = np.asarray(expected)
    if np.issubdtype(e.dtype, np.integer):
        r = np.asarray(result)
        if r.shape != e.shape:
            raise InvalidInputError(f"result shape {r.shape} != expected shape {e.shape}")
        return lsb_error(r, e)
    return relative_error(result, expected)


def tolerance(dtype: str) -> float:
    """The norm-wise relative error bound for a dtype name (incl. 'tf32'), for accumulations of
    ordinary length; :func:`tolerance_for` is the bound for a given spec. int8: the largest
    difference in LSB allowed (:data:`convbench.quant.INT8_TOLERANCE_LSB`)."""
    if is_quantized(dtype):
        return INT8_TOLERANCE_LSB
    if dtype not in TOLERANCES:
        raise InvalidSpecError(f"dtype: no tolerance for {dtype!r}; known: {', '.join(TOLERANCES)}")
    return TOLERANCES[dtype]


#: unit roundoff of the accumulation: float64 sums in float64; every other dtype (float32,
#: tf32, float16, bfloat16) is accumulated in float32, as the built-in backends and oneDNN do
ACCUMULATION_UNIT = {"float64": 2.0 ** -53}
FLOAT32_UNIT = 2.0 ** -24
#: c in the bound's growth term c * u * sqrt(K)
ACCUMULATION_FACTOR = 2.0


def accumulation_length(spec: ConvSpec) -> int:
    """K, the number of products summed into one output: C_in/groups * prod(kernel) (the
    same count for a transposed convolution's equivalent direct one; an upper bound where
    stride or padding leave taps out)."""
    return (spec.c_in // spec.groups) * math.prod(spec.kernel_size)


def tolerance_for(spec: ConvSpec, dtype: Optional[str] = None) -> float:
    """The norm-wise relative error bound for ``spec`` (``dtype``: another precision the
    candidate computes in, e.g. "tf32"; default ``spec.dtype``)::

        bound = max(tolerance(dtype), ACCUMULATION_FACTOR * u * sqrt(K))

    ``K`` = :func:`accumulation_length`, ``u`` the unit roundoff of the accumulation
    (2**-53 for float64, 2**-24 otherwise: float32 accumulation). Summing K rounded products
    with random signs leaves a relative error that grows like u * sqrt(K) (about 0.4 u sqrt(K)
    for plain left-to-right summation, less for blocked or pairwise sums), so the growth term
    keeps a factor of 5 in reserve. It overtakes the fixed float32 bound only from K of about
    700,000 (3x3 kernels over 78,000 channels), so ordinary shapes keep the fixed bounds:
    float32 1e-4 up to K ~ 7e5, 1.8e-3 at K = 2.3e8.
    """
    name = dtype or spec.dtype
    if is_quantized(name):
        return INT8_TOLERANCE_LSB
    floor = tolerance(name)
    u = ACCUMULATION_UNIT.get(name, FLOAT32_UNIT)
    return max(floor, ACCUMULATION_FACTOR * u * math.sqrt(accumulation_length(spec)))
