"""The caller's arrays in conv(): their input kind, their ConvSpec, and the candidates that can
run on them without copying them (eligibility and runners).

An input kind is ``"numpy"`` or one of a backend's ``native_kinds``, named
``"<framework>-<device>"`` (e.g. ``"torch-cuda"``). The core knows kinds only by name: which
arrays are of which kind, how to convert and synchronize them is asked of the backend that
declares the kind (``Backend.native_kind``, ``to_native``/``from_native``,
``synchronize_native``).

Numpy arrays of any strides (Fortran order, slices, broadcasts) are handed to the candidates as
they are; arrays that some framework cannot view -- negative strides, a non-native byte order,
misaligned data -- are copied once per call into an ordinary C-contiguous array
(:func:`ordinary`), the only copy conv() makes. Masked arrays are refused (the mask would be
ignored).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional

import numpy as np

from ..errors import ConvbenchError, InvalidInputError, UnsupportedError
from ..reference import as_numpy
from ..registry import Backend, Candidate, get_backend, list_backends
from ..spec import ConvSpec, canonical_dtype


# ---- input kinds --------------------------------------------------------------------------
def _native_owners() -> list[Backend]:
    """Registered backends that declare native input kinds."""
    owners = []
    for name in list_backends():
        try:
            b = get_backend(name)
        except ConvbenchError:
            continue
        if b.native_kinds:
            owners.append(b)
    return owners


def input_kinds() -> list[str]:
    """Every input kind conv() takes: "numpy" and the registered backends' native kinds."""
    kinds = ["numpy"]
    for b in _native_owners():
        kinds += [k for k in b.native_kinds if k not in kinds]
    return kinds


def _kind_of(a: Any) -> Optional[str]:
    if isinstance(a, np.ndarray):
        return "numpy"
    for b in _native_owners():
        kind = b.native_kind(a)
        if kind:
            return kind
    return None


def _array_words() -> str:
    """"numpy arrays or <framework> tensors" for the registered native kinds."""
    frameworks = sorted({k.rsplit("-", 1)[0] for k in input_kinds() if k != "numpy"})
    return " or ".join(["numpy arrays", *(f"{f} tensors" for f in frameworks)])


def _described(a: Any) -> str:
    """The array's type, and its device when it has one (a tensor on an unsupported device)."""
    device = getattr(a, "device", None)
    return f"{type(a).__name__} on {device}" if device is not None and not isinstance(a, np.ndarray) \
        else type(a).__name__


def input_kind(x: Any, w: Any) -> str:
    """The input kind of ``x`` and ``w`` (e.g. "numpy", "torch-cuda"); InvalidInputError for
    arrays of no registered kind, or a mix of kinds or devices."""
    kx, kw = _kind_of(x), _kind_of(w)
    if kx is None or kw is None:
        raise InvalidInputError(
            f"x and w must be {_array_words()} (got {_described(x)} and {_described(w)}; "
            f"input kinds: {', '.join(input_kinds())}); wrap lists with numpy.asarray first")
    same_framework = kx.rsplit("-", 1)[0] == kw.rsplit("-", 1)[0] != "numpy"
    if kx != kw and not same_framework:
        raise InvalidInputError(
            f"x and w must both be numpy arrays or both of one framework (got {type(x).__name__} "
            f"({kx}) and {type(w).__name__} ({kw})); conv() does not convert one into the other")
    if kx != "numpy" and (kx != kw or getattr(x, "device", None) != getattr(w, "device", None)):
        raise InvalidInputError(f"x is on {getattr(x, 'device', kx)} but w is on "
                                f"{getattr(w, 'device', kw)}; put both on one device")
    if kx == "numpy":
        for name, a in (("x", x), ("w", w)):
            if isinstance(a, np.ma.MaskedArray):
                as_numpy(name, a)  # raises, naming the problem
    return kx


def ordinary(a: np.ndarray) -> np.ndarray:
    """``a`` itself when every framework can view it (native byte order, aligned data, no
    negative strides; any other strides are fine), else a C-contiguous, native copy."""
    if a.dtype.isnative and a.flags.aligned and min(a.strides, default=0) >= 0:
        return a
    return np.ascontiguousarray(as_numpy("array", a))


def data_device(kind: str) -> str:
    """The device the arrays of input kind ``kind`` live on ("cpu" for numpy)."""
    return "cpu" if kind == "numpy" else kind.rsplit("-", 1)[-1]


