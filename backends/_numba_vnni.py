"""The ``numba`` backend's AVX-512 VNNI int8 kernel: ``vpdpbusd`` register-blocked micro-kernels.

LLVM does not turn a scalar int8 dot-product loop into ``vpdpbusd`` (the portable kernels of
``_numba_int8`` get ``vpmaddwd``), so the micro-kernels here emit the instruction through
numba's ``@intrinsic`` (``llvm.x86.avx512.vpdpbusd.512``). Import and compile this module only
on a CPU (and numba target) with avx512_vnni: LLVM cannot select the instruction elsewhere.

``vpdpbusd`` multiplies *unsigned* bytes by signed bytes, four at a time, into int32 lanes. The
activations are symmetric int8, so the staged input holds ``x + 128`` (uint8; padding holds
128, i.e. x = 0) and each output channel's accumulator starts at ``-128 * sum(w[o])``: the sum
then equals the exact int32 ``sum(x * w)`` (no saturation anywhere; the backend refuses
accumulation lengths that could overflow int32).

Layouts (flat arrays):
  xu       (N, Dp, Hp, Wp, G, C4) uint8: C4 = C_in/G rounded up to a multiple of 4
  wp       (G, OB, T, C4/4, NR, 4) int8: NR = 16*J output channels per block, OB blocks per
           group, 4 consecutive input channels of one output channel per int32 lane
  negcomp  (G, OB, NR) int32: -128 * sum of the output channel's weights (0 for padding)
A micro-kernel computes MR output pixels x NR output channels: MR*J zmm accumulators, per step
of 4 input channels J weight loads, MR broadcasts and MR*J ``vpdpbusd``.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._numba_int8 import requant

CACHE = True
#: (MR pixels, J zmm column blocks) of the two micro-kernels: J=2 for C_out/G > 16, else J=1
TILES = {2: 6, 1: 8}

_I32, _I64 = ir.IntType(32), ir.IntType(64)
_V16 = ir.VectorType(_I32, 16)


def _make_microkernel(MR: int, J: int):
    """An intrinsic mk(xu, xoffs, tapoff, nk4, wp, wbase, acc0, acc): for p < MR and j < 16*J,
    acc[p*16*J + j] = acc0[j] + sum over taps t and k < 4*nk4 of
    xu[xoffs[p] + tapoff[t] + k] * wp[wbase + (t*nk4 + k//4)*64*J + j*4 + k%4]."""

    @intrinsic
    def mk(typingctx, xu, xoffs, tapoff, nk4, wp, wbase, acc0, acc):
        sig = types.void(xu, xoffs, tapoff, nk4, wp, wbase, acc0, acc)

        def codegen(context, builder, signature, args):
            arrays = [context.make_array(signature.args[i])(context, builder, args[i])
                      for i in (0, 1, 2, 4, 6, 7)]
            xptr, xoffp, tapp, wptr, acc0p, accp = (a.data for a in arrays)
            ntap = builder.extract_value(arrays[2].shape, 0)
            nk4_v, wbase_v = args[3], args[5]
            fnty = ir.FunctionType(_V16, [_V16, _V16, _V16])
            dp = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx512.vpdpbusd.512")
            vptr = _V16.as_pointer()
            c64 = lambda v: ir.Constant(_I64, v)  # noqa: E731
            accs = [[cgutils.alloca_once(builder, _V16) for _ in range(J)] for _ in range(MR)]
            for j in range(J):
                init = builder.load(builder.bitcast(builder.gep(acc0p, [c64(16 * j)]), vptr), align=4)
                for p in range(MR):
                    builder.store(init, accs[p][j])
            xo = [builder.load(builder.gep(xoffp, [c64(p)])) for p in range(MR)]
            wcur = cgutils.alloca_once_value(builder, wbase_v)
            with cgutils.for_range(builder, ntap) as tap_loop:
                toff = builder.load(builder.gep(tapp, [tap_loop.index]))
                xb = [builder.add(o, toff) for o in xo]
                with cgutils.for_range(builder, nk4_v) as k_loop:
                    k = builder.shl(k_loop.index, c64(2))
                    wb = builder.load(wcur)
                    wv = [builder.load(builder.bitcast(builder.gep(wptr, [builder.add(wb, c64(64 * j))]),
                                                       vptr), align=1) for j in range(J)]
                    for p in range(MR):
                        xa = builder.bitcast(builder.gep(xptr, [builder.add(xb[p], k)]), _I32.as_pointer())
                        xs = builder.insert_element(ir.Constant(_V16, ir.Undefined),
                                                    builder.load(xa, align=1), ir.Constant(_I32, 0))
                        xv = builder.shuffle_vector(xs, ir.Constant(_V16, ir.Undefined),
                                                    ir.Constant(_V16, [0] * 16))
                        for j in range(J):
                            builder.store(builder.call(dp, [builder.load(accs[p][j]), xv, wv[j]]),
                                          accs[p][j])
                    builder.store(builder.add(wb, c64(64 * J)), wcur)
            for p in range(MR):
                for j in range(J):
                    dst = builder.bitcast(builder.gep(accp, [c64((p * J + j) * 16)]), vptr)
                    builder.store(builder.load(accs[p][j]), dst, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return mk


mk_6x32 = _make_microkernel(TILES[2], 2)
mk_8x16 = _make_microkernel(TILES[1], 1)


@njit(parallel=True, cache=CACHE)
def vnni_conv(xu, wp, negcomp, mult, y, tapoff, pixoff, ybase, cstride, CO, G, C4, J, PB, OBT):
    """y = requant(conv): output pixel q reads xu from pixoff[q] + g*C4 (+ tap offsets) and writes
    y at ybase[q] + co * cstride. Parallel over (pixel block of PB, group, OBT output blocks)
    tasks; within a task, output block outer, micro-tiles of MR pixels inner (the weight block
    stays in cache). Pixels past the block's end repeat its last pixel and are not stored."""
    NR = 16 * J
    MR = 6 if J == 2 else 8
    cog = CO // G
    OB = (cog + NR - 1) // NR
    nk4 = C4 // 4
    T = tapoff.shape[0]
    npix = pixoff.shape[0]
    npb = (npix + PB - 1) // PB
    nobt = (OB + OBT - 1) // OBT
    for task in prange(npb * G * nobt):
        ot = task % nobt
        g = (task // nobt) % G
        pb = task // (nobt * G)
        q_lo = pb * PB
        q_hi = min(npix, q_lo + PB)
        xoffs = np.empty(MR, np.int64)
        acc = np.empty(MR * NR, np.int32)
        tile = np.empty(MR * NR, np.int8)
        for ob in range(ot * OBT, min(OB, ot * OBT + OBT)):
            blk = g * OB + ob
            acc0 = negcomp[blk * NR: blk * NR + NR]
            for q0 in range(q_lo, q_hi, MR):
                for p in range(MR):
                    xoffs[p] = pixoff[min(q0 + p, q_hi - 1)] + g * C4
                if J == 2:
                    mk_6x32(xu, xoffs, tapoff, nk4, wp, blk * T * nk4 * NR * 4, acc0, acc)
                else:
                    mk_8x16(xu, xoffs, tapoff, nk4, wp, blk * T * nk4 * NR * 4, acc0, acc)
                store_tile(y, acc, tile, mult, ybase, cstride, q0, min(MR, q_hi - q0), g * cog + ob * NR,
                           min(NR, cog - ob * NR), NR)


@njit(inline="always")
def store_tile(y, acc, tile, mult, ybase, cstride, q0, nq, co0, nj, NR):
    """Requantise acc (pixels x NR int32) into y for pixels q0.. and channels co0.. (nq x nj):
    vectorised over channels into ``tile`` (slices: non-negative indices, no wraparound checks),
    then copied (channels_last) or scattered (channels_first) into y."""
    mv = mult[co0: co0 + nj]
    for p in range(nq):
        av = acc[p * NR: p * NR + nj]
        tv = tile[p * NR: p * NR + nj]
        for jj in range(nj):
            tv[jj] = requant(av[jj], mv[jj])
        base = ybase[q0 + p] + co0 * cstride
        if cstride == 1:
            y[base: base + nj] = tv
        else:
            for jj in range(nj):
                y[base + jj * cstride] = tv[jj]
