"""scipy-signal: convolution layers built from scipy.signal.correlate / oaconvolve."""
from __future__ import annotations

import math
import os

import numpy as np

from convbench.memory import MemoryEstimate
from convbench.registry import Capabilities, Prepared, Support
from convbench.spec import ConvSpec

from ._numpy_common import (DirectPlan, NumpyFamilyBackend, NumpyPrepared, OutputBuffer,
                            PaddedInput, compute_dtype, dead_outputs, direct_plan, grouped_weight,
                            spatial_axes, zero_dead_outputs)

ALGORITHMS = {
    "correlate-direct": "scipy.signal.correlate(method='direct'), one N-D call per output channel",
    "correlate-fft": "scipy.signal.correlate(method='fft'), one N-D call per output channel",
    "oaconvolve": "scipy.signal.oaconvolve over the spatial axes, one broadcast call per group",
}


class ScipySignal(NumpyFamilyBackend):
    """Convolution layers assembled from scipy.signal's N-D signal-processing routines.

    scipy.signal knows single-channel N-D correlation, not convolution layers, so:

    - ``correlate-direct`` / ``correlate-fft``: for each output channel, one
      ``scipy.signal.correlate(x_group, kernel, mode="valid")`` over (batch, channels of the
      group, *spatial) with a kernel of size 1 along the batch and the full channel count of
      the group, which sums over the channels in the same call (C_out calls per convolution;
      with ``method="fft"`` every call transforms the input again).
    - ``oaconvolve``: per group, one ``scipy.signal.oaconvolve(..., axes=spatial)`` of the input
      broadcast against all of the group's flipped kernels (overlap-add FFT convolution), then a
      sum over input channels.

    scipy.signal has no stride or dilation: dilated kernels are materialised with zeros between
    the taps (which are multiplied too), strided outputs are computed at full resolution and
    subsampled, and transposed convolution runs as its direct equivalent (input dilated by the
    stride with inserted zeros, padded by ``dilation*(k-1) - padding``, weights channel-swapped
    and flipped). Output positions whose windows read only padding are set to exact zeros for
    the FFT-based methods. FFT-based methods use ``scipy.fft.set_workers(threads)``.

    float64 computes in float64, float32 in float32; float16/bfloat16 are computed in float32
    (inputs cast inside run()) and the output rounded to the spec's dtype.
    """

    name = "scipy-signal"
    description = ("scipy.signal.correlate (direct/fft, per output channel) and oaconvolve (per group); "
                   "dilation by zero-filled kernels, stride by subsampling")
    capabilities = Capabilities()
    algorithm_descriptions = ALGORITHMS
    version_distributions = {"scipy": ("scipy",)}
    cpu_rank = 7.0

    def _check_available(self) -> Support:
        import scipy.signal  # noqa: F401

        return Support.yes()

    def versions(self) -> dict[str, str]:
        import scipy

        return {"numpy": np.__version__, "scipy": scipy.__version__}

    def algorithms(self, device: str = "cpu") -> list[str]:
        return list(ALGORITHMS) if device == "cpu" else []

    def work_estimate(self, spec: ConvSpec, algorithm: str) -> MemoryEstimate:
        """The padded input and the zero-filled (dilated) kernels, plus per call:

        - correlate-direct: the group's input slice and the call's result;
        - correlate-fft: scipy's FFT buffers for one output channel: the group's input slice
          zero-padded to the transform size (channels 2*C_in/g - 1, spatial E + ek - 1, each
          rounded up to next_fast_len; the batch axis is not transformed), its spectrum, the
          kernel's, their product and the inverse transform;
        - oaconvolve: the group's broadcast (batch x out x in channels) result, and overlap-add
          blocks (padded inputs, spectra, products) taken as four times that result.
        """
        p = direct_plan(spec)
        item = compute_dtype(spec).itemsize
        full = math.prod(e - k + 1 for e, k in zip(p.extent, p.ek))  # outputs before subsampling
        base = {"padded input": p.n * p.c_in * math.prod(p.extent) * item,
                "dilated kernels": p.c_out * p.cig * math.prod(p.ek) * item}
        if algorithm == "oaconvolve":
            result = p.n * p.cog * p.cig * full * item
            return MemoryEstimate(base, **{"broadcast result": result, "overlap-add blocks": 4 * result})
        group_slice = p.n * p.cig * math.prod(p.extent) * item
        if algorithm == "correlate-direct":
            return MemoryEstimate(base, **{"input slice": group_slice, "call result": p.n * full * item})
        return MemoryEstimate(base, **{"input slice": group_slice, "FFT buffers": _fft_bytes(p, item)})

    def _prepare(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str) -> Prepared:
        import scipy
        import scipy.fft
        import scipy.signal

        info = self.base_info(spec, algorithm)
        workers = self._threads or os.cpu_count() or 1
        info.update({"scipy": scipy.__version__, "algorithm_description": ALGORITHMS[algorithm],
                     "fft_workers": workers if algorithm != "correlate-direct" else None,
                     "transposed_method": "zero-insertion + direct" if spec.transposed else None})
        return _SignalPrepared(spec, x, w, algorithm, workers, info)


