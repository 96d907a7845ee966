"""Worker pool: statuses for misbehaving backends, recovery, families, threads, no orphans."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import fake_backends  # noqa: E402

from convbench import ConvSpec, registry  # noqa: E402
from convbench.errors import InvalidInputError  # noqa: E402
from convbench.worker import OUTCOME_KEYS, STATUSES, TIMING_KEYS, Task, WorkerPool  # noqa: E402

SPEC = ConvSpec(n=3, c_in=2, c_out=3, input_size=(6, 6), kernel_size=(3, 3), padding=1,
                dtype="float32")
FAST = dict(budget_s=0.1, min_samples=5, timeout_s=60.0)


@pytest.fixture(scope="module")
def pool():
    for cls in fake_backends.ALL:
        registry.register(cls)
    p = WorkerPool(threads=1, extra_sys_path=[HERE])
    yield p
    p.close()
    for cls in fake_backends.ALL:
        registry.unregister(cls.name)


def task(backend: str, algorithm=None, spec=SPEC, **kw) -> Task:
    knobs = {**FAST, **kw}
    return Task(spec=spec.to_dict(), backend=backend, target=registry.backend_target(backend),
                algorithm=algorithm, **knobs)


def assert_ok(out: dict) -> None:
    assert out["status"] == "ok", out["message"]
    assert set(OUTCOME_KEYS) <= set(out)
    assert out["max_error"] <= out["tolerance"] == 1e-4
    assert out["n_samples"] == len(out["samples_s"]) >= 5
    assert out["min_s"] <= out["median_s"]
    assert out["ci_low_s"] <= out["median_s"] <= out["ci_high_s"]
    assert out["timer"] == "perf_counter"
    assert out["loops"] >= 1
    assert out["wall_s"] > 0


def assert_failed(out: dict, status: str) -> None:
    assert out["status"] == status, (out["status"], out["message"])
    assert set(OUTCOME_KEYS) <= set(out)
    for k in TIMING_KEYS:
        assert out[k] is None, k


def test_ok_task_verifies_times_and_reports_threads(pool):
    out = pool.run(task("fake-ok"))
    assert_ok(out)
    assert out["algorithm"] == "default"
    assert out["cold_cache"] is False
    info = out["info"]
    assert info["threads"] == 1
    assert info["threads_seen"] == 1          # Backend.set_threads was called
    assert info["omp_env"] == "1"             # env set before the worker imported anything
    assert info["versions"] == {"fakelib": "1.2.3"}
    assert info["fake"] is True               # Prepared.info carried through
    assert info["pid"] != os.getpid()         # ran in a worker, not here


def test_many_tasks_share_one_worker(pool):
    a = pool.run(task("fake-ok"))
    b = pool.run(task("fake-ok", seed=1))
    assert_ok(a)
    assert_ok(b)
    assert a["info"]["pid"] == b["info"]["pid"] == pool.worker_pid("fake")


def test_a_worker_freezes_its_heap_after_each_task(pool):
    # so that the full collection before each timing scans only what the task itself made
    a = pool.run(task("fake-ok"))
    b = pool.run(task("fake-ok", seed=1))
    assert_ok(a)
    assert_ok(b)
    assert b["info"]["gc_frozen"] > 0


def _child(code: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "go"
    return p


def test_settle_returns_at_once_when_the_other_workers_are_idle():
    from convbench.pool import settle

    p = _child("import time\nprint('go', flush=True)\ntime.sleep(60)")
    try:
        assert settle([p.pid], 5.0) < 2.5
    finally:
        p.kill()
        p.wait()


def test_settle_waits_while_another_worker_spins_and_stops_when_it_rests():
    from convbench.pool import settle

    p = _child("import time\nprint('go', flush=True)\nt = time.time()\n"
               "while time.time() - t < 0.4: pass\ntime.sleep(60)")
    try:
        waited = settle([p.pid], 10.0)
        assert 0.2 < waited < 8.0     # it spun for 0.4 s wall time after "go"
    finally:
        p.kill()
        p.wait()


def test_settle_waits_the_whole_pause_where_it_cannot_see_the_cpu_time():
    from convbench.pool import settle

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()   # gone: /proc/<pid> cannot be read
    assert settle([p.pid], 0.3) >= 0.3
    assert settle([], 0.3) == 0.0  # nothing to wait for


def test_families_get_separate_workers(pool):
    a = pool.run(task("fake-ok"))
    b = pool.run(task("fake-ok-other"))
    assert_ok(a)
    assert_ok(b)
    assert a["info"]["pid"] != b["info"]["pid"]
    assert pool.family_of(registry.backend_target("fake-ok-other")) == "fake-other"


@pytest.mark.parametrize("algorithm, expect", [
    ("abort", "SIGABRT"), ("segfault", "SIGSEGV"), ("exit", "exited with code 7")])
def test_crash_is_recorded_and_worker_replaced(pool, algorithm, expect):
    before = pool.run(task("fake-ok"))["info"]["pid"]
    out = pool.run(task("fake-crash", algorithm))
    assert_failed(out, "crashed")
    assert expect in out["message"]
    assert "fake-crash:" + algorithm in out["message"]
    after = pool.run(task("fake-ok"))
    assert_ok(after)
    assert after["info"]["pid"] != before


def test_segfault_message_carries_faulthandler_traceback(pool):
    out = pool.run(task("fake-crash", "segfault"))
    assert_failed(out, "crashed")
    assert "Segmentation fault" in out["message"] or "Fatal Python error" in out["message"]


def test_hang_times_out_and_worker_replaced(pool):
    before = pool.run(task("fake-ok"))["info"]["pid"]
    t0 = time.monotonic()
    out = pool.run(task("fake-hang", timeout_s=1.5))
    assert_failed(out, "timeout")
    assert time.monotonic() - t0 < 30
    assert "1.5" in out["message"]
    with pytest.raises(ProcessLookupError):
        os.kill(before, 0)  # the hung worker was killed and reaped
    after = pool.run(task("fake-ok"))
    assert_ok(after)
    assert after["info"]["pid"] != before


@pytest.mark.parametrize("algorithm", ["memoryerror", "cuda-message"])
def test_out_of_memory(pool, algorithm):
    out = pool.run(task("fake-oom", algorithm))
    assert_failed(out, "oom")
    assert ("MemoryError" in out["message"]) if algorithm == "memoryerror" else ("out of memory" in out["message"])
    assert_ok(pool.run(task("fake-ok")))


def test_wrong_answer_is_not_timed(pool):
    out = pool.run(task("fake-wrong", "plain"))
    assert_failed(out, "wrong")
    assert out["max_error"] > out["tolerance"]
    assert "exceeds tolerance" in out["message"]
    assert "checked at batch 2" in out["message"]   # SPEC has n=3, verify_batch=2
    assert "expected failure" not in out["message"]


def test_declared_expected_failure_is_still_wrong_with_reason(pool):
    out = pool.run(task("fake-wrong", "declared"))
    assert_failed(out, "wrong")
    assert "known off-by-one in the fake kernel" in out["message"]


def test_exception_is_error_with_type_and_message(pool):
    out = pool.run(task("fake-raises"))
    assert_failed(out, "error")
    assert "ValueError" in out["message"] and "rejects this problem" in out["message"]
    assert "Traceback" in out["info"]["traceback"]


def test_unavailable_and_unsupported(pool):
    out = pool.run(task("fake-unavailable"))
    assert_failed(out, "unavailable")
    assert "fakelib is not installed" in out["message"] and "pip install fakelib" in out["message"]
    out = pool.run(task("fake-nostride", spec=SPEC.replace(stride=2)))
    assert_failed(out, "unsupported")
    assert "stride" in out["message"]
    out = pool.run(task("fake-ok", spec=SPEC.replace(dtype="float16")))
    assert_failed(out, "unsupported")
    out = pool.run(task("fake-ok", algorithm="nonexistent"))
    assert_failed(out, "unsupported")
    assert "unknown algorithm" in out["message"]


def test_unimportable_target_is_an_error(pool):
    out = pool.run(Task(spec=SPEC.to_dict(), backend="ghost", target="no_such_module_xyz:Ghost",
                        **FAST))
    assert_failed(out, "error")
    assert "no_such_module_xyz" in out["message"]


def test_describe(pool):
    d = pool.describe("fake-crash")
    assert d["available"] is True
    assert d["algorithms"] == {"cpu": ["abort", "segfault", "exit"]}
    assert d["versions"] == {"fakelib": "1.2.3"}
    assert d["family"] == "fake"
    assert d["pid"] != os.getpid()
    u = pool.describe("fake-unavailable")
    assert u["available"] is False and "fakelib is not installed" in u["reason"]


def test_statuses_are_the_design_set():
    # "pruned": the race's (issue 15): a candidate it stopped measuring, never chosen
    assert set(STATUSES) == {"ok", "unsupported", "unavailable", "wrong", "crashed", "timeout",
                             "oom", "error", "pruned"}


def test_task_validation():
    with pytest.raises(InvalidInputError, match="timeout_s"):
        Task(spec=SPEC.to_dict(), backend="fake-ok", timeout_s=0)
    t = Task(spec=SPEC, backend="fake-ok")  # a ConvSpec is accepted and stored as a dict
    assert t.spec == SPEC.to_dict()
    with pytest.raises(InvalidInputError, match="threads"):
        WorkerPool(threads=0)
    with pytest.raises(InvalidInputError, match="start_method"):
        WorkerPool(threads=1, start_method="fork")


def test_close_stops_workers():
    if "fake-ok" not in registry.list_backends():
        registry.register(fake_backends.FakeOK)
    with WorkerPool(threads=1, extra_sys_path=[HERE]) as p:
        assert_ok(p.run(task("fake-ok")))
        pid = p.worker_pid("fake")
        assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line for line in f)
    except OSError:
        return True


def test_busy_worker_dies_with_killed_parent():
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {HERE!r})
        import fake_backends
        from convbench import ConvSpec, registry
        from convbench.worker import Task, WorkerPool
        registry.register(fake_backends.FakeHang)
        pool = WorkerPool(threads=1, extra_sys_path=[{HERE!r}])
        pool.describe("fake-hang")
        print(pool.worker_pid("fake"), flush=True)
        spec = ConvSpec(n=1, c_in=1, c_out=1, input_size=(4, 4), kernel_size=(3, 3))
        pool.run(Task(spec=spec, backend="fake-hang", timeout_s=600))
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        time.sleep(0.5)  # let the worker enter the hanging task
        assert not _gone(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(pid), f"worker {pid} outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_cold_cache_task(pool):
    out = pool.run(task("fake-ok", cold_cache=True))
    assert_ok(out)
    assert out["cold_cache"] is True
    assert out["loops"] == 1
    failed = pool.run(task("fake-raises", cold_cache=True))
    assert failed["cold_cache"] is True and failed["loops"] is None


def test_call_over_max_call_s_is_verified_then_recorded_as_timeout(pool):
    t0 = time.monotonic()
    # 0.3 s per call at the verification batch 2, about 0.45 s at batch 3: over the limit,
    # but not past twice the limit (0.6 s), so it finishes and is verified
    out = pool.run(task("fake-slow", max_call_s=0.3))
    assert_failed(out, "timeout")
    assert "max_call_s=0.3" in out["message"] and "verified, not timed" in out["message"]
    assert out["max_error"] is not None and out["max_error"] <= 1e-4  # it was verified first
    assert time.monotonic() - t0 < 10  # one verification call, not 10+ timed samples
    assert_ok(pool.run(task("fake-slow", max_call_s=5.0)))


def test_timing_records_steal_and_runnable_processes_where_the_os_tells(pool):
    import os

    out = pool.run(task("fake-ok"))
    assert_ok(out)
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat: nothing to record")
    assert 0.0 <= out["info"]["cpu_steal_pct"] <= 100.0 and out["info"]["procs_running"] >= 1


def test_a_timing_under_heavy_steal_is_taken_again_and_the_least_disturbed_kept(pool, monkeypatch):
    from convbench import environment, worker

    monkeypatch.setattr(worker, "STEAL_RETRIES", 2)    # off by default; this checks the mechanism
    # (steal, total, running) readings: the first timing sees 50% steal, the second 0%
    readings = iter([(0, 0, 1), (50, 100, 3), (50, 100, 1), (50, 200, 2)])
    monkeypatch.setattr(environment, "cpu_counters", lambda: next(readings))
    state = worker._WorkerState(threads=1, family="fake")       # in-process, no watchdog
    t = task("fake-ok").to_dict()
    out = state.run(t)
    assert out["status"] == "ok", out["message"]
    assert out["info"]["steal_retries"] == [50.0, 0.0]
    assert out["info"]["cpu_steal_pct"] == 0.0 and out["info"]["procs_running"] == 2
    # always disturbed: 1 + STEAL_RETRIES timings, the least disturbed one kept
    readings2 = iter([(0, 0, 1), (30, 100, 1), (30, 100, 1), (50, 200, 1), (50, 200, 1), (70, 300, 1)])
    monkeypatch.setattr(environment, "cpu_counters", lambda: next(readings2))
    out = state.run(t)
    assert out["info"]["steal_retries"] == [30.0, 20.0, 20.0]
    assert out["info"]["cpu_steal_pct"] == 20.0
    # the default: recorded, not retried
    monkeypatch.setattr(worker, "STEAL_RETRIES", 0)
    readings3 = iter([(0, 0, 1), (50, 100, 1)])
    monkeypatch.setattr(environment, "cpu_counters", lambda: next(readings3))
    out = state.run(t)
    assert out["info"]["cpu_steal_pct"] == 50.0 and "steal_retries" not in out["info"]


def test_stop_above_ends_timing_after_three_slower_samples(pool):
    out = pool.run(task("fake-slow", min_samples=10, budget_s=0.0, stop_above_s=0.1))
    assert out["status"] == "ok" and out["n_samples"] == 3 and out["converged"] is False
    assert out["median_s"] > 0.1


def test_a_call_past_twice_max_call_s_is_stopped_by_ending_the_worker(pool):
    pool.run(task("fake-ok"))
    pid = pool.worker_pid("fake")
    t0 = time.monotonic()
    out = pool.run(task("fake-hang", max_call_s=0.5, timeout_s=60))   # run() sleeps an hour
    took = time.monotonic() - t0
    assert_failed(out, "timeout")
    assert "still running after 1 s" in out["message"] and "max_call_s=0.5" in out["message"]
    assert out["info"]["verify_est_s"] == pytest.approx(1.0 * 3 / 2)   # a lower bound, at batch 3
    assert took < 10                                  # stopped at ~1 s, not at timeout_s
    assert pool.worker_pid("fake") is None            # that worker is gone ...
    assert_ok(pool.run(task("fake-ok")))              # ... and a fresh one takes the next task
    assert pool.worker_pid("fake") not in (None, pid)


def test_blas_threads_are_pinned_in_process_and_recorded(pool):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from convbench import worker

    state = worker._WorkerState(threads=1, family="fake")
    # the test process's own BLAS limits come back when the block ends
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        out = state.run(task("fake-ok").to_dict())
    assert out["status"] == "ok", out["message"]
    blas = out["info"]["blas_threads"]
    if not blas:
        pytest.skip("threadpoolctl sees no BLAS library in this process")
    assert set(blas.values()) == {1}             # pinned to the worker's thread count


def test_worker_outcomes_carry_blas_threads(pool):
    pytest.importorskip("threadpoolctl")
    out = pool.run(task("fake-ok"))
    assert_ok(out)
    assert isinstance(out["info"]["blas_threads"], dict)
    assert all(n == 1 for n in out["info"]["blas_threads"].values())
