"""numba: hand-written CPU kernels compiled with numba (direct, depthwise, Winograd, int8).

The kernels live in ``_numba_kernels``, imported on first use: importing this module does not
import numba. Compilation happens in ``prepare()`` (the first prepare of a kernel and dtype
compiles it, or loads it from numba's on-disk cache), never in the timed ``run()``.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Optional

import numpy as np

from convbench.memory import MemoryEstimate, io_parts
from convbench.registry import Backend, Capabilities, Prepared, Robustness, Support
from convbench.spec import DTYPES, ConvSpec

#: int8 candidates (backends/_numba_int8_prepared.py); the first that supports a spec is its default
INT8_ALGORITHMS = ("int8-vnni", "int8-direct", "int8-vnni-prepacked")
INT8_DESCRIPTIONS = {
    "int8-vnni": "int8, AVX-512 VNNI vpdpbusd micro-kernels; weights packed in every run()",
    "int8-direct": "int8, portable (vpmaddwd dot products, channel-vectorised depthwise); weights "
                   "packed in every run()",
    "int8-vnni-prepacked": "int8-vnni with the weights packed once in prepare()",
}
ALGORITHMS = (
    "direct",
    "depthwise",
    "winograd-f2x3",
    "winograd-f4x3",
    "winograd-f2x3-pretransformed",
    "winograd-f4x3-pretransformed",
    "winograd-f2x3-pretransformed-blas",
    "winograd-f4x3-pretransformed-blas",
) + INT8_ALGORITHMS

# Winograd F(m, 3) transforms (Lavin & Gray 2016; F(4,3) with interpolation points 0, +-1, +-2).
_WINO = {
    2: dict(
        BT=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        G=[[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        AT=[[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    4: dict(
        BT=[[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        G=[[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
           [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        AT=[[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    ),
}

# Micro-kernel blocking of the direct kernel: pixels x output channels per task.
_PIXEL_BLOCK = 64
_CHANNEL_BLOCK = 32

_kernels_module: Any = None


def _kernels() -> Any:
    """The compiled-kernel module (imports numba on first use)."""
    global _kernels_module
    if _kernels_module is None:
        from . import _numba_kernels

        _kernels_module = _numba_kernels
    return _kernels_module


def winograd_matrices(m: int, dtype: Any = np.float64) -> dict[str, np.ndarray]:
    """The B^T, G and A^T matrices of Winograd F(m, 3) for m in (2, 4)."""
    return {k: np.asarray(v, dtype=dtype) for k, v in _WINO[m].items()}


def _as3d(spec: ConvSpec) -> dict[str, Any]:
    """Spatial fields of the spec padded to 3 dims (missing leading dims have size 1)."""
    lead = 3 - spec.dims

    def pad(t: tuple, fill: Any) -> tuple:
        return (fill,) * lead + tuple(t)

    return dict(size=pad(spec.input_size, 1), out=pad(spec.output_size, 1),
                k=pad(spec.kernel_size, 1), s=pad(spec.stride, 1), d=pad(spec.dilation, 1),
                p=pad(spec.padding, (0, 0)), op=pad(spec.output_padding, 0))


class NumbaBackend(Backend):
    """Custom CPU kernels written in Python and compiled by numba.

    Algorithms (float32 and float64; float16/bfloat16 are refused):

    - ``direct``: every convolution (1-3-D, stride, asymmetric padding, dilation, groups,
      transposed). The input is copied into a zero-padded channels_last buffer inside
      ``run()`` (fused with the transpose for channels_first inputs), then a register-blocked
      kernel computes 4 pixels x 4 output channels at a time as vectorised dot products over
      contiguous (kernel-tap, input-channel) runs; channels_first output is written directly.
      Parallel over (pixel block, group, output-channel block). Transposed convolution runs as
      the equivalent direct convolution of the zero-upsampled input (it multiplies the
      inserted zeros too, i.e. does stride**dims times the useful work).
    - ``depthwise``: groups == c_in == c_out, not transposed. Memory-bound kernel: for
      channels_last vectorised over channels (all nine taps of an interior 3x3 pixel in one
      pass), for channels_first vectorised along output rows.
    - ``winograd-f2x3`` / ``winograd-f4x3``: 2-D, 3x3, stride 1, dilation 1, groups 1, any
      padding. One parallel loop over blocks of tiles does, per block and while it is in
      cache, the input transform, the element-wise stage as alpha**2 small GEMMs (with the
      direct kernel's register-blocked micro-kernel) and the output transform: one parallel
      region per call and no BLAS thread pool next to numba's. The weight transform runs on
      every call. channels_first input is first transposed to channels_last inside ``run()``;
      channels_first output is written directly.
    - ``winograd-f2x3-pretransformed`` / ``winograd-f4x3-pretransformed``: the same with the
      weight transform done once in ``prepare()`` (in float64, rounded to the spec's dtype).
    - ``winograd-f2x3-pretransformed-blas`` / ``winograd-f4x3-pretransformed-blas``: weights
      transformed in ``prepare()``; input and output transforms are numba parallel loops over
      all tiles and the element-wise stage is one ``numpy.matmul`` over the alpha**2 points
      (BLAS, with its own thread pool). With several threads the BLAS and numba pools compete
      for the cores; OMP_WAIT_POLICY=passive helps. Measure both variants side by side with
      ``benchmarks/custom_kernels_cpu.py``.

    - ``int8-direct`` (int8 problems, every spec): a portable kernel with exact int32
      accumulators: dot products over contiguous (tap, channel) runs of the padded int8
      channels_last buffer, each loop a single-accumulator widening reduction that LLVM compiles
      to ``vpmovsxbw`` + ``vpmaddwd`` on x86; depthwise convolutions with one output channel per
      group run channel-vectorised instead. Weights packed in every ``run()``.
    - ``int8-vnni`` / ``int8-vnni-prepacked`` (int8, CPUs with AVX-512 VNNI; not depthwise):
      register-blocked micro-kernels of 6 pixels x 32 output channels (8 x 16 when a group
      has at most 16) built from ``vpdpbusd`` through numba intrinsics, over an ``x + 128``
      uint8 buffer with the ``-128 * sum(w)`` correction folded into the accumulators' start.
      Weights packed into 4-channel x 16-lane blocks in every run(), or once in prepare().
    All int8 candidates requantise exactly like :func:`convbench.quant.requantize` (float64
    multiplier, rint, saturation) and are held to 0 LSB.

    Winograd accuracy, float32 (measured with benchmarks/custom_kernels_cpu.py on the ResNet-50
    3x3 layers at n=1 on a 2-core Xeon): norm-wise relative error 1.0e-6 to 1.3e-6 for
    F(4x4,3x3) and 1.5e-7 to 2.7e-7 for F(2x2,3x3) with the numba GEMM stage; 1.7e-6 to 3.0e-6
    and 2.6e-7 to 5.0e-7 with the BLAS one (direct: 1.7e-7 to 4.0e-7). All stay under the
    1e-4 float32 bound, so every algorithm is held to the dtype's bound and none declares an
    expected failure. float64 specs transform in float64.
    """

    name = "numba"
    family = "numba"
    description = "numba kernels: blocked direct, depthwise, Winograd F(2x2,3x3)/F(4x4,3x3), int8"
    algorithm_descriptions = INT8_DESCRIPTIONS
    install_hint = "pip install convbench[numba]"
    capabilities = Capabilities(dtypes=frozenset(DTYPES))
    robustness = Robustness.JIT
    framework_modules = ("numba", "llvmlite")
    version_distributions = {"numba": ("numba",)}
    precomputed_algorithms = frozenset(a for a in ALGORITHMS
                                       if "-pretransformed" in a or a.endswith("-prepacked"))

    def __init__(self) -> None:
        self._threads: Optional[int] = None

    def heuristic_rank(self, spec: ConvSpec, device: str) -> float:
        """After the frameworks, before the NumPy backends (cpu)."""
        return 2.0 if device == "cpu" else super().heuristic_rank(spec, device)

    # -- availability / facts ------------------------------------------------------------------
    def _check_available(self) -> Support:
        try:
            import numba  # noqa: F401
        except ImportError as exc:
            return Support.no(f"numba is not installed ({exc})")
        return Support.yes()

    def versions(self) -> dict[str, str]:
        if not self.available():
            return {}
        import llvmlite
        import numba

        return {"numba": numba.__version__, "llvmlite": llvmlite.__version__, "numpy": np.__version__}

    def set_threads(self, threads: int) -> None:
        """Use ``threads`` numba threads (capped at NUMBA_NUM_THREADS)."""
        self._threads = int(threads)
        if self.available():
            self._apply_threads()

    def _apply_threads(self) -> dict[str, Any]:
        import numba

        facts: dict[str, Any] = {}
        cap = numba.config.NUMBA_NUM_THREADS
        if self._threads is not None:
            n = max(1, min(self._threads, cap))
            numba.set_num_threads(n)
            if n != self._threads:
                facts["threads_note"] = (f"asked for {self._threads} threads, numba allows at most "
                                         f"NUMBA_NUM_THREADS={cap}")
        facts["threads"] = numba.get_num_threads()
        return facts

    # -- candidates ----------------------------------------------------------------------------
    def algorithms(self, device: str = "cpu") -> list[str]:
        return list(ALGORITHMS) if device == "cpu" else []

    def tolerance(self, spec: ConvSpec, device: str, algorithm: str) -> float:
        """0 LSB for the int8 algorithms (exact accumulators and requantisation), else the
        dtype's bound."""
        return 0.0 if algorithm in INT8_ALGORITHMS else super().tolerance(spec, device, algorithm)

    def _supports(self, spec: ConvSpec, device: str, algorithm: str) -> Support:
        if algorithm in INT8_ALGORITHMS:
            from ._numba_int8_prepared import int8_support

            return int8_support(spec, algorithm)
        if spec.dtype == "int8":
            return Support.no(f"{algorithm} computes in float32/float64; int8 problems run on "
                              f"{', '.join(INT8_ALGORITHMS)}")
        if spec.dtype not in ("float32", "float64"):
            return Support.no(f"dtype {spec.dtype} not implemented: the numba kernels compute in "
                              f"float32/float64 only (no half-precision arithmetic on the CPU "
                              f"path); use float32")
        if algorithm == "direct":
            return Support.yes()
        if algorithm == "depthwise":
            if not spec.depthwise or spec.c_out != spec.c_in:
                return Support.no(f"depthwise needs groups == c_in == c_out (channel multiplier 1); "
                                  f"got groups={spec.groups}, c_in={spec.c_in}, c_out={spec.c_out}")
            if spec.transposed:
                return Support.no("transposed depthwise convolution not implemented (use direct)")
            return Support.yes()
        # Winograd
        why = []
        if spec.dims != 2:
            why.append(f"{spec.dims}-D (2-D only)")
        if spec.kernel_size != (3, 3):
            why.append(f"kernel {spec.kernel_size} (3x3 only)")
        if spec.stride != (1, 1):
            why.append(f"stride {spec.stride} (1 only)")
        if spec.dilation != (1, 1):
            why.append(f"dilation {spec.dilation} (1 only)")
        if spec.groups != 1:
            why.append(f"groups={spec.groups} (1 only)")
        if spec.transposed:
            why.append("transposed")
        if why:
            return Support.no(f"{algorithm} handles 2-D 3x3 stride-1 dense ungrouped forward "
                              f"convolutions only; this spec has " + ", ".join(why))
        return Support.yes()

    def memory_estimate(self, spec: ConvSpec, device: str, algorithm: str) -> MemoryEstimate:
        """The caller's input and weights and the kernels' own flat copies of them; the output
        and result()'s copy; direct: the zero-padded (transposed: zero-upsampled) input buffer;
        Winograd: the transformed weights (alpha^2 x C_out x C_in), a channels_last staging copy
        of a channels_first input, and for ``-blas`` the transformed tiles and their products
        (alpha^2 x tiles x (C_in + C_out))."""
        if algorithm in INT8_ALGORITHMS:
            from ._numba_int8_prepared import int8_memory

            return int8_memory(spec, algorithm)
        io = io_parts(spec)
        item = spec.itemsize
        parts = {"input": io["input"], "weights": io["weights"],
                 "kernel copies": io["input"] + io["weights"], "output": 2 * io["output"]}
        if algorithm == "direct":
            parts["padded input"] = spec.n * spec.c_in * math.prod(_padded_extent(spec)) * item
        elif algorithm.startswith("winograd"):
            m = 2 if "f2x3" in algorithm else 4
            alpha2 = (m + 2) ** 2
            tiles = spec.n * math.prod(-(-o // m) for o in spec.output_size)
            parts["transformed weights"] = alpha2 * spec.c_out * spec.c_in * item
            if spec.layout == "channels_first":
                parts["staging copy"] = io["input"]
            if algorithm.endswith("-blas"):
                parts["transformed tiles"] = alpha2 * tiles * (spec.c_in + spec.c_out) * item
        return MemoryEstimate(parts)

    # -- running -------------------------------------------------------------------------------
    def _prepare(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str) -> Prepared:
        import numba

        k = _kernels()
        info: dict[str, Any] = {"numba": numba.__version__, "algorithm": algorithm}
        info.update(self._apply_threads())
        if algorithm in INT8_ALGORITHMS:
            from ._numba_int8_prepared import prepare_int8

            return prepare_int8(spec, x, w, algorithm, info)
        if algorithm == "direct":
            p: _NumbaPrepared = _DirectPrepared(spec, x, w, k, info)
        elif algorithm == "depthwise":
            p = _DepthwisePrepared(spec, x, w, k, info)
        else:
            m = 2 if "f2x3" in algorithm else 4
            p = _WinogradPrepared(spec, x, w, k, info, m, "-pretransformed" in algorithm,
                                  algorithm.endswith("-blas"))
        p.compile()
        return p


def _padded_extent(spec: ConvSpec) -> list[int]:
    """Spatial size of the direct kernel's zero-padded (transposed: zero-upsampled) input."""
    if not spec.transposed:
        return [i + pb + pa for i, (pb, pa) in zip(spec.input_size, spec.padding)]
    return [(i - 1) * s + 1 + 2 * dl * (k - 1) - pb - pa + op for i, s, dl, k, (pb, pa), op in
            zip(spec.input_size, spec.stride, spec.dilation, spec.kernel_size, spec.padding,
                spec.output_padding)]


def _own_copy(a: np.ndarray, dt: np.dtype) -> np.ndarray:
    """A flat, writable, C-contiguous copy (numba specialises on read-only and layout flags)."""
    return np.array(a, dtype=dt, order="C", copy=True).reshape(-1)


class _NumbaPrepared(Prepared):
    """Common parts: output buffer, result(), compile-in-prepare."""

    kernels: tuple = ()

    def __init__(self, spec: ConvSpec, k: Any, info: dict) -> None:
        self.spec = spec
        self.k = k
        self.info = info
        self.dt = np.dtype(spec.dtype)
        self.y = np.zeros(math.prod(spec.output_shape), dtype=self.dt)

    def compile(self) -> None:
        """Compile (or load from numba's cache) every kernel run() uses, by calling run() once."""
        def counts() -> tuple[int, int]:
            hits = misses = 0
            for kern in self.kernels:
                hits += sum(kern.stats.cache_hits.values())
                misses += sum(kern.stats.cache_misses.values())
            return hits, misses

        h0, m0 = counts()
        t0 = time.perf_counter()
        self.run()
        self.info["first_run_s"] = round(time.perf_counter() - t0, 3)
        h1, m1 = counts()
        self.info["numba_cache"] = ("compiled" if m1 > m0 else "loaded from cache" if h1 > h0
                                    else "already in memory")
        try:
            import numba

            self.info["threading_layer"] = numba.threading_layer()
        except ValueError:  # no parallel region has run yet
            pass

    def result(self) -> np.ndarray:
        return self.y.reshape(self.spec.output_shape).copy()


class _DirectPrepared(_NumbaPrepared):
    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, k: Any, info: dict) -> None:
        super().__init__(spec, k, info)
        self.kernels = (k.stage_input, k.direct_conv)
        g = spec.groups
        s3 = _as3d(spec)
        D, H, W = s3["size"]
        KD, KH, KW = s3["k"]
        dil = s3["d"]
        C, CO = spec.c_in, spec.c_out
        cig, cog = C // g, CO // g
        if spec.transposed:
            # the equivalent direct convolution: zero-upsampled input, flipped, channel-swapped weights
            wt = np.asarray(w, dtype=self.dt).reshape(g, cig, cog, KD, KH, KW)
            weq = wt.transpose(0, 2, 1, 3, 4, 5)[..., ::-1, ::-1, ::-1].reshape(CO, cig, KD, KH, KW)
            up = s3["s"]
            before = [dl * (kk - 1) - pb for dl, kk, (pb, _) in zip(dil, s3["k"], s3["p"])]
            after = [dl * (kk - 1) - pa + op for dl, kk, (_, pa), op in zip(dil, s3["k"], s3["p"], s3["op"])]
            ext = [(n_ - 1) * u + 1 + b + a for n_, u, b, a in zip(s3["size"], up, before, after)]
            stride = (1, 1, 1)
            info["transposed_method"] = "zero-upsampled input + direct kernel (multiplies the inserted zeros)"
        else:
            weq = np.asarray(w, dtype=self.dt).reshape(CO, cig, KD, KH, KW)
            up = (1, 1, 1)
            before = [pb for pb, _ in s3["p"]]
            ext = [n_ + pb + pa for n_, (pb, pa) in zip(s3["size"], s3["p"])]
            stride = s3["s"]
        # packed weights: (C_out, KD, KH, KW, cig), one contiguous row per output channel
        self.wk = np.ascontiguousarray(weq.transpose(0, 2, 3, 4, 1)).ravel()
        Dp, Hp, Wp = ext
        self.xp = np.zeros(spec.n * Dp * Hp * Wp * C, dtype=self.dt)
        self.x = _own_copy(x, self.dt)
        # segments: contiguous runs of (tap, channel) that one dot product covers
        if g == 1 and dil[2] == 1:
            L = KW * C
            taps = [(kd, kh, 0) for kd in range(KD) for kh in range(KH)]
            woff = [(kd * KH + kh) * KW * cig for kd, kh, _ in taps]
        else:
            L = cig
            taps = [(kd, kh, kw) for kd in range(KD) for kh in range(KH) for kw in range(KW)]
            woff = [((kd * KH + kh) * KW + kw) * cig for kd, kh, kw in taps]
        xoff = [((kd * dil[0] * Hp + kh * dil[1]) * Wp + kw * dil[2]) * C for kd, kh, kw in taps]
        self.xoff = np.asarray(xoff, dtype=np.int64)
        self.woff = np.asarray(woff, dtype=np.int64)
        self.L = int(L)
        self.zero = self.dt.type(0)
        self.src_cf = spec.layout == "channels_first"
        self.stage_args = (spec.n, C, D, H, W, Dp, Hp, Wp, before[0], before[1], before[2],
                           up[0], up[1], up[2])
        OD, OH, OW = s3["out"]
        self.conv_args = (spec.n, C, CO, g, Dp, Hp, Wp, OD, OH, OW, stride[0], stride[1], stride[2],
                          self.src_cf, _PIXEL_BLOCK, _CHANNEL_BLOCK)
        info["kernel"] = (f"direct: 4 pixels x 4 channels register block, dot products over "
                          f"runs of {self.L} elements ({len(taps)} per output)")
        info["layout_handling"] = ("channels_first input transposed into the padded channels_last "
                                   "buffer inside run(); output written channels_first directly"
                                   if self.src_cf else "channels_last input copied into a zero-padded buffer inside run()")

    def run(self) -> None:
        k = self.k
        k.stage_input(self.x, self.xp, self.src_cf, *self.stage_args)
        k.direct_conv(self.xp, self.wk, self.y, self.xoff, self.woff, self.L, self.zero, *self.conv_args)


class _DepthwisePrepared(_NumbaPrepared):
    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, k: Any, info: dict) -> None:
        super().__init__(spec, k, info)
        s3 = _as3d(spec)
        C = spec.c_in
        taps = math.prod(s3["k"])
        w2 = np.asarray(w, dtype=self.dt).reshape(C, taps)
        self.cl = spec.layout == "channels_last"
        self.fn = k.depthwise_cl if self.cl else k.depthwise_cf
        self.kernels = (self.fn,)
        self.wk = np.ascontiguousarray(w2.T if self.cl else w2).ravel()
        self.x = _own_copy(x, self.dt)
        self.args = (spec.n, C, *s3["size"], *s3["out"], *s3["k"], *s3["s"],
                     *(pb for pb, _ in s3["p"]), *s3["d"])
        info["kernel"] = ("depthwise channels_last: vectorised over channels" if self.cl
                          else "depthwise channels_first: vectorised along output rows")

    def run(self) -> None:
        self.fn(self.x, self.wk, self.y, *self.args)


class _WinogradPrepared(_NumbaPrepared):
    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, k: Any, info: dict,
                 m: int, pretransformed: bool, blas: bool) -> None:
        super().__init__(spec, k, info)
        self.pre = pretransformed
        self.blas = blas
        mats = winograd_matrices(m, self.dt)
        self.BT, self.AT, self.G = mats["BT"], mats["AT"], mats["G"]
        alpha = m + 2
        A = alpha * alpha
        H, W = spec.input_size
        OH, OW = spec.output_size
        C, K = spec.c_in, spec.c_out
        tH, tW = -(-OH // m), -(-OW // m)
        P = spec.n * tH * tW
        self.cf = spec.layout == "channels_first"
        self.x = _own_copy(x, self.dt)
        self.w = np.array(w, dtype=self.dt, order="C", copy=True)
        if self.cf:  # transposed to channels_last inside run()
            self.xcl = np.zeros(spec.n * H * W * C, dtype=self.dt)
            self.stage_args = (spec.n, C, 1, H, W, 1, H, W, 0, 0, 0, 1, 1, 1)
        if pretransformed:
            g64 = winograd_matrices(m, np.float64)["G"]
            u = np.einsum("ai,kcij,bj->abkc", g64, np.asarray(w, dtype=np.float64), g64)
            self.U = np.ascontiguousarray(u.reshape(A, K, C).astype(self.dt))
        else:
            self.U = np.empty((A, K, C), dtype=self.dt)
        self.Uf = self.U.reshape(-1)
        self.zrow = np.zeros(C, dtype=self.dt)
        self.seg0 = np.zeros(1, dtype=np.int64)
        # tiles per task: a multiple of the micro-kernel's 4 rows, about two tasks per thread,
        # at most 64 (V and M blocks stay in cache)
        threads = max(1, int(info.get("threads", 1)))
        tb = min(64, 4 * max(1, -(-P // (8 * threads))))
        (ph, _), (pw, _) = spec.padding
        self.args = (self.dt.type(0), spec.n, H, W, C, K, OH, OW, tH, tW, m, ph, pw, self.cf, tb)
        self.kernels = ((k.wino_input, k.wino_output) if blas else (k.winograd_conv,)) + \
            ((k.stage_input,) if self.cf else ()) + (() if pretransformed else (k.wino_weights,))
        if blas:
            self.V = np.empty((A, P, C), dtype=self.dt)
            self.M = np.empty((A, P, K), dtype=self.dt)
            self.Ut = self.U.transpose(0, 2, 1)  # (A, C, K) view: BLAS reads it transposed
            self.in_args = (spec.n, H, W, C, tH, tW, m, ph, pw)
            self.out_args = (spec.n, OH, OW, K, tH, tW, m, self.cf)
            info["kernel"] = (f"Winograd F({m}x{m},3x3): input transform (numba), {A} batched GEMMs of "
                              f"{P}x{C} @ {C}x{K} (numpy.matmul, BLAS), output transform (numba)")
            info["blas_threads"] = os.environ.get("OPENBLAS_NUM_THREADS") or "BLAS default"
        else:
            info["kernel"] = (f"Winograd F({m}x{m},3x3), fused per block of {tb} tiles: input transform, "
                              f"{A} GEMMs of {tb}x{C} @ {C}x{K}, output transform; {P} tiles")
        info["weight_transform"] = "prepare() (float64, rounded)" if pretransformed else "every run()"
        if self.cf:
            info["layout_handling"] = ("channels_first input transposed to channels_last inside run(); "
                                       "output written channels_first directly")

    def run(self) -> None:
        k = self.k
        xs = self.x
        if self.cf:
            k.stage_input(self.x, self.xcl, True, *self.stage_args)
            xs = self.xcl
        if not self.pre:
            k.wino_weights(self.w, self.U, self.G)
        if self.blas:
            k.wino_input(xs, self.V.reshape(-1), self.zrow, self.BT, *self.in_args)
            np.matmul(self.V, self.Ut, out=self.M)
            k.wino_output(self.M.reshape(-1), self.y, self.AT, *self.out_args)
        else:
            k.winograd_conv(xs, self.Uf, self.y, self.zrow, self.BT, self.AT, self.seg0, *self.args)
