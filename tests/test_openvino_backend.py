"""The openvino backend: refusals and declarations in-process (no openvino import); every
convolution in subprocesses, so this pytest process never loads OpenVINO next to TensorFlow,
Triton or JAX (which other test modules import here)."""
import importlib.util
import json
import os
import platform
import subprocess
import sys

import pytest

import convbench as cb
from convbench.registry import Robustness
from convbench.spec import TOLERANCES

if importlib.util.find_spec("openvino") is None:
    pytest.skip("openvino is not installed: pip install convbench[openvino]", allow_module_level=True)

import convbench_backends.openvino_backend as ovb  # noqa: E402  (imports no openvino)

HINT = "pip install convbench[openvino]"


def _spec(**kw):
    base = dict(n=1, c_in=4, c_out=6, input_size=(7, 6), kernel_size=3)
    base.update(kw)
    return cb.ConvSpec(**base)


def _run(code: str, *args: str, timeout: int = 600) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


# ---- in this process: declarations and refusals (supports() imports no openvino) ------------
def test_declarations():
    b = cb.get_backend("openvino")
    assert b.robustness == Robustness.FRAMEWORK
    assert b.framework_modules == ("openvino",)
    assert b.version_distributions == {"openvino": ("openvino",)}
    assert b.install_hint == HINT
    assert b.capabilities.devices == frozenset({"cpu"}) and b.algorithms("cuda") == []
    assert b.precomputed_algorithms == {"f32-const-weights", "bf16-const-weights", "int8"}
    assert b.precomputes_weights("f32-const-weights") and not b.precomputes_weights("f32")
    spec = _spec()
    assert b.heuristic_rank(spec, "cpu") > cb.get_backend("torch").heuristic_rank(spec, "cpu")
    assert b.heuristic_rank(spec, "cpu") > cb.get_backend("tensorflow").heuristic_rank(spec, "cpu")


def test_float64_is_refused_with_the_measured_reason():
    sup = cb.get_backend("openvino").supports(_spec(dtype="float64"))
    assert not sup and "f32" in sup.reason and "1e-10" in sup.reason


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_bf16_candidates_serve_float32_data_only(dtype):
    b = cb.get_backend("openvino")
    for algo in ("bf16", "bf16-const-weights"):
        sup = b.supports(_spec(dtype=dtype), "cpu", algo)
        assert not sup and dtype in sup.reason
    assert b.supports(_spec(dtype=dtype), "cpu", "f32")


def test_bf16_refused_without_native_bf16_and_held_to_the_bf16_bound(monkeypatch):
    b = cb.get_backend("openvino")
    monkeypatch.setattr(ovb, "cpu_bf16_isa", lambda: ())
    sup = b.supports(_spec(), "cpu", "bf16")
    assert not sup and "avx512_bf16" in sup.reason and "emulated" in sup.reason
    monkeypatch.setattr(ovb, "cpu_bf16_isa", lambda: ("amx_bf16",))
    assert b.supports(_spec(), "cpu", "bf16")
    assert b.tolerance(_spec(), "cpu", "bf16") == TOLERANCES["bfloat16"]
    assert b.tolerance(_spec(), "cpu", "f32") == TOLERANCES["float32"]


def test_cuda_is_refused():
    sup = cb.get_backend("openvino").supports(_spec(), "cuda")
    assert not sup and "cuda" in sup.reason


# ---- in subprocesses: real convolutions --------------------------------------------------------
_CASES_SCRIPT = r"""
import json, sys
import convbench as cb
b = cb.get_backend("openvino")
b.set_threads(1)
out = []
for d, algo in json.loads(sys.argv[1]):
    spec = cb.ConvSpec.from_dict(d)
    x, w = cb.make_inputs(spec, seed=3)
    p = b.prepare(spec, x, w, algorithm=algo)
    p.run()
    y = p.result()
    out.append({"shape": list(y.shape), "dtype": y.dtype.name, "tol": b.tolerance(spec, "cpu", algo),
                "err": cb.relative_error(y, cb.reference(spec, x, w)), "info": p.info})
    p.close()
print(json.dumps(out))
"""

