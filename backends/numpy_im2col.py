"""numpy-im2col: explicit im2col buffer + one BLAS matmul (per group, batched)."""
from __future__ import annotations

import itertools
import math

import numpy as np

from convbench.memory import MemoryEstimate
from convbench.registry import Capabilities, Prepared
from convbench.spec import ConvSpec

from ._numpy_common import (CastWeight, NumpyFamilyBackend, NumpyPrepared, OutputBuffer,
                            PaddedInput, compute_dtype, direct_plan, windows)


class NumpyIm2col(NumpyFamilyBackend):
    """im2col + GEMM in NumPy: the classic lowering of convolution to matrix multiplication.

    Algorithm ``gemm``: each run copies every kernel window of the padded input into a column
    buffer allocated in prepare() (channels_first: (N, g, C/g*k, out); channels_last:
    (g, N*out, k*C/g)) and calls ``np.matmul`` once (BLAS; groups and, for channels_first, the
    batch are matmul batch dimensions), writing straight into the output array.

    Transposed convolution uses the GEMM + col2im form frameworks use for the data gradient:
    one matmul of the (transposed) weights with the input gives every tap's contribution, which
    is then scatter-added (col2im) into the output; no zeros are inserted or multiplied.

    float64 computes in float64, float32 in float32. float16 and bfloat16 are computed in
    float32 (inputs cast, float32 accumulation in BLAS) and the output rounded to the spec's
    dtype; the casts are part of each run.
    """

    name = "numpy-im2col"
    description = "explicit im2col buffer + one BLAS matmul (col2im for transposed)"
    capabilities = Capabilities()
    cpu_rank = 4.0

    def algorithms(self, device: str = "cpu") -> list[str]:
        return ["gemm"] if device == "cpu" else []

    def work_estimate(self, spec: ConvSpec, algorithm: str) -> MemoryEstimate:
        """im2col: the column buffer (N x out x C_in x k), the padded input and the reordered
        weights; col2im: the column buffer (N x in x C_out x k), the input cast to the compute
        dtype and the reordered weights."""
        plan = direct_plan(spec)
        item = compute_dtype(spec).itemsize
        kp = math.prod(spec.kernel_size)
        weights = math.prod(spec.weight_shape) * item
        if spec.transposed:
            return MemoryEstimate({"col2im columns": spec.n * math.prod(spec.input_size) * spec.c_out * kp * item,
                                   "cast input": math.prod(spec.input_shape) * item,
                                   "reordered weights": weights})
        return MemoryEstimate({"im2col columns": spec.n * math.prod(plan.out_size) * spec.c_in * kp * item,
                               "padded input": spec.n * spec.c_in * math.prod(plan.extent) * item,
                               "reordered weights": weights})

    def _prepare(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str) -> Prepared:
        info = self.base_info(spec, algorithm)
        if spec.transposed:
            info["transposed_method"] = "gemm + col2im (scatter-add)"
            return _Col2imPrepared(spec, x, w, info)
        info["transposed_method"] = None
        return _Im2colPrepared(spec, x, w, info)


class _Im2colPrepared(NumpyPrepared):
    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, info: dict) -> None:
        cd = compute_dtype(spec)
        super().__init__(spec, OutputBuffer(spec, cd), info)
        p = direct_plan(spec)
        d, g, n = p.dims, p.groups, p.n
        kp, op = math.prod(p.kernel), math.prod(p.out_size)
        self.inp = PaddedInput(p, x, spec.layout, cd)
        self.wt = CastWeight(w, cd)
        win = windows(self.inp.array, p, spec.layout)
        kax = list(range(win.ndim - d, win.ndim))
        if spec.layout == "channels_first":
            # win (N, g, cig, *o, *k) -> col (N, g, cig, *k, *o)
            self.src = win.transpose(0, 1, 2, *kax, *range(3, 3 + d))
            self.col = np.empty(self.src.shape, cd)
            self.a = self.wt.array.reshape(g, p.cog, p.cig * kp)  # (g, cog, cig*k)
            self.b = self.col.reshape(n, g, p.cig * kp, op)
            self.y = self.out.compute.reshape(n, g, p.cog, op)
            self.wsrc = self.wcol = None
        else:
            # win (N, *o, g, cig, *k) -> col (g, N, *o, *k, cig)
            self.src = win.transpose(1 + d, 0, *range(1, 1 + d), *kax, 2 + d)
            self.col = np.empty(self.src.shape, cd)
            self.a = self.col.reshape(g, n * op, kp * p.cig)
            wg = self.wt.array.reshape(g, p.cog, p.cig, *p.kernel)
            self.wsrc = wg.transpose(0, *range(3, 3 + d), 2, 1)  # (g, *k, cig, cog)
            self.wcol = np.empty(self.wsrc.shape, cd)
            self.b = self.wcol.reshape(g, kp * p.cig, p.cog)
            self.y = self.out.compute.reshape(n * op, g, p.cog).transpose(1, 0, 2)
        info["input_copy"] = self.inp.copies
        info["col_bytes"] = int(self.col.nbytes)

    def run(self) -> None:
        self.inp.fill()
        self.wt.fill()
        np.copyto(self.col, self.src)
        if self.wcol is not None:
            np.copyto(self.wcol, self.wsrc)
        np.matmul(self.a, self.b, out=self.y)
        self.out.finish()


