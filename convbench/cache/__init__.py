"""The tuned-algorithm cache: the winning candidate per (problem, machine, threads, device).

- :mod:`.store`: :class:`TunedCache`, :func:`lookup`, :func:`open_cache`, staleness.
- :mod:`.entry`: :class:`CacheEntry`, :class:`Choice`, validation and the export format.
- :mod:`.db`: the SQLite file layer (WAL, transactions, schema versions, file checks).
- :mod:`.runs`: filling the cache from sweep runs.
- :mod:`.verify`: re-timing cached choices (imports the sweep; not imported here).
"""
from __future__ import annotations

from ..environment import (current_environment, current_versions, default_threads,
                           machine_description, machine_key, versions_from_environment)
from ..files import PathLike
from ..registry import DEVICES
from .db import SCHEMA_VERSION
from .entry import EXPORT_FORMAT, EXPORT_VERSION, CacheEntry, Choice, parse_export
from .runs import UpdateReport, entries_from_run, read_run, update_from_run
from .store import (POLICIES, StaleCacheWarning, TunedCache, default_path, entry_status, lookup,
                    open_cache, stale_here, stale_reasons)

__all__ = [
    "TunedCache", "CacheEntry", "Choice", "StaleCacheWarning", "UpdateReport",
    "lookup", "open_cache", "default_path", "stale_reasons", "stale_here",
    "entry_status", "parse_export", "read_run", "entries_from_run", "update_from_run",
    "machine_key", "machine_description", "current_environment", "current_versions",
    "versions_from_environment", "default_threads", "POLICIES", "DEVICES", "EXPORT_FORMAT",
    "EXPORT_VERSION", "SCHEMA_VERSION", "PathLike",
]
