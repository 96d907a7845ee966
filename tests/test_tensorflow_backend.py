"""The TensorFlow backend on the CPU: eager, tf.function and XLA against the float64 reference."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import convbench as cb
from convbench.errors import UnsupportedError

# lazy imports and the install hint: test_testing.py checks every backend's declarations
pytest.importorskip("tensorflow", reason="tensorflow is not installed: pip install convbench[tensorflow]")

from convbench_backends import tensorflow_backend as tfb  # noqa: E402


@pytest.fixture(scope="module")
def backend():
    return cb.get_backend("tensorflow")


# each spec takes a different path through the graph builder
SPREAD = [
    # 1-D as 2-D, EXPLICIT asymmetric padding, stride
    cb.ConvSpec(n=2, c_in=4, c_out=6, input_size=(11,), kernel_size=3, stride=2, padding=[(1, 2)]),
    # 2-D grouped, stride + dilation, EXPLICIT
    cb.ConvSpec(n=2, c_in=4, c_out=6, input_size=(9, 8), kernel_size=3, stride=(2, 1),
                padding=[(1, 2), (0, 1)], dilation=2, groups=2),
    # depthwise with channel multiplier 2, SAME
    cb.ConvSpec(n=1, c_in=4, c_out=8, input_size=(9, 8), kernel_size=3, padding=1, groups=4),
    # 3-D, asymmetric padding -> tf.pad + VALID
    cb.ConvSpec(n=1, c_in=3, c_out=4, input_size=(5, 6, 4), kernel_size=(3, 2, 2), stride=2,
                padding=[(1, 0), (0, 1), (1, 1)]),
    # 7x7/2 with pad 3: TF's SAME would pad (2, 3) here; must stay EXPLICIT (3, 3)
    cb.ConvSpec(n=1, c_in=3, c_out=4, input_size=(12, 12), kernel_size=7, stride=2, padding=3),
    # transposed, asymmetric padding -> crop
    cb.ConvSpec(n=2, c_in=4, c_out=6, input_size=(5, 4), kernel_size=3, stride=2,
                padding=[(2, 0), (0, 1)], transposed=True, output_padding=(1, 1)),
    # strided depthwise 1-D (unequal 2-D strides once lifted): some dtypes need the grouped Conv2D
    cb.ConvSpec(n=1, c_in=4, c_out=8, input_size=(11,), kernel_size=3, stride=2, padding=1, groups=4),
    # transposed 1-D with output_padding >= stride (dilation 2): zero rows appended after TF's output
    cb.ConvSpec(n=2, c_in=3, c_out=4, input_size=(7,), kernel_size=3, dilation=2, padding=[(1, 0)],
                transposed=True, output_padding=1),
]


def _cases():
    for i, s in enumerate(SPREAD):
        for dt in ("float64", "float32", "float16", "bfloat16"):
            for lay in ("channels_first", "channels_last"):
                yield pytest.param(s.replace(dtype=dt, layout=lay), id=f"s{i}-{dt}-{lay}")


@pytest.mark.parametrize("spec", list(_cases()))
def test_eager_matches_reference(backend, spec):
    x, w = cb.make_inputs(spec, seed=1)
    sup = backend.supports(spec, "cpu", "eager")
    if not sup:  # only TensorFlow's own missing kernels may be refused, with TF's reason
        assert "TensorFlow" in sup.reason and "kernel" in sup.reason
        assert spec.dtype in ("float64", "float16") and (spec.transposed or spec.dims == 3), sup.reason
        with pytest.raises(UnsupportedError):
            backend.prepare(spec, x, w, algorithm="eager")
        return
    p = backend.prepare(spec, x, w, algorithm="eager")
    p.run()
    y = p.result()
    assert y.shape == spec.output_shape and y.dtype == x.dtype
    assert cb.relative_error(y, cb.reference(spec, x, w)) <= backend.tolerance(spec, "cpu", "eager")
    assert p.info["transpose_in_run"] == (spec.layout == "channels_first")


@pytest.mark.parametrize("algo", ["function", "xla"])
@pytest.mark.parametrize("i", [0, 4, 5, 7])
def test_compiled_modes_match_reference(backend, algo, i):
    spec = SPREAD[i].replace(layout="channels_first")
    x, w = cb.make_inputs(spec, seed=2)
    y = cb.convolve(spec, x, w, backend="tensorflow", algorithm=algo)
    assert cb.relative_error(y, cb.reference(spec, x, w)) <= 1e-4


def test_stem_padding_is_explicit_not_same(backend):
    spec = SPREAD[4]
    x, w = cb.make_inputs(spec)
    p = backend.prepare(spec, x, w)
    assert p.info["padding"] == "EXPLICIT"
    s3 = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(6, 6), kernel_size=3, padding=1)
    x, w = cb.make_inputs(s3)
    assert backend.prepare(s3, x, w).info["padding"] == "SAME"  # identical to the spec's here


@pytest.mark.parametrize("i", [1, 2, 4, 5, 6, 7])
def test_gpu_nchw_graph_via_xla_on_cpu(i):
    """The NCHW graph a GPU runs (paddings, output sizes and crops in NCHW order), run by XLA here."""
    import tensorflow as tf

    spec = SPREAD[i]
    x, w = cb.make_inputs(spec, seed=3)
    g = tfb._Graph(spec, w, "cpu", channels_first=True)
    assert g.fmt.startswith("NC") and not g.transpose
    y = tf.function(g.fn(), jit_compile=True)(tf.constant(x)).numpy()
    assert cb.relative_error(y, cb.reference(spec, x, w)) <= 1e-4


def test_depthwise_op_where_tensorflow_has_the_kernel(backend):
    import tensorflow as tf

    for dt in ("float32", "float64"):
        spec = SPREAD[6].replace(dtype=dt)
        x, w = cb.make_inputs(spec)
        p = backend.prepare(spec, x, w, algorithm="eager")
        p.run()
        assert cb.relative_error(p.result(), cb.reference(spec, x, w)) <= backend.tolerance(spec, "cpu", "eager")
        # TensorFlow's own depthwise op, called directly: used exactly when it runs this problem
        try:
            tf.raw_ops.DepthwiseConv2dNative(
                input=tf.zeros((1, 1, 11, 4), dt), filter=tf.zeros((1, 3, 4, 2), dt),
                strides=[1, 1, 2, 1], padding="EXPLICIT", explicit_paddings=[0, 0, 0, 0, 1, 1, 0, 0])
            direct_ok = True
        except (tf.errors.OpError, ValueError):
            direct_ok = False
        assert p.info["op"] == ("DepthwiseConv2dNative" if direct_ok else "Conv2D")
    s2 = SPREAD[2]  # equal strides: the depthwise kernel
    x, w = cb.make_inputs(s2)
    assert backend.prepare(s2, x, w).info["op"] == "DepthwiseConv2dNative"


def test_hand_computed_1d_asymmetric(backend):
    spec = cb.ConvSpec(n=1, c_in=1, c_out=1, input_size=(4,), kernel_size=3, padding=[(1, 0)],
                       dtype="float64")
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    w = np.array([[[1.0, 0.0, -1.0]]])
    np.testing.assert_array_equal(cb.convolve(spec, x, w, backend="tensorflow"), [[[-2.0, -2.0, -2.0]]])


def test_unsupported_refused_with_reason_and_xla_covers_it(backend):
    spec = cb.ConvSpec(n=1, c_in=4, c_out=6, input_size=(5, 4, 5), kernel_size=3, padding=1, groups=2)
    x, w = cb.make_inputs(spec)
    for algo in ("eager", "function"):
        sup = backend.supports(spec, "cpu", algo)
        assert not sup and "Conv3D" in sup.reason
        with pytest.raises(UnsupportedError, match="Conv3D"):
            backend.prepare(spec, x, w, algorithm=algo)
    y = cb.convolve(spec, x, w, backend="tensorflow", algorithm="xla")
    assert cb.relative_error(y, cb.reference(spec, x, w)) <= 1e-4


def test_no_gpu_refused(backend):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible")
    s = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(8, 8), kernel_size=3)
    sup = backend.supports(s, "cuda", "xla")
    assert not sup and "no GPU" in sup.reason


def test_conformance_suite_passes(backend):
    report = cb.check_backend(backend)
    assert report.ok, report.summary()
    assert report.count("pass") > 100


THREADS_SCRIPT = textwrap.dedent("""
    import json, convbench as cb
    b = cb.get_backend("tensorflow")
    b.set_threads(1)
    s = cb.ConvSpec(n=1, c_in=4, c_out=4, input_size=(8, 8), kernel_size=3, padding=1, dtype="float16")
    x, w = cb.make_inputs(s)
    p = b.prepare(s, x, w)
    p.run(); p.result()
    first = dict(p.info)
    b.set_threads(2)  # too late: TensorFlow is initialised
    p2 = b.prepare(s, x, w)
    import tensorflow as tf  # already imported (quietly) by the backend
    print(json.dumps({"first": first, "second": p2.info,
                      "tf_intra": tf.config.threading.get_intra_op_parallelism_threads()}))
""")


def test_threads_and_quiet_startup():
    # a fresh process: TensorFlow takes its thread counts once, before its first op
    out = subprocess.run([sys.executable, "-c", THREADS_SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["first"]["intra_op_threads"] == 1 and res["first"]["inter_op_threads"] == 1
    assert res["tf_intra"] == 1
    assert res["second"]["intra_op_threads"] == 1  # unchanged, and said so
    assert any("came after TensorFlow initialised" in n for n in res["second"]["thread_notes"])
    # TensorFlow's start-up and kernel-fallback log lines stay out of the output
    for noise in ("oneDNN custom operations", "absl::InitializeLog", "port.cc", "util.cc"):
        assert noise not in out.stderr, out.stderr[-2000:]
