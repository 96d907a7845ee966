"""What runs inside a worker process: one per backend family, verifying and timing candidates.

The pool (:mod:`convbench.pool`, re-exported here: ``Task``, ``WorkerPool``) starts the
process with ``python -c`` and :func:`_child_main`; requests and replies are JSON lines over
private pipes. For each task the worker re-creates the backend from its import path
(``registry.backend_target``), checks availability and support, sets the thread count (the
backend's ``set_threads``, and BLAS libraries through threadpoolctl where it is installed),
and hands the candidate to :func:`convbench.measure.verify_and_time`: verification against
the float64 reference at a reduced batch, the per-call limit, then timing at full batch with
:func:`convbench.timing.measure`. A verification call running past twice the per-call limit
is stopped by ending this process (a watchdog replies ``timeout`` first); the pool starts a
fresh worker for the next task.
"""
from __future__ import annotations

import gc
import json
import os
import select
import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from .errors import ConvbenchError
from .measure import (RESTART_KEY, Check, Screen, TimingParams, jsonable, record_failure,
                      verify_and_time, where)
from .outcome import OUTCOME_KEYS, STATUSES, TIMING_KEYS, Status, empty_outcome
from .pool import SETTLE_S, Task, WorkerPool

#: with STEAL_RETRIES > 0, a timing during which the hypervisor took more than this share (%)
#: of the machine's CPU time is taken again, up to STEAL_RETRIES more times, and the least
#: disturbed one is kept. Off by default, as measured on the development VM: in one race sweep
#: of resnet50 the only two medians over 2.5x their usual value (7.7x, 3.0x) were timed during
#: 27% and 38% steal (median steal of the rest: 0%), but with 2 retries a race and an
#: exhaustive sweep run back to back still agreed on only 12 (+2 tied) of 23 winners, as
#: before, and the race cost 0.94 of the exhaustive sweep's time instead of 0.77. The steal
#: share of every timing is recorded either way (info["cpu_steal_pct"]).
STEAL_RETRY_PCT = 10.0
STEAL_RETRIES = 0


@dataclass
class _Job:
    """A task's backend and candidate, once they are known to be available and supported."""

    backend: Any
    spec: Any  # ConvSpec
    device: str
    algorithm: str
    tolerance: float


