"""Estimates through the API: how long a script or plan will take to render here, and what
it costs on a GPU, before a job is made. The same model as ``aiprod-post estimate``; what
it learns comes from the service's own finished jobs (the latest succeeded jobs in the
database, each with its plan and report in its folder: stage times, what was made and what
came from the cache), so every tenant's estimate reflects this server's speed. The script is
planned as a submission is: in a child process, under the planning limit.
"""

from __future__ import annotations

import asyncio
import json
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError, field_validator

from sqlalchemy import select

from .. import engines
from ..estimate import estimate_work, rates_of, work_of
from ..plan import load_plan, plan_from_data
from ..project import DELIVERY_PROFILES
from .db import Job
from .deps import ServiceDep, TokenDep, bad
from .planning import PlanRefused, plan_request

__all__ = ["router", "EstimateRequest"]

router = APIRouter()


class EstimateRequest(BaseModel):
    """A script (Fountain text) or a plan (JSON object), and how it would be rendered."""

    model_config = {"extra": "forbid"}
    script: str | None = None
    plan: dict | None = None
    engine: str = "animatic"  # a registered engine (aiprod_post.engines)
    profiles: list[str] = Field(default_factory=lambda: ["web", "master"], min_length=1)
    width: int = Field(1920, ge=16, le=8192)
    height: int = Field(1080, ge=16, le=8192)
    fps: str | None = None
    preset: Literal["distilled", "dev"] = "distilled"
    price_per_gpu_hour: float = Field(0.0, ge=0)

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        return engines.known(value)


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
    history = await asyncio.to_thread(_learned, svc, body.engine)
    return estimate_work(work, body.engine, history=history, preset=body.preset,
                         price_per_gpu_hour=body.price_per_gpu_hour)


def _learned(svc, engine: str, jobs: int = 20) -> list[dict]:
    """Stage speeds of the latest succeeded jobs rendered with ``engine``, oldest first."""
    with svc.sessions() as s:
        rows = s.execute(select(Job.id, Job.request).where(Job.state == "succeeded")
                         .order_by(Job.finished.desc()).limit(jobs)).all()
    out = []
    for job_id, request in rows:
        folder = svc.job_folder(job_id) / "out"
        try:
            report = json.loads((folder / "report.json").read_text())
            plan = load_plan(folder / "timeline" / "plan.json")
        except Exception:  # noqa: BLE001 - a job whose files are gone teaches nothing
            continue
        if report.get("engine", {}).get("name") != engine:
            continue
        profiles = [p for p in (request or {}).get("profiles", []) if p in DELIVERY_PROFILES]
        if not profiles:
            continue
        work = work_of(plan, profiles, video={p: DELIVERY_PROFILES[p].video for p in profiles})
        rates = rates_of(work, report.get("stage_seconds", {}), report.get("made", {}),
                         report.get("cached", {}))
        if rates:
            out.append({"rates": rates})
    return out[::-1]
