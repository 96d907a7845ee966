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
        #: one dict per model input signature checked by :meth:`run_model`
        self.model_checks: list[dict[str, Any]] = []
        self._chosen: dict[Any, frozenset] = {}      # model signature -> candidates it uses
        self.enabled: Optional[frozenset] = None     # None: every layer's own decision

    def allows(self, candidate: str) -> bool:
        """Whether a layer bound to ``candidate`` runs it in the current model call (outside a
        :meth:`run_model` call: always)."""
        return self.enabled is None or candidate in self.enabled

    def run_model(self, signature: Any, call: Callable[[], Any], repeatable: bool = True,
                  sync: Optional[Callable[[], None]] = None) -> Any:
        """One call of the whole model (``call()``) with input ``signature``.

        Layers decide one by one, but what matters is the whole model: a layer's choice can
        slow its neighbours (a candidate that hands on another memory layout makes the next
        layers reorder; two thread pools -- torch's OpenMP and NumPy's BLAS -- taking turns
        spin against each other). So with ``confirm``, the first call of each signature runs
        the model once to let the layers decide, then times whole forward passes
        (:func:`check_model`) with the rebound candidates enabled in groups (none, all, all
        but each) and keeps the fastest configuration only if it beats the model's own
        forward by more than ``min_gain`` in at least 4 of 5 rounds. Later calls of that signature run
        it. ``repeatable`` False (a model whose calls change its state, e.g. in training mode)
        skips the check: the layers' own decisions stand. The check is in ``model_checks``.
        """
        chosen = self._chosen.get(signature)
        if chosen is not None:
            return self._with(chosen, call)
        start = len(self.decisions)
        out = self._with(None, call)
        bound = sorted({d["candidate"] for d in self.decisions[start:] if d["candidate"]})
        check: dict[str, Any] = {"signature": str(signature), "candidates": bound, "chosen": bound,
                                 "configs": [], "why": ""}
        if not bound:
            check["why"] = "no layer is rebound"
        elif not self.confirm:
            check["why"] = "not checked (confirm=False): every layer's own decision stands"
        elif not repeatable:
            check["why"] = ("not checked: calling the model changes its state (training mode); "
                            "every layer's own decision stands")
        else:
            check.update(check_model(lambda enabled: self._with(enabled, call), bound,
                                     self.min_gain, sync))
        self._chosen[signature] = frozenset(check["chosen"])
        for d in self.decisions[start:]:
            if d["candidate"] and d["candidate"] not in check["chosen"]:
                d["why"] += f"; not used: {check['why']}"
                d["used"] = False
        self.model_checks.append(check)
        return out if check["chosen"] == bound else self._with(self._chosen[signature], call)

    def _with(self, enabled: Optional[frozenset], call: Callable[[], Any]) -> Any:
        before, self.enabled = self.enabled, enabled
        try:
            return call()
        finally:
            self.enabled = before

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
        decision["used"] = fn is not None
        self.decisions.append(decision)
        if fn is not None:
            fn.convbench_candidate = decision["candidate"]   # type: ignore[attr-defined]
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


#: check_model: rounds of whole forward passes (fewer, never below MODEL_CHECK_MIN_ROUNDS, when
#: MODEL_CHECK_BUDGET_S would run out); per configuration and round, calls for
#: MODEL_CHECK_SETTLE_S are run and discarded, then calls for MODEL_CHECK_SAMPLE_S timed (at
#: least one call each). The settling matters: after a NumPy (OpenBLAS) call its threads spin
#: for a while, and torch's OpenMP threads after torch's calls, so the calls right after a
#: switch of configuration are slowed by the previous one (2-vCPU Intel Xeon @ 2.60GHz guest).
MODEL_CHECK_ROUNDS = 5
MODEL_CHECK_MIN_ROUNDS = 3
MODEL_CHECK_BUDGET_S = 8.0
MODEL_CHECK_SETTLE_S = 0.1
MODEL_CHECK_SAMPLE_S = 0.1


def model_configs(bound: Sequence[str]) -> list[tuple[str, ...]]:
    """The configurations :func:`check_model` times: no candidate, all, and all but each
    (deduplicated, in that order)."""
    allc = tuple(sorted(bound))
    out: list[tuple[str, ...]] = [(), allc]
    if len(allc) > 1:
        out += [tuple(x for x in allc if x != c) for c in allc]
    seen: set = set()
    return [c for c in out if not (c in seen or seen.add(c))]


