"""``convbench.conv()``: run the tuned choice for this shape on the caller's own arrays.

What a call does: the first call for a combination of input type, shapes, dtypes, device and
convolution parameters builds a *plan* (the ConvSpec, the chosen candidate, and a callable
that runs it on the caller's arrays) and memoises it in this process; later calls with the
same combination look the plan up in a dict and call it.

Choosing (policies):

- ``"cache"``: the cached choice (:func:`convbench.lookup`, stale entries are used with a
  warning); if it cannot run on this input type (see below) the cached runner-up, if it can;
  otherwise, and on a miss, the predicted choice (:func:`convbench.predict.predict`).
- ``"tune"``: like ``"cache"``, but a miss times the eligible candidates now, in this
  process, exactly as ``conv()`` will call them, stores the winner in the cache
  (``source`` "conv(tune, <input type>)") and uses it.
- ``"heuristic"``: no cache lookup: the predictor (nearest cached neighbours), else the
  documented heuristic of :mod:`convbench.predict`.

Copies are not hidden. The caller's activations and weights are handed to a candidate only
through zero-copy views; a candidate that would need a copy of them for this input type is
*excluded* for it (never used by ``conv()``). Which candidates can do this is each backend's
own business: ``Backend.dispatch_callable(spec, algorithm, device, kind, requires_grad=False)``
returns a callable(x, w) running the candidate on the caller's arrays, or None (a hook
written without ``requires_grad`` is called without it, and not used for tensors that
require grad). The core
knows input kinds only by name; the built-in backends answer:

==================  =====================================================================
input               eligible candidates
==================  =====================================================================
numpy array         ``torch`` on cpu (``torch.from_numpy`` views, bfloat16 through an
                    int16 view) and the NumPy/SciPy family (their ``prepare()`` keeps views
                    of the inputs; any padding copy is part of their ``run()``)
torch CPU tensor    ``torch`` on cpu; the NumPy/SciPy family through ``Tensor.numpy()``
                    views, unless a tensor requires grad (autograd would silently stop)
torch CUDA tensor   ``torch`` on cuda
==================  =====================================================================

Algorithms that transform the weights ahead of time (``*-precomputed-weights``, prepacked,
...) are excluded too: conv() prepares on every call, so the transformation that a sweep
leaves untimed would be paid, unmeasured, on every call.
TensorFlow (``tf.convert_to_tensor`` copies), numba (its ``prepare()`` copies the inputs
into flat arrays of its own) and Triton (its ``prepare()`` takes numpy arrays and copies
them to the GPU) return None. Outputs are new arrays: the NumPy/SciPy backends'
``Prepared.result()`` copies their output buffer once (that copy, and their ``prepare()``
allocations, are paid per call; ``policy="tune"`` times them, a sweep does not).

"Calling the chosen candidate directly", the baseline of the 20 µs overhead bound, means:
for ``torch`` the same ``torch.nn.functional.conv*`` call with the candidate's settings
(memory format, mkldnn/cuDNN flags) on the caller's tensors; for the NumPy/SciPy backends
``backend.prepare(spec, x, w, algorithm)``, ``run()``, ``result()``.
``benchmarks/dispatch_overhead.py`` measures both side by side.

For fast repeated calls pass ``stride``, ``padding``, ... as ints, tuples or strings (lists
cannot be dict keys, so they take the slow path on every call).
"""
from __future__ import annotations

import datetime as _dt
import functools
import inspect
import threading
import time
from time import monotonic as _monotonic
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np

from .cache import Choice, PathLike, TunedCache, lookup, open_cache
from .errors import ConvbenchError, InvalidInputError, UnsupportedError
from .registry import Candidate, get_backend, list_backends
from .spec import ConvSpec, canonical_dtype

POLICIES = ("cache", "tune", "heuristic")
#: policy="tune": timing budget per candidate (seconds) and backend name patterns (None: all)
TUNE_BUDGET_S = 0.1
TUNE_BACKENDS: Optional[list[str]] = None
KINDS = ("numpy", "torch-cpu", "torch-cuda")

