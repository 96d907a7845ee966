"""Whole models: ``convbench.tune_model()`` sweeps every convolution a model runs and
``convbench.use_tuned()`` runs the model with its convolutions dispatched through the cache.

The core knows no framework: it asks every registered backend whether it owns the model
(``Backend.model_support``); the owner runs the model once and reports its convolutions
(``Backend.collect_convs``, one :class:`ModelConv` per layer and problem) and rebinds its
convolution modules (``Backend.wrap_convs``). The built-in torch backend owns
``torch.nn.Module`` models (``convbench_backends._torch_models``).

What a layer runs under :func:`use_tuned` (decided once per layer and input signature, by
:class:`Binder`): the cached winner for that exact problem on this machine, or the fastest
cached candidate that can run on the model's tensors without copying them (the eligibility of
``convbench.conv()``, :mod:`convbench.dispatch`), but only when its cached median beats the
cached median of the layer's *own call* (the candidate that is what the module itself runs,
named by the owning backend) by more than ``min_gain``, and (``confirm``) when it beats the own
call by as much again timed on the layer's real tensors. Otherwise -- no entry, a stale entry,
the own call fastest, the own call not measured, a gain inside ``min_gain`` -- the layer keeps
its own forward. The timings compare the convolution without bias on both sides; a rebound
layer adds its bias in a separate step, which its own call may fuse: ``min_gain`` (default the
selection's minimum effect) covers that.
"""
from __future__ import annotations

import math
import re
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from .errors import ConvbenchError, InvalidInputError
from .registry import Backend, Candidate, get_backend, list_backends
from .spec import ConvSpec


@dataclass
class ModelConv:
    """One convolution a model ran: a layer and the problem it computed there.

    ``spec`` is None when the call cannot be expressed as a ConvSpec; ``reason`` says why the
    layer is not tuned or cannot be rebound (None: it is tuned and rebindable); ``own`` is the
    candidate (``backend:algorithm@device``) that the model's own call is, or None.
    """

    layer: str
    module: str
    spec: Optional[ConvSpec]
    device: str = "cpu"
    own: Optional[str] = None
    kind: Optional[str] = None
    reason: Optional[str] = None
    calls: int = 1


def model_owner(model: Any) -> Backend:
    """The registered backend that handles ``model``; ConvbenchError naming what was asked."""
    answers = []
    for name in list_backends():
        try:
            b = get_backend(name)
            s = b.model_support(model)
        except ConvbenchError:
            continue
        if s:
            return b
        answers.append(f"{name}: {s.reason}")
    raise InvalidInputError(
        f"model: {type(model).__module__}.{type(model).__qualname__} is not a model any backend "
        f"handles (tune_model/use_tuned take e.g. a torch.nn.Module); backends said: "
        f"{'; '.join(answers) or 'no backend registered'}")


# ---- tune_model ---------------------------------------------------------------------------
def tune_model(model: Any, *example_inputs: Any, strategy: str = "race",
               backends: Optional[Sequence[str]] = None, grad: bool = False,
               **sweep_options: Any) -> Any:
    """Run ``model(*example_inputs)`` once, sweep every distinct convolution it called and
    store the winners in the tuned cache; one row per layer and problem (a pandas DataFrame).

    ``strategy`` (default "race"), ``backends`` and the other keyword options (``budget_s``,
    ``threads``, ``out``, ``cache``, ``progress``, ...) go to :func:`convbench.sweep`.
    ``backends`` default: every backend with a candidate that :func:`use_tuned` can run on the
    model's tensors (all of a backend's candidates are swept, e.g. torch's compile ones too);
    the backend of each layer's own call is always added, so its speedup can be stated. ``grad``:
    run the model with autograd on (default: under no-grad). The model runs as it is (put it in
    ``eval()`` first for inference: a training-mode model updates its statistics).

    Columns: ``layer``, ``module``, ``calls``, ``spec`` (label), ``spec_key``, ``device``,
    ``status`` ("tuned", "not tuned" with ``note``, "no winner"), ``winner``,
    ``winner_median_s``, ``own`` (the model's own call), ``own_median_s``, ``speedup``
    (own / winner), ``note``. ``attrs["run_dirs"]`` lists the sweeps' run directories.
    """
    import pandas as pd

    owner = model_owner(model)
    convs = owner.collect_convs(model, tuple(example_inputs), grad=grad)
    tunable = [c for c in convs if c.spec is not None and c.reason is None]
    results: dict[str, tuple[Any, str]] = {}  # spec key -> (sweep result, problem name)
    run_dirs = []
    for device in sorted({c.device for c in tunable}):
        group = [c for c in tunable if c.device == device]
        problems = _problems(group)
        names = _backends_for(group, backends)
        res = _sweep(model, problems, names, device, strategy, sweep_options)
        run_dirs.append(str(res.run_dir))
        for name, spec in problems.items():
            results[spec.key] = (res, name)
    df = pd.DataFrame([_row(c, results) for c in convs], columns=ROW_COLUMNS)
    df.attrs["run_dirs"] = run_dirs
    return df


