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
- ``"auto"``: like ``"cache"``; on a miss it runs the predicted choice and tunes on the fly
  (as ``"tune"`` does) once the prediction's expected loss over the calls so far exceeds the
  estimated tuning cost (:mod:`convbench.dispatch.auto`; ``Plan.prediction`` says how sure the
  prediction was). A shape called a few times is never tuned; a hot one is tuned once.

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
from ..predict import Prediction
from ..registry import Candidate
from ..spec import ConvSpec
from .arrays import (data_device, eligible, eligible_candidates, input_kind, input_kinds, ordinary,
                     runner, runs, spec_from_arrays)
from .tuning import tune

POLICIES = ("cache", "tune", "heuristic", "auto")
#: policy="tune"/"auto": timing budget per candidate (seconds) and backend name patterns (None: all)
TUNE_BUDGET_S = 0.1
TUNE_BACKENDS: Optional[list[str]] = None
#: policy="auto": the tuning cost (seconds) the expected loss must exceed; None: estimated as
#: TUNE_BUDGET_S times the number of candidates tuning would time
AUTO_TUNE_COST_S: Optional[float] = None


@dataclass
class Plan:
    """How conv() runs one combination of inputs: the spec, the choice and the callable."""

    spec: ConvSpec
    kind: str
    device: str
    choice: Choice
    run: Callable[[Any, Any], Any]
    prediction: Optional[Prediction] = None   # policy "auto" on a miss: the prediction and its confidence

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
         layout: str = "channels_first", scales: Any = None) -> Any:
    """Convolve ``x`` with ``w`` using the fastest known candidate; returns the caller's type.

    ``x``/``w``: numpy arrays or torch tensors (not mixed), activations in ``layout``,
    weights ``(C_out, C_in/groups, *k)`` (transposed: ``(C_in, C_out/groups, *k)``).
    Parameters as in :class:`~convbench.ConvSpec`. ``device``: None (where the data is) or
    that device; data is never moved. See the module docstring for policies and copies.
    int8 arrays are a quantized convolution (:mod:`convbench.quant`) returning int8;
    ``scales=(x_scale, w_scale, y_scale)`` (w_scale: one per output channel, or one for all;
    or a :class:`~convbench.quant.QuantParams`) gives their scales, default
    :func:`convbench.quant.quant_params`'s. Scales are only for int8 inputs.
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
        sk = None if scales is None else _scales_key(scales)
        if tx is np.ndarray:
            key = (tx, type(w), x.shape, x.dtype, w.shape, w.dtype, stride, padding, dilation,
                   groups, transposed, output_padding, policy, device, cache, layout, sk)
        else:
            key = (tx, type(w), x.shape, x.dtype, w.shape, w.dtype, x.device, w.device,
                   x.requires_grad or w.requires_grad, stride, padding, dilation, groups,
                   transposed, output_padding, policy, device, cache, layout, sk)
        plan = _MEMO[key]
    except (KeyError, TypeError, AttributeError):
        plan = _plan_for(x, w, stride, padding, dilation, groups, transposed, output_padding,
                         policy, device, cache, layout, scales)
        try:
            with _LOCK:
                _MEMO[key] = plan
        except (TypeError, UnboundLocalError, NameError):
            pass  # unhashable arguments: no memo, plan again next time
    return plan.run(x, w)


def plan(x: Any, w: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
         transposed: bool = False, output_padding: Any = 0, policy: str = "cache",
         device: Optional[str] = None, cache: Union[None, PathLike, TunedCache] = None,
         layout: str = "channels_first", scales: Any = None) -> Plan:
    """The plan conv() would use for these arguments (spec, choice, callable), without running it."""
    return _plan_for(x, w, stride, padding, dilation, groups, transposed, output_padding, policy,
                     device, cache, layout, scales)


def _scales_key(scales: Any) -> Any:
    """A hashable memo key of conv()'s ``scales`` (the value itself when it has none: then
    it is planned, and validated, on every call)."""
    try:
        xs, ws, ys = scales
        return (float(xs), tuple(np.ravel(np.asarray(ws, dtype=np.float64)).tolist()), float(ys))
    except (TypeError, ValueError):
        return scales


# ---- choosing -----------------------------------------------------------------------------
def _plan_for(x: Any, w: Any, stride: Any, padding: Any, dilation: Any, groups: Any, transposed: Any,
              output_padding: Any, policy: str, device: Optional[str], cache: Any, layout: str,
              scales: Any = None) -> Plan:
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
    spec = spec_from_arrays(x, w, stride, padding, dilation, groups, transposed, output_padding, layout,
                            scales=scales)
    try:  # before reading it: a write after this point makes the next recheck plan again
        state = open_cache(cache, create=False).state()
        with _LOCK:
            _cache_states.setdefault(cache, state)
    except (ConvbenchError, TypeError):
        pass
    grad = bool(getattr(x, "requires_grad", False) or getattr(w, "requires_grad", False))
    if kind == "numpy":
        x, w = ordinary(x), ordinary(w)
    if policy == "auto":
        hit = lookup(spec, data_dev, policy="warn", cache=cache)
        if hit is None:
            return _auto_plan(spec, kind, data_dev, cache, grad)
        choice = _usable(hit, spec, kind, data_dev, grad) or _predicted(spec, kind, data_dev, cache, grad)
    else:
        choice = choose(spec, kind, data_dev, policy=policy, cache=cache, requires_grad=grad, x=x, w=w)
    fn = runner(spec, kind, choice.backend, choice.algorithm, data_dev, requires_grad=grad)
    return Plan(spec, kind, data_dev, choice, fn)


def _auto_plan(spec: ConvSpec, kind: str, device: str, cache: Any, grad: bool) -> Plan:
    """policy="auto" on a miss: the predicted candidate, run by an AutoRunner that tunes later."""
    from ..predict import prediction
    from .auto import auto_runner

    pred = prediction(spec, device, cache=cache, allow=_allow(spec, kind, grad))
    fn = runner(spec, kind, pred.choice.backend, pred.choice.algorithm, device, requires_grad=grad)
    auto = auto_runner(spec, kind, device, pred, fn, cache=cache, requires_grad=grad)
    return Plan(spec, kind, device, pred.choice, auto, prediction=pred)


def _allow(spec: ConvSpec, kind: str, grad: bool) -> Callable[[str, str, str], bool]:
    return lambda b, a, d: eligible(kind, b, a, d, requires_grad=grad, spec=spec)


def choose(spec: ConvSpec, kind: str = "numpy", device: str = "cpu", *, policy: str = "cache",
           cache: Union[None, PathLike, TunedCache] = None, requires_grad: bool = False,
           x: Any = None, w: Any = None) -> Choice:
    """The candidate conv() uses for ``spec`` on inputs of ``kind`` under ``policy`` (for
    ``"auto"``: the one it starts with)."""
    if policy in ("cache", "tune", "auto"):
        hit = lookup(spec, device, policy="warn", cache=cache)  # stale: warns once per plan
        if hit is not None:
            usable = _usable(hit, spec, kind, device, requires_grad)
            if usable is not None:
                return usable
        elif policy == "tune":
            return tune(spec, kind, device, cache=cache, requires_grad=requires_grad, x=x, w=w)
    return _predicted(spec, kind, device, cache, requires_grad)


def _predicted(spec: ConvSpec, kind: str, device: str, cache: Any, requires_grad: bool) -> Choice:
    from ..predict import predict

    return predict(spec, device, cache=cache, allow=_allow(spec, kind, requires_grad))


def _usable(hit: Choice, spec: ConvSpec, kind: str, device: str, requires_grad: bool) -> Optional[Choice]:
    """The cached choice ``hit``, or its runner-up when only that can run on inputs of
    ``kind``; None when neither can."""
    allow = _allow(spec, kind, requires_grad)
    if allow(hit.backend, hit.algorithm, device) and runs(spec, hit.backend, hit.algorithm, device):
        return hit
    if hit.runner_up:
        try:
            ru = Candidate.parse(hit.runner_up)
        except ConvbenchError:
            return None
        if allow(ru.backend, ru.algorithm, device) and runs(spec, ru.backend, ru.algorithm, device):
            return Choice(candidate=str(ru), backend=ru.backend, algorithm=ru.algorithm,
                          device=device, median_s=hit.runner_up_median_s, margin=None,
                          stale=hit.stale, stale_reasons=hit.stale_reasons, run_id=hit.run_id,
                          spec_key=spec.key, source="cache-runner-up")
    return None


__all__ = ["conv", "plan", "choose", "tune", "runner", "eligible", "eligible_candidates",
           "spec_from_arrays", "input_kind", "input_kinds", "clear_memo", "Plan", "POLICIES"]
