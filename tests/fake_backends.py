"""Misbehaving backends for the worker tests; registered with convbench.registry.register in
tests only (never through entry points).

``fake-ok`` is correct (it evaluates the float64 reference and casts), the others crash,
hang, run out of memory, raise, or answer wrongly on purpose.
"""
from __future__ import annotations

import ctypes
import gc
import os
import time

import numpy as np

from convbench.reference import reference
from convbench.registry import Backend, Capabilities, Prepared, Support
from convbench.spec import numpy_dtype

FAMILY = "fake"


class _RefPrepared(Prepared):
    """Correct answer (float64 reference cast to the spec's dtype), optionally perturbed."""

    def __init__(self, spec, x, w, offset: float = 0.0, on_run=None):
        self.spec, self.x, self.w = spec, x, w
        self.offset = offset
        self.on_run = on_run
        self.calls = 0
        self.out = None
        self.info = {"fake": True, "calls_at_prepare": 0}

    def run(self) -> None:
        self.calls += 1
        if self.on_run is not None:
            self.on_run()
        self.out = reference(self.spec, self.x, self.w) + self.offset

    def result(self) -> np.ndarray:
        return self.out.astype(numpy_dtype(self.spec.dtype))


class _FakeBase(Backend):
    family = FAMILY
    capabilities = Capabilities(dtypes=frozenset({"float32", "float64"}))

    def algorithms(self, device: str = "cpu") -> list[str]:
        return ["default"] if device == "cpu" else []

    def versions(self) -> dict[str, str]:
        return {"fakelib": "1.2.3"}


class FakeOK(_FakeBase):
    name = "fake-ok"
    description = "correct: the float64 reference, cast"

    def set_threads(self, n: int) -> None:
        self.threads_seen = n

    def _prepare(self, spec, x, w, algorithm, device):
        p = _RefPrepared(spec, x, w)
        p.info["threads_seen"] = getattr(self, "threads_seen", None)
        p.info["omp_env"] = os.environ.get("OMP_NUM_THREADS")
        p.info["pid"] = os.getpid()
        p.info["gc_frozen"] = gc.get_freeze_count()
        return p


class FakeOtherFamily(FakeOK):
    name = "fake-ok-other"
    family = "fake-other"


def _segfault() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV


class FakeCrash(_FakeBase):
    name = "fake-crash"
    description = "dies in run(): abort, segfault or os._exit"

    def algorithms(self, device: str = "cpu") -> list[str]:
        return ["abort", "segfault", "exit"]

    def _prepare(self, spec, x, w, algorithm, device):
        action = {"abort": os.abort, "segfault": _segfault, "exit": lambda: os._exit(7)}[algorithm]
        return _RefPrepared(spec, x, w, on_run=action)


class FakeHang(_FakeBase):
    name = "fake-hang"
    description = "never returns from run()"

    def _prepare(self, spec, x, w, algorithm, device):
        return _RefPrepared(spec, x, w, on_run=lambda: time.sleep(3600))


class FakeSlow(_FakeBase):
    name = "fake-slow"
    description = "correct, but every run() takes 0.3 s"

    def _prepare(self, spec, x, w, algorithm, device):
        return _RefPrepared(spec, x, w, on_run=lambda: time.sleep(0.3))


class FakeMemory(_FakeBase):
    name = "fake-oom"
    description = "runs out of memory: MemoryError, or a CUDA-style RuntimeError"

    def algorithms(self, device: str = "cpu") -> list[str]:
        return ["memoryerror", "cuda-message"]

    def _prepare(self, spec, x, w, algorithm, device):
        if algorithm == "memoryerror":
            raise MemoryError("cannot allocate 1 PiB")
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")


class FakeWrong(_FakeBase):
    name = "fake-wrong"
    description = "adds 1 to every output; 'declared' declares it as an expected failure"

    def algorithms(self, device: str = "cpu") -> list[str]:
        return ["plain", "declared"]

    def expected_failure(self, spec, device, algorithm):
        return "known off-by-one in the fake kernel" if algorithm == "declared" else None

    def _prepare(self, spec, x, w, algorithm, device):
        return _RefPrepared(spec, x, w, offset=1.0)


class FakeRaises(_FakeBase):
    name = "fake-raises"
    description = "raises ValueError in prepare"

    def _prepare(self, spec, x, w, algorithm, device):
        raise ValueError("fake kernel rejects this problem")


class FakeUnavailable(_FakeBase):
    name = "fake-unavailable"
    install_hint = "pip install fakelib"

    def _check_available(self) -> Support:
        return Support.no("fakelib is not installed")

    def _prepare(self, spec, x, w, algorithm, device):  # pragma: no cover - never reached
        raise AssertionError("prepare on an unavailable backend")


class FakeNoStride(_FakeBase):
    name = "fake-nostride"
    capabilities = Capabilities(dtypes=frozenset({"float32", "float64"}), strides=False)

    def _prepare(self, spec, x, w, algorithm, device):
        return _RefPrepared(spec, x, w)


class FakeLazyFramework(_FakeBase):
    """Declares a stand-in framework ("wave", never imported by convbench) and imports it only
    in available() and prepare(): check_declarations finds nothing wrong."""

    name = "fake-lazy-framework"
    install_hint = "pip install fakewave"
    framework_modules = ("wave",)

    def _check_available(self) -> Support:
        import wave  # noqa: F401

        return Support.yes()

    def _prepare(self, spec, x, w, algorithm, device):
        import wave  # noqa: F401

        return _RefPrepared(spec, x, w)


class FakeEagerFramework(FakeLazyFramework):
    """Imports its framework when listing its algorithms."""

    name = "fake-eager-framework"

    def algorithms(self, device: str = "cpu") -> list[str]:
        import wave  # noqa: F401

        return super().algorithms(device)


class FakeFrameworkInSupports(FakeLazyFramework):
    """Imports its framework in supports(), without catching the ImportError."""

    name = "fake-framework-in-supports"

    def _supports(self, spec, device, algorithm):
        import wave  # noqa: F401

        return Support.yes()


class FakeUndeclaredFramework(FakeLazyFramework):
    """Needs a second framework ("colorsys") that it does not declare: available() says yes
    with the declared one blocked."""

    name = "fake-undeclared-framework"

    def _check_available(self) -> Support:
        import colorsys  # noqa: F401

        return Support.yes()


class FakeNoHint(FakeLazyFramework):
    name = "fake-no-hint"
    install_hint = ""


ALL = [FakeOK, FakeOtherFamily, FakeCrash, FakeHang, FakeMemory, FakeWrong, FakeRaises,
       FakeUnavailable, FakeNoStride, FakeSlow]


#: a suite of two small 1D problems that differ only in kernel size (report and compare tests)
TINY_SUITE = """
[suite]
name = "tiny"
description = "two small 1D problems that differ only in kernel size"
source = "tests/fake_backends.py"

[defaults]
n = 1
dtype = "float32"
c_in = 4
c_out = 4
input_size = [64]

[[problem]]
name = "tiny-k3"
kernel_size = 3

[[problem]]
name = "tiny-k9"
kernel_size = 9
"""
