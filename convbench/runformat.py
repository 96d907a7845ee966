"""The format of a run directory's files, checked on the way in.

``meta.json`` carries ``"format": "convbench-run/<version>"`` (absent: version 1, the
format before the field existed, read the same way). A newer version is refused with the
version found and the one supported; so is any field of the wrong type or with an impossible
value (a negative time, a NaN median, an unknown status). Fields this version does not know
are kept: later minor additions (a record's machine, say) do not need a new version.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping, Optional

from .errors import RunFormatError
from .outcome import STATUSES

RUN_FORMAT_NAME = "convbench-run"
RUN_FORMAT_VERSION = 3  # 2 added the "format" field itself and the writer's lock file; 3 the "pruned" status
RUN_FORMAT = f"{RUN_FORMAT_NAME}/{RUN_FORMAT_VERSION}"

_NUM = (int, float)
#: meta.json fields this version knows -> allowed types (null is always allowed)
_META_TYPES: dict[str, tuple] = {
    "run_id": (str,), "suite": (str,), "created": (str,), "command": (list,), "seed": (int,),
    "threads": (int,), "device": (str,), "budget_s": _NUM, "strategy": (str,),
    "convbench_version": (str,), "environment": (dict,), "env_id": (str,), "peak": (dict,),
    "shuffle_seed": (int,), "problems": (int,), "candidates": (int,), "finished": (str,),
    "cold_cache": (bool,), "timeout_s": _NUM, "max_call_s": _NUM, "backends": (list,),
    "overrides": (dict,), "resumed": (list,), "load_avg_start": _NUM, "load_avg_end": _NUM,
    "suite_source": (str,), "problem_list": (list,),
}
#: meta.json integers -> their smallest valid value
_META_MIN = {"seed": 0, "threads": 1, "shuffle_seed": 0, "problems": 0, "candidates": 0}
_META_POSITIVE = ("budget_s", "timeout_s")

#: record fields this version knows -> allowed types (null is always allowed); every field
#: whose name ends in ``_s`` is a time in seconds (a number >= 0, or a list of them)
_RECORD_TYPES: dict[str, tuple] = {
    "run_id": (str,), "problem": (str,), "suite": (str,), "spec": (dict,), "spec_key": (str,),
    "label": (str,), "backend": (str,), "algorithm": (str,), "device": (str,),
    "candidate": (str,), "status": (str,), "message": (str,), "max_error": _NUM,
    "tolerance": _NUM, "n_samples": (int,), "loops": (int,), "gflops": _NUM, "peak_pct": _NUM,
    "flops": (int,), "bytes": (int,), "threads": (int,), "cold_cache": (bool,), "timer": (str,),
    "env_id": (str,), "info": (dict,), "timestamp": (str,), "round_spread": _NUM,
    "round_quartile_spread": _NUM,
}
_RECORD_REQUIRED = ("problem", "candidate", "status")
_RECORD_NONNEGATIVE = ("max_error", "tolerance", "n_samples", "loops", "gflops", "peak_pct",
                       "flops", "bytes", "threads", "round_spread", "round_quartile_spread")


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _check_type(where: str, key: str, value: Any, types: tuple) -> None:
    if value is None:
        return
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        names = "number" if types is _NUM else "/".join(t.__name__ for t in types)
        raise RunFormatError(where, key, f"{value!r} is a {_type_name(value)}, expected {names} or null")
    if isinstance(value, float) and not math.isfinite(value):
        raise RunFormatError(where, key, f"{value!r} is not a finite number")


def _check_seconds(where: str, key: str, value: Any) -> None:
    """A time field: a finite number >= 0, null, or a (nested) list of those."""
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_seconds(where, f"{key}[{i}]", v)
        return
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, _NUM):
        raise RunFormatError(where, key, f"{value!r} is a {_type_name(value)}, expected seconds "
                                         f"(a number >= 0) or null")
    if not math.isfinite(value) or value < 0:
        raise RunFormatError(where, key, f"{value!r} is not a time (a finite number of seconds >= 0)")


def format_version(meta: Mapping[str, Any], where: str) -> int:
    """The run format version ``meta`` declares (1 when it declares none); RunFormatError for
    an unknown format or a version newer than this convbench reads."""
    fmt = meta.get("format")
    if fmt is None:
        return 1
    m = re.fullmatch(rf"{RUN_FORMAT_NAME}/(\d+)", fmt) if isinstance(fmt, str) else None
    if m is None:
        raise RunFormatError(where, "format", f"{fmt!r} is not a convbench run format (expected "
                                              f"{RUN_FORMAT!r})")
    version = int(m.group(1))
    if version > RUN_FORMAT_VERSION or version < 1:
        raise RunFormatError(where, "format", f"version {version} ({fmt!r}) is not one this "
                                              f"convbench reads (it reads {RUN_FORMAT_NAME}/1 to "
                                              f"{RUN_FORMAT}); upgrade convbench to read this run")
    return version


def check_meta(meta: Any, where: str) -> int:
    """Check a parsed meta.json; returns its format version. RunFormatError names the field."""
    if not isinstance(meta, dict):
        raise RunFormatError(where, None, f"corrupt (a JSON {_type_name(meta)}, not an object)")
    version = format_version(meta, where)
    for key, types in _META_TYPES.items():
        _check_type(where, key, meta.get(key), types)
    for key, low in _META_MIN.items():
        if meta.get(key) is not None and meta[key] < low:
            raise RunFormatError(where, key, f"{meta[key]!r} must be >= {low}")
    for key in _META_POSITIVE:
        if meta.get(key) is not None and meta[key] <= 0:
            raise RunFormatError(where, key, f"{meta[key]!r} must be a number of seconds > 0")
    _check_problem_list(meta.get("problem_list"), where)
    return version


def _check_problem_list(items: Optional[list], where: str) -> None:
    for i, item in enumerate(items or []):
        shape_ok = (isinstance(item, list) and len(item) in (2, 3) and isinstance(item[0], str)
                    and isinstance(item[1], dict))
        count_ok = shape_ok and (len(item) == 2 or (isinstance(item[2], int)
                                                    and not isinstance(item[2], bool) and item[2] >= 1))
        if not count_ok:
            raise RunFormatError(where, f"problem_list[{i}]", f"{item!r} is not [name, spec, count]")


def check_record(rec: Any, where: str) -> dict:
    """Check one parsed record (``where`` names file and line); returns it."""
    if not isinstance(rec, dict):
        raise RunFormatError(where, None, f"corrupt record (a JSON {_type_name(rec)}, not an object)")
    for key in _RECORD_REQUIRED:
        if rec.get(key) is None:
            raise RunFormatError(where, key, "missing: every record names its problem, candidate and "
                                             "status (a run of another format?)")
    for key, value in rec.items():
        if key in _RECORD_TYPES:
            _check_type(where, key, value, _RECORD_TYPES[key])
        elif key.endswith("_s"):
            _check_seconds(where, key, value)
    if rec["status"] not in STATUSES:
        raise RunFormatError(where, "status", f"{rec['status']!r} is not a status; valid: "
                                              f"{', '.join(STATUSES)}")
    for key in _RECORD_NONNEGATIVE:
        if rec.get(key) is not None and rec[key] < 0:
            raise RunFormatError(where, key, f"{rec[key]!r} must be >= 0")
    if rec["status"] == "ok" and not rec.get("median_s"):
        raise RunFormatError(where, "median_s", f"{rec.get('median_s')!r}: an ok record needs a "
                                                f"median time > 0")
    return rec


def duplicate_pairs(records: list[Mapping[str, Any]]) -> list[tuple[int, Any]]:
    """(index, key) of every record whose (problem, candidate, machine) came earlier in the run."""
    seen: set = set()
    dups = []
    for i, r in enumerate(records):
        key = (r.get("problem"), r.get("candidate"), r.get("machine"))
        if key in seen:
            dups.append((i, key))
        seen.add(key)
    return dups


__all__ = ["RUN_FORMAT", "RUN_FORMAT_VERSION", "RUN_FORMAT_NAME", "format_version", "check_meta",
           "check_record", "duplicate_pairs"]
