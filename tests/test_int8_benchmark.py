"""benchmarks/int8_numba.py: its layers and the table it prints (no timing here)."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "int8_numba.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("int8_numba", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_layers_are_int8_resnet_problems(bench):
    specs = bench.problems([1, 8], ["channels_last"], ["res5-3x3-512x7"])
    assert [(s.n, s.dtype, s.c_in, s.c_out, s.output_size) for s in specs] == [
        (1, "int8", 512, 512, (7, 7)), (8, "int8", 512, 512, (7, 7))]
    assert specs[0].flops == 2 * 512 * 512 * 9 * 49  # 2 ops per int8 multiply-add
    assert len(bench.problems([1], ["channels_last", "channels_first"], None)) == 2 * len(bench.LAYERS)


def test_table_reports_gops_against_both_roofs(bench, capsys):
    spec = bench.problems([1], ["channels_last"], ["res5-3x3-512x7"])[0]
    rows = [{"spec": spec.to_dict(), "flops": spec.flops, "backend": "numba", "algorithm": "int8-vnni",
             "status": "ok", "median_s": spec.flops / 100e9, "max_error": 0.0},
            {"spec": spec.to_dict(), "flops": spec.flops, "backend": "numba", "algorithm": "int8-direct",
             "status": "timeout", "median_s": None, "max_error": None}]
    bench.print_table(rows, {"gemm_gflops": 400.0, "fma_gflops": 800.0})
    out = capsys.readouterr().out.splitlines()
    vnni = next(line for line in out if "int8-vnni" in line).split()
    assert vnni[-4:] == ["100.0", "25.0", "12.5", "0"]  # GOP/s, % of GEMM, % of ISA peak, LSB
    assert next(line for line in out if "int8-direct" in line).split()[-1] == "timeout"
