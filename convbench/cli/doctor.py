"""`convbench doctor`: is this machine fit to measure on, and what to change (in the spirit of
`pyperf system show`).

Exit status: 0 when nothing was found to change, 1 when there is advice, 2 on errors.
"""
from __future__ import annotations

import argparse
from typing import Any, Optional

from ..table import print_table, print_text

#: state key -> (label, how to show the value)
_ROWS = (
    ("cpus", "CPUs (usable)", None), ("load_avg_1m", "load average, 1 min", "{:.2f}"),
    ("cpu_steal_pct", "hypervisor steal now", "{:.1f}%"),
    ("procs_running", "runnable processes now", None),
    ("other_cpu_load", "other processes' CPU use now", "{:.2f} cores"), ("governors", "frequency governor", None),
    ("freq_mhz_min", "CPU clock now (min..max)", None), ("turbo", "turbo boost", None),
    ("throttle_count", "thermal throttle events since boot", None),
    ("kernel_hz", "kernel tick (CONFIG_HZ)", "{} Hz"), ("isolated_cpus", "isolated CPUs", None),
    ("aslr", "address-space randomisation", None), ("virtualized", "system vendor", None),
    ("speed_wander", "machine speed, window to window", None),
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor", help="show what on this machine can spoil timings, and what to change",
        description="Show the machine's state as it affects timings (cores, load, hypervisor "
                    "steal, runnable processes, frequency governor and clock, turbo, thermal "
                    "throttling, kernel tick, isolated CPUs, and how much the machine's own speed moves "
                    "over a few seconds) and what to change before measuring. "
                    "Exit status: 0 nothing to change, 1 advice given, 2 errors.")
    p.add_argument("--threads", type=int, default=None,
                   help="the thread count you mean to sweep with (default: all usable cores)")
    p.add_argument("--window", type=float, default=0.5, metavar="SECONDS",
                   help="how long to watch steal and runnable processes (default 0.5)")
    p.add_argument("--probe", type=float, default=None, metavar="SECONDS",
                   help="how long to time a fixed workload to see the machine's speed move "
                        "(default 3, at most 600; 0: skip)")
    p.add_argument("--plain", action="store_true", help="plain aligned text even on a terminal")
    p.set_defaults(func=run)


def _value(key: str, fmt: Optional[str], state: dict[str, Any]) -> str:
    v = state.get(key)
    if key == "cpus":
        return f"{v} ({state.get('usable_cpus')})"
    if key == "freq_mhz_min":
        lo, hi = state.get("freq_mhz_min"), state.get("freq_mhz_max")
        return "unreadable" if lo is None else f"{lo:.0f}..{hi:.0f} MHz"
    if key == "governors":
        return ", ".join(v) if v else "unreadable (no cpufreq: a VM, or no driver)"
    if key == "turbo":
        return "unreadable" if v is None else ("on" if v else "off")
    if key == "speed_wander":
        if v is None:
            return "not probed (--probe 0)"
        return (f"{v:.1%} between the fastest and slowest of {state['speed_windows']} windows of "
                f"{state['speed_window_s']:g} s")
    if key == "isolated_cpus" and v == "":
        return "none"
    if key == "aslr" and v is not None:
        return {"0": "off", "1": "partial", "2": "full"}.get(str(v), str(v))
    if v is None:
        return "unreadable"
    return fmt.format(v) if fmt else str(v)


def run(args: argparse.Namespace) -> int:
    from .. import noise

    if args.window <= 0:
        from ..errors import InvalidInputError

        raise InvalidInputError(f"--window: {args.window!r} must be a number of seconds > 0")
    probe = noise.SPEED_PROBE_S if args.probe is None else args.probe
    if not (probe == 0 or 2 * noise.SPEED_WINDOW_S <= probe <= noise.SPEED_PROBE_MAX_S):
        from ..errors import InvalidInputError

        raise InvalidInputError(f"--probe: {args.probe!r} must be 0 (skip) or "
                                f"{2 * noise.SPEED_WINDOW_S:g} to {noise.SPEED_PROBE_MAX_S:g} seconds")
    state = noise.system_state(window_s=args.window)
    if probe:
        w = noise.speed_wander(probe)
        state.update(speed_wander=w["wander"], speed_windows=w["windows"],
                     speed_window_s=w["window_s"], speed_probe_s=probe)
    rows = [[label, _value(key, fmt, state)] for key, label, fmt in _ROWS]
    print_table(["what", "now"], rows, title="convbench doctor: this machine", plain=args.plain)
    advice = noise.advice(state, threads=args.threads)
    print_text()
    if not advice:
        print_text("Nothing to change: no steal, no load, no throttling seen.")
        return 0
    print_text("What to change before measuring:")
    for line in advice:
        print_text(f"- {line}")
    print_text()
    print_text("Records flag timings that were spoiled anyway (their `noise` field): "
               + "; ".join(f"{k}: {v}" for k, v in noise.FLAGS.items()) + ".")
    return 1
