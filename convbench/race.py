"""The ``race`` strategy (what it does: :mod:`convbench.strategies`): a verified leader, one
screening look per other candidate under a watchdog, verification only for candidates that can
still win, and the full final rounds only for those within reach of the leader. Every
candidate ends with one record; one the race stopped measuring is ``pruned``, with its evidence.

:class:`RaceMemory` keeps what races measured on one machine (per worker pool), so that later
problems order their candidates by how they did on the nearest earlier problems and skip the
ones that were hopeless there (:mod:`convbench.race_memory`).
"""
from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Sequence

from .errors import ConvbenchError
from .outcome import ABOVE, VERIFIED, Status
from .race_memory import RaceMemory, memory_for
from .rounds import RoundParams, Rounds, RunRound, merge_rounds, run_rounds

#: noise flags that can slow a whole screening window (steal, other processes, throttling)
NOISY = frozenset({"steal", "busy", "throttle", "freq"})


@dataclass(frozen=True)
class RaceConfig:
    """Knobs of the race. Fractions are of the sweep's per-candidate budget; ratios are of
    the leader's median per call."""

    first_samples: int = 3          # samples of a look (the leader's and the screening ones)...
    first_max_samples: int = 5      # ... at most
    first_fraction: float = 0.1     # a look's budget
    screen_ratio: float = 3.0       # a screening look ends after two calls slower than this
                                    # (and than decisive_min_s), its timing after 3 samples
    sure_ratio: float = 10.0        # one look this much slower (or a stopped call) prunes at once
    decisive_min_s: float = 0.02    # ... when its calls or samples took at least this long
    prune_ratio: float = 2.0        # one quiet timed look this much slower prunes
    final_ratio: float = 1.3        # a look at most this much slower reaches the final rounds
    kill_floor_s: float = 0.5       # a screened call is never stopped before this many seconds
    hopeless_ratio: Optional[float] = 20.0  # pruned unmeasured when at least this much slower
    hopeless_neighbours: int = 2            # on the nearest earlier problems that measured it,
    hopeless_radius: float = 3.0            # all within this distance; None: never
    cut_rounds: int = 3             # after this many final rounds (and each later one), a
    cut_ratio: Optional[float] = 1.1  # finalist this much slower than the best in every round
                                      # so far leaves the rounds with them; None: never

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ConvbenchError(f"{name}: {getattr(self, name)!r} must be {rule}")

        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        need(isinstance(self.first_samples, int) and self.first_samples >= 1, "first_samples",
             "an integer >= 1")
        need(isinstance(self.first_max_samples, int) and self.first_max_samples >= self.first_samples,
             "first_max_samples", f"an integer >= first_samples ({self.first_samples})")
        need(number(self.first_fraction) and self.first_fraction > 0, "first_fraction", "> 0")
        need(number(self.final_ratio) and self.final_ratio > 1, "final_ratio", "a number > 1")
        need(number(self.prune_ratio) and self.prune_ratio >= self.final_ratio, "prune_ratio",
             f"a number >= final_ratio ({self.final_ratio})")
        need(number(self.screen_ratio) and self.screen_ratio > 1, "screen_ratio", "a number > 1")
        need(number(self.sure_ratio) and self.sure_ratio >= max(self.screen_ratio, self.prune_ratio),
             "sure_ratio", "a number >= screen_ratio and prune_ratio")
        need(number(self.kill_floor_s) and self.kill_floor_s > 0, "kill_floor_s", "seconds > 0")
        need(number(self.decisive_min_s) and self.decisive_min_s >= 0, "decisive_min_s",
             "seconds >= 0")
        need(self.hopeless_ratio is None or (number(self.hopeless_ratio) and self.hopeless_ratio > 1),
             "hopeless_ratio", "a number > 1 (or None: never prune by prediction)")
        need(isinstance(self.hopeless_neighbours, int) and self.hopeless_neighbours >= 1,
             "hopeless_neighbours", "an integer >= 1")
        need(number(self.hopeless_radius) and self.hopeless_radius > 0, "hopeless_radius", "> 0")
        need(isinstance(self.cut_rounds, int) and not isinstance(self.cut_rounds, bool)
             and self.cut_rounds >= 1, "cut_rounds", "an integer >= 1")
        need(self.cut_ratio is None or (number(self.cut_ratio) and self.cut_ratio > 1),
             "cut_ratio", "a number > 1 (or None: every finalist gets every round)")


