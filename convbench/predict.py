"""Choosing for shapes nobody tuned, and saying how sure the choice is.

What is learnt from this machine's cached entries is how every measured candidate did on each
cached problem: an entry's ``timings`` (every candidate timed on that problem in its sweep)
give each candidate's *log-regret* there, ``log(time / fastest time)``.

Each problem is a point in a log-scaled feature space (:func:`features`: batch, channels,
spatial size, kernel, stride, dilation, groups/depthwise, dims, transposed, dtype size,
layout, FLOPs, arithmetic intensity, threads), every feature standardised over the training
entries (one that is the same for all of them counts one octave of difference as 4 units,
so a dtype, batch or layout nobody cached is far from everything). For a miss, every
training problem of the same device gets a Gaussian kernel weight
``w_i = exp(-d_i**2 / (2 h**2))`` (``d_i``: its distance, ``h``: the *bandwidth*), and every
candidate's score is its weighted mean log-regret over the problems that measured it, shrunk
toward its mean log-regret over the whole training set (the *prior*, ``prior_weight`` counts
as that many problems at distance 0):

    score(c) = (sum_i w_i * lr_i(c) + prior_weight * prior(c)) / (sum_i w_i * [i measured c] + prior_weight)

The lowest-scoring candidate that supports the new spec (backend available, ``supports()``
true, allowed by the caller's filter) is the prediction. Near cached problems it follows
them; far from all of them (another dtype, batch or kernel than anything cached) the weights
vanish and it falls back to the candidate that is best across the training set.

How sure (:class:`Prediction`): ``expected_regret`` is ``exp(max(score + optimism, 0))`` of
the pick, where ``optimism`` is how much the cross-validated picks' measured log-regret exceeded
their scores on average (picking the lowest of noisy estimates is optimistic; a negative value
says the scores ran high); ``p_within`` is the kernel-weighted share of nearby problems where
the pick was within 5% of the fastest, shrunk toward that share over the training set, plus how
far the cross-validated picks' measured share exceeded the ``p_within`` they were given
(clipped to 0..1); ``support`` is the kernel weight behind the pick (about how many problems
like this one measured it).

``bandwidth`` and ``prior_weight`` are chosen by cross-validation on the training entries
(:class:`Predictor`), and so is a weight per feature (0, 0.5, 1 or 2 times its standardised
scale, :func:`convbench.predict_cv.choose_feature_weights`): distances are measured on the
weighted features, so a feature that does not tell which candidate wins stops diluting those
that do. Entries written before timings were cached know only their winner
(log-regret 0) and runner-up (``log(1 + margin)``); there, any other candidate counts as
``log(2)`` slower, or as slow as the runner-up if that is slower. When no candidate with
training data qualifies, :func:`heuristic_choice` decides.

Heuristic fallback (no cached data, or no cached candidate runs this spec): the registered
backends in the order of their declared ``Backend.heuristic_rank(spec, device)`` (lower first,
then by name; a backend that declares none comes after those that do), each one's algorithms in
its own order; the first candidate that is available and supports the spec wins. The built-in
backends rank the frameworks first (their own dispatchers are built to pick well), then the JIT
kernels and the NumPy/SciPy backends, FFT early only for large dense kernels. The order is a
prior, not a measurement: its ``expected_regret`` is :data:`UNKNOWN_EXPECTED_REGRET`.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np

from .cache import (CacheEntry, Choice, TunedCache, current_environment, machine_key,
                    open_cache, PathLike)
from .errors import ConvbenchError, UnsupportedError
from .fmt import geomean  # noqa: F401 - re-exported (convbench.predict.geomean)
from .predict_cv import WITHIN, choose_feature_weights, cross_validate
from .registry import Backend, Candidate, get_backend, list_backends
from .spec import ConvSpec

FEATURES = ("log2_n", "log2_c_in", "log2_c_out", "log2_spatial", "log2_aspect", "log2_kernel",
            "log2_stride", "log2_dilation", "log2_groups", "depthwise", "dims", "transposed",
            "log2_itemsize", "channels_last", "log2_flops", "log2_intensity", "log2_threads")

#: the bandwidths and prior weights cross-validation chooses from
BANDWIDTHS = (0.25, 0.5, 1.0, 2.0, 4.0)
PRIOR_WEIGHTS = (0.03, 0.1, 0.3, 1.0, 3.0)
#: expected regret assumed for a heuristic choice (no measurement behind it)
UNKNOWN_EXPECTED_REGRET = 1.5
#: optimism assumed when too few cached problems have complete timings to cross-validate (the
#: leave-one-suite-out runs of benchmarks/predictor_regret.py measured -0.10 to 0.24 on 2026-12-02)
UNCHECKED_OPTIMISM = math.log(1.1)
#: the scale of a feature that is constant over the training entries: a query that differs
#: from all of them by one octave (or a flag) there is 4 units away, i.e. far
_CONSTANT_SCALE = 0.25
#: log-regret assumed for a candidate an old (winner-only) entry does not list
_UNLISTED_LOG_REGRET = math.log(2.0)

#: candidate filter: (backend, algorithm, device) -> allowed?
Allow = Callable[[str, str, str], bool]


def features(spec: ConvSpec, threads: int = 1) -> np.ndarray:
    """The spec as a feature vector (log2 of sizes, flags as 0/1); order: FEATURES."""
    spatial = spec.input_size
    l2 = math.log2
    return np.array([
        l2(spec.n), l2(spec.c_in), l2(spec.c_out),
        l2(math.prod(spatial)) / len(spatial),          # log of the geometric-mean side
        l2(max(spatial) / min(spatial)),
        l2(math.prod(spec.kernel_size)) / len(spatial),
        l2(math.prod(spec.stride)) / len(spatial),
        l2(math.prod(spec.dilation)) / len(spatial),
        l2(spec.groups), float(spec.depthwise), float(spec.dims), float(spec.transposed),
        l2(spec.itemsize), float(spec.layout == "channels_last"),
        l2(max(spec.flops, 1)), l2(max(spec.arithmetic_intensity, 1e-6)), l2(max(threads, 1)),
    ], dtype=np.float64)


def _supported(spec: ConvSpec, backend: str, algorithm: str, device: str,
               allow: Optional[Allow]) -> bool:
    if allow is not None and not allow(backend, algorithm, device):
        return False
    try:
        b = get_backend(backend)
        return bool(b.available()) and bool(b.supports(spec, device, algorithm))
    except ConvbenchError:
        return False


def _by_heuristic_rank(spec: ConvSpec, device: str) -> list[tuple[str, Backend]]:
    """The loadable registered backends, lowest declared heuristic_rank first (then by name)."""
    ranked = []
    for name in list_backends():
        try:
            b = get_backend(name)  # imports the backend module, not its framework
            ranked.append((float(b.heuristic_rank(spec, device)), name, b))
        except Exception:  # a backend that fails to load or to rank is not a fallback
            continue
    return [(name, b) for _, name, b in sorted(ranked, key=lambda t: t[:2])]


def heuristic_choice(spec: ConvSpec, device: str = "cpu", *, allow: Optional[Allow] = None) -> Choice:
    """The documented fallback (module docstring); UnsupportedError if nothing can run the spec."""
    for name, b in _by_heuristic_rank(spec, device):
        try:
            algos = b.algorithms(device)
        except Exception:
            continue
        for algo in algos:
            if _supported(spec, name, algo, device, allow):
                cand = str(Candidate(name, algo, device))
                return Choice(candidate=cand, backend=name, algorithm=algo, device=device,
                              median_s=None, margin=None, spec_key=spec.key, source="heuristic")
    raise UnsupportedError(f"no available backend supports {spec.label} on {device}")


@dataclass
class Neighbour:
    entry: CacheEntry
    distance: float


@dataclass(frozen=True)
class Prediction:
    """A choice for an untuned shape and how sure it is (see the module docstring)."""

    choice: Choice
    expected_regret: float       # predicted time / fastest time, >= 1
    p_within: Optional[float]    # predicted probability that the pick is within 5% of the fastest
    support: float               # kernel weight of the training problems behind the pick

    @property
    def source(self) -> str:
        return self.choice.source


def log_regrets(entry: CacheEntry) -> dict[str, float]:
    """candidate -> log(its time / the fastest time) on this entry's problem (see module doc)."""
    times = {c: float(t) for c, t in (entry.timings or {}).items()
             if isinstance(t, (int, float)) and t > 0 and c.endswith("@" + entry.device)}
    if entry.median_s and entry.median_s > 0:
        times.setdefault(entry.candidate, float(entry.median_s))
    if times:
        best = min(times.values())
        return {c: math.log(t / best) for c, t in times.items()}
    return {entry.candidate: 0.0}


