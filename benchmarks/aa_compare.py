"""Does `convbench compare` call unchanged code "same", and catch a 10% regression? In one go.

1. Two back-to-back sweeps of SUITE with the same settings: runs A and B (or --runs A B).
2. compare(A, B): the share of comparable rows called faster or slower is the A/A
   false-positive share (goal: <= 5% of rows at the default --min-effect).
3. For each candidate in turn (or only --candidate), a copy of B in which that candidate's
   timings (every figure under a ``*_s`` timing key: samples, round samples, round medians,
   median, interval ...) are multiplied by --factor (1.10): compare(A, B'): the share of the
   scaled candidate's rows called slower, pooled over all candidates, is the detection share
   (goal: >= 90%). Every row of the pair is tested once, so the share does not hinge on
   which candidate happens to be scaled.

Prints both shares for every --min-effect given, so one pair of runs calibrates the default;
and both again from the rows' own statistics (ratio and interval), before compare's run-level
machine rules withhold verdicts: what the verdicts would have been had the machine been trusted.

    python benchmarks/aa_compare.py resnet50 --backends torch numpy-im2col --threads 2
    python benchmarks/aa_compare.py --runs results/RUN_A results/RUN_B --min-effect 0.03 0.05
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import convbench as cb
from convbench.report import compare
from convbench.report.comparison import verdict
from convbench.selection import DEFAULT_MIN_EFFECT

#: the timing figures of a record that a slower candidate would show scaled
TIMED = ("median_s", "iqr_s", "min_s", "mean_s", "stdev_s", "ci_low_s", "ci_high_s", "samples_s",
         "round_samples_s", "round_medians_s", "repeat_low_s", "repeat_high_s")


def _scale(value, factor: float):
    if isinstance(value, list):
        return [_scale(v, factor) for v in value]
    return value * factor if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def scaled_copy(run_dir: Path, candidate: str, factor: float, out_dir: Path) -> Path:
    """A copy of the run with ``candidate``'s ok timings multiplied by ``factor`` (a new run id)."""
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "meta.json").read_text())
    new_id = f"{meta['run_id']}-x{factor:g}"
    dest = Path(out_dir) / new_id
    dest.mkdir(parents=True)
    meta["run_id"] = new_id
    (dest / "meta.json").write_text(json.dumps(meta))
    with open(run_dir / "records.jsonl") as src, open(dest / "records.jsonl", "w") as out:
        for line in src:
            rec = json.loads(line)
            rec["run_id"] = new_id
            if rec.get("candidate") == candidate and rec.get("status") == "ok":
                for k in TIMED:
                    rec[k] = _scale(rec.get(k), factor)
                if rec.get("gflops"):
                    rec["gflops"] /= factor
            out.write(json.dumps(rec) + "\n")
    return dest


def ok_candidates(run_dir: Path) -> list[str]:
    """Every candidate with an ok record in the run, by name."""
    df = cb.load_results(str(run_dir))
    return sorted(set(df.loc[df["status"] == "ok", "candidate"]))


def shares(run_a: Path, run_b: Path, scaled: dict[str, Path], min_effect: float) -> dict:
    """False-positive share of A vs B, and detection share of A vs each B' (the scaled
    candidate's rows, pooled), for one min_effect."""
    import pandas as pd

    aa = compare(str(run_a), str(run_b), min_effect=min_effect)
    ok = aa[aa["verdict"] != "n/a"]
    fp = ok["verdict"].isin(["faster", "slower"])
    parts = []
    for cand, path in scaled.items():
        inj = compare(str(run_a), str(path), min_effect=min_effect)
        parts.append(inj[(inj["candidate"] == cand) & (inj["verdict"] != "n/a")])
    rows = pd.concat(parts) if parts else pd.DataFrame({"verdict": []})
    # the rows' own statistics, before the run-level machine rules withhold them (compare keeps
    # each row's ratio and interval): what the verdicts would have been on a machine trusted
    band = (1.0 / (1.0 + min_effect), 1.0 + min_effect)

    def stat(df: "pd.DataFrame") -> list[str]:
        return [verdict(r, lo, hi, band) if pd.notna(lo) else "ambiguous"
                for r, lo, hi in zip(df.get("ratio", []), df.get("ci_low", []), df.get("ci_high", []))]
    fp_stat = [v in ("faster", "slower") for v in stat(ok)]
    det_stat = [v == "slower" for v in stat(rows)]
    return {"min_effect": min_effect, "rows": len(ok), "false_positives": int(fp.sum()),
            "fp_stat": sum(fp_stat), "detected_stat": sum(det_stat),
            "disturbed": bool(aa.attrs.get("disturbed")), "notes": list(aa.attrs.get("notes", [])),
            "fp_share": float(fp.mean()) if len(ok) else float("nan"),
            "aa_counts": aa.attrs["counts"], "injected_rows": len(rows),
            "detected": int((rows["verdict"] == "slower").sum()),
            "detect_share": float((rows["verdict"] == "slower").mean()) if len(rows) else float("nan"),
            "injected_counts": {str(k): int(v) for k, v in rows["verdict"].value_counts().items()}}