CASES = [
    (_spec(padding=((1, 2), (0, 1))), "f32"),
    (_spec(padding=((1, 2), (0, 1)), stride=(2, 1)), "f32-const-weights"),
    (_spec(c_in=4, c_out=2, stride=2, padding=((1, 0), (2, 1)), transposed=True, output_padding=1), "f32"),
    (_spec(c_in=4, c_out=6, stride=(3, 2), dilation=2, transposed=True, output_padding=(2, 1), groups=2),
     "f32-const-weights"),
    (_spec(c_in=6, c_out=4, groups=2, padding=1), "f32"),
    (_spec(c_in=4, c_out=8, groups=4, padding=1, stride=2), "f32-const-weights"),  # depthwise x2
    (_spec(c_in=3, c_out=5, dilation=(2, 3), padding=2), "f32"),
    (_spec(input_size=(13,), kernel_size=5, stride=2, padding=((1, 3),)), "f32"),
    (_spec(input_size=(5, 4, 5), padding=((1, 0), (0, 1), (2, 2)), groups=2), "f32-const-weights"),
    (_spec(input_size=(4, 3, 4), c_in=4, c_out=2, stride=2, transposed=True, output_padding=1), "f32"),
    (_spec(n=2, padding=((0, 1), (1, 1)), layout="channels_last"), "f32"),
    (_spec(input_size=(11,), groups=2, layout="channels_last", transposed=True, stride=2), "f32-const-weights"),
    (_spec(input_size=(5, 4, 3), padding=1, layout="channels_last"), "f32"),
    (_spec(c_in=8, c_out=8, padding=1, dtype="float16"), "f32"),
    (_spec(c_in=8, c_out=8, padding=1, dtype="bfloat16", layout="channels_last"), "f32"),
]


@pytest.fixture(scope="module")
def case_results():
    arg = json.dumps([(s.to_dict(), a) for s, a in CASES])
    return json.loads(_run(_CASES_SCRIPT, arg))


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{a}-{s.label}" for s, a in CASES])
def test_matches_the_reference(case_results, i):
    spec, algo = CASES[i]
    r = case_results[i]
    assert r["shape"] == list(spec.output_shape) and r["dtype"] == spec.dtype
    assert r["err"] <= r["tol"] == TOLERANCES[spec.dtype], r
    info = r["info"]
    assert info["transpose_in_graph"] == (spec.layout == "channels_last")
    expected_op = ("Group" if spec.groups > 1 else "") + (
        "ConvolutionBackpropData" if spec.transposed else "Convolution")
    assert info["op"] == expected_op
    assert info["weights"].startswith("Constant" if algo.endswith("const-weights") else "Parameter")


def test_info_records_streams_threads_and_precisions(case_results):
    for (spec, _), r in zip(CASES, case_results):
        info = r["info"]
        assert info["num_streams"] == 1 and info["inference_num_threads"] == 1
        assert info["threads_requested"] == 1 and info["performance_hint"] == "LATENCY"
        assert info["inference_precision_hint"] == "f32" and info["kernel"]
        want = {"float16": "f32", "bfloat16": "bf16"}.get(spec.dtype, "f32")
        assert info["executed_precision"] == want
        if spec.dtype == "float16":
            assert "converted to f32" in info["note"]
        if spec.dtype == "bfloat16":
            assert "bf16 kernel" in info["note"]


_REFUSALS_SCRIPT = r"""
import json
import convbench as cb
import convbench_backends.openvino_backend as ovb
from convbench.errors import UnsupportedError
b = cb.get_backend("openvino")
spec = cb.ConvSpec(n=1, c_in=4, c_out=4, input_size=(6, 6), kernel_size=3, padding=1)
out = {}
for name, s, algo in [("float64", spec.replace(dtype="float64"), "f32"), ("bf16-on-float16",
                      spec.replace(dtype="float16"), "bf16")]:
    x, w = cb.make_inputs(s)
    try:
        b.prepare(s, x, w, algorithm=algo); out[name] = "accepted"
    except UnsupportedError as exc:
        out[name] = str(exc)
# pretend the CPU has native bf16: the plugin's own capabilities must still decide
ovb.cpu_bf16_isa = lambda: ("amx_bf16",)
caps = list(ovb._core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
x, w = cb.make_inputs(spec)
try:
    p = b.prepare(spec, x, w, algorithm="bf16"); p.run()
    out["bf16"] = {"err": cb.relative_error(p.result(), cb.reference(spec, x, w)),
                   "precision": p.info["executed_precision"]}
except UnsupportedError as exc:
    out["bf16"] = str(exc)
out["caps"] = caps
print(json.dumps(out))
"""


