"""The HTTP API (FastAPI).

Renders run outside the web process (:mod:`.dispatcher`): each job is a render child
process, at most ``workers`` at a time, picked fairly across API tokens (the token whose
oldest queued job has waited longest, among those with the fewest jobs running). Progress
events stream back into the database. A restart loses nothing: queued jobs run, jobs that
were running are queued again and resume from the stage cache in their output folder.

The web process does no heavy work: a script is parsed and planned in a child process
under a time limit (:mod:`.planning`), uploads are streamed to disk within their byte limit
(:mod:`.bodies`) and decoded by the render's process (:mod:`.worker`). Routes live in
:mod:`.jobs`, :mod:`.artifacts`, :mod:`.operations` and :mod:`.retakes`; what they share
in :mod:`.deps`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from fastapi import FastAPI

from . import artifacts, estimates, jobs, operations, retakes
from .bodies import BodyLimit
from .db import connect
from .deps import Limits, Service
from .dispatcher import Dispatcher
from .jobs import JobRequest
from .webhooks import WebhookPolicy

__all__ = ["Limits", "JobRequest", "create_app", "Dispatcher"]


def create_app(data: str | Path, db_url: str | None = None, workers: int = 1,
               limits: Limits | None = None, start_dispatcher: bool = True,
               webhook_allow: tuple[str, ...] | list[str] = (),
               public_docs: bool = False, render_flags: tuple[str, ...] = ()) -> FastAPI:
    """The service over ``data`` (the jobs' folders; SQLite there unless ``db_url``).

    ``webhook_allow``: networks (CIDR) and host names webhooks may reach besides public
    addresses. ``public_docs``: serve ``/docs`` and ``/openapi.json`` without a token.
    ``render_flags``: added to every job's render command (``--executor ray --address …``).
    """
    data = Path(data).resolve()
    (data / "jobs").mkdir(parents=True, exist_ok=True)
    sessions = connect(db_url or f"sqlite:///{data / 'aiprod.db'}")
    policy = WebhookPolicy.from_options(list(webhook_allow))
    svc = Service(data, sessions, limits or Limits(), policy,
                  Dispatcher(sessions, data, workers, policy, render_flags), public_docs)
    svc.spool.mkdir(exist_ok=True)
    for left in svc.spool.glob("*.upload"):  # a killed server's half-received uploads
        if left.stat().st_mtime < time.time() - 3600:
            left.unlink(missing_ok=True)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        if start_dispatcher:
            await asyncio.to_thread(svc.dispatcher.start)  # may wait for orphans to stop
        yield
        svc.dispatcher.shutdown()

    app = FastAPI(title="aiprod-post", version="1", description=__doc__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = svc
    app.state.dispatcher, app.state.sessions = svc.dispatcher, sessions
    app.add_middleware(BodyLimit, limit_for=lambda kind: (
        svc.limits.multipart_bytes if kind.startswith("multipart/") else svc.limits.json_bytes))
    for module in (jobs, artifacts, operations, retakes, estimates):
        app.include_router(module.router)
    return app