def run_pair(args: argparse.Namespace, out: Path) -> tuple[Path, Path]:
    common = dict(backends=args.backends, threads=args.threads, budget_s=args.budget,
                  rounds=args.rounds, out=out,
                  update_cache=False, progress=not args.quiet, strategy=args.strategy)
    if args.peak_gflops:
        common["peak"] = {"gemm_gflops": args.peak_gflops, "gemm_dtype": "float32"}
    a = cb.sweep(args.suite, **common)
    b = cb.sweep(args.suite, **common)
    return Path(a.run_dir), Path(b.run_dir)


def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", nargs="?", help="suite to sweep twice (not with --runs)")
    ap.add_argument("--runs", nargs=2, metavar=("RUN_A", "RUN_B"), help="compare these instead")
    ap.add_argument("--backends", nargs="+", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--budget", type=float, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--strategy", default=None)
    ap.add_argument("--out", default=None, help="where the runs go (default: a temporary folder)")
    ap.add_argument("--candidate", default=None, help="candidate to slow down (default: every "
                    "candidate in turn)")
    ap.add_argument("--factor", type=float, default=1.10)
    ap.add_argument("--min-effect", type=float, nargs="+", default=[DEFAULT_MIN_EFFECT])
    ap.add_argument("--peak-gflops", type=float, default=None, help="skip peak calibration (tests)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="convbench-aa-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.runs:
        run_a, run_b = (Path(r) for r in args.runs)
    elif args.suite:
        run_a, run_b = run_pair(args, out)
    else:
        ap.error("give SUITE to sweep twice, or --runs RUN_A RUN_B")
    cands = [args.candidate] if args.candidate else ok_candidates(run_b)
    scaled_dir = Path(tempfile.mkdtemp(prefix="scaled-", dir=out))
    scaled = {c: scaled_copy(run_b, c, args.factor, scaled_dir / f"{i}") for i, c in enumerate(cands)}
    print(f"A: {run_a}\nB: {run_b}\nB': B with one candidate's timings x {args.factor:g}, for each of "
          f"{len(cands)} candidates in turn (copies under {scaled_dir})")
    results = [shares(run_a, run_b, scaled, me) for me in args.min_effect]
    for r in results:
        print(f"min_effect {r['min_effect']:.3g}: A/A false positives {r['false_positives']}/"
              f"{r['rows']} = {r['fp_share']:.1%} (goal <= 5%; {r['aa_counts']}); "
              f"{args.factor:g}x detected {r['detected']}/{r['injected_rows']} = "
              f"{r['detect_share']:.1%} (goal >= 90%; {r['injected_counts']})")
        print(f"  the rows' own statistics, before compare's machine rules (steal/busy/throttle/"
              f"freq flags, canary): false positives {r['fp_stat']}/{r['rows']}, "
              f"{args.factor:g}x detected {r['detected_stat']}/{r['injected_rows']}")
    for note in results[0]["notes"] if results else []:
        print(f"  compare A B: {note}")
    return results


if __name__ == "__main__":
    main()
