"""Sweeps on a Dask cluster: a real scheduler and real workers (LocalCluster, or `dask
scheduler` / `dask worker` subprocesses on loopback), one of them killed with SIGKILL."""
from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest

pytest.importorskip("distributed")

from convbench import ConvSpec, registry  # noqa: E402
from convbench.errors import ConvbenchError  # noqa: E402
from convbench.results import load_results, read_meta, read_records  # noqa: E402
from convbench.suites import suite_from_specs  # noqa: E402

NUMPY = ["numpy-im2col", "numpy-direct"]
PEAK = {"gemm_gflops": 50.0, "gemm_dtype": "float32", "bandwidth_gbs": 5.0}
#: lock leases of a dead worker expire quickly in these tests
LEASE_ENV = {"DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_TIMEOUT": "5s",
             "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_VALIDATION_INTERVAL": "1s"}


def needs_numpy_backends():
    missing = [b for b in NUMPY if b not in registry.list_backends()]
    if missing:
        pytest.skip(f"numpy backends not in this build: {missing}")


def suite(n_problems: int):
    return suite_from_specs([ConvSpec(n=1, c_in=2 + i, c_out=3, input_size=(8 + i, 8 + i), kernel_size=3,
                                      padding=1, name=f"p{i}") for i in range(n_problems)])


def parse(t: str) -> dt.datetime:
    return dt.datetime.fromisoformat(t.replace("Z", "+00:00"))


def check_run(run_dir, n_problems: int) -> list[dict]:
    """Every (problem, candidate, machine) exactly once; no two problems' timings overlap on
    a host (a problem's candidates are measured in interleaved rounds by one process, so
    their windows overlap each other by design, never another problem's)."""
    recs = read_records(run_dir)
    triples = Counter((r["problem"], r["candidate"], r["machine"]) for r in recs)
    assert max(triples.values()) == 1
    machines = {r["machine"] for r in recs}
    n_cands = len({r["candidate"] for r in recs})
    assert len(triples) == n_problems * n_cands * len(machines)
    spans: dict = {}
    for r in recs:
        assert r["hostname"] and r["machine"] == r["env_id"]
        if r["status"] == "ok":
            s, e = spans.get((r["hostname"], r["problem"], r["machine"]), (parse(r["start_time"]),) * 2)
            spans[r["hostname"], r["problem"], r["machine"]] = (min(s, parse(r["start_time"])),
                                                                max(e, parse(r["end_time"])))
    by_host: dict = {}
    for (host, _, _), window in spans.items():
        by_host.setdefault(host, []).append(window)
    for windows in by_host.values():
        windows.sort()
        for (s1, e1), (s2, e2) in zip(windows, windows[1:]):
            assert s1 <= e1 <= s2 <= e2, "two timings overlapped on one host"
    return recs


@pytest.mark.slow
def test_local_cluster_sweep_names_machines_and_caches_their_winners(tmp_path):
    needs_numpy_backends()
    from convbench.cache import open_cache
    from convbench.environment import machine_key
    from convbench.report import machine_winners
    from convbench.sweeping import sweep

    res = sweep(suite(3), backends=NUMPY, threads=1, budget_s=0.02, out=tmp_path, progress=False,
                peak=PEAK, cache=tmp_path / "cache.db", scheduler="local:2")
    recs = check_run(res.run_dir, 3)
    assert len(recs) == len(res.records)
    meta = read_meta(res.run_dir)
    assert meta["cluster"]["scheduler"] == "local:2" and meta["cluster"]["dropped_duplicates"] == 0
    (mid, machine), = meta["machines"].items()
    assert machine["peak"] == PEAK and machine["environment"]["threads"] == 1
    assert machine["hostnames"] == [socket.gethostname()]
    df = load_results(res.run_dir)
    assert set(df["machine"]) == {mid} and set(df["hostname"]) == {socket.gethostname()}
    table = machine_winners(res.run_dir)  # read from disk: in suite order
    assert list(table["problem"]) == ["p0", "p1", "p2"] and set(table["agree"]) == {"-"}
    entries = open_cache(tmp_path / "cache.db").entries()
    assert len(entries) == 3
    assert {e.machine for e in entries} == {machine_key(machine["environment"], "cpu")}
    assert "p0" in res.table() and "the winner on machine" in res.table()


