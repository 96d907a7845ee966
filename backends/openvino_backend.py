"""OpenVINO: the CPU plugin compiling a one-op model (``Convolution``, ``GroupConvolution``,
``ConvolutionBackpropData``, ``GroupConvolutionBackpropData`` from opset13).

The model is built with OpenVINO's opset API: explicit ``pads_begin`` / ``pads_end`` (asymmetric
padding is native), ``strides``, ``dilations``, ``output_padding`` for transposed convolutions;
grouped weights are a reshaped view of the caller's ``(C_out, C_in/g, *k)`` array. A
channels_last spec gets ``Transpose`` ops before and after the convolution inside the graph, so
the layout change is part of ``run()`` (the plugin may fuse them into its own reorders).
``prepare()`` compiles for ``"CPU"`` with ``NUM_STREAMS=1``, ``PERFORMANCE_HINT=LATENCY``,
``INFERENCE_NUM_THREADS`` = the run's threads and an explicit ``INFERENCE_PRECISION_HINT``, and
sets the input tensors on an InferRequest: ``run()`` is one ``infer()`` call.

Candidates (inference precision x where the weights live):

* ``f32`` -- precision hint f32, weights a graph Parameter (nothing folded at compile time);
* ``f32-const-weights`` -- weights a Constant: the plugin may reorder/pack them while compiling
  (a weight-precomputing algorithm);
* ``bf16`` / ``bf16-const-weights`` -- precision hint bf16 on float32 data, held to the bfloat16
  bound; only on CPUs with native bf16 (``avx512_bf16`` / ``amx_bf16``), never emulated.

Data types, measured with OpenVINO 2026.4: float32 runs in f32; float16 data is converted to
f32 around an f32 convolution (``info["executed_precision"]`` says so); bfloat16 data runs the
plugin's bf16 convolution (f32 accumulation). float64 is refused: the plugin inserts Converts to
f32 around the convolution (error ~1e-7, far outside the float64 bound).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from convbench.environment import cpu_info
from convbench.errors import UnsupportedError
from convbench.registry import Backend, Capabilities, Prepared, Robustness, Support
from convbench.spec import FLOAT_DTYPES, TOLERANCES, ConvSpec, numpy_dtype

from ._openvino_quantized import (INT8_ALGORITHMS, INT8_DESCRIPTIONS, build_int8_model, check_int8_executed,
                                  int8_support)

ALGORITHMS = ["f32", "f32-const-weights", "bf16", "bf16-const-weights", *INT8_ALGORITHMS]
_CONST_SUFFIX = "-const-weights"
_BF16_ISA = ("avx512_bf16", "amx_bf16")

_OV: Any = None
_CORE: Any = None


def _ov() -> Any:
    """The openvino module, imported on first use."""
    global _OV
    if _OV is None:
        import openvino

        _OV = openvino
    return _OV


def _core() -> Any:
    """One ov.Core per process (it holds the loaded CPU plugin)."""
    global _CORE
    if _CORE is None:
        _CORE = _ov().Core()
    return _CORE


def _precision(algorithm: str) -> str:
    return algorithm.split("-", 1)[0]


def _const_weights(algorithm: str) -> bool:
    return algorithm.endswith(_CONST_SUFFIX)


def cpu_bf16_isa() -> tuple[str, ...]:
    """This CPU's native bfloat16 instruction sets (from /proc/cpuinfo; no openvino import)."""
    return tuple(f for f in _BF16_ISA if f in cpu_info()["cpu_isa"])


def _ov_type(dtype: str) -> Any:
    t = _ov().Type
    return {"float64": t.f64, "float32": t.f32, "float16": t.f16, "bfloat16": t.bf16}[dtype]


def _tensor(a: np.ndarray, dtype: str) -> Any:
    """An ov.Tensor holding a copy of ``a`` (bfloat16 copied bit for bit)."""
    ov = _ov()
    if dtype == "bfloat16":  # openvino's Python binding has no numpy type for bf16
        t = ov.Tensor(ov.Type.bf16, ov.Shape(list(a.shape)))
        t.data.view(np.uint16)[...] = a.view(np.uint16)
        return t
    return ov.Tensor(np.ascontiguousarray(a))


