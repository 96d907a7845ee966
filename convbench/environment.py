"""Machine and software fingerprint, thread environment, and peak-rate calibration.

Nothing here imports torch, TensorFlow, numba or triton: versions come from installed
package metadata and GPU facts from ``nvidia-smi``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from typing import Any, Mapping, MutableMapping, Optional

from .errors import ConvbenchError, InvalidInputError

#: CPU feature flags recorded in the fingerprint (x86 names from /proc/cpuinfo, plus ARM's).
ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
    "asimd", "asimdhp", "asimddp", "sve", "sve2", "bf16", "i8mm",
)

#: The part of the fingerprint that identifies the device a timing was taken on.
DEVICE_KEYS = ("cpu_model", "cpu_isa", "cpu_cores_logical", "cpu_cores_physical", "threads",
               "gpu_name", "gpu_cc")

FINGERPRINT_KEYS = (
    "hostname", "platform", "python", "cpu_model", "cpu_isa", "cpu_cores_logical",
    "cpu_cores_physical", "threads", "gpu_name", "gpu_cc", "driver", "cuda", "cudnn", "numpy",
    "blas", "scipy", "torch", "tensorflow", "numba", "triton", "convbench",
)

# Environment variables that fix thread pools; they must be set before the library loads.
_THREAD_VARS = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMEXPR_MAX_THREADS", "NUMBA_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)


# ---- threads ------------------------------------------------------------------------------
def available_cores() -> int:
    """Logical cores this process may run on (its CPU affinity), the default thread count."""
    try:
        return len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_threads(threads: Any) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidInputError(f"threads: {threads!r} must be an integer >= 1 "
                                f"(this machine has {available_cores()} usable cores)")
    return threads


def set_thread_env(threads: int, env: Optional[MutableMapping[str, str]] = None) -> dict[str, str]:
    """An environment (a copy of ``env``, default ``os.environ``) that pins every thread pool.

    Meant for a child process, which must receive it before it imports numpy or any
    framework: OpenMP, OpenBLAS, MKL, BLIS, Accelerate, numexpr and numba use ``threads``
    threads; TensorFlow uses ``threads`` intra-op and 1 (threads == 1) or 2 inter-op threads.
    """
    threads = _check_threads(threads)
    out = dict(os.environ if env is None else env)
    for var in _THREAD_VARS:
        out[var] = str(threads)
    out["TF_NUM_INTEROP_THREADS"] = "1" if threads == 1 else "2"
    out["MKL_DYNAMIC"] = "FALSE"
    out["OMP_DYNAMIC"] = "FALSE"
    return out


# ---- fingerprint --------------------------------------------------------------------------
def cpu_counters() -> Optional[tuple[int, int, int]]:
    """(steal ticks, total ticks, runnable processes) of the whole machine from /proc/stat, or
    None where there is no /proc/stat. Two readings around a measurement tell whether the
    hypervisor took CPU time (steal) or other processes were runnable meanwhile."""
    text = _read("/proc/stat")
    if not text:
        return None
    steal = total = running = None
    for line in text.splitlines():
        if line.startswith("cpu "):
            vals = [int(v) for v in line.split()[1:]]
            total = sum(vals[:8])                 # user..steal; guest time is inside user
            steal = vals[7] if len(vals) > 7 else 0
        elif line.startswith("procs_running "):
            running = int(line.split()[1])
    if steal is None or total is None or running is None:
        return None
    return steal, total, running


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _cpuinfo() -> dict[str, Any]:
    """cpu_model, cpu_isa, cpu_cores_physical from /proc/cpuinfo (Linux) or sysctl (macOS)."""
    model: Optional[str] = None
    flags: set[str] = set()
    physical: Optional[int] = None
    text = _read("/proc/cpuinfo")
    if text:
        cores = set()
        phys_id = core_id = None
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key in ("model name", "Model", "cpu model") and not model:
                model = value
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
            elif key == "physical id":
                phys_id = value
            elif key == "core id":
                core_id = value
            elif not key and phys_id is not None and core_id is not None:
                cores.add((phys_id, core_id))
                phys_id = core_id = None
        if phys_id is not None and core_id is not None:
            cores.add((phys_id, core_id))
        physical = len(cores) or None
        if not model:
            m = re.search(r"^CPU part\s*:\s*(\S+)", text, re.MULTILINE)
            if m:
                model = f"{platform.machine()} CPU part {m.group(1)}"
    elif sys.platform == "darwin":
        def sysctl(name: str) -> Optional[str]:
            try:
                return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True,
                                      timeout=5).stdout.strip() or None
            except (OSError, subprocess.SubprocessError):
                return None
        model = sysctl("machdep.cpu.brand_string")
        feats = (sysctl("machdep.cpu.features") or "") + " " + (sysctl("machdep.cpu.leaf7_features") or "")
        flags = {f.lower().replace(".", "_") for f in feats.split()}
        try:
            physical = int(sysctl("hw.physicalcpu") or 0) or None
        except ValueError:
            physical = None
        if platform.machine() == "arm64":
            flags |= {"asimd"}
    if not model:
        model = platform.processor() or platform.machine() or None
    isa = [f for f in ISA_FLAGS if f in flags]
    return {"cpu_model": model, "cpu_isa": isa, "cpu_cores_physical": physical}


def _dist_version(*names: str) -> Optional[str]:
    """Installed version of the first distribution in ``names`` that exists (no import)."""
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        except Exception:  # a broken install's metadata
            continue
    return None


def _nvidia_smi() -> dict[str, Optional[str]]:
    """gpu_name, gpu_cc, driver and the driver's CUDA version from nvidia-smi, or Nones."""
    out: dict[str, Optional[str]] = {"gpu_name": None, "gpu_cc": None, "driver": None,
                                     "driver_cuda": None}
    try:
        res = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return out
    if res.returncode != 0:
        return out
    lines = [ln for ln in res.stdout.strip().splitlines() if ln.strip()]
    if not lines:
        return out
    parts = [p.strip() for p in lines[0].split(",")]
    if len(parts) >= 3:
        names = {ln.split(",")[0].strip() for ln in lines}
        out["gpu_name"] = parts[0] if len(lines) == 1 else f"{len(lines)}x {parts[0]}" if len(names) == 1 \
            else "; ".join(ln.split(",")[0].strip() for ln in lines)
        out["gpu_cc"] = parts[1]
        out["driver"] = parts[2]
    try:
        banner = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
        m = re.search(r"CUDA Version:\s*([\d.]+)", banner)
        if m:
            out["driver_cuda"] = m.group(1)
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _blas_info() -> Optional[str]:
    """numpy's BLAS: threadpoolctl's view when installed, else numpy's build configuration."""
    try:
        import threadpoolctl  # type: ignore

        for pool in threadpoolctl.threadpool_info():
            if pool.get("user_api") == "blas":
                parts = [pool.get("internal_api"), pool.get("version")]
                arch = pool.get("architecture")
                text = " ".join(str(p) for p in parts if p)
                return f"{text} ({arch})" if arch else text
    except Exception:
        pass
    try:
        import contextlib
        import io

        import numpy as np

        with contextlib.redirect_stdout(io.StringIO()):
            cfg = np.show_config(mode="dicts")
        blas = (cfg or {}).get("Build Dependencies", {}).get("blas", {})
        if blas.get("name"):
            text = f"{blas['name']} {blas.get('version', '')}".strip()
            conf = " ".join((blas.get("openblas configuration") or "").split())
            return f"{text} ({conf})" if conf else text
    except Exception:
        pass
    return None


