"""PyTorch's quantized int8 convolutions on the CPU, one candidate per quantized engine.

``torch.ops.quantized.conv{1,2,3}d`` (and ``conv_transpose{1,2}d`` where an engine takes
per-channel weights) with the weights prepacked in ``prepare()`` by the engine's
``conv*_prepack``, as a deployed quantized model holds them (precomputed weights):

* ``int8-x86`` -- torch's x86 engine (it picks FBGEMM or oneDNN per convolution at prepack);
* ``int8-fbgemm`` -- FBGEMM;
* ``int8-onednn`` -- oneDNN;
* ``int8-qnnpack`` -- QNNPACK.

An engine missing from ``torch.backends.quantized.supported_engines`` is refused by
``supports()`` (algorithm lists never import torch). The problem (:mod:`convbench.quant`) is
symmetric int8; torch's quantized convolutions take quint8 activations, so ``run()`` converts
the caller's int8 input to quint8 with zero point 128 (``x ^ 0x80``, one pass that also writes
the engines' channels-last order and any asymmetric padding, filled with the zero point),
runs the prepacked convolution with the problem's output scale and zero point 128 (quint8
output), and converts the output back to int8 in spec.layout (``^ 0x80`` again). Weights are
qint8 per output channel with the scales of :func:`convbench.quant.quant_params`; no bias.

What the engines refuse or get wrong (measured with torch 2.13, x86-64 with AVX-512 VNNI) is
refused here with the reason:

* per-channel transposed convolutions except QNNPACK's 1-D/2-D ungrouped ones ("Per Channel
  Quantization is currently disabled for transposed conv"; oneDNN also takes no output_padding);
  QNNPACK's grouped transposed convolution (it wants one weight scale per output channel, which a
  (C_in, C_out/g, *k) per-channel tensor cannot hold) and its 3-D one (wrong: 156-206 LSB off);
* FBGEMM's depthwise kernels (and the x86 engine where it picks FBGEMM: groups > 100): they sum
  pairs of uint8 x int8 products in saturating int16, wrong by up to 74 LSB on full-range data;
* x86 / FBGEMM / oneDNN on x86-64 CPUs without AVX-512 VNNI: the same saturation everywhere
  (measured by capping the ISA: ``ONEDNN_MAX_CPU_ISA``, ``FBGEMM_ENABLE_INSTRUCTIONS``);
* oneDNN (and x86 where it picks oneDNN) where no kernel tap along some spatial dimension ever
  reads the input (an all-zero output): it crashes or is wrong there.

QNNPACK (int16 arithmetic after subtracting the zero points) is exact on all of these.
"""
from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np

from convbench.quant import is_quantized, quant_params
from convbench.registry import Support
from convbench.spec import ConvSpec

from ._int8_rules import NO_VNNI_REASON, unread_dim, x86_without_vnni
from ._torch_interop import TorchOutputPrepared, to_torch
from ._torch_interop import torch_module as _torch

#: quantized engine per candidate, in the order the untuned default tries them
ENGINES = {"int8-x86": "x86", "int8-fbgemm": "fbgemm", "int8-onednn": "onednn", "int8-qnnpack": "qnnpack"}
INT8_ALGORITHMS = list(ENGINES)
_PREPACKED = "weights prepacked by the engine in prepare() (as a deployed model holds them)"
INT8_DESCRIPTIONS = {
    "int8-x86": f"torch quantized conv, x86 engine (FBGEMM or oneDNN per conv); {_PREPACKED}",
    "int8-fbgemm": f"torch quantized conv, FBGEMM engine; {_PREPACKED}",
    "int8-onednn": f"torch quantized conv, oneDNN engine; {_PREPACKED}",
    "int8-qnnpack": f"torch quantized conv, QNNPACK engine; {_PREPACKED}",
}
#: activation and output zero point of torch's quint8 tensors (int8 value + 128)
ZERO_POINT = 128
_FBGEMM_DW = ("FBGEMM's depthwise kernels sum pairs of uint8 x int8 products in saturating int16 "
              "(vpmaddubsw, no VNNI path) even on VNNI CPUs: 15-74 LSB off on 6-63% of the outputs of "
              "full-range int8 problems (measured with torch 2.13); torch's remedy is 7-bit activations "
              "(reduce_range), another problem")
_ONEDNN_UNREAD = ("no kernel tap reads the input along spatial dim {dim} (the output is all zeros): torch's "
                  "oneDNN quantized path crashes or is wrong on such convolutions (8 of 45 random ones, up "
                  "to 127 LSB off or a segfault, measured with torch 2.13; the x86 engine runs oneDNN here)")
_QNNPACK_3D_T = ("QNNPACK's 3-D transposed quantized convolution gives wrong results (156-206 LSB "
                 "off on 90-99% of the outputs, measured with torch 2.13)")


