"""Compiled numba kernels of the ``numba`` backend.

This module imports numba at top level and compiles on first call of each kernel; the backend
module imports it only on first use, so ``import convbench_backends.numba_backend`` stays light.
Every kernel works on flat (1-D, C-contiguous) arrays of float32 or float64, and treats 1-D and
2-D problems as 3-D ones with size-1 leading spatial dimensions.

Layouts used here:
  channels_last activations  (N, D, H, W, C)
  channels_first activations (N, C, D, H, W)
  direct weights, packed      (C_out, KD, KH, KW, C_in/groups): one contiguous row per output
                              channel, so each output is a set of contiguous dot products
  Winograd                    per block of TB tiles V (A, TB, C), U (A, K, C), M (A, TB, K)
                              with A = alpha*alpha transformed points: M[a] = V[a] @ U[a]^T
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# Reassociation and contraction only: NaN and inf still propagate (no nnan/ninf flags).
FM = {"contract", "reassoc", "nsz", "arcp"}
CACHE = True


# ---- staging: zero-pad (and, for transposed convolution, zero-upsample) into channels_last ---
@njit(parallel=True, cache=CACHE)
def stage_input(x, xp, src_cf, N, C, D, H, W, Dp, Hp, Wp, bd, bh, bw, ud, uh, uw):
    """Copy x (channels_last, or channels_first when src_cf) into the channels_last buffer xp.

    Input position (d, h, w) lands at (d*ud + bd, h*uh + bh, w*uw + bw) of xp (N, Dp, Hp, Wp, C);
    positions outside xp are dropped (cropping). Every other element of xp must already be zero
    (the caller zeroes xp once): this copy writes only the landing positions.
    """
    for r in prange(N * D * H):
        n = r // (D * H)
        d = (r // H) % D
        h = r % H
        dp = d * ud + bd
        hp = h * uh + bh
        if dp < 0 or dp >= Dp or hp < 0 or hp >= Hp:
            continue
        prow = ((n * Dp + dp) * Hp + hp) * Wp
        if src_cf:
            plane = D * H * W
            src = (n * C * D + d) * H * W + h * W
            for w in range(W):
                wp = w * uw + bw
                if wp < 0 or wp >= Wp:
                    continue
                o = (prow + wp) * C
                for c in range(C):
                    xp[o + c] = x[src + c * plane + w]
        else:
            src = r * W * C
            for w in range(W):
                wp = w * uw + bw
                if wp < 0 or wp >= Wp:
                    continue
                xs = x[src + w * C: src + w * C + C]
                xd = xp[(prow + wp) * C: (prow + wp) * C + C]
                for c in range(C):
                    xd[c] = xs[c]


# ---- direct convolution: register-blocked dot products -----------------------------------------
# A micro-kernel computes 4 output pixels x Q output channels at once. Each output is a sum of
# dot products over contiguous "segments" (one per kernel tap, or one per kernel row when the
# taps of a row are adjacent in memory); LLVM vectorises every segment loop with 4*Q vector
# accumulators (4 + Q loads per 4*Q FMAs) and reduces them once per segment.
# The unrolled bodies below were written out by a generator (P=4 pixels, Q in {4, 1}).

@njit(fastmath=FM, cache=CACHE)
def _mk_p4q4(xp, wk, y, b0, b1, b2, b3, o0, o1, o2, o3, co, kred, ostride, xoff, woff, L, zero):
    a0_0 = zero
    a0_1 = zero
    a0_2 = zero
    a0_3 = zero
    a1_0 = zero
    a1_1 = zero
    a1_2 = zero
    a1_3 = zero
    a2_0 = zero
    a2_1 = zero
    a2_2 = zero
    a2_3 = zero
    a3_0 = zero
    a3_1 = zero
    a3_2 = zero
    a3_3 = zero
    for s in range(xoff.shape[0]):
        xs = xoff[s]; ws = woff[s]
        x0 = xp[b0 + xs: b0 + xs + L]
        x1 = xp[b1 + xs: b1 + xs + L]
        x2 = xp[b2 + xs: b2 + xs + L]
        x3 = xp[b3 + xs: b3 + xs + L]
        w0 = wk[(co + 0) * kred + ws: (co + 0) * kred + ws + L]
        w1 = wk[(co + 1) * kred + ws: (co + 1) * kred + ws + L]
        w2 = wk[(co + 2) * kred + ws: (co + 2) * kred + ws + L]
        w3 = wk[(co + 3) * kred + ws: (co + 3) * kred + ws + L]
        for i in range(L):
            v0 = w0[i]
            v1 = w1[i]
            v2 = w2[i]
            v3 = w3[i]
            u = x0[i]
            a0_0 += u * v0
            a0_1 += u * v1
            a0_2 += u * v2
            a0_3 += u * v3
            u = x1[i]
            a1_0 += u * v0
            a1_1 += u * v1
            a1_2 += u * v2
            a1_3 += u * v3
            u = x2[i]
            a2_0 += u * v0
            a2_1 += u * v1
            a2_2 += u * v2
            a2_3 += u * v3
            u = x3[i]
            a3_0 += u * v0
            a3_1 += u * v1
            a3_2 += u * v2
            a3_3 += u * v3
    if o0 >= 0:
        y[o0 + 0 * ostride] = a0_0
        y[o0 + 1 * ostride] = a0_1
        y[o0 + 2 * ostride] = a0_2
        y[o0 + 3 * ostride] = a0_3
    if o1 >= 0:
        y[o1 + 0 * ostride] = a1_0
        y[o1 + 1 * ostride] = a1_1
        y[o1 + 2 * ostride] = a1_2
        y[o1 + 3 * ostride] = a1_3
    if o2 >= 0:
        y[o2 + 0 * ostride] = a2_0
        y[o2 + 1 * ostride] = a2_1
        y[o2 + 2 * ostride] = a2_2
        y[o2 + 3 * ostride] = a2_3
    if o3 >= 0:
        y[o3 + 0 * ostride] = a3_0
        y[o3 + 1 * ostride] = a3_1
        y[o3 + 2 * ostride] = a3_2
        y[o3 + 3 * ostride] = a3_3


@njit(fastmath=FM, cache=CACHE)
def _mk_p4q1(xp, wk, y, b0, b1, b2, b3, o0, o1, o2, o3, co, kred, ostride, xoff, woff, L, zero):
    a0_0 = zero
    a1_0 = zero
    a2_0 = zero
    a3_0 = zero
    for s in range(xoff.shape[0]):
        xs = xoff[s]; ws = woff[s]
        x0 = xp[b0 + xs: b0 + xs + L]
        x1 = xp[b1 + xs: b1 + xs + L]
        x2 = xp[b2 + xs: b2 + xs + L]
        x3 = xp[b3 + xs: b3 + xs + L]
        w0 = wk[(co + 0) * kred + ws: (co + 0) * kred + ws + L]
        for i in range(L):
            v0 = w0[i]
            u = x0[i]
            a0_0 += u * v0
            u = x1[i]
            a1_0 += u * v0
            u = x2[i]
            a2_0 += u * v0
            u = x3[i]
            a3_0 += u * v0
    if o0 >= 0:
        y[o0 + 0 * ostride] = a0_0
    if o1 >= 0:
        y[o1 + 0 * ostride] = a1_0
    if o2 >= 0:
        y[o2 + 0 * ostride] = a2_0
    if o3 >= 0:
        y[o3 + 0 * ostride] = a3_0


@njit(inline="always")
def _pixel(q, q_end, osp, OH, OW, Dp, Hp, Wp, C, sd, sh, sw, goff, CO, y_cf):
    """Input base offset and output base offset (-1: padding pixel, not stored) of pixel q."""
    valid = q < q_end
    if not valid:
        q = q_end - 1
    n = q // osp
    sp = q % osp
    od = sp // (OH * OW)
    oh = (sp // OW) % OH
    ow = sp % OW
    b = (((n * Dp + od * sd) * Hp + oh * sh) * Wp + ow * sw) * C + goff
    if not valid:
        return b, -1
    if y_cf:
        return b, n * CO * osp + sp
    return b, q * CO


@njit(parallel=True, fastmath=FM, cache=CACHE)
def direct_conv(xp, wk, y, xoff, woff, L, zero, N, C, CO, G, Dp, Hp, Wp, OD, OH, OW,
                sd, sh, sw, y_cf, PB, QB):
    """y = conv(xp, wk): xp zero-padded channels_last, wk packed (C_out, taps, C_in/G).

    Output in channels_last, or channels_first when y_cf. Parallel over (pixel block, group,
    output-channel block) tasks; PB pixels x QB channels per task keep the weights in cache.
    """
    cig = C // G
    cog = CO // G
    kred = wk.shape[0] // CO
    osp = OD * OH * OW
    npix = N * osp
    ost = osp if y_cf else 1
    npb = (npix + PB - 1) // PB
    nqb = (cog + QB - 1) // QB
    for t in prange(npb * G * nqb):
        qb = t % nqb
        g = (t // nqb) % G
        pb = t // (nqb * G)
        q_lo = pb * PB
        q_hi = min(npix, q_lo + PB)
        co_lo = g * cog + qb * QB
        co_hi = min(g * cog + cog, co_lo + QB)
        goff = g * cig
        for q0 in range(q_lo, q_hi, 4):
            b0, o0 = _pixel(q0, q_hi, osp, OH, OW, Dp, Hp, Wp, C, sd, sh, sw, goff, CO, y_cf)
            b1, o1 = _pixel(q0 + 1, q_hi, osp, OH, OW, Dp, Hp, Wp, C, sd, sh, sw, goff, CO, y_cf)
            b2, o2 = _pixel(q0 + 2, q_hi, osp, OH, OW, Dp, Hp, Wp, C, sd, sh, sw, goff, CO, y_cf)
            b3, o3 = _pixel(q0 + 3, q_hi, osp, OH, OW, Dp, Hp, Wp, C, sd, sh, sw, goff, CO, y_cf)
            co = co_lo
            while co + 4 <= co_hi:
                _mk_p4q4(xp, wk, y, b0, b1, b2, b3,
                         o0 + co * ost if o0 >= 0 else -1, o1 + co * ost if o1 >= 0 else -1,
                         o2 + co * ost if o2 >= 0 else -1, o3 + co * ost if o3 >= 0 else -1,
                         co, kred, ost, xoff, woff, L, zero)
                co += 4
            while co < co_hi:
                _mk_p4q1(xp, wk, y, b0, b1, b2, b3,
                         o0 + co * ost if o0 >= 0 else -1, o1 + co * ost if o1 >= 0 else -1,
                         o2 + co * ost if o2 >= 0 else -1, o3 + co * ost if o3 >= 0 else -1,
                         co, kred, ost, xoff, woff, L, zero)
                co += 1


# ---- depthwise ---------------------------------------------------------------------------------
@njit(inline="always")
def _kw_range(iw0, dw, W, KW):
    """Taps kw with 0 <= iw0 + kw*dw < W, as [lo, hi] (empty when lo > hi)."""
    lo = 0
    if iw0 < 0:
        lo = (-iw0 + dw - 1) // dw
    hi = KW - 1
    if iw0 + hi * dw > W - 1:
        hi = (W - 1 - iw0) // dw if W - 1 - iw0 >= 0 else -1
    return lo, hi


@njit(fastmath=FM, cache=CACHE)
def _dw_pixel_cl(x, wk, yv, n, od, oh, iw0, C, D, H, W, KD, KH, KW, sd, sh, pd, ph, dd, dh, dw):
    """One output pixel (all channels) of a depthwise convolution, any kernel, border-safe."""
    kwlo, kwhi = _kw_range(iw0, dw, W, KW)
    first = True
    for kd in range(KD):
        id_ = od * sd - pd + kd * dd
        if id_ < 0 or id_ >= D:
            continue
        for kh in range(KH):
            ih = oh * sh - ph + kh * dh
            if ih < 0 or ih >= H:
                continue
            xrow = ((n * D + id_) * H + ih) * W
            wrow = (kd * KH + kh) * KW
            for kw in range(kwlo, kwhi + 1):
                xs = x[(xrow + iw0 + kw * dw) * C: (xrow + iw0 + kw * dw + 1) * C]
                ws = wk[(wrow + kw) * C: (wrow + kw + 1) * C]
                if first:
                    for c in range(C):
                        yv[c] = xs[c] * ws[c]
                    first = False
                else:
                    for c in range(C):
                        yv[c] += xs[c] * ws[c]
    if first:
        for c in range(C):
            yv[c] = 0


@njit(parallel=True, fastmath=FM, cache=CACHE)
def depthwise_cl(x, wk, y, N, C, D, H, W, OD, OH, OW, KD, KH, KW,
                 sd, sh, sw, pd, ph, pw, dd, dh, dw):
    """Depthwise convolution, channels_last; wk packed (KD, KH, KW, C). Vectorised over C.

    Interior pixels of a 2-D 3x3 kernel take all nine taps in one pass with one store, four
    neighbouring pixels at a time when they share input columns (stride == dilation).
    """
    w0 = wk[0: C]
    w1 = wk[C: 2 * C]
    w2 = wk[2 * C: 3 * C]
    w3 = wk[3 * C: 4 * C]
    w4 = wk[4 * C: 5 * C]
    w5 = wk[5 * C: 6 * C]
    w6 = wk[6 * C: 7 * C]
    w7 = wk[7 * C: 8 * C]
    w8 = wk[8 * C: 9 * C]
    for r in prange(N * OD * OH):
        n = r // (OD * OH)
        od = (r // OH) % OD
        oh = r % OH
        id_ = od * sd - pd
        ih0 = oh * sh - ph
        rows_ok = (KD == 1 and KH == 3 and KW == 3 and id_ >= 0 and id_ < D and ih0 >= 0
                   and ih0 + 2 * dh < H)
        rbase = (n * D + id_) * H + ih0
        rs = dh * W
        ow = 0
        while ow < OW:
            iw0 = ow * sw - pw
            yo = (r * OW + ow) * C
            if rows_ok and iw0 >= 0 and iw0 + 2 * dw < W:
                b = (rbase * W + iw0) * C
                x0 = x[b: b + C]
                x1 = x[b + dw * C: b + (dw + 1) * C]
                x2 = x[b + 2 * dw * C: b + (2 * dw + 1) * C]
                b3 = b + rs * C
                x3 = x[b3: b3 + C]
                x4 = x[b3 + dw * C: b3 + (dw + 1) * C]
                x5 = x[b3 + 2 * dw * C: b3 + (2 * dw + 1) * C]
                b6 = b + 2 * rs * C
                x6 = x[b6: b6 + C]
                x7 = x[b6 + dw * C: b6 + (dw + 1) * C]
                x8 = x[b6 + 2 * dw * C: b6 + (2 * dw + 1) * C]
                if sw == dw and ow + 3 < OW and iw0 + 5 * dw < W:
                    # four pixels in a row: they share input columns (6 per input row, not 12)
                    xa = x[b + 3 * dw * C: b + (3 * dw + 1) * C]
                    xb = x[b + 4 * dw * C: b + (4 * dw + 1) * C]
                    xc = x[b + 5 * dw * C: b + (5 * dw + 1) * C]
                    xd = x[b3 + 3 * dw * C: b3 + (3 * dw + 1) * C]
                    xe = x[b3 + 4 * dw * C: b3 + (4 * dw + 1) * C]
                    xf = x[b3 + 5 * dw * C: b3 + (5 * dw + 1) * C]
                    xg = x[b6 + 3 * dw * C: b6 + (3 * dw + 1) * C]
                    xh = x[b6 + 4 * dw * C: b6 + (4 * dw + 1) * C]
                    xi = x[b6 + 5 * dw * C: b6 + (5 * dw + 1) * C]
                    y0 = y[yo: yo + C]
                    y1 = y[yo + C: yo + 2 * C]
                    y2 = y[yo + 2 * C: yo + 3 * C]
                    y3 = y[yo + 3 * C: yo + 4 * C]
                    for c in range(C):
                        v0 = w0[c]; v1 = w1[c]; v2 = w2[c]
                        v3 = w3[c]; v4 = w4[c]; v5 = w5[c]
                        v6 = w6[c]; v7 = w7[c]; v8 = w8[c]
                        p0 = x0[c]; p1 = x1[c]; p2 = x2[c]; p3 = xa[c]; p4 = xb[c]; p5 = xc[c]
                        q0 = x3[c]; q1 = x4[c]; q2 = x5[c]; q3 = xd[c]; q4 = xe[c]; q5 = xf[c]
                        r0 = x6[c]; r1 = x7[c]; r2 = x8[c]; r3 = xg[c]; r4 = xh[c]; r5 = xi[c]
                        y0[c] = (((p0 * v0 + p1 * v1) + (p2 * v2 + q0 * v3))
                                 + ((q1 * v4 + q2 * v5) + (r0 * v6 + r1 * v7)) + r2 * v8)
                        y1[c] = (((p1 * v0 + p2 * v1) + (p3 * v2 + q1 * v3))
                                 + ((q2 * v4 + q3 * v5) + (r1 * v6 + r2 * v7)) + r3 * v8)
                        y2[c] = (((p2 * v0 + p3 * v1) + (p4 * v2 + q2 * v3))
                                 + ((q3 * v4 + q4 * v5) + (r2 * v6 + r3 * v7)) + r4 * v8)
                        y3[c] = (((p3 * v0 + p4 * v1) + (p5 * v2 + q3 * v3))
                                 + ((q4 * v4 + q5 * v5) + (r3 * v6 + r4 * v7)) + r5 * v8)
                    ow += 4
                    continue
                yv = y[yo: yo + C]
                for c in range(C):
                    yv[c] = (((x0[c] * w0[c] + x1[c] * w1[c]) + (x2[c] * w2[c] + x3[c] * w3[c]))
                             + ((x4[c] * w4[c] + x5[c] * w5[c]) + (x6[c] * w6[c] + x7[c] * w7[c]))
                             + x8[c] * w8[c])
                ow += 1
                continue
            _dw_pixel_cl(x, wk, y[yo: yo + C], n, od, oh, iw0, C, D, H, W, KD, KH, KW,
                         sd, sh, pd, ph, dd, dh, dw)
            ow += 1


@njit(fastmath=FM, cache=CACHE)
def _dw_row_cf(xr, yv, wk, wb, KW, OW, W, sw, pw, dw, skip_lo, skip_hi):
    """yv[ow] += sum over taps kw of wk[wb+kw] * xr[ow*sw - pw + kw*dw], skipping [skip_lo, skip_hi]."""
    for kw in range(KW):
        wv = wk[wb + kw]
        lo, hi = _kw_range(kw * dw - pw, sw, W, OW)
        if skip_lo > skip_hi:
            for ow in range(lo, hi + 1):
                yv[ow] += wv * xr[ow * sw + kw * dw - pw]
        else:
            for ow in range(lo, min(hi, skip_lo - 1) + 1):
                yv[ow] += wv * xr[ow * sw + kw * dw - pw]
            for ow in range(max(lo, skip_hi + 1), hi + 1):
                yv[ow] += wv * xr[ow * sw + kw * dw - pw]


@njit(inline="always")
def _dw_plane_cf(x, wk, y, sin, sout, pl, fast, Hs, Ws, N, C, D, H, W, OD, OH, OW, KD, KH, KW,
                 sd, sh, sw, pd, ph, pw, dd, dh, dw):
    """One output plane (n, c, od) of depthwise_cf (see there)."""
    nc = pl // OD
    od = pl % OD
    c = nc % C
    xpl = x[nc * D * H * W: (nc + 1) * D * H * W]
    ypl = y[pl * OH * OW: (pl + 1) * OH * OW]
    wb = c * KD * KH * KW
    id0 = od * sd - pd
    if fast and id0 >= 0 and id0 < D:
        # input row ih lands on scratch row ih + ph, column iw on iw + pw
        c_lo = max(0, -pw)
        c_hi = min(W, Ws - pw)
        for ih in range(max(0, -ph), min(H, Hs - ph)):
            src = xpl[(id0 * H + ih) * W + c_lo: (id0 * H + ih) * W + c_hi]
            dst = sin[(ih + ph) * Ws + c_lo + pw: (ih + ph) * Ws + c_hi + pw]
            for i in range(c_hi - c_lo):
                dst[i] = src[i]
        n_out = (OH - 1) * Ws + OW
        rs = dh * Ws
        x0 = sin[0: n_out]; x1 = sin[dw: n_out + dw]; x2 = sin[2 * dw: n_out + 2 * dw]
        x3 = sin[rs: n_out + rs]; x4 = sin[rs + dw: n_out + rs + dw]
        x5 = sin[rs + 2 * dw: n_out + rs + 2 * dw]
        x6 = sin[2 * rs: n_out + 2 * rs]; x7 = sin[2 * rs + dw: n_out + 2 * rs + dw]
        x8 = sin[2 * rs + 2 * dw: n_out + 2 * rs + 2 * dw]
        v0 = wk[wb]; v1 = wk[wb + 1]; v2 = wk[wb + 2]
        v3 = wk[wb + 3]; v4 = wk[wb + 4]; v5 = wk[wb + 5]
        v6 = wk[wb + 6]; v7 = wk[wb + 7]; v8 = wk[wb + 8]
        for i in range(n_out):
            sout[i] = (((v0 * x0[i] + v1 * x1[i]) + (v2 * x2[i] + v3 * x3[i]))
                       + ((v4 * x4[i] + v5 * x5[i]) + (v6 * x6[i] + v7 * x7[i])) + v8 * x8[i])
        for oh in range(OH):
            src = sout[oh * Ws: oh * Ws + OW]
            dst = ypl[oh * OW: (oh + 1) * OW]
            for i in range(OW):
                dst[i] = src[i]
        return
    for oh in range(OH):
        yv = ypl[oh * OW: (oh + 1) * OW]
        for ow in range(OW):
            yv[ow] = 0
        for kd in range(KD):
            id_ = id0 + kd * dd
            if id_ < 0 or id_ >= D:
                continue
            for kh in range(KH):
                ih = oh * sh - ph + kh * dh
                if ih < 0 or ih >= H:
                    continue
                xr = xpl[(id_ * H + ih) * W: (id_ * H + ih + 1) * W]
                _dw_row_cf(xr, yv, wk, wb + (kd * KH + kh) * KW, KW, OW, W, sw, pw, dw, 0, -1)


@njit(parallel=True, fastmath=FM, cache=CACHE)
def depthwise_cf(x, wk, y, N, C, D, H, W, OD, OH, OW, KD, KH, KW,
                 sd, sh, sw, pd, ph, pw, dd, dh, dw):
    """Depthwise convolution, channels_first; wk (C, KD*KH*KW). Tasks of 16 channel planes.

    2-D 3x3 stride-1 planes: the plane is copied into a zero-bordered scratch plane, the
    output is computed as one vectorised pass over the flattened scratch (nine shifted views;
    the output rows share the scratch row stride, so no tap crosses a border), and the valid
    columns are copied out. Other planes go row by row, tap by tap, vectorised along the row.
    """
    fast = sw == 1 and sh == 1 and KD == 1 and KH == 3 and KW == 3
    Hs = OH + 2 * dh
    Ws = OW + 2 * dw
    nplanes = N * C * OD
    chunk = 16
    for ch in prange((nplanes + chunk - 1) // chunk):
        # scratch planes shared by the chunk: borders stay zero, interiors are overwritten
        sin = np.zeros(Hs * Ws if fast else 1, dtype=x.dtype)
        sout = np.empty(OH * Ws if fast else 1, dtype=x.dtype)
        for pl in range(ch * chunk, min(nplanes, ch * chunk + chunk)):
            _dw_plane_cf(x, wk, y, sin, sout, pl, fast, Hs, Ws, N, C, D, H, W, OD, OH, OW, KD, KH, KW,
                         sd, sh, sw, pd, ph, pw, dd, dh, dw)


# ---- Winograd F(m x m, 3 x 3) ------------------------------------------------------------------
@njit(inline="always")
def _px(x, zrow, n, ih, iw, H, W, C):
    if ih < 0 or ih >= H or iw < 0 or iw >= W:
        return zrow
    b = ((n * H + ih) * W + iw) * C
    return x[b: b + C]


@njit(fastmath=FM, cache=CACHE)
def _wino_in_tile(x, V, T, zrow, BT, p, slot, PS, H, W, C, tH, tW, m, ph, pw):
    """V[a, slot, :] = (B^T d_p B)[a] for tile p of x (channels_last, zero outside the image).

    V has PS rows per transformed point a. Two passes (rows, then columns) through T
    (alpha*alpha*C scratch), vectorised over channels. alpha = m + 2 is 4 or 6.
    """
    alpha = m + 2
    n = p // (tH * tW)
    h0 = ((p // tW) % tH) * m - ph
    w0 = (p % tW) * m - pw
    for i in range(alpha):
        ih = h0 + i
        s0 = _px(x, zrow, n, ih, w0, H, W, C)
        s1 = _px(x, zrow, n, ih, w0 + 1, H, W, C)
        s2 = _px(x, zrow, n, ih, w0 + 2, H, W, C)
        s3 = _px(x, zrow, n, ih, w0 + 3, H, W, C)
        if alpha == 4:
            for j in range(4):
                c0 = BT[j, 0]; c1 = BT[j, 1]; c2 = BT[j, 2]; c3 = BT[j, 3]
                t = T[(i * alpha + j) * C: (i * alpha + j + 1) * C]
                for c in range(C):
                    t[c] = (c0 * s0[c] + c1 * s1[c]) + (c2 * s2[c] + c3 * s3[c])
        else:
            s4 = _px(x, zrow, n, ih, w0 + 4, H, W, C)
            s5 = _px(x, zrow, n, ih, w0 + 5, H, W, C)
            for j in range(6):
                c0 = BT[j, 0]; c1 = BT[j, 1]; c2 = BT[j, 2]
                c3 = BT[j, 3]; c4 = BT[j, 4]; c5 = BT[j, 5]
                t = T[(i * alpha + j) * C: (i * alpha + j + 1) * C]
                for c in range(C):
                    t[c] = ((c0 * s0[c] + c1 * s1[c]) + (c2 * s2[c] + c3 * s3[c])
                            + (c4 * s4[c] + c5 * s5[c]))
    for i in range(alpha):
        c0 = BT[i, 0]; c1 = BT[i, 1]; c2 = BT[i, 2]; c3 = BT[i, 3]
        for j in range(alpha):
            v = V[((i * alpha + j) * PS + slot) * C: ((i * alpha + j) * PS + slot + 1) * C]
            t0 = T[j * C: (j + 1) * C]
            t1 = T[(alpha + j) * C: (alpha + j + 1) * C]
            t2 = T[(2 * alpha + j) * C: (2 * alpha + j + 1) * C]
            t3 = T[(3 * alpha + j) * C: (3 * alpha + j + 1) * C]
            if alpha == 4:
                for c in range(C):
                    v[c] = (c0 * t0[c] + c1 * t1[c]) + (c2 * t2[c] + c3 * t3[c])
            else:
                t4 = T[(4 * alpha + j) * C: (4 * alpha + j + 1) * C]
                t5 = T[(5 * alpha + j) * C: (5 * alpha + j + 1) * C]
                c4 = BT[i, 4]; c5 = BT[i, 5]
                for c in range(C):
                    v[c] = ((c0 * t0[c] + c1 * t1[c]) + (c2 * t2[c] + c3 * t3[c])
                            + (c4 * t4[c] + c5 * t5[c]))


@njit(fastmath=FM, cache=CACHE)
def _wino_out_tile(M, y, T, AT, p, slot, PS, OH, OW, K, tH, tW, m, y_cf):
    """Output tile p = A^T M_p A (m x m pixels, cropped at the border) from M[a, slot, :]."""
    alpha = m + 2
    osp = OH * OW
    n = p // (tH * tW)
    oh0 = ((p // tW) % tH) * m
    ow0 = (p % tW) * m
    for i in range(alpha):
        r = i * alpha
        s0 = M[(r * PS + slot) * K: (r * PS + slot + 1) * K]
        s1 = M[((r + 1) * PS + slot) * K: ((r + 1) * PS + slot + 1) * K]
        s2 = M[((r + 2) * PS + slot) * K: ((r + 2) * PS + slot + 1) * K]
        s3 = M[((r + 3) * PS + slot) * K: ((r + 3) * PS + slot + 1) * K]
        if alpha == 4:
            for j in range(m):
                c0 = AT[j, 0]; c1 = AT[j, 1]; c2 = AT[j, 2]; c3 = AT[j, 3]
                t = T[(i * m + j) * K: (i * m + j + 1) * K]
                for k in range(K):
                    t[k] = (c0 * s0[k] + c1 * s1[k]) + (c2 * s2[k] + c3 * s3[k])
        else:
            s4 = M[((r + 4) * PS + slot) * K: ((r + 4) * PS + slot + 1) * K]
            s5 = M[((r + 5) * PS + slot) * K: ((r + 5) * PS + slot + 1) * K]
            for j in range(m):
                c0 = AT[j, 0]; c1 = AT[j, 1]; c2 = AT[j, 2]
                c3 = AT[j, 3]; c4 = AT[j, 4]; c5 = AT[j, 5]
                t = T[(i * m + j) * K: (i * m + j + 1) * K]
                for k in range(K):
                    t[k] = ((c0 * s0[k] + c1 * s1[k]) + (c2 * s2[k] + c3 * s3[k])
                            + (c4 * s4[k] + c5 * s5[k]))
    for i in range(m):
        oh = oh0 + i
        if oh >= OH:
            continue
        c0 = AT[i, 0]; c1 = AT[i, 1]; c2 = AT[i, 2]; c3 = AT[i, 3]
        for j in range(m):
            ow = ow0 + j
            if ow >= OW:
                continue
            t0 = T[j * K: (j + 1) * K]
            t1 = T[(m + j) * K: (m + j + 1) * K]
            t2 = T[(2 * m + j) * K: (2 * m + j + 1) * K]
            t3 = T[(3 * m + j) * K: (3 * m + j + 1) * K]
            if alpha == 4:
                if y_cf:
                    b = n * K * osp + oh * OW + ow
                    for k in range(K):
                        y[b + k * osp] = (c0 * t0[k] + c1 * t1[k]) + (c2 * t2[k] + c3 * t3[k])
                else:
                    b = ((n * OH + oh) * OW + ow) * K
                    yv = y[b: b + K]
                    for k in range(K):
                        yv[k] = (c0 * t0[k] + c1 * t1[k]) + (c2 * t2[k] + c3 * t3[k])
            else:
                t4 = T[(4 * m + j) * K: (4 * m + j + 1) * K]
                t5 = T[(5 * m + j) * K: (5 * m + j + 1) * K]
                c4 = AT[i, 4]; c5 = AT[i, 5]
                if y_cf:
                    b = n * K * osp + oh * OW + ow
                    for k in range(K):
                        y[b + k * osp] = ((c0 * t0[k] + c1 * t1[k]) + (c2 * t2[k] + c3 * t3[k])
                                          + (c4 * t4[k] + c5 * t5[k]))
                else:
                    b = ((n * OH + oh) * OW + ow) * K
                    yv = y[b: b + K]
                    for k in range(K):
                        yv[k] = ((c0 * t0[k] + c1 * t1[k]) + (c2 * t2[k] + c3 * t3[k])
                                 + (c4 * t4[k] + c5 * t5[k]))


@njit(fastmath=FM, cache=CACHE)
def _wino_gemm_block(V, U, M, nt, TB, A, C, K, seg0, zero):
    """M[a, :nt] = V[a, :nt] @ U[a]^T for every a: V (A, TB, C), U (A, K, C), M (A, TB, K)."""
    for a in range(A):
        Ua = U[a * K * C: (a + 1) * K * C]
        for q0 in range(0, nt, 4):
            b0 = (a * TB + q0) * C
            b1 = (a * TB + min(q0 + 1, nt - 1)) * C
            b2 = (a * TB + min(q0 + 2, nt - 1)) * C
            b3 = (a * TB + min(q0 + 3, nt - 1)) * C
            o0 = (a * TB + q0) * K
            o1 = (a * TB + q0 + 1) * K if q0 + 1 < nt else -1
            o2 = (a * TB + q0 + 2) * K if q0 + 2 < nt else -1
            o3 = (a * TB + q0 + 3) * K if q0 + 3 < nt else -1
            k = 0
            while k + 4 <= K:
                _mk_p4q4(V, Ua, M, b0, b1, b2, b3, o0 + k, o1 + k if o1 >= 0 else -1,
                         o2 + k if o2 >= 0 else -1, o3 + k if o3 >= 0 else -1,
                         k, C, 1, seg0, seg0, C, zero)
                k += 4
            while k < K:
                _mk_p4q1(V, Ua, M, b0, b1, b2, b3, o0 + k, o1 + k if o1 >= 0 else -1,
                         o2 + k if o2 >= 0 else -1, o3 + k if o3 >= 0 else -1,
                         k, C, 1, seg0, seg0, C, zero)
                k += 1


@njit(parallel=True, fastmath=FM, cache=CACHE)
def winograd_conv(x, U, y, zrow, BT, AT, seg0, zero, N, H, W, C, K, OH, OW, tH, tW, m, ph, pw,
                  y_cf, TB):
    """Winograd F(m x m, 3x3) convolution of x (channels_last) with transformed weights U.

    U is (alpha^2, K, C). One parallel task per block of TB tiles does everything for its
    tiles while they stay in cache: input transform into V (alpha^2, TB, C), the alpha^2 small
    GEMMs M[a] = V[a] @ U[a]^T with the direct kernel's register-blocked dot products, and the
    output transform into y (channels_last, or channels_first when y_cf).
    """
    alpha = m + 2
    A = alpha * alpha
    P = N * tH * tW
    for blk in prange((P + TB - 1) // TB):
        V = np.empty(A * TB * C, dtype=zrow.dtype)
        M = np.empty(A * TB * K, dtype=zrow.dtype)
        T = np.empty(max(A * C, alpha * m * K), dtype=zrow.dtype)
        p0 = blk * TB
        nt = min(P, p0 + TB) - p0
        for t in range(nt):
            _wino_in_tile(x, V, T, zrow, BT, p0 + t, t, TB, H, W, C, tH, tW, m, ph, pw)
        _wino_gemm_block(V, U, M, nt, TB, A, C, K, seg0, zero)
        for t in range(nt):
            _wino_out_tile(M, y, T, AT, p0 + t, t, TB, OH, OW, K, tH, tW, m, y_cf)


@njit(parallel=True, fastmath=FM, cache=CACHE)
def wino_input(x, V, zrow, BT, N, H, W, C, tH, tW, m, ph, pw):
    """V (alpha^2, P, C) for all P tiles of x (for the BLAS variant's separate GEMM stage)."""
    alpha = m + 2
    P = N * tH * tW
    for blk in prange((P + 7) // 8):
        T = np.empty(alpha * alpha * C, dtype=zrow.dtype)
        for p in range(blk * 8, min(P, blk * 8 + 8)):
            _wino_in_tile(x, V, T, zrow, BT, p, p, P, H, W, C, tH, tW, m, ph, pw)


@njit(parallel=True, fastmath=FM, cache=CACHE)
def wino_output(M, y, AT, N, OH, OW, K, tH, tW, m, y_cf):
    """y from M (alpha^2, P, K) for all P tiles (for the BLAS variant's separate GEMM stage)."""
    alpha = m + 2
    P = N * tH * tW
    for blk in prange((P + 7) // 8):
        T = np.empty(alpha * m * K, dtype=M.dtype)
        for p in range(blk * 8, min(P, blk * 8 + 8)):
            _wino_out_tile(M, y, T, AT, p, p, P, OH, OW, K, tH, tW, m, y_cf)


@njit(parallel=True, fastmath=FM, cache=CACHE)
def wino_weights(w, U, G):
    """U[a, k, c] = (G w[k, c] G^T)[a] for 3x3 weights w (K, C, 3, 3); U is (alpha^2, K, C)."""
    K = w.shape[0]
    C = w.shape[1]
    alpha = G.shape[0]
    for k in prange(K):
        t = np.empty((alpha, 3), dtype=U.dtype)
        for c in range(C):
            for a in range(alpha):
                for j in range(3):
                    t[a, j] = G[a, 0] * w[k, c, 0, j] + G[a, 1] * w[k, c, 1, j] + G[a, 2] * w[k, c, 2, j]
            for a in range(alpha):
                for b in range(alpha):
                    U[a * alpha + b, k, c] = G[b, 0] * t[a, 0] + G[b, 1] * t[a, 1] + G[b, 2] * t[a, 2]
