"""Environment fingerprint, env_id, thread environment and peak calibration."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from convbench import environment as envmod
from convbench.environment import (DEVICE_KEYS, FINGERPRINT_KEYS, env_id, fingerprint,
                                   measure_peak, set_thread_env)
from convbench.errors import InvalidInputError


@pytest.fixture(scope="module")
def fp():
    return fingerprint(threads=1)


def test_fingerprint_has_exactly_the_documented_keys_and_is_json(fp):
    assert tuple(fp) == FINGERPRINT_KEYS
    assert json.loads(json.dumps(fp)) == fp
    assert fp["threads"] == 1
    assert fp["numpy"] == np.__version__
    assert fp["cpu_cores_logical"] == os.cpu_count()
    assert fp["python"].endswith(".".join(map(str, sys.version_info[:3])))
    import convbench

    assert fp["convbench"] == convbench.__version__


def test_default_threads_is_usable_cores():
    assert fingerprint()["threads"] == envmod.available_cores() >= 1


@pytest.mark.skipif(shutil.which("lscpu") is None or not sys.platform.startswith("linux"),
                    reason="lscpu (independent flag source) not available")
def test_isa_flags_agree_with_lscpu(fp):
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    m = re.search(r"^Flags:\s*(.*)$", out, re.MULTILINE)
    if not m:
        pytest.skip("lscpu prints no Flags line here")
    flags = set(m.group(1).split())
    expected = [f for f in envmod.ISA_FLAGS if f in flags]
    assert fp["cpu_isa"] == expected
    m = re.search(r"^Model name:\s*(.*)$", out, re.MULTILINE)
    if m:
        assert fp["cpu_model"] == m.group(1).strip()


def test_fingerprint_does_not_import_frameworks():
    code = ("import sys, convbench.environment as e; e.fingerprint(); "
            "bad = [m for m in ('torch', 'tensorflow', 'numba', 'triton', 'pandas') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_gpu_means_nulls(fp):
    if shutil.which("nvidia-smi") is None:
        assert fp["gpu_name"] is None and fp["gpu_cc"] is None and fp["driver"] is None


def test_env_id_depends_on_the_device_part_only(fp):
    eid = env_id(fp)
    assert re.fullmatch(r"[0-9a-f]{16}", eid)
    assert env_id(dict(fp)) == eid
    # software and host name do not change the id
    assert env_id({**fp, "hostname": "elsewhere", "numpy": "0.0", "torch": None}) == eid
    # the device part does
    for key, value in [("threads", fp["threads"] + 1), ("cpu_model", "Other CPU"),
                       ("gpu_name", "Some GPU"), ("cpu_isa", fp["cpu_isa"] + ["madeup"])]:
        assert env_id({**fp, key: value}) != eid, key
    assert set(DEVICE_KEYS) <= set(FINGERPRINT_KEYS)


def test_set_thread_env():
    base = {"PATH": "/bin", "OMP_NUM_THREADS": "99"}
    env = set_thread_env(3, base)
    assert base["OMP_NUM_THREADS"] == "99"            # a copy, input untouched
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS", "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS"):
        assert env[var] == "3", var
    assert env["TF_NUM_INTEROP_THREADS"] == "2"
    assert set_thread_env(1, base)["TF_NUM_INTEROP_THREADS"] == "1"
    assert env["PATH"] == "/bin"
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(InvalidInputError, match="threads"):
            set_thread_env(bad)  # type: ignore[arg-type]


BLAS_THREADS_PROBE = r"""
import ctypes, glob, json, os, numpy
try:
    import threadpoolctl
    print(json.dumps([p["num_threads"] for p in threadpoolctl.threadpool_info()
                      if p["user_api"] == "blas"]))
    raise SystemExit
except ImportError:
    pass
libs = glob.glob(os.path.join(os.path.dirname(numpy.__file__) + ".libs", "*openblas*"))
found = []
for lib in libs:
    dll = ctypes.CDLL(lib)
    for sym in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                "openblas_get_num_threads"):
        if hasattr(dll, sym):
            found.append(getattr(dll, sym)())
            break
