"""Triton kernels of the ``triton`` backend (imported on first use; imports triton).

Whether the kernels run compiled (CUDA) or in Triton's interpreter (``TRITON_INTERPRET=1``,
numpy on the CPU) is decided when this module is imported, as Triton decides it when
``@triton.jit`` decorates a function: INTERPRET records that decision.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def conv2d_igemm_nhwc(x_ptr, w_ptr, y_ptr,
                      N, H, W, C, OH, OW, CO, G, KH, KW,
                      sh, sw, ph, pw, dh, dw,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Implicit-GEMM 2-D convolution, channels_last (NHWC) activations.

    GEMM view per group g: M = N*OH*OW output pixels, N = C_out/G output channels,
    K = KH*KW*C_in/G, walked tap by tap and BLOCK_K channels at a time; the A tile is gathered
    from the input (zero outside the image: padding), B comes from weights packed as
    (G, KH, KW, C_in/G, C_out/G). Accumulates in float32. Grid: (cdiv(M, BLOCK_M),
    cdiv(C_out/G, BLOCK_N), G). Offsets are int32: tensors must stay below 2**31 elements.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = tl.program_id(2)
    cig = C // G
    cog = CO // G
    M = N * OH * OW
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_ok = rm < M
    n_ok = rn < cog
    n = rm // (OH * OW)
    rem = rm % (OH * OW)
    oh = rem // OW
    ow = rem % OW
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kh in range(KH):
        ih = oh * sh - ph + kh * dh
        h_ok = m_ok & (ih >= 0) & (ih < H)
        for kw in range(KW):
            iw = ow * sw - pw + kw * dw
            pix_ok = h_ok & (iw >= 0) & (iw < W)
            x_base = ((n * H + ih) * W + iw) * C + g * cig
            w_base = ((g * KH + kh) * KW + kw) * cig
            for c0 in range(0, cig, BLOCK_K):
                c = c0 + rk
                c_ok = c < cig
                a = tl.load(x_ptr + x_base[:, None] + c[None, :],
                            mask=pix_ok[:, None] & c_ok[None, :], other=0.0)
                b = tl.load(w_ptr + (w_base + c)[:, None] * cog + rn[None, :],
                            mask=c_ok[:, None] & n_ok[None, :], other=0.0)
                if UPCAST:
                    a = a.to(tl.float32)
                    b = b.to(tl.float32)
                acc = tl.dot(a, b, acc, input_precision=PRECISION)
    y_off = rm[:, None] * CO + (g * cog + rn)[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