# ---- one race ------------------------------------------------------------------------------
@dataclass
class _Look:
    """One look at a candidate: ``timed`` (samples), ``calls`` (its two first calls were over
    the limit) or ``stopped`` (the watchdog stopped a call)."""

    kind: str
    lower_s: float                    # its fastest sample or call; the watchdog's limit if stopped
    median_s: Optional[float] = None  # timed looks only
    clean: bool = False               # timed, and no noise flag that slows a whole window


@dataclass
class _Entrant:
    candidate: Any
    index: int
    key: tuple = ()
    family: str = ""
    outcomes: list = field(default_factory=list)   # every task's raw outcome
    looks: list = field(default_factory=list)
    verified: Optional[dict] = None                 # the outcome that verified it
    end: Optional[dict] = None                      # a failure: its record as it is
    pruned: Optional[dict] = None                   # why the race stopped measuring it
    final: Optional[dict] = None                    # its final rounds, merged (ok)
    readmitted: bool = False
    cut: Optional[dict] = None                      # why it left the final rounds early

    @property
    def open(self) -> bool:
        return self.end is None and self.pruned is None and self.final is None


def _look(out: dict) -> Optional[_Look]:
    """The look a screening or leader task gave; None for a failure."""
    status = out.get("status")
    screen = (out.get("info") or {}).get("screen") or {}
    if status == Status.OK:
        flags = set(out.get("noise") or [])
        return _Look("timed", float(out["min_s"]), float(out["median_s"]), not flags & NOISY)
    if status == ABOVE:
        return _Look("calls", min(float(t) for t in screen["calls_s"]))
    if status == Status.TIMEOUT and "stopped_after_s" in screen:
        return _Look("stopped", float(screen["stopped_after_s"]))
    return None


