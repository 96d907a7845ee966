"""Machine and software fingerprint, machine identity, thread environment, peak calibration.

Nothing here imports a framework: versions come from the installed package metadata of the
distributions the registered backends declare (``Backend.version_distributions``), GPU facts
from ``nvidia-smi``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
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

#: The fingerprint's keys before the software versions.
MACHINE_KEYS = ("hostname", "platform", "python", "cpu_model", "cpu_isa", "cpu_cores_logical",
                "cpu_cores_physical", "threads", "gpu_name", "gpu_cc")

_CPU, _CUDA, _BOTH = frozenset({"cpu"}), frozenset({"cuda"}), frozenset({"cpu", "cuda"})
#: Versions the core records whatever backends are registered: fingerprint key ->
#: (distributions to read it from, the devices whose winners a change of it can overturn).
#: ``driver`` is the GPU driver, ``cuda`` the CUDA runtime, ``blas`` numpy's BLAS.
CORE_VERSIONS = {"driver": ((), _CUDA), "cuda": ((), _CUDA), "numpy": (("numpy",), _BOTH),
                 "blas": ((), _CPU), "scipy": (("scipy",), _CPU), "convbench": ((), _BOTH)}

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
    hypervisor took CPU time (steal) or other processes were runnable meanwhile
    (:mod:`convbench.noise` judges them)."""
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


def _parse_cpuinfo(text: str) -> tuple[Optional[str], set[str], Optional[int]]:
    """(model, flags, physical cores) from the text of Linux's /proc/cpuinfo."""
    model: Optional[str] = None
    flags: set[str] = set()
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
    if not model:
        m = re.search(r"^CPU part\s*:\s*(\S+)", text, re.MULTILINE)
        if m:
            model = f"{platform.machine()} CPU part {m.group(1)}"
    return model, flags, len(cores) or None


def _sysctl_cpuinfo() -> tuple[Optional[str], set[str], Optional[int]]:
    """(model, flags, physical cores) from macOS's sysctl."""
    def sysctl(name: str) -> Optional[str]:
        try:
            return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None
    feats = (sysctl("machdep.cpu.features") or "") + " " + (sysctl("machdep.cpu.leaf7_features") or "")
    flags = {f.lower().replace(".", "_") for f in feats.split()}
    if platform.machine() == "arm64":
        flags |= {"asimd"}
    try:
        physical = int(sysctl("hw.physicalcpu") or 0) or None
    except ValueError:
        physical = None
    return sysctl("machdep.cpu.brand_string"), flags, physical


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, Any]:
    text = _read("/proc/cpuinfo")
    model, flags, physical = (None, set(), None)
    if text:
        model, flags, physical = _parse_cpuinfo(text)
    elif sys.platform == "darwin":
        model, flags, physical = _sysctl_cpuinfo()
    model = model or platform.processor() or platform.machine() or None
    return {"cpu_model": model, "cpu_isa": tuple(f for f in ISA_FLAGS if f in flags),
            "cpu_cores_physical": physical}


def cpu_info() -> dict[str, Any]:
    """This machine's ``cpu_model``, ``cpu_isa`` (the ISA_FLAGS it has, in that order) and
    ``cpu_cores_physical``, read once per process (/proc/cpuinfo on Linux, sysctl on macOS)."""
    info = _cpuinfo()
    return {**info, "cpu_isa": list(info["cpu_isa"])}


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

        import numpy as np

        # numpy's own BLAS: SciPy and frameworks may load other BLAS builds, and which comes
        # first depends on import order (SciPy's OpenBLAS 0.3.30 beside numpy's 0.3.31 here)
        pools = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
        numpy_dir = os.path.dirname(np.__file__)
        mine = [p for p in pools if str(p.get("filepath", "")).startswith((numpy_dir, numpy_dir + ".libs"))]
        for pool in (mine or pools)[:1]:
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


# ---- software versions --------------------------------------------------------------------
def version_declarations() -> dict[str, tuple[tuple[str, ...], frozenset]]:
    """Every software version the fingerprint records: key -> (distributions, first installed
    one wins; the devices whose winners a change of that version can overturn), in order.

    The core's own (CORE_VERSIONS, ``convbench`` last) and what each registered backend
    declares in ``version_distributions``; a backend's versions matter on the devices it runs
    on unless its ``version_devices`` narrows a key. Backends that fail to load are left out.
    """
    from . import registry

    dists = {k: list(names) for k, (names, _) in CORE_VERSIONS.items()}
    devices = {k: set(devs) for k, (_, devs) in CORE_VERSIONS.items()}
    for name in registry.list_backends():
        try:
            backend = registry.get_backend(name)
        except ConvbenchError:
            continue
        for key, names in backend.version_distributions.items():
            names = (names,) if isinstance(names, str) else tuple(names)
            have = dists.setdefault(key, [])
            have.extend(n for n in names if n not in have)
            narrowed = backend.version_devices.get(key)
            devices.setdefault(key, set()).update(narrowed or backend.capabilities.devices)
    order = [k for k in dists if k != "convbench"] + ["convbench"]
    return {k: (tuple(dists[k]), frozenset(devices[k])) for k in order}


