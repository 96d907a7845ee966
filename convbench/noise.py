"""What spoils timings, detected and recorded.

Read around every timing (:func:`snapshot` before and after, :func:`facts` between them) and
from its samples (:func:`tick_quantum`):

* **steal**: the share of the machine's CPU time the hypervisor took (``/proc/stat``);
* **busy**: other processes used the CPUs while it was timed: the machine's busy CPU time
  (``/proc/stat``) minus the measuring process's own (``os.times``), over the timing's wall
  time, above :data:`BUSY_LOAD` cores on average (measured on a 2-vCPU Intel Xeon @ 2.60GHz
  guest, torch conv timed at 2 threads: -0.12..+0.04 cores quiet, 0.37..1.04 cores with one
  process spinning beside it, 0.08 s and 0.5 s windows);
* **tick**: samples that fall on multiples of the scheduler tick (1/HZ) over several distinct
  multiples: the clock only saw the timed code between ticks (a descheduled guest);
* **throttle**: the CPU's thermal throttle counters grew during the timing;
* **freq**: the CPU clock changed by more than :data:`FREQ_CHANGE` during the timing;
* **drift** (set by the rounds, :mod:`convbench.strategies`): the interquartile range of the
  round medians exceeds :data:`DRIFT` of their median (``round_quartile_spread``). Not the
  slowest round over the fastest: with ten rounds one disturbed window passes 10% easily
  (that rule flagged 20 of 29 records of a quiet A/A pair of ``quick`` sweeps, this one 1 of
  58 records there, and 26 of 29 of a sweep with a process spinning beside it; 2-vCPU Intel Xeon @ 2.60GHz).

:func:`flags` turns facts into the flag names stored in each record's ``noise`` field;
:func:`system_state` and :func:`advice` are what ``convbench doctor`` prints.
Everything here reads Linux's /proc and /sys where present and is silent elsewhere.
"""
from __future__ import annotations

import glob
import math
import os
import platform
import statistics
import time
from typing import Any, Mapping, Optional, Sequence

#: flag name -> what it means (the legend of tables and reports)
FLAGS = {
    "steal": "the hypervisor took more than 5% of the CPU time while it was timed",
    "busy": "other processes used the CPUs while it was timed (the machine was shared)",
    "tick": "samples fell on multiples of the scheduler tick: the process was descheduled",
    "throttle": "the CPU's thermal throttle counters grew while it was timed",
    "freq": "the CPU clock changed by more than 10% while it was timed",
    "drift": "its round medians' interquartile range exceeds 10% of their median",
}
STEAL_PCT = 5.0
FREQ_CHANGE = 0.10
DRIFT = 0.10
#: other processes' CPU use (cores, averaged over the timing) above which a timing is "busy"
BUSY_LOAD = 0.3
#: scheduler tick periods to look for (HZ = 100, 250, 300, 1000), largest first
TICKS_S = (10e-3, 4e-3, 1 / 300, 1e-3)
_CPU = "/sys/devices/system/cpu"


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _ints(paths: Sequence[str]) -> list[int]:
    out = []
    for p in paths:
        text = _read(p)
        if text is not None and text.lstrip("-").isdigit():
            out.append(int(text))
    return out


# ---- readings -----------------------------------------------------------------------------
def cpu_counters() -> Optional[tuple[int, int, int]]:
    """(steal ticks, total ticks, runnable processes) of the whole machine, or None."""
    from .environment import cpu_counters as counters

    return counters()


def throttle_count() -> Optional[int]:
    """Sum of the CPUs' core and package thermal throttle counters, or None where absent."""
    vals = _ints(glob.glob(f"{_CPU}/cpu[0-9]*/thermal_throttle/*_throttle_count"))
    return sum(vals) if vals else None