class _WorkerState:
    """The worker's backends (loaded once per target) and how it answers requests."""

    def __init__(self, threads: int, family: str, send: Optional[Callable[[dict], None]] = None) -> None:
        self.threads = threads
        self.family = family
        self.backends: dict[str, Any] = {}
        self._threads_set: set[str] = set()  # targets whose backend was given the thread count
        self.send = send                 # the reply channel (None: in-process use, no watchdog)
        self._send_lock = threading.Lock()

    # -- run: verify and time one task ------------------------------------------------------
    def run(self, t: dict) -> dict:
        """Verify and time the task ``t`` (``Task.to_dict()``); an outcome dict (OUTCOME_KEYS)."""
        out = empty_outcome(Status.ERROR.value, cold_cache=t["cold_cache"])
        out["info"] = {"threads": self.threads, "worker_pid": os.getpid(),
                       "worker_family": self.family}
        try:
            job = self._job(t, out)
            if job is not None:
                verify_and_time(
                    self._full_batch(job, t), check=self._check(job, t) if t["verify"] else None,
                    timing=_timing_params(t) if t.get("time", True) else None,
                    max_call_s=t.get("max_call_s"), guard=self._call_with_watchdog,
                    steal_retries=STEAL_RETRIES, steal_retry_pct=STEAL_RETRY_PCT, out=out,
                    screen=_screen(t))
        except BaseException as exc:  # noqa: BLE001 - every failure is recorded
            record_failure(out, exc)
        blas = _blas_threads()
        if blas is not None:
            out["info"]["blas_threads"] = blas
        if self.send is not None:  # a worker process, not in-process use
            _freeze_heap()
        return out

    def _job(self, t: dict, out: dict) -> Optional[_Job]:
        """The task's backend and candidate; None (``out`` says why) if unavailable or
        unsupported. Sets the outcome's algorithm, tolerance and versions."""
        from .spec import ConvSpec

        spec = ConvSpec.from_dict(t["spec"])
        b = self.backend(t["target"], t["backend"])
        avail = b.available()
        if not avail:
            out.update(status=Status.UNAVAILABLE.value, message=avail.reason)
            return None
        if t["target"] not in self._threads_set:
            b.set_threads(self.threads)
            self._threads_set.add(t["target"])
        device = t["device"]
        algorithm = out["algorithm"] = t["algorithm"] or b.default_algorithm(device, spec)
        sup = b.supports(spec, device, algorithm)
        if not sup:
            out.update(status=Status.UNSUPPORTED.value, message=sup.reason)
            return None
        tol = out["tolerance"] = float(b.tolerance(spec, device, algorithm))
        out["info"]["versions"] = _versions(b)
        return _Job(b, spec, device, algorithm, tol)

    def _check(self, job: _Job, t: dict) -> Check:
        """Verification on make_inputs at the task's verification batch."""
        from .reference import make_inputs, reference

        n = t["verify_batch"]
        vspec = job.spec if job.spec.n <= n else job.spec.replace(n=n)
        x, w = make_inputs(vspec, seed=t["seed"])
        return Check(prepare=lambda: self._prepare(job, vspec, x, w),
                     expected=reference(vspec, x, w),
                     tolerance=job.tolerance, batch=vspec.n, full_batch=job.spec.n,
                     expected_failure=job.backend.expected_failure(job.spec, job.device, job.algorithm))

    def _full_batch(self, job: _Job, t: dict) -> Callable[[], Any]:
        """prepare(): the candidate at the task's full batch, on fresh make_inputs."""
        from .reference import make_inputs

        def prepare() -> Any:
            x, w = make_inputs(job.spec, seed=t["seed"])
            return self._prepare(job, job.spec, x, w)
        return prepare

    def _prepare(self, job: _Job, spec: Any, x: Any, w: Any) -> Any:
        p = job.backend.prepare(spec, x, w, algorithm=job.algorithm, device=job.device)
        _pin_blas(self.threads)  # after prepare: the framework has loaded its BLAS by now
        return p

    def _call_with_watchdog(self, fn: Callable[[], None], kill_after_s: float,
                            outcome: dict, message: str) -> None:
        """Run ``fn()``; if it is still running after ``kill_after_s``, reply ``outcome`` with
        status ``timeout`` and ``message`` and end this worker process (a call cannot be
        interrupted otherwise; the pool starts a fresh worker for the next task)."""
        if self.send is None:
            fn()
            return
        done = threading.Event()

        def expire() -> None:
            with self._send_lock:
                if done.is_set():
                    return
                out = dict(outcome)
                out.update(status=Status.TIMEOUT.value, message=message)
                out[RESTART_KEY] = True
                for k in TIMING_KEYS:
                    out[k] = None
                self.send({"ok": True, "result": out})
            os._exit(0)

        timer = threading.Timer(kill_after_s, expire)
        timer.daemon = True
        timer.start()
        try:
            fn()
        finally:
            with self._send_lock:
                done.set()
            timer.cancel()

    # -- describe and backends --------------------------------------------------------------
    def backend(self, target: str, name: str) -> Any:
        if target not in self.backends:
            from .registry import Backend, load_target

            if target.startswith("__main__:"):
                raise ConvbenchError(
                    f"backend {name!r} is defined in __main__ ({target}); a worker process cannot "
                    "import it: move the class into an importable module")
            obj = load_target(target)
            inst = obj if isinstance(obj, Backend) else obj()
            if not isinstance(inst, Backend):
                raise ConvbenchError(f"{target} did not produce a convbench Backend (got {type(inst).__name__})")
            if not inst.name:
                inst.name = name
            self.backends[target] = inst
        return self.backends[target]

    def describe(self, msg: dict) -> dict:
        b = self.backend(msg["target"], msg["name"])
        avail = b.available()
        algos: dict[str, list[str]] = {}
        for dev in sorted(b.capabilities.devices):
            try:
                algos[dev] = list(b.algorithms(dev))
            except Exception as exc:  # a backend that cannot list without its framework
                algos[dev] = []
                if avail:
                    raise ConvbenchError(f"{b.name}.algorithms({dev!r}) failed: {type(exc).__name__}: {exc}")
        versions = _versions(b) if avail else {}
        usable = {dev: b.device_support(dev) for dev in algos} if avail else {}
        return {"name": b.name or msg["name"], "family": getattr(b, "family", "") or self.family,
                "description": b.description, "install_hint": b.install_hint,
                "available": bool(avail), "reason": avail.reason or None,
                "devices": sorted(b.capabilities.devices), "algorithms": algos,
                "unusable_devices": {dev: s.reason for dev, s in usable.items() if not s},
                "versions": versions, "threads": self.threads, "pid": os.getpid()}


