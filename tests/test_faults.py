"""The fault suite: damaged files of every kind, concurrent writers, read-only places, a full
disk, impossible options. Each case ends in a ConvbenchError (exit 2 on the command line)
that names the file, with the file left as it was, or in the right result."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import convbench as cb  # noqa: E402
from convbench import cache as C  # noqa: E402
from convbench.cli import main  # noqa: E402
from convbench.errors import (CacheError, CacheFormatError, CacheWriteError, ConvbenchError,  # noqa: E402
                              ResultsError, RunFormatError, RunLockedError, SuiteFormatError)
from convbench.results import (ResultsWarning, RunWriter, load_results, open_run, read_meta,  # noqa: E402
                               read_records)
from convbench.runformat import RUN_FORMAT  # noqa: E402
from convbench.runlock import LOCK_FILE, lock_run  # noqa: E402
from test_results import meta, record  # noqa: E402

SPEC = cb.ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3)


def make_run(root: Path, records=None, **meta_changes) -> Path:
    d = root / "run"
    with RunWriter(d, {**meta(), **meta_changes}) as w:
        for r in records if records is not None else [record(), record("p2")]:
            w.append(r)
    return d


def snapshot(*paths: Path) -> dict:
    """Contents and modification times, to show a file was left untouched."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths if p.exists()}


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` (a folder) read-only for this process: a read-only bind mount when running as
    root (root ignores permission bits), the permission bits otherwise."""
    if os.geteuid() == 0:
        res = subprocess.run(f"mount --bind '{path}' '{path}' && mount -o remount,bind,ro '{path}' '{path}'",
                             shell=True, capture_output=True, text=True)
        if res.returncode:
            subprocess.run(["umount", str(path)], capture_output=True)
            pytest.skip(f"root cannot make a read-only mount here: {res.stderr.strip()}")
        try:
            yield
        finally:
            subprocess.run(["umount", "-l", str(path)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)


@contextlib.contextmanager
def small_disk(path: Path, size: str = "96k"):
    """A tiny tmpfs at ``path`` (root only) to fill up."""
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


# ---- meta.json -----------------------------------------------------------------------------
META_FAULTS = {
    "not JSON": (b"{oops", None, "not valid JSON"),
    "not UTF-8": (b'{"run_id": "\xff\xfe"}', None, "not UTF-8"),
    "nested too deeply": (b"[" * 100000 + b"]" * 100000, None, "nested too deeply"),
    "a list": (b"[1, 2]", None, "not an object"),
    "future format": (None, {"format": "convbench-run/4"}, "version 4"),
    "foreign format": (None, {"format": "someone-else/1"}, "not a convbench run format"),
    "threads a string": (None, {"threads": "many"}, "expected int"),
    "negative seed": (None, {"seed": -1}, "must be >= 0"),
    "NaN budget": (None, {"budget_s": float("nan")}, "not a finite number"),
    "environment a list": (None, {"environment": [1]}, "expected dict"),
    "bad problem_list": (None, {"problem_list": [["p1"]]}, r"not \[name, spec, count\]"),
}


@pytest.mark.parametrize("case", sorted(META_FAULTS))
def test_damaged_meta_is_refused_naming_file_and_field(tmp_path, case):
    raw, changes, match = META_FAULTS[case]
    d = make_run(tmp_path)
    path = d / "meta.json"
    if raw is None:
        doc = {**json.loads(path.read_text()), **changes}
        raw = json.dumps(doc, allow_nan=True).encode()
    path.write_bytes(raw)
    before = snapshot(path, d / "records.jsonl")
    for read in (read_meta, open_run, load_results):
        with pytest.raises(RunFormatError, match=match) as info:
            read(d)
        assert info.value.path.endswith("meta.json")
    with pytest.raises(RunFormatError):
        RunWriter.reopen(d)  # --resume: checked before anything is written
    assert snapshot(path, d / "records.jsonl") == before
    assert not (d / LOCK_FILE).exists()


def test_meta_records_the_format_and_version_1_runs_still_read(tmp_path):
    d = make_run(tmp_path)
    assert json.loads((d / "meta.json").read_text())["format"] == RUN_FORMAT
    assert read_meta(d) == meta()                          # the envelope is not run data
    doc = json.loads((d / "meta.json").read_text())
    del doc["format"]                                      # a run written before the field
    (d / "meta.json").write_text(json.dumps(doc))
    assert read_meta(d) == meta() and len(read_records(d)) == 2


# ---- records.jsonl -------------------------------------------------------------------------
def _renamed(rec: dict) -> dict:
    """A record of an imagined future format: fields renamed."""
    return {("state" if k == "status" else k): v for k, v in rec.items()}


RECORD_FAULTS = {
    "fields renamed": (lambda r: _renamed(r), "status: missing"),
    "unknown status": (lambda r: {**r, "status": "great"}, "'great' is not a status"),
    "negative median": (lambda r: {**r, "median_s": -2e-3}, "median_s: -0.002 is not a time"),
    "NaN median": (lambda r: {**r, "median_s": float("nan")}, "median_s: nan is not a time"),
    "median a string": (lambda r: {**r, "median_s": "fast"}, "expected seconds"),
    "negative sample": (lambda r: {**r, "samples_s": [1e-3, -1.0]}, r"samples_s\[1\]"),
    "ok without median": (lambda r: {**r, "median_s": None}, "an ok record needs a median"),
    "problem a number": (lambda r: {**r, "problem": 7}, "problem: 7 is a int"),
    "negative flops": (lambda r: {**r, "flops": -5}, "flops: -5 must be >= 0"),
}


@pytest.mark.parametrize("case", sorted(RECORD_FAULTS))
def test_damaged_record_is_refused_naming_line_and_field(tmp_path, case):
    mutate, match = RECORD_FAULTS[case]
    d = make_run(tmp_path)
    path = d / "records.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = json.dumps(mutate(json.loads(lines[1])), allow_nan=True)
    path.write_text("\n".join(lines) + "\n")
    before = snapshot(path, d / "meta.json")
    with pytest.raises(RunFormatError, match=match) as info:
        load_results(d)
    assert info.value.path.endswith("records.jsonl:2")
    with pytest.raises(RunFormatError):
        RunWriter.reopen(d)
    assert snapshot(path, d / "meta.json") == before


@pytest.mark.parametrize("raw, match", [(b'{"problem": "\xff"}', "not UTF-8"),
                                        (b"[" * 100000 + b"]" * 100000, "nested too deeply")])
def test_unreadable_record_lines(tmp_path, raw, match):
    d = make_run(tmp_path)
    with open(d / "records.jsonl", "ab") as fh:
        fh.write(raw + b"\n" + json.dumps(record("p3")).encode() + b"\n")
    with pytest.raises(RunFormatError, match=rf"records.jsonl:3: corrupt record .*{match}"):
        read_records(d)


def test_duplicate_pairs_are_named(tmp_path):
    d = make_run(tmp_path, records=[record(), record("p2"), record()])
    with pytest.warns(ResultsWarning, match=r"1 record\(s\) repeat .* record 3, p1 numpy-im2col"):
        assert len(read_records(d)) == 3


def test_future_format_run_is_refused_by_report_and_resume(tmp_path, capsys):
    d = make_run(tmp_path, records=[_renamed(record())])
    doc = json.loads((d / "meta.json").read_text())
    doc["format"] = "convbench-run/4"
    (d / "meta.json").write_text(json.dumps(doc))
    before = snapshot(d / "meta.json", d / "records.jsonl")
    assert main(["report", str(d)]) == 2
    assert main(["sweep", "--resume", str(d), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert err.count("meta.json: format: version 4 ('convbench-run/4') is not one this convbench "
                     "reads (it reads convbench-run/1 to convbench-run/3)") == 2
    assert snapshot(d / "meta.json", d / "records.jsonl") == before


# ---- ownership: the run lock ---------------------------------------------------------------
def test_a_second_writer_is_refused_while_the_first_holds_the_run(tmp_path, capsys):
    d = make_run(tmp_path)
    w = RunWriter.reopen(d)
    try:
        before = snapshot(d / "meta.json", d / "records.jsonl")
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunWriter.reopen(d)
        assert main(["sweep", "--resume", str(d), "--no-cache"]) == 2
        assert "is being written by another convbench process" in capsys.readouterr().err
        assert snapshot(d / "meta.json", d / "records.jsonl") == before
    finally:
        w.close()
    assert sorted(os.listdir(d)) == ["meta.json", "records.jsonl"]  # the lock file is gone
    RunWriter.reopen(d).close()                                      # and the run is free


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    d = make_run(tmp_path)
    code = ("import sys, time; from pathlib import Path; from convbench.runlock import lock_run; "
            f"lock = lock_run(Path({str(d)!r})); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
            lock_run(d)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (d / LOCK_FILE).exists()        # left behind by the killed process ...
    lock = lock_run(d)                      # ... and taken over
    assert lock.held
    lock.release()
    assert not (d / LOCK_FILE).exists()


def test_a_resume_with_nothing_to_add_keeps_the_finished_mark(tmp_path):
    d = make_run(tmp_path, finished="2025-01-01T00:01:00Z")
    w = RunWriter.reopen(d)
    w.update_meta(resumed=["now"])
    w.close()                                        # e.g. it crashed before a new record
    assert read_meta(d)["finished"] == "2025-01-01T00:01:00Z"
    w = RunWriter.reopen(d)
    w.append(record("p3"))                           # the run changes: not finished any more
    assert read_meta(d)["finished"] is None
    w.finish()
    w.close()
    assert read_meta(d)["finished"]


# ---- read-only and full places -------------------------------------------------------------
def test_a_read_only_run_reads_and_refuses_to_be_resumed(tmp_path):
    d = make_run(tmp_path)
    before = snapshot(d / "meta.json", d / "records.jsonl")
    with read_only(d):
        assert len(load_results(d)) == 2 and open_run(d).meta == meta()
        with pytest.raises(ResultsError, match="cannot lock the run for writing"):
            RunWriter.reopen(d)
    assert snapshot(d / "meta.json", d / "records.jsonl") == before


def test_a_full_disk_while_appending_keeps_every_complete_record(tmp_path):
    d = make_run(tmp_path)
    good = (d / "records.jsonl").read_bytes()
    w = RunWriter.reopen(d)
    w._fh.close()
    os.unlink(d / "records.jsonl")
    os.symlink("/dev/full", d / "records.jsonl")   # every write: ENOSPC
    w._fh = open(d / "records.jsonl", "ab")
    with pytest.raises(ResultsError, match="cannot write record 1 of this sweep.*space"):
        w.append(record("p3"))
    w.close()
    os.unlink(d / "records.jsonl")
    (d / "records.jsonl").write_bytes(good)
    assert len(read_records(d)) == 2


def test_a_full_tmpfs_fails_cleanly_for_runs_and_cache(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        w = RunWriter(disk / "run", meta())
        with pytest.raises(ResultsError, match="No space left"):
            for i in range(10_000):
                w.append(record(f"p{i}"))
        w.close()
        with warnings_as_errors():
            recs = read_records(disk / "run")   # no partial line was left behind
        assert 0 < len(recs) < 10_000
        meta_before = (disk / "run" / "meta.json").read_bytes()
        w = RunWriter.reopen(disk / "run")
        with pytest.raises(ResultsError, match="previous meta.json is unchanged"):
            w.update_meta(note="x" * 200_000)
        w.close()
        assert (disk / "run" / "meta.json").read_bytes() == meta_before
        os.unlink(disk / "run" / "records.jsonl")
        tc = C.TunedCache(disk / "c.sqlite")
        with pytest.raises(CacheWriteError, match="c.sqlite"):
            for i in range(2_000):
                tc.put(_entry(i, blob="y" * 2000))
        n = len(tc.entries())
        tc.close()
        assert len(C.TunedCache(disk / "c.sqlite").entries()) == n > 0


@contextlib.contextmanager
def warnings_as_errors():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ---- the tuned cache -----------------------------------------------------------------------
def _entry(i: int = 0, blob: str = "") -> C.CacheEntry:
    spec = cb.ConvSpec(n=1, c_in=1 + i % 7, c_out=1 + i, input_size=(8 + i % 5, 9), kernel_size=3)
    return C.CacheEntry(
        spec_key=spec.key, machine=C.machine_key(C.current_environment(), "cpu"), threads=1,
        device="cpu", spec=spec.to_dict(), candidate="numpy-direct:einsum@cpu",
        backend="numpy-direct", algorithm="einsum", median_s=1e-3, run_id="r",
        timestamp="2030-01-01T00:00:00+00:00", versions=C.current_versions("cpu"),
        source=blob or None)


def _cache(tmp_path: Path, n: int = 2) -> Path:
    path = tmp_path / "c.sqlite"
    tc = C.TunedCache(path)
    tc.put_many([_entry(i) for i in range(n)])
    tc.close()
    return path


def test_reading_a_cache_never_changes_it_journal_mode_included(tmp_path):
    path = _cache(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")  # e.g. a copy made by another tool
    conn.close()
    before = snapshot(path)
    tc = C.TunedCache(path)
    assert len(tc.entries()) == 2 and tc.lookup(cb.ConvSpec.from_dict(_entry(0).spec), threads=1)
    tc.close()
    assert snapshot(path) == before
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_cache_in_a_read_only_folder_reads_and_refuses_writes(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = _cache(folder)
    before = snapshot(path)
    with read_only(folder):
        tc = C.TunedCache(path)
        assert len(tc.entries()) == 2                           # readable, not "corrupt"
        with pytest.raises(CacheWriteError, match="read-only"):
            tc.put(_entry(5))
        tc.close()
        assert main(["cache", "show", "--cache", str(path)]) == 0
        out = tmp_path / "runs"
        rc = main(["sweep", "--spec", "mb1ic2ih5oc2kh3", "--backends", "numpy-direct", "--threads", "1",
                   "--cache", str(path), "--out", str(out), "-q"])
        assert rc == 2 and not out.exists()                     # refused before measuring
        assert "cannot be written" in capsys.readouterr().err
        assert sorted(os.listdir(folder)) == ["c.sqlite"]       # no journal files either
    assert snapshot(path) == before


@pytest.mark.parametrize("column, value, match", [
    ("spec", "{broken", "column 'spec'"), ("timings", "[1, 2]", "'timings'"),
    ("decisive", 7, "'decisive'"), ("median_s", -1.0, "'median_s'"),
    ("versions", "[" * 100000, "column 'versions'"), ("threads", "many", "'threads'"),
])
def test_damaged_cache_cells_are_refused_naming_row_and_column(tmp_path, column, value, match):
    path = _cache(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute(f"UPDATE entries SET {column} = ? WHERE rowid = 1", (value,))
    conn.commit()
    conn.close()
    before = snapshot(path)
    with pytest.raises(CacheFormatError, match=match) as info:
        C.TunedCache(path).entries()
    assert "row" in str(info.value) and str(path) in str(info.value)
    assert snapshot(path) == before


def test_a_damaged_row_fails_its_write_but_not_the_next(tmp_path, monkeypatch):
    """One bad old entry: its problem's write fails (and says so); later problems are stored."""
    import convbench.cache as cache_pkg
    from convbench.sweeping.rundir import CacheUpdates

    path = _cache(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE entries SET timings = '[' WHERE spec_key = ?", (_entry(0).spec_key,))
    conn.commit()
    conn.close()
    up = CacheUpdates(path)
    up.open()
    # each problem's records reduced to the entry they yield
    monkeypatch.setattr(cache_pkg, "entries_from_run", lambda records, meta: ([records[0]["entry"]], 0, 0))
    for i in (0, 3, 4):
        up.store([{"problem": f"p{i}", "entry": _entry(i)}], {})
    assert up.written == 2 and len(up.errors) == 1
    assert "problem p0" in up.errors[0] and "column 'timings'" in up.errors[0]
    assert "error: the tuned cache was not updated for 1 entry" in up.report("run")
    up.tc.close()
    (stored,) = C.TunedCache(path).entries(spec_key=_entry(3).spec_key)
    assert stored.run_id == "r"


@pytest.mark.parametrize("raw, match", [(b"\xff\xfe{}", "not JSON"), (b"[" * 100000, "nested too deeply")])
def test_unreadable_cache_exports(tmp_path, raw, match):
    path = tmp_path / "x.json"
    path.write_bytes(raw)
    with pytest.raises(CacheFormatError, match=match):
        C.parse_export(path)


def test_cache_export_to_a_missing_folder(tmp_path, capsys):
    path = _cache(tmp_path)
    assert main(["cache", "export", "--cache", str(path), str(tmp_path / "no" / "x.json")]) == 2
    assert "cannot write the export to" in capsys.readouterr().err


# ---- suites and batch files ----------------------------------------------------------------
SUITE_FAULTS = {
    "not UTF-8": (b"[suite]\nname = \"\xff\"\n", "not UTF-8"),
    "nested too deeply": (b"x = " + b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    "dividing filter": (b"[[grid]]\naxes = { kernel_size = [1, 3] }\nn = 1\nc_in = 1\nc_out = 1\n"
                        b"input_size = [8, 8]\nwhere = [\"input_size / (stride - 1) > 1\"]\n",
                        "every grid point was invalid or filtered out"),  # x / 0 is NaN: fails
    "overflowing filter": (b"[[grid]]\naxes = { kernel_size = [1, 3] }\nn = 1\nc_in = 1\nc_out = 1\n"
                           b"input_size = [8, 8]\nwhere = [\"" + b"9" * 400 + b" / 3 > n\"]\n",
                           "too large"),
    "deep condition": (b"[[grid]]\naxes = { kernel_size = [1, 3] }\nn = 1\nc_in = 1\nc_out = 1\n"
                       b"input_size = [8]\nwhere = [\"" + b"(" * 5000 + b"n" + b")" * 5000 + b" > 0\"]\n",
                       "nested too deeply"),
    "a date as a size": (b"[[problem]]\nc_in = 1\nc_out = 1\ninput_size = 1979-05-27\nkernel_size = 1\n",
                         "invalid spec"),
}


@pytest.mark.parametrize("case", sorted(SUITE_FAULTS))
def test_damaged_suite_files(tmp_path, case):
    raw, match = SUITE_FAULTS[case]
    path = tmp_path / "s.toml"
    path.write_bytes(raw)
    with pytest.raises(SuiteFormatError, match=match) as info:
        cb.load_suite(path)
    assert str(path) in str(info.value)


def test_damaged_batch_files(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"mb1ic2ih5oc2kh3\n\xff\xfe\n")
    with pytest.raises(SuiteFormatError, match="not UTF-8"):
        cb.load_suite(bad)
    outer = tmp_path / "outer.txt"
    outer.write_text("--batch=bad.txt\n")
    with pytest.raises(SuiteFormatError, match=r"bad.txt: not UTF-8 .*included at .*outer.txt:1"):
        cb.load_suite(outer)


# ---- options and arguments -----------------------------------------------------------------
@pytest.mark.parametrize("flag, value, match", [
    ("--budget", "inf", "budget: inf"), ("--budget", "nan", "budget: nan"),
    ("--budget", "200", "below the timeout"), ("--seed", "-1", "seed: -1"),
    ("--max-call", "nan", "max_call: nan"), ("--threads", "1000", "threads: 1000"),
    ("--timeout", "inf", "timeout: inf"), ("--batch", "0", "n: 0"),
])
def test_impossible_options_are_refused_before_measuring(tmp_path, capsys, flag, value, match):
    out = tmp_path / "runs"
    rc = main(["sweep", "--spec", "mb1ic2ih5oc2kh3", "--backends", "numpy-direct", "--no-cache",
               "--out", str(out), flag, value])
    assert rc == 2 and not out.exists()
    assert match in capsys.readouterr().err


def test_api_arguments_are_checked():
    from convbench.sweeping.options import SweepOptions

    for kw, match in (({"rel_ci": 2}, "rel_ci: 2"), ({"verify_batch": 0}, "verify_batch: 0"),
                      ({"threads": 1.5}, "threads: 1.5"), ({"seed": True}, "seed: True"),
                      ({"max_samples": 3, "min_samples": 5}, "min_samples: 5")):
        with pytest.raises(ConvbenchError, match=match):
            SweepOptions.from_arguments(**{"threads": 1, **kw})
    with pytest.raises(CacheError, match="older_than_days"):
        C.TunedCache("/nonexistent/c.sqlite").prune(older_than_days=float("inf"))


@pytest.mark.parametrize("spec, seed, match", [
    (SPEC, -1, "seed: -1"), (SPEC, 1.5, "seed: 1.5"), (SPEC, "x", "seed: 'x'"),
    (cb.ConvSpec(n=10 ** 9, c_in=64, c_out=64, input_size=(56, 56), kernel_size=3), 0, "exceed"),
])
def test_make_inputs_refuses_impossible_arguments(spec, seed, match):
    with pytest.raises(cb.InvalidSpecError, match=match):
        cb.make_inputs(spec, seed=seed)


# ---- two real resumes at once --------------------------------------------------------------
@pytest.mark.slow
def test_concurrent_cli_resumes_write_each_pair_once(tmp_path):
    """A sweep runs; a --resume of its run started meanwhile is refused (exit 2) and the run
    ends with every pair exactly once."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE] + [p for p in sys.path if p]))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "convbench", "sweep", "--spec", "mb1ic2ih9oc2kh3", "--spec",
            "mb1ic2ih10oc2kh3", "--backends", "numpy-*", "--budget", "0.2", "--threads", "1",
            "--out", str(out), "--no-cache", "-q"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(f"*/{LOCK_FILE}")) and time.monotonic() < deadline:
            time.sleep(0.05)
        (lock,) = out.glob(f"*/{LOCK_FILE}")
        second = subprocess.run(args[:4] + ["--resume", str(lock.parent), "--no-cache", "-q"],
                                capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 2
        assert "is being written by another convbench process" in second.stderr
        assert first.wait(timeout=300) == 0
    finally:
        if first.poll() is None:
            first.kill()
    recs = read_records(lock.parent)
    pairs = [(r["problem"], r["candidate"]) for r in recs]
    assert len(pairs) == len(set(pairs))