class _Race:
    """The state of one race (see the module docstring of convbench.strategies)."""

    def __init__(self, candidates: Sequence[Any], run_round: RunRound, cfg: RaceConfig, *,
                 settings: dict, rounds: Rounds, rng: random.Random, spec: Any, threads: int,
                 memory: Optional[RaceMemory], max_call_s: Optional[float],
                 rank: Callable[[Any], float]) -> None:
        self.entrants = [_Entrant(c, i) for i, c in enumerate(candidates)]
        self.run_round, self.cfg, self.settings = run_round, cfg, settings
        self.rounds, self.rng, self.spec, self.threads = rounds, rng, spec, threads
        self.memory, self.max_call_s, self.rank = memory, max_call_s, rank
        self.leader: Optional[_Entrant] = None
        self.next_round = 3

    # -- tasks -----------------------------------------------------------------------------
    def task(self, e: _Entrant, p: RoundParams, stage: str) -> dict:
        out = dict(self.run_round(e.candidate, p))
        out.update(_round=p.round, _budget_s=p.budget_s, _stage=stage)
        e.outcomes.append(out)
        return out

    @property
    def leader_s(self) -> float:
        return self.leader.looks[-1].median_s if self.leader else math.inf

    def kill_s(self) -> float:
        k = max(self.cfg.sure_ratio * self.leader_s, self.cfg.kill_floor_s)
        return k if self.max_call_s is None else min(k, 2.0 * self.max_call_s)

    def look_params(self, round_no: int, *, verify: bool, screen: bool,
                    calls_above: Optional[float] = None) -> RoundParams:
        """A look; a screening one (``screen``) ends after two calls over ``calls_above``
        times the leader's median (default screen_ratio; never under decisive_min_s), its
        timing after three samples over screen_ratio times it."""
        s, cfg = self.settings, self.cfg
        above = cfg.screen_ratio * self.leader_s if screen else None
        calls = (max((calls_above or cfg.screen_ratio) * self.leader_s, cfg.decisive_min_s)
                 if screen else None)
        return RoundParams(round_no, s["budget_s"] * cfg.first_fraction, cfg.first_samples,
                           max(cfg.first_samples, min(cfg.first_max_samples, s["max_samples"])),
                           s["rel_ci"], verify=verify, final=False, stop_above_s=above,
                           screen_above_s=calls, screen_kill_s=self.kill_s() if screen else None)

    def decisive(self, look: _Look) -> bool:
        """One look is enough: its fastest call or sample at least sure_ratio times the
        leader's median and at least decisive_min_s (shorter calls can be one-time costs or a
        busy machine's time slices)."""
        return look.lower_s >= max(self.cfg.sure_ratio * self.leader_s, self.cfg.decisive_min_s)

    # -- the steps -------------------------------------------------------------------------
    def order(self) -> list[_Entrant]:
        """Entrants by how they did on the nearest earlier problems, then by the backends'
        declared heuristic rank, then as given."""
        for e in self.entrants:
            sc = self.memory.score(self.spec, self.threads, str(e.candidate)) if self.memory else None
            e.key = (sc is None, sc or 0.0, self.rank(e.candidate), e.index)
            e.family = _family(e.candidate)
        return sorted(self.entrants, key=lambda e: e.key)

    def predict_hopeless(self) -> None:
        for e in self.entrants:
            near = self.memory.hopeless(self.spec, self.threads, str(e.candidate), self.cfg) \
                if self.memory and self.spec is not None else None
            if near:
                e.pruned = {"how": "predicted", "hopeless_ratio": self.cfg.hopeless_ratio,
                            "neighbours": [{"problem": n, "distance": round(d, 3), "ratio": r}
                                           for d, n, r in near]}

    def find_leader(self, order: list[_Entrant]) -> None:
        """The first entrant in ``order`` that verifies and times ok (a short look)."""
        for e in order:
            if not e.open:
                continue
            out = self.task(e, self.look_params(1, verify=True, screen=False), "leader")
            if out.get("status") != Status.OK:
                e.end = out
                continue
            e.verified = out
            e.looks.append(_look(out))
            self.leader = e
            return

    def screen(self, e: _Entrant, round_no: int, stage: str,
               calls_above: Optional[float] = None) -> None:
        """One screening look; prunes at once when it is decisive."""
        out = self.task(e, self.look_params(round_no, verify=False, screen=True,
                                            calls_above=calls_above), stage)
        look = _look(out)
        if look is None or (look.kind == "stopped"
                            and look.lower_s < self.cfg.sure_ratio * self.leader_s):
            e.end = out  # a failure, or stopped at twice the per-call limit: a timeout
            return
        e.looks.append(look)
        if self.decisive(look):
            self.prune(e, "one look")

    def screen_all(self, order: list[_Entrant]) -> None:
        """Every other entrant once, family by family (the leader's first); one that beats
        the leader is verified and leads from then on."""
        fam_key = {}
        for e in order:
            fam_key.setdefault(e.family, e.key)
        lead_fam = self.leader.family if self.leader else ""
        for e in sorted(order, key=lambda e: (e.family != lead_fam, fam_key[e.family], e.key)):
            if not e.open or e.looks:
                continue
            self.screen(e, 1, "screen")
            look = e.looks[-1] if e.open and e.looks else None
            if look is not None and look.kind == "timed" and look.median_s < self.leader_s:
                self.promote(e)

    def promote(self, e: _Entrant) -> None:
        s = self.settings
        out = self.task(e, RoundParams(0, 0.0, 1, 1, s["rel_ci"], verify=True, final=False,
                                       time=False), "verify")
        if out.get("status") == VERIFIED:
            e.verified, self.leader = out, e
        else:
            e.end = out

    def classify(self) -> tuple[list[_Entrant], list[_Entrant]]:
        """(finalists, entrants that need a second look) after the screening looks."""
        cfg, lead = self.cfg, self.leader_s
        finalists, again = [], []
        for e in sorted(self.entrants, key=lambda e: e.key):
            if not e.open or not e.looks:
                continue
            look = e.looks[-1]
            if e is self.leader or (look.kind == "timed" and look.median_s <= cfg.final_ratio * lead):
                finalists.append(e)
            elif self.decisive(look):
                self.prune(e, "one look")
            elif look.kind == "timed" and look.clean and look.median_s >= cfg.prune_ratio * lead:
                self.prune(e, "one quiet look")
            else:
                again.append(e)
        return finalists, again

    def second_looks(self, entrants: list[_Entrant]) -> list[_Entrant]:
        """A second look (a later window in time, timed unless its first two calls are over
        sure_ratio) for each; those it finds within the final ratio go to the final, the
        others are pruned on two looks."""
        out = []
        for e in sorted(entrants, key=lambda e: (e.family, e.key)):
            self.screen(e, 2, "second look", calls_above=self.cfg.sure_ratio)
            if not e.open:
                continue
            look = e.looks[-1]
            if look.kind == "timed" and look.median_s <= self.cfg.final_ratio * self.leader_s:
                out.append(e)
            else:
                self.prune(e, "two looks")
        return out

    def finals(self, entrants: list[_Entrant], stage: str = "final") -> None:
        """``entrants`` measured as exhaustive measures (interleaved rounds, the full budget);
        the first round verifies those not verified yet."""
        if not entrants:
            return
        by_id = {id(e.candidate): e for e in entrants}

        def run_round(cand: Any, p: RoundParams) -> dict:
            if p.verify and by_id[id(cand)].verified is not None:
                p = replace(p, verify=False)
            return self.run_round(cand, p)

        s = self.settings
        raw = run_rounds([e.candidate for e in entrants], run_round, budget_s=s["budget_s"],
                         min_samples=s["min_samples"], max_samples=s["max_samples"],
                         rel_ci=s["rel_ci"], rounds=self.rounds, rng=self.rng,
                         first_round=self.next_round, verify=True,
                         cut=lambda raw, live: self.cut(entrants, raw, live))
        self.next_round += self.rounds.count
        for e, outs in zip(entrants, raw):
            for o in outs:
                o["_stage"] = stage
            e.outcomes.extend(outs)
            merged = merge_rounds(outs)
            if merged.get("status") != Status.OK:
                e.end = merged
                continue
            e.final = merged
            if e.verified is None:
                e.verified = outs[0]

    def cut(self, entrants: list[_Entrant], raw: list[list[dict]], live: list[int]) -> list[int]:
        """The finalists (indices into ``entrants``) that leave the final rounds now: after at
        least ``cut_rounds`` rounds, each whose median in every round so far is at least
        ``cut_ratio`` times that round's median of the best (the lowest median of its round
        medians). Rounds pair the candidates in time, so a drift that slows one round slows
        both sides of each comparison."""
        cfg = self.cfg
        done = min((len(raw[i]) for i in live), default=0)
        if cfg.cut_ratio is None or done < cfg.cut_rounds or len(live) < 2:
            return []
        meds = {i: [float(o["median_s"]) for o in raw[i][:done]] for i in live}
        best = min(live, key=lambda i: (statistics.median(meds[i]), i))
        out = []
        for i in live:
            ratios = [a / b for a, b in zip(meds[i], meds[best])]
            if i != best and min(ratios) >= cfg.cut_ratio:
                entrants[i].cut = {"after_rounds": done, "best": str(entrants[best].candidate),
                                   "round_ratios": [round(r, 4) for r in ratios]}
                out.append(i)
        return out

    def readmit(self) -> None:
        """A pruned entrant whose fastest look is not slower than the best finalist's final
        interval (the machine drifted) gets final rounds too; when no finalist ended ok,
        every pruned entrant does."""
        while True:
            done = [e.final for e in self.entrants if e.final is not None]
            hi = min(done, key=lambda o: o["median_s"])["ci_high_s"] if done else math.inf
            back = [e for e in self.entrants if e.pruned is not None and not e.readmitted
                    and (not done or (e.looks and min(x.lower_s for x in e.looks) <= hi))]
            if not back:
                return
            for e in back:
                e.readmitted = True
            self.finals(back, "final (re-admitted)")

    def prune(self, e: _Entrant, how: str) -> None:
        lows = [x.lower_s for x in e.looks]
        e.pruned = {"how": how, "lower_bound_s": min(lows), "leader": str(self.leader.candidate),
                    "leader_median_s": self.leader_s, "ratio": min(lows) / self.leader_s,
                    "looks": [{"kind": x.kind, "lower_s": x.lower_s, "median_s": x.median_s,
                               "clean": x.clean} for x in e.looks]}

    def remember(self, name: str) -> None:
        """This problem's times over its fastest, into the memory (measured ones only)."""
        best = [e.final["median_s"] for e in self.entrants if e.final is not None]
        if self.memory is None or self.spec is None or not (best or self.leader):
            return
        fastest = min(best) if best else self.leader_s
        ratios = {}
        for e in self.entrants:
            t = _time_or_bound(e)
            if t is not None and t > 0:
                ratios[str(e.candidate)] = t / fastest
        self.memory.add(self.spec, self.threads, name, ratios)


