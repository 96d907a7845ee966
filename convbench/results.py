"""Run directories, reading records back, pandas loading and exports.

A run directory ``results/<run_id>/`` holds ``meta.json`` (written atomically: a temporary
file, then ``os.replace``) and ``records.jsonl`` (one JSON object per line, per (problem,
candidate), appended, flushed and fsync'd one record at a time, so a killed writer loses at
most the record it was writing). ``run_id`` is ``YYYYMMDD-HHMMSS-<suite>-<6 hex>``. While a
process writes the run it holds the run's lock (:mod:`convbench.runlock`). Both files are
checked against the run format (:mod:`convbench.runformat`) when read; reading never
changes them.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import glob as _glob
import json
import math
import os
import re
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence, Union

from .errors import ResultsError, RunFormatError
from .files import write_atomic
from .outcome import RECORD_FIELDS, STATUSES, TIMING_FIELDS, now_iso
from .runformat import RUN_FORMAT, check_meta, check_record, duplicate_pairs
from .runlock import RunLock, lock_run

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

PathLike = Union[str, "os.PathLike[str]"]

META_FILE = "meta.json"
RECORDS_FILE = "records.jsonl"

META_FIELDS = (
    "run_id", "suite", "created", "command", "seed", "threads", "device", "budget_s", "strategy",
    "convbench_version", "environment", "env_id", "peak", "shuffle_seed", "problems",
    "candidates", "finished",
)
_SPEC_FIELDS = ("n", "c_in", "c_out", "input_size", "kernel_size", "stride", "padding",
                "dilation", "groups", "transposed", "output_padding", "dtype", "layout", "name")
_INT_COLUMNS = ("n_samples", "loops", "flops", "bytes", "threads")
_FLOAT_COLUMNS = ("max_error", "tolerance", "median_s", "iqr_s", "min_s", "mean_s", "stdev_s",
                  "ci_low_s", "ci_high_s", "gflops", "peak_pct", "wall_s")


class ResultsWarning(UserWarning):
    """Something in a results file was skipped (e.g. the truncated last line of a killed run)."""


def new_run_id(suite: str, when: Optional[_dt.datetime] = None) -> str:
    """``YYYYMMDD-HHMMSS-<suite>-<6 hex>`` (UTC; the suite name reduced to [A-Za-z0-9_.-])."""
    when = when or _dt.datetime.now(_dt.timezone.utc)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", suite or "run").strip("._") or "run"
    return f"{when.strftime('%Y%m%d-%H%M%S')}-{safe[:40]}-{secrets.token_hex(3)}"


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def dumps(obj: Any) -> str:
    """JSON text of a record or meta (numpy values converted, non-finite floats as null)."""
    return json.dumps(_finite(obj), default=_json_default, separators=(",", ":"), allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "dtype") and hasattr(obj, "tolist"):  # numpy scalar or array
        return _finite(obj.tolist())
    return obj


class RunWriter:
    """Writes one run directory: ``meta.json`` atomically, records appended one line each.

    ``RunWriter(run_dir, meta)`` starts a new run (the directory must not hold one yet);
    :meth:`reopen` continues an existing run (``--resume``) after checking what it holds and
    dropping a truncated last line. Either way the writer holds the run's lock until
    :meth:`close` (RunLockedError if another process holds it). Each :meth:`append` is flushed
    and fsync'd before it returns; a failed write (a full disk) is a ResultsError that leaves
    the run as it was before that record.
    """

    def __init__(self, run_dir: PathLike, meta: Mapping[str, Any], *, _reopen: bool = False,
                 lock: Optional[RunLock] = None) -> None:
        self.run_dir = Path(run_dir)
        self.meta = {k: v for k, v in meta.items() if k != "format"}
        self.records_path = self.run_dir / RECORDS_FILE
        self.meta_path = self.run_dir / META_FILE
        self._fh = None
        self._unfinish = _reopen and bool(self.meta.get("finished"))
        if not _reopen:
            if self.meta_path.exists() or self.records_path.exists():
                raise ResultsError(f"{self.run_dir}: already holds a run; resume it instead")
            _mkdir(self.run_dir)
        self.lock = lock if lock is not None and lock.held else lock_run(self.run_dir)
        try:
            if not _reopen:
                if self.meta_path.exists() or self.records_path.exists():
                    raise ResultsError(f"{self.run_dir}: already holds a run; resume it instead")
                self.write_meta()
            self._fh = _open_append(self.records_path)
        except BaseException:
            self.lock.release()
            if not _reopen:
                with contextlib.suppress(OSError):
                    self.run_dir.rmdir()  # only if nothing was written into it
            raise
        self.written = 0

    @classmethod
    def reopen(cls, run_dir: PathLike, *, lock: Optional[RunLock] = None) -> "RunWriter":
        """Continue an existing run: its meta is kept, new records are appended. Its files are
        checked (RunFormatError) before anything is written."""
        run_dir = Path(run_dir)
        lock = lock if lock is not None and lock.held else lock_run(run_dir)
        try:
            meta = read_meta(run_dir)
            records = run_dir / RECORDS_FILE
            if records.exists():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ResultsWarning)  # _repair_tail says it
                    read_records(records)
                _repair_tail(records)
            return cls(run_dir, meta, _reopen=True, lock=lock)
        except BaseException:
            lock.release()
            raise

    def write_meta(self) -> None:
        text = json.dumps(_finite({"format": RUN_FORMAT, **self.meta}), default=_json_default, indent=2)
        try:
            write_atomic(self.meta_path, text + "\n")
        except OSError as exc:
            raise ResultsError(f"{self.meta_path}: cannot write: {exc.strerror or exc}; the "
                               f"previous meta.json is unchanged") from exc

    def update_meta(self, **changes: Any) -> None:
        self.meta.update(changes)
        self.write_meta()

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record as one line; durable when this returns. The first record a resumed
        run gains clears its ``finished`` mark (set again when it finishes)."""
        if self._fh is None:
            raise ResultsError(f"{self.records_path}: the writer is closed")
        if self._unfinish:
            self.update_meta(finished=None)
            self._unfinish = False
        line = (dumps(record) + "\n").encode("utf-8")
        start = self._fh.tell()
        try:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            self._undo_partial(start)
            raise ResultsError(f"{self.records_path}: cannot write record {self.written + 1} of "
                               f"this sweep: {exc.strerror or exc}; the run holds every record "
                               f"before it (free space, then --resume {self.run_dir})") from exc
        self.written += 1

    def _undo_partial(self, start: int) -> None:
        """After a failed append: cut the file back to ``start`` (best effort) and stop writing."""
        fh, self._fh = self._fh, None
        try:
            fh.close()
        except OSError:
            pass
        try:
            os.truncate(self.records_path, start)
        except OSError:
            pass  # a partial last line stays; readers skip it and --resume drops it

    def finish(self) -> None:
        """Mark the run finished in meta.json."""
        self._unfinish = False
        self.update_meta(finished=now_iso())

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None
        self.lock.release()

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"{path}: cannot create the run directory: {exc.strerror or exc}") from exc