def _grouped_weights(spec: ConvSpec, w: np.ndarray) -> np.ndarray:
    """The weights in OpenVINO's layout (a reshape: (G, C_out/G, C_in/G, *k) direct,
    (G, C_in/G, C_out/G, *k) transposed; unchanged when groups == 1)."""
    g = spec.groups
    if g == 1:
        return w
    return w.reshape(g, w.shape[0] // g, *w.shape[1:])


def _build_model(spec: ConvSpec, w: np.ndarray, const_weights: bool) -> tuple[Any, list, str]:
    """The one-op model, its parameters ([x] or [x, w]) and the convolution op's type name."""
    ov = _ov()
    import openvino.opset13 as ops

    d, et = spec.dims, _ov_type(spec.dtype)
    px = ops.parameter(list(spec.input_shape), et, name="x")
    params = [px]
    data = px
    channels_last = spec.layout == "channels_last"
    if channels_last:
        data = ops.transpose(px, ops.constant(np.array([0, d + 1, *range(1, d + 1)], np.int64)))
    wg = _grouped_weights(spec, w)
    if const_weights:
        wnode = ov.op.Constant(_tensor(wg, spec.dtype))
    else:
        wnode = ops.parameter(list(wg.shape), et, name="w")
        params.append(wnode)
    grouped = spec.groups > 1
    common = dict(pads_begin=[p[0] for p in spec.padding], pads_end=[p[1] for p in spec.padding],
                  dilations=list(spec.dilation), auto_pad="explicit")
    if spec.transposed:
        op = ops.group_convolution_backprop_data if grouped else ops.convolution_backprop_data
        y = op(data, wnode, list(spec.stride), output_padding=list(spec.output_padding), **common)
    else:
        op = ops.group_convolution if grouped else ops.convolution
        y = op(data, wnode, list(spec.stride), **common)
    op_name = y.get_type_name()
    if channels_last:
        y = ops.transpose(y, ops.constant(np.array([0, *range(2, d + 2), 1], np.int64)))
    return ov.Model([y.output(0)], params, "convbench"), params, op_name


def _compile_config(precision: str, threads: Optional[int]) -> dict[str, Any]:
    config: dict[str, Any] = {"NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                              "INFERENCE_PRECISION_HINT": precision}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def _runtime_facts(compiled: Any) -> dict[str, Any]:
    """The executed graph's convolution node: kernel (primitiveType) and precisions."""
    facts: dict[str, Any] = {"executed_layers": []}
    for node in compiled.get_runtime_model().get_ordered_ops():
        rt = node.get_rt_info()
        get = lambda k: rt[k].astype(str) if k in rt else None  # noqa: E731
        layer = get("layerType")
        if layer in ("Input", "Output"):
            continue
        facts["executed_layers"].append(f"{layer}:{get('primitiveType')}")
        if layer in ("Convolution", "Deconvolution"):
            facts.update(kernel=get("primitiveType"), executed_precision=get("runtimePrecision"))
    return facts


def _plain(value: Any) -> Any:
    """A compiled-model property as JSON-friendly data (ov.Type as 'f32', enums as names)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "to_string"):
        return value.to_string()
    return str(value).rpartition(".")[2]


def _dtype_note(dtype: str, executed: Optional[str]) -> str:
    """What the plugin did with half-precision data, for ``info["note"]``."""
    if dtype == "float16" and executed == "f32":
        return "float16 data converted to f32 around an f32 convolution"
    if dtype == "bfloat16" and executed == "bf16":
        native = "native bf16 instructions" if cpu_bf16_isa() else "bf16 dot products emulated (no native bf16)"
        return f"bfloat16 data runs the plugin's bf16 kernel, f32 accumulation, {native}"
    return ""


class OpenVinoPrepared(Prepared):
    """One compiled OpenVINO convolution with its input tensors set on an InferRequest."""

    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str,
                 threads: Optional[int]) -> None:
        ov = _ov()
        self.spec = spec
        self.algorithm = algorithm
        int8 = algorithm in INT8_ALGORITHMS
        precision = "f32" if int8 else _precision(algorithm)
        const = int8 or _const_weights(algorithm)
        model, params, op_name = build_int8_model(spec, w) if int8 else _build_model(spec, w, const)
        core = _core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise UnsupportedError(f"openvino:{algorithm}@cpu: the CPU plugin does not report BF16 "
                                   f"in OPTIMIZATION_CAPABILITIES on this CPU")
        self._compiled = core.compile_model(model, "CPU", _compile_config(precision, threads))
        self._req = self._compiled.create_infer_request()
        self._req.set_tensor(params[0].output(0), _tensor(x, spec.dtype))
        if not const:
            self._req.set_tensor(params[1].output(0), _tensor(_grouped_weights(spec, w), spec.dtype))
        self._ran = False
        prop = lambda k: _plain(self._compiled.get_property(k))  # noqa: E731
        self.info: dict[str, Any] = {
            "openvino": ov.__version__,
            "algorithm": algorithm,
            "op": op_name,
            "weights": "Constant (the plugin may pack them at compile time)" if const else "Parameter",
            "transpose_in_graph": spec.layout == "channels_last",
            "num_streams": prop("NUM_STREAMS"),
            "inference_num_threads": prop("INFERENCE_NUM_THREADS"),
            "threads_requested": threads,
            "performance_hint": prop("PERFORMANCE_HINT"),
            "inference_precision_hint": prop("INFERENCE_PRECISION_HINT"),
            "cpu_pinning": prop("ENABLE_CPU_PINNING"),
            "cpu_bf16_isa": list(cpu_bf16_isa()),
            **_runtime_facts(self._compiled),
        }
        if int8:  # an int8 candidate only where the plugin runs an int8 kernel
            self.info.update(check_int8_executed(spec, self.info))
        note = _dtype_note(spec.dtype, self.info.get("executed_precision"))
        if note:
            self.info["note"] = note

    def run(self) -> None:
        self._req.infer(share_outputs=True)  # outputs as views: no copy in the timed call
        self._ran = True

    def result(self) -> np.ndarray:
        if not self._ran:
            raise RuntimeError("result() called before run()")
        out = self._req.get_output_tensor(0).data
        if self.spec.dtype == "bfloat16":
            out = out.view(np.uint16).view(numpy_dtype("bfloat16"))
        return np.array(out, copy=True)

    def close(self) -> None:
        self._req = self._compiled = None


class OpenVinoBackend(Backend):
    """OpenVINO's CPU plugin compiling a one-op convolution model."""

    name = "openvino"
    family = "openvino"
    description = ("OpenVINO CPU plugin (oneDNN kernels) compiling a one-op Convolution/"
                   "GroupConvolution/ConvolutionBackpropData model: f32 and bf16 inference precision, "
                   "weights as Parameter or Constant")
    install_hint = "pip install convbench[openvino]"
    capabilities = Capabilities(dims=frozenset({1, 2, 3}), dtypes=frozenset({*FLOAT_DTYPES, "int8"}),
                                devices=frozenset({"cpu"}))
    algorithm_descriptions = {
        "f32": "INFERENCE_PRECISION_HINT f32, weights a graph Parameter (nothing folded at compile time)",
        "f32-const-weights": "f32, weights a Constant: the plugin may reorder/pack them when compiling",
        "bf16": "INFERENCE_PRECISION_HINT bf16 on float32 data (native bf16 CPUs only), weights a Parameter",
        "bf16-const-weights": "bf16, weights a Constant: the plugin may reorder/pack them when compiling",
        **INT8_DESCRIPTIONS,
    }
    robustness = Robustness.FRAMEWORK
    framework_modules = ("openvino",)
    version_distributions = {"openvino": ("openvino",)}
    precomputed_algorithms = frozenset([*(a for a in ALGORITHMS if a.endswith(_CONST_SUFFIX)), *INT8_ALGORITHMS])

    def __init__(self) -> None:
        self._threads: Optional[int] = None

    def heuristic_rank(self, spec: ConvSpec, device: str) -> float:
        """After torch and TensorFlow on the CPU."""
        return 1.5 if device == "cpu" else super().heuristic_rank(spec, device)

    def _check_available(self) -> Support:
        try:
            _core()
        except ImportError as exc:
            return Support.no(f"openvino is not installed ({exc})")
        return Support.yes()

    def algorithms(self, device: str = "cpu") -> list[str]:
        return list(ALGORITHMS) if device == "cpu" else []

    def _supports(self, spec: ConvSpec, device: str, algorithm: str) -> Support:
        dtype_support = int8_support(spec, algorithm)
        if not dtype_support:
            return dtype_support
        if spec.dtype == "float64":
            return Support.no("OpenVINO's CPU plugin computes float64 in f32 (it converts around the "
                              "convolution): error ~1e-7, outside the float64 bound 1e-10")
        if _precision(algorithm) == "bf16":
            if spec.dtype != "float32":
                return Support.no(f"the bf16 precision hint lowers float32 models; {spec.dtype} data "
                                  f"is served by the f32 candidates at its own precision")
            if not cpu_bf16_isa():
                return Support.no("this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16): "
                                  "the bf16 candidate is refused rather than emulated")
        return Support.yes()

    def tolerance(self, spec: ConvSpec, device: str, algorithm: str) -> float:
        if _precision(algorithm) == "bf16" and spec.dtype == "float32":
            return TOLERANCES["bfloat16"]
        return super().tolerance(spec, device, algorithm)

    def set_threads(self, threads: int) -> None:
        """INFERENCE_NUM_THREADS of every model compiled from now on."""
        self._threads = int(threads)

    def versions(self) -> dict[str, str]:
        if not self.available():
            return {}
        return {"openvino": _ov().__version__}

    def _prepare(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str) -> Prepared:
        return OpenVinoPrepared(spec, x, w, algorithm, self._threads)
