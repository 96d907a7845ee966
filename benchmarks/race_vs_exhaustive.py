"""``race`` against ``exhaustive`` side by side in one run: wall time and the race's regret.

    python benchmarks/race_vs_exhaustive.py resnet50 --threads 2
    python benchmarks/race_vs_exhaustive.py suites/googlenet_v3.txt --threads 2

Problem by problem, both strategies measure the suite's problem back to back (alternating which
goes first), each with its own worker processes (so a worker the race stops and restarts, or
warm JIT caches, stay with the strategy that caused them) and no tuned cache, so the race
learns only from its own earlier problems of this run. Prints the machine's CPU, each
strategy's time (its strategy calls: verification, timing, settling pauses and worker
restarts; and the per-problem sweeps' wall time, which adds planning and run files), the
ratio, and the regret of the race's winners as the exhaustive run measured them (the
exhaustive median of the race's winner over the fastest exhaustive median: geometric mean and
worst), with how often the winners agree and which exhaustive winners the race pruned.
``--noise-floor`` adds a second exhaustive pass (another seed: other inputs and another round
order): the regret of its winners timed by the first is the floor any strategy can reach on
this machine. The runs are written as combined run
directories under ``--out`` (default ``results/race-vs-exhaustive-SUITE-STAMP/``).

Two runs made otherwise (two separate sweeps, or ``race_vs_exhaustive_interleaved.py``) are
compared with ``--compare RACE_RUN EXHAUSTIVE_RUN`` (or just the two run directories).
``--replay RUN [RUN ...]`` replays the race's prediction rule
(:class:`convbench.race_memory.RaceMemory`) on recorded runs, problem by problem in their
recorded order, and counts what it would have skipped and how many of those were within 3x
of their problem's fastest.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path

STRATEGY_NAMES = ("race", "exhaustive")
#: the noise floor's second exhaustive run uses another seed (other inputs, and another
#: shuffled order of the rounds), so the effect of what ran before a candidate counts too:
#: with the same seed both runs time every candidate in the same order
AGAIN_SEED = 1


def _iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- running both ----------------------------------------------------------------------------
def _timed(name: str, times: dict) -> object:
    """STRATEGIES[name], adding each call's seconds to times[problem]."""
    from convbench.strategies import STRATEGIES

    base = STRATEGIES[name]

    def strategy(pool, problem_name, spec, candidates, make_task, emit, *, rounds=None):
        t0 = time.perf_counter()
        try:
            kw = {} if rounds is None else {"rounds": rounds}
            base(pool, problem_name, spec, candidates, make_task, emit, **kw)
        finally:
            times[problem_name] = times.get(problem_name, 0.0) + time.perf_counter() - t0
    return strategy


def run_both(args: argparse.Namespace) -> tuple[dict, Path]:
    """Both strategies on every problem; {strategy: {records, meta, strategy_s, sweep_s}}."""
    from convbench import sweep
    from convbench.environment import measure_peak
    from convbench.results import read_records
    from convbench.strategies import STRATEGIES
    from convbench.suites import load_suite, suite_from_specs
    from convbench.worker import WorkerPool

    suite = load_suite(args.suite)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"results/race-vs-exhaustive-{suite.name}-{stamp}")
    names = STRATEGY_NAMES + (("exhaustive-again",) if args.noise_floor else ())
    runs = {s: {"records": [], "meta": None, "strategy_s": {}, "sweep_s": 0.0} for s in names}
    for s in names:
        STRATEGIES[f"timed-{s}"] = _timed(s.split("-")[0], runs[s]["strategy_s"])
    peak = measure_peak(args.threads, 1.0)
    pools = {s: WorkerPool(args.threads) for s in names}
    warned: dict = {}  # what the sweeps said (load, noise), once each, with a count
    try:
        with tempfile.TemporaryDirectory(prefix="race-vs-exh-") as tmp:
            for i, prob in enumerate(suite.problems):
                order = names if i % 2 == 0 else names[::-1]
                line = []
                for s in order:
                    one = suite_from_specs([prob.spec.replace(name=prob.name)], name=suite.name)
                    t0 = time.perf_counter()
                    said = io.StringIO()
                    res = sweep(one, backends=args.backends, threads=args.threads,
                                budget_s=args.budget, strategy=f"timed-{s}", out=Path(tmp) / s,
                                pool=pools[s], peak=peak, progress=False, update_cache=False,
                                seed=AGAIN_SEED if s == "exhaustive-again" else 0, stream=said)
                    for text in said.getvalue().splitlines():
                        warned[text.split(";")[0]] = warned.get(text.split(";")[0], 0) + 1
                    r = runs[s]
                    r["sweep_s"] += time.perf_counter() - t0
                    r["records"] += read_records(res.run_dir)
                    r["meta"] = r["meta"] or dict(res.meta)
                    line.append(f"{s} {r['strategy_s'].get(prob.name, 0.0):.1f} s")
                print(f"[{i + 1}/{len(suite.problems)}] {prob.name}: {', '.join(line)}", file=sys.stderr)
    finally:
        for s in names:
            pools[s].close()
            STRATEGIES.pop(f"timed-{s}", None)
    for text, n in warned.items():
        print(f"({n} of {len(names) * len(suite.problems)} sweeps) {text}", file=sys.stderr)
    _write(runs, out, suite.name)
    return runs, out


