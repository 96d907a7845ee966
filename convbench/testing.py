"""check_backend(): the conformance suite every backend runs, built-in or third-party.

Like scikit-learn's ``check_estimator``: the same checks for everyone. A backend declares
what it does not support (``supports()`` with a reason) and which supported specs may miss
the error bound (``expected_failure()`` with a reason); nothing is special-cased here.

Checks per backend (:func:`check_declarations`), against what it declares:
- lazy imports: importing its module, creating it and listing its algorithms in a fresh process
  imports none of its ``framework_modules``;
- install hint: a backend with ``framework_modules`` has an ``install_hint``, and an unavailable
  backend's reason contains it;
- with its ``framework_modules`` unimportable (a fresh process): ``available()`` says no (with
  the hint), ``supports()`` answers without raising on a few specs, and ``prepare()`` raises
  BackendUnavailableError.

Checks per (algorithm, spec):
- unsupported specs: ``supports()`` gives a reason and ``prepare()`` raises UnsupportedError;
- supported specs: ``prepare()`` does not refuse them; per spec, ``supports(spec)`` without an
  algorithm true means ``prepare(spec)`` without one does not raise UnsupportedError either;
- supported specs: output is a numpy array of ``spec.output_shape`` and ``spec.dtype``;
  norm-wise relative error against the float64 reference within the backend's tolerance;
  the inputs are left unmodified; a second ``run()`` gives the same output.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from .errors import InvalidSpecError, UnsupportedError
from .reference import make_inputs, output_error, reference
from .registry import Backend, get_backend
from .spec import DTYPES, LAYOUTS, ConvSpec, numpy_dtype

LEVELS = {"default": 8, "extended": 200}  # random specs per algorithm on top of the fixed spread

PASS, FAIL, XFAIL, REFUSED = "pass", "fail", "xfail", "refused"


@dataclass
class SpecResult:
    """The outcome of one (algorithm, spec) check."""

    spec: ConvSpec
    algorithm: str
    device: str
    status: str  # pass | fail | xfail | refused
    error: Optional[float] = None
    tolerance: Optional[float] = None
    message: str = ""

    def __str__(self) -> str:
        err = "" if self.error is None else f" err={self.error:.2e} (tol {self.tolerance:.2g})"
        msg = f": {self.message}" if self.message else ""
        return f"[{self.status}] {self.algorithm}@{self.device} {self.spec.label}{err}{msg}"


@dataclass
class CheckReport:
    """All results of check_backend for one backend on one device."""

    backend: str
    device: str
    available: bool
    reason: str = ""
    results: list[SpecResult] = field(default_factory=list)
    #: what check_declarations found wrong with the backend's declarations
    declaration_problems: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[SpecResult]:
        return [r for r in self.results if r.status == FAIL]

    @property
    def ok(self) -> bool:
        """True when the backend is available and no check failed."""
        return (self.available and not self.failures and not self.declaration_problems
                and any(r.status == PASS for r in self.results))

    @property
    def status(self) -> str:
        if self.declaration_problems:
            return "fail"
        if not self.available:
            return "unavailable"
        return "pass" if self.ok else "fail"

    @property
    def n_specs(self) -> int:
        """Number of (algorithm, spec) pairs checked, refused ones included."""
        return len(self.results)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def max_error(self) -> dict[str, float]:
        """Largest error seen per dtype over the passing and expected-failing checks."""
        out: dict[str, float] = {}
        for r in self.results:
            if r.error is not None and r.status in (PASS, XFAIL):
                out[r.spec.dtype] = max(out.get(r.spec.dtype, 0.0), r.error)
        return out

    def max_error_by(self) -> dict[tuple[str, str], float]:
        """Largest error per (algorithm, dtype)."""
        out: dict[tuple[str, str], float] = {}
        for r in self.results:
            if r.error is not None and r.status in (PASS, XFAIL):
                k = (r.algorithm, r.spec.dtype)
                out[k] = max(out.get(k, 0.0), r.error)
        return out

    def summary(self, max_failures: int = 10) -> str:
        declared = [f"  declarations: {p}" for p in self.declaration_problems]
        if not self.available:
            return "\n".join([f"{self.backend}@{self.device}: unavailable: {self.reason}", *declared])
        head = (f"{self.backend}@{self.device}: {self.status.upper()} - {self.n_specs} checks: "
                f"{self.count(PASS)} passed, {self.count(FAIL)} failed, {self.count(XFAIL)} expected "
                f"failures, {self.count(REFUSED)} refused as unsupported")
        errs = ", ".join(f"{d} {e:.1e}" for d, e in sorted(self.max_error.items()))
        lines = [head, f"  max error: {errs or 'n/a'}", *declared]
        for r in self.failures[:max_failures]:
            lines.append(f"  {r}")
        if len(self.failures) > max_failures:
            lines.append(f"  ... and {len(self.failures) - max_failures} more failures")
        return "\n".join(lines)


# ---- the specs ------------------------------------------------------------------------------
def fixed_specs() -> list[ConvSpec]:
    """A deterministic spread over dims 1-3 and every option, small enough to run anywhere."""
    base = {1: (13,), 2: (7, 6), 3: (5, 4, 5)}
    out: list[ConvSpec] = []
    for d, size in base.items():
        k = (3,) * d
        out += [
            ConvSpec(n=2, c_in=3, c_out=4, input_size=size, kernel_size=k, name=f"{d}d-plain"),
            ConvSpec(n=1, c_in=4, c_out=6, input_size=size, kernel_size=k, stride=2, padding=1,
                     name=f"{d}d-stride"),
            ConvSpec(n=1, c_in=3, c_out=2, input_size=size, kernel_size=k,
                     padding=tuple((1, 2) if i == 0 else (0, 1) for i in range(d)), name=f"{d}d-asym"),
            ConvSpec(n=1, c_in=2, c_out=3, input_size=size, kernel_size=(2,) * d, dilation=2, padding=1,
                     name=f"{d}d-dilated"),
            ConvSpec(n=2, c_in=4, c_out=6, input_size=size, kernel_size=k, groups=2, padding=1,
                     name=f"{d}d-grouped"),
            ConvSpec(n=1, c_in=4, c_out=4, input_size=size, kernel_size=k, groups=4, padding=1,
                     name=f"{d}d-depthwise"),
            ConvSpec(n=1, c_in=3, c_out=5, input_size=size, kernel_size=(1,) * d, name=f"{d}d-1x1"),
            ConvSpec(n=1, c_in=3, c_out=2, input_size=size, kernel_size=k, padding="same", name=f"{d}d-same"),
            ConvSpec(n=1, c_in=4, c_out=2, input_size=size, kernel_size=k, stride=2, padding=1,
                     transposed=True, output_padding=1, name=f"{d}d-transposed"),
            ConvSpec(n=1, c_in=4, c_out=4, input_size=size, kernel_size=k, stride=1, padding=0,
                     groups=2, transposed=True, name=f"{d}d-transposed-grouped"),
            ConvSpec(n=2, c_in=3, c_out=4, input_size=size, kernel_size=k, padding=1,
                     layout="channels_last", name=f"{d}d-channels-last"),
        ]
    # int8 (quantized, an exact reference) on every option above
    out += [s.replace(dtype="int8", name=f"{s.name}-int8") for s in list(out)]
    # every dtype on a few problems, both layouts
    for dt in ("float64", "float16", "bfloat16"):
        for lay in LAYOUTS:
            out.append(ConvSpec(n=1, c_in=8, c_out=8, input_size=(6, 6), kernel_size=3, padding=1,
                                dtype=dt, layout=lay, name=f"2d-{dt}-{lay}"))
        out.append(ConvSpec(n=1, c_in=4, c_out=4, input_size=(9,), kernel_size=3, stride=2, padding=1,
                            dtype=dt, name=f"1d-{dt}"))
    # the 3x3 stride-1 shape Winograd-style kernels specialise on, larger than a tile
    out.append(ConvSpec(n=2, c_in=8, c_out=16, input_size=(10, 9), kernel_size=3, padding=1,
                        name="2d-3x3-tiles"))
    out.append(ConvSpec(n=1, c_in=8, c_out=16, input_size=(10, 9), kernel_size=3, padding=1,
                        layout="channels_last", name="2d-3x3-tiles-cl"))
    return out


def draw_spec(rand_int: Callable[[int, int], int]) -> Optional[ConvSpec]:
    """One random small spec across dims 1-3 and all options, or None if the draw is invalid.

    ``rand_int(lo, hi)`` returns an int in [lo, hi]; the same logic serves hypothesis and the
    seeded generator of check_backend.
    """
    d = rand_int(1, 3)
    groups = (1, 1, 2, 3)[rand_int(0, 3)]
    depthwise = rand_int(0, 5) == 0
    if depthwise:
        groups = rand_int(2, 4)
        c_in = c_out = groups
    else:
        c_in, c_out = groups * rand_int(1, 3), groups * rand_int(1, 3)
    max_size = {1: 16, 2: 8, 3: 5}[d]
    max_k = {1: 5, 2: 3, 3: 3}[d]
    size = tuple(rand_int(1, max_size) for _ in range(d))
    kernel = tuple(rand_int(1, max_k) for _ in range(d))
    stride = tuple(rand_int(1, 3) for _ in range(d))
    dilation = tuple(rand_int(1, 2) for _ in range(d))
    transposed = rand_int(0, 3) == 0
    mode = rand_int(0, 5)
    if mode == 0:
        padding: Any = "valid"
    elif mode == 1 and not transposed:
        padding = "same"
    elif mode == 2:
        padding = tuple((rand_int(0, 2), rand_int(0, 2)) for _ in range(d))
    else:
        padding = tuple(rand_int(0, 2) for _ in range(d))
    output_padding: Any = 0
    if transposed and rand_int(0, 1):
        output_padding = tuple(rand_int(0, max(s, dl) - 1) for s, dl in zip(stride, dilation))
    dtype = ("float32", "float32", "float32", "float64", "float16", "bfloat16")[rand_int(0, 5)]
    layout = LAYOUTS[rand_int(0, 1)]
    try:
        return ConvSpec(n=rand_int(1, 2), c_in=c_in, c_out=c_out, input_size=size, kernel_size=kernel,
                        stride=stride, padding=padding, dilation=dilation, groups=groups,
                        transposed=transposed, output_padding=output_padding, dtype=dtype,
                        layout=layout, name="random")
    except InvalidSpecError:
        return None


def random_specs(count: int, seed: int = 0) -> list[ConvSpec]:
    """``count`` valid random specs from a seeded generator."""
    rng = random.Random(seed)
    out: list[ConvSpec] = []
    while len(out) < count:
        s = draw_spec(rng.randint)
        if s is not None:
            out.append(s)
    return out


def spec_strategy():
    """A hypothesis strategy of valid random specs (the same distribution as random_specs)."""
    from hypothesis import assume, strategies as st

    @st.composite
    def specs(draw):
        s = draw_spec(lambda lo, hi: draw(st.integers(lo, hi)))
        assume(s is not None)
        return s

    return specs()


# ---- the checks -----------------------------------------------------------------------------
def check_spec(backend: Backend, spec: ConvSpec, algorithm: str, device: str = "cpu",
               seed: int = 0) -> SpecResult:
    """Run every conformance check for one (algorithm, spec) pair."""
    def result(status: str, **kw: Any) -> SpecResult:
        return SpecResult(spec, algorithm, device, status, **kw)

    x, w = make_inputs(spec, seed=seed)
    sup = backend.supports(spec, device, algorithm)
    if not sup:
        if not sup.reason:
            return result(FAIL, message="supports() said no without a reason")
        try:
            p = backend.prepare(spec, x, w, algorithm=algorithm, device=device)
        except UnsupportedError:
            return result(REFUSED, message=sup.reason)
        except Exception as exc:  # noqa: BLE001 - any other exception is the failure we report
            return result(FAIL, message=f"unsupported spec not refused cleanly: prepare raised "
                                        f"{type(exc).__name__}: {exc}")
        p.close()
        return result(FAIL, message="supports() said no but prepare() accepted the spec")

    x0, w0 = x.copy(), w.copy()
    tol = backend.tolerance(spec, device, algorithm)
    try:
        p = backend.prepare(spec, x, w, algorithm=algorithm, device=device)
        try:
            p.run()
            p.synchronize()
            y1 = np.array(p.result(), copy=True)
            p.run()
            p.synchronize()
            y2 = p.result()
        finally:
            p.close()
    except Exception as exc:  # noqa: BLE001
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return result(FAIL, tolerance=tol, message=f"raised on a supported spec: {tb}")

    problems = []
    if not isinstance(y1, np.ndarray):
        return result(FAIL, tolerance=tol, message=f"result() returned {type(y1).__name__}, not numpy")
    if tuple(y1.shape) != spec.output_shape:
        return result(FAIL, tolerance=tol,
                      message=f"output shape {tuple(y1.shape)} != expected {spec.output_shape}")
    if y1.dtype != numpy_dtype(spec.dtype):
        problems.append(f"output dtype {y1.dtype} != {spec.dtype}")
    if not (np.array_equal(x, x0) and np.array_equal(w, w0)):
        problems.append("inputs were modified")
    err = output_error(y1, reference(spec, x0, w0))
    if not np.array_equal(np.asarray(y2), y1, equal_nan=True) and output_error(y2, y1) > tol:
        problems.append(f"a second run() differs from the first (diff {output_error(y2, y1):.2e})")
    if err > tol:
        reason = backend.expected_failure(spec, device, algorithm)
        if reason and not problems:
            return result(XFAIL, error=err, tolerance=tol, message=reason)
        problems.append(f"error {err:.2e} exceeds the {spec.dtype} bound {tol:.2g}")
    if problems:
        return result(FAIL, error=err, tolerance=tol, message="; ".join(problems))
    return result(PASS, error=err, tolerance=tol)


def check_default(backend: Backend, spec: ConvSpec, device: str = "cpu") -> Optional[SpecResult]:
    """supports(spec) without an algorithm true => prepare(spec) without one does not refuse
    (algorithm "(default)"); None when the backend does not support ``spec`` at all."""
    if not backend.supports(spec, device):
        return None
    x, w = make_inputs(spec)
    try:
        backend.prepare(spec, x, w, algorithm=None, device=device).close()
    except UnsupportedError as exc:
        return SpecResult(spec, "(default)", device, FAIL,
                          message=f"supports() says yes but prepare() without an algorithm refused: {exc}")
    except Exception:  # noqa: BLE001 - other failures are check_spec's to report, per algorithm
        return None
    return SpecResult(spec, "(default)", device, PASS)


# ---- declarations -----------------------------------------------------------------------------
#: run in a fresh process: argv = sys.path (JSON), "module:qualname", framework_modules (JSON)
_FRESH_PROCESS_PROBE = r"""
import json, sys
sys.path[:0] = [p for p in json.loads(sys.argv[1]) if p not in sys.path]
target, frameworks = sys.argv[2], json.loads(sys.argv[3])
from convbench.errors import BackendUnavailableError
from convbench.reference import make_inputs
from convbench.registry import Backend, load_target
from convbench.testing import fixed_specs

