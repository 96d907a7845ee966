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
require grad). The core knows input kinds only by name (``"numpy"`` and the backends'
``native_kinds``; a backend's ``native_kind(a)`` says which of its kinds an array is, see
:mod:`convbench.dispatch.arrays`); the built-in backends answer:

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

Numpy arrays of any strides are accepted: those that a framework cannot view (negative strides,
non-native byte order, misaligned data) are copied once per call into an ordinary array, the
one copy conv() makes itself (:func:`convbench.dispatch.arrays.ordinary`); masked arrays are
refused. Every argument is checked when a plan is made, before any candidate runs or is timed.

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

import os
import threading
from time import monotonic as _monotonic
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np

from ..cache import Choice, PathLike, TunedCache, lookup, open_cache
from ..errors import ConvbenchError, InvalidInputError
from ..registry import Candidate
from ..spec import ConvSpec
from .arrays import (data_device, eligible, eligible_candidates, input_kind, input_kinds, ordinary,
                     runner, runs, spec_from_arrays)
from .tuning import tune

POLICIES = ("cache", "tune", "heuristic")
#: policy="tune": timing budget per candidate (seconds) and backend name patterns (None: all)
TUNE_BUDGET_S = 0.1
TUNE_BACKENDS: Optional[list[str]] = None


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


# ---- choosing -----------------------------------------------------------------------------
def _plan_for(x: Any, w: Any, stride: Any, padding: Any, dilation: Any, groups: Any, transposed: Any,
              output_padding: Any, policy: str, device: Optional[str], cache: Any, layout: str) -> Plan:
    if policy not in POLICIES:
        raise InvalidInputError(f"policy: {policy!r} is not a policy; use one of {', '.join(POLICIES)}")
    if cache is not None and not isinstance(cache, (str, os.PathLike, TunedCache)):
        raise InvalidInputError(f"cache: {cache!r} is not a cache; pass None (the default cache), "
                                f"a path or a TunedCache")
    kind = input_kind(x, w)
    data_dev = data_device(kind)
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
    grad = bool(getattr(x, "requires_grad", False) or getattr(w, "requires_grad", False))
    if kind == "numpy":
        x, w = ordinary(x), ordinary(w)
    choice = choose(spec, kind, data_dev, policy=policy, cache=cache, requires_grad=grad, x=x, w=w)
    fn = runner(spec, kind, choice.backend, choice.algorithm, data_dev, requires_grad=grad)
    return Plan(spec, kind, data_dev, choice, fn)


def _allow(spec: ConvSpec, kind: str, grad: bool) -> Callable[[str, str, str], bool]:
    return lambda b, a, d: eligible(kind, b, a, d, requires_grad=grad, spec=spec)


def choose(spec: ConvSpec, kind: str = "numpy", device: str = "cpu", *, policy: str = "cache",
           cache: Union[None, PathLike, TunedCache] = None, requires_grad: bool = False,
           x: Any = None, w: Any = None) -> Choice:
    """The candidate conv() uses for ``spec`` on inputs of ``kind`` under ``policy``."""
    from ..predict import predict

    allow = _allow(spec, kind, requires_grad)
    if policy in ("cache", "tune"):
        hit = lookup(spec, device, policy="warn", cache=cache)  # stale: warns once per plan
        if hit is not None:
            if allow(hit.backend, hit.algorithm, device) and runs(spec, hit.backend, hit.algorithm, device):
                return hit
            if hit.runner_up:
                try:
                    ru = Candidate.parse(hit.runner_up)
                except ConvbenchError:
                    ru = None
                if ru is not None and allow(ru.backend, ru.algorithm, device) \
                        and runs(spec, ru.backend, ru.algorithm, device):
                    return Choice(candidate=str(ru), backend=ru.backend, algorithm=ru.algorithm,
                                  device=device, median_s=hit.runner_up_median_s, margin=None,
                                  stale=hit.stale, stale_reasons=hit.stale_reasons, run_id=hit.run_id,
                                  spec_key=spec.key, source="cache-runner-up")
        if policy == "tune" and hit is None:
            return tune(spec, kind, device, cache=cache, requires_grad=requires_grad, x=x, w=w)
    return predict(spec, device, cache=cache, allow=allow)


__all__ = ["conv", "plan", "choose", "tune", "runner", "eligible", "eligible_candidates",
           "spec_from_arrays", "input_kind", "input_kinds", "clear_memo", "Plan", "POLICIES"]
