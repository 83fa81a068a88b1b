"""What every route shares: the service's state, its limits, the caller's token, their job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from .db import Job, Token, token_by_secret
from .dispatcher import Dispatcher
from .webhooks import WebhookPolicy

__all__ = ["Limits", "Service", "ServiceDep", "TokenDep", "current_token", "own_job", "bad"]


class Limits(BaseModel):
    """What one request may ask of the service."""

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


@dataclass(frozen=True)
class Service:
    """One running service: its folders, database, limits and dispatcher."""

    data: Path
    sessions: sessionmaker[Session]
    limits: Limits
    webhooks: WebhookPolicy
    dispatcher: Dispatcher
    public_docs: bool = False

    @property
    def spool(self) -> Path:
        """Where uploads arrive before they move into their job's folder."""
        return self.data / "uploads"

    def job_folder(self, job_id: str) -> Path:
        return self.data / "jobs" / job_id


def _service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(_service)]


def current_token(svc: ServiceDep, authorization: str | None = Header(None)) -> Token:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(401, "a bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})
    with svc.sessions() as s:
        tok = token_by_secret(s, authorization[7:].strip())
    if tok is None:
        raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
    return tok


TokenDep = Annotated[Token, Depends(current_token)]


def own_job(svc: Service, job_id: str, tok: Token) -> Job:
    """The caller's job ``job_id``; 404 for any other (another token's job is not there)."""
    with svc.sessions() as s:
        job = s.get(Job, job_id)
    if job is None or job.token_id != tok.id:
        raise HTTPException(404, f"no job {job_id}")
    return job


def bad(message: str) -> HTTPException:
    return HTTPException(status_code=400, detail=message)
