"""`convbench cache ...`: inspect, share, prune and re-check the tuned-algorithm cache."""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Optional

from ..fmt import fmt_time, geomean
from ..table import print_table


def _add_cache_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", default=None, metavar="PATH",
                   help="cache file (default: $CONVBENCH_CACHE or the user cache directory)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="show, query, export/import, prune or verify the tuned cache",
                       description="The tuned-algorithm cache: the winning candidate per problem, "
                                   "machine, thread count and device, written by every sweep.")
    cs = p.add_subparsers(dest="cache_command", metavar="ACTION")

    s = cs.add_parser("show", help="list the cached entries")
    _add_cache_opt(s)
    s.add_argument("--all-machines", action="store_true", help="also entries tuned on other machines")
    s.add_argument("--device", choices=("cpu", "cuda"), default=None)
    s.add_argument("--json", action="store_true", help="print the entries as JSON")
    s.set_defaults(func=run_show)

    q = cs.add_parser("query", help="what the cache (or the predictor) chooses for one problem")
    _add_cache_opt(q)
    q.add_argument("spec", metavar="SPEC", help="a benchdnn descriptor, e.g. mb1ic64ih56oc64kh3ph1")
    q.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    q.add_argument("--dtype", default=None, help="the problem's dtype (default float32)")
    q.add_argument("--layout", default=None, help="channels_first (default) or channels_last")
    q.add_argument("--transposed", action="store_true", help="read SPEC as a deconvolution (benchdnn deconv)")
    q.add_argument("--threads", type=int, default=None, help="thread count (default: all cores, else closest cached)")
    q.set_defaults(func=run_query)

    e = cs.add_parser("export", help="write the cache as versioned JSON (to share it)")
    _add_cache_opt(e)
    e.add_argument("file", metavar="FILE")
    e.set_defaults(func=run_export)

    i = cs.add_parser("import", help="read entries from an exported JSON file")
    _add_cache_opt(i)
    i.add_argument("file", metavar="FILE")
    i.add_argument("--replace", choices=("newer", "always", "never"), default="newer",
                   help="when an entry already exists: keep the more recent measurement (default), "
                        "always take the imported one, or never replace")
    i.set_defaults(func=run_import)

    r = cs.add_parser("prune", help="remove stale, old or matching entries")
    _add_cache_opt(r)
    r.add_argument("--stale", action="store_true",
                   help="entries of this machine measured under other software versions")
    r.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                   help="entries measured more than DAYS days ago")
    r.add_argument("--pattern", default=None, metavar="GLOB",
                   help="entries whose spec key, candidate or problem name matches GLOB")
    r.add_argument("--dry-run", action="store_true", help="list what would be removed")
    r.set_defaults(func=run_prune)

    v = cs.add_parser("verify", help="re-time a sample of entries; report those whose winner changed")
    _add_cache_opt(v)
    v.add_argument("--sample", type=int, default=5, metavar="K", help="entries to re-check (default 5; 0: all)")
    v.add_argument("--seed", type=int, default=0, help="which entries are sampled")
    v.add_argument("--budget", type=float, default=None, metavar="SECONDS", help="timing budget per candidate")
    v.add_argument("--backends", "-b", nargs="+", default=None, metavar="PATTERN",
                   help="backends to re-time (default: all)")
    from ..strategies import STRATEGIES

    v.add_argument("--strategy", default="exhaustive", choices=sorted(STRATEGIES),
                   help="how to re-time: exhaustive (default) or race")
    v.add_argument("--update", action="store_true", help="store the re-measured winners in the cache")
    v.add_argument("--out", default=None, metavar="DIR",
                   help="keep the re-timing run under DIR (default: a temporary directory, removed)")
    v.set_defaults(func=run_verify)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


# ---- helpers ------------------------------------------------------------------------------
def _label(e: Any) -> str:
    from ..spec import ConvSpec

    try:
        return ConvSpec.from_dict(e.spec).label
    except Exception:
        return e.spec_key


def _at_least(what: str, value: Optional[int], low: int) -> None:
    """A ConvbenchError (exit 2) unless ``value`` is None or an integer >= ``low``."""
    from ..errors import ConvbenchError

    if value is not None and value < low:
        raise ConvbenchError(f"{what}: {value} must be an integer >= {low}")


def _ratio(regret: Optional[float]) -> str:
    if regret is None:
        return "-"
    return f"{regret:.3f}" if math.isfinite(regret) else "not ok now"