obj = load_target(target)
b = obj if isinstance(obj, Backend) else obj()
for dev in sorted(b.capabilities.devices):
    b.algorithms(dev)
out = {"imported": sorted(m for m in frameworks if sys.modules.get(m) is not None)}
if not out["imported"]:
    for m in frameworks:
        sys.modules[m] = None  # unimportable from here on
    a = b.available()
    out.update(available=bool(a), reason=a.reason, supports_raised=[], prepare_raised=None)
    specs = fixed_specs()[::9]
    for spec in specs:
        for dev in sorted(b.capabilities.devices):
            for algo in [None, *b.algorithms(dev)]:
                try:
                    b.supports(spec, dev, algo)
                except Exception as exc:
                    out["supports_raised"].append(f"supports({spec.name}, {dev!r}, {algo!r}): "
                                                  f"{type(exc).__name__}: {exc}")
    x, w = make_inputs(specs[0])
    try:
        b.prepare(specs[0], x, w)
    except BackendUnavailableError:
        out["prepare_raised"] = "BackendUnavailableError"
    except Exception as exc:
        out["prepare_raised"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def _fresh_process_problems(backend: Backend) -> list[str]:
    """Import ``backend`` in a fresh process, then block its frameworks there (see module doc)."""
    cls = type(backend)
    target = f"{cls.__module__}:{cls.__qualname__}"
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        return [f"declares framework_modules but {target} cannot be imported by a fresh process "
                f"(define the class at module level)"]
    frameworks = list(backend.framework_modules)
    try:
        proc = subprocess.run([sys.executable, "-c", _FRESH_PROCESS_PROBE, json.dumps(sys.path),
                               target, json.dumps(frameworks)],
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return [f"the fresh-process check of {target} did not finish within 300 s"]
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return [f"the fresh-process check of {target} failed (exit status {proc.returncode}): {tail}"]
    if out["imported"]:
        return [f"importing {cls.__module__} and listing its algorithms imported "
                f"{', '.join(out['imported'])}: import frameworks in available()/prepare() only"]
    raised = out["supports_raised"]
    problems = [f"{len(raised)} supports() calls raised with its framework_modules unimportable, e.g. "
                f"{raised[0]}: supports() must answer without importing a framework"] if raised else []
    if out["available"]:
        problems.append(f"available() says yes with {', '.join(frameworks)} unimportable: "
                        f"framework_modules must name every framework it needs")
    elif backend.install_hint not in out["reason"]:
        problems.append(f"unavailable reason {out['reason']!r} lacks the install hint "
                        f"{backend.install_hint!r}")
    if not out["available"] and out["prepare_raised"] != "BackendUnavailableError":
        problems.append(f"prepare() of an unavailable backend raised {out['prepare_raised']}, "
                        f"not BackendUnavailableError")
    return problems


def check_declarations(backend: Backend | str) -> list[str]:
    """What is wrong with a backend's lazy imports and install hint (module doc); [] if nothing."""
    if isinstance(backend, str):
        backend = get_backend(backend)
    if not backend.framework_modules:  # nothing heavy to import: ask here
        avail = backend.available()
        if not avail and backend.install_hint and backend.install_hint not in avail.reason:
            return [f"unavailable reason {avail.reason!r} lacks the install hint {backend.install_hint!r}"]
        return []
    if not backend.install_hint:
        return [f"framework_modules {backend.framework_modules} but no install_hint "
                f"(e.g. 'pip install <distribution>')"]
    return _fresh_process_problems(backend)


def check_backend(backend: Backend | str, device: str = "cpu", level: str = "default", seed: int = 0,
                  algorithms: Optional[Sequence[str]] = None, specs: Optional[Iterable[ConvSpec]] = None,
                  progress: Optional[Callable[[SpecResult], None]] = None,
                  declarations: bool = True) -> CheckReport:
    """Run the conformance suite for one backend on one device.

    ``level="default"`` checks the fixed spread plus a few random specs per algorithm;
    ``"extended"`` adds 200 random specs per algorithm; ``declarations`` adds
    :func:`check_declarations`. Returns a CheckReport (``.ok``, ``.summary()``); it does not
    raise on failures.
    """
    if isinstance(backend, str):
        backend = get_backend(backend)
    if level not in LEVELS:
        raise InvalidSpecError(f"level: {level!r} is not a level; use one of {', '.join(LEVELS)}")
    avail = backend.available()
    report = CheckReport(backend.name, device, bool(avail), avail.reason)
    if declarations:
        report.declaration_problems = check_declarations(backend)
    if not avail:
        return report
    algos = list(algorithms) if algorithms is not None else backend.algorithms(device)
    if specs is None:
        spec_list = fixed_specs() + random_specs(LEVELS[level], seed=seed)
    else:
        spec_list = list(specs)
    for algo in algos:
        for i, spec in enumerate(spec_list):
            r = check_spec(backend, spec, algo, device, seed=seed + i)
            report.results.append(r)
            if progress is not None:
                progress(r)
    if algorithms is None:
        for spec in spec_list:
            d = check_default(backend, spec, device)
            if d is not None:
                report.results.append(d)
                if progress is not None:
                    progress(d)
    return report


__all__ = ["check_backend", "check_declarations", "check_spec", "check_default", "CheckReport", "SpecResult", "fixed_specs",
           "random_specs", "spec_strategy", "draw_spec", "DTYPES"]
