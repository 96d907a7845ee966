"""Choosing for shapes nobody tuned: nearest neighbours over this machine's cached winners.

Each problem becomes a point in a log-scaled feature space (see :func:`features`); every
feature is standardised over the training entries so none dominates the distance. A miss
takes the ``k`` nearest cached problems (same device, same machine) and votes for their
winners, weighted by ``1 / (distance + 0.1)``; the best-voted candidate that supports the
new spec (``get_backend(b).supports(spec, device, algorithm)``, backend available, and
allowed by the caller's filter) is the prediction. When no neighbour's winner qualifies,
the search widens to every entry, then falls back to :func:`heuristic_choice`.

Heuristic fallback (no cached data, or no cached winner runs this spec), first that
supports the spec and is available:

- ``cuda``: ``torch`` (its default algorithm), then ``triton``;
- ``cpu``: ``torch``, ``tensorflow``, ``numba``; then among the NumPy/SciPy backends:
  ``numpy-fft`` / ``scipy-fft`` when the kernel has at least 49 taps (7x7 and larger in 2-D),
  stride and dilation are 1 and groups is 1 (large dense kernels favour FFT), else
  ``numpy-im2col``, then ``numpy-direct``;
- otherwise any registered, available backend that supports the spec.

The framework order is a prior, not a measurement: it is what DL frameworks' own
dispatchers (oneDNN, cuDNN) are built to do well.
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
from .registry import Candidate, get_backend, list_backends
from .spec import ConvSpec

FEATURES = ("log2_n", "log2_c_in", "log2_c_out", "log2_spatial", "log2_aspect", "log2_kernel",
            "log2_stride", "log2_dilation", "log2_groups", "depthwise", "dims", "transposed",
            "log2_itemsize", "channels_last", "log2_flops", "log2_intensity", "log2_threads")

#: candidate filter: (backend, algorithm, device) -> allowed?
Allow = Callable[[str, str, str], bool]

_CPU_ORDER = ("torch", "tensorflow", "numba")
_CUDA_ORDER = ("torch", "triton")
_FFT_MIN_TAPS = 49


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


def heuristic_choice(spec: ConvSpec, device: str = "cpu", *, allow: Optional[Allow] = None) -> Choice:
    """The documented fallback (module docstring); UnsupportedError if nothing can run the spec."""
    order: list[str] = list(_CUDA_ORDER if device == "cuda" else _CPU_ORDER)
    if device == "cpu":
        big_dense = (math.prod(spec.kernel_size) >= _FFT_MIN_TAPS and spec.groups == 1
                     and all(s == 1 for s in spec.stride) and all(d == 1 for d in spec.dilation))
        order += (["numpy-fft", "scipy-fft", "numpy-im2col", "numpy-direct"] if big_dense
                  else ["numpy-im2col", "numpy-direct", "numpy-fft", "scipy-fft"])
    known = list_backends()
    order += [n for n in known if n not in order]
    for name in order:
        if name not in known:
            continue
        try:
            algos = get_backend(name).algorithms(device)  # imports the backend module, not its framework
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


class Predictor:
    """k-nearest-neighbour vote over cached winners (fit on entries of one machine and device)."""

    def __init__(self, k: int = 3) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConvbenchError(f"k: {k!r} must be an integer >= 1")
        self.k = k
        self.entries: list[CacheEntry] = []
        self._x = np.zeros((0, len(FEATURES)))
        self._mu = np.zeros(len(FEATURES))
        self._sd = np.ones(len(FEATURES))

    def fit(self, entries: Sequence[CacheEntry]) -> "Predictor":
        """Learn from cached entries (their spec, winner and thread count)."""
        rows, keep = [], []
        for e in entries:
            try:
                spec = ConvSpec.from_dict(e.spec)
            except ConvbenchError:
                continue
            rows.append(features(spec, e.threads or 1))
            keep.append(e)
        self.entries = keep
        if rows:
            x = np.vstack(rows)
            self._mu = x.mean(axis=0)
            sd = x.std(axis=0)
            self._sd = np.where(sd > 1e-9, sd, 1.0)
            self._x = (x - self._mu) / self._sd
        else:
            self._x = np.zeros((0, len(FEATURES)))
        return self

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

    def predict(self, spec: ConvSpec, device: str = "cpu", *, threads: int = 1,
                allow: Optional[Allow] = None) -> Choice:
        """The predicted choice for ``spec`` (source "predicted"), else the heuristic's."""
        for pool in (self.neighbours(spec, threads, self.k), self.neighbours(spec, threads)):
            votes: dict[tuple[str, str], float] = {}
            for nb in pool:
                e = nb.entry
                if e.device != device:
                    continue
                votes[(e.backend, e.algorithm)] = votes.get((e.backend, e.algorithm), 0.0) \
                    + 1.0 / (nb.distance + 0.1)
            for (b, a), _ in sorted(votes.items(), key=lambda kv: -kv[1]):
                if _supported(spec, b, a, device, allow):
                    return Choice(candidate=str(Candidate(b, a, device)), backend=b, algorithm=a,
                                  device=device, median_s=None, margin=None, spec_key=spec.key,
                                  threads=threads, source="predicted")
        return heuristic_choice(spec, device, allow=allow)


_MEMO: dict[tuple, tuple[tuple, Predictor]] = {}
_MEMO_LOCK = threading.Lock()


def _cache_state(tc: TunedCache) -> tuple:
    try:
        st = tc.path.stat()
        wal = tc.path.with_name(tc.path.name + "-wal")
        ws = wal.stat() if wal.exists() else None
        return (st.st_mtime_ns, st.st_size, ws.st_mtime_ns if ws else 0, ws.st_size if ws else 0)
    except OSError:
        return (0, 0, 0, 0)


def predictor_for(device: str = "cpu", *, cache: Union[None, PathLike, TunedCache] = None,
                  k: int = 3) -> Predictor:
    """A Predictor fit on this machine's cached entries for ``device`` (refit when the cache changes)."""
    tc = open_cache(cache, create=False)
    machine = machine_key(current_environment(), device)
    key = (str(tc.path), machine, device, k)
    state = _cache_state(tc)
    with _MEMO_LOCK:
        hit = _MEMO.get(key)
        if hit is not None and hit[0] == state:
            return hit[1]
    p = Predictor(k).fit(tc.entries(machine=machine, device=device))
    with _MEMO_LOCK:
        _MEMO[key] = (state, p)
    return p


def predict(spec: ConvSpec, device: str = "cpu", *, threads: Optional[int] = None,
            cache: Union[None, PathLike, TunedCache] = None, k: int = 3,
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


def geomean(values: Sequence[float]) -> float:
    """Geometric mean (nan for an empty sequence)."""
    vals = [v for v in values if v > 0]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else float("nan")
