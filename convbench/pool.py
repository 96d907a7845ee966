"""The parent side of the worker processes: :class:`WorkerPool` and the :class:`Task` it sends.

One long-lived worker process per backend family (:mod:`convbench.worker` is what runs in
it). The parent never imports a framework. Failures are data: a worker that dies is recorded
as ``crashed``, one that exceeds the task's time limit is killed and recorded as ``timeout``,
and the next task gets a fresh worker.

Workers are fresh interpreters (``spawn`` semantics) started with the thread environment of
:func:`convbench.environment.set_thread_env`, so BLAS and every framework see the thread
count before they are imported. Parent and worker talk JSON lines over private pipes; the
worker's own stdout and stderr go to a temporary file whose tail is quoted when it crashes.
A worker exits by itself when its parent goes away, even in the middle of a task. POSIX only.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

from .errors import ConvbenchError, InvalidInputError
from .measure import RESTART_KEY
from .outcome import OUTCOME_KEYS, empty_outcome

_STDERR_TAIL = 2000

#: at most this many seconds WorkerPool waits before timing a candidate of another family than
#: the previous task's, for the other workers' threads to stop spinning: after a call,
#: OpenBLAS worker threads spin-wait for about 2**28 cycles (0.1 s at 2.5 GHz) and Intel
#: OpenMP threads for KMP_BLOCKTIME (200 ms by default), and could take cores from the next
#: process. The pool watches the other workers' CPU time (Linux: /proc/<pid>/task/*/schedstat)
#: and stops waiting once they used under SETTLE_IDLE_FRACTION of a core over SETTLE_POLL_S;
#: where it cannot read that, it waits the whole SETTLE_S.
#: Measured on the 2-core development machine (Intel Xeon 2.60GHz guest, a 96->96 3x3 conv,
#: 2 threads, CPU time of the worker after a task in 10 ms windows): the numpy worker
#: (OpenBLAS) kept 1-1.2 cores busy for 100 ms; torch, onnxruntime, openvino and numba workers
#: were idle within the first 10 ms. Earlier, with a fixed pause: in race sweeps of resnet50,
#: round-1 first samples over 1.5x their candidate's median fell from 4.5% (no pause) to 1.7%.
SETTLE_S = 0.25
SETTLE_POLL_S = 0.01
SETTLE_IDLE_FRACTION = 0.1


def _cpu_ns(pid: int) -> Optional[int]:
    """Nanoseconds the process ``pid`` (all its threads) has run on a CPU; None where
    /proc/<pid>/task/*/schedstat cannot be read (not Linux, or the process is gone)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total


def settle(pids: Sequence[int], max_s: float, *, poll_s: float = SETTLE_POLL_S,
           idle_fraction: float = SETTLE_IDLE_FRACTION) -> float:
    """Wait until the processes ``pids`` together use under ``idle_fraction`` of one core over
    a ``poll_s`` window, at most ``max_s`` seconds (all of it where their CPU time cannot be
    read). Returns the seconds waited."""
    t0 = time.perf_counter()
    if max_s <= 0:
        return 0.0
    if not pids:
        return 0.0
    before = [_cpu_ns(p) for p in pids]
    if any(b is None for b in before):
        time.sleep(max_s)
        return time.perf_counter() - t0
    while True:
        left = t0 + max_s - time.perf_counter()
        if left <= 0:
            break
        w0 = time.perf_counter()
        time.sleep(min(poll_s, left))
        after = [_cpu_ns(p) for p in pids]
        window = time.perf_counter() - w0
        if any(a is None for a in after):  # one ended: wait out the rest
            time.sleep(max(0.0, t0 + max_s - time.perf_counter()))
            break
        used = sum(a - b for a, b in zip(after, before)) * 1e-9  # type: ignore[operator]
        if used < idle_fraction * window:
            break
        before = after
    return time.perf_counter() - t0


@dataclass
class Task:
    """One candidate on one problem, as sent to a worker."""

    spec: dict  # ConvSpec.to_dict()
    backend: str
    target: str = ""  # "module:Class"; empty: looked up with registry.backend_target(backend)
    algorithm: Optional[str] = None  # None: the backend's default on this device
    device: str = "cpu"
    seed: int = 0
    budget_s: float = 2.0
    timeout_s: float = 120.0  # hard limit on the whole task in the worker (verify+prepare+time)
    verify: bool = True
    verify_batch: int = 2
    cold_cache: bool = False
    min_samples: int = 10
    max_samples: int = 10000
    rel_ci: float = 0.01
    # a candidate whose single call (measured during verification, scaled to the full batch)
    # exceeds this is recorded as "timeout" without being timed; None: no limit
    max_call_s: Optional[float] = None
    # stop timing as soon as every sample is slower than this (see timing.measure); None: off
    stop_above_s: Optional[float] = None
    # seconds of sampling before the confidence-interval rule may stop the timing (rounds)
    min_time_s: float = 0.0
    # False: verify only and return status "verified" without timing (the race's round 0)
    time: bool = True
    # a screening look (the race; convbench.measure.Screen): the first calls are stopped after
    # screen_kill_s, and a candidate whose first two calls exceed screen_above_s is not timed
    screen_above_s: Optional[float] = None
    screen_kill_s: Optional[float] = None

    def __post_init__(self) -> None:
        if hasattr(self.spec, "to_dict"):
            self.spec = self.spec.to_dict()  # type: ignore[union-attr]
        if not isinstance(self.spec, dict):
            raise InvalidInputError(f"spec: expected ConvSpec.to_dict(), got {type(self.spec).__name__}")
        if not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise InvalidInputError(f"timeout_s: {self.timeout_s!r} must be a number of seconds > 0")
        if not isinstance(self.verify_batch, int) or self.verify_batch < 1:
            raise InvalidInputError(f"verify_batch: {self.verify_batch!r} must be an integer >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def candidate(self) -> str:
        return f"{self.backend}:{self.algorithm or '(default)'}@{self.device}"




_BOOTSTRAP = (
    "import sys, json\n"
    "paths = json.loads(sys.argv[1])\n"
    "sys.path[:0] = [p for p in paths['front'] if p not in sys.path]\n"
    "sys.path.extend(p for p in paths['back'] if p not in sys.path)\n"
    "from convbench.worker import _child_main\n"
    "sys.exit(_child_main(sys.argv[2:]))\n"
)


class _WorkerDied(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)


class _WorkerTimeout(Exception):
    pass


def _describe_exit(rc: Optional[int]) -> str:
    if rc is None:
        return "is unresponsive"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = " (killed, possibly by the out-of-memory killer)" if -rc == signal.SIGKILL else ""
        return f"died with {name} (exit code {rc}){hint}"
    return f"exited with code {rc}"


class _Worker:
    """One worker process and its pipes (parent side)."""

    def __init__(self, family: str, threads: int, front: Sequence[str], env: dict[str, str],
                 startup_timeout_s: float) -> None:
        self.family = family
        self.errfile = tempfile.TemporaryFile(prefix="convbench-worker-")
        cmd_r, cmd_w = os.pipe()
        resp_r, resp_w = os.pipe()
        alive_r, alive_w = os.pipe()
        paths = {"front": list(front), "back": [p for p in sys.path if p]}
        args = [sys.executable, "-c", _BOOTSTRAP, json.dumps(paths), str(cmd_r), str(resp_w),
                str(alive_r), str(os.getpid()), str(threads), family]
        self.cmd_w, self.resp_r, self.alive_w = cmd_w, resp_r, alive_w
        self.task_pos = 0
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.errfile,
                                         stderr=self.errfile, env=env, close_fds=True,
                                         pass_fds=(cmd_r, resp_w, alive_r))
        except BaseException:
            self._close_fds()
            raise
        finally:
            for fd in (cmd_r, resp_w, alive_r):
                os.close(fd)
        self._buf = b""
        self.pid = self.proc.pid
        try:
            hello = self._read_line(startup_timeout_s)
        except _WorkerTimeout:
            note = self._stderr_note(0)
            self.kill()
            raise ConvbenchError(f"worker for family {family!r} did not start within "
                                 f"{startup_timeout_s:g} s{note}") from None
        except _WorkerDied as exc:
            note = self._stderr_note(0)
            self.kill()
            raise ConvbenchError(f"worker for family {family!r} failed to start: {exc}{note}") from None
        if hello.get("op") != "ready":
            self.kill()
            raise ConvbenchError(f"worker for family {family!r} sent {hello!r} instead of ready")

    # -- io ---------------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _stderr_pos(self) -> int:
        try:
            return os.fstat(self.errfile.fileno()).st_size
        except OSError:
            return 0

    def _stderr_note(self, since: int) -> str:
        try:
            size = os.fstat(self.errfile.fileno()).st_size
            start = max(since, size - _STDERR_TAIL)
            self.errfile.seek(start)
            text = self.errfile.read(size - start).decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return f"; worker output (last {len(text)} chars): {text}" if text else ""

    def _read_line(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        poller = select.poll()
        poller.register(self.resp_r, select.POLLIN | select.POLLHUP | select.POLLERR)
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _WorkerTimeout()
            if not poller.poll(max(1, int(remaining * 1000))):
                continue
            chunk = os.read(self.resp_r, 1 << 20)
            if not chunk:
                rc = self._reap()
                raise _WorkerDied(f"worker (family {self.family!r}, pid {self.pid}) {_describe_exit(rc)}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError:
            self.kill()
            raise _WorkerDied(f"worker (family {self.family!r}, pid {self.pid}) sent a malformed "
                              f"reply {line[:200]!r}; killed") from None
        if not isinstance(reply, dict):
            self.kill()
            raise _WorkerDied(f"worker (family {self.family!r}, pid {self.pid}) sent {reply!r}; killed")
        return reply

    def _reap(self) -> Optional[int]:
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def request(self, msg: dict, timeout_s: float) -> tuple[dict, int]:
        """Send one request; return (reply, stderr position before it). Raises _Worker* errors."""
        pos = self.task_pos = self._stderr_pos()
        data = json.dumps(msg, default=str).encode() + b"\n"
        try:
            view = memoryview(data)
            while view:
                n = os.write(self.cmd_w, view)
                view = view[n:]
        except (BrokenPipeError, OSError):
            rc = self._reap()
            raise _WorkerDied(f"worker (family {self.family!r}, pid {self.pid}) {_describe_exit(rc)}") from None
        return self._read_line(timeout_s), pos

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._close_fds()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.proc.poll() is None:
            try:
                os.write(self.cmd_w, b'{"op": "stop"}\n')
                self.proc.wait(timeout=timeout_s)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def _close_fds(self) -> None:
        for name in ("cmd_w", "resp_r", "alive_w"):
            fd = getattr(self, name, None)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, name, None)
        try:
            self.errfile.close()
        except OSError:
            pass


_LIVE_POOLS: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()


@atexit.register
def _close_all_pools() -> None:
    for pool in list(_LIVE_POOLS):
        try:
            pool.close()
        except Exception:
            pass


class WorkerPool:
    """One long-lived worker process per backend family, started on first use.

    ``threads`` is fixed for the pool: every worker gets it through its environment before
    it imports anything, and through ``Backend.set_threads``. ``extra_sys_path`` entries go
    in front of the workers' ``sys.path`` (the parent's ``sys.path`` is appended), ``env``
    replaces ``os.environ`` as the base environment. Several threads may share a pool as long
    as each family is used by one thread at a time (workers are started under a lock).
    Before a task that times a candidate of another family than the previous task's, the
    pool waits until the other workers are idle (:func:`settle`), at most until ``settle_s``
    (default :data:`SETTLE_S`) have passed since that task ended; the pause is not part of
    the task's ``wall_s`` and is recorded as ``info["settle_wait_s"]``.
    """

    def __init__(self, threads: int, *, extra_sys_path: Sequence[str] = (),
                 env: Optional[dict[str, str]] = None, start_method: str = "spawn",
                 startup_timeout_s: float = 120.0, settle_s: float = SETTLE_S) -> None:
        from .environment import _check_threads

        self.threads = _check_threads(threads)
        if start_method != "spawn":
            raise InvalidInputError(
                f"start_method: {start_method!r} is not supported; workers are always fresh "
                "interpreters ('spawn'), so thread settings apply before any import")
        if isinstance(extra_sys_path, (str, bytes)):
            extra_sys_path = [extra_sys_path]  # type: ignore[list-item]
        self.extra_sys_path = [os.fspath(p) for p in extra_sys_path]
        self.env = dict(os.environ if env is None else env)
        self.startup_timeout_s = float(startup_timeout_s)
        if not (isinstance(settle_s, (int, float)) and 0 <= settle_s < 60):
            raise InvalidInputError(f"settle_s: {settle_s!r} must be a number of seconds in [0, 60)")
        self.settle_s = float(settle_s)
        self._last: tuple[str, float] = ("", 0.0)   # family of the last task, when it ended
        self._workers: dict[str, _Worker] = {}
        self._families: dict[str, str] = {}
        self._lock = threading.Lock()
        self.workers_started = 0
        self._closed = False
        _LIVE_POOLS.add(self)

    # -- workers -----------------------------------------------------------------------------
    def family_of(self, target: str, backend: str = "") -> str:
        """The family a backend's target belongs to (read from the class in this process)."""
        if target not in self._families:
            fam = ""
            try:
                from .registry import load_target

                fam = getattr(load_target(target), "family", "") or ""
            except Exception:
                fam = ""
            self._families[target] = fam or f"backend:{backend or target}"
        return self._families[target]

    def _worker(self, family: str) -> _Worker:
        with self._lock:
            if self._closed:
                raise ConvbenchError("this WorkerPool is closed")
            w = self._workers.get(family)
            if w is not None and not w.alive():
                self._workers.pop(family)
                w.kill()
                w = None
            if w is not None:
                return w
        from .environment import set_thread_env

        env = set_thread_env(self.threads, self.env)
        env.setdefault("PYTHONFAULTHANDLER", "1")
        env["PYTHONUNBUFFERED"] = "1"
        w = _Worker(family, self.threads, self.extra_sys_path, env, self.startup_timeout_s)
        with self._lock:
            if self._closed:
                w.stop()
                raise ConvbenchError("this WorkerPool is closed")
            self.workers_started += 1
            self._workers[family] = w
        return w

    def worker_pid(self, family: str) -> Optional[int]:
        """PID of the family's current worker, or None if none is running."""
        w = self._workers.get(family)
        return w.pid if w is not None and w.alive() else None

    def settle(self, max_s: Optional[float] = None, *, but: str = "") -> float:
        """Wait until this pool's workers (but family ``but``'s) are idle, at most ``max_s``
        seconds (default ``settle_s``); see :func:`settle`. Returns the seconds waited."""
        pids = [w.pid for f, w in list(self._workers.items()) if f != but and w.alive()]
        return settle(pids, self.settle_s if max_s is None else max_s)

    def _discard(self, family: str) -> None:
        with self._lock:
            w = self._workers.pop(family, None)
        if w is not None:
            w.kill()

    # -- requests ----------------------------------------------------------------------------
    def run(self, task: Task) -> dict[str, Any]:
        """Verify and time one candidate in its family's worker; returns the outcome fields.

        Keys: OUTCOME_KEYS. ``status`` is one of STATUSES, or ``"verified"`` for a verified
        task with ``time=False``, or ``"above"`` for a screening look that stopped early
        (:mod:`convbench.measure`); timing fields are None unless ok.
        """
        if not isinstance(task, Task):
            raise InvalidInputError(f"task: expected a convbench.worker.Task, got {type(task).__name__}")
        t0 = time.perf_counter()
        target = task.target
        if not target:
            from .registry import backend_target

            target = backend_target(task.backend)
        payload = task.to_dict()
        payload["target"] = target
        family = self.family_of(target, task.backend)
        last_family, last_end = self._last
        waited = None
        if task.time and self.settle_s and last_family and last_family != family:
            waited = self.settle(last_end + self.settle_s - time.perf_counter(), but=family)
            t0 = time.perf_counter()
        out: dict[str, Any]
        try:
            w = self._worker(family)
        except ConvbenchError as exc:
            out = empty_outcome("error", f"{exc}", cold_cache=task.cold_cache)
        else:
            out = self._request_run(w, family, payload, task)
        out.setdefault("info", {})
        if waited is not None:
            out["info"]["settle_wait_s"] = round(waited, 4)
        if out.get("algorithm") is None:
            out["algorithm"] = task.algorithm
        for k in OUTCOME_KEYS:
            out.setdefault(k, None)
        end = time.perf_counter()
        self._last = (family, end)
        out["wall_s"] = end - t0
        return out

    def _request_run(self, w: _Worker, family: str, payload: dict, task: Task) -> dict[str, Any]:
        try:
            reply, pos = w.request({"op": "run", "task": payload}, task.timeout_s)
        except _WorkerTimeout:
            pid = w.pid
            self._discard(family)
            return empty_outcome(
                "timeout", f"no result within timeout_s={task.timeout_s:g} s (verify + prepare + "
                f"timing); worker pid {pid} killed", cold_cache=task.cold_cache)
        except _WorkerDied as exc:
            note = w._stderr_note(w.task_pos)
            self._discard(family)
            return empty_outcome("crashed", f"{exc} while running {task.candidate}{note}",
                                 cold_cache=task.cold_cache)
        if not reply.get("ok"):
            return empty_outcome("error", f"worker error: {reply.get('error')}", cold_cache=task.cold_cache)
        out = reply["result"]
        if out.pop(RESTART_KEY, False):
            self._discard(family)
        return out

    def describe(self, backend_name: str) -> dict[str, Any]:
        """Availability (+ reason), algorithms per device and versions, answered by a worker."""
        from .registry import backend_target

        target = backend_target(backend_name)
        family = self.family_of(target, backend_name)
        base = {"name": backend_name, "family": family, "available": False, "reason": None,
                "algorithms": {}, "versions": {}}
        try:
            w = self._worker(family)
            reply, _ = w.request({"op": "describe", "target": target, "name": backend_name},
                                 self.startup_timeout_s)
        except ConvbenchError as exc:
            return {**base, "reason": str(exc)}
        except _WorkerTimeout:
            self._discard(family)
            return {**base, "reason": f"no answer within {self.startup_timeout_s:g} s"}
        except _WorkerDied as exc:
            note = w._stderr_note(w.task_pos)
            self._discard(family)
            return {**base, "reason": f"{exc} while loading the backend{note}"}
        if not reply.get("ok"):
            return {**base, "reason": f"worker error: {reply.get('error')}"}
        return reply["result"]

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every worker (idempotent)."""
        with self._lock:
            self._closed = True
            workers = list(self._workers.values())
            self._workers.clear()
        stoppers = [threading.Thread(target=w.stop) for w in workers]  # framework exits overlap
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass


__all__ = ["Task", "WorkerPool", "SETTLE_S", "settle"]
