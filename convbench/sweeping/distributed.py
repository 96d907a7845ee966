"""Sweeps on a Dask cluster: ``convbench sweep SUITE --scheduler ADDRESS``.

Dask (``distributed``) does the distributing: its scheduler places tasks, re-runs the task of
a worker that died, holds the locks; this module only says what to run where.

* **Machines.** Every Dask worker names its machine (:func:`identify`, through
  ``client.run``): the machine type is the env_id of its fingerprint (CPU model and ISA,
  cores, threads, GPU), the host is its hostname. Each machine type is set up once by a task
  on one of its workers (:func:`setup_machine`): the selected backends described by that
  machine's own worker processes (a backend missing there is ``unavailable`` there) and its
  peak rates measured.
* **Placement.** One task per (problem, machine type) (:func:`measure_problem`), needing a
  Dask resource that :func:`adopt` gives the workers of that type; it measures the problem's
  candidates by the sweep's strategy with convbench's own per-family worker processes
  (:class:`~convbench.pool.WorkerPool`, one per Dask worker process), holding
  ``distributed.Lock("convbench-host-<hostname>")``, so two Dask workers on one host never
  time at once. ``--device cuda`` goes only to machines with a GPU (detected by nvidia-smi,
  or a ``GPU`` Dask resource); CPU problems to every machine. ``spread``: each problem once,
  on whichever machine is free (for identical machines; by default a type's problems are
  already spread over the identical machines of that type).
* **Records.** Each finished candidate goes to the client as a Dask event on the run's topic
  (``client.log_event``: it returns once the scheduler has it), then is marked done in the
  scheduler's metadata under the task's key. The client (:mod:`.cluster_run`) writes the one
  run directory as events arrive.
* **Faults.** When a Dask worker dies, the scheduler re-runs its task on another worker of
  the type (one that joins later, e.g. restarted by its nanny, is adopted by the client as
  it watches the cluster); the new attempt skips the candidates marked done, so only the
  measurement in flight is repeated (with interleaved rounds: the problem's unfinished
  candidates). The dead worker's lock lease expires after
  ``distributed.scheduler.locks.lease-timeout`` (30 s by default; 10 s for ``local:N``).
"""
from __future__ import annotations

import asyncio
import json
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from ..errors import ConvbenchError

#: ``--scheduler local:N``: a LocalCluster of N worker processes on this machine
LOCAL_PREFIX = "local:"
#: lock leases of a LocalCluster we start (the dead holder's lock frees within these)
LOCAL_LEASE = {"distributed.scheduler.locks.lease-timeout": "10s",
               "distributed.scheduler.locks.lease-validation-interval": "2s"}
LOCK_PREFIX = "convbench-host-"
_TIMEOUTS = (TimeoutError, asyncio.TimeoutError)
#: seconds between checks that every machine type with work left still has a worker
WATCH_S = 5.0


# ---- connecting ------------------------------------------------------------------------------
def connect(address: str) -> tuple[Any, Any]:
    """(Client, LocalCluster or None) for ``--scheduler ADDRESS``: ``local:N`` or an address
    such as ``tcp://host:8786``."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConvbenchError("--scheduler: Dask is not installed; pip install 'convbench[dask]'") from None
    text = str(address).strip()
    if text.startswith(LOCAL_PREFIX):
        n = text[len(LOCAL_PREFIX):]
        if not n.isdigit() or int(n) < 1:
            raise ConvbenchError(f"--scheduler: {address!r}: local:N needs a number of workers N >= 1")
        with dask.config.set(LOCAL_LEASE):
            cluster = LocalCluster(n_workers=int(n), threads_per_worker=1, processes=True,
                                   dashboard_address=":0")
        return Client(cluster), cluster
    if "://" not in text or not text.split("://", 1)[1]:
        raise ConvbenchError(f"--scheduler: {address!r} is not a scheduler address; use "
                             "tcp://HOST:PORT of a running `dask scheduler`, or local:N")
    try:
        return Client(text, timeout="30s"), None
    except (OSError, TimeoutError) as exc:
        raise ConvbenchError(f"--scheduler: cannot reach the Dask scheduler at {text}: {exc}") from None


# ---- on a Dask worker --------------------------------------------------------------------------
_POOLS: dict[int, Any] = {}
_POOLS_LOCK = threading.Lock()


def _pool(threads: int) -> Any:
    """This Dask worker process's WorkerPool for ``threads`` (kept between tasks)."""
    from ..pool import WorkerPool

    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = WorkerPool(threads)
        return _POOLS[threads]


def close_pools() -> None:
    """Stop this Dask worker process's convbench worker processes."""
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            pool.close()
        _POOLS.clear()


