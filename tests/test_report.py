"""convbench.report and the `report` / `compare` subcommands.

Table functions run on hand-written run directories whose expected results are worked out by
hand below; compare() on synthetic sample sets; the HTML report is rendered from a small real
`convbench sweep` run and opened in headless Chromium when it is installed.
"""
from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas", reason="convbench.report needs pandas")

from convbench import ConvSpec  # noqa: E402
from convbench.cli import main as cli_main  # noqa: E402
from convbench.errors import ConvbenchError  # noqa: E402
from convbench import report as rp  # noqa: E402

A = "numpy-direct:einsum@cpu"
B = "numpy-fft:rfft@cpu"
C = "numpy-im2col:gemm@cpu"
D = "scipy-signal:direct@cpu"
PEAK = 100.0  # GFLOP/s written into the hand-made meta.json

SPECS = {
    "p1": ConvSpec(n=1, c_in=4, c_out=8, input_size=(16, 16), kernel_size=3, padding=1),
    "p2": ConvSpec(n=1, c_in=8, c_out=8, input_size=(32,), kernel_size=5),
    "p3": ConvSpec(n=2, c_in=3, c_out=6, input_size=(8, 8), kernel_size=1),
}

# problem -> candidate -> (status, median ms, IQR ms); chosen so results are easy by hand
TABLE = {
    "p1": {A: ("ok", 4.0, 0.04), B: ("ok", 2.0, 0.02), C: ("ok", 1.0, 0.01), D: ("wrong", None, None)},
    "p2": {A: ("ok", 2.0, 0.02), B: ("ok", 8.0, 0.08), C: ("ok", 3.0, 0.6), D: ("crashed", None, None)},
    "p3": {A: ("ok", 1.0, 0.01), B: ("unsupported", None, None), C: ("ok", 0.5, 0.005),
           D: ("timeout", None, None)},
}


def _record(run_id, suite, problem, spec, cand, status, median_s=None, iqr_s=None, samples=None,
            env_id="env-aaaa", message=None):
    backend, rest = cand.split(":", 1)
    algorithm, device = rest.split("@")
    rec = {"run_id": run_id, "problem": problem, "suite": suite, "spec": spec.to_dict(),
           "spec_key": spec.key, "label": spec.label, "backend": backend, "algorithm": algorithm,
           "device": device, "candidate": cand, "status": status, "message": message,
           "max_error": None, "tolerance": 1e-4, "flops": spec.flops, "bytes": spec.bytes,
           "threads": 2, "cold_cache": False, "timer": "perf_counter", "env_id": env_id,
           "info": {}, "timestamp": "2026-01-01T00:00:00Z", "wall_s": 0.1}
    for k in ("median_s", "iqr_s", "min_s", "mean_s", "stdev_s", "ci_low_s", "ci_high_s",
              "n_samples", "loops", "samples_s", "gflops", "peak_pct"):
        rec[k] = None
    if status == "ok":
        if samples is None:
            samples = [median_s * f for f in (0.99, 1.0, 1.01)]
        gflops = spec.flops / median_s / 1e9
        rec.update(median_s=median_s, iqr_s=iqr_s, min_s=min(samples), mean_s=float(np.mean(samples)),
                   stdev_s=float(np.std(samples)), ci_low_s=median_s * 0.995,
                   ci_high_s=median_s * 1.005, n_samples=len(samples), loops=1,
                   samples_s=list(samples), gflops=gflops, peak_pct=gflops / PEAK * 100)
    if status == "wrong":
        rec["max_error"] = 0.5
    return rec


def write_run(root: Path, run_id: str, records, *, suite="toy", env_id="env-aaaa",
              cpu="Test CPU 9000", problems=None, threads=2) -> Path:
    d = root / run_id
    d.mkdir(parents=True)
    env = {"hostname": "h", "cpu_model": cpu, "threads": threads, "gpu_name": None}
    meta = {"run_id": run_id, "suite": suite, "created": "2026-01-01T00:00:00Z",
            "command": ["convbench", "sweep", suite], "seed": 0, "threads": threads, "device": "cpu",
            "budget_s": 0.1, "strategy": "exhaustive", "convbench_version": "0",
            "environment": env, "env_id": env_id,
            "peak": {"gemm_gflops": PEAK, "gemm_dtype": "float32", "bandwidth_gbs": 10.0},
            "shuffle_seed": 1, "problems": len(problems or []), "candidates": 4,
            "finished": "2026-01-01T00:01:00Z",
            "problem_list": [[n, s.to_dict(), 1] for n, s in (problems or [])]}
    (d / "meta.json").write_text(json.dumps(meta))
    with open(d / "records.jsonl", "w") as fh:
        for rec in records:
            fh.write(json.dumps(dict(rec, run_id=run_id, env_id=env_id)) + "\n")
    return d


def toy_records(run_id="run-1"):
    recs = []
    # written in a shuffled order (as the sweep does); the suite order is p1, p2, p3
    for problem in ("p3", "p1", "p2"):
        for cand, (status, med, iqr) in reversed(list(TABLE[problem].items())):
            recs.append(_record(run_id, "toy", problem, SPECS[problem], cand, status,
                                None if med is None else med * 1e-3,
                                None if iqr is None else iqr * 1e-3,
                                message={"crashed": "worker died (SIGSEGV)",
                                         "timeout": "no answer in 60 s"}.get(status)))
    return recs


