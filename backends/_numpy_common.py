"""Machinery shared by the NumPy/SciPy backends (numpy-direct, numpy-im2col, numpy-fft,
scipy-fft, scipy-signal); private to convbench_backends.

- :func:`direct_plan`: any spec as a direct (non-transposed) cross-correlation over an
  upsampled (zero-inserted), padded input. A transposed convolution becomes a stride-1 direct
  convolution of the input dilated by the stride, padded by ``dilation*(k-1) - padding`` on
  each side (negative: cropped), with the weights' channel axes swapped and taps flipped.
- :class:`PaddedInput`: the (upsampled, padded, cropped, cast) input in a buffer allocated once;
  ``fill()`` refreshes it from ``x`` and is part of each convolution.
- :class:`CastWeight`, :class:`OutputBuffer`: compute-dtype copies of weights/outputs when the
  spec's dtype is float16/bfloat16 (those are computed in float32 and rounded to the spec dtype).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from convbench.errors import InvalidInputError
from convbench.memory import MemoryEstimate, io_parts
from convbench.registry import DEFAULT_HEURISTIC_RANK, Backend, Prepared, Robustness
from convbench.spec import ConvSpec, numpy_dtype

BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def compute_dtype(spec: ConvSpec) -> np.dtype:
    """float64 for float64 specs, float32 for float32/float16/bfloat16."""
    return np.dtype(np.float64) if spec.dtype == "float64" else np.dtype(np.float32)


@dataclass(frozen=True)
class DirectPlan:
    """A spec as a direct cross-correlation over an upsampled, padded input."""

    transposed: bool
    n: int
    c_in: int
    c_out: int
    groups: int
    cig: int  # input channels per group
    cog: int  # output channels per group
    kernel: tuple
    stride: tuple
    dilation: tuple
    upsample: tuple  # zero-insertion factor of the input (the spec's stride when transposed)
    pad_before: tuple  # zeros before the (upsampled) input; negative: rows cropped
    in_size: tuple
    out_size: tuple

    @property
    def dims(self) -> int:
        return len(self.kernel)

    @property
    def ek(self) -> tuple:
        """Extent of the dilated kernel per dim."""
        return tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel))

    @property
    def extent(self) -> tuple:
        """Extent of the padded input that the outputs read: (O-1)*stride + ek."""
        return tuple((o - 1) * s + e for o, s, e in zip(self.out_size, self.stride, self.ek))


def direct_plan(spec: ConvSpec) -> DirectPlan:
    g = spec.groups
    d = spec.dims
    ek = [dl * (k - 1) + 1 for dl, k in zip(spec.dilation, spec.kernel_size)]
    if spec.transposed:
        upsample = spec.stride
        stride = (1,) * d
        pad_before = tuple(e - 1 - pb for e, (pb, _) in zip(ek, spec.padding))
    else:
        upsample = (1,) * d
        stride = spec.stride
        pad_before = tuple(pb for pb, _ in spec.padding)
    return DirectPlan(spec.transposed, spec.n, spec.c_in, spec.c_out, g, spec.c_in // g,
                      spec.c_out // g, spec.kernel_size, stride, spec.dilation, upsample,
                      pad_before, spec.input_size, spec.output_size)


def dead_outputs(plan: DirectPlan) -> list[np.ndarray]:
    """Per spatial dim, the output indices whose windows read only padding or inserted zeros.

    Those outputs are exactly zero for any input; FFT-based methods zero them explicitly
    instead of leaving round-off there.
    """
    dead = []
    for size, u, pb, e, o, s, dl, k in zip(plan.in_size, plan.upsample, plan.pad_before, plan.extent,
                                           plan.out_size, plan.stride, plan.dilation, plan.kernel):
        data = np.zeros(e, bool)
        pos = pb + u * np.arange(size)
        data[pos[(pos >= 0) & (pos < e)]] = True
        reads = np.arange(o)[:, None] * s + np.arange(k)[None, :] * dl
        dead.append(np.flatnonzero(~data[reads].any(axis=1)))
    return dead


def zero_dead_outputs(out: np.ndarray, dead: list[np.ndarray], axes: tuple) -> None:
    for idx, ax in zip(dead, axes):
        if idx.size:
            sl = [slice(None)] * out.ndim
            sl[ax] = idx
            out[tuple(sl)] = 0


def grouped_weight(plan: DirectPlan, w: np.ndarray) -> np.ndarray:
    """The direct-equivalent weights as a view of shape (groups, cog, cig, *k)."""
    if not plan.transposed:
        return w.reshape(plan.groups, plan.cog, plan.cig, *plan.kernel)
    wg = w.reshape(plan.groups, plan.cig, plan.cog, *plan.kernel).swapaxes(1, 2)
    return wg[(slice(None),) * 3 + (slice(None, None, -1),) * plan.dims]


def activation_shape(layout: str, n: int, c: int, spatial: tuple) -> tuple:
    return (n, c, *spatial) if layout == "channels_first" else (n, *spatial, c)


def spatial_axes(layout: str, dims: int) -> tuple:
    start = 2 if layout == "channels_first" else 1
    return tuple(range(start, start + dims))


def _place(plan: DirectPlan, extent: tuple) -> Optional[tuple[tuple, tuple]]:
    """Per-dim (source slices of x, destination slices in a buffer of ``extent``), or None
    if no input element lands inside the buffer."""
    src, dst = [], []
    for size, u, pb, e in zip(plan.in_size, plan.upsample, plan.pad_before, extent):
        lo = max(0, -(pb // u))  # first input index i with pb + u*i >= 0
        hi = min(size, (e - 1 - pb) // u + 1) if e - 1 - pb >= 0 else 0
        if hi <= lo:
            return None
        start = pb + u * lo
        src.append(slice(lo, hi))
        dst.append(slice(start, start + u * (hi - lo - 1) + 1, u))
    return tuple(src), tuple(dst)


class PaddedInput:
    """The input upsampled, padded/cropped to ``extent`` and cast to ``dtype``.

    ``array`` is (N, C, *extent) or (N, *extent, C). Where no padding, upsampling or cast is
    needed it is a view of ``x`` itself and ``fill()`` does nothing; otherwise it is a
    buffer allocated (and zeroed) once, whose interior ``fill()`` overwrites from ``x``.
    """

    def __init__(self, plan: DirectPlan, x: np.ndarray, layout: str, dtype: np.dtype,
                 extent: Optional[tuple] = None) -> None:
        extent = tuple(extent or plan.extent)
        self.x = x
        self.layout = layout
        d = plan.dims
        placed = _place(plan, extent)
        cf = layout == "channels_first"

        def full(spatial: tuple) -> tuple:
            return (slice(None), slice(None), *spatial) if cf else (slice(None), *spatial, slice(None))

        view_ok = (placed is not None and np.dtype(x.dtype) == dtype and all(u == 1 for u in plan.upsample)
                   and all(s.start == 0 and s.stop == e for s, e in zip(placed[1], extent)))
        if view_ok:
            self.array = x[full(placed[0])]
            self.copies = False
            self._src = self._dst = None
        else:
            self.array = np.zeros(activation_shape(layout, plan.n, plan.c_in, extent), dtype)
            self.copies = placed is not None
            self._src = full(placed[0]) if placed else None
            self._dst = full(placed[1]) if placed else None
        self.extent = extent
        self.dims = d

    def fill(self) -> None:
        if self.copies:
            np.copyto(self.array[self._dst], self.x[self._src], casting="unsafe")


class CastWeight:
    """The weights in the compute dtype: the array itself, or a buffer that ``fill()`` refreshes."""

    def __init__(self, w: np.ndarray, dtype: np.dtype) -> None:
        self.w = w
        if np.dtype(w.dtype) == dtype:
            self.array = w
            self.copies = False
        else:
            self.array = np.empty(w.shape, dtype)
            self.copies = True

    def fill(self) -> None:
        if self.copies:
            np.copyto(self.array, self.w, casting="unsafe")


class OutputBuffer:
    """The output in the compute dtype (``compute``) and in the spec's dtype (``final``)."""

    def __init__(self, spec: ConvSpec, dtype: np.dtype) -> None:
        self.compute = np.empty(spec.output_shape, dtype)
        final_dtype = numpy_dtype(spec.dtype)
        self.final = self.compute if final_dtype == dtype else np.empty(spec.output_shape, final_dtype)

    def finish(self) -> None:
        """Round the compute-dtype output to the spec's dtype (round to nearest even)."""
        if self.final is not self.compute:
            np.copyto(self.final, self.compute, casting="unsafe")


