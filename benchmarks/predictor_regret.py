"""Regret of the miss predictor on suites it never saw (measured runs in, no timing done).

For every test problem each method picks a candidate; its *regret* is that candidate's
measured median divided by the fastest measured median there (1.0 = it picked the fastest).
Only candidates measured ``ok`` on the problem can be picked. Methods:

- ``predictor``: :class:`convbench.predict.Predictor`, trained on cache entries built from the
  training runs (every candidate's timing per problem), bandwidth, prior weight and feature
  weights cross-validated on those entries alone. Its pick is :meth:`Predictor.prediction`'s,
  as ``conv()`` would get it: where no candidate measured on the test problem has training
  data, that is the heuristic's choice;
- ``equal wts``: the same with every feature weighted alike (the predictor before it chose
  feature weights);
- ``heuristic``: the documented fallback alone (asks the backends installed here);
- ``best fixed``: the one candidate with the lowest mean log-regret on the training problems
  (measured on at least half of them): a constant a user could pick without the test data;
- ``oracle fixed``: the best single candidate *on the test problems themselves* - not a
  method (it looks at the answers), a yardstick for what a per-shape choice adds.

A fixed candidate that was not measured ok on a test problem is charged that problem's slowest
measured time there.

Runs are merged per machine: the timings of one (shape, threads) measured in several runs of
a suite are combined by geometric mean, one training entry (run id = the suite) and one test
problem each. A problem named ``NET/LAYER...`` counts as suite ``NET`` (the engines suite
holds the layers of several networks). Runs that cannot be read are skipped and named.

Two modes:

    python benchmarks/predictor_regret.py --loso results --exclude '*-x1.1'
        leave one suite out, per machine: train on the machine's other suites (shapes of the
        held-out suite removed), test on the held-out suite, for every suite in turn;
    python benchmarks/predictor_regret.py --train RUN_A RUN_B --test RUN_C
        one split, as given.

The confidence columns compare what the predictor said with what happened: its mean
``expected_regret`` against the measured geometric mean, and its mean ``p_within`` (the
probability of being within 5% of the fastest) against the measured share.
"""
from __future__ import annotations

import argparse
import fnmatch
import math
import sys
from collections import defaultdict
from pathlib import Path


def find_runs(paths: list[str], exclude: list[str]) -> list[Path]:
    """Run directories under ``paths`` (a run directory holds records.jsonl), minus ``exclude``."""
    out = []
    for p in map(Path, paths):
        found = [p] if (p / "records.jsonl").exists() else sorted(f.parent for f in p.rglob("records.jsonl"))
        out += [r for r in found if not any(fnmatch.fnmatch(str(r), pat) for pat in exclude)]
    return out


def load(runs: list[Path]) -> tuple[dict, dict, dict, dict]:
    """(train, test, specs, cpus): (machine, device, threads, suite, spec_key) -> {candidate:
    seconds} for training (the cache entries' timings: ok medians, over-limit and pruned
    estimates) and for testing (ok medians), each the geometric mean over the runs; spec_key ->
    spec; the machine key's first 8 characters -> the CPU models its runs recorded."""
    from convbench.cache import entries_from_run, read_run
    from convbench.errors import ConvbenchError

    train, test, specs = defaultdict(lambda: defaultdict(list)), defaultdict(lambda: defaultdict(list)), {}
    cpus: dict = defaultdict(set)
    for run in runs:
        try:
            records, meta = read_run(run)
            run_entries, _, _ = entries_from_run(records, meta)
        except (ConvbenchError, OSError, ValueError) as exc:
            print(f"skipped {run}: {exc}", file=sys.stderr)
            continue
        suite_of = {r["spec_key"]: _suite(r, meta, run) for r in records}
        for e in run_entries:
            specs[e.spec_key] = e.spec
            cpus[e.machine[:8]].add(str((meta.get("environment") or {}).get("cpu_model", "unknown CPU")))
            for c, t in e.timings.items():
                train[(e.machine, e.device, e.threads, suite_of[e.spec_key], e.spec_key)][c].append(t)
        machine = {(e.spec_key, e.device): (e.machine, e.threads) for e in run_entries}
        for r in records:
            m = machine.get((r["spec_key"], r.get("device") or "cpu"))
            if m and r.get("status") == "ok" and r.get("median_s"):
                key = (m[0], r.get("device") or "cpu", m[1], suite_of[r["spec_key"]], r["spec_key"])
                test[key][r["candidate"]].append(float(r["median_s"]))
        print(f"read {run}: {len(records)} records, {len(run_entries)} problems", file=sys.stderr)
    gm = lambda v: math.exp(sum(map(math.log, v)) / len(v))  # noqa: E731
    return ({k: {c: gm(v) for c, v in d.items()} for k, d in train.items()},
            {k: {c: gm(v) for c, v in d.items()} for k, d in test.items()}, specs, cpus)


