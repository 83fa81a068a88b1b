"""Estimates through the API: how long a script or plan will take to render here, and what
it costs on a GPU, before a job is made. The same numbers as ``aiprod-post estimate``: the
service's renders run the CLI on this machine, so each finished job teaches the estimate
this machine's speed (the history in ``AIPROD_CACHE``, see :mod:`aiprod_post.estimate`).
The script is planned as a submission is: in a child process, under the planning limit.
"""

from __future__ import annotations

import asyncio
import json
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError

from ..estimate import estimate_work, work_of
from ..plan import plan_from_data
from ..project import DELIVERY_PROFILES
from .deps import ServiceDep, TokenDep, bad
from .planning import PlanRefused, plan_request

__all__ = ["router", "EstimateRequest"]

router = APIRouter()


class EstimateRequest(BaseModel):
    """A script (Fountain text) or a plan (JSON object), and how it would be rendered."""

    model_config = {"extra": "forbid"}
    script: str | None = None
    plan: dict | None = None
    engine: Literal["animatic", "clips", "ltx", "ltx2"] = "animatic"
    profiles: list[str] = Field(default_factory=lambda: ["web", "master"], min_length=1)
    width: int = Field(1920, ge=16, le=8192)
    height: int = Field(1080, ge=16, le=8192)
    fps: str | None = None
    preset: Literal["distilled", "dev"] = "distilled"
    price_per_gpu_hour: float = Field(0.0, ge=0)


@router.post("/v1/estimates")
async def create_estimate(request: Request, svc: ServiceDep, _token: TokenDep) -> dict:
    try:
        body = EstimateRequest.model_validate(json.loads(await request.body()))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise bad(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}") from None
    except (ValueError, RecursionError) as exc:
        raise bad(f"body is not JSON: {str(exc)[:200]}") from None
    if (body.script is None) == (body.plan is None):
        raise bad("send exactly one of script (Fountain text) or plan (a ShotPlan object)")
    unknown = [p for p in body.profiles if p not in DELIVERY_PROFILES]
    if unknown:
        raise bad(f"profiles: unknown {unknown[0]!r}: expected {', '.join(DELIVERY_PROFILES)}")
    limits = svc.limits
    try:
        summary = await asyncio.to_thread(
            plan_request, body.script, body.plan, body.width, body.height, body.fps,
            limits.max_shots, limits.plan_seconds)
    except PlanRefused as exc:
        raise bad(str(exc)) from None
    plan = plan_from_data(json.loads(summary.plan_json))
    work = work_of(plan, body.profiles,
                   video={p: DELIVERY_PROFILES[p].video for p in body.profiles})
    return estimate_work(work, body.engine, preset=body.preset,
                         price_per_gpu_hour=body.price_per_gpu_hour)