def quantized_support(spec: ConvSpec, algorithm: str) -> Support:
    """Whether the int8 candidate ``algorithm`` runs ``spec`` (torch must be importable)."""
    engine = ENGINES[algorithm]
    if not is_quantized(spec.dtype):
        return Support.no(f"{algorithm} is an int8 candidate; dtype {spec.dtype} runs the float ones")
    supported = _torch().backends.quantized.supported_engines
    if engine not in supported:
        return Support.no(f"quantized engine {engine!r} is not in this torch build's "
                          f"torch.backends.quantized.supported_engines ({', '.join(supported)})")
    if spec.transposed:
        return _transposed_support(spec, engine)
    if engine == "qnnpack":
        return Support.yes()
    if x86_without_vnni():
        return Support.no(NO_VNNI_REASON.format(engine=f"torch's {engine} engine"))
    if engine == "x86":  # torch's rule on a VNNI CPU with symmetric weights
        engine = "onednn" if spec.groups <= 100 else "fbgemm"
    if engine == "fbgemm" and fbgemm_depthwise_path(spec):
        return Support.no(_FBGEMM_DW)
    dead = unread_dim(spec) if engine == "onednn" else None
    if dead is not None:
        return Support.no(_ONEDNN_UNREAD.format(dim=dead))
    return Support.yes()


def _transposed_support(spec: ConvSpec, engine: str) -> Support:
    if engine != "qnnpack":
        extra = "; oneDNN also takes no output_padding" if engine == "onednn" else ""
        return Support.no(f"torch's {engine} engine has no per-channel transposed quantized convolution "
                          f"('Per Channel Quantization is currently disabled for transposed conv'{extra}); "
                          f"int8 weights are per output channel")
    if spec.groups > 1:
        return Support.no("QNNPACK's transposed quantized convolution wants one weight scale per output "
                          "channel, which a grouped (C_in, C_out/g, *k) per-channel tensor cannot hold "
                          "(one scale per index of one axis)")
    if spec.dims == 3:
        return Support.no(_QNNPACK_3D_T)
    return Support.yes()


