"""The tuned-algorithm cache: the winning candidate per (problem, machine, threads, device).

Storage is one SQLite file (:mod:`convbench.cache.db`: WAL mode, one ``BEGIN IMMEDIATE``
transaction per update, so several sweeps may write the same cache at once). Location, first
match wins:

1. an explicit path (``TunedCache(path)``, ``--cache PATH`` on the command line);
2. the environment variable ``CONVBENCH_CACHE``;
3. ``platformdirs.user_cache_dir("convbench") / "tuned.sqlite"``.

Key of an entry: ``spec.key`` + a machine key + thread count + device. The machine key is
a hash of the CPU model and ISA flags (device ``cpu``) or of the GPU name and compute
capability (device ``cuda``); the thread count is part of the key for ``cpu`` entries and is
0 for ``cuda`` entries (host threads do not change which GPU kernel wins).

Each entry records the software versions it was measured under. A lookup under different
versions of the software that matters on the entry's device (the core's own and what the
backends declare, see :func:`convbench.environment.version_declarations`) marks the entry
*stale*: it is returned with a warning (``policy="warn"``), returned silently (``"ignore"``)
or skipped (``"skip"``), never deleted behind the user's back. A file that is not a
convbench cache raises :class:`~convbench.errors.CacheError` and is left untouched.

Entries and the export format live in :mod:`convbench.cache.entry`, the SQLite file layer in
:mod:`convbench.cache.db`, filling the cache from runs in :mod:`convbench.cache.runs` and
re-checking it in :mod:`convbench.cache.verify`.
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import os
import sqlite3
import threading
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from ..environment import current_environment, current_versions, default_threads, machine_key, version_keys
from ..errors import CacheError
from ..files import PathLike, write_atomic
from ..outcome import now_iso
from ..spec import ConvSpec
from .db import COLUMN_NAMES, CacheDB
from .entry import (CacheEntry, Choice, check_device, export_document, from_row, parse_export, to_row,
                    validate_entry)

POLICIES = ("warn", "skip", "ignore")
REPLACE_RULES = ("newer", "always", "never")


class StaleCacheWarning(UserWarning):
    """A cached choice was measured under other software versions than the ones installed now."""


# ---- staleness ----------------------------------------------------------------------------
def stale_reasons(recorded: Mapping[str, Any], current: Mapping[str, Any], device: str) -> list[str]:
    """Why an entry measured under ``recorded`` versions may not hold under ``current`` ones
    (only the versions that matter on ``device`` count)."""
    reasons = []
    for k in version_keys(device):
        if k not in current or k not in recorded:
            continue  # unknown on one side: cannot tell
        a, b = recorded[k], current[k]
        if (a or None) != (b or None):
            reasons.append(f"{k}: {a or 'not installed'} -> {b or 'not installed'}")
    return reasons


def stale_here(e: CacheEntry) -> Optional[list[str]]:
    """Why ``e`` may be stale under the software installed now; None when ``e`` was tuned on
    another machine (whose software cannot be judged from here)."""
    if e.machine != machine_key(current_environment(), e.device):
        return None
    return stale_reasons(e.versions, current_versions(e.device), e.device)


def entry_status(e: CacheEntry) -> str:
    """``"current"``, ``"stale: <reasons>"`` or ``"other machine"``, judged on this machine."""
    reasons = stale_here(e)
    if reasons is None:
        return "other machine"
    return "stale: " + "; ".join(reasons) if reasons else "current"


# ---- location and time --------------------------------------------------------------------
def default_path() -> Path:
    """Where the cache lives unless a path is given: $CONVBENCH_CACHE or the user cache dir."""
    env = os.environ.get("CONVBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("convbench")) / "tuned.sqlite"


def _parse_time(text: Optional[str]) -> Optional[_dt.datetime]:
    if not text:
        return None
    try:
        t = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def _same_measurement(a: CacheEntry, b: CacheEntry) -> bool:
    return (a.run_id, a.candidate, a.median_s, a.timestamp, a.timings, a.runner_up) == \
        (b.run_id, b.candidate, b.median_s, b.timestamp, b.timings, b.runner_up)


_KEY_WHERE = "spec_key = ? AND machine = ? AND threads = ? AND device = ?"


# ---- the cache ----------------------------------------------------------------------------
class TunedCache:
    """The tuned-algorithm cache in one SQLite file.

    ``path=None`` uses :func:`default_path`. Opening an existing file validates it first and
    raises :class:`CacheError` (naming the path and what to do) when it is not a convbench
    cache; such a file is never modified. With ``create=False`` a missing file is not created:
    the cache reads as empty until something is written.
    """

    def __init__(self, path: Optional[PathLike] = None, *, create: bool = True) -> None:
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.db = CacheDB(self.path, create=create)

    def __repr__(self) -> str:
        return f"<TunedCache {str(self.path)!r}>"

    def state(self) -> tuple:
        """Changes whenever any process commits a write (see CacheDB.state)."""
        return self.db.state()

    def close(self) -> None:
        self.db.close()

    def check_writable(self) -> None:
        """CacheWriteError unless this process can write the cache (checked before a sweep
        measures anything, so that its results cannot be lost to a read-only cache)."""
        why = self.db.unwritable()
        if why:
            raise self.db.write_error(why)

    def __enter__(self) -> "TunedCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

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
        if replace not in REPLACE_RULES:
            raise CacheError(f"replace: {replace!r} is not a rule; use 'newer', 'always' or 'never'")
        entries = list(entries)
        for e in entries:
            validate_entry(e.to_json(), "entry")
        now = now_iso()
        with self.db.write() as conn:
            return sum(self._store(conn, e, replace, now) for e in entries)

    def _store(self, conn: sqlite3.Connection, e: CacheEntry, replace: str, now: str) -> bool:
        cols, marks = ", ".join(COLUMN_NAMES), ", ".join("?" * len(COLUMN_NAMES))
        row = conn.execute(f"SELECT {cols} FROM entries WHERE {_KEY_WHERE}", e.key).fetchone()
        if row is not None:
            old = from_row(row, str(self.path))
            if replace == "never" or _same_measurement(old, e):
                return False  # (the same run's same result again: nothing new to store)
            if replace == "newer":
                t_new, t_old = _parse_time(e.timestamp), _parse_time(old.timestamp)
                if t_new is not None and t_old is not None and t_new < t_old:
                    return False
            conn.execute(f"INSERT INTO history ({cols}, replaced) VALUES ({marks}, ?)",
                         to_row(old) + (now,))
            if old.run_id != e.run_id or old.candidate != e.candidate:
                e = e.replace(previous_run_id=old.run_id, previous_candidate=old.candidate)
            else:
                e = e.replace(previous_run_id=old.previous_run_id,
                              previous_candidate=old.previous_candidate)
        conn.execute(f"INSERT OR REPLACE INTO entries ({cols}) VALUES ({marks})",
                     to_row(e.replace(updated=now)))
        return True

    def delete(self, entries: Iterable[CacheEntry]) -> int:
        """Remove these entries (by key) in one transaction; returns how many were removed."""
        with self.db.write() as conn:
            return sum(conn.execute(f"DELETE FROM entries WHERE {_KEY_WHERE}", e.key).rowcount
                       for e in entries)

    # -- reading ----------------------------------------------------------------------------
    def entries(self, *, spec_key: Optional[str] = None, machine: Optional[str] = None,
                device: Optional[str] = None, threads: Optional[int] = None) -> list[CacheEntry]:
        """Entries matching every given field, ordered by spec key."""
        given = [(col, val) for col, val in (("spec_key", spec_key), ("machine", machine),
                                             ("device", device), ("threads", threads))
                 if val is not None]
        sql = f"SELECT {self.db.select_columns()} FROM entries"
        if given:
            sql += " WHERE " + " AND ".join(f"{col} = ?" for col, _ in given)
        sql += " ORDER BY spec_key, machine, device, threads"
        return [from_row(r, str(self.path)) for r in self.db.query(sql, [val for _, val in given])]

    def history(self, spec_key: Optional[str] = None) -> list[dict[str, Any]]:
        """Replaced entries (oldest first), each with a ``replaced`` timestamp."""
        sql = f"SELECT {self.db.select_columns()}, replaced FROM history"
        args = [] if spec_key is None else [spec_key]
        if spec_key is not None:
            sql += " WHERE spec_key = ?"
        rows = self.db.query(sql + " ORDER BY rowid", args)
        return [{**from_row(r[:-1], f"{self.path} (history)").to_json(), "replaced": r[-1]}
                for r in rows]

    def __len__(self) -> int:
        rows = self.db.query("SELECT count(*) FROM entries")
        return int(rows[0][0]) if rows else 0

    def get(self, spec: Union[ConvSpec, str], device: str = "cpu", *, threads: Optional[int] = None,
            machine: Optional[str] = None) -> Optional[CacheEntry]:
        """The entry for this problem on this machine (``machine=None``: the current one).

        ``threads=None`` means the default thread count; if there is no entry for it, the
        entry with the closest thread count on the same machine is returned (its ``threads``
        says which).
        """
        check_device(device)
        key = spec.key if isinstance(spec, ConvSpec) else str(spec)
        if machine is None:
            machine = machine_key(current_environment(), device)
        cands = self.entries(spec_key=key, machine=machine, device=device)
        if not cands:
            return None
        if device == "cuda":
            return cands[0]
        if threads is not None:
            return next((e for e in cands if e.threads == threads), None)
        want = default_threads()
        return min(cands, key=lambda e: (abs(e.threads - want), -e.threads))

    def lookup(self, spec: ConvSpec, device: str = "cpu", *, threads: Optional[int] = None,
               policy: str = "warn") -> Optional[Choice]:
        """See :func:`lookup`."""
        _check_policy(policy)
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
                                            or isinstance(older_than_days, bool)
                                            or not 0 <= older_than_days <= 1e6):
            raise CacheError(f"older_than_days: {older_than_days!r} must be a number of days from 0 "
                             f"to 1000000")
        cutoff = (_dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(days=older_than_days)
                  if older_than_days is not None else None)

        def matches(e: CacheEntry) -> bool:
            if pattern is not None and not any(
                    fnmatch.fnmatchcase(s, pattern)
                    for s in (e.spec_key, e.candidate, str(e.spec.get("name") or ""))):
                return False
            if cutoff is not None:
                t = _parse_time(e.timestamp)
                if t is None or t >= cutoff:  # unknown age: not known to be old
                    return False
            return not stale or bool(stale_here(e))

        victims = [e for e in self.entries() if matches(e)]
        if victims and not dry_run:
            self.delete(victims)
        return victims

    def export_json(self, path: Optional[PathLike] = None, *,
                    entries: Optional[Iterable[CacheEntry]] = None) -> dict[str, Any]:
        """The cache (or the given entries) as a versioned JSON document; written to ``path`` if given."""
        doc = export_document(list(self.entries() if entries is None else entries), str(self.path))
        if path is not None:
            try:
                write_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
            except OSError as exc:
                raise CacheError(f"cannot write the export to {str(path)!r}: "
                                 f"{exc.strerror or exc}") from exc
        return doc

    def import_json(self, source: Union[PathLike, Mapping[str, Any]], *, replace: str = "newer") -> int:
        """Validate an exported document (a path or the parsed dict) and store its entries.

        Nothing is written unless every entry is valid. Returns the number written (see
        :meth:`put_many` for ``replace``).
        """
        return self.put_many(parse_export(source), replace=replace)


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise CacheError(f"policy: {policy!r} is not a policy; use one of {', '.join(POLICIES)}")


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
        if tc is None or tc.db.pid not in (-1, os.getpid()):
            tc = TunedCache(path, create=create)
            _OPEN[key] = tc
        elif create:
            tc.db.create = True
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
    check_device(device)
    _check_policy(policy)
    return open_cache(cache, create=False).lookup(spec, device, threads=threads, policy=policy)


