"""The Ray executor: units as tasks on a Ray cluster.

The driver (the process that renders) keeps the graph: a unit is submitted as a task
as soon as the units it needs are done, with their results (small values) as its
input, so Ray sees only ready work and a unit's ``waited`` is its time in Ray's queue
for a CPU or GPU. A task whose worker process or node dies is run again elsewhere, at
most ``retries`` more times (Ray's task retries); an exception the work function raises
is the work's answer and is not retried here (the work function has its own policy).
Leaving the run early (an error, Ctrl-C) cancels the tasks still queued or running.

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

__all__ = ["RayExecutor", "check_reachable"]


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
        from ray.exceptions import RayError, RayTaskError

        check_order(units)
        task = ray.remote(_run_unit)
        work_ref = ray.put(work)
        shared_ref = ray.put(shared)  # sent to the object store once, not with every task
        waiting = list(units)
        results: dict[str, Any] = {}
        running: dict[Any, Unit] = {}

        def submit_ready() -> None:
            for unit in [u for u in waiting if all(a in results for a in u.after)]:
                waiting.remove(unit)
                ref = task.options(num_cpus=unit.cpus, num_gpus=unit.gpus,
                                   max_retries=self.retries, retry_exceptions=False,
                                   name=f"unit {unit.id}").remote(
                    work_ref, unit.payload, {a: results[a] for a in unit.after}, shared_ref,
                    time.time())
                running[ref] = unit

        try:
            submit_ready()
            while running:
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    unit = running.pop(ref)
                    try:
                        result, placement = ray.get(ref)
                    except RayTaskError as exc:
                        # the work function's own exception, as it raised it
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, BaseException):
                            raise cause from None
                        raise
                    except RayError as exc:  # its worker or node died on every try
                        result = Lost(f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
                        placement = Placement("", "", 0, 0.0, 0.0)
                    results[unit.id] = result
                    yield unit, result, placement
                submit_ready()
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