def _cuda_versions(torch_version: Optional[str], driver_cuda: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """CUDA runtime and cuDNN versions from installed wheels (no framework import)."""
    cuda = _dist_version("nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu12",
                         "nvidia-cuda-runtime-cu11", "nvidia-cuda-runtime")
    if cuda is None and torch_version:
        m = re.search(r"\+cu(\d+)(\d)$", torch_version)
        if m:
            cuda = f"{m.group(1)}.{m.group(2)}"
    if cuda is None:
        cuda = driver_cuda
    cudnn = _dist_version("nvidia-cudnn-cu13", "nvidia-cudnn-cu12", "nvidia-cudnn-cu11",
                          "nvidia-cudnn")
    return cuda, cudnn


def fingerprint(threads: Optional[int] = None) -> dict[str, Any]:
    """The machine and software a run was measured on (keys: FINGERPRINT_KEYS; None if absent).

    ``threads`` is the run's thread count (default: all usable cores). ``cuda`` is the CUDA
    runtime of the installed wheels (or torch's build tag, or failing both the driver's
    supported version); ``cudnn`` the installed cuDNN wheel.
    """
    import numpy as np

    from . import __version__

    threads = available_cores() if threads is None else _check_threads(threads)
    cpu = _cpuinfo()
    gpu = _nvidia_smi()
    torch_v = _dist_version("torch")
    cuda, cudnn = _cuda_versions(torch_v, gpu["driver_cuda"])
    fp = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu_model": cpu["cpu_model"],
        "cpu_isa": cpu["cpu_isa"],
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_physical": cpu["cpu_cores_physical"],
        "threads": threads,
        "gpu_name": gpu["gpu_name"],
        "gpu_cc": gpu["gpu_cc"],
        "driver": gpu["driver"],
        "cuda": cuda,
        "cudnn": cudnn,
        "numpy": np.__version__,
        "blas": _blas_info(),
        "scipy": _dist_version("scipy"),
        "torch": torch_v,
        "tensorflow": _dist_version("tensorflow", "tensorflow-cpu", "tensorflow-gpu",
                                    "tensorflow-macos", "tf-nightly", "tf-nightly-cpu"),
        "numba": _dist_version("numba"),
        "triton": _dist_version("triton", "pytorch-triton", "triton-nightly"),
        "convbench": __version__,
    }
    return fp