def version_keys(device: Optional[str] = None) -> tuple[str, ...]:
    """The fingerprint's software-version keys; with ``device``, only those whose change can
    overturn a winner measured on that device."""
    return tuple(k for k, (_, devs) in version_declarations().items()
                 if device is None or device in devs)


def fingerprint_keys() -> tuple[str, ...]:
    """The keys of :func:`fingerprint`, in its order (the registered backends add versions)."""
    return MACHINE_KEYS + version_keys()


def __getattr__(name: str) -> Any:
    if name == "FINGERPRINT_KEYS":  # computed on use: the registered backends declare part of it
        return fingerprint_keys()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_CUDA_TAG = re.compile(r"\+cu(\d+)(\d)$")


def _versions(gpu: Mapping[str, Optional[str]]) -> dict[str, Optional[str]]:
    """Every declared version (package metadata, no import), plus the core's own sources."""
    import numpy as np

    from . import __version__

    out = {k: _dist_version(*names) for k, (names, _) in version_declarations().items()}
    out.update(driver=gpu["driver"], numpy=np.__version__, blas=_blas_info(), convbench=__version__)
    if out["cuda"] is None:  # no runtime wheel: a build tag such as "2.3.0+cu121", else the driver's
        tags = (_CUDA_TAG.search(v) for v in out.values() if isinstance(v, str))
        m = next((t for t in tags if t), None)
        out["cuda"] = f"{m.group(1)}.{m.group(2)}" if m else gpu["driver_cuda"]
    return out


def fingerprint(threads: Optional[int] = None) -> dict[str, Any]:
    """The machine and software a run was measured on (keys: fingerprint_keys(); None if absent).

    ``threads`` is the run's thread count (default: all usable cores). ``cuda`` is the CUDA
    runtime of the installed wheels (or a declared version's ``+cuXY`` build tag, or failing
    both the driver's supported version).
    """
    threads = available_cores() if threads is None else _check_threads(threads)
    cpu = cpu_info()
    gpu = _nvidia_smi()
    machine = {
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
    }
    return {**machine, **_versions(gpu)}

