"""What benchmarks/gpu_check.sh exercises that runs without a GPU: the CUDA-event timer against
fake device clocks, the script's time limit and step bookkeeping, its Python helpers (the
shim for an uninstalled checkout, the 3x3 suite, the Triton-vs-cuDNN table) and, marked slow,
the whole script with CPU stand-ins."""
from __future__ import annotations

import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

import convbench as cb
from convbench import timing
from convbench.timing import measure

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _load(name: str) -> types.ModuleType:
    """A module of benchmarks/ (not a package), loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check_prep = _load("gpu_check_prep")
triton_vs_cudnn = _load("triton_vs_cudnn")


# ---- the CUDA-event timer ------------------------------------------------------------------
class Clocks:
    """A host clock (ns, read by the timer) and a device clock (ms, read by CUDA events)."""

    def __init__(self) -> None:
        self.host_ns = 0
        self.device_ms = 0.0

    def perf_counter_ns(self) -> int:
        return self.host_ns


@pytest.fixture
def clocks(monkeypatch):
    c = Clocks()
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter_ns=c.perf_counter_ns))
    return c


class DevicePrepared:
    """Each run() costs ``host_s`` on the host clock and ``device_s`` on the device clock."""

    def __init__(self, clocks: Clocks, host_s: float, device_s: float, timer_factory) -> None:
        self.clocks, self.host_s, self.device_s = clocks, host_s, device_s
        self.timer_factory = timer_factory
        self.info: dict = {}

    def run(self) -> None:
        self.clocks.host_ns += int(round(self.host_s * 1e9))
        self.clocks.device_ms += self.device_s * 1e3

    def synchronize(self) -> None:
        pass

    def device_timer(self):
        return self.timer_factory()


class ClockTimer(cb.DeviceTimer):
    """A DeviceTimer reading the fake device clock."""

    def __init__(self, clocks: Clocks) -> None:
        self.clocks = clocks

    def start(self) -> None:
        self.t0 = self.clocks.device_ms

    def stop(self) -> float:
        return (self.clocks.device_ms - self.t0) / 1e3


def test_measure_reports_the_device_clock_and_calibrates_loops_on_it(clocks):
    # host 10 us per call, device 5 us: a sample must last 1 ms on the device clock
    p = DevicePrepared(clocks, 10e-6, 5e-6, lambda: ClockTimer(clocks))
    r = measure(p, budget_s=0.0, min_samples=10)
    assert r.timer == "cuda_event"
    assert r.median_s == pytest.approx(5e-6)
    assert r.samples_s == [pytest.approx(5e-6)] * r.n_samples
    assert r.loops * 5e-6 >= 1e-3          # calibrated on the device clock ...
    assert r.loops * 5e-6 < 2e-3 * 1.2     # ... not on the host's, which would give 100 loops


class FakeEvent:
    """torch.cuda.Event on the fake device clock; elapsed_time needs the end event synchronized."""

    def __init__(self, clocks: Clocks, log: list, enable_timing: bool = False) -> None:
        assert enable_timing, "an event without enable_timing cannot be timed"
        self.clocks, self.log, self.t_ms, self.synced = clocks, log, None, False

    def record(self, stream=None) -> None:
        self.t_ms = self.clocks.device_ms
        self.log.append(("record", stream))

    def synchronize(self) -> None:
        self.synced = True

    def elapsed_time(self, end: "FakeEvent") -> float:
        if self.t_ms is None or end.t_ms is None or not end.synced:
            raise RuntimeError("elapsed_time on an event not recorded or not completed")
        return end.t_ms - self.t_ms


def fake_torch(clocks: Clocks, log: list) -> types.SimpleNamespace:
    cuda = types.SimpleNamespace(
        Event=lambda enable_timing=False: FakeEvent(clocks, log, enable_timing),
        current_stream=lambda device=None: ("stream", device))
    return types.SimpleNamespace(cuda=cuda)


def test_the_backends_cuda_event_timer_gives_seconds_of_device_time(clocks, monkeypatch):
    interop = importlib.import_module("convbench_backends._torch_interop")
    log: list = []
    monkeypatch.setattr(interop, "torch_module", lambda: fake_torch(clocks, log))
    p = DevicePrepared(clocks, 1e-3, 7e-6, lambda: interop.CudaEventTimer("cuda:0"))
    r = measure(p, budget_s=0.0, min_samples=12)
    assert r.timer == "cuda_event"
    assert r.median_s == pytest.approx(7e-6)      # milliseconds converted to seconds, device clock
    assert r.min_s == pytest.approx(7e-6) and r.n_samples == 12
    assert {s for _, s in log} == {("stream", "cuda:0")}  # on the device's current stream


# ---- the script: time limit, step bookkeeping -------------------------------------------------
def bash(code: str, tmp_path: Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    """Run bash code with the script sourced (its functions, not its main)."""
    full = {**os.environ, **env}
    return subprocess.run(["bash", "-c", f"source {SCRIPT}; {code}"], cwd=tmp_path, env=full,
                          capture_output=True, text=True, timeout=timeout)


def steps(out: Path) -> list[dict]:
    lines = (out / "steps.tsv").read_text().splitlines()
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"))) for line in lines[1:]]


def test_a_step_is_stopped_at_its_share_of_the_limit_and_the_next_one_runs(tmp_path):
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = bash(f"PENDING=2; init {out}; run_step sleeper 1 sleep 60; run_step after 1 true; summary",
             tmp_path, CONVBENCH_GPU_CHECK_LIMIT_S="8")
    wall = time.monotonic() - t0
    rows = steps(out)
    assert [(s["step"], s["status"]) for s in rows] == [("sleeper", "timeout"), ("after", "ok")]
    assert rows[0]["exit"] == "124"
    # its share: half (weight 1 of 2) of what was left of the 8 s when it started, which is
    # under 4 s by however long the set-up took (seconds on a loaded CI machine); SIGINT comes
    # a 1 s grace before the share ends, SIGKILL at its end
    share = float(rows[0]["timeout_s"])
    assert 2.0 <= share <= 4.3
    assert share - 1.0 - 0.3 <= float(rows[0]["wall_s"]) <= share + 0.5
    assert wall < 8 + 3
    summary = (out / "summary.txt").read_text()
    assert "COULD NOT DO (1 steps)" in summary and "- sleeper: timeout (exit 124)" in summary
    assert r.stdout.count("sleeper") >= 2     # the progress line and the summary


def test_a_failed_step_does_not_stop_the_next_and_skips_when_no_time_is_left(tmp_path):
    out = tmp_path / "out"
    r = bash(f"PENDING=3; init {out}; run_step bad 1 false; run_step good 1 true; "
             f"DEADLINE_MS=$(now_ms); run_step late 1 true; summary; echo FAILED=$FAILED",
             tmp_path, CONVBENCH_GPU_CHECK_LIMIT_S="60")
    assert [(s["step"], s["status"], s["exit"]) for s in steps(out)] == [
        ("bad", "failed", "1"), ("good", "ok", "0"), ("late", "skipped", "-")]
    assert "FAILED=2" in r.stdout
    assert "skipped: 0.000 s of the time limit left" in (out / "logs" / "late.log").read_text()


def test_an_interrupted_check_stops_its_step_skips_the_rest_and_writes_the_summary(tmp_path):
    out = tmp_path / "out"
    code = (f"PENDING=2; init {out}; trap 'INTERRUPTED=1' INT TERM; "
            f"run_step long 1 sleep 60; run_step next 1 true; summary")
    proc = subprocess.Popen(["bash", "-c", f"source {SCRIPT}; {code}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CONVBENCH_GPU_CHECK_LIMIT_S": "120"})
    deadline = time.monotonic() + 20
    while not (out / "logs").is_dir() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=30)
    rows = steps(out)
    assert [(s["step"], s["status"]) for s in rows] == [("long", "interrupted"), ("next", "skipped")]
    assert float(rows[0]["wall_s"]) < 15
    assert "COULD NOT DO (2 steps)" in (out / "summary.txt").read_text()


@pytest.mark.parametrize("backends, checks", [
    ("numpy-direct", ["check-numpy-direct"]),
    ("", ["cuda-backends", "check-tensorflow", "check-torch", "check-triton"]),  # the fallback list
])
def test_the_whole_script_under_a_tiny_limit_skips_cleanly_and_summarises(tmp_path, backends, checks):
    out = tmp_path / "gpu-out"
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60, env={**os.environ, "CONVBENCH_GPU_CHECK_LIMIT_S": "2",
                                        "CONVBENCH_GPU_CHECK_DEVICE": "cpu",
                                        "CONVBENCH_GPU_CHECK_BACKENDS": backends,
                                        "CONVBENCH_GPU_CHECK_PYTHON": sys.executable})
    assert time.monotonic() - t0 < 10
    assert r.returncode == 1
    rows = steps(out)
    names = [s["step"] for s in rows]
    assert names == ["shim", "deps", "backends", *checks, "suite-3x3", "sweep-resnet50-3x3-fp16",
                     "sweep-quick-fp32", "triton-vs-cudnn", "report"]
    assert {s["status"] for s in rows} == {"skipped"}
    summary = (out / "summary.txt").read_text()
    assert f"COULD NOT DO ({len(names)} steps)" in summary
    assert summary in r.stdout


def test_usage_error_without_an_output_folder(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "usage:" in r.stderr


# ---- the Python helpers ----------------------------------------------------------------------
def test_the_3x3_suite_holds_resnet50s_3x3_layers_with_their_counts(tmp_path, capsys):
    path = tmp_path / "r3.toml"
    assert gpu_check_prep.write_3x3_suite(str(path)) == 0
    full = cb.load_suite("resnet50")
    want = [p for p in full if p.spec.kernel_size == (3, 3)]
    got = cb.load_suite(str(path))
    assert got.name == "resnet50-3x3" and len(want) == 7
    assert [p.name for p in got] == [p.name for p in want]
    assert [p.spec for p in got] == [p.spec for p in want]
    assert [got.counts[p.name] for p in got] == [full.counts[p.name] for p in want]
    over = cb.load_suite(str(path), n=32, dtype="float16", layout="channels_last")
    assert {(s.n, s.dtype, s.layout) for s in over.specs()} == {(32, "float16", "channels_last")}


def test_shim_makes_an_uninstalled_checkout_importable_with_its_entry_points(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check_prep, "_installed_here", lambda eps: False)
    shim = tmp_path / "shim"
    assert gpu_check_prep.shim(str(shim)) == 0
    assert capsys.readouterr().out.strip() == str(shim)
    # a bare interpreter (no site-packages: nothing installed) sees the checkout through the shim
    code = ("import importlib.metadata as m, importlib.util as u, convbench_suites; "
            "eps = {e.name: e.value for e in m.entry_points(group='convbench.backends')}; "
            "print(eps['triton'], len(eps)); "
            "print(u.find_spec('convbench_backends.numpy_direct').origin); "
            "print(convbench_suites.__path__[0], u.find_spec('convbench').submodule_search_locations[0], "
            "m.version('convbench'))")
    r = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": str(shim), "PATH": os.environ.get("PATH", "")}, timeout=60)
    assert r.returncode == 0, r.stderr
    first, origin, paths = r.stdout.splitlines()
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["convbench.backends"]
    assert first == f"convbench_backends.triton_backend:TritonBackend {len(declared)}"
    assert Path(origin).resolve() == REPO / "backends" / "numpy_direct.py"
    suites, package, version = paths.split()
    assert (Path(suites).resolve(), Path(package).resolve()) == (REPO / "suites", REPO / "convbench")
    assert version == cb.__version__


def test_no_shim_when_convbench_is_installed_from_this_checkout(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check_prep, "_installed_here", lambda eps: True)
    assert gpu_check_prep.shim(str(tmp_path / "shim")) == 0
    assert capsys.readouterr().out == "" and not (tmp_path / "shim").exists()


def test_deps_fails_when_a_required_module_is_missing(monkeypatch, capsys):
    assert gpu_check_prep.deps() == 0
    monkeypatch.setitem(gpu_check_prep.REQUIRED, "no_such_module_xyz", "a test")
    assert gpu_check_prep.deps() == 1
    assert "cannot run convbench: missing no_such_module_xyz" in capsys.readouterr().out


def test_cuda_backends_are_those_declaring_the_cuda_device(capsys):
    assert gpu_check_prep.cuda_backends() == 0
    names = capsys.readouterr().out.split()
    assert names == [n for n in cb.list_backends() if "cuda" in cb.get_backend(n).capabilities.devices]
    assert "torch" in names and "numpy-direct" not in names


# ---- the Triton-vs-cuDNN table -----------------------------------------------------------------
def rec(problem, backend, algorithm, gflops, dtype="float16", device="cuda", status="ok", info=None):
    return {"suite": "s", "problem": problem, "backend": backend, "algorithm": algorithm,
            "device": device, "status": status, "gflops": gflops, "spec_dtype": dtype,
            "info": info or {}}


def test_compare_pairs_the_best_of_each_side_per_layer_and_math_mode():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame([
        rec("a", "triton", "igemm-m64n64k32w4s3", 100.0), rec("a", "triton", "igemm-m32n32k32w2s2", 150.0),
        rec("a", "torch", "cudnn", 200.0), rec("a", "torch", "cudnn-channels-last", 300.0),
        rec("a", "torch", "cudnn-benchmark", 900.0, status="wrong"),     # not ok: never counts
        rec("a", "torch", "default", 999.0, device="cpu"),               # not cuda
        rec("a", "tensorflow", "eager", 999.0),                          # neither side
        rec("b", "triton", "igemm-m64n64k32w4s3", 50.0, dtype="float32"),
        rec("b", "triton", "igemm-m64n64k32w4s3-tf32", 80.0, dtype="float32"),
        rec("b", "torch", "cudnn", 25.0, dtype="float32", info={"layout_conversion_in_run": ["input"]}),
        rec("b", "torch", "cudnn-tf32", 160.0, dtype="float32"),
        rec("c", "triton", "igemm-m64n64k32w4s3", 10.0),                 # no cuDNN result
    ])
    rows = {(r["layer"], r["math"]): r for r in triton_vs_cudnn.compare(df)}
    assert set(rows) == {("a", "float16"), ("b", "float32"), ("b", "tf32"), ("c", "float16")}
    a = rows[("a", "float16")]
    assert (a["triton"], a["cudnn"], a["ratio"]) == ("igemm-m32n32k32w2s2", "cudnn-channels-last", 0.5)
    b32, b_tf32 = rows[("b", "float32")], rows[("b", "tf32")]
    assert b32["ratio"] == 2.0 and b32["note"] == "cuDNN times a layout conversion"
    assert (b_tf32["triton"], b_tf32["cudnn"]) == ("igemm-m64n64k32w4s3-tf32", "cudnn-tf32")
    assert b_tf32["ratio"] == 0.5 and b_tf32["note"] == "" and rows[("c", "float16")]["ratio"] is None
    text = triton_vs_cudnn.render(list(rows.values()))
    assert "s float16: triton/cuDNN geometric mean 0.50 over 1 layers" in text
    assert "s tf32: triton/cuDNN geometric mean 0.50 over 1 layers" in text


def test_the_table_says_there_is_nothing_to_compare_on_cpu_records(monkeypatch, capsys):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame([rec("a", "torch", "default", 5.0, device="cpu")])
    monkeypatch.setattr(cb, "load_results", lambda runs: df, raising=False)
    assert triton_vs_cudnn.main(["somewhere"]) == 0
    assert capsys.readouterr().out.startswith("nothing to compare: no ok cuda records")


def test_the_table_prints_the_rows_and_writes_them_as_csv(tmp_path, monkeypatch, capsys):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame([rec("a", "triton", "igemm-m64n64k32w4s3", 300.0), rec("a", "torch", "cudnn", 200.0)])
    monkeypatch.setattr(cb, "load_results", lambda runs: df, raising=False)
    assert triton_vs_cudnn.main(["runs", "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "igemm-m64n64k32w4s3" in out and "1.50" in out
    assert pd.read_csv(tmp_path / "t.csv")["ratio"].tolist() == [1.5]


def test_the_table_reports_unreadable_runs_without_a_traceback(tmp_path, capsys):
    assert triton_vs_cudnn.main([str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err


# ---- the whole script with CPU stand-ins (slow: about 30 s on 2 cores) ---------------------------
@pytest.mark.slow
def test_the_whole_script_with_cpu_stand_ins(tmp_path):
    out = tmp_path / "gpu-out"
    r = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=400, env={**os.environ, "CONVBENCH_GPU_CHECK_LIMIT_S": "300",
                                         "CONVBENCH_GPU_CHECK_DEVICE": "cpu",
                                         "CONVBENCH_GPU_CHECK_BACKENDS": "numpy-im2col",
                                         "CONVBENCH_GPU_CHECK_N": "1",
                                         "CONVBENCH_GPU_CHECK_BUDGET": "0.01",
                                         "CONVBENCH_GPU_CHECK_PYTHON": sys.executable})
    assert r.returncode == 0, r.stdout + r.stderr
    assert {s["status"] for s in steps(out)} == {"ok"}
    df = cb.load_results(str(out / "runs"))
    assert set(df["suite"]) == {"resnet50-3x3", "quick"}
    r3 = df[df["suite"] == "resnet50-3x3"]
    assert len(r3) == 7 and set(r3["spec_dtype"]) == {"float16"}
    assert set(r3["spec_layout"]) == {"channels_last"}
    assert set(df.loc[df["suite"] == "quick", "spec_dtype"]) == {"float32"}
    assert (out / "report.html").stat().st_size > 1000
    assert (out / "triton_vs_cudnn.txt").read_text().startswith("nothing to compare")
    assert "every step ended ok" in (out / "summary.txt").read_text()
