"""``conv(policy="tune")`` on a cache miss: time the eligible candidates now, in this process,
exactly as conv() will call them, and store the winner in the cache."""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional, Union

from ..cache import Choice, PathLike, TunedCache, open_cache
from ..errors import UnsupportedError
from ..measure import Check, Screen, TimingParams, verify_and_time
from ..registry import Candidate, get_backend
from ..spec import ConvSpec
from ..timing import CallablePrepared
from .arrays import eligible_candidates, like, runner, synchronizer, to_numpy

#: the race's settings for conv(policy="tune"): short, since the caller is waiting
_RACE = dict(min_samples=5, max_samples=200, rel_ci=0.02)
_WARMUP = dict(min_warmup_calls=1, min_warmup_s=0.01)


def tune(spec: ConvSpec, kind: str = "numpy", device: str = "cpu", *,
         cache: Union[None, PathLike, TunedCache] = None, requires_grad: bool = False,
         x: Any = None, w: Any = None, budget_s: Optional[float] = None, seed: int = 0,
         backends: Optional[list[str]] = None) -> Choice:
    """Time the eligible candidates for ``spec`` now, in this process, as conv() calls them.

    Candidates are raced (:func:`convbench.strategies.race_candidates`; each one is verified
    against the float64 reference, batch reduced to 2, before it can lead or win)
    on ``x``/``w`` (or generated inputs) with ``budget_s`` per candidate (default
    ``convbench.dispatch.TUNE_BUDGET_S``); ``backends`` limits the candidates (default
    ``convbench.dispatch.TUNE_BACKENDS``: all). The winner (selection rules of
    :mod:`convbench.selection`) is stored in the cache, keyed by this machine and the default
    thread count, and returned.
    """
    from ..strategies import RaceConfig, race_candidates
    from . import TUNE_BACKENDS, TUNE_BUDGET_S  # conv()'s settings, read at call time

    budget_s = TUNE_BUDGET_S if budget_s is None else float(budget_s)
    backends = TUNE_BACKENDS if backends is None else backends
    cands = eligible_candidates(spec, kind, device, requires_grad=requires_grad, backends=backends)
    if not cands:
        raise UnsupportedError(f"no eligible candidate for {spec.label} on {device} with {kind} inputs")
    run_round = _round_runner(spec, kind, device, cands, requires_grad=requires_grad, x=x, w=w,
                              seed=seed)
    raced = race_candidates(cands, run_round, budget_s=budget_s, **_RACE,
                            config=RaceConfig(first_samples=3, first_max_samples=3))
    return _store(spec, kind, raced, cache)


def _round_runner(spec: ConvSpec, kind: str, device: str, cands: list[Candidate], *,
                  requires_grad: bool, x: Any, w: Any, seed: int) -> Callable[..., dict]:
    """run_round(candidate, RoundParams) for the race: :func:`convbench.measure.verify_and_time`
    on the candidates' conv() callables over arrays of ``kind``."""
    from ..reference import make_inputs, reference

    if x is None or w is None:
        xn, wn = make_inputs(spec, seed=seed)
        x, w = like(kind, xn), like(kind, wn)
    vspec = spec if spec.n <= 2 else spec.replace(n=2)
    vx, vw = make_inputs(vspec, seed=seed)
    expected = reference(vspec, vx, vw)
    vx, vw = like(kind, vx), like(kind, vw)
    sync = synchronizer(kind)
    fns = {c: runner(spec, kind, c.backend, c.algorithm, device, requires_grad=requires_grad)
           for c in cands}
    vfns = {c: runner(vspec, kind, c.backend, c.algorithm, device, requires_grad=requires_grad)
            for c in cands}

    def run_round(c: Candidate, p: Any) -> dict[str, Any]:
        b = get_backend(c.backend)
        check = Check(prepare=lambda: CallablePrepared(partial(vfns[c], vx, vw), sync,
                                                       to_numpy=partial(to_numpy, kind)),
                      expected=expected, tolerance=b.tolerance(spec, device, c.algorithm),
                      batch=vspec.n, full_batch=spec.n,
                      expected_failure=b.expected_failure(spec, device, c.algorithm))
        timing = TimingParams(budget_s=p.budget_s, min_samples=p.min_samples,
                              max_samples=max(p.max_samples, p.min_samples), rel_ci=p.rel_ci,
                              stop_above_s=p.stop_above_s, min_time_s=p.min_time_s, **_WARMUP)
        screen = (Screen(p.screen_above_s, p.screen_kill_s)
                  if p.screen_above_s is not None and p.screen_kill_s is not None else None)
        return verify_and_time(lambda: CallablePrepared(partial(fns[c], x, w), sync),
                               check=check if p.verify else None,
                               timing=timing if p.time else None, screen=screen)
    return run_round


def _store(spec: ConvSpec, kind: str, raced: list[tuple[Any, dict]],
           cache: Union[None, PathLike, TunedCache]) -> Choice:
    """Records of the race (one per candidate, as a sweep writes them), the winner into the
    cache; the winner's Choice."""
    from ..cache import default_threads, entries_from_run
    from ..environment import env_id, fingerprint
    from ..outcome import make_record, now_iso
    from ..results import new_run_id

    threads = default_threads()
    fp = fingerprint(threads)
    eid = env_id(fp)
    run_id = new_run_id("conv-tune")
    base = {"run_id": run_id, "problem": spec.key, "suite": None, "spec": spec.to_dict(),
            "spec_key": spec.key, "label": spec.label}
    records = [make_record(base, spec, c, o, threads=threads, env_id=eid) for c, o in raced]
    meta = {"run_id": run_id, "created": now_iso(), "threads": threads, "environment": fp,
            "env_id": eid, "strategy": "race"}
    entries, _, _ = entries_from_run(records, meta, source=f"conv(tune, {kind} input)")
    if not entries:
        reasons = "; ".join(f"{r['candidate']}: {r['status']} {r.get('message') or ''}" for r in records)
        raise UnsupportedError(f"tuning {spec.label} found no candidate that runs correctly: {reasons}")
    open_cache(cache).put_many(entries)
    return Choice.from_entry(entries[0], source="tuned")


__all__ = ["tune"]
