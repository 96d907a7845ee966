"""OpenVINO's int8 convolution: FakeQuantize around a float convolution, lowered by the CPU plugin.

The way a quantized model reaches OpenVINO (NNCF / POT output): the caller's int8 input is
dequantised (``Convert(f32) -> Multiply(x_scale)``) and fake-quantized to 256 levels on
[-128, 127] x ``x_scale``; the weights are a float Constant (``w * w_scale[o]``) fake-quantized per
output channel to 255 levels on [-127, 127] x ``w_scale[o]``; the convolution's output is
fake-quantized to 256 levels on [-128, 127] x ``y_scale`` and turned back into int8
(``Multiply(1 / y_scale) -> Round(half to even) -> Convert(i8)``). The plugin's low-precision
transformations fold this into an int8 convolution (u8 activations with a zero point, i8 weights
packed at compile time, int32 accumulation) with the requantisation fused after it.

``prepare()`` reads the executed graph (``compiled_model.get_runtime_model()``) and refuses the
spec unless the convolution node runs an int8 kernel (``info["kernel"]``,
``info["executed_precision"]``). Refused up front, with what was measured (OpenVINO 2026.4):

* transposed convolutions: the plugin runs a FakeQuantize'd (Group)ConvolutionBackpropData on f32
  kernels for most shapes (every grouped one; 11 of 22 random ungrouped ones), and its int8 gemm
  deconvolution was wrong (9-23 LSB) on 3 of the 4 random shapes it ran;
* direct convolutions with a spatial dimension no kernel tap reads (oneDNN; an all-zero output);
* 3-D convolutions with one input channel per group, input depth 1, a deeper kernel and depth
  padding (its int8 kernel was 21-57 LSB off on 4 of 11 such random shapes);
* x86-64 CPUs without AVX-512 VNNI (oneDNN's int16 saturation; see ``_int8_rules``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from convbench.errors import UnsupportedError
from convbench.quant import is_quantized, quant_params
from convbench.registry import Support
from convbench.spec import ConvSpec

from ._int8_rules import NO_VNNI_REASON, unread_dim, x86_without_vnni

INT8_ALGORITHMS = ["int8"]
INT8_DESCRIPTIONS = {
    "int8": "FakeQuantize'd activations/weights/output around a float convolution, lowered by the "
            "plugin to an int8 kernel; weights a Constant quantized and packed at compile time",
}
_FLAT_DEPTH = ("the plugin's int8 3-D kernel (brgconv) is wrong for one input channel per group with an "
               "input depth of 1, a kernel depth > 1 and depth padding: 21-57 LSB off on 4 of 11 such "
               "random shapes, none wrong among 289 other 3-D ones (OpenVINO 2026.4)")
_TRANSPOSED = ("OpenVINO's CPU plugin runs a FakeQuantize'd (Group)ConvolutionBackpropData on f32 kernels "
               "for most shapes (every grouped one, 11 of 22 random ungrouped ones) and its int8 gemm "
               "deconvolution was 9-23 LSB off on 3 of 4 random shapes (OpenVINO 2026.4): no int8 "
               "transposed candidate")


def int8_support(spec: ConvSpec, algorithm: str) -> Support:
    """Whether ``algorithm`` (float or int8) runs ``spec`` as far as int8 goes; no import."""
    int8_algo = algorithm in INT8_ALGORITHMS
    if not is_quantized(spec.dtype):
        return Support.no(f"{algorithm} is an int8 candidate; dtype {spec.dtype} runs the float ones") \
            if int8_algo else Support.yes()
    if not int8_algo:
        return Support.no(f"{algorithm} is a float candidate; int8 problems run the int8 candidate "
                          f"(FakeQuantize lowered to an int8 kernel)")
    if spec.transposed:
        return Support.no(_TRANSPOSED)
    if x86_without_vnni():
        return Support.no(NO_VNNI_REASON.format(engine="the plugin's oneDNN int8 kernel"))
    dead = unread_dim(spec)
    if dead is not None:
        return Support.no(f"no kernel tap reads the input along spatial dim {dead} (the output is all "
                          f"zeros): oneDNN's int8 convolution is wrong on such shapes (40 LSB off on one "
                          f"of 200 random specs, OpenVINO 2026.4; torch's oneDNN engine likewise)")
    if _flat_depth_single_channel(spec):
        return Support.no(_FLAT_DEPTH)
    return Support.yes()


def _flat_depth_single_channel(spec: ConvSpec) -> bool:
    """3-D, one input channel per group, an input depth of 1 under a deeper kernel with depth
    padding: the shapes the plugin's int8 brgconv kernel got wrong."""
    return (spec.dims == 3 and spec.c_in == spec.groups and spec.input_size[0] == 1
            and spec.kernel_size[0] > 1 and any(spec.padding[0]))


