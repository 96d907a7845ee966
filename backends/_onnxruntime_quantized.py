"""ONNX Runtime int8 candidates: one-node ``QLinearConv`` / ``ConvInteger`` graphs (CPU).

The problem (:mod:`convbench.quant`): int8 activations with a per-tensor scale, int8 weights with
one scale per output channel, zero points 0, int8 output requantised with a per-tensor scale. The
scales are those of :func:`convbench.quant.quant_params`, stored in the graph as float32 (as ONNX
holds them).

* ``int8-qlinearconv`` -- ``QLinearConv`` with int8 x/w/y, per-channel ``w_scale``, zero points
  0, weights an initializer, ``ORT_ENABLE_ALL``: ORT rewrites it into its NHWC kernel
  (``com.microsoft:QLinearConv``) and packs the constant weights at session creation
  (precomputed). A channels_first spec gets ORT's own Transposes around it; a channels_last
  spec's Transposes cancel.
* ``int8-qlinearconv-weights-input`` -- the same with the weights a graph input: nothing packed
  ahead of time.
* ``int8-convinteger`` -- ``ConvInteger`` (int32 accumulators, weights a graph input) followed
  in the same graph by the requantisation of :func:`convbench.quant.requantize` in float64
  (``Cast(double) -> Mul(per-channel multiplier) -> Round (half to even) -> Clip(-128, 127) ->
  Cast(int8)``): exact, so it is held to 0 LSB.

ONNX has no integer ConvTranspose: transposed int8 problems are refused.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from convbench.quant import is_quantized, quant_params
from convbench.registry import Support
from convbench.spec import ConvSpec

#: algorithm -> (weights as an initializer, graph optimisation level, extra CUDA provider options)
INT8_CONFIG: dict[str, tuple[bool, str, dict]] = {
    "int8-qlinearconv": (True, "ORT_ENABLE_ALL", {}),
    "int8-qlinearconv-weights-input": (False, "ORT_ENABLE_ALL", {}),
    "int8-convinteger": (False, "ORT_ENABLE_ALL", {}),
}
INT8_ALGORITHMS = list(INT8_CONFIG)
INT8_DESCRIPTIONS = {
    "int8-qlinearconv": "QLinearConv int8, per-channel weight scales, weights an initializer packed at "
                        "session creation (ORT's NHWC kernel)",
    "int8-qlinearconv-weights-input": "QLinearConv int8, weights a graph input: nothing packed ahead of time",
    "int8-convinteger": "ConvInteger int32 accumulators, requantised exactly in the graph (float64 "
                        "Mul/Round/Clip); weights a graph input",
}
#: candidates whose requantisation is convbench.quant.requantize's exactly: held to 0 LSB
EXACT_ALGORITHMS = frozenset({"int8-convinteger"})
_OPSET, _IR_VERSION = 17, 8  # as the float graphs: int8 QLinearConv/ConvInteger (10), Round (11), Clip (13)


def int8_support(spec: ConvSpec, device: str, algorithm: str) -> Support:
    """Whether ``algorithm`` (float or int8) runs ``spec``'s dtype; no import."""
    int8_algo = algorithm in INT8_CONFIG
    if not is_quantized(spec.dtype):
        return Support.no(f"{algorithm} is an int8 candidate; dtype {spec.dtype} runs the float ones") \
            if int8_algo else Support.yes()
    if not int8_algo:
        return Support.no(f"{algorithm} is a float candidate; int8 problems run the int8-* candidates "
                          f"(QLinearConv, ConvInteger; CPU only)")
    if spec.transposed:
        return Support.no("ONNX has no integer ConvTranspose (QLinearConv and ConvInteger are direct "
                          "convolutions only)")
    return Support.yes()


def _const(name: str, value: Any) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value), name)


