"""Registry: discovery, lookup errors, wildcards, lazy imports, convolve, Support semantics."""
import subprocess
import sys
import warnings

import numpy as np
import pytest

import convbench as cb
from convbench.registry import Backend, Capabilities, Prepared, Support, register, unregister
from convbench.spec import numpy_dtype

BUILTINS = {"numpy-direct", "numpy-im2col", "numpy-fft", "scipy-fft", "scipy-signal", "torch",
            "tensorflow", "numba", "triton"}


class _RefPrepared(Prepared):
    def __init__(self, spec, x, w):
        self.spec, self.x, self.w, self.info = spec, x, w, {}

    def run(self):
        self.y = cb.reference(self.spec, self.x, self.w)

    def result(self):
        return self.y.astype(numpy_dtype(self.spec.dtype))


class TwoDOnly(Backend):
    name = "test-2d-only"
    family = "test"
    capabilities = Capabilities(dims=frozenset({2}), dtypes=frozenset({"float32"}), transposed=False)

    def algorithms(self, device="cpu"):
        return ["plain", "fussy"] if device == "cpu" else []

    def _supports(self, spec, device, algorithm):
        if algorithm == "fussy" and spec.groups != 1:
            return Support.no("fussy needs groups=1")
        return Support.yes()

    def _prepare(self, spec, x, w, algorithm, device):
        return _RefPrepared(spec, x, w)


class Missing(Backend):
    name = "test-missing"
    family = "test"
    install_hint = "pip install convbench[nothing]"

    def _check_available(self):
        import convbench_no_such_module  # noqa: F401

    def algorithms(self, device="cpu"):
        return ["x"]

    def _prepare(self, spec, x, w, algorithm, device):
        raise AssertionError("never called")


@pytest.fixture
def registered():
    register(TwoDOnly)
    register(Missing)
    yield
    unregister(TwoDOnly.name)
    unregister(Missing.name)


def test_builtins_discovered_through_entry_points():
    assert BUILTINS <= set(cb.list_backends())


def test_wildcards():
    names = cb.list_backends("*fft*")
    assert set(names) == {"numpy-fft", "scipy-fft"}
    assert set(cb.list_backends(["numpy-*", "torch"])) == {"numpy-direct", "numpy-im2col", "numpy-fft", "torch"}


def test_unknown_backend_error_lists_known_names():
    with pytest.raises(cb.UnknownBackendError) as e:
        cb.get_backend("cudnn-magic")
    msg = str(e.value)
    assert "cudnn-magic" in msg and "numpy-direct" in msg
    assert isinstance(e.value, cb.ConvbenchError)


def test_support_truthiness_and_reasons(registered):
    b = cb.get_backend("test-2d-only")
    s1 = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(5,), kernel_size=3)
    assert not b.supports(s1) and "1-D" in b.supports(s1).reason
    s2 = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3, groups=2)
    assert b.supports(s2)  # 'plain' can
    r = b.supports(s2, algorithm="fussy")
    assert not r and r.reason == "fussy needs groups=1"
    r = b.supports(s2, algorithm="nope")
    assert not r and "unknown algorithm" in r.reason
    assert not b.supports(s2, device="cuda")
    assert not b.supports(s2.replace(dtype="float64"))


def test_prepare_refuses_unsupported_cleanly(registered):
    b = cb.get_backend("test-2d-only")
    s = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(5,), kernel_size=3)
    x, w = cb.make_inputs(s)
    with pytest.raises(cb.UnsupportedError, match="1-D"):
        b.prepare(s, x, w)


def test_unavailable_backend_reports_install_hint(registered):
    b = cb.get_backend("test-missing")
    a = b.available()
    assert not a
    assert "pip install convbench[nothing]" in a.reason and "convbench_no_such_module" in a.reason
    assert "test-missing" not in cb.list_backends("test-*", available_only=True)
    s = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3)
    x, w = cb.make_inputs(s)
    with pytest.raises(cb.BackendUnavailableError, match="pip install"):
        b.prepare(s, x, w)


def test_duplicate_registration_warns(registered):
    with pytest.warns(UserWarning, match="registered twice"):
        register(TwoDOnly)


def test_convolve_matches_reference_and_validates_inputs(registered):
    s = cb.ConvSpec(n=2, c_in=3, c_out=4, input_size=(6, 5), kernel_size=3, padding=1)
    x, w = cb.make_inputs(s, seed=3)
    y = cb.convolve(s, x, w, backend="test-2d-only")
    assert y.dtype == np.float32 and y.shape == s.output_shape
    with pytest.raises(cb.InvalidInputError, match="shape"):
        cb.convolve(s, x[:1], w, backend="test-2d-only")
    with pytest.raises(cb.InvalidInputError, match="dtype"):
        cb.convolve(s, x.astype(np.float64), w, backend="test-2d-only")
    with pytest.raises(cb.InvalidInputError, match="device"):
        cb.convolve(s, x, w, backend="test-2d-only", device="tpu")


def test_candidate_parse():
    c = cb.Candidate.parse("numpy-fft:rfft@cpu")
    assert (c.backend, c.algorithm, c.device) == ("numpy-fft", "rfft", "cpu")
    assert str(c) == "numpy-fft:rfft@cpu"
    assert cb.Candidate.parse("torch:default").device == "cpu"
    with pytest.raises(cb.UnknownBackendError):
        cb.Candidate.parse("torch")


def test_import_is_lazy():
    code = ("import sys, convbench as cb; names = cb.list_backends(); "
            "[cb.get_backend(n) for n in names]; "
            "s = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3); "
            "[cb.get_backend(n).supports(s) for n in names if n not in ('torch', 'tensorflow', 'triton')]; "
            "heavy = [m for m in ('torch', 'tensorflow', 'numba', 'triton', 'pandas') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"import convbench / listing backends imported: {out.stdout}"


def test_backends_command_lists_only_devices_usable_here(registered):
    from convbench.cli.backends import _status

    b = cb.get_backend("test-2d-only")
    assert b.device_support("cpu") and not b.device_support("cuda")  # the capability table's devices
    desc = {"available": True, "algorithms": {"cpu": ["plain"], "cuda": ["fast"]},
            "unusable_devices": {"cuda": "no CUDA device"}}
    status, algos = _status(b, desc)
    assert status == "available (cuda: no CUDA device)" and algos == {"cpu": ["plain"]}
    desc["unusable_devices"]["cpu"] = "cpu needs an interpreter"
    status, algos = _status(b, desc)
    assert status.startswith("unavailable: cpu: cpu needs an interpreter; cuda: no CUDA") and algos == {}
    status, _ = _status(b, {"available": False, "reason": "x is not installed"})
    assert status == "unavailable: x is not installed"