def identify(threads: Optional[int] = None, dask_worker: Any = None) -> dict[str, Any]:
    """This Dask worker's machine: its type (``machine``, the env_id), host, threads, GPU."""
    from distributed import get_worker

    from ..environment import available_cores, current_environment, env_id

    worker = dask_worker or get_worker()
    threads = threads or available_cores()
    env = current_environment(threads)
    resources = dict(getattr(worker.state, "total_resources", {}) or {})
    gpu = bool(env.get("gpu_name")) or float(resources.get("GPU", resources.get("gpu", 0))) > 0
    return {"machine": env_id(env), "hostname": env.get("hostname"), "threads": threads,
            "environment": env, "gpu": gpu}


def _host_lock(hostname: str) -> Any:
    from distributed import Lock

    return Lock(LOCK_PREFIX + str(hostname))


def setup_machine(threads: Optional[int], names: Sequence[str], device: str,
                  peak_budget_s: Optional[float]) -> dict[str, Any]:
    """A task: this machine's identity, the backends as its workers describe them, and (with
    ``peak_budget_s``) its measured peak rates; under the host lock."""
    from ..environment import measure_peak
    from .plan import describe_backends

    me = identify(threads)
    with _host_lock(me["hostname"]):
        plans = describe_backends(_pool(me["threads"]), names, device, lambda _: None)
        peak = measure_peak(me["threads"], peak_budget_s) if peak_budget_s else None
    me["backends"] = [{"name": bp.name, "target": bp.target, "available": bp.available,
                       "reason": bp.reason, "algorithms": list(bp.algorithms)} for bp in plans]
    me["peak"] = peak
    return me


def measure_problem(job: Mapping[str, Any]) -> dict[str, Any]:
    """A task: measure one problem's candidates on this machine, by the sweep's strategy,
    each finished candidate sent on ``job["topic"]``, then marked done at ``job["done_at"]``.
    Candidates an earlier attempt of this task finished are skipped."""
    from distributed import get_client

    from ..pool import Task
    from ..registry import Candidate
    from ..rounds import DEFAULT_ROUNDS, with_rounds
    from ..spec import ConvSpec
    from ..strategies import STRATEGIES

    me = identify(job["threads"])
    client = get_client()
    cands = {str(Candidate(c[0], c[2], c[3])): c for c in job["candidates"]}
    done: list[str] = []
    who = {k: me[k] for k in ("machine", "hostname", "threads", "environment")}

    def make_task(cand: Any, **overrides: Any) -> Task:
        c = cands[str(cand)]
        kw = dict(spec=job["spec"], backend=c[0], target=c[1], algorithm=c[2], device=c[3],
                  **job["settings"])
        kw.update(overrides)
        return Task(**kw)

    def emit(cand: Any, outcome: Mapping[str, Any]) -> dict:
        msg = {"job": job["key"], "candidate": str(cand), "outcome": _plain(outcome), **who}
        client.log_event(job["topic"], msg)  # returns once the scheduler has it
        done.append(str(cand))
        client.set_metadata(job["done_at"], list(done))
        return msg

    with _host_lock(me["hostname"]):
        done += client.get_metadata(job["done_at"], None) or []  # by an earlier attempt
        todo = [Candidate(c[0], c[2], c[3]) for name, c in cands.items() if name not in done]
        if todo:
            strategy = with_rounds(STRATEGIES[job["strategy"]], int(job.get("rounds", DEFAULT_ROUNDS)))
            pool = _pool(me["threads"])
            strategy(pool, job["problem"], ConvSpec.from_dict(job["spec"]), todo, make_task, emit)
            pool.settle()  # the next holder may be another process: let threads stop spinning
    return {"done": done, **who}


def _plain(outcome: Mapping[str, Any]) -> dict[str, Any]:
    """``outcome`` as plain JSON types (events must be msgpack-serialisable)."""
    from ..results import dumps

    return json.loads(dumps(dict(outcome)))


# ---- the client ----------------------------------------------------------------------------
@dataclass
class Machine:
    """One machine type of the cluster: its fingerprint, peaks, backends and workers."""

    id: str
    threads: int
    environment: dict
    gpu: bool
    workers: set = field(default_factory=set)      # addresses of its Dask workers
    hostnames: set = field(default_factory=set)
    peak: Optional[dict] = None
    backends: list = field(default_factory=list)   # setup_machine's descriptions

    def meta(self) -> dict[str, Any]:
        from ..environment import machine_description

        device = "cuda" if self.gpu else "cpu"
        return {"env_id": self.id, "hostnames": sorted(self.hostnames), "threads": self.threads,
                "gpu": self.gpu, "description": machine_description(self.environment, device),
                "environment": self.environment, "peak": self.peak}


