"""What races measured on one machine: :class:`RaceMemory`, kept per worker pool
(:func:`memory_for`), orders a race's candidates by how they did on the nearest problems raced
before and names the hopeless ones (:class:`convbench.race.RaceConfig`'s ``hopeless_*``)."""
from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from .race import RaceConfig


class RaceMemory:
    """What races measured on one machine, problem by problem: each candidate's time per call
    over the problem's fastest (a lower bound where the race stopped it early). Distances are
    between :func:`convbench.predict.features` vectors (log2 units, not rescaled)."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, dict[str, float]]] = []   # (name, ratios)
        self._features: list[Any] = []
        self._last: tuple = ((), None)                            # (query, distances)

    def add(self, spec: Any, threads: int, name: str, ratios: dict[str, float]) -> None:
        from .predict import features

        if ratios:
            self.problems.append((str(name), dict(ratios)))
            self._features.append(features(spec, threads))

    def _distances(self, spec: Any, threads: int) -> Any:
        import numpy as np

        from .predict import features

        query = (spec.key, threads, len(self.problems))
        if self._last[0] != query:
            d = np.linalg.norm(np.vstack(self._features) - features(spec, threads), axis=1)
            self._last = (query, d)
        return self._last[1]

    def nearest(self, spec: Any, threads: int, candidate: str) -> list[tuple[float, str, float]]:
        """(distance, problem, ratio) of the earlier problems that measured ``candidate``,
        nearest first."""
        if not self.problems:
            return []
        d = self._distances(spec, threads)
        near = [(float(d[i]), name, r[candidate]) for i, (name, r) in enumerate(self.problems)
                if candidate in r]
        return sorted(near, key=lambda t: t[0])

    def score(self, spec: Any, threads: int, candidate: str, k: int = 3) -> Optional[float]:
        """Mean log-ratio on the ``k`` nearest problems that measured it (None: none did)."""
        near = self.nearest(spec, threads, candidate)[:k]
        return sum(math.log(max(r, 1e-9)) for _, _, r in near) / len(near) if near else None

    def hopeless(self, spec: Any, threads: int, candidate: str,
                 cfg: RaceConfig) -> Optional[list[tuple[float, str, float]]]:
        """The neighbours that make ``candidate`` hopeless here (see RaceConfig), or None."""
        if cfg.hopeless_ratio is None:
            return None
        near = [t for t in self.nearest(spec, threads, candidate)
                if t[0] <= cfg.hopeless_radius][:cfg.hopeless_neighbours]
        if len(near) == cfg.hopeless_neighbours and all(r >= cfg.hopeless_ratio for *_, r in near):
            return near
        return None


_MEMORIES: "weakref.WeakKeyDictionary[Any, RaceMemory]" = weakref.WeakKeyDictionary()


def memory_for(pool: Any) -> RaceMemory:
    """The RaceMemory of a worker pool (one machine, one thread count), made on first use."""
    try:
        return _MEMORIES.setdefault(pool, RaceMemory())
    except TypeError:  # an object that takes no weak reference: no memory across problems
        return RaceMemory()


__all__ = ["RaceMemory", "memory_for"]
