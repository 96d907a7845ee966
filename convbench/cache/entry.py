"""What the tuned cache stores and returns: CacheEntry (one decision with its provenance),
Choice (what to run), their validation, and the versioned export document."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .db import COLUMN_NAMES
from ..errors import CacheError, CacheFormatError, ConvbenchError
from ..files import PathLike
from ..outcome import now_iso
from ..registry import DEVICES
from ..spec import ConvSpec

EXPORT_FORMAT = "convbench-tuned-cache"
EXPORT_VERSION = 2   # 2 added the entries' timings; version 1 files are read too

@dataclass
class CacheEntry:
    """One cached decision with its provenance."""

    spec_key: str
    machine: str                 # machine key (see convbench.environment.machine_key)
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
    # the verification call scaled to the batch; for candidates the race pruned after measuring
    # them, the lower bound it measured). What the miss predictor learns from.
    timings: dict = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def key(self) -> tuple[str, str, int, str]:
        """(spec_key, machine, threads, device): one entry per key in a cache."""
        return (self.spec_key, self.machine, self.threads, self.device)

    def replace(self, **changes: Any) -> "CacheEntry":
        """A copy with ``changes`` applied."""
        return CacheEntry(**{**self.to_json(), **changes})


ENTRY_FIELDS = tuple(f.name for f in fields(CacheEntry))
assert ENTRY_FIELDS == COLUMN_NAMES  # internal invariant: one column per field, in order
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


def to_row(e: CacheEntry) -> tuple:
    """The entry as a row of the cache file's entries table (COLUMN_NAMES order)."""
    d = e.to_json()
    for k in _JSON_FIELDS:
        d[k] = json.dumps(d[k], sort_keys=True)
    d["decisive"] = int(bool(d["decisive"]))
    return tuple(d[c] for c in ENTRY_FIELDS)


def from_row(row: Sequence[Any], where: str = "cache row") -> CacheEntry:
    """The entry a row of the entries (or history) table holds, checked like an imported one
    (CacheFormatError naming ``where``, the row's key and the column otherwise)."""
    d = dict(zip(ENTRY_FIELDS, row))
    where = f"{where}: row {d.get('spec_key')!r}"
    for k in _JSON_FIELDS:
        try:
            d[k] = json.loads(d[k]) if d[k] else {}
        except (TypeError, ValueError, RecursionError) as exc:
            raise _bad(where, k, f"column {k!r} holds {str(d[k])[:40]!r}, not a JSON object "
                                 f"({type(exc).__name__})") from None
    if d["decisive"] not in (0, 1):
        raise _bad(where, "decisive", f"column 'decisive' holds {d['decisive']!r}, not 0 or 1")
    d["decisive"] = bool(d["decisive"])
    return validate_entry(d, where)


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


# ---- validation ---------------------------------------------------------------------------
def _bad(where: str, field: Optional[str], problem: str) -> CacheFormatError:
    return CacheFormatError(where, field, problem, message=f"{where}: {problem}")


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise CacheError(f"device: {device!r} is not a device; use one of {', '.join(DEVICES)}")


def _check_types(d: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(d) - set(ENTRY_FIELDS))
    if unknown:
        raise _bad(where, None, f"unknown field(s) {', '.join(unknown)}")
    for k, typ in _REQUIRED.items():
        if k not in d:
            raise _bad(where, k, f"missing required field {k!r}")
        v = d[k]
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            raise _bad(where, k, f"field {k!r} = {v!r} must be of type {typ.__name__}")
    for k, types in _OPTIONAL_TYPES.items():
        v = d.get(k)
        if v is None:
            continue
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
            names = "/".join(t.__name__ for t in types)
            raise _bad(where, k, f"field {k!r} = {v!r} must be {names} or null")
        if isinstance(v, float) and not math.isfinite(v):
            raise _bad(where, k, f"field {k!r} = {v!r} must be finite")


