"""Executors: where the units of a render's work run.

A render hands an executor its units (for now the shots of the generation stage), each
naming the units whose results it needs, and one function that does a unit's work.
The executor runs every unit once the units it needs are done, and yields each result
with where and when it ran:

- ``local`` (the default): in this process, one unit after another, in the order given.
- ``ray``: as tasks on a Ray cluster (``aiprod_post.executors.ray``), every unit whose
  units are done at once, as far as the cluster's CPUs and GPUs allow; a worker or node
  that dies mid-unit has its unit run again elsewhere (bounded retries). Units with an
  ``actor`` key run in long-lived actors of that key instead (one per GPU at most; a GPU
  engine's model stays loaded between shots and renders). Leaving a run early (an error,
  Ctrl-C) cancels its units still queued or running on the cluster.

Work functions write their files into the render's content-addressed cache, which every
worker reaches (a shared folder), and return small values (paths, digests): results do
not carry pictures.

>>> with executor_for("local") as ex:
...     done = {u.id: r for u, r, _ in ex.run(lambda p, deps, shared: p + sum(deps.values()),
...                                           [Unit("a", 1), Unit("b", 2, after=("a",))])}
>>> done
{'a': 1, 'b': 3}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

from aiprod_post.errors import AiprodError

__all__ = ["Unit", "Placement", "Lost", "Executor", "Work", "EXECUTORS", "executor_for",
           "check_order"]

#: ``work(payload, results of the units it needs by id, shared) -> result``
Work = Callable[[Any, dict[str, Any], Any], Any]


@dataclass(frozen=True)
class Unit:
    """One unit of work: its id, what its work function is given, the ids of the units
    whose results it needs, and what it occupies while it runs."""

    id: str
    payload: Any
    after: tuple[str, ...] = ()
    cpus: float = 1.0
    gpus: float = 0.0
    #: bytes of memory it holds (a model's weights), reserved on the node that runs it
    memory: int = 0
    #: units with the same key run in long-lived processes that outlive the render (on
    #: Ray: named actors, found again by later renders on the cluster), so what the
    #: work function keeps in its process (an engine's loaded model) is kept between
    #: units, films and renders; None: any worker. Callers key it by what that process
    #: holds (an engine's name and settings).
    actor: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where and when a unit ran.

    ``waited`` is the time from when it could have started (every unit it needs done)
    to when it started: queued behind other units for a CPU or GPU. Times are from the
    clock of the machine that ran it (``time.time()``).
    """

    node: str  # the executor's name for the machine (a Ray node id, or the host name)
    host: str  # its address or host name
    worker: int  # the process id that ran it
    waited: float
    seconds: float


@dataclass(frozen=True)
class Lost:
    """The result of a unit whose every try died with its worker or node: the work
    function never returned. Units that need it still run, without its result."""

    reason: str


class Executor(Protocol):
    name: str
    #: True when work runs in this process (a work function may then report progress)
    in_process: bool

    def __enter__(self) -> "Executor":
        ...

    def __exit__(self, *exc: object) -> None:
        ...

    def describe(self) -> dict[str, Any]:
        """What the report says about it: name, address, nodes."""
        ...

    def run(self, work: Work, units: Sequence[Unit], shared: Any = None
            ) -> Iterator[tuple[Unit, Any, Placement]]:
        """Run every unit; yield ``(unit, result, placement)`` as each finishes. A result
        is what ``work`` returned, or :class:`Lost`. An exception ``work`` raises stops
        the run (units still running are cancelled) and is raised here as it was."""
        ...


def check_order(units: Sequence[Unit]) -> None:
    """Units must come after the units they need (the plan's order does this)."""
    seen: set[str] = set()
    for u in units:
        missing = [a for a in u.after if a not in seen]
        if missing:
            raise ValueError(f"unit {u.id} needs {', '.join(missing)}, not given before it")
        if u.id in seen:
            raise ValueError(f"unit {u.id} given twice")
        seen.add(u.id)


def _local(address: str | None, retries: int) -> Executor:
    from .local import LocalExecutor

    if address:
        raise AiprodError("the local executor runs on this machine: an address is for "
                          "--executor ray", where="--address")
    return LocalExecutor()


def _ray(address: str | None, retries: int) -> Executor:
    from .ray import RayExecutor

    return RayExecutor(address, retries=retries)


EXECUTORS: dict[str, Callable[[str | None, int], Executor]] = {"local": _local, "ray": _ray}


def executor_for(name: str, address: str | None = None, retries: int = 2) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``); ``address`` is the Ray
    cluster's (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``; none: a Ray started on
    this machine for the render); ``retries`` bounds how often a unit whose worker died
    is run again."""
    if name not in EXECUTORS:
        raise AiprodError(f"unknown executor {name!r}: expected one of "
                          f"{', '.join(EXECUTORS)}", where="--executor")
    return EXECUTORS[name](address, retries)
