"""torch.compile candidates of the torch backend: inductor compiles conv(x, w) for one shape.

* ``compile`` -- ``torch.compile(mode=None)`` (the default mode);
* ``compile-max-autotune`` -- ``torch.compile(mode="max-autotune")``: inductor benchmarks its
  choices while compiling (on the CPU it has no convolution template of its own, so the
  convolution stays an extern call into aten/oneDNN and the difference is in what surrounds it).

Both compile in ``prepare()`` with ``dynamic=False`` and ``fullgraph=True``; the first call
(which compiles) happens there too and is never timed: ``info["compile_s"]`` records it. The
weights are an argument of the compiled function, not a captured constant, so nothing is
precomputed from them (no freezing, no weight prepacking).

Each Prepared compiles its own copy of the function's code object: dynamo keeps its compiled
entries on the code object and silently falls back to eager past ``recompile_limit`` entries,
which a sweep of many shapes in one worker would reach with a shared one.

Inductor's caches stay where torch puts them (``TORCHINDUCTOR_CACHE_DIR``, by default a
per-user directory under the temporary directory): persistent, so a later prepare of the same
shape is cheaper; ``info["compile_cache_hit"]`` says whether its graph came from that cache.
"""
from __future__ import annotations

import os
import shutil
import time
import types
from typing import Any, Callable, Optional

import numpy as np

from convbench.registry import Support
from convbench.spec import ConvSpec

from ._torch_interop import TorchOutputPrepared, to_torch
from ._torch_interop import torch_module as _torch

#: algorithm -> torch.compile mode (None: the default mode)
COMPILE_MODES: dict[str, Optional[str]] = {"compile": None, "compile-max-autotune": "max-autotune"}

COMPILE_DESCRIPTIONS = {
    "compile": "torch.compile (default mode, inductor) of conv(x, w) for this shape; compiled in prepare",
    "compile-max-autotune": "torch.compile(mode='max-autotune') of conv(x, w) for this shape; "
                            "compiled (and autotuned) in prepare",
}


def cxx_compiler() -> Optional[str]:
    """The path of the C++ compiler inductor would use on the CPU ($CXX, else g++), or None."""
    return shutil.which(os.environ.get("CXX") or "g++")


def c_compiler() -> Optional[str]:
    """The path of the C compiler triton builds its launchers with ($CC, else gcc/cc), or None."""
    for name in (os.environ.get("CC"), "gcc", "cc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def compile_support(device: str) -> Support:
    """Whether torch.compile can build code for ``device`` here (a compiler is installed)."""
    if device == "cuda":
        if c_compiler() is None:
            return Support.no("torch.compile on CUDA needs a C compiler (triton): install gcc")
        return Support.yes()
    if cxx_compiler() is None:
        return Support.no("torch.compile needs a C++ compiler (inductor): install g++")
    return Support.yes()


def _fresh_copy(fn: Callable) -> Callable:
    """``fn`` with a code object of its own, so that dynamo's cache for it is its own."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__,
                              fn.__closure__)


def _with_layout(conv: Callable[[Any, Any], Any], permute: Optional[tuple[int, ...]]) -> Callable:
    def compiled_conv(x: Any, w: Any) -> Any:
        y = conv(x, w)
        return y if permute is None else y.permute(*permute)
    return _fresh_copy(compiled_conv)


class TorchCompiledPrepared(TorchOutputPrepared):
    """One torch.compile'd convolution with its inputs in place, compiled for their shapes.

    ``conv(x, w)`` takes logical (N, C, *spatial) tensors and does the padding and cropping;
    the input is the user's layout seen as a logical view (no copy) and the output is returned
    in the user's layout, so any layout conversion is the compiler's to fuse or to do.
    """

    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str,
                 threads: Optional[int], conv: Callable[[Any, Any], Any]) -> None:
        torch = _torch()
        from torch._dynamo.utils import counters

        self.spec = spec
        self.device = device
        d = spec.dims
        tdevice = "cuda" if device == "cuda" else "cpu"
        xt = to_torch(x, tdevice)
        channels_last = spec.layout == "channels_last"
        if channels_last:  # (N, *sp, C) -> logical (N, C, *sp) view
            xt = xt.permute(0, d + 1, *range(1, d + 1))
        self._x, self._w = xt, to_torch(w, tdevice)
        self._tdevice = xt.device
        self._y: Any = None
        mode = COMPILE_MODES[algorithm]
        fn = _with_layout(conv, (0, *range(2, d + 2), 1) if channels_last else None)
        self._fn = torch.compile(fn, mode=mode, dynamic=False, fullgraph=True)
        hits = counters["inductor"]["fxgraph_cache_hit"]
        t0 = time.perf_counter()
        with self._ieee_float32():
            self._y = self._fn(self._x, self._w)  # compiles
        self.synchronize()
        compile_s = time.perf_counter() - t0
        self._y = None
        self.info: dict[str, Any] = {
            "torch": torch.__version__,
            "algorithm": algorithm,
            "compile_mode": mode or "default",
            "compile_s": compile_s,
            "compile_cache_hit": counters["inductor"]["fxgraph_cache_hit"] > hits,
            "inductor_cache_dir": _inductor_cache_dir(),
            "compiler": cxx_compiler() if device == "cpu" else c_compiler(),
            "dynamic": False,
            "weights_precomputed": False,
            "memory_format": spec.layout,
            "threads": torch.get_num_threads(),
            "threads_requested": threads,
        }

    def _ieee_float32(self) -> Any:
        """On CUDA: float32 convolutions stay IEEE float32 (no TF32), as for the cudnn candidate."""
        import contextlib

        if self.device != "cuda":
            return contextlib.nullcontext()
        return _torch().backends.cudnn.flags(enabled=True, benchmark=False, allow_tf32=False)

    def run(self) -> None:
        if self.device == "cuda":
            with self._ieee_float32():
                self._y = self._fn(self._x, self._w)
        else:
            self._y = self._fn(self._x, self._w)

    def close(self) -> None:
        self._x = self._w = self._y = None
        self._fn = None  # drops the compiled code with the function's own code object


def _inductor_cache_dir() -> Optional[str]:
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        return cache_dir()
    except Exception:  # a private helper: its absence must not break a benchmark
        return os.environ.get("TORCHINDUCTOR_CACHE_DIR")
