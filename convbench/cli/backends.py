"""`convbench backends`: what is registered, what is available here, and why not.

Availability is answered by worker processes, one per backend family (as in a sweep), so that
frameworks that cannot share a process (TensorFlow and Triton's LLVM, for one) never meet.
"""
from __future__ import annotations

import argparse
import threading

from .. import get_backend, list_backends
from ..errors import ConvbenchError
from ._table import print_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backends", help="list registered backends, their availability and algorithms",
                       description="List registered backends (built-in and third-party entry points), "
                                   "whether each is available here (or why not) and its algorithms.")
    p.add_argument("patterns", nargs="*", help="wildcard filters, e.g. 'numpy-*' (default: all)")
    p.add_argument("--available", action="store_true", help="only backends whose dependencies import")
    p.set_defaults(func=run)


def _describe_all(names: list[str]) -> dict[str, dict]:
    """Ask one worker per family, families in parallel."""
    from ..worker import WorkerPool

    out: dict[str, dict] = {}
    with WorkerPool(threads=1) as pool:
        by_family: dict[str, list[str]] = {}
        for n in names:
            by_family.setdefault(get_backend(n).family or n, []).append(n)

        def ask(group: list[str]) -> None:
            for n in group:
                out[n] = pool.describe(n)

        threads = [threading.Thread(target=ask, args=(g,)) for g in by_family.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return out


def run(args: argparse.Namespace) -> int:
    names = list_backends(args.patterns or None)
    loadable, rows = [], []
    for name in names:
        try:
            get_backend(name)
            loadable.append(name)
        except ConvbenchError as exc:
            rows.append((name, "?", "?", f"broken: {exc}", ""))
    descs = _describe_all(loadable)
    for name in loadable:
        b, d = get_backend(name), descs[name]
        if args.available and not d.get("available"):
            continue
        devices = sorted(b.capabilities.devices)
        algos = d.get("algorithms") or {dev: b.algorithms(dev) for dev in devices}
        algo_text = "; ".join(f"{dev}: {', '.join(a)}" for dev, a in algos.items() if a)
        status = "available" if d.get("available") else f"unavailable: {d.get('reason')}"
        rows.append((name, b.family, ",".join(devices), status, algo_text))
    rows.sort()
    if not rows:
        print("no backends match")
        return 1
    print_table(["backend", "family", "devices", "status", "algorithms"], rows)
    return 0
