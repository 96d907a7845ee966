"""ONNX Runtime: a one-node ONNX graph (``Conv`` / ``ConvTranspose``) run by an InferenceSession.

``prepare()`` builds the graph with ``onnx.helper`` (opset 17; 1-, 2- and 3-D, explicit
asymmetric ``pads``, ``strides``, ``dilations``, ``group``, ``output_padding``), creates the
session and binds input and output buffers once (I/O binding), so ``run()`` is one
``run_with_iobinding`` call. ONNX convolutions are channels-first: a channels_last spec gets a
``Transpose`` node before and after the convolution, part of the graph and so of ``run()``.

Candidates on the CPU (CPU execution provider; intra-op threads = the run's threads, inter-op 1,
sequential execution):

* ``weights-input`` -- the weights are a graph input, bound once: ORT cannot transform them
  ahead of time (MLAS's plain Conv / ConvTranspose kernels). Nothing precomputed.
* ``initializer`` -- the weights are an initializer (a constant, as in a deployed model) and
  the graph is optimised up to ``ORT_ENABLE_EXTENDED``: no layout transformation, but ORT may
  pre-pack constant weights at session creation (e.g. ConvTranspose's filter). Precomputed.
* ``nchwc`` -- weights as an initializer, ``ORT_ENABLE_ALL``: ORT's NCHWc layout transformer
  rewrites the 2-D Conv into MLAS's blocked NCHWc kernel and reorders the weights into blocks
  at session creation (a channels_last input's Transpose folds into the reorder). Offered only
  where the transformer rewrites the conv (2-D, direct, channel counts fitting the block size
  of MLAS's x86-64 kernels); ``info["nchwc"]`` says whether it did. Precomputed.

Candidates on CUDA (CUDA execution provider, from the ``onnxruntime-gpu`` build; weights as an
initializer; TF32 off so float32 stays IEEE float32; cuDNN's algorithm search, if any, runs in
``prepare()``): ``cudnn-exhaustive`` (cuDNN benchmarks its algorithms), ``cudnn-heuristic``
(cuDNN's heuristics pick one) and ``cudnn-nhwc`` (``prefer_nhwc``: ORT's NHWC layout
transformer, weights transposed ahead of time; precomputed).

int8 candidates on the CPU (``_onnxruntime_quantized``): ``int8-qlinearconv`` (QLinearConv,
weights an initializer packed at session creation), ``int8-qlinearconv-weights-input`` and
``int8-convinteger`` (ConvInteger's int32 accumulators requantised exactly in the same graph, held
to 0 LSB); transposed int8 problems are refused (ONNX has no integer ConvTranspose).

dtypes (measured with ORT 1.32): float32; float16, for which ORT's CPU provider has no
native kernel on x86-64 and inserts Casts to float32 around the conv (``info["nodes"]`` shows
the graph ORT runs); no float64 Conv/ConvTranspose kernel; no bfloat16 Conv in ONNX.
"""
from __future__ import annotations

import os
import platform
import tempfile
from typing import Any, Optional

import numpy as np

from convbench.registry import Backend, Capabilities, Prepared, Robustness, Support
from convbench.spec import ConvSpec

from ._onnxruntime_quantized import (EXACT_ALGORITHMS, INT8_ALGORITHMS, INT8_CONFIG, INT8_DESCRIPTIONS,
                                     build_int8_model, int8_info, int8_support)

CPU_ALGORITHMS = ["weights-input", "initializer", "nchwc", *INT8_ALGORITHMS]
CUDA_ALGORITHMS = ["cudnn-exhaustive", "cudnn-heuristic", "cudnn-nhwc"]

# algorithm -> (weights as an initializer, graph optimisation level, extra CUDA provider options)
_CONFIG: dict[str, tuple[bool, str, dict]] = {
    "weights-input": (False, "ORT_ENABLE_ALL", {}),
    "initializer": (True, "ORT_ENABLE_EXTENDED", {}),
    "nchwc": (True, "ORT_ENABLE_ALL", {}),
    "cudnn-exhaustive": (True, "ORT_ENABLE_ALL", {"cudnn_conv_algo_search": "EXHAUSTIVE"}),
    "cudnn-heuristic": (True, "ORT_ENABLE_ALL", {"cudnn_conv_algo_search": "HEURISTIC"}),
    "cudnn-nhwc": (True, "ORT_ENABLE_ALL", {"cudnn_conv_algo_search": "EXHAUSTIVE", "prefer_nhwc": "1"}),
    **INT8_CONFIG,
}
_OPSET, _IR_VERSION = 17, 8  # readable by every onnxruntime >= 1.17
_NO_CUDA = ("this onnxruntime build has no CUDAExecutionProvider "
            "(pip install onnxruntime-gpu instead of onnxruntime)")


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


