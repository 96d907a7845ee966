"""Typed outcomes: the statuses a measurement ends in and the fields of a stored record.

Defined once here and used by the worker, the sweep, ``conv(policy="tune")``, results,
reports and the cache. A record is one (problem, candidate) measurement as stored in a run's
``records.jsonl``; an outcome is what a measurement of one candidate returns before the sweep
adds the problem's identity (:func:`make_record` joins the two).
"""
from __future__ import annotations

import datetime as _dt
from enum import Enum
from typing import Any, Mapping, Optional


class Status(str, Enum):
    """How a (problem, candidate) pair ended. A ``str``: ``Status.OK == "ok"``, and it is
    written to JSON as its value."""

    OK = "ok"
    UNSUPPORTED = "unsupported"
    UNAVAILABLE = "unavailable"
    WRONG = "wrong"
    CRASHED = "crashed"
    TIMEOUT = "timeout"
    OOM = "oom"
    ERROR = "error"
    #: the race stopped measuring it: clearly slower than the leader (a measured lower bound in
    #: ``info["pruned"]``), or predicted hopeless from measured neighbours; never chosen
    PRUNED = "pruned"

    __str__ = str.__str__
    __format__ = str.__format__

    @property
    def is_failure(self) -> bool:
        """A failure worth a warning (unsupported and unavailable are expected outcomes)."""
        return self in FAILURES


#: every status, in the order tables list them
STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
#: statuses reported as warnings
FAILURES: tuple[Status, ...] = (Status.WRONG, Status.CRASHED, Status.TIMEOUT, Status.OOM, Status.ERROR)
#: the intermediate answer of a verify-only measurement (the race's round 0); never stored
VERIFIED = "verified"
#: the intermediate answer of a screening look (the race) whose calls were all slower than its
#: limit (``info["screen"]``); never stored: the race records the candidate as ``pruned``
ABOVE = "above"

#: timing fields of an outcome (TimingResult's), null unless status == "ok"
TIMING_KEYS = ("median_s", "iqr_s", "min_s", "mean_s", "stdev_s", "ci_low_s", "ci_high_s",
               "n_samples", "loops", "samples_s", "timer", "converged", "warmup_calls", "total_s",
               "round_samples_s", "round_medians_s", "round_spread", "round_quartile_spread",
               "repeat_low_s", "repeat_high_s", "noise")
#: every key of an outcome dict
OUTCOME_KEYS = ("status", "message", "algorithm", "max_error", "tolerance", *TIMING_KEYS,
                "cold_cache", "info", "wall_s", "start_time", "end_time")

#: every stored record's fields, in order
RECORD_FIELDS = (
    "run_id", "problem", "suite", "spec", "spec_key", "label", "backend", "algorithm", "device",
    "candidate", "status", "message", "max_error", "tolerance", "median_s", "iqr_s", "min_s",
    "mean_s", "stdev_s", "ci_low_s", "ci_high_s", "n_samples", "loops", "samples_s",
    "round_samples_s", "round_medians_s", "round_spread", "round_quartile_spread",
    "repeat_low_s", "repeat_high_s", "noise", "gflops", "peak_pct", "peak_roof", "fma_pct", "flops", "bytes", "threads", "cold_cache", "timer", "env_id",
    "machine", "hostname", "info", "timestamp", "start_time", "end_time", "wall_s",
)
#: record fields that are null unless status == "ok"
TIMING_FIELDS = ("median_s", "iqr_s", "min_s", "mean_s", "stdev_s", "ci_low_s", "ci_high_s",
                 "n_samples", "loops", "samples_s", "round_samples_s", "round_medians_s",
                 "round_spread", "round_quartile_spread", "repeat_low_s", "repeat_high_s", "noise", "gflops",
                 "peak_pct", "peak_roof", "fma_pct")


def status_of(value: Any) -> Status:
    """``value`` as a Status; ValueError naming the valid statuses otherwise."""
    try:
        return Status(value)
    except ValueError:
        raise ValueError(f"status {value!r} is not one of {', '.join(STATUSES)}") from None