print(json.dumps(found))
"""


def test_thread_env_reaches_blas_in_a_child():
    counts = []
    for threads in (1, 2):
        out = subprocess.run([sys.executable, "-c", BLAS_THREADS_PROBE], capture_output=True,
                             text=True, check=True, env=set_thread_env(threads))
        counts.append(json.loads(out.stdout))
    if not counts[0]:
        pytest.skip("cannot read the BLAS thread count (no threadpoolctl, no OpenBLAS symbol)")
    assert all(n == 1 for n in counts[0])
    if os.cpu_count() and os.cpu_count() >= 2:
        assert all(n == 2 for n in counts[1])


def test_measure_peak_small():
    peak = measure_peak(1, budget_s=0.3, gemm_n=256, copy_mib=16)
    assert peak["gemm_dtype"] == "float32" and peak["gemm_n"] == 256
    assert peak["threads"] == 1
    assert peak["gemm_gflops"] > 0 and np.isfinite(peak["gemm_gflops"])
    assert peak["bandwidth_gbs"] > 0 and np.isfinite(peak["bandwidth_gbs"])
    with pytest.raises(InvalidInputError, match="threads"):
        measure_peak(0)


def test_cpu_counters_parse_proc_stat(monkeypatch):
    from convbench import environment as E

    stat = ("cpu  100 5 50 800 10 0 3 12 7 0\ncpu0 50 2 25 400 5 0 1 6 0 0\n"
            "intr 1 2 3\nprocs_running 3\nprocs_blocked 0\n")
    monkeypatch.setattr(E, "_read", lambda path: stat if path == "/proc/stat" else None)
    # total = user+nice+system+idle+iowait+irq+softirq+steal (guest is inside user)
    assert E.cpu_counters() == (12, 100 + 5 + 50 + 800 + 10 + 0 + 3 + 12, 3)
    monkeypatch.setattr(E, "_read", lambda path: None)
    assert E.cpu_counters() is None


def test_cpu_counters_on_this_machine():
    from convbench.environment import cpu_counters

    got = cpu_counters()
    if got is None:
        pytest.skip("no /proc/stat on this platform")
    steal, total, running = got
    assert 0 <= steal <= total and running >= 1


# ---- versions come from the backends' declarations ------------------------------------------
from convbench import registry  # noqa: E402
from convbench.registry import Backend, Capabilities  # noqa: E402


class VersionedBackend(Backend):
    """Declares one library version everywhere it runs, and one that only matters on cuda."""

    name = "versioned-test"
    family = "test"
    capabilities = Capabilities(devices=frozenset({"cpu", "cuda"}))
    version_distributions = {"fakelib": ("convbench-no-such-dist",),
                             "fakegpulib": ("convbench-no-such-gpu-dist",)}
    version_devices = {"fakegpulib": ("cuda",)}

    def algorithms(self, device="cpu"):
        return ["x"]

    def _prepare(self, spec, x, w, algorithm, device):  # pragma: no cover
        raise AssertionError


@pytest.fixture
def versioned_backend():
    registry.register(VersionedBackend)
    yield
    registry.unregister(VersionedBackend.name)


def test_declared_versions_join_the_fingerprint_and_the_staleness_rule(versioned_backend):
    from convbench.cache import stale_reasons

    keys = envmod.fingerprint_keys()
    assert "fakelib" in keys and "fakegpulib" in keys and keys[-1] == "convbench"
    assert envmod.FINGERPRINT_KEYS == keys
    fp = fingerprint(threads=1)
    assert tuple(fp) == keys and fp["fakelib"] is None and fp["fakegpulib"] is None
    assert "fakelib" in envmod.version_keys("cpu") and "fakegpulib" not in envmod.version_keys("cpu")
    assert "fakegpulib" in envmod.version_keys("cuda")
    old, new = {"fakelib": "1", "fakegpulib": "1"}, {"fakelib": "2", "fakegpulib": "2"}
    assert stale_reasons(old, new, "cpu") == ["fakelib: 1 -> 2"]
    assert sorted(stale_reasons(old, new, "cuda")) == ["fakegpulib: 1 -> 2", "fakelib: 1 -> 2"]
    registry.unregister(VersionedBackend.name)
    assert "fakelib" not in envmod.fingerprint_keys()


def test_cuda_runtime_falls_back_to_a_build_tag_then_the_driver(versioned_backend, monkeypatch):
    tagged = {("convbench-no-such-dist",): "2.3.0+cu121"}
    monkeypatch.setattr(envmod, "_dist_version", lambda *names: tagged.get(names))
    monkeypatch.setattr(envmod, "_blas_info", lambda: None)
    gpu = {"driver": "550.1", "driver_cuda": "12.4"}
    v = envmod._versions(gpu)
    assert v["cuda"] == "12.1" and v["fakelib"] == "2.3.0+cu121" and v["driver"] == "550.1"
    tagged.clear()
    assert envmod._versions(gpu)["cuda"] == "12.4"
    tagged[("convbench-no-such-gpu-dist",)] = "9.1"
    assert envmod._versions(gpu)["fakegpulib"] == "9.1"


def test_cpu_info_is_the_fingerprints_and_a_copy():
    info = envmod.cpu_info()
    fp = fingerprint(threads=1)
    assert (info["cpu_model"], info["cpu_isa"]) == (fp["cpu_model"], fp["cpu_isa"])
    info["cpu_isa"].append("madeup")
    assert "madeup" not in envmod.cpu_info()["cpu_isa"]


def test_machine_identity_lives_here():
    fp = fingerprint(threads=1)
    assert envmod.machine_key(fp, "cpu") == envmod.machine_key({**fp, "numpy": "0", "threads": 9}, "cpu")
    assert envmod.machine_key(fp, "cpu") != envmod.machine_key({**fp, "cpu_model": "Other"}, "cpu")
    assert envmod.machine_key(fp, "cuda") != envmod.machine_key(fp, "cpu")
    assert envmod.current_environment() is envmod.current_environment()
    assert set(envmod.current_versions()) == set(envmod.version_keys())
    assert envmod.default_threads() == envmod.available_cores()


def test_blas_is_numpys_whichever_blas_was_loaded_first(monkeypatch):
    # SciPy's own OpenBLAS may come first in threadpoolctl's list once SciPy is imported;
    # the fingerprint must still name numpy's (else cache entries look stale after a tune)
    import numpy as np
    import threadpoolctl

    from convbench import environment as E

    libs = os.path.dirname(np.__file__) + ".libs"
    pools = [
        {"user_api": "blas", "internal_api": "openblas", "version": "0.0.1-scipy",
         "filepath": "/somewhere/scipy.libs/libscipy_openblas.so", "architecture": "X"},
        {"user_api": "blas", "internal_api": "openblas", "version": "9.9.9-numpy",
         "filepath": os.path.join(libs, "libscipy_openblas64_.so"), "architecture": "Y"},
    ]
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: pools)
    assert E._blas_info() == "openblas 9.9.9-numpy (Y)"
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: pools[:1])
    assert E._blas_info() == "openblas 0.0.1-scipy (X)"  # numpy's not found: the first one
