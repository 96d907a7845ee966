"""One measurement path: verify a candidate, apply the per-call limit, warm up, time.

:func:`verify_and_time` takes one candidate through the steps of DESIGN.md "Measuring" and
returns an outcome dict (``convbench.outcome.OUTCOME_KEYS``):

1. **verify**: one call at the verification batch, checked against the float64 reference;
   a wrong answer is ``wrong`` (with the backend's expected-failure note, if it declared
   one) and is never timed;
2. **per-call limit**: a verified candidate whose one call, scaled to the full batch, exceeds
   ``max_call_s`` is ``timeout`` without being timed; with a ``guard`` (the worker's
   watchdog) a verification call still running after twice the limit is stopped;
3. **warm-up and timing** with :func:`convbench.timing.measure` (the warm-up is its first
   step), retried while the hypervisor took too much of the machine (``steal_retries``);
   what may have spoiled it (:mod:`convbench.noise`) goes into ``info`` and the ``noise``
   flags, the one round it is into ``round_samples_s``/``round_medians_s``, and the
   attempt's ``start_time``/``end_time`` (ISO 8601 UTC) into the outcome;
4. **outcome**: ``ok`` with the timing fields, ``verified`` when only verification was asked
   for, or the failure (``error``, ``oom``, ``unsupported``, ``unavailable``) an exception
   stands for.

A **screening look** (``screen``, the race's, usually without ``check``) puts a watchdog on the
first calls and stops early: the first call (set-up included) is stopped after
``Screen.kill_s`` (answered ``timeout``, with ``info["screen"]["stopped_after_s"]``); over the
per-call limit it is ``timeout``; when it took longer than ``Screen.above_s`` one more call is
made, and when that one did too the answer is ``above`` (both call times in
``info["screen"]["calls_s"]``; nothing timed). Otherwise the candidate is timed as above.

Both callers use it: the worker process on ``Prepared`` objects from ``Backend.prepare``,
and ``conv(policy="tune")`` on callables over the caller's own arrays
(:class:`convbench.timing.CallablePrepared` adapts them).
"""
from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

from . import noise
from . import timing as _timing
from .errors import BackendUnavailableError, UnsupportedError
from .outcome import ABOVE, TIMING_KEYS, VERIFIED, Status, empty_outcome, now_iso
from .timing import TimingResult

#: outcome key (never stored) set when the process that measured should be replaced: out of
#: memory, or an error after which a CUDA context is unusable
RESTART_KEY = "_restart"

#: guard(fn, kill_after_s, outcome, message): run ``fn()``; if it is still running after
#: ``kill_after_s``, answer ``outcome`` as ``timeout`` with ``message`` and stop it
Guard = Callable[[Callable[[], None], float, dict, str], None]


@dataclass(frozen=True)
class TimingParams:
    """Keyword knobs of :func:`convbench.timing.measure` for one timing."""

    budget_s: float = 2.0
    min_samples: int = 10
    max_samples: int = 10000
    rel_ci: float = 0.01
    cold_cache: bool = False
    stop_above_s: Optional[float] = None
    min_time_s: float = 0.0
    min_warmup_calls: int = 3
    min_warmup_s: float = 0.05


@dataclass(frozen=True)
class Screen:
    """A screening look: ``above_s`` is the per-call time a candidate must beat to be timed,
    ``kill_s`` how long one of its first calls may run before it is stopped."""

    above_s: float
    kill_s: float


@dataclass
class Check:
    """How to verify a candidate: one call at the verification batch against the reference.

    ``prepare()`` returns an object with ``run()``, ``synchronize()``, ``result()`` (the
    output as numpy, not timed) and ``close()`` at the verification batch ``batch``;
    ``full_batch`` is the batch that is timed (the call time is scaled by their ratio).
    """

    prepare: Callable[[], Any]
    expected: Any              # float64 reference output of that call
    tolerance: float
    batch: int
    full_batch: int
    expected_failure: Optional[str] = None

    @property
    def scale(self) -> float:
        return self.full_batch / self.batch


def verify_and_time(prepare: Callable[[], Any], *, check: Optional[Check],
                    timing: Optional[TimingParams], max_call_s: Optional[float] = None,
                    guard: Optional[Guard] = None, steal_retries: int = 0,
                    steal_retry_pct: float = 10.0, out: Optional[dict[str, Any]] = None,
                    screen: Optional[Screen] = None) -> dict[str, Any]:
    """Verify (``check``; None: not again), then time (``timing``; None: verify only, status
    ``verified``) the candidate that ``prepare()`` builds at full batch; never raises for a
    failing candidate. ``out``: an outcome to fill (its ``info`` is kept). ``screen``: time it
    as a screening look (module docstring)."""
    t0 = time.perf_counter()
    out = empty_outcome(Status.ERROR.value) if out is None else out
    out.setdefault("info", {})
    out["start_time"] = now_iso()
    try:
        verified = check is None or _verify(check, out, max_call_s, guard)
        if verified and timing is None:
            out.update(status=VERIFIED, message=None)
        elif verified:
            res = (_time(prepare, timing, out["info"], steal_retries, steal_retry_pct)
                   if screen is None else
                   _screened(prepare, timing, screen, out, max_call_s, guard))
            if res is not None:
                out.update(res.to_dict())
                out.update(status=Status.OK.value, message=None,
                           round_samples_s=[list(res.samples_s)], round_medians_s=[res.median_s],
                           noise=noise.flags(out["info"]))
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded
        record_failure(out, exc)
    if out["status"] != Status.OK:
        for k in TIMING_KEYS:
            out[k] = None
    out["end_time"] = now_iso()
    out["wall_s"] = time.perf_counter() - t0
    return out


