"""The float64 reference convolution, input generation and the error measure.

The reference is deliberately plain: one BLAS contraction per kernel tap (gather for the
direct convolution, scatter for the transposed one), everything in float64. It shares no code
with any backend.
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from .errors import InvalidInputError, InvalidSpecError
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


def check_inputs(spec: ConvSpec, x: Any, w: Any, *, check_dtype: bool = True) -> None:
    """Raise InvalidInputError unless x and w are arrays of the spec's shapes (and dtype)."""
    for name, arr, shape in (("x", x, spec.input_shape), ("w", w, spec.weight_shape)):
        if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
            raise InvalidInputError(f"{name}: expected an array, got {type(arr).__name__}")
        if tuple(arr.shape) != tuple(shape):
            what = "input" if name == "x" else "weight"
            raise InvalidInputError(
                f"{name}: shape {tuple(arr.shape)} does not match the spec's {what} shape "
                f"{tuple(shape)} ({spec.layout}, {spec.label})")
        if check_dtype and np.dtype(arr.dtype) != numpy_dtype(spec.dtype):
            raise InvalidInputError(
                f"{name}: dtype {np.dtype(arr.dtype).name} does not match spec.dtype {spec.dtype}")


def make_inputs(spec: ConvSpec, seed: int = 0, fill: str = "random") -> tuple[np.ndarray, np.ndarray]:
    """Reproducible (x, w) numpy arrays of spec.dtype in spec.layout.

    ``fill="random"``: uniform in [-1, 1), weights scaled by 1/sqrt(fan_in) so outputs stay O(1).
    ``fill="exact"``: small integers (x in [-2, 2], w in [-1, 1], as oneDNN's benchdnn does), so
    every product and partial sum is an exact integer in every dtype as long as the reduction
    stays below the dtype's integer range (2**8 terms of magnitude 2 for bfloat16, 2**11 for
    float16): results can then be compared bit for bit.
    """
    if fill not in FILLS:
        raise InvalidSpecError(f"fill: {fill!r} is not a fill; use one of {', '.join(FILLS)}")
    rng = np.random.default_rng(seed)
    dt = numpy_dtype(spec.dtype)
    xs_cf = (spec.n, spec.c_in, *spec.input_size)
    if fill == "exact":
        x = rng.integers(-2, 3, size=xs_cf).astype(np.float64)
        w = rng.integers(-1, 2, size=spec.weight_shape).astype(np.float64)
    else:
        x = rng.uniform(-1.0, 1.0, size=xs_cf)
        fan_in = (spec.c_in // spec.groups) * int(np.prod(spec.kernel_size))
        w = rng.uniform(-1.0, 1.0, size=spec.weight_shape) / np.sqrt(fan_in)
    x = np.ascontiguousarray(from_channels_first(x, spec.layout)).astype(dt)
    return x, np.ascontiguousarray(w.astype(dt))


def _tap_slices(offset: tuple[int, ...], stride: tuple[int, ...], count: tuple[int, ...]) -> tuple:
    return tuple(slice(o, o + s * (c - 1) + 1, s) for o, s, c in zip(offset, stride, count))


def reference(spec: ConvSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The convolution in float64 (cross-correlation, PyTorch conventions), in spec.layout."""
    check_inputs(spec, x, w, check_dtype=False)
    g = spec.groups
    x64 = to_channels_first(np.asarray(x).astype(np.float64), spec.layout)
    w64 = np.asarray(w).astype(np.float64)
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


def tolerance(dtype: str) -> float:
    """The norm-wise relative error bound for a dtype name (incl. 'tf32')."""
    if dtype not in TOLERANCES:
        raise InvalidSpecError(f"dtype: no tolerance for {dtype!r}; known: {', '.join(TOLERANCES)}")
    return TOLERANCES[dtype]
