"""Cross-validation of the miss predictor's bandwidth and prior weight (:mod:`convbench.predict`).

Each scheme is a partition of the training problems into held-out groups (one run at a time,
one shape at a time). For every held-out problem that has complete timings, the training
problems outside its group predict a pick with each (bandwidth, prior weight); the pick's
measured log-regret there is its loss. Every scheme's mean loss counts equally; the pair with
the lowest average wins (ties: the smaller bandwidth, then the smaller prior weight). The
same picks measure the *optimism* of the scores: the mean of (measured - predicted)
log-regret, since the lowest of several noisy estimates tends to be too low.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class CVResult:
    bandwidth: float
    prior_weight: float
    log_regret: float      # mean log-regret of the held-out picks (schemes averaged)
    optimism: float        # mean (measured - predicted) log-regret of those picks, >= 0


def _picks(num: np.ndarray, den: np.ndarray, prior: np.ndarray, lam: float,
           allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bandwidth (rows): the index of the lowest score among ``allowed`` and that score."""
    with np.errstate(invalid="ignore", divide="ignore"):
        s = (num + lam * prior) / (den + lam)
    s = np.where(allowed & np.isfinite(s), s, np.inf)
    j = np.argmin(s, axis=1)
    return j, s[np.arange(len(j)), j]


def _held_out(scorable: np.ndarray, max_held: int, seed: int) -> set[int]:
    """The problems scored (at most ``max_held``: a fixed-seed sample of the scorable ones)."""
    idx = np.flatnonzero(scorable)
    if len(idx) > max_held:
        idx = np.random.default_rng(seed).choice(idx, max_held, replace=False)
    return {int(i) for i in idx}


def cross_validate(x: np.ndarray, y: np.ndarray, schemes: Sequence[Sequence[np.ndarray]],
                   scorable: np.ndarray, bandwidths: Sequence[float], prior_weights: Sequence[float],
                   devices: Optional[np.ndarray] = None, max_held: int = 300, seed: int = 0) -> CVResult:
    """Choose (bandwidth, prior weight) as the module docstring says.

    ``x``: standardised features (problems x features); ``y``: log-regret (problems x
    candidates, nan: not measured); ``schemes``: partitions into held-out index groups;
    ``scorable``: problems whose timings are complete enough to score a pick; ``devices``: a
    label per problem (only problems of the held-out one's device are neighbours).
    """
    bw, lams = np.asarray(bandwidths, dtype=float), np.asarray(prior_weights, dtype=float)
    todo_all = _held_out(scorable, max_held, seed)
    loss, gap, used = np.zeros((len(bw), len(lams))), np.zeros((len(bw), len(lams))), 0
    for scheme in schemes:
        s_loss, s_gap, n = np.zeros_like(loss), np.zeros_like(loss), 0
        for group in scheme:
            todo = [int(i) for i in group if int(i) in todo_all]
            if todo:
                g_loss, g_gap = _score_group(x, y, group, todo, bw, lams, devices)
                s_loss, s_gap, n = s_loss + g_loss, s_gap + g_gap, n + len(todo)
        if n:
            loss, gap, used = loss + s_loss / n, gap + s_gap / n, used + 1
    if not used:
        return CVResult(float(bw[0]), float(lams[0]), float("nan"), 0.0)
    loss, gap = loss / used, gap / used
    b, k = np.unravel_index(np.argmin(np.round(loss, 12)), loss.shape)
    return CVResult(float(bw[b]), float(lams[k]), float(loss[b, k]), max(0.0, float(gap[b, k])))


def _score_group(x: np.ndarray, y: np.ndarray, group: np.ndarray, todo: list[int], bw: np.ndarray,
                 lams: np.ndarray, devices: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Summed (measured log-regret, measured - predicted) of the picks for the problems
    ``todo`` of a held-out ``group``, per (bandwidth, prior weight)."""
    measured = ~np.isnan(y)
    y0 = np.where(measured, y, 0.0)
    keep = np.ones(len(x), dtype=bool)
    keep[group] = False
    left = measured[keep].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        prior = np.where(left > 0, y0[keep].sum(axis=0) / left, np.nan)
    loss, gap = np.zeros((len(bw), len(lams))), np.zeros((len(bw), len(lams)))
    for i in todo:
        near = keep if devices is None else keep & (devices == devices[i])
        d2 = ((x - x[i]) ** 2).sum(axis=1)
        w = np.exp(-0.5 * d2[None, :] / bw[:, None] ** 2) * near
        num, den = w @ y0, w @ measured
        allowed = measured[i] & ~np.isnan(prior)
        for k, lam in enumerate(lams):
            if not allowed.any():   # nothing measured elsewhere: charged the worst
                loss[:, k] += np.nanmax(y[i])
                continue
            j, pred = _picks(num, den, prior, lam, allowed)
            loss[:, k] += y[i, j]
            gap[:, k] += y[i, j] - pred
    return loss, gap


__all__ = ["CVResult", "cross_validate"]