@pytest.fixture
def toy_run(tmp_path):
    return write_run(tmp_path / "results", "run-1", toy_records(),
                     problems=[(k, v) for k, v in SPECS.items()])


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def test_winners_follow_suite_order_and_hand_computed_values(toy_run):
    w = rp.winners(toy_run)
    assert list(w["problem"]) == ["p1", "p2", "p3"]
    assert list(w["winner"]) == [C, A, C]
    assert np.allclose(w["median_s"], [1e-3, 2e-3, 0.5e-3])
    assert list(w["runner_up"]) == [B, C, A]
    assert np.allclose(w["margin"], [2 / 1 - 1, 3 / 2 - 1, 1 / 0.5 - 1])
    assert list(w["n_ok"]) == [3, 3, 2]
    assert list(w["n_candidates"]) == [4, 4, 4]
    expected_gflops = SPECS["p1"].flops / 1e-3 / 1e9
    assert w["gflops"].iloc[0] == pytest.approx(expected_gflops)
    assert w["peak_pct"].iloc[0] == pytest.approx(expected_gflops / PEAK * 100)


def test_winners_of_a_problem_with_no_ok_candidate(tmp_path):
    spec = SPECS["p1"]
    run = write_run(tmp_path, "r", [_record("r", "toy", "p1", spec, A, "crashed"),
                                     _record("r", "toy", "p1", spec, B, "unsupported")])
    w = rp.winners(run)
    assert len(w) == 1 and w["winner"].iloc[0] is None and w["n_ok"].iloc[0] == 0


def test_pivot_time_gflops_peak(toy_run):
    t = rp.pivot(toy_run, "time")
    assert list(t.index) == ["p1", "p2", "p3"]
    assert list(t.columns) == sorted([A, B, C, D])
    assert t.at["p2", B] == pytest.approx(8e-3)
    assert math.isnan(t.at["p3", B]) and t[D].isna().all()  # unsupported / failed: NaN
    g = rp.pivot(toy_run, "gflops")
    assert g.at["p1", A] == pytest.approx(SPECS["p1"].flops / 4e-3 / 1e9)
    p = rp.pivot(toy_run, "peak")
    assert p.at["p3", C] == pytest.approx(SPECS["p3"].flops / 0.5e-3 / 1e9 / PEAK * 100)
    with pytest.raises(ConvbenchError, match="metric"):
        rp.pivot(toy_run, "joules")


def test_speedup_over_a_baseline(toy_run):
    s = rp.speedup(toy_run, baseline=A)
    # baseline time / candidate time
    assert s.at["p1", B] == pytest.approx(4 / 2) and s.at["p1", C] == pytest.approx(4 / 1)
    assert s.at["p2", B] == pytest.approx(2 / 8) and s.at["p2", C] == pytest.approx(2 / 3)
    assert s.at["p3", C] == pytest.approx(1 / 0.5) and math.isnan(s.at["p3", B])
    assert (s[A] == 1).all()
    # a unique prefix names the same candidate; unknown or ambiguous names are refused
    assert rp.speedup(toy_run, baseline="numpy-direct").equals(s)
    with pytest.raises(ConvbenchError, match="not a candidate"):
        rp.speedup(toy_run, baseline="torch")
    with pytest.raises(ConvbenchError, match="valid"):
        rp.speedup(toy_run, baseline="numpy")


def test_default_baseline_is_the_candidate_ok_most_often(toy_run):
    # A and C are ok on all three problems; the tie goes to the first name
    assert rp.default_baseline(toy_run) == A


def test_geomean_per_suite(toy_run):
    g = rp.geomean(toy_run, by="suite", baseline=A).set_index("candidate")
    assert g.at[B, "speedup"] == pytest.approx(math.sqrt(2 * 0.25))          # p1, p2
    assert g.at[C, "speedup"] == pytest.approx((4 * (2 / 3) * 2) ** (1 / 3))  # p1..p3
    assert g.at[B, "n_common"] == 2 and g.at[C, "n_common"] == 3
    # time / fastest time: A 4, 1, 2 -> 2; B 2, 4 -> sqrt(8); C 1, 1.5, 1 -> 1.5^(1/3)
    assert g.at[A, "vs_best"] == pytest.approx(2.0)
    assert g.at[B, "vs_best"] == pytest.approx(math.sqrt(8))
    assert g.at[C, "vs_best"] == pytest.approx(1.5 ** (1 / 3))
    assert g.at[A, "geomean_s"] == pytest.approx((4e-3 * 2e-3 * 1e-3) ** (1 / 3))
    assert list(g["wins"][[A, B, C, D]]) == [1, 0, 2, 0]
    assert list(g["n_ok"][[A, B, C, D]]) == [3, 2, 3, 0]
    assert (g["n_problems"] == 3).all()
    with pytest.raises(ConvbenchError, match="by="):
        rp.geomean(toy_run, by="colour")


def test_status_counts(toy_run):
    sc = rp.status_counts(toy_run)
    assert list(sc.columns) == list(rp.STATUSES) + ["total"]
    assert sc.loc[A].to_dict() == dict.fromkeys(rp.STATUSES, 0) | {"ok": 3, "total": 3}
    assert sc.at[B, "ok"] == 2 and sc.at[B, "unsupported"] == 1
    assert (sc.at[D, "wrong"], sc.at[D, "crashed"], sc.at[D, "timeout"], sc.at[D, "ok"]) == (1, 1, 1, 0)


