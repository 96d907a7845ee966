"""The tuned-algorithm cache: the winning candidate per (problem, machine, threads, device).

Storage is one SQLite file (WAL mode; every update is one ``BEGIN IMMEDIATE`` transaction,
so several sweeps may write the same cache at once). Location, first match wins:

1. an explicit path (``TunedCache(path)``, ``--cache PATH`` on the command line);
2. the environment variable ``CONVBENCH_CACHE``;
3. ``platformdirs.user_cache_dir("convbench") / "tuned.sqlite"``.

Key of an entry: ``spec.key`` + a machine key + thread count + device. The machine key is
a hash of the CPU model and ISA flags (device ``cpu``) or of the GPU name and compute
capability (device ``cuda``); the thread count is part of the key for ``cpu`` entries and is
0 for ``cuda`` entries (host threads do not change which GPU kernel wins).

Each entry records the software versions it was measured under. A lookup under different
versions marks the entry *stale*: it is returned with a warning (``policy="warn"``),
returned silently (``"ignore"``) or skipped (``"skip"``), never deleted behind the user's
back. A file that is not a convbench cache (garbage, truncated, another program's SQLite
database, a newer schema) raises :class:`~convbench.errors.CacheError` and is left untouched.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fnmatch
import hashlib
import json
import math
import os
import sqlite3
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

from .errors import CacheError, ConvbenchError
from .spec import ConvSpec

SCHEMA_VERSION = 2   # 2 added entries.timings (version 1 files are upgraded in place)
EXPORT_FORMAT = "convbench-tuned-cache"
EXPORT_VERSION = 2   # 2 added the entries' timings; version 1 files are read too
POLICIES = ("warn", "skip", "ignore")
DEVICES = ("cpu", "cuda")

#: Software whose version is recorded with every entry.
VERSION_KEYS = ("torch", "cudnn", "tensorflow", "numpy", "blas", "scipy", "driver", "cuda",
                "convbench", "numba", "triton")
#: The versions that make an entry stale, per device (GPU stack only matters for cuda entries).
STALE_KEYS = {
    "cpu": ("torch", "tensorflow", "numpy", "blas", "scipy", "convbench", "numba"),
    "cuda": ("torch", "tensorflow", "numpy", "convbench", "numba", "triton", "cudnn", "cuda",
             "driver"),
}

_SQLITE_MAGIC = b"SQLite format 3\x00"
_BUSY_TIMEOUT_MS = 60_000

PathLike = Union[str, "os.PathLike[str]"]


# ---- entries and choices ------------------------------------------------------------------
@dataclass
class CacheEntry:
    """One cached decision with its provenance."""

    spec_key: str
    machine: str                 # machine key (see machine_key)
    threads: int                 # 0 for cuda entries
    device: str
    spec: dict                   # ConvSpec.to_dict()
    candidate: str               # backend:algorithm@device
    backend: str
    algorithm: str
    median_s: Optional[float]
    ci_low_s: Optional[float] = None
    ci_high_s: Optional[float] = None
    n_samples: Optional[int] = None
    runner_up: Optional[str] = None
    runner_up_median_s: Optional[float] = None
    margin: Optional[float] = None          # runner-up median / winner median - 1
    decisive: bool = False                  # winner's CI clear of the runner-up's
    tie_rule: Optional[str] = None          # the rule that broke a tie, if any
    max_error: Optional[float] = None
    run_id: Optional[str] = None
    timestamp: Optional[str] = None         # when it was measured (ISO 8601 UTC)
    env_id: Optional[str] = None
    machine_desc: str = ""
    versions: dict = field(default_factory=dict)
    previous_run_id: Optional[str] = None
    previous_candidate: Optional[str] = None
    updated: Optional[str] = None           # when it was written to this cache
    source: Optional[str] = None            # what produced it: "sweep (exhaustive)", "conv(tune)"...
    # every candidate measured on this problem in that run: candidate -> seconds per call
    # (the median for ok candidates; for candidates over the per-call limit, status timeout,
    # the verification call scaled to the batch). What the miss predictor learns from.
    timings: dict = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_ENTRY_FIELDS = [f.name for f in fields(CacheEntry)]
_JSON_FIELDS = ("spec", "versions", "timings")
_REQUIRED = {"spec_key": str, "machine": str, "threads": int, "device": str, "spec": dict,
             "candidate": str, "backend": str, "algorithm": str}
_OPTIONAL_TYPES: dict[str, tuple] = {
    "median_s": (int, float), "ci_low_s": (int, float), "ci_high_s": (int, float),
    "n_samples": (int,), "runner_up": (str,), "runner_up_median_s": (int, float),
    "margin": (int, float), "decisive": (bool,), "tie_rule": (str,), "max_error": (int, float),
    "run_id": (str,), "timestamp": (str,), "env_id": (str,), "machine_desc": (str,),
    "versions": (dict,), "previous_run_id": (str,), "previous_candidate": (str,),
    "updated": (str,), "source": (str,), "timings": (dict,),
}


@dataclass(frozen=True)
class Choice:
    """What to run for one problem on this machine, and how sure we are."""

    candidate: str
    backend: str
    algorithm: str
    device: str
    median_s: Optional[float]
    margin: Optional[float]
    stale: bool = False
    stale_reasons: tuple[str, ...] = ()
    run_id: Optional[str] = None
    decisive: bool = False
    runner_up: Optional[str] = None
    runner_up_median_s: Optional[float] = None
    tie_rule: Optional[str] = None
    threads: Optional[int] = None
    spec_key: str = ""
    timestamp: Optional[str] = None
    max_error: Optional[float] = None
    source: str = "cache"        # cache | predicted | heuristic | tuned

    @classmethod
    def from_entry(cls, e: CacheEntry, stale_reasons: Sequence[str] = (), source: str = "cache") -> "Choice":
        return cls(candidate=e.candidate, backend=e.backend, algorithm=e.algorithm, device=e.device,
                   median_s=e.median_s, margin=e.margin, stale=bool(stale_reasons),
                   stale_reasons=tuple(stale_reasons), run_id=e.run_id, decisive=bool(e.decisive),
                   runner_up=e.runner_up, runner_up_median_s=e.runner_up_median_s,
                   tie_rule=e.tie_rule, threads=e.threads, spec_key=e.spec_key,
                   timestamp=e.timestamp, max_error=e.max_error, source=source)


# ---- machine identity and software versions -----------------------------------------------
def machine_key(env: Mapping[str, Any], device: str) -> str:
    """16-hex key of the hardware that decides the winner: CPU model + ISA, or GPU name + cc."""
    parts = _machine_parts(env, device)
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _machine_parts(env: Mapping[str, Any], device: str) -> dict[str, Any]:
    if device == "cuda":
        return {"gpu_name": env.get("gpu_name"), "gpu_cc": _str_or_none(env.get("gpu_cc"))}
    isa = env.get("cpu_isa") or []
    if isinstance(isa, str):
        isa = isa.replace(",", " ").split()
    return {"cpu_model": env.get("cpu_model"), "cpu_isa": sorted(str(f) for f in isa)}


def machine_description(env: Mapping[str, Any], device: str) -> str:
    """A human-readable name for the machine key's hardware."""
    p = _machine_parts(env, device)
    if device == "cuda":
        return f"{p['gpu_name'] or 'unknown GPU'} (cc {p['gpu_cc'] or '?'})"
    isa = ",".join(p["cpu_isa"]) or "no ISA flags"
    return f"{p['cpu_model'] or 'unknown CPU'} ({isa})"


