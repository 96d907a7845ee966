"""Regret of the miss predictor: train on some runs, predict another run's shapes.

For every problem of the test run, each method picks a candidate; its *regret* is that
candidate's measured median in the test run divided by the fastest measured median there
(1.0 = it picked the fastest). Methods:

- ``predictor``: :class:`convbench.predict.Predictor` (k nearest cached problems, log-regret
  scores shrunk toward the training-set prior), trained on the cache entries the training
  runs produce (winners plus every candidate's timing);
- ``heuristic``: the documented fallback alone;
- ``fixed best-on-train``: the one candidate with the lowest geometric-mean regret over the
  training problems (a constant choice a user could make without the test data);
- ``fixed CAND`` (``--fixed``, default ``torch:default@cpu``): always that candidate;
- ``oracle fixed``: the best single candidate *on the test run itself* - not a method (it
  looks at the answers), a yardstick for how much a per-shape choice can add.

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
    ap.add_argument("-k", default="auto", help="neighbours, or 'auto' (default): chosen with the prior "
                    "weight by cross-validation on the training runs")
    ap.add_argument("--prior-weight", type=float, default=1.0, help="weight of the prior when -k is given")
    ap.add_argument("--fixed", default="torch:default@cpu", help="a fixed-candidate baseline")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per test problem")
    args = ap.parse_args(argv)

    import math

    from convbench.cache import read_run, entries_from_run
    from convbench.predict import Predictor, geomean, heuristic_choice, log_regrets
    from convbench.spec import ConvSpec

    train = []
    for run in args.train:
        records, meta = read_run(run)
        entries, _, _ = entries_from_run(records, meta)
        train += entries
        print(f"train: {run}: {len(entries)} problems", file=sys.stderr)
    records, meta = read_run(args.test)
    threads = int(meta.get("threads") or 1)
    test_keys = {r["spec_key"] for r in records}
    overlap = sum(e.spec_key in test_keys for e in train)
    pred = Predictor(k=args.k if args.k == "auto" else int(args.k), prior_weight=args.prior_weight).fit(train)
    print(f"predictor: k={pred.k}, prior_weight={pred.prior_weight:g}"
          + (f" (cross-validated on the training runs: mean log-regret {pred.cv_log_regret:.3f})"
             if pred.cv_log_regret is not None else ""), file=sys.stderr)

    # the best constant on the training problems (a candidate missing on a problem: not counted
    # there, but it must cover at least half of them)
    per_cand: dict[str, list[float]] = {}
    for e in train:
        for c, lr in log_regrets(e).items():
            per_cand.setdefault(c, []).append(lr)
    covered = {c: v for c, v in per_cand.items() if len(v) * 2 >= len(train)}
    best_train = min(covered, key=lambda c: sum(covered[c]) / len(covered[c])) if covered else args.fixed

    by_problem: dict[str, dict] = {}
    for r in records:
        p = by_problem.setdefault(r["problem"], {"spec": r["spec"], "times": {}})
        if r.get("status") == "ok" and r.get("median_s"):
            p["times"][r["candidate"]] = float(r["median_s"])
    scored = {n: p for n, p in by_problem.items() if p["times"]}
    all_cands = sorted({c for p in scored.values() for c in p["times"]})
    oracle = min(all_cands, key=lambda c: sum(math.log(p["times"].get(c, math.inf) / min(p["times"].values()))
                                              for p in scored.values()))

    methods = {"predictor": [], "heuristic": [], f"fixed best-on-train {best_train}": [],
               f"fixed {args.fixed}": [], f"oracle fixed {oracle}": []}
    unscored = {m: 0 for m in methods}
    lines = []
    for name, p in sorted(scored.items()):
        times = p["times"]
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
        picks[f"fixed best-on-train {best_train}"] = best_train
        picks[f"fixed {args.fixed}"] = args.fixed
        picks[f"oracle fixed {oracle}"] = oracle
        row = [name]
        for m, cand in picks.items():
            if cand in times:
                methods[m].append(times[cand] / best)
                row.append(f"{cand} x{times[cand] / best:.2f}")
            else:
                unscored[m] += 1
                row.append(f"{cand} (not measured ok)")
        lines.append("  ".join(row))

    print(f"test run {args.test}: {len(scored)} problems, {threads} threads; training: "
          f"{len(train)} problems from {len(args.train)} run(s), {overlap} of them share a spec key "
          f"with the test run")
    if args.verbose:
        print("\n".join(lines))
    w = max(len(m) for m in methods) + 2
    print(f"{'method':<{w}} {'geo-mean regret':>16} {'worst':>8} {'x1.00 (best)':>13} {'scored':>7} {'unscored':>9}")
    for m, vals in methods.items():
        if vals:
            hits = sum(v <= 1.0 + 1e-12 for v in vals)
            print(f"{m:<{w}} {geomean(vals):16.3f} {max(vals):8.2f} {hits:13d} {len(vals):7d} {unscored[m]:9d}")
        else:
            print(f"{m:<{w}} {'-':>16} {'-':>8} {'-':>13} {0:7d} {unscored[m]:9d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