# ---- actions ------------------------------------------------------------------------------
def run_show(args: argparse.Namespace) -> int:
    from ..cache import entry_status, open_cache

    tc = open_cache(args.cache, create=False)
    every = tc.entries(device=args.device)
    status = {e.key: entry_status(e) for e in every}
    entries = [e for e in every if args.all_machines or status[e.key] != "other machine"]
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=1))
        return 0
    total = len(tc)
    print(f"cache {tc.path}: {total} entr{'y' if total == 1 else 'ies'}"
          + ("" if args.all_machines else f", {len(entries)} for this machine"))
    if not entries:
        return 0
    rows = []
    for e in entries:
        margin = "-" if e.margin is None else f"{e.margin * 100:+.1f}%"
        rows.append([_label(e), e.device, e.threads or "-", e.candidate, fmt_time(e.median_s),
                     e.runner_up or "-", margin, "yes" if e.decisive else "tie" if e.runner_up else "-",
                     status[e.key], e.run_id or "-"])
    print_table(["problem", "device", "threads", "winner", "median", "runner-up", "margin",
                 "decisive", "status", "run"], rows)
    return 0


def run_query(args: argparse.Namespace) -> int:
    from ..cache import entry_status, lookup, open_cache
    from ..predict import predict
    from ..spec import ConvSpec

    _at_least("--threads", args.threads, 1)
    over = {k: v for k, v in (("dtype", args.dtype), ("layout", args.layout)) if v}
    spec = ConvSpec.from_benchdnn(args.spec, transposed=args.transposed, **over)
    tc = open_cache(args.cache, create=False)
    print(f"problem: {spec.label}\nkey:     {spec.key}")
    choice = lookup(spec, args.device, threads=args.threads, policy="ignore", cache=tc)
    if choice is None:
        pred = predict(spec, args.device, threads=args.threads, cache=tc)
        print(f"cache:   miss on this machine ({args.device})")
        print(f"{pred.source}: {pred.candidate}")
        code = 1
    else:
        margin = "-" if choice.margin is None else f"{choice.margin * 100:+.1f}%"
        print(f"choice:  {choice.candidate}  median {fmt_time(choice.median_s)}  runner-up "
              f"{choice.runner_up or '-'} ({margin}, {'decisive' if choice.decisive else 'tie'})")
        print(f"tuned:   {choice.threads} threads, run {choice.run_id}, {choice.timestamp}")
        print("status:  " + ("stale: " + "; ".join(choice.stale_reasons) if choice.stale else "current"))
        code = 0
    others = tc.entries(spec_key=spec.key)
    if others:
        rows = [[e.device, e.threads or "-", e.machine_desc or e.machine, e.candidate,
                 fmt_time(e.median_s), entry_status(e)] for e in others]
        print("\nall entries for this problem:")
        print_table(["device", "threads", "machine", "winner", "median", "status"], rows)
    return code


def run_export(args: argparse.Namespace) -> int:
    from ..cache import open_cache
    from ..errors import CacheError

    tc = open_cache(args.cache, create=False)
    if not tc.path.exists():
        raise CacheError(f"cache file {str(tc.path)!r} does not exist; nothing to export")
    doc = tc.export_json(args.file)
    print(f"exported {len(doc['entries'])} entries from {tc.path} to {args.file}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..cache import open_cache, parse_export

    entries = parse_export(args.file)
    tc = open_cache(args.cache)
    n = tc.put_many(entries, replace=args.replace)
    print(f"imported {n} of {len(entries)} entries into {tc.path}"
          + (f" ({len(entries) - n} kept: the cached measurement is newer or --replace never)"
             if n < len(entries) else ""))
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from ..cache import open_cache

    tc = open_cache(args.cache, create=False)
    victims = tc.prune(stale=args.stale, older_than_days=args.older_than, pattern=args.pattern,
                       dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(victims)} entr{'y' if len(victims) == 1 else 'ies'} from {tc.path}")
    for e in victims:
        print(f"  {e.spec_key} {e.device} threads={e.threads}: {e.candidate} ({e.timestamp})")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from ..cache.verify import verify

    _at_least("--sample", args.sample, 0)
    _at_least("--seed", args.seed, 0)
    rep = verify(args.cache, sample=args.sample, seed=args.seed, budget_s=args.budget,
                 backends=args.backends, strategy=args.strategy, update=args.update, out=args.out,
                 log=lambda line: print(line, file=sys.stderr))
    if not rep.available:
        print(f"cache {rep.path}: no entries for this machine; nothing to verify")
        return 0
    for note in [str(u) for u in rep.updates] + [f"re-timing run kept in {d}" for d in rep.run_dirs]:
        print(note, file=sys.stderr)
    rows = [[_label(r.entry), r.entry.candidate, r.winner_now or "-", fmt_time(r.cached_now_s),
             fmt_time(r.fastest_now_s), _ratio(r.regret), r.verdict] for r in rep.rows]
    print_table(["problem", "cached choice", "winner now", "cached choice now", "fastest now",
                 "ratio", "verdict"], rows)
    regrets = rep.regrets
    if regrets:
        print(f"\nregret of the cached choice (its median / fastest median, re-timed now): "
              f"geometric mean {geomean(regrets):.3f}, worst {max(regrets):.3f} over "
              f"{len(regrets)} entries")
    print(f"{rep.changed} of {len(rep.rows)} winners changed")
    return 1 if rep.changed else 0