def _time_or_bound(e: _Entrant) -> Optional[float]:
    """An entrant's time per call: its final median, else a measured lower bound."""
    if e.final is not None:
        return float(e.final["median_s"])
    if e.pruned is not None and e.looks:
        return float(e.pruned.get("lower_bound_s") or min(x.lower_s for x in e.looks))
    if e.end is not None and e.end.get("status") == Status.TIMEOUT:
        info = e.end.get("info") or {}
        screen = info.get("screen") or {}
        calls = screen.get("calls_s") or []
        bound = calls[0] if calls else screen.get("stopped_after_s") or info.get("verify_est_s")
        return float(bound) if isinstance(bound, (int, float)) else None
    return None


def _family(candidate: Any) -> str:
    """The worker family a candidate's backend declares (its name when it declares none)."""
    name = getattr(candidate, "backend", None)
    if name is None:
        return ""
    try:
        from .registry import get_backend

        return getattr(get_backend(name), "family", "") or name
    except ConvbenchError:
        return name


def heuristic_rank(spec: Any) -> Callable[[Any], float]:
    """rank(candidate): its backend's declared Backend.heuristic_rank for ``spec`` (inf when
    unknown)."""
    def rank(c: Any) -> float:
        try:
            from .registry import get_backend

            return float(get_backend(c.backend).heuristic_rank(spec, c.device))
        except Exception:  # noqa: BLE001 - a rank only orders; unknown goes last
            return math.inf
    return rank


