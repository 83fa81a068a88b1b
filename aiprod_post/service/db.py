"""Jobs and API tokens in a real database (SQLAlchemy), migrated with Alembic.

SQLite in the data folder by default; any SQLAlchemy URL (PostgreSQL included) works.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from pathlib import Path

from typing import Any

from sqlalchemy import (JSON, DateTime, Float, ForeignKey, Integer, String, Text,
                        UniqueConstraint, create_engine, update)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

__all__ = ["Base", "Token", "Job", "connect", "migrate", "create_token", "token_by_secret",
           "now", "STATES", "transition"]

STATES = ("queued", "running", "succeeded", "failed", "cancelled")


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    webhook_secret: Mapped[str] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class Job(Base):
    __tablename__ = "jobs"
    # one job per (token, Idempotency-Key): concurrent retries race on this constraint
    __table_args__ = (UniqueConstraint("token_id", "idempotency_key",
                                       name="uq_jobs_token_idempotency_key"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    stage: Mapped[str | None] = mapped_column(String(32), nullable=True)
    progress: Mapped[dict] = mapped_column(JSON, default=dict)
    request: Mapped[dict] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    #: SHA-256 of the request as received (canonical JSON, uploads by content)
    request_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    started: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    render_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    output_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    timings: Mapped[dict] = mapped_column(JSON, default=dict)
    webhook_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: the render process now or last started for this job, and its start time as the
    #: operating system reports it (a pid alone may have been reused after a crash)
    render_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    render_identity: Mapped[str | None] = mapped_column(String(120), nullable=True)


def transition(s: Session, job_id: str, expected: tuple[str, ...], **values: Any) -> bool:
    """Compare-and-set: apply ``values`` only if the job's state is one of ``expected``.

    One ``UPDATE ... WHERE state IN (...)``: of two writers racing (a DELETE and the
    dispatcher picking the job up), exactly one sees its row changed.
    """
    result = s.execute(update(Job).where(Job.id == job_id, Job.state.in_(expected))
                       .values(**values).execution_options(synchronize_session=False))
    return result.rowcount == 1


def migrate(url: str) -> None:
    """Bring the database to the newest schema with Alembic (idempotent)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "head")


def connect(url: str) -> sessionmaker[Session]:
    migrate(url)
    engine = create_engine(url, connect_args={"check_same_thread": False}
                           if url.startswith("sqlite") else {})
    return sessionmaker(engine, expire_on_commit=False)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(sessions: sessionmaker[Session], name: str) -> tuple[str, str]:
    """A new API token: returns (bearer secret, webhook signing secret); stores a hash."""
    secret = "aip_" + secrets.token_urlsafe(32)
    hook = secrets.token_hex(32)
    with sessions.begin() as s:
        if s.query(Token).filter_by(name=name).first():
            raise ValueError(f"a token named {name!r} exists already")
        s.add(Token(name=name, secret_sha256=_hash(secret), webhook_secret=hook))
    return secret, hook


def token_by_secret(s: Session, secret: str) -> Token | None:
    return s.query(Token).filter_by(secret_sha256=_hash(secret)).first()
