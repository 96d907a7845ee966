"""The owner lock of a run directory: one writer at a time.

A sweep holds an advisory ``fcntl.flock`` on ``<run>/writer.lock`` for as long as it writes the
run; a second writer (``--resume`` of the same run) is refused with who holds it. The OS
drops the lock when its holder dies, however it dies, so a lock left by a killed sweep is
simply taken over. The file names its holder (pid, host, start time, command) for the
message; it is removed when the holder releases it.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

from .errors import ResultsError, RunLockedError
from .outcome import now_iso

LOCK_FILE = "writer.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, one writer is assumed
    fcntl = None  # type: ignore[assignment]


class RunLock:
    """The held lock of one run directory (:func:`lock_run` takes it); :meth:`release` ends it."""

    def __init__(self, run_dir: Path, fd: Optional[int]) -> None:
        self.run_dir, self.path, self._fd = run_dir, run_dir / LOCK_FILE, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file and unlock (in that order: a waiter that locked the removed
        file sees that it is gone and tries again)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:  # e.g. a dry run of --resume, which never opens a writer
        if getattr(self, "_fd", None) is not None:
            self.release()


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
        cmd = " ".join(map(str, info.get("command") or []))
        return (f"pid {info.get('pid')} on {info.get('host')}, since {info.get('since')}"
                + (f": {cmd}" if cmd else ""))
    except (OSError, ValueError, AttributeError, RecursionError):
        return "holder unknown"


def lock_run(run_dir: Path) -> RunLock:
    """Take the run directory's writer lock, or raise RunLockedError naming its holder."""
    path = run_dir / LOCK_FILE
    if fcntl is None:  # pragma: no cover
        return RunLock(run_dir, None)
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ResultsError(f"{run_dir}: cannot lock the run for writing ({path}: "
                               f"{exc.strerror or exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"{run_dir}: the run is being written by another convbench process ({_holder(path)}); "
                f"two writers would record the same pairs twice. Wait for it to end, or stop it "
                f"and --resume then") from None
        except OSError as exc:  # a file system without flock (some network mounts)
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            warnings.warn(f"{run_dir}: cannot lock the run ({exc.strerror}); make sure no other "
                          f"convbench writes it", stacklevel=3)
            return RunLock(run_dir, fd)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # its previous holder removed it between our open and our lock
            os.close(fd)
            continue
        _write_holder(fd)
        return RunLock(run_dir, fd)
    raise RunLockedError(f"{run_dir}: the run's lock keeps changing hands; another convbench "
                         f"process is writing it")


def _write_holder(fd: int) -> None:
    info: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso(),
                            "command": list(sys.argv)}
    data = json.dumps(info).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError:
        pass  # the lock holds without the note (a full disk): only the message loses detail


__all__ = ["RunLock", "lock_run", "LOCK_FILE"]
