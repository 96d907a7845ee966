"""``race`` against ``exhaustive`` with the machine's drift taken out: both strategies run on
each problem back to back, on the same warm worker processes, alternating which goes first.

Two separate sweeps of a suite run minutes apart, and on a small shared machine the same
candidate's median can move 2x between them (measured on the 2-core development machine:
torch on resnet50 layer4.conv3 took 0.74, 1.31 and 1.50 ms in three sweeps within 40
minutes), so comparing two separate runs mixes the strategies' decisions with that drift.
Here, problem by problem, each strategy measures every candidate within the same minute or
two. The output is two run directories (``<out>/exhaustive`` and ``<out>/race``, one
combined run each, in the usual format), compared with ``race_vs_exhaustive.py``:

    python benchmarks/race_vs_exhaustive_interleaved.py resnet50 --threads 2 --out /tmp/ivx
    python benchmarks/race_vs_exhaustive.py /tmp/ivx/race /tmp/ivx/exhaustive

Elapsed times in the combined runs' meta are the sums of each strategy's per-problem sweeps.
No tuned cache is written.

``--strategies exhaustive exhaustive`` makes an interleaved A/A pair (``<out>/a`` and
``<out>/b``): two runs of unchanged code whose drift is shared problem by problem, for
``aa_compare.py --runs <out>/a <out>/b``. Set beside a back-to-back pair, it separates what
``compare``'s statistics do from what the machine's changes between runs do.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path


def _iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", nargs="?", default="resnet50", help="suite name or file (default resnet50)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="directory for the two combined runs")
    ap.add_argument("--backends", nargs="+", default=None, metavar="PATTERN")
    ap.add_argument("--strategies", nargs=2, default=["exhaustive", "race"], metavar="STRATEGY",
                    help="the two to interleave (default: exhaustive race; the same one twice "
                         "makes an A/A pair, written to <out>/a and <out>/b)")
    args = ap.parse_args(argv)

    from convbench.environment import measure_peak
    from convbench.results import read_records
    from convbench.suites import load_suite, suite_from_specs
    from convbench import sweep
    from convbench.worker import WorkerPool

    suite = load_suite(args.suite)
    out = Path(args.out)
    same = args.strategies[0] == args.strategies[1]
    # run name -> its strategy: the strategies' names, or a and b for an A/A pair
    runs = dict(zip(("a", "b"), args.strategies)) if same else {s: s for s in args.strategies}
    strategies = tuple(runs)
    combined = {s: {"records": [], "elapsed": 0.0, "meta": None} for s in strategies}
    peak = measure_peak(args.threads, 1.0)
    with WorkerPool(args.threads) as pool, tempfile.TemporaryDirectory(prefix="ivx-") as tmp:
        for i, prob in enumerate(suite.problems):
            order = strategies if i % 2 == 0 else strategies[::-1]
            for strat in order:
                one = suite_from_specs([prob.spec.replace(name=prob.name)], name=suite.name)
                t0 = dt.datetime.now(dt.timezone.utc)
                res = sweep(one, backends=args.backends, threads=args.threads, strategy=runs[strat],
                            out=Path(tmp) / strat, pool=pool, peak=peak, progress=False,
                            update_cache=False, seed=0)
                t1 = dt.datetime.now(dt.timezone.utc)
                c = combined[strat]
                c["records"] += read_records(res.run_dir)
                c["elapsed"] += (t1 - t0).total_seconds()
                c["meta"] = c["meta"] or dict(res.meta)
                print(f"[{i + 1}/{len(suite.problems)}] {prob.name} {strat}: {(t1 - t0).total_seconds():.1f} s",
                      file=sys.stderr)
    start = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    for strat, c in combined.items():
        d = out / strat
        d.mkdir(parents=True, exist_ok=True)
        meta = dict(c["meta"])
        meta.update(run_id=f"interleaved-{strat}", suite=suite.name, strategy=runs[strat],
                    created=_iso(start), finished=_iso(start + dt.timedelta(seconds=c["elapsed"])),
                    problems=len(suite.problems),
                    note="combined from per-problem sweeps run back to back with the other run's "
                         "(benchmarks/race_vs_exhaustive_interleaved.py); created/finished span the "
                         "sum of this run's sweep times")
        run_id = meta["run_id"]
        (d / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        with open(d / "records.jsonl", "w") as fh:
            for r in c["records"]:
                fh.write(json.dumps({**r, "run_id": run_id}, default=str) + "\n")
        print(f"{strat}: {len(c['records'])} records, {c['elapsed']:.0f} s -> {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
