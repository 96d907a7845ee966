"""Backend and Prepared interfaces, capability declarations, discovery and lookup.

Backends register through the ``convbench.backends`` entry-point group (the built-ins too)
or, inside one process, with :func:`register`. Entry points are read lazily; a backend's
heavy framework import happens in its own ``available()`` / ``prepare()``, never here.
"""
from __future__ import annotations

import fnmatch
import importlib
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable, Iterable, Optional

import numpy as np

from . import memory
from .errors import (BackendUnavailableError, ConvbenchError, InvalidInputError,
                     UnknownBackendError, UnsupportedError)
from .memory import MemoryEstimate
from .spec import FLOAT_DTYPES, LAYOUTS, ConvSpec

ENTRY_POINT_GROUP = "convbench.backends"
DEVICES = ("cpu", "cuda")


class Support:
    """A yes/no answer that carries its reason: truthy when supported/available."""

    __slots__ = ("ok", "reason")

    def __init__(self, ok: bool, reason: str = "") -> None:
        self.ok = bool(ok)
        self.reason = reason

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return "Support(True)" if self.ok else f"Support(False, {self.reason!r})"

    @classmethod
    def yes(cls) -> "Support":
        return cls(True, "")

    @classmethod
    def no(cls, reason: str) -> "Support":
        return cls(False, reason)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do at all; ``Backend.supports`` checks these before asking the backend."""

    dims: frozenset = frozenset({1, 2, 3})
    dtypes: frozenset = frozenset(FLOAT_DTYPES)
    layouts: frozenset = frozenset(LAYOUTS)
    devices: frozenset = frozenset({"cpu"})
    strides: bool = True
    dilation: bool = True
    groups: bool = True
    asymmetric_padding: bool = True
    transposed: bool = True

    def check(self, spec: ConvSpec, device: str) -> Support:
        if device not in self.devices:
            return Support.no(f"device {device!r} not supported (supports: {', '.join(sorted(self.devices))})")
        if spec.dims not in self.dims:
            return Support.no(f"{spec.dims}-D convolution not supported (supports {sorted(self.dims)}-D)")
        if spec.dtype not in self.dtypes:
            return Support.no(f"dtype {spec.dtype} not supported (supports: {', '.join(sorted(self.dtypes))})")
        if spec.layout not in self.layouts:
            return Support.no(f"layout {spec.layout} not supported")
        if not self.strides and any(s != 1 for s in spec.stride):
            return Support.no(f"stride {spec.stride} not supported (stride 1 only)")
        if not self.dilation and any(d != 1 for d in spec.dilation):
            return Support.no(f"dilation {spec.dilation} not supported (dilation 1 only)")
        if not self.groups and spec.groups != 1:
            return Support.no(f"groups={spec.groups} not supported (groups=1 only)")
        if not self.asymmetric_padding and not spec.symmetric_padding:
            return Support.no(f"asymmetric padding {spec.padding} not supported")
        if not self.transposed and spec.transposed:
            return Support.no("transposed convolution not supported")
        return Support.yes()


@dataclass(frozen=True)
class Candidate:
    """One timed thing: ``backend:algorithm@device``."""

    backend: str
    algorithm: str
    device: str = "cpu"

    def __str__(self) -> str:
        return f"{self.backend}:{self.algorithm}@{self.device}"

    @classmethod
    def parse(cls, text: str) -> "Candidate":
        """Parse ``backend:algorithm@device`` (``@device`` optional, defaults to cpu)."""
        rest, _, device = text.partition("@")
        backend, sep, algorithm = rest.partition(":")
        if not backend or not sep or not algorithm:
            raise UnknownBackendError(
                f"candidate {text!r} is not of the form backend:algorithm@device, e.g. numpy-fft:rfft@cpu")
        return cls(backend, algorithm, device or "cpu")


class Prepared(ABC):
    """A convolution ready to run: inputs converted and placed, output allocated, code compiled.

    ``run()`` is one convolution and nothing else (it is what gets timed). ``result()`` returns
    the output of the last run as numpy in spec.layout and spec.dtype (never timed).
    """

    spec: ConvSpec
    device: str = "cpu"
    #: free-form facts about what actually ran (library versions, chosen kernel, threads)
    info: dict

    @abstractmethod
    def run(self) -> None:
        """One convolution."""

    def synchronize(self) -> None:
        """Wait until work queued by run() has finished (asynchronous devices override)."""

    @abstractmethod
    def result(self) -> np.ndarray:
        """The last run's output as a numpy array in spec.layout and spec.dtype."""

    def device_timer(self) -> Optional["DeviceTimer"]:
        """A timer on the device's own clock (CUDA events), or None to time with the host clock."""
        return None

    def close(self) -> None:
        """Release device memory and other resources early (optional)."""


