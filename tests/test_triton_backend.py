"""The triton backend: refusals in-process; correctness on the CPU through Triton's interpreter.

The interpreter runs in subprocesses with TRITON_INTERPRET=1 set before triton is imported
(Triton decides interpreted vs compiled when a kernel is decorated). It is slow, so shapes stay
tiny. No CUDA run happens here: the compiled path needs a GPU.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

import convbench as cb
from convbench.errors import UnsupportedError


def test_module_import_does_not_import_triton_or_torch():
    code = ("import sys, convbench as cb, convbench_backends.triton_backend as m; "
            "b = cb.get_backend('triton'); b.algorithms('cpu'); b.algorithms('cuda'); "
            "s = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3); "
            "b.supports(s, 'cpu', 'igemm-m64n64k32w4s3'); "
            "print('triton' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"


def test_algorithm_names_carry_the_tile_configuration():
    from convbench_backends.triton_backend import ALGORITHMS, CONFIGS, _NAME, config_name

    assert config_name((64, 64, 32, 4, 3)) == "igemm-m64n64k32w4s3"
    assert len(set(ALGORITHMS)) == 2 * len(CONFIGS)
    for name in ALGORITHMS:
        m = _NAME.match(name)
        assert m and config_name(tuple(int(v) for v in m.groups()[:5]), m.group(6) is not None) == name


# Found, never imported here: Triton's LLVM aborts a process that imported TensorFlow first,
# and pytest collects the TensorFlow tests into the same process. Kernels run in subprocesses.
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed: pip install convbench[triton]", allow_module_level=True)
torch = pytest.importorskip("torch", reason="torch is not installed (triton's tensors are torch tensors)")


def _spec(**kw):
    base = dict(n=1, c_in=4, c_out=6, input_size=(6, 5), kernel_size=3, layout="channels_last")
    base.update(kw)
    return cb.ConvSpec(**base)


REFUSED = [
    (_spec(layout="channels_first"), "channels_last"),
    (_spec(input_size=(9,)), "1-D"),
    (_spec(input_size=(4, 4, 4)), "3-D"),
    (_spec(transposed=True), "transposed"),
    (_spec(dtype="float64"), "float64"),
]


@pytest.mark.parametrize("spec,word", REFUSED, ids=lambda v: getattr(v, "label", str(v)))
def test_unsupported_specs_are_refused_with_a_reason(spec, word):
    from convbench_backends.triton_backend import interpreter_mode

    b = cb.get_backend("triton")
    x, w = cb.make_inputs(spec)
    # cuda always lists the algorithms; cpu only in interpreter mode (else: no algorithm there)
    devices = ("cpu", "cuda") if interpreter_mode() else ("cuda",)
    for device in devices:
        sup = b.supports(spec, device, "igemm-m64n64k32w4s3")
        assert not sup and word in sup.reason
    for device in ("cpu", "cuda"):
        assert not b.supports(spec, device)
        with pytest.raises(UnsupportedError):
            b.prepare(spec, x, w, algorithm="igemm-m64n64k32w4s3", device=device)


def test_tf32_only_for_float32():
    b = cb.get_backend("triton")
    sup = b.supports(_spec(dtype="float16"), "cuda", "igemm-m64n64k32w4s3-tf32")
    assert not sup and "TF32" in sup.reason
    assert b.tolerance(_spec(), "cuda", "igemm-m64n64k32w4s3-tf32") == cb.tolerance("tf32")
    assert b.tolerance(_spec(), "cuda", "igemm-m64n64k32w4s3") == cb.tolerance("float32")


def test_triton_is_not_imported_in_the_test_process():
    assert "triton" not in sys.modules


def test_cpu_without_interpreter_and_cuda_without_gpu_are_refused():
    from convbench_backends.triton_backend import interpreter_mode

    b = cb.get_backend("triton")
    spec = _spec()
    if not interpreter_mode():
        assert b.algorithms("cpu") == []
        assert not b.supports(spec, "cpu")
    if not torch.cuda.is_available():
        sup = b.supports(spec, "cuda", "igemm-m64n64k32w4s3")
        assert not sup and ("CUDA" in sup.reason or "interpreter" in sup.reason)


_INTERPRETER_SCRIPT = r"""
import json, os, sys
os.environ["TRITON_INTERPRET"] = "1"
import numpy as np, convbench as cb
b = cb.get_backend("triton")
out = []
for d, algo in json.loads(sys.argv[1]):
    spec = cb.ConvSpec.from_dict(d)
    x, w = cb.make_inputs(spec)
    p = b.prepare(spec, x, w, algorithm=algo, device="cpu")
    p.run(); p.synchronize()
    y = p.result()
    out.append({"algo": algo, "label": spec.label, "shape": list(y.shape), "dtype": y.dtype.name,
                "err": cb.relative_error(y, cb.reference(spec, x, w)),
                "tol": b.tolerance(spec, "cpu", algo), "info": {k: str(v) for k, v in p.info.items()}})
