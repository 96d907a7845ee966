"""How repeatable is a sweep? Compare two runs of the same suite on the same machine.

    convbench sweep resnet50 --threads 2          # -> results/RUN_A
    convbench sweep resnet50 --threads 2          # -> results/RUN_B, right after
    python benchmarks/repeatability.py results/RUN_A results/RUN_B [--within 0.05]

Prints the share of (problem, candidate) pairs timed in both runs whose medians agree within
``--within`` (default 5%), the share of problems whose winners agree (exactly, or with each
winner inside the other run's statistically tied set), and the worst disagreements.
"""
from __future__ import annotations

import argparse

from convbench.results import read_records
from convbench.selection import select_winners


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("--within", type=float, default=0.05)
    args = ap.parse_args()
    ra, rb = read_records(args.run_a), read_records(args.run_b)

    def ok(recs):
        return {(r["problem"], r["candidate"]): r["median_s"] for r in recs if r["status"] == "ok"}

    ma, mb = ok(ra), ok(rb)
    common = sorted(set(ma) & set(mb))
    ratios = [(mb[k] / ma[k], k) for k in common]
    agree = sum(abs(r - 1) <= args.within for r, _ in ratios)
    print(f"pairs timed in both runs: {len(common)}; medians within {args.within:.0%}: {agree} "
          f"({agree / max(len(common), 1):.0%})")
    wa, wb = select_winners(ra), select_winners(rb)
    same = tied = 0
    for key in sorted(set(wa) & set(wb)):
        a, b = wa[key], wb[key]
        if a.candidate == b.candidate:
            same += 1
        elif a.candidate in b.tied or b.candidate in a.tied:
            tied += 1
        else:
            print(f"  winner differs: {key[0]}: {a.candidate} ({a.median_s * 1e3:.3g} ms) vs "
                  f"{b.candidate} ({b.median_s * 1e3:.3g} ms)")
    n = len(set(wa) & set(wb))
    print(f"problems: {n}; same winner: {same} ({same / max(n, 1):.0%}); different but tied: {tied}")
    print("largest median ratios B/A:")
    for r, k in sorted(ratios, key=lambda t: -abs(t[0] - 1))[:8]:
        print(f"  {r:6.2f}  {k[0]}  {k[1]}")


if __name__ == "__main__":
    main()
