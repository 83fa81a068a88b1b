"""The Ray executor: units as tasks on a Ray cluster.

The driver (the process that renders) keeps the graph: a unit is submitted as a task
as soon as the units it needs are done, with their results (small values) as its
input, so Ray sees only ready work and a unit's ``waited`` is its time in Ray's queue
for a CPU or GPU. A task whose worker process or node dies is run again elsewhere, at
most ``retries`` more times (Ray's task retries); an exception the work function raises
is the work's answer and is not retried here (the work function has its own policy).
Leaving the run early (an error, Ctrl-C, the service's DELETE) cancels its tasks still
queued or running, and waits (a few seconds at most) until Ray has ended them, so a
cancelled render leaves nothing of its own running on the cluster.

Units with an ``actor`` key run in long-lived actors of that key instead of tasks: named,
detached actors in the ``aiprod-post`` namespace (``KEY #N``), as many as the cluster's
GPUs (CPUs, for units without a GPU) can run such units at once, each made by the first
render that needs it and found by name by every later render on the cluster. An actor
holds its GPUs but no CPU, even while it runs a unit: it would hold it idle too, and
the render's own tasks (its lines to voice) would wait for it until the idle timeout. What the work function keeps in its process (a GPU engine's
loaded model) stays there between shots, films and renders. An actor runs its units one
at a time; a unit goes to an actor with nothing of its render's to do, else to a new one
while there is room, else to the least busy. An actor that dies (its process or node) is
made again for the units it was running, at most ``retries`` more times per unit; an
actor no render has used for ``AIPROD_ACTOR_IDLE_S`` seconds (900) ends itself, giving
its GPU back. Cancelling a unit an actor is running ends that actor (an actor's running
method cannot be interrupted): the next render makes it again.

Every node must have aiprod-post installed (``pip install 'aiprod-post[ray]'``), and
reach the render's cache, output and project folders at the same paths (a shared folder).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

from aiprod_post.errors import AiprodError

from . import Lost, Placement, Unit, Work, check_order

__all__ = ["RayExecutor", "check_reachable", "NAMESPACE", "actor_name"]

#: the Ray namespace of the actors units run in (``ray.get_actor(name, namespace=...)``)
NAMESPACE = "aiprod-post"
#: seconds a cancelled render waits for Ray to end its tasks
_CANCEL_WAIT = 10.0


def _run_unit(work: Work, payload: Any, deps: dict[str, Any], shared: Any, ready_at: float
              ) -> tuple[Any, Placement]:
    """A unit on a Ray worker: its result and where and when it ran."""
    import ray

    start = time.time()
    result = work(payload, deps, shared)
    end = time.time()
    ctx = ray.get_runtime_context()
    return result, Placement(ctx.get_node_id(), ray.util.get_node_ip_address(), os.getpid(),
                             round(max(0.0, start - ready_at), 3), round(end - start, 3))


def actor_name(key: str) -> str:
    """The name of the actor that runs the units keyed ``key``."""
    return f"unit actor {key}"


class _UnitActor:
    """A long-lived process that runs the units of one actor key, one at a time; it ends
    itself after ``idle`` seconds without a unit."""

    def __init__(self, idle: float) -> None:
        import threading

        self.idle, self.busy, self.last = idle, False, time.monotonic()
        threading.Thread(target=self._end_when_idle, daemon=True).start()

    def _end_when_idle(self) -> None:
        import ray

        while True:
            time.sleep(min(self.idle, 5.0))
            if not self.busy and time.monotonic() - self.last > self.idle:
                # for good: a render that still holds its handle makes it again
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return

    def run(self, work: Work, payload: Any, deps: dict[str, Any], shared: Any,
            ready_at: float) -> tuple[Any, Placement]:
        self.busy = True
        try:
            return _run_unit(work, payload, deps, shared, ready_at)
        finally:
            self.busy, self.last = False, time.monotonic()


def check_reachable(address: str, where: str = "--address") -> None:
    """Fail in seconds, naming the address, where Ray would retry for a minute."""
    if address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise AiprodError(f"{address!r} is not a Ray address: expected auto, HOST:PORT or "
                          "ray://HOST:PORT", where=where)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise AiprodError(f"cannot reach the Ray cluster at {address}: "
                          f"{exc.strerror or exc}", where=where) from None


class RayExecutor:
    """Units as Ray tasks on the cluster at ``address`` (``auto``: the one started on
    this machine with ``ray start``; ``HOST:PORT`` its head; ``ray://HOST:PORT`` through
    Ray Client; None: ``RAY_ADDRESS`` where it is set, as Ray's own tools read it, else a Ray
    started here for this render, stopped after it)."""

    name = "ray"
    in_process = False

    def __init__(self, address: str | None = None, retries: int = 2) -> None:
        #: where the address came from, for the error that names it
        self.named_by = "--address" if address else "RAY_ADDRESS"
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.retries = retries
        self._connected_here = False

    def __enter__(self) -> "RayExecutor":
        try:
            import ray
        except ImportError:
            raise AiprodError("the ray executor needs Ray: pip install 'aiprod-post[ray]'",
                              where="--executor") from None
        if ray.is_initialized():  # a caller (a batch, a service, a test) connected already
            return self
        if self.address is not None:
            check_reachable(self.address, self.named_by)
        try:
            if self.address is None:
                ray.init(include_dashboard=False, log_to_driver=False,
                         logging_level="WARNING")
            else:
                ray.init(address=self.address, log_to_driver=False, logging_level="WARNING")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise AiprodError(f"cannot connect to the Ray cluster at "
                              f"{self.address or 'a new local Ray'}: {exc}",
                              where=self.named_by) from None
        self._connected_here = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._connected_here:
            import ray

            ray.shutdown()
            self._connected_here = False

    def cluster_address(self) -> str:
        """An address other processes of this machine reach the same cluster at."""
        import ray

        if self.address and self.address.startswith("ray://"):
            return self.address
        return ray.get_runtime_context().gcs_address

    def describe(self) -> dict[str, Any]:
        import ray

        alive = [n for n in ray.nodes() if n.get("Alive")]
        return {"name": self.name, "address": self.address, "nodes": len(alive),
                "cpus": ray.cluster_resources().get("CPU", 0),
                "gpus": ray.cluster_resources().get("GPU", 0), "retries": self.retries}

    def run(self, work: Work, units: Sequence[Unit], shared: Any = None
            ) -> Iterator[tuple[Unit, Any, Placement]]:
        import ray
        from ray.exceptions import RayActorError, RayError, RayTaskError

        check_order(units)
        task = ray.remote(_run_unit)
        work_ref = ray.put(work)
        shared_ref = ray.put(shared)  # sent to the object store once, not with every task
        waiting = list(units)
        results: dict[str, Any] = {}
        running: dict[Any, Unit] = {}
        on_actor: dict[Any, Any] = {}  # a unit's ref -> the actor running it
        actors = _Actors()
        tries: dict[str, int] = {}

        def submit(unit: Unit, dead: Any = None) -> None:
            deps = {a: results[a] for a in unit.after}
            if unit.actor is None:
                ref = task.options(num_cpus=unit.cpus, num_gpus=unit.gpus,
                                   **({"memory": unit.memory} if unit.memory else {}),
                                   max_retries=self.retries, retry_exceptions=False,
                                   name=f"unit {unit.id}").remote(
                    work_ref, unit.payload, deps, shared_ref, time.time())
            else:
                actor = actors.pick(unit, dead)
                ref = actor.run.options(name=f"unit {unit.id}").remote(
                    work_ref, unit.payload, deps, shared_ref, time.time())
                on_actor[ref] = actor
            running[ref] = unit

        def submit_ready() -> None:
            for unit in [u for u in waiting if all(a in results for a in u.after)]:
                waiting.remove(unit)
                submit(unit)

        _wait_for_room(units)
        try:
            submit_ready()
            while running:
                # a timeout, so that Ctrl-C is seen while waiting
                done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                for ref in done:
                    unit = running.pop(ref)
                    actor = on_actor.pop(ref, None)
                    if actor is not None:
                        actors.done(actor)
                    try:
                        result, placement = ray.get(ref)
                    except RayTaskError as exc:
                        # the work function's own exception, as it raised it
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, BaseException):
                            raise cause from None
                        raise
                    except RayActorError as exc:  # its actor died (its process or node)
                        if tries.get(unit.id, 0) < self.retries:  # its actor made again
                            tries[unit.id] = tries.get(unit.id, 0) + 1
                            submit(unit, dead=actor)
                            continue
                        result, placement = _lost(exc)
                    except RayError as exc:  # its worker or node died on every try
                        result, placement = _lost(exc)
                    results[unit.id] = result
                    yield unit, result, placement
                submit_ready()
        finally:
            if running:
                _cancel(running, on_actor)


class _Actors:
    """A run's actors, by key: as many per key as the cluster's GPUs (CPUs, for units
    without a GPU) run such units at once, each named ``KEY #N`` and found by that name
    on the cluster, else made. A unit goes to one with none of the run's units to do,
    else to a new one while there is room, else to the least busy."""

    def __init__(self) -> None:
        self.pools: dict[str, dict[int, Any]] = {}
        self.room: dict[str, int] = {}
        self.load: dict[Any, int] = {}  # actor id -> the run's units it has to do
        self.idle = float(os.environ.get("AIPROD_ACTOR_IDLE_S", "900"))

    def pick(self, unit: Unit, dead: Any = None) -> Any:
        import ray

        key = unit.actor
        assert key is not None
        pool = self.pools.setdefault(key, {})
        if dead is not None:  # made again under its name
            for n in [n for n, a in pool.items() if a._actor_id == dead._actor_id]:
                del pool[n]
        if key not in self.room:
            have = ray.cluster_resources()
            self.room[key] = max(1, int(have.get("GPU", 0) // unit.gpus) if unit.gpus
                                 else int(have.get("CPU", 0) // unit.cpus) if unit.cpus
                                 else 1)
        free = [a for a in pool.values() if not self.load.get(a._actor_id)]
        if free:
            actor = free[0]
        elif len(pool) < self.room[key]:
            n = min(set(range(len(pool) + 1)) - set(pool))
            actor = pool[n] = self._find_or_make(unit, f"{key} #{n}", dead)
        else:
            actor = min(pool.values(), key=lambda a: self.load.get(a._actor_id, 0))
        self.load[actor._actor_id] = self.load.get(actor._actor_id, 0) + 1
        return actor

    def done(self, actor: Any) -> None:
        self.load[actor._actor_id] -= 1

    def _find_or_make(self, unit: Unit, key: str, dead: Any) -> Any:
        import ray

        cls = ray.remote(_UnitActor)
        # an actor holds its GPUs, not a CPU: an idle one must not keep the cluster's
        # tasks (the lines to voice, other renders' shots) waiting until its idle timeout.
        # Without a GPU, Ray's default for actors: a CPU to be placed, none held.
        holds: dict[str, Any] = {"num_gpus": unit.gpus, "num_cpus": 0} if unit.gpus else {}
        if unit.memory:  # its model, loaded for as long as it lives
            holds["memory"] = unit.memory
        deadline = time.monotonic() + 30
        while True:
            actor = cls.options(
                name=actor_name(key), namespace=NAMESPACE, lifetime="detached",
                get_if_exists=True, max_restarts=0, max_concurrency=1,
                **holds).remote(self.idle)
            # the name of an actor that has just died is free once Ray has seen it die
            if dead is None or actor._actor_id != dead._actor_id \
                    or time.monotonic() > deadline:
                return actor
            time.sleep(0.2)


def _needs(unit: Unit) -> dict[str, float]:
    """What a unit takes of one node: an actor's unit its GPUs and memory (an actor holds
    no CPU), a task its CPUs too."""
    need = {"GPU": unit.gpus, "memory": float(unit.memory)}
    if unit.actor is None or not unit.gpus:
        need["CPU"] = unit.cpus
    return {k: v for k, v in need.items() if v}


def _wait_for_room(units: Sequence[Unit]) -> None:
    """Every kind of unit must fit on some node of the cluster, or Ray would keep it queued
    for ever: wait ``AIPROD_RAY_NODE_WAIT_S`` seconds (120) for such a node to join (an
    autoscaling cluster starting one), then fail naming what is missing."""
    import ray

    kinds = {tuple(sorted(_needs(u).items())): u for u in units}
    deadline = time.monotonic() + float(os.environ.get("AIPROD_RAY_NODE_WAIT_S", "120"))
    while True:
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        missing = [(need, u) for need, u in kinds.items()
                   if not any(all(r.get(k, 0) >= v for k, v in need) for r in nodes)]
        if not missing:
            return
        if time.monotonic() > deadline:
            need, unit = missing[0]
            largest = {k: max((r.get(k, 0) for r in nodes), default=0) for k, _ in need}
            raise AiprodError(
                f"no node of the Ray cluster can run unit {unit.id}: it needs "
                f"{_amounts(dict(need))}, the most any node has is {_amounts(largest)}",
                where="--executor")
        time.sleep(1.0)


def _amounts(resources: dict[str, float]) -> str:
    return ", ".join(f"{v / 2 ** 30:.1f} GiB of memory" if k == "memory" else f"{v:g} {k}"
                     for k, v in resources.items())


def _lost(exc: BaseException) -> tuple[Lost, Placement]:
    return (Lost(f"{type(exc).__name__}: {exc}".splitlines()[0][:300]),
            Placement("", "", 0, 0.0, 0.0))


def _cancel(running: dict[Any, Unit], on_actor: dict[Any, Any]) -> None:
    """Cancel a run's units still queued or running, and wait until Ray has ended them.

    A task is cancelled by force (its worker process ends). An actor's running method
    cannot be interrupted: a unit an actor is still running once the queued ones are
    cancelled ends its actor (the next render makes it again)."""
    import ray

    refs = list(running)
    for ref in refs:
        try:
            ray.cancel(ref, force=ref not in on_actor)
        except Exception:  # noqa: BLE001 - finished meanwhile, or its actor gone
            pass
    acting = [r for r in refs if r in on_actor]
    if acting:
        _, still = ray.wait(acting, num_returns=len(acting), timeout=1.0)
        for actor in {id(on_actor[r]): on_actor[r] for r in still}.values():
            ray.kill(actor, no_restart=True)
    ray.wait(refs, num_returns=len(refs), timeout=_CANCEL_WAIT)