def run_race(candidates: Sequence[Any], run_round: RunRound, cfg: RaceConfig, *, name: str,
             **kw: Any) -> list[tuple[Any, dict]]:
    """The race's steps in order; (candidate, outcome for its record) in the input order."""
    race = _Race(candidates, run_round, cfg, **kw)
    order = race.order()
    race.predict_hopeless()
    race.find_leader(order)
    if race.leader is not None:
        race.screen_all(order)
        finalists, again = race.classify()
        finalists += race.second_looks(again)
        race.finals(finalists)
    race.readmit()
    race.remember(name)
    return [(e.candidate, _record(e, race.cfg)) for e in race.entrants]


# ---- the recorded outcome --------------------------------------------------------------------
def _record(e: _Entrant, cfg: RaceConfig) -> dict:
    """The outcome recorded for one entrant: its final rounds, its failure, or its pruning,
    plus what every task added (calls, time) and the tasks themselves in info["race_rounds"]."""
    if e.final is not None:
        out = _noted(e.final, "finalist (re-admitted after being pruned)" if e.readmitted
                     else "finalist")
        if e.cut is not None:
            out["info"]["race"] += (f" (left the final rounds after {e.cut['after_rounds']}: "
                                    f"every round at least {cfg.cut_ratio:g}x the best's)")
            out["info"]["cut"] = e.cut
    elif e.end is not None:
        stage = e.outcomes[-1].get("_stage") if e.outcomes else None
        out = _noted(e.end, _FAILED.get(stage, "failed"))
    else:
        out = _pruned(e, cfg)
    if e.verified is not None:
        out["max_error"] = e.verified.get("max_error")
        out["tolerance"] = e.verified.get("tolerance")
        for k in ("verify_call_s", "verify_est_s"):
            v = (e.verified.get("info") or {}).get(k)
            if v is not None:
                out["info"].setdefault(k, v)
    if e.outcomes:
        for k in ("warmup_calls", "total_s", "wall_s"):
            vals = [o.get(k) for o in e.outcomes if o.get(k) is not None]
            out[k] = sum(vals) if vals else None
        out["start_time"] = e.outcomes[0].get("start_time") or out.get("start_time")
        out["end_time"] = e.outcomes[-1].get("end_time") or out.get("end_time")
        out["info"]["race_rounds"] = [_task_info(o) for o in e.outcomes]
    return {k: v for k, v in out.items() if not k.startswith("_")}