def _suite(record: dict, meta: dict, run: Path) -> str:
    """A problem named NET/LAYER... belongs to suite NET, others to the run's suite."""
    name = str(record.get("problem") or "")
    return name.split("/")[0] if "/" in name else str(meta.get("suite") or run.name)


def entries(train: dict, specs: dict, keys) -> list:
    """Cache entries for the training problems ``keys`` (run id = suite)."""
    from convbench.cache import CacheEntry
    from convbench.registry import Candidate

    out = []
    for k in keys:
        machine, dev, threads, suite, spec_key = k
        times = train[k]
        best = min(times, key=times.get)
        c = Candidate.parse(best)
        out.append(CacheEntry(spec_key=spec_key, machine=machine, threads=threads, device=dev,
                              spec=specs[spec_key], candidate=best, backend=c.backend,
                              algorithm=c.algorithm, median_s=times[best], run_id=suite,
                              timings=dict(times)))
    return out


def best_fixed(train_entries: list) -> str:
    from convbench.predict import log_regrets

    per: dict[str, list[float]] = defaultdict(list)
    for e in train_entries:
        for c, lr in log_regrets(e).items():
            per[c].append(lr)
    covered = {c: v for c, v in per.items() if 2 * len(v) >= len(train_entries)}
    return min(covered, key=lambda c: (sum(covered[c]) / len(covered[c]), c))


def evaluate(train_entries: list, test: dict, specs: dict, bandwidth: str, prior_weight: str) -> dict:
    """Per method: regrets, and the predictor's confidence per problem."""
    from convbench.predict import FEATURES, Predictor, heuristic_choice
    from convbench.spec import ConvSpec

    pred = Predictor(bandwidth, prior_weight).fit(train_entries)
    equal = Predictor(bandwidth, prior_weight, feature_weights="equal").fit(train_entries)
    fixed = best_fixed(train_entries)
    cands = sorted({c for t in test.values() for c in t})
    worst = lambda t: max(t.values()) / min(t.values())  # noqa: E731
    oracle = min(cands, key=lambda c: sum(math.log(t[c] / min(t.values()) if c in t else worst(t))
                                          for t in test.values()))
    out = defaultdict(list)
    for (machine, dev, threads, suite, spec_key), times in sorted(test.items()):
        spec, best = ConvSpec.from_dict(specs[spec_key]), min(times.values())
        allow = lambda b, a, d: f"{b}:{a}@{d}" in times  # noqa: E731 - only what was measured ok
        got = pred.prediction(spec, dev, threads=threads, allow=allow)
        picks = {"predictor": got.choice.candidate,
                 "equal": equal.predict(spec, dev, threads=threads, allow=allow).candidate,
                 "fixed": fixed, "oracle": oracle}
        try:
            picks["heuristic"] = heuristic_choice(spec, dev, allow=allow).candidate
        except Exception:
            picks["heuristic"] = None
        for m, c in picks.items():
            out[m].append(times[c] / best if c in times else worst(times))
        out["fallback"].append(got.source != "predicted")
        if got.source == "predicted":
            out["expected"].append(got.expected_regret)
            out["p_within"].append(got.p_within)
    out["names"] = [fixed, oracle]
    out["cv"] = [pred.bandwidth, pred.prior_weight, pred.cv_optimism]
    out["weights"] = [f"{n}={w:g}" for n, w in zip(FEATURES, pred.feature_weights) if w != 1]
    return out


def geo(v: list[float]) -> float:
    return math.exp(sum(map(math.log, v)) / len(v)) if v else float("nan")


COLUMNS = (("n", 4), ("predictor", 10), ("equal wts", 10), ("heuristic", 10), ("best fixed", 11),
           ("oracle fixed", 13), ("said", 7), ("<=5%", 6), ("said", 6))