def _fake_quantize(node: Any, lo: Any, hi: Any, levels: int) -> Any:
    import openvino.opset13 as ops

    lo, hi = ops.constant(np.asarray(lo, np.float32)), ops.constant(np.asarray(hi, np.float32))
    return ops.fake_quantize(node, lo, hi, lo, hi, levels)


def _weights(spec: ConvSpec, w: np.ndarray) -> Any:
    """The float weights w * w_scale[o], fake-quantized per output channel (grouped: the
    (G, C_out/G, C_in/G, *k) layout of GroupConvolution)."""
    import openvino.opset13 as ops

    scale = quant_params(spec).w_scale.astype(np.float32)
    g, ones = spec.groups, [1] * (spec.dims + 1)
    wg = w.reshape(g, spec.c_out // g, *w.shape[1:]) if g > 1 else w
    sc = scale.reshape(g, spec.c_out // g, *ones) if g > 1 else scale.reshape(spec.c_out, *ones)
    return _fake_quantize(ops.constant(wg.astype(np.float32) * sc), -127 * sc, 127 * sc, 255)


def build_int8_model(spec: ConvSpec, w: np.ndarray) -> tuple[Any, list, str]:
    """The FakeQuantize model of ``spec`` (int8 in and out, spec.layout), its parameter and the
    convolution op's type name."""
    import openvino as ov
    import openvino.opset13 as ops

    qp, d = quant_params(spec), spec.dims
    px = ops.parameter(list(spec.input_shape), ov.Type.i8, name="x")
    data = px
    if spec.layout == "channels_last":
        data = ops.transpose(px, ops.constant(np.array([0, d + 1, *range(1, d + 1)], np.int64)))
    xf = ops.multiply(ops.convert(data, ov.Type.f32), ops.constant(np.float32(qp.x_scale)))
    xq = _fake_quantize(xf, -128 * qp.x_scale, 127 * qp.x_scale, 256)
    op = ops.group_convolution if spec.groups > 1 else ops.convolution
    conv = op(xq, _weights(spec, w), list(spec.stride), pads_begin=[p[0] for p in spec.padding],
              pads_end=[p[1] for p in spec.padding], dilations=list(spec.dilation), auto_pad="explicit")
    yq = _fake_quantize(conv, -128 * qp.y_scale, 127 * qp.y_scale, 256)
    y = ops.multiply(yq, ops.constant(np.float32(1.0 / qp.y_scale)))
    y = ops.convert(ops.round(y, "half_to_even"), ov.Type.i8)
    if spec.layout == "channels_last":
        y = ops.transpose(y, ops.constant(np.array([0, *range(2, d + 2), 1], np.int64)))
    return ov.Model([y.output(0)], [px], "convbench-int8"), [px], conv.get_type_name()


def check_int8_executed(spec: ConvSpec, facts: dict) -> dict[str, Any]:
    """The int8 facts of a compiled model's runtime graph; UnsupportedError when its
    convolution does not run an int8 kernel (then it is no int8 candidate)."""
    kernel, precision = facts.get("kernel") or "", facts.get("executed_precision") or ""
    if "i8" not in kernel.lower() or precision.lower() not in ("u8", "i8"):
        raise UnsupportedError(f"openvino:int8@cpu: the plugin did not lower {spec.label} to an int8 "
                               f"convolution (executed kernel {kernel or '?'}, precision {precision or '?'})")
    qp = quant_params(spec)
    return {"x_scale": qp.x_scale, "y_scale": qp.y_scale, "int8_kernel": True,
            "weights_quantization": "FakeQuantize per output channel, 255 levels (symmetric int8)"}