def test_refused_specs_raise_and_bf16_is_never_emulated():
    out = json.loads(_run(_REFUSALS_SCRIPT))
    assert "float64 bound" in out["float64"] and "float16" in out["bf16-on-float16"]
    if "BF16" in out["caps"]:
        assert out["bf16"]["precision"] == "bf16" and out["bf16"]["err"] <= TOLERANCES["bfloat16"]
    else:
        assert "OPTIMIZATION_CAPABILITIES" in out["bf16"]


def test_unavailable_when_openvino_is_missing():
    code = ("import sys, json; sys.modules['openvino'] = None\n"
            "import convbench as cb\n"
            "from convbench.errors import BackendUnavailableError\n"
            "b = cb.get_backend('openvino'); a = b.available()\n"
            "s = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3)\n"
            "x, w = cb.make_inputs(s)\n"
            "try:\n    b.prepare(s, x, w); raised = ''\n"
            "except BackendUnavailableError as exc:\n    raised = str(exc)\n"
            "print(json.dumps([bool(a), a.reason, bool(b.supports(s)), raised]))")
    ok, reason, supported, raised = json.loads(_run(code))
    assert not ok and reason.endswith(HINT) and supported
    assert "unavailable" in raised and HINT in raised


def test_check_backend_passes():
    code = ("from convbench.testing import check_backend\n"
            "r = check_backend('openvino')\n"
            "import json; print(json.dumps([r.ok, r.summary(), r.count('pass'), r.count('refused')]))")
    ok, summary, passed, refused = json.loads(_run(code))
    assert ok, summary
    assert passed > 0 and refused > 0



# ---- int8: FakeQuantize lowered to an int8 kernel (convbench_backends._openvino_quantized) --------
def test_int8_refusals_in_process(monkeypatch):
    import convbench.environment as env

    b = cb.get_backend("openvino")
    real = env.cpu_info()
    isa = [f for f in real["cpu_isa"] if f != "avx512_vnni"]
    monkeypatch.setattr(env, "cpu_info", lambda: {**real, "cpu_isa": [*isa, "avx512_vnni"]})
    q = _spec(dtype="int8")
    assert b.supports(q, "cpu", "int8") and b.tolerance(q, "cpu", "int8") == 1.0
    for algo in ("f32", "f32-const-weights", "bf16"):
        sup = b.supports(q, "cpu", algo)
        assert not sup and "int8" in sup.reason
    sup = b.supports(_spec(), "cpu", "int8")
    assert not sup and "int8 candidate" in sup.reason
    sup = b.supports(_spec(dtype="int8", stride=2, transposed=True), "cpu", "int8")
    assert not sup and "f32 kernels" in sup.reason
    flat = cb.ConvSpec(n=1, c_in=1, c_out=2, input_size=(1, 4, 3), kernel_size=(3, 1, 2), padding=2,
                       dtype="int8")
    sup = b.supports(flat, "cpu", "int8")
    assert not sup and "input depth of 1" in sup.reason
    assert b.supports(flat.replace(c_in=2), "cpu", "int8")
    unread = _spec(dtype="int8", input_size=(7, 1), kernel_size=(3, 2), dilation=(1, 2), padding=1, stride=2)
    sup = b.supports(unread, "cpu", "int8")
    assert not sup and "spatial dim 1" in sup.reason
    monkeypatch.setattr(env, "cpu_info", lambda: {**real, "cpu_isa": isa})
    sup = b.supports(q, "cpu", "int8")
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert not sup and "VNNI" in sup.reason