def now_iso() -> str:
    """The current time as ISO 8601 UTC with a trailing Z, to the millisecond."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def empty_outcome(status: str, message: Optional[str] = None, *, cold_cache: bool = False) -> dict[str, Any]:
    """An outcome dict with every key present and timing fields null."""
    out: dict[str, Any] = {k: None for k in OUTCOME_KEYS}
    out.update(status=status, message=message, cold_cache=bool(cold_cache), info={})
    return out


def make_record(base: Mapping[str, Any], spec: Any, candidate: Any, outcome: Mapping[str, Any], *,
                threads: int, env_id: Optional[str], gemm_peak: Optional[float] = None,
                cold_cache: bool = False, peak: Optional[Mapping[str, Any]] = None,
                machine: Optional[str] = None, hostname: Optional[str] = None) -> dict[str, Any]:
    """The stored record of one measured candidate: the problem's fields (``base``: run_id,
    problem, suite, spec, spec_key, label), the candidate, and the measurement ``outcome``.

    ``spec`` is the ConvSpec (for FLOPs and bytes), ``candidate`` a registry.Candidate.
    ``peak``: the run's measured peaks (``environment.measure_peak``); ``peak_pct`` is then
    relative to the best GEMM rate of the spec's dtype and ``fma_pct`` to the ISA's FMA peak
    at the measured clock, ``peak_roof`` naming the GEMM roof used. Without ``peak``,
    ``gemm_peak`` (GFLOP/s) is the roof. Timing fields are nulled unless the status is
    ``ok``; ``start_time``/``end_time`` are the measurement's (the record's time when the
    outcome has none); ``machine`` (the env_id of the machine type that measured it; default
    ``env_id``) and ``hostname`` name the machine; fields in RECORD_FIELDS order.
    """
    status = status_of(outcome.get("status") or Status.ERROR.value).value
    ok = status == Status.OK
    info = dict(outcome.get("info") or {})
    timing_facts = {k: outcome.get(k) for k in ("converged", "warmup_calls", "total_s")
                    if outcome.get(k) is not None}
    if timing_facts:
        info["timing"] = timing_facts
    median = outcome.get("median_s") if ok else None
    gflops = spec.flops / median / 1e9 if median else None
    roof = _roof(peak, getattr(spec, "dtype", None), gemm_peak)
    stamp = now_iso()
    values = {
        **{k: base.get(k) for k in ("run_id", "problem", "suite", "spec", "spec_key", "label")},
        "backend": candidate.backend, "algorithm": candidate.algorithm, "device": candidate.device,
        "candidate": str(candidate), "status": status,
        **{k: outcome.get(k) for k in ("message", "max_error", "tolerance", "iqr_s", "min_s",
                                       "mean_s", "stdev_s", "ci_low_s", "ci_high_s", "n_samples",
                                       "loops", "samples_s", "round_samples_s", "round_medians_s",
                                       "round_spread", "round_quartile_spread", "repeat_low_s",
                                       "repeat_high_s", "timer")},
        "noise": list(outcome.get("noise") or []),
        "median_s": median, "gflops": gflops,
        "peak_pct": gflops / roof["gemm"] * 100.0 if (gflops and roof["gemm"]) else None,
        "peak_roof": roof["name"] if gflops and roof["gemm"] else None,
        "fma_pct": gflops / roof["fma"] * 100.0 if (gflops and roof["fma"]) else None,
        "flops": spec.flops, "bytes": spec.bytes, "threads": threads,
        "cold_cache": bool(outcome.get("cold_cache", cold_cache)),
        "env_id": env_id, "machine": machine or env_id, "hostname": hostname,
        "info": info, "timestamp": stamp,
        "start_time": outcome.get("start_time") or stamp, "end_time": outcome.get("end_time") or stamp,
        "wall_s": float(outcome.get("wall_s") or 0.0),
    }
    rec = {k: values.get(k) for k in RECORD_FIELDS}
    if not ok:
        for k in TIMING_FIELDS:
            rec[k] = None
    return rec


def _roof(peak: Optional[Mapping[str, Any]], dtype: Optional[str],
          gemm_peak: Optional[float]) -> dict[str, Any]:
    """{"gemm": GFLOP/s, "name": which GEMM, "fma": GFLOP/s} for ``dtype`` from a run's peaks.

    A quantized dtype (int8) has only its own roof (GOP/s): without one, both are None
    rather than a float roof, so its ``peak_pct`` and ``fma_pct`` stay empty."""
    from .quant import is_quantized

    roofs = ((peak or {}).get("roofs") or {}).get(dtype or "") or {}
    gemm = roofs.get("gemm_gflops")
    if gemm:
        return {"gemm": gemm, "fma": roofs.get("fma_gflops"),
                "name": f"best {dtype} GEMM ({roofs.get('gemm_source') or '?'})"}
    if is_quantized(dtype):
        return {"gemm": None, "fma": roofs.get("fma_gflops"), "name": None}
    gemm = gemm_peak if gemm_peak is not None else (peak or {}).get("gemm_gflops")
    src = (peak or {}).get("gemm_source") or "numpy"
    return {"gemm": gemm, "fma": roofs.get("fma_gflops"),
            "name": f"{(peak or {}).get('gemm_dtype') or 'float32'} GEMM ({src})"}


__all__ = ["Status", "STATUSES", "FAILURES", "VERIFIED", "ABOVE", "TIMING_KEYS", "OUTCOME_KEYS",
           "RECORD_FIELDS", "TIMING_FIELDS", "status_of", "now_iso", "empty_outcome", "make_record"]
