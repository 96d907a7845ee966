"""numpy-direct: direct convolution on a sliding-window view of the padded input."""
from __future__ import annotations

import numpy as np

import math

from convbench.memory import MemoryEstimate
from convbench.registry import Capabilities, Prepared
from convbench.spec import ConvSpec

from ._numpy_common import (CastWeight, NumpyFamilyBackend, NumpyPrepared, OutputBuffer,
                            PaddedInput, compute_dtype, direct_plan, grouped_weight, windows)


class NumpyDirect(NumpyFamilyBackend):
    """Direct convolution in NumPy over a strided sliding-window view (no explicit im2col).

    Algorithms:

    - ``tensordot`` (default): one ``np.tensordot`` per group over (channels, kernel taps);
      NumPy copies the window view into a contiguous temporary, then calls BLAS.
    - ``einsum``: one ``np.einsum`` (``optimize=False``) over the window view into the output:
      NumPy's own C contraction loop, no temporary copies and no BLAS.

    Transposed convolution is computed as its direct equivalent: the input is dilated by the
    stride (zeros inserted), padded by ``dilation*(k-1) - padding``, and correlated with the
    channel-swapped, flipped weights; the inserted zeros are multiplied too. channels_last
    inputs are used natively (windows over the spatial axes, channels innermost).

    float64 computes in float64, float32 in float32. float16 and bfloat16 are computed in
    float32 (inputs cast, float32 accumulation) and the output rounded to the spec's dtype;
    the casts are part of each run.
    """

    name = "numpy-direct"
    description = "sliding-window view + tensordot (BLAS) or einsum (C loop); transposed by zero-insertion"
    capabilities = Capabilities()
    cpu_rank = 5.0

    def algorithms(self, device: str = "cpu") -> list[str]:
        return ["tensordot", "einsum"] if device == "cpu" else []

    def work_estimate(self, spec: ConvSpec, algorithm: str) -> MemoryEstimate:
        """The padded input; for tensordot, per group, the contiguous copy of the window view
        (N x out x C_in/g x k) and its result before it is copied into the output."""
        p = direct_plan(spec)
        item = compute_dtype(spec).itemsize
        padded = p.n * p.c_in * math.prod(p.extent) * item
        if algorithm != "tensordot":
            return MemoryEstimate({"padded input": padded})
        out = p.n * math.prod(p.out_size)
        return MemoryEstimate({"padded input": padded,
                               "window copy": out * p.cig * math.prod(p.kernel) * item,
                               "group result": out * p.cog * item})

    def _prepare(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str) -> Prepared:
        info = self.base_info(spec, algorithm)
        info["transposed_method"] = "zero-insertion + direct" if spec.transposed else None
        return _DirectPrepared(spec, x, w, algorithm, info)


class _DirectPrepared(NumpyPrepared):
    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, info: dict) -> None:
        cd = compute_dtype(spec)
        super().__init__(spec, OutputBuffer(spec, cd), info)
        plan = direct_plan(spec)
        self.plan = plan
        self.algorithm = algorithm
        self.layout = spec.layout
        self.inp = PaddedInput(plan, x, spec.layout, cd)
        self.wt = CastWeight(w, cd)
        self.wg = grouped_weight(plan, self.wt.array)  # (g, cog, cig, *k) view
        self.win = windows(self.inp.array, plan, spec.layout)
        d, g = plan.dims, plan.groups
        o = plan.out_size
        cf = spec.layout == "channels_first"
        if cf:
            self.yg = self.out.compute.reshape(plan.n, g, plan.cog, *o)
        else:
            self.yg = self.out.compute.reshape(plan.n, *o, g, plan.cog)
        info["input_copy"] = self.inp.copies
        # index labels: n=0, g=1, c=2, oc=3, out dims 4.., kernel dims 4+d..
        od = list(range(4, 4 + d))
        kd = list(range(4 + d, 4 + 2 * d))
        if cf:
            self.sub_x, self.sub_y = [0, 1, 2, *od, *kd], [0, 1, 3, *od]
        else:
            self.sub_x, self.sub_y = [0, *od, 1, 2, *kd], [0, *od, 1, 3]
        self.sub_w = [1, 3, 2, *kd]
        # tensordot per group: a = windows of group gi, contracting channel + kernel axes
        if cf:
            self.a_sel = [(slice(None), gi) for gi in range(g)]
            self.y_sel = [(slice(None), gi) for gi in range(g)]
            self.a_axes = [1, *range(2 + d, 2 + 2 * d)]  # a: (N, cig, *o, *k)
        else:
            self.a_sel = [(slice(None),) * (1 + d) + (gi,) for gi in range(g)]
            self.y_sel = [(slice(None),) * (1 + d) + (gi,) for gi in range(g)]
            self.a_axes = [1 + d, *range(2 + d, 2 + 2 * d)]  # a: (N, *o, cig, *k)
        self.w_axes = list(range(1, 2 + d))  # w[gi]: (cog, cig, *k)

    def run(self) -> None:
        self.inp.fill()
        self.wt.fill()
        if self.algorithm == "einsum":
            np.einsum(self.win, self.sub_x, self.wg, self.sub_w, self.sub_y, out=self.yg, optimize=False)
        else:
            cf = self.layout == "channels_first"
            for gi in range(self.plan.groups):
                r = np.tensordot(self.win[self.a_sel[gi]], self.wg[gi], axes=(self.a_axes, self.w_axes))
                # r: (N, *out, cog)
                np.copyto(self.yg[self.y_sel[gi]], np.moveaxis(r, -1, 1) if cf else r)
        self.out.finish()
