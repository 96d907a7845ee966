"""JAX convolutions: ``jax.lax.conv_general_dilated`` under ``jax.jit``, compiled by XLA.

One XLA computation per spec, every variant expressed by the operation's own parameters:
both layouts through dimension numbers (``NCHW``/``NHWC`` and their 1-D/3-D forms: no
transposes of activations anywhere), groups through ``feature_group_count``, dilation through
``rhs_dilation`` and asymmetric padding as explicit ``(low, high)`` pairs. A transposed
convolution is the direct convolution of the input dilated by the stride (``lhs_dilation``)
with the spatially flipped kernel, input and output channels swapped within each group,
padded ``d*(k-1) - p`` on each side (plus ``output_padding`` on the high side; XLA crops
where that is negative). That weight rearrangement (flip, per-group swap) is a layout change
done once in ``prepare()``, as a deployed JAX model stores its kernels; nothing is
precomputed: the weights are an argument of the compiled function, never a constant XLA
could fold.

Candidates: ``xla`` on the CPU (float32 at XLA's default precision, which is IEEE float32
there); on CUDA ``xla`` (``Precision.HIGHEST``: IEEE float32) and ``xla-tf32`` (float32 only,
XLA's default GPU precision, TF32 tensor cores allowed, held to the TF32 bound). ``prepare()``
places both inputs on the device, traces, compiles and runs once; ``run()`` dispatches the
compiled call; ``synchronize()`` is ``block_until_ready()``.

Threads: XLA's CPU client sizes its intra-op (Eigen) pool from ``PJRT_NPROC`` when it is
created, at JAX's first device use, and not later. ``set_threads(n)`` sets ``PJRT_NPROC=n``
(and, for n == 1, ``--xla_cpu_multi_thread_eigen=false`` in ``XLA_FLAGS``) while that is still
possible; every ``info`` records what XLA was told, the pool it actually started (counted on
Linux) and a note when a request came too late to take effect. float64 needs
``jax_enable_x64``: it is switched on when this backend imports JAX (the process is this
backend family's own worker).
"""
from __future__ import annotations

import os
import sys
from importlib import metadata
from typing import Any, Optional

import numpy as np

from convbench.environment import available_cores
from convbench.registry import Backend, Capabilities, Prepared, Robustness, Support
from convbench.spec import FLOAT_DTYPES, TOLERANCES, ConvSpec

CPU_ALGORITHMS = ["xla"]
CUDA_ALGORITHMS = ["xla", "xla-tf32"]
#: distributions that give jaxlib a CUDA device (PJRT plugins)
CUDA_PLUGINS = ("jax-cuda13-plugin", "jax-cuda12-plugin", "jax-cuda11-plugin")
_SINGLE_THREAD_FLAG = "--xla_cpu_multi_thread_eigen=false"
_EIGEN_POOL_THREAD = "tf_XLAEigen"  # XLA's name for its intra-op pool threads

_JAX: Any = None
_REQUESTED_THREADS: Optional[int] = None
_CLIENT: dict[str, Any] = {}  # what XLA's clients were created with (see _ensure_client)
_THREAD_NOTES: list[str] = []


def _jax() -> Any:
    """Import JAX once, with 64-bit types enabled (float64 specs need them)."""
    global _JAX
    if _JAX is None:
        import jax

        jax.config.update("jax_enable_x64", True)
        _JAX = jax
    return _JAX


def _backends_initialized() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # cannot tell: assume the worst
        return True


def _apply_thread_env(threads: int) -> None:
    """Tell XLA's CPU client (not yet created) to use ``threads`` threads."""
    os.environ["PJRT_NPROC"] = str(threads)
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_cpu_multi_thread_eigen")]
    if threads == 1:
        flags.append(_SINGLE_THREAD_FLAG)
    os.environ["XLA_FLAGS"] = " ".join(flags)


def _ensure_client() -> None:
    """Create XLA's clients (JAX's first device use), recording what they were told."""
    jax = _jax()
    if _CLIENT:
        return
    late = _backends_initialized()
    if _REQUESTED_THREADS is not None and not late:
        _apply_thread_env(_REQUESTED_THREADS)
    nproc = os.environ.get("PJRT_NPROC")
    _CLIENT.update(pjrt_nproc=nproc, xla_flags=os.environ.get("XLA_FLAGS", ""),
                   xla_cpu_threads=int(nproc) if nproc and nproc.isdigit() else available_cores())
    if late:
        _note("JAX's XLA clients were created before convbench configured them; the thread "
              "count recorded is the environment's, not necessarily XLA's")
    jax.devices()


def _note(text: str) -> None:
    if text not in _THREAD_NOTES:
        _THREAD_NOTES.append(text)


