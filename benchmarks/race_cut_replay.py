"""Replay the race's final-round cut (``RaceConfig.cut_rounds`` / ``cut_ratio``) on committed
exhaustive runs, which time every candidate in the same interleaved rounds the race's finals
use.

Per problem, the candidates whose median is within ``--final-ratio`` (1.3, the race's
``final_ratio``) of the fastest stand in for the race's finalists. After ``R`` rounds and each
later one, a finalist whose round median was at least ``ratio`` times the best finalist's in
every round so far (best: the lowest median of its round medians) leaves, as
:meth:`convbench.race._Race.cut` decides. Printed per (R, ratio) and run: the share of the
finalists' rounds saved, the geometric-mean and worst regret of the pick (fastest median over
the rounds each finalist got) against the fastest over all ten rounds, and how many problems
lost their winner to the cut.

    python benchmarks/race_cut_replay.py results/race-vs-exhaustive-resnet50-s8-20261202/exhaustive ...
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import statistics
from pathlib import Path


def load(run: Path, rounds: int) -> dict[str, dict[str, list[float]]]:
    """problem -> candidate -> its round medians in round order (ok records with every round)."""
    by: dict[str, dict[str, list[float]]] = collections.defaultdict(dict)
    with open(run / "records.jsonl") as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("status") != "ok":
                continue
            rs = [x for x in (r.get("info") or {}).get("rounds") or []
                  if x.get("status") == "ok" and x.get("median_s")]
            if len(rs) >= rounds:
                by[r["problem"]][r["candidate"]] = [x["median_s"] for x in
                                                    sorted(rs, key=lambda x: x["round"])][:rounds]
    return by


def replay(by: dict, cut_rounds: int, ratio: float, final_ratio: float, rounds: int) -> tuple:
    saved = total = lost = 0
    regrets = []
    for cands in by.values():
        med = {c: statistics.median(v) for c, v in cands.items()}
        fastest = min(med.values())
        finalists = [c for c in cands if med[c] <= final_ratio * fastest]
        live, got = set(finalists), {c: rounds for c in finalists}
        for k in range(cut_rounds, rounds):
            if len(live) < 2:
                break
            best = min(sorted(live), key=lambda c: statistics.median(cands[c][:k]))
            for c in sorted(live):
                if c != best and min(a / b for a, b in zip(cands[c][:k], cands[best][:k])) >= ratio:
                    live.discard(c)
                    got[c] = k
        total += rounds * len(finalists)
        saved += sum(rounds - g for g in got.values())
        pick = min(finalists, key=lambda c: statistics.median(cands[c][:got[c]]))
        true = min(finalists, key=lambda c: med[c])
        regrets.append(med[pick] / med[true])
        lost += got[true] < rounds
    return (saved / max(total, 1), math.exp(sum(map(math.log, regrets)) / len(regrets)),
            max(regrets), lost, len(regrets))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="exhaustive run directories")
    ap.add_argument("--rounds", type=int, default=10, help="rounds per candidate in the runs")
    ap.add_argument("--final-ratio", type=float, default=1.3)
    ap.add_argument("--cut-rounds", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--cut-ratio", type=float, nargs="+", default=[1.05, 1.1, 1.15, 1.2])
    args = ap.parse_args()
    data = {run: load(run, args.rounds) for run in args.runs}
    for R in args.cut_rounds:
        for ratio in args.cut_ratio:
            print(f"cut after {R} rounds at {ratio:g}x:")
            for run, by in data.items():
                s, g, w, lost, n = replay(by, R, ratio, args.final_ratio, args.rounds)
                print(f"  {run}: rounds saved {s:.0%}, regret {g:.4f} (worst {w:.3f}), "
                      f"winner cut on {lost} of {n} problems")


if __name__ == "__main__":
    main()
