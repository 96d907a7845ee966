"""Run directories: writer/reader, crash tolerance, pandas loading, parquet/CSV/pyperf exports."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from convbench import ConvSpec
from convbench.errors import ResultsError
from convbench.results import (RECORD_FIELDS, ResultsWarning, RunWriter, export, find_runs,
                               load_results, new_run_id, open_run, read_records, to_pyperf)

SPEC = ConvSpec(n=1, c_in=2, c_out=4, input_size=(8, 8), kernel_size=3, padding=1, name="p1")
ENV = {"hostname": "h", "platform": "Linux", "python": "CPython 3.11", "cpu_model": "Test CPU",
       "cpu_isa": ["avx2", "fma"], "cpu_cores_logical": 2, "cpu_cores_physical": 1, "threads": 2,
       "gpu_name": None, "gpu_cc": None, "driver": None, "cuda": None, "cudnn": None,
       "numpy": "2.0", "blas": "openblas", "scipy": "1.14", "torch": None, "tensorflow": None,
       "numba": None, "triton": None, "convbench": "0.1.0"}


def meta(run_id: str = "20250101-000000-t-abcdef", gemm: float = 100.0) -> dict:
    return {"run_id": run_id, "suite": "t", "created": "2025-01-01T00:00:00Z", "command": ["x"],
            "seed": 0, "threads": 2, "device": "cpu", "budget_s": 0.1, "strategy": "exhaustive",
            "convbench_version": "0.1.0", "environment": dict(ENV), "env_id": "0123456789abcdef",
            "peak": {"gemm_gflops": gemm, "gemm_dtype": "float32", "bandwidth_gbs": 10.0},
            "shuffle_seed": 1, "problems": 2, "candidates": 2, "finished": None}


def record(problem: str = "p1", candidate: str = "numpy-im2col:gemm@cpu", status: str = "ok",
           samples=(2e-3, 1e-3, 3e-3), run_id: str = "20250101-000000-t-abcdef") -> dict:
    backend, rest = candidate.split(":")
    algorithm, device = rest.split("@")
    ok = status == "ok"
    srt = sorted(samples)
    med = srt[len(srt) // 2]
    rec = {"run_id": run_id, "problem": problem, "suite": "t", "spec": SPEC.to_dict(),
           "spec_key": SPEC.key, "label": SPEC.label, "backend": backend, "algorithm": algorithm,
           "device": device, "candidate": candidate, "status": status,
           "message": None if ok else "boom", "max_error": 1e-7 if ok else None, "tolerance": 1e-4,
           "median_s": med if ok else None, "iqr_s": 1e-3 if ok else None,
           "min_s": srt[0] if ok else None, "mean_s": sum(srt) / len(srt) if ok else None,
           "stdev_s": 1e-3 if ok else None, "ci_low_s": srt[0] if ok else None,
           "ci_high_s": srt[-1] if ok else None, "n_samples": len(srt) if ok else None,
           "loops": 4 if ok else None, "samples_s": list(samples) if ok else None,
           "gflops": SPEC.flops / med / 1e9 if ok else None, "peak_pct": None, "flops": SPEC.flops,
           "bytes": SPEC.bytes, "threads": 2, "cold_cache": False, "timer": "perf_counter",
           "env_id": "0123456789abcdef", "info": {"threads": 2, "versions": {"numpy": "2.0"}},
           "timestamp": "2025-01-01T00:00:01Z", "wall_s": 0.5}
    return rec


def make_run(root, name="run1", records=None, **kw):
    d = root / name
    with RunWriter(d, meta(**kw)) as w:
        for r in records if records is not None else [record(), record("p2", "numpy-direct:einsum@cpu"),
                                                      record("p2", "torch:default@cpu", "crashed")]:
            w.append(r)
    return d


# ---- writing and reading ---------------------------------------------------------------------
def test_run_id_format():
    rid = new_run_id("resnet 50/x")
    date, time_, *mid, hexpart = rid.split("-")
    assert len(date) == 8 and len(time_) == 6 and date.isdigit() and time_.isdigit()
    assert "-".join(mid) == "resnet_50_x" and len(hexpart) == 6 and int(hexpart, 16) >= 0


def test_writer_reader_roundtrip(tmp_path):
    recs = [record(), record("p2", "numpy-direct:einsum@cpu")]
    d = make_run(tmp_path, records=recs)
    assert sorted(os.listdir(d)) == ["meta.json", "records.jsonl"]  # no temporary files left
    run = open_run(d)
    assert run.meta == meta() and run.records == recs and run.run_id == meta()["run_id"]
    lines = (d / "records.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)


def test_writer_refuses_existing_run_and_finish_marks_meta(tmp_path):
    d = make_run(tmp_path)
    with pytest.raises(ResultsError, match="already holds a run"):
        RunWriter(d, meta())
    w = RunWriter.reopen(d)
    w.finish()
    w.close()
    assert open_run(d).meta["finished"].endswith("Z")


def test_non_finite_and_numpy_values_are_written_as_json(tmp_path):
    np = pytest.importorskip("numpy")
    rec = record()
    rec["info"] = {"x": np.float32(1.5), "arr": np.arange(3), "nan": float("nan")}
    d = make_run(tmp_path, records=[rec])
    back = read_records(d)[0]["info"]
    assert back == {"x": 1.5, "arr": [0, 1, 2], "nan": None}


def test_truncated_last_line_is_ignored_with_a_warning(tmp_path):
    d = make_run(tmp_path)
    with open(d / "records.jsonl", "a") as fh:
        fh.write(json.dumps(record("p3"))[:57])  # a writer killed mid-record
    with pytest.warns(ResultsWarning, match=r"records.jsonl:4: ignoring a truncated last line"):
        recs = read_records(d)
    assert [r["problem"] for r in recs] == ["p1", "p2", "p2"]
    # resuming drops the partial line so the next record starts on its own line
    with pytest.warns(ResultsWarning, match="dropping a truncated last line"):
        w = RunWriter.reopen(d)
    w.append(record("p3"))
    w.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r["problem"] for r in read_records(d)] == ["p1", "p2", "p2", "p3"]


def test_complete_last_line_without_newline_is_kept(tmp_path):
    d = make_run(tmp_path, records=[])
    (d / "records.jsonl").write_text(json.dumps(record()))
    assert len(read_records(d)) == 1
    w = RunWriter.reopen(d)
    w.append(record("p2"))
    w.close()
    assert [r["problem"] for r in read_records(d)] == ["p1", "p2"]


@pytest.mark.parametrize("bad", ['{"problem": "x", ', "[1, 2]", "not json"])
def test_corruption_before_the_end_names_file_and_line(tmp_path, bad):
    d = make_run(tmp_path)
    lines = (d / "records.jsonl").read_text().splitlines()
    lines.insert(1, bad)
    (d / "records.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultsError, match=r"records.jsonl:2: corrupt record"):
        read_records(d)


def test_missing_and_corrupt_inputs(tmp_path):
    with pytest.raises(ResultsError, match="no such file"):
        load_results(tmp_path / "nope")
    with pytest.raises(ResultsError, match="matches no files"):
        load_results(str(tmp_path / "nothing-*"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="holds no convbench run"):
        load_results(tmp_path / "empty")
    d = make_run(tmp_path)
    (d / "meta.json").write_text("{oops")
    with pytest.raises(ResultsError, match=r"meta.json: corrupt"):
        load_results(d)


# ---- pandas ----------------------------------------------------------------------------------
def test_load_results_columns_and_values(tmp_path):
    pd = pytest.importorskip("pandas")
    d = make_run(tmp_path)
    df = load_results(d)
    assert len(df) == 3
    expected_start = [f for f in RECORD_FIELDS if f != "spec"]
    assert list(df.columns[:len(expected_start)]) == expected_start
    for col in ("spec_n", "spec_c_in", "spec_kernel_size", "spec_padding", "spec_dtype", "env_cpu_model",
                "env_cpu_isa", "env_threads", "env_torch", "peak_gemm_gflops", "peak_bandwidth_gbs"):
        assert col in df.columns
    row = df[df.candidate == "numpy-im2col:gemm@cpu"].iloc[0]
    assert row.spec_kernel_size == (3, 3) and row.spec_padding == ((1, 1), (1, 1))
    assert row.samples_s == (2e-3, 1e-3, 3e-3) and row.median_s == 2e-3
    assert row.env_cpu_model == "Test CPU" and row.env_cpu_isa == ("avx2", "fma")
    assert row.peak_gemm_gflops == 100.0 and row.peak_bandwidth_gbs == 10.0
    assert row["info"] == {"threads": 2, "versions": {"numpy": "2.0"}}
    crashed = df[df.status == "crashed"].iloc[0]
    assert pd.isna(crashed.median_s) and pd.isna(crashed.n_samples) and crashed.samples_s is None
    assert str(df["n_samples"].dtype) == "Int64" and df["median_s"].dtype == "float64"


def test_load_results_several_runs_glob_and_root(tmp_path):
    pytest.importorskip("pandas")
    a = make_run(tmp_path, "20250101-000000-t-aaaaaa", run_id="A")
    b = make_run(tmp_path, "20250102-000000-t-bbbbbb", run_id="B", gemm=50.0)
    assert len(load_results([a, b])) == 6
    assert len(load_results(str(tmp_path / "2025*-t-*"))) == 6
    df = load_results(tmp_path)  # a results root holding run directories
    assert len(df) == 6 and set(df.peak_gemm_gflops) == {100.0, 50.0}
    assert find_runs([a, a / "records.jsonl"]) == [a]


def test_export_parquet_and_csv_roundtrip(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    d = make_run(tmp_path)
    df = load_results(d)
    pq = export(d, tmp_path / "r.parquet")
    back = pd.read_parquet(pq)
    assert list(back.columns) == list(df.columns) and len(back) == 3
    ok = back[back.candidate == "numpy-im2col:gemm@cpu"].iloc[0]
    assert list(ok.samples_s) == [2e-3, 1e-3, 3e-3]
    assert json.loads(ok["info"]) == {"threads": 2, "versions": {"numpy": "2.0"}}
    assert [list(p) for p in ok.spec_padding] == [[1, 1], [1, 1]]
    csv = export(df, tmp_path / "r.csv")
    back = pd.read_csv(csv)
    assert len(back) == 3
    row = back[back.candidate == "numpy-im2col:gemm@cpu"].iloc[0]
    assert json.loads(row.samples_s) == [2e-3, 1e-3, 3e-3] and row.median_s == 2e-3
    with pytest.raises(ResultsError, match="unknown export format '.xlsx'"):
        export(df, tmp_path / "r.xlsx")


# ---- pyperf ----------------------------------------------------------------------------------
def test_pyperf_export_loads_and_compare_to_runs(tmp_path):
    pyperf = pytest.importorskip("pyperf")
    slow = [2e-3, 2.1e-3, 1.9e-3, 2.05e-3, 1.95e-3, 2e-3]
    fast = [1e-3, 1.1e-3, 0.9e-3, 1.05e-3, 0.95e-3, 1e-3]
    recs_a = [record("p1", "numpy-im2col:gemm@cpu", samples=slow),
              record("p1", "torch:default@cpu", samples=fast),
              record("p1", "scipy-fft:rfft@cpu", "wrong")]
    recs_b = [record("p1", "numpy-im2col:gemm@cpu", samples=fast),
              record("p1", "torch:default@cpu", samples=fast)]
    a = to_pyperf(make_run(tmp_path, "a", records=recs_a), tmp_path / "a.json")
    b = to_pyperf(make_run(tmp_path, "b", records=recs_b), tmp_path / "b.json")
    suite = pyperf.BenchmarkSuite.load(str(a))
    names = sorted(suite.get_benchmark_names())
    assert names == ["p1 numpy-im2col:gemm@cpu", "p1 torch:default@cpu"]  # the wrong one is left out
    bench = suite.get_benchmark("p1 numpy-im2col:gemm@cpu")
    assert list(bench.get_values()) == slow
    assert bench.get_unit() == "second" and bench.get_loops() == 4
    res = subprocess.run([sys.executable, "-m", "pyperf", "compare_to", str(a), str(b)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "p1 numpy-im2col:gemm@cpu" in res.stdout and "faster" in res.stdout


def test_pyperf_export_without_ok_records_is_an_error(tmp_path):
    pytest.importorskip("pyperf")
    d = make_run(tmp_path, records=[record(status="timeout")])
    with pytest.raises(ResultsError, match="no ok records"):
        to_pyperf(d, tmp_path / "x.json")


# ---- durable atomic writes -------------------------------------------------------------------
def test_write_atomic(tmp_path):
    from convbench.files import write_atomic

    target = tmp_path / "meta.json"
    assert write_atomic(target, "first\n") is True
    assert target.read_text() == "first\n"
    assert write_atomic(target, b"second\n") is True                 # replaces by default
    assert target.read_bytes() == b"second\n"
    assert write_atomic(target, "third\n", overwrite=False) is False  # the existing file wins
    assert target.read_text() == "second\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]  # no temporary left over
    with pytest.raises(OSError):
        write_atomic(tmp_path / "missing-dir" / "x.json", "x")