def _open_append(path: Path) -> Any:
    try:
        return open(path, "ab")
    except OSError as exc:
        raise ResultsError(f"{path}: cannot open for writing: {exc.strerror or exc}") from exc


def _repair_tail(path: Path) -> None:
    """Make ``path`` end with a newline: drop an unparsable partial last line (with a warning)."""
    if not path.exists():
        return
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        # find the start of the last line
        pos, chunk = size, 65536
        start = 0
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step)
            idx = buf.rfind(b"\n")
            if idx >= 0:
                start = pos + idx + 1
                break
        fh.seek(start)
        tail = fh.read()
        try:
            json.loads(tail.decode("utf-8"))
            fh.seek(size)
            fh.write(b"\n")  # a complete record that only lacked its newline
        except (ValueError, UnicodeDecodeError):
            warnings.warn(f"{path}: dropping a truncated last line ({len(tail)} bytes; the "
                          f"record in flight when the writer stopped)", ResultsWarning, stacklevel=3)
            fh.truncate(start)


# ---- reading -------------------------------------------------------------------------------
def _records_path(path: PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / RECORDS_FILE
    if not p.is_file():
        raise ResultsError(f"{path}: no records file (expected a run directory holding "
                           f"{RECORDS_FILE}, or the file itself)")
    return p


def _parse_json(raw: bytes) -> Any:
    """The JSON value of ``raw``; ValueError (with the reason) for anything that is not one."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_records(path: PathLike) -> list[dict[str, Any]]:
    """The records of a run directory or ``records.jsonl`` file, in file order.

    A truncated last line (a writer killed mid-record) is skipped with a ResultsWarning, as
    is a (problem, candidate) pair recorded twice (named in a ResultsWarning). Anything else
    that is not a valid record raises RunFormatError naming file, line and field.
    """
    p = _records_path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ResultsError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    lines = data.split(b"\n")
    complete = data.endswith(b"\n") or not data
    records = []
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = _parse_json(raw)
        except ValueError as exc:
            if i == len(lines) and not complete:
                warnings.warn(f"{p}:{i}: ignoring a truncated last line ({len(raw)} bytes; the "
                              f"writer was probably killed mid-record)", ResultsWarning, stacklevel=2)
                continue
            raise RunFormatError(f"{p}:{i}", None, f"corrupt record (not valid JSON: {exc})") from exc
        records.append(check_record(rec, f"{p}:{i}"))
    _warn_duplicates(p, records)
    return records


def _warn_duplicates(path: Path, records: list[dict[str, Any]]) -> None:
    dups = duplicate_pairs(records)
    if dups:
        i, (problem, candidate, _) = dups[0]
        warnings.warn(f"{path}: {len(dups)} record(s) repeat a (problem, candidate) pair recorded "
                      f"earlier (the first: record {i + 1}, {problem} {candidate}); was the run "
                      f"written by two processes at once? Tables count every record",
                      ResultsWarning, stacklevel=3)


def read_meta(run_dir: PathLike) -> dict[str, Any]:
    """The meta.json of a run directory, checked against the run format (RunFormatError naming
    the field otherwise; ResultsError if it is missing). Its ``format`` envelope is checked,
    not returned."""
    p = Path(run_dir)
    if p.is_file():
        p = p.parent
    path = p / META_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ResultsError(f"{p}: not a run directory (no {META_FILE})") from exc
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        meta = _parse_json(raw)
    except ValueError as exc:
        raise RunFormatError(path, None, f"corrupt (not valid JSON: {exc})") from exc
    check_meta(meta, str(path))
    meta.pop("format", None)
    return meta


@dataclass
class Run:
    """One run directory read back: its meta and its records."""

    path: Path
    meta: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or self.path.name)

    @property
    def finished(self) -> bool:
        return bool(self.meta.get("finished"))

    def dataframe(self) -> "pd.DataFrame":
        return load_results(self.path)


def open_run(run_dir: PathLike) -> Run:
    """Read a run directory (meta.json and records.jsonl)."""
    p = Path(run_dir)
    if not p.is_dir():
        raise ResultsError(f"{run_dir}: no such run directory")
    meta = read_meta(p)
    records = read_records(p) if (p / RECORDS_FILE).exists() else []
    return Run(p, meta, records)


def find_runs(paths: Union[PathLike, Iterable[PathLike]]) -> list[Path]:
    """Run directories behind a run directory, a records file, a results root holding runs,
    a glob pattern, or a list of those (each run once, in the order given)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise ResultsError("no results given")
    runs: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if any(ch in text for ch in "*?[") and not Path(text).exists():
            matches = sorted(_glob.glob(os.path.expanduser(text)))
            if not matches:
                raise ResultsError(f"{text}: the pattern matches no files")
        else:
            matches = [os.path.expanduser(text)]
        found = []
        for m in matches:
            p = Path(m)
            if p.is_file():
                found.append(p.parent if p.name in (RECORDS_FILE, META_FILE) else p)
            elif (p / RECORDS_FILE).is_file() or (p / META_FILE).is_file():
                found.append(p)
            elif p.is_dir():
                found.extend(sorted(q.parent for q in p.glob(f"*/{RECORDS_FILE}")))
            elif not p.exists():
                raise ResultsError(f"{m}: no such file or directory")
        if not found:
            raise ResultsError(f"{text}: holds no convbench run (no {RECORDS_FILE} found)")
        runs.extend(found)
    return list(dict.fromkeys(runs))


def _tuplify(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    return v


def _flatten(rec: Mapping[str, Any], meta: Mapping[str, Any], env_keys: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key in RECORD_FIELDS:
        if key == "spec":
            continue
        row[key] = _tuplify(rec.get(key))
    for key, value in rec.items():  # fields beyond the schema survive as columns
        if key not in row and key != "spec":
            row[key] = _tuplify(value)
    spec = rec.get("spec") or {}
    for key in _SPEC_FIELDS:
        row[f"spec_{key}"] = _tuplify(spec.get(key))
    # a run on several machines (sweep --scheduler) keeps each one's fingerprint and peaks
    mine = (meta.get("machines") or {}).get(rec.get("machine")) or {}
    env = mine.get("environment") or meta.get("environment") or {}
    row["machine"] = rec.get("machine") or rec.get("env_id") or meta.get("env_id")
    row["hostname"] = rec.get("hostname") or env.get("hostname")
    for key in env_keys:
        row[f"env_{key}"] = _tuplify(env.get(key))
    peak = mine.get("peak") or meta.get("peak") or {}
    row["peak_gemm_gflops"] = peak.get("gemm_gflops")
    row["peak_bandwidth_gbs"] = peak.get("bandwidth_gbs")
    return row


def load_results(paths: Union[PathLike, Iterable[PathLike]]) -> "pd.DataFrame":
    """Measured records as a pandas DataFrame, one row per (run, problem, candidate).

    ``paths``: a run directory, a ``records.jsonl`` file, a results root holding run
    directories, a glob pattern (``"results/*-resnet50-*"``), or a list of those.

    Columns, in order:

    * the record fields: ``run_id, problem, suite, spec_key, label, backend, algorithm,
      device, candidate, status, message, max_error, tolerance, median_s, iqr_s, min_s, mean_s,
      stdev_s, ci_low_s, ci_high_s, n_samples, loops, samples_s, gflops, peak_pct, flops, bytes,
      threads, cold_cache, timer, env_id, machine, hostname, info, timestamp, wall_s``
      (``machine``: the env_id of the machine type that measured the record, ``hostname`` its
      host; filled from the run's fingerprint for runs older than these fields; times in seconds, per
      call; timing columns are NaN/None unless ``status == "ok"``; ``samples_s`` is a tuple;
      ``info`` a dict; integer columns use pandas' nullable ``Int64``);
    * the spec flattened: ``spec_n, spec_c_in, spec_c_out, spec_input_size, spec_kernel_size,
      spec_stride, spec_padding, spec_dilation, spec_groups, spec_transposed,
      spec_output_padding, spec_dtype, spec_layout, spec_name`` (per-dimension values as
      tuples, padding as a tuple of (before, after) pairs);
    * the environment fingerprint from meta.json (of the record's machine, for a run on
      several machines), each key prefixed ``env_`` (``env_hostname, env_platform,
      env_python, env_cpu_model, env_cpu_isa, ..., env_convbench``);
    * ``peak_gemm_gflops`` and ``peak_bandwidth_gbs``, that machine's measured peaks.

    A run without meta.json loads with a warning and empty environment columns.
    """
    import pandas as pd

    from .environment import FINGERPRINT_KEYS

    rows: list[dict[str, Any]] = []
    env_keys = list(FINGERPRINT_KEYS)
    loaded = []
    for run in find_runs(paths):
        try:
            meta = read_meta(run)
        except ResultsError as exc:
            if (run / META_FILE).exists():
                raise
            warnings.warn(f"{exc}; loading its records without environment columns", ResultsWarning,
                          stacklevel=2)
            meta = {}
        records = read_records(run)
        for k in (meta.get("environment") or {}):
            if k not in env_keys:
                env_keys.append(k)
        loaded.append((meta, records))
    for meta, records in loaded:
        rows.extend(_flatten(r, meta, env_keys) for r in records)
    columns = ([k for k in RECORD_FIELDS if k != "spec"] + [f"spec_{k}" for k in _SPEC_FIELDS]
               + [f"env_{k}" for k in env_keys] + ["peak_gemm_gflops", "peak_bandwidth_gbs"])
    extra = []
    for row in rows:
        for key in row:
            if key not in columns and key not in extra:
                extra.append(key)
    df = pd.DataFrame(rows, columns=columns + extra)
    for col in _FLOAT_COLUMNS + ("peak_gemm_gflops", "peak_bandwidth_gbs"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in _INT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    return df


# ---- exports -------------------------------------------------------------------------------
def _plain_frame(df: "pd.DataFrame", *, tuples_as_json: bool) -> "pd.DataFrame":
    """Dict columns as JSON text; tuple columns as lists (parquet) or JSON text (CSV)."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype != object:
            continue
        values = out[col].tolist()
        has_dict = any(isinstance(v, dict) for v in values)
        has_seq = any(isinstance(v, (tuple, list)) for v in values)
        if has_dict or (has_seq and tuples_as_json):
            out[col] = [None if v is None or (isinstance(v, float) and math.isnan(v))
                        else json.dumps(_finite(v), default=_json_default) if isinstance(v, (dict, list, tuple))
                        else v for v in values]
        elif has_seq:
            out[col] = [_listify(v) for v in values]
    return out


def _listify(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_listify(x) for x in v]
    return v


def export(results: Union["pd.DataFrame", PathLike, Sequence[PathLike]], path: PathLike) -> Path:
    """Write results (a DataFrame or anything load_results accepts) to parquet or CSV.

    The format follows the extension: ``.parquet``/``.pq`` (lists stay lists; dict columns
    such as ``info`` become JSON text) or ``.csv`` (lists and dicts as JSON text).
    """
    import pandas as pd

    df = results if isinstance(results, pd.DataFrame) else load_results(results)
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            _plain_frame(df, tuples_as_json=False).to_parquet(out, index=False)
        except ImportError as exc:
            raise ResultsError(f"{out}: writing parquet needs pyarrow (pip install pyarrow): {exc}") from exc
    elif suffix == ".csv":
        _plain_frame(df, tuples_as_json=True).to_csv(out, index=False)
    else:
        raise ResultsError(f"{out}: unknown export format {suffix or '(no extension)'!r}; "
                           f"use .parquet, .pq or .csv (pyperf JSON: to_pyperf)")
    return out


def to_pyperf(run_dir: Union[PathLike, Sequence[PathLike]], out_json: PathLike) -> Path:
    """Write a run's ok measurements as a pyperf BenchmarkSuite JSON file.

    One benchmark per (problem, candidate), named ``"<problem> <candidate>"``, whose values
    are the per-call samples in seconds; metadata ``name``, ``unit`` ("second"), ``loops``
    (the inner loop count per sample), ``description`` (the spec's label) and the spec key.
    ``python -m pyperf compare_to a.json b.json`` compares two runs of the same suite.
    """
    try:
        import pyperf
    except ImportError as exc:
        raise ResultsError(f"pyperf export needs pyperf (pip install pyperf): {exc}") from exc

    chosen: dict[str, dict[str, Any]] = {}
    for run in find_runs(run_dir):
        for rec in read_records(run):
            if rec.get("status") != "ok":
                continue
            samples = [float(v) for v in (rec.get("samples_s") or []) if v is not None and float(v) > 0]
            if not samples:
                continue
            name = f"{rec.get('problem')} {rec.get('candidate')}"
            chosen[name] = dict(rec, samples_s=samples)  # a later record of the pair wins
    if not chosen:
        raise ResultsError(f"{run_dir}: no ok records with samples to export")
    benchmarks = []
    for name, rec in chosen.items():
        metadata: dict[str, Any] = {"name": name, "unit": "second",
                                    "loops": max(1, int(rec.get("loops") or 1))}
        if rec.get("label"):
            metadata["description"] = str(rec["label"])
        if rec.get("spec_key"):
            metadata["convbench_spec_key"] = str(rec["spec_key"])
        if rec.get("timestamp"):
            metadata["date"] = str(rec["timestamp"])
        run = pyperf.Run(rec["samples_s"], metadata=metadata, collect_metadata=False)
        benchmarks.append(pyperf.Benchmark([run]))
    out = Path(out_json)
    pyperf.BenchmarkSuite(benchmarks).dump(str(out), replace=True)
    return out


__all__ = ["RunWriter", "Run", "open_run", "read_records", "read_meta", "find_runs",
           "load_results", "export", "to_pyperf", "new_run_id", "now_iso", "ResultsWarning",
           "RECORD_FIELDS", "TIMING_FIELDS", "META_FIELDS", "STATUSES"]
