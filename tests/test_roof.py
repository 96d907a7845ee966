"""`% peak` against a roof that is a roof: the best GEMM measured per dtype (numpy's or a
backend's declared `gemm_rate`), and the ISA's FMA peak at the measured clock."""
from __future__ import annotations

import pytest

from convbench import environment as E
from convbench.outcome import make_record
from convbench.registry import Backend, Candidate
from convbench.spec import ConvSpec

PEAK = {"gemm_gflops": 120.0, "gemm_dtype": "float32", "gemm_source": "torch",
        "roofs": {"float32": {"gemm_rates": {"numpy": 80.0, "torch": 120.0}, "gemm_gflops": 120.0,
                              "gemm_source": "torch", "fma_gflops": 200.0},
                  "bfloat16": {"gemm_rates": {"torch": 30.0}, "gemm_gflops": 30.0,
                               "gemm_source": "torch", "fma_gflops": 400.0}}}


def test_fma_flops_per_cycle_from_the_isa():
    assert E.fma_flops_per_cycle(["avx", "avx2", "fma"]) == {
        "float32": 32, "float64": 16, "bfloat16": 32, "float16": 32}
    avx512 = E.fma_flops_per_cycle(["avx512f", "avx512_bf16", "fma"])
    assert avx512["float32"] == 64 and avx512["bfloat16"] == 128 and avx512["float64"] == 32
    assert E.fma_flops_per_cycle(["amx_bf16", "avx512f"])["bfloat16"] == 2048
    assert E.fma_flops_per_cycle([]) == {}
    peak = E.fma_peak(["avx512f"], 2500.0, 4)
    assert peak["float32"] == pytest.approx(64 * 2.5 * 4) and peak["float64"] == pytest.approx(320)
    assert E.fma_peak(["avx512f"], None, 4) == {}


def _rec(dtype: str, median_s: float, **kw) -> dict:
    spec = ConvSpec(n=1, c_in=8, c_out=8, input_size=(16, 16), kernel_size=3, padding=1, dtype=dtype)
    out = {"status": "ok", "median_s": median_s, "samples_s": [median_s]}
    return spec, make_record({"problem": "p"}, spec, Candidate("torch", "default"), out, threads=2,
                             env_id="e", **kw)


def test_peak_pct_uses_the_best_gemm_of_the_dtype_and_names_it():
    spec, r = _rec("float32", 1e-4, peak=PEAK, gemm_peak=PEAK["gemm_gflops"])
    gf = spec.flops / 1e-4 / 1e9
    assert r["peak_pct"] == pytest.approx(gf / 120.0 * 100) and r["fma_pct"] == pytest.approx(gf / 2.0)
    assert r["peak_roof"] == "best float32 GEMM (torch)"
    spec, r = _rec("bfloat16", 1e-4, peak=PEAK)
    assert r["peak_pct"] == pytest.approx(gf / 30.0 * 100) and r["peak_roof"].startswith("best bfloat16")
    # a run without roofs (older runs, tests): numpy's float32 GEMM rate, said so
    spec, r = _rec("float64", 1e-4, gemm_peak=50.0)
    assert r["peak_pct"] == pytest.approx(gf / 50.0 * 100) and r["peak_roof"] == "float32 GEMM (numpy)"
    assert r["fma_pct"] is None


def test_backend_gemm_rate_is_a_declaration_with_a_default():
    class NoGemm(Backend):
        name = "no-gemm"

        def algorithms(self, device="cpu"):
            return ["x"]

        def _prepare(self, spec, x, w, algorithm, device):  # pragma: no cover
            raise AssertionError

    assert NoGemm().gemm_rate("float32", 1) is None


def test_backend_gemms_ask_only_backends_that_declare_one(monkeypatch):
    from convbench import registry

    class Declares(Backend):
        name = "declares-gemm"

        def algorithms(self, device="cpu"):
            return ["x"]

        def gemm_rate(self, dtype, threads, budget_s=0.3):
            return 42.0 if dtype == "float32" else None

        def _prepare(self, spec, x, w, algorithm, device):  # pragma: no cover
            raise AssertionError

    monkeypatch.setattr(registry, "list_backends", lambda *a, **k: ["declares-gemm", "numpy-direct"])
    real = registry.get_backend
    monkeypatch.setattr(registry, "get_backend",
                        lambda n: Declares() if n == "declares-gemm" else real(n))
    assert E._backend_gemms("float32", 1, 0.01) == {"declares-gemm": 42.0}
    assert E._backend_gemms("float64", 1, 0.01) == {}
