"""`convbench backends`: what is registered, what is available here, and why not."""
from __future__ import annotations

import argparse

from .. import get_backend, list_backends
from ..errors import ConvbenchError
from ._table import format_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backends", help="list registered backends, their availability and algorithms",
                       description="List registered backends (built-in and third-party entry points).")
    p.add_argument("patterns", nargs="*", help="wildcard filters, e.g. 'numpy-*' (default: all)")
    p.add_argument("--available", action="store_true", help="only backends whose dependencies import")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = list_backends(args.patterns or None)
    rows = []
    for name in names:
        try:
            b = get_backend(name)
        except ConvbenchError as exc:
            rows.append((name, "?", "?", f"broken: {exc}", ""))
            continue
        avail = b.available()
        if args.available and not avail:
            continue
        devices = sorted(b.capabilities.devices)
        algos = "; ".join(f"{d}: {', '.join(b.algorithms(d))}" for d in devices if b.algorithms(d))
        rows.append((name, b.family, ",".join(devices),
                     "available" if avail else f"unavailable: {avail.reason}", algos))
    if not rows:
        print("no backends match")
        return 1
    print(format_table(["backend", "family", "devices", "status", "algorithms"], rows, max_width=90))
    return 0
