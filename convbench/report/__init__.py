"""Tables, run-to-run comparisons and a self-contained HTML report over measured results.

Every function takes the DataFrame of :func:`convbench.results.load_results`, or anything
``load_results`` accepts (a run directory, several, or a glob). Candidates are named
``backend:algorithm@device``; "problem" is the problem's name in its suite.

- :func:`winners`: the fastest correct candidate per problem and device.
- :func:`machine_winners`: each machine's winners side by side (runs on several machines).
- :func:`pivot`: median time, GFLOP/s or percent of peak, problem x candidate. Rates of
  int8 problems count integer operations: GOP/s (:func:`rate_label` names a frame's unit).
- :func:`speedup`: baseline time / candidate time, problem x candidate (> 1: faster).
- :func:`geomean`: geometric means per suite (or any grouping) and candidate.
- :func:`status_counts`, :func:`warnings`: failures and noisy measurements.
- :func:`compare`: run B against run A, judged by both runs' between-round variation.
- :func:`html_report`: one HTML file, plots embedded, readable offline.

Modules: ``frame`` (loading, the baseline), ``tables``, ``comparison``, ``kernel_grid``,
``plots``, ``html_page`` and ``formatting``. pandas, scipy and matplotlib are imported
inside the functions.
"""
from __future__ import annotations

from ..fmt import fmt_time
from ..outcome import STATUSES
from .comparison import NOT_COMPARABLE, VERDICTS, compare, summarize_comparison
from .formatting import fmt_number, fmt_ratio, fmt_value
from ..quant import rate_unit
from .frame import (DEFAULT_BASELINE_RULE, METRICS, Runs, default_baseline, load_frame,
                    load_metas, metric_label, rate_label, resolve_candidate)
from .html_page import html_report
from .kernel_grid import candidate_family, crossover, kernel_grid_series
from .plots import candidate_colors, crossover_plot
from .tables import (FAILURES, NOISE_THRESHOLD, geomean, machine_winners, pivot, speedup,
                     status_counts, to_csv, warnings, winners)

__all__ = [
    "STATUSES", "FAILURES", "METRICS", "VERDICTS", "NOT_COMPARABLE", "NOISE_THRESHOLD",
    "DEFAULT_BASELINE_RULE", "Runs",
    "load_frame", "load_metas", "resolve_candidate", "default_baseline",
    "winners", "machine_winners", "pivot", "speedup", "geomean", "status_counts", "warnings", "to_csv",
    "compare", "summarize_comparison",
    "kernel_grid_series", "crossover", "candidate_family", "crossover_plot", "candidate_colors",
    "html_report", "fmt_time", "fmt_value", "fmt_ratio", "fmt_number",
    "rate_label", "rate_unit", "metric_label",
]
