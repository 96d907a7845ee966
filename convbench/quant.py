"""Quantized (int8) convolution: the problem's scales, the exact reference and the error in LSB.

``ConvSpec(..., dtype="int8")`` is the inference convolution quantized engines run:

- activations ``x``: int8, symmetric (zero point 0), one per-tensor scale ``x_scale``;
- weights ``w``: int8 in [-127, 127], symmetric, one scale per output channel ``w_scale[o]``;
- accumulation in int32 (exact: ``acc[o] = sum x_q * w_q``);
- output ``y``: int8 with a per-tensor ``y_scale`` and zero point 0, requantised as
  ``y_q = saturate_int8(round_half_to_even(acc * (x_scale * w_scale[o] / y_scale)))``.

No bias. By default the scales are a fixed function of the spec (:func:`quant_params`), chosen so that
outputs of the inputs :func:`convbench.make_inputs` draws (integers uniform in [-127, 127])
use most of the int8 range: the typical output has a standard deviation of about 32 LSB, a
few per cent saturate. They are float32 values, as engines store them. The requantisation
multiplier is computed in float64 here; engines that compute it in float32 can land on the
other side of a rounding tie, hence verification allows one LSB (exact where a candidate
exposes its int32 accumulators and requantises as above).

Users' own scales: ``ConvSpec(..., dtype="int8", quant=(x_scale, w_scale, y_scale))`` (or a
:class:`QuantParams`, or its ``to_dict()``), validated by :func:`as_quant_params`, replace the
default in :func:`quant_params`, the reference and every candidate; they are not part of the
problem's identity (``spec.key``, ``==``): performance does not depend on them, so tuned
cache entries are shared. ``convbench.conv(x, w, scales=...)`` passes them for int8 arrays.

FLOPs of an int8 problem count integer multiply-adds the same way (2 per MAC): "GOP/s".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

#: dtypes whose problems are quantized (integer arithmetic, an exact reference)
QUANT_DTYPES = ("int8",)
#: the verification bound for an int8 candidate: output values may differ by one LSB
INT8_TOLERANCE_LSB = 1.0
#: inputs are drawn uniformly from [-QMAX, QMAX] (symmetric: -128 is never drawn)
QMAX = 127
#: the standard deviation, in LSB, the output scale aims at
TARGET_OUTPUT_STD = 32.0
#: the per-tensor activation scale (any value works: only the products matter)
X_SCALE = 1.0 / 64.0
#: the per-channel weight scales cycle through BASE * (1 + k/8), k = o mod 8
W_SCALE_STEPS = 8


@dataclass(frozen=True, eq=False)
class QuantParams:
    """The scales of an int8 problem (zero points are all 0: symmetric quantisation).

    Equal when all scales are equal; ``to_dict()`` is the JSON form a spec carries
    (``ConvSpec(..., quant=...)`` takes a QuantParams, that dict or an
    ``(x_scale, w_scale, y_scale)`` tuple: :func:`as_quant_params`)."""

    x_scale: float
    w_scale: np.ndarray       # float32, one per output channel
    y_scale: float

    @property
    def multiplier(self) -> np.ndarray:
        """float64 per-output-channel requantisation multiplier x_scale * w_scale / y_scale."""
        return (np.float64(self.x_scale) * self.w_scale.astype(np.float64)) / np.float64(self.y_scale)

    def to_dict(self) -> dict[str, Any]:
        return {"x_scale": float(self.x_scale), "w_scale": [float(v) for v in self.w_scale],
                "y_scale": float(self.y_scale)}

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, QuantParams):
            return NotImplemented
        return (float(self.x_scale) == float(other.x_scale)
                and float(self.y_scale) == float(other.y_scale)
                and np.array_equal(np.asarray(self.w_scale), np.asarray(other.w_scale)))

    def __hash__(self) -> int:
        return hash((float(self.x_scale), float(self.y_scale),
                     tuple(float(v) for v in np.ravel(self.w_scale))))

    def __repr__(self) -> str:
        ws = np.ravel(self.w_scale)
        shown = ", ".join(f"{v:.4g}" for v in ws[:4]) + (", ..." if ws.size > 4 else "")
        return (f"QuantParams(x_scale={self.x_scale:.6g}, w_scale=[{shown}] ({ws.size}), "
                f"y_scale={self.y_scale:.6g})")


_QUANT_KEYS = ("x_scale", "w_scale", "y_scale")


def _scale(name: str, value: Any) -> float:
    """A per-tensor scale as a positive finite float32 value, or InvalidSpecError."""
    from .errors import InvalidSpecError

    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidSpecError(f"quant.{name}: {value!r} must be a positive finite number")
    with np.errstate(over="ignore"):
        v = np.float32(value)
    if not (np.isfinite(v) and v > 0):
        raise InvalidSpecError(f"quant.{name}: {value!r} must be positive and finite (as a "
                               f"float32, as engines store scales)")
    return float(v)


def _channel_scales(value: Any, c_out: int) -> np.ndarray:
    """Per-output-channel weight scales (a scalar applies to every channel), float32."""
    from .errors import InvalidSpecError

    if np.ndim(value) == 0:
        return np.full(c_out, _scale("w_scale", value), dtype=np.float32)
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidSpecError(f"quant.w_scale: {value!r} must be numbers, one per output "
                               f"channel") from None
    if a.ndim != 1 or a.size != c_out:
        raise InvalidSpecError(f"quant.w_scale: has shape {a.shape}, but c_out is {c_out}: give "
                               f"one scale per output channel ({c_out},) or one for all")
    with np.errstate(over="ignore", invalid="ignore"):
        w = a.astype(np.float32)
    bad = np.flatnonzero(~(np.isfinite(w) & (w > 0)))
    if bad.size:
        raise InvalidSpecError(f"quant.w_scale[{bad[0]}]: {float(a[bad[0]])!r} must be positive and "
                               f"finite (as a float32)")
    w.setflags(write=False)
    return w


def as_quant_params(value: Any, c_out: int) -> QuantParams:
    """User-given scales for a problem with ``c_out`` output channels, validated: a
    QuantParams, a dict with x_scale, w_scale and y_scale, or an ``(x_scale, w_scale,
    y_scale)`` tuple. Scales are stored as float32 (as engines store them) and must be
    positive and finite; ``w_scale`` has one value per output channel, or one for all.
    InvalidSpecError names the field otherwise."""
    from .errors import InvalidSpecError

    if isinstance(value, QuantParams):
        fields = {k: getattr(value, k) for k in _QUANT_KEYS}
    elif isinstance(value, dict):
        if set(value) != set(_QUANT_KEYS):
            raise InvalidSpecError(f"quant: {sorted(value)} must be exactly the keys "
                                   f"{', '.join(_QUANT_KEYS)}")
        fields = dict(value)
    elif isinstance(value, (tuple, list)) and len(value) == 3:
        fields = dict(zip(_QUANT_KEYS, value))
    else:
        raise InvalidSpecError(f"quant: {value!r} must be QuantParams, a dict of x_scale, "
                               f"w_scale, y_scale or a tuple (x_scale, w_scale, y_scale)")
    return QuantParams(x_scale=_scale("x_scale", fields["x_scale"]),
                       w_scale=_channel_scales(fields["w_scale"], c_out),
                       y_scale=_scale("y_scale", fields["y_scale"]))


def is_quantized(dtype: Any) -> bool:
    """Whether ``dtype`` (a convbench dtype name) is a quantized, integer problem type."""
    return isinstance(dtype, str) and dtype in QUANT_DTYPES


#: the unit of a rate: floating-point operations, or integer operations for quantized dtypes
FLOAT_RATE, INT_RATE = "GFLOP/s", "GOP/s"


def rate_unit(dtype: Any) -> str:
    """"GOP/s" for a quantized dtype (integer multiply-adds, 2 per MAC), else "GFLOP/s"."""
    return INT_RATE if is_quantized(dtype) else FLOAT_RATE


def rate_header(dtypes: Iterable[Any]) -> str:
    """The header of a column of rates over problems of ``dtypes``: "GFLOP/s", "GOP/s" when
    every problem is quantized, "GFLOP/s (GOP/s for int8)" when both kinds are present."""
    kinds = {is_quantized(d) for d in dtypes if isinstance(d, str)}
    if kinds == {True}:
        return INT_RATE
    if kinds == {True, False}:
        return f"{FLOAT_RATE} ({INT_RATE} for {'/'.join(QUANT_DTYPES)})"
    return FLOAT_RATE


def quant_params(spec) -> QuantParams:
    """The scales of ``spec`` (an int8 ConvSpec): the user's (``spec.quant``) when given,
    else the default below, a documented function of the spec's shape alone.

    ``w_scale[o] = X_SCALE * (1 + (o mod 8) / 8) / sqrt(K)`` with K = C_in/groups * prod(k)
    (the accumulation length), and ``y_scale`` chosen so that an output channel with the
    mean weight scale has a standard deviation of TARGET_OUTPUT_STD LSB for inputs uniform in
    [-127, 127] (each of standard deviation sqrt(255**2 - 1) / sqrt(12) ~ 73.6).
    """
    given = getattr(spec, "quant", None)
    if given is not None:
        return given
    from .reference import accumulation_length

    k = accumulation_length(spec)
    steps = 1.0 + (np.arange(spec.c_out) % W_SCALE_STEPS) / W_SCALE_STEPS
    base = X_SCALE / math.sqrt(k)
    w_scale = (base * steps).astype(np.float32)
    sigma = math.sqrt((2 * QMAX + 1) ** 2 - 1) / math.sqrt(12.0)
    mean_step = float(np.mean(1.0 + np.arange(W_SCALE_STEPS) / W_SCALE_STEPS))
    acc_std = math.sqrt(k) * sigma * sigma
    y_scale = float(np.float32(X_SCALE * base * mean_step * acc_std / TARGET_OUTPUT_STD))
    return QuantParams(x_scale=float(np.float32(X_SCALE)), w_scale=w_scale, y_scale=y_scale)


def requantize(acc: np.ndarray, spec, channel_axis: int = 1) -> np.ndarray:
    """int8 outputs from int32/int64 accumulators ``acc`` (channels along ``channel_axis``):
    multiply by the per-channel multiplier in float64, round half to even, saturate."""
    m = quant_params(spec).multiplier
    shape = [1] * acc.ndim
    shape[channel_axis] = m.size
    y = np.rint(acc.astype(np.float64) * m.reshape(shape))
    return np.clip(y, -128, 127).astype(np.int8)


def lsb_error(result: np.ndarray, expected: np.ndarray) -> float:
    """The largest absolute difference, in LSB, between two integer outputs."""
    r = np.asarray(result)
    e = np.asarray(expected)
    if not (np.issubdtype(r.dtype, np.integer) or np.issubdtype(r.dtype, np.floating)):
        return float("inf")
    if np.issubdtype(r.dtype, np.floating) and not np.all(np.isfinite(r)):
        return float("inf")
    if r.size == 0:
        return 0.0
    return float(np.max(np.abs(r.astype(np.float64) - e.astype(np.float64))))


__all__ = ["QUANT_DTYPES", "INT8_TOLERANCE_LSB", "QuantParams", "quant_params", "as_quant_params",
           "requantize", "lsb_error", "is_quantized", "rate_unit", "rate_header", "FLOAT_RATE", "INT_RATE"]
