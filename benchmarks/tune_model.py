"""Whole models: what ``convbench.tune_model`` costs and what ``convbench.use_tuned`` gains end
to end, on torchvision models with random weights (``weights=None``: nothing is downloaded).

For each model (eval mode, float32, CPU) and each batch size in ``--batches``:

1. ``tune_model(model, x)`` with ``--backends``, ``--budget``, ``--threads``, ``--strategy``
   into a temporary tuned cache and run directory (``--cache`` / ``--out`` to keep them): its
   wall time, and how many distinct problems it swept.
2. ``use_tuned(model)`` (a copy): its first call per batch size makes the layers' decisions
   (confirming each cached choice on the real tensors) and the whole-model check; its time is
   shown, and the check's verdict printed. How many layers run another candidate.
3. Eager and tuned forward passes (under ``torch.inference_mode``) timed side by side in one
   run: ``--rounds`` rounds, each timing a block of about ``--block-ms`` of calls of each model,
   in alternating order, each block after ``--settle-ms`` of untimed calls (a NumPy
   candidate's BLAS threads keep spinning for a while after its calls and slow whatever runs
   next). Per round the ratio tuned / eager; the table shows both medians, the
   median ratio and its 95% distribution-free interval (``convbench.timing.median_ci``) and a
   verdict: ``faster``/``slower`` when the interval excludes 1 and the median ratio lies
   outside ``--min-effect``, ``tie`` when the whole interval lies inside ``--min-effect`` (a
   difference inside the noise), ``unclear`` otherwise.
4. The output difference: max |tuned - eager| / max |eager| over the output.

    python benchmarks/tune_model.py [--models resnet18 mobilenet_v3_small mobilenet_v3_large]
        [--batches 1 8] [--threads N] [--budget S] [--backends torch numpy-im2col ...]
        [--strategy race] [--rounds 21] [--block-ms 200] [--min-effect 0.03]
        [--out DIR] [--cache FILE]

Needs torch and torchvision in the same environment as convbench.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Optional

MODELS = ("resnet18", "mobilenet_v3_small", "mobilenet_v3_large")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v3_small"], choices=MODELS)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--threads", type=int, default=None, help="threads for torch, BLAS and the sweep "
                                                              "(default: all usable cores)")
    ap.add_argument("--budget", type=float, default=None, help="sweep budget per candidate (s)")
    ap.add_argument("--backends", nargs="+", default=None,
                    help="backends to sweep (default: tune_model's: those usable on the tensors)")
    ap.add_argument("--strategy", default="race")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--block-ms", type=float, default=200.0, help="length of one timed block")
    ap.add_argument("--min-effect", type=float, default=0.03)
    ap.add_argument("--settle-ms", type=float, default=100.0,
                    help="untimed calls before each timed block")
    ap.add_argument("--out", default=None, help="keep the sweeps' run directories here")
    ap.add_argument("--cache", default=None, help="tuned cache file (default: a temporary one)")
    args = ap.parse_args(argv)

    from convbench.environment import available_cores, set_thread_env

    args.threads = args.threads or available_cores()
    os.environ.update(set_thread_env(args.threads))
    with tempfile.TemporaryDirectory(prefix="convbench-tune-model-") as tmp:
        args.cache = args.cache or os.path.join(tmp, "tuned.sqlite")
        args.out = args.out or os.path.join(tmp, "runs")
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        import torch
        import torchvision
    except ImportError as exc:
        print(f"tune_model benchmark: needs torch and torchvision ({exc}); install torchvision "
              f"matching your torch (e.g. pip install torch==2.14.1 torchvision==0.29.1)",
              file=sys.stderr)
        return 2
    from threadpoolctl import threadpool_limits

    from convbench.environment import fingerprint, machine_description

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)   # numpy was imported before the environment was set
    fp = fingerprint(args.threads)
    print(f"CPU: {machine_description(fp, 'cpu')}; {fp.get('cpu_cores_logical')} logical cores; "
          f"{args.threads} threads; torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(f"tune_model: strategy {args.strategy}, budget {args.budget or 'default'} s per "
          f"candidate, backends {' '.join(args.backends) if args.backends else 'default'}")
    rows = []
    for name in args.models:
        model = getattr(torchvision.models, name)(weights=None).eval()
        rows += _one_model(name, model, args)
    _print(rows, args)
    return 0


def _one_model(name: str, model: Any, args: argparse.Namespace) -> list[list[Any]]:
    import torch

    import convbench as cb
    from convbench.models import bindings, model_checks
    from convbench.timing import median_ci

    options = dict(backends=args.backends, strategy=args.strategy, threads=args.threads,
                   out=args.out, cache=args.cache, progress=False)
    if args.budget is not None:
        options["budget_s"] = args.budget
    inputs, tune_s, swept = {}, {}, {}
    for n in args.batches:
        inputs[n] = torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(n))
        t0 = time.perf_counter()
        df = cb.tune_model(model, inputs[n], **options)
        tune_s[n] = time.perf_counter() - t0
        swept[n] = int(df.spec_key[df.status == "tuned"].nunique())
    tuned = cb.use_tuned(model, cache=args.cache, threads=args.threads)
    rows = []
    for n in args.batches:
        with torch.inference_mode():
            eager_y = model(inputs[n])
            t0 = time.perf_counter()
            tuned_y = tuned(inputs[n])         # the layers' decisions and the whole-model check
            first_s = time.perf_counter() - t0
        rebound = sum(1 for d in bindings(tuned)
                      if d["candidate"] and d["used"] and d["spec"].split()[1] == f"n{n}")
        check = model_checks(tuned)[-1]
        print(f"{name} n={n}: whole-model check: {check['why']}", file=sys.stderr)
        diff = float((tuned_y - eager_y).abs().max() / eager_y.abs().max())
        eager_s, tuned_s, ratios = _interleaved(model, tuned, inputs[n], args)
        lo, hi = median_ci(ratios)
        ratio = statistics.median(ratios)
        rows.append([name, n, f"{tune_s[n]:.1f} s", swept[n], f"{first_s:.1f} s", rebound,
                     _ms(eager_s), _ms(tuned_s),
                     f"{ratio:.3f} [{lo:.3f}, {hi:.3f}]", _verdict(ratio, lo, hi, args.min_effect),
                     f"{diff:.1e}"])
    return rows


def _interleaved(eager: Any, tuned: Any, x: Any, args: argparse.Namespace) -> tuple[float, float, list[float]]:
    """Median seconds per forward of each model and the per-round ratios tuned / eager."""
    import torch

    def block(model: Any, calls: int) -> float:
        settle = time.perf_counter()          # untimed calls first: the other model's thread
        while time.perf_counter() - settle < args.settle_ms / 1000:   # pools stop spinning
            model(x)
        t0 = time.perf_counter()
        for _ in range(calls):
            model(x)
        return (time.perf_counter() - t0) / calls

    with torch.inference_mode():
        per_call = max(block(eager, 1), block(tuned, 1))
        calls = max(1, int(args.block_ms / 1000 / per_call))
        te, tt = [], []
        for r in range(args.rounds):
            if r % 2:
                tt.append(block(tuned, calls))
                te.append(block(eager, calls))
            else:
                te.append(block(eager, calls))
                tt.append(block(tuned, calls))
    return statistics.median(te), statistics.median(tt), [t / e for t, e in zip(tt, te)]


def _verdict(ratio: float, lo: float, hi: float, effect: float) -> str:
    if 1 - effect <= lo and hi <= 1 + effect:
        return "tie"
    if hi < 1 and ratio < 1 - effect:
        return "faster"
    if lo > 1 and ratio > 1 + effect:
        return "slower"
    return "unclear"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _print(rows: list[list[Any]], args: argparse.Namespace) -> None:
    from convbench.table import print_table

    print_table(["model", "n", "tune time", "problems", "first call", "rebound", "eager", "tuned",
                 "tuned/eager [95%]", "verdict", "max diff"], rows,
                right=["n", "tune time", "problems", "first call", "rebound", "eager", "tuned",
                       "max diff"],
                title="tune_model + use_tuned, end to end (inference_mode, float32)",
                legend={"problems": "distinct convolutions tune_model swept",
                        "first call": "use_tuned's first call: the layers' decisions and the "
                                      "whole-model check",
                        "rebound": "layers use_tuned runs through another candidate",
                        "eager": "median per forward over the rounds",
                        "verdict": f"tie: interval inside +-{args.min_effect:.0%}; faster/slower: "
                                   f"interval excludes 1 and ratio beyond it",
                        "max diff": "max |tuned - eager| / max |eager|"},
                notes=[f"{args.rounds} interleaved rounds, blocks of about {args.block_ms:.0f} ms "
                       f"after {args.settle_ms:.0f} ms of untimed calls"])


if __name__ == "__main__":
    sys.exit(main())