def _start(args, env, prefix=()):
    return subprocess.Popen([*prefix, sys.executable, "-m", "distributed.cli." + args[0], *args[1:]],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(pred, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def dask_cluster():
    """A `dask scheduler` subprocess on loopback; start_worker() adds a `dask worker` (no nanny:
    killing it kills the worker); everything is killed at the end."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, **LEASE_ENV, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    procs = [_start(["dask_scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], env)]

    def start_worker(wait_for: int, prefix=(), worker_env=None) -> subprocess.Popen:
        from distributed import Client

        procs.append(_start(["dask_worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                             "--host", "127.0.0.1"], worker_env or env, prefix=prefix))
        with Client(address, timeout="60s") as c:
            c.wait_for_workers(wait_for, timeout=60)
        return procs[-1]

    try:
        yield address, env, start_worker
    finally:
        for p in reversed(procs):
            p.kill()
            p.wait()


def _sweep_cli(address, env, out, *extra):
    specs = [a for i in range(4) for a in ("--spec", f"mb1ic{4 + i}ih{24 + 2 * i}oc8kh3ph1n\"q{i}\"")]
    return subprocess.Popen([sys.executable, "-m", "convbench", "sweep", "--scheduler", address, "-b", *NUMPY,
                             *specs, "--budget", "0.3", "--threads", "1", "--out", str(out), "--no-cache",
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _records(out) -> int:
    return sum(len(read_records(r)) for r in out.glob("*/") if (r / "records.jsonl").exists())


@pytest.mark.slow
def test_worker_killed_part_way_costs_only_the_measurement_in_flight(dask_cluster, tmp_path):
    """One `dask worker` measures alone; a second joins; the first is SIGKILLed mid-sweep. The
    run finishes on the second with every (problem, candidate, machine) exactly once."""
    needs_numpy_backends()
    address, env, start_worker = dask_cluster
    first = start_worker(1)
    out = tmp_path / "res"
    sweeper = _sweep_cli(address, env, out)
    _wait_for(lambda: out.exists() and _records(out) >= 3, 240, "three records")
    start_worker(2)
    at_kill = _records(out)
    os.kill(first.pid, signal.SIGKILL)
    log, _ = sweeper.communicate(timeout=400)
    assert sweeper.returncode == 0, log
    run_dir, = [r for r in out.iterdir() if r.is_dir()]
    recs = check_run(run_dir, 4)
    assert len(recs) == 4 * 3 and at_kill < len(recs)
    assert {r["status"] for r in recs} == {"ok"}
    assert read_meta(run_dir)["cluster"]["dropped_duplicates"] <= 1
    assert "winner on machine" in log


@pytest.mark.slow
def test_killed_client_resumes_the_run_on_the_cluster(dask_cluster, tmp_path):
    needs_numpy_backends()
    address, env, start_worker = dask_cluster
    start_worker(1)
    out = tmp_path / "res"
    sweeper = _sweep_cli(address, env, out)
    _wait_for(lambda: out.exists() and _records(out) >= 3, 240, "three records")
    sweeper.kill()
    sweeper.wait()
    run_dir, = [r for r in out.iterdir() if r.is_dir()]
    before = len(read_records(run_dir))
    assert before < 4 * 3
    res = subprocess.run([sys.executable, "-m", "convbench", "sweep", "--resume", str(run_dir), "--no-cache"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "--scheduler" in res.stderr
    resumed = _sweep_cli(address, env, out, "--resume", str(run_dir))
    log, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, log
    recs = check_run(run_dir, 4)
    assert len(recs) == 4 * 3 and read_meta(run_dir)["resumed"]


@pytest.mark.slow
def test_two_machine_types_side_by_side_each_with_its_own_backends(dask_cluster, tmp_path):
    """Two Dask workers on this host as two machine types (one pinned to one core, so its
    sweep runs 1 thread; one without scipy): each problem is measured on both, the worker
    without scipy records scipy-fft as unavailable, the host lock keeps their timings apart."""
    needs_numpy_backends()
    from convbench.environment import available_cores
    from convbench.report import machine_winners
    from convbench.sweeping import sweep

    if available_cores() < 2 or not shutil.which("taskset"):
        pytest.skip("needs 2 cores and taskset")
    address, env, start_worker = dask_cluster
    start_worker(1)
    no_scipy = tmp_path / "no_scipy" / "scipy"
    no_scipy.mkdir(parents=True)
    (no_scipy / "__init__.py").write_text("raise ImportError('no scipy on this machine')\n")
    start_worker(2, prefix=("taskset", "-c", "0"),
                 worker_env=dict(env, PYTHONPATH=os.pathsep.join([str(no_scipy.parent), env["PYTHONPATH"]])))
    res = sweep(suite(2), backends=["numpy-direct", "scipy-fft"], budget_s=0.05, out=tmp_path, progress=False,
                peak=PEAK, update_cache=False, scheduler=address)
    meta = read_meta(res.run_dir)
    by_threads = {m["threads"]: mid for mid, m in meta["machines"].items()}
    assert set(by_threads) == {1, available_cores()}
    recs = check_run(res.run_dir, 2)
    status = {(r["machine"], r["candidate"]): r["status"] for r in recs}
    assert {status[by_threads[1], c] for c in ("scipy-fft:rfft@cpu", "scipy-fft:rfft-precomputed-weights@cpu")} \
        == {"unavailable"}
    assert status[by_threads[available_cores()], "scipy-fft:rfft@cpu"] == "ok"
    table = machine_winners(res.run_dir)
    assert len(table) == 2 and len([c for c in table.columns if c.endswith(" median_s")]) == 2
    assert res.winners == {}  # winners per (problem, device) would mix the machines
    from convbench.report import html_report

    page = html_report(res.run_dir, tmp_path / "report.html").read_text()
    assert "Winners per machine" in page and "same winner" in page
    printed = subprocess.run([sys.executable, "-m", "convbench", "report", str(res.run_dir)], env=env,
                             capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0 and "Winners per machine" in printed.stdout, printed.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gpu_problems_need_a_gpu_worker():
    from distributed import Client, LocalCluster

    from convbench.sweeping.distributed import discover

    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cl, Client(cl) as c:
        (m,) = discover(c, 1, "cpu").values()
        if not m.gpu:  # no GPU here and no GPU resource: cuda problems have nowhere to go
            with pytest.raises(ConvbenchError, match="GPU"):
                discover(c, 1, "cuda")
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0",
                      resources={"GPU": 1}) as cl, Client(cl) as c:
        (m,) = discover(c, 1, "cuda").values()
        assert m.gpu and m.threads == 1


def test_scheduler_addresses_and_settings_are_checked(tmp_path):
    from convbench.sweeping import sweep
    from convbench.sweeping.cluster_run import cluster_settings
    from convbench.sweeping.distributed import connect

    for bad in ("local:0", "local:x", "localhost:8786", "tcp://"):
        with pytest.raises(ConvbenchError, match="--scheduler"):
            connect(bad)
    with pytest.raises(ConvbenchError, match="--dry-run"):
        sweep(suite(1), backends=NUMPY, scheduler="local:1", dry_run=True, out=tmp_path, progress=False)

    class Resumed:
        run_dir = tmp_path
        meta = {"cluster": {"spread": False, "threads": None}}

    assert cluster_settings(Resumed, False, 4) == (False, None)
    with pytest.raises(ConvbenchError, match="--spread"):
        cluster_settings(Resumed, True, None)
    Resumed.meta = {}
    with pytest.raises(ConvbenchError, match="one machine"):
        cluster_settings(Resumed, False, None)


def test_machine_winners_side_by_side_marks_disagreement():
    import pandas as pd

    from convbench.report import machine_winners, winners

    def rec(problem, cand, machine, host, median):
        return {"run_id": "r", "problem": problem, "candidate": cand, "device": "cpu", "status": "ok",
                "median_s": median, "ci_low_s": median * 0.99, "ci_high_s": median * 1.01,
                "machine": machine, "hostname": host, "threads": 2, "label": problem, "spec_key": problem,
                "backend": cand.split(":")[0], "timestamp": "2026-01-01T00:00:00Z"}

    df = pd.DataFrame([rec("a", "x:1@cpu", "m1", "h1", 1.0), rec("a", "y:1@cpu", "m1", "h1", 2.0),
                       rec("a", "x:1@cpu", "m2", "h2", 2.0), rec("a", "y:1@cpu", "m2", "h2", 1.0),
                       rec("b", "x:1@cpu", "m1", "h1", 1.0), rec("b", "x:1@cpu", "m2", "h2", 1.0),
                       rec("c", "x:1@cpu", "m1", "h1", 1.0)])
    t = machine_winners(df)
    assert list(t.columns) == ["problem", "device", "label", "h1", "h1 median_s", "h2", "h2 median_s", "agree"]
    assert list(t["h1"]) == ["x:1@cpu", "x:1@cpu", "x:1@cpu"]
    assert list(t["h2"][:2]) == ["y:1@cpu", "x:1@cpu"] and pd.isna(t["h2"].iloc[2])
    assert list(t["agree"]) == ["NO", "yes", "-"]
    w = winners(df)  # one machine's records never decide another's winner
    assert set(zip(w["problem"], w["machine"], w["winner"])) >= {("a", "m1", "x:1@cpu"), ("a", "m2", "y:1@cpu")}
    # two machine types on one host (e.g. different thread counts) get distinct labels
    df2 = df.assign(hostname="h", threads=[1, 1, 2, 2, 1, 2, 1])
    assert [c for c in machine_winners(df2).columns if "median" not in c][3:5] == ["h 1t", "h 2t"]