def test_warnings_list_failures_and_noise(toy_run):
    w = rp.warnings(toy_run)
    got = sorted(zip(w["problem"], w["candidate"], w["kind"]))
    # C on p2 has IQR 0.6 ms over a 3 ms median (20% > 10%); all others 1%
    assert got == sorted([("p1", D, "wrong"), ("p2", D, "crashed"), ("p3", D, "timeout"),
                          ("p2", C, "noisy")])
    detail = dict(zip(w["kind"], w["detail"]))
    assert "20.0%" in detail["noisy"]
    assert "SIGSEGV" in detail["crashed"]
    assert "0.5" in detail["wrong"] and "0.0001" in detail["wrong"]
    assert w["kind"].iloc[-1] == "noisy"  # failures first
    assert len(rp.warnings(toy_run, noise=0.25)) == 3


def test_several_runs_by_glob_keep_runs_apart(tmp_path):
    root = tmp_path / "results"
    probs = [(k, v) for k, v in SPECS.items()]
    write_run(root, "20260101-000000-toy-aaaaaa", toy_records(), problems=probs)
    slower = [dict(r, median_s=r["median_s"] * 2) if r["status"] == "ok" else r for r in toy_records()]
    write_run(root, "20260102-000000-toy-bbbbbb", slower, problems=probs)
    t = rp.pivot(str(root / "*-toy-*"), "time")
    assert t.index.names == ["run_id", "problem"] and len(t) == 6
    assert t.at[("20260102-000000-toy-bbbbbb", "p2"), B] == pytest.approx(16e-3)
    w = rp.winners(str(root / "*-toy-*"))
    assert "run_id" in w.columns and len(w) == 6


def test_kernel_grid_crossover(tmp_path):
    base = ConvSpec(n=1, c_in=4, c_out=4, input_size=(64,), kernel_size=1, padding="same")
    direct_ms = {1: 1.0, 3: 2.0, 5: 4.0, 7: 8.0}
    fft_ms = {1: 3.0, 3: 3.0, 5: 3.0, 7: 3.0}  # beats direct from k=5 on
    recs, probs = [], []
    for k in direct_ms:
        spec = base.replace(kernel_size=k, padding="same")
        probs.append((f"k{k}", spec))
        recs.append(_record("g", "kernel_grid", f"k{k}", spec, A, "ok", direct_ms[k] * 1e-3, 1e-6))
        recs.append(_record("g", "kernel_grid", f"k{k}", spec, B, "ok", fft_ms[k] * 1e-3, 1e-6))
    run = write_run(tmp_path, "g", recs, suite="kernel_grid", problems=probs)
    series = rp.kernel_grid_series(run)
    assert len(series) == 1
    info = rp.crossover(series[0][1])
    assert info["crossover"] == 5
    assert rp.candidate_family(B) == "fft" and rp.candidate_family(A) == "direct"
    assert info["best_fft"] == {k: pytest.approx(3e-3) for k in (1.0, 3.0, 5.0, 7.0)}
    assert info["best_direct"][7.0] == pytest.approx(8e-3)
    img, text = rp.crossover_plot(series[0][0], series[0][1], rp.candidate_colors([A, B]))
    assert text == "FFT becomes fastest from kernel size 5 on."
    assert base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n"
    # FFT that never wins at the largest size: no crossover
    slow_fft = [dict(r, median_s=r["median_s"] * 10) if r["candidate"] == B else r for r in recs]
    run2 = write_run(tmp_path, "g2", slow_fft, suite="kernel_grid", problems=probs)
    assert rp.crossover(rp.kernel_grid_series(run2)[0][1])["crossover"] is None


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------
def _sample_run(root, run_id, samples_by_problem, env_id="env-aaaa", cpu="Test CPU 9000", threads=2):
    recs = []
    for problem, samples in samples_by_problem.items():
        samples = np.asarray(samples)
        q1, q3 = np.percentile(samples, [25, 75])
        recs.append(_record(run_id, "toy", problem, SPECS["p1"].replace(name=problem), A, "ok",
                            float(np.median(samples)), float(q3 - q1), samples=samples.tolist()))
    return write_run(root, run_id, recs, env_id=env_id, cpu=cpu, threads=threads)


def _noisy(rng, median, n, sigma):
    return median * np.exp(rng.normal(0.0, sigma, n))


