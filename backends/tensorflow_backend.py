"""TensorFlow convolutions: eager, ``tf.function`` and XLA (``tf.function(jit_compile=True)``).

Every candidate runs the same TensorFlow ops (``tf.raw_ops``): ``Conv2D`` (1-D problems run as
2-D with a height of 1, as ``tf.nn.conv1d`` does; grouped when groups > 1),
``DepthwiseConv2dNative`` for depthwise 1-D/2-D problems (channel multiplier when
c_out = k * c_in) where TensorFlow has that kernel for the problem (otherwise grouped
``Conv2D``; ``info["op"]`` says which), ``Conv3D``, and the transposed convolutions
``Conv2DBackpropInput`` / ``Conv3DBackpropInputV2`` with an explicit output shape.
Only the execution mode differs between candidates:

* ``eager`` -- op by op from Python;
* ``function`` -- the whole ``run()`` body traced once with ``tf.function`` (in ``prepare()``);
* ``xla`` -- the same compiled by XLA (``jit_compile=True``, compiled in ``prepare()``).

Padding is always the spec's own: ``VALID`` or ``SAME`` only where TensorFlow's padding for
them is exactly the spec's (TensorFlow's SAME puts an odd extra row after, e.g. on a 7x7
stride-2 stem), otherwise ``EXPLICIT`` paddings (1-D, 2-D) or a ``tf.pad`` inside ``run()``
(3-D: ``Conv3D`` has no explicit padding). Transposed convolutions compute the full (VALID) output and crop it inside
``run()``. Weights are converted from PyTorch's layout to TensorFlow's (OIHW -> HWIO) in
``prepare()``: they are constants of the layer.

TensorFlow computes channels-last (NHWC) on the CPU: a channels_first spec is served by
transposing the input and the output inside ``run()`` (``info["transpose_in_run"]``). On a GPU
both layouts run natively (``data_format`` NCHW / NHWC).

TensorFlow's CPU kernels do not cover every combination (measured with TensorFlow 2.21: no
grouped 3-D convolution; with float64/float16 no dilated 3-D or dilated transposed convolution,
no grouped transposed convolution; depthwise kernel only with equal strides ...), and its graph shape
inference rejects a few strided, dilated 3-D problems. Whether a candidate supports a spec is
therefore asked of TensorFlow itself, once per spatial problem: the same problem at batch 1 with
a few channels is run eagerly (eager, function) and traced into a graph (function, xla);
TensorFlow's error, if any, becomes the reason. XLA lowers every convolution that traces.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
from typing import Any, Callable, Iterator, Optional

import numpy as np

from convbench.memory import MemoryEstimate
from convbench.registry import Backend, Capabilities, Prepared, Robustness, Support
from convbench.spec import FLOAT_DTYPES, ConvSpec

ALGORITHMS = ["eager", "function", "xla"]
_NO_GPU = "no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty)"

_TF: Any = None
_REQUESTED_THREADS: Optional[int] = None
_THREAD_NOTES: list[str] = []
_PROBES: dict[tuple, Support] = {}


@contextlib.contextmanager
def _stderr_to_file() -> Iterator[Any]:
    """Send file descriptor 2 (C++ logging too) to a temporary file for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield tmp
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _captured_lines(captured: Any) -> list[str]:
    captured.seek(0)
    return [line for line in captured.read().decode(errors="replace").splitlines() if line.strip()]


def _tf() -> Any:
    """Import TensorFlow once, keeping its start-up log lines out of our output."""
    global _TF
    if _TF is not None:
        return _TF
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_to_file() as captured:
        try:
            import tensorflow as tf
        except ImportError:
            raise
        except Exception as exc:
            captured.seek(0)
            tail = captured.read().decode(errors="replace").strip().splitlines()[-3:]
            raise ImportError(f"importing tensorflow failed: {type(exc).__name__}: {exc} "
                              f"{' | '.join(tail)}") from exc
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    tf.get_logger().setLevel("ERROR")
    for gpu in tf.config.list_physical_devices("GPU"):
        try:  # take GPU memory as needed instead of all of it at start-up
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):
            pass
    _TF = tf
    if _REQUESTED_THREADS is not None:
        _apply_threads(_REQUESTED_THREADS)
    return tf