def fbgemm_depthwise_path(spec: ConvSpec) -> bool:
    """Whether FBGEMM runs ``spec`` on its depthwise kernels (fbgemm's takeDepthWiseFastPath:
    2-D/3-D, groups = C_in a multiple of 8, 1 or 2 outputs per group, stride 1 or 2, dilation 1,
    kernel sizes 3, 5 or 7 with the last two equal, symmetric padding (K-1)/2). torch passes the
    symmetric part of the padding; the rest is explicit."""
    k = spec.kernel_size
    sym = [min(pb, pa) for pb, pa in spec.padding]
    return (spec.dims >= 2 and spec.groups == spec.c_in and spec.groups % 8 == 0
            and spec.c_out in (spec.groups, 2 * spec.groups)
            and all(s in (1, 2) for s in spec.stride) and all(d == 1 for d in spec.dilation)
            and all(n in (3, 5, 7) for n in k) and k[-1] == k[-2]
            and all(p == (n - 1) // 2 for p, n in zip(sym, k)))


def _uint8_alias(q: Any) -> Any:
    """A uint8 tensor sharing a quint8 tensor's memory (same shape and strides): no copy."""
    torch = _torch()
    return torch.empty(0, dtype=torch.uint8).set_(q.untyped_storage(), q.storage_offset(), q.shape, q.stride())


def _input_buffer(spec: ConvSpec, x_scale: float) -> tuple[Any, Any, bool]:
    """The quint8 input the convolution reads (logical (N, C, *sp), stored (N, *sp, C): the
    order the engines compute in), the uint8 view run() writes the converted input into, and
    whether that buffer carries the asymmetric part of the padding (filled with the zero point)."""
    torch = _torch()
    d = spec.dims
    extra = [(pb - min(pb, pa), pa - min(pb, pa)) for pb, pa in spec.padding]
    pad_in = not spec.transposed and any(a or b for a, b in extra)
    sizes = [n + (a + b if pad_in else 0) for n, (a, b) in zip(spec.input_size, extra)]
    with warnings.catch_warnings():  # torch 2.13: "quantized tensor creation ... deprecated"
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        stored = torch._empty_affine_quantized((spec.n, *sizes, spec.c_in), scale=x_scale,
                                               zero_point=ZERO_POINT, dtype=torch.quint8)
    q_in = stored.permute(0, d + 1, *range(1, d + 1))
    alias = _uint8_alias(q_in)
    alias.fill_(ZERO_POINT)
    if pad_in:
        alias = alias[(slice(None), slice(None)) + tuple(slice(a, a + n) for n, (a, _) in
                                                         zip(spec.input_size, extra))]
    return q_in, alias, pad_in


def _prepack(spec: ConvSpec, w: np.ndarray, engine: str) -> Any:
    """The engine's packed weights: qint8, one scale per output channel, no bias; the
    symmetric part of the padding (the rest is in the input buffer or cropped)."""
    torch = _torch()
    sym = [min(pb, pa) for pb, pa in spec.padding]
    scales = torch.from_numpy(quant_params(spec).w_scale.astype(np.float64))
    zeros = torch.zeros(spec.c_out, dtype=torch.long)
    axis = 1 if spec.transposed else 0  # transposed (ungrouped): (C_in, C_out, *k)
    name = f"conv_transpose{spec.dims}d" if spec.transposed else f"conv{spec.dims}d"
    prepack = getattr(torch.ops.quantized, f"{name}_prepack")
    prev = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
            wq = torch._make_per_channel_quantized_tensor(to_torch(w, "cpu"), scales, zeros, axis)
        if spec.transposed:
            return prepack(wq, None, list(spec.stride), sym, list(spec.output_padding),
                           list(spec.dilation), spec.groups)
        return prepack(wq, None, list(spec.stride), sym, list(spec.dilation), spec.groups)
    finally:
        torch.backends.quantized.engine = prev


def _output_crop(spec: ConvSpec) -> Optional[tuple]:
    """The slice of a transposed output that drops the asymmetric part of the padding."""
    extra = [(pb - min(pb, pa), pa - min(pb, pa)) for pb, pa in spec.padding]
    if not spec.transposed or not any(a or b for a, b in extra):
        return None
    full = [o + a + b for o, (a, b) in zip(spec.output_size, extra)]
    return (slice(None), slice(None)) + tuple(slice(a, f - b) for (a, b), f in zip(extra, full))


class TorchQuantizedPrepared(TorchOutputPrepared):
    """One prepacked torch quantized convolution; run() converts int8 <-> quint8 around it."""

    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str,
                 threads: Optional[int]) -> None:
        torch = _torch()
        self.spec, self.device, self.algorithm = spec, "cpu", algorithm
        self._tdevice = torch.device("cpu")
        engine = ENGINES[algorithm]
        qp = quant_params(spec)
        self._packed = _prepack(spec, w, engine)
        self._engine_id = _engine_id(engine)
        self._q_in, self._in_u8, pad_in = _input_buffer(spec, qp.x_scale)
        self._x_u8 = self._logical(to_torch(x, "cpu").view(torch.uint8))
        self._out = torch.empty(spec.output_shape, dtype=torch.int8)
        self._out_u8 = self._logical(self._out.view(torch.uint8))
        self._crop = _output_crop(spec)
        name = f"conv_transpose{spec.dims}d" if spec.transposed else f"conv{spec.dims}d"
        self._op = getattr(torch.ops.quantized, name)
        self._y_scale = float(qp.y_scale)
        self._y: Any = None
        self.info: dict[str, Any] = {
            "torch": torch.__version__, "algorithm": algorithm, "quantized_engine": engine,
            "op": f"quantized::{name}", "weights": "qint8 per output channel, prepacked in prepare()",
            "activations": f"quint8, zero point {ZERO_POINT} (int8 ^ 0x80 in run())",
            "output": f"quint8, zero point {ZERO_POINT}, converted to int8 in spec.layout in run()",
            "explicit_pad_in_run": pad_in, "crop_in_run": self._crop is not None,
            "x_scale": qp.x_scale, "y_scale": qp.y_scale,
            "threads": torch.get_num_threads(), "threads_requested": threads,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }
        if engine == "x86" and not spec.transposed:
            self.info["x86_picks"] = "onednn" if spec.groups <= 100 else "fbgemm"

    def _logical(self, t: Any) -> Any:
        """(N, C, *sp) view of a tensor stored in spec.layout."""
        if self.spec.layout == "channels_last":
            d = self.spec.dims
            return t.permute(0, d + 1, *range(1, d + 1))
        return t

    def run(self) -> None:
        torch = _torch()
        if torch._C._get_qengine() != self._engine_id:  # the packed weights pick the kernel; the
            torch._C._set_qengine(self._engine_id)        # global engine is kept consistent with them
        torch.bitwise_xor(self._x_u8, 0x80, out=self._in_u8)  # int8 -> quint8 (zero point 128)
        y = self._op(self._q_in, self._packed, self._y_scale, ZERO_POINT)
        if self._crop is not None:
            y = y[self._crop]
        torch.bitwise_xor(_uint8_alias(y), 0x80, out=self._out_u8)  # quint8 -> int8, spec.layout
        self._y = self._out

    def close(self) -> None:
        self._packed = self._q_in = self._in_u8 = self._x_u8 = self._out = self._out_u8 = self._y = None


def _engine_id(engine: str) -> int:
    """torch's internal id of a quantized engine (what torch._C._set_qengine takes)."""
    torch = _torch()
    prev = torch._C._get_qengine()
    torch.backends.quantized.engine = engine
    try:
        return torch._C._get_qengine()
    finally:
        torch._C._set_qengine(prev)