def test_compare_verdicts_on_synthetic_samples(tmp_path):
    rng = np.random.default_rng(42)
    a = {"same": _noisy(rng, 1e-3, 40, 0.01), "slow": _noisy(rng, 1e-3, 40, 0.01),
         "fast": _noisy(rng, 1e-3, 40, 0.01), "noisy": _noisy(rng, 1e-3, 5, 0.4)}
    b = {"same": _noisy(rng, 1e-3, 40, 0.01), "slow": _noisy(rng, 1.3e-3, 40, 0.01),
         "fast": _noisy(rng, 0.7e-3, 40, 0.01), "noisy": _noisy(rng, 1e-3, 5, 0.4)}
    ra, rb = _sample_run(tmp_path, "A", a), _sample_run(tmp_path, "B", b)
    cmp = rp.compare(ra, rb).set_index("problem")
    assert cmp.at["same", "verdict"] == "same"
    assert cmp.at["slow", "verdict"] == "slower"
    assert cmp.at["fast", "verdict"] == "faster"
    assert cmp.at["noisy", "verdict"] == "ambiguous"
    ratio = np.median(b["slow"]) / np.median(a["slow"])
    assert cmp.at["slow", "ratio"] == pytest.approx(ratio)
    assert cmp.at["slow", "ci_low"] <= ratio <= cmp.at["slow", "ci_high"]
    # every B block above every A block: the smallest p that 5 against 5 allow (2 / 252)
    assert cmp.at["slow", "p_value"] == pytest.approx(2 / 252)
    ratios = [np.median(b[k]) / np.median(a[k]) for k in a]
    assert cmp.attrs["geomean_ratio"] == pytest.approx(float(np.exp(np.mean(np.log(ratios)))))
    assert cmp.attrs["counts"] == {"faster": 1, "slower": 1, "same": 1, "ambiguous": 1, "n/a": 0}


def test_compare_identical_distributions_are_same(tmp_path):
    rng = np.random.default_rng(7)
    a = {f"p{i}": _noisy(rng, 1e-3 * (i + 1), 30, 0.02) for i in range(8)}
    b = {f"p{i}": _noisy(rng, 1e-3 * (i + 1), 30, 0.02) for i in range(8)}
    cmp = rp.compare(_sample_run(tmp_path, "A", a), _sample_run(tmp_path, "B", b))
    assert set(cmp["verdict"]) <= {"same", "ambiguous"}
    assert (cmp["verdict"] == "same").sum() >= 6
    assert abs(cmp.attrs["geomean_ratio"] - 1) < 0.02


def test_compare_min_effect_turns_a_small_real_change_into_same(tmp_path):
    rng = np.random.default_rng(3)
    a = {"p": _noisy(rng, 1e-3, 200, 0.002)}
    b = {"p": _noisy(rng, 1.01e-3, 200, 0.002)}  # clearly 1% slower
    ra, rb = _sample_run(tmp_path, "A", a), _sample_run(tmp_path, "B", b)
    assert rp.compare(ra, rb)["verdict"].iloc[0] == "same"
    assert rp.compare(ra, rb, min_effect=0.005)["verdict"].iloc[0] == "slower"


def test_compare_refuses_different_machines(tmp_path):
    rng = np.random.default_rng(0)
    ra = _sample_run(tmp_path, "A", {"p": _noisy(rng, 1e-3, 20, 0.01)}, env_id="env-1111",
                     cpu="Xeon Alpha")
    rb = _sample_run(tmp_path, "B", {"p": _noisy(rng, 1e-3, 20, 0.01)}, env_id="env-2222",
                     cpu="EPYC Beta")
    with pytest.raises(ConvbenchError) as exc:
        rp.compare(ra, rb)
    msg = str(exc.value)
    for part in ("env-1111", "env-2222", "Xeon Alpha", "EPYC Beta", "allow_different_machines"):
        assert part in msg
    cmp = rp.compare(ra, rb, allow_different_machines=True)
    assert cmp.attrs["different_machines"] and len(cmp) == 1


def test_compare_rows_not_ok_in_both_are_not_comparable(tmp_path):
    spec = SPECS["p1"]
    ra = write_run(tmp_path, "A", [_record("A", "toy", "p1", spec, A, "ok", 1e-3, 1e-5),
                                   _record("A", "toy", "p1", spec, B, "ok", 1e-3, 1e-5)])
    rb = write_run(tmp_path, "B", [_record("B", "toy", "p1", spec, A, "crashed"),
                                   _record("B", "toy", "p1", spec, C, "ok", 1e-3, 1e-5)])
    cmp = rp.compare(ra, rb).set_index("candidate")
    assert (cmp.at[A, "status_a"], cmp.at[A, "status_b"]) == ("ok", "crashed")
    assert cmp.at[B, "status_b"] == "absent" and cmp.at[C, "status_a"] == "absent"
    assert set(cmp["verdict"]) == {"n/a"}
    assert math.isnan(cmp.attrs["geomean_ratio"])
    with pytest.raises(ConvbenchError, match="min_effect"):
        rp.compare(ra, rb, min_effect=-1)


# ---------------------------------------------------------------------------------------------
# the shell
# ---------------------------------------------------------------------------------------------
def test_cli_report_prints_winners_speedups_and_warnings(toy_run, tmp_path, capsys):
    csv = tmp_path / "all.csv"
    html_file = tmp_path / "r.html"
    rc = cli_main(["report", str(toy_run), "--baseline", A, "--plain", "--csv", str(csv),
                   "--html", str(html_file)])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    row = next(line for line in lines if line.startswith("p2 "))
    assert A in row and "2 ms" in row and "1x" in row  # p2: A wins, the baseline itself
    row = next(line for line in lines if line.startswith("p1 "))
    assert C in row and "4x" in row  # p1: C is 4x faster than A
    assert "crashed: p2 / " + D in out and "noisy: p2 / " + C in out
    assert len(pd.read_csv(csv)) == 12
    assert html_file.stat().st_size > 10_000
    # gflops metric shows GFLOP/s values instead of times
    cli_main(["report", str(toy_run), "--metric", "gflops", "--plain"])
    out = capsys.readouterr().out
    assert f"{SPECS['p1'].flops / 1e-3 / 1e9:.4g}" in out
    # errors: exit status 2 with a message naming the problem
    assert cli_main(["report", str(toy_run), "--baseline", "nope", "--plain"]) == 2
    assert "nope" in capsys.readouterr().err