def _apply_threads(threads: int) -> None:
    tf = _TF
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        # one conv op has no inter-op parallelism to exploit; as convbench.environment does
        tf.config.threading.set_inter_op_parallelism_threads(1 if threads == 1 else 2)
    except RuntimeError as exc:  # TensorFlow fixes its thread pools when it initialises
        note = (f"set_threads({threads}) came after TensorFlow initialised; it keeps "
                f"intra_op={_effective(tf.config.threading.get_intra_op_parallelism_threads())}, "
                f"inter_op={_effective(tf.config.threading.get_inter_op_parallelism_threads())} ({exc})")
        if note not in _THREAD_NOTES:
            _THREAD_NOTES.append(note)


def _effective(configured: int) -> int:
    """TensorFlow's thread count: 0 means its default, one thread per logical core."""
    return configured if configured > 0 else (os.cpu_count() or 1)


def _clean_error(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*name:\s*$", "", text)
    return text.strip()


def _tf_device(device: str) -> str:
    return "/GPU:0" if device == "cuda" else "/CPU:0"


def _same_pads(spec: ConvSpec) -> tuple[tuple[int, int], ...]:
    """TensorFlow's SAME padding for this (direct) problem."""
    pads = []
    for i in range(spec.dims):
        ek = spec.dilation[i] * (spec.kernel_size[i] - 1) + 1
        s = spec.stride[i]
        out = -(-spec.input_size[i] // s)
        total = max((out - 1) * s + ek - spec.input_size[i], 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _padding_mode(spec: ConvSpec) -> str:
    """How a direct convolution is padded: VALID, SAME (only where exactly equal), EXPLICIT
    (Conv2D / DepthwiseConv2dNative) or PAD (tf.pad, then VALID: Conv3D has no explicit padding)."""
    if all(p == (0, 0) for p in spec.padding):
        return "VALID"
    if spec.padding == _same_pads(spec):
        return "SAME"
    return "EXPLICIT" if spec.dims <= 2 else "PAD"


class _Graph:
    """The TensorFlow computation of one spec: weights converted, ops and attributes fixed."""

    def __init__(self, spec: ConvSpec, w: np.ndarray, device: str,
                 channels_first: Optional[bool] = None, depthwise_op: bool = True) -> None:
        tf = _tf()
        self.spec = spec
        d = spec.dims
        # TensorFlow computes channels-last on the CPU; on a GPU both layouts are native.
        # (channels_first=True forces the GPU's NCHW graph: XLA on the CPU can run it, tests do.)
        if channels_first is None:
            channels_first = device == "cuda" and spec.layout == "channels_first"
        if channels_first and spec.layout != "channels_first":
            raise ValueError("channels_first compute needs a channels_first spec")
        self.channels_first = channels_first
        self.transpose = spec.layout == "channels_first" and not self.channels_first
        self.lift = d == 1  # 1-D runs as 2-D with a height of 1 (as tf.nn.conv1d does)
        D = 2 if self.lift else d
        lift = (lambda v, one: (one, *v)) if self.lift else (lambda v, one: tuple(v))
        ks = lift(spec.kernel_size, 1)
        st = lift(spec.stride, 1)
        dl = lift(spec.dilation, 1)
        pads = lift(spec.padding, (0, 0))
        ops_ = lift(spec.output_padding, 0)
        insz = lift(spec.input_size, 1)

        def full(vals: tuple, fill: Any) -> list:
            return [fill, fill, *vals] if self.channels_first else [fill, *vals, fill]

        self.fmt = {2: "NCHW", 3: "NCDHW"}[D] if self.channels_first else {2: "NHWC", 3: "NDHWC"}[D]
        self.strides = full(st, 1)
        self.dilations = full(dl, 1)
        self.pad: Optional[list] = None
        self.crop: Optional[tuple] = None
        self.crop_pad: Optional[list] = None
        self.depthwise = depthwise_op and _depthwise_kind(spec)
        k_axes = tuple(range(2, 2 + d))

        if spec.transposed:
            wt = np.transpose(w, (*k_axes, 1, 0))  # (C_in, C_out/g, *k) -> (*k, C_out/g, C_in)
            self.op = "Conv2DBackpropInput" if D == 2 else "Conv3DBackpropInputV2"
            eks = [dd * (k - 1) + 1 for dd, k in zip(dl, ks)]
            full_tf = [(i - 1) * s + ek + min(op, s - 1) for i, s, ek, op in zip(insz, st, eks, ops_)]
            full_out = [(i - 1) * s + ek + op for i, s, ek, op in zip(insz, st, eks, ops_)]
            self.input_sizes = full([*full_tf], None)
            self.input_sizes[0] = spec.n
            self.input_sizes[1 if self.channels_first else -1] = spec.c_out
            self.padding = "VALID"
            ends = [f - pa for f, (_, pa) in zip(full_out, pads)]
            extra = [max(0, e - f) for e, f in zip(ends, full_tf)]
            if any(extra):  # output_padding >= stride (possible with dilation): zero rows at the end
                self.crop_pad = full([(0, e) for e in extra], (0, 0))
            if any(pb for pb, _ in pads) or any(e != f for e, f in zip(ends, full_tf)):
                self.crop = tuple(full([slice(pb, e) for (pb, _), e in zip(pads, ends)], slice(None)))
        else:
            if self.depthwise:
                mult = spec.c_out // spec.c_in
                # (C_in*mult, 1, *k) -> (C_in, mult, *k) -> (*k, C_in, mult)
                wt = np.transpose(w.reshape(spec.c_in, mult, *spec.kernel_size), (*k_axes, 0, 1))
                self.op = "DepthwiseConv2dNative"
            else:
                wt = np.transpose(w, (*k_axes, 1, 0))  # (C_out, C_in/g, *k) -> (*k, C_in/g, C_out)
                self.op = "Conv2D" if D == 2 else "Conv3D"
            self.explicit: list[int] = []
            mode = _padding_mode(spec)
            self.padding = "VALID" if mode == "PAD" else mode
            if mode == "EXPLICIT":
                self.explicit = [v for pair in full(pads, (0, 0)) for v in pair]
            elif mode == "PAD":  # Conv3D has no explicit padding
                self.pad = full(pads, (0, 0))
        if self.lift:
            wt = wt.reshape(1, *wt.shape)
        with tf.device(_tf_device(device)):
            self.w = tf.constant(np.ascontiguousarray(wt))
        dd_ = spec.dims
        self.perm_in = (0, *range(2, dd_ + 2), 1)
        self.perm_out = (0, dd_ + 1, *range(1, dd_ + 1))
        self.lift_axis = 2 if self.channels_first else 1

    def fn(self) -> Callable[[Any], Any]:
        """y = conv(x) with x and y in spec.layout, layout changes, padding and crop included."""
        tf = _tf()
        raw = tf.raw_ops
        w, op, strides, dilations, fmt = self.w, self.op, self.strides, self.dilations, self.fmt
        padding = self.padding

        if op in ("Conv2D", "DepthwiseConv2dNative"):
            fn = getattr(raw, op)
            explicit = self.explicit
            conv = lambda x: fn(input=x, filter=w, strides=strides, padding=padding,
                                explicit_paddings=explicit, data_format=fmt, dilations=dilations)
        elif op == "Conv3D":
            conv = lambda x: raw.Conv3D(input=x, filter=w, strides=strides, padding=padding,
                                        data_format=fmt, dilations=dilations)
        else:
            fn = getattr(raw, op)
            sizes = tf.constant(self.input_sizes, dtype=tf.int32)
            conv = lambda x: fn(input_sizes=sizes, filter=w, out_backprop=x, strides=strides,
                                padding=padding, data_format=fmt, dilations=dilations)

        steps: list[Callable[[Any], Any]] = []
        if self.transpose:
            steps.append(lambda x, p=self.perm_in: tf.transpose(x, p))
        if self.lift:
            steps.append(lambda x, a=self.lift_axis: tf.expand_dims(x, a))
        if self.pad is not None:
            steps.append(lambda x, p=self.pad: tf.pad(x, p))
        steps.append(conv)
        if self.crop_pad is not None:
            steps.append(lambda x, p=self.crop_pad: tf.pad(x, p))
        if self.crop is not None:
            steps.append(lambda x, c=self.crop: x[c])
        if self.lift:
            steps.append(lambda x, a=self.lift_axis: tf.squeeze(x, a))
        if self.transpose:
            steps.append(lambda x, p=self.perm_out: tf.transpose(x, p))
        if len(steps) == 1:
            return conv

        def run(x: Any) -> Any:
            for step in steps:
                x = step(x)
            return x

        return run


class TensorFlowPrepared(Prepared):
    """One TensorFlow convolution, traced/compiled, inputs on the device."""

    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str,
                 depthwise_op: bool = True) -> None:
        tf = _tf()
        self.spec = spec
        self.device = device
        self.algorithm = algorithm
        self._dev = _tf_device(device)
        graph = _Graph(spec, w, device, depthwise_op=depthwise_op)
        body = graph.fn()
        # autograph off: the body has no tensor-dependent Python control flow to convert
        if algorithm == "function":
            body = tf.function(body, autograph=False)
        elif algorithm == "xla":
            body = tf.function(body, jit_compile=True, autograph=False)
        self._fn = body
        with tf.device(self._dev):
            self._x = tf.constant(np.ascontiguousarray(x))
        self._y: Any = None
        # one call now: traces/compiles (not in the timed region) and lets TensorFlow print its
        # one-time kernel-fallback lines into a file; they are kept in info["tf_log"]
        with _stderr_to_file() as captured:
            self.run()
            self.synchronize()
            sys.stderr.flush()
            log = _captured_lines(captured)
        threading = tf.config.threading
        self.info: dict[str, Any] = {
            "tensorflow": tf.__version__,
            "algorithm": algorithm,
            "device": self._dev,
            "op": graph.op,
            "data_format": graph.fmt,
            "padding": graph.padding,
            "transpose_in_run": graph.transpose,
            "pad_in_run": graph.pad is not None,
            "crop_in_run": graph.crop is not None,
            "conv1d_as_conv2d": graph.lift,
            "intra_op_threads": _effective(threading.get_intra_op_parallelism_threads()),
            "inter_op_threads": _effective(threading.get_inter_op_parallelism_threads()),
            "threads_requested": _REQUESTED_THREADS,
            "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        }
        if _THREAD_NOTES:
            self.info["thread_notes"] = list(_THREAD_NOTES)
        if log:
            self.info["tf_log"] = log

    def run(self) -> None:
        with _TF.device(self._dev):
            self._y = self._fn(self._x)

    def synchronize(self) -> None:
        if self.device == "cuda":
            sync = getattr(_TF.test.experimental, "sync_devices", None)
            if sync is not None:
                sync()
            elif self._y is not None:
                _TF.reduce_sum(_TF.reshape(self._y, [-1])[:1]).numpy()

    def result(self) -> np.ndarray:
        if self._y is None:
            raise RuntimeError("result() called before run()")
        return np.array(self._y.numpy(), copy=True)

    def close(self) -> None:
        self._x = self._y = self._fn = None


class TensorFlowBackend(Backend):
    """TensorFlow's convolutions in eager mode, as a tf.function and compiled by XLA."""

    name = "tensorflow"
    family = "tensorflow"
    description = "TensorFlow tf.raw_ops convolutions (oneDNN/Eigen on CPU, cuDNN on GPU): eager, tf.function, XLA"
    install_hint = "pip install convbench[tensorflow]"
    capabilities = Capabilities(dims=frozenset({1, 2, 3}), dtypes=frozenset(FLOAT_DTYPES),
                                devices=frozenset({"cpu", "cuda"}))
    robustness = Robustness.FRAMEWORK
    framework_modules = ("tensorflow", "keras")
    version_distributions = {"tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu",
                                            "tensorflow-macos", "tf-nightly", "tf-nightly-cpu")}
    #: untuned fallback order per device (lower first)
    _RANKS = {"cpu": 1.0, "cuda": 2.0}

    def heuristic_rank(self, spec: ConvSpec, device: str) -> float:
        return self._RANKS.get(device, super().heuristic_rank(spec, device))

    def device_support(self, device: str) -> Support:
        if device == "cuda" and not _tf().config.list_physical_devices("GPU"):
            return Support.no(_NO_GPU)
        return super().device_support(device)

    def _check_available(self) -> Support:
        try:
            _tf()
        except ImportError as exc:
            return Support.no(f"tensorflow is not installed or failed to import ({exc})")
        return Support.yes()

    def algorithms(self, device: str = "cpu") -> list[str]:
        return list(ALGORITHMS) if device in ("cpu", "cuda") else []

    def _supports(self, spec: ConvSpec, device: str, algorithm: str) -> Support:
        avail = self.available()
        if not avail:
            return avail
        dev = self.device_support(device)
        return _probe(spec, device, algorithm) if dev else dev

    def memory_estimate(self, spec: ConvSpec, device: str, algorithm: str) -> MemoryEstimate:
        """:func:`._memory.framework_estimate` with an im2col workspace for one image; on the
        CPU a channels_first spec is transposed in run() (layout conversions), a padded 3-D
        problem is padded by tf.pad; XLA expands a grouped (not depthwise) convolution's
        weights into dense ones (C_out x C_in x k)."""
        from ._memory import framework_estimate

        est = framework_estimate(
            spec, columns_images=1,
            layout_copies=device == "cpu" and spec.layout == "channels_first",
            padded_input=spec.dims == 3 and not spec.transposed and _padding_mode(spec) == "PAD")
        if algorithm == "xla" and spec.groups > 1 and not spec.depthwise:
            dense = spec.c_out * spec.c_in * math.prod(spec.kernel_size) * spec.itemsize
            est = est + MemoryEstimate({"dense grouped weights": dense})
        return est

    def set_threads(self, threads: int) -> None:
        """``threads`` intra-op threads (inter-op: 1, or 2 when threads > 1).

        TensorFlow fixes its thread pools at its first op: call this before anything runs;
        a later call is reported in ``info["thread_notes"]`` instead of taking effect.
        """
        global _REQUESTED_THREADS
        _REQUESTED_THREADS = int(threads)
        if _TF is not None:
            _apply_threads(_REQUESTED_THREADS)

    def versions(self) -> dict[str, str]:
        if not self.available():
            return {}
        tf = _tf()
        out = {"tensorflow": tf.__version__}
        build = tf.sysconfig.get_build_info()
        for key in ("cuda_version", "cudnn_version"):
            if build.get(key):
                out[key.split("_")[0]] = str(build[key])
        return out

    def _prepare(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str) -> Prepared:
        return TensorFlowPrepared(spec, x, w, algorithm, device,
                                  depthwise_op=_use_depthwise_op(spec, device, algorithm))


def _probe_spec(spec: ConvSpec) -> ConvSpec:
    """The same spatial problem (sizes, kernel, stride, padding, dilation, transposition, dtype,
    layout) with batch 1 and a handful of channels in the same grouping (dense, grouped,
    depthwise with the same channel multiplier up to 2): it meets the same TensorFlow kernels."""
    if spec.groups == 1:
        c_in, c_out, g = min(spec.c_in, 2), min(spec.c_out, 3), 1
    elif spec.depthwise:
        g = c_in = 2
        c_out = 2 * min(spec.c_out // spec.c_in, 2)
    else:
        g = 2
        c_in, c_out = 2 * min(spec.c_in // spec.groups, 2), 2 * min(spec.c_out // spec.groups, 3)
    return spec.replace(n=1, c_in=c_in, c_out=c_out, groups=g, name="")


def _probe(spec: ConvSpec, device: str, algorithm: str) -> Support:
    """Ask TensorFlow whether it can run this kind of convolution in this mode (cached).

    eager: run the reduced problem op by op (is there a kernel?); xla: trace the graph (the
    graph's shape inference must accept it and agree on the output shape; XLA then lowers any
    convolution); function: both.
    """
    tiny = _probe_spec(spec)
    dw = _use_depthwise_op(spec, device, algorithm)
    checks = {"eager": ("run",), "function": ("run", "trace"), "xla": ("trace",)}[algorithm]
    for check in checks:
        key = (device, check, tiny.key, dw)
        if key not in _PROBES:
            _PROBES[key] = _probe_once(tiny, device, check, dw)
        if not _PROBES[key]:
            return _PROBES[key]
    return Support.yes()


def _depthwise_kind(spec: ConvSpec) -> bool:
    """A problem DepthwiseConv2dNative can express: depthwise, direct, 1-D or 2-D."""
    return spec.depthwise and not spec.transposed and spec.dims <= 2


def _use_depthwise_op(spec: ConvSpec, device: str, algorithm: str) -> bool:
    """DepthwiseConv2dNative where TensorFlow runs it for this problem, else grouped Conv2D.

    TensorFlow's CPU depthwise kernel refuses unequal strides (every strided 1-D problem, run
    as 2-D) and, for float64/float16, dilation; its grouped Conv2D runs those.
    """
    if not _depthwise_kind(spec):
        return False
    if algorithm == "xla":
        return True
    tiny = _probe_spec(spec)
    key = (device, "run", tiny.key, True)
    if key not in _PROBES:
        _PROBES[key] = _probe_once(tiny, device, "run", True)
    return bool(_PROBES[key])


def _probe_once(tiny: ConvSpec, device: str, check: str, depthwise_op: bool) -> Support:
    from convbench.reference import make_inputs

    tf = _tf()
    x, w = make_inputs(tiny, seed=0)
    what = "kernel" if check == "run" else "graph (shape inference)"
    try:
        if check == "run":  # TensorFlowPrepared runs it once, its log lines captured
            p = TensorFlowPrepared(tiny, x, w, "eager", device, depthwise_op=depthwise_op)
            shape = tuple(p.result().shape)
        else:  # building the ops in a graph runs TensorFlow's shape inference, as tracing does
            with tf.Graph().as_default(), tf.device(_tf_device(device)):
                xs = tf.compat.v1.placeholder(tf.as_dtype(tiny.dtype), tiny.input_shape)
                _Graph(tiny, w, device, depthwise_op=depthwise_op).fn()(xs)
                shape = None
    except Exception as exc:  # TensorFlow's refusal is the reason
        return Support.no(f"TensorFlow {tf.__version__}'s {device.upper()} {what} rejects this kind of "
                          f"convolution (probed at batch 1, {tiny.c_in}->{tiny.c_out} channels: "
                          f"{_clean_error(exc)})")
    if shape is not None and shape != tuple(tiny.output_shape):
        return Support.no(f"TensorFlow {tf.__version__}'s {device.upper()} {what} gives output shape "
                          f"{shape} for this kind of convolution instead of {tiny.output_shape} "
                          f"(probed at batch 1, {tiny.c_in}->{tiny.c_out} channels)")
    # (a wrong *static* shape from graph shape inference is not refused: TF 2.21 infers wrong
    # static shapes for some strided, dilated Conv3D graphs whose computed outputs are right)
    return Support.yes()
