"""The local executor: every unit in this process, one after another, in the order given."""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Iterator, Sequence

from . import Placement, Unit, Work, check_order

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Runs units here, in order; a unit waits for the units before it, not only for
    those it needs, and its placement says so."""

    name = "local"
    in_process = True

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "address": None, "nodes": 1}

    def run(self, work: Work, units: Sequence[Unit], shared: Any = None
            ) -> Iterator[tuple[Unit, Any, Placement]]:
        check_order(units)
        host = socket.gethostname()
        t0 = time.time()
        results: dict[str, Any] = {}
        finished: dict[str, float] = {}
        for unit in units:
            ready = max([t0, *(finished[a] for a in unit.after)])
            start = time.time()
            result = work(unit.payload, {a: results[a] for a in unit.after}, shared)
            end = time.time()
            results[unit.id], finished[unit.id] = result, end
            yield unit, result, Placement(host, host, os.getpid(), round(start - ready, 3),
                                          round(end - start, 3))