def _conv_nodes(spec: ConvSpec, algorithm: str, x_name: str, y_name: str) -> tuple[list, list]:
    """The int8 convolution (and, for ConvInteger, its requantisation) from x_name to y_name."""
    from onnx import TensorProto, helper

    qp = quant_params(spec)
    attrs = dict(kernel_shape=list(spec.kernel_size), strides=list(spec.stride),
                 dilations=list(spec.dilation), group=spec.groups,
                 pads=[p[0] for p in spec.padding] + [p[1] for p in spec.padding])
    zero = np.array(0, np.int8)
    if algorithm != "int8-convinteger":
        inits = [_const("x_scale", np.float32(qp.x_scale)), _const("x_zero", zero),
                 _const("w_scale", qp.w_scale.astype(np.float32)),
                 _const("w_zero", np.zeros(spec.c_out, np.int8)),
                 _const("y_scale", np.float32(qp.y_scale)), _const("y_zero", zero)]
        node = helper.make_node("QLinearConv", [x_name, "x_scale", "x_zero", "w", "w_scale", "w_zero",
                                                "y_scale", "y_zero"], [y_name], **attrs)
        return [node], inits
    inits = [_const("x_zero", zero), _const("w_zero", zero),
             _const("multiplier", qp.multiplier.reshape(spec.c_out, *([1] * spec.dims))),
             _const("lo", np.float64(-128.0)), _const("hi", np.float64(127.0))]
    nodes = [helper.make_node("ConvInteger", [x_name, "w", "x_zero", "w_zero"], ["acc"], **attrs),
             helper.make_node("Cast", ["acc"], ["acc_f64"], to=TensorProto.DOUBLE),
             helper.make_node("Mul", ["acc_f64", "multiplier"], ["scaled"]),
             helper.make_node("Round", ["scaled"], ["rounded"]),
             helper.make_node("Clip", ["rounded", "lo", "hi"], ["clipped"]),
             helper.make_node("Cast", ["clipped"], [y_name], to=TensorProto.INT8)]
    return nodes, inits


def build_int8_model(spec: ConvSpec, w: np.ndarray, algorithm: str) -> Any:
    """The int8 ONNX model of ``spec``: input ``x`` and output ``y`` int8 in spec.layout (a
    Transpose node each way for channels_last), weights an initializer or a graph input."""
    import onnx
    from onnx import helper

    d = spec.dims
    nodes, x_name, y_name = [], "x", "y"
    if spec.layout == "channels_last":
        nodes.append(helper.make_node("Transpose", ["x"], ["x_ncx"], perm=[0, d + 1, *range(1, d + 1)]))
        x_name, y_name = "x_ncx", "y_ncx"
    conv, inits = _conv_nodes(spec, algorithm, x_name, y_name)
    nodes += conv
    if spec.layout == "channels_last":
        nodes.append(helper.make_node("Transpose", ["y_ncx"], ["y"], perm=[0, *range(2, d + 2), 1]))
    int8 = onnx.TensorProto.INT8
    inputs = [helper.make_tensor_value_info("x", int8, list(spec.input_shape))]
    if INT8_CONFIG[algorithm][0]:
        inits.append(_const("w", np.ascontiguousarray(w)))
    else:
        inputs.append(helper.make_tensor_value_info("w", int8, list(w.shape)))
    graph = helper.make_graph(nodes, "convbench-int8", inputs,
                              [helper.make_tensor_value_info("y", int8, list(spec.output_shape))],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                              producer_name="convbench")
    model.ir_version = _IR_VERSION
    return model


def int8_info(spec: ConvSpec, algorithm: str) -> dict[str, Any]:
    """What an int8 candidate's ``info`` adds: the scales and where the requantisation happens."""
    qp = quant_params(spec)
    where = ("in the graph, float64 Cast/Mul/Round/Clip/Cast (exactly convbench.quant.requantize)"
             if algorithm in EXACT_ALGORITHMS else "inside QLinearConv (ORT's float32 multiplier)")
    return {"x_scale": qp.x_scale, "y_scale": qp.y_scale, "zero_points": 0, "requantisation": where,
            "compute_dtype": "int8 (int32 accumulation)"}
