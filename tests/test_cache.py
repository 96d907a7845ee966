"""The tuned-algorithm cache: storage, concurrency, corruption handling, staleness, sharing."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import sqlite3
import warnings
from pathlib import Path

import pytest

import convbench as cb
from convbench import cache as C
from convbench.cache import store as _store
from convbench.cache.verify import verify
from convbench.cli import main as cli_main
from convbench.errors import CacheError

SPEC = cb.ConvSpec(n=1, c_in=8, c_out=16, input_size=(12, 12), kernel_size=3, padding=1)


def here_machine(device: str = "cpu") -> str:
    return C.machine_key(C.current_environment(), device)


def make_entry(spec: cb.ConvSpec = SPEC, *, candidate: str = "numpy-im2col:gemm@cpu",
               median: float = 1e-3, threads: int | None = None, timestamp: str = "2030-01-01T00:00:00+00:00",
               run_id: str = "run-a", versions: dict | None = None, machine: str | None = None,
               device: str = "cpu", timings: dict | None = None) -> C.CacheEntry:
    c = cb.Candidate.parse(candidate)
    return C.CacheEntry(
        spec_key=spec.key, machine=machine or here_machine(device),
        threads=C.default_threads() if threads is None else threads, device=device,
        spec=spec.to_dict(), candidate=candidate, backend=c.backend, algorithm=c.algorithm,
        median_s=median, ci_low_s=median * 0.99, ci_high_s=median * 1.01, n_samples=12,
        runner_up="numpy-direct:tensordot@cpu", runner_up_median_s=median * 2, margin=1.0,
        decisive=True, tie_rule="fastest", max_error=1e-7, run_id=run_id, timestamp=timestamp,
        versions=C.current_versions(device) if versions is None else versions,
        timings=timings or {})


def spec_i(i: int) -> cb.ConvSpec:
    return cb.ConvSpec(n=1, c_in=1 + i % 7, c_out=1 + i, input_size=(8 + i % 5, 9), kernel_size=3)


# ---- basics -------------------------------------------------------------------------------
def test_round_trip_and_lookup(tmp_path):
    path = tmp_path / "c.sqlite"
    tc = C.TunedCache(path)
    assert len(tc) == 0
    e = make_entry()
    assert tc.put(e)
    assert len(tc) == 1
    got = tc.entries()[0]
    for f in ("spec_key", "machine", "threads", "device", "spec", "candidate", "median_s",
              "runner_up", "margin", "decisive", "max_error", "run_id", "versions"):
        assert getattr(got, f) == getattr(e, f), f
    ch = cb.lookup(SPEC, cache=path)
    assert ch is not None and ch.candidate == "numpy-im2col:gemm@cpu"
    assert ch.backend == "numpy-im2col" and ch.algorithm == "gemm" and ch.median_s == 1e-3
    assert ch.margin == 1.0 and ch.stale is False and ch.run_id == "run-a"
    # another problem, another device, another machine: misses
    assert cb.lookup(SPEC.replace(c_out=17), cache=path) is None
    assert cb.lookup(SPEC, device="cuda", cache=path) is None
    tc.put(make_entry(SPEC.replace(c_out=4), machine="0" * 16))
    assert cb.lookup(SPEC.replace(c_out=4), cache=path) is None


def test_wal_mode_and_schema_version(tmp_path):
    path = tmp_path / "c.sqlite"
    C.TunedCache(path).put(make_entry())
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM convbench_meta WHERE key='schema_version'").fetchone()[0] == "2"
    con.close()
    assert path.read_bytes()[18:20] == b"\x02\x02"  # WAL is persistent in the file header


def _schema_version(path) -> str:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT value FROM convbench_meta WHERE key='schema_version'").fetchone()[0]
    finally:
        con.close()


@pytest.mark.skipif(sqlite3.sqlite_version_info < (3, 35),
                    reason="building a version-1 file needs ALTER TABLE DROP COLUMN (SQLite 3.35)")
def test_a_version_1_cache_is_read_as_is_and_upgraded_on_the_first_write(tmp_path):
    path = tmp_path / "c.sqlite"
    C.TunedCache(path).put(make_entry())
    # turn it into what convbench wrote before entries.timings existed
    con = sqlite3.connect(path)
    for table in ("entries", "history"):
        con.execute(f"ALTER TABLE {table} DROP COLUMN timings")
    con.execute("UPDATE convbench_meta SET value = '1' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    _store._OPEN.clear()
    tc = C.TunedCache(path)
    (e,) = tc.entries()
    assert e.candidate == "numpy-im2col:gemm@cpu" and e.timings == {}
    assert cb.lookup(SPEC, cache=tc).candidate == "numpy-im2col:gemm@cpu"
    assert tc.history() == []
    assert _schema_version(path) == "1"                 # reading never modifies the file
    tc.put(make_entry(run_id="run-b", timestamp="2031-01-01T00:00:00+00:00",
                      timings={"numpy-im2col:gemm@cpu": 1e-3, "numpy-fft:rfft@cpu": 3e-3}))
    (e,) = tc.entries()
    assert e.timings == {"numpy-im2col:gemm@cpu": 1e-3, "numpy-fft:rfft@cpu": 3e-3}
    assert len(tc.history()) == 1 and tc.history()[0]["timings"] == {}
    tc.close()
    assert _schema_version(path) == "2"


def test_entry_timings_are_validated(tmp_path):
    tc = C.TunedCache(tmp_path / "c.sqlite")
    for bad in ({"numpy-fft:rfft@cpu": -1.0}, {"numpy-fft:rfft@cpu": "fast"}, {"x": float("nan")}):
        with pytest.raises(CacheError, match="timings"):
            tc.put(make_entry(timings=bad))


def test_threads_lookup_rules(tmp_path):
    tc = C.TunedCache(tmp_path / "c.sqlite")
    tc.put(make_entry(threads=1, candidate="numpy-direct:einsum@cpu"))
    tc.put(make_entry(threads=64, candidate="numpy-fft:rfft@cpu"))
    assert cb.lookup(SPEC, threads=1, cache=tc).candidate == "numpy-direct:einsum@cpu"
    assert cb.lookup(SPEC, threads=64, cache=tc).candidate == "numpy-fft:rfft@cpu"
    assert cb.lookup(SPEC, threads=3, cache=tc) is None  # exact thread count asked: no fallback
    # threads=None: the default count, else the closest cached one
    want = C.default_threads()
    expect = "numpy-direct:einsum@cpu" if abs(want - 1) <= abs(want - 64) else "numpy-fft:rfft@cpu"
    assert cb.lookup(SPEC, cache=tc).candidate == expect


def test_default_path_env_and_missing_file(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "env.sqlite"
    monkeypatch.setenv("CONVBENCH_CACHE", str(target))
    assert C.default_path() == target
    assert cb.lookup(SPEC) is None          # missing file: empty, and not created by a lookup
    assert not target.exists()
    C.TunedCache().put(make_entry())
    assert target.exists() and cb.lookup(SPEC).candidate == "numpy-im2col:gemm@cpu"
    monkeypatch.delenv("CONVBENCH_CACHE")
    import platformdirs

    assert C.default_path() == Path(platformdirs.user_cache_dir("convbench")) / "tuned.sqlite"


def test_bad_arguments(tmp_path):
    with pytest.raises(CacheError, match="policy"):
        cb.lookup(SPEC, policy="sometimes", cache=tmp_path / "x.sqlite")
    with pytest.raises(CacheError, match="device"):
        cb.lookup(SPEC, device="tpu", cache=tmp_path / "x.sqlite")
    with pytest.raises(CacheError, match="replace"):
        C.TunedCache(tmp_path / "x.sqlite").put_many([], replace="maybe")


# ---- replacement and history ---------------------------------------------------------------
def test_newer_replaces_older_is_kept_with_history(tmp_path):
    tc = C.TunedCache(tmp_path / "c.sqlite")
    tc.put(make_entry(timestamp="2030-01-02T00:00:00+00:00", run_id="r2", candidate="numpy-fft:rfft@cpu"))
    # an older measurement does not replace a newer one
    assert not tc.put(make_entry(timestamp="2030-01-01T00:00:00+00:00", run_id="r1"))
    assert tc.entries()[0].run_id == "r2"
    # a newer one does, and remembers what it replaced
    assert tc.put(make_entry(timestamp="2030-01-03T00:00:00+00:00", run_id="r3"))
    e = tc.entries()[0]
    assert (e.run_id, e.candidate) == ("r3", "numpy-im2col:gemm@cpu")
    assert (e.previous_run_id, e.previous_candidate) == ("r2", "numpy-fft:rfft@cpu")
    hist = tc.history()
    assert [h["run_id"] for h in hist] == ["r2"] and hist[0]["replaced"]
    assert len(tc) == 1


# ---- two writers at once -------------------------------------------------------------------
def _writer(path: str, wid: int, n: int, start: "mp.synchronize.Event", shared: int) -> None:
    tc = C.TunedCache(path)
    start.wait(30)
    for i in range(n):
        # distinct keys per writer, plus `shared` keys that both writers write
        spec = spec_i(i if i < shared else 1000 * (wid + 1) + i)
        cand = "numpy-direct:einsum@cpu" if wid == 0 else "numpy-fft:rfft@cpu"
        tc.put(make_entry(spec, candidate=cand, median=(wid + 1) * 1e-3 + i * 1e-6, run_id=f"w{wid}-{i}",
                          machine="m" * 16, threads=1, versions={"numpy": "x"}),
               replace="always")
    tc.close()


def test_two_processes_write_at_once_nothing_lost_or_corrupt(tmp_path):
    path = str(tmp_path / "shared.sqlite")  # does not exist yet: both race to create it too
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    start = ctx.Event()
    n, shared = 200, 50
    procs = [ctx.Process(target=_writer, args=(path, w, n, start, shared)) for w in (0, 1)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    tc = C.TunedCache(path)
    entries = tc.entries()
    assert len(entries) == 2 * n - shared
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    by_key = {e.spec_key: e for e in entries}
    for wid in (0, 1):
        cand = "numpy-direct:einsum@cpu" if wid == 0 else "numpy-fft:rfft@cpu"
        for i in range(shared, n):
            e = by_key[spec_i(1000 * (wid + 1) + i).key]
            assert (e.candidate, e.run_id) == (cand, f"w{wid}-{i}")
            assert e.median_s == pytest.approx((wid + 1) * 1e-3 + i * 1e-6)
    for i in range(shared):  # both wrote it: exactly one writer's row, whole
        e = by_key[spec_i(i).key]
        wid = int(e.run_id[1])
        assert e.run_id == f"w{wid}-{i}"
        assert e.candidate == ("numpy-direct:einsum@cpu" if wid == 0 else "numpy-fft:rfft@cpu")
        assert e.median_s == pytest.approx((wid + 1) * 1e-3 + i * 1e-6)


# ---- bad files are reported, never touched --------------------------------------------------
def _real_cache_bytes(tmp_path) -> bytes:
    p = tmp_path / "real.sqlite"
    tc = C.TunedCache(p)
    tc.put_many([make_entry(spec_i(i)) for i in range(300)])
    tc.close()
    con = sqlite3.connect(p)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return p.read_bytes()


@pytest.mark.parametrize("kind", ["garbage", "text", "empty", "truncated-half", "truncated-tail",
                                  "other-sqlite", "newer-schema"])
def test_bad_cache_file_raises_and_is_left_untouched(tmp_path, kind):
    path = tmp_path / "bad.sqlite"
    if kind == "garbage":
        path.write_bytes(os.urandom(5000))
    elif kind == "text":
        path.write_text("this is not a database\n" * 100)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind.startswith("truncated"):
        data = _real_cache_bytes(tmp_path)
        assert len(data) > 8192
        path.write_bytes(data[: len(data) // 2] if kind == "truncated-half" else data[:-100])
    elif kind == "other-sqlite":
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE photos (id INTEGER, blob BLOB)")
        con.execute("INSERT INTO photos VALUES (1, x'00ff')")
        con.commit()
        con.close()
    elif kind == "newer-schema":
        C.TunedCache(path).put(make_entry())
        _store._OPEN.clear()
        con = sqlite3.connect(path)
        con.execute("UPDATE convbench_meta SET value = '99' WHERE key = 'schema_version'")
        con.commit()
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
    before = path.read_bytes()
    with pytest.raises(CacheError) as info:
        C.TunedCache(path)
    msg = str(info.value)
    assert str(path) in msg
    if kind == "newer-schema":
        assert "newer convbench" in msg and "99" in msg
    else:
        assert "left untouched" in msg and "--cache" in msg
    with pytest.raises(CacheError):
        cb.lookup(SPEC, cache=path)
    with pytest.raises(CacheError):
        C.TunedCache(path).put(make_entry())
    assert path.read_bytes() == before  # never overwritten
    # and the CLI reports it as an error, exit code 2
    assert cli_main(["cache", "show", "--cache", str(path)]) == 2
    assert path.read_bytes() == before


# ---- staleness -----------------------------------------------------------------------------
def test_stale_when_versions_differ(tmp_path, monkeypatch):
    tc = C.TunedCache(tmp_path / "c.sqlite")
    tc.put(make_entry())  # recorded under the current versions
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ch = cb.lookup(SPEC, cache=tc)
    assert ch.stale is False and ch.stale_reasons == ()

    cur = C.current_versions("cpu")
    faked = {**cur, "numpy": "0.0.1-faked"}
    monkeypatch.setattr(_store, "current_versions", lambda device="cpu": faked)
    with pytest.warns(C.StaleCacheWarning, match="numpy"):
        ch = cb.lookup(SPEC, cache=tc, policy="warn")
    assert ch.stale and any(r.startswith(f"numpy: {cur['numpy']} -> 0.0.1-faked") for r in ch.stale_reasons)
    assert cb.lookup(SPEC, cache=tc, policy="skip") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ch = cb.lookup(SPEC, cache=tc, policy="ignore")
    assert ch is not None and ch.stale
    assert len(tc) == 1  # never deleted by a lookup


def test_stale_reasons_rules():
    rec = {"torch": "2.1", "numpy": "1.26", "cudnn": "8", "tensorflow": None}
    cur = {"torch": "2.2", "numpy": "1.26", "cudnn": "9", "tensorflow": "2.15"}
    cpu = C.stale_reasons(rec, cur, "cpu")
    assert "torch: 2.1 -> 2.2" in cpu and "tensorflow: not installed -> 2.15" in cpu
    assert not any(r.startswith("cudnn") for r in cpu)  # the GPU stack does not matter on the CPU
    assert "cudnn: 8 -> 9" in C.stale_reasons(rec, cur, "cuda")
    assert C.stale_reasons({}, cur, "cpu") == []  # nothing recorded: cannot tell


# ---- export / import -----------------------------------------------------------------------
def test_export_import_round_trip(tmp_path):
    a = C.TunedCache(tmp_path / "a.sqlite")
    a.put_many([make_entry(spec_i(i), run_id=f"r{i}") for i in range(5)])
    out = tmp_path / "export.json"
    doc = a.export_json(out)
    assert doc["format"] == C.EXPORT_FORMAT and doc["version"] == C.EXPORT_VERSION
    b = C.TunedCache(tmp_path / "b.sqlite")
    assert b.import_json(out) == 5
    strip = lambda es: sorted((dict(e.to_json(), updated=None) for e in es), key=lambda d: d["spec_key"])
    assert strip(a.entries()) == strip(b.entries())
    assert b.import_json(out) == 0  # the same measurements again: nothing new, no history rows
    assert b.history() == []
    newer = [make_entry(spec_i(0), run_id="r9", timestamp="2030-01-01T00:00:00+00:00", median=5e-4)]
    assert b.put_many(newer) == 1   # same timestamp, another measurement: "newer" includes equal
    assert len(b.history()) == 1
    assert b.import_json(out, replace="never") == 0


def _doc(tmp_path) -> dict:
    tc = C.TunedCache(tmp_path / "src.sqlite")
    tc.put_many([make_entry(spec_i(i)) for i in range(3)])
    return tc.export_json()


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(format="something-else"), "'format'"),
    (lambda d: d.update(version=99), "newer"),
    (lambda d: d.update(version="1"), "'version'"),
    (lambda d: d.update(entries={}), "'entries' must be a list"),
    (lambda d: d["entries"][1].pop("candidate"), r"entries\[1\]: missing required field 'candidate'"),
    (lambda d: d["entries"][2].update(median_s="fast"), r"entries\[2\]: field 'median_s'"),
    (lambda d: d["entries"][0].update(threads=-1), "'threads'"),
    (lambda d: d["entries"][0].update(spec_key="conv2d/other"), "does not match its spec"),
    (lambda d: d["entries"][0].update(candidate="torch:default@cpu"), "does not match backend"),
    (lambda d: d["entries"][0].update(surprise=1), "unknown field"),
    (lambda d: d["entries"][0]["spec"].update(groups=5), "not a valid problem"),
    (lambda d: d["entries"][0].update(device="tpu"), "'device'"),
])
def test_import_validation_errors(tmp_path, mutate, match):
    doc = _doc(tmp_path)
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    dst = C.TunedCache(tmp_path / "dst.sqlite")
    with pytest.raises(CacheError, match=match):
        dst.import_json(path)
    assert len(dst) == 0  # all or nothing


def test_import_not_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(CacheError, match="not JSON"):
        C.parse_export(path)


# ---- prune ---------------------------------------------------------------------------------
def test_prune(tmp_path):
    tc = C.TunedCache(tmp_path / "c.sqlite")
    tc.put_many([
        make_entry(spec_i(0), timestamp="2001-01-01T00:00:00+00:00"),              # old
        make_entry(spec_i(1)),                                                     # fresh
        make_entry(spec_i(2), versions={**C.current_versions(), "numpy": "0.1"}),  # stale here
        make_entry(spec_i(3), versions={"numpy": "0.1"}, machine="f" * 16),         # other machine
    ])
    with pytest.raises(CacheError, match="criterion"):
        tc.prune()
    assert [e.spec_key for e in tc.prune(older_than_days=365, dry_run=True)] == [spec_i(0).key]
    assert len(tc) == 4
    assert [e.spec_key for e in tc.prune(stale=True)] == [spec_i(2).key]
    assert len(tc) == 3
    assert [e.spec_key for e in tc.prune(older_than_days=365)] == [spec_i(0).key]
    pat = spec_i(3).key.replace("/", "*")  # matches only that key
    assert [e.spec_key for e in tc.prune(pattern=pat)] == [spec_i(3).key]
    assert [e.spec_key for e in tc.entries()] == [spec_i(1).key]


# ---- from sweep results --------------------------------------------------------------------
def _record(run_id: str, problem: str, spec: cb.ConvSpec, cand: str, median: float, ci: float,
            status: str = "ok", ts: str = "2030-01-01T00:00:00Z") -> dict:
    c = cb.Candidate.parse(cand)
    ok = status == "ok"
    return {"run_id": run_id, "problem": problem, "suite": "t", "spec": spec.to_dict(),
            "spec_key": spec.key, "label": spec.label, "backend": c.backend, "algorithm": c.algorithm,
            "device": c.device, "candidate": cand, "status": status, "message": None,
            "max_error": 1e-7, "tolerance": 1e-4, "median_s": median if ok else None,
            "ci_low_s": median * (1 - ci) if ok else None, "ci_high_s": median * (1 + ci) if ok else None,
            "n_samples": 20 if ok else None, "threads": 2, "info": {}, "timestamp": ts, "env_id": "e"}


def _write_run(root: Path, run_id: str, records: list[dict], created: str) -> Path:
    d = root / run_id
    d.mkdir()
    meta = {"run_id": run_id, "suite": "t", "created": created, "threads": 2, "device": "cpu",
            "strategy": "exhaustive", "environment": C.current_environment(), "env_id": "e"}
    (d / "meta.json").write_text(json.dumps(meta))
    (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return d


def test_update_from_run(tmp_path):
    s1, s2 = spec_i(1), spec_i(2)
    recs = [
        _record("run1", "p1", s1, "numpy-direct:einsum@cpu", 3e-3, 0.01),
        _record("run1", "p1", s1, "numpy-im2col:gemm@cpu", 1e-3, 0.01),
        _record("run1", "p1", s1, "numpy-fft:rfft@cpu", 2e-3, 0.01),
        _record("run1", "p1", s1, "numpy-direct:tensordot@cpu", 5e-4, 0.01, status="wrong"),
        _record("run1", "p1", s1, "scipy-signal:correlate-direct@cpu", 0, 0, status="timeout"),
        _record("run1", "p2", s2, "numpy-direct:einsum@cpu", 1e-3, 0.01, status="crashed"),
    ]
    recs[4]["info"] = {"verify_est_s": 4.5}   # over the per-call limit: its estimated call time
    run1 = _write_run(tmp_path, "run1", recs, "2030-01-01T00:00:00Z")
    cpath = tmp_path / "c.sqlite"
    rep = C.update_from_run(run1, cache=cpath)
    assert (rep.written, rep.no_winner) == (1, 1)
    ch = cb.lookup(s1, threads=2, cache=cpath)
    assert ch.candidate == "numpy-im2col:gemm@cpu"          # the wrong (faster) one is never chosen
    assert ch.runner_up == "numpy-fft:rfft@cpu"
    assert ch.margin == pytest.approx(2e-3 / 1e-3 - 1)      # runner-up median / winner median - 1
    assert ch.decisive and ch.run_id == "run1" and ch.median_s == pytest.approx(1e-3)
    e = C.TunedCache(cpath).get(s1, threads=2)
    assert e.n_samples == 20 and e.max_error == 1e-7 and e.ci_low_s == pytest.approx(0.99e-3)
    assert e.source == "sweep (exhaustive)"
    # every candidate measured on the problem, for the predictor; wrong ones are left out
    assert e.timings == {"numpy-direct:einsum@cpu": 3e-3, "numpy-im2col:gemm@cpu": 1e-3,
                         "numpy-fft:rfft@cpu": 2e-3, "scipy-signal:correlate-direct@cpu": 4.5}
    assert cb.lookup(s2, threads=2, cache=cpath) is None

    # a newer run with another winner replaces it; the previous run id stays on the entry
    recs2 = [_record("run2", "p1", s1, "numpy-fft:rfft@cpu", 0.5e-3, 0.01, ts="2030-02-01T00:00:00Z"),
             _record("run2", "p1", s1, "numpy-im2col:gemm@cpu", 1e-3, 0.01, ts="2030-02-01T00:00:00Z")]
    C.update_from_run(_write_run(tmp_path, "run2", recs2, "2030-02-01T00:00:00Z"), cache=cpath)
    ch = cb.lookup(s1, threads=2, cache=cpath)
    assert (ch.candidate, ch.run_id) == ("numpy-fft:rfft@cpu", "run2")
    assert C.TunedCache(cpath).get(s1, threads=2).previous_run_id == "run1"

    # re-importing the old run does not bring the old winner back
    rep = C.update_from_run(run1, cache=cpath)
    assert rep.kept_newer == 1 and cb.lookup(s1, threads=2, cache=cpath).run_id == "run2"


# ---- CLI -----------------------------------------------------------------------------------
def test_cli_show_query_export_import_prune(tmp_path, capsys):
    src = tmp_path / "c.sqlite"
    C.TunedCache(src).put(make_entry(SPEC))
    assert cli_main(["cache", "show", "--cache", str(src)]) == 0
    out = capsys.readouterr().out
    assert "numpy-im2col:gemm@cpu" in out and "current" in out
    assert cli_main(["cache", "query", SPEC.to_benchdnn(), "--cache", str(src)]) == 0
    assert "numpy-im2col:gemm@cpu" in capsys.readouterr().out
    # a miss prints the predicted (or heuristic) choice and exits 1
    assert cli_main(["cache", "query", "mb1ic3ih9oc5kh3", "--cache", str(src)]) == 1
    assert "miss" in capsys.readouterr().out
    exp = tmp_path / "e.json"
    assert cli_main(["cache", "export", str(exp), "--cache", str(src)]) == 0
    dst = tmp_path / "d.sqlite"
    assert cli_main(["cache", "import", str(exp), "--cache", str(dst)]) == 0
    assert len(C.TunedCache(dst)) == 1
    assert cli_main(["cache", "prune", "--pattern", "*", "--cache", str(dst)]) == 0
    assert len(C.TunedCache(dst)) == 0
    assert cli_main(["cache", "prune", "--cache", str(dst)]) == 2  # no criterion: an error


# ---- status and verify (the API under `convbench cache show/verify`) -------------------------
def test_entry_status(tmp_path):
    assert C.entry_status(make_entry()) == "current"
    stale = make_entry(versions={**C.current_versions(), "numpy": "0.0.1-old"})
    assert C.entry_status(stale).startswith("stale: numpy: 0.0.1-old -> ")
    assert C.entry_status(make_entry(machine="f" * 16, versions={"numpy": "0"})) == "other machine"
    assert C.stale_here(make_entry(machine="f" * 16)) is None


def test_verify_re_times_this_machines_entries(tmp_path):
    path = tmp_path / "c.sqlite"
    with pytest.raises(CacheError, match="sample"):
        verify(path, sample=-1)
    empty = verify(path)
    assert (empty.available, empty.rows) == (0, []) and not path.exists()
    spec = cb.ConvSpec(n=1, c_in=2, c_out=3, input_size=(6, 6), kernel_size=3, name="tiny")
    C.TunedCache(path).put_many([
        make_entry(spec, candidate="numpy-direct:einsum@cpu", threads=1,
                   timestamp="2001-01-01T00:00:00+00:00"),
        make_entry(spec_i(5), machine="f" * 16, threads=1),           # another machine: not re-timed
    ])
    logged: list[str] = []
    rep = verify(path, sample=0, budget_s=0.05, backends=["numpy-direct", "numpy-im2col"],
                   out=tmp_path / "runs", update=True, log=logged.append)
    assert rep.available == 1 and len(rep.rows) == 1 and logged
    (row,) = rep.rows
    assert row.entry.candidate == "numpy-direct:einsum@cpu"
    assert row.winner_now.startswith(("numpy-direct:", "numpy-im2col:"))
    assert row.fastest_now_s > 0 and row.cached_now_s >= row.fastest_now_s
    assert row.regret == pytest.approx(row.cached_now_s / row.fastest_now_s) and row.regret >= 1
    assert row.verdict in ("same winner", "CHANGED") or row.verdict.startswith("tie with ")
    assert rep.changed == (row.verdict == "CHANGED") and rep.regrets == [row.regret]
    assert len(rep.run_dirs) == 1 and Path(rep.run_dirs[0]).is_dir()
    assert len(rep.updates) == 1 and rep.updates[0].written == 1
    assert C.TunedCache(path).get(spec, threads=1).candidate == row.winner_now
