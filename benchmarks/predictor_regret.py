"""Regret of the miss predictor: train on some runs' winners, predict another run's shapes.

For every problem of the test run, the predictor (k nearest cached neighbours, trained on
the winners of the training runs) picks a candidate; its *regret* is that candidate's
measured median in the test run divided by the fastest measured median there (1.0 = it
picked the fastest). The table compares it with the documented heuristic alone and with
always using one fixed candidate (``--fixed``, default ``torch:default@cpu``).

Only candidates with an ``ok`` record for the problem in the test run can be picked (the
predictor skips the others, as conv() skips candidates that cannot run a spec); problems
where a method picks nothing measurable are counted, not scored.

    python benchmarks/predictor_regret.py --train results/RUN_A results/RUN_B --test results/RUN_C
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", nargs="+", required=True, metavar="RUN", help="run directories to learn from")
    ap.add_argument("--test", required=True, metavar="RUN", help="run directory whose shapes are predicted")
    ap.add_argument("-k", type=int, default=3, help="neighbours (default 3)")
    ap.add_argument("--fixed", default="torch:default@cpu", help="the fixed-candidate baseline")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per test problem")
    args = ap.parse_args(argv)

    from convbench.cache import read_run, entries_from_run
    from convbench.predict import Predictor, geomean, heuristic_choice
    from convbench.spec import ConvSpec

    train = []
    for run in args.train:
        records, meta = read_run(run)
        entries, _, _ = entries_from_run(records, meta)
        train += entries
        print(f"train: {run}: {len(entries)} winners", file=sys.stderr)
    records, meta = read_run(args.test)
    threads = int(meta.get("threads") or 1)
    test_keys = {r["spec_key"] for r in records}
    overlap = sum(e.spec_key in test_keys for e in train)
    pred = Predictor(k=args.k).fit(train)

    by_problem: dict[str, dict] = {}
    for r in records:
        p = by_problem.setdefault(r["problem"], {"spec": r["spec"], "times": {}})
        if r.get("status") == "ok" and r.get("median_s"):
            p["times"][r["candidate"]] = float(r["median_s"])

    methods = {"predictor": [], "heuristic": [], f"fixed {args.fixed}": []}
    unscored = {m: 0 for m in methods}
    lines = []
    for name, p in sorted(by_problem.items()):
        times = p["times"]
        if not times:
            continue
        spec = ConvSpec.from_dict(p["spec"])
        device = next(iter(times)).rsplit("@", 1)[-1]
        best = min(times.values())
        allow = lambda b, a, d, _t=times: f"{b}:{a}@{d}" in _t  # noqa: E731
        picks = {}
        try:
            picks["predictor"] = pred.predict(spec, device, threads=threads, allow=allow).candidate
        except Exception:
            picks["predictor"] = None
        try:
            picks["heuristic"] = heuristic_choice(spec, device, allow=allow).candidate
        except Exception:
            picks["heuristic"] = None
        picks[f"fixed {args.fixed}"] = args.fixed
        row = [name]
        for m, cand in picks.items():
            if cand in times:
                methods[m].append(times[cand] / best)
                row.append(f"{cand} x{times[cand] / best:.2f}")
            else:
                unscored[m] += 1
                row.append(f"{cand} (not measured ok)")
        lines.append("  ".join(row))

    print(f"test run {args.test}: {len(by_problem)} problems, {threads} threads; training: "
          f"{len(train)} winners from {len(args.train)} run(s), {overlap} of them share a spec key "
          f"with the test run")
    if args.verbose:
        print("\n".join(lines))
    print(f"{'method':<28} {'geo-mean regret':>16} {'worst':>8} {'x1.00 (best)':>13} {'scored':>7} {'unscored':>9}")
    for m, vals in methods.items():
        if vals:
            hits = sum(v <= 1.0 + 1e-12 for v in vals)
            print(f"{m:<28} {geomean(vals):16.3f} {max(vals):8.2f} {hits:13d} {len(vals):7d} {unscored[m]:9d}")
        else:
            print(f"{m:<28} {'-':>16} {'-':>8} {'-':>13} {0:7d} {unscored[m]:9d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