def _row(name: str, r: dict) -> str:
    within = sum(v <= 1.05 for v in r["predictor"]) / len(r["predictor"])
    said = sum(r["p_within"]) / max(len(r["p_within"]), 1)
    cells = [f"{len(r['predictor'])}"] + [f"{geo(r[m]):.3f}" for m in
                                          ("predictor", "equal", "heuristic", "fixed", "oracle",
                                           "expected")]
    cells += [f"{within:.2f}", f"{said:.2f}"]
    return f"{name:<26}" + "".join(f"{c:>{w}}" for c, (_, w) in zip(cells, COLUMNS))


METHODS = ("predictor", "equal", "heuristic", "fixed", "oracle", "expected", "p_within")


def _pool(rows: list[tuple[str, dict]]) -> dict:
    pooled: dict = defaultdict(list)
    for _, r in rows:
        for m in METHODS:
            pooled[m] += r[m]
    return pooled


def print_table(rows: list[tuple[str, dict]], cpus: dict) -> None:
    print(f"{'held out':<26}" + "".join(f"{h:>{w}}" for h, w in COLUMNS)
          + "   bandwidth/prior weight/optimism; best fixed; oracle fixed")
    for name, r in rows:
        bw, lam, opt = r["cv"]
        print(_row(name, r) + f"   {bw:g}/{lam:g}/{opt:.3f}; {r['names'][0]}; {r['names'][1]}")
        print(f"{'':<26}the heuristic's pick (no training data for any candidate) on "
              f"{sum(r['fallback'])}; feature weights not 1: {', '.join(r['weights']) or 'none'}")
    machines = sorted({name.split()[0] for name, _ in rows})
    if len(machines) > 1:
        for m in machines:
            print(_row(f"all of {m}", _pool([(n, r) for n, r in rows if n.split()[0] == m])))
    if len(rows) > 1:
        print(_row("all held-out problems", _pool(rows)))
    print("columns: geometric-mean regret per method; said = the predictor's mean expected regret; "
          "<=5% = share of its picks within 5% of the fastest; said = its mean p_within")
    for m in machines:
        print(f"machine {m}: {', '.join(sorted(cpus.get(m, {'unknown CPU'})))}")


def loso(train: dict, test: dict, specs: dict, args: argparse.Namespace) -> list[tuple[str, dict]]:
    rows = []
    for machine in sorted({k[0] for k in test}):
        suites = sorted({k[3] for k in test if k[0] == machine})
        for suite in suites:
            held = {k: t for k, t in test.items() if k[0] == machine and k[3] == suite}
            held_specs = {k[4] for k in held}
            keys = [k for k in train if k[0] == machine and k[3] != suite and k[4] not in held_specs]
            if not keys:
                print(f"{machine} {suite}: no other suite on this machine to train on", file=sys.stderr)
                continue
            r = evaluate(entries(train, specs, keys), held, specs, args.bandwidth, args.prior_weight)
            rows.append((f"{machine[:8]} {suite}", r))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loso", nargs="+", metavar="PATH",
                    help="runs (or folders of runs): leave one suite out")
    ap.add_argument("--train", nargs="+", metavar="RUN", help="runs to learn from")
    ap.add_argument("--test", metavar="RUN", help="run whose shapes are predicted")
    ap.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                    help="leave out run directories matching this pattern (repeatable)")
    ap.add_argument("--bandwidth", default="auto", help="kernel bandwidth, or 'auto' (cross-validated)")
    ap.add_argument("--prior-weight", default="auto", help="prior weight, or 'auto' (cross-validated)")
    args = ap.parse_args(argv)
    for a in ("bandwidth", "prior_weight"):
        if getattr(args, a) != "auto":
            setattr(args, a, float(getattr(args, a)))
    if args.loso:
        train, test, specs, cpus = load(find_runs(args.loso, args.exclude))
        rows = loso(train, test, specs, args)
    elif args.train and args.test:
        train, _, specs, cpus = load(find_runs(args.train, args.exclude))
        _, test, specs2, cpus2 = load(find_runs([args.test], args.exclude))
        specs.update(specs2)
        for m, names in cpus2.items():
            cpus.setdefault(m, set()).update(names)
        test_specs = {k[4] for k in test}
        keys = [k for k in train if k[4] not in test_specs]
        rows = [(Path(args.test).name, evaluate(entries(train, specs, keys), test, specs,
                                                args.bandwidth, args.prior_weight))]
    else:
        ap.error("give --loso PATH..., or --train RUN... and --test RUN")
    if not rows:
        print("nothing to evaluate", file=sys.stderr)
        return 1
    print_table(rows, cpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
