"""benchmarks/engines_cpu.py: the per-engine summary of a sweep, and its --quick mode end to end."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "engines_cpu.py"


@pytest.fixture(scope="module")
def engines():
    spec = importlib.util.spec_from_file_location("engines_cpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rec(problem, backend, algorithm, median_s, status="ok", message=None):
    return {"problem": problem, "backend": backend, "algorithm": algorithm, "status": status,
            "median_s": median_s if status == "ok" else None, "message": message,
            "gflops": 1.0 / median_s if status == "ok" else None}


RECORDS = [
    _rec("a", "torch", "default", 2.0), _rec("a", "torch", "compile", 1.0),
    _rec("a", "jax", "xla", 4.0), _rec("a", "jax", "xla-cl", None, status="wrong", message="err"),
    _rec("b", "torch", "default", 3.0), _rec("b", "jax", "xla", 1.5),
    _rec("a", "openvino", "cpu", None, status="unavailable", message="openvino is not installed"),
    _rec("b", "openvino", "cpu", None, status="unavailable", message="openvino is not installed"),
]


def test_best_candidate_per_engine_and_layer(engines):
    best = engines.best_per_engine(RECORDS)
    assert {p: {e: r["algorithm"] for e, r in row.items()} for p, row in best.items()} == {
        "a": {"torch": "compile", "jax": "xla"}, "b": {"torch": "default", "jax": "xla"}}
    rows = engines.layer_rows(best, ["a", "b"], gemm=2.0)
    assert [(r[0], r[1], r[2], r[6], r[7]) for r in rows] == [
        ("a", "torch", "compile", "1.00", "winner"), ("a", "jax", "xla", "4.00", ""),
        ("b", "jax", "xla", "1.00", "winner"), ("b", "torch", "default", "2.00", "")]
    assert rows[0][5] == "50"  # 1 GFLOP/s of a 2 GFLOP/s GEMM


def test_engine_summary_and_troubles(engines):
    best = engines.best_per_engine(RECORDS)
    summary = {r[0]: r[1:] for r in engines.summary_rows(best, ["torch", "jax", "openvino"])}
    assert summary["torch"] == [2, 1, "1.41"]  # ratios 1 and 2
    assert summary["jax"] == [2, 1, "2.00"]    # ratios 4 and 1
    assert summary["openvino"] == [0, 0, "-"]
    troubles = engines.engine_troubles(RECORDS, ["torch", "jax", "openvino", "tensorflow"])
    assert troubles == {"openvino": "unavailable 2: openvino is not installed",
                        "tensorflow": "no records"}


def test_quick_layers_and_unregistered_engines(engines):
    specs = engines.layer_specs(engines.SUITES, [1, 8], per_suite=2)
    assert len(specs) == 8 and {s.n for s in specs} == {1, 8}
    assert specs[0].name.startswith("resnet50/") and specs[0].name.endswith("/n1")
    known, missing = engines.split_engines(["torch", "no-such-engine"])
    assert known == ["torch"] and missing == ["no-such-engine"]


@pytest.mark.slow
def test_quick_run_prints_the_tables(engines, tmp_path, capsys):
    pytest.importorskip("torch")
    rc = engines.main(["--quick", "--engines", "torch,numpy-im2col,no-such-engine",
                       "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.startswith("CPU: ")
    assert "# no-such-engine: not registered" in out
    assert "numpy float32 GEMM" in out and "threads=1" in out
    assert "winner" in out and "Engines, 1 thread(s)" in out
    for layer in (s.name for s in engines.layer_specs(engines.SUITES, [1], per_suite=2)):
        assert f"layer: {layer}" in out
    assert len(list(tmp_path.glob("*/records.jsonl"))) == 1