def _str_or_none(v: Any) -> Optional[str]:
    return None if v is None else str(v)


_FP_MEMO: dict[Any, dict] = {}
_FP_LOCK = threading.Lock()


def current_environment(threads: Optional[int] = None) -> dict[str, Any]:
    """This machine's fingerprint (convbench.environment), memoised per process."""
    key = threads
    with _FP_LOCK:
        if key in _FP_MEMO:
            return _FP_MEMO[key]
    from . import environment

    fp = dict(environment.fingerprint(threads))
    with _FP_LOCK:
        _FP_MEMO[key] = fp
    return fp


def default_threads() -> int:
    """The thread count a sweep uses by default: every core this process may run on."""
    from .environment import available_cores

    return available_cores()


def current_versions(device: str = "cpu") -> dict[str, Optional[str]]:
    """Versions of the software installed now, in the fingerprint's format.

    They come from :func:`convbench.environment.fingerprint` (package metadata, nvidia-smi;
    no framework is imported), read once per process.
    """
    return versions_from_environment(current_environment())


def _convbench_version() -> str:
    from . import __version__

    return __version__


def versions_from_environment(env: Mapping[str, Any]) -> dict[str, Optional[str]]:
    """The VERSION_KEYS part of a fingerprint, as strings (None where absent)."""
    return {k: _str_or_none(env.get(k)) for k in VERSION_KEYS}


def stale_reasons(recorded: Mapping[str, Any], current: Mapping[str, Any], device: str) -> list[str]:
    """Why an entry measured under ``recorded`` versions may not hold under ``current`` ones."""
    reasons = []
    for k in STALE_KEYS.get(device, STALE_KEYS["cpu"]):
        if k not in current or k not in recorded:
            continue  # unknown on one side: cannot tell
        a, b = recorded[k], current[k]
        if (a or None) != (b or None):
            reasons.append(f"{k}: {a or 'not installed'} -> {b or 'not installed'}")
    return reasons