def cpu_freqs_mhz() -> list[float]:
    """Current clock of each CPU in MHz (cpufreq, else /proc/cpuinfo); [] where unreadable."""
    khz = _ints(sorted(glob.glob(f"{_CPU}/cpu[0-9]*/cpufreq/scaling_cur_freq")))
    if khz:
        return [k / 1000.0 for k in khz]
    text = _read("/proc/cpuinfo") or ""
    return [float(line.split(":")[1]) for line in text.splitlines()
            if line.startswith("cpu MHz") and ":" in line]


def machine_busy_s() -> Optional[float]:
    """CPU seconds all CPUs have spent busy since boot (user, nice, system, irq, softirq of
    /proc/stat's ``cpu`` line; idle, iowait and steal left out), or None."""
    text = _read("/proc/stat")
    if not text or not text.startswith("cpu "):
        return None
    vals = [int(v) for v in text.splitlines()[0].split()[1:]]
    if len(vals) < 7:
        return None
    return (vals[0] + vals[1] + vals[2] + vals[5] + vals[6]) / float(os.sysconf("SC_CLK_TCK"))


def snapshot() -> dict[str, Any]:
    """The readings one timing is judged by (JSON-able; missing readings are None)."""
    freqs = cpu_freqs_mhz()
    t = os.times()
    return {"cpu": cpu_counters(), "throttle": throttle_count(),
            "freq_mhz": sum(freqs) / len(freqs) if freqs else None,
            "busy_s": machine_busy_s(), "self_s": t.user + t.system, "wall_s": time.monotonic()}


def facts(before: Mapping[str, Any], after: Mapping[str, Any], *, threads: int) -> dict[str, Any]:
    """What happened between two snapshots: ``cpu_steal_pct``, ``procs_running`` (at the
    end), ``other_cpu_s`` (CPU time other processes used) over ``window_s``, ``busy``,
    ``throttle_events``, ``freq_mhz_before``/``_after`` (absent: unknown). ``threads`` is
    kept for callers; the busy rule needs no thread count."""
    out: dict[str, Any] = {}
    b, a = before.get("cpu"), after.get("cpu")
    if b is not None and a is not None and a[1] > b[1]:
        out["cpu_steal_pct"] = round(100.0 * (a[0] - b[0]) / (a[1] - b[1]), 2)
        out["procs_running"] = a[2]
    keys = ("busy_s", "self_s", "wall_s")
    if all(before.get(k) is not None and after.get(k) is not None for k in keys) \
            and after["wall_s"] > before["wall_s"]:
        other = (after["busy_s"] - before["busy_s"]) - (after["self_s"] - before["self_s"])
        out["other_cpu_s"] = round(other, 4)
        out["window_s"] = round(after["wall_s"] - before["wall_s"], 6)
        out["busy"] = busy(out["other_cpu_s"], out["window_s"])
    if before.get("throttle") is not None and after.get("throttle") is not None:
        out["throttle_events"] = after["throttle"] - before["throttle"]
    if before.get("freq_mhz") and after.get("freq_mhz"):
        out["freq_mhz_before"] = round(before["freq_mhz"], 1)
        out["freq_mhz_after"] = round(after["freq_mhz"], 1)
    return out


#: canary_s: a fixed single-threaded SIMD workload (numpy float32 multiply-add over
#: CANARY_ELEMENTS elements, CANARY_PASSES times), timed CANARY_REPEATS times right after a timing
CANARY_ELEMENTS = 32_768
CANARY_PASSES = 8
CANARY_REPEATS = 5
#: names the canary's workload in each record (``info["canary"]``): ``compare`` only sets
#: canaries of the same workload side by side
CANARY = f"numpy-f32-madd-{CANARY_ELEMENTS}x{CANARY_PASSES}"
#: what records without ``info["canary"]`` timed: the pure-Python loop used before session 9
CANARY_LEGACY = "python-sum-range-20000"
_canary_arrays: list = []