def windows(arr: np.ndarray, plan: DirectPlan, layout: str) -> np.ndarray:
    """Strided view of every kernel window of a padded input (no copy).

    channels_first: (N, g, cig, *out, *k); channels_last: (N, *out, g, cig, *k).
    """
    from numpy.lib.stride_tricks import sliding_window_view

    d = plan.dims
    spatial = arr.shape[2:] if layout == "channels_first" else arr.shape[1:-1]
    if layout == "channels_first":
        a = arr.reshape(plan.n, plan.groups, plan.cig, *spatial)
        axes = tuple(range(3, 3 + d))
    else:
        a = arr.reshape(plan.n, *spatial, plan.groups, plan.cig)
        axes = tuple(range(1, 1 + d))
    v = sliding_window_view(a, plan.ek, axis=axes)
    sl = [slice(None)] * v.ndim
    for i, ax in enumerate(axes):
        sl[ax] = slice(0, (plan.out_size[i] - 1) * plan.stride[i] + 1, plan.stride[i])
        sl[v.ndim - d + i] = slice(None, None, plan.dilation[i])
    return v[tuple(sl)]


def blas_info() -> dict:
    """BLAS library and the thread count it was started with (fixed when numpy was imported)."""
    info: dict = {}
    try:
        blas = np.__config__.CONFIG["Build Dependencies"]["blas"]  # numpy >= 2
        info["blas"] = f"{blas.get('name')} {blas.get('version')}".strip()
    except Exception:  # noqa: BLE001 - older numpy has no CONFIG dict
        info["blas"] = "unknown"
    for var in BLAS_THREAD_VARS:
        if os.environ.get(var):
            info["blas_threads"] = os.environ[var]
            info["blas_threads_source"] = var
            break
    else:
        info["blas_threads"] = os.cpu_count()
        info["blas_threads_source"] = "BLAS default (all logical cores)"
    return info


