"""Durable, atomic file writes: readers see the old file or the whole new one, never a part,
and a written file survives a crash of the machine once the call returns."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


def fsync_dir(directory: PathLike) -> None:
    """Make renames and links inside ``directory`` durable (a no-op where the OS cannot)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path: PathLike) -> Path:
    """A new, empty temporary file next to ``path`` (same file system, so it can be moved in)."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    return Path(tmp)


def move_into_place(tmp: PathLike, path: PathLike, *, overwrite: bool = True) -> bool:
    """Move the finished file ``tmp`` to ``path`` atomically and durably.

    ``overwrite=False`` never replaces an existing ``path`` (another writer that got there
    first wins) and returns False in that case. ``tmp`` is gone afterwards either way.
    """
    tmp, path = Path(tmp), Path(path)
    try:
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)         # atomic, and fails if the target exists
            except FileExistsError:
                return False
            except OSError:                 # no hard links on this file system: best effort
                if path.exists():
                    return False
                os.replace(tmp, path)
        fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_atomic(path: PathLike, data: Union[str, bytes], *, overwrite: bool = True) -> bool:
    """Write ``data`` (text as UTF-8) to ``path`` atomically and durably; see move_into_place."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return move_into_place(tmp, path, overwrite=overwrite)