def env_id(fp: Mapping[str, Any]) -> str:
    """16-hex-digit hash of the device part of a fingerprint (DEVICE_KEYS)."""
    part = {k: fp.get(k) for k in DEVICE_KEYS}
    if isinstance(part.get("cpu_isa"), (list, tuple)):
        part["cpu_isa"] = sorted(part["cpu_isa"])
    blob = json.dumps(part, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---- machine identity ---------------------------------------------------------------------
#: The thread count a sweep uses by default: every core this process may run on.
default_threads = available_cores


def machine_key(env: Mapping[str, Any], device: str) -> str:
    """16-hex key of the hardware that decides the winner: CPU model + ISA, or GPU name + cc."""
    blob = json.dumps(_machine_parts(env, device), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _machine_parts(env: Mapping[str, Any], device: str) -> dict[str, Any]:
    if device == "cuda":
        return {"gpu_name": env.get("gpu_name"), "gpu_cc": _str_or_none(env.get("gpu_cc"))}
    isa = env.get("cpu_isa") or []
    if isinstance(isa, str):
        isa = isa.replace(",", " ").split()
    return {"cpu_model": env.get("cpu_model"), "cpu_isa": sorted(str(f) for f in isa)}


def machine_description(env: Mapping[str, Any], device: str) -> str:
    """A human-readable name for the machine key's hardware."""
    p = _machine_parts(env, device)
    if device == "cuda":
        return f"{p['gpu_name'] or 'unknown GPU'} (cc {p['gpu_cc'] or '?'})"
    isa = ",".join(p["cpu_isa"]) or "no ISA flags"
    return f"{p['cpu_model'] or 'unknown CPU'} ({isa})"


def _str_or_none(v: Any) -> Optional[str]:
    return None if v is None else str(v)


_FP_MEMO: dict[Optional[int], dict[str, Any]] = {}
_FP_LOCK = threading.Lock()


def current_environment(threads: Optional[int] = None) -> dict[str, Any]:
    """This machine's :func:`fingerprint`, taken once per process and thread count."""
    with _FP_LOCK:
        if threads in _FP_MEMO:
            return _FP_MEMO[threads]
    fp = fingerprint(threads)
    with _FP_LOCK:
        return _FP_MEMO.setdefault(threads, fp)


def versions_from_environment(env: Mapping[str, Any]) -> dict[str, Optional[str]]:
    """The software versions of a fingerprint (version_keys()), as strings (None where absent)."""
    return {k: _str_or_none(env.get(k)) for k in version_keys()}


def current_versions(device: str = "cpu") -> dict[str, Optional[str]]:
    """The software versions installed now, in the fingerprint's format (read once per process).

    ``device`` is accepted for symmetry with the staleness rule; every version is returned.
    """
    return versions_from_environment(current_environment())


# ---- peak rates ---------------------------------------------------------------------------
#: dtypes the roofs are measured for (numpy's GEMM covers the first two; int8 in GOP/s)
ROOF_DTYPES = ("float32", "float64", "bfloat16", "float16", "int8")
#: ISA flag -> {dtype: flops per cycle per core}, the best flag present wins. Assumes two FMA
#: units per core (one on some parts: a roof, not a promise); AVX-512 BF16/FP16 dot products
#: double float32's rate, AMX tiles do 1024 bf16/fp16 multiply-adds per cycle.
#: int8 counts 2 ops per multiply-add: AMX TMUL 1024 MACs per cycle; VNNI ``vpdpbusd`` 64 MACs
#: (zmm, avx512_vnni) or 32 (ymm, avx_vnni) per instruction, two per cycle; without VNNI the
#: ``vpmaddubsw`` + ``vpmaddwd`` + ``vpaddd`` sequence, 3 instructions per 64 (zmm) or 32 (ymm)
#: MACs on two ports (its u8 x s8 pairs saturate at int16: engines' peak, not an exact one);
#: Arm ``smmla`` (i8mm) 32 and ``sdot`` (asimddp) 16 MACs per 128-bit instruction, two per cycle.
FMA_FLOPS_PER_CYCLE = (
    ("amx_int8", {"int8": 2048}), ("avx512_vnni", {"int8": 256}), ("avx_vnni", {"int8": 128}),
    ("avx512bw", {"int8": 256 / 3}), ("avx2", {"int8": 128 / 3}),
    ("i8mm", {"int8": 128}), ("asimddp", {"int8": 64}),
    ("amx_bf16", {"bfloat16": 2048}), ("amx_fp16", {"float16": 2048}),
    ("avx512_bf16", {"bfloat16": 128}), ("avx512_fp16", {"float16": 128}),
    ("avx512f", {"float32": 64, "float64": 32}),
    ("fma", {"float32": 32, "float64": 16}),
    ("avx", {"float32": 16, "float64": 8}),
    ("sse4_2", {"float32": 8, "float64": 4}),
    ("asimd", {"float32": 16, "float64": 8}),
)


def fma_flops_per_cycle(isa: Any) -> dict[str, float]:
    """Flops (int8: integer ops) per cycle per core by dtype that the ISA flags allow
    (FMA_FLOPS_PER_CYCLE); a float dtype without its own instructions runs at the float32
    rate; int8 is left out without integer multiply-add instructions."""
    flags = set(isa or ())
    out: dict[str, float] = {}
    for flag, rates in FMA_FLOPS_PER_CYCLE:
        if flag in flags:
            for dtype, rate in rates.items():
                out.setdefault(dtype, rate)
    if "float32" in out:
        for dtype in ("bfloat16", "float16"):
            out.setdefault(dtype, out["float32"])
    return out


def fma_peak(isa: Any, clock_mhz: Optional[float], cores: int) -> dict[str, float]:
    """dtype -> GFLOP/s (int8: GOP/s): the ISA's FMA peak at ``clock_mhz`` on ``cores``
    physical cores."""
    if not clock_mhz or cores < 1:
        return {}
    return {d: f * clock_mhz / 1e3 * cores for d, f in fma_flops_per_cycle(isa).items()}


def _numpy_gemm(dtype: str, n: int, budget_s: float) -> Optional[float]:
    """numpy's matrix multiply in ``dtype`` (float32/float64): best of several, GFLOP/s."""
    import numpy as np

    if dtype not in ("float32", "float64"):
        return None
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype=dtype)
    np.matmul(a, b, out=c)
    best, deadline = float("inf"), time.perf_counter() + budget_s
    for i in range(20):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
        if i >= 2 and time.perf_counter() > deadline:
            break
    return 2.0 * n**3 / best / 1e9


def _backend_gemms(dtype: str, threads: int, budget_s: float) -> dict[str, float]:
    """What each available registered backend that declares a GEMM rate measures for ``dtype``."""
    from . import registry

    out: dict[str, float] = {}
    for name in registry.list_backends():
        try:
            b = registry.get_backend(name)
            if type(b).gemm_rate is registry.Backend.gemm_rate or not b.available():
                continue
            rate = b.gemm_rate(dtype, threads, budget_s)
        except Exception:  # noqa: BLE001 - a roof candidate that fails is left out
            continue
        if rate and rate > 0:
            out[name] = float(rate)
    return out


def _roofs(threads: int, budget_s: float, gemm_n: int) -> dict[str, Any]:
    """Per dtype: every GEMM rate measured, the best (the GEMM roof) and the FMA peak."""
    from .noise import cpu_freqs_mhz

    roofs: dict[str, Any] = {}
    for dtype in ROOF_DTYPES:
        rates = {}
        np_rate = _numpy_gemm(dtype, gemm_n if dtype == "float32" else 1024, budget_s)
        if np_rate:
            rates["numpy"] = np_rate
        rates.update(_backend_gemms(dtype, threads, budget_s))
        roofs[dtype] = {"gemm_rates": rates}
        if rates:
            src = max(rates, key=rates.__getitem__)
            roofs[dtype].update(gemm_gflops=rates[src], gemm_source=src)
    freqs = cpu_freqs_mhz()  # right after the GEMMs: the clock under load
    clock = max(freqs) if freqs else None
    cores = min(threads, cpu_info()["cpu_cores_physical"] or threads)
    for dtype, peak in fma_peak(cpu_info()["cpu_isa"], clock, cores).items():
        roofs.setdefault(dtype, {"gemm_rates": {}})["fma_gflops"] = peak
    return {"roofs": roofs, "clock_mhz": clock, "fma_cores": cores}


def _peak_here(threads: int, budget_s: float, gemm_n: int, copy_mib: int) -> dict[str, Any]:
    """Measure in this process (its thread pools must already be fixed)."""
    import numpy as np

    found = _roofs(threads, budget_s * 0.1, gemm_n)
    f32 = found["roofs"].get("float32") or {}
    deadline = time.perf_counter() + budget_s * 0.4

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
    return {"gemm_gflops": f32.get("gemm_gflops"), "gemm_dtype": "float32",
            "gemm_source": f32.get("gemm_source"), "gemm_n": gemm_n,
            "numpy_gemm_gflops": (f32.get("gemm_rates") or {}).get("numpy"),
            **found, "bandwidth_gbs": bandwidth, "bandwidth_bytes": nbytes, "threads": threads}


def measure_peak(threads: int, budget_s: float = 2.0, *, gemm_n: int = 2048,
                 copy_mib: int = 256) -> dict[str, Any]:
    """The machine's measured peak rates with ``threads`` threads, in a fresh process.

    ``roofs``: per dtype (ROOF_DTYPES), ``gemm_rates`` (numpy's matrix multiply for float32
    and float64, and every available backend's declared ``Backend.gemm_rate``), the best of
    them as ``gemm_gflops`` with its ``gemm_source``, and ``fma_gflops``: the ISA's FMA peak
    (:func:`fma_peak`) at the clock the OS reports right after the GEMMs (``clock_mhz``) on
    ``fma_cores`` physical cores; for int8 both are GOP/s (an int8 x int8 -> int32 GEMM, the
    ISA's integer multiply-add peak). Each GEMM is the best of several calls after a warm-up.
    ``gemm_gflops``/``gemm_source``: the float32 GEMM roof (``numpy_gemm_gflops``: numpy's
    own, ``gemm_n`` x ``gemm_n``).
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


__all__ = ["fingerprint", "env_id", "measure_peak", "fma_peak", "fma_flops_per_cycle", "ROOF_DTYPES",
           "set_thread_env", "available_cores",
           "cpu_info", "cpu_counters", "fingerprint_keys", "version_declarations", "version_keys",
           "machine_key", "machine_description", "current_environment", "current_versions",
           "versions_from_environment", "default_threads", "DEVICE_KEYS", "ISA_FLAGS",
           "MACHINE_KEYS", "CORE_VERSIONS"]