def _timing_params(t: dict) -> TimingParams:
    return TimingParams(budget_s=t["budget_s"], min_samples=t["min_samples"],
                        max_samples=t["max_samples"], rel_ci=t["rel_ci"],
                        cold_cache=t["cold_cache"], stop_above_s=t.get("stop_above_s"),
                        min_time_s=float(t.get("min_time_s") or 0.0))


def _screen(t: dict) -> Optional[Screen]:
    above, kill = t.get("screen_above_s"), t.get("screen_kill_s")
    return None if above is None or kill is None else Screen(float(above), float(kill))


def _versions(b: Any) -> dict:
    """The backend's versions (JSON-able), or {"error": ...} if it cannot tell."""
    try:
        return jsonable(dict(b.versions()))
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _freeze_heap() -> None:
    """Collect this task's cyclic garbage, then move every surviving object to the garbage
    collector's permanent generation (``gc.freeze``), so that the full collection
    :func:`convbench.timing.measure` makes before each timing scans only objects made since.

    Without it that collection scanned the whole heap of the imported frameworks every task:
    85 ms per task in a torch worker (Intel Xeon 2.60GHz guest, measured with cProfile), 10
    times per candidate in a sweep's interleaved rounds. Only this worker process does it: the
    worker is ours, while a user's process (``convbench.conv``) keeps its collector as it is.
    Objects frozen here and left in reference cycles later are not collected; a worker holds
    backends and caches for its lifetime anyway, and the pool restarts it when it ends.
    """
    gc.collect()
    gc.freeze()


def _pin_blas(threads: int) -> None:
    """Limit the BLAS libraries loaded in this process to ``threads`` (threadpoolctl; nothing
    if it is not installed or cannot)."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")
    except Exception:  # noqa: BLE001 - best effort: the environment already asked for it
        pass


def _blas_threads() -> Optional[dict[str, int]]:
    """Thread count of each BLAS library loaded in this process, by library name, as
    threadpoolctl reports it; None without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info

        return {str(i.get("prefix") or i.get("internal_api")): int(i["num_threads"])
                for i in threadpool_info() if i.get("user_api") == "blas"}
    except Exception:  # noqa: BLE001 - not installed, or a library it cannot query
        return None


def _watch_parent(alive_fd: int, parent_pid: int) -> None:
    """Exit the worker as soon as the parent is gone (its end of the alive pipe closes)."""
    while True:
        try:
            ready, _, _ = select.select([alive_fd], [], [], 5.0)
            if ready and os.read(alive_fd, 1) == b"":
                os._exit(0)
        except OSError:
            os._exit(0)
        if os.getppid() != parent_pid:
            os._exit(0)


def _child_main(argv: Sequence[str]) -> int:
    cmd_fd, resp_fd, alive_fd, parent_pid = (int(a) for a in argv[:4])
    threads, family = int(argv[4]), argv[5]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    threading.Thread(target=_watch_parent, args=(alive_fd, parent_pid), daemon=True,
                     name="convbench-parent-watch").start()
    rfile = os.fdopen(cmd_fd, "rb")
    wfile = os.fdopen(resp_fd, "wb")

    def send(obj: dict) -> None:
        wfile.write(json.dumps(obj, default=str).encode() + b"\n")
        wfile.flush()

    state = _WorkerState(threads, family, send)
    send({"op": "ready", "pid": os.getpid()})
    for line in rfile:
        try:
            msg = json.loads(line)
        except ValueError:
            send({"ok": False, "error": f"worker got a malformed request: {line[:200]!r}"})
            continue
        op = msg.get("op")
        if op == "stop":
            break
        try:
            if op == "run":
                reply = {"ok": True, "result": state.run(msg["task"])}
            elif op == "describe":
                reply = {"ok": True, "result": state.describe(msg)}
            elif op == "ping":
                reply = {"ok": True, "result": {"pid": os.getpid()}}
            else:
                reply = {"ok": False, "error": f"unknown op {op!r}"}
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}{where(exc)}"}
        send(reply)
    return 0

__all__ = ["Task", "WorkerPool", "SETTLE_S", "STEAL_RETRIES", "STEAL_RETRY_PCT", "STATUSES",
           "OUTCOME_KEYS", "TIMING_KEYS", "empty_outcome"]