def _kind_owner(kind: str) -> Backend:
    """The backend that declares input kind ``kind`` (not "numpy")."""
    for b in _native_owners():
        if kind in b.native_kinds:
            return b
    raise UnsupportedError(f"no registered backend handles {kind} arrays "
                           f"(input kinds: {', '.join(input_kinds())})")


def like(kind: str, a: np.ndarray) -> Any:
    """``a`` (a copy) as an array of ``kind``."""
    return a if kind == "numpy" else _kind_owner(kind).to_native(np.ascontiguousarray(a), kind)


def to_numpy(kind: str, y: Any) -> np.ndarray:
    """An array of ``kind`` as numpy (a copy for native kinds)."""
    return np.asarray(y) if kind == "numpy" else _kind_owner(kind).from_native(y)


def synchronizer(kind: str) -> Optional[Callable[[], None]]:
    """A callable that waits for work queued on arrays of ``kind``; None for numpy."""
    if kind == "numpy":
        return None
    owner = _kind_owner(kind)

    def sync() -> None:
        owner.synchronize_native(kind)
    return sync


# ---- inputs -> spec -----------------------------------------------------------------------
def spec_from_arrays(x: Any, w: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                     groups: int = 1, transposed: bool = False, output_padding: Any = 0,
                     layout: str = "channels_first", scales: Any = None) -> ConvSpec:
    """The ConvSpec of convolving these arrays (shape and dtype checks with clear errors);
    ``scales``: int8 arrays' (x_scale, w_scale, y_scale), the spec's ``quant``."""
    xs, ws = tuple(int(v) for v in x.shape), tuple(int(v) for v in w.shape)
    if len(xs) not in (3, 4, 5):
        raise InvalidInputError(f"x: shape {xs} must have 3, 4 or 5 dimensions (N, C, *spatial) "
                                f"for a 1-, 2- or 3-D convolution")
    if len(ws) != len(xs):
        raise InvalidInputError(f"w: shape {ws} must have as many dimensions as x {xs}")
    lay = str(layout).lower()
    if lay in ("channels_last", "nhwc", "nwc", "ndhwc"):
        n, c_in, spatial = xs[0], xs[-1], xs[1:-1]
    elif lay in ("channels_first", "nchw", "ncw", "ncdhw"):
        n, c_in, spatial = xs[0], xs[1], xs[2:]
    else:
        raise InvalidInputError(f"layout: {layout!r} is not a layout; use 'channels_first' or 'channels_last'")
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise InvalidInputError(f"groups: {groups!r} must be an integer >= 1")
    if not isinstance(transposed, (bool, np.bool_)):
        raise InvalidInputError(f"transposed: {transposed!r} must be True or False")
    if transposed:
        if ws[0] != c_in:
            raise InvalidInputError(f"w: shape {ws}: a transposed convolution's weights are "
                                    f"(C_in={c_in}, C_out/groups, *k); w.shape[0] is {ws[0]}")
        c_out = ws[1] * groups
    else:
        if ws[1] * groups != c_in:
            raise InvalidInputError(f"w: shape {ws}: weights are (C_out, C_in/groups={c_in}/{groups}, *k); "
                                    f"w.shape[1] * groups = {ws[1] * groups} != C_in = {c_in}")
        c_out = ws[0]
    dx, dw = _dtype_name(x.dtype), _dtype_name(w.dtype)
    if dx != dw:
        raise InvalidInputError(f"w: dtype {dw} differs from x's dtype {dx}; convert one of them")
    spec = ConvSpec(n=n, c_in=c_in, c_out=c_out, input_size=spatial, kernel_size=ws[2:],
                    stride=_plain(stride), padding=_plain(padding), dilation=_plain(dilation),
                    groups=int(groups), transposed=bool(transposed),
                    output_padding=_plain(output_padding), dtype=dx, layout=lay)
    return spec if scales is None else _with_scales(spec, scales)


def _with_scales(spec: ConvSpec, scales: Any) -> ConvSpec:
    """``spec`` carrying the caller's int8 scales (InvalidInputError naming ``scales``)."""
    from ..quant import is_quantized

    if not is_quantized(spec.dtype):
        raise InvalidInputError(f"scales: given for {spec.dtype} arrays; scales are only for "
                                f"int8 inputs (a quantized convolution)")
    try:
        return spec.replace(quant=scales)
    except ConvbenchError as exc:
        raise InvalidInputError(f"scales: {exc}") from None