def resource(machine: Optional[str], device: str) -> str:
    """The Dask resource a task for machine type ``machine`` needs (None: any machine that
    can take ``device`` problems). :func:`adopt` gives it to the workers that qualify."""
    return f"convbench-machine-{machine}" if machine else f"convbench-{device}"


async def _label(names: list[str], dask_worker: Any = None) -> None:
    await dask_worker.set_resources(**{n: 1 for n in names})


def adopt(client: Any, machines: dict[str, Machine], threads: Optional[int], device: str, *,
          workers: Optional[Sequence[str]] = None, new_types: bool = True) -> list[str]:
    """Identify Dask workers (default: all), add them to ``machines`` and give each that can
    take ``device`` problems the resources of its machine type (and of any machine). A worker
    of a type not in ``machines`` is only taken with ``new_types``. Returns the workers taken."""
    taken = []
    for addr, me in client.run(identify, threads, workers=workers).items():
        if (device == "cuda" and not me["gpu"]) or (me["machine"] not in machines and not new_types):
            continue
        m = machines.setdefault(me["machine"], Machine(me["machine"], me["threads"],
                                                       me["environment"], me["gpu"]))
        m.workers.add(addr)
        m.hostnames.add(me["hostname"])
        client.run(_label, [resource(m.id, device), resource(None, device)], workers=[addr])
        taken.append(addr)
    return taken


def discover(client: Any, threads: Optional[int], device: str) -> dict[str, Machine]:
    """The machine types of the cluster's workers that can take ``device`` problems."""
    try:
        client.wait_for_workers(1, timeout=60)
    except _TIMEOUTS:
        raise ConvbenchError("--scheduler: no Dask worker joined within 60 s; start some with "
                             "`dask worker ADDRESS`") from None
    machines: dict[str, Machine] = {}
    adopt(client, machines, threads, device)
    if not machines:
        raise ConvbenchError("--device cuda: no Dask worker has a GPU (none detected by nvidia-smi "
                             "and none declares the resource GPU); start one with "
                             "`dask worker ADDRESS --resources GPU=1` on a GPU machine")
    return machines


def setup(client: Any, machines: Mapping[str, Machine], threads: Optional[int],
          names: Sequence[str], device: str, peak: Optional[Mapping[str, Any]]) -> None:
    """Describe the backends and measure the peaks of every machine type, one task each."""
    from .options import PEAK_BUDGET_S

    futures = {mid: client.submit(setup_machine, threads, list(names), device,
                                  None if peak is not None else PEAK_BUDGET_S,
                                  resources={resource(mid, device): 1}, pure=False,
                                  key=f"convbench-setup-{mid}-{secrets.token_hex(4)}")
               for mid in machines}
    for mid, fut in futures.items():
        res = fut.result()
        m = machines[mid]
        m.backends = res["backends"]
        m.peak = dict(peak) if peak is not None else res["peak"]


def backend_plans(m: Machine, note: Callable[[str], None]) -> list[Any]:
    """Machine ``m``'s described backends as BackendPlans (support is then checked here)."""
    from ..registry import Support, get_backend
    from .plan import BackendPlan

    plans = []
    for d in m.backends:
        try:
            backend = get_backend(d["name"])
        except ConvbenchError as exc:
            note(f"{d['name']}: cannot be loaded on this client ({exc}); skipped")
            continue
        backend.assume_available(Support(bool(d["available"]), d["reason"] or ""))
        plans.append(BackendPlan(d["name"], d["target"], bool(d["available"]), d["reason"],
                                 list(d["algorithms"]), backend))
    return plans



def machines_meta(machines: Mapping[str, Machine]) -> dict[str, dict]:
    """meta.json's ``machines``: each machine type's fingerprint, peaks and hosts."""
    return {mid: m.meta() for mid, m in sorted(machines.items())}


def machine_run_meta(meta: Mapping[str, Any], machine: str) -> dict[str, Any]:
    """The run's meta as if machine ``machine`` had been its only one (for the tuned cache)."""
    m = (meta.get("machines") or {}).get(machine) or {}
    return {**meta, "environment": m.get("environment") or meta.get("environment"),
            "env_id": machine, "peak": m.get("peak"), "threads": m.get("threads") or meta.get("threads")}


__all__ = ["connect", "close_pools", "identify", "setup_machine", "measure_problem", "resource",
           "adopt", "discover", "setup",
           "backend_plans", "Machine", "machines_meta", "machine_run_meta", "LOCAL_PREFIX",
           "LOCK_PREFIX", "WATCH_S"]
