"""The one measurement path (convbench.measure.verify_and_time): verify, per-call limit, time."""
from __future__ import annotations

import time

import numpy as np
import pytest

from convbench.errors import UnsupportedError
from convbench.measure import RESTART_KEY, Check, TimingParams, verify_and_time
from convbench.outcome import OUTCOME_KEYS, TIMING_KEYS
from convbench.timing import CallablePrepared

EXPECTED = np.arange(6, dtype=np.float64).reshape(2, 3)
FAST = TimingParams(budget_s=0.0, min_samples=3, min_warmup_calls=1, min_warmup_s=0.0)


class Fake:
    """A Prepared-like object: run() sleeps ``call_s`` and yields ``output``."""

    def __init__(self, output=EXPECTED, call_s: float = 0.0, fail: BaseException | None = None):
        self.output, self.call_s, self.fail = output, call_s, fail
        self.calls = 0
        self.closed = False
        self.info = {"from_prepared": 1}

    def run(self) -> None:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        if self.call_s:
            time.sleep(self.call_s)

    def synchronize(self) -> None:
        pass

    def result(self):
        return self.output

    def device_timer(self):
        return None

    def close(self) -> None:
        self.closed = True


def check(fake: Fake, *, batch: int = 2, full_batch: int = 8, note=None) -> Check:
    return Check(prepare=lambda: fake, expected=EXPECTED, tolerance=1e-6, batch=batch,
                 full_batch=full_batch, expected_failure=note)


class Never:
    """A prepare() for the full batch that must not be called."""

    def __init__(self) -> None:
        self.called = False

    def __call__(self):
        self.called = True
        raise AssertionError("timed although it must not be")


def test_verified_candidate_is_timed_and_everything_is_recorded():
    v, full = Fake(), Fake()
    out = verify_and_time(lambda: full, check=check(v), timing=FAST)
    assert out["status"] == "ok" and set(OUTCOME_KEYS) <= set(out)
    assert out["max_error"] == 0.0 and out["tolerance"] == 1e-6
    assert out["n_samples"] >= 3 and full.calls == out["warmup_calls"] + out["n_samples"] * out["loops"]
    assert v.calls == 1 and v.closed and full.closed          # one verification call; both closed
    assert out["info"]["from_prepared"] == 1                  # the timed Prepared's info
    assert out["info"]["verify_est_s"] == pytest.approx(out["info"]["verify_call_s"] * 4)
    assert out["wall_s"] > 0


def test_wrong_answer_is_never_timed_and_keeps_the_declared_note():
    never = Never()
    out = verify_and_time(never, check=check(Fake(output=EXPECTED + 1), note="known bug"),
                          timing=FAST)
    assert out["status"] == "wrong" and not never.called
    assert "checked at batch 2" in out["message"]
    assert "expected failure declared by the backend: known bug" in out["message"]
    assert all(out[k] is None for k in TIMING_KEYS)


def test_nan_counts_as_wrong():
    out = verify_and_time(Never(), check=check(Fake(output=EXPECTED * np.nan)), timing=FAST)
    assert out["status"] == "wrong"


def test_call_over_the_limit_is_verified_then_timeout_and_the_guard_gets_twice_the_limit():
    seen = []

    def guard(fn, kill_after_s, outcome, message):
        seen.append((kill_after_s, message))
        fn()

    never = Never()
    # 0.05 s at batch 2 is about 0.2 s at batch 8: over max_call_s=0.1
    out = verify_and_time(never, check=check(Fake(call_s=0.05)), timing=FAST, max_call_s=0.1,
                          guard=guard)
    assert out["status"] == "timeout" and not never.called
    assert "max_call_s=0.1" in out["message"] and "verified, not timed" in out["message"]
    assert out["max_error"] == 0.0                        # verified first
    assert out["info"]["verify_est_s"] >= 0.2
    assert seen[0][0] == pytest.approx(0.2) and "still running after 0.2 s" in seen[0][1]


def test_verify_only_answers_verified_without_timing():
    never = Never()
    out = verify_and_time(never, check=check(Fake()), timing=None)
    assert out["status"] == "verified" and not never.called
    assert all(out[k] is None for k in TIMING_KEYS)
    assert out["info"]["verify_call_s"] >= 0


def test_no_check_times_directly():
    out = verify_and_time(lambda: Fake(), check=None, timing=FAST)
    assert out["status"] == "ok" and out["max_error"] is None


@pytest.mark.parametrize("exc, status, restart", [
    (MemoryError("no room"), "oom", True),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), "error", True),
    (ValueError("bad shape"), "error", False),
    (UnsupportedError("not this stride"), "unsupported", False),
])
def test_failures_are_classified(exc, status, restart):
    out = verify_and_time(lambda: Fake(fail=exc), check=None, timing=FAST)
    assert out["status"] == status
    assert str(exc) in out["message"]
    assert bool(out.get(RESTART_KEY)) is restart
    assert all(out[k] is None for k in TIMING_KEYS)
    if status in ("oom", "error"):
        assert type(exc).__name__ in out["message"] and "Traceback" in out["info"]["traceback"]


def test_a_failing_verification_call_is_an_error_and_still_closed():
    v = Fake(fail=ValueError("kernel rejected"))
    out = verify_and_time(Never(), check=check(v), timing=FAST)
    assert out["status"] == "error" and "kernel rejected" in out["message"] and v.closed


def test_callables_verify_through_to_numpy_and_time_without_keeping_outputs():
    calls = []
    conv = CallablePrepared(lambda: EXPECTED.tolist(), to_numpy=np.asarray)
    out = verify_and_time(lambda: CallablePrepared(lambda: calls.append(1)),
                          check=Check(prepare=lambda: conv, expected=EXPECTED, tolerance=1e-6,
                                      batch=2, full_batch=2), timing=FAST)
    assert out["status"] == "ok" and out["max_error"] == 0.0 and len(calls) > 3
    with pytest.raises(Exception, match="to_numpy"):
        CallablePrepared(lambda: 1).result()