def _tap_ranges(size: int, out: int, stride: int, offset: int, pad: int) -> tuple[slice, slice] | None:
    """For one tap at ``offset``: (input slice, output slice) of the positions it reaches."""
    # input i lands on full position offset + stride*i, i.e. output position offset + stride*i - pad
    lo = max(0, -((offset - pad) // stride))
    top = out - 1 + pad - offset
    if top < 0:
        return None
    hi = min(size, top // stride + 1)
    if hi <= lo:
        return None
    start = offset + stride * lo - pad
    return slice(lo, hi), slice(start, start + stride * (hi - lo - 1) + 1, stride)


class _Col2imPrepared(NumpyPrepared):
    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, info: dict) -> None:
        cd = compute_dtype(spec)
        super().__init__(spec, OutputBuffer(spec, cd), info)
        d, g, n = spec.dims, spec.groups, spec.n
        cig, cog = spec.c_in // g, spec.c_out // g
        k, size, out = spec.kernel_size, spec.input_size, spec.output_size
        kp, ip = math.prod(k), math.prod(size)
        self.xt = CastWeight(x, cd)  # the input cast to the compute dtype (a view when no cast)
        self.wt = CastWeight(w, cd)
        cf = spec.layout == "channels_first"
        if cf:
            self.a = self.wt.array.reshape(g, cig, cog * kp).transpose(0, 2, 1)  # (g, cog*k, cig)
            self.b = self.xt.array.reshape(n, g, cig, ip)
            self.col = np.empty((n, g, cog * kp, ip), cd)
            self.y = self.col
            colv = self.col.reshape(n, g, cog, *k, *size)
            yv = self.out.compute.reshape(n, g, cog, *out)
            self.wsrc = self.wbuf = None
        else:
            self.a = self.xt.array.reshape(n * ip, g, cig).transpose(1, 0, 2)  # (g, M, cig)
            wg = self.wt.array.reshape(g, cig, cog, *k)
            self.wsrc = wg.transpose(0, 1, *range(3, 3 + d), 2)  # (g, cig, *k, cog)
            self.wbuf = np.empty(self.wsrc.shape, cd)
            self.b = self.wbuf.reshape(g, cig, kp * cog)
            self.col = np.empty((n * ip, g, kp * cog), cd)
            self.y = self.col.transpose(1, 0, 2)
            colv = self.col.reshape(n, *size, g, *k, cog)
            yv = self.out.compute.reshape(n, *out, g, cog)
        self.yv = yv
        # the scatter-add of each tap: (output view, column view)
        self.pairs = []
        for tap in itertools.product(*[range(kk) for kk in k]):
            rng = [_tap_ranges(size[i], out[i], spec.stride[i], tap[i] * spec.dilation[i], spec.padding[i][0])
                   for i in range(d)]
            if any(r is None for r in rng):
                continue
            src = tuple(r[0] for r in rng)
            dst = tuple(r[1] for r in rng)
            if cf:
                self.pairs.append((yv[(slice(None),) * 3 + dst], colv[(slice(None),) * 3 + tap + src]))
            else:
                self.pairs.append((yv[(slice(None),) + dst], colv[(slice(None),) + src + (slice(None),) + tap]))
        info["input_copy"] = self.xt.copies
        info["col_bytes"] = int(self.col.nbytes)

    def run(self) -> None:
        self.xt.fill()
        self.wt.fill()
        if self.wbuf is not None:
            np.copyto(self.wbuf, self.wsrc)
        np.matmul(self.a, self.b, out=self.y)
        self.yv.fill(0)
        for dst, src in self.pairs:
            np.add(dst, src, out=dst)
        self.out.finish()
