"""Long-lived worker processes, one per backend family, that verify and time candidates.

The parent never imports a framework: a worker re-creates the backend from its import path
(``registry.backend_target``), checks availability and support, verifies the candidate
against the float64 reference, prepares it at full batch and times it with
:func:`convbench.timing.measure`. Failures are data: a worker that dies is recorded as
``crashed``, one that exceeds the task's time limit is killed and recorded as ``timeout``,
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
import traceback
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

from .errors import (BackendUnavailableError, ConvbenchError, InvalidInputError,
                     UnsupportedError)

from .outcome import OUTCOME_KEYS, STATUSES, TIMING_KEYS, empty_outcome

_STDERR_TAIL = 2000
#: seconds WorkerPool waits before timing a candidate of another family than the previous
#: task's: after a call, OpenBLAS worker threads spin-wait for about 2**28 cycles (0.1 s at
#: 2.5 GHz) and Intel OpenMP threads for KMP_BLOCKTIME (200 ms by default), and could take
#: cores from the next process. Measured on the 2-core development machine: in race sweeps of
#: resnet50, round-1 first samples over 1.5x their candidate's median fell from 4.5% (no
#: pause) to 1.7% (this pause, families grouped); a direct probe (torch timed right after
#: each other family, no pause) showed no slowdown, so the gain is modest and its cause not
#: pinned down. The pause costs about 10% of a resnet50 sweep's wall time.
SETTLE_S = 0.25
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
    # False: verify only and return status "verified" without timing (the race's round 0)
    time: bool = True

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


# ======================================================================================
# worker side
# ======================================================================================
def _looks_like_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    text = str(exc)
    return ("OutOfMemory" in name or "ResourceExhausted" in name or "out of memory" in text.lower()
            or "OOM when allocating" in text)


def _poisons_process(exc: BaseException) -> bool:
    """Errors after which a CUDA context is unusable, so the worker should be replaced."""
    text = str(exc)
    return any(s in text for s in ("CUDA error", "cudaError", "CUBLAS_STATUS", "CUDNN_STATUS",
                                   "illegal memory access", "device-side assert"))


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return ""
    f = tb[-1]
    return f" (at {os.path.basename(f.filename)}:{f.lineno} in {f.name})"


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


class _WorkerState:
    def __init__(self, threads: int, family: str, send: Optional[Callable[[dict], None]] = None) -> None:
        self.threads = threads
        self.family = family
        self.backends: dict[str, Any] = {}
        self.send = send                 # the reply channel (None: in-process use, no watchdog)
        self._send_lock = threading.Lock()

    def _call_with_watchdog(self, fn: Callable[[], None], kill_after_s: Optional[float],
                            outcome: dict, message: str) -> None:
        """Run ``fn()``; if it is still running after ``kill_after_s``, reply ``outcome`` with
        status ``timeout`` and ``message`` and end this worker process (a call cannot be
        interrupted otherwise; the pool starts a fresh worker for the next task)."""
        if kill_after_s is None or self.send is None:
            fn()
            return
        done = threading.Event()

        def expire() -> None:
            with self._send_lock:
                if done.is_set():
                    return
                out = dict(outcome)
                out.update(status="timeout", message=message, _restart=True)
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
        versions: dict = {}
        if avail:
            try:
                versions = dict(b.versions())
            except Exception as exc:
                versions = {"error": f"{type(exc).__name__}: {exc}"}
        return {"name": b.name or msg["name"], "family": getattr(b, "family", "") or self.family,
                "description": b.description, "install_hint": b.install_hint,
                "available": bool(avail), "reason": avail.reason or None,
                "devices": sorted(b.capabilities.devices), "algorithms": algos,
                "versions": _jsonable(versions), "threads": self.threads, "pid": os.getpid()}

    def run(self, t: dict) -> dict:
        from .environment import cpu_counters
        from .reference import make_inputs, reference, relative_error
        from .spec import ConvSpec
        from .timing import measure

        out = empty_outcome("error", cold_cache=t["cold_cache"])
        info: dict[str, Any] = {"threads": self.threads, "worker_pid": os.getpid(),
                                "worker_family": self.family}
        out["info"] = info
        try:
            spec = ConvSpec.from_dict(t["spec"])
            b = self.backend(t["target"], t["backend"])
            avail = b.available()
            if not avail:
                out.update(status="unavailable", message=avail.reason)
                return out
            if not getattr(b, "_convbench_threads_set", False):
                b.set_threads(self.threads)
                b._convbench_threads_set = True
            device = t["device"]
            algorithm = t["algorithm"] or b.default_algorithm(device)
            out["algorithm"] = algorithm
            sup = b.supports(spec, device, algorithm)
            if not sup:
                out.update(status="unsupported", message=sup.reason)
                return out
            tol = float(b.tolerance(spec, device, algorithm))
            out["tolerance"] = tol
            try:
                info["versions"] = _jsonable(dict(b.versions()))
            except Exception as exc:
                info["versions"] = {"error": f"{type(exc).__name__}: {exc}"}

            if t["verify"]:
                vspec = spec if spec.n <= t["verify_batch"] else spec.replace(n=t["verify_batch"])
                x, w = make_inputs(vspec, seed=t["seed"])
                p = b.prepare(vspec, x, w, algorithm=algorithm, device=device)
                limit = t.get("max_call_s")
                # a verification call still running after twice the per-call limit is stopped
                # by ending the worker: it would be recorded as timeout anyway, and some take
                # 20 s (scipy.signal on a ResNet stem). Not scaled down to the verification
                # batch: a first call also pays one-time set-up (JIT, primitive creation).
                kill_after = None if limit is None else 2.0 * limit
                msg = (f"the verification call at batch {vspec.n} was still running after "
                       f"{kill_after:.3g} s (twice the per-call limit max_call_s={limit:g} s); stopped "
                       f"by ending the worker process, not timed" if kill_after is not None else "")
                if kill_after is not None:  # a lower bound of its call time, if it gets stopped
                    info["verify_est_s"] = kill_after * spec.n / vspec.n
                def first_call() -> None:
                    p.run()
                    p.synchronize()
                try:
                    t0 = time.perf_counter()
                    self._call_with_watchdog(first_call, kill_after, out, msg)
                    call_s = time.perf_counter() - t0
                    y = p.result()
                finally:
                    p.close()
                info["verify_call_s"] = call_s
                err = relative_error(y, reference(vspec, x, w))
                out["max_error"] = err
                del x, w, y, p
                if not err <= tol:  # NaN counts as wrong
                    msg = f"relative error {err:.3g} exceeds tolerance {tol:.3g} (checked at batch {vspec.n})"
                    declared = b.expected_failure(spec, device, algorithm)
                    if declared:
                        msg += f"; expected failure declared by the backend: {declared}"
                    out.update(status="wrong", message=msg)
                    return out
                est = call_s * spec.n / vspec.n
                info["verify_est_s"] = est
                if limit is not None and est > limit:
                    out.update(status="timeout", message=(
                        f"one call took {call_s:.3g} s at batch {vspec.n} (about {est:.3g} s at batch "
                        f"{spec.n}), over the per-call limit max_call_s={limit:g} s; verified, not timed"))
                    return out
            if not t.get("time", True):
                out.update(status="verified", message=None)
                for k in TIMING_KEYS:
                    out[k] = None
                return out

            x, w = make_inputs(spec, seed=t["seed"])
            p = b.prepare(spec, x, w, algorithm=algorithm, device=device)
            tries: list[tuple[Optional[float], Any, Optional[int]]] = []
            try:
                for _ in range(1 + STEAL_RETRIES):
                    before = cpu_counters()
                    res = measure(p, budget_s=t["budget_s"], min_samples=t["min_samples"],
                                  max_samples=t["max_samples"], rel_ci=t["rel_ci"],
                                  cold_cache=t["cold_cache"], stop_above_s=t.get("stop_above_s"))
                    after = cpu_counters()
                    steal = None
                    if before is not None and after is not None and after[1] > before[1]:
                        steal = round(100.0 * (after[0] - before[0]) / (after[1] - before[1]), 2)
                    tries.append((steal, res, after[2] if after is not None else None))
                    if steal is None or steal <= STEAL_RETRY_PCT:
                        break
                pinfo = dict(getattr(p, "info", None) or {})
            finally:
                p.close()
            info.update(_jsonable(pinfo))
            info.setdefault("threads", self.threads)
            # keep the timing the hypervisor disturbed least (the last one, if none was)
            steal, res, running = min(tries, key=lambda tr: -1.0 if tr[0] is None else tr[0])
            if steal is not None:
                # machine-wide, over the timing: share of CPU time the hypervisor took, and
                # how many processes were runnable at its end (this worker's threads included)
                info["cpu_steal_pct"] = steal
                info["procs_running"] = running
            if len(tries) > 1:
                info["steal_retries"] = [tr[0] for tr in tries]
            out.update(res.to_dict())
            out.update(status="ok", message=None)
            return out
        except UnsupportedError as exc:
            out.update(status="unsupported", message=str(exc))
        except BackendUnavailableError as exc:
            out.update(status="unavailable", message=str(exc))
        except BaseException as exc:  # noqa: BLE001 - every failure is recorded
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            status = "oom" if _looks_like_oom(exc) else "error"
            out.update(status=status, message=f"{type(exc).__name__}: {exc}{_where(exc)}")
            info["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]
            if _poisons_process(exc) or status == "oom":
                out["_restart"] = True
        for k in TIMING_KEYS:
            out[k] = None
        return out


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
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}{_where(exc)}"}
        send(reply)
    return 0


# ======================================================================================
# parent side
# ======================================================================================
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
    pool waits until ``settle_s`` (default :data:`SETTLE_S`) have passed since that task
    ended; the pause is not part of the task's ``wall_s``.
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

    def _discard(self, family: str) -> None:
        with self._lock:
            w = self._workers.pop(family, None)
        if w is not None:
            w.kill()

    # -- requests ----------------------------------------------------------------------------
    def run(self, task: Task) -> dict[str, Any]:
        """Verify and time one candidate in its family's worker; returns the outcome fields.

        Keys: OUTCOME_KEYS. ``status`` is one of STATUSES, or ``"verified"`` for a verified
        task with ``time=False``; timing fields are None unless ok.
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
        if task.time and self.settle_s and last_family and last_family != family:
            pause = last_end + self.settle_s - time.perf_counter()
            if pause > 0:
                time.sleep(pause)  # let the other family's threads stop spinning first
            t0 = time.perf_counter()
        out: dict[str, Any]
        try:
            w = self._worker(family)
        except ConvbenchError as exc:
            out = empty_outcome("error", f"{exc}", cold_cache=task.cold_cache)
        else:
            out = self._request_run(w, family, payload, task)
        out.setdefault("info", {})
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
        if out.pop("_restart", False):
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
        for w in workers:
            w.stop()

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


__all__ = ["Task", "WorkerPool", "STATUSES", "OUTCOME_KEYS", "TIMING_KEYS", "empty_outcome"]
