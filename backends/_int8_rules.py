"""Facts about int8 convolution engines that more than one backend needs (no framework import).

Measured with torch 2.13 and OpenVINO 2026.4 (both run oneDNN) on an x86-64 CPU with AVX-512
VNNI, and by capping the instruction set there (``ONEDNN_MAX_CPU_ISA=AVX512_CORE`` / ``AVX2``).
"""
from __future__ import annotations

import platform
from typing import Optional

from convbench.spec import ConvSpec

#: why int8 kernels of oneDNN (and FBGEMM) are refused on x86-64 CPUs without AVX-512 VNNI
NO_VNNI_REASON = ("x86-64 CPU without AVX-512 VNNI: {engine} sums pairs of uint8 x int8 products in "
                  "saturating int16 (vpmaddubsw) there, so full-range int8 problems come out wrong "
                  "(22-37 LSB off on 39-92% of the outputs, measured on a VNNI CPU with the ISA capped "
                  "to AVX512_CORE / AVX2); the usual remedy, 7-bit activations, is another problem")


def x86_without_vnni() -> bool:
    """An x86-64 CPU without AVX-512 VNNI (from /proc/cpuinfo, no import)."""
    from convbench.environment import cpu_info

    return (platform.machine().lower() in ("x86_64", "amd64")
            and "avx512_vnni" not in cpu_info()["cpu_isa"])


def unread_dim(spec: ConvSpec) -> Optional[int]:
    """A spatial dimension (0-based) of a direct convolution along which no kernel tap of any
    output reads the input (every tap falls in the padding: the output is all zeros), or None.
    oneDNN's int8 convolutions crash or are wrong on these."""
    for dim, (n, k, st, (pb, _), dl, out) in enumerate(zip(spec.input_size, spec.kernel_size, spec.stride,
                                                          spec.padding, spec.dilation, spec.output_size)):
        if not any(pb <= i * st + j * dl < pb + n for i in range(out) for j in range(k)):
            return dim
    return None
