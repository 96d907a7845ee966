"""Does `convbench compare` see a real regression, and only that?

Three sweeps of the `quick` suite over the numpy/scipy backends, one after the other:
A and B unchanged, C with numpy-im2col slowed by a busy-wait of 20 us per call. Prints the
verdict counts of compare(A, B) (ideally all "same"/"ambiguous") and compare(A, C) (im2col rows
"slower"). Usage: python benchmarks/compare_slowed.py [--out DIR] [--threads N]
"""
import argparse
import os
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import convbench as cb  # noqa: E402
from convbench.report import compare  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=tempfile.mkdtemp(prefix="convbench-compare-"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=0.5)
    args = ap.parse_args()
    common = dict(backends=["numpy-*", "scipy-fft"], threads=args.threads, budget_s=args.budget,
                  out=args.out, update_cache=False, progress=False)
    a = cb.sweep("quick", **common)
    b = cb.sweep("quick", **common)
    from _slowed_backend import SlowedIm2col

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "registered twice": replacing numpy-im2col is the point
        cb.register(SlowedIm2col)
    c = cb.sweep("quick", **common)
    for title, other in (("A vs B (no change)", b), ("A vs C (numpy-im2col slowed by 20 us/call)", c)):
        df = compare(str(a.run_dir), str(other.run_dir))
        print(f"\n== {title}")
        print(df["verdict"].value_counts().to_string())
        rows = df[df["candidate"].str.startswith("numpy-im2col")]
        print(rows[["problem", "candidate", "ratio", "verdict"]].to_string(index=False))


if __name__ == "__main__":
    main()
