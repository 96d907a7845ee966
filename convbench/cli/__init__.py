"""`convbench ...`: thin subcommands over the public API."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from ..errors import ConvbenchError

# Each module defines add_parser(subparsers); its parser sets func=run(args) -> exit code.
SUBCOMMANDS = ["backends", "check", "sweep", "cache", "report", "compare", "doctor"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="convbench",
        description="Find the fastest convolution implementation for your shapes on this machine.")
    parser.add_argument("--version", action="version", version=f"convbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"convbench.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"convbench.cli.{name}":
                continue  # subcommand not part of this build
            raise
        module.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConvbenchError as exc:
        print(f"convbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"convbench {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `convbench report ... | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