def _table(e: CacheEntry) -> tuple[dict[str, float], Optional[float]]:
    """(log-regrets, value for candidates it does not list: None = not measured, no information)."""
    table = log_regrets(e)
    if len(table) == 1 and not e.timings:   # an old winner-only entry
        unlisted = _UNLISTED_LOG_REGRET
        if e.runner_up and e.margin is not None and e.margin >= 0:
            table[e.runner_up] = math.log1p(e.margin)
            unlisted = max(unlisted, table[e.runner_up])
        return table, unlisted
    return table, None


def _check_grid_value(name: str, v: Union[float, str], minimum: float, strict: bool) -> None:
    bad = isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
        or v < minimum or (strict and v == minimum)
    if v != "auto" and bad:
        raise ConvbenchError(f"{name}: {v!r} must be 'auto' or a finite number "
                             f"{'>' if strict else '>='} {minimum:g}")


class Predictor:
    """Kernel-weighted regret estimate over cached entries (one machine; see the module doc).

    ``bandwidth`` / ``prior_weight``: a number, or ``"auto"`` (the default): chosen from
    :data:`BANDWIDTHS` x :data:`PRIOR_WEIGHTS` by cross-validation on the training entries
    (:func:`convbench.predict_cv.cross_validate`: leave one run out and leave one shape out,
    averaged; the lowest mean log-regret of the picks wins). The same cross-validation measures
    the optimism of the scores (``cv_optimism``) and of ``p_within`` (``cv_within_gap``).
    ``feature_weights``: ``"auto"`` (the default) chooses a weight per feature with the same
    cross-validation (:func:`convbench.predict_cv.choose_feature_weights`), ``"equal"``
    weights every feature 1. With fewer than 4 entries with complete timings it keeps
    bandwidth 1, prior weight 1 (or the given ones) and equal feature weights, and assumes
    :data:`UNCHECKED_OPTIMISM` and no ``p_within`` gap.
    """

    def __init__(self, bandwidth: Union[float, str] = "auto",
                 prior_weight: Union[float, str] = "auto", feature_weights: str = "auto") -> None:
        _check_grid_value("bandwidth", bandwidth, 0, strict=True)
        _check_grid_value("prior_weight", prior_weight, 0, strict=False)
        if feature_weights not in ("auto", "equal"):
            raise ConvbenchError(f"feature_weights: {feature_weights!r} must be 'auto' or 'equal'")
        self._choose_weights = feature_weights == "auto"
        #: per feature (FEATURES order), the factor its standardised value gets in distances
        self.feature_weights = np.ones(len(FEATURES))
        self._grid = (BANDWIDTHS if bandwidth == "auto" else (float(bandwidth),),
                      PRIOR_WEIGHTS if prior_weight == "auto" else (float(prior_weight),))
        self._defaults = (1.0 if bandwidth == "auto" else float(bandwidth),
                          1.0 if prior_weight == "auto" else float(prior_weight))
        self.bandwidth, self.prior_weight = self._defaults
        self.cv_log_regret: Optional[float] = None   # the chosen pair's cross-validated score
        self.cv_optimism = UNCHECKED_OPTIMISM
        self.cv_within_gap = 0.0                      # added to p_within (cross-validated)
        self.entries: list[CacheEntry] = []
        self.candidates: list[str] = []
        self._y = np.zeros((0, 0))          # log-regret per entry x candidate, nan: no information
        self._x = np.zeros((0, len(FEATURES)))
        self._mu = np.zeros(len(FEATURES))
        self._sd = np.ones(len(FEATURES))
        self._devices = np.array([], dtype=object)
        self._scorable = np.zeros(0, dtype=bool)

    def fit(self, entries: Sequence[CacheEntry]) -> "Predictor":
        """Learn from cached entries (their spec, thread count and timings)."""
        self._learn(entries)
        self.bandwidth, self.prior_weight = self._defaults
        self.cv_log_regret, self.cv_optimism, self.cv_within_gap = None, UNCHECKED_OPTIMISM, 0.0
        self.feature_weights = np.ones(len(FEATURES))
        if self._scorable.sum() >= 4:
            args = (self._x, self._y, self._groups(), self._scorable, *self._grid)
            if self._choose_weights:
                weights, cv = choose_feature_weights(*args, devices=self._devices)
            else:
                weights, cv = self.feature_weights, cross_validate(*args, devices=self._devices)
            if math.isfinite(cv.log_regret):
                self.feature_weights = weights
                self.bandwidth, self.prior_weight = cv.bandwidth, cv.prior_weight
                self.cv_log_regret, self.cv_optimism = cv.log_regret, cv.optimism
                self.cv_within_gap = cv.within_gap
        return self

    def _learn(self, entries: Sequence[CacheEntry]) -> None:
        """The training matrices: standardised features and log-regret per entry and candidate."""
        rows, keep, tables = [], [], []
        for e in entries:
            try:
                spec = ConvSpec.from_dict(e.spec)
            except ConvbenchError:
                continue
            rows.append(features(spec, e.threads or 1))
            keep.append(e)
            tables.append(_table(e))
        self.entries = keep
        self.candidates = sorted({c for t, _ in tables for c in t})
        col = {c: j for j, c in enumerate(self.candidates)}
        self._y = np.full((len(keep), len(self.candidates)), np.nan)
        for i, (table, unlisted) in enumerate(tables):
            if unlisted is not None:
                self._y[i, :] = unlisted
            for c, lr in table.items():
                self._y[i, col[c]] = lr
        self._scorable = np.array([u is None and len(t) >= 2 for t, u in tables], dtype=bool)
        self._devices = np.array([e.device for e in keep], dtype=object)
        x = np.vstack(rows) if rows else np.zeros((0, len(FEATURES)))
        if rows:
            self._mu = x.mean(axis=0)
            sd = x.std(axis=0)
            self._sd = np.where(sd > 1e-9, sd, _CONSTANT_SCALE)
        self._x = (x - self._mu) / self._sd

    def _groups(self) -> list[list[np.ndarray]]:
        """The cross-validation schemes: leave one run out (when there are 2+ runs) and
        leave one shape out (all its thread counts together)."""
        schemes = []
        for key in (lambda e: e.run_id, lambda e: e.spec_key):
            ids: dict = {}
            labels = np.array([ids.setdefault(key(e), len(ids)) for e in self.entries])
            if len(ids) >= 2:
                schemes.append([np.flatnonzero(labels == g) for g in range(len(ids))])
        return schemes

    def __len__(self) -> int:
        return len(self.entries)

    def _distances(self, spec: ConvSpec, threads: int) -> np.ndarray:
        q = (features(spec, threads) - self._mu) / self._sd
        return np.sqrt((((self._x - q) * self.feature_weights) ** 2).sum(axis=1))

    def neighbours(self, spec: ConvSpec, threads: int = 1, k: Optional[int] = None) -> list[Neighbour]:
        """Training entries by distance to ``spec`` (the ``k`` nearest, or all)."""
        if not self.entries:
            return []
        d = self._distances(spec, threads)
        order = np.argsort(d, kind="stable")[:k]
        return [Neighbour(self.entries[i], float(d[i])) for i in order]

    def estimates(self, spec: ConvSpec, device: str = "cpu", *,
                  threads: int = 1) -> dict[str, tuple[float, float, float]]:
        """candidate -> (score, p_within, support), as the module docstring defines them, for
        every candidate of ``device`` with training data."""
        if not self.entries:
            return {}
        d = self._distances(spec, threads)
        w = np.exp(-0.5 * (d / self.bandwidth) ** 2) * (self._devices == device)
        measured = ~np.isnan(self._y)
        y = np.where(measured, self._y, 0.0)
        within = (measured & (self._y <= math.log(WITHIN))).astype(float)
        n_all, lam = measured.sum(axis=0), self.prior_weight
        support = w @ measured
        with np.errstate(invalid="ignore", divide="ignore"):
            score = (w @ y + lam * y.sum(axis=0) / n_all) / (support + lam)
            p = (w @ within + lam * within.sum(axis=0) / n_all) / (support + lam)
        return {c: (float(score[j]), float(p[j]), float(support[j]))
                for j, c in enumerate(self.candidates)
                if c.endswith("@" + device) and n_all[j] > 0 and np.isfinite(score[j])}

    def scores(self, spec: ConvSpec, device: str = "cpu", *, threads: int = 1) -> dict[str, float]:
        """Estimated log-regret of every candidate with training data (lower is better)."""
        return {c: v[0] for c, v in self.estimates(spec, device, threads=threads).items()}

    def prediction(self, spec: ConvSpec, device: str = "cpu", *, threads: int = 1,
                   allow: Optional[Allow] = None) -> Prediction:
        """The predicted choice for ``spec`` with its confidence, else the heuristic's."""
        est = self.estimates(spec, device, threads=threads)
        for cand, (score, p, support) in sorted(est.items(), key=lambda kv: (kv[1][0], kv[0])):
            try:
                c = Candidate.parse(cand)
            except ConvbenchError:
                continue
            if _supported(spec, c.backend, c.algorithm, device, allow):
                choice = Choice(candidate=cand, backend=c.backend, algorithm=c.algorithm,
                                device=device, median_s=None, margin=None, spec_key=spec.key,
                                threads=threads, source="predicted")
                return Prediction(choice, math.exp(max(score + self.cv_optimism, 0.0)),
                                  min(max(p + self.cv_within_gap, 0.0), 1.0), support)
        return Prediction(heuristic_choice(spec, device, allow=allow), UNKNOWN_EXPECTED_REGRET, None, 0.0)

    def predict(self, spec: ConvSpec, device: str = "cpu", *, threads: int = 1,
                allow: Optional[Allow] = None) -> Choice:
        """The predicted choice for ``spec`` (source "predicted"), else the heuristic's."""
        return self.prediction(spec, device, threads=threads, allow=allow).choice


