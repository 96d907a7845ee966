"""PyTorch convolutions: oneDNN (mkldnn) and torch's native kernels on the CPU, cuDNN on CUDA.

Candidates on the CPU:

* ``default`` -- ``torch.nn.functional.conv*`` on contiguous (NCHW) tensors with mkldnn enabled:
  torch's own choice, oneDNN for float32/bfloat16 (torch falls back to its native kernels for
  float64/float16 and for some small problems; ``info["conv_backend"]`` says which ran).
* ``channels_last`` -- the same with ``torch.channels_last`` / ``channels_last_3d`` memory format
  (2-D and 3-D convolutions only: torch has no channels-last format for 3-D tensors).
* ``native`` -- mkldnn disabled around the call: torch's own im2col/GEMM ("slow") kernels.
* ``compile``, ``compile-max-autotune`` -- ``torch.compile`` (inductor) of the convolution for
  this shape, compiled in ``prepare()`` (see ``_torch_compile``); refused without a C++ compiler.
* ``int8-x86``, ``int8-fbgemm``, ``int8-onednn``, ``int8-qnnpack`` -- int8 problems only: torch's
  quantized convolution on each quantized engine, weights prepacked in ``prepare()`` (see
  ``_torch_quantized``); the float candidates refuse int8 problems and these refuse float ones.

Candidates on CUDA:

* ``cudnn`` -- cuDNN with ``benchmark=False`` and TF32 disallowed (float32 stays IEEE float32);
* ``cudnn-benchmark`` -- ``torch.backends.cudnn.benchmark=True``; its algorithm search runs in
  ``prepare()``, so it is never timed;
* ``cudnn-tf32`` -- float32 only, TF32 tensor-core math allowed (torch's out-of-the-box setting
  for cuDNN convolutions), held to the TF32 error bound;
* ``cudnn-channels-last`` -- cuDNN on channels-last tensors;
* ``compile``, ``compile-max-autotune`` -- as on the CPU (listed only when a CUDA driver
  reports a device), float32 kept IEEE (no TF32).

The user holds activations in ``spec.layout``: a channels_last spec maps onto torch's
channels-last memory format as a view (no copy). When the candidate's memory format differs
from the spec's layout, ``run()`` converts the input and the output, and ``info`` says so.
Asymmetric padding is part of ``run()``: the symmetric part is passed to torch, the rest is an
explicit ``F.pad`` (direct) or a crop of the output (transposed).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from convbench.environment import cpu_info
from convbench.registry import Backend, Capabilities, Prepared, Robustness, Support
from convbench.memory import MemoryEstimate
from convbench.quant import is_quantized
from convbench.spec import FLOAT_DTYPES, ConvSpec

from ._torch_compile import COMPILE_DESCRIPTIONS, COMPILE_MODES, TorchCompiledPrepared, compile_support
from ._torch_interop import (TORCH_KINDS, TorchOutputPrepared, cuda_device_support, cuda_driver_devices,
                             cuda_support, numpy_as_tensor, synchronize_kind, tensor_as_numpy, to_numpy,
                             to_torch, torch_kind)
from ._torch_interop import torch_module as _torch
from ._torch_quantized import INT8_ALGORITHMS, INT8_DESCRIPTIONS, TorchQuantizedPrepared, quantized_support

CPU_ALGORITHMS = ["default", "channels_last", "native", *COMPILE_MODES, *INT8_ALGORITHMS]
CUDA_ALGORITHMS = ["cudnn", "cudnn-benchmark", "cudnn-tf32", "cudnn-channels-last"]

# algorithm -> (memory format, mkldnn enabled [cpu] / cudnn.benchmark [cuda], allow_tf32)
_CONFIG = {
    "default": ("contiguous", True, False),
    "channels_last": ("channels_last", True, False),
    "native": ("contiguous", False, False),
    "cudnn": ("contiguous", False, False),
    "cudnn-benchmark": ("contiguous", True, False),
    "cudnn-tf32": ("contiguous", False, True),
    "cudnn-channels-last": ("channels_last", False, False),
}

# torch's _ConvBackend enum lacks a name for this member in some builds
_CONV_BACKEND_NAMES_MISSING = {9: "MkldnnTranspose"}

_CPU_ISA_OF_INTEREST = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                        "amx_tile", "amx_bf16", "amx_fp16")


def cpu_isa_flags() -> tuple[str, ...]:
    """The CPU feature flags of interest to low-precision convolution (the fingerprint's)."""
    isa = cpu_info()["cpu_isa"]
    return tuple(f for f in _CPU_ISA_OF_INTEREST if f in isa)


def _backend_name(b: Any) -> str:
    name = str(b).split(".")[-1]
    if "?" in name:
        name = _CONV_BACKEND_NAMES_MISSING.get(int(b), f"ConvBackend({int(b)})")
    return name


class _ConvPlan:
    """Everything about one convolution that does not depend on the algorithm."""

    def __init__(self, spec: ConvSpec) -> None:
        import torch.nn.functional as F

        self.spec = spec
        d = spec.dims
        self.sym = tuple(min(pb, pa) for pb, pa in spec.padding)
        extra = [(pb - q, pa - q) for (pb, pa), q in zip(spec.padding, self.sym)]
        self.kwargs: dict[str, Any] = dict(stride=spec.stride, padding=self.sym,
                                           dilation=spec.dilation, groups=spec.groups)
        self.pad: Optional[tuple[int, ...]] = None
        self.crop: Optional[tuple[slice, ...]] = None
        if spec.transposed:
            self.fn = getattr(F, f"conv_transpose{d}d")
            self.kwargs["output_padding"] = spec.output_padding
            if any(a or b for a, b in extra):
                # torch pads symmetrically; the rest of the asymmetric padding is cropped
                full = [o + a + b for o, (a, b) in zip(spec.output_size, extra)]
                self.crop = (slice(None), slice(None)) + tuple(
                    slice(a, f - b) for (a, b), f in zip(extra, full))
        else:
            self.fn = getattr(F, f"conv{d}d")
            if any(a or b for a, b in extra):
                flat: list[int] = []
                for a, b in reversed(extra):  # F.pad lists the last dimension first
                    flat += [a, b]
                self.pad = tuple(flat)

    def build(self, w: Any) -> Callable[[Any], Any]:
        """conv(x) on logical (N, C, *spatial) tensors, padding and crop included."""
        import torch.nn.functional as F

        fn, kwargs, pad, crop = self.fn, self.kwargs, self.pad, self.crop
        if pad is not None:
            return lambda x: fn(F.pad(x, pad), w, **kwargs)
        if crop is not None:
            return lambda x: fn(x, w, **kwargs)[crop]
        return lambda x: fn(x, w, **kwargs)

    def build2(self) -> Callable[[Any, Any], Any]:
        """conv(x, w), the weights passed per call (what convbench.conv() needs); positional
        arguments, which torch parses faster than keywords."""
        import torch.nn.functional as F

        fn, pad, crop = self.fn, self.pad, self.crop
        k = self.kwargs
        if self.spec.transposed:
            args = (None, k["stride"], k["padding"], k["output_padding"], k["groups"], k["dilation"])
        else:
            args = (None, k["stride"], k["padding"], k["dilation"], k["groups"])
        if pad is not None:
            return lambda x, w: fn(F.pad(x, pad), w, *args)
        if crop is not None:
            return lambda x, w: fn(x, w, *args)[crop]
        return lambda x, w: fn(x, w, *args)


class TorchPrepared(TorchOutputPrepared):
    """One PyTorch convolution with its inputs on the device and its flags fixed."""

    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str,
                 threads: Optional[int]) -> None:
        torch = _torch()
        self.spec = spec
        self.device = device
        self.algorithm = algorithm
        memory_format, flag, allow_tf32 = _CONFIG[algorithm]
        self._flag = flag
        self._allow_tf32 = allow_tf32
        self._tdevice = torch.device("cuda" if device == "cuda" else "cpu")
        self._flags_module = torch.backends.mkldnn if device == "cpu" else torch.backends.cudnn
        d = spec.dims
        channels_last_spec = spec.layout == "channels_last"
        cl_format = {2: torch.channels_last, 3: torch.channels_last_3d}.get(d)

        xt = to_torch(x, str(self._tdevice))
        self._w = to_torch(w, str(self._tdevice))
        if memory_format == "channels_last":
            self._w = self._w.contiguous(memory_format=cl_format)
        if channels_last_spec:  # (N, *sp, C) -> logical (N, C, *sp) view
            xt = xt.permute(0, d + 1, *range(1, d + 1))
        self._x = xt

        # conversions that run() must do because the memory format differs from spec.layout
        to_spatial_last = (0, *range(2, d + 2), 1)
        conversions = ["input", "output"] if (memory_format == "channels_last") != channels_last_spec else []
        if memory_format == "contiguous":
            convert_in = (lambda t: t.contiguous()) if channels_last_spec else None
            convert_out = (lambda t: t.permute(*to_spatial_last).contiguous()) if channels_last_spec else None
        else:
            convert_in = None if channels_last_spec else (lambda t: t.contiguous(memory_format=cl_format))
            convert_out = (lambda t: t.permute(*to_spatial_last)) if channels_last_spec else (lambda t: t.contiguous())
        plan = _ConvPlan(spec)
        conv = plan.build(self._w)
        if convert_in is None and convert_out is None:
            self._call = conv
        elif convert_out is None:
            self._call = lambda t: conv(convert_in(t))
        elif convert_in is None:
            self._call = lambda t: convert_out(conv(t))
        else:
            self._call = lambda t: convert_out(conv(convert_in(t)))
        self._y: Any = None

        conv_input = convert_in(self._x) if convert_in is not None else self._x
        if plan.pad is not None:
            conv_input = torch.nn.functional.pad(conv_input, plan.pad)
        prev = self._set_flags()  # torch picks its kernel from the global flags
        try:
            chosen: Optional[str] = _backend_name(torch._C._select_conv_backend(
                conv_input, self._w, None, list(spec.stride), list(plan.sym), list(spec.dilation),
                spec.transposed, list(spec.output_padding) if spec.transposed else [0] * d,
                spec.groups, None))
        except Exception:  # a private helper: its absence must not break a benchmark
            chosen = None
        finally:
            self._restore_flags(prev)
        self.info: dict[str, Any] = {
            "torch": torch.__version__,
            "algorithm": algorithm,
            "memory_format": memory_format,
            "layout_conversion_in_run": conversions,
            "explicit_pad_in_run": plan.pad is not None,
            "crop_in_run": plan.crop is not None,
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "threads_requested": threads,
            "conv_backend": chosen,
        }
        if device == "cpu":
            self.info.update({
                "mkldnn_enabled": flag,
                "mkldnn_available": torch.backends.mkldnn.is_available(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "cpu_isa": list(cpu_isa_flags()),
                "cpu_native_bf16": any(f in cpu_isa_flags() for f in ("avx512_bf16", "amx_bf16")),
            })
            if spec.dtype == "bfloat16":
                try:  # oneDNN runs bfloat16 without native instructions too (by conversion)
                    self.info["mkldnn_bf16_supported"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
                except Exception:
                    pass
        else:
            props = torch.cuda.get_device_properties(self._tdevice)
            self.info.update({
                "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(),
                "cudnn_benchmark": flag,
                "allow_tf32": allow_tf32,
                "gpu_name": props.name,
                "gpu_cc": f"{props.major}.{props.minor}",
            })
            if algorithm == "cudnn-benchmark":
                # cuDNN's algorithm search happens on the first call for a shape: keep it out of timing
                self.run()
                self.synchronize()

    def _set_flags(self) -> tuple:
        flags = self._flags_module
        if self.device == "cpu":
            prev = (flags.enabled,)
            flags.enabled = self._flag
            return prev
        prev = (flags.enabled, flags.benchmark, flags.allow_tf32)
        flags.enabled = True
        flags.benchmark = self._flag
        flags.allow_tf32 = self._allow_tf32
        return prev

    def _restore_flags(self, prev: tuple) -> None:
        flags = self._flags_module
        if self.device == "cpu":
            flags.enabled = prev[0]
        else:
            flags.enabled, flags.benchmark, flags.allow_tf32 = prev

    def _flags_already_set(self) -> bool:
        flags = self._flags_module
        if self.device == "cpu":
            return flags.enabled == self._flag
        return flags.enabled and flags.benchmark == self._flag and flags.allow_tf32 == self._allow_tf32

    def run(self) -> None:
        if self._flags_already_set():
            self._y = self._call(self._x)
            return
        prev = self._set_flags()
        try:
            self._y = self._call(self._x)
        finally:
            self._restore_flags(prev)

    def close(self) -> None:
        self._x = self._w = self._y = None
        self._call = None  # type: ignore[assignment]


class TorchBackend(Backend):
    """PyTorch's convolutions: oneDNN / native kernels on the CPU, cuDNN on CUDA."""

    name = "torch"
    family = "torch"
    description = "PyTorch torch.nn.functional.conv*: oneDNN (mkldnn) and native kernels on CPU, cuDNN on CUDA"
    install_hint = "pip install convbench[torch]"
    #: algorithm -> (memory format, mkldnn enabled [cpu] / cudnn.benchmark [cuda], allow_tf32)
    settings = _CONFIG
    algorithm_descriptions = {**COMPILE_DESCRIPTIONS, **INT8_DESCRIPTIONS}
    #: the int8 candidates prepack their weights (see _torch_quantized)
    precomputed_algorithms = frozenset(INT8_ALGORITHMS)
    capabilities = Capabilities(dims=frozenset({1, 2, 3}), dtypes=frozenset({*FLOAT_DTYPES, "int8"}),
                                devices=frozenset({"cpu", "cuda"}))
    robustness = Robustness.FRAMEWORK
    framework_modules = ("torch",)
    version_distributions = {
        "torch": ("torch",),
        "cuda": ("nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu11",
                 "nvidia-cuda-runtime"),
        "cudnn": ("nvidia-cudnn-cu13", "nvidia-cudnn-cu12", "nvidia-cudnn-cu11", "nvidia-cudnn"),
    }
    version_devices = {"cuda": ("cuda",), "cudnn": ("cuda",)}

    def __init__(self) -> None:
        self._threads: Optional[int] = None
        self._thread_notes: list[str] = []

    def heuristic_rank(self, spec: ConvSpec, device: str) -> float:
        """First on every device: oneDNN and cuDNN come with their own shape heuristics."""
        return 0.0

    def device_support(self, device: str) -> Support:
        return cuda_device_support() if device == "cuda" else super().device_support(device)

    def _check_available(self) -> Support:
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            return Support.no(f"torch is not installed ({exc})")
        return Support.yes()

    def algorithms(self, device: str = "cpu") -> list[str]:
        if device == "cpu":
            return list(CPU_ALGORITHMS)
        if device == "cuda":
            return CUDA_ALGORITHMS + (list(COMPILE_MODES) if cuda_driver_devices() else [])
        return []

    def _supports(self, spec: ConvSpec, device: str, algorithm: str) -> Support:
        avail = self.available()
        if not avail:
            return avail
        if algorithm in INT8_ALGORITHMS:
            return quantized_support(spec, algorithm)
        if is_quantized(spec.dtype):
            return Support.no(f"{algorithm} is a float candidate; int8 problems run torch's quantized "
                              f"convolution (the int8-* candidates, CPU only)")
        if algorithm in COMPILE_MODES:
            sup = compile_support(device)
            return cuda_support(spec) if sup and device == "cuda" else sup
        if _CONFIG[algorithm][0] == "channels_last" and spec.dims == 1:
            return Support.no("torch has no channels-last memory format for 1-D convolutions "
                              "(3-D tensors); use the default algorithm")
        if algorithm == "cudnn-tf32" and spec.dtype != "float32":
            return Support.no(f"TF32 applies to float32 only (spec dtype {spec.dtype})")
        if device == "cuda":
            return cuda_support(spec)
        return Support.yes()

    def tolerance(self, spec: ConvSpec, device: str, algorithm: str) -> float:
        if algorithm == "cudnn-tf32" and spec.dtype == "float32":
            from convbench.reference import tolerance_for

            return tolerance_for(spec, "tf32")
        return super().tolerance(spec, device, algorithm)

    def memory_estimate(self, spec: ConvSpec, device: str, algorithm: str) -> MemoryEstimate:
        """:func:`._memory.framework_estimate`: oneDNN's im2col workspace for one image; the
        native kernels' column matrix for the whole batch (transposed: one image), groups run
        one at a time; layout conversions where the memory format differs from spec.layout;
        an explicit pad for asymmetric padding."""
        from ._memory import framework_estimate

        memory_format, mkldnn, _ = _CONFIG.get(algorithm, ("contiguous", True, False))
        native = device == "cpu" and not mkldnn
        return framework_estimate(
            spec, columns_images=spec.n if native and not spec.transposed else 1,
            layout_copies=(memory_format == "channels_last") != (spec.layout == "channels_last"),
            padded_input=not spec.symmetric_padding and not spec.transposed,
            group_outputs=native and spec.groups > 1)

    def set_threads(self, threads: int) -> None:
        """Set torch's intra-op threads (and, if still possible, its inter-op threads)."""
        self._threads = int(threads)
        if not self.available():
            return
        torch = _torch()
        torch.set_num_threads(self._threads)
        try:
            torch.set_num_interop_threads(self._threads)
        except RuntimeError as exc:  # only settable before torch's first parallel work
            note = f"inter-op threads left at {torch.get_num_interop_threads()}: {exc}"
            if note not in self._thread_notes:
                self._thread_notes.append(note)

    def gemm_rate(self, dtype: str, threads: int, budget_s: float = 0.3) -> Optional[float]:
        """torch.mm on the CPU (MKL/oneDNN) in ``dtype``: best of several n x n products after
        a warm-up, 2 n^3 flops each; n (128..2048) sized from a 256^3 probe so that a slow
        dtype (float16 without hardware support) stays within the budget."""
        import time

        if self.available() and dtype == "int8":  # GOP/s of int8 products (_torch_int8_gemm)
            from ._torch_int8_gemm import int8_gemm_rate

            _torch().set_num_threads(int(threads))
            return int8_gemm_rate(_torch(), budget_s)
        if not self.available() or dtype not in ("float32", "float64", "bfloat16", "float16"):
            return None
        torch = _torch()
        torch.set_num_threads(int(threads))
        tdtype = getattr(torch, dtype)

        def product(n: int) -> Callable[[], float]:
            a, b = torch.randn(n, n).to(tdtype), torch.randn(n, n).to(tdtype)
            c = torch.empty(n, n, dtype=tdtype)

            def once() -> float:
                t0 = time.perf_counter()
                torch.mm(a, b, out=c)
                return time.perf_counter() - t0
            once()
            return once

        probe = product(256)()
        rate = 2.0 * 256 ** 3 / max(probe, 1e-9)
        n = int(min(2048, max(128, (rate * budget_s / 16) ** (1 / 3))))
        once = product(n)
        best, deadline = float("inf"), time.perf_counter() + budget_s
        for i in range(20):
            best = min(best, once())
            if i >= 2 and time.perf_counter() > deadline:
                break
        return 2.0 * n ** 3 / best / 1e9

    def versions(self) -> dict[str, str]:
        if not self.available():
            return {}
        torch = _torch()
        out = {"torch": torch.__version__}
        if torch.version.cuda:
            out["cuda"] = str(torch.version.cuda)
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        if cudnn:
            out["cudnn"] = str(cudnn)
        config = torch.__config__.show()
        if "MKL-DNN v" in config:
            out["onednn"] = config.split("MKL-DNN v", 1)[1].split()[0]
        return out

    # -- convbench.tune_model() / use_tuned() (see _torch_models) ---------------------------
    def model_support(self, model: Any) -> Support:
        """Yes for an eager torch.nn.Module (never imports torch)."""
        from ._torch_models import model_support

        return model_support(model)

    def collect_convs(self, model: Any, inputs: tuple, grad: bool = False) -> list:
        from ._torch_models import collect

        return collect(model, inputs, grad, self.own_algorithm)

    def wrap_convs(self, model: Any, bind: Callable[..., Any], inplace: bool = False) -> Any:
        from ._torch_models import wrap

        return wrap(model, bind, inplace, self.own_algorithm)

    def own_algorithm(self, x: Any, w: Any, device: str) -> Optional[str]:
        """The algorithm whose settings (memory format, mkldnn / cuDNN flags) are what torch
        uses for conv(x, w) on ``device`` now, or None if none of them is: channels-last when
        the input or the weight is in that memory format (torch's rule), the global flags."""
        from ._torch_models import is_channels_last

        torch = _torch()
        fmt = "channels_last" if is_channels_last(x) or is_channels_last(w) else "contiguous"
        if device == "cpu":
            want = (fmt, bool(torch.backends.mkldnn.enabled), False)
        else:
            cudnn = torch.backends.cudnn
            if not cudnn.enabled:
                return None
            want = (fmt, bool(cudnn.benchmark), bool(cudnn.allow_tf32) and x.dtype == torch.float32)
        return next((a for a in self.algorithms(device) if _CONFIG.get(a) == want), None)

    # -- convbench.conv() ---------------------------------------------------------------------
    #: the input kinds of convbench.conv() whose arrays are torch tensors
    native_kinds = tuple(TORCH_KINDS.values())

    def native_kind(self, a: Any) -> Optional[str]:
        return torch_kind(a)

    def dispatch_callable(self, spec: ConvSpec, algorithm: str, device: str, kind: str,
                          requires_grad: bool = False) -> Optional[Callable[[Any, Any], Any]]:
        """callable(x, w) -> y running this candidate on the caller's own arrays (no copies).

        ``kind`` "torch-cpu"/"torch-cuda": tensors on that device; "numpy" (cpu only):
        numpy arrays, passed through ``torch.from_numpy`` views (bfloat16 through an int16
        view) and returned as a numpy view of torch's output. Same settings as the
        candidate's Prepared: memory format, mkldnn flag (cpu), cuDNN benchmark/TF32 (cuda),
        the layout conversions and the asymmetric padding in the call. The weights are not
        converted to channels-last (torch picks the channels-last kernel from the input's
        memory format either way). None when the kind/device pair does not fit.
        """
        if algorithm not in _CONFIG or kind not in ("numpy", "torch-cpu", "torch-cuda"):
            return None
        if (kind == "torch-cuda") != (device == "cuda"):
            return None
        if not self.available():
            return None
        torch = _torch()
        memory_format, flag, allow_tf32 = _CONFIG[algorithm]
        d = spec.dims
        core = _ConvPlan(spec).build2()
        cl = {2: torch.channels_last, 3: torch.channels_last_3d}.get(d)
        to_logical = (0, d + 1, *range(1, d + 1))
        to_spatial_last = (0, *range(2, d + 2), 1)
        if memory_format == "contiguous":
            if spec.layout == "channels_last":
                def body(t: Any, wt: Any) -> Any:
                    return core(t.permute(*to_logical).contiguous(), wt).permute(*to_spatial_last).contiguous()
            else:
                body = core
        elif spec.layout == "channels_last":
            def body(t: Any, wt: Any) -> Any:
                return core(t.permute(*to_logical), wt).permute(*to_spatial_last)
        else:
            def body(t: Any, wt: Any) -> Any:
                return core(t.contiguous(memory_format=cl), wt).contiguous()

        if device == "cpu":
            get_flag, set_flag = torch._C._get_mkldnn_enabled, torch._C._set_mkldnn_enabled

            def run(t: Any, wt: Any) -> Any:
                if get_flag() == flag:
                    return body(t, wt)
                prev = get_flag()
                set_flag(flag)
                try:
                    return body(t, wt)
                finally:
                    set_flag(prev)
        else:
            cudnn = torch.backends.cudnn

            def run(t: Any, wt: Any) -> Any:
                prev = (cudnn.enabled, cudnn.benchmark, cudnn.allow_tf32)
                if prev == (True, flag, allow_tf32):
                    return body(t, wt)
                cudnn.enabled, cudnn.benchmark, cudnn.allow_tf32 = True, flag, allow_tf32
                try:
                    return body(t, wt)
                finally:
                    cudnn.enabled, cudnn.benchmark, cudnn.allow_tf32 = prev
        if kind != "numpy":
            return run
        if spec.dtype == "bfloat16":
            def run_np_bf16(x: np.ndarray, w: np.ndarray) -> np.ndarray:
                return tensor_as_numpy(run(numpy_as_tensor(x), numpy_as_tensor(w)))
            return run_np_bf16
        from_numpy = torch.from_numpy

        def run_np(x: np.ndarray, w: np.ndarray) -> np.ndarray:
            if x.flags.writeable and w.flags.writeable:
                return run(from_numpy(x), from_numpy(w)).numpy()  # views both ways, no copy
            return run(numpy_as_tensor(x), numpy_as_tensor(w)).numpy()  # read-only views
        return run_np

    def to_native(self, a: np.ndarray, kind: str) -> Any:
        """A tensor of input kind ``kind`` holding a copy of ``a`` (for tuning and checks)."""
        return to_torch(a, "cuda" if kind == "torch-cuda" else "cpu")

    def from_native(self, t: Any) -> np.ndarray:
        """A numpy copy of a tensor conv() returned."""
        return to_numpy(t)

    def synchronize_native(self, kind: str) -> None:
        """Wait for queued work on the device of input kind ``kind`` (CUDA)."""
        synchronize_kind(kind)

    def _prepare(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str) -> Prepared:
        if self._threads is not None and _torch().get_num_threads() != self._threads:
            _torch().set_num_threads(self._threads)
        if algorithm in INT8_ALGORITHMS:
            p: Prepared = TorchQuantizedPrepared(spec, x, w, algorithm, self._threads)
        elif algorithm in COMPILE_MODES:
            p = TorchCompiledPrepared(spec, x, w, algorithm, device, self._threads,
                                      _ConvPlan(spec).build2())
        else:
            p = TorchPrepared(spec, x, w, algorithm, device, self._threads)
        if self._thread_notes:
            p.info["thread_notes"] = list(self._thread_notes)
        return p