def check_model(run: Callable[[Optional[frozenset]], Any], bound: Sequence[str], min_gain: float,
                sync: Optional[Callable[[], None]] = None) -> dict[str, Any]:
    """Time whole forward passes (``run(enabled)``) under each of :func:`model_configs`, in
    rounds with a new shuffled order each round (settling before each timed block: see
    MODEL_CHECK_SETTLE_S). The fastest configuration (median over the rounds) is ``chosen``
    only if its median beats the no-rebind configuration's by more than ``min_gain`` and it
    was faster than that configuration in at least 4 of every 5 rounds; else none is. Returns
    chosen, configs (candidates, median_s, round times), rounds and why."""
    import random
    from statistics import median
    from time import perf_counter

    configs = model_configs(bound)

    def calls(enabled: frozenset, seconds: float) -> float:
        """Seconds per call over calls lasting at least ``seconds`` (at least one call)."""
        if sync is not None:
            sync()
        n, t0 = 0, perf_counter()
        while True:
            run(enabled)
            n += 1
            if sync is not None:
                sync()
            if perf_counter() - t0 >= seconds:
                return (perf_counter() - t0) / n

    first = [calls(frozenset(c), 0.0) for c in configs]        # warm-up, and the cost
    per_call = [max(t, 1e-9) for t in first]
    block = sum(max(MODEL_CHECK_SETTLE_S, t) + max(MODEL_CHECK_SAMPLE_S, t) for t in per_call)
    rounds = max(MODEL_CHECK_MIN_ROUNDS, min(MODEL_CHECK_ROUNDS, int(MODEL_CHECK_BUDGET_S / block)))
    rng = random.Random(0)
    times: dict[tuple[str, ...], list[float]] = {c: [] for c in configs}
    for _ in range(rounds):
        order = list(configs)
        rng.shuffle(order)
        for c in order:
            calls(frozenset(c), MODEL_CHECK_SETTLE_S)
            times[c].append(calls(frozenset(c), MODEL_CHECK_SAMPLE_S))
    meds = {c: median(v) for c, v in times.items()}
    best = min(configs, key=lambda c: meds[c])
    none = meds[()]
    wins = sum(t < n for t, n in zip(times[best], times[()]))
    rows = [{"candidates": list(c), "median_s": meds[c], "round_s": times[c]} for c in configs]
    if best and best_gain(none, meds[best]) > min_gain and wins * 5 >= 4 * rounds:
        why = (f"the whole model ran in {_fmt(meds[best])} with {', '.join(best)} against "
               f"{_fmt(none)} with no layer rebound ({none / meds[best]:.2f}x, faster in {wins} of "
               f"{rounds} rounds)")
        return {"chosen": list(best), "configs": rows, "rounds": rounds, "why": why}
    why = (f"no configuration of the rebound layers beat the model's own forward "
           f"({_fmt(none)}) by more than {min_gain:.0%} in at least 4 of 5 rounds (best "
           f"{_fmt(meds[best])} with {', '.join(best) or 'none'}; {rounds} rounds)")
    return {"chosen": [], "configs": rows, "rounds": rounds, "why": why}


def best_gain(base_s: float, t_s: float) -> float:
    """How much faster ``t_s`` is than ``base_s`` (0.1: 10% faster, base / t - 1)."""
    return base_s / t_s - 1.0 if t_s > 0 else 0.0


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
    the layer's real tensors and keeps it only if it is faster there too (:class:`Binder`),
    and the model's first call with each input signature times whole forward passes with the
    rebound layers enabled in groups and keeps only a configuration that beats the model's
    own forward (:meth:`Binder.run_model`; skipped for a model in training mode): the first
    call of each new signature is slower. :func:`bindings` lists the layers' decisions
    (``used`` False: overruled by the whole-model check), :func:`model_checks` the checks.
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


def model_checks(model: Any) -> list[dict[str, Any]]:
    """The whole-model checks of a :func:`use_tuned` model so far: one dict per input
    signature (signature, candidates its layers were bound to, configs timed with their
    median_s, rounds, chosen candidates, why)."""
    binder = _BINDERS.get(model)
    if binder is None:
        raise InvalidInputError("model: not a model returned by convbench.use_tuned()")
    return list(binder.model_checks)


__all__ = ["tune_model", "use_tuned", "bindings", "model_checks", "check_model", "model_configs", "ModelConv", "Binder", "model_owner", "ROW_COLUMNS"]