def _check_values(d: Mapping[str, Any], where: str) -> None:
    if d["device"] not in DEVICES:
        raise _bad(where, "device", f"field 'device' = {d['device']!r} must be one of {', '.join(DEVICES)}")
    if d["threads"] < 0:
        raise _bad(where, "threads", f"field 'threads' = {d['threads']} must be >= 0")
    for k in ("median_s", "ci_low_s", "ci_high_s", "runner_up_median_s"):
        if d.get(k) is not None and d[k] < 0:
            raise _bad(where, k, f"field {k!r} = {d[k]!r} must be >= 0")
    try:
        spec = ConvSpec.from_dict(d["spec"])
    except ConvbenchError as exc:
        raise _bad(where, "spec", f"field 'spec' is not a valid problem: {exc}") from exc
    if spec.key != d["spec_key"]:
        raise _bad(where, "spec_key", f"spec_key {d['spec_key']!r} does not match its spec "
                         f"(whose key is {spec.key!r})")
    expect = f"{d['backend']}:{d['algorithm']}@{d['device']}"
    if d["candidate"] != expect:
        raise _bad(where, "candidate", f"candidate {d['candidate']!r} does not match backend, "
                         f"algorithm and device ({expect!r})")
    for cand, t in (d.get("timings") or {}).items():
        if not isinstance(cand, str) or isinstance(t, bool) or not isinstance(t, (int, float)) \
                or not math.isfinite(t) or t < 0:
            raise _bad(where, "timings", f"field 'timings' maps {cand!r} to {t!r}; expected candidate "
                             f"-> seconds per call (a finite number >= 0)")


def validate_entry(d: Any, where: str) -> CacheEntry:
    """The CacheEntry a JSON object describes; CacheError names ``where`` and what is wrong."""
    if not isinstance(d, dict):
        raise _bad(where, None, f"expected an object, got {type(d).__name__}")
    _check_types(d, where)
    _check_values(d, where)
    kwargs = {k: d[k] for k in ENTRY_FIELDS if k in d}
    for k, default in (("versions", {}), ("machine_desc", ""), ("decisive", False), ("timings", {})):
        if kwargs.get(k) is None:
            kwargs[k] = default
    return CacheEntry(**kwargs)


# ---- the export document ------------------------------------------------------------------
def export_document(entries: Sequence[CacheEntry], source: str) -> dict[str, Any]:
    """The versioned JSON document ``convbench cache export`` writes."""
    from .. import __version__

    return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "exported": now_iso(),
            "convbench_version": __version__, "source": source,
            "entries": [e.to_json() for e in entries]}


def _read_document(source: PathLike) -> Any:
    where = f"cache export {str(source)!r}"
    try:
        raw = Path(source).read_bytes()
    except OSError as exc:
        raise CacheError(f"{where} cannot be read: {exc.strerror or exc}") from exc
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSON, UTF-8 and nesting errors
        what = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise CacheFormatError(source, None, what, message=f"{where} is not JSON ({what}); expected "
                               f"a file written by `convbench cache export`") from None


def parse_export(source: Union[PathLike, Mapping[str, Any]]) -> list[CacheEntry]:
    """Validate an exported cache document and return its entries; CacheError says what is wrong."""
    if isinstance(source, Mapping):
        doc: Any = source
        where = "cache export"
    else:
        doc = _read_document(source)
        where = f"cache export {str(source)!r}"
    if not isinstance(doc, Mapping):
        raise _bad(where, None, f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != EXPORT_FORMAT:
        raise _bad(where, "format", f"'format' is {doc.get('format')!r}, expected "
                                    f"{EXPORT_FORMAT!r} (a file written by `convbench cache export`)")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _bad(where, "version", f"'version' is {version!r}, expected an integer >= 1")
    if version > EXPORT_VERSION:
        raise _bad(where, "version", f"format version {version} is newer than this convbench "
                                     f"reads ({EXPORT_VERSION}); upgrade convbench")
    items = doc.get("entries")
    if not isinstance(items, list):
        raise _bad(where, "entries", f"'entries' must be a list, got {type(items).__name__}")
    return [validate_entry(item, f"{where}: entries[{i}]") for i, item in enumerate(items)]
