"""How much memory a candidate needs, how much this machine has, and the refusal when it will
not fit.

Each backend estimates its peak memory per candidate (``Backend.memory_estimate``) as named
parts: the caller's arrays, the framework's copies of them, workspaces (im2col columns), FFT
buffers, the output. The estimates are deliberately on the high side; ``supports()`` refuses a
candidate whose estimate exceeds ``FIT_FRACTION`` of the memory available on the device, and
says both numbers in its reason. Available memory on the CPU is the smaller of the kernel's
MemAvailable and what the process's cgroup still allows (``memory.max`` / v1
``memory.limit_in_bytes`` minus current usage); it is re-read at most every ``REREAD_S``.
"""
from __future__ import annotations

import math
import time
from typing import Optional

from .spec import ConvSpec

GiB = 2**30
#: a candidate is refused when its estimate exceeds this fraction of the available memory
FIT_FRACTION = 0.9
#: seconds for which one reading of the available memory is reused
REREAD_S = 1.0
_UNLIMITED = 2**60  # cgroup "no limit" values are near 2**63


class MemoryEstimate:
    """A candidate's estimated peak memory in bytes, by part (e.g. "input", "FFT buffers")."""

    __slots__ = ("parts",)

    def __init__(self, parts: Optional[dict] = None, **named: int) -> None:
        merged = {**(parts or {}), **named}
        self.parts = {k: int(v) for k, v in merged.items() if v}

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def __add__(self, other: "MemoryEstimate") -> "MemoryEstimate":
        out = dict(self.parts)
        for k, v in other.parts.items():
            out[k] = out.get(k, 0) + v
        return MemoryEstimate(out)

    def __str__(self) -> str:
        parts = " + ".join(f"{k} {fmt_bytes(v)}" for k, v in
                           sorted(self.parts.items(), key=lambda kv: -kv[1]))
        return f"about {fmt_bytes(self.total)}" + (f" ({parts})" if len(self.parts) > 1 else "")

    def __repr__(self) -> str:
        return f"MemoryEstimate({self.parts!r})"


def fmt_bytes(n: float) -> str:
    """Bytes as "26.3 GiB", "512 MiB", "12 KiB"."""
    for unit, size in (("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}" if unit == "GiB" else f"{n / size:.0f} {unit}"
    return f"{int(n)} B"


def io_parts(spec: ConvSpec, itemsize: Optional[int] = None, copies: int = 1) -> dict[str, int]:
    """``copies`` of the input, weights and output of ``spec`` (``itemsize``: default the
    spec's), as estimate parts named "input", "weights", "output"."""
    item = itemsize or spec.itemsize
    return {"input": copies * item * math.prod(spec.input_shape),
            "weights": copies * item * math.prod(spec.weight_shape),
            "output": copies * item * math.prod(spec.output_shape)}


def columns_bytes(spec: ConvSpec, images: int, itemsize: Optional[int] = None) -> int:
    """An im2col column matrix for ``images`` images of one group: (C_in/g * prod(k)) x
    prod(out) for a direct convolution, (C_out/g * prod(k)) x prod(in) for a transposed one."""
    item = itemsize or spec.itemsize
    kp = math.prod(spec.kernel_size)
    if spec.transposed:
        return images * (spec.c_out // spec.groups) * kp * math.prod(spec.input_size) * item
    return images * (spec.c_in // spec.groups) * kp * math.prod(spec.output_size) * item


def default_estimate(spec: ConvSpec) -> MemoryEstimate:
    """The estimate of a backend that declares none: the caller's arrays, one framework copy of
    each and the returned output (three times the input, weight and output sizes)."""
    return MemoryEstimate(io_parts(spec, copies=3))


# ---- what the machine has ---------------------------------------------------------------
_cached: tuple[float, Optional[int]] = (-math.inf, None)


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None  # "max": no limit


def _meminfo_available() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> Optional[int]:
    """What the cgroup (v2, else v1) still allows this process, or None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit = _read_int(limit_file)
        if limit is None or limit >= _UNLIMITED:
            continue
        usage = _read_int(usage_file) or 0
        return max(0, limit - usage)
    return None


def available_memory() -> Optional[int]:
    """Bytes of host memory this process can still allocate (MemAvailable, capped by the
    cgroup limit), or None where neither can be read."""
    global _cached
    now = time.monotonic()
    if now - _cached[0] < REREAD_S:
        return _cached[1]
    known = [v for v in (_meminfo_available(), _cgroup_headroom()) if v is not None]
    value = min(known) if known else None
    _cached = (now, value)
    return value


def fits(estimate: MemoryEstimate, available: Optional[int]) -> Optional[str]:
    """None if ``estimate`` fits in ``available`` bytes (or either is unknown), else the
    refusal: "needs about 26.3 GiB (FFT buffers 25.1 GiB + input 1.2 GiB), 21.7 GiB available"."""
    if available is None or estimate.total <= FIT_FRACTION * available:
        return None
    return f"needs {estimate}, {fmt_bytes(available)} available"


__all__ = ["MemoryEstimate", "available_memory", "fits", "fmt_bytes", "io_parts", "columns_bytes",
           "default_estimate", "FIT_FRACTION"]
