"""Jobs: submit (checked, planned once off the event loop), read, cancel."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import IntegrityError

from .. import engines
from ..project import DELIVERY_PROFILES
from .bodies import FormRefused, UploadedFile, parse_json_object, read_multipart
from .db import Job, Token
from .deps import Limits, Service, ServiceDep, TokenDep, bad, own_job
from .planning import PlanRefused, plan_request
from .webhooks import check_callback_url

__all__ = ["router", "JobRequest"]

router = APIRouter()


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


class _Submission:
    """A parsed request: its fields, and an uploaded music file spooled to disk."""

    def __init__(self, body: dict, music: UploadedFile | None = None) -> None:
        self.body, self.music = body, music

    def close(self) -> None:
        """Remove the spooled upload unless a job has taken it."""
        if self.music is not None and self.music.path is not None:
            self.music.path.unlink(missing_ok=True)


def job_view(job: Job, request: Request) -> dict[str, Any]:
    return {
        "id": job.id, "state": job.state, "stage": job.stage, "progress": job.progress or {},
        "created": job.created.isoformat() + "Z",
        "started": job.started.isoformat() + "Z" if job.started else None,
        "finished": job.finished.isoformat() + "Z" if job.finished else None,
        "timings": job.timings or {}, "error": job.error, "webhook": job.webhook_state,
        "status_url": str(request.url_for("get_job", job_id=job.id)),
        "artifacts_url": str(request.url_for("list_artifacts", job_id=job.id)),
    }


@router.post("/v1/jobs", status_code=202)
async def submit(request: Request, svc: ServiceDep, tok: TokenDep,
                 idempotency_key: str | None = Header(None)) -> JSONResponse:
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 200:
        raise bad("Idempotency-Key: expected 1 to 200 characters")
    sub = await _read_submission(request, svc.limits, svc.spool)
    try:
        return await _submit(request, svc, tok, idempotency_key, sub)
    finally:
        sub.close()


@router.get("/v1/jobs/{job_id}", name="get_job")
def get_job(job_id: str, request: Request, svc: ServiceDep, tok: TokenDep) -> dict:
    return job_view(own_job(svc, job_id, tok), request)


@router.delete("/v1/jobs/{job_id}")
def cancel(job_id: str, request: Request, svc: ServiceDep, tok: TokenDep) -> dict:
    own_job(svc, job_id, tok)
    svc.dispatcher.cancel(job_id)  # compare-and-set: a job that has ended stays as it ended
    return job_view(own_job(svc, job_id, tok), request)


async def _submit(request: Request, svc: Service, tok: Token, key: str | None,
                  sub: _Submission) -> JSONResponse:
    limits = svc.limits
    try:
        req = JobRequest.model_validate(sub.body)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise bad(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}") from None
    _check(req, limits)
    if req.callback_url is not None:
        try:  # resolving the host may take a while: not on the event loop
            await asyncio.to_thread(check_callback_url, req.callback_url, svc.webhooks)
        except ValueError as exc:
            raise bad(str(exc)) from None
    digest = hashlib.sha256(json.dumps(req.model_dump(), sort_keys=True).encode())
    if sub.music is not None:
        digest.update(sub.music.sha256.encode())
    request_sha256 = digest.hexdigest()
    if key is not None:
        prior = _prior(svc, tok, key, request_sha256)
        if prior is not None:
            return JSONResponse(job_view(prior, request), status_code=202)
    try:
        summary = await asyncio.to_thread(
            plan_request, req.script, req.plan, req.width or 1920, req.height or 1080,
            None if req.fps is None else str(req.fps), limits.max_shots, limits.plan_seconds)
    except PlanRefused as exc:
        raise bad(str(exc)) from None
    if summary.seconds > limits.max_seconds:
        raise bad(f"{summary.seconds:.0f} s of film; the limit is {limits.max_seconds:.0f} s")
    job_id = str(uuid.uuid4())
    folder = svc.job_folder(job_id)
    folder.mkdir(parents=True)
    try:
        await asyncio.to_thread(_write_job_files, folder, req, summary.plan_json, sub)
        with svc.sessions.begin() as s:
            job = Job(id=job_id, token_id=tok.id, state="queued",
                      request=req.model_dump(exclude={"script", "plan"}),
                      idempotency_key=key, request_sha256=request_sha256,
                      callback_url=req.callback_url, progress={}, timings={})
            s.add(job)
    except IntegrityError:  # a concurrent request with this key made the job first
        shutil.rmtree(folder, ignore_errors=True)
        prior = _prior(svc, tok, key or "", request_sha256)
        if prior is None:
            raise
        return JSONResponse(job_view(prior, request), status_code=202)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return JSONResponse(job_view(job, request), status_code=202)


def _prior(svc: Service, tok: Token, key: str, request_sha256: str) -> Job | None:
    """The job made earlier under ``key``; 409 if it was made from another request."""
    with svc.sessions() as s:
        prior = s.query(Job).filter_by(token_id=tok.id, idempotency_key=key).first()
    if prior is not None and prior.request_sha256 != request_sha256:
        raise HTTPException(409, "Idempotency-Key was used before with a different request; "
                                 "use a new key for a new job")
    return prior


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
            raise bad(str(exc)) from None
    try:
        fields, files = await read_multipart(
            request.stream(), kind, {"script": limits.script_bytes, "music": limits.upload_bytes},
            spool, spooled=frozenset({"music"}))
    except FormRefused as exc:
        raise bad(str(exc)) from None
    sub = _Submission({}, files.get("music"))
    if "script" in files:
        try:
            sub.body["script"] = files["script"].data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            sub.close()
            raise bad(f"script is not UTF-8 at byte offset {exc.start}") from None
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
        raise bad("send exactly one of 'script' (Fountain text) or 'plan' (a shot plan)")
    for p in req.profiles:
        if p not in DELIVERY_PROFILES:
            raise bad(f"unknown profile {p!r}: expected one of {', '.join(DELIVERY_PROFILES)}")
    if req.engine not in engines.served():
        raise bad(f"engine {req.engine!r} is not offered by this service: use "
                  f"{' or '.join(engines.served())}")
    w, h = req.width or 1920, req.height or 1080
    if w > limits.max_width or h > limits.max_height or w < 16 or h < 16 or w % 2 or h % 2:
        raise bad(f"resolution {w}x{h} is outside the limit: even sizes up to "
                  f"{limits.max_width}x{limits.max_height}")
    if req.script is not None and len(req.script.encode()) > limits.script_bytes:
        raise bad(f"script is {len(req.script.encode())} bytes; the limit is "
                  f"{limits.script_bytes}")