class DeviceTimer(ABC):
    """Times work queued on a device with the device's own clock (e.g. a pair of CUDA events)."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> float:
        """Record the end, wait for it, return elapsed seconds since start()."""


class Robustness(IntEnum):
    """How much a backend can be relied on, declared by the backend; winner selection prefers
    the lower value among candidates it cannot tell apart."""

    FRAMEWORK = 0  #: maintained framework kernels with their own shape heuristics
    LIBRARY = 1    #: array-library code with no compilation step (NumPy, SciPy)
    JIT = 2        #: kernels compiled at run time (compile cost, on-disk caches)
    UNKNOWN = 3    #: not declared


#: heuristic_rank of a backend that declares none: after every backend that does
DEFAULT_HEURISTIC_RANK = 100.0


class Backend(ABC):
    """A family of candidates behind one interface.

    Subclasses set ``name``, ``family`` (backends of one family share a worker process),
    ``capabilities`` and ``install_hint``, and implement ``algorithms`` and ``_prepare``;
    they refine ``_supports`` for rules the capability table cannot express.

    What the core needs to know about a backend it asks here, never by the backend's name:
    ``robustness``, ``framework_modules``, ``version_distributions`` / ``version_devices``,
    ``precomputes_weights``, ``heuristic_rank``, ``device_support``, ``native_kinds`` /
    ``native_kind``; for whole models ``model_support`` / ``collect_convs`` / ``wrap_convs``.
    A third-party backend declares them the same way and gets the same treatment as a
    built-in one.
    """

    name: str = ""
    family: str = ""
    description: str = ""
    install_hint: str = ""
    capabilities: Capabilities = Capabilities()
    #: algorithm name -> one line saying what it does (and what it precomputes, if anything)
    algorithm_descriptions: dict = {}
    #: tie-break preference (see Robustness)
    robustness: Robustness = Robustness.UNKNOWN
    #: top-level modules this backend imports on first use (in available()/prepare(), never at
    #: module import or in supports()); the sweep's parent process refuses to import them
    framework_modules: tuple = ()
    #: fingerprint key -> distribution names (first installed one wins) whose versions every
    #: result records, e.g. {"torch": ("torch",)}; read from package metadata, never imported
    version_distributions: dict = {}
    #: fingerprint key -> the devices on which a change of that version can overturn a cached
    #: winner, for keys narrower than ``capabilities.devices`` (e.g. a GPU library's version)
    version_devices: dict = {}
    #: algorithms that transform the weights ahead of time (FFT spectra, Winograd, packing)
    precomputed_algorithms: frozenset = frozenset()

    def precomputes_weights(self, algorithm: str) -> bool:
        """Whether ``algorithm`` transforms the weights ahead of time (comparisons say so)."""
        return algorithm in self.precomputed_algorithms

    def heuristic_rank(self, spec: ConvSpec, device: str) -> float:
        """Order in which the untuned fallback (no cache entry, no prediction) tries this
        backend's candidates for ``spec`` on ``device``: lower first. Default: after every
        backend that declares a rank."""
        return DEFAULT_HEURISTIC_RANK

    def device_support(self, device: str) -> Support:
        """Whether this machine gives the backend a usable ``device`` (a GPU is present and the
        framework's build reaches it). Asked only of an available backend, in its worker: it
        may import the framework. Default: yes for every device the capabilities name."""
        if device not in self.capabilities.devices:
            return Support.no(f"device {device!r} not supported")
        return Support.yes()

    # -- availability -------------------------------------------------------------------
    def _check_available(self) -> Support:
        """Import the dependencies; return Support.no(reason) if they are missing."""
        return Support.yes()

    def available(self) -> Support:
        cached = getattr(self, "_available_cache", None)
        if cached is None:
            try:
                cached = self._check_available()
            except Exception as exc:  # a broken install is "unavailable", not a crash
                cached = Support.no(f"import failed: {type(exc).__name__}: {exc}")
            if not cached and self.install_hint and self.install_hint not in cached.reason:
                cached = Support.no(f"{cached.reason}: {self.install_hint}")
            self._available_cache = cached
        return cached

    def assume_available(self, answer: Support) -> None:
        """Take ``answer`` as this backend's availability, as found by another process that
        imported the framework (a sweep's worker), so that ``available()`` here does not."""
        self._available_cache = answer

    # -- candidates ---------------------------------------------------------------------
    @abstractmethod
    def algorithms(self, device: str = "cpu") -> list[str]:
        """Names of this backend's candidates on ``device`` (first is the default)."""

    def default_algorithm(self, device: str = "cpu", spec: Optional[ConvSpec] = None) -> str:
        """The first algorithm on ``device``; with ``spec``, the first that supports it (so
        that ``supports(spec)`` true means ``prepare(spec)`` runs)."""
        algos = self.algorithms(device)
        if not algos:
            raise UnsupportedError(f"backend {self.name!r} has no algorithm on device {device!r}")
        if spec is not None:
            for algo in algos:
                if self.supports(spec, device, algo):
                    return algo
        return algos[0]

    def _supports(self, spec: ConvSpec, device: str, algorithm: str) -> Support:
        """Backend-specific rules beyond the capability table."""
        return Support.yes()

    def supports(self, spec: ConvSpec, device: str = "cpu", algorithm: Optional[str] = None) -> Support:
        """Whether this backend (with ``algorithm``: that candidate alone) can run ``spec``:
        the capability table, the backend's own rules, and its memory estimate against the
        memory available on ``device`` (:meth:`memory_support`).

        With ``algorithm=None`` the answer is yes if any of its algorithms can (and
        ``prepare(spec)`` then uses the first that can).
        """
        basic = self.capabilities.check(spec, device)
        if not basic:
            return basic
        if algorithm is None:
            reasons = []
            for algo in self.algorithms(device):
                s = self._supports(spec, device, algo)
                s = self.memory_support(spec, device, algo) if s else s
                if s:
                    return s
                reasons.append(f"{algo}: {s.reason}")
            return Support.no("; ".join(reasons) or f"no algorithm on device {device!r}")
        if algorithm not in self.algorithms(device):
            return Support.no(
                f"unknown algorithm {algorithm!r} for {self.name} on {device} "
                f"(known: {', '.join(self.algorithms(device)) or 'none'})")
        s = self._supports(spec, device, algorithm)
        return self.memory_support(spec, device, algorithm) if s else s

    # -- memory ---------------------------------------------------------------------------
    def memory_estimate(self, spec: ConvSpec, device: str, algorithm: str) -> MemoryEstimate:
        """This candidate's peak memory on ``device`` for ``spec``, by part, on the high side:
        the caller's arrays, the framework's copies, workspaces, FFT buffers, the output.
        Default (:func:`convbench.memory.default_estimate`): three times the input, weight
        and output sizes. Backends with workspaces override it."""
        return memory.default_estimate(spec)

    def device_memory(self, device: str) -> Optional[int]:
        """Bytes still available on ``device``, or None if unknown (then nothing is refused
        for memory). Default: the host's available memory for "cpu", None otherwise."""
        return memory.available_memory() if device == "cpu" else None

    def memory_support(self, spec: ConvSpec, device: str, algorithm: str) -> Support:
        """No, with the estimate and the available memory in the reason, when this candidate's
        :meth:`memory_estimate` does not fit in :meth:`device_memory` (see convbench.memory)."""
        available = self.device_memory(device)
        if available is None:
            return Support.yes()
        refusal = memory.fits(self.memory_estimate(spec, device, algorithm), available)
        return Support.no(refusal) if refusal else Support.yes()

    def expected_failure(self, spec: ConvSpec, device: str, algorithm: str) -> Optional[str]:
        """Declare, with a reason, a supported spec whose error may exceed the dtype bound."""
        return None

    def tolerance(self, spec: ConvSpec, device: str, algorithm: str) -> float:
        """The error bound this candidate is held to (default: :func:`convbench.reference.
        tolerance_for`, the dtype's bound, growing with the accumulation length)."""
        from .reference import tolerance_for

        return tolerance_for(spec)

    def set_threads(self, threads: int) -> None:
        """Use this many CPU threads from now on (frameworks override)."""

    def versions(self) -> dict[str, str]:
        """Versions of the libraries this backend runs on (recorded with every result)."""
        return {}

    def gemm_rate(self, dtype: str, threads: int, budget_s: float = 0.3) -> Optional[float]:
        """GFLOP/s of the fastest matrix multiply this backend's library offers on the CPU in
        ``dtype`` with ``threads`` threads, measured now (a roof for ``% peak``), or None when
        it offers none (the default). Called in a fresh process whose thread pools are pinned."""
        return None

    # -- convbench.conv() -----------------------------------------------------------------
    #: input kinds of convbench.conv() whose arrays belong to this backend's framework
    #: (e.g. ("torch-cpu", "torch-cuda")); such a backend also implements to_native/from_native
    native_kinds: tuple = ()

    def native_kind(self, a: Any) -> Optional[str]:
        """Which of ``native_kinds`` the array ``a`` is (e.g. "torch-cuda"), or None if it is
        not one of this backend's arrays. Must not import a framework that is not imported."""
        return None

    def dispatch_callable(self, spec: ConvSpec, algorithm: str, device: str, kind: str,
                          requires_grad: bool = False) -> Optional[Callable[[Any, Any], Any]]:
        """A callable(x, w) -> y that runs this candidate on convbench.conv()'s caller's own
        arrays of input kind ``kind`` ("numpy", "torch-cpu", "torch-cuda") and returns the
        caller's type, without copying the inputs; None if it cannot (then conv() never
        uses this candidate for that kind). Default: None.
        """
        return None

    def synchronize_native(self, kind: str) -> None:
        """Wait until work queued on native arrays of ``kind`` has finished (async devices)."""

    def to_native(self, a: np.ndarray, kind: str) -> Any:
        """An array of one of ``native_kinds`` holding a copy of ``a``."""
        raise UnsupportedError(f"backend {self.name!r} has no native input kinds")

    def from_native(self, t: Any) -> np.ndarray:
        """A numpy copy of an array of one of ``native_kinds``."""
        raise UnsupportedError(f"backend {self.name!r} has no native input kinds")

    # -- whole models: convbench.tune_model() / use_tuned() (convbench.models) ------------
    def model_support(self, model: Any) -> Support:
        """Whether ``model`` is a model of this backend's framework whose convolutions
        :meth:`collect_convs` and :meth:`wrap_convs` handle. Must not import a framework that
        is not imported yet (no model of it can exist then). Default: no."""
        return Support.no(f"backend {self.name!r} does not handle models")

    def collect_convs(self, model: Any, inputs: tuple, grad: bool = False) -> list:
        """Run ``model(*inputs)`` once (under no-grad unless ``grad``) and return one
        :class:`convbench.models.ModelConv` per (layer, problem) it convolved, in call order,
        those it cannot express or rebind included with their reason."""
        raise UnsupportedError(f"backend {self.name!r} does not handle models")

    def wrap_convs(self, model: Any, bind: Callable[..., Any], inplace: bool = False) -> Any:
        """``model`` (a copy unless ``inplace``) whose convolution modules ask, once per input
        signature, ``bind(layer, spec, own, kind, requires_grad, x, w)`` for a callable(x, w)
        -> y (``own``: the candidate the module's own call is; ``x``, ``w``: the call's tensors,
        ``x`` in ``spec.layout``) and keep their own forward where it returns None."""
        raise UnsupportedError(f"backend {self.name!r} does not handle models")

    # -- running ------------------------------------------------------------------------
    @abstractmethod
    def _prepare(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str) -> Prepared:
        """Build the Prepared object (called only for supported, validated input)."""

    def prepare(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: Optional[str] = None,
                device: str = "cpu") -> Prepared:
        """Everything but the convolution: convert and place inputs, compile, allocate.

        ``x``/``w`` may have any strides and either byte order: arrays in a non-native byte
        order or misaligned are copied into native ones first (see reference.check_inputs);
        the others are handed to the backend as they are. ``algorithm=None``: the first
        algorithm that supports ``spec``.
        """
        from .reference import check_inputs

        if not isinstance(spec, ConvSpec):
            raise InvalidInputError(f"spec: expected a ConvSpec, got {type(spec).__name__}")
        avail = self.available()
        if not avail:
            raise BackendUnavailableError(f"backend {self.name!r} is unavailable: {avail.reason}")
        algorithm = algorithm or self.default_algorithm(device, spec)
        sup = self.supports(spec, device, algorithm)
        if not sup:
            raise UnsupportedError(f"{self.name}:{algorithm}@{device} does not support {spec.label}: {sup.reason}")
        x, w = check_inputs(spec, x, w)
        return self._prepare(spec, x, w, algorithm, device)

    def candidates(self, device: str = "cpu") -> list[Candidate]:
        return [Candidate(self.name, a, device) for a in self.algorithms(device)]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


# ---- the registry -------------------------------------------------------------------------
@dataclass
class _Entry:
    name: str
    target: str  # "module:attr", how worker processes re-create the backend
    factory: Optional[Callable[[], Backend]] = None
    instance: Optional[Backend] = None
    origin: str = "entry point"
    load_error: Optional[str] = None


_REGISTRY: dict[str, _Entry] = {}
_entry_points_loaded = False


def _target_of(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def register(backend: Any = None, *, name: Optional[str] = None) -> Any:
    """Register a Backend subclass (or a zero-argument factory) in this process.

    Usable as a decorator. A duplicate name warns and the newer registration wins.
    Worker processes re-create registered backends by import path, so the class must be
    importable at module level.
    """
    def deco(obj: Any) -> Any:
        inst_name = name or getattr(obj, "name", "") or ""
        if not inst_name:
            raise ConvbenchError(f"cannot register {obj!r}: it has no name (set the class attribute 'name')")
        _load_entry_points()
        if inst_name in _REGISTRY:
            warnings.warn(f"convbench: backend {inst_name!r} registered twice; "
                          f"{_target_of(obj)} replaces {_REGISTRY[inst_name].target}", stacklevel=3)
        _REGISTRY[inst_name] = _Entry(inst_name, _target_of(obj), factory=obj, origin="register()")
        return obj

    return deco(backend) if backend is not None else deco


def unregister(name: str) -> None:
    """Remove a backend from this process's registry (tests use this)."""
    _REGISTRY.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            warnings.warn(f"convbench: backend {ep.name!r} is registered twice "
                          f"({_REGISTRY[ep.name].target} and {ep.value}); keeping the first", stacklevel=3)
            continue
        _REGISTRY[ep.name] = _Entry(ep.name, ep.value)


def load_target(target: str) -> Any:
    """Import ``module:qualname`` and return the object."""
    module, _, qual = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def _instantiate(entry: _Entry) -> Backend:
    if entry.instance is None:
        factory = entry.factory or load_target(entry.target)
        inst = factory() if callable(factory) and not isinstance(factory, Backend) else factory
        if not isinstance(inst, Backend):
            raise ConvbenchError(f"backend {entry.name!r} ({entry.target}) is not a convbench.Backend")
        if not inst.name:
            inst.name = entry.name
        entry.instance = inst
    return entry.instance


def list_backends(pattern: Optional[str | Iterable[str]] = None, *, available_only: bool = False) -> list[str]:
    """Names of registered backends, sorted; ``pattern`` filters with shell wildcards ("*fft*").

    ``available_only=True`` loads each backend and keeps those whose dependencies import.
    """
    _load_entry_points()
    names = sorted(_REGISTRY)
    if pattern is not None:
        pats = [pattern] if isinstance(pattern, str) else list(pattern)
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]
    if available_only:
        keep = []
        for n in names:
            try:
                if get_backend(n).available():
                    keep.append(n)
            except ConvbenchError:
                continue
        names = keep
    return names


def get_backend(name: str) -> Backend:
    """The backend registered under ``name``; UnknownBackendError lists the known names."""
    _load_entry_points()
    if not isinstance(name, str) or name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownBackendError(f"unknown backend {name!r}; known backends: {known}")
    entry = _REGISTRY[name]
    try:
        return _instantiate(entry)
    except ConvbenchError:
        raise
    except Exception as exc:
        raise ConvbenchError(f"backend {name!r} failed to load from {entry.target}: "
                             f"{type(exc).__name__}: {exc}") from exc


def framework_modules() -> frozenset:
    """The top-level modules every registered backend declares it imports on first use
    (``Backend.framework_modules``); backends that fail to load are left out."""
    mods: set = set()
    for n in list_backends():
        try:
            mods.update(get_backend(n).framework_modules)
        except ConvbenchError:
            continue
    return frozenset(mods)


def backend_target(name: str) -> str:
    """The import path a worker process uses to re-create backend ``name``."""
    _load_entry_points()
    if name not in _REGISTRY:
        get_backend(name)  # raises the helpful error
    return _REGISTRY[name].target


def convolve(spec: ConvSpec, x: np.ndarray, w: np.ndarray, backend: str = "numpy-direct",
             algorithm: Optional[str] = None, device: str = "cpu") -> np.ndarray:
    """Run one convolution with a named backend and return the numpy output (spec.layout)."""
    if device not in DEVICES:
        raise InvalidInputError(f"device: {device!r} is not a device; use one of {', '.join(DEVICES)}")
    b = get_backend(backend)
    p = b.prepare(spec, x, w, algorithm=algorithm, device=device)
    try:
        p.run()
        p.synchronize()
        return p.result()
    finally:
        p.close()
