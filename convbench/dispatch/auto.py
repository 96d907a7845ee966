"""``conv(policy="auto")`` after a cache miss: run the predicted candidate, and tune on the fly
once what the prediction is expected to have lost exceeds what tuning costs.

Each call of the predicted candidate is timed (wall clock around the call: for asynchronous
devices that is the launch, so the loss is underestimated and tuning comes later). With
``r`` the prediction's expected regret (:class:`convbench.predict.Prediction`), a call that
took ``t`` is expected to have lost ``t * (1 - 1/r)`` against the fastest candidate. Once the
sum over the calls so far exceeds the estimated tuning cost, the next call tunes
(:func:`convbench.dispatch.tuning.tune` on that call's arrays, the winner stored in the
cache) and the calls after it run the winner. The tuning cost is estimated as the race's
per-candidate budget (``convbench.dispatch.TUNE_BUDGET_S``) times the number of candidates
it would time, unless ``convbench.dispatch.AUTO_TUNE_COST_S`` sets it. Tuning happens at
most once per plan; if it fails (no candidate runs, the cache cannot be written), a warning
says why and the predicted candidate stays.
"""
from __future__ import annotations

import threading
import warnings
from time import perf_counter
from typing import Any, Callable, Optional

from ..cache import Choice
from ..errors import ConvbenchError
from ..predict import Prediction
from ..spec import ConvSpec


class AutoTuneWarning(UserWarning):
    """conv(policy="auto") could not tune a shape on the fly; it keeps the predicted candidate."""


class AutoRunner:
    """The callable of an ``auto`` plan made on a miss (see the module docstring)."""

    def __init__(self, prediction: Prediction, fn: Callable[[Any, Any], Any],
                 tune: Callable[[Any, Any], tuple[Choice, Callable[[Any, Any], Any]]],
                 cost_s: float) -> None:
        self.prediction = prediction
        self.choice = prediction.choice
        self.loss_fraction = max(0.0, 1.0 - 1.0 / max(prediction.expected_regret, 1.0))
        self.cost_s = float(cost_s)
        self.calls = 0
        self.lost_s = 0.0              # expected loss of the calls so far (seconds)
        self.tuned = False             # tuning has been tried (at most once)
        self._fn = fn
        self._tune = tune
        self._lock = threading.Lock()

    def __call__(self, x: Any, w: Any) -> Any:
        if self.tuned:
            return self._fn(x, w)
        if self.lost_s > self.cost_s and self._lock.acquire(blocking=False):
            try:
                if not self.tuned:
                    self._tune_now(x, w)
            finally:
                self._lock.release()
            return self._fn(x, w)
        t0 = perf_counter()
        y = self._fn(x, w)
        self.calls += 1
        self.lost_s += (perf_counter() - t0) * self.loss_fraction
        return y

    def _tune_now(self, x: Any, w: Any) -> None:
        try:
            self.choice, self._fn = self._tune(x, w)
        except ConvbenchError as exc:
            warnings.warn(f"conv(policy='auto'): tuning {self.choice.spec_key} failed, keeping the "
                          f"predicted {self.choice.candidate}: {exc}", AutoTuneWarning, stacklevel=3)
        finally:
            self.tuned = True


def tuning_cost_s(n_candidates: int, budget_s: float, override: Optional[float] = None) -> float:
    """The estimated cost of tuning one shape (see the module docstring)."""
    return float(override) if override is not None else max(n_candidates, 1) * float(budget_s)


def auto_runner(spec: ConvSpec, kind: str, device: str, prediction: Prediction,
                fn: Callable[[Any, Any], Any], *, cache: Any, requires_grad: bool) -> AutoRunner:
    """The AutoRunner for a miss: tunes with conv()'s settings (TUNE_BUDGET_S, TUNE_BACKENDS)."""
    from . import AUTO_TUNE_COST_S, TUNE_BACKENDS, TUNE_BUDGET_S
    from .arrays import eligible_candidates, runner
    from .tuning import tune

    n = len(eligible_candidates(spec, kind, device, requires_grad=requires_grad, backends=TUNE_BACKENDS))

    def tune_now(x: Any, w: Any) -> tuple[Choice, Callable[[Any, Any], Any]]:
        choice = tune(spec, kind, device, cache=cache, requires_grad=requires_grad, x=x, w=w)
        return choice, runner(spec, kind, choice.backend, choice.algorithm, device,
                              requires_grad=requires_grad)

    return AutoRunner(prediction, fn, tune_now, tuning_cost_s(n, TUNE_BUDGET_S, AUTO_TUNE_COST_S))


__all__ = ["AutoRunner", "AutoTuneWarning", "auto_runner", "tuning_cost_s"]