def _write(runs: dict, out: Path, suite: str) -> None:
    """Each strategy's records as one combined run directory (meta created..finished spans
    the sum of its strategy time)."""
    start = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    for s, r in runs.items():
        d = out / s
        d.mkdir(parents=True, exist_ok=True)
        total = sum(r["strategy_s"].values())
        meta = dict(r["meta"] or {})
        meta.update(run_id=f"race-vs-exhaustive-{s}", suite=suite, strategy=s,
                    created=_iso(start), finished=_iso(start + dt.timedelta(seconds=total)),
                    strategy_s=r["strategy_s"], sweep_s=r["sweep_s"],
                    note="combined from per-problem sweeps run back to back with the other "
                         "strategy (benchmarks/race_vs_exhaustive.py); created..finished spans "
                         "the sum of this strategy's time")
        (d / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        with open(d / "records.jsonl", "w") as fh:
            for rec in r["records"]:
                fh.write(json.dumps({**rec, "run_id": meta["run_id"]}, default=str) + "\n")


# ---- comparing -------------------------------------------------------------------------------
def _ok_times(records: list) -> dict:
    out: dict = {}
    for r in records:
        if r.get("status") == "ok" and r.get("median_s"):
            out.setdefault(r["problem"], {})[r["candidate"]] = float(r["median_s"])
    return out


def regret_table(race: list, exh: list) -> dict:
    """Per problem: the race's winner, the exhaustive winner, the verdict and the regret of
    the race's winner as the exhaustive run timed it."""
    from convbench.selection import select_winners

    rw, ew = select_winners(race), select_winners(exh)
    et = _ok_times(exh)
    pruned = {(r["problem"], r["candidate"]): r for r in race if r.get("status") == "pruned"}
    rows = {}
    for key in sorted(set(rw) | set(ew)):
        a, b = rw.get(key), ew.get(key)
        row = {"race": a.candidate if a else None, "exhaustive": b.candidate if b else None,
               "regret": None, "verdict": "missing"}
        if a and b:
            row["verdict"] = ("same" if a.candidate == b.candidate else
                              "tie" if a.candidate in b.tied or b.candidate in a.tied else "DIFFERENT")
            t = et.get(key[0], {})
            if a.candidate in t:
                row["regret"] = t[a.candidate] / min(t.values())
            p = pruned.get((key[0], b.candidate))
            if p is not None:
                row["exhaustive_winner_pruned"] = (p.get("info") or {}).get("race")
        rows[key] = row
    return rows


def report(race: list, exh: list, meta: dict, race_s: float, exh_s: float,
           sweep_s: tuple = (None, None)) -> None:
    from convbench.fmt import geomean

    env = meta.get("environment") or {}
    print(f"machine: {env.get('cpu_model') or '?'} ({env.get('cpu_cores_logical') or '?'} logical "
          f"cores), threads {meta.get('threads')}, budget {meta.get('budget_s')} s per candidate, "
          f"suite {meta.get('suite')}")
    print(f"time of the strategies: race {race_s:.1f} s, exhaustive {exh_s:.1f} s, "
          f"race / exhaustive = {race_s / exh_s:.3f} ({exh_s / race_s:.2f}x cheaper; goal >= 3x)")
    if sweep_s[0] and sweep_s[1]:
        print(f"per-problem sweeps' wall time: race {sweep_s[0]:.1f} s, exhaustive "
              f"{sweep_s[1]:.1f} s, ratio {sweep_s[0] / sweep_s[1]:.3f}")
    rows = regret_table(race, exh)
    print(f"\n{'problem':<34} {'race winner':<38} {'exhaustive winner':<38} verdict   regret")
    for (problem, _), r in rows.items():
        reg = f"{r['regret']:.3f}" if r["regret"] is not None else "-"
        pruned = r.get("exhaustive_winner_pruned")
        extra = f"  (race: {pruned})" if pruned else ""
        print(f"{problem[:34]:<34} {str(r['race'])[:38]:<38} {str(r['exhaustive'])[:38]:<38} "
              f"{r['verdict']:<9} {reg}{extra}")
    regrets = [r["regret"] for r in rows.values() if r["regret"] is not None]
    counts = {v: sum(r["verdict"] == v for r in rows.values())
              for v in ("same", "tie", "DIFFERENT", "missing")}
    print("\nwinners: " + ", ".join(f"{v} {n}" for v, n in counts.items()))
    if regrets:
        worst = max(rows.items(), key=lambda kv: kv[1]["regret"] or 0)
        print(f"regret of the race's winners, timed by the exhaustive run: geometric mean "
              f"{geomean(regrets):.3f} (goal <= 1.03), worst {max(regrets):.3f} ({worst[0][0]}), "
              f"within 5% on {sum(x <= 1.05 for x in regrets)} of {len(regrets)} problems; "
              f"{len(rows) - len(regrets)} without a regret (the race's winner not ok there)")
    notes: dict = {}
    for r in race:
        note = ((r.get("info") or {}).get("race") or r.get("status") or "").split(" (re-admitted")[0]
        k = r.get("status") if r.get("status") != "pruned" else note
        if r.get("status") == "unsupported":
            continue
        notes.setdefault(k, [0, 0.0])
        notes[k][0] += 1
        notes[k][1] += float(r.get("wall_s") or 0.0)
    print("race records: " + ", ".join(f"{k} {n} ({w:.0f} s)" for k, (n, w) in
                                        sorted(notes.items(), key=lambda kv: -kv[1][1])))


def compare_runs(race_dir: str, exh_dir: str) -> int:
    from convbench.cache import read_run

    race, rm = read_run(race_dir)
    exh, em = read_run(exh_dir)

    def elapsed(meta: dict) -> float:
        a = dt.datetime.fromisoformat(str(meta["created"]).replace("Z", "+00:00"))
        b = dt.datetime.fromisoformat(str(meta["finished"]).replace("Z", "+00:00"))
        return (b - a).total_seconds()

    report(race, exh, rm, elapsed(rm), elapsed(em),
           (rm.get("sweep_s"), em.get("sweep_s")))
    return 0


# ---- replaying the prediction rule -----------------------------------------------------------
def replay(run_dirs: list, cfg=None) -> int:
    """The race's hopeless rule replayed on recorded runs (see the module docstring)."""
    from convbench.cache import read_run
    from convbench.race import RaceConfig, RaceMemory
    from convbench.spec import ConvSpec

    cfg = cfg or RaceConfig()
    total = {"candidates": 0, "skipped": 0, "near": 0, "wall_s": 0.0}
    closest = math.inf  # the fastest skipped candidate, over its problem's fastest
    for run in run_dirs:
        records, meta = read_run(run)
        stopped_s = 2 * float(meta.get("max_call_s") or 0) or None  # the old watchdog's limit
        problems: dict = {}
        for r in sorted(records, key=lambda r: str(r.get("start_time") or r.get("timestamp"))):
            if r.get("status") != "unsupported":
                problems.setdefault(r["problem"], []).append(r)
        mem, n = RaceMemory(), dict.fromkeys(total, 0)
        for name, recs in problems.items():
            spec, threads = ConvSpec.from_dict(recs[0]["spec"]), int(recs[0].get("threads") or 1)
            ratios = _ratios(recs, stopped_s)
            for r in recs:
                n["candidates"] += 1
                if mem.hopeless(spec, threads, r["candidate"], cfg):
                    n["skipped"] += 1
                    n["wall_s"] += float(r.get("wall_s") or 0.0)
                    n["near"] += r["status"] == "ok" and ratios.get(r["candidate"], math.inf) < 3
                    if r["status"] == "ok":
                        closest = min(closest, ratios.get(r["candidate"], math.inf))
            mem.add(spec, threads, name, ratios)
        print(f"{run}: {n['candidates']} candidates, {n['skipped']} would be skipped "
              f"({n['wall_s']:.0f} s of measuring there), {n['near']} of them within 3x of the fastest")
        for k in total:
            total[k] += n[k]
    print(f"all: {total['candidates']} candidates, {total['skipped']} skipped, {total['near']} "
          f"within 3x; the fastest skipped one was {closest:.3g}x its problem's fastest")
    return 0


def _ratios(recs: list, stopped_s: float | None = None) -> dict:
    """Each candidate's time (or measured lower bound) over the problem's fastest ok median;
    ``stopped_s``: the lower bound of a timeout that recorded none (runs before the bound was
    recorded: stopped at twice the per-call limit)."""
    ok = [float(r["median_s"]) for r in recs if r["status"] == "ok" and r.get("median_s")]
    if not ok:
        return {}
    out = {}
    for r in recs:
        info = r.get("info") or {}
        t = (r.get("median_s") if r["status"] == "ok" else
             (info.get("verify_est_s") or stopped_s) if r["status"] == "timeout" else
             (info.get("pruned") or {}).get("lower_bound_s") if r["status"] == "pruned" else None)
        if isinstance(t, (int, float)) and t > 0:
            out[r["candidate"]] = float(t) / min(ok)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", nargs="*",
                    help="suite name or file (e.g. resnet50, suites/googlenet_v3.txt); or two run "
                         "directories, race first (as --compare)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                    help="timing budget per candidate (default: the sweep's)")
    ap.add_argument("--backends", nargs="+", default=None, metavar="PATTERN")
    ap.add_argument("--out", default=None, help="directory for the two combined runs")
    ap.add_argument("--noise-floor", action="store_true",
                    help="also run exhaustive a second time (interleaved too) and print the regret "
                         "of its winners timed by the first: how low regret can go here")
    ap.add_argument("--compare", nargs=2, metavar=("RACE_RUN", "EXHAUSTIVE_RUN"),
                    help="compare two existing runs instead of measuring")
    ap.add_argument("--replay", nargs="+", metavar="RUN", help="replay the prediction rule on runs")
    args = ap.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    if args.compare:
        return compare_runs(*args.compare)
    if len(args.suite) == 2 and all(Path(a, "meta.json").is_file() for a in args.suite):
        return compare_runs(*args.suite)
    if len(args.suite) != 1:
        ap.error("give one SUITE (or two run directories, --compare or --replay)")
    args.suite = args.suite[0]
    runs, out = run_both(args)
    race, exh = runs["race"], runs["exhaustive"]
    report(race["records"], exh["records"], race["meta"] or {}, sum(race["strategy_s"].values()),
           sum(exh["strategy_s"].values()), (race["sweep_s"], exh["sweep_s"]))
    if "exhaustive-again" in runs:
        again = runs["exhaustive-again"]["records"]
        regrets = [r["regret"] for r in regret_table(again, exh["records"]).values()
                   if r["regret"] is not None]
        if regrets:
            from convbench.fmt import geomean

            print(f"noise floor: a second exhaustive run's winners, timed by the first: geometric "
                  f"mean {geomean(regrets):.3f}, worst {max(regrets):.3f}")
    print(f"\nruns: {out / 'race'} and {out / 'exhaustive'} "
          f"(python benchmarks/race_vs_exhaustive.py --compare {out / 'race'} {out / 'exhaustive'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