# ---- the steps ----------------------------------------------------------------------------
def _verify(check: Check, out: dict, max_call_s: Optional[float], guard: Optional[Guard]) -> bool:
    """Run the check; False (``out`` says why) when the candidate must not be timed."""
    info = out["info"]
    out["tolerance"] = tol = float(check.tolerance)
    call_s, y = _first_call(check, out, max_call_s, guard)
    info["verify_call_s"] = call_s
    err = _output_error(y, check.expected)
    out["max_error"] = err
    if not err <= tol:  # NaN counts as wrong
        what = "error in LSB" if _is_integer(check.expected) else "relative error"
        msg = f"{what} {err:.3g} exceeds tolerance {tol:.3g} (checked at batch {check.batch})"
        if check.expected_failure:
            msg += f"; expected failure declared by the backend: {check.expected_failure}"
        out.update(status=Status.WRONG.value, message=msg)
        return False
    est = info["verify_est_s"] = call_s * check.scale
    if max_call_s is not None and est > max_call_s:
        out.update(status=Status.TIMEOUT.value, message=(
            f"one call took {call_s:.3g} s at batch {check.batch} (about {est:.3g} s at batch "
            f"{check.full_batch}), over the per-call limit max_call_s={max_call_s:g} s; "
            "verified, not timed"))
        return False
    return True


def _first_call(check: Check, out: dict, max_call_s: Optional[float],
                guard: Optional[Guard]) -> tuple[float, Any]:
    """(seconds of one call at the verification batch, its output as numpy)."""
    p = check.prepare()
    try:
        def call() -> None:
            p.run()
            p.synchronize()

        # a call still running after twice the limit is stopped by the guard: it would be a
        # timeout anyway, and some take 20 s (scipy.signal on a ResNet stem). Not scaled down
        # to the verification batch: a first call also pays one-time set-up (JIT, primitives).
        kill_after = None if max_call_s is None else 2.0 * max_call_s
        if kill_after is not None:  # a lower bound of the call's time, if it gets stopped
            out["info"]["verify_est_s"] = kill_after * check.scale
        t0 = time.perf_counter()
        if guard is None or kill_after is None:
            call()
        else:
            guard(call, kill_after, out, (
                f"the verification call at batch {check.batch} was still running after "
                f"{kill_after:.3g} s (twice the per-call limit max_call_s={max_call_s:g} s); "
                "stopped by ending the process that ran it, not timed"))
        call_s = time.perf_counter() - t0
        return call_s, p.result()
    finally:
        p.close()


def _time(prepare: Callable[[], Any], params: TimingParams, info: dict, retries: int,
          retry_pct: float) -> TimingResult:
    """Time the full-batch candidate and record in ``info`` what may have spoiled it
    (:mod:`convbench.noise`: steal, runnable processes, tick quantisation, throttling, clock);
    with ``retries``, again while the hypervisor's share of the machine (steal) exceeded
    ``retry_pct``, keeping the least disturbed timing."""
    p = prepare()
    try:
        return _time_prepared(p, params, info, retries, retry_pct)
    finally:
        p.close()


def _time_prepared(p: Any, params: TimingParams, info: dict, retries: int,
                   retry_pct: float) -> TimingResult:
    """:func:`_time` on an already prepared candidate (left open)."""
    threads = int(info.get("threads") or 1)
    tries: list[tuple[dict, TimingResult]] = []
    for _ in range(1 + retries):
        before = noise.snapshot()
        res = _timing.measure(p, **asdict(params))
        tries.append((noise.facts(before, noise.snapshot(), threads=threads), res))
        steal = tries[-1][0].get("cpu_steal_pct")
        if steal is None or steal <= retry_pct:
            break
    info.update(jsonable(dict(getattr(p, "info", None) or {})))
    found, res = min(tries, key=lambda tr: tr[0].get("cpu_steal_pct", -1.0))
    # machine-wide, over the timing: share of CPU time the hypervisor took, how many processes
    # were runnable at its end (the measuring process's threads included), throttling, clock
    info.update(found)
    info["canary_s"] = noise.canary_s()
    info["canary"] = noise.CANARY
    tick = noise.tick_quantum(res.samples_s, res.loops)
    if tick is not None:
        info["tick_s"] = tick
    if len(tries) > 1:
        info["steal_retries"] = [tr[0].get("cpu_steal_pct") for tr in tries]
    return res