_MEMO: dict[tuple, tuple[tuple, Predictor]] = {}
_MEMO_LOCK = threading.Lock()


def predictor_for(device: str = "cpu", *, cache: Union[None, PathLike, TunedCache] = None,
                  bandwidth: Union[float, str] = "auto",
                  prior_weight: Union[float, str] = "auto") -> Predictor:
    """A Predictor fit on this machine's cached entries for ``device`` (refit when the cache changes)."""
    tc = open_cache(cache, create=False)
    machine = machine_key(current_environment(), device)
    key = (str(tc.path), machine, device, bandwidth, prior_weight)
    state = tc.state()
    with _MEMO_LOCK:
        hit = _MEMO.get(key)
        if hit is not None and hit[0] == state:
            return hit[1]
    p = Predictor(bandwidth, prior_weight).fit(tc.entries(machine=machine, device=device))
    with _MEMO_LOCK:
        _MEMO[key] = (state, p)
    return p


def prediction(spec: ConvSpec, device: str = "cpu", *, threads: Optional[int] = None,
               cache: Union[None, PathLike, TunedCache] = None,
               allow: Optional[Allow] = None) -> Prediction:
    """A choice for a spec that is not in the cache, with how sure it is (:class:`Prediction`)."""
    from .cache import default_threads

    p = predictor_for(device, cache=cache)
    return p.prediction(spec, device, threads=threads or default_threads(), allow=allow)


def predict(spec: ConvSpec, device: str = "cpu", *, threads: Optional[int] = None,
            cache: Union[None, PathLike, TunedCache] = None,
            allow: Optional[Allow] = None) -> Choice:
    """A choice for a spec that is not in the cache: nearest cached problems, else the heuristic."""
    return prediction(spec, device, threads=threads, cache=cache, allow=allow).choice


def regret(choices: dict[str, str], times: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per spec key: time of the chosen candidate / time of the fastest measured candidate.

    ``choices``: spec key -> candidate; ``times``: spec key -> {candidate: median seconds}.
    Keys without a timing for the chosen candidate are left out.
    """
    out = {}
    for key, cand in choices.items():
        t = times.get(key) or {}
        if cand in t and t:
            best = min(t.values())
            if best > 0:
                out[key] = t[cand] / best
    return out
