"""What the `report` and `compare` subcommands share: their parser and finding the runs."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

RUN_HELP = ("RUN is a run directory, a records.jsonl file, a results root, a glob such as "
            "'results/*-resnet50-*', or a run id (or a unique prefix of one) found under --results.")


def add_runs_command(sub: argparse._SubParsersAction, name: str, *, help: str, description: str,
                     exit_status: str) -> argparse.ArgumentParser:
    """A subcommand over measured runs, with the options every such command has (--results,
    --plain); the epilog says what RUN may be and what the exit status means."""
    p = sub.add_parser(name, help=help, description=description,
                       epilog=f"{RUN_HELP} Exit status: {exit_status}")
    p.add_argument("--results", default="results", metavar="DIR",
                   help="where to look up bare run ids (default: ./results)")
    p.add_argument("--plain", action="store_true",
                   help="plain aligned text even on a terminal with rich installed (always plain "
                        "when the output is not a terminal)")
    return p


def resolve_runs(items: Sequence[str], results_dir: str = "results") -> list[str]:
    """Paths for RUN arguments: existing paths and globs as given; otherwise a run id (or a
    unique prefix of one) under ``results_dir``."""
    from ..errors import ResultsError

    out = []
    root = Path(results_dir)
    for item in items:
        if os.path.exists(item) or any(ch in item for ch in "*?["):
            out.append(item)
            continue
        if (root / item).is_dir():
            out.append(str(root / item))
            continue
        matches = sorted(d for d in root.glob(f"{item}*") if d.is_dir()) if root.is_dir() else []
        if len(matches) == 1:
            out.append(str(matches[0]))
        elif matches:
            raise ResultsError(f"run {item!r} matches {len(matches)} runs under {root}: "
                               + ", ".join(d.name for d in matches[:5]) + "; give the full id")
        else:
            raise ResultsError(f"run {item!r}: no such file, directory or run id under {root}")
    return out