# ---- location -----------------------------------------------------------------------------
def default_path() -> Path:
    """Where the cache lives unless a path is given: $CONVBENCH_CACHE or the user cache dir."""
    env = os.environ.get("CONVBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("convbench")) / "tuned.sqlite"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _parse_time(text: Optional[str]) -> Optional[_dt.datetime]:
    if not text:
        return None
    try:
        t = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


# ---- the cache ----------------------------------------------------------------------------
_COLUMNS = [
    ("spec_key", "TEXT NOT NULL"), ("machine", "TEXT NOT NULL"), ("threads", "INTEGER NOT NULL"),
    ("device", "TEXT NOT NULL"), ("spec", "TEXT NOT NULL"), ("candidate", "TEXT NOT NULL"),
    ("backend", "TEXT NOT NULL"), ("algorithm", "TEXT NOT NULL"), ("median_s", "REAL"),
    ("ci_low_s", "REAL"), ("ci_high_s", "REAL"), ("n_samples", "INTEGER"), ("runner_up", "TEXT"),
    ("runner_up_median_s", "REAL"), ("margin", "REAL"), ("decisive", "INTEGER NOT NULL"),
    ("tie_rule", "TEXT"), ("max_error", "REAL"), ("run_id", "TEXT"), ("timestamp", "TEXT"),
    ("env_id", "TEXT"), ("machine_desc", "TEXT NOT NULL"), ("versions", "TEXT NOT NULL"),
    ("previous_run_id", "TEXT"), ("previous_candidate", "TEXT"), ("updated", "TEXT"),
    ("source", "TEXT"), ("timings", "TEXT NOT NULL DEFAULT '{}'"),
]
assert [c for c, _ in _COLUMNS] == _ENTRY_FIELDS  # internal invariant, not user input

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS convbench_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS entries (" + ", ".join(f"{c} {t}" for c, t in _COLUMNS)
    + ", PRIMARY KEY (spec_key, machine, threads, device))",
    # every entry that was replaced, with when it was replaced
    "CREATE TABLE IF NOT EXISTS history (" + ", ".join(f"{c} {t}" for c, t in _COLUMNS)
    + ", replaced TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS history_key ON history (spec_key, machine, threads, device)",
]


class TunedCache:
    """The tuned-algorithm cache in one SQLite file.

    ``path=None`` uses :func:`default_path`. Opening an existing file validates it first and
    raises :class:`CacheError` (naming the path and what to do) when it is not a convbench
    cache; such a file is never modified. With ``create=False`` a missing file is not created:
    the cache reads as empty until something is written.
    """

    def __init__(self, path: Optional[PathLike] = None, *, create: bool = True) -> None:
        self.path = Path(path).expanduser() if path is not None else default_path()
        self._create = create
        self._conn: Optional[sqlite3.Connection] = None
        self._pid = -1
        self._version = SCHEMA_VERSION
        self._lock = threading.RLock()
        if self.path.exists():
            self._connect()

    # -- opening ----------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<TunedCache {str(self.path)!r}>"

    def _fail(self, what: str) -> CacheError:
        return CacheError(
            f"cache file {str(self.path)!r} {what}; it was left untouched. Move or delete it to "
            f"start a new cache there, or point convbench elsewhere (--cache PATH or "
            f"CONVBENCH_CACHE=PATH)")

    def _check_file(self) -> None:
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
            raise self._fail("is empty (0 bytes; convbench never writes an empty cache, so it was "
                             "probably truncated)")
        if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
            raise self._fail("is not a convbench cache (not an SQLite database: garbage or truncated)")
        page = int.from_bytes(head[16:18], "big")
        page = 65536 if page == 1 else page
        if page < 512 or page & (page - 1):
            raise self._fail(f"has a corrupt SQLite header (page size {page})")
        wal = Path(str(self.path) + "-wal")
        if not (wal.exists() and wal.stat().st_size > 0):  # no writer mid-checkpoint
            if size % page:
                raise self._fail(f"is truncated ({size} bytes is not a whole number of "
                                 f"{page}-byte pages)")
            counter, valid_for = head[24:28], head[92:96]
            pages = int.from_bytes(head[28:32], "big")
            if counter == valid_for and pages and size < pages * page:
                raise self._fail(f"is truncated ({size} bytes, its header says "
                                 f"{pages * page})")

    def _connect(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                return self._conn
            self._conn = None  # a connection inherited through fork() must not be used
            if not self.path.exists():
                if not self._create:
                    raise FileNotFoundError(str(self.path))
                self._create_file()
            self._check_file()
            try:
                conn = sqlite3.connect(str(self.path), timeout=_BUSY_TIMEOUT_MS / 1000,
                                       isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise CacheError(f"cache file {str(self.path)!r} cannot be opened: {exc}") from exc
            try:
                conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
                self._version = self._validate(conn)  # older files are upgraded on the first write
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL"))
                conn.execute("PRAGMA synchronous = NORMAL")
            except CacheError:
                conn.close()
                raise
            except sqlite3.DatabaseError as exc:
                conn.close()
                raise self._fail(f"is corrupt or not a convbench cache (SQLite: {exc})") from exc
            self._conn, self._pid = conn, os.getpid()
            return conn

    def _cols(self) -> str:
        """The entry columns to SELECT (a version-1 file, read before any write, has no timings)."""
        if self._version < 2:
            return ", ".join("'{}' AS timings" if c == "timings" else c for c in _ENTRY_FIELDS)
        return ", ".join(_ENTRY_FIELDS)

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
        self._retry(step)

    def _validate(self, conn: sqlite3.Connection) -> int:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "convbench_meta" not in tables:
            raise self._fail("is an SQLite database but not a convbench cache (no convbench_meta "
                             f"table; tables: {', '.join(sorted(tables)) or 'none'})")
        row = conn.execute("SELECT value FROM convbench_meta WHERE key = 'schema_version'").fetchone()
        try:
            version = int(row[0]) if row else None
        except (TypeError, ValueError):
            version = None
        if version is None:
            raise self._fail("has no valid schema version")
        if version > SCHEMA_VERSION:
            raise CacheError(
                f"cache file {str(self.path)!r} has schema version {version}, written by a newer "
                f"convbench (this one reads version {SCHEMA_VERSION}); upgrade convbench or use "
                f"another cache (--cache PATH)")
        missing = {"entries", "history"} - tables
        if missing:
            raise self._fail(f"lacks table(s) {', '.join(sorted(missing))}")
        check = conn.execute("PRAGMA quick_check").fetchone()
        if not check or check[0] != "ok":
            raise self._fail(f"is corrupt (SQLite quick_check: {check[0] if check else 'no answer'})")
        return version

    def _create_file(self) -> None:
        """Build a new cache next to the target and link it into place (never over a file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tuned-", suffix=".tmp", dir=str(self.path.parent))
        os.close(fd)
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                for stmt in _SCHEMA:
                    conn.execute(stmt)
                conn.executemany("INSERT INTO convbench_meta VALUES (?, ?)",
                                 [("schema_version", str(SCHEMA_VERSION)), ("created", _now()),
                                  ("convbench_version", _convbench_version())])
                conn.execute("COMMIT")
            finally:
                conn.close()
            try:
                os.link(tmp, self.path)       # atomic, fails if another process won the race
            except FileExistsError:
                pass
            except OSError:                    # no hard links here: best effort
                if not self.path.exists():
                    os.replace(tmp, self.path)
        finally:
            for p in (tmp, tmp + "-wal", tmp + "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(p)

    @staticmethod
    def _retry(fn: Any, attempts: int = 50) -> Any:
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or i == attempts - 1:
                    raise
                time.sleep(0.05 + 0.01 * i)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        with self._lock:
            if self._version < SCHEMA_VERSION:
                self._upgrade(conn)
                self._version = SCHEMA_VERSION
            self._retry(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                self._retry(lambda: conn.execute("COMMIT"))

    def _read_conn(self) -> Optional[sqlite3.Connection]:
        if self._conn is None and not self.path.exists():
            return None
        return self._connect()

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
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> "TunedCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- rows -------------------------------------------------------------------------------
    @staticmethod
    def _row(e: CacheEntry) -> tuple:
        d = e.to_json()
        for k in _JSON_FIELDS:
            d[k] = json.dumps(d[k], sort_keys=True)
        d["decisive"] = int(bool(d["decisive"]))
        return tuple(d[c] for c in _ENTRY_FIELDS)

    @staticmethod
    def _entry(row: Sequence[Any]) -> CacheEntry:
        d = dict(zip(_ENTRY_FIELDS, row))
        for k in _JSON_FIELDS:
            d[k] = json.loads(d[k]) if d[k] else {}
        d["decisive"] = bool(d["decisive"])
        return CacheEntry(**d)

    # -- writing ----------------------------------------------------------------------------
    def put(self, entry: CacheEntry, *, replace: str = "newer") -> bool:
        """Store one entry; see :meth:`put_many`. True if it was written."""
        return self.put_many([entry], replace=replace) == 1

    def put_many(self, entries: Iterable[CacheEntry], *, replace: str = "newer") -> int:
        """Store entries in one transaction; returns how many were written.

        ``replace="newer"``: an existing entry for the same key is replaced only by a
        measurement at least as recent (by ``timestamp``); ``"always"``: always replaced;
        ``"never"``: existing entries are kept. A replaced entry moves to the history table
        and its run id stays on the new entry as ``previous_run_id``. The same measurement
        again (same run, candidate, median, timestamp and timings) is not written twice.
        """
        if replace not in ("newer", "always", "never"):
            raise CacheError(f"replace: {replace!r} is not a rule; use 'newer', 'always' or 'never'")
        entries = list(entries)
        for e in entries:
            _validate_entry(e.to_json(), "entry")
        written = 0
        now = _now()
        cols = ", ".join(_ENTRY_FIELDS)
        marks = ", ".join("?" * len(_ENTRY_FIELDS))
        with self._write() as conn:
            for e in entries:
                key = (e.spec_key, e.machine, e.threads, e.device)
                row = conn.execute(f"SELECT {cols} FROM entries WHERE spec_key = ? AND machine = ? "
                                   "AND threads = ? AND device = ?", key).fetchone()
                if row is not None:
                    old = self._entry(row)
                    if replace == "never" or _same_measurement(old, e):
                        continue  # (the same run's same result again: nothing new to store)
                    if replace == "newer":
                        t_new, t_old = _parse_time(e.timestamp), _parse_time(old.timestamp)
                        if t_new is not None and t_old is not None and t_new < t_old:
                            continue
                    conn.execute(f"INSERT INTO history ({cols}, replaced) VALUES ({marks}, ?)",
                                 self._row(old) + (now,))
                    if old.run_id != e.run_id or old.candidate != e.candidate:
                        e = _copy(e, previous_run_id=old.run_id, previous_candidate=old.candidate)
                    else:
                        e = _copy(e, previous_run_id=old.previous_run_id,
                                  previous_candidate=old.previous_candidate)
                e = _copy(e, updated=now)
                conn.execute(f"INSERT OR REPLACE INTO entries ({cols}) VALUES ({marks})", self._row(e))
                written += 1
        return written

    def delete(self, entries: Iterable[CacheEntry]) -> int:
        """Remove these entries (by key) in one transaction; returns how many were removed."""
        n = 0
        with self._write() as conn:
            for e in entries:
                cur = conn.execute("DELETE FROM entries WHERE spec_key = ? AND machine = ? AND "
                                   "threads = ? AND device = ?",
                                   (e.spec_key, e.machine, e.threads, e.device))
                n += cur.rowcount
        return n

    # -- reading ----------------------------------------------------------------------------
    def entries(self, *, spec_key: Optional[str] = None, machine: Optional[str] = None,
                device: Optional[str] = None, threads: Optional[int] = None) -> list[CacheEntry]:
        """Entries matching every given field, ordered by spec key."""
        conn = self._read_conn()
        if conn is None:
            return []
        where, args = [], []
        for col, val in (("spec_key", spec_key), ("machine", machine), ("device", device),
                         ("threads", threads)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = f"SELECT {self._cols()} FROM entries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY spec_key, machine, device, threads"
        with self._lock:
            try:
                rows = conn.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._fail(f"could not be read (SQLite: {exc})") from exc
        return [self._entry(r) for r in rows]

    def history(self, spec_key: Optional[str] = None) -> list[dict[str, Any]]:
        """Replaced entries (oldest first), each with a ``replaced`` timestamp."""
        conn = self._read_conn()
        if conn is None:
            return []
        sql = f"SELECT {self._cols()}, replaced FROM history"
        args: list[Any] = []
        if spec_key is not None:
            sql += " WHERE spec_key = ?"
            args.append(spec_key)
        with self._lock:
            rows = conn.execute(sql + " ORDER BY rowid", args).fetchall()
        out = []
        for r in rows:
            d = self._entry(r[:-1]).to_json()
            d["replaced"] = r[-1]
            out.append(d)
        return out

    def __len__(self) -> int:
        conn = self._read_conn()
        if conn is None:
            return 0
        with self._lock:
            return int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])

    def get(self, spec: Union[ConvSpec, str], device: str = "cpu", *, threads: Optional[int] = None,
            machine: Optional[str] = None) -> Optional[CacheEntry]:
        """The entry for this problem on this machine (``machine=None``: the current one).

        ``threads=None`` means the default thread count; if there is no entry for it, the
        entry with the closest thread count on the same machine is returned (its ``threads``
        says which).
        """
        _check_device(device)
        key = spec.key if isinstance(spec, ConvSpec) else str(spec)
        if machine is None:
            machine = machine_key(current_environment(), device)
        cands = self.entries(spec_key=key, machine=machine, device=device)
        if not cands:
            return None
        if device == "cuda":
            return cands[0]
        if threads is not None:
            for e in cands:
                if e.threads == threads:
                    return e
            return None
        want = default_threads()
        return min(cands, key=lambda e: (abs(e.threads - want), -e.threads))

    def lookup(self, spec: ConvSpec, device: str = "cpu", *, threads: Optional[int] = None,
               policy: str = "warn") -> Optional[Choice]:
        """See :func:`lookup`."""
        if policy not in POLICIES:
            raise CacheError(f"policy: {policy!r} is not a policy; use one of {', '.join(POLICIES)}")
        e = self.get(spec, device, threads=threads)
        if e is None:
            return None
        reasons = stale_reasons(e.versions, current_versions(device), device)
        if reasons:
            if policy == "skip":
                return None
            if policy == "warn":
                warnings.warn(
                    f"convbench: the cached choice {e.candidate} for {e.spec_key} was measured "
                    f"under other software versions ({'; '.join(reasons)}); run `convbench "
                    f"cache verify` or re-sweep to refresh it", StaleCacheWarning, stacklevel=3)
        return Choice.from_entry(e, reasons)

    # -- maintenance ------------------------------------------------------------------------
    def prune(self, *, stale: bool = False, older_than_days: Optional[float] = None,
              pattern: Optional[str] = None, dry_run: bool = False) -> list[CacheEntry]:
        """Remove entries that are stale (under the current software versions; only entries
        of this machine can be judged), measured more than ``older_than_days`` ago, or whose
        spec key, candidate or problem name matches the wildcard ``pattern``. Criteria combine
        with AND; at least one is required. Returns the removed (or, dry run, matching) entries.
        """
        if not stale and older_than_days is None and pattern is None:
            raise CacheError("prune: give at least one criterion (--stale, --older-than DAYS, "
                             "--pattern GLOB)")
        if older_than_days is not None and (not isinstance(older_than_days, (int, float))
                                            or older_than_days < 0 or math.isnan(older_than_days)):
            raise CacheError(f"older_than_days: {older_than_days!r} must be a number >= 0")
        cutoff = (_dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(days=older_than_days)
                  if older_than_days is not None else None)
        here: dict[str, str] = {}
        victims = []
        for e in self.entries():
            if pattern is not None and not any(
                    fnmatch.fnmatchcase(s, pattern)
                    for s in (e.spec_key, e.candidate, str(e.spec.get("name") or ""))):
                continue
            if cutoff is not None:
                t = _parse_time(e.timestamp)
                if t is None or t >= cutoff:
                    continue
            if stale:
                if e.device not in here:
                    here[e.device] = machine_key(current_environment(), e.device)
                if e.machine != here[e.device]:
                    continue
                if not stale_reasons(e.versions, current_versions(e.device), e.device):
                    continue
            victims.append(e)
        if victims and not dry_run:
            self.delete(victims)
        return victims

    def export_json(self, path: Optional[PathLike] = None, *, entries: Optional[Sequence[CacheEntry]] = None
                    ) -> dict[str, Any]:
        """The cache (or the given entries) as a versioned JSON document; written to ``path`` if given."""
        doc = {
            "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "exported": _now(),
            "convbench_version": _convbench_version(), "source": str(self.path),
            "entries": [e.to_json() for e in (self.entries() if entries is None else entries)],
        }
        if path is not None:
            p = Path(path)
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, p)
        return doc

    def import_json(self, source: Union[PathLike, Mapping[str, Any]], *, replace: str = "newer") -> int:
        """Validate an exported document (a path or the parsed dict) and store its entries.

        Nothing is written unless every entry is valid. Returns the number written (see
        :meth:`put_many` for ``replace``).
        """
        entries = parse_export(source)
        return self.put_many(entries, replace=replace)


class StaleCacheWarning(UserWarning):
    """A cached choice was measured under other software versions than the ones installed now."""


def _same_measurement(a: CacheEntry, b: CacheEntry) -> bool:
    return (a.run_id, a.candidate, a.median_s, a.timestamp, a.timings, a.runner_up) == \
        (b.run_id, b.candidate, b.median_s, b.timestamp, b.timings, b.runner_up)


def _copy(e: CacheEntry, **changes: Any) -> CacheEntry:
    d = e.to_json()
    d.update(changes)
    return CacheEntry(**d)


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise CacheError(f"device: {device!r} is not a device; use one of {', '.join(DEVICES)}")


def _validate_entry(d: Any, where: str) -> CacheEntry:
    if not isinstance(d, dict):
        raise CacheError(f"{where}: expected an object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(_ENTRY_FIELDS))
    if unknown:
        raise CacheError(f"{where}: unknown field(s) {', '.join(unknown)}")
    for k, typ in _REQUIRED.items():
        if k not in d:
            raise CacheError(f"{where}: missing required field {k!r}")
        v = d[k]
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            raise CacheError(f"{where}: field {k!r} = {v!r} must be of type {typ.__name__}")
    for k, types in _OPTIONAL_TYPES.items():
        v = d.get(k)
        if v is None:
            continue
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
            names = "/".join(t.__name__ for t in types)
            raise CacheError(f"{where}: field {k!r} = {v!r} must be {names} or null")
        if isinstance(v, float) and not math.isfinite(v):
            raise CacheError(f"{where}: field {k!r} = {v!r} must be finite")
    if d["device"] not in DEVICES:
        raise CacheError(f"{where}: field 'device' = {d['device']!r} must be one of {', '.join(DEVICES)}")
    if d["threads"] < 0:
        raise CacheError(f"{where}: field 'threads' = {d['threads']} must be >= 0")
    for k in ("median_s", "ci_low_s", "ci_high_s", "runner_up_median_s"):
        if d.get(k) is not None and d[k] < 0:
            raise CacheError(f"{where}: field {k!r} = {d[k]!r} must be >= 0")
    try:
        spec = ConvSpec.from_dict(d["spec"])
    except ConvbenchError as exc:
        raise CacheError(f"{where}: field 'spec' is not a valid problem: {exc}") from exc
    if spec.key != d["spec_key"]:
        raise CacheError(f"{where}: spec_key {d['spec_key']!r} does not match its spec "
                         f"(whose key is {spec.key!r})")
    expect = f"{d['backend']}:{d['algorithm']}@{d['device']}"
    if d["candidate"] != expect:
        raise CacheError(f"{where}: candidate {d['candidate']!r} does not match backend, "
                         f"algorithm and device ({expect!r})")
    for cand, t in (d.get("timings") or {}).items():
        if not isinstance(cand, str) or isinstance(t, bool) or not isinstance(t, (int, float)) \
                or not math.isfinite(t) or t < 0:
            raise CacheError(f"{where}: field 'timings' maps {cand!r} to {t!r}; expected candidate "
                             f"-> seconds per call (a finite number >= 0)")
    kwargs = {k: d[k] for k in _ENTRY_FIELDS if k in d}
    for k, default in (("versions", {}), ("machine_desc", ""), ("decisive", False), ("timings", {})):
        if kwargs.get(k) is None:
            kwargs[k] = default
    return CacheEntry(**kwargs)


def parse_export(source: Union[PathLike, Mapping[str, Any]]) -> list[CacheEntry]:
    """Validate an exported cache document and return its entries; CacheError says what is wrong."""
    where = "cache export"
    if isinstance(source, Mapping):
        doc: Any = source
    else:
        where = f"cache export {str(source)!r}"
        try:
            text = Path(source).read_text()
        except OSError as exc:
            raise CacheError(f"{where} cannot be read: {exc}") from exc
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CacheError(f"{where} is not JSON ({exc}); expected a file written by "
                             f"`convbench cache export`") from exc
    if not isinstance(doc, Mapping):
        raise CacheError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != EXPORT_FORMAT:
        raise CacheError(f"{where}: 'format' is {doc.get('format')!r}, expected {EXPORT_FORMAT!r} "
                         f"(a file written by `convbench cache export`)")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CacheError(f"{where}: 'version' is {version!r}, expected an integer >= 1")
    if version > EXPORT_VERSION:
        raise CacheError(f"{where}: format version {version} is newer than this convbench reads "
                         f"({EXPORT_VERSION}); upgrade convbench")
    items = doc.get("entries")
    if not isinstance(items, list):
        raise CacheError(f"{where}: 'entries' must be a list, got {type(items).__name__}")
    return [_validate_entry(item, f"{where}: entries[{i}]") for i, item in enumerate(items)]


# ---- module-level API ---------------------------------------------------------------------
_OPEN: dict[str, TunedCache] = {}
_OPEN_LOCK = threading.Lock()


def open_cache(cache: Union[None, PathLike, TunedCache] = None, *, create: bool = True) -> TunedCache:
    """A TunedCache for ``cache`` (an instance, a path, or None for the default path)."""
    if isinstance(cache, TunedCache):
        return cache
    path = Path(cache).expanduser() if cache is not None else default_path()
    key = str(path.resolve()) if path.exists() else str(path.absolute())
    with _OPEN_LOCK:
        tc = _OPEN.get(key)
        if tc is None or tc._pid not in (-1, os.getpid()):
            tc = TunedCache(path, create=create)
            _OPEN[key] = tc
        elif create:
            tc._create = True
        return tc


def lookup(spec: ConvSpec, device: str = "cpu", *, threads: Optional[int] = None,
           policy: str = "warn", cache: Union[None, PathLike, TunedCache] = None) -> Optional[Choice]:
    """The tuned choice for ``spec`` on this machine, or None.

    ``threads``: the thread count the choice was tuned for (None: the default count, else the
    closest one cached). ``policy`` for entries measured under other software versions:
    ``"warn"`` returns them with a StaleCacheWarning, ``"skip"`` returns None, ``"ignore"``
    returns them silently; ``Choice.stale`` and ``Choice.stale_reasons`` say why either way.
    A missing cache file is an empty cache (nothing is created).
    """
    if not isinstance(spec, ConvSpec):
        raise CacheError(f"spec: expected a ConvSpec, got {type(spec).__name__}")
    _check_device(device)
    if policy not in POLICIES:
        raise CacheError(f"policy: {policy!r} is not a policy; use one of {', '.join(POLICIES)}")
    tc = open_cache(cache, create=False)
    return tc.lookup(spec, device, threads=threads, policy=policy)


# ---- from sweep results -------------------------------------------------------------------
@dataclass
class UpdateReport:
    """What update_from_run did."""

    run_id: Optional[str]
    written: int = 0
    kept_newer: int = 0      # an entry measured later was already cached
    no_winner: int = 0       # problems where nothing was ok
    duplicates: int = 0      # problems sharing a spec key with another problem of the run
    path: str = ""

    def __str__(self) -> str:
        return (f"cache {self.path}: {self.written} entr{'y' if self.written == 1 else 'ies'} "
                f"written from run {self.run_id}, {self.kept_newer} kept (newer cached), "
                f"{self.no_winner} problem(s) without a winner")


def read_run(run_dir: PathLike) -> tuple[list[dict], dict]:
    """(records, meta) of a run directory (via convbench.results when present)."""
    run = Path(run_dir)
    meta_path, rec_path = run / "meta.json", run / "records.jsonl"
    try:
        from . import results as _results

        read_records = getattr(_results, "read_records", None)
        read_meta = getattr(_results, "read_meta", None)
    except ImportError:
        read_records = read_meta = None
    if read_meta is not None and read_records is not None:
        return list(read_records(run)), dict(read_meta(run))
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CacheError(f"run directory {str(run)!r}: cannot read meta.json: {exc}") from exc
    records = []
    try:
        with open(rec_path) as fh:
            for i, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise CacheError(f"{rec_path}:{i}: not a JSON record: {exc}") from exc
    except OSError as exc:
        raise CacheError(f"run directory {str(run)!r}: cannot read records.jsonl: {exc}") from exc
    return records, meta


def entries_from_run(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], *,
                     source: Optional[str] = None) -> tuple[list[CacheEntry], int, int]:
    """Cache entries (winner per problem and device) for a run; also no-winner and duplicate counts."""
    from .selection import select_winners

    env = dict(meta.get("environment") or {})
    versions = versions_from_environment(env)
    winners = select_winners(list(records))
    timings: dict[tuple, dict[str, float]] = {}
    for r in records:
        t = _record_time(r)
        if t is not None:
            timings.setdefault((r.get("problem"), r.get("device")), {})[str(r["candidate"])] = t
    by_key: dict[tuple, CacheEntry] = {}
    problems = {(r.get("problem"), r.get("device")) for r in records}
    duplicates = 0
    for (problem, device), win in winners.items():
        cand = str(win.candidate)
        rec = next((r for r in records if r.get("problem") == problem and r.get("candidate") == cand
                    and r.get("status") == "ok"), None)
        if rec is None:
            continue
        dev = rec.get("device") or device
        threads = 0 if dev == "cuda" else int(rec.get("threads") or meta.get("threads") or default_threads())
        entry = CacheEntry(
            spec_key=rec["spec_key"], machine=machine_key(env, dev), threads=threads, device=dev,
            spec=dict(rec["spec"]), candidate=cand, backend=rec["backend"], algorithm=rec["algorithm"],
            median_s=_f(win.median_s), ci_low_s=_f(rec.get("ci_low_s")), ci_high_s=_f(rec.get("ci_high_s")),
            n_samples=_i(rec.get("n_samples")),
            runner_up=None if win.runner_up is None else str(win.runner_up),
            runner_up_median_s=_f(win.runner_up_median_s), margin=_f(win.margin),
            decisive=bool(win.decisive), tie_rule=win.tie_break_rule or None,
            max_error=_f(rec.get("max_error")), run_id=rec.get("run_id") or meta.get("run_id"),
            timestamp=rec.get("timestamp") or meta.get("created"), env_id=rec.get("env_id") or meta.get("env_id"),
            machine_desc=machine_description(env, dev), versions=dict(versions),
            source=source or f"sweep ({meta.get('strategy') or 'exhaustive'})",
            timings=timings.get((problem, device), {}))
        k = (entry.spec_key, entry.machine, entry.threads, entry.device)
        if k in by_key:
            duplicates += 1
            # the same shape under two problem names: keep the faster measured winner
            if (entry.median_s or math.inf) >= (by_key[k].median_s or math.inf):
                continue
        by_key[k] = entry
    no_winner = len(problems) - len(winners)
    return list(by_key.values()), max(no_winner, 0), duplicates


def _record_time(r: Mapping[str, Any]) -> Optional[float]:
    """Seconds per call of a record for CacheEntry.timings (None: nothing measured)."""
    if r.get("status") == "ok":
        return _f(r.get("median_s"))
    if r.get("status") == "timeout":
        return _f((r.get("info") or {}).get("verify_est_s"))
    return None


def _f(v: Any) -> Optional[float]:
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _i(v: Any) -> Optional[int]:
    return None if v is None else int(v)


def update_from_run(run_dir: PathLike, cache: Union[None, PathLike, TunedCache] = None) -> UpdateReport:
    """Store the winner per problem and device of a finished run (``results/<run_id>``).

    Newer measurements replace older entries for the same key; the replaced entry goes to
    the history table and its run id stays on the new entry.
    """
    records, meta = read_run(run_dir)
    entries, no_winner, dups = entries_from_run(records, meta)
    tc = open_cache(cache)
    written = tc.put_many(entries, replace="newer")
    return UpdateReport(run_id=meta.get("run_id"), written=written, kept_newer=len(entries) - written,
                        no_winner=no_winner, duplicates=dups, path=str(tc.path))