def nbytes(shape: tuple, itemsize: int) -> int:
    return math.prod(shape) * itemsize


def io_estimate(spec: ConvSpec) -> MemoryEstimate:
    """The caller's input and weights, and the output: the compute-dtype buffer, the spec-dtype
    buffer (when the dtypes differ) and the copy result() returns; half-precision weights cast
    to float32."""
    io = io_parts(spec)
    item = compute_dtype(spec).itemsize
    half = item != spec.itemsize
    out = io["output"] * (2 if half else 1) + math.prod(spec.output_shape) * item
    cast = math.prod(spec.weight_shape) * item if half else 0
    return MemoryEstimate({"input": io["input"], "weights": io["weights"] + cast, "output": out})


class NumpyFamilyBackend(Backend):
    """Common parts of the NumPy/SciPy backends (family "numpy", cpu only)."""

    family = "numpy"
    install_hint = "pip install numpy scipy"
    robustness = Robustness.LIBRARY
    #: untuned fallback order on the cpu (lower first); the FFT backends refine it per spec
    cpu_rank: float = DEFAULT_HEURISTIC_RANK

    def heuristic_rank(self, spec: ConvSpec, device: str) -> float:
        return self.cpu_rank if device == "cpu" else DEFAULT_HEURISTIC_RANK

    def work_estimate(self, spec: ConvSpec, algorithm: str) -> MemoryEstimate:
        """The work buffers (padded input, im2col columns, spectra, ...) this algorithm allocates
        beyond the caller's arrays and the output, by part, on the high side."""
        return MemoryEstimate()

    def memory_estimate(self, spec: ConvSpec, device: str, algorithm: str) -> MemoryEstimate:
        """The caller's arrays and the output buffers (:func:`io_estimate`) plus the work
        buffers; supports() refuses what does not fit in the memory available."""
        return io_estimate(spec) + self.work_estimate(spec, algorithm)

    def __init__(self) -> None:
        self._threads: Optional[int] = None

    def set_threads(self, threads: int) -> None:
        """Record the requested thread count; BLAS threads are fixed when numpy is imported
        (set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS before that), so this cannot change them."""
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise InvalidInputError(f"threads: {threads!r} must be an integer >= 1")
        self._threads = int(threads)

    def versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def dispatch_callable(self, spec: ConvSpec, algorithm: str, device: str, kind: str,
                          requires_grad: bool = False) -> Optional[Callable[[Any, Any], Any]]:
        """For convbench.conv(): ``prepare(spec, x, w)``, ``run()``, ``result()`` on the caller's
        arrays (prepare keeps views of them; any padding copy is part of the convolution).

        ``kind`` "numpy"; or "torch-cpu" through ``Tensor.numpy()`` views both ways, unless
        a tensor requires grad (autograd would silently stop). None otherwise.
        """
        if device != "cpu" or kind not in ("numpy", "torch-cpu") or (kind == "torch-cpu" and requires_grad):
            return None
        prepare = self.prepare

        def run_prepared(x: np.ndarray, w: np.ndarray) -> np.ndarray:
            p = prepare(spec, x, w, algorithm, device)
            p.run()
            return p.result()

        if kind == "numpy":
            return run_prepared
        from ._torch_interop import numpy_as_tensor, tensor_as_numpy

        def run_tensor(x: Any, w: Any) -> Any:
            return numpy_as_tensor(run_prepared(tensor_as_numpy(x), tensor_as_numpy(w)))
        return run_tensor

    def base_info(self, spec: ConvSpec, algorithm: str) -> dict:
        info = {"numpy": np.__version__, "algorithm": algorithm,
                "compute_dtype": compute_dtype(spec).name, "threads_requested": self._threads}
        info.update(blas_info())
        info["threads_note"] = ("BLAS threads are fixed when numpy is imported (OPENBLAS_NUM_THREADS/"
                                "OMP_NUM_THREADS); set_threads() cannot change them")
        return info


class NumpyPrepared(Prepared):
    """A prepared NumPy convolution: run() fills ``out``; result() copies ``out.final``."""

    def __init__(self, spec: ConvSpec, out: OutputBuffer, info: dict) -> None:
        self.spec = spec
        self.device = "cpu"
        self.out = out
        self.info = info

    def result(self) -> np.ndarray:
        return self.out.final.copy()
