"""`convbench sweep` end to end: run directory, records, winners, statuses, dry run, resume."""
from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


from convbench import ConvSpec, registry  # noqa: E402
from convbench.errors import ConvbenchError  # noqa: E402
from convbench.results import META_FIELDS, RECORD_FIELDS, TIMING_FIELDS, read_records  # noqa: E402
from convbench.selection import select_winners  # noqa: E402
from convbench.suites import suite_from_specs  # noqa: E402

NUMPY = ["numpy-im2col", "numpy-direct"]
PEAK = {"gemm_gflops": 50.0, "gemm_dtype": "float32", "bandwidth_gbs": 5.0}

TINY = """
[suite]
name = "tiny"
description = "two tiny problems for the tests"
source = "made up for tests/test_sweep.py"

[defaults]
n = 1
dtype = "float32"

[[problem]]
name = "two-d"
c_in = 2
c_out = 3
input_size = [6, 6]
kernel_size = 3
padding = 1

[[problem]]
name = "one-d"
c_in = 3
c_out = 2
input_size = [12]
kernel_size = 3
stride = 2
"""


def cli(*args: str, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE] + [p for p in sys.path if p]))
    return subprocess.run([sys.executable, "-m", "convbench", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def needs_numpy_backends():
    missing = [b for b in NUMPY if b not in registry.list_backends()]
    if missing:
        pytest.skip(f"numpy backends not in this build: {missing}")


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
    p = tmp_path_factory.mktemp("suite") / "tiny.toml"
    p.write_text(TINY)
    return p


@pytest.fixture(scope="module")
def cli_run(tiny_suite, tmp_path_factory):
    """One real CLI sweep shared by several tests (it is the slow part)."""
    needs_numpy_backends()
    out = tmp_path_factory.mktemp("results")
    res = cli("sweep", str(tiny_suite), "--backends", *NUMPY, "--budget", "0.05", "--threads", "1",
              "--out", str(out), "--no-cache", cwd=str(out))
    assert res.returncode == 0, res.stderr
    runs = list(out.iterdir())
    assert len(runs) == 1
    return res, runs[0]


def describe_candidates() -> set[str]:
    cands = set()
    for name in NUMPY:
        b = registry.get_backend(name)
        cands |= {f"{name}:{a}@cpu" for a in b.algorithms("cpu")}
    return cands


def test_cli_sweep_writes_the_run_directory(cli_run):
    res, run_dir = cli_run
    assert re.fullmatch(r"\d{8}-\d{6}-tiny-[0-9a-f]{6}", run_dir.name)
    assert sorted(p.name for p in run_dir.iterdir()) == ["meta.json", "records.jsonl"]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert set(META_FIELDS) <= set(meta)
    assert meta["run_id"] == run_dir.name and meta["suite"] == "tiny"
    assert meta["threads"] == 1 and meta["budget_s"] == 0.05 and meta["device"] == "cpu"
    assert meta["strategy"] == "exhaustive" and meta["seed"] == 0 and meta["finished"]
    assert meta["command"][:2] == ["convbench", "sweep"]
    assert re.fullmatch(r"[0-9a-f]{16}", meta["env_id"]) and meta["environment"]["threads"] == 1
    assert meta["peak"]["gemm_gflops"] > 0 and meta["peak"]["bandwidth_gbs"] > 0
    assert meta["problems"] == 2 and meta["candidates"] == len(describe_candidates())
    assert isinstance(meta["shuffle_seed"], int)


def test_cli_sweep_records(cli_run):
    _, run_dir = cli_run
    meta = json.loads((run_dir / "meta.json").read_text())
    recs = read_records(run_dir)
    pairs = [(r["problem"], r["candidate"]) for r in recs]
    expected = {(p, c) for p in ("two-d", "one-d") for c in describe_candidates()}
    assert len(pairs) == len(set(pairs)) and set(pairs) == expected
    for r in recs:
        assert list(r) == list(RECORD_FIELDS)
        assert r["status"] == "ok", r["message"]
        spec = ConvSpec.from_dict(r["spec"])
        assert r["spec_key"] == spec.key and r["flops"] == spec.flops and r["bytes"] == spec.bytes
        assert r["run_id"] == meta["run_id"] and r["env_id"] == meta["env_id"] and r["threads"] == 1
        assert r["max_error"] <= r["tolerance"] == 1e-4
        assert len(r["samples_s"]) == r["n_samples"] >= 10
        assert r["ci_low_s"] <= r["median_s"] <= r["ci_high_s"] and r["min_s"] <= r["median_s"]
        assert r["gflops"] == pytest.approx(spec.flops / r["median_s"] / 1e9)
        assert r["peak_pct"] == pytest.approx(r["gflops"] / meta["peak"]["gemm_gflops"] * 100)
        assert r["timer"] == "perf_counter" and r["cold_cache"] is False and r["wall_s"] > 0


def test_cli_sweep_prints_the_winners(cli_run):
    res, run_dir = cli_run
    lines = res.stdout.splitlines()
    assert lines[0].split()[:4] == ["problem", "shape", "winner", "median"]
    winners = select_winners(read_records(run_dir))
    for problem in ("two-d", "one-d"):
        row = next(line for line in lines if line.startswith(problem + " "))
        w = winners[(problem, "cpu")]
        assert w.candidate in row and w.runner_up in row
        assert f"{w.margin * 100:+.1f}%" in row
    assert "6 records" in res.stdout or f"{len(read_records(run_dir))} records" in res.stdout
    # progress went to stderr, one line per candidate (not a terminal)
    assert len([ln for ln in res.stderr.splitlines() if re.match(r"\[\d+/\d+\] ", ln)]) == 2 * len(describe_candidates())


def test_resume_of_a_finished_run_adds_nothing_and_conflicts_are_errors(cli_run, tmp_path):
    _, run_dir = cli_run
    before = (run_dir / "records.jsonl").read_bytes()
    res = cli("sweep", "--resume", str(run_dir), "--threads", "2", "--no-cache")
    assert res.returncode == 2 and "threads=2 conflicts with the run's threads=1" in res.stderr
    res = cli("sweep", "--resume", str(run_dir), "--backends", "numpy-fft", "--no-cache")
    assert res.returncode == 2 and "conflicts" in res.stderr
    res = cli("sweep", "--resume", str(run_dir), "--no-cache", "--quiet")
    assert res.returncode == 0, res.stderr
    assert (run_dir / "records.jsonl").read_bytes() == before
    assert len(json.loads((run_dir / "meta.json").read_text())["resumed"]) == 1


def test_dry_run_writes_nothing(tiny_suite, tmp_path):
    needs_numpy_backends()
    out = tmp_path / "out"
    res = cli("sweep", str(tiny_suite), "--backends", "numpy-im2col", "--dry-run", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert not out.exists()
    assert "dry run: 2 problems x 1 candidates = 2 pairs: run 2" in res.stdout
    assert "two-d" in res.stdout and "one-d" in res.stdout


def test_spec_descriptor_and_errors(capsys):
    from convbench.cli import main

    needs_numpy_backends()
    assert main(["sweep", "--spec", 'mb1ic2ih5oc2kh3n"d1"', "--backends", "numpy-im2col", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "d1" in out and "1 problems x 1 candidates" in out
    for argv, message in ((["--backends", "numpy-im2col", "--dry-run"], "give a SUITE"),
                          (["quick", "--backends", "no-such-*", "--dry-run"], "matches no backend"),
                          (["no-such-suite", "--dry-run"], "shipped suites: ")):
        assert main(["sweep", *argv]) == 2
        assert message in capsys.readouterr().err


# ---- every status is data; the sweep goes on -------------------------------------------------
def test_statuses_are_recorded_and_the_sweep_goes_on(fakes, tmp_path):
    from convbench.strategies import STRATEGIES
    from convbench.sweeping import sweep

    calls = []

    def spy(pool, problem_name, spec, candidates, make_task, emit):
        calls.append((problem_name, sorted(map(str, candidates))))
        STRATEGIES["exhaustive"](pool, problem_name, spec, candidates, make_task, emit)

    STRATEGIES["spy"] = spy
    try:
        suite = suite_from_specs([
            ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3, name="plain"),
            ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3, stride=2, name="strided"),
        ])
        res = sweep(suite, backends=["fake-ok", "fake-crash", "fake-oom", "fake-wrong", "fake-raises",
                                     "fake-unavailable", "fake-nostride"],
                    threads=1, budget_s=0.05, timeout_s=60, out=tmp_path, progress=False,
                    update_cache=False, strategy="spy", peak=PEAK, min_samples=5)
    finally:
        del STRATEGIES["spy"]
    status = {(r["problem"], r["candidate"]): r["status"] for r in res.records}
    assert len(status) == len(res.records) == 2 * 11
    for p in ("plain", "strided"):
        assert status[(p, "fake-ok:default@cpu")] == "ok"
        for algo in ("abort", "segfault", "exit"):
            assert status[(p, f"fake-crash:{algo}@cpu")] == "crashed"
        assert status[(p, "fake-oom:memoryerror@cpu")] == "oom"
        assert status[(p, "fake-oom:cuda-message@cpu")] == "oom"
        assert status[(p, "fake-wrong:plain@cpu")] == "wrong"
        assert status[(p, "fake-raises:default@cpu")] == "error"
        assert status[(p, "fake-unavailable:default@cpu")] == "unavailable"
    assert status[("plain", "fake-nostride:default@cpu")] == "ok"
    assert status[("strided", "fake-nostride:default@cpu")] == "unsupported"
    by_pair = {(r["problem"], r["candidate"]): r for r in res.records}
    assert "fakelib is not installed" in by_pair[("plain", "fake-unavailable:default@cpu")]["message"]
    assert "stride" in by_pair[("strided", "fake-nostride:default@cpu")]["message"]
    for r in res.records:
        if r["status"] != "ok":
            assert all(r[k] is None for k in TIMING_FIELDS)
    wrong = by_pair[("plain", "fake-wrong:plain@cpu")]
    assert wrong["max_error"] > wrong["tolerance"]
    # the strategy saw only the runnable candidates (no unavailable/unsupported ones)
    assert [c for _, c in calls if "fake-unavailable:default@cpu" in c] == []
    strided = dict(calls)["strided"]
    assert "fake-nostride:default@cpu" not in strided and "fake-ok:default@cpu" in strided
    # winners come only from ok records
    assert {w.candidate for w in res.winners.values()} <= {"fake-ok:default@cpu", "fake-nostride:default@cpu"}
    assert res.run_dir is not None and read_records(res.run_dir) == res.records


def test_winners_reach_the_cache_as_problems_finish_so_an_interrupt_keeps_them(fakes, tmp_path):
    from convbench import cache as C
    from convbench.strategies import STRATEGIES
    from convbench.sweeping import sweep

    seen = []

    def stop_at_second(pool, problem_name, spec, candidates, make_task, emit):
        if seen:
            raise KeyboardInterrupt  # Ctrl-C while the second problem is measured
        seen.append(problem_name)
        STRATEGIES["exhaustive"](pool, problem_name, spec, candidates, make_task, emit)

    STRATEGIES["stop-at-second"] = stop_at_second
    specs = [ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3, name="a"),
             ConvSpec(n=1, c_in=2, c_out=3, input_size=(5, 5), kernel_size=3, name="b")]
    cpath = tmp_path / "tuned.sqlite"
    try:
        with pytest.raises(KeyboardInterrupt):
            sweep(suite_from_specs(specs), backends=["fake-ok"], threads=1, budget_s=0.02,
                  out=tmp_path, progress=False, strategy="stop-at-second", peak=PEAK,
                  min_samples=5, cache=cpath)
    finally:
        del STRATEGIES["stop-at-second"]
    (done,) = seen
    finished = next(s for s in specs if s.name == done)
    (e,) = C.TunedCache(cpath).entries()
    assert e.spec_key == finished.key and e.candidate == "fake-ok:default@cpu"
    assert set(e.timings) == {"fake-ok:default@cpu"} and e.median_s > 0


def test_a_garbage_cache_stops_the_sweep_before_measuring_and_is_left_alone(fakes, tmp_path):
    from convbench.errors import CacheError
    from convbench.sweeping import sweep

    bad = tmp_path / "tuned.sqlite"
    bad.write_bytes(b"not a database, " * 100)
    before = bad.read_bytes()
    out = tmp_path / "runs"
    with pytest.raises(CacheError, match="tuned.sqlite"):
        sweep(suite_from_specs([ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3)]),
              backends=["fake-ok"], threads=1, budget_s=0.02, out=out, progress=False, peak=PEAK,
              cache=bad)
    assert bad.read_bytes() == before
    assert not out.exists()                      # nothing was measured or written


def test_unknown_strategy_and_bad_budget(tmp_path):
    import convbench
    import convbench.sweeping  # noqa: F401 - the module has its own name: convbench.sweep stays the function
    from convbench.sweeping import sweep

    suite = suite_from_specs([ConvSpec(n=1, c_in=1, c_out=1, input_size=(4,), kernel_size=3)])
    with pytest.raises(ConvbenchError, match="not a strategy"):
        convbench.sweep(suite, strategy="nope", out=tmp_path, dry_run=True)
    with pytest.raises(ConvbenchError, match="budget"):
        sweep(suite, budget_s=0, out=tmp_path, dry_run=True)


# ---- kill -9 and --resume --------------------------------------------------------------------
def test_resume_after_a_simulated_kill(fakes, tmp_path):
    """A run cut off mid-record (partial last line, meta not finished) is completed by resume."""
    from convbench.results import ResultsWarning
    from convbench.sweeping import sweep

    suite = suite_from_specs([ConvSpec(n=1, c_in=1, c_out=2, input_size=(6,), kernel_size=3, name=f"p{i}")
                              for i in range(3)])
    kw = dict(threads=1, budget_s=0.02, out=tmp_path, progress=False, update_cache=False, peak=PEAK,
              min_samples=3)
    first = sweep(suite, backends=["fake-ok", "fake-nostride", "fake-unavailable"], **kw)
    rec_file = first.run_dir / "records.jsonl"
    lines = rec_file.read_text().splitlines(keepends=True)
    assert len(lines) == 9
    kept = lines[:4]
    rec_file.write_text("".join(kept) + lines[4][:30])  # killed while writing the fifth record
    meta = json.loads((first.run_dir / "meta.json").read_text())
    meta["finished"] = None
    (first.run_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConvbenchError, match="seed=3 conflicts"):
        sweep(None, resume=first.run_dir, seed=3, **kw)
    with pytest.warns(ResultsWarning, match="truncated last line"):
        again = sweep(None, resume=first.run_dir.name, **kw)  # a run id under `out` works too
    after = read_records(first.run_dir)
    assert after[:4] == [json.loads(ln) for ln in kept]
    pairs = [(r["problem"], r["candidate"]) for r in after]
    assert len(pairs) == len(set(pairs)) == 9 and len(again.records) == 9
    assert {(r["problem"], r["candidate"]) for r in first.records} == set(pairs)
    meta = json.loads((first.run_dir / "meta.json").read_text())
    assert meta["finished"] and meta["shuffle_seed"] == first.meta["shuffle_seed"]


@pytest.mark.slow
def test_kill_9_then_resume_loses_at_most_the_record_in_flight(tmp_path):
    needs_numpy_backends()
    suite = tmp_path / "four.toml"
    body = "[suite]\nname = \"four\"\n[defaults]\nn = 1\nc_in = 2\nc_out = 2\n"
    for i in range(4):
        body += f"[[problem]]\nname = \"p{i}\"\ninput_size = [{8 + i}, {8 + i}]\nkernel_size = 3\n"
    suite.write_text(body)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE] + [p for p in sys.path if p]))
    proc = subprocess.Popen([sys.executable, "-m", "convbench", "sweep", str(suite), "--backends", *NUMPY,
                             "--budget", "0.1", "--threads", "1", "--out", str(out), "--no-cache"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 240
    records_file = None
    try:
        while time.monotonic() < deadline:
            runs = list(out.glob("*/records.jsonl")) if out.exists() else []
            if runs and runs[0].read_text().count("\n") >= 3:
                records_file = runs[0]
                break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        assert records_file is not None, "the sweep never wrote 3 records"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    run_dir = records_file.parent
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a truncated last line is allowed here
        before = read_records(run_dir)
    announced = [ln for ln in err.splitlines() if re.match(r"\[\d+/\d+\] ", ln)]
    # each progress line is printed right after its record was made durable: none was lost
    assert len(announced) <= len(before) <= len(announced) + 1
    total = 4 * len(describe_candidates())
    assert len(before) < total
    assert json.loads((run_dir / "meta.json").read_text())["finished"] is None

    res = cli("sweep", "--resume", str(run_dir), "--no-cache")
    assert res.returncode == 0, res.stderr
    after = read_records(run_dir)
    assert after[:len(before)] == before  # nothing rewritten
    pairs = [(r["problem"], r["candidate"]) for r in after]
    assert len(pairs) == len(set(pairs)) == total  # every pair once: the lost one re-measured
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["finished"] and len(meta["resumed"]) == 1
    assert {r["run_id"] for r in after} == {meta["run_id"]}


@pytest.mark.slow
def test_parent_never_imports_frameworks(tmp_path):
    pytest.importorskip("torch", reason="torch not installed")
    code = textwrap.dedent(f"""
        import sys
        import convbench
        res = convbench.sweep("quick", backends=["torch", "tensorflow", "numpy-im2col"], dry_run=True,
                              progress=False, out={str(tmp_path)!r})
        assert any(e.status == "run" and e.candidate.backend == "torch" for e in res.plan), res.plan
        bad = [m for m in ("torch", "tensorflow", "jax") if m in sys.modules]
        assert not bad, bad
        print("clean")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "clean" in out.stdout, out.stderr


# ---- what a newcomer meets: --resume of the wrong folder, output at 80 columns --------------
def test_resume_of_the_out_folder_names_its_runs(cli_run):
    _, run_dir = cli_run
    res = cli("sweep", "--resume", str(run_dir.parent), "--no-cache")
    assert res.returncode == 2
    assert run_dir.name in res.stderr and "holds runs, not a run" in res.stderr
    assert f"--resume {run_dir}" in res.stderr


def test_find_run_dir_lists_the_most_recent_run_first(tmp_path):
    from convbench.errors import ResultsError
    from convbench.sweeping.options import find_run_dir

    for i, name in enumerate(["20260101-000000-a-000001", "20250101-000000-b-000002", "notes"]):
        (tmp_path / name).mkdir()
        if name != "notes":
            meta = tmp_path / name / "meta.json"
            meta.write_text("{}")
            os.utime(meta, (1000 + i * 100, 1000 + i * 100))  # b was written last
    with pytest.raises(ResultsError) as err:
        find_run_dir(tmp_path, tmp_path)
    msg = str(err.value)
    assert msg.index("20250101-000000-b-000002") < msg.index("20260101-000000-a-000001")
    assert "notes" not in msg
    assert find_run_dir("20260101-000000-a-000001", tmp_path) == tmp_path / "20260101-000000-a-000001"


def test_fit_fields_drops_whole_fields_never_cuts_one():
    from convbench.sweeping.progress import fit_fields

    fields = [(2, "problem 3/10"), (1, "ds_cnn.conv_ds_1.depthwise"), (0, "numpy-direct:tensordot@cpu")]
    assert fit_fields(fields, 200) == "problem 3/10 ds_cnn.conv_ds_1.depthwise numpy-direct:tensordot@cpu"
    assert fit_fields(fields, 60) == "ds_cnn.conv_ds_1.depthwise numpy-direct:tensordot@cpu"
    assert fit_fields(fields, 40) == "numpy-direct:tensordot@cpu"
    assert fit_fields(fields, 10) == "numpy-direct:tensordot@cpu"  # the candidate always stays whole


class _Terminal:
    """A stream that says it is a terminal and keeps what is written."""

    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return True


def test_plain_progress_line_fits_the_terminal(monkeypatch):
    from convbench.sweeping.progress import Progress

    monkeypatch.setenv("COLUMNS", "80")
    term = _Terminal()
    prog = Progress(True, 12, term, use_rich=False)
    prog.set_total(480)
    cand = "numpy-fft:rfft-precomputed-weights@cpu"
    for i in range(3):
        prog.start(11, "resnet50.layer3.0.downsample.conv", cand)
        prog.finish_one({"status": "ok", "problem": "p", "candidate": cand, "median_s": 1e-3}, True)
    prog.close()
    shown = [seg for seg in term.text.replace("\x1b[K", "").split("\r") if seg]
    assert shown and all(len(seg) < 80 for seg in shown)
    assert all(cand in seg for seg in shown)


def _result_with(records, suite):
    from convbench.sweeping import SweepResult

    return SweepResult(None, records, select_winners(records), {"device": "cpu", "suite": "t",
                                                                 "threads": 1}, suite)


def _rec(problem, cand, median, half_ci, spec):
    backend, algorithm = cand.split("@")[0].split(":")
    return {"problem": problem, "candidate": cand, "backend": backend, "algorithm": algorithm,
            "device": "cpu", "spec_key": spec.key, "status": "ok", "median_s": median,
            "ci_low_s": median - half_ci, "ci_high_s": median + half_ci, "gflops": 1.0,
            "timestamp": "2026-01-01T00:00:00Z"}


def test_winners_table_fits_80_columns_with_a_legend(monkeypatch, capsys):
    from convbench.cli.sweep import print_result

    specs = [ConvSpec(n=32, c_in=256, c_out=256, input_size=(56, 56), kernel_size=3, padding=1,
                      name="layer1.0.conv2.depthwise"),
             ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3, name="small")]
    a, b, c = "numpy-direct:tensordot@cpu", "numpy-fft:rfft-precomputed-weights@cpu", "numpy-im2col:gemm@cpu"
    s0, s1 = specs[0].replace(name=""), specs[1].replace(name="")
    records = [_rec(specs[0].name, a, 1.0e-3, 1e-5, s0), _rec(specs[0].name, b, 2.0e-3, 1e-5, s0),
               _rec("small", a, 1.0e-3, 1e-4, s1), _rec("small", c, 1.05e-3, 1e-4, s1)]
    result = _result_with(records, suite_from_specs(specs))

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setenv("COLUMNS", "80")
    print_result(result)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    rows = [line for line in lines if line.startswith(specs[0].name)]
    assert len(rows) == 1 and a in rows[0]                          # the name whole, on its row
    assert any(line.startswith("small ") and "tie (2)" in line for line in lines)
    assert any(line.startswith("verdict: ") for line in lines)        # the legend says what it means
    assert "decisive: the winner's 95% confidence interval" in text
    assert "tie (N): N candidates' medians lie within" in text  # the new tie rule: minimum effect
    assert "close:" not in text                                       # only verdicts shown are explained
    assert "Not shown for lack of width: shape, GFLOP/s" in text


def test_verdicts():
    from types import SimpleNamespace as W

    from convbench.sweeping.winners import verdict

    assert verdict(W(runner_up=None, decisive=True, tied=["a"], candidate="a")) == "only one ok"
    assert verdict(W(runner_up="b", decisive=True, tied=["a"], candidate="a")) == "decisive"
    assert verdict(W(runner_up="b", decisive=False, tied=["a"], candidate="a")) == "close"
    assert verdict(W(runner_up="b", decisive=False, tied=["a", "b"], candidate="a")) == "tie (2)"
    assert verdict(W(runner_up="a", decisive=False, tied=["a", "b"], candidate="b")) == "tie (2), robust pick"


def test_sweep_options_are_validated_in_one_place():
    from convbench.sweeping.options import SweepOptions

    for kw, message in (({"threads": 0}, "threads: 0"), ({"device": "tpu"}, "device: 'tpu'"),
                        ({"timeout_s": -1}, "timeout: -1.0"), ({"threads": "many"}, "threads: 'many'"),
                        ({"min_samples": 0}, "min_samples: 0")):
        with pytest.raises(ConvbenchError, match=re.escape(message)):
            SweepOptions.from_arguments(**{"threads": 1, **kw})
    opts = SweepOptions.from_arguments(threads=2, budget_s=None, backends="numpy-*", max_call_s=0)
    assert opts.budget_s == 0.2 and opts.backends == ("numpy-*",)
    assert opts.task_settings()["max_call_s"] is None                 # 0: no per-call limit


def test_rounds_setting_reaches_the_records_and_the_run(fakes, tmp_path):
    from convbench.strategies import STRATEGIES
    from convbench.sweeping import sweep

    suite = suite_from_specs([ConvSpec(n=1, c_in=2, c_out=2, input_size=(5, 5), kernel_size=3, name="a")])
    res = sweep(suite, backends=["fake-ok"], threads=1, budget_s=0.03, out=tmp_path, progress=False,
                peak=PEAK, rounds=3, update_cache=False)
    (rec,) = [r for r in res.records if r["status"] == "ok"]
    assert len(rec["round_medians_s"]) == 3 and len(rec["round_samples_s"]) == 3
    assert res.meta["rounds"] == 3
    with pytest.raises(ConvbenchError, match="rounds"):  # a resumed run keeps its settings
        sweep(resume=res.run_dir, rounds=4, out=tmp_path, progress=False, update_cache=False)
    for bad in (0, 101, 2.5, "many"):
        with pytest.raises(ConvbenchError, match="rounds"):
            sweep(suite, rounds=bad, out=tmp_path / "x", dry_run=True)

    def six_arguments(pool, problem_name, spec, candidates, make_task, emit):
        STRATEGIES["exhaustive"](pool, problem_name, spec, candidates, make_task, emit)

    STRATEGIES["six"] = six_arguments
    try:
        with pytest.raises(ConvbenchError, match="takes no rounds"):
            sweep(suite, backends=["fake-ok"], threads=1, strategy="six", rounds=3,
                  out=tmp_path / "six", progress=False, peak=PEAK, update_cache=False)
        assert not (tmp_path / "six").exists()
    finally:
        del STRATEGIES["six"]
