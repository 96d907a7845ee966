"""Torch tensors and CUDA devices, shared by the backends that use them (torch, triton) and
those that accept torch tensors (the NumPy family's convbench.conv() hook).

Every function imports torch when called, never at module import.
"""
from __future__ import annotations

import ctypes
import functools
import warnings
from typing import Any, Optional

import numpy as np

from convbench.registry import DeviceTimer, Prepared, Support
from convbench.spec import ConvSpec

#: convbench.conv() input kinds of torch tensors, by the tensor's device type
TORCH_KINDS = {"cpu": "torch-cpu", "cuda": "torch-cuda"}


def torch_module() -> Any:
    import torch

    return torch


def torch_dtype(name: str) -> Any:
    """The torch dtype of a spec dtype name."""
    torch = torch_module()
    return {"float64": torch.float64, "float32": torch.float32,
            "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def torch_kind(a: Any) -> Optional[str]:
    """"torch-cpu" / "torch-cuda" for a torch tensor on that device, else None; never imports
    torch (an object can be a tensor only once torch is imported)."""
    if type(a).__module__.partition(".")[0] != "torch" or not hasattr(a, "device"):
        return None
    return TORCH_KINDS.get(getattr(a.device, "type", None))


def numpy_as_tensor(a: np.ndarray) -> Any:
    """A CPU tensor sharing ``a``'s memory (bfloat16 through an int16 view): no copy. A
    read-only array (a broadcast, a read-only buffer) gives a tensor that must only be read:
    torch's warning about it is silenced, convbench never writes to its inputs."""
    torch = torch_module()
    if not a.flags.writeable:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return _from_numpy(torch, a)
    return _from_numpy(torch, a)


def _from_numpy(torch: Any, a: np.ndarray) -> Any:
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def tensor_as_numpy(t: Any) -> np.ndarray:
    """A numpy array sharing a CPU tensor's memory (bfloat16 as ml_dtypes.bfloat16): no copy."""
    torch = torch_module()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def to_torch(a: np.ndarray, device: str) -> Any:
    """A contiguous tensor holding a copy of ``a`` (bfloat16 via its bit pattern) on ``device``."""
    t = numpy_as_tensor(np.ascontiguousarray(a))
    return t.to(device) if device != "cpu" else t.clone()


def to_numpy(t: Any) -> np.ndarray:
    """A numpy copy of a tensor (bfloat16 as ml_dtypes.bfloat16, bit for bit)."""
    t = t.detach().contiguous()
    if t.device.type != "cpu":
        t = t.cpu()
    return tensor_as_numpy(t).copy()


@functools.lru_cache(maxsize=1)
def cuda_driver_devices() -> int:
    """How many CUDA devices the NVIDIA driver reports (0 without a driver); imports nothing."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    except (OSError, AttributeError):
        return 0


def cuda_device_support() -> Support:
    """Whether torch reaches a CUDA device here."""
    torch = torch_module()
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else \
            "torch.cuda.is_available() is False"
        return Support.no(f"no CUDA device ({why})")
    return Support.yes()


def cuda_support(spec: ConvSpec) -> Support:
    """Whether torch can run ``spec`` on a CUDA device here (a device, and bfloat16 support)."""
    dev = cuda_device_support()
    if not dev:
        return dev
    if spec.dtype == "bfloat16" and not torch_module().cuda.is_bf16_supported():
        return Support.no("this GPU does not support bfloat16 (needs compute capability >= 8.0)")
    return Support.yes()


def synchronize_kind(kind: str) -> None:
    """Wait for queued work on the device of torch input kind ``kind`` (CUDA only)."""
    if kind == TORCH_KINDS["cuda"]:
        torch_module().cuda.synchronize()


class CudaEventTimer(DeviceTimer):
    """Times work on ``device``'s current stream with a pair of CUDA events."""

    def __init__(self, device: Any) -> None:
        torch = torch_module()
        self._start = torch.cuda.Event(enable_timing=True)
        self._stop = torch.cuda.Event(enable_timing=True)
        self._stream = torch.cuda.current_stream(device)

    def start(self) -> None:
        self._start.record(self._stream)

    def stop(self) -> float:
        self._stop.record(self._stream)
        self._stop.synchronize()
        return self._start.elapsed_time(self._stop) / 1e3  # ms -> s


class TorchOutputPrepared(Prepared):
    """What every torch-run candidate shares: synchronising its device, CUDA-event timing and
    the output as numpy. Subclasses set ``_tdevice`` (a torch.device) and ``_y`` in run()."""

    _tdevice: Any = None
    _y: Any = None

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch_module().cuda.synchronize(self._tdevice)

    def device_timer(self) -> Optional[DeviceTimer]:
        return CudaEventTimer(self._tdevice) if self.device == "cuda" else None

    def result(self) -> np.ndarray:
        if self._y is None:
            raise RuntimeError("result() called before run()")
        self.synchronize()
        return to_numpy(self._y)
