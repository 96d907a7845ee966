"""How repeatable is a sweep? Compare two runs of the same suite on the same machine.

    convbench sweep resnet50 --threads 2          # -> results/RUN_A
    convbench sweep resnet50 --threads 2          # -> results/RUN_B, right after
    python benchmarks/repeatability.py results/RUN_A results/RUN_B [--within 0.05]

Prints the share of (problem, candidate) pairs timed in both runs whose medians agree within
``--within`` (default 5%); the share of records whose reported intervals contain the other
run's median (each run's interval against the other's median, both directions counted), for
the median's confidence interval (``ci_low_s``..``ci_high_s``) and the repeat interval
(``repeat_low_s``..``repeat_high_s``, recomputed from the round medians for runs recorded
before it existed, or for all with ``--recompute``); the share of problems whose winners agree (exactly,
or with each winner inside the other run's tied set), and separately among the problems where
the winner's margin over the runner-up exceeds ``--within`` in both runs; the
machine-speed canary's ratio between the runs, how it tracks the medians' ratios, and how
many medians agree once each round is divided by its own canary; and the worst disagreements.
"""
from __future__ import annotations

import argparse
import math

from convbench.results import read_records
from convbench.selection import select_winners
from convbench.timing import repeat_bounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("--within", type=float, default=0.05)
    ap.add_argument("--recompute", action="store_true",
                    help="recompute repeat intervals from the round medians with this code")
    args = ap.parse_args()
    ra, rb = read_records(args.run_a), read_records(args.run_b)

    def ok(recs):
        return {(r["problem"], r["candidate"]): r["median_s"] for r in recs if r["status"] == "ok"}

    def intervals(recs, fields):
        out = {}
        for r in recs:
            if r["status"] != "ok":
                continue
            lo, hi = r.get(fields[0]), r.get(fields[1])
            if (lo is None or args.recompute) and fields[0] == "repeat_low_s" \
                    and r.get("round_medians_s"):
                # runs recorded before the field existed (or --recompute): this code's rule
                lo, hi = repeat_bounds(r["round_medians_s"], r["ci_low_s"], r["ci_high_s"])
            out[(r["problem"], r["candidate"])] = (lo, hi)
        return out

    ma, mb = ok(ra), ok(rb)
    common = sorted(set(ma) & set(mb))
    ratios = [(mb[k] / ma[k], k) for k in common]
    agree = sum(abs(r - 1) <= args.within for r, _ in ratios)
    print(f"pairs timed in both runs: {len(common)}; medians within {args.within:.0%}: {agree} "
          f"({agree / max(len(common), 1):.0%})")
    for name, fields in (("confidence intervals of the median (ci_low_s..ci_high_s)",
                          ("ci_low_s", "ci_high_s")),
                         ("repeat intervals (repeat_low_s..repeat_high_s)",
                          ("repeat_low_s", "repeat_high_s"))):
        ia, ib = intervals(ra, fields), intervals(rb, fields)
        covered = checked = 0
        for k in common:
            for (lo, hi), other in ((ia[k], mb[k]), (ib[k], ma[k])):
                if lo is not None and hi is not None:
                    checked += 1
                    covered += lo <= other <= hi
        print(f"{name} containing the other run's median: {covered} of {checked} "
              f"({covered / max(checked, 1):.0%})")
    _canaries(ra, rb, common, args.within)
    wa, wb = select_winners(ra), select_winners(rb)
    same = tied = clear = clear_same = 0
    for key in sorted(set(wa) & set(wb)):
        a, b = wa[key], wb[key]
        margins = [_margin(ok(recs), key[0], w.candidate) for recs, w in ((ra, a), (rb, b))]
        if all(m is not None and m > 1 + args.within for m in margins):
            clear += 1
            clear_same += a.candidate == b.candidate
        if a.candidate == b.candidate:
            same += 1
        elif a.candidate in b.tied or b.candidate in a.tied:
            tied += 1
        else:
            print(f"  winner differs: {key[0]}: {a.candidate} ({a.median_s * 1e3:.3g} ms) vs "
                  f"{b.candidate} ({b.median_s * 1e3:.3g} ms)")
    n = len(set(wa) & set(wb))
    print(f"problems: {n}; same winner: {same} ({same / max(n, 1):.0%}); different but tied: {tied}")
    print(f"problems whose winner leads the runner-up by more than {args.within:.0%} in both runs: "
          f"{clear}; same winner there: {clear_same}")
    print("largest median ratios B/A:")
    for r, k in sorted(ratios, key=lambda t: -abs(t[0] - 1))[:8]:
        print(f"  {r:6.2f}  {k[0]}  {k[1]}")


def _canaries(ra: list, rb: list, common: list, within: float) -> None:
    """The machine-speed canary (``info["canary_s"]``, :func:`convbench.noise.canary_s`) of
    each record in both runs: its median ratio B/A, how closely the records' canary ratios
    follow their median ratios (Spearman's rank correlation), and how many medians agree
    within ``within`` once each round's median is divided by that round's canary."""
    from scipy.stats import spearmanr

    def can(recs):
        return {(r["problem"], r["candidate"]): ((r.get("info") or {}).get("canary_s"), r["median_s"])
                for r in recs if r["status"] == "ok"}

    ca, cb = can(ra), can(rb)
    pairs = [(cb[k][0] / ca[k][0], cb[k][1] / ca[k][1]) for k in common
             if ca[k][0] and cb[k][0]]
    if len(pairs) < 3:
        print("machine-speed canary: not recorded in both runs")
        return
    canary = sorted(p[0] for p in pairs)
    rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs])[0]
    print(f"machine-speed canary B/A: median {canary[len(canary) // 2]:.3f}, range "
          f"{canary[0]:.3f}..{canary[-1]:.3f}; rank correlation with the median ratios "
          f"{rho:.2f} over {len(pairs)} records")
    da, db = _per_canary(ra), _per_canary(rb)
    both = [k for k in common if k in da and k in db]
    if both:
        raw = [math.log(cb[k][1] / ca[k][1]) for k in both]
        div = [math.log(db[k] / da[k]) for k in both]
        def agree(xs: list) -> int:
            return sum(abs(math.exp(x) - 1) <= within for x in xs)
        print(f"each round's median divided by that round's canary, median over the rounds: "
              f"within {within:.0%} {agree(div)} of {len(both)} (undivided {agree(raw)}); "
              f"log-sd of the ratios {_sd(div):.3f} "
              f"(undivided {_sd(raw):.3f})")


def _per_canary(recs: list) -> dict:
    """(problem, candidate) -> median over its rounds of round median / round canary, for
    records whose every ok round has both."""
    import statistics

    out = {}
    for r in recs:
        rounds = [x for x in (r.get("info") or {}).get("rounds", []) if x.get("status", "ok") == "ok"]
        meds = r.get("round_medians_s") or []
        cans = [x.get("canary_s") for x in rounds]
        if r["status"] == "ok" and meds and len(meds) == len(cans) and all(cans):
            out[(r["problem"], r["candidate"])] = statistics.median(m / c for m, c in zip(meds, cans))
    return out


def _sd(xs: list) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def _margin(medians: dict, problem: str, winner: str):
    """Runner-up median / winner median for one problem (None with a single candidate)."""
    others = sorted(v for (p, c), v in medians.items() if p == problem and c != winner)
    mine = medians.get((problem, winner))
    return others[0] / mine if others and mine else None


if __name__ == "__main__":
    main()
