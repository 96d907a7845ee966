"""The jax backend: refusals and declarations in-process (no JAX import); every computation in
subprocesses.

JAX's jaxlib and TensorFlow both carry XLA/LLVM pieces, and pytest collects the TensorFlow
(and triton) tests into this process: JAX is found here, never imported. Its convolutions
run in fresh interpreters, as they do in a sweep (the jax family's own worker).
"""
import importlib.util
import json
import subprocess
import sys

import pytest

import convbench as cb
from convbench.environment import set_thread_env


def _spec(**kw):
    base = dict(n=2, c_in=4, c_out=6, input_size=(7, 6), kernel_size=3)
    base.update(kw)
    return cb.ConvSpec(**base)


def _python(code, *args, env=None, timeout=600):
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_listing_and_supports_do_not_import_jax():
    code = ("import sys, json, convbench as cb\n"
            "b = cb.get_backend('jax'); b.algorithms('cpu'); b.algorithms('cuda')\n"
            "s = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3)\n"
            "r = [bool(b.supports(s, d, a)) for d in ('cpu', 'cuda') for a in (None, *b.algorithms(d))]\n"
            "print(json.dumps([m for m in ('jax', 'jaxlib', 'tensorflow', 'torch') if m in sys.modules]))")
    assert _python(code) == []


def test_unavailable_without_jax_names_the_install_hint():
    code = ("import sys, json\n"
            "sys.modules['jax'] = None; sys.modules['jaxlib'] = None\n"
            "import convbench as cb\n"
            "from convbench.errors import BackendUnavailableError\n"
            "b = cb.get_backend('jax'); a = b.available()\n"
            "s = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3)\n"
            "x, w = cb.make_inputs(s)\n"
            "try:\n"
            "    b.prepare(s, x, w); raised = None\n"
            "except BackendUnavailableError as e:\n"
            "    raised = str(e)\n"
            "print(json.dumps({'ok': bool(a), 'reason': a.reason, 'raised': raised,\n"
            "                  'supports': bool(b.supports(s, 'cpu', 'xla'))}))")
    out = _python(code)
    assert not out["ok"] and out["reason"].endswith("pip install convbench[jax]")
    assert out["raised"] and "pip install convbench[jax]" in out["raised"]
    assert out["supports"]  # supports() answers from the spec alone, without JAX


def test_declarations():
    from convbench.registry import Robustness

    b = cb.get_backend("jax")
    assert b.robustness == Robustness.FRAMEWORK
    assert set(b.framework_modules) == {"jax", "jaxlib"}
    assert b.version_distributions == {"jax": ("jax",), "jaxlib": ("jaxlib",)}
    assert b.install_hint == "pip install convbench[jax]"
    assert not b.precomputes_weights("xla")
    assert b.algorithms("cpu") == ["xla"] and b.algorithms("cuda") == ["xla", "xla-tf32"]
    spec = _spec()
    for device in ("cpu", "cuda"):
        for other in ("torch", "tensorflow"):
            assert b.heuristic_rank(spec, device) > cb.get_backend(other).heuristic_rank(spec, device)
    assert b.tolerance(spec, "cuda", "xla-tf32") == cb.tolerance("tf32")
    assert b.tolerance(spec, "cuda", "xla") == cb.tolerance("float32")


def test_refusals_carry_reasons():
    from convbench_backends.jax_backend import _cuda_plugin

    b = cb.get_backend("jax")
    sup = b.supports(_spec(dtype="float16"), "cuda", "xla-tf32")
    assert not sup and "TF32" in sup.reason and "float16" in sup.reason
    sup = b.supports(_spec(), "cpu", "xla-tf32")
    assert not sup and "unknown algorithm" in sup.reason
    if _cuda_plugin() is None:
        sup = b.supports(_spec(), "cuda", "xla")
        assert not sup and "CUDA plugin" in sup.reason
        sup = b.supports(_spec(), "cuda")
        assert not sup and "CUDA plugin" in sup.reason


def test_conv_params_express_every_variant_natively():
    from convbench_backends.jax_backend import _direct_weights, conv_params

    p = conv_params(_spec(input_size=(5, 6, 6), layout="channels_last", groups=2, dilation=2))
    assert p["dimension_numbers"] == ("NDHWC", "OIDHW", "NDHWC")
    assert p["feature_group_count"] == 2 and p["rhs_dilation"] == (2, 2, 2)
    t = _spec(input_size=(9,), kernel_size=3, stride=2, padding=3, dilation=1, transposed=True,
              output_padding=1, c_in=4, c_out=2, groups=2)
    p = conv_params(t)
    assert p["lhs_dilation"] == (2,) and p["window_strides"] == (1,)
    assert p["padding"] == ((2 - 3, 2 - 3 + 1),)  # negative: XLA crops
    x, w = cb.make_inputs(t)
    wd = _direct_weights(t, w)  # (C_in, C_out/g, k) -> (C_out, C_in/g, k), flipped
    assert wd.shape == (2, 2, 3)
    assert wd[1, 0, 0] == w[2, 0, 2] and wd[0, 1, 2] == w[1, 0, 0]


