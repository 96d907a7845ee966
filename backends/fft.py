"""numpy-fft and scipy-fft: convolution by the convolution theorem (real FFTs over the spatial dims)."""
from __future__ import annotations

import inspect
import math
import os
from typing import Any, Callable, Optional

import numpy as np

from convbench.memory import MemoryEstimate
from convbench.registry import Capabilities, Prepared, Support
from convbench.spec import ConvSpec

from ._numpy_common import (NumpyFamilyBackend, NumpyPrepared, OutputBuffer, PaddedInput,
                            activation_shape, compute_dtype, dead_outputs, direct_plan,
                            grouped_weight, spatial_axes, zero_dead_outputs)

ALGORITHMS = {
    "rfft": "weight spectra computed inside every run() (the whole convolution is timed)",
    "rfft-precomputed-weights": "weight spectra computed once in prepare(); run() transforms only "
                                "the input and output (weights pre-transformed: not comparable to "
                                "candidates that see raw weights)",
}


#: kernel taps from which a dense, unstrided convolution tries FFT first when untuned
_FFT_MIN_TAPS = 49


class _FFTBackend(NumpyFamilyBackend):
    """Convolution through the convolution theorem with real FFTs over the spatial dims.

    The padded input is transformed with ``rfftn``; the kernel's spectrum at the same
    frequencies (taps ``dilation`` apart, conjugated for cross-correlation) is computed as a
    direct DFT of its few taps, one spatial dim at a time with ``np.tensordot`` (no transform of
    the zero-padded kernel); every frequency is then a small complex matrix product over channels
    (``np.matmul`` batched over frequencies and groups; an elementwise product when each group
    has one input channel, e.g. depthwise), and ``irfftn`` gives the cross-correlation. The
    transform covers only the part of the padded input the outputs read, which needs no further
    zero padding because only the wrap-free ("valid") outputs are kept. Strided convolutions
    compute the full-resolution output and keep every ``stride``-th element. Transposed
    convolution is computed as its direct equivalent (input dilated by the stride, padded by
    ``dilation*(k-1) - padding``, weights channel-swapped and flipped). Output positions whose
    windows read only padding (known from the spec alone) are set to exact zeros rather than
    left with FFT round-off.

    Algorithms: ``rfft`` transforms the weights inside every run(); ``rfft-precomputed-weights``
    transforms them once in prepare() and says so in ``info["weight_spectra"]``.

    float64 is computed in float64/complex128; float32, float16 and bfloat16 in
    float32/complex64 (float16/bfloat16 inputs are cast to float32 inside run() and the output
    is rounded to the spec's dtype).
    """

    family = "numpy"
    capabilities = Capabilities()
    algorithm_descriptions = ALGORITHMS
    precomputed_algorithms = frozenset({"rfft-precomputed-weights"})

    def algorithms(self, device: str = "cpu") -> list[str]:
        return list(ALGORITHMS) if device == "cpu" else []

    def heuristic_rank(self, spec: ConvSpec, device: str) -> float:
        """Before the other NumPy backends for large dense kernels (7x7 and larger in 2-D,
        stride 1, dilation 1, groups 1), which favour FFT; after them otherwise."""
        if device != "cpu":
            return super().heuristic_rank(spec, device)
        big_dense = (math.prod(spec.kernel_size) >= _FFT_MIN_TAPS and spec.groups == 1
                     and all(s == 1 for s in spec.stride) and all(d == 1 for d in spec.dilation))
        return 3.0 if big_dense else 6.0

    def fft_shape(self, extent: tuple) -> tuple:
        """The transform size per spatial dim for a padded input of ``extent``."""
        return tuple(extent)

    def work_estimate(self, spec: ConvSpec, algorithm: str) -> MemoryEstimate:
        """Spectra of the input, the weights and the product (each with the transposed copy or
        temporary the channel product makes), and the real padded input, output and kernel
        buffers at the transform size."""
        plan = direct_plan(spec)
        shape = self.fft_shape(plan.extent)
        freq = math.prod(shape[:-1]) * (shape[-1] // 2 + 1)
        real = compute_dtype(spec).itemsize
        cplx = 2 * real
        return MemoryEstimate({
            "input spectra": 2 * spec.n * spec.c_in * freq * cplx,
            "weight spectra": 2 * spec.c_out * plan.cig * freq * cplx,
            "product spectra": 2 * spec.n * spec.c_out * freq * cplx,
            "FFT real buffers": (spec.n * (spec.c_in + spec.c_out) + spec.c_out * plan.cig)
            * math.prod(shape) * real})

    def _fft_functions(self) -> tuple[Callable, Callable, dict]:
        raise NotImplementedError

    def _prepare(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str) -> Prepared:
        info = self.base_info(spec, algorithm)
        rfftn, irfftn, lib_info = self._fft_functions()
        info.update(lib_info)
        return _FFTPrepared(spec, x, w, algorithm, self, rfftn, irfftn, info)


_NUMPY_FFT_OUT = "out" in inspect.signature(np.fft.rfftn).parameters  # numpy >= 2.0


class NumpyFFT(_FFTBackend):
    __doc__ = _FFTBackend.__doc__ + """
    Transforms: ``numpy.fft`` (pocketfft, single-threaded), at exactly the size the outputs
    need (no rounding up to a fast length), writing into buffers allocated in prepare().
    """

    name = "numpy-fft"
    description = "convolution theorem with numpy.fft.rfftn (exact sizes); algorithms rfft, rfft-precomputed-weights"

    def _fft_functions(self) -> tuple[Callable, Callable, dict]:
        def rfftn(a: np.ndarray, axes: tuple, s: tuple, out: Optional[np.ndarray]) -> np.ndarray:
            if _NUMPY_FFT_OUT and out is not None:
                return np.fft.rfftn(a, axes=axes, out=out)
            return np.fft.rfftn(a, axes=axes)

        def irfftn(a: np.ndarray, axes: tuple, s: tuple, out: Optional[np.ndarray]) -> np.ndarray:
            if _NUMPY_FFT_OUT and out is not None:
                return np.fft.irfftn(a, s=s, axes=axes, out=out)
            return np.fft.irfftn(a, s=s, axes=axes)

        return rfftn, irfftn, {"fft": f"numpy.fft {np.__version__}", "fft_workers": 1,
                               "fft_preallocated_out": _NUMPY_FFT_OUT}


class ScipyFFT(_FFTBackend):
    __doc__ = _FFTBackend.__doc__ + """
    Transforms: ``scipy.fft`` with ``workers`` = the thread count from set_threads() (default:
    all logical cores), each spatial dim rounded up to ``scipy.fft.next_fast_len``.
    """

    name = "scipy-fft"
    version_distributions = {"scipy": ("scipy",)}
    description = ("convolution theorem with scipy.fft.rfftn (next_fast_len sizes, workers=threads); "
                   "algorithms rfft, rfft-precomputed-weights")

    def _check_available(self) -> Support:
        import scipy.fft  # noqa: F401

        return Support.yes()

    def versions(self) -> dict[str, str]:
        import scipy

        return {"numpy": np.__version__, "scipy": scipy.__version__}

    def fft_shape(self, extent: tuple) -> tuple:
        from scipy.fft import next_fast_len

        d = len(extent)
        return tuple(next_fast_len(int(e), real=(i == d - 1)) for i, e in enumerate(extent))

    def workers(self) -> int:
        return self._threads or os.cpu_count() or 1

    def _fft_functions(self) -> tuple[Callable, Callable, dict]:
        import scipy
        import scipy.fft as sfft

        workers = self.workers()

        def rfftn(a: np.ndarray, axes: tuple, s: tuple, out: Optional[np.ndarray]) -> np.ndarray:
            return sfft.rfftn(a, axes=axes, workers=workers)

        def irfftn(a: np.ndarray, axes: tuple, s: tuple, out: Optional[np.ndarray]) -> np.ndarray:
            return sfft.irfftn(a, s=s, axes=axes, workers=workers, overwrite_x=True)

        return rfftn, irfftn, {"fft": f"scipy.fft {scipy.__version__}", "scipy": scipy.__version__,
                               "fft_workers": workers, "fft_preallocated_out": False}


class _FFTPrepared(NumpyPrepared):
    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, backend: _FFTBackend,
                 rfftn: Callable, irfftn: Callable, info: dict) -> None:
        cd = compute_dtype(spec)
        cx = np.result_type(cd, np.complex64)
        super().__init__(spec, OutputBuffer(spec, cd), info)
        p = direct_plan(spec)
        d, g, n = p.dims, p.groups, p.n
        cf = spec.layout == "channels_first"
        shape = backend.fft_shape(p.extent)
        fr = (*shape[:-1], shape[-1] // 2 + 1)
        nf = math.prod(fr)
        self.rfftn, self.irfftn = rfftn, irfftn
        self.shape = shape
        self.axes = spatial_axes(spec.layout, d)
        self.precomputed = algorithm == "rfft-precomputed-weights"

        self.inp = PaddedInput(p, x, spec.layout, cd, extent=shape)
        # weights as (*k, C_out, cig) in the compute dtype; their spectra are conj(DFT) of the
        # taps (placed `dilation` apart) at every frequency of the input's transform
        self.wsrc = grouped_weight(p, w).transpose(*range(3, 3 + d), 0, 1, 2)  # (*k, g, cog, cig)
        self.wbuf = np.empty(self.wsrc.shape, cd)
        self.wmat = self.wbuf.reshape(*p.kernel, p.c_out, p.cig)
        self.dft = []
        for i in range(d):
            nfreq = fr[i]
            t = np.arange(p.kernel[i])[:, None] * p.dilation[i]
            f = np.arange(nfreq)[None, :]
            self.dft.append(np.exp(2j * np.pi * ((t * f) % shape[i]) / shape[i]).astype(cx))  # (k, F_i)
        self.nf, self.g, self.cig, self.cog = nf, g, p.cig, p.cog
        self.wt: Any = None  # conj(W) per frequency: (F, g, cig, cog)

        self.xf = np.empty(activation_shape(spec.layout, n, p.c_in, fr), cx)
        if cf:
            self.xt = np.empty((nf, g, n, p.cig), cx)
            self.a = self.xt
            self.yf = np.empty((nf, n, p.c_out), cx)
            self.ymm = self.yf.reshape(nf, n, g, p.cog).transpose(0, 2, 1, 3)
            self.yin = self.yf.transpose(1, 2, 0).reshape(n, p.c_out, *fr)
        else:
            self.xt = None
            self.a = self.xf.reshape(n, nf, g, p.cig).transpose(1, 2, 0, 3)
            self.yf = np.empty((n, *fr, p.c_out), cx)
            self.ymm = self.yf.reshape(n, nf, g, p.cog).transpose(1, 2, 0, 3)
            self.yin = self.yf
        self.elementwise = p.cig == 1
        self.r = np.empty(activation_shape(spec.layout, n, p.c_out, shape), cd)
        keep = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(p.out_size, p.stride))
        self.keep = (slice(None), slice(None), *keep) if cf else (slice(None), *keep, slice(None))

        self.dead = dead_outputs(p)
        self.has_dead = any(idx.size for idx in self.dead)
        if self.precomputed:
            self._weight_spectra()
        info.update({
            "fft_shape": list(shape),
            "weight_spectra": "precomputed in prepare()" if self.precomputed else "computed in run()",
            "weight_transform": "direct DFT of the kernel taps (tensordot per spatial dim)",
            "channel_product": "elementwise" if self.elementwise else "np.matmul per frequency",
            "stride_method": "full-resolution output subsampled" if any(s > 1 for s in p.stride) else None,
            "transposed_method": "zero-insertion + direct (FFT)" if spec.transposed else None,
            "input_copy": self.inp.copies,
        })

    def _weight_spectra(self) -> None:
        """conj(rfftn(dilated, zero-padded kernel)) as a direct DFT of the k taps, one spatial
        dim at a time (tensordot with (k, F_i) DFT matrices): the padded zeros are never
        transformed. Leaves (F, g, cig, cog) in self.wt (a transposed view)."""
        np.copyto(self.wbuf, self.wsrc, casting="unsafe")
        t = self.wmat
        d = len(self.dft)
        for i in range(d - 1, -1, -1):  # contracted tap axis is always at position d-1
            t = np.tensordot(self.dft[i], t, axes=([0], [d - 1]))
        self.wt = t.reshape(self.nf, self.g, self.cog, self.cig).swapaxes(2, 3)

    def run(self) -> None:
        if not self.precomputed:
            self._weight_spectra()
        self.inp.fill()
        xf = self.rfftn(self.inp.array, self.axes, self.shape, self.xf)
        nf, g, cig = self.nf, self.g, self.cig
        if self.xt is not None:  # channels_first: gather (F, g, N, cig) for the channel product
            np.copyto(self.xt, xf.reshape(xf.shape[0], g, cig, nf).transpose(3, 1, 0, 2))
            a = self.xt
        elif xf is self.xf:
            a = self.a
        else:  # channels_last, a library that returned a new array
            a = xf.reshape(xf.shape[0], nf, g, cig).transpose(1, 2, 0, 3)
        if self.elementwise:
            np.multiply(a, self.wt, out=self.ymm)
        else:
            np.matmul(a, self.wt, out=self.ymm)
        r = self.irfftn(self.yin, self.axes, self.shape, self.r)
        np.copyto(self.out.compute, r[self.keep])
        if self.has_dead:
            zero_dead_outputs(self.out.compute, self.dead, self.axes)
        self.out.finish()