def _eigen_pool_threads() -> Optional[int]:
    """Threads in XLA's intra-op pool of this process (Linux: counted by name), else None."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    n = 0
    for t in tasks:
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                n += f.read().strip() == _EIGEN_POOL_THREAD
        except OSError:
            continue
    return n or None


def _cuda_plugin() -> Optional[str]:
    """The installed JAX CUDA plugin distribution, found without importing anything."""
    for dist in CUDA_PLUGINS:
        try:
            metadata.version(dist)
            return dist
        except metadata.PackageNotFoundError:
            continue
    return None


def _dimension_numbers(spec: ConvSpec) -> tuple[str, str, str]:
    """lhs, rhs, out specs of conv_general_dilated: the spec's layout, PyTorch's OI kernels."""
    sp = "DHW"[3 - spec.dims:]
    act = f"NC{sp}" if spec.layout == "channels_first" else f"N{sp}C"
    return act, f"OI{sp}", act


def _direct_weights(spec: ConvSpec, w: np.ndarray) -> np.ndarray:
    """Weights of the direct convolution a transposed spec equals: (C_in, C_out/g, *k) ->
    (C_out, C_in/g, *k), swapped within each group and flipped in every spatial dim."""
    if not spec.transposed:
        return w
    g, k = spec.groups, spec.kernel_size
    wg = w.reshape(g, spec.c_in // g, spec.c_out // g, *k).swapaxes(1, 2)
    wd = wg.reshape(spec.c_out, spec.c_in // g, *k)
    return np.ascontiguousarray(np.flip(wd, axis=tuple(range(2, 2 + spec.dims))))


def conv_params(spec: ConvSpec) -> dict[str, Any]:
    """Keyword arguments of ``jax.lax.conv_general_dilated`` (less ``precision``) for ``spec``."""
    params: dict[str, Any] = dict(dimension_numbers=_dimension_numbers(spec),
                                  rhs_dilation=tuple(spec.dilation),
                                  feature_group_count=spec.groups)
    if spec.transposed:
        params.update(window_strides=(1,) * spec.dims, lhs_dilation=tuple(spec.stride),
                      padding=tuple((d * (k - 1) - lo, d * (k - 1) - hi + op)
                                    for d, k, (lo, hi), op in zip(spec.dilation, spec.kernel_size,
                                                                  spec.padding, spec.output_padding)))
    else:
        params.update(window_strides=tuple(spec.stride), padding=tuple(spec.padding))
    return params


class JaxPrepared(Prepared):
    """One compiled XLA convolution with both inputs on the device."""

    def __init__(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str) -> None:
        jax = _jax()
        _ensure_client()
        self.spec = spec
        self.device = device
        self.algorithm = algorithm
        dev = jax.devices("gpu" if device == "cuda" else "cpu")[0]
        lax = jax.lax
        precision = lax.Precision.DEFAULT
        if device == "cuda" and algorithm == "xla":
            precision = lax.Precision.HIGHEST  # no TF32: IEEE float32
        params = conv_params(spec)
        self._fn = jax.jit(lambda a, b: lax.conv_general_dilated(a, b, precision=precision, **params))
        self._x = jax.device_put(np.ascontiguousarray(x), dev)
        self._w = jax.device_put(_direct_weights(spec, w), dev)
        self._y: Any = None
        self.run()  # trace and compile now, not in the timed region
        self.synchronize()
        self.info: dict[str, Any] = {
            "jax": jax.__version__,
            "jaxlib": _jaxlib_version(),
            "algorithm": algorithm,
            "device": str(dev),
            "platform": dev.platform,
            "precision": str(precision),
            "dimension_numbers": "/".join(params["dimension_numbers"]),
            "lhs_dilation": params.get("lhs_dilation"),
            "transposed_as_dilated_conv": spec.transposed,
            "weights_rearranged_in_prepare": spec.transposed,
            "layout_conversion_in_run": [],
            "threads_requested": _REQUESTED_THREADS,
            "xla_cpu_threads": _CLIENT.get("xla_cpu_threads"),
            "pjrt_nproc": _CLIENT.get("pjrt_nproc"),
            "xla_flags": _CLIENT.get("xla_flags"),
            "xla_eigen_pool_threads": _eigen_pool_threads(),
        }
        if _THREAD_NOTES:
            self.info["thread_notes"] = list(_THREAD_NOTES)

    def run(self) -> None:
        self._y = self._fn(self._x, self._w)

    def synchronize(self) -> None:
        if self._y is not None:
            self._y.block_until_ready()

    def result(self) -> np.ndarray:
        if self._y is None:
            raise RuntimeError("result() called before run()")
        return np.array(self._y, copy=True)

    def close(self) -> None:
        self._x = self._w = self._y = self._fn = None


def _jaxlib_version() -> Optional[str]:
    try:
        import jaxlib

        return str(jaxlib.__version__)
    except (ImportError, AttributeError):
        return None


class JaxBackend(Backend):
    """JAX's ``lax.conv_general_dilated`` under ``jax.jit``: XLA on the CPU and on CUDA."""

    name = "jax"
    family = "jax"
    description = ("JAX jax.lax.conv_general_dilated under jax.jit, compiled by XLA "
                   "(CPU; CUDA with a jax CUDA plugin)")
    install_hint = "pip install convbench[jax]"
    capabilities = Capabilities(dims=frozenset({1, 2, 3}), dtypes=frozenset(FLOAT_DTYPES),
                                devices=frozenset({"cpu", "cuda"}))
    algorithm_descriptions = {
        "xla": "XLA's convolution; float32 in IEEE precision (Precision.HIGHEST on CUDA)",
        "xla-tf32": "XLA's convolution at its default GPU precision: TF32 tensor cores (float32 only)",
    }
    robustness = Robustness.FRAMEWORK
    framework_modules = ("jax", "jaxlib")
    version_distributions = {"jax": ("jax",), "jaxlib": ("jaxlib",)}
    #: untuned fallback order per device (lower first): after torch and tensorflow
    _RANKS = {"cpu": 3.0, "cuda": 3.0}

    def heuristic_rank(self, spec: ConvSpec, device: str) -> float:
        return self._RANKS.get(device, super().heuristic_rank(spec, device))

    def _check_available(self) -> Support:
        try:
            _jax()
        except ImportError as exc:
            return Support.no(f"jax is not installed or failed to import ({exc})")
        return Support.yes()

    def device_support(self, device: str) -> Support:
        if device != "cuda":
            return super().device_support(device)
        if _cuda_plugin() is None:
            return Support.no(f"jaxlib has no CUDA plugin here (none of {', '.join(CUDA_PLUGINS)} "
                              f"is installed): pip install 'jax[cuda12]'")
        _ensure_client()
        if not any(d.platform == "gpu" for d in _jax().devices()):
            return Support.no("no GPU visible to JAX (jax.devices() has no gpu device)")
        return Support.yes()

    def algorithms(self, device: str = "cpu") -> list[str]:
        if device == "cpu":
            return list(CPU_ALGORITHMS)
        if device == "cuda":
            return list(CUDA_ALGORITHMS)
        return []

    def _supports(self, spec: ConvSpec, device: str, algorithm: str) -> Support:
        if algorithm == "xla-tf32" and spec.dtype != "float32":
            return Support.no(f"TF32 applies to float32 only (spec dtype {spec.dtype})")
        if device == "cuda":
            if _cuda_plugin() is None or sys.modules.get("jax") is not None:  # JAX only once imported
                return self.device_support(device)
        return Support.yes()

    def tolerance(self, spec: ConvSpec, device: str, algorithm: str) -> float:
        if algorithm == "xla-tf32" and spec.dtype == "float32":
            return TOLERANCES["tf32"]
        return super().tolerance(spec, device, algorithm)

    def set_threads(self, threads: int) -> None:
        """Use ``threads`` XLA CPU threads: applied when XLA's CPU client is created (JAX's first
        device use); a later request with another count is recorded in ``info["thread_notes"]``."""
        global _REQUESTED_THREADS
        _REQUESTED_THREADS = int(threads)
        if _CLIENT and _CLIENT["xla_cpu_threads"] != _REQUESTED_THREADS:
            _note(f"set_threads({threads}) came after XLA's CPU client was created with "
                  f"{_CLIENT['xla_cpu_threads']} threads; it keeps them")

    def versions(self) -> dict[str, str]:
        if not self.available():
            return {}
        out = {"jax": str(_jax().__version__)}
        jaxlib = _jaxlib_version()
        if jaxlib:
            out["jaxlib"] = jaxlib
        plugin = _cuda_plugin()
        if plugin:
            out["jax_cuda_plugin"] = f"{plugin} {metadata.version(plugin)}"
        return out

    def _prepare(self, spec: ConvSpec, x: np.ndarray, w: np.ndarray, algorithm: str, device: str) -> Prepared:
        if device == "cuda":
            usable = self.device_support(device)
            if not usable:
                from convbench.errors import UnsupportedError

                raise UnsupportedError(f"jax:{algorithm}@cuda cannot run here: {usable.reason}")
        return JaxPrepared(spec, x, w, algorithm, device)