def _nchwc_block_size() -> Optional[int]:
    """MLAS's NCHWc block size on this machine (x86-64: 16 with AVX-512F, else 8), or None
    where convbench cannot tell (other architectures)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    from convbench.environment import cpu_info

    return 16 if "avx512f" in cpu_info()["cpu_isa"] else 8


def nchwc_rewrites(spec: ConvSpec) -> Support:
    """Whether ORT's NCHWc transformer rewrites this conv (its channel rules, read from ORT's
    nchwc_transformer.cc, kept to the cases every release since 1.17 rewrites)."""
    if spec.transposed or spec.dims != 2:
        return Support.no("ORT's NCHWc layout transformer rewrites 2-D Conv only (not ConvTranspose, "
                          "not 1-D/3-D); use 'initializer'")
    block = _nchwc_block_size()
    if block is None:
        return Support.no(f"MLAS's NCHWc kernels are its x86-64 path; on {platform.machine()} "
                          f"convbench cannot tell whether ORT rewrites the conv")
    g, cin_g, cout_g = spec.groups, spec.c_in // spec.groups, spec.c_out // spec.groups
    if g == 1:
        ok = spec.c_in < block or spec.c_in % block == 0
        rule = f"input channels < {block} or a multiple of {block}"
    elif cin_g == 1 and cout_g == 1:
        ok = spec.c_out % block == 0
        rule = f"depthwise channels a multiple of {block}"
    else:
        ok = cin_g % block == 0 and cout_g % block == 0
        rule = f"channels per group a multiple of {block}"
    if ok:
        return Support.yes()
    return Support.no(f"ORT's NCHWc transformer (block size {block} here) needs {rule}; "
                      f"{spec.c_in}->{spec.c_out} channels in {g} group(s) stay on the plain "
                      f"kernel ('initializer')")


def transposed_padding(spec: ConvSpec) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(end pads, output_padding, zero rows to append) per spatial dim for the ONNX node.

    ORT refuses ``output_padding >= stride`` (which PyTorch allows when the dilation is
    larger). Output padding only moves the end of the output window, so there it is taken off
    the end pad first; what is left past the full transposed output beyond ``stride - 1`` is
    rows of zeros, appended by a Pad node. Everything else is passed to ORT as it is.
    """
    ends = tuple(p[1] for p in spec.padding)
    if not spec.transposed:
        return ends, (0,) * spec.dims, (0,) * spec.dims
    new_ends, out_pad, extra = [], [], []
    for end, op, s in zip(ends, spec.output_padding, spec.stride):
        take = min(op, end) if op >= s else 0
        keep = min(op - take, s - 1)
        new_ends.append(end - take)
        out_pad.append(keep)
        extra.append(op - take - keep)
    return tuple(new_ends), tuple(out_pad), tuple(extra)


def build_model(spec: ConvSpec, w: np.ndarray, weights_initializer: bool) -> Any:
    """The one-node ONNX model of ``spec``: input ``x`` and output ``y`` in spec.layout (a
    Transpose node each way for channels_last), weights ``w`` an initializer or a graph input."""
    import onnx
    from onnx import helper, numpy_helper

    elem = {"float32": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16}[spec.dtype]
    d = spec.dims
    ends, out_pad, extra = transposed_padding(spec)
    attrs: dict[str, Any] = dict(
        kernel_shape=list(spec.kernel_size), strides=list(spec.stride), dilations=list(spec.dilation),
        group=spec.groups, pads=[p[0] for p in spec.padding] + list(ends))
    if spec.transposed:
        attrs["output_padding"] = list(out_pad)
    nodes = []
    x_name, y_name = "x", "y"
    if spec.layout == "channels_last":
        nodes.append(helper.make_node("Transpose", ["x"], ["x_ncx"], perm=[0, d + 1, *range(1, d + 1)]))
        x_name, y_name = "x_ncx", "y_ncx"
    conv_out = "y_conv" if any(extra) else y_name
    nodes.append(helper.make_node("ConvTranspose" if spec.transposed else "Conv", [x_name, "w"], [conv_out],
                                  **attrs))
    inits = []
    if any(extra):  # zero rows past the end of the full transposed output
        inits.append(numpy_helper.from_array(np.array([0] * (d + 2) + [0, 0, *extra], np.int64), "pad_rows"))
        nodes.append(helper.make_node("Pad", [conv_out, "pad_rows"], [y_name]))
    if spec.layout == "channels_last":
        nodes.append(helper.make_node("Transpose", ["y_ncx"], ["y"], perm=[0, *range(2, d + 2), 1]))
    inputs = [helper.make_tensor_value_info("x", elem, list(spec.input_shape))]
    if weights_initializer:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w), "w"))
    else:
        inputs.append(helper.make_tensor_value_info("w", elem, list(w.shape)))
    graph = helper.make_graph(nodes, "convbench", inputs,
                              [helper.make_tensor_value_info("y", elem, list(spec.output_shape))],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                              producer_name="convbench")
    model.ir_version = _IR_VERSION
    return model


