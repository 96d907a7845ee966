"""Choosing for shapes nobody tuned: nearest neighbours over this machine's cached results.

Each problem becomes a point in a log-scaled feature space (see :func:`features`); every
feature is standardised over the training entries so none dominates the distance.

What is learnt is not just each cached problem's winner but how every measured candidate
did there: an entry's ``timings`` (every candidate timed on that problem in its sweep) give
each candidate's *log-regret* there, ``log(time / fastest time)``. For a miss, the ``k``
nearest cached problems (same device, same machine) are weighted by
``1 / (distance + 0.5)`` and every candidate's score is its weighted mean log-regret over
the neighbours that measured it, shrunk toward its mean log-regret over the whole training
set (the *prior*, with weight ``prior_weight``; 1.0 weighs as much as one neighbour at
distance 0.5):

    score(c) = (sum_i w_i * lr_i(c) + prior_weight * prior(c)) / (sum_i w_i + prior_weight)

``k`` and ``prior_weight`` are chosen by cross-validation on the training entries (see
:class:`Predictor`) unless given.

The lowest-scoring candidate that supports the new spec (``get_backend(b).supports(spec,
device, algorithm)``, backend available, and allowed by the caller's filter) is the
prediction. The score is an estimate of the log-regret being minimised, so with no useful
neighbours the prediction falls back to the candidate that is best across the training set,
and near cached problems it follows them. Entries written before timings were cached know
only their winner (log-regret 0) and runner-up (``log(1 + margin)``); there, any other
candidate counts as ``log(2)`` slower, or as slow as the runner-up if that is slower. When
no candidate with any training data qualifies, :func:`heuristic_choice` decides.

Heuristic fallback (no cached data, or no cached winner runs this spec): the registered
backends in the order of their declared ``Backend.heuristic_rank(spec, device)`` (lower first,
then by name; a backend that declares none comes after those that do), each one's algorithms in
its own order; the first candidate that is available and supports the spec wins. The built-in
backends rank the frameworks first (their own dispatchers are built to pick well), then the JIT
kernels and the NumPy/SciPy backends, FFT early only for large dense kernels. The order is a
prior, not a measurement.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np

from .cache import (CacheEntry, Choice, TunedCache, current_environment, machine_key,
                    open_cache, PathLike)
from .errors import ConvbenchError, UnsupportedError
from .fmt import geomean  # noqa: F401 - re-exported (convbench.predict.geomean)
from .registry import Backend, Candidate, get_backend, list_backends
from .spec import ConvSpec

FEATURES = ("log2_n", "log2_c_in", "log2_c_out", "log2_spatial", "log2_aspect", "log2_kernel",
            "log2_stride", "log2_dilation", "log2_groups", "depthwise", "dims", "transposed",
            "log2_itemsize", "channels_last", "log2_flops", "log2_intensity", "log2_threads")

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


#: log-regret assumed for a candidate an old (winner-only) entry does not list
_UNLISTED_LOG_REGRET = math.log(2.0)


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


#: the (k, prior_weight) pairs Predictor(k="auto") chooses from
K_GRID = (1, 3, 5, 8, 13)
PRIOR_GRID = (0.0, 0.3, 1.0, 3.0)


class Predictor:
    """k-nearest-neighbour regret estimate over cached entries (one machine and device).

    ``k="auto"`` (the default) picks ``k`` and ``prior_weight`` from :data:`K_GRID` x
    :data:`PRIOR_GRID` by cross-validation on the training entries themselves: leave one run
    out when the entries come from two or more runs (so the choice rewards predicting a
    network not seen yet), else leave one entry out; the pair with the lowest mean
    log-regret of its picks wins (ties: the smaller k, then the smaller weight). With fewer
    than 4 entries it keeps ``k=5, prior_weight=1.0``.
    """

    def __init__(self, k: Union[int, str] = "auto", prior_weight: float = 1.0) -> None:
        if k != "auto" and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise ConvbenchError(f"k: {k!r} must be an integer >= 1 or 'auto'")
        if isinstance(prior_weight, bool) or not isinstance(prior_weight, (int, float)) \
                or not (prior_weight >= 0 and math.isfinite(prior_weight)):
            raise ConvbenchError(f"prior_weight: {prior_weight!r} must be a finite number >= 0")
        self.auto = k == "auto"
        self.k = 5 if self.auto else int(k)
        self.prior_weight = float(prior_weight)
        self.cv_log_regret: Optional[float] = None   # the chosen pair's cross-validated score
        self.entries: list[CacheEntry] = []
        self._tables: list[tuple[dict[str, float], Optional[float]]] = []
        self._prior: dict[str, float] = {}
        self._x = np.zeros((0, len(FEATURES)))
        self._mu = np.zeros(len(FEATURES))
        self._sd = np.ones(len(FEATURES))

    def fit(self, entries: Sequence[CacheEntry]) -> "Predictor":
        """Learn from cached entries (their spec, thread count and timings)."""
        rows, keep, tables = [], [], []
        for e in entries:
            try:
                spec = ConvSpec.from_dict(e.spec)
            except ConvbenchError:
                continue
            rows.append(features(spec, e.threads or 1))
            keep.append(e)
            table = log_regrets(e)
            unlisted: Optional[float] = None   # complete timings: unlisted = not measured
            if len(table) == 1 and not e.timings:
                unlisted = _UNLISTED_LOG_REGRET
                if e.runner_up and e.margin is not None and e.margin >= 0:
                    table[e.runner_up] = math.log1p(e.margin)
                    unlisted = max(unlisted, table[e.runner_up])
            tables.append((table, unlisted))
        self.entries, self._tables = keep, tables
        self._prior = self._prior_over(range(len(tables)))
        if rows:
            x = np.vstack(rows)
            self._mu = x.mean(axis=0)
            sd = x.std(axis=0)
            self._sd = np.where(sd > 1e-9, sd, 1.0)
            self._x = (x - self._mu) / self._sd
        else:
            self._x = np.zeros((0, len(FEATURES)))
        if self.auto and len(keep) >= 4:
            self._select()
        return self

    def _prior_over(self, idx: Sequence[int]) -> dict[str, float]:
        sums: dict[str, list[float]] = {}
        for i in idx:
            for c, lr in self._tables[i][0].items():
                s = sums.setdefault(c, [0.0, 0.0])
                s[0] += lr
                s[1] += 1
        return {c: t / n for c, (t, n) in sums.items()}

    def _prior_without(self, held: Sequence[int], full: Mapping[str, tuple[float, int]]) -> dict[str, float]:
        """The prior over every entry but ``held``, from the sums over all (``full``) minus theirs."""
        sums = {c: [t, n] for c, (t, n) in full.items()}
        for i in held:
            for c, lr in self._tables[i][0].items():
                sums[c][0] -= lr
                sums[c][1] -= 1
        return {c: t / n for c, (t, n) in sums.items() if n > 0}

    def _near(self, d: np.ndarray, device: str, k: int, exclude: frozenset = frozenset()) -> list[int]:
        """The ``k`` nearest entries of ``device`` by distances ``d`` (leaving out ``exclude``)."""
        out = []
        for j in np.argsort(d, kind="stable"):
            if j not in exclude and self.entries[j].device == device:
                out.append(int(j))
                if len(out) == k:
                    break
        return out

    def _score(self, d: np.ndarray, near: Sequence[int], prior: Mapping[str, float], device: str,
               k: int, lam: float) -> dict[str, float]:
        """Scores from the ``k`` first of ``near`` (entries of ``device``, nearest first)."""
        near = near[:k]
        out = {}
        for c, pr in prior.items():
            if not c.endswith("@" + device):
                continue
            num, den = lam * pr, lam
            for i in near:
                table, unlisted = self._tables[i]
                lr = table.get(c, unlisted)
                if lr is None:
                    continue  # that neighbour did not measure c: no information
                w = 1.0 / (float(d[i]) + 0.5)
                num += w * lr
                den += w
            if den > 0:
                out[c] = num / den
        return out

    def _select(self, max_held: int = 400) -> None:
        """Cross-validate (k, prior_weight) over the training entries (see the class doc);
        at most ``max_held`` held-out entries are scored (a fixed-seed sample of them)."""
        runs: dict[Optional[str], list[int]] = {}
        for i, e in enumerate(self.entries):
            runs.setdefault(e.run_id, []).append(i)
        folds = list(runs.values()) if len(runs) >= 2 else [[i] for i in range(len(self.entries))]
        scorable = [i for i, (table, unlisted) in enumerate(self._tables)
                    if unlisted is None and len(table) >= 2]   # full timings: a pick can be scored
        if len(scorable) > max_held:
            scorable = sorted(np.random.default_rng(0).choice(scorable, max_held, replace=False).tolist())
        scorable_set = set(scorable)
        totals = {(k, lam): 0.0 for k in K_GRID for lam in PRIOR_GRID}
        n = 0
        k_max = max(K_GRID)
        full: dict[str, tuple[float, int]] = {}
        for table, _ in self._tables:
            for c, lr in table.items():
                t, m = full.get(c, (0.0, 0))
                full[c] = (t + lr, m + 1)
        for fold in folds:
            held = frozenset(fold)
            todo = [i for i in fold if i in scorable_set]
            if not todo:
                continue
            prior = self._prior_without(fold, full)
            for i in todo:
                d = np.sqrt(((self._x - self._x[i]) ** 2).sum(axis=1))
                table = self._tables[i][0]
                device = self.entries[i].device
                near = self._near(d, device, k_max, held)
                worst = max(table.values())
                for k, lam in totals:
                    sc = self._score(d, near, prior, device, k, lam)
                    picks = [(v, c) for c, v in sc.items() if c in table]
                    # no pick among the measured candidates: charged as the worst of them
                    totals[(k, lam)] += table[min(picks)[1]] if picks else worst
                n += 1
        if n:
            (self.k, self.prior_weight), best = min(
                totals.items(), key=lambda kv: (round(kv[1], 12), kv[0]))
            self.cv_log_regret = best / n

    def __len__(self) -> int:
        return len(self.entries)

    def neighbours(self, spec: ConvSpec, threads: int = 1, k: Optional[int] = None) -> list[Neighbour]:
        """Training entries by distance to ``spec`` (the ``k`` nearest, or all)."""
        if not self.entries:
            return []
        q = (features(spec, threads) - self._mu) / self._sd
        d = np.sqrt(((self._x - q) ** 2).sum(axis=1))
        order = np.argsort(d, kind="stable")
        if k is not None:
            order = order[:k]
        return [Neighbour(self.entries[i], float(d[i])) for i in order]

    def scores(self, spec: ConvSpec, device: str = "cpu", *, threads: int = 1) -> dict[str, float]:
        """Estimated log-regret of every candidate with training data (lower is better)."""
        if not self.entries:
            return {}
        q = (features(spec, threads) - self._mu) / self._sd
        d = np.sqrt(((self._x - q) ** 2).sum(axis=1))
        return self._score(d, self._near(d, device, self.k), self._prior, device, self.k,
                           self.prior_weight)

    def predict(self, spec: ConvSpec, device: str = "cpu", *, threads: int = 1,
                allow: Optional[Allow] = None) -> Choice:
        """The predicted choice for ``spec`` (source "predicted"), else the heuristic's."""
        for cand, _ in sorted(self.scores(spec, device, threads=threads).items(), key=lambda kv: (kv[1], kv[0])):
            try:
                c = Candidate.parse(cand)
            except ConvbenchError:
                continue
            if _supported(spec, c.backend, c.algorithm, device, allow):
                return Choice(candidate=cand, backend=c.backend, algorithm=c.algorithm,
                              device=device, median_s=None, margin=None, spec_key=spec.key,
                              threads=threads, source="predicted")
        return heuristic_choice(spec, device, allow=allow)


