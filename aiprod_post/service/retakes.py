"""Retakes through the API: a new take of one shot of a job, or another of its takes chosen.

Both record the change in the job's output folder (``takes.json``, :mod:`aiprod_post.takes`)
and queue the job again: the dispatcher runs its render once more, whose stage cache serves
every shot but the one whose take changed, and the timeline and masters are made again.
A job that is queued or running is not changed (409): its render holds the folder.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, ValidationError

from ..errors import AiprodError
from ..outlock import OutputBusyError, output_lock
from ..plan import ShotPlan, load_plan
from ..takes import MAX_TEXT, Take, add_take, choose_take, load_takes, takes_report
from .db import transition
from .deps import ServiceDep, TokenDep, bad, own_job
from .jobs import job_view

__all__ = ["router", "RetakeRequest", "TakeChoice"]

router = APIRouter()


class RetakeRequest(BaseModel):
    """A new take of ``shot``: ``seed`` given, or (``new_seed``, the default) one no take of
    the shot has used; words added to its prompt; a note kept with it."""

    model_config = {"extra": "forbid"}
    shot: str
    seed: int | None = Field(None, ge=0, lt=2**31, strict=True)
    new_seed: bool = False
    prompt_extra: str | None = Field(None, max_length=MAX_TEXT)
    note: str | None = Field(None, max_length=MAX_TEXT)


class TakeChoice(BaseModel):
    """Which take of the shot the film uses."""

    model_config = {"extra": "forbid"}
    take: int = Field(ge=1, strict=True)


async def _body(request: Request, model: type[BaseModel]):
    try:
        data = json.loads(await request.body())
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise bad(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}") from None
    except ValueError as exc:
        raise bad(f"body is not JSON: {exc}") from None


def _change(svc, tok, job_id: str, shot: str, request: Request,
            change: Callable[[Path, ShotPlan], Take]) -> dict:
    job = own_job(svc, job_id, tok)
    if job.state not in ("succeeded", "failed"):
        raise HTTPException(409, f"job {job_id} is {job.state}: takes change once it has ended")
    out = svc.job_folder(job_id) / "out"
    if not (out / "timeline" / "plan.json").is_file():
        raise HTTPException(409, f"job {job_id} has no finished render to take again")
    try:
        with output_lock(out):
            plan = load_plan(out / "timeline" / "plan.json")
            if shot not in {s.id for _, s in plan.shots()}:
                raise HTTPException(404, f"job {job_id} has no shot {shot!r}")
            take = change(out, plan)
    except OutputBusyError:
        raise HTTPException(409, f"job {job_id} is rendering") from None
    except AiprodError as exc:
        raise bad(str(exc)) from None
    with svc.sessions.begin() as s:  # ended → queued, or nothing if it changed meanwhile
        transition(s, job_id, ("succeeded", "failed"), state="queued", stage="retake",
                   error=None, finished=None, progress={})
    return {**job_view(own_job(svc, job_id, tok), request), "shot": shot,
            "take": asdict(take), "takes": takes_report(out, load_takes(out)).get(shot)}


@router.post("/v1/jobs/{job_id}/retakes", status_code=202)
async def post_retake(job_id: str, request: Request, svc: ServiceDep, tok: TokenDep) -> dict:
    """Render a new take of one shot of the job; the job is queued again."""
    req = await _body(request, RetakeRequest)
    if req.seed is not None and req.new_seed:
        raise bad("give seed or new_seed, not both")
    return await asyncio.to_thread(  # a file lock, a copy and the database: off the loop
        _change, svc, tok, job_id, req.shot, request, lambda out, plan: add_take(
            out, plan, req.shot, seed=req.seed, prompt_extra=req.prompt_extra, note=req.note))


@router.put("/v1/jobs/{job_id}/shots/{shot}/take", status_code=202)
async def put_take(job_id: str, shot: str, request: Request, svc: ServiceDep,
                   tok: TokenDep) -> dict:
    """Choose which take of ``shot`` the job's masters use; the job is queued again."""
    req = await _body(request, TakeChoice)
    return await asyncio.to_thread(_change, svc, tok, job_id, shot, request,
                                   lambda out, plan: choose_take(out, plan, shot, req.take))