@dataclass
class Plan:
    """How conv() runs one combination of inputs: the spec, the choice and the callable."""

    spec: ConvSpec
    kind: str
    device: str
    choice: Choice
    run: Callable[[Any, Any], Any]

    def __call__(self, x: Any, w: Any) -> Any:
        return self.run(x, w)


_MEMO: dict[tuple, Plan] = {}
_LOCK = threading.Lock()
#: how often (seconds) conv() checks whether a cache its plans came from has changed
RECHECK_S = 1.0
_next_check = 0.0
_cache_states: dict[Any, tuple] = {}   # conv()'s cache argument -> TunedCache.state() at planning


def clear_memo() -> None:
    """Forget every plan of this process (conv() also does this by itself, at most RECHECK_S
    seconds after any process wrote to a cache that its plans were made from)."""
    with _LOCK:
        _MEMO.clear()
        _cache_states.clear()


def _recheck(now: float) -> None:
    global _next_check
    _next_check = now + RECHECK_S
    with _LOCK:
        seen = list(_cache_states.items())
    for cache, state in seen:
        try:
            current = open_cache(cache, create=False).state()
        except ConvbenchError:
            current = None
        if current != state:
            clear_memo()  # a sweep, tune or import changed it: plan again from the new contents
            return


# ---- the entry point ----------------------------------------------------------------------
def conv(x: Any, w: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
         transposed: bool = False, output_padding: Any = 0, policy: str = "cache",
         device: Optional[str] = None, cache: Union[None, PathLike, TunedCache] = None,
         layout: str = "channels_first") -> Any:
    """Convolve ``x`` with ``w`` using the fastest known candidate; returns the caller's type.

    ``x``/``w``: numpy arrays or torch tensors (not mixed), activations in ``layout``,
    weights ``(C_out, C_in/groups, *k)`` (transposed: ``(C_in, C_out/groups, *k)``).
    Parameters as in :class:`~convbench.ConvSpec`. ``device``: None (where the data is) or
    that device; data is never moved. See the module docstring for policies and copies.
    """
    now = _monotonic()
    if now >= _next_check:
        _recheck(now)
    if stride.__class__ is bool or padding.__class__ is bool or dilation.__class__ is bool \
            or groups.__class__ is bool:  # True == 1 as a dict key: would hit a stride=1 plan
        raise InvalidInputError("stride, padding, dilation and groups must be integers (or tuples, "
                                "or a padding string), not True/False")
    tx = type(x)
    try:
        if tx is np.ndarray:
            key = (tx, type(w), x.shape, x.dtype, w.shape, w.dtype, stride, padding, dilation,
                   groups, transposed, output_padding, policy, device, cache, layout)
        else:
            key = (tx, type(w), x.shape, x.dtype, w.shape, w.dtype, x.device, w.device,
                   x.requires_grad or w.requires_grad, stride, padding, dilation, groups,
                   transposed, output_padding, policy, device, cache, layout)
        plan = _MEMO[key]
    except (KeyError, TypeError, AttributeError):
        plan = _plan_for(x, w, stride, padding, dilation, groups, transposed, output_padding,
                         policy, device, cache, layout)
        try:
            with _LOCK:
                _MEMO[key] = plan
        except (TypeError, UnboundLocalError, NameError):
            pass  # unhashable arguments: no memo, plan again next time
    return plan.run(x, w)


def plan(x: Any, w: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
         transposed: bool = False, output_padding: Any = 0, policy: str = "cache",
         device: Optional[str] = None, cache: Union[None, PathLike, TunedCache] = None,
         layout: str = "channels_first") -> Plan:
    """The plan conv() would use for these arguments (spec, choice, callable), without running it."""
    return _plan_for(x, w, stride, padding, dilation, groups, transposed, output_padding, policy,
                     device, cache, layout)