ROW_COLUMNS = ["layer", "module", "calls", "spec", "spec_key", "device", "status", "winner",
               "winner_median_s", "own", "own_median_s", "speedup", "note"]


def _problems(convs: list[ModelConv]) -> dict[str, ConvSpec]:
    """Problem name (the first layer that ran it) -> spec, one per distinct spec."""
    out: dict[str, ConvSpec] = {}
    seen: set = set()
    for c in convs:
        assert c.spec is not None
        if c.spec.key not in seen:
            seen.add(c.spec.key)
            name = c.layer or c.module
            base, i = name, 2
            while name in out:
                name, i = f"{base}#{i}", i + 1
            out[name] = c.spec.replace(name=name)
    return out


def _backends_for(convs: list[ModelConv], backends: Optional[Sequence[str]]) -> list[str]:
    """``backends`` plus the own calls' backends; by default the backends with a candidate
    eligible for the layers' tensors."""
    from .dispatch import eligible_candidates

    own = [Candidate.parse(c.own).backend for c in convs if c.own]
    if backends is not None:
        chosen = list_backends(list(backends))
        if not chosen:
            raise InvalidInputError(f"backends: {list(backends)} matches no backend; known: "
                                    f"{', '.join(list_backends())}")
    else:
        chosen = []
        for c in convs:
            assert c.spec is not None and c.kind is not None
            for cand in eligible_candidates(c.spec, c.kind, c.device):
                if cand.backend not in chosen:
                    chosen.append(cand.backend)
    return sorted(set(chosen) | set(own))


def _sweep(model: Any, problems: dict[str, ConvSpec], backends: list[str], device: str,
           strategy: str, options: dict) -> Any:
    from .suites import suite_from_specs
    from .sweeping import sweep

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", type(model).__name__) or "model"
    suite = suite_from_specs(list(problems.values()), name=name, source="convbench.tune_model")
    return sweep(suite, backends=backends, device=device, strategy=strategy, **options)


def _row(c: ModelConv, results: dict[str, tuple[Any, str]]) -> dict[str, Any]:
    row: dict[str, Any] = {k: None for k in ROW_COLUMNS}
    row.update(layer=c.layer, module=c.module, calls=c.calls, device=c.device, own=c.own,
               spec=c.spec.replace(name="").label if c.spec else None,
               spec_key=c.spec.key if c.spec else None, note=c.reason)
    for k in ("winner_median_s", "own_median_s", "speedup"):
        row[k] = math.nan
    if c.spec is None or c.reason is not None or c.spec.key not in results:
        row["status"] = "not tuned"
        return row
    res, problem = results[c.spec.key]
    recs = {r["candidate"]: r for r in res.records if r.get("problem") == problem}
    own_rec = recs.get(c.own) if c.own else None
    if own_rec is not None and own_rec.get("status") == "ok":
        row["own_median_s"] = float(own_rec["median_s"])
    elif c.own:
        row["note"] = (f"own call {c.own} {own_rec.get('status')}: {own_rec.get('message')}"
                       if own_rec else f"own call {c.own} not measured")
    win = res.winners.get((problem, c.device))
    if win is None:
        row["status"] = "no winner"
        return row
    row.update(status="tuned", winner=win.candidate, winner_median_s=win.median_s)
    if not math.isnan(row["own_median_s"]) and win.median_s:
        row["speedup"] = row["own_median_s"] / win.median_s
    return row


