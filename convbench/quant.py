"""Quantized (int8) convolution: the problem's scales, the exact reference and the error in LSB.

``ConvSpec(..., dtype="int8")`` is the inference convolution quantized engines run:

- activations ``x``: int8, symmetric (zero point 0), one per-tensor scale ``x_scale``;
- weights ``w``: int8 in [-127, 127], symmetric, one scale per output channel ``w_scale[o]``;
- accumulation in int32 (exact: ``acc[o] = sum x_q * w_q``);
- output ``y``: int8 with a per-tensor ``y_scale`` and zero point 0, requantised as
  ``y_q = saturate_int8(round_half_to_even(acc * (x_scale * w_scale[o] / y_scale)))``.

No bias. The scales are a fixed function of the spec (:func:`quant_params`), chosen so that
outputs of the inputs :func:`convbench.make_inputs` draws (integers uniform in [-127, 127])
use most of the int8 range: the typical output has a standard deviation of about 32 LSB, a
few per cent saturate. They are float32 values, as engines store them. The requantisation
multiplier is computed in float64 here; engines that compute it in float32 can land on the
other side of a rounding tie, hence verification allows one LSB (exact where a candidate
exposes its int32 accumulators and requantises as above).

FLOPs of an int8 problem count integer multiply-adds the same way (2 per MAC): "GOP/s".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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


@dataclass(frozen=True)
class QuantParams:
    """The scales of an int8 problem (zero points are all 0: symmetric quantisation)."""

    x_scale: float
    w_scale: np.ndarray       # float32, one per output channel
    y_scale: float

    @property
    def multiplier(self) -> np.ndarray:
        """float64 per-output-channel requantisation multiplier x_scale * w_scale / y_scale."""
        return (np.float64(self.x_scale) * self.w_scale.astype(np.float64)) / np.float64(self.y_scale)


def is_quantized(dtype: str) -> bool:
    return dtype in QUANT_DTYPES


def quant_params(spec) -> QuantParams:
    """The scales of ``spec`` (an int8 ConvSpec), a documented function of the spec alone.

    ``w_scale[o] = X_SCALE * (1 + (o mod 8) / 8) / sqrt(K)`` with K = C_in/groups * prod(k)
    (the accumulation length), and ``y_scale`` chosen so that an output channel with the
    mean weight scale has a standard deviation of TARGET_OUTPUT_STD LSB for inputs uniform in
    [-127, 127] (each of standard deviation sqrt(255**2 - 1) / sqrt(12) ~ 73.6).
    """
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


__all__ = ["QUANT_DTYPES", "INT8_TOLERANCE_LSB", "QuantParams", "quant_params", "requantize",
           "lsb_error", "is_quantized"]
