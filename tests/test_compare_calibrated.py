"""`compare` judged by between-round variation and a minimum effect: A/A pairs read "same"
(or "ambiguous"), never faster/slower; a 1.10x change is caught; drift between runs that the
within-run samples cannot see is no longer significance."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from convbench import ConvSpec
from convbench import report as rp
from convbench.cli import main as cli_main
from convbench.report.comparison import verdict
from convbench.selection import DEFAULT_MIN_EFFECT

SPEC = ConvSpec(n=1, c_in=4, c_out=4, input_size=(8, 8), kernel_size=3, padding=1)
CAND = "numpy-im2col:gemm@cpu"


def _rec(problem: str, rounds: list[list[float]], cand: str = CAND) -> dict:
    xs = [x for r in rounds for x in r]
    med = float(np.median(xs))
    backend, rest = cand.split(":", 1)
    return {"problem": problem, "suite": "t", "spec": SPEC.to_dict(), "spec_key": f"{SPEC.key}/{problem}",
            "label": SPEC.label, "backend": backend, "algorithm": rest.split("@")[0], "device": "cpu",
            "candidate": cand, "status": "ok", "median_s": med, "min_s": min(xs),
            "ci_low_s": med * 0.99, "ci_high_s": med * 1.01, "n_samples": len(xs), "loops": 1,
            "samples_s": xs, "round_samples_s": rounds,
            "round_medians_s": [float(np.median(r)) for r in rounds] if len(rounds) > 1 else None,
            "noise": [], "threads": 2, "info": {}, "timestamp": "2026-01-01T00:00:00Z"}


def _write(root: Path, run_id: str, records: list[dict], env_id: str = "env-x") -> Path:
    d = root / run_id
    d.mkdir(parents=True)
    meta = {"run_id": run_id, "suite": "t", "created": "2026-01-01T00:00:00Z", "threads": 2,
            "device": "cpu", "environment": {"cpu_model": "Test CPU", "threads": 2},
            "env_id": env_id, "peak": {}, "finished": "2026-01-01T00:01:00Z"}
    (d / "meta.json").write_text(json.dumps(meta))
    with open(d / "records.jsonl", "w") as fh:
        for r in records:
            fh.write(json.dumps(dict(r, run_id=run_id, env_id=env_id)) + "\n")
    return d


def _run(rng, n_problems: int, *, round_sigma: float, sample_sigma: float = 0.003,
         offset_sigma: float = 0.0, scale: float = 1.0, rounds: int = 5, n: int = 6) -> list[dict]:
    """Problems whose true time is 1 ms * (1 + i/10); each round's level drifts by round_sigma,
    each problem's level in this run by offset_sigma, and samples scatter by sample_sigma
    around their round's level."""
    recs = []
    for i in range(n_problems):
        true = 1e-3 * (1 + i / 10) * scale * math.exp(rng.normal(0, offset_sigma))
        levels = true * np.exp(rng.normal(0, round_sigma, rounds))
        recs.append(_rec(f"p{i}", [list(lv * np.exp(rng.normal(0, sample_sigma, n))) for lv in levels]))
    return recs


def test_verdict_rule():
    band = (1 / 1.05, 1.05)
    assert verdict(1.10, 1.06, 1.14, band) == "slower"
    assert verdict(0.90, 0.86, 0.95, band) == "faster"
    assert verdict(1.01, 0.97, 1.04, band) == "same"
    assert verdict(1.03, 1.01, 1.06, band) == "ambiguous"     # real, but maybe more than 5%
    assert verdict(1.20, 0.90, 1.60, band) == "ambiguous"     # too noisy to tell
    assert verdict(1.04, 1.02, 1.06, band) == "ambiguous"     # significant, inside the band: not slower


def test_aa_pairs_are_not_called_faster_or_slower(tmp_path):
    rng = np.random.default_rng(11)
    a = _write(tmp_path, "A", _run(rng, 60, round_sigma=0.02))
    b = _write(tmp_path, "B", _run(rng, 60, round_sigma=0.02))
    cmp = rp.compare(a, b)
    called = cmp["verdict"].isin(["faster", "slower"]).mean()
    assert called <= 0.05
    assert (cmp["verdict"] == "same").mean() >= 0.5
    assert cmp.attrs["min_effect"] == DEFAULT_MIN_EFFECT
    assert set(cmp["rounds_a"]) == {5}