# ---- use_tuned ----------------------------------------------------------------------------
class Binder:
    """What use_tuned's layers run: asked once per layer and input signature; every decision
    is kept in ``decisions`` (layer, spec, own call, candidate or None, why, and the confirming
    times ``tuned_s`` / ``own_s`` when it timed them).

    With ``confirm`` (default), a candidate chosen from the cache is also timed against the own
    call's candidate on the layer's real tensors, both through the same dispatch runners,
    interleaved (:func:`race_pair`), and kept only when it is faster there by more than
    ``min_gain`` too: a sweep times ``Prepared.run()``, and some candidates cost more per call
    when called on the caller's arrays (the NumPy family prepares on every call).
    """

    def __init__(self, cache: Any = None, threads: Optional[int] = None,
                 min_gain: Optional[float] = None, confirm: bool = True) -> None:
        from .selection import DEFAULT_MIN_EFFECT

        self.cache, self.threads, self.confirm = cache, threads, bool(confirm)
        self.min_gain = DEFAULT_MIN_EFFECT if min_gain is None else min_gain
        if isinstance(self.min_gain, bool) or not isinstance(self.min_gain, (int, float)) \
                or not self.min_gain >= 0:
            raise InvalidInputError(f"min_gain: {min_gain!r} must be a number >= 0 (e.g. 0.05)")
        self.decisions: list[dict[str, Any]] = []

    def __call__(self, layer: str, spec: ConvSpec, own: Optional[str], kind: str,
                 requires_grad: bool = False, x: Any = None,
                 w: Any = None) -> Optional[Callable[[Any, Any], Any]]:
        device = _kind_device(kind)
        cand, why = self.choose(spec, own, kind, device, requires_grad)
        decision = {"layer": layer, "spec": spec.replace(name="").label, "spec_key": spec.key,
                    "own": own, "candidate": cand, "why": why, "tuned_s": None, "own_s": None}
        fn = None
        if cand is not None:
            fn = self._confirmed(decision, spec, kind, device, requires_grad, x, w)
        self.decisions.append(decision)
        return fn

    def _confirmed(self, decision: dict[str, Any], spec: ConvSpec, kind: str, device: str,
                   grad: bool, x: Any, w: Any) -> Optional[Callable[[Any, Any], Any]]:
        """The chosen candidate's runner, unless confirming on ``x``/``w`` rejects it."""
        from .dispatch.arrays import runner, synchronizer

        c, o = Candidate.parse(decision["candidate"]), Candidate.parse(decision["own"])
        fn = runner(spec, kind, c.backend, c.algorithm, device, requires_grad=grad)
        if not self.confirm or x is None or w is None:
            return fn
        try:
            own_fn = runner(spec, kind, o.backend, o.algorithm, device, requires_grad=grad)
            t_fast, t_own = race_pair(fn, own_fn, x, w, synchronizer(kind))
        except Exception as exc:  # a candidate failing on the real tensors is not used
            decision.update(candidate=None, why=f"{c} failed on the layer's tensors "
                                                f"({type(exc).__name__}: {exc}): own call kept")
            return None
        decision.update(tuned_s=t_fast, own_s=t_own)
        if t_fast * (1 + self.min_gain) >= t_own:
            decision.update(candidate=None, why=(
                f"{c} is cached as faster, but on the layer's tensors took {_fmt(t_fast)} "
                f"against {_fmt(t_own)} for the own call {o}: own call kept"))
            return None
        decision["why"] += f"; on the layer's tensors {_fmt(t_fast)} against {_fmt(t_own)}"
        return fn

    def choose(self, spec: ConvSpec, own: Optional[str], kind: str, device: str,
               requires_grad: bool) -> tuple[Optional[str], str]:
        """(candidate to run, why) or (None, why the layer keeps its own forward), from the
        cache alone."""
        from .cache import open_cache, stale_here
        from .dispatch import eligible, runs

        try:
            entry = open_cache(self.cache, create=False).get(spec, device, threads=self.threads)
        except ConvbenchError as exc:
            return None, f"cache unreadable: {exc}"
        if entry is None:
            return None, "not in the tuned cache"
        stale = stale_here(entry)
        if stale:
            return None, f"cached entry is stale ({'; '.join(stale)})"
        timings = {k: float(v) for k, v in (entry.timings or {}).items() if v is not None}
        if entry.median_s is not None:
            timings[entry.candidate] = float(entry.median_s)
        order = [entry.candidate] + sorted((k for k in timings if k != entry.candidate), key=timings.get)
        for cand in order:
            if cand == own:
                return None, f"the model's own call {own} is the fastest usable candidate"
            c = Candidate.parse(cand)
            if c.device != device or not eligible(kind, c.backend, c.algorithm, device, spec=spec,
                                                  requires_grad=requires_grad) \
                    or not runs(spec, c.backend, c.algorithm, device):
                continue
            own_t, t = timings.get(own or ""), timings.get(cand)
            if own_t is None:
                return None, f"the model's own call {own} was not measured"
            if t is None or t * (1 + self.min_gain) >= own_t:
                return None, (f"{cand} ({_fmt(t)}) is not faster than the own call {own} "
                              f"({_fmt(own_t)}) by more than {self.min_gain:.0%}")
            return cand, f"{own_t / t:.2f}x faster than the own call {own} (cached medians)"
        return None, f"no cached candidate runs on {kind} tensors"


