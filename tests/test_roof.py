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
        "float32": 32, "float64": 16, "bfloat16": 32, "float16": 32, "int8": pytest.approx(128 / 3)}
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


def test_int8_ops_per_cycle_from_the_isa():
    """2 ops per multiply-add: vpdpbusd zmm 64 MACs x 2 units; ymm (AVX-VNNI) half that; without
    VNNI three instructions (vpmaddubsw, vpmaddwd, vpaddd) per 64 (zmm) / 32 (ymm) MACs."""
    cpi = E.fma_flops_per_cycle
    icx = ["avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"]
    assert cpi(icx)["int8"] == 256 and cpi(icx)["float32"] == 64
    assert cpi(["avx2", "fma", "avx_vnni"])["int8"] == 128
    assert cpi(["avx2", "avx512f", "avx512bw"])["int8"] == pytest.approx(2 * 2 * 64 / 3)
    assert cpi(["amx_int8", "avx512_vnni", "avx512f"])["int8"] == 2048
    assert cpi(["asimd", "asimddp"])["int8"] == 64 and cpi(["asimd", "asimddp", "i8mm"])["int8"] == 128
    assert "int8" not in cpi(["avx", "fma"]) and "int8" not in cpi(["asimd"])
    assert E.fma_peak(icx, 2600.0, 2)["int8"] == pytest.approx(256 * 2.6 * 2)


def test_roofs_measure_int8_through_the_backends_declarations(monkeypatch):
    """int8 is a roof dtype: numpy has no int8 GEMM, a backend's declared rate is the GEMM roof,
    the VNNI peak at the measured clock the ISA roof."""
    from convbench import noise

    asked = []

    def gemms(dtype, threads, budget_s):
        asked.append(dtype)
        return {"declares-gemm": 500.0} if dtype == "int8" else {}

    monkeypatch.setattr(E, "_numpy_gemm", lambda dtype, n, budget_s: None)
    monkeypatch.setattr(E, "_backend_gemms", gemms)
    monkeypatch.setattr(noise, "cpu_freqs_mhz", lambda: [2600.0, 2500.0])
    monkeypatch.setattr(E, "cpu_info", lambda: {"cpu_model": "x", "cpu_cores_physical": 2,
                                                "cpu_isa": ["avx512f", "avx512bw", "avx512_vnni"]})
    roofs = E._roofs(threads=2, budget_s=0.01, gemm_n=64)["roofs"]
    assert "int8" in asked and "int8" in E.ROOF_DTYPES
    assert roofs["int8"] == {"gemm_rates": {"declares-gemm": 500.0}, "gemm_gflops": 500.0,
                             "gemm_source": "declares-gemm",
                             "fma_gflops": pytest.approx(256 * 2.6 * 2)}


def test_int8_records_use_the_int8_roof():
    peak = {**PEAK, "roofs": {**PEAK["roofs"], "int8": {"gemm_rates": {"torch": 400.0}, "gemm_gflops": 400.0,
                                                        "gemm_source": "torch", "fma_gflops": 1331.2}}}
    spec, r = _rec("int8", 1e-4, peak=peak)
    gops = spec.flops / 1e-4 / 1e9
    assert r["peak_pct"] == pytest.approx(gops / 400.0 * 100) and r["peak_roof"] == "best int8 GEMM (torch)"
    assert r["fma_pct"] == pytest.approx(gops / 1331.2 * 100)


def test_torch_declares_an_int8_gemm_rate_of_exact_products():
    torch = pytest.importorskip("torch", reason="torch is not installed: pip install convbench[torch]")
    import numpy as np

    from convbench.registry import get_backend
    from convbench_backends import _torch_int8_gemm as g

    g._int_mm(torch, 64)()  # the product the roof times runs here ...
    a = torch.randint(-127, 128, (64, 64), dtype=torch.int8)
    b = torch.randint(-127, 128, (64, 64), dtype=torch.int8)
    # ... and is the exact int8 x int8 -> int32 product
    assert np.array_equal(torch._int_mm(a, b).numpy(), a.numpy().astype(np.int64) @ b.numpy().astype(np.int64))
    rate = get_backend("torch").gemm_rate("int8", 1, budget_s=0.01)
    assert rate is not None and rate > 0
