"""int8 candidates of the ``numba`` backend: which specs they take, what they allocate, run().

Importing this module imports neither numba nor llvmlite (the kernels come from ``_numba_int8``
and ``_numba_vnni`` on first prepare). Every candidate computes the exact int32 accumulators
and requantises them exactly like :func:`convbench.quant.requantize`: it is held to 0 LSB.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from convbench.memory import MemoryEstimate, io_parts
from convbench.quant import quant_params
from convbench.registry import Support
from convbench.spec import ConvSpec

from .numba_backend import _NumbaPrepared, _as3d, _own_copy

_INT32_MAX = 2**31 - 1


def _accumulation_products(spec: ConvSpec, algorithm: str) -> int:
    """Products summed into one accumulator (the channel slots the kernel pads included)."""
    cig = spec.c_in // spec.groups
    if algorithm.startswith("int8-vnni"):
        cig = -(-cig // 4) * 4
    return cig * math.prod(spec.kernel_size)


def _vnni_target() -> Support:
    """Whether numba compiles for a CPU with AVX-512 VNNI (asks no framework: /proc/cpuinfo and
    numba's target overrides in the environment)."""
    from convbench.environment import cpu_info

    if "avx512_vnni" not in cpu_info()["cpu_isa"]:
        return Support.no(f"this CPU lacks AVX-512 VNNI (avx512_vnni; ISA flags: "
                          f"{', '.join(cpu_info()['cpu_isa']) or 'none'}): use int8-direct")
    name, feats = os.environ.get("NUMBA_CPU_NAME"), os.environ.get("NUMBA_CPU_FEATURES")
    if feats is not None and "+avx512vnni" not in feats:
        return Support.no(f"NUMBA_CPU_FEATURES={feats!r} leaves out +avx512vnni: use int8-direct")
    if name and name != "host" and feats is None:
        return Support.no(f"NUMBA_CPU_NAME={name!r} compiles for another CPU: use int8-direct")
    return Support.yes()


def int8_support(spec: ConvSpec, algorithm: str) -> Support:
    """Whether the int8 ``algorithm`` runs ``spec`` (a float algorithm never does)."""
    if spec.dtype != "int8":
        return Support.no(f"{algorithm} computes int8 problems only, not dtype {spec.dtype}")
    # vnni: the accumulator starts at -128*sum(w) and adds (x+128)*w <= 255*128 per product
    per_product = 128 * 128 + (255 * 128 if algorithm.startswith("int8-vnni") else 0)
    k = _accumulation_products(spec, algorithm)
    if k * per_product > _INT32_MAX:
        return Support.no(f"accumulation length {k} (C_in/groups x kernel) could overflow the int32 "
                          f"accumulator of {algorithm} (at most {_INT32_MAX // per_product})")
    if algorithm.startswith("int8-vnni"):
        if spec.depthwise:
            return Support.no(f"groups={spec.groups} == c_in: one input channel per group fills one "
                              f"of vpdpbusd's four byte slots; use int8-direct (channel-vectorised)")
        return _vnni_target()
    return Support.yes()


def int8_memory(spec: ConvSpec, algorithm: str) -> MemoryEstimate:
    """The caller's arrays and the kernel's copies, the padded (uint8 for VNNI) input buffer,
    the packed weights (VNNI: padded to 4 input x 16/32 output channels), the per-pixel offset
    tables and the output."""
    io = io_parts(spec)
    cig, cog = spec.c_in // spec.groups, spec.c_out // spec.groups
    geo = _geometry(spec)
    pixels = spec.n * math.prod(geo["ext"])
    parts = {"input": io["input"], "weights": io["weights"],
             "kernel copies": io["input"] + io["weights"], "output": 2 * io["output"]}
    taps = math.prod(spec.kernel_size)
    if not (algorithm == "int8-direct" and cig == 1 and cog == 1 and spec.groups > 1):
        parts["pixel tables"] = 16 * spec.n * math.prod(spec.output_size)
    if algorithm.startswith("int8-vnni"):
        c4, nr = -(-cig // 4) * 4, (32 if cog > 16 else 16)
        parts["padded input"] = pixels * spec.groups * c4
        parts["packed weights"] = spec.groups * -(-cog // nr) * nr * (taps * c4 + 4)
    else:
        parts["padded input"] = pixels * spec.c_in
        parts["packed weights"] = io["weights"]
    return MemoryEstimate(parts)


def _geometry(spec: ConvSpec) -> dict[str, Any]:
    """The equivalent direct convolution over the padded (transposed: zero-upsampled) input:
    where input position 0 lands (``before``), the upsampling (``up``), the buffer's extent
    (``ext``) and the stride; plus the spec's fields padded to 3-D (``_as3d``)."""
    s3 = _as3d(spec)
    if spec.transposed:
        before = [dl * (k - 1) - pb for dl, k, (pb, _) in zip(s3["d"], s3["k"], s3["p"])]
        after = [dl * (k - 1) - pa + op for dl, k, (_, pa), op in zip(s3["d"], s3["k"], s3["p"], s3["op"])]
        ext = [(n - 1) * u + 1 + b + a for n, u, b, a in zip(s3["size"], s3["s"], before, after)]
        return dict(s3, before=before, up=s3["s"], ext=ext, stride=(1, 1, 1))
    before = [pb for pb, _ in s3["p"]]
    ext = [n + pb + pa for n, (pb, pa) in zip(s3["size"], s3["p"])]
    return dict(s3, before=before, up=(1, 1, 1), ext=ext, stride=s3["s"])


def equivalent_weights(spec: ConvSpec, w: np.ndarray) -> np.ndarray:
    """A (G, C_out/G, C_in/G, taps) view of the weights of the equivalent direct convolution
    (transposed: channel roles swapped, taps reversed); no copy."""
    G, T = spec.groups, math.prod(spec.kernel_size)
    cig, cog = spec.c_in // G, spec.c_out // G
    if spec.transposed:
        return w.reshape(G, cig, cog, T).transpose(0, 2, 1, 3)[..., ::-1]
    return w.reshape(G, cog, cig, T)


def prepare_int8(spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, info: dict) -> _NumbaPrepared:
    """The prepared int8 candidate (compiled: it has run once)."""
    if algorithm == "int8-direct":
        p: _NumbaPrepared = _Int8DirectPrepared(spec, x, w, info)
    else:
        p = _VnniPrepared(spec, x, w, info, prepacked=algorithm.endswith("-prepacked"))
    p.compile()
    return p


class _Int8Prepared(_NumbaPrepared):
    """Common parts: int8 copies of x and w, the multipliers, the padded-input staging."""

    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, info: dict, shift: int,
                 slots: int, fill: int, buf_dtype: Any) -> None:
        from . import _numba_int8

        super().__init__(spec, _numba_int8, info)
        self.geo = g = _geometry(spec)
        self.x = _own_copy(x, np.int8)
        self.w = _own_copy(w, np.int8)
        self.mult = np.ascontiguousarray(quant_params(spec).multiplier, dtype=np.float64)
        self.G = spec.groups
        self.cig, self.cog = spec.c_in // spec.groups, spec.c_out // spec.groups
        self.T = math.prod(spec.kernel_size)
        self.y_cf = spec.layout == "channels_first"
        Dp, Hp, Wp = g["ext"]
        self.xp = np.full(spec.n * Dp * Hp * Wp * spec.groups * slots, fill, dtype=buf_dtype)
        self.stage_args = (shift, self.y_cf, spec.n, spec.c_in, self.cig, slots, *g["size"],
                           Dp, Hp, Wp, *g["before"], *g["up"])
        self.weq = equivalent_weights(spec, self.w)  # a view: packing reads the kernel's copy
        info["requantisation"] = "float64 multiplier, rint (half to even), saturate: exact (0 LSB)"
        info["layout_handling"] = ("channels_first input transposed into a padded channels_last "
                                   "buffer inside run(); output written channels_first directly"
                                   if self.y_cf else "input copied into a padded buffer inside run()")
        if spec.transposed:
            info["transposed_method"] = ("zero-upsampled input + direct kernel (multiplies the "
                                         "inserted zeros)")

    def stage(self) -> None:
        self.k.stage_i8(self.x, self.xp, *self.stage_args)


class _Int8DirectPrepared(_Int8Prepared):
    """int8-direct: dot products over contiguous runs of (tap, channel), or for depthwise with
    one output channel per group a channel-vectorised loop; weights packed in run()."""

    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, info: dict) -> None:
        super().__init__(spec, x, w, info, shift=0, slots=spec.c_in // spec.groups, fill=0,
                         buf_dtype=np.int8)
        k, g = self.k, self.geo
        Dp, Hp, Wp = g["ext"]
        C, CO = spec.c_in, spec.c_out
        self.dw = self.cig == 1 and self.cog == 1 and self.G > 1
        out3 = (*g["out"], *g["k"], *g["stride"])
        if self.dw:
            self.wk = np.empty(self.T * C, dtype=np.int8)
            self.wk_view, self.w_src = self.wk.reshape(self.T, C), self.weq.reshape(C, self.T).T
            self.kernels = (k.stage_i8, k.depthwise_i8)
            self.args = (spec.n, C, Dp, Hp, Wp, *out3, *g["d"], self.y_cf)
            info["kernel"] = "int8 depthwise: int32 accumulators vectorised over channels, parallel over output rows"
            return
        self.wk = np.empty(CO * self.T * self.cig, dtype=np.int8)
        self.wk_view = self.wk.reshape(self.G, self.cog, self.T, self.cig)
        self.w_src = self.weq.transpose(0, 1, 3, 2)
        self.kernels = (k.stage_i8, k.direct_i8)
        KD, KH, KW = g["k"]
        dil = g["d"]
        if self.G == 1 and dil[2] == 1:  # the taps of a kernel row are adjacent in memory
            L, taps = KW * C, [(kd, kh, 0) for kd in range(KD) for kh in range(KH)]
            woff = [(kd * KH + kh) * KW * self.cig for kd, kh, _ in taps]
        else:
            L = self.cig
            taps = [(kd, kh, kw) for kd in range(KD) for kh in range(KH) for kw in range(KW)]
            woff = [((kd * KH + kh) * KW + kw) * self.cig for kd, kh, kw in taps]
        self.xoff = np.asarray([((kd * dil[0] * Hp + kh * dil[1]) * Wp + kw * dil[2]) * C
                                for kd, kh, kw in taps], dtype=np.int64)
        self.woff = np.asarray(woff, dtype=np.int64)
        self.args = (int(L), *_pixel_tables(spec, g, C), C, CO, self.G, 32, 16)
        info["kernel"] = (f"int8 direct: int32 dot products over runs of {L} int8 values "
                          f"({len(taps)} per output), parallel over (pixel, group, channel) blocks")

    def run(self) -> None:
        k = self.k
        self.stage()
        np.copyto(self.wk_view, self.w_src)  # pack: (C_out, taps, C_in/G), or (taps, C) depthwise
        if self.dw:
            k.depthwise_i8(self.xp, self.wk, self.y, self.mult, *self.args)
        else:
            k.direct_i8(self.xp, self.wk, self.y, self.mult, self.xoff, self.woff, *self.args)


class _VnniPrepared(_Int8Prepared):
    """int8-vnni(-prepacked): vpdpbusd micro-kernels over a uint8 (x + 128) padded input."""

    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, info: dict, prepacked: bool) -> None:
        c4 = -(-(spec.c_in // spec.groups) // 4) * 4
        super().__init__(spec, x, w, info, shift=128, slots=c4, fill=128, buf_dtype=np.uint8)
        from . import _numba_vnni as v

        _check_llvm_target()
        self.v, self.C4, self.prepacked = v, c4, prepacked
        g = self.geo
        Dp, Hp, Wp = g["ext"]
        KD, KH, KW = g["k"]
        dil = g["d"]
        self.J = 2 if self.cog > 16 else 1
        NR, MR = 16 * self.J, v.TILES[self.J]
        OB = -(-self.cog // NR)
        self.wp = np.zeros(self.G * OB * self.T * c4 * NR, dtype=np.int8)
        self.negcomp = np.zeros(self.G * OB * NR, dtype=np.int32)
        # packing: rows (G, OB*NR, T, C4) with zero padding, then 4-byte words (G, OB, T, C4/4, NR)
        self.rows = np.zeros((self.G, OB * NR, self.T, c4), dtype=np.int8)
        self.rows_real = self.rows[:, :self.cog, :, :self.cig]
        self.w_src = self.weq.transpose(0, 1, 3, 2)
        self.words_src = self.rows.view(np.uint32).reshape(self.G, OB, NR, self.T, c4 // 4).transpose(0, 1, 3, 4, 2)
        self.words_dst = self.wp.view(np.uint32).reshape(self.G, OB, self.T, c4 // 4, NR)
        self.negcomp_real = self.negcomp.reshape(self.G, OB * NR)[:, :self.cog]
        xs = self.G * c4
        self.tapoff = np.asarray([((kd * dil[0] * Hp + kh * dil[1]) * Wp + kw * dil[2]) * xs
                                  for kd in range(KD) for kh in range(KH) for kw in range(KW)],
                                 dtype=np.int64)
        PB, OBT = _vnni_blocks(spec.n * math.prod(g["out"]), self.G, OB, MR,
                               max(1, int(info.get("threads", 1))))
        self.args = (*_pixel_tables(spec, g, xs), spec.c_out, self.G, c4, self.J, PB, OBT)
        self.kernels = (self.k.stage_i8, v.vnni_conv)
        if prepacked:
            self.pack()
        info["kernel"] = (f"int8 VNNI: vpdpbusd micro-kernel {MR} pixels x {NR} output channels, "
                          f"{c4 // 4} steps of 4 input channels x {self.T} taps; tasks of {PB} pixels "
                          f"x {OBT} channel blocks")
        info["weight_packing"] = "prepare()" if prepacked else "every run()"

    def pack(self) -> None:
        """wp and negcomp (see _numba_vnni) from the kernel's weight copy, with numpy."""
        np.copyto(self.rows_real, self.w_src)
        np.copyto(self.words_dst, self.words_src)
        np.multiply(self.weq.sum(axis=(2, 3), dtype=np.int32), -128, out=self.negcomp_real)

    def run(self) -> None:
        self.stage()
        if not self.prepacked:
            self.pack()
        self.v.vnni_conv(self.xp, self.wp, self.negcomp, self.mult, self.y, self.tapoff, *self.args)


def _pixel_tables(spec: ConvSpec, geo: dict, pixel_stride: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(pixoff, ybase, cstride) of the kernels: per output pixel (N x out-spatial, in order) the
    offset of its window in the padded buffer (``pixel_stride`` elements per buffer pixel) and
    the index of its channel 0 in y; channel co is ybase + co * cstride (the output layout)."""
    (OD, OH, OW), (Dp, Hp, Wp), (sd, sh, sw) = geo["out"], geo["ext"], geo["stride"]
    n, od, oh, ow = np.meshgrid(np.arange(spec.n), np.arange(OD), np.arange(OH), np.arange(OW),
                                indexing="ij", sparse=True)
    pixoff = (((n * Dp + od * sd) * Hp + oh * sh) * Wp + ow * sw) * pixel_stride
    osp = OD * OH * OW
    sp = (od * OH + oh) * OW + ow
    cf = spec.layout == "channels_first"
    ybase = n * spec.c_out * osp + sp if cf else (n * osp + sp) * spec.c_out
    flat = [np.ascontiguousarray(np.broadcast_to(a, (spec.n, OD, OH, OW)), dtype=np.int64).ravel()
            for a in (pixoff, ybase)]
    return flat[0], flat[1], (osp if cf else 1)


def _vnni_blocks(npix: int, groups: int, ob: int, mr: int, threads: int) -> tuple[int, int]:
    """(pixels, output blocks) per task: 16 micro-tiles x every block of a group, split until
    there are at least 4 tasks per thread or a task is one micro-tile x one block."""
    pb, obt = 16 * mr, ob

    def tasks() -> int:
        return -(-npix // pb) * groups * -(-ob // obt)

    while tasks() < 4 * threads and (obt > 1 or pb > mr):
        if obt > 1:
            obt = -(-obt // 2)
        else:
            pb = max(mr, pb // 2 // mr * mr)
    return pb, obt


def _check_llvm_target() -> None:
    """Refuse (UnsupportedError) when LLVM's host target lacks avx512vnni although the CPU
    flags said yes: compiling vpdpbusd there would fail inside LLVM."""
    import llvmlite.binding as llvm

    from convbench.errors import UnsupportedError

    feats = llvm.get_host_cpu_features()
    if not feats.get("avx512vnni", False):
        raise UnsupportedError("int8-vnni: LLVM's host target has no avx512vnni feature")