#: race_pair: each side's samples last at least this long (inner loop), and it takes at least
#: CONFIRM_PAIRS pairs, more while within CONFIRM_BUDGET_S (up to 4x the pairs)
CONFIRM_SAMPLE_S = 2e-4
CONFIRM_PAIRS = 7
CONFIRM_BUDGET_S = 0.05


def race_pair(a: Callable[[Any, Any], Any], b: Callable[[Any, Any], Any], x: Any, w: Any,
              sync: Optional[Callable[[], None]] = None) -> tuple[float, float]:
    """Median seconds per call of ``a(x, w)`` and ``b(x, w)``, timed in alternating samples
    (which goes first alternates too) after one warm-up call each."""
    from time import perf_counter
    from statistics import median

    def sample(fn: Callable[[Any, Any], Any], loops: int) -> float:
        if sync is not None:
            sync()
        t0 = perf_counter()
        for _ in range(loops):
            fn(x, w)
        if sync is not None:
            sync()
        return (perf_counter() - t0) / loops

    first = max(sample(a, 1), sample(b, 1), 1e-9)
    loops = max(1, min(1000, int(CONFIRM_SAMPLE_S / first)))
    ta: list[float] = []
    tb: list[float] = []
    deadline = perf_counter() + CONFIRM_BUDGET_S
    i = 0
    while i < CONFIRM_PAIRS or (i < 4 * CONFIRM_PAIRS and perf_counter() < deadline):
        if i % 2:
            tb.append(sample(b, loops))
            ta.append(sample(a, loops))
        else:
            ta.append(sample(a, loops))
            tb.append(sample(b, loops))
        i += 1
    return median(ta), median(tb)


def _fmt(t: Optional[float]) -> str:
    from .fmt import fmt_time

    return "not measured" if t is None else fmt_time(t)


def _kind_device(kind: str) -> str:
    from .dispatch.arrays import data_device

    return data_device(kind)


_BINDERS: "weakref.WeakKeyDictionary[Any, Binder]" = weakref.WeakKeyDictionary()


def use_tuned(model: Any, *, inplace: bool = False, cache: Any = None,
              threads: Optional[int] = None, min_gain: Optional[float] = None,
              confirm: bool = True) -> Any:
    """``model`` with each convolution module dispatched through the tuned cache.

    Returns a deep copy of ``model`` (``inplace=True``: ``model`` itself, changed). Each
    convolution module decides at its first call with an input signature (shape, strides,
    dtype, device, autograd) what it runs for that signature from then on: the cached choice
    for that exact problem (``cache``: path or TunedCache, default the default cache;
    ``threads``: the thread count it was tuned for, default the closest to this machine's
    default), or its own forward (see the module docstring; ``min_gain`` default 5%). With
    ``confirm`` (default) that first call also times a cached choice against the own call on
    the layer's real tensors and keeps it only if it is faster there too (:class:`Binder`):
    the first call of each new signature is slower. :func:`bindings` lists the decisions.
    """
    owner = model_owner(model)
    binder = Binder(cache, threads, min_gain, confirm)
    wrapped = owner.wrap_convs(model, binder, inplace=inplace)
    try:
        _BINDERS[wrapped] = binder
    except TypeError:
        pass
    return wrapped


def bindings(model: Any) -> list[dict[str, Any]]:
    """The decisions a :func:`use_tuned` model's layers have made so far: one dict per layer
    and input signature (layer, spec, own, candidate or None, why)."""
    binder = _BINDERS.get(model)
    if binder is None:
        raise InvalidInputError("model: not a model returned by convbench.use_tuned()")
    return list(binder.decisions)


__all__ = ["tune_model", "use_tuned", "bindings", "ModelConv", "Binder", "model_owner", "ROW_COLUMNS"]