def test_drift_the_samples_cannot_see_is_not_significance(tmp_path):
    """Tight samples within each round, levels that move 2% between rounds and 1.5% between
    runs: a test on the raw samples calls most rows; the between-round rule (almost) none."""
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(5)
    ra = _run(rng, 40, round_sigma=0.02, sample_sigma=0.001, offset_sigma=0.015, n=20)
    rb = _run(rng, 40, round_sigma=0.02, sample_sigma=0.001, offset_sigma=0.015, n=20)
    p_samples = [mannwhitneyu(x["samples_s"], y["samples_s"]).pvalue for x, y in zip(ra, rb)]
    assert np.mean(np.array(p_samples) < 0.05) > 0.5          # what the old rule saw
    cmp = rp.compare(_write(tmp_path, "A", ra), _write(tmp_path, "B", rb))
    assert cmp["verdict"].isin(["faster", "slower"]).mean() <= 0.05


def test_a_ten_percent_regression_is_caught(tmp_path):
    rng = np.random.default_rng(3)
    a = _write(tmp_path, "A", _run(rng, 40, round_sigma=0.015))
    b = _write(tmp_path, "B", _run(rng, 40, round_sigma=0.015, scale=1.10))
    cmp = rp.compare(a, b)
    assert (cmp["verdict"] == "slower").mean() >= 0.9
    assert ((cmp["ci_low"] <= cmp["ratio"]) & (cmp["ratio"] <= cmp["ci_high"])).all()
    assert (cmp["p_value"] < 0.05).mean() >= 0.9


def test_records_without_rounds_use_blocks_of_samples(tmp_path):
    rng = np.random.default_rng(8)
    flat_a = [_rec("p", [list(1e-3 * np.exp(rng.normal(0, 0.01, 40)))])]
    flat_b = [_rec("p", [list(1.3e-3 * np.exp(rng.normal(0, 0.01, 40)))])]
    for r in flat_a + flat_b:
        r.pop("round_medians_s")
        r.pop("round_samples_s")
    cmp = rp.compare(_write(tmp_path, "A", flat_a), _write(tmp_path, "B", flat_b))
    assert cmp["verdict"].iloc[0] == "slower" and cmp["rounds_a"].iloc[0] == 5