def test_cli_compare_exit_codes(tmp_path, capsys):
    rng = np.random.default_rng(1)
    xa, xb = _noisy(rng, 1e-3, 40, 0.01), _noisy(rng, 1.3e-3, 40, 0.01)
    ra = _sample_run(tmp_path, "A", {"p": xa})
    rb = _sample_run(tmp_path, "B", {"p": xb})
    rc_ = _sample_run(tmp_path, "C", {"p": _noisy(rng, 1e-3, 40, 0.01)}, env_id="env-other",
                      cpu="Other CPU")
    assert cli_main(["compare", str(ra), str(rb), "--plain"]) == 0
    out = capsys.readouterr().out
    ratio = np.median(xb) / np.median(xa)
    assert "1 slower" in out and f"geometric mean of B/A: {ratio:.4f}" in out
    assert cli_main(["compare", str(ra), str(rb), "--plain", "--fail-on-slower"]) == 1
    capsys.readouterr()
    assert cli_main(["compare", str(ra), str(rc_), "--plain"]) == 2
    assert "different machines" in capsys.readouterr().err
    assert cli_main(["compare", str(ra), str(rc_), "--plain", "--allow-different-machines"]) == 0


# ---------------------------------------------------------------------------------------------
# the HTML report, from a real run
# ---------------------------------------------------------------------------------------------
from fake_backends import TINY_SUITE  # noqa: E402


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    pytest.importorskip("matplotlib", reason="the HTML report needs matplotlib")
    root = tmp_path_factory.mktemp("real")
    suite = root / "tiny.toml"
    suite.write_text(TINY_SUITE)
    proc = subprocess.run(
        [sys.executable, "-m", "convbench", "sweep", str(suite), "--backends", "numpy-*",
         "--budget", "0.05", "--out", str(root / "results"), "--no-cache", "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = [p for p in (root / "results").iterdir() if p.is_dir()]
    assert len(runs) == 1
    html_file = rp.html_report(runs[0], root / "report.html")
    return runs[0], html_file


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.title, self.imgs, self.refs = "", [], []
        self._in_title = False
        self.tables: list = []  # (class, rows of cell texts)
        self._row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "title":
            self._in_title = True
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for k in ("src", "href"):
            if k in a:
                self.refs.append(a[k])
        if tag == "table":
            self.tables.append((a.get("class", ""), []))
        if tag == "tr":
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if tag == "tr" and self._row is not None:
            self.tables[-1][1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._row:
            self._row[-1] += data


def test_html_report_from_a_real_run(real_run):
    pytest.importorskip("PIL", reason="image checks need pillow")
    from PIL import Image

    run_dir, html_file = real_run
    text = html_file.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    meta = json.loads((run_dir / "meta.json").read_text())
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    assert page.title == f"convbench report: {meta['run_id']}"

    # the winners table: one row per problem, in suite order; each winner is an ok candidate
    # of that problem and its median is that record's
    winners_rows = next(rows for cls, rows in page.tables if cls == "winners")[1:]
    assert [r[0] for r in winners_rows] == ["tiny-k3", "tiny-k9"]
    for row in winners_rows:
        recs = {r["candidate"]: r for r in records if r["problem"] == row[0] and r["status"] == "ok"}
        assert row[3] in recs
        assert row[4] == rp.fmt_time(recs[row[3]]["median_s"])
    # environment facts of meta.json appear
    assert meta["environment"]["cpu_model"] in text and meta["env_id"] in text

    # four embedded plots (bars, speedup heat map, roofline, kernel-size crossover), all PNG
    assert len(page.imgs) == 4
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
    assert "FFT vs direct crossover" in text
    # self-contained: no external reference of any kind
    assert all(r.startswith("data:") for r in page.refs)
    assert not re.search(r"https?://", text)
    assert "<link" not in text and "<script" not in text


def test_html_report_one_problem_has_no_crossover(real_run, tmp_path):
    run_dir, _ = real_run
    df = rp.load_frame(run_dir)
    out = rp.html_report(df[df["problem"] == "tiny-k3"], tmp_path / "one.html", metric="gflops")
    text = out.read_text()
    assert text.count("<img ") == 3 and "crossover" not in text
    assert "GFLOP/s of every candidate" in text  # the bar chart's caption follows the metric


def test_html_escapes_text(tmp_path):
    spec = SPECS["p1"]
    evil = "<script>alert('x')</script>"
    run = write_run(tmp_path, "r", [_record("r", "toy", evil, spec, A, "ok", 1e-3, 1e-5),
                                    _record("r", "toy", evil, spec, B, "crashed", message=evil)])
    text = rp.html_report(run, tmp_path / "e.html").read_text()
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text


def test_html_screenshot_in_headless_chromium(request, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    pytest.importorskip("PIL", reason="screenshot checks need pillow")
    from PIL import Image

    _, html_file = request.getfixturevalue("real_run")  # only once chromium is known to exist
    png = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
           "--window-size=1280,2000", html_file.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.exists(), proc.stderr[-2000:]
    assert png.stat().st_size > 20_000
    im = Image.open(png).convert("RGB")
    assert im.size == (1280, 2000)
    colors = im.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # text, tables and plots, not a blank page
    # the page is not blank at the top either: the title area holds dark (text) pixels
    top = im.crop((0, 0, 1280, 120)).convert("L")
    assert top.getextrema()[0] < 80


# ---------------------------------------------------------------------------------------------
# the table renderer of the shell (convbench/table.py)
# ---------------------------------------------------------------------------------------------
from convbench import table as _table  # noqa: E402

WIDE_CANDIDATES = ["numba:winograd-f4x3-pretransformed-blas@cpu", "scipy-signal:correlate-direct@cpu",
                   "numpy-fft:rfft-precomputed-weights@cpu"]


def _wide_rows():
    return [[f"conv{i}", c, "1.23 ms", "4.56x", WIDE_CANDIDATES[(i + 1) % 3], "+12.5%",
             "17/24"] for i, c in enumerate(WIDE_CANDIDATES)]


WIDE_HEADERS = ["problem", "winner", "median", "speedup", "runner-up", "margin", "ok"]


def test_table_at_80_columns_drops_optional_columns_and_keeps_names_whole():
    natural = _table.format_table(WIDE_HEADERS, _wide_rows(), width=1000)
    assert max(len(line) for line in natural.splitlines()) > 80  # the test needs a wide table
    text = _table.format_table(WIDE_HEADERS, _wide_rows(), width=80,
                               drop=("runner-up", "margin"))
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    header = lines[0].split()
    assert "runner-up" not in header and "margin" not in header
    assert header == ["problem", "winner", "median", "speedup", "ok"]
    for name in WIDE_CANDIDATES:  # each name whole, on one line
        assert sum(name in line for line in lines) == 1
    assert "Not shown for lack of width: runner-up, margin" in text
    # a wider terminal keeps the optional columns, in their order
    wide = _table.format_table(WIDE_HEADERS, _wide_rows(), width=200, drop=("runner-up", "margin"))
    assert wide.splitlines()[0].split() == WIDE_HEADERS
    assert "Not shown" not in wide


def test_table_drops_only_as_many_optional_columns_as_needed():
    shown, widths = _table.fit_columns(["a", "b", "c"], [["x" * 30, "y" * 30, "z" * 10]], 72,
                                       drop=("c", "b"))
    assert shown == [0, 1] and widths == [30, 30]


def test_table_wraps_cells_at_spaces_before_cutting_anything():
    rows = [["numpy-direct:tensordot@cpu", "IQR/median = 12.7% (median 10.1 ms, 14 samples)"]]
    text = _table.format_table(["candidate", "detail"], rows, width=50)
    lines = text.splitlines()
    assert all(len(line) <= 50 for line in lines)
    assert lines[2].startswith("numpy-direct:tensordot@cpu")
    assert len(lines) > 3  # the detail wrapped
    assert " ".join(line[len(rows[0][0]) + 2:] for line in lines[2:]) == rows[0][1]
    # a word longer than the width is left whole: the table stays wider instead
    text = _table.format_table(["candidate"], [["x" * 60]], width=40)
    assert "x" * 60 in text


def test_table_groups_rows_under_heading_lines_and_explains_shown_columns():
    rows = [["conv1", A, "1.000"], ["conv1", B, "1.100"], ["conv2", A, "0.900"]]
    text = _table.format_table(["problem", "candidate", "ratio"], rows, title="B against A",
                               right=("ratio",), group="problem",
                               legend={"ratio": "B / A median time", "p": "not a column"})
    lines = text.splitlines()
    assert lines[0] == "B against A"
    assert lines[1].split() == ["candidate", "ratio"]
    assert lines.index("problem: conv1") < lines.index("problem: conv2")
    assert [line.split()[0] for line in lines[lines.index("problem: conv1") + 1:][:2]] == [A, B]
    assert "ratio: B / A median time" in lines
    assert "not a column" not in text  # legends of columns that are not shown are left out


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_print_table_piped_is_plain_text_at_80_columns(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()  # not a terminal, like `convbench report ... | cat`
    _table.print_table(WIDE_HEADERS, _wide_rows(), title="Winners", drop=("runner-up", "margin"),
                       legend={"speedup": "times faster than the baseline"}, stream=out)
    text = out.getvalue()
    assert "\x1b[" not in text  # no terminal escape codes
    assert text == _table.format_table(WIDE_HEADERS, _wide_rows(), title="Winners", width=80,
                                       drop=("runner-up", "margin"),
                                       legend={"speedup": "times faster than the baseline"}) + "\n"
    assert all(len(line) <= 80 for line in text.splitlines())


def test_print_table_on_a_terminal_has_the_same_layout(monkeypatch):
    pytest.importorskip("rich")
    monkeypatch.setenv("COLUMNS", "80")
    tty, plain = _Tty(), _Tty()
    _table.print_table(WIDE_HEADERS, _wide_rows(), title="Winners", drop=("runner-up", "margin"),
                       stream=tty)
    _table.print_table(WIDE_HEADERS, _wide_rows(), title="Winners", drop=("runner-up", "margin"),
                       stream=plain, plain=True)
    styled = tty.getvalue()
    assert "\x1b[" in styled  # rich styled it
    assert re.sub(r"\x1b\[[0-9;]*m", "", styled) == plain.getvalue()


# ---------------------------------------------------------------------------------------------
# the shell's report and compare as a newcomer reads them
# ---------------------------------------------------------------------------------------------
def test_cli_report_fits_80_columns_and_explains_the_baseline(toy_run, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert cli_main(["report", str(toy_run)]) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= 80 for line in out.splitlines())
    # the default baseline is named, with why it was chosen and how to choose another
    assert f"than {A}, the baseline: the candidate ok on the most problems" in " ".join(out.split())
    assert "--baseline" in out
    assert cli_main(["report", str(toy_run), "--baseline", C]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"than {C}, the baseline you chose with --baseline" in out


def test_cli_report_of_several_runs_groups_rows_by_run(tmp_path, capsys):
    root = tmp_path / "results"
    probs = [(k, v) for k, v in SPECS.items()]
    write_run(root, "20260101-000000-toy-aaaaaa", toy_records(), problems=probs)
    write_run(root, "20260102-000000-toy-bbbbbb", toy_records(), problems=probs)
    assert cli_main(["report", str(root / "*-toy-*"), "--plain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines.count("run: 20260101-000000-toy-aaaaaa") == 2  # winners and candidates tables
    assert lines.count("run: 20260102-000000-toy-bbbbbb") == 2


def test_cli_compare_explains_its_columns(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    rng = np.random.default_rng(1)
    ra = _sample_run(tmp_path, "A", {"p": _noisy(rng, 1e-3, 40, 0.01)})
    rb = _sample_run(tmp_path, "B", {"p": _noisy(rng, 1.3e-3, 40, 0.01)})
    assert cli_main(["compare", str(ra), str(rb)]) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "problem: p" in out.splitlines()
    assert "ratio: B / A median time (> 1: B is slower)" in out
    assert "verdict: faster / slower: significant (p < 0.05)" in " ".join(out.split())


def test_cli_calls_only_public_report_names():
    import ast

    import convbench.cli.compare as cli_compare
    import convbench.cli.report as cli_report

    for module in (cli_report, cli_compare):
        tree = ast.parse(Path(module.__file__).read_text())
        used = {n.attr for n in ast.walk(tree)
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "rp"}
        assert used and all(hasattr(rp, name) for name in used)
        assert not [name for name in used if name.startswith("_")], module.__name__


# ---------------------------------------------------------------------------------------------
# int8 problems: integer operations (GOP/s), % peak only against an int8 roof
# ---------------------------------------------------------------------------------------------
Q = ConvSpec(n=1, c_in=16, c_out=32, input_size=(14, 14), kernel_size=3, padding=1, dtype="int8")
F32_ROOFS = {"float32": {"gemm_gflops": 120.0, "gemm_source": "torch", "fma_gflops": 200.0}}
INT8_ROOF = {"gemm_gflops": 480.0, "gemm_source": "onednn", "fma_gflops": 800.0}


def _int8_record(peak, median_s=1e-4):
    from convbench.outcome import make_record
    from convbench.registry import Candidate

    out = {"status": "ok", "median_s": median_s, "samples_s": [median_s]}
    return make_record({"problem": "q"}, Q, Candidate("fake", "int8"), out, threads=2, env_id="e",
                       peak=peak, gemm_peak=(peak or {}).get("gemm_gflops"))


def test_int8_records_count_integer_ops_and_use_only_an_int8_roof():
    ops = 2 * 1 * 32 * 16 * 9 * 14 * 14          # 2 per MAC, padded positions included
    assert Q.flops == ops
    # float roofs only: the rate is there, % peak and % FMA stay empty (no float roof used)
    r = _int8_record({"gemm_gflops": 120.0, "roofs": F32_ROOFS})
    assert r["gflops"] == pytest.approx(ops / 1e-4 / 1e9)
    assert r["peak_pct"] is None and r["fma_pct"] is None and r["peak_roof"] is None
    assert _int8_record(None)["peak_pct"] is None      # not even the legacy gemm_peak
    # with an int8 roof: its own GEMM and FMA peaks
    r = _int8_record({"gemm_gflops": 120.0, "roofs": {**F32_ROOFS, "int8": INT8_ROOF}})
    assert r["peak_pct"] == pytest.approx(ops / 1e-4 / 1e9 / 480.0 * 100)
    assert r["fma_pct"] == pytest.approx(ops / 1e-4 / 1e9 / 800.0 * 100)
    assert r["peak_roof"] == "best int8 GEMM (onednn)"


def _int8_run(tmp_path, with_roof=True, mixed=False):
    """A run of Q (int8) and, when ``mixed``, SPECS["p1"] (float32); rates as make_record."""
    recs = []
    for cand, med in ((A, 2e-4), (C, 1e-4)):
        r = _record("q-run", "toy", "q", Q, cand, "ok", med, med * 0.01)
        r["peak_pct"] = r["gflops"] / INT8_ROOF["gemm_gflops"] * 100 if with_roof else None
        recs.append(r)
    problems = [("q", Q)]
    if mixed:
        recs.append(_record("q-run", "toy", "p1", SPECS["p1"], A, "ok", 1e-3, 1e-5))
        problems.append(("p1", SPECS["p1"]))
    return write_run(tmp_path / "results", "q-run", recs, problems=problems)


def test_rate_labels_follow_the_dtypes():
    from convbench.quant import rate_header, rate_unit

    assert rate_unit("int8") == "GOP/s" and rate_unit("float32") == "GFLOP/s"
    assert rate_header(["int8", "int8"]) == "GOP/s"
    assert rate_header(["float32", "bfloat16", None]) == "GFLOP/s"
    assert rate_header(["float32", "int8"]) == "GFLOP/s (GOP/s for int8)"
    assert rate_header([]) == "GFLOP/s"


def test_int8_winners_and_labels(tmp_path):
    run = _int8_run(tmp_path)
    w = rp.winners(run)
    assert list(w["dtype"]) == ["int8"] and w["winner"].iloc[0] == C
    assert w["gflops"].iloc[0] == pytest.approx(Q.flops / 1e-4 / 1e9)
    assert w["peak_pct"].iloc[0] == pytest.approx(Q.flops / 1e-4 / 1e9 / 480 * 100)
    assert rp.rate_label(rp.load_frame(run)) == "GOP/s" and rp.rate_label(w) == "GOP/s"
    assert rp.metric_label("gflops", rp.load_frame(run)) == "GOP/s"
    assert rp.metric_label("time", rp.load_frame(run)) == rp.METRICS["time"][1]
    mixed = rp.load_frame(_int8_run(tmp_path / "m", mixed=True))
    assert rp.rate_label(mixed) == "GFLOP/s (GOP/s for int8)"
    assert rp.rate_label(rp.load_frame(_toy(tmp_path / "f"))) == "GFLOP/s"


def _toy(root):
    return write_run(root, "run-1", toy_records(), problems=list(SPECS.items()))


def test_roofline_peaks_for_int8(tmp_path):
    from convbench.report.plots import plot_peaks

    ok = rp.load_frame(_int8_run(tmp_path))
    # the int8 roof comes from the records (rate / peak_pct); the float32 GEMM is not drawn
    assert list(plot_peaks(ok).items()) == [("int8 GEMM peak 480 GOP/s", pytest.approx(480.0))]
    assert plot_peaks(rp.load_frame(_int8_run(tmp_path / "n", with_roof=False))) == {}
    mixed = plot_peaks(rp.load_frame(_int8_run(tmp_path / "m", mixed=True)))
    assert list(mixed) == [f"GEMM peak {PEAK:.4g} GFLOP/s", "int8 GEMM peak 480 GOP/s"]
    assert list(plot_peaks(rp.load_frame(_toy(tmp_path / "f")))) == [f"GEMM peak {PEAK:.4g} GFLOP/s"]


def test_cli_report_shows_gops_for_int8(tmp_path, capsys):
    run = _int8_run(tmp_path)
    assert cli_main(["report", str(run), "--metric", "gflops", "--plain"]) == 0
    out = capsys.readouterr().out
    assert "GOP/s" in out and "GFLOP/s (" not in out
    assert "integer multiply-adds" in " ".join(out.split())
    assert f"{Q.flops / 1e-4 / 1e9:.4g}" in out
    assert cli_main(["report", str(_toy(tmp_path / "f")), "--metric", "gflops", "--plain"]) == 0
    assert "GOP/s" not in capsys.readouterr().out


def test_html_report_of_int8_run_says_gops(tmp_path):
    pytest.importorskip("matplotlib", reason="the HTML report needs matplotlib")
    text = rp.html_report(_int8_run(tmp_path), tmp_path / "q.html", metric="gflops").read_text()
    page = _Page()
    page.feed(text)
    header = next(rows for cls, rows in page.tables if cls == "winners")[0]
    assert "GOP/s" in header and "GFLOP/s" not in header
    geo = next(rows for cls, rows in page.tables if cls == "geomean")[0]
    assert "geomean GOP/s" in geo
    assert "Metric: GOP/s" in text and "int8 GEMM peak 480 GOP/s" in text
    # without an int8 roof the winner's % peak is empty, not taken against the float roof
    text = rp.html_report(_int8_run(tmp_path / "n", with_roof=False), tmp_path / "n.html").read_text()
    page = _Page()
    page.feed(text)
    rows = next(rows for cls, rows in page.tables if cls == "winners")
    assert rows[1][rows[0].index("% peak")] == "-"


def test_sweep_winners_table_header_follows_dtype():
    from convbench.selection import select_winners
    from convbench.suites import suite_from_specs
    from convbench.sweeping import SweepResult
    from convbench.sweeping.winners import format_winners, winner_columns

    def result(spec):
        recs = [{"problem": "p", "device": "cpu", "spec_key": spec.key, "spec": spec.to_dict(),
                 "candidate": "a:x@cpu", "backend": "a", "algorithm": "x", "status": "ok",
                 "median_s": 1e-3, "ci_low_s": 9.9e-4, "ci_high_s": 1.01e-3, "gflops": 1.5,
                 "noise": [], "info": {}, "timestamp": "t", "label": "l"}]
        return SweepResult(None, recs, select_winners(recs), {"device": "cpu"},
                           suite_from_specs([spec.replace(name="p")]))

    q = result(Q)
    headers, right, optional = winner_columns(q)
    assert "GOP/s" in headers and "GOP/s" in right and "GOP/s" in optional
    assert "GFLOP/s" not in headers
    text = format_winners(q)
    assert text.splitlines()[0].split()[4] == "GOP/s" and "integer multiply-adds" in text
    assert "GFLOP/s" in winner_columns(result(SPECS["p1"]))[0]
