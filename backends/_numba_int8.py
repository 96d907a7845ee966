"""Compiled int8 kernels of the ``numba`` backend (portable: any CPU numba compiles for).

int8 activations and weights, exact int32 accumulators, then the requantisation of
:func:`convbench.quant.requantize`: ``saturate_int8(rint(float64(acc) * multiplier[o]))`` with
numpy's rint (round half to even). No fastmath anywhere: the integer sums are exact in any order
and the float64 step must round exactly like the reference.

Layouts (flat, C-contiguous arrays; 1-D and 2-D problems are 3-D ones with size-1 leading dims):
  padded input  xp (N, Dp, Hp, Wp, G, CS): channels_last, zero-padded (for transposed
                convolution zero-upsampled), CS >= C_in/G channels per group
  direct weights wk (C_out, KD, KH, KW, C_in/G): one contiguous row per output channel
  depthwise     wt (KD, KH, KW, C): one contiguous run of channels per tap
  pixel tables  pixoff[q]: offset in xp of output pixel q's first tap (group 0), ybase[q]: index
                in y of its channel 0 (channel co at ybase[q] + co * cstride)
Transposed problems arrive as their equivalent direct convolution (zero-upsampled input,
weights with the taps reversed and the channel roles swapped: the backend packs them).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

CACHE = True


# ---- shared pieces ------------------------------------------------------------------------------
@njit(inline="always")
def requant(acc, m):
    """int8 output of one int32 accumulator: round-half-even of acc * m in float64, saturated."""
    v = np.rint(np.float64(acc) * m)
    if v > 127.0:
        v = 127.0
    elif v < -128.0:
        v = -128.0
    return np.int8(v)


@njit(cache=CACHE)
def requant_array(acc, mult, out):
    """out[i, o] = requant(acc[i, o], mult[o]) for a 2-D accumulator array (tests use it)."""
    for i in range(acc.shape[0]):
        for o in range(acc.shape[1]):
            out[i, o] = requant(acc[i, o], mult[o])


@njit(parallel=True, cache=CACHE)
def stage_i8(x, xp, shift, src_cf, N, C, cig, CS, D, H, W, Dp, Hp, Wp, bd, bh, bw, ud, uh, uw):
    """Copy x (int8, channels_last or channels_first) plus ``shift`` into the padded buffer xp.

    Input position (d, h, w) lands at (d*ud + bd, h*uh + bh, w*uw + bw); channel c at group
    c // cig, slot c % cig of a group's CS slots. Nothing else of xp is written: the caller
    fills it once (with the padding value) and it keeps that value.
    """
    G = C // cig
    w_lo = max(0, (-bw + uw - 1) // uw)  # the input columns that land inside xp
    w_hi = min(W, (Wp - bw + uw - 1) // uw)
    for r in prange(N * D * H):
        n = r // (D * H)
        d = (r // H) % D
        h = r % H
        dp = d * ud + bd
        hp = h * uh + bh
        if dp < 0 or dp >= Dp or hp < 0 or hp >= Hp:
            continue
        prow = ((n * Dp + dp) * Hp + hp) * Wp
        if src_cf:  # read each channel's row contiguously, write strided within the buffer row
            for c in range(C):
                src = x[((n * C + c) * D + d) * H * W + h * W: ((n * C + c) * D + d) * H * W + h * W + W]
                o = (prow * G + c // cig) * CS + c % cig
                for w in range(w_lo, w_hi):
                    xp[o + (w * uw + bw) * G * CS] = src[w] + shift
        else:
            for w in range(w_lo, w_hi):
                for g in range(G):
                    o = ((prow + w * uw + bw) * G + g) * CS
                    dst = xp[o: o + cig]
                    srcv = x[(r * W + w) * C + g * cig: (r * W + w) * C + g * cig + cig]
                    for cc in range(cig):
                        dst[cc] = srcv[cc] + shift


# ---- direct: dot products over contiguous runs, one accumulator per loop -------------------------
@njit(cache=CACHE)
def _dot(xp, xo, wk, wo, L):
    """sum(xp[xo:xo+L] * wk[wo:wo+L]) in int32. A single accumulator: LLVM turns the widening
    multiply-add reduction into vpmaddwd (int16 pairs summed into int32 lanes)."""
    xs = xp[xo: xo + L]
    ws = wk[wo: wo + L]
    a = np.int32(0)
    for i in range(L):
        a = np.int32(a + xs[i] * ws[i])
    return a


@njit(parallel=True, cache=CACHE)
def direct_i8(xp, wk, y, mult, xoff, woff, L, pixoff, ybase, cstride, C, CO, G, PB, QB):
    """y = requant(conv(xp, wk)): xp padded channels_last int8 (CS = cig), wk (C_out, T, cig).

    Output pixel q reads from xp at pixoff[q] (+ the group's channels) and writes y at
    ybase[q] + co * cstride. Each output is the sum of dot products over the runs (xoff[s],
    woff[s], length L). Parallel over (pixel block, group, output-channel block) tasks of
    PB pixels x QB channels.
    """
    cig = C // G
    cog = CO // G
    kred = wk.shape[0] // CO
    npix = pixoff.shape[0]
    npb = (npix + PB - 1) // PB
    nqb = (cog + QB - 1) // QB
    for t in prange(npb * G * nqb):
        qb = t % nqb
        g = (t // nqb) % G
        pb = t // (nqb * G)
        co_lo = g * cog + qb * QB
        co_hi = min(g * cog + cog, co_lo + QB)
        for q in range(pb * PB, min(npix, pb * PB + PB)):
            b = pixoff[q] + g * cig
            for co in range(co_lo, co_hi):
                acc = np.int32(0)
                for s in range(xoff.shape[0]):
                    acc = np.int32(acc + _dot(xp, b + xoff[s], wk, co * kred + woff[s], L))
                y[ybase[q] + co * cstride] = requant(acc, mult[co])


# ---- depthwise: vectorised over channels --------------------------------------------------------
@njit(parallel=True, cache=CACHE)
def depthwise_i8(xp, wt, y, mult, N, C, Dp, Hp, Wp, OD, OH, OW, KD, KH, KW,
                 sd, sh, sw, dd, dh, dw, y_cf):
    """Depthwise (one input and one output channel per group): xp padded channels_last int8,
    wt (T, C). Parallel over output rows; each pixel accumulates all channels at once."""
    osp = OD * OH * OW
    for r in prange(N * OD * OH):
        n = r // (OD * OH)
        od = (r // OH) % OD
        oh = r % OH
        acc = np.empty(C, np.int32)
        for ow in range(OW):
            acc[:] = 0
            for kd in range(KD):
                for kh in range(KH):
                    for kw in range(KW):
                        b = (((n * Dp + od * sd + kd * dd) * Hp + oh * sh + kh * dh) * Wp
                             + ow * sw + kw * dw) * C
                        wo = ((kd * KH + kh) * KW + kw) * C
                        for c in range(C):
                            acc[c] = np.int32(acc[c] + np.int16(xp[b + c]) * np.int16(wt[wo + c]))
            if y_cf:
                for c in range(C):
                    y[(n * C + c) * osp + (od * OH + oh) * OW + ow] = requant(acc[c], mult[c])
            else:
                yv = y[((n * OD + od) * OH * OW + oh * OW + ow) * C:]
                for c in range(C):
                    yv[c] = requant(acc[c], mult[c])