def _fft_bytes(p: DirectPlan, item: int) -> int:
    """scipy.signal.correlate(method="fft") of one output channel: real padded input and
    inverse transform, complex spectra of the input and of the product, the kernel's spectrum."""
    from scipy.fft import next_fast_len

    sizes = [2 * p.cig - 1] if p.cig > 1 else []
    sizes += [e + k - 1 for e, k in zip(p.extent, p.ek) if e > 1 and k > 1]
    fast = [next_fast_len(s, True) for s in sizes] or [1]
    real = p.n * math.prod(fast)
    spectrum = p.n * math.prod(fast[:-1]) * (fast[-1] // 2 + 1)
    return 2 * real * item + 2 * spectrum * 2 * item + (spectrum // p.n) * 2 * item


class _SignalPrepared(NumpyPrepared):
    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, workers: int,
                 info: dict) -> None:
        import scipy.fft
        import scipy.signal

        cd = compute_dtype(spec)
        super().__init__(spec, OutputBuffer(spec, cd), info)
        p = direct_plan(spec)
        self.plan = p
        d, g = p.dims, p.groups
        self.cf = spec.layout == "channels_first"
        self.algorithm = algorithm
        self.signal = scipy.signal
        self.set_workers = scipy.fft.set_workers
        self.workers = workers
        self.inp = PaddedInput(p, x, spec.layout, cd)
        self.axes = spatial_axes(spec.layout, d)
        self.wsrc = grouped_weight(p, w)  # (g, cog, cig, *k)
        taps = tuple(slice(0, e, dl) for e, dl in zip(p.ek, p.dilation))
        flip = (slice(None, None, -1),) * d
        if algorithm == "oaconvolve":
            # convolution kernels (flipped), broadcast shape per group
            if self.cf:  # (g, 1, cog, cig, *ek)
                self.kern = np.zeros((g, 1, p.cog, p.cig, *p.ek), cd)
                self.ktaps = self.kern[(slice(None), 0, slice(None), slice(None)) + taps]
                self.kflip = self.wsrc[(slice(None),) * 3 + flip]
            else:  # (g, 1, *ek, cog, cig)
                self.kern = np.zeros((g, 1, *p.ek, p.cog, p.cig), cd)
                self.ktaps = self.kern[(slice(None), 0) + taps].transpose(0, d + 1, d + 2, *range(1, d + 1))
                self.kflip = self.wsrc[(slice(None),) * 3 + flip]
        else:
            if self.cf:  # per output channel: (1, cig, *ek)
                self.kern = np.zeros((p.c_out, 1, p.cig, *p.ek), cd)
                self.ktaps = self.kern[(slice(None), 0, slice(None)) + taps].reshape(g, p.cog, p.cig, *p.kernel)
            else:  # (1, *ek, cig)
                self.kern = np.zeros((p.c_out, 1, *p.ek, p.cig), cd)
                kt = self.kern[(slice(None), 0) + taps]  # (C_out, *k, cig)
                self.ktaps = kt.reshape(g, p.cog, *p.kernel, p.cig).transpose(0, 1, d + 2, *range(2, d + 2))
            self.kflip = self.wsrc
        keep = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(p.out_size, p.stride))
        self.keep = keep
        self.dead = dead_outputs(p) if algorithm != "correlate-direct" else []
        self.has_dead = any(i.size for i in self.dead)
        self.method = "fft" if algorithm == "correlate-fft" else "direct"

    def run(self) -> None:
        np.copyto(self.ktaps, self.kflip, casting="unsafe")
        self.inp.fill()
        if self.algorithm == "correlate-direct":
            self._correlate()
        else:
            with self.set_workers(self.workers):
                if self.algorithm == "oaconvolve":
                    self._oaconvolve()
                else:
                    self._correlate()
        if self.has_dead:
            zero_dead_outputs(self.out.compute, self.dead, self.axes)
        self.out.finish()

    def _correlate(self) -> None:
        p, xa, y = self.plan, self.inp.array, self.out.compute
        correlate = self.signal.correlate
        for o in range(p.c_out):
            gi = o // p.cog
            cs = slice(gi * p.cig, (gi + 1) * p.cig)
            if self.cf:
                r = correlate(xa[:, cs], self.kern[o], mode="valid", method=self.method)  # (N, 1, *full)
                y[:, o] = r[(slice(None), 0) + self.keep]
            else:
                r = correlate(xa[..., cs], self.kern[o], mode="valid", method=self.method)  # (N, *full, 1)
                y[..., o] = r[(slice(None),) + self.keep + (0,)]

    def _oaconvolve(self) -> None:
        p, xa, y = self.plan, self.inp.array, self.out.compute
        oaconvolve = self.signal.oaconvolve
        d = p.dims
        for gi in range(p.groups):
            cs = slice(gi * p.cig, (gi + 1) * p.cig)
            os_ = slice(gi * p.cog, (gi + 1) * p.cog)
            if self.cf:
                xb = xa[:, cs][:, None]  # (N, 1, cig, *E)
                r = oaconvolve(xb, self.kern[gi], mode="valid", axes=tuple(range(3, 3 + d)))
                np.sum(r[(slice(None),) * 3 + self.keep], axis=2, out=y[:, os_])
            else:
                xb = xa[..., cs][..., None, :]  # (N, *E, 1, cig)
                r = oaconvolve(xb, self.kern[gi], mode="valid", axes=tuple(range(1, 1 + d)))
                np.sum(r[(slice(None),) + self.keep], axis=-1, out=y[(Ellipsis, os_)])
