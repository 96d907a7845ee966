"""How much of torch's float32 conformance coverage each deployment engine serves (nothing is timed).

The specs: the float32 ones among the extended conformance level's (``fixed_specs()`` plus
``random_specs(200, seed)``), both layouts. A backend *serves* a spec when at least one of its
CPU algorithms passes ``convbench.testing.check_spec`` on it (supported and within the bound).
For each engine and layout the table gives the baseline's served specs, how many of those the
engine serves (and the fraction), and the engine's wrong answers (failed checks) over all specs.

Each backend is checked in its own subprocess: engines never share a process with another
framework here (some clash when loaded together).

    python benchmarks/engine_coverage.py openvino [onnxruntime jax ...] [--baseline torch]
                                         [--seed 0] [--min 0.8] [--json out.json]

Exit status 1 when an engine serves under ``--min`` of the baseline's specs in a layout, or
gives any wrong answer.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from convbench.spec import LAYOUTS
from convbench.table import print_table
from convbench.testing import FAIL, LEVELS, PASS, check_backend, fixed_specs, random_specs


def coverage_specs(seed: int) -> list:
    """The float32 specs of the extended conformance level for ``seed``."""
    specs = fixed_specs() + random_specs(LEVELS["extended"], seed=seed)
    return [s for s in specs if s.dtype == "float32"]


def check_in_this_process(name: str, seed: int) -> dict[str, Any]:
    """Per spec index: layout, whether some algorithm passed, and the failed checks."""
    specs = coverage_specs(seed)
    report = check_backend(name, level="extended", seed=seed, specs=specs, declarations=False)
    if not report.available:
        return {"available": False, "reason": report.reason}
    index = {id(s): i for i, s in enumerate(specs)}
    served: set[int] = set()
    wrong: list[tuple[int, str]] = []
    for r in report.results:
        if r.status == PASS:
            served.add(index[id(r.spec)])
        elif r.status == FAIL:
            wrong.append((index[id(r.spec)], str(r)))
    return {"available": True, "served": sorted(served), "wrong": wrong,
            "layouts": [s.layout for s in specs]}


def check_in_subprocess(name: str, seed: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--worker", name, "--seed", str(seed)],
                          capture_output=True, text=True)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return {"available": False, "reason": f"check process failed ({proc.returncode}): {tail}"}


def coverage_rows(engines: list[str], baseline: dict, results: dict, minimum: float) -> tuple[list, bool]:
    """Table rows (engine, layout, baseline served, engine served of those, fraction, wrong) and
    whether every engine met ``minimum`` with no wrong answer."""
    rows, ok = [], True
    base = set(baseline["served"])
    for name in engines:
        res = results[name]
        if not res["available"]:
            rows.append([name, "-", len(base), "unavailable", "-", res["reason"]])
            ok = False
            continue
        mine = set(res["served"])
        for layout in LAYOUTS:
            want = {i for i in base if baseline["layouts"][i] == layout}
            got = len(want & mine)
            frac = got / len(want) if want else 1.0
            n_wrong = sum(res["layouts"][i] == layout for i, _ in res["wrong"])
            ok = ok and frac >= minimum and n_wrong == 0
            rows.append([name, layout, len(want), got, f"{frac:.0%}", n_wrong])
    return rows, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("engines", nargs="*", help="backend names to compare with the baseline")
    ap.add_argument("--baseline", default="torch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min", type=float, default=0.8, help="required fraction of the baseline's specs")
    ap.add_argument("--json", help="write the per-backend results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(check_in_this_process(args.worker, args.seed)))
        return 0
    if not args.engines:
        ap.error("name at least one engine (e.g. openvino)")
    results = {n: check_in_subprocess(n, args.seed) for n in [args.baseline, *args.engines]}
    baseline = results[args.baseline]
    if not baseline["available"]:
        print(f"baseline {args.baseline} unavailable: {baseline['reason']}", file=sys.stderr)
        return 1
    rows, ok = coverage_rows(args.engines, baseline, results, args.min)
    print_table(["engine", "layout", f"{args.baseline} serves", "engine serves", "fraction", "wrong"], rows,
                title=f"float32 specs of the extended conformance level (seed {args.seed}) "
                      f"served by {args.baseline} and by each engine",
                right=[f"{args.baseline} serves", "engine serves", "fraction", "wrong"])
    for name in args.engines:
        for _, line in results[name].get("wrong", [])[:10]:
            print(f"  wrong: {name} {line}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