# ---- computations: in subprocesses --------------------------------------------------------
if importlib.util.find_spec("jax") is None:
    pytest.skip("jax is not installed: pip install convbench[jax]", allow_module_level=True)

_RUN_SCRIPT = r"""
import json, sys
import convbench as cb
b = cb.get_backend("jax")
out = []
for d in json.loads(sys.argv[1]):
    spec = cb.ConvSpec.from_dict(d)
    x, w = cb.make_inputs(spec, seed=3)
    p = b.prepare(spec, x, w, device="cpu")
    p.run(); p.synchronize()
    y = p.result()
    out.append({"shape": list(y.shape), "dtype": y.dtype.name,
                "err": cb.relative_error(y, cb.reference(spec, x, w)),
                "tol": b.tolerance(spec, "cpu", "xla"), "info": {k: str(v) for k, v in p.info.items()}})
print(json.dumps(out))
"""

CASES = [
    _spec(c_in=4, c_out=6, groups=2, transposed=True, stride=2, padding=1, output_padding=1),
    _spec(c_in=6, c_out=4, groups=2, transposed=True, stride=(2, 3), padding=((0, 2), (1, 0)),
          output_padding=(1, 2), kernel_size=(3, 2), layout="channels_last"),
    _spec(c_in=4, c_out=4, transposed=True, stride=2, dilation=3, output_padding=2, padding=4),
    _spec(c_in=2, c_out=4, transposed=True, input_size=(5, 4, 3), stride=(1, 2, 2), padding=(0, 1, 2),
          output_padding=(0, 1, 1)),
    _spec(transposed=True, stride=3, padding=3),  # padding > d*(k-1): XLA pads negatively
    _spec(dilation=(2, 3), padding=((2, 0), (1, 3))),
    _spec(input_size=(17,), kernel_size=5, stride=3, dilation=2, padding=((3, 1),)),
    _spec(input_size=(17,), kernel_size=4, layout="channels_last", padding="same"),
    _spec(input_size=(5, 6, 4), stride=2, padding=((1, 0), (0, 2), (1, 1)), groups=2, layout="channels_last"),
    _spec(c_in=3, c_out=6, groups=3, padding=1, layout="channels_last"),  # depthwise, multiplier 2
    _spec(dtype="float64", layout="channels_last", padding=1),
    _spec(dtype="float16", stride=2, padding=1),
    _spec(dtype="bfloat16", layout="channels_last", transposed=True, stride=2),
]


def test_hand_checked_cases_match_the_reference():
    results = _python(_RUN_SCRIPT, json.dumps([s.to_dict() for s in CASES]))
    for spec, r in zip(CASES, results):
        assert r["shape"] == list(spec.output_shape) and r["dtype"] == spec.dtype, spec.label
        assert r["err"] <= r["tol"], (spec.label, r["err"])
        info = r["info"]
        assert info["layout_conversion_in_run"] == "[]"
        assert info["dimension_numbers"].startswith("NC" if spec.layout == "channels_first" else "N")
        assert info["dimension_numbers"].endswith("C") == (spec.layout == "channels_last")
        assert info["transposed_as_dilated_conv"] == str(spec.transposed)


_THREAD_SCRIPT = r"""
import json, sys
import convbench as cb
b = cb.get_backend("jax")
assert b.available()
b.set_threads(int(sys.argv[1]))  # as the worker does: after available(), before prepare()
spec = cb.ConvSpec(n=1, c_in=4, c_out=4, input_size=(8, 8), kernel_size=3, padding=1)
x, w = cb.make_inputs(spec)
first = b.prepare(spec, x, w).info
b.set_threads(int(sys.argv[1]) + 1)  # too late: XLA's CPU client exists
second = b.prepare(spec, x, w).info
print(json.dumps({"first": {k: str(v) for k, v in first.items()},
                  "second": {k: str(v) for k, v in second.items()}}))
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_are_pinned_and_recorded(threads):
    out = _python(_THREAD_SCRIPT, str(threads), env=set_thread_env(threads))
    first, second = out["first"], out["second"]
    assert first["xla_cpu_threads"] == first["pjrt_nproc"] == first["threads_requested"] == str(threads)
    assert ("--xla_cpu_multi_thread_eigen=false" in first["xla_flags"]) == (threads == 1)
    if sys.platform.startswith("linux"):
        assert first["xla_eigen_pool_threads"] == str(threads)
    assert "thread_notes" not in first
    assert second["xla_cpu_threads"] == str(threads) and second["threads_requested"] == str(threads + 1)
    assert "came after XLA's CPU client was created" in second["thread_notes"]


def test_check_backend_passes():
    code = ("import json\nfrom convbench.testing import check_backend\n"
            "r = check_backend('jax', device='cpu')\n"
            "print(json.dumps({'ok': r.ok, 'summary': r.summary(), 'refused': r.count('refused'), "
            "'max_error': r.max_error}))")
    out = _python(code, timeout=900)
    assert out["ok"], out["summary"]
    assert set(out["max_error"]) == {"float64", "float32", "float16", "bfloat16"}