def _screened(prepare: Callable[[], Any], params: TimingParams, screen: Screen, out: dict,
              max_call_s: Optional[float], guard: Optional[Guard]) -> Optional[TimingResult]:
    """A screening look (module docstring): the timing, or None when ``out`` already holds
    the answer (``above``, or ``timeout`` over the per-call limit)."""
    facts = out["info"]["screen"] = {"above_s": screen.above_s, "kill_s": screen.kill_s,
                                     "calls_s": []}
    p = prepare()
    try:
        for k in (1, 2):
            t = _screen_call(p, k, screen.kill_s, out, guard)
            facts["calls_s"].append(t)
            if k == 1 and max_call_s is not None and t > max_call_s:
                out.update(status=Status.TIMEOUT.value, message=(
                    f"one call took {t:.3g} s, over the per-call limit max_call_s={max_call_s:g} s "
                    "(screening look: not verified, not timed)"))
                return None
            if t <= screen.above_s:
                return _time_prepared(p, params, out["info"], 0, 100.0)
        out.update(status=ABOVE, message=(
            f"its first two calls took {facts['calls_s'][0]:.3g} s (set-up included) and "
            f"{facts['calls_s'][1]:.3g} s, both over {screen.above_s:.3g} s; not timed"))
        return None
    finally:
        p.close()


def _screen_call(p: Any, k: int, kill_s: float, out: dict, guard: Optional[Guard]) -> float:
    """Seconds of call ``k`` of a screening look, stopped by ``guard`` after ``kill_s``
    (``info["screen"]["stopped_after_s"]`` stays in the outcome only when it was)."""
    def call() -> None:
        p.run()
        p.synchronize()

    facts = out["info"]["screen"]
    facts["stopped_after_s"] = kill_s
    t0 = time.perf_counter()
    if guard is None:
        call()
    else:
        guard(call, kill_s, out, (
            f"screening call {k} (not verified) was still running after {kill_s:.3g} s; "
            "stopped by ending the process that ran it, not timed"))
    del facts["stopped_after_s"]
    return time.perf_counter() - t0


def _output_error(y: Any, expected: Any) -> float:
    from .reference import output_error

    return output_error(y, expected)


def _is_integer(expected: Any) -> bool:
    import numpy as np

    return bool(np.issubdtype(np.asarray(expected).dtype, np.integer))


# ---- failures -----------------------------------------------------------------------------
def record_failure(out: dict[str, Any], exc: BaseException) -> None:
    """Record the exception ``exc`` as the outcome's status and message (KeyboardInterrupt
    and SystemExit are raised again). Sets RESTART_KEY when the process should be replaced."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        raise exc
    if isinstance(exc, UnsupportedError):
        out.update(status=Status.UNSUPPORTED.value, message=str(exc))
    elif isinstance(exc, BackendUnavailableError):
        out.update(status=Status.UNAVAILABLE.value, message=str(exc))
    else:
        oom = looks_like_oom(exc)
        out.update(status=(Status.OOM if oom else Status.ERROR).value,
                   message=f"{type(exc).__name__}: {exc}{where(exc)}")
        out.setdefault("info", {})["traceback"] = "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]
        if oom or poisons_process(exc):
            out[RESTART_KEY] = True
    for k in TIMING_KEYS:
        out[k] = None


def looks_like_oom(exc: BaseException) -> bool:
    """Whether ``exc`` says the host or a device ran out of memory (any framework's words)."""
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    text = str(exc)
    return ("OutOfMemory" in name or "ResourceExhausted" in name or "out of memory" in text.lower()
            or "OOM when allocating" in text)


def poisons_process(exc: BaseException) -> bool:
    """Errors after which a CUDA context is unusable, so the process should be replaced."""
    text = str(exc)
    return any(s in text for s in ("CUDA error", "cudaError", "CUBLAS_STATUS", "CUDNN_STATUS",
                                   "illegal memory access", "device-side assert"))


def where(exc: BaseException) -> str:
    """`` (at file:line in function)`` of the innermost frame of ``exc``'s traceback."""
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return ""
    f = tb[-1]
    return f" (at {os.path.basename(f.filename)}:{f.lineno} in {f.name})"


def jsonable(obj: Any) -> Any:
    """``obj`` with everything JSON cannot hold turned into strings."""
    return json.loads(json.dumps(obj, default=str))


__all__ = ["verify_and_time", "Check", "Screen", "TimingParams", "Guard", "RESTART_KEY",
           "record_failure", "looks_like_oom", "poisons_process", "where", "jsonable"]
