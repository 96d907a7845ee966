"""`convbench check`: run the conformance suite for backends and print a verdict for each."""
from __future__ import annotations

import argparse
import sys

from .. import get_backend, list_backends
from ..testing import LEVELS, check_backend


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check backends against the float64 reference",
                       description="Run convbench's conformance checks (convbench.testing.check_backend) "
                                   "for each backend and print a verdict.")
    p.add_argument("backends", nargs="*", help="backend names or wildcards (default: all)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--level", default="default", choices=sorted(LEVELS),
                   help="default: fixed spread + a few random specs; extended: +200 random specs per algorithm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true", help="print every failing check")
    p.set_defaults(func=run)


def _per_family(args: argparse.Namespace, families: dict[str, list[str]]) -> int:
    """One subprocess per backend family: frameworks never share a process (as in a sweep)."""
    import subprocess

    failed = 0
    for names in families.values():
        cmd = [sys.executable, "-m", "convbench", "check", *names, "--device", args.device,
               "--level", args.level, "--seed", str(args.seed)] + (["-v"] if args.verbose else [])
        rc = subprocess.call(cmd)
        if rc not in (0, 1):
            print(f"{', '.join(names)}: check process failed with exit status {rc}")
        failed += rc != 0
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    names = list_backends(args.backends or None)
    if not names:
        print(f"no backends match {args.backends}", file=sys.stderr)
        return 2
    families: dict[str, list[str]] = {}
    for name in names:
        families.setdefault(get_backend(name).family or name, []).append(name)
    if len(families) > 1:
        return _per_family(args, families)
    failed = 0
    for name in names:
        b = get_backend(name)
        if args.device not in b.capabilities.devices or not b.algorithms(args.device):
            print(f"{name}@{args.device}: skipped: no {args.device} algorithm"
                  + (f" ({b.description})" if b.description else ""))
            continue
        usable = b.device_support(args.device) if b.available() else None
        if usable is not None and not usable:
            print(f"{name}@{args.device}: skipped: {usable.reason}")
            continue
        print(f"checking {name}@{args.device} ...", end="", flush=True, file=sys.stderr)
        report = check_backend(b, device=args.device, level=args.level, seed=args.seed)
        print("\r", end="", file=sys.stderr)
        print(report.summary(max_failures=1000 if args.verbose else 5))
        failed += report.status == "fail"
    return 1 if failed else 0
