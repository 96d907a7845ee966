"""Compare a ``race`` run with an ``exhaustive`` run of the same suite: cost and winners.

    convbench sweep resnet50 --threads 2 --strategy race       # -> results/RUN_RACE
    convbench sweep resnet50 --threads 2                         # -> results/RUN_EXH
    python benchmarks/race_vs_exhaustive.py results/RUN_RACE results/RUN_EXH

Both runs are restricted to the candidates they have in common (a backend that gained an
algorithm between the runs would otherwise decide a winner). Prints, per problem, both
winners and whether they agree: ``same``; ``tie`` when they differ
but the other run found them statistically tied (either winner is in the other run's tied
set); ``DIFFERENT`` otherwise. Cost: the sum of the records' ``wall_s`` (time spent on
candidates, verification included; common candidates only) and the runs' elapsed time
(meta ``created`` to ``finished``; all candidates). Regret: each run's winner timed in the *other* run (an independent
measurement in fresh worker processes), divided by the fastest median of that other run;
geometric mean, worst, and on how many problems it is within 5% of that fastest. Run it on
two exhaustive runs (or two race runs) to see the noise floor: how often a strategy agrees
with itself.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys


def _elapsed(meta: dict) -> float | None:
    try:
        a = dt.datetime.fromisoformat(str(meta["created"]).replace("Z", "+00:00"))
        b = dt.datetime.fromisoformat(str(meta["finished"]).replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError):
        return None
    return (b - a).total_seconds()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("race", help="run directory of the race sweep")
    ap.add_argument("exhaustive", help="run directory of the exhaustive sweep")
    ap.add_argument("--labels", nargs=2, default=("race", "exhaustive"), metavar=("A", "B"),
                    help="names of the two runs in the output (e.g. exh1 exh2 for a noise floor)")
    ap.add_argument("--all-candidates", action="store_true",
                    help="do not restrict both runs to the candidates they have in common")
    args = ap.parse_args(argv)

    from convbench.cache import read_run
    from convbench.predict import geomean
    from convbench.selection import select_winners

    la, lb = args.labels
    loaded = {label: read_run(path) for label, path in ((la, args.race), (lb, args.exhaustive))}
    cands = [{r["candidate"] for r in recs} for recs, _ in loaded.values()]
    common = cands[0] & cands[1]
    only = sorted((cands[0] | cands[1]) - common)
    if only and not args.all_candidates:
        print(f"comparing the {len(common)} candidates both runs have; left out (one run only): "
              f"{', '.join(only)}", file=sys.stderr)
    runs = {}
    for label, (records, meta) in loaded.items():
        if not args.all_candidates:
            records = [r for r in records if r["candidate"] in common]
        runs[label] = (records, meta, select_winners(records))
    (rr, rm, rw), (er, em, ew) = runs[la], runs[lb]
    if rm.get("suite") != em.get("suite"):
        print(f"warning: suites differ ({rm.get('suite')} vs {em.get('suite')})", file=sys.stderr)

    def times(records):
        out: dict[str, dict[str, float]] = {}
        for r in records:
            if r.get("status") == "ok" and r.get("median_s"):
                out.setdefault(r["problem"], {})[r["candidate"]] = float(r["median_s"])
        return out

    rt, et = times(rr), times(er)
    keys = sorted(set(rw) | set(ew))
    agree = {"same": 0, "tie": 0, "DIFFERENT": 0, "missing": 0}
    ra, rb = f"{la} winner, timed by {lb}", f"{lb} winner, timed by {la}"
    regret: dict[str, list[float]] = {ra: [], rb: []}
    print(f"{'problem':<22} {la + ' winner':<42} {lb + ' winner':<42} verdict")
    for k in keys:
        a, b = rw.get(k), ew.get(k)
        if a is None or b is None:
            agree["missing"] += 1
            print(f"{k[0]:<22} {a.candidate if a else '-':<42} {b.candidate if b else '-':<42} missing")
            continue
        if a.candidate == b.candidate:
            verdict = "same"
        elif a.candidate in b.tied or b.candidate in a.tied:
            verdict = "tie"
        else:
            verdict = "DIFFERENT"
        agree[verdict] += 1
        for (win, other), name in (((a, et), ra), ((b, rt), rb)):
            t = other.get(k[0], {})
            if win.candidate in t:
                regret[name].append(t[win.candidate] / min(t.values()))
        print(f"{k[0]:<22} {a.candidate:<42} {b.candidate:<42} {verdict}")

    print()
    for label, (records, meta, _) in runs.items():
        wall = sum(float(r.get("wall_s") or 0) for r in records)
        by_status: dict[str, float] = {}
        for r in records:
            by_status[r.get("status")] = by_status.get(r.get("status"), 0.0) + float(r.get("wall_s") or 0)
        print(f"{label:<11} candidate time by status: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(by_status.items(), key=lambda kv: -kv[1])))
        el = _elapsed(meta)
        print(f"{label:<11} run {meta.get('run_id')}: {len(records)} records, candidate time "
              f"(sum of wall_s) {wall:.0f} s, elapsed {el:.0f} s" if el is not None else
              f"{label:<11} run {meta.get('run_id')}: {len(records)} records, candidate time {wall:.0f} s")
    rwall = sum(float(r.get("wall_s") or 0) for r in rr)
    ewall = sum(float(r.get("wall_s") or 0) for r in er)
    if ewall:
        print(f"{la} / {lb} candidate time: {rwall / ewall:.2f}")
    el_r, el_e = _elapsed(rm), _elapsed(em)
    if el_r and el_e:
        print(f"{la} / {lb} elapsed time:   {el_r / el_e:.2f}")
    print("winners: " + ", ".join(f"{v} {k}" for k, v in agree.items()))
    for name, vals in regret.items():
        if vals:
            near = sum(v <= 1.05 for v in vals)
            print(f"regret of the {name}: geometric mean {geomean(vals):.3f}, worst {max(vals):.3f}, "
                  f"within 5% of the fastest on {near} of {len(vals)} problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