# ---- inputs -> spec -----------------------------------------------------------------------
def _is_torch(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


def input_kind(x: Any, w: Any) -> str:
    """"numpy", "torch-cpu" or "torch-cuda"; InvalidInputError for anything else or a mix."""
    tx, tw = _is_torch(x), _is_torch(w)
    if tx != tw:
        raise InvalidInputError(
            f"x and w must both be numpy arrays or both torch tensors (got {type(x).__name__} and "
            f"{type(w).__name__}); conv() does not convert one into the other")
    if tx:
        if x.device != w.device:
            raise InvalidInputError(f"x is on {x.device} but w is on {w.device}; put both on one device")
        dev = x.device.type
        if dev not in ("cpu", "cuda"):
            raise InvalidInputError(f"x: torch device {x.device} is not supported (cpu or cuda)")
        return f"torch-{dev}"
    if not isinstance(x, np.ndarray) or not isinstance(w, np.ndarray):
        raise InvalidInputError(
            f"x and w must be numpy arrays or torch tensors (got {type(x).__name__} and "
            f"{type(w).__name__}); wrap lists with numpy.asarray first")
    return "numpy"


def spec_from_arrays(x: Any, w: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                     groups: int = 1, transposed: bool = False, output_padding: Any = 0,
                     layout: str = "channels_first") -> ConvSpec:
    """The ConvSpec of convolving these arrays (shape and dtype checks with clear errors)."""
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
    return ConvSpec(n=n, c_in=c_in, c_out=c_out, input_size=spatial, kernel_size=ws[2:],
                    stride=_plain(stride), padding=_plain(padding), dilation=_plain(dilation),
                    groups=int(groups), transposed=bool(transposed),
                    output_padding=_plain(output_padding), dtype=dx, layout=lay)


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
def _data_device(kind: str) -> str:
    return "cuda" if kind == "torch-cuda" else "cpu"


def eligible(kind: str, backend: str, algorithm: str, device: str, *, spec: ConvSpec,
             requires_grad: bool = False) -> bool:
    """Whether conv() may run this candidate on ``spec``'s inputs of ``kind`` without copying
    them: the data's device, no untimed weight precomputation, and the backend's
    ``dispatch_callable`` hook gives a callable."""
    return _callable(spec, kind, backend, algorithm, device, requires_grad) is not None


def _callable(spec: ConvSpec, kind: str, backend: str, algorithm: str, device: str,
              requires_grad: bool) -> Optional[Callable[[Any, Any], Any]]:
    if device != _data_device(kind):
        return None
    from .selection import precomputes_weights

    if precomputes_weights({"algorithm": algorithm}):
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
    return fn


def _kind_owner(kind: str) -> Any:
    """The backend whose framework holds arrays of input kind ``kind`` (not "numpy")."""
    for name in list_backends():
        try:
            b = get_backend(name)
        except ConvbenchError:
            continue
        if kind in getattr(b, "native_kinds", ()):
            return b
    raise UnsupportedError(f"no registered backend handles {kind} arrays")


def _like(kind: str, a: np.ndarray) -> Any:
    """``a`` (a copy) as an array of ``kind``."""
    return a if kind == "numpy" else _kind_owner(kind).to_native(np.ascontiguousarray(a), kind)


def _to_numpy(kind: str, y: Any) -> np.ndarray:
    return np.asarray(y) if kind == "numpy" else _kind_owner(kind).from_native(y)


# ---- choosing -----------------------------------------------------------------------------
def _plan_for(x: Any, w: Any, stride: Any, padding: Any, dilation: Any, groups: Any, transposed: Any,
              output_padding: Any, policy: str, device: Optional[str], cache: Any, layout: str) -> Plan:
    if policy not in POLICIES:
        raise InvalidInputError(f"policy: {policy!r} is not a policy; use one of {', '.join(POLICIES)}")
    kind = input_kind(x, w)
    data_dev = _data_device(kind)
    if device is not None and device != data_dev:
        raise InvalidInputError(
            f"device: {device!r}, but the data is on {data_dev}; conv() does not move data "
            f"(move it yourself, then call conv)")
    spec = spec_from_arrays(x, w, stride, padding, dilation, groups, transposed, output_padding, layout)
    try:  # before reading it: a write after this point makes the next recheck plan again
        state = open_cache(cache, create=False).state()
        with _LOCK:
            _cache_states.setdefault(cache, state)
    except (ConvbenchError, TypeError):
        pass
    grad = bool(kind != "numpy" and (x.requires_grad or w.requires_grad))
    choice = choose(spec, kind, data_dev, policy=policy, cache=cache, requires_grad=grad, x=x, w=w)
    fn = runner(spec, kind, choice.backend, choice.algorithm, data_dev, requires_grad=grad)
    return Plan(spec, kind, data_dev, choice, fn)


def _allow(spec: ConvSpec, kind: str, grad: bool) -> Callable[[str, str, str], bool]:
    return lambda b, a, d: eligible(kind, b, a, d, requires_grad=grad, spec=spec)


def choose(spec: ConvSpec, kind: str = "numpy", device: str = "cpu", *, policy: str = "cache",
           cache: Union[None, PathLike, TunedCache] = None, requires_grad: bool = False,
           x: Any = None, w: Any = None) -> Choice:
    """The candidate conv() uses for ``spec`` on inputs of ``kind`` under ``policy``."""
    from .predict import predict

    allow = _allow(spec, kind, requires_grad)
    if policy in ("cache", "tune"):
        hit = lookup(spec, device, policy="warn", cache=cache)  # stale: warns once per plan
        if hit is not None:
            if allow(hit.backend, hit.algorithm, device) and _runs(spec, hit.backend, hit.algorithm, device):
                return hit
            if hit.runner_up:
                try:
                    ru = Candidate.parse(hit.runner_up)
                except ConvbenchError:
                    ru = None
                if ru is not None and allow(ru.backend, ru.algorithm, device) \
                        and _runs(spec, ru.backend, ru.algorithm, device):
                    return Choice(candidate=str(ru), backend=ru.backend, algorithm=ru.algorithm,
                                  device=device, median_s=hit.runner_up_median_s, margin=None,
                                  stale=hit.stale, stale_reasons=hit.stale_reasons, run_id=hit.run_id,
                                  spec_key=spec.key, source="cache-runner-up")
        if policy == "tune" and hit is None:
            return tune(spec, kind, device, cache=cache, requires_grad=requires_grad, x=x, w=w)
    return predict(spec, device, cache=cache, allow=allow)


def _runs(spec: ConvSpec, backend: str, algorithm: str, device: str) -> bool:
    try:
        b = get_backend(backend)
        return bool(b.available()) and bool(b.supports(spec, device, algorithm))
    except ConvbenchError:
        return False


# ---- tuning now ---------------------------------------------------------------------------
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
                    and _runs(spec, name, a, device):
                out.append(Candidate(name, a, device))
    return out


def tune(spec: ConvSpec, kind: str = "numpy", device: str = "cpu", *,
         cache: Union[None, PathLike, TunedCache] = None, requires_grad: bool = False,
         x: Any = None, w: Any = None, budget_s: Optional[float] = None, seed: int = 0,
         backends: Optional[list[str]] = None) -> Choice:
    """Time the eligible candidates for ``spec`` now, in this process, as conv() calls them.

    Each candidate is verified first against the float64 reference (batch reduced to 2;
    wrong answers are never timed), then raced (:func:`convbench.tuner.race_candidates`) on
    ``x``/``w`` (or generated inputs) with ``budget_s`` per candidate (default
    TUNE_BUDGET_S); ``backends`` limits the candidates (default TUNE_BACKENDS: all). The
    winner (selection rules of :mod:`convbench.selection`) is stored in the cache, keyed by
    this machine and the default thread count, and returned.
    """
    from . import environment
    from .cache import default_threads, entries_from_run
    from .reference import make_inputs, reference, relative_error
    from .results import now_iso
    from .timing import time_callable
    from .tuner import RaceConfig, RoundParams, race_candidates

    budget_s = TUNE_BUDGET_S if budget_s is None else float(budget_s)
    backends = TUNE_BACKENDS if backends is None else backends
    cands = eligible_candidates(spec, kind, device, requires_grad=requires_grad, backends=backends)
    if not cands:
        raise UnsupportedError(f"no eligible candidate for {spec.label} on {device} with {kind} inputs")
    if x is None or w is None:
        xn, wn = make_inputs(spec, seed=seed)
        x, w = _like(kind, xn), _like(kind, wn)
    vspec = spec if spec.n <= 2 else spec.replace(n=2)
    vx, vw = make_inputs(vspec, seed=seed)
    expected = reference(vspec, vx, vw)
    vx_k, vw_k = _like(kind, vx), _like(kind, vw)
    sync: Optional[Callable[[], Any]] = None
    if kind != "numpy":
        owner_sync = getattr(_kind_owner(kind), "synchronize_native", None)
        if owner_sync is not None:
            def sync() -> None:
                owner_sync(kind)
    fns = {str(c): runner(spec, kind, c.backend, c.algorithm, device, requires_grad=requires_grad)
           for c in cands}
    vfns = {str(c): runner(vspec, kind, c.backend, c.algorithm, device, requires_grad=requires_grad)
            for c in cands}

    def run_round(c: Candidate, p: RoundParams) -> dict[str, Any]:
        out: dict[str, Any] = {"status": "ok", "message": None, "info": {}}
        if p.verify:
            try:
                t0 = time.perf_counter()
                y = vfns[str(c)](vx_k, vw_k)
                if sync is not None:
                    sync()
                call_s = time.perf_counter() - t0
                err = relative_error(_to_numpy(kind, y), expected)
            except Exception as exc:  # noqa: BLE001 - recorded, not raised
                return {"status": "error", "message": f"{type(exc).__name__}: {exc}", "info": {}}
            tol = get_backend(c.backend).tolerance(spec, device, c.algorithm)
            out["max_error"], out["tolerance"] = err, tol
            out["info"] = {"verify_call_s": call_s, "verify_est_s": call_s * spec.n / vspec.n}
            if not err <= tol:
                return {**out, "status": "wrong",
                        "message": f"relative error {err:.3g} exceeds tolerance {tol:.3g}"}
            if not p.time:
                return {**out, "status": "verified"}
        fn = fns[str(c)]
        try:
            res = time_callable(lambda: fn(x, w), sync=sync, budget_s=p.budget_s,
                                min_samples=p.min_samples, max_samples=p.max_samples,
                                rel_ci=p.rel_ci, min_warmup_calls=1, min_warmup_s=0.01,
                                stop_above_s=p.stop_above_s)
        except Exception as exc:  # noqa: BLE001
            return {"status": "error", "message": f"{type(exc).__name__}: {exc}", "info": {}}
        out.update(res.to_dict())
        return out

    threads = default_threads()
    raced = race_candidates(cands, run_round, budget_s=budget_s, min_samples=5, max_samples=200,
                            rel_ci=0.02, config=RaceConfig(first_samples=3, first_max_samples=3,
                                                           middle_fractions=(), middle_samples=(),
                                                           strikes=1))
    now = now_iso()
    run_id = f"conv-tune-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    records = []
    for c, o in raced:
        rec = {k: o.get(k) for k in ("status", "message", "max_error", "tolerance", "median_s",
                                     "ci_low_s", "ci_high_s", "n_samples", "info")}
        rec.update(problem=spec.key, spec=spec.to_dict(), spec_key=spec.key, backend=c.backend,
                   algorithm=c.algorithm, device=device, candidate=str(c), threads=threads,
                   run_id=run_id, timestamp=now)
        records.append(rec)
    meta = {"run_id": run_id, "created": now, "threads": threads,
            "environment": environment.fingerprint(threads), "strategy": "race"}
    entries, _, _ = entries_from_run(records, meta, source=f"conv(tune, {kind} input)")
    if not entries:
        reasons = "; ".join(f"{r['candidate']}: {r['status']} {r.get('message') or ''}" for r in records)
        raise UnsupportedError(f"tuning {spec.label} found no candidate that runs correctly: {reasons}")
    tc = open_cache(cache)
    tc.put_many(entries)
    e = entries[0]
    return Choice.from_entry(e, source="tuned")


__all__ = ["conv", "plan", "choose", "tune", "runner", "eligible", "eligible_candidates",
           "spec_from_arrays", "input_kind", "clear_memo", "Plan", "POLICIES"]