def _dtype_name(dt: Any) -> str:
    try:
        return canonical_dtype(dt)
    except ConvbenchError as exc:
        raise InvalidInputError(f"dtype {dt} is not supported by conv(): {exc}") from exc


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_plain(i) for i in v)
    if isinstance(v, np.integer):
        return int(v)
    return v


# ---- eligibility and runners --------------------------------------------------------------
def eligible(kind: str, backend: str, algorithm: str, device: str, *, spec: ConvSpec,
             requires_grad: bool = False) -> bool:
    """Whether conv() may run this candidate on ``spec``'s inputs of ``kind`` without copying
    them: the data's device, no untimed weight precomputation, and the backend's
    ``dispatch_callable`` hook gives a callable."""
    return _callable(spec, kind, backend, algorithm, device, requires_grad) is not None


def _callable(spec: ConvSpec, kind: str, backend: str, algorithm: str, device: str,
              requires_grad: bool) -> Optional[Callable[[Any, Any], Any]]:
    if device != data_device(kind):
        return None
    from ..selection import precomputes_weights

    if precomputes_weights({"backend": backend, "algorithm": algorithm}):
        return None  # conv() prepares per call: the precomputation would be paid, untimed, every call
    try:
        b = get_backend(backend)
        if not b.available():
            return None
        if _takes_requires_grad(type(b)):
            return b.dispatch_callable(spec, algorithm, device, kind, requires_grad=requires_grad)
        if requires_grad:
            return None  # a hook that cannot be told about autograd is not trusted with it
        return b.dispatch_callable(spec, algorithm, device, kind)
    except Exception:  # a third-party hook that fails: that candidate is not eligible
        return None


@functools.lru_cache(maxsize=None)
def _takes_requires_grad(cls: type) -> bool:
    """Whether a backend's dispatch_callable accepts ``requires_grad`` (hooks written to the
    four-argument form ``(spec, algorithm, device, kind)`` are called without it)."""
    try:
        params = inspect.signature(cls.dispatch_callable).parameters
    except (TypeError, ValueError):
        return False
    return "requires_grad" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def runner(spec: ConvSpec, kind: str, backend: str, algorithm: str, device: str, *,
           requires_grad: bool = False) -> Callable[[Any, Any], Any]:
    """A callable(x, w) -> y running one candidate on inputs of ``kind`` (no input copies).

    UnsupportedError if the candidate is not eligible for this input kind.
    """
    fn = _callable(spec, kind, backend, algorithm, device, requires_grad)
    if fn is None:
        raise UnsupportedError(f"{backend}:{algorithm}@{device} is not eligible for {kind} inputs "
                               f"(it would copy them, or it precomputes weights); see convbench.dispatch")
    if kind != "numpy":
        return fn

    def run_ordinary(x: np.ndarray, w: np.ndarray) -> Any:
        return fn(ordinary(x), ordinary(w))
    return run_ordinary


def runs(spec: ConvSpec, backend: str, algorithm: str, device: str) -> bool:
    """Whether the backend is available and supports this candidate on ``spec``."""
    try:
        b = get_backend(backend)
        return bool(b.available()) and bool(b.supports(spec, device, algorithm))
    except ConvbenchError:
        return False


def eligible_candidates(spec: ConvSpec, kind: str, device: str, *, requires_grad: bool = False,
                        backends: Optional[list[str]] = None) -> list[Candidate]:
    """Every registered, available candidate that supports ``spec`` and is eligible for ``kind``
    (``backends``: name patterns with wildcards to consider, default all)."""
    out = []
    for name in list_backends(backends):
        try:
            b = get_backend(name)
            if not b.available():
                continue
            algos = b.algorithms(device)
        except ConvbenchError:
            continue
        for a in algos:
            if eligible(kind, name, a, device, requires_grad=requires_grad, spec=spec) \
                    and runs(spec, name, a, device):
                out.append(Candidate(name, a, device))
    return out


__all__ = ["input_kinds", "input_kind", "data_device", "like", "to_numpy", "synchronizer", "ordinary",
           "spec_from_arrays", "eligible", "runner", "runs", "eligible_candidates"]