_MEMO: dict[tuple, tuple[tuple, Predictor]] = {}
_MEMO_LOCK = threading.Lock()


def predictor_for(device: str = "cpu", *, cache: Union[None, PathLike, TunedCache] = None,
                  k: Union[int, str] = "auto") -> Predictor:
    """A Predictor fit on this machine's cached entries for ``device`` (refit when the cache changes)."""
    tc = open_cache(cache, create=False)
    machine = machine_key(current_environment(), device)
    key = (str(tc.path), machine, device, k)
    state = tc.state()
    with _MEMO_LOCK:
        hit = _MEMO.get(key)
        if hit is not None and hit[0] == state:
            return hit[1]
    p = Predictor(k).fit(tc.entries(machine=machine, device=device))
    with _MEMO_LOCK:
        _MEMO[key] = (state, p)
    return p


def predict(spec: ConvSpec, device: str = "cpu", *, threads: Optional[int] = None,
            cache: Union[None, PathLike, TunedCache] = None, k: Union[int, str] = "auto",
            allow: Optional[Allow] = None) -> Choice:
    """A choice for a spec that is not in the cache: nearest cached neighbours, else the heuristic."""
    from .cache import default_threads

    p = predictor_for(device, cache=cache, k=k)
    return p.predict(spec, device, threads=threads or default_threads(), allow=allow)


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