print(json.dumps(out))
"""


def _interpret(cases):
    arg = json.dumps([(s.to_dict(), a) for s, a in cases])
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", _INTERPRETER_SCRIPT, arg], capture_output=True,
                         text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


SMALL = "igemm-m32n32k32w2s2"
INTERPRETER_CASES = [
    (_spec(n=2, c_in=8, c_out=16, input_size=(6, 5), padding=1), SMALL),
    (_spec(n=2, c_in=8, c_out=16, input_size=(6, 5), padding=1), SMALL + "-tf32"),
    (_spec(c_in=6, c_out=4, input_size=(7, 6), stride=2, padding=((1, 2), (0, 1)), dilation=(1, 2),
           groups=2), SMALL),
    (_spec(c_in=6, c_out=4, input_size=(7, 6), stride=2, padding=((1, 2), (0, 1)), dilation=(1, 2),
           groups=2, dtype="float16"), SMALL),
    (_spec(c_in=40, c_out=36, input_size=(5, 4), kernel_size=(3, 2), padding=1, dtype="float16"),
     "igemm-m64n64k32w4s3"),
    (_spec(c_in=40, c_out=36, input_size=(5, 4), kernel_size=(3, 2), padding=1, dtype="bfloat16"), SMALL),
    (_spec(c_in=4, c_out=4, groups=4, input_size=(5, 5), padding=1), SMALL),
]


def test_interpreter_matches_reference():
    results = _interpret(INTERPRETER_CASES)
    assert len(results) == len(INTERPRETER_CASES)
    for (spec, algo), r in zip(INTERPRETER_CASES, results):
        assert r["shape"] == list(spec.output_shape) and r["dtype"] == spec.dtype
        assert r["err"] <= r["tol"], r
        assert r["info"]["interpreter"] == "True"
        if spec.dtype == "bfloat16":
            assert "upcast" in r["info"]["bf16_dot"]


@pytest.mark.slow
def test_interpreter_every_configuration():
    from convbench_backends.triton_backend import ALGORITHMS

    spec32 = _spec(n=2, c_in=33, c_out=70, input_size=(9, 7), padding=1, stride=(1, 2))
    spec16 = spec32.replace(dtype="float16")
    cases = [(spec32, a) for a in ALGORITHMS] + [(spec16, a) for a in ALGORITHMS if not a.endswith("-tf32")]
    for (spec, algo), r in zip(cases, _interpret(cases)):
        assert r["err"] <= r["tol"], r


@pytest.mark.slow
def test_check_backend_on_the_interpreter():
    code = ("import os; os.environ['TRITON_INTERPRET'] = '1'\n"
            "from convbench.testing import check_backend\n"
            "r = check_backend('triton', device='cpu', algorithms=['igemm-m32n32k32w2s2', "
            "'igemm-m32n32k32w2s2-tf32'])\n"
            "print(r.summary()); print('OK' if r.ok else 'FAIL')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "TRITON_INTERPRET": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "OK", out.stdout