def _canary_work() -> None:
    """The canary's workload: ``c = a * b + a`` over three float32 arrays of 128 KiB each (384
    KiB in all: in L2 on CPUs with 512 KiB or more), CANARY_PASSES times. numpy's ufunc loops
    use the CPU's vector units and never start threads, so the canary neither disturbs the
    worker's thread pools nor depends on them."""
    import numpy as np

    if len(_canary_arrays) != 3 or _canary_arrays[0].size != CANARY_ELEMENTS:
        rng = np.random.default_rng(0)
        _canary_arrays[:] = [rng.random(CANARY_ELEMENTS, dtype=np.float32) for _ in range(3)]
    a, b, c = _canary_arrays
    for _ in range(CANARY_PASSES):
        np.multiply(a, b, out=c)
        np.add(c, a, out=c)


def canary_s() -> float:
    """Median seconds of a fixed workload (:func:`_canary_work`), timed right after each
    timing and kept in the record (``info["canary_s"]``, the median over its rounds; each
    round's own in ``info["rounds"]``; ``info["canary"]`` names the workload, :data:`CANARY`).
    It measures the machine's own speed at that moment: on a 2-vCPU Intel Xeon @ 2.60GHz
    guest, a back-to-back A/A pair of `resnet50` sweeps had whole problems 1.9x slower in one
    run with no steal and no other process, which none of the flags above can see. No noise flag depends on it; ``compare`` withholds its faster/slower
    verdicts when the canary moved by more than the minimum effect between the runs, as a
    whole or on over a tenth of the records (:func:`convbench.report.comparison._canary_notes`).

    Why SIMD and not pure Python (the canary until session 9): on that guest, timing torch
    convolutions and both canaries alternately for 60 s (``benchmarks/canary_tracking.py``,
    ``results/canary-tracking-s9-20261202/``), the log standard deviation of 1-s window
    medians of a 3x3, a depthwise and a 1x1 convolution was 0.075, 0.103, 0.101 at 1 thread;
    divided by this canary 0.032, 0.047, 0.061; divided by the pure-Python loop 0.171, 0.132,
    0.149 (that loop tracks the interpreter, not the vector units). At 2 threads: 0.100,
    0.118, 0.105; divided by this canary 0.062, 0.103, 0.084."""
    times = []
    _canary_work()   # the arrays exist and are in cache before the first timed pass
    for _ in range(CANARY_REPEATS):
        t0 = time.perf_counter()
        _canary_work()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


#: `convbench doctor`'s speed probe: the canary's workload timed back to back for
#: SPEED_PROBE_S seconds, its median taken per window of SPEED_WINDOW_S seconds
SPEED_PROBE_S = 3.0
SPEED_WINDOW_S = 0.25
#: the longest probe doctor takes (seconds)
SPEED_PROBE_MAX_S = 600.0
#: window medians spanning more than this (max/min - 1): doctor advises
SPEED_WANDER = 0.05


def speed_wander(seconds: float = SPEED_PROBE_S, window_s: float = SPEED_WINDOW_S) -> dict[str, Any]:
    """How much the machine's own speed moves from moment to moment: the canary's workload
    (:func:`_canary_work`, one thread) timed back to back for ``seconds``; the medians of
    consecutive whole ``window_s`` windows, and ``wander`` = their max/min - 1 (0.0: steady;
    more windows can only find a wider span, so compare probes of one length).

    Neither steal nor load shows this: on the 2-vCPU Intel Xeon @ 2.60GHz guest this project
    measures on, with steal at 0.4% and nothing else running, 1-s window medians of torch
    convolutions varied by a log standard deviation of 0.075-0.118 (``benchmarks/
    canary_tracking.py``); an A/A pair of sweeps cannot agree closer than such a machine
    allows."""
    try:
        ok = 0 < float(window_s) <= float(seconds) / 2 and float(seconds) <= SPEED_PROBE_MAX_S
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"speed_wander: seconds={seconds!r} must be a number of seconds at least "
                         f"twice window_s={window_s!r} (> 0) and at most {SPEED_PROBE_MAX_S:g}")
    _canary_work()
    windows = max(2, int(float(seconds) / float(window_s)))   # whole windows only
    medians = []
    for _ in range(windows):
        w_end = time.perf_counter() + window_s
        times = []
        while time.perf_counter() < w_end or not times:
            t0 = time.perf_counter()
            _canary_work()
            times.append(time.perf_counter() - t0)
        medians.append(statistics.median(times))
    return {"windows": len(medians), "window_s": window_s, "median_s": statistics.median(medians),
            "wander": max(medians) / min(medians) - 1.0}


