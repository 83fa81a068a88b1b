"""For the operator: health, metrics, and the API's description."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from sqlalchemy import func

from .db import Job
from .deps import ServiceDep, TokenDep, current_token

__all__ = ["router"]

router = APIRouter()


def _docs_access(svc: ServiceDep, authorization: str | None = Header(None)) -> None:
    """A token for /docs and /openapi.json, unless the operator made them public."""
    if not svc.public_docs:
        current_token(svc, authorization)


@router.get("/openapi.json", include_in_schema=False, dependencies=[Depends(_docs_access)])
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False, dependencies=[Depends(_docs_access)])
def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="aiprod-post")


@router.get("/healthz")
def healthz() -> dict:
    return {"ok": True}


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(svc: ServiceDep, tok: TokenDep) -> str:
    """Operator-wide figures: counts over every token's jobs (no ids, no names)."""
    lines = ["# HELP aiprod_jobs Jobs by state, all tokens.", "# TYPE aiprod_jobs gauge"]
    with svc.sessions() as s:
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