_INT8_SCRIPT = r"""
import json
import numpy as np
import convbench as cb
from convbench.quant import lsb_error
from convbench.testing import check_backend, fixed_specs
b = cb.get_backend("openvino")
out = {}
r = check_backend(b, algorithms=["int8"], specs=[s for s in fixed_specs() if s.dtype == "int8"],
                  declarations=False)
out["conformance"] = [r.ok, r.summary(), r.count("pass"), r.count("refused"), r.max_error.get("int8"),
                      [x.message for x in r.results if x.status == "refused"]]
layers = {}
for lay in ("channels_first", "channels_last"):  # ResNet-50 res3 3x3 conv, reduced spatially
    spec = cb.ConvSpec(n=1, c_in=128, c_out=128, input_size=(14, 14), kernel_size=3, padding=1,
                       dtype="int8", layout=lay)
    x, w = cb.make_inputs(spec, seed=5)
    p = b.prepare(spec, x, w, algorithm="int8"); p.run(); y = p.result()
    ref = cb.reference(spec, x, w)
    layers[lay] = {"lsb": lsb_error(y, ref), "share": float(np.mean(y != ref)), "dtype": y.dtype.name,
                   "range": int(np.abs(ref.astype(int)).max()), "kernel": p.info["kernel"],
                   "precision": p.info["executed_precision"], "int8_kernel": p.info["int8_kernel"]}
out["layers"] = layers
spec = cb.ConvSpec(n=1, c_in=8, c_out=2, input_size=(5,), kernel_size=1, dtype="int8")
x = np.empty((1, 8, 5), dtype=np.int8)
x[0, :, 0], x[0, :, 1], x[0, :, 2:] = -128, 127, np.arange(-12, 12).reshape(8, 3)
w = np.stack([np.full((8, 1), 127), np.arange(-127, 129, 32).reshape(8, 1)]).astype(np.int8)
ref = cb.reference(spec, x, w)
y = cb.convolve(spec, x, w, backend="openvino", algorithm="int8")
out["extremes"] = [int(ref.min()), int(ref.max()), bool(np.array_equal(y, ref))]
# the refused flat-depth shape, run anyway (past supports()): what the plugin gives
import convbench_backends.openvino_backend as ovb
flat = cb.ConvSpec(n=2, c_in=1, c_out=2, input_size=(1, 4, 3), kernel_size=(3, 1, 2), stride=(2, 2, 1),
                   padding=2, dtype="int8")
x, w = cb.make_inputs(flat, seed=0)
p = ovb.OpenVinoPrepared(flat, x, w, "int8", None); p.run()
out["flat_depth_lsb"] = lsb_error(p.result(), cb.reference(flat, x, w))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def int8_results():
    from convbench_backends._int8_rules import x86_without_vnni

    if x86_without_vnni():
        pytest.skip("x86-64 CPU without AVX-512 VNNI: the int8 candidate is refused here (see _int8_rules)")
    return json.loads(_run(_INT8_SCRIPT))


def test_int8_conformance(int8_results):
    ok, summary, passed, refused, max_lsb, reasons = int8_results["conformance"]
    assert ok, summary
    assert passed == 27 and refused == 6 and max_lsb <= 1.0  # every direct fixed spec runs
    assert all("ConvolutionBackpropData" in m for m in reasons)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_int8_resnet_layer_against_reference(int8_results, layout):
    r = int8_results["layers"][layout]
    assert r["dtype"] == "int8" and r["range"] >= 100
    assert r["lsb"] <= 1.0 and r["share"] < 1e-3, r  # worst difference in LSB; rounding ties only
    assert r["int8_kernel"] and "i8" in r["kernel"].lower() and r["precision"] in ("u8", "i8"), r


def test_int8_extreme_values_and_saturation(int8_results):
    lo, hi, equal = int8_results["extremes"]
    assert lo == -128 and hi == 127 and equal


def test_int8_flat_depth_refusal_is_what_the_plugin_does(int8_results):
    assert int8_results["flat_depth_lsb"] > 10  # a fixed plugin makes this fail: drop the rule
