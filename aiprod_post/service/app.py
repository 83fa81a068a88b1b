"""The HTTP API (FastAPI).

Renders run outside the web process (:mod:`.dispatcher`): each job is a render child
process, at most ``workers`` at a time, picked fairly across API tokens (the token whose
oldest queued job has waited longest, among those with the fewest jobs running). Progress
events stream back into the database. A restart loses nothing: queued jobs run, jobs that
were running are queued again and resume from the stage cache in their output folder.

The web process does no heavy work: a script is parsed and planned in a child process
under a time limit (:mod:`.planning`), uploads are streamed to disk within their byte limit
(:mod:`.bodies`) and decoded by the render's process (:mod:`.worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import IntegrityError

from ..project import DELIVERY_PROFILES
from .bodies import (BodyLimit, FormRefused, UploadedFile, parse_json_object,
                     read_multipart)
from .db import Job, Token, connect, token_by_secret
from .dispatcher import Dispatcher
from .planning import PlanRefused, plan_request
from .webhooks import WebhookPolicy, check_callback_url

__all__ = ["Limits", "create_app", "Dispatcher"]


class Limits(BaseModel):
    script_bytes: int = 1_000_000
    upload_bytes: int = 200_000_000
    max_width: int = 3840
    max_height: int = 2160
    max_seconds: float = 3600.0
    max_shots: int = 2000
    #: seconds a submission may spend being parsed and planned
    plan_seconds: float = 20.0

    @property
    def json_bytes(self) -> int:
        return self.script_bytes + 1_000_000

    @property
    def multipart_bytes(self) -> int:
        return self.upload_bytes + self.script_bytes + 1_000_000


class JobRequest(BaseModel):
    """What a client submits: a screenplay (Fountain text) or a shot plan, and settings."""

    model_config = {"extra": "forbid"}
    script: str | None = Field(None, description="Fountain text")
    plan: dict | None = Field(None, description="a ShotPlan JSON object")
    profiles: list[str] = Field(default_factory=lambda: ["web", "master"])
    width: int | None = Field(None, strict=True)
    height: int | None = Field(None, strict=True)
    fps: str | int | None = Field(None, description='24, "25" or "24000/1001"')
    engine: str = "animatic"
    callback_url: str | None = None


def _bad(message: str) -> HTTPException:
    return HTTPException(status_code=400, detail=message)


def _job_view(job: Job, request: Request) -> dict[str, Any]:
    return {
        "id": job.id, "state": job.state, "stage": job.stage, "progress": job.progress or {},
        "created": job.created.isoformat() + "Z",
        "started": job.started.isoformat() + "Z" if job.started else None,
        "finished": job.finished.isoformat() + "Z" if job.finished else None,
        "timings": job.timings or {}, "error": job.error, "webhook": job.webhook_state,
        "status_url": str(request.url_for("get_job", job_id=job.id)),
        "artifacts_url": str(request.url_for("list_artifacts", job_id=job.id)),
    }




class _Submission:
    """A parsed request: its fields, and an uploaded music file spooled to disk."""

    def __init__(self, body: dict, music: UploadedFile | None = None) -> None:
        self.body, self.music = body, music

    def close(self) -> None:
        """Remove the spooled upload unless a job has taken it."""
        if self.music is not None and self.music.path is not None:
            self.music.path.unlink(missing_ok=True)


def create_app(data: str | Path, db_url: str | None = None, workers: int = 1,
               limits: Limits | None = None, start_dispatcher: bool = True,
               webhook_allow: tuple[str, ...] | list[str] = (),
               public_docs: bool = False) -> FastAPI:
    """The service over ``data`` (the jobs' folders; SQLite there unless ``db_url``).

    ``webhook_allow``: networks (CIDR) and host names webhooks may reach besides public
    addresses. ``public_docs``: serve ``/docs`` and ``/openapi.json`` without a token.
    """
    data = Path(data).resolve()
    (data / "jobs").mkdir(parents=True, exist_ok=True)
    spool = data / "uploads"  # uploads arrive here, then move into their job's folder
    spool.mkdir(exist_ok=True)
    for left in spool.glob("*.upload"):  # a killed server's half-received uploads
        if left.stat().st_mtime < time.time() - 3600:
            left.unlink(missing_ok=True)
    sessions = connect(db_url or f"sqlite:///{data / 'aiprod.db'}")
    limits = limits or Limits()
    policy = WebhookPolicy.from_options(list(webhook_allow))
    dispatcher = Dispatcher(sessions, data, workers, policy)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        if start_dispatcher:
            await asyncio.to_thread(dispatcher.start)  # may wait for orphans to stop
        yield
        dispatcher.shutdown()

    app = FastAPI(title="aiprod-post", version="1", description=__doc__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.dispatcher = dispatcher
    app.state.sessions = sessions
    app.add_middleware(BodyLimit, limit_for=lambda kind: (
        limits.multipart_bytes if kind.startswith("multipart/") else limits.json_bytes))

    def token(authorization: str | None = Header(None)) -> Token:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise HTTPException(401, "a bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        with sessions() as s:
            tok = token_by_secret(s, authorization[7:].strip())
        if tok is None:
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        return tok

    def own_job(job_id: str, tok: Token) -> Job:
        with sessions() as s:
            job = s.get(Job, job_id)
        if job is None or job.token_id != tok.id:
            raise HTTPException(404, f"no job {job_id}")
        return job

    docs_auth = [] if public_docs else [Depends(token)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=docs_auth)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=docs_auth)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="aiprod-post")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.post("/v1/jobs", status_code=202)
    async def submit(request: Request, tok: Token = Depends(token),
                     idempotency_key: str | None = Header(None)) -> JSONResponse:
        if idempotency_key is not None and not 0 < len(idempotency_key) <= 200:
            raise _bad("Idempotency-Key: expected 1 to 200 characters")
        sub = await _read_submission(request, limits, spool)
        try:
            return await _submit(request, tok, idempotency_key, sub)
        finally:
            sub.close()

    async def _submit(request: Request, tok: Token, key: str | None,
                      sub: _Submission) -> JSONResponse:
        try:
            req = JobRequest.model_validate(sub.body)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise _bad(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: "
                       f"{err['msg']}") from None
        _check(req, limits)
        if req.callback_url is not None:
            try:  # resolving the host may take a while: not on the event loop
                await asyncio.to_thread(check_callback_url, req.callback_url, policy)
            except ValueError as exc:
                raise _bad(str(exc)) from None
        digest = hashlib.sha256(json.dumps(req.model_dump(), sort_keys=True).encode())
        if sub.music is not None:
            digest.update(sub.music.sha256.encode())
        request_sha256 = digest.hexdigest()
        if key is not None:
            prior = _prior(tok, key, request_sha256)
            if prior is not None:
                return JSONResponse(_job_view(prior, request), status_code=202)
        try:
            summary = await asyncio.to_thread(
                plan_request, req.script, req.plan, req.width or 1920, req.height or 1080,
                None if req.fps is None else str(req.fps), limits.max_shots, limits.plan_seconds)
        except PlanRefused as exc:
            raise _bad(str(exc)) from None
        if summary.seconds > limits.max_seconds:
            raise _bad(f"{summary.seconds:.0f} s of film; the limit is "
                       f"{limits.max_seconds:.0f} s")
        job_id = str(uuid.uuid4())
        folder = data / "jobs" / job_id
        folder.mkdir(parents=True)
        try:
            await asyncio.to_thread(_write_job_files, folder, req, summary.plan_json, sub)
            with sessions.begin() as s:
                job = Job(id=job_id, token_id=tok.id, state="queued",
                          request=req.model_dump(exclude={"script", "plan"}),
                          idempotency_key=key, request_sha256=request_sha256,
                          callback_url=req.callback_url, progress={}, timings={})
                s.add(job)
        except IntegrityError:  # a concurrent request with this key made the job first
            shutil.rmtree(folder, ignore_errors=True)
            prior = _prior(tok, key or "", request_sha256)
            if prior is None:
                raise
            return JSONResponse(_job_view(prior, request), status_code=202)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return JSONResponse(_job_view(job, request), status_code=202)

    def _prior(tok: Token, key: str, request_sha256: str) -> Job | None:
        with sessions() as s:
            prior = s.query(Job).filter_by(token_id=tok.id, idempotency_key=key).first()
        if prior is not None and prior.request_sha256 != request_sha256:
            raise HTTPException(409, "Idempotency-Key was used before with a different "
                                     "request; use a new key for a new job")
        return prior

    @app.get("/v1/jobs/{job_id}", name="get_job")
    def get_job(job_id: str, request: Request, tok: Token = Depends(token)) -> dict:
        return _job_view(own_job(job_id, tok), request)

    @app.delete("/v1/jobs/{job_id}")
    def cancel(job_id: str, request: Request, tok: Token = Depends(token)) -> dict:
        own_job(job_id, tok)
        dispatcher.cancel(job_id)  # compare-and-set: a job that has ended stays as it ended
        return _job_view(own_job(job_id, tok), request)

    def out_dir(job_id: str) -> Path:
        return data / "jobs" / job_id / "out"

    @app.get("/v1/jobs/{job_id}/artifacts", name="list_artifacts")
    def list_artifacts(job_id: str, request: Request, tok: Token = Depends(token)) -> dict:
        own_job(job_id, tok)
        files = []
        for rel, size in _artifacts(out_dir(job_id)):
            files.append({"name": rel, "bytes": size,
                          "url": str(request.url_for("get_artifact", job_id=job_id, name=rel))})
        return {"id": job_id, "artifacts": files}

    @app.get("/v1/jobs/{job_id}/artifacts/{name:path}", name="get_artifact")
    def get_artifact(job_id: str, name: str, tok: Token = Depends(token)) -> FileResponse:
        own_job(job_id, tok)
        target = _artifact(out_dir(job_id), name)
        if target is None:
            raise HTTPException(404, f"no artifact {name!r}")
        return FileResponse(target)  # answers Range requests

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics(tok: Token = Depends(token)) -> str:
        """Operator-wide figures: counts over every token's jobs (no ids, no names)."""
        from sqlalchemy import func

        lines = ["# HELP aiprod_jobs Jobs by state, all tokens.", "# TYPE aiprod_jobs gauge"]
        with sessions() as s:
            counts = dict(s.query(Job.state, func.count()).group_by(Job.state).all())
            timings = [t for (t,) in s.query(Job.timings)]
            done = s.query(func.sum(Job.render_seconds), func.sum(Job.output_seconds)).filter(
                Job.render_seconds.is_not(None), Job.output_seconds.is_not(None)).one()
        for state in ("queued", "running", "succeeded", "failed", "cancelled"):
            lines.append(f'aiprod_jobs{{state="{state}"}} {counts.get(state, 0)}')
        lines += ["# HELP aiprod_queue_depth Jobs waiting for a worker.",
                  "# TYPE aiprod_queue_depth gauge",
                  f"aiprod_queue_depth {counts.get('queued', 0)}",
                  "# HELP aiprod_stage_seconds_total Seconds spent per stage.",
                  "# TYPE aiprod_stage_seconds_total counter"]
        stages: dict[str, float] = {}
        for t in timings:
            for k, v in (t or {}).items():
                stages[k] = stages.get(k, 0.0) + float(v)
        lines += [f'aiprod_stage_seconds_total{{stage="{k}"}} {v:.3f}' for k, v in stages.items()]
        ratio = done[0] / done[1] if done[0] and done[1] else 0.0
        lines += ["# HELP aiprod_render_seconds_per_output_second Render time per second "
                  "of film.", "# TYPE aiprod_render_seconds_per_output_second gauge",
                  f"aiprod_render_seconds_per_output_second {ratio:.4f}"]
        return "\n".join(lines) + "\n"

    return app


# names a client may ask for: printable, no backslash; hidden parts are refused separately
_NAME = re.compile(r"^[^\x00-\x1f\x7f\\]{1,1000}$")


def _artifacts(root: Path) -> list[tuple[str, int]]:
    """Regular files under ``root`` (no symlinks, nothing hidden), sorted by name."""
    found = []
    for folder, dirs, files in os.walk(root):  # never descends a symlinked folder
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                found.append((path.relative_to(root).as_posix(), st.st_size))
    return sorted(found)


def _artifact(root: Path, name: str) -> Path | None:
    """``root/name`` if it is a regular file reached through no symlink; None otherwise."""
    if not _NAME.match(name):
        return None
    parts = name.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    path = root
    for part in parts:
        path = path / part
        try:
            st = path.lstat()
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return None
    return path if stat.S_ISREG(st.st_mode) else None


def _write_job_files(folder: Path, req: JobRequest, plan_json: str, sub: _Submission) -> None:
    (folder / "plan.json").write_text(plan_json)  # what the render renders: planned once
    if req.script is not None:
        (folder / "script.fountain").write_text(req.script)
    if sub.music is not None and sub.music.path is not None:
        suffix = Path(sub.music.filename).suffix.lower()
        suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ".bin"
        os.replace(sub.music.path, folder / f"music{suffix}")  # same filesystem: a rename
        sub.music.path = None
        (folder / "project.toml").write_text(f'[audio]\nmusic = "music{suffix}"\n')


async def _read_submission(request: Request, limits: Limits, spool: Path) -> _Submission:
    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        raw = await request.body()  # BodyLimit has stopped it at limits.json_bytes
        try:
            return _Submission(parse_json_object(raw))
        except ValueError as exc:
            raise _bad(str(exc)) from None
    try:
        fields, files = await read_multipart(
            request.stream(), kind, {"script": limits.script_bytes, "music": limits.upload_bytes},
            spool, spooled=frozenset({"music"}))
    except FormRefused as exc:
        raise _bad(str(exc)) from None
    sub = _Submission({}, files.get("music"))
    if "script" in files:
        try:
            sub.body["script"] = files["script"].data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            sub.close()
            raise _bad(f"script is not UTF-8 at byte offset {exc.start}") from None
    for key, value in fields:
        if key == "profiles":
            sub.body.setdefault("profiles", []).extend(p for p in value.split(",") if p)
        elif key in ("width", "height"):
            sub.body[key] = int(value) if value.isdigit() else value
        else:
            sub.body[key] = value
    return sub


def _check(req: JobRequest, limits: Limits) -> None:
    """The checks that need no planning."""
    if (req.script is None) == (req.plan is None):
        raise _bad("send exactly one of 'script' (Fountain text) or 'plan' (a shot plan)")
    for p in req.profiles:
        if p not in DELIVERY_PROFILES:
            raise _bad(f"unknown profile {p!r}: expected one of {', '.join(DELIVERY_PROFILES)}")
    if req.engine not in ("animatic",):
        raise _bad(f"engine {req.engine!r} is not offered by this service: use animatic")
    w, h = req.width or 1920, req.height or 1080
    if w > limits.max_width or h > limits.max_height or w < 16 or h < 16 or w % 2 or h % 2:
        raise _bad(f"resolution {w}x{h} is outside the limit: even sizes up to "
                   f"{limits.max_width}x{limits.max_height}")
    if req.script is not None and len(req.script.encode()) > limits.script_bytes:
        raise _bad(f"script is {len(req.script.encode())} bytes; the limit is "
                   f"{limits.script_bytes}")
