"""The ONNX Runtime backend on the CPU: one-node ONNX graphs against the float64 reference."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import convbench as cb
from convbench.errors import UnsupportedError
from convbench.testing import check_backend, fixed_specs

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install convbench[onnx]")
pytest.importorskip("onnx", reason="onnx is not installed: pip install convbench[onnx]")

from convbench_backends import onnxruntime_backend as orb  # noqa: E402

ALGOS = [a for a in orb.CPU_ALGORITHMS if not a.startswith("int8")]  # float candidates
INT8_ALGOS = [a for a in orb.CPU_ALGORITHMS if a.startswith("int8")]


@pytest.fixture(scope="module")
def backend():
    return cb.get_backend("onnxruntime")


# hand-picked cases, each through a different part of the graph builder
CASES = {
    "asym-2d": cb.ConvSpec(n=2, c_in=16, c_out=16, input_size=(9, 8), kernel_size=3, stride=(2, 1),
                           padding=[(2, 0), (0, 1)]),
    "grouped-dilated-2d": cb.ConvSpec(n=2, c_in=4, c_out=6, input_size=(9, 8), kernel_size=3,
                                      padding=[(1, 2), (0, 1)], dilation=2, groups=2),
    "depthwise-2d": cb.ConvSpec(n=1, c_in=16, c_out=16, input_size=(7, 7), kernel_size=3, padding=1, groups=16),
    "1d-asym-stride": cb.ConvSpec(n=2, c_in=3, c_out=5, input_size=(13,), kernel_size=4, stride=2,
                                  padding=[(2, 1)]),
    "3d-dilated": cb.ConvSpec(n=1, c_in=3, c_out=4, input_size=(6, 5, 7), kernel_size=(3, 2, 2),
                              stride=(1, 2, 1), padding=[(1, 0), (0, 1), (1, 1)], dilation=(2, 1, 2)),
    # output_padding < stride: ORT's own output_padding
    "transposed-2d-op": cb.ConvSpec(n=2, c_in=4, c_out=6, input_size=(5, 4), kernel_size=3, stride=2,
                                    padding=[(2, 0), (0, 1)], transposed=True, output_padding=(1, 1)),
    # output_padding >= stride (dilation 2): taken off the end pad
    "transposed-1d-op-in-pad": cb.ConvSpec(n=2, c_in=3, c_out=4, input_size=(7,), kernel_size=3, dilation=2,
                                           padding=[(0, 1)], transposed=True, output_padding=1),
    # output_padding >= stride, no end pad: zero rows from a Pad node
    "transposed-1d-op-pad-node": cb.ConvSpec(n=2, c_in=3, c_out=4, input_size=(7,), kernel_size=3, dilation=2,
                                             padding=[(1, 0)], transposed=True, output_padding=1),
    "transposed-3d-grouped": cb.ConvSpec(n=1, c_in=4, c_out=6, input_size=(4, 3, 5), kernel_size=2, stride=(2, 1, 3),
                                         padding=[(1, 0), (0, 0), (0, 1)], groups=2, transposed=True,
                                         output_padding=(1, 0, 2)),
}


def _cases():
    for name, s in CASES.items():
        for dt in ("float32", "float16"):
            for lay in ("channels_first", "channels_last"):
                for algo in ALGOS:
                    yield pytest.param(s.replace(dtype=dt, layout=lay), algo, id=f"{name}-{dt}-{lay}-{algo}")


@pytest.mark.parametrize("spec,algo", list(_cases()))
def test_matches_reference(backend, spec, algo):
    x, w = cb.make_inputs(spec, seed=1)
    sup = backend.supports(spec, "cpu", algo)
    if not sup:  # only the NCHWc candidate refuses float32/float16 specs, with its rule
        assert algo == "nchwc" and "NCHWc" in sup.reason, sup.reason
        with pytest.raises(UnsupportedError, match="NCHWc"):
            backend.prepare(spec, x, w, algorithm=algo)
        return
    p = backend.prepare(spec, x, w, algorithm=algo)
    p.run()
    y = p.result()
    assert y.shape == spec.output_shape and y.dtype == x.dtype
    assert cb.relative_error(y, cb.reference(spec, x, w)) <= backend.tolerance(spec, "cpu", algo)
    assert p.info["transpose_in_run"] == (spec.layout == "channels_last")


def test_hand_computed_1d_asymmetric(backend):
    spec = cb.ConvSpec(n=1, c_in=1, c_out=1, input_size=(4,), kernel_size=3, padding=[(1, 0)])
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]], np.float32)
    w = np.array([[[1.0, 0.0, -1.0]]], np.float32)
    for algo in ("weights-input", "initializer"):
        y = cb.convolve(spec, x, w, backend="onnxruntime", algorithm=algo)
        np.testing.assert_array_equal(y, [[[-2.0, -2.0, -2.0]]])


def test_hand_computed_transposed_output_padding(backend):
    # stride 2, k 2: each input value stamps [1, 10]; output_padding 1 adds one zero column
    spec = cb.ConvSpec(n=1, c_in=1, c_out=1, input_size=(2,), kernel_size=2, stride=2,
                       transposed=True, output_padding=1)
    x = np.array([[[1.0, 2.0]]], np.float32)
    w = np.array([[[1.0, 10.0]]], np.float32)
    y = cb.convolve(spec, x, w, backend="onnxruntime")
    np.testing.assert_array_equal(y, [[[1.0, 10.0, 2.0, 20.0, 0.0]]])


def test_transposed_padding_rewrites_only_what_ort_refuses():
    s = CASES["transposed-2d-op"]
    assert orb.transposed_padding(s) == ((0, 1), (1, 1), (0, 0))  # as given
    assert orb.transposed_padding(CASES["transposed-1d-op-in-pad"]) == ((0,), (0,), (0,))
    assert orb.transposed_padding(CASES["transposed-1d-op-pad-node"]) == ((0,), (0,), (1,))
    direct = CASES["asym-2d"]
    assert orb.transposed_padding(direct) == ((0, 1), (0, 0), (0, 0))


def test_pad_node_only_where_needed(backend):
    for name, pad in (("transposed-1d-op-pad-node", True), ("transposed-1d-op-in-pad", False)):
        spec = CASES[name]
        x, w = cb.make_inputs(spec)
        p = backend.prepare(spec, x, w)
        assert p.info["pad_in_run"] is pad and ("Pad" in p.info["nodes"]) is pad


def test_nchwc_rewrites_where_offered(backend):
    for lay in ("channels_first", "channels_last"):
        spec = CASES["asym-2d"].replace(layout=lay)
        x, w = cb.make_inputs(spec)
        p = backend.prepare(spec, x, w, algorithm="nchwc")
        assert p.info["nchwc"] and p.info["weights"] == "initializer"
        assert "Transpose" not in p.info["nodes"]  # the layout change folds into the reorders
        q = backend.prepare(spec, x, w, algorithm="initializer")
        assert not q.info["nchwc"] and q.info["graph_optimization_level"] == "ORT_ENABLE_EXTENDED"
        r = backend.prepare(spec, x, w, algorithm="weights-input")
        assert not r.info["nchwc"] and r.info["weights"] == "graph input"


def test_precomputed_declared(backend):
    assert backend.precomputes_weights("nchwc") and backend.precomputes_weights("initializer")
    assert not backend.precomputes_weights("weights-input")
    assert backend.algorithms("cpu")[0] == "weights-input"  # the default transforms nothing


@pytest.mark.parametrize("spec,algo,words", [
    (CASES["asym-2d"].replace(dtype="float64"), None, "float64"),
    (CASES["asym-2d"].replace(dtype="bfloat16"), "weights-input", "bfloat16"),
    (CASES["1d-asym-stride"], "nchwc", "2-D Conv only"),
    (CASES["transposed-2d-op"], "nchwc", "ConvTranspose"),
    (CASES["grouped-dilated-2d"], "nchwc", "channels per group"),
    (cb.ConvSpec(n=1, c_in=17, c_out=16, input_size=(5, 5), kernel_size=3), "nchwc", "input channels"),
])
def test_refusals_have_reasons(backend, spec, algo, words):
    sup = backend.supports(spec, "cpu", algo)
    assert not sup and words in sup.reason
    x, w = cb.make_inputs(spec)
    with pytest.raises(UnsupportedError):
        backend.prepare(spec, x, w, algorithm=algo)


def test_float16_compute_recorded(backend):
    spec = CASES["asym-2d"].replace(dtype="float16")
    x, w = cb.make_inputs(spec)
    info = backend.prepare(spec, x, w).info
    native = "Cast" not in info["nodes"]
    assert info["compute_dtype"] == ("float16" if native else "float32 (Casts inserted by ORT)")


def test_threads_and_session_options(backend):
    spec = CASES["asym-2d"]
    x, w = cb.make_inputs(spec)
    fresh = type(backend)()
    fresh.set_threads(1)
    info = fresh.prepare(spec, x, w).info
    assert info["intra_op_threads"] == 1 and info["inter_op_threads"] == 1
    assert info["execution_mode"] == "sequential" and info["providers"] == ["CPUExecutionProvider"]
    assert set(fresh.versions()) == {"onnxruntime", "onnx"}


def test_run_reuses_bound_buffers(backend):
    spec = CASES["1d-asym-stride"]
    x, w = cb.make_inputs(spec)
    p = backend.prepare(spec, x, w)
    with pytest.raises(RuntimeError, match="before run"):
        p.result()
    p.run()
    y1 = p.result()
    y1[...] = 0  # result() is a copy, not the bound output buffer
    p.run()
    assert cb.relative_error(p.result(), cb.reference(spec, x, w)) <= 1e-4


def test_cuda_refused_without_cuda_provider(backend):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA execution provider")
    sup = backend.device_support("cuda")
    assert not sup and "onnxruntime-gpu" in sup.reason


def test_check_backend_default_level(backend):
    report = check_backend(backend)
    assert report.ok, report.summary()
    assert report.count("refused") > 0 and report.max_error["float32"] < 1e-5


def _run(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_unavailable_without_onnxruntime():
    out = _run("""
        import json, sys
        sys.modules["onnxruntime"] = None  # not installed
        import convbench as cb
        b = cb.get_backend("onnxruntime")
        s = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3)
        print(json.dumps({"available": bool(b.available()), "reason": b.available().reason,
                          "supports": bool(b.supports(s, "cpu", "weights-input")),
                          "f64": b.supports(s.replace(dtype="float64")).reason}))
    """)
    assert not out["available"] and out["reason"].endswith(": pip install convbench[onnx]")
    assert out["supports"] and "float64" in out["f64"]


def test_no_clash_with_other_frameworks_in_one_process():
    """torch and TensorFlow imported first (as in one test process): ORT still computes right."""
    out = _run("""
        import importlib, json
        loaded = []
        for m in ("torch", "tensorflow"):
            try:
                importlib.import_module(m)
                loaded.append(m)
            except ImportError:
                pass
        import convbench as cb
        s = cb.ConvSpec(n=2, c_in=16, c_out=16, input_size=(9, 8), kernel_size=3, padding=1)
        x, w = cb.make_inputs(s)
        errs = [cb.relative_error(cb.convolve(s, x, w, backend="onnxruntime", algorithm=a), cb.reference(s, x, w))
                for a in ("weights-input", "nchwc")]
        print(json.dumps({"loaded": loaded, "errs": errs}))
    """)
    assert max(out["errs"]) <= 1e-4, out


# ---- int8: QLinearConv and ConvInteger (convbench_backends._onnxruntime_quantized) ---------------
def test_int8_conformance(backend):
    int8_specs = [s for s in fixed_specs() if s.dtype == "int8"]
    report = check_backend(backend, algorithms=INT8_ALGOS, specs=int8_specs, declarations=False)
    assert report.ok, report.summary()
    assert report.count("fail") == 0 and report.count("xfail") == 0
    errors = report.max_error_by()
    assert errors[("int8-convinteger", "int8")] == 0.0  # exact accumulators, exact requantisation
    assert all(e <= 1.0 for e in errors.values()), errors
    refused = [r for r in report.results if r.status == "refused"]
    assert refused and all(r.spec.transposed and "ConvTranspose" in r.message for r in refused)
    assert report.count("pass") == len(INT8_ALGOS) * sum(not s.transposed for s in int8_specs)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_int8_resnet_layer_against_reference(backend, layout):
    # ResNet-50 res3 3x3 conv (reduced spatially), int8: the exact reference vs each candidate
    spec = cb.ConvSpec(n=1, c_in=128, c_out=128, input_size=(14, 14), kernel_size=3, padding=1,
                       dtype="int8", layout=layout)
    x, w = cb.make_inputs(spec, seed=5)
    expected = cb.reference(spec, x, w)
    assert np.abs(expected.astype(int)).max() >= 100  # the outputs use the int8 range
    for algo in INT8_ALGOS:
        y = cb.convolve(spec, x, w, backend="onnxruntime", algorithm=algo)
        assert y.dtype == np.int8 and y.shape == spec.output_shape
        diff = np.abs(y.astype(int) - expected.astype(int))
        assert diff.max() <= backend.tolerance(spec, "cpu", algo), (algo, diff.max())  # in LSB
        assert np.mean(diff != 0) < 1e-3, algo  # rounding ties only
    assert backend.tolerance(spec, "cpu", "int8-convinteger") == 0.0
    assert backend.tolerance(spec, "cpu", "int8-qlinearconv") == 1.0


def test_int8_extreme_values_and_saturation(backend):
    # -128 and 127 inputs (make_inputs never draws -128) and outputs saturating at both ends
    spec = cb.ConvSpec(n=1, c_in=8, c_out=2, input_size=(5,), kernel_size=1, dtype="int8")
    x = np.empty((1, 8, 5), dtype=np.int8)
    x[0, :, 0], x[0, :, 1], x[0, :, 2:] = -128, 127, np.arange(-12, 12).reshape(8, 3)
    w = np.stack([np.full((8, 1), 127), np.arange(-127, 129, 32).reshape(8, 1)]).astype(np.int8)
    expected = cb.reference(spec, x, w)
    assert expected.min() == -128 and expected.max() == 127
    for algo in INT8_ALGOS:
        y = cb.convolve(spec, x, w, backend="onnxruntime", algorithm=algo)
        np.testing.assert_array_equal(y, expected, err_msg=algo)


def test_int8_graphs_and_declarations(backend):
    spec = cb.ConvSpec(n=1, c_in=16, c_out=16, input_size=(6, 6), kernel_size=3, padding=1, dtype="int8")
    x, w = cb.make_inputs(spec)
    q = backend.prepare(spec, x, w, algorithm="int8-qlinearconv").info
    assert "com.microsoft:QLinearConv" in q["nodes"] and q["weights"] == "initializer"
    cl = spec.replace(layout="channels_last")
    assert backend.prepare(cl, *cb.make_inputs(cl), algorithm="int8-qlinearconv").info["nodes"] == \
        ["com.microsoft:QLinearConv"]  # the layout Transposes cancel against ORT's NHWC rewrite
    c = backend.prepare(spec, x, w, algorithm="int8-convinteger").info
    assert c["nodes"][0] == "ConvInteger" and "Round" in c["nodes"] and "exactly" in c["requantisation"]
    assert backend.precomputes_weights("int8-qlinearconv")
    assert not backend.precomputes_weights("int8-qlinearconv-weights-input")
    assert not backend.precomputes_weights("int8-convinteger")
    assert backend.prepare(spec, x, w).algorithm == "int8-qlinearconv"  # the default for int8


@pytest.mark.parametrize("spec,algo,words", [
    (CASES["transposed-2d-op"].replace(dtype="int8"), None, "integer ConvTranspose"),
    (CASES["asym-2d"].replace(dtype="int8"), "weights-input", "float candidate"),
    (CASES["asym-2d"].replace(dtype="int8"), "nchwc", "float candidate"),
    (CASES["asym-2d"], "int8-qlinearconv", "int8 candidate"),
])
def test_int8_refusals_have_reasons(backend, spec, algo, words):
    sup = backend.supports(spec, "cpu", algo)
    assert not sup and words in sup.reason
    x, w = cb.make_inputs(spec)
    with pytest.raises(UnsupportedError):
        backend.prepare(spec, x, w, algorithm=algo)
