"""The torch backend's int8 GEMM roof: the fastest int8 matrix product torch offers on the CPU.

Two engines, the better one counts: ``torch._int_mm`` (int8 x int8 -> int32, oneDNN on x86)
and the quantized linear layer of the default quantized engine (``torch.ops.quantized.linear``
with weights packed once: uint8 x int8 -> int32, requantised to uint8; fbgemm/oneDNN).
Either may be missing from a build; a failing one is left out.
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Optional


def int8_gemm_rate(torch: Any, budget_s: float) -> Optional[float]:
    """GOP/s (2 per multiply-add) of the faster of the two engines, or None if neither runs."""
    rates = []
    for make in (_int_mm, _quantized_linear):
        try:
            rates.append(_best_rate(lambda n: make(torch, n), budget_s))
        except Exception:  # noqa: BLE001 - an engine this build lacks is left out
            continue
    return max(rates) if rates else None


def _best_rate(make: Callable[[int], Callable[[], None]], budget_s: float) -> float:
    """Best of several n x n x n products after a warm-up, n (256..2048, a multiple of 64)
    sized from a 256^3 probe so that the calls fit the budget."""
    def seconds(once: Callable[[], None]) -> float:
        t0 = time.perf_counter()
        once()
        return time.perf_counter() - t0

    probe = make(256)
    probe()
    rate = 2.0 * 256 ** 3 / max(seconds(probe), 1e-9)
    n = int(min(2048, max(256, (rate * budget_s / 16) ** (1 / 3)))) // 64 * 64
    once = make(n)
    once()
    best, deadline = float("inf"), time.perf_counter() + budget_s
    for i in range(20):
        best = min(best, seconds(once))
        if i >= 2 and time.perf_counter() > deadline:
            break
    return 2.0 * n ** 3 / best / 1e9


def _int_mm(torch: Any, n: int) -> Callable[[], None]:
    a = torch.randint(-127, 128, (n, n), dtype=torch.int8)
    b = torch.randint(-127, 128, (n, n), dtype=torch.int8)
    return lambda: torch._int_mm(a, b)


def _quantized_linear(torch: Any, n: int) -> Callable[[], None]:
    with warnings.catch_warnings():  # quantized tensors are deprecated in recent torch
        warnings.simplefilter("ignore")
        x = torch.quantize_per_tensor(torch.randn(n, n), 0.05, 128, torch.quint8)
        w = torch.quantize_per_tensor(torch.randn(n, n), 0.05, 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(w, None)
    scale = float(0.05 * 0.05 * n ** 0.5)
    return lambda: torch.ops.quantized.linear(x, packed, scale, 128)
