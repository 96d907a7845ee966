"""triton: an implicit-GEMM 2-D convolution kernel written in Triton.

Real runs are on CUDA. On the CPU the kernel runs only in Triton's interpreter
(``TRITON_INTERPRET=1`` set before the kernels are first used): correctness only, never a
performance candidate. Importing this module imports neither torch nor triton.
"""
from __future__ import annotations

import os
import re
from typing import Any, Optional

import numpy as np

from convbench.registry import Backend, Capabilities, DeviceTimer, Prepared, Robustness, Support
from convbench.spec import ConvSpec

from ._torch_interop import (CudaEventTimer, cuda_driver_devices, cuda_support, to_numpy, to_torch,
                             torch_dtype)

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages): M = output pixels, N = output channels
CONFIGS = (
    (64, 64, 32, 4, 3),
    (128, 64, 32, 4, 3),
    (64, 128, 32, 4, 3),
    (128, 128, 32, 8, 3),
    (32, 32, 32, 2, 2),
)
_NAME = re.compile(r"^igemm-m(\d+)n(\d+)k(\d+)w(\d+)s(\d+)(-tf32)?$")


def config_name(cfg: tuple[int, int, int, int, int], tf32: bool = False) -> str:
    """The algorithm name of a tile configuration, e.g. ``igemm-m64n64k32w4s3``."""
    return "igemm-m{}n{}k{}w{}s{}".format(*cfg) + ("-tf32" if tf32 else "")


ALGORITHMS = tuple(config_name(c) for c in CONFIGS) + tuple(config_name(c, True) for c in CONFIGS)

_kernels_module: Any = None


def _kernels() -> Any:
    global _kernels_module
    if _kernels_module is None:
        from . import _triton_kernels

        _kernels_module = _triton_kernels
    return _kernels_module


def interpreter_mode() -> bool:
    """Whether the kernels run (or, once imported, will run) in Triton's interpreter."""
    if _kernels_module is not None:
        return bool(_kernels_module.INTERPRET)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


class TritonBackend(Backend):
    """Implicit-GEMM convolution in Triton, channels_last (NHWC), 2-D.

    float16, bfloat16 and float32 (float32 with full-precision ``ieee`` dots, or with TF32
    tensor-core dots in the ``-tf32`` algorithms, held to the TF32 error bound); float32
    accumulation. Stride, asymmetric padding, dilation and groups are supported. Each
    algorithm is one tile configuration, named after it: ``igemm-m{BLOCK_M}n{BLOCK_N}k{BLOCK_K}
    w{num_warps}s{num_stages}``. Transposed, 1-D and 3-D convolutions, channels_first and
    float64 are refused.

    Device ``cuda``: compiled kernels, timed with CUDA events. Device ``cpu``: only when
    ``TRITON_INTERPRET=1`` is set before the kernels are first used; Triton's interpreter then
    runs them with numpy, for correctness only (slow: not a performance candidate). There,
    bfloat16 operands are converted to float32 before ``tl.dot`` because the interpreter's
    bfloat16 dot is wrong (triton 3.9.0: error ~1e11 on a 50x70x40 product); bfloat16 x
    bfloat16 products are exact in float32, so this computes what the GPU's bfloat16 dot
    computes, up to summation order.
    """

    name = "triton"
    family = "triton"
    description = "Triton implicit-GEMM conv2d, NHWC, fp16/bf16/fp32(+TF32); cpu only via the interpreter"
    install_hint = "pip install convbench[triton]"
    capabilities = Capabilities(dims=frozenset({2}), devices=frozenset({"cpu", "cuda"}), transposed=False)
    robustness = Robustness.JIT
    #: the kernels' tensors are torch tensors: prepare() imports both
    framework_modules = ("triton", "torch")
    version_distributions = {"triton": ("triton", "pytorch-triton", "triton-nightly")}
    #: untuned fallback order per device (lower first): the cpu interpreter is a last resort
    _RANKS = {"cuda": 1.0, "cpu": 8.0}

    def heuristic_rank(self, spec: ConvSpec, device: str) -> float:
        return self._RANKS.get(device, super().heuristic_rank(spec, device))

    def device_support(self, device: str) -> Support:
        if device == "cpu" and not interpreter_mode():
            return Support.no("cpu runs only in Triton's interpreter: set TRITON_INTERPRET=1 before "
                              "the first use (correctness only, not a performance candidate)")
        if device == "cuda" and interpreter_mode():
            return Support.no("the kernels were loaded in Triton's interpreter mode (TRITON_INTERPRET=1): "
                              "no compiled CUDA kernels in this process")
        if device == "cuda" and not cuda_driver_devices():
            return Support.no("no CUDA GPU (triton compiles for GPUs)")
        return super().device_support(device)

    def _check_available(self) -> Support:
        # Found, not imported: Triton's LLVM aborts the process when TensorFlow was imported
        # first (LLVM "inconsistency in registered CommandLine options"), so availability must
        # not import it; prepare() does, in the triton family's own worker during sweeps.
        import importlib.util

        for mod, why in (("torch", "triton's tensors are torch tensors"), ("triton", "")):
            if importlib.util.find_spec(mod) is None:
                return Support.no(f"{mod} is not installed" + (f" ({why})" if why else ""))
        return Support.yes()

    def versions(self) -> dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version

        out = {}
        for dist in ("triton", "torch"):
            try:
                out[dist] = version(dist)
            except PackageNotFoundError:
                pass
        return out

    def algorithms(self, device: str = "cpu") -> list[str]:
        if device == "cuda" or (device == "cpu" and interpreter_mode()):
            return list(ALGORITHMS)
        return []

    def _supports(self, spec: ConvSpec, device: str, algorithm: str) -> Support:
        if spec.layout != "channels_last":
            return Support.no("channels_first not implemented: the implicit-GEMM kernel reads "
                              "channels_last (NHWC) activations")
        if spec.dtype not in ("float32", "float16", "bfloat16"):
            return Support.no(f"dtype {spec.dtype} not implemented (float16, bfloat16, float32 only)")
        if algorithm.endswith("-tf32") and spec.dtype != "float32":
            return Support.no(f"TF32 applies to float32 only (spec dtype {spec.dtype}); use "
                              f"{algorithm[:-5]}")
        avail = self.available()
        if not avail:
            return avail
        if device == "cpu" or interpreter_mode():
            return self.device_support(device)
        import torch

        sup = cuda_support(spec)
        if not sup:
            return sup
        if algorithm.endswith("-tf32") and torch.cuda.get_device_capability()[0] < 8:
            return Support.no("TF32 tensor cores need compute capability >= 8.0")
        return Support.yes()

    def tolerance(self, spec: ConvSpec, device: str, algorithm: str) -> float:
        from convbench.reference import tolerance_for

        return tolerance_for(spec, "tf32" if algorithm.endswith("-tf32") else None)

    def _prepare(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str) -> Prepared:
        return _TritonPrepared(spec, x, w, algorithm, device)


