"""The tuned cache's SQLite file: creation, validation, schema upgrade, transactions.

One file in WAL mode; every write is one ``BEGIN IMMEDIATE`` transaction, so several
processes may write the same cache at once. A file that is not a convbench cache (garbage,
truncated, another program's SQLite database, a newer schema) raises
:class:`~convbench.errors.CacheFormatError` and is never modified. Reading opens the file
read-only (``mode=ro``; ``immutable`` in a folder nobody may write), so it never changes the
file, journal mode included, and works on read-only files and folders; the first write opens
it for writing, and a write that fails (read-only, full disk) is a
:class:`~convbench.errors.CacheWriteError` that leaves the file as it was. What the rows mean
is :mod:`convbench.cache`'s business; this module knows only the tables.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from ..errors import CacheError, CacheFormatError, CacheWriteError
from ..files import move_into_place, temp_path
from ..outcome import now_iso

SCHEMA_VERSION = 2   # 2 added entries.timings (version 1 files are upgraded in place)

#: The entries (and history) table: one column per CacheEntry field, in its order.
COLUMNS = (
    ("spec_key", "TEXT NOT NULL"), ("machine", "TEXT NOT NULL"), ("threads", "INTEGER NOT NULL"),
    ("device", "TEXT NOT NULL"), ("spec", "TEXT NOT NULL"), ("candidate", "TEXT NOT NULL"),
    ("backend", "TEXT NOT NULL"), ("algorithm", "TEXT NOT NULL"), ("median_s", "REAL"),
    ("ci_low_s", "REAL"), ("ci_high_s", "REAL"), ("n_samples", "INTEGER"), ("runner_up", "TEXT"),
    ("runner_up_median_s", "REAL"), ("margin", "REAL"), ("decisive", "INTEGER NOT NULL"),
    ("tie_rule", "TEXT"), ("max_error", "REAL"), ("run_id", "TEXT"), ("timestamp", "TEXT"),
    ("env_id", "TEXT"), ("machine_desc", "TEXT NOT NULL"), ("versions", "TEXT NOT NULL"),
    ("previous_run_id", "TEXT"), ("previous_candidate", "TEXT"), ("updated", "TEXT"),
    ("source", "TEXT"), ("timings", "TEXT NOT NULL DEFAULT '{}'"),
)
COLUMN_NAMES = tuple(c for c, _ in COLUMNS)
#: The key of an entry: one row per (problem, machine, thread count, device).
KEY_COLUMNS = ("spec_key", "machine", "threads", "device")

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS convbench_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS entries (" + ", ".join(f"{c} {t}" for c, t in COLUMNS)
    + ", PRIMARY KEY (spec_key, machine, threads, device))",
    # every entry that was replaced, with when it was replaced
    "CREATE TABLE IF NOT EXISTS history (" + ", ".join(f"{c} {t}" for c, t in COLUMNS)
    + ", replaced TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS history_key ON history (spec_key, machine, threads, device)",
]

_SQLITE_MAGIC = b"SQLite format 3\x00"
_BUSY_TIMEOUT_MS = 60_000


def _retry(fn: Callable[[], Any], attempts: int = 50) -> Any:
    """``fn()``, retried while SQLite reports the database locked or busy."""
    for i in range(attempts):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or i == attempts - 1:
                raise
            time.sleep(0.05 + 0.01 * i)


class CacheDB:
    """One cache file. Opening an existing file validates it; a missing one is created on the
    first write (``create=True``) or reads as empty. Connections are per process (a fork gets
    its own) and shared by the threads of one process."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self.create = create
        self.pid = -1                        # the process that opened the connection
        self._conn: Optional[sqlite3.Connection] = None
        self._writable = False               # whether _conn was opened for writing
        self._version = SCHEMA_VERSION
        self.lock = threading.RLock()
        if self.path.exists():
            self.connect()

    def fail(self, what: str, field: Optional[str] = None) -> CacheFormatError:
        """The error for a file that is not a usable cache: it says the file was not touched."""
        return CacheFormatError(
            self.path, field, what,
            message=f"cache file {str(self.path)!r} {what}; it was left untouched. Move or delete "
                    f"it to start a new cache there, or point convbench elsewhere (--cache PATH or "
                    f"CONVBENCH_CACHE=PATH)")

    def unwritable(self) -> Optional[str]:
        """Why this process cannot write the cache file (None: it can, as far as can be told
        without writing: the file, or the nearest existing folder above it, is writable)."""
        target = self.path if self.path.exists() else self.path.parent
        while not target.exists() and target != target.parent:
            target = target.parent
        if target == self.path and not os.access(target, os.W_OK):
            return "the file is read-only"
        folder = self.path.parent if self.path.exists() else target
        if not os.access(folder, os.W_OK | os.X_OK):
            return (f"its folder {str(folder)!r} is read-only (SQLite writes its journal next "
                    f"to the file)")
        return None

    def write_error(self, why: str) -> CacheWriteError:
        return CacheWriteError(f"cache file {str(self.path)!r} cannot be written: {why}; it is "
                               f"unchanged. Give a writable --cache PATH (or CONVBENCH_CACHE), or "
                               f"--no-cache")

    # -- opening ----------------------------------------------------------------------------
    def connect(self, *, write: bool = False) -> sqlite3.Connection:
        """This process's connection (read-only unless ``write``), creating (to write) and
        validating the file first if needed."""
        with self.lock:
            if self._conn is not None and self.pid == os.getpid() and (self._writable or not write):
                return self._conn
            if self._conn is not None and self.pid == os.getpid():
                self._conn.close()  # a read-only connection, replaced by one that writes
            self._conn = None  # (a connection inherited through fork() must not be used)
            if write and self.unwritable():
                raise self.write_error(str(self.unwritable()))
            if not self.path.exists():
                if not self.create:
                    raise FileNotFoundError(str(self.path))
                try:
                    self._create_file()
                except (OSError, sqlite3.Error) as exc:
                    raise self.write_error(f"creating it failed: {exc}") from exc
            self._check_header()
            conn = self._open(write)
            try:
                conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
                self._version = self._validate(conn)  # older files are upgraded on the first write
                if write:
                    self._use_wal(conn)
            except CacheError:
                conn.close()
                raise
            except sqlite3.DatabaseError as exc:
                conn.close()
                raise self.fail(f"is corrupt or not a convbench cache (SQLite: {exc})") from exc
            self._conn, self._writable, self.pid = conn, write, os.getpid()
            return conn

    def _open(self, write: bool) -> sqlite3.Connection:
        """A connection to the file: read-write, or read-only (immutable where nobody can write
        the folder, so no journal files are needed)."""
        if write:
            target = str(self.path)
        else:
            target = f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode=ro"
            side = [Path(f"{self.path}-wal"), Path(f"{self.path}-shm")]
            if not os.access(self.path.parent, os.W_OK) and not all(p.exists() for p in side):
                target += "&immutable=1"
        try:
            return sqlite3.connect(target, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False, uri=not write)
        except sqlite3.Error as exc:
            raise CacheError(f"cache file {str(self.path)!r} cannot be opened: {exc}") from exc

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                _retry(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError as exc:
            raise self.write_error(f"SQLite: {exc}") from exc

    def _check_header(self) -> None:
        """Reject files that are not SQLite or are visibly truncated, before SQLite sees them."""
        try:
            size = self.path.stat().st_size
            if self.path.is_dir():
                raise CacheError(f"cache path {str(self.path)!r} is a directory; give a file path")
            with open(self.path, "rb") as fh:
                head = fh.read(100)
        except OSError as exc:
            raise CacheError(f"cache file {str(self.path)!r} cannot be read: {exc}") from exc
        if size == 0:
            raise self.fail("is empty (0 bytes; convbench never writes an empty cache, so it was "
                            "probably truncated)")
        if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
            raise self.fail("is not a convbench cache (not an SQLite database: garbage or truncated)")
        page = int.from_bytes(head[16:18], "big")
        page = 65536 if page == 1 else page
        if page < 512 or page & (page - 1):
            raise self.fail(f"has a corrupt SQLite header (page size {page})")
        wal = Path(str(self.path) + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            return  # a writer is between checkpoints: the main file may lag its header
        if size % page:
            raise self.fail(f"is truncated ({size} bytes is not a whole number of {page}-byte pages)")
        counter, valid_for = head[24:28], head[92:96]
        pages = int.from_bytes(head[28:32], "big")
        if counter == valid_for and pages and size < pages * page:
            raise self.fail(f"is truncated ({size} bytes, its header says {pages * page})")

    def _validate(self, conn: sqlite3.Connection) -> int:
        """The file's schema version, after checking it is a readable convbench cache."""
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "convbench_meta" not in tables:
            raise self.fail("is an SQLite database but not a convbench cache (no convbench_meta "
                            f"table; tables: {', '.join(sorted(tables)) or 'none'})")
        row = conn.execute("SELECT value FROM convbench_meta WHERE key = 'schema_version'").fetchone()
        try:
            version = int(row[0]) if row else None
        except (TypeError, ValueError):
            version = None
        if version is None:
            raise self.fail("has no valid schema version")
        if version > SCHEMA_VERSION:
            raise CacheFormatError(
                self.path, "schema_version", f"version {version} is newer than {SCHEMA_VERSION}",
                message=f"cache file {str(self.path)!r} has schema version {version}, written by a "
                        f"newer convbench (this one reads version {SCHEMA_VERSION}); upgrade "
                        f"convbench or use another cache (--cache PATH)")
        missing = {"entries", "history"} - tables
        if missing:
            raise self.fail(f"lacks table(s) {', '.join(sorted(missing))}")
        check = conn.execute("PRAGMA quick_check").fetchone()
        if not check or check[0] != "ok":
            raise self.fail(f"is corrupt (SQLite quick_check: {check[0] if check else 'no answer'})")
        return version

    def _create_file(self) -> None:
        """Build a new cache next to the target and move it into place (never over a file:
        when another process created one first, that one is used)."""
        from .. import __version__

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(self.path)
        try:
            conn = sqlite3.connect(str(tmp), isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                for stmt in _SCHEMA:
                    conn.execute(stmt)
                conn.executemany("INSERT INTO convbench_meta VALUES (?, ?)",
                                 [("schema_version", str(SCHEMA_VERSION)), ("created", now_iso()),
                                  ("convbench_version", __version__)])
                conn.execute("COMMIT")
            finally:
                conn.close()  # the last connection: checkpoints the WAL into the file
            move_into_place(tmp, self.path, overwrite=False)
        finally:
            for p in (str(tmp), f"{tmp}-wal", f"{tmp}-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(p)

    def _upgrade(self, conn: sqlite3.Connection) -> None:
        """Bring an older convbench cache to SCHEMA_VERSION in one transaction (entries kept);
        done on the first write, so reading never modifies a file."""
        def step() -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT value FROM convbench_meta WHERE key = 'schema_version'").fetchone()
                if int(row[0]) < 2:  # another process may have upgraded it meanwhile
                    for table in ("entries", "history"):
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN timings TEXT NOT NULL DEFAULT '{{}}'")
                    conn.execute("UPDATE convbench_meta SET value = ? WHERE key = 'schema_version'",
                                 (str(SCHEMA_VERSION),))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        _retry(step)

    # -- reading and writing ----------------------------------------------------------------
    def select_columns(self) -> str:
        """The entry columns to SELECT (a version-1 file, read before any write, has no timings)."""
        if self._version < 2:
            return ", ".join("'{}' AS timings" if c == "timings" else c for c in COLUMN_NAMES)
        return ", ".join(COLUMN_NAMES)

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        """Rows of a read-only statement; none while the file does not exist."""
        if self._conn is None and not self.path.exists():
            return []
        conn = self.connect()
        with self.lock:
            try:
                return conn.execute(sql, list(args)).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self.fail(f"could not be read (SQLite: {exc})") from exc

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction (committed unless the block raises); a failure of
        SQLite's (read-only, disk full, I/O) is a CacheWriteError and nothing is written."""
        conn = self.connect(write=True)
        with self.lock:
            try:
                if self._version < SCHEMA_VERSION:
                    self._upgrade(conn)
                    self._version = SCHEMA_VERSION
                _retry(lambda: conn.execute("BEGIN IMMEDIATE"))
            except sqlite3.OperationalError as exc:
                raise self.write_error(f"SQLite: {exc}") from exc
            try:
                yield conn
                _retry(lambda: conn.execute("COMMIT"))
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise self.write_error(f"SQLite: {exc}") from exc
                raise

    def state(self) -> tuple:
        """A cheap fingerprint of the file's contents (modification time and size of the
        database and its WAL): it changes whenever any process commits a write."""
        try:
            st = self.path.stat()
            wal = self.path.with_name(self.path.name + "-wal")
            ws = wal.stat() if wal.exists() else None
            return (st.st_mtime_ns, st.st_size, ws.st_mtime_ns if ws else 0, ws.st_size if ws else 0)
        except OSError:
            return (0, 0, 0, 0)

    def close(self) -> None:
        with self.lock:
            if self._conn is not None and self.pid == os.getpid():
                self._conn.close()
            self._conn = None