def test_cli_csv_has_candidate_and_verdict_and_the_default_min_effect(tmp_path, capsys):
    rng = np.random.default_rng(2)
    a = _write(tmp_path, "A", _run(rng, 5, round_sigma=0.01))
    b = _write(tmp_path, "B", _run(rng, 5, round_sigma=0.01, scale=1.2))
    csv = tmp_path / "cmp.csv"
    assert cli_main(["compare", str(a), str(b), "--plain", "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    df = pd.read_csv(csv)
    assert {"candidate", "verdict", "ratio", "ci_low", "ci_high"} <= set(df.columns)
    assert set(df["verdict"]) <= {"faster", "slower", "same", "ambiguous", "n/a"}
    assert (df["verdict"] == "slower").all() and (df["candidate"] == CAND).all()
    assert "5 slower" in out
    assert cli_main(["compare", str(a), str(b), "--plain", "--min-effect", "0.5"]) == 0
    assert "0 slower" in capsys.readouterr().out               # 20% is inside a 50% band
    with pytest.raises(Exception):
        rp.compare(a, b, min_effect=1.5)


# ---- the benchmark scripts, on a tiny suite and budget (slow: they sweep) ---------------------
from fake_backends import TINY_SUITE  # noqa: E402
BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _bench(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_aa_compare_benchmark_runs_end_to_end(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    aa = _bench("aa_compare")
    results = aa.main([str(suite), "--backends", "numpy-im2col", "numpy-direct", "--threads", "1",
                       "--budget", "0.05", "--out", str(tmp_path / "runs"), "--peak-gflops", "50",
                       "--quiet", "--min-effect", "0.05", "0.5", "--factor", "3"])
    out = capsys.readouterr().out
    assert "A/A false positives" in out and "detected" in out
    assert [r["min_effect"] for r in results] == [0.05, 0.5]
    for r in results:
        # every candidate scaled in turn: each comparable row is tested once
        assert r["rows"] >= 2 and 0.0 <= r["fp_share"] <= 1.0 and r["injected_rows"] == r["rows"]
        # the machine rules only take verdicts away: the rows' own statistics give at least as many
        assert r["false_positives"] <= r["fp_stat"] <= r["rows"]
        assert r["detected"] <= r["detected_stat"] <= r["injected_rows"]
    if results[1]["disturbed"]:     # the machine's speed or load changed between the runs
        assert results[1]["detected"] == 0 and results[1]["notes"]
    else:                           # 3x slower is beyond even a 50% band
        assert results[1]["detected"] == results[1]["injected_rows"]
    assert "before compare's machine rules" in out


def test_scaled_copy_scales_every_timing_figure_of_one_candidate(tmp_path):
    aa = _bench("aa_compare")
    other = "numpy-direct:einsum@cpu"
    run = _write(tmp_path, "B", [_rec("p0", [[1e-3, 2e-3]] * 2), _rec("p0", [[5e-3]] * 2, cand=other)])
    scaled = aa.scaled_copy(run, CAND, 1.1, tmp_path / "out")
    recs = {r["candidate"]: r for r in map(json.loads, (scaled / "records.jsonl").read_text().splitlines())}
    assert recs[CAND]["samples_s"] == pytest.approx([1.1e-3, 2.2e-3] * 2)
    assert recs[CAND]["round_samples_s"] == [pytest.approx([1.1e-3, 2.2e-3])] * 2
    assert recs[CAND]["round_medians_s"] == pytest.approx([1.65e-3] * 2)
    assert recs[CAND]["median_s"] == pytest.approx(1.65e-3) and recs[other]["median_s"] == 5e-3
    assert json.loads((scaled / "meta.json").read_text())["run_id"] == recs[CAND]["run_id"] == "B-x1.1"
    cmp = rp.compare(run, scaled).set_index("candidate")
    assert cmp.at[CAND, "ratio"] == pytest.approx(1.1) and cmp.at[other, "ratio"] == 1.0


@pytest.mark.slow
def test_peer_agreement_benchmark_runs_end_to_end(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    peers = _bench("peer_agreement")
    rows = peers.main([str(suite), "--backends", "numpy-im2col", "--threads", "1", "--budget", "0.05",
                       "--max-pairs", "1", "--cycles", "2", "--cycle-budget", "0.05",
                       "--torch-min-run-time", "0.05", "--pyperf-processes", "2",
                       "--pyperf-values", "2", "--pyperf-min-time", "0.01", "--peak-gflops", "50",
                       "--out", str(tmp_path / "runs")])
    assert len(rows) == 1 and rows[0]["convbench_s"] > 0
    # every timer ran once per cycle; each figure is the median of its cycles
    for timer in ("convbench", "pyperf"):
        cycles = rows[0]["cycles_s"][timer]
        assert len(cycles) == 2 and all(c > 0 for c in cycles)
        assert rows[0][f"{timer}_s"] == pytest.approx(statistics.median(cycles))
    assert isinstance(rows[0]["steady"], bool)
    saved = json.loads(next((tmp_path / "runs").glob("*/peer_agreement.json")).read_text())
    assert saved[0]["cycles_s"]["convbench"] == rows[0]["cycles_s"]["convbench"]
    assert "within 5%" in capsys.readouterr().out


def test_mann_whitney_critical_values_match_the_tables():
    from convbench.report.comparison import _mwu_critical

    # two-sided alpha 0.05, published tables: n=m=5 -> 2, 6 -> 5, 8 -> 13, 10 -> 23, 20 -> 127
    assert [_mwu_critical(k, k, 0.05) for k in (5, 6, 8, 10, 20)] == [2, 5, 13, 23, 127]
    assert _mwu_critical(3, 3, 0.05) == -1          # 3 against 3 cannot reach 95%


def test_one_disturbed_round_of_ten_does_not_make_a_regression_ambiguous(tmp_path):
    quiet = [1e-3 * (1 + 0.001 * k) for k in range(-5, 5)]
    a = _write(tmp_path, "A", [_rec("p0", [[m] * 3 for m in quiet[:9]] + [[1.6e-3] * 3])])
    b = _write(tmp_path, "B", [_rec("p0", [[m * 1.1] * 3 for m in quiet])])
    row = rp.compare(a, b).iloc[0]
    assert row["verdict"] == "slower" and row["ratio"] == pytest.approx(1.1, rel=0.01)


def test_rows_timed_on_a_disturbed_machine_get_no_faster_or_slower_verdict(tmp_path):
    quiet = [1e-3 * (1 + 0.001 * k) for k in range(-5, 5)]
    recs_a = [_rec(f"p{i}", [[m] * 3 for m in quiet]) for i in range(12)]
    recs_b = [_rec(f"p{i}", [[m * 1.3] * 3 for m in quiet]) for i in range(12)]
    recs_b[0]["noise"] = ["steal"]          # the hypervisor took the CPU while p0 was timed in B
    recs_b[1]["noise"] = ["drift"]          # drift alone is the records' own business
    cmp = rp.compare(_write(tmp_path, "A", recs_a), _write(tmp_path, "B", recs_b)).set_index("problem")
    assert cmp.at["p0", "verdict"] == "ambiguous" and cmp.at["p0", "ratio"] == pytest.approx(1.3)
    assert (cmp.drop(index="p0")["verdict"] == "slower").all()
    assert "notes" not in cmp.attrs and cmp.attrs["disturbed"] is False   # 1 of 12: under 10%


def test_a_run_with_many_disturbed_records_gets_no_verdict_at_all(tmp_path):
    quiet = [1e-3 * (1 + 0.001 * k) for k in range(-5, 5)]
    recs_a = [_rec(f"p{i}", [[m] * 3 for m in quiet]) for i in range(3)]
    recs_b = [_rec(f"p{i}", [[m * 1.3] * 3 for m in quiet]) for i in range(3)]
    recs_b[0]["noise"] = ["steal"]
    cmp = rp.compare(_write(tmp_path, "A", recs_a), _write(tmp_path, "B", recs_b)).set_index("problem")
    assert (cmp["verdict"] == "ambiguous").all() and (cmp["ratio"] > 1.29).all()
    (note,) = cmp.attrs["notes"]             # 1 of 3 records of B disturbed: over the 10% share
    assert note.startswith("run B: 1 of 3 records were timed while the machine was disturbed")
    assert "no row of this comparison gets a faster/slower verdict" in note
    assert cmp.attrs["disturbed"] is True and cmp.attrs["counts"]["slower"] == 0


def test_a_machine_speed_change_between_runs_withholds_verdicts(tmp_path):
    quiet = [1e-3 * (1 + 0.001 * k) for k in range(-5, 5)]
    recs_a = [_rec(f"p{i}", [[m] * 3 for m in quiet]) for i in range(4)]
    recs_b = [_rec(f"p{i}", [[m * 1.7] * 3 for m in quiet]) for i in range(4)]
    for r in recs_a:
        r["info"] = {"canary_s": 4e-4}
    for r in recs_b:
        r["info"] = {"canary_s": 6.8e-4}           # the same fixed workload 1.7x slower in B
    cmp = rp.compare(_write(tmp_path, "A", recs_a), _write(tmp_path, "B", recs_b))
    (note,) = cmp.attrs["notes"]
    assert note.startswith("the machine-speed canary took 1.70x as long in run B")
    # the rows are 1.7x slower, as the machine was: no verdict blames the code
    assert (cmp["verdict"] == "ambiguous").all() and cmp.attrs["disturbed"] is True
    # between two machines the speed difference is what is compared: verdicts stay
    other = _write(tmp_path, "B-elsewhere", recs_b, env_id="env-y")
    cmp = rp.compare(_write(tmp_path, "A1", recs_a), other, allow_different_machines=True)
    assert (cmp["verdict"] == "slower").all() and cmp.attrs["disturbed"] is False
    for r in recs_b:
        r["info"] = {"canary_s": 4.1e-4}           # within the minimum effect: nothing to say
    cmp = rp.compare(_write(tmp_path, "A2", recs_a), _write(tmp_path, "B2", recs_b))
    assert "notes" not in cmp.attrs and cmp.attrs["disturbed"] is False
    assert (cmp["verdict"] == "slower").all()


def test_a_machine_speed_change_on_some_records_withholds_verdicts(tmp_path):
    """The canary's median agrees, but it moved on 2 of 10 records (over the 10% share)."""
    quiet = [1e-3 * (1 + 0.001 * k) for k in range(-5, 5)]
    recs_a = [_rec(f"p{i}", [[m] * 3 for m in quiet]) for i in range(10)]
    recs_b = [_rec(f"p{i}", [[m * 1.2] * 3 for m in quiet]) for i in range(10)]
    for i, (ra, rb) in enumerate(zip(recs_a, recs_b)):
        ra["info"] = {"canary_s": 4e-4}
        rb["info"] = {"canary_s": 4e-4 * (1.4 if i < 2 else 1.01)}
    cmp = rp.compare(_write(tmp_path, "A", recs_a), _write(tmp_path, "B", recs_b))
    (note,) = cmp.attrs["notes"]
    assert note.startswith("the machine-speed canary moved by more than 5% between the runs on "
                           "2 of 10 records (range 1.01-1.40x)")
    assert (cmp["verdict"] == "ambiguous").all() and cmp.attrs["disturbed"] is True
    recs_b[1]["info"] = {"canary_s": 4e-4}           # 1 of 10: within the share, verdicts stand
    cmp = rp.compare(_write(tmp_path, "A2", recs_a), _write(tmp_path, "B2", recs_b))
    assert "notes" not in cmp.attrs and (cmp["verdict"] == "slower").all()


def test_canaries_of_different_workloads_are_not_set_side_by_side(tmp_path):
    """A run from before the SIMD canary (no info["canary"]: the pure-Python loop, about 5x as
    long) against a new one: no claim that the machine changed speed, and a note saying why."""
    from convbench import noise

    quiet = [1e-3 * (1 + 0.001 * k) for k in range(-5, 5)]
    recs_a = [_rec(f"p{i}", [[m] * 3 for m in quiet]) for i in range(4)]
    recs_b = [_rec(f"p{i}", [[m * 1.7] * 3 for m in quiet]) for i in range(4)]
    for r in recs_a:
        r["info"] = {"canary_s": 6e-4}                               # legacy: no workload named
    for r in recs_b:
        r["info"] = {"canary_s": 1.2e-4, "canary": noise.CANARY}
    cmp = rp.compare(_write(tmp_path, "A", recs_a), _write(tmp_path, "B", recs_b))
    (note,) = cmp.attrs["notes"]
    assert note.startswith("the runs timed different machine-speed canaries (A: "
                           f"{noise.CANARY_LEGACY}; B: {noise.CANARY})")
    assert cmp.attrs["disturbed"] is False and (cmp["verdict"] == "slower").all()
    # the same named workload on both sides is compared as before: 0.2x is a machine change
    for r in recs_a:
        r["info"] = {"canary_s": 6e-4, "canary": noise.CANARY}
    cmp = rp.compare(_write(tmp_path, "A2", recs_a), _write(tmp_path, "B2", recs_b))
    assert cmp.attrs["notes"][0].startswith("the machine-speed canary took 0.20x as long")
    assert (cmp["verdict"] == "ambiguous").all() and cmp.attrs["disturbed"] is True


@pytest.mark.slow
def test_interleaved_aa_pair_runs_end_to_end(tmp_path, capsys):
    """The same strategy twice: two combined runs a and b, problem by problem back to back."""
    from convbench.results import read_records

    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    ivx = _bench("race_vs_exhaustive_interleaved")
    assert ivx.main([str(suite), "--threads", "1", "--out", str(tmp_path / "ivx"), "--backends",
                     "numpy-im2col", "numpy-direct", "--strategies", "exhaustive", "exhaustive"]) == 0
    a, b = read_records(tmp_path / "ivx" / "a"), read_records(tmp_path / "ivx" / "b")
    key = sorted((r["problem"], r["candidate"]) for r in a)
    assert key == sorted((r["problem"], r["candidate"]) for r in b) and len(key) == 6
    assert {r["run_id"] for r in a} == {"interleaved-a"} and {r["run_id"] for r in b} == {"interleaved-b"}
    # problem by problem: b's first problem was timed before a's second
    first_b = min(r["start_time"] for r in b if r["problem"] == key[0][0])
    assert first_b < max(r["start_time"] for r in a)
    results = _bench("aa_compare").main(["--runs", str(tmp_path / "ivx" / "a"),
                                        str(tmp_path / "ivx" / "b"), "--out", str(tmp_path / "s")])
    assert results[0]["rows"] == 6