_FAILED = {"leader": "failed as the leader (verification and a short look)",
           "screen": "failed in its screening look", "second look": "failed in its second look",
           "verify": "failed verification after beating the leader",
           "final": "failed in the final rounds",
           "final (re-admitted)": "failed in the final rounds (re-admitted after being pruned)"}


def _noted(o: dict, note: str) -> dict:
    out = dict(o)
    out["info"] = dict(o.get("info") or {})
    out["info"]["race"] = note
    return out


def _pruned(e: _Entrant, cfg: RaceConfig) -> dict:
    """The record of an entrant the race stopped measuring (status pruned, timing fields
    null; the evidence in info["pruned"], every sample in info["race_rounds"])."""
    from .outcome import empty_outcome

    ev = dict(e.pruned or {})
    ev["verified"] = e.verified is not None
    out = empty_outcome(Status.PRUNED.value, _pruned_message(ev, cfg))
    out["info"] = {"race": f"pruned ({ev['how']})", "pruned": ev}
    if e.outcomes:
        out["algorithm"] = e.outcomes[-1].get("algorithm")
        out["info"].update({k: v for k, v in (e.outcomes[-1].get("info") or {}).items()
                            if k in ("threads", "worker_family", "versions")})
    return out


def _pruned_message(ev: dict, cfg: RaceConfig) -> str:
    checked = "verified" if ev["verified"] else "not verified"
    if ev["how"] == "predicted":
        near = "; ".join(f"{n['problem']} (distance {n['distance']:.2g}): {n['ratio']:.3g}x"
                         for n in ev["neighbours"])
        return (f"pruned by prediction, not run: on the {len(ev['neighbours'])} nearest problems "
                f"measured before it was at least {cfg.hopeless_ratio:g}x slower than the fastest "
                f"({near})")
    why = {"one look": f"one look at least {cfg.sure_ratio:g}x the leader's time",
           "one quiet look": f"a quiet timed look at least {cfg.prune_ratio:g}x the leader's time",
           "two looks": f"two looks over {cfg.final_ratio:g}x the leader's time"}[ev["how"]]
    return (f"pruned ({why}; {checked}): at least {ev['lower_bound_s']:.3g} s per call, "
            f"{ev['ratio']:.3g}x the leader {ev['leader']} ({ev['leader_median_s']:.3g} s)")


def _task_info(o: dict) -> dict:
    """One task of the race as info["race_rounds"] lists it (no sample is lost)."""
    out = {"round": o.get("_round"), "stage": o.get("_stage"), "budget_s": o.get("_budget_s"),
           "status": o.get("status"), "n_samples": o.get("n_samples"), "median_s": o.get("median_s"),
           "loops": o.get("loops"), "samples_s": o.get("samples_s"), "wall_s": o.get("wall_s")}
    screen = (o.get("info") or {}).get("screen")
    if screen:
        out["screen"] = screen
    return out


__all__ = ["RaceConfig", "RaceMemory", "memory_for", "run_race", "heuristic_rank", "NOISY"]