def _providers(algorithm: str, device: str) -> list:
    if device != "cuda":
        return ["CPUExecutionProvider"]
    opts = {"device_id": "0", "use_tf32": "0", **_CONFIG[algorithm][2]}
    return [("CUDAExecutionProvider", opts), "CPUExecutionProvider"]


def _session_options(ort: Any, level: str, threads: Optional[int], optimized_path: str) -> Any:
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.intra_op_num_threads = threads or 0  # 0: ORT's default, one per physical core
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.optimized_model_filepath = optimized_path
    return so


def _optimized_nodes(path: str) -> list[str]:
    """The op types of the graph ORT runs (as it wrote it at session creation)."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 - only for info
        return []
    return [f"{n.domain}:{n.op_type}" if n.domain else n.op_type for n in model.graph.node]


class OnnxRuntimePrepared(Prepared):
    """One ONNX Runtime session with its input, weights and output bound."""

    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str,
                 threads: Optional[int]) -> None:
        ort = _ort()
        self.spec, self.device, self.algorithm = spec, device, algorithm
        initializer, level, _ = _CONFIG[algorithm]
        model = build_int8_model(spec, w, algorithm) if algorithm in INT8_CONFIG else \
            build_model(spec, w, initializer)
        with tempfile.TemporaryDirectory(prefix="convbench-ort-") as tmp:
            path = os.path.join(tmp, "optimized.onnx")
            so = _session_options(ort, level, threads, path)
            self._session = ort.InferenceSession(model.SerializeToString(), so,
                                                 providers=_providers(algorithm, device))
            nodes = _optimized_nodes(path)
        ort_device = "cuda" if device == "cuda" else "cpu"
        self._x = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), ort_device, 0)
        self._binding = self._session.io_binding()
        self._binding.bind_ortvalue_input("x", self._x)
        self._w = None
        if not initializer:
            self._w = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(w), ort_device, 0)
            self._binding.bind_ortvalue_input("w", self._w)
        self._y = ort.OrtValue.ortvalue_from_shape_and_type(list(spec.output_shape), x.dtype, ort_device, 0)
        self._binding.bind_ortvalue_output("y", self._y)
        self._ran = False
        self.info: dict[str, Any] = {
            "onnxruntime": ort.__version__,
            "algorithm": algorithm,
            "providers": self._session.get_providers(),
            "graph_optimization_level": level,
            "weights": "initializer" if initializer else "graph input",
            "nodes": nodes,
            "nchwc": any(n.startswith("com.microsoft.nchwc:") for n in nodes),
            "nhwc": any(n.startswith("com.ms.internal.nhwc:") for n in nodes),
            "compute_dtype": "float32 (Casts inserted by ORT)" if "Cast" in nodes else spec.dtype,
            "transpose_in_run": spec.layout == "channels_last",
            "pad_in_run": any(transposed_padding(spec)[2]),
            "intra_op_threads": threads or "ORT default (physical cores)",
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "intra_op_spinning": "ORT default (on)",
        }
        if algorithm in INT8_CONFIG:
            self.info.update(int8_info(spec, algorithm))
        if device == "cuda":
            self.info["provider_options"] = self._session.get_provider_options().get("CUDAExecutionProvider", {})
            self.run()  # cuDNN's algorithm search happens on the first run: keep it out of timing

    def run(self) -> None:
        self._session.run_with_iobinding(self._binding)
        self._ran = True

    def synchronize(self) -> None:
        """Nothing to wait for: ORT's Run() synchronises the CUDA stream before it returns."""

    def result(self) -> np.ndarray:
        if not self._ran:
            raise RuntimeError("result() called before run()")
        if self.device == "cuda":
            return self._binding.copy_outputs_to_cpu()[0]
        return np.array(self._y.numpy(), copy=True)

    def close(self) -> None:
        self._binding = self._session = self._x = self._w = self._y = None


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime's Conv / ConvTranspose: MLAS kernels on the CPU, cuDNN through the CUDA EP."""

    name = "onnxruntime"
    family = "onnxruntime"
    description = ("ONNX Runtime InferenceSession on a one-node Conv/ConvTranspose graph: MLAS "
                   "(plain and NCHWc) on CPU, cuDNN via the CUDA execution provider")
    install_hint = "pip install convbench[onnx]"
    capabilities = Capabilities(dims=frozenset({1, 2, 3}), dtypes=frozenset({"float32", "float16", "int8"}),
                                devices=frozenset({"cpu", "cuda"}))
    algorithm_descriptions = {
        "weights-input": "weights a graph input bound once: no ahead-of-time weight transform",
        "initializer": "weights an initializer, ORT_ENABLE_EXTENDED: ORT may pre-pack them",
        "nchwc": "weights an initializer, ORT_ENABLE_ALL: NCHWc kernel, weights reordered into blocks",
        "cudnn-exhaustive": "CUDA EP, cuDNN algorithm search EXHAUSTIVE (in prepare), TF32 off",
        "cudnn-heuristic": "CUDA EP, cuDNN heuristics pick the algorithm, TF32 off",
        "cudnn-nhwc": "CUDA EP with prefer_nhwc: NHWC kernels, weights transposed ahead of time",
        **INT8_DESCRIPTIONS,
    }
    robustness = Robustness.FRAMEWORK
    framework_modules = ("onnxruntime", "onnx")
    version_distributions = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "onnx": ("onnx",)}
    precomputed_algorithms = frozenset({"initializer", "nchwc", "cudnn-nhwc", "int8-qlinearconv"})

    def __init__(self) -> None:
        self._threads: Optional[int] = None

    def heuristic_rank(self, spec: ConvSpec, device: str) -> float:
        """After torch and TensorFlow: a deployment engine, not a training framework."""
        return 3.0

    def _check_available(self) -> Support:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return Support.no(f"onnxruntime and onnx are needed ({exc})")
        return Support.yes()

    def device_support(self, device: str) -> Support:
        if device == "cuda" and "CUDAExecutionProvider" not in _ort().get_available_providers():
            return Support.no(_NO_CUDA)
        return super().device_support(device)

    def algorithms(self, device: str = "cpu") -> list[str]:
        return list({"cpu": CPU_ALGORITHMS, "cuda": CUDA_ALGORITHMS}.get(device, []))

    def supports(self, spec: ConvSpec, device: str = "cpu", algorithm: Optional[str] = None) -> Support:
        """As Backend.supports, with ONNX Runtime's missing dtypes named (no import here)."""
        if spec.dtype == "float64":
            return Support.no("ONNX Runtime's CPU and CUDA providers have no float64 Conv/ConvTranspose "
                              "kernel (NOT_IMPLEMENTED at session creation, measured with 1.32)")
        if spec.dtype == "bfloat16":
            return Support.no("ONNX Conv/ConvTranspose do not take bfloat16 inputs (opset <= 22 "
                              "type constraints: float16, float, double)")
        return super().supports(spec, device, algorithm)

    def _supports(self, spec: ConvSpec, device: str, algorithm: str) -> Support:
        dtype_support = int8_support(spec, device, algorithm)
        if not dtype_support:
            return dtype_support
        if algorithm == "nchwc":
            return nchwc_rewrites(spec)
        return Support.yes()

    def tolerance(self, spec: ConvSpec, device: str, algorithm: str) -> float:
        """0 LSB for the candidates that requantise exactly as convbench.quant.requantize."""
        if algorithm in EXACT_ALGORITHMS:
            return 0.0
        return super().tolerance(spec, device, algorithm)

    def set_threads(self, threads: int) -> None:
        """Intra-op threads of every session prepared from now on (inter-op 1, sequential)."""
        self._threads = int(threads)

    def versions(self) -> dict[str, str]:
        if not self.available():
            return {}
        import onnx

        return {"onnxruntime": _ort().__version__, "onnx": onnx.__version__}

    def _prepare(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str) -> Prepared:
        return OnnxRuntimePrepared(spec, x, w, algorithm, device, self._threads)
