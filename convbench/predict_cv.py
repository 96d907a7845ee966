"""Cross-validation of the miss predictor's bandwidth and prior weight (:mod:`convbench.predict`).

Each scheme is a partition of the training problems into held-out groups (one run at a time,
one shape at a time). For every held-out problem that has complete timings, the training
problems outside its group predict a pick with each (bandwidth, prior weight); the pick's
measured log-regret there is its loss. Every scheme's mean loss counts equally; the pair with
the lowest average wins (ties: the smaller bandwidth, then the smaller prior weight). The
same picks measure the *optimism* of the scores: the mean of (measured - predicted)
log-regret, since the lowest of several noisy estimates tends to be too low. It keeps its sign:
where the scores ran high (the prior pulling toward slow averages), it is negative and corrects
them down. They measure the same of the pick's ``p_within`` (``within_gap``: the share of picks
measured within 5% of the fastest, minus the mean ``p_within`` they were given), which the
prior pulls toward a candidate's share over all problems.

Feature weights (:func:`choose_feature_weights`): not every feature matters as much for which
candidate wins (the kernel size may matter more than the aspect ratio). Starting from weight 1
for every feature, each feature's weight in turn is set to each of :data:`WEIGHT_STEPS` and the
change is kept when the cross-validated loss above drops by more than :data:`MIN_GAIN`, in one
pass over the features. The distances then use ``x * weights``. The same held-out schemes score
every trial, so the weights are chosen on held-out problems. One pass, not passes until nothing
changes: leave-one-suite-out (``benchmarks/predictor_regret.py``, on the runs committed on
2026-12-02) scored 1.191 with one pass and 1.195 with two or three, over 330 held-out problems
of two machines.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

#: the weights each feature is tried at (relative to its standardised scale)
WEIGHT_STEPS = (0.0, 0.5, 1.0, 2.0)
#: the least drop of the cross-validated mean log-regret that keeps a weight change
MIN_GAIN = 0.002
#: "within 5% of the fastest", the event p_within estimates (convbench.predict.WITHIN)
WITHIN = 1.05


@dataclass(frozen=True)
class CVResult:
    bandwidth: float
    prior_weight: float
    log_regret: float      # mean log-regret of the held-out picks (schemes averaged)
    optimism: float        # mean (measured - predicted) log-regret of those picks (either sign)
    within_gap: float = 0.0  # mean (measured within WITHIN: 0/1 - predicted p_within) of them


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
    loss, gap, pgap = (np.zeros((len(bw), len(lams))) for _ in range(3))
    used = 0
    for scheme in schemes:
        label = np.full(len(x), -1)
        for g, group in enumerate(scheme):
            label[np.asarray(group, dtype=int)] = g
        todo = np.array(sorted(i for i in todo_all if label[i] >= 0), dtype=int)
        if len(todo):
            s_loss, s_gap, s_pgap = _score(x, y, label, todo, bw, lams, devices)
            loss, gap, pgap = loss + s_loss / len(todo), gap + s_gap / len(todo), pgap + s_pgap / len(todo)
            used += 1
    if not used:
        return CVResult(float(bw[0]), float(lams[0]), float("nan"), 0.0)
    loss, gap, pgap = loss / used, gap / used, pgap / used
    b, k = np.unravel_index(np.argmin(np.round(loss, 12)), loss.shape)
    return CVResult(float(bw[b]), float(lams[k]), float(loss[b, k]), float(gap[b, k]),
                    float(pgap[b, k]))


def choose_feature_weights(x: np.ndarray, y: np.ndarray, schemes: Sequence[Sequence[np.ndarray]],
                           scorable: np.ndarray, bandwidths: Sequence[float],
                           prior_weights: Sequence[float], devices: Optional[np.ndarray] = None,
                           max_held: int = 300, seed: int = 0) -> tuple[np.ndarray, CVResult]:
    """(feature weights, the cross-validation at those weights), as the module docstring says.
    A feature that is constant over ``x`` keeps weight 1 (no held-out problem can tell)."""
    def cv(weights: np.ndarray) -> CVResult:
        return cross_validate(x * weights, y, schemes, scorable, bandwidths, prior_weights,
                              devices=devices, max_held=max_held, seed=seed)

    weights = np.ones(x.shape[1])
    best = cv(weights)
    if not np.isfinite(best.log_regret):
        return weights, best
    for f in (f for f in range(x.shape[1]) if np.ptp(x[:, f]) > 0):
        for step in WEIGHT_STEPS:
            if step != weights[f]:
                trial = weights.copy()
                trial[f] = step
                got = cv(trial)
                if got.log_regret < best.log_regret - MIN_GAIN:
                    weights, best = trial, got
    return weights, best


def _score(x: np.ndarray, y: np.ndarray, label: np.ndarray, todo: np.ndarray, bw: np.ndarray,
           lams: np.ndarray, devices: Optional[np.ndarray]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Summed (measured log-regret, measured - predicted log-regret, within WITHIN or not -
    predicted p_within) of the picks for the held-out problems ``todo``, each predicted from
    the problems outside its group (``label``: group per problem, -1 for none), per
    (bandwidth, prior weight): every held-out problem at once."""
    measured = ~np.isnan(y)
    y0, m = np.where(measured, y, 0.0), measured.astype(float)
    inside = (measured & (y0 <= np.log(WITHIN))).astype(float)
    keep = label[None, :] != label[todo][:, None]                   # held-out x training
    left = keep.astype(float) @ m
    nan = np.full_like(left, np.nan)
    prior = np.divide(keep.astype(float) @ y0, left, out=nan.copy(), where=left > 0)
    prior_in = np.divide(keep.astype(float) @ inside, left, out=nan.copy(), where=left > 0)
    near = keep if devices is None else keep & (devices[None, :] == devices[todo][:, None])
    sq = (x ** 2).sum(axis=1)
    d2 = np.maximum(sq[todo][:, None] + sq[None, :] - 2 * x[todo] @ x.T, 0.0)   # held x train
    allowed = measured[todo] & ~np.isnan(prior)
    none = ~allowed.any(axis=1)               # nothing measured elsewhere: charged the worst
    worst = np.where(measured[todo], y[todo], -np.inf).max(axis=1)
    yt, rows = y0[todo], np.arange(len(todo))
    loss, gap, pgap = (np.zeros((len(bw), len(lams))) for _ in range(3))
    for b, h in enumerate(bw):
        w = np.exp(-0.5 * d2 / h ** 2) * near
        num, den, num_in = w @ y0, w @ m, w @ inside                            # held x cand
        for k, lam in enumerate(lams):
            with np.errstate(invalid="ignore", divide="ignore"):
                s = (num + lam * prior) / (den + lam)
                p = (num_in + lam * prior_in) / (den + lam)
            s = np.where(allowed & np.isfinite(s), s, np.inf)
            j = np.argmin(s, axis=1)
            got, pred = yt[rows, j], s[rows, j]
            loss[b, k] = np.where(none, worst, got).sum()
            gap[b, k] = np.where(none, 0.0, got - pred).sum()
            pgap[b, k] = np.where(none, 0.0, (got <= np.log(WITHIN)) - p[rows, j]).sum()
    return loss, gap, pgap


__all__ = ["CVResult", "choose_feature_weights", "cross_validate"]
