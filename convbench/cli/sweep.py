"""`convbench sweep`: measure every candidate on every problem of a suite."""
from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..strategies import STRATEGIES
    from ..rounds import DEFAULT_ROUNDS
    from ..sweeping.options import DEFAULT_BUDGET_S, DEFAULT_MAX_CALL_S, DEFAULT_TIMEOUT_S

    p = sub.add_parser(
        "sweep", help="verify and time every candidate on a suite's problems",
        description="Verify and time every candidate (backend:algorithm@device) on every problem of a "
                    "suite; write a run directory (meta.json + records.jsonl) and print the winners.")
    p.add_argument("suite", nargs="?", default=None,
                   help="a shipped suite name (e.g. quick, resnet50), a suite .toml file or a benchdnn "
                        "batch file; optional with --spec or --resume")
    p.add_argument("--spec", action="append", default=[], metavar="DESCRIPTOR",
                   help="a problem as a benchdnn descriptor, e.g. 'mb1ic64ih56oc64kh3ph1' (repeatable)")
    p.add_argument("--backends", "-b", nargs="+", default=None, metavar="PATTERN",
                   help="backend name patterns with wildcards, e.g. 'numpy-*' torch (default: all)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cpu")
    p.add_argument("--dtype", default=None,
                   help="override every problem's dtype (float32, float64, float16, bfloat16, int8)")
    p.add_argument("--layout", default=None, help="override the layout: channels_first or channels_last")
    p.add_argument("--batch", "-n", dest="n", type=int, default=None, metavar="N",
                   help="override every problem's batch size")
    p.add_argument("--threads", type=int, default=None, help="threads for every framework (default: all cores)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="timing budget per candidate; the timer stops earlier once the median's 95%% CI "
                        f"is within +-1%% (default: {DEFAULT_BUDGET_S:g})")
    p.add_argument("--out", default=None, metavar="DIR", help="where run directories go (default: ./results)")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue a run directory (skips pairs already recorded)")
    p.add_argument("--dry-run", action="store_true", help="list what would run; measure and write nothing")
    p.add_argument("--seed", type=int, default=None, help="input seed (default 0)")
    p.add_argument("--strategy", default=None, choices=sorted(STRATEGIES),
                   help="exhaustive: time every candidate fully (default); race: successive halving, "
                        "clear losers are dropped after a few samples")
    p.add_argument("--rounds", type=int, default=None, metavar="K",
                   help="interleaved rounds per problem, sharing the budget; more rounds narrow the "
                        f"intervals that ties and `compare` use (default: {DEFAULT_ROUNDS})")
    p.add_argument("--cold-cache", action="store_true", default=None,
                   help="flush the last-level cache before every sample")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help=f"kill a candidate after this many seconds (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--max-call", type=float, default=None, metavar="S",
                   help=f"record a candidate whose single call takes longer than this as timeout instead "
                        f"of timing it (default {DEFAULT_MAX_CALL_S:g}; 0: no limit)")
    p.add_argument("--no-cache", action="store_true", help="do not store the winners in the tuned cache")
    p.add_argument("--cache", default=None, metavar="PATH",
                   help="the tuned cache to update (default: $CONVBENCH_CACHE or the user cache dir)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="measure on a Dask cluster: tcp://HOST:PORT of a running `dask scheduler` "
                        "(workers: `dask worker ADDRESS` on each machine), or local:N for N worker "
                        "processes here; every problem is measured on every machine type")
    p.add_argument("--spread", action="store_true",
                   help="with --scheduler: measure each problem once, on any machine (for identical "
                        "machines) instead of on every machine type")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def print_result(result: Any) -> None:
    """The winners table (or a dry run's plan) on stdout. On a terminal it fits the width,
    leaving out optional columns first; piped, every column is kept and each problem stays
    on one line (for files, grep and diff)."""
    from ..sweeping import winners as st
    from ..table import format_table, print_table, print_text

    if result.dry_run:
        for line in st.plan_summary(result):
            print_text(line)
        print()
        print_table(st.PLAN_HEADERS, st.plan_rows(result), right=("run", "unsupported"))
        return
    if result.meta.get("cluster"):
        from ..sweeping.cluster_run import format_machine_winners

        print(format_machine_winners(result.records))
        print()
        print_text(st.records_line(result))
        return
    rows = st.winner_rows(result)
    if not rows:
        print(f"(no records)\n\n{st.records_line(result)}")
        return
    headers, right, optional = st.winner_columns(result)  # the rate column: GOP/s for int8
    legend = st.winner_legend(rows, st.winner_unit(result))
    if sys.stdout.isatty():
        title = (f"winners: {result.meta.get('suite', '')} ({result.meta.get('device', 'cpu')}, "
                 f"{result.meta.get('threads')} threads)")
        print_table(headers, rows, title=title, right=right, drop=optional, legend=legend)
    else:
        print(format_table(headers, rows, right=right, width=10 ** 6))
        for name, text in legend.items():
            print_text(f"{name}: {text}")
    print()
    print_text(st.records_line(result))


def run(args: argparse.Namespace) -> int:
    from ..errors import SuiteError
    from ..suites import list_suites, load_suite, merge_suites, suite_from_specs
    from ..sweeping import sweep

    suite = args.suite
    if suite is None and args.backends and len(args.backends) > 1:
        # `--backends a b SUITE`: argparse hands the suite to --backends; take it back
        from ..registry import list_backends

        last = args.backends[-1]
        if not list_backends(last) and last in list_suites():
            suite, args.backends = last, args.backends[:-1]
    if args.spec:
        extra = suite_from_specs(args.spec)
        suite = extra if suite is None else merge_suites(load_suite(suite), extra)
    if suite is None and args.resume is None:
        raise SuiteError("give a SUITE (e.g. quick), --spec DESCRIPTOR or --resume RUN; shipped "
                         f"suites: {', '.join(list_suites())}")
    result = sweep(suite, backends=args.backends, device=args.device, dtype=args.dtype,
                   layout=args.layout, n=args.n, threads=args.threads, budget_s=args.budget,
                   out=args.out, resume=args.resume, dry_run=args.dry_run, seed=args.seed,
                   strategy=args.strategy, rounds=args.rounds, cold_cache=args.cold_cache,
                   timeout_s=args.timeout, max_call_s=args.max_call,
                   progress=not args.quiet, update_cache=not args.no_cache, cache=args.cache,
                   command=["convbench"] + sys.argv[1:] if sys.argv else None,
                   scheduler=args.scheduler, spread=args.spread)
    print_result(result)
    if result.cache_errors:  # the details were printed with the cache report
        print(f"convbench sweep: error: {len(result.cache_errors)} winner(s) could not be stored in "
              f"the tuned cache (see above)", file=sys.stderr)
        return 2
    return 0