def env_id(fp: Mapping[str, Any]) -> str:
    """16-hex-digit hash of the device part of a fingerprint (DEVICE_KEYS)."""
    part = {k: fp.get(k) for k in DEVICE_KEYS}
    if isinstance(part.get("cpu_isa"), (list, tuple)):
        part["cpu_isa"] = sorted(part["cpu_isa"])
    blob = json.dumps(part, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---- peak rates ---------------------------------------------------------------------------
def _peak_here(threads: int, budget_s: float, gemm_n: int, copy_mib: int) -> dict[str, Any]:
    """Measure in this process (its BLAS thread count must already be fixed)."""
    import numpy as np

    deadline = time.perf_counter() + budget_s
    rng = np.random.default_rng(0)
    # GEMM: C = A @ B, float32, 2 n^3 flops; best of several calls after one warm-up call
    a = rng.standard_normal((gemm_n, gemm_n), dtype=np.float32)
    b = rng.standard_normal((gemm_n, gemm_n), dtype=np.float32)
    c = np.empty((gemm_n, gemm_n), dtype=np.float32)
    np.matmul(a, b, out=c)
    best = float("inf")
    gemm_deadline = time.perf_counter() + budget_s * 0.6
    for i in range(20):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
        if i >= 2 and time.perf_counter() > gemm_deadline:
            break
    gemm_gflops = 2.0 * gemm_n**3 / best / 1e9
    del a, b, c

    # bandwidth: copy a large buffer in `threads` chunks in parallel; bytes = read + write
    nbytes = copy_mib * 2**20
    src = np.ones(nbytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    chunks = np.array_split(np.arange(src.size), threads)
    bounds = [(int(ch[0]), int(ch[-1]) + 1) for ch in chunks if ch.size]

    def copy_chunk(lo_hi: tuple[int, int]) -> None:
        lo, hi = lo_hi
        np.copyto(dst[lo:hi], src[lo:hi])

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(copy_chunk, bounds))  # warm-up: page faults, thread start
        best_copy = float("inf")
        for i in range(20):
            t0 = time.perf_counter()
            list(pool.map(copy_chunk, bounds))
            best_copy = min(best_copy, time.perf_counter() - t0)
            if i >= 2 and time.perf_counter() > deadline:
                break
    bandwidth = 2.0 * nbytes / best_copy / 1e9
    return {"gemm_gflops": gemm_gflops, "gemm_dtype": "float32", "gemm_n": gemm_n,
            "bandwidth_gbs": bandwidth, "bandwidth_bytes": nbytes, "threads": threads}


def measure_peak(threads: int, budget_s: float = 2.0, *, gemm_n: int = 2048,
                 copy_mib: int = 256) -> dict[str, Any]:
    """The machine's measured peak rates with ``threads`` threads, in a fresh process.

    ``gemm_gflops``: numpy float32 matrix multiply (``gemm_n`` x ``gemm_n``, 2 n^3 flops),
    best of several calls after one warm-up call, BLAS pinned to ``threads`` threads.
    ``bandwidth_gbs``: best rate of copying a ``copy_mib`` MiB float64 buffer with ``threads``
    threads in parallel chunks, counting bytes read plus bytes written (write-allocate
    traffic not counted). Run in a subprocess so the thread count applies to BLAS at import.
    """
    threads = _check_threads(threads)
    if not (isinstance(budget_s, (int, float)) and budget_s > 0):
        raise InvalidInputError(f"budget_s: {budget_s!r} must be a number of seconds > 0")
    code = ("import json, sys; from convbench.environment import _peak_here; "
            f"print(json.dumps(_peak_here({threads}, {float(budget_s)!r}, {int(gemm_n)}, {int(copy_mib)})))")
    env = set_thread_env(threads)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where convbench imports from
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in [env.get("PYTHONPATH")] if p])
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                             timeout=max(120.0, 20 * budget_s))
    except subprocess.TimeoutExpired as exc:
        raise ConvbenchError(f"peak calibration did not finish in {exc.timeout:.0f} s") from exc
    if res.returncode != 0:
        raise ConvbenchError(f"peak calibration failed (exit {res.returncode}): {res.stderr.strip()[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


__all__ = ["fingerprint", "env_id", "measure_peak", "set_thread_env", "available_cores",
           "FINGERPRINT_KEYS", "DEVICE_KEYS", "ISA_FLAGS"]