#: a run whose records' canaries spread by more than this (90th over 10th percentile - 1), or
#: whose last tenth's canary moved by more than this from its first tenth's, gets a warning
CANARY_SPREAD = 0.10
#: records with a canary needed before a run's canary drift is judged
CANARY_DRIFT_MIN_RECORDS = 10
#: at least this many records at each end of the run make its first and last "tenth"
CANARY_DRIFT_END = 3


def canary_drift(records: Sequence[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """How the machine-speed canary (``info["canary_s"]``) moved over one run's ok records, in
    the order they were timed (``start_time``): its 10th and 90th percentiles and their
    ``spread`` (p90/p10 - 1, linear-interpolation quantiles), the medians of the first and last
    tenth of the records (at least CANARY_DRIFT_END each) and their ``trend`` (last/first - 1).
    None with fewer than CANARY_DRIFT_MIN_RECORDS such records. Records without a start time
    count in file order, after the dated ones; a canary that is not a positive number is
    skipped. One machine's records at a time (the caller groups a cluster run's by host).

    The flags see steal, load and clocks; this sees the machine's own speed, which on the
    2-vCPU Intel Xeon guest this project measures on moved with none of them: an A/A
    `resnet50` run's record canaries ran 102-142 us (10th-90th percentile), the next run's
    66-83 us (``results/aa-resnet50-s9-20261202/``)."""
    from .timing import _quantile

    rows = []
    for i, r in enumerate(records):
        info = r.get("info")
        c = info.get("canary_s") if isinstance(info, Mapping) else None
        if r.get("status") == "ok" and isinstance(c, (int, float)) and not isinstance(c, bool) \
                and math.isfinite(c) and c > 0:
            t = r.get("start_time")
            rows.append(((t is None, str(t or ""), i), float(c)))   # undated: file order, last
    rows.sort(key=lambda row: row[0])
    if len(rows) < CANARY_DRIFT_MIN_RECORDS:
        return None
    vals = sorted(c for _, c in rows)
    n = len(vals)
    p10, p90 = _quantile(vals, 0.1), _quantile(vals, 0.9)
    end = max(CANARY_DRIFT_END, n // 10)
    first = statistics.median(c for _, c in rows[:end])
    last = statistics.median(c for _, c in rows[-end:])
    return {"records": n, "p10_s": p10, "p90_s": p90, "spread": p90 / p10 - 1.0,
            "first_s": first, "last_s": last, "trend": last / first - 1.0}


def busy(other_cpu_s: float, window_s: float) -> bool:
    """Whether other processes used more than :data:`BUSY_LOAD` cores on average over a
    window (their CPU seconds over its wall seconds)."""
    return window_s > 0 and other_cpu_s / window_s > BUSY_LOAD


def tick_quantum(samples_s: Sequence[float], loops: int = 1) -> Optional[float]:
    """The scheduler tick (seconds) that a timing's samples are quantised to, or None.

    Quantised: at least 5 samples last half a tick or more, at least 60% of them lie within 5%
    of a tick of a multiple of it (10% would by chance), and they fall on at least two
    distinct multiples (one real 4 ms call alone is no evidence).
    """
    durations = [float(s) * max(int(loops), 1) for s in samples_s]
    for tick in TICKS_S:
        long = [d / tick for d in durations if d >= tick / 2]
        if len(long) < 5:
            continue
        near = [round(x) for x in long if abs(x - round(x)) <= 0.05]
        if len(near) >= 0.6 * len(long) and len(set(near)) >= 2:
            return tick
    return None


def flags(info: Mapping[str, Any]) -> list[str]:
    """The FLAGS names that the facts in ``info`` (as :func:`facts` and the rounds record
    them: cpu_steal_pct, busy, tick_s, throttle_events, freq_mhz_*, round_quartile_spread) raise."""
    out = []
    if (info.get("cpu_steal_pct") or 0.0) > STEAL_PCT:
        out.append("steal")
    if info.get("busy"):
        out.append("busy")
    if info.get("tick_s"):
        out.append("tick")
    if (info.get("throttle_events") or 0) > 0:
        out.append("throttle")
    f0, f1 = info.get("freq_mhz_before"), info.get("freq_mhz_after")
    if f0 and f1 and abs(f1 / f0 - 1.0) > FREQ_CHANGE:
        out.append("freq")
    if (info.get("round_quartile_spread") or 0.0) > DRIFT:
        out.append("drift")
    return out


def describe(noise: Sequence[str]) -> str:
    """``steal, tick`` or ``-``."""
    return ", ".join(noise) if noise else "-"


# ---- the machine's state, for `convbench doctor` ------------------------------------------
def _per_cpu(name: str) -> list[str]:
    vals = [_read(p) for p in sorted(glob.glob(f"{_CPU}/cpu[0-9]*/cpufreq/{name}"))]
    return [v for v in vals if v]


def _kernel_hz() -> Optional[int]:
    for path in (f"/boot/config-{platform.release()}", "/proc/config"):
        for line in (_read(path) or "").splitlines():
            if line.startswith("CONFIG_HZ="):
                return int(line.split("=")[1])
    return None


def _steal_now(window_s: float) -> tuple[Optional[float], Optional[int], Optional[float]]:
    """(steal %, runnable processes, other processes' CPU use in cores) over ``window_s``."""
    before = snapshot()
    time.sleep(window_s)
    f = facts(before, snapshot(), threads=1)
    other = f.get("other_cpu_s")
    load = round(other / f["window_s"], 2) if other is not None and f.get("window_s") else None
    return f.get("cpu_steal_pct"), f.get("procs_running"), load


def system_state(window_s: float = 0.5) -> dict[str, Any]:
    """What the machine looks like now: cores, load, steal, runnable processes and other
    processes' CPU use (cores, ``other_cpu_load``) over ``window_s``, governors, clocks, turbo,
    throttle counters, kernel tick, isolated CPUs, address-space randomisation (None where
    unreadable)."""
    steal, running, other = _steal_now(window_s)
    freqs = cpu_freqs_mhz()
    no_turbo, boost = _read(f"{_CPU}/intel_pstate/no_turbo"), _read(f"{_CPU}/cpufreq/boost")
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    return {
        "cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_avg_1m": load, "cpu_steal_pct": steal, "procs_running": running,
        "other_cpu_load": other,
        "governors": sorted(set(_per_cpu("scaling_governor"))),
        "freq_mhz_min": min(freqs) if freqs else None, "freq_mhz_max": max(freqs) if freqs else None,
        "turbo": None if no_turbo is None and boost is None
        else (no_turbo == "0") if no_turbo is not None else (boost == "1"),
        "throttle_count": throttle_count(), "kernel_hz": _kernel_hz(),
        "isolated_cpus": _read(f"{_CPU}/isolated"),   # "": none isolated
        "aslr": _read("/proc/sys/kernel/randomize_va_space"),
        "virtualized": _read("/sys/class/dmi/id/sys_vendor"),
    }


def run_warnings(threads: int, window_s: float = 0.3) -> list[str]:
    """What disturbs measuring right now (steal, runnable processes, load), one line each; the
    sweep prints them at the start and the end of a run and keeps them in meta.json."""
    state = system_state(window_s)
    cores = state.get("usable_cpus") or 1
    out = []
    if (state.get("cpu_steal_pct") or 0) > STEAL_PCT:
        out.append(f"the hypervisor took {state['cpu_steal_pct']:.0f}% of the CPU time")
    if (state.get("other_cpu_load") or 0) > BUSY_LOAD:
        out.append(f"other processes used {state['other_cpu_load']:.1f} cores")
    if (state.get("procs_running") or 0) > threads + 1:
        out.append(f"{state['procs_running']} processes were runnable (the sweep needs {threads})")
    if (state.get("load_avg_1m") or 0) > cores:
        out.append(f"1-minute load average {state['load_avg_1m']:.1f} on {cores} usable cores")
    return out


def advice(state: Mapping[str, Any], threads: Optional[int] = None) -> list[str]:
    """What to change before measuring, one line each (empty: nothing found)."""
    out = []
    usable = state.get("usable_cpus") or 1
    threads = threads or usable
    if (state.get("cpu_steal_pct") or 0) > STEAL_PCT:
        out.append(f"the hypervisor takes {state['cpu_steal_pct']:.0f}% of the CPU time: use a "
                   "dedicated (non-shared, pinned) instance or run when the host is quiet")
    if (state.get("other_cpu_load") or 0) > BUSY_LOAD:
        out.append(f"other processes are using {state['other_cpu_load']:.1f} cores right now: "
                   "stop them; timings share the cores with them")
    if state.get("load_avg_1m") is not None and state["load_avg_1m"] > 0.5:
        out.append(f"1-minute load average {state['load_avg_1m']:.1f}: stop other jobs; "
                   "timings share the cores with them")
    if (state.get("procs_running") or 0) > 2:
        out.append(f"{state['procs_running']} processes runnable right now: other work competes "
                   "for the cores")
    govs = [g for g in state.get("governors") or () if g != "performance"]
    if govs:
        out.append(f"CPU frequency governor {', '.join(govs)}: set 'performance' "
                   "(sudo cpupower frequency-set -g performance, or pyperf system tune)")
    if state.get("turbo"):
        out.append("turbo boost is on: the clock depends on temperature and load; turn it off "
                   "for repeatable timings (pyperf system tune)")
    if (state.get("throttle_count") or 0) > 0:
        out.append(f"the CPUs have been thermally throttled {state['throttle_count']} times since "
                   "boot: check cooling; throttling during a run slows it")
    if not state.get("isolated_cpus") and threads >= usable and usable <= 4:
        out.append(f"the run uses all {usable} usable cores and none is isolated: timings share "
                   "cores with the OS; prefer --threads below the core count or isolcpus")
    wander = state.get("speed_wander")
    if wander is not None and wander > SPEED_WANDER:
        out.append(f"the machine's own speed moved by {wander:.0%} within "
                   f"{state.get('speed_probe_s') or SPEED_PROBE_S:g} s (a fixed single-threaded "
                   "workload, timed in windows; noisy neighbours or the host's clock): two runs "
                   "here cannot agree closer than that, and compare withholds its verdicts when "
                   "its canary moves; use a dedicated instance for verdicts that small")
    hz = state.get("kernel_hz")
    if hz and hz < 1000:
        out.append(f"kernel tick {hz} Hz: a descheduled process loses {1000 / hz:.0f} ms at a time; "
                   "convbench flags timings quantised to it ('tick')")
    return out


__all__ = ["FLAGS", "STEAL_PCT", "FREQ_CHANGE", "DRIFT", "BUSY_LOAD", "TICKS_S", "cpu_counters",
           "throttle_count", "cpu_freqs_mhz", "machine_busy_s", "snapshot", "facts", "busy", "canary_s",
           "tick_quantum", "flags", "speed_wander", "SPEED_WANDER", "canary_drift", "CANARY_SPREAD",
           "describe", "system_state", "run_warnings", "advice"]