class _TritonPrepared(Prepared):
    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str) -> None:
        import torch
        import triton

        self._torch = torch
        self.spec = spec
        self.device = device
        k = _kernels()
        self.kernel = k.conv2d_igemm_nhwc
        m = _NAME.match(algorithm)
        bm, bn, bk, nw, ns = (int(v) for v in m.groups()[:5])
        tf32 = m.group(6) is not None
        g = spec.groups
        cig, cog = spec.c_in // g, spec.c_out // g
        kh, kw = spec.kernel_size
        tdev = "cuda" if device == "cuda" else "cpu"
        self.x = to_torch(x, tdev)  # (N, H, W, C): spec layout is channels_last
        wp = np.ascontiguousarray(
            np.asarray(w).reshape(g, cog, cig, kh, kw).transpose(0, 3, 4, 2, 1))  # (G, KH, KW, cig, cog)
        self.w = to_torch(wp, tdev)
        self.y = torch.empty(spec.output_shape, dtype=torch_dtype(spec.dtype), device=tdev)
        (ph, _), (pw, _) = spec.padding
        oh, ow = spec.output_size
        h, wdt = spec.input_size
        self.args = (spec.n, h, wdt, spec.c_in, oh, ow, spec.c_out, g, kh, kw,
                     spec.stride[0], spec.stride[1], ph, pw, spec.dilation[0], spec.dilation[1])
        if spec.dtype == "float32":
            precision = "tf32" if tf32 else "ieee"
        else:
            precision = "tf32"  # the default tensor-core path; only float32 operands use it
        upcast = bool(k.INTERPRET and spec.dtype == "bfloat16")
        self.meta = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, PRECISION=precision, UPCAST=upcast)
        self.launch = dict(num_warps=nw, num_stages=ns)
        self.grid = (triton.cdiv(spec.n * oh * ow, bm), triton.cdiv(cog, bn), g)
        self.info = {
            "triton": triton.__version__, "torch": torch.__version__,
            "config": {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "num_warps": nw, "num_stages": ns},
            "dot_precision": precision if spec.dtype == "float32" else spec.dtype,
            "interpreter": bool(k.INTERPRET),
            "grid": list(self.grid),
        }
        if k.INTERPRET:
            self.info["note"] = "Triton interpreter on the CPU: correctness only, not a performance measurement"
            if upcast:
                self.info["bf16_dot"] = "operands upcast to float32 (interpreter's bfloat16 dot is wrong)"
        if device == "cuda":
            self.info["gpu"] = torch.cuda.get_device_name()
        # compile (CUDA) or validate (interpreter) outside the timed region
        self.run()
        self.synchronize()

    def run(self) -> None:
        self.kernel[self.grid](self.x, self.w, self.y, *self.args, **self.meta, **self.launch)

    def synchronize(self) -> None:
        if self.device == "cuda":
            self._torch.cuda.synchronize()

    def device_timer(self) -> Optional[DeviceTimer]:
        if self.device == "cuda":
            return CudaEventTimer(self._torch.device("cuda"))
        return None

    def result(self) -> np.ndarray:
        return to_numpy(self.y)

    def close(self) -> None:
        self.x = self.w = self.y = None
