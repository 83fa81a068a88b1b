"""Parse and plan a submitted script away from the web process, under a time limit.

Parsing is pure CPU: on the event loop a slow script stops every other request
(``/healthz`` included), and in a thread it cannot be stopped. So each submission is
planned in a child process forked from a fork server that has the parser and planner
imported already (a fork costs milliseconds, not an interpreter start), killed when the
limit passes. The plan made here is the one the render uses: the service plans a script
once.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

__all__ = ["PlanSummary", "PlanRefused", "plan_request"]

_CONTEXT = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
if os.name == "posix":
    _CONTEXT.set_forkserver_preload(["aiprod_post.planner", "aiprod_post.fountain",
                                     "aiprod_post.plan", "aiprod_post.checks"])
# at most this many plans at once: each is a process using a core
_SLOTS = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))


@dataclass(frozen=True)
class PlanSummary:
    plan_json: str
    shots: int
    seconds: float


class PlanRefused(Exception):
    """The script or plan cannot be accepted; the message is for the client."""


def _plan_in_child(conn, script: str | None, plan: dict | None, width: int, height: int,
                   fps: str | None, max_shots: int) -> None:
    from ..checks import plan_problems
    from ..errors import AiprodError
    from ..fountain import parse_bytes
    from ..plan import parse_frame_rate, plan_from_data, plan_to_json
    from ..planner import PlannerSettings, plan_script

    try:
        try:
            rate = parse_frame_rate(fps) if fps else None
        except ValueError as exc:
            raise AiprodError(str(exc), where="fps") from None
        if script is not None:
            data = script.encode()
            settings = PlannerSettings(width=width, height=height, fps=rate or Fraction(24))
            result, _ = plan_script(parse_bytes(data, source="script"), settings,
                                    source_sha256=hashlib.sha256(data).hexdigest(),
                                    max_shots=max_shots)  # stops planning at the limit
        else:
            result = plan_from_data(plan, source="plan")
            changes: dict[str, Any] = {"width": width, "height": height}
            if rate:
                changes["fps"] = rate
            result = result.model_copy(update=changes)
        problems = plan_problems(result)
        if problems:
            where, message = problems[0]
            raise AiprodError(message, source="script" if script is not None else "plan",
                              where=where)
        shots = len(result.shots())
        if shots > max_shots:
            raise AiprodError(f"{shots} shots; the limit is {max_shots}")
        conn.send(("ok", plan_to_json(result), shots, float(result.duration / result.fps)))
    except AiprodError as exc:
        conn.send(("refused", str(exc)))
    except RecursionError:
        conn.send(("refused", "the plan nests too deeply"))
    except Exception as exc:  # noqa: BLE001 - a planner fault is this request's, not the server's
        conn.send(("refused", f"the planner could not plan this request "
                              f"({type(exc).__name__}: {exc})"[:500]))
    finally:
        conn.close()


def plan_request(script: str | None, plan: dict | None, width: int, height: int,
                 fps: str | None, max_shots: int, seconds: float) -> PlanSummary:
    """Plan in a child process; PlanRefused with the reason, or when ``seconds`` pass.

    Blocking: call it from a worker thread (``asyncio.to_thread``), never the event loop.
    """
    with _SLOTS:
        receive, send = _CONTEXT.Pipe(duplex=False)
        child = _CONTEXT.Process(target=_plan_in_child, daemon=True,
                                 args=(send, script, plan, width, height, fps, max_shots))
        child.start()
        send.close()
        try:
            if not receive.poll(seconds):
                raise PlanRefused(f"planning took longer than the limit of {seconds:g} s; "
                                  "send a shorter or simpler script")
            try:
                answer = receive.recv()
            except EOFError:
                raise PlanRefused("the planner stopped without an answer (out of memory?)"
                                  ) from None
        finally:
            receive.close()
            if child.is_alive():
                child.kill()
            child.join()
    if answer[0] != "ok":
        raise PlanRefused(answer[1])
    return PlanSummary(answer[1], answer[2], answer[3])
