"""`convbench backends`: what is registered, what is available here, and why not.

Availability is answered by worker processes, one per backend family (as in a sweep), so that
frameworks that cannot share a process (TensorFlow and Triton's LLVM, for one) never meet.
A device the backend cannot use here (no GPU, a CPU-only build: ``Backend.device_support``)
lists no algorithms, and a backend with no usable device is reported unavailable, with why.
"""
from __future__ import annotations

import argparse

from .. import get_backend, list_backends
from ..errors import ConvbenchError
from ..registry import Backend, backend_target
from ..table import print_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backends", help="list registered backends, their availability and algorithms",
                       description="List registered backends (built-in and third-party entry points), "
                                   "whether each is available here (or why not) and its algorithms "
                                   "on the devices it can use here.")
    p.add_argument("patterns", nargs="*", help="wildcard filters, e.g. 'numpy-*' (default: all)")
    p.add_argument("--available", action="store_true", help="only backends whose dependencies import")
    p.set_defaults(func=run)


def _describe_all(names: list[str]) -> dict[str, dict]:
    """Each backend's worker answer (families in parallel, as the sweep asks them)."""
    from ..pool import WorkerPool
    from ..sweeping.plan import _describe_by_family

    with WorkerPool(threads=1) as pool:
        return _describe_by_family(pool, {n: backend_target(n) for n in names})


def _status(b: Backend, desc: dict) -> tuple[str, dict[str, list[str]]]:
    """The status text and the algorithms per device usable here."""
    if not desc.get("available"):
        algos = desc.get("algorithms") or {dev: b.algorithms(dev) for dev in sorted(b.capabilities.devices)}
        return f"unavailable: {desc.get('reason')}", algos
    unusable = desc.get("unusable_devices") or {}
    listed = {dev: a for dev, a in (desc.get("algorithms") or {}).items() if a}
    usable = {dev: a for dev, a in listed.items() if dev not in unusable}
    why = "; ".join(f"{dev}: {unusable[dev]}" for dev in listed if dev in unusable)
    if not usable:
        return f"unavailable: {why or 'no algorithm on any device'}", {}
    return ("available" + (f" ({why})" if why else "")), usable


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
        b = get_backend(name)
        status, algos = _status(b, descs[name])
        if args.available and not status.startswith("available"):
            continue
        algo_text = "; ".join(f"{dev}: {', '.join(a)}" for dev, a in algos.items() if a)
        rows.append((name, b.family, ",".join(sorted(b.capabilities.devices)), status, algo_text))
    rows.sort()
    if not rows:
        print("no backends match")
        return 1
    print_table(["backend", "family", "devices", "status", "algorithms"], rows)
    return 0
