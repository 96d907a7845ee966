"""What spoils timings: tick quantisation, steal, runnable processes, throttling, clock changes;
recorded per timing, flagged in records, the winners table and the HTML report; `doctor`."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest

from convbench import noise
from convbench.cli import main as cli_main
from convbench.measure import TimingParams, verify_and_time
from convbench.timing import CallablePrepared


# ---- tick quantisation ------------------------------------------------------------------------
def test_samples_on_multiples_of_the_tick_are_quantised():
    rng = random.Random(0)
    ticks = [4e-3 * k * (1 + rng.uniform(-0.01, 0.01)) for k in (1, 2, 6, 5, 6, 3, 6, 2, 6, 4)]
    assert noise.tick_quantum(ticks) == 4e-3
    # per-call samples of 4 calls each: the sample durations are what falls on the tick
    assert noise.tick_quantum([t / 4 for t in ticks], loops=4) == 4e-3


def test_a_real_call_near_a_tick_multiple_is_not_quantisation():
    rng = random.Random(1)
    steady = [4e-3 * (1 + rng.uniform(-0.005, 0.005)) for _ in range(30)]   # one multiple only
    assert noise.tick_quantum(steady) is None
    spread = [rng.uniform(3e-3, 30e-3) for _ in range(40)]                  # continuous times
    assert noise.tick_quantum(spread) is None
    assert noise.tick_quantum([1e-5] * 50) is None                          # far below a tick
    assert noise.tick_quantum([8e-3, 12e-3]) is None                        # too few samples


# ---- facts and flags ------------------------------------------------------------------------------
def test_facts_between_two_snapshots():
    # other processes used 1.5 - 0.5 = 1.0 CPU-s over a 2 s window: 0.5 cores, above BUSY_LOAD
    before = {"cpu": (10, 1000, 3), "throttle": 5, "freq_mhz": 3000.0, "busy_s": 100.0,
              "self_s": 2.0, "wall_s": 50.0}
    after = {"cpu": (40, 1200, 4), "throttle": 7, "freq_mhz": 2000.0, "busy_s": 101.5,
             "self_s": 2.5, "wall_s": 52.0}
    f = noise.facts(before, after, threads=1)
    assert f["cpu_steal_pct"] == pytest.approx(15.0) and f["procs_running"] == 4 and f["busy"]
    assert f["other_cpu_s"] == pytest.approx(1.0) and f["window_s"] == pytest.approx(2.0)
    assert f["throttle_events"] == 2 and f["freq_mhz_before"] == 3000.0
    assert noise.flags(f) == ["steal", "busy", "throttle", "freq"]
    # the measuring process itself used the busy time: not busy, however many were runnable
    quiet = noise.facts({"cpu": (10, 1000, 5), "throttle": None, "freq_mhz": None,
                         "busy_s": 100.0, "self_s": 2.0, "wall_s": 50.0},
                        {"cpu": (10, 1200, 5), "throttle": None, "freq_mhz": None,
                         "busy_s": 101.9, "self_s": 3.9, "wall_s": 51.0}, threads=1)
    assert quiet["busy"] is False and quiet["other_cpu_s"] == pytest.approx(0.0, abs=1e-9)
    assert noise.flags(quiet) == []
    assert noise.facts({"cpu": None}, {"cpu": None}, threads=1) == {}
    assert noise.flags({"tick_s": 4e-3, "round_quartile_spread": 0.2}) == ["tick", "drift"]
    assert noise.flags({"round_spread": 0.5, "round_quartile_spread": 0.05}) == []   # one odd round: no drift
    assert set(noise.flags({"tick_s": 1e-3})) <= set(noise.FLAGS)


def test_busy_is_other_processes_cpu_time_over_the_window():
    assert noise.busy(0.31, 1.0) and not noise.busy(0.29, 1.0) and not noise.busy(1.0, 0.0)


@pytest.mark.skipif(not os.path.exists("/proc/stat") or (os.cpu_count() or 1) < 2,
                    reason="needs Linux's /proc/stat and two CPUs")
def test_a_process_spinning_beside_the_timing_is_seen():
    def window(seconds):
        before = noise.snapshot()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            pass                                   # this process works on one core
        return noise.facts(before, noise.snapshot(), threads=1)

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        loaded = window(0.6)
    finally:
        spinner.kill()
        spinner.wait()
    # other work on the machine (a parallel test worker) can only add to what is seen; that
    # this process's own time is left out is checked with fixed readings above (a live upper
    # bound would depend on what the parallel test workers do meanwhile)
    assert loaded["other_cpu_s"] / loaded["window_s"] > 0.5 and loaded["busy"], loaded


# ---- the machine's state and advice ------------------------------------------------------------
QUIET = {"cpus": 8, "usable_cpus": 8, "load_avg_1m": 0.1, "cpu_steal_pct": 0.0,
         "procs_running": 1, "governors": ["performance"], "freq_mhz_min": 3000.0,
         "freq_mhz_max": 3000.0, "turbo": False, "throttle_count": 0, "kernel_hz": 1000,
         "isolated_cpus": "4-7", "aslr": "2", "virtualized": None}


def test_a_timing_records_what_spoiled_it(monkeypatch):
    # other processes used 1.0 - 0.2 = 0.8 CPU-s over the 1 s timing: busy
    readings = iter([{"cpu": (0, 1000, 4), "throttle": 0, "freq_mhz": 2000.0, "busy_s": 0.0,
                      "self_s": 0.0, "wall_s": 0.0},
                     {"cpu": (300, 2000, 5), "throttle": 0, "freq_mhz": 2000.0, "busy_s": 1.0,
                      "self_s": 0.2, "wall_s": 1.0}])
    monkeypatch.setattr(noise, "snapshot", lambda: next(readings))
    out = verify_and_time(lambda: CallablePrepared(lambda: None), check=None,
                          timing=TimingParams(budget_s=0.01, min_samples=3, min_warmup_s=0.0,
                                              min_warmup_calls=1))
    assert out["status"] == "ok"
    assert out["info"]["cpu_steal_pct"] == pytest.approx(30.0) and out["info"]["procs_running"] == 5
    assert out["info"]["other_cpu_s"] == pytest.approx(0.8)
    assert out["noise"] == ["steal", "busy"]
    assert 0 < out["info"]["canary_s"] < 1.0           # the machine-speed canary, recorded
    assert out["round_samples_s"] == [out["samples_s"]] and out["round_medians_s"] == [out["median_s"]]
    assert out["start_time"] <= out["end_time"] and out["start_time"].endswith("Z")


def test_the_canary_times_a_fixed_workload():
    import statistics

    got = [noise.canary_s() for _ in range(3)]
    assert all(0 < t < 1.0 for t in got)
    # a workload eight times as long takes longer: it measures the work, not a constant
    passes = noise.CANARY_PASSES
    try:
        noise.CANARY_PASSES = passes * 8
        longer = statistics.median(noise.canary_s() for _ in range(3))
    finally:
        noise.CANARY_PASSES = passes
    assert longer > statistics.median(got)


def test_other_processes_using_the_cpus_are_named_at_the_start_of_a_run(monkeypatch):
    busy = dict(QUIET, other_cpu_load=0.95, usable_cpus=2)
    assert any("other processes are using 0.9 cores" in a or "0.95" in a or "1.0 cores" in a
               for a in noise.advice(busy, threads=1))
    monkeypatch.setattr(noise, "system_state", lambda window_s=0.3: busy)
    (line,) = noise.run_warnings(threads=1)
    assert line.startswith("other processes used")
    monkeypatch.setattr(noise, "system_state", lambda window_s=0.3: dict(QUIET, other_cpu_load=0.05))
    assert noise.run_warnings(threads=1) == []


def test_advice_names_what_to_change():
    assert noise.advice(QUIET, threads=4) == []
    bad = dict(QUIET, cpu_steal_pct=20.0, load_avg_1m=3.0, governors=["powersave"], turbo=True,
               throttle_count=12, kernel_hz=250, isolated_cpus="", usable_cpus=2)
    text = "\n".join(noise.advice(bad, threads=2))
    for word in ("hypervisor", "load average", "performance", "turbo", "throttled", "250 Hz",
                 "isolated"):
        assert word in text


def test_system_state_reads_what_it_can():
    state = noise.system_state(window_s=0.05)
    assert set(QUIET) <= set(state) and state["cpus"] >= 1


def test_doctor_prints_the_state_and_advice(monkeypatch, capsys):
    monkeypatch.setattr(noise, "system_state", lambda window_s=0.5: dict(QUIET))
    assert cli_main(["doctor", "--plain", "--threads", "4", "--probe", "0"]) == 0
    out = capsys.readouterr().out
    assert "frequency governor" in out and "performance" in out and "Nothing to change" in out
    monkeypatch.setattr(noise, "system_state",
                        lambda window_s=0.5: dict(QUIET, cpu_steal_pct=25.0, governors=["ondemand"]))
    assert cli_main(["doctor", "--plain", "--probe", "0"]) == 1
    out = capsys.readouterr().out
    assert "25.0%" in out and "ondemand" in out and "What to change" in out
    assert cli_main(["doctor", "--window", "0"]) == 2


def test_doctor_shows_the_machine_speed_moving(monkeypatch, capsys):
    monkeypatch.setattr(noise, "system_state", lambda window_s=0.5: dict(QUIET))
    seen = []

    def wander(seconds):
        seen.append(seconds)
        return {"windows": 12, "window_s": 0.25, "median_s": 1e-4, "wander": 0.123}
    monkeypatch.setattr(noise, "speed_wander", wander)
    assert cli_main(["doctor", "--plain", "--threads", "4"]) == 1
    out = " ".join(capsys.readouterr().out.split())   # the table wraps long cells
    assert seen == [noise.SPEED_PROBE_S]
    assert "12.3% between the fastest and slowest of 12 windows" in out
    assert "speed moved by 12% within 3 s" in out
    # within SPEED_WANDER: nothing to say
    monkeypatch.setattr(noise, "speed_wander", lambda seconds: dict(wander(seconds), wander=0.02))
    assert cli_main(["doctor", "--plain", "--threads", "4", "--probe", "1"]) == 0
    assert seen[-1] == 1.0
    for bad in ("0.3", "-1", "nan", "inf", "601"):
        assert cli_main(["doctor", "--probe", bad]) == 2
        assert "--probe" in capsys.readouterr().err


def test_speed_wander_times_the_canary_in_windows():
    got = noise.speed_wander(0.33, window_s=0.05)
    assert got["windows"] == 6 and got["window_s"] == 0.05          # whole windows only
    assert got["wander"] >= 0.0 and 0 < got["median_s"] < 0.05
    for seconds, window in ((0.1, 0.08), (float("inf"), 0.25), (float("nan"), 0.25), ("3", None)):
        with pytest.raises(ValueError, match="at least twice"):
            noise.speed_wander(seconds, window_s=window)


# ---- flags shown to users ---------------------------------------------------------------------
def _result(noise_flags):
    from convbench.selection import select_winners
    from convbench.spec import ConvSpec
    from convbench.suites import suite_from_specs
    from convbench.sweeping import SweepResult

    spec = ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3, name="p")
    recs = [{"problem": "p", "device": "cpu", "spec_key": spec.key, "candidate": c, "backend": c.split(":")[0],
             "algorithm": "x", "status": "ok", "median_s": m, "ci_low_s": m * 0.99, "ci_high_s": m * 1.01,
             "gflops": 1.0, "noise": fl, "info": {}, "timestamp": "t", "label": "l"}
            for c, m, fl in (("a:x@cpu", 1e-3, noise_flags), ("b:x@cpu", 2e-3, []))]
    return SweepResult(None, recs, select_winners(recs), {"device": "cpu"}, suite_from_specs([spec]))


def test_winners_table_flags_a_noisy_winner():
    from convbench.sweeping.winners import format_winners, winner_legend, winner_rows

    rows = winner_rows(_result(["steal", "tick"]))
    assert rows[0][3].endswith(" !") and rows[0][-1] == "steal, tick"
    legend = winner_legend(rows)
    assert "steal:" in legend["noise"] and "!" in legend["median"]
    assert "1 ok records carry noise flags" in format_winners(_result(["steal"]))
    clean = winner_rows(_result([]))
    assert not clean[0][3].endswith("!") and clean[0][-1] == "-"
    assert "noise" not in winner_legend(clean)


def test_html_report_flags_a_noisy_winner(tmp_path):
    pytest.importorskip("matplotlib")
    from test_compare_calibrated import _rec, _write

    from convbench import report as rp

    fast = dict(_rec("p0", [[1e-3] * 3] * 2), noise=["steal", "tick"])
    slow = _rec("p0", [[3e-3] * 3] * 2, cand="numpy-direct:einsum@cpu")
    run = _write(tmp_path, "R", [fast, slow])
    html = rp.html_report(run, tmp_path / "r.html").read_text()
    assert "noisy: steal, tick" in html and "what may have spoiled the winner" in html


# ---- the machine-speed benchmarks, briefly (slow: they time for seconds) ----------------------
def _bench(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_canary_tracking_benchmark_divides_each_kernel_by_each_canary():
    pytest.importorskip("torch", reason="the benchmark times torch convolutions")
    res = _bench("canary_tracking").run(threads=1, seconds=3.5)
    nwin, rows = res["windows"][1.0]
    assert nwin == 3 and 5.0 not in res["windows"]          # too short for 5-s windows
    assert set(rows) == {"conv3x3", "depthwise3x3", "conv1x1", "simd", "python", "gemm128"}
    assert set(rows["conv3x3"]) == {"raw", "simd", "python", "gemm128"}
    assert "simd" not in rows["simd"] and all(v >= 0 for v in rows["conv3x3"].values())
    assert all(0 < ms < 50 for ms in res["canary_ms"].values())


@pytest.mark.slow
def test_machine_speed_benchmark_times_fresh_processes():
    ms = _bench("machine_speed")
    fresh = ms.fresh_processes(2, with_torch=False)
    assert list(fresh) == ["canary"]
    f = fresh["canary"]
    assert len(f["per_process_s"]) == 2 and all(len(w) == 4 for w in f["windows_s"])
    assert f["per_process_s"][0] == pytest.approx(0.5 * sum(sorted(f["windows_s"][0])[1:3]))
    assert f["between_log_sd"] >= 0 and f["max_over_min"] >= 1.0


# ---- the canary over a run ------------------------------------------------------------------------
def _canary_records(canaries, status="ok"):
    return [{"status": status, "start_time": f"2026-12-02T07:00:{i:02d}Z", "info": {"canary_s": c}}
            for i, c in enumerate(canaries)]


def test_canary_drift_over_a_run_in_the_order_timed():
    steady = [1e-4] * 20
    got = noise.canary_drift(_canary_records(steady))
    assert got == {"records": 20, "p10_s": 1e-4, "p90_s": 1e-4, "spread": 0.0, "first_s": 1e-4,
                   "last_s": 1e-4, "trend": 0.0}
    # a machine that got 1.5x slower halfway: spread and trend both say so
    recs = _canary_records([1e-4] * 10 + [1.5e-4] * 10)
    recs.reverse()                                  # file order is not time order
    got = noise.canary_drift(recs)
    assert got["first_s"] == 1e-4 and got["last_s"] == 1.5e-4
    assert got["trend"] == pytest.approx(0.5) and got["spread"] == pytest.approx(0.5)
    # not ok records, records without a canary, and too few records: nothing to judge
    mixed = _canary_records([1e-4] * 9) + _canary_records([9e-4] * 5, status="crashed") \
        + [{"status": "ok", "start_time": "2026-12-02T07:01:00Z", "info": {}}]
    assert noise.canary_drift(mixed) is None
    assert noise.canary_drift(mixed + _canary_records([1e-4]))["records"] == 10


def test_canary_drift_quantiles_ends_and_odd_records():
    import numpy as np

    vals = [1e-6 * k for k in range(1, 21)]                   # 1..20 us, in time order
    got = noise.canary_drift(_canary_records(vals))
    assert got["p10_s"] == pytest.approx(np.percentile(vals, 10))
    assert got["p90_s"] == pytest.approx(np.percentile(vals, 90))
    # at least CANARY_DRIFT_END records at each end: one odd record cannot make a trend
    assert got["first_s"] == pytest.approx(2e-6) and got["last_s"] == pytest.approx(19e-6)
    recs = _canary_records([1e-4] * 12)
    recs[-1]["info"]["canary_s"] = 5e-4
    assert noise.canary_drift(recs)["trend"] == 0.0
    # undated records count after the dated ones, in file order; bad canaries are skipped
    undated = [{"status": "ok", "info": {"canary_s": 2e-4}} for _ in range(5)]
    bad = [{"status": "ok", "start_time": "2026-12-02T06:00:00Z", "info": {"canary_s": v}}
           for v in (float("nan"), [1e-4], -1.0, True)] + [{"status": "ok", "info": "x"}]
    got = noise.canary_drift(undated + bad + _canary_records([1e-4] * 10))
    assert got["records"] == 15 and got["first_s"] == 1e-4 and got["last_s"] == 2e-4


def test_a_finished_run_warns_when_its_canary_moved(tmp_path):
    import io
    import json

    from convbench.results import RunWriter
    from convbench.sweeping.rundir import finish_run
    from test_results import meta, record

    def run(name, canaries, hosts=None):
        w = RunWriter(tmp_path / name, meta())
        for i, c in enumerate(canaries):
            r = record(problem=f"p{i}")
            r.update(start_time=f"2026-12-02T07:00:{i:02d}Z", info={"canary_s": c})
            if hosts:
                r["hostname"] = hosts[i]
            w.append(r)
        out = io.StringIO()
        finish_run(w, threads=1, stream=out)
        w.close()
        return out.getvalue(), json.loads((tmp_path / name / "meta.json").read_text())

    text, m = run("moved", [1e-4] * 6 + [1.3e-4] * 6)
    assert "the machine's own speed moved while it measured:" in text and "100-130 us" in text
    (drift,) = m["canary_drift"]
    assert drift["host"] is None and drift["trend"] == pytest.approx(0.3) and m["finished"]
    text, m = run("steady", [1e-4, 1.02e-4] * 6)
    assert "own speed moved" not in text and m["canary_drift"][0]["spread"] == pytest.approx(0.02)
    text, m = run("short", [1e-4] * 3 + [3e-4] * 3)            # too few records to judge
    assert "own speed moved" not in text and "canary_drift" not in m
    # a cluster run: two steady hosts at different speeds are not a machine that moved
    text, m = run("cluster", [1e-4] * 12 + [2e-4] * 12, hosts=["h1"] * 12 + ["h2"] * 12)
    assert "own speed moved" not in text
    assert [(d["host"], d["p10_s"]) for d in m["canary_drift"]] == [("h1", 1e-4), ("h2", 2e-4)]
    text, _ = run("cluster2", [1e-4] * 12 + [2e-4] * 6 + [3e-4] * 6, hosts=["h1"] * 12 + ["h2"] * 12)
    assert "own speed moved while it measured on h2:" in text and "on h1" not in text
