"""The HTTP API (FastAPI) and its dispatcher of render workers.

Renders run outside the web process: each job is an ``aiprod-post render --log-json``
child process, at most ``workers`` at a time, picked fairly across API tokens (the
token whose oldest queued job has waited longest, among those with the fewest jobs
running). Progress events stream back into the database. A restart loses nothing:
queued jobs run, jobs that were running are queued again and resume from the stage
cache in their output folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, ValidationError

from ..errors import AiprodError
from ..project import DELIVERY_PROFILES
from .db import Job, Token, connect, now, token_by_secret

__all__ = ["Limits", "create_app", "Dispatcher"]


class Limits(BaseModel):
    script_bytes: int = 1_000_000
    upload_bytes: int = 200_000_000
    max_width: int = 3840
    max_height: int = 2160
    max_seconds: float = 3600.0
    max_shots: int = 2000


class JobRequest(BaseModel):
    """What a client submits: a screenplay (Fountain text) or a shot plan, and settings."""

    model_config = {"extra": "forbid"}
    script: str | None = Field(None, description="Fountain text")
    plan: dict | None = Field(None, description="a ShotPlan JSON object")
    profiles: list[str] = Field(default_factory=lambda: ["web", "master"])
    width: int | None = None
    height: int | None = None
    fps: str | None = None
    engine: str = "animatic"
    callback_url: str | None = None


def _bad(message: str) -> HTTPException:
    return HTTPException(status_code=400, detail=message)


class Dispatcher:
    """Starts queued jobs as render processes and follows them."""

    def __init__(self, sessions, data: Path, workers: int) -> None:
        self.sessions, self.data, self.workers = sessions, data, workers
        self.running: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)

    def start(self) -> None:
        with self.sessions.begin() as s:  # jobs a previous server was running: go again
            for job in s.query(Job).filter_by(state="running"):
                job.state, job.stage = "queued", "resuming"
        self.thread.start()

    def shutdown(self) -> None:
        self.stop.set()
        with self.lock:
            for proc in self.running.values():
                _kill(proc)

    def cancel(self, job_id: str) -> None:
        with self.lock:
            proc = self.running.pop(job_id, None)
        if proc is not None:
            _kill(proc)

    def _next(self, s) -> Job | None:
        queued = s.query(Job).filter_by(state="queued").order_by(Job.created).all()
        if not queued:
            return None
        busy: dict[int, int] = {}
        for job in s.query(Job).filter_by(state="running"):
            busy[job.token_id] = busy.get(job.token_id, 0) + 1
        # fair across tokens: fewest running first, then the longest waiting
        return min(queued, key=lambda j: (busy.get(j.token_id, 0), j.created))

    def _loop(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                free = self.workers - len(self.running)
            if free > 0:
                with self.sessions.begin() as s:
                    job = self._next(s)
                    if job is not None:
                        job.state, job.started = "running", job.started or now()
                        job_id, request = job.id, dict(job.request)
                if job is not None:
                    self._launch(job_id, request)
                    continue
            time.sleep(0.2)

    def _launch(self, job_id: str, request: dict) -> None:
        folder = self.data / "jobs" / job_id
        source = folder / ("plan.json" if request.get("plan") else "script.fountain")
        cmd = [sys.executable, "-m", "aiprod_post.cli", "render", str(source), "-o",
               str(folder / "out"), "--log-json", "--profile", ",".join(request["profiles"]),
               "--engine", request.get("engine", "animatic")]
        if request.get("width") and request.get("height"):
            cmd += ["--size", f"{request['width']}x{request['height']}"]
        if request.get("fps"):
            cmd += ["--fps", request["fps"]]
        if (folder / "project.toml").exists():
            cmd += ["--project", str(folder / "project.toml")]
        log = open(folder / "render.log", "ab")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        with self.lock:
            self.running[job_id] = proc
        threading.Thread(target=self._follow, args=(job_id, proc, log), daemon=True).start()

    def _follow(self, job_id: str, proc: subprocess.Popen, log) -> None:
        t0 = time.monotonic()
        for raw in proc.stdout:  # type: ignore[union-attr]
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            with self.sessions.begin() as s:
                job = s.get(Job, job_id)
                if job is None or job.state != "running":
                    continue
                if event["event"] == "stage_start":
                    job.stage = event["stage"]
                elif event["event"] == "item":
                    job.progress = {"stage": event["stage"], "done": event["index"],
                                    "total": event["total"], "item": event["item"]}
                elif event["event"] == "stage_end":
                    job.timings = {**(job.timings or {}), event["stage"]: event["seconds"]}
        code = proc.wait()
        log.close()
        with self.lock:
            cancelled = self.running.pop(job_id, None) is None
        folder = self.data / "jobs" / job_id
        with self.sessions.begin() as s:
            job = s.get(Job, job_id)
            if job is None or job.state == "cancelled" or cancelled or self.stop.is_set():
                return
            job.finished = now()
            job.render_seconds = time.monotonic() - t0
            report = folder / "out" / "report.json"
            if report.exists():
                job.output_seconds = json.loads(report.read_text()).get("duration_seconds")
            if code in (0, 3):
                job.state, job.stage = "succeeded", "done"
                if code == 3:
                    failed = json.loads(report.read_text()).get("failed_shots", {})
                    job.error = "some shots failed and were replaced by slates: " + "; ".join(
                        f"{k}: {v}" for k, v in failed.items())
            else:
                job.state = "failed"
                tail = (folder / "render.log").read_text(errors="replace").strip().splitlines()
                job.error = next((ln.split("error: ", 1)[-1] for ln in reversed(tail)
                                  if "error" in ln), tail[-1] if tail else f"exit {code}")
            hook = (job.callback_url, _webhook_body(job), job.token_id)
        if hook[0]:
            threading.Thread(target=self._deliver, args=(job_id, *hook), daemon=True).start()

    def _deliver(self, job_id: str, url: str, body: bytes, token_id: int) -> None:
        with self.sessions() as s:
            secret = s.get(Token, token_id).webhook_secret
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        delay, state = 0.5, "failed"
        for _attempt in range(6):  # 0.5, 1, 2, 4, 8 s between tries
            try:
                req = urllib.request.Request(url, data=body, method="POST", headers={
                    "Content-Type": "application/json", "X-Aiprod-Signature": signature})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    if 200 <= resp.status < 300:
                        state = "delivered"
                        break
            except OSError:
                pass
            time.sleep(delay)
            delay *= 2
        with self.sessions.begin() as s:
            s.get(Job, job_id).webhook_state = state


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _webhook_body(job: Job) -> bytes:
    return json.dumps({"id": job.id, "state": job.state, "error": job.error,
                       "finished": job.finished.isoformat() + "Z" if job.finished else None},
                      sort_keys=True).encode()


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


def create_app(data: str | Path, db_url: str | None = None, workers: int = 1,
               limits: Limits | None = None, start_dispatcher: bool = True) -> FastAPI:
    data = Path(data)
    (data / "jobs").mkdir(parents=True, exist_ok=True)
    sessions = connect(db_url or f"sqlite:///{data / 'aiprod.db'}")
    limits = limits or Limits()
    dispatcher = Dispatcher(sessions, data, workers)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        if start_dispatcher:
            dispatcher.start()
        yield
        dispatcher.shutdown()

    app = FastAPI(title="aiprod-post", version="1", description=__doc__, lifespan=lifespan)
    app.state.dispatcher = dispatcher
    app.state.sessions = sessions

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

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.post("/v1/jobs", status_code=202)
    async def submit(request: Request, tok: Token = Depends(token),
                     idempotency_key: str | None = Header(None)) -> JSONResponse:
        if idempotency_key:
            with sessions() as s:
                prior = s.query(Job).filter_by(token_id=tok.id,
                                               idempotency_key=idempotency_key).first()
            if prior is not None:
                return JSONResponse(_job_view(prior, request), status_code=202)
        body = await _read_body(request, limits)
        music = body.pop("_music", None)
        try:
            req = JobRequest.model_validate(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise _bad(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
        _check(req, limits)
        job_id = str(uuid.uuid4())
        folder = data / "jobs" / job_id
        folder.mkdir(parents=True)
        if music is not None:
            _accept_music(folder, *music)
        if req.plan is not None:
            (folder / "plan.json").write_text(json.dumps(req.plan))
        else:
            (folder / "script.fountain").write_text(req.script or "")
        with sessions.begin() as s:
            job = Job(id=job_id, token_id=tok.id, state="queued", request=req.model_dump(),
                      idempotency_key=idempotency_key, callback_url=req.callback_url,
                      progress={}, timings={})
            s.add(job)
        return JSONResponse(_job_view(job, request), status_code=202)

    @app.get("/v1/jobs/{job_id}", name="get_job")
    def get_job(job_id: str, request: Request, tok: Token = Depends(token)) -> dict:
        return _job_view(own_job(job_id, tok), request)

    @app.delete("/v1/jobs/{job_id}")
    def cancel(job_id: str, request: Request, tok: Token = Depends(token)) -> dict:
        job = own_job(job_id, tok)
        if job.state in ("queued", "running"):
            with sessions.begin() as s:
                j = s.get(Job, job_id)
                j.state, j.finished, j.error = "cancelled", now(), "cancelled by the client"
            dispatcher.cancel(job_id)
        return _job_view(own_job(job_id, tok), request)

    def out_dir(job_id: str) -> Path:
        return (data / "jobs" / job_id / "out").resolve()

    @app.get("/v1/jobs/{job_id}/artifacts", name="list_artifacts")
    def list_artifacts(job_id: str, request: Request, tok: Token = Depends(token)) -> dict:
        own_job(job_id, tok)
        root = out_dir(job_id)
        files = []
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                rel = p.relative_to(root)
                if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                    files.append({"name": str(rel), "bytes": p.stat().st_size,
                                  "url": str(request.url_for("get_artifact", job_id=job_id,
                                                             name=str(rel)))})
        return {"id": job_id, "artifacts": files}

    @app.get("/v1/jobs/{job_id}/artifacts/{name:path}", name="get_artifact")
    def get_artifact(job_id: str, name: str, tok: Token = Depends(token)) -> FileResponse:
        own_job(job_id, tok)
        root = out_dir(job_id)
        target = (root / name).resolve()
        if root not in target.parents or any(p.startswith(".") for p in Path(name).parts):
            raise HTTPException(404, f"no artifact {name}")
        if not target.is_file():
            raise HTTPException(404, f"no artifact {name}")
        return FileResponse(target)  # answers Range requests

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics(tok: Token = Depends(token)) -> str:
        lines = ["# HELP aiprod_jobs Jobs by state.", "# TYPE aiprod_jobs gauge"]
        with sessions() as s:
            jobs = s.query(Job).all()
        for state in ("queued", "running", "succeeded", "failed", "cancelled"):
            lines.append(f'aiprod_jobs{{state="{state}"}} {sum(j.state == state for j in jobs)}')
        lines += ["# HELP aiprod_queue_depth Jobs waiting for a worker.",
                  "# TYPE aiprod_queue_depth gauge",
                  f"aiprod_queue_depth {sum(j.state == 'queued' for j in jobs)}",
                  "# HELP aiprod_stage_seconds_total Seconds spent per stage.",
                  "# TYPE aiprod_stage_seconds_total counter"]
        stages: dict[str, float] = {}
        for j in jobs:
            for k, v in (j.timings or {}).items():
                stages[k] = stages.get(k, 0.0) + float(v)
        lines += [f'aiprod_stage_seconds_total{{stage="{k}"}} {v:.3f}' for k, v in stages.items()]
        done = [j for j in jobs if j.render_seconds and j.output_seconds]
        ratio = (sum(j.render_seconds for j in done) / sum(j.output_seconds for j in done)
                 if done else 0.0)
        lines += ["# HELP aiprod_render_seconds_per_output_second Render time per second "
                  "of film.", "# TYPE aiprod_render_seconds_per_output_second gauge",
                  f"aiprod_render_seconds_per_output_second {ratio:.4f}"]
        return "\n".join(lines) + "\n"

    return app


async def _read_body(request: Request, limits: Limits) -> dict:
    kind = request.headers.get("content-type", "")
    declared = int(request.headers.get("content-length") or 0)
    if declared > limits.upload_bytes:
        raise _bad(f"upload is {declared} bytes; the limit is {limits.upload_bytes}")
    if kind.startswith("multipart/form-data"):
        form = await request.form()
        body: dict[str, Any] = {}
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                raw = await value.read()
                if key == "music":
                    if len(raw) > limits.upload_bytes:
                        raise _bad(f"music is {len(raw)} bytes; the limit is "
                                   f"{limits.upload_bytes}")
                    body["_music"] = (value.filename or "music", raw)
                    continue
                if key != "script":
                    raise _bad(f"unexpected file field {key!r}: send the screenplay as 'script' "
                               "and an optional music bed as 'music'")
                if len(raw) > limits.script_bytes:
                    raise _bad(f"script is {len(raw)} bytes; the limit is {limits.script_bytes}")
                try:
                    body["script"] = raw.decode("utf-8-sig")
                except UnicodeDecodeError as exc:
                    raise _bad(f"script is not UTF-8 at byte offset {exc.start}") from None
            elif key == "profiles":
                body.setdefault("profiles", []).extend(p for p in value.split(",") if p)
            elif key in ("width", "height"):
                body[key] = int(value) if value.isdigit() else value
            else:
                body[key] = value
        return body
    raw = await request.body()
    if len(raw) > limits.script_bytes + 1_000_000:
        raise _bad(f"request body is {len(raw)} bytes; the limit is "
                   f"{limits.script_bytes + 1_000_000}")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _bad(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _bad("body must be a JSON object with 'script' or 'plan'")
    return body


def _accept_music(folder: Path, filename: str, raw: bytes) -> None:
    """Keep an uploaded music bed only if it decodes as audio (probed before use)."""
    import shutil

    from aiprod_post.audio.io import read_audio

    suffix = Path(filename).suffix.lower()[:8] if Path(filename).suffix else ".bin"
    path = folder / f"music{suffix}"
    path.write_bytes(raw)
    try:
        samples, rate = read_audio(path)
        if samples.shape[0] < rate // 10:
            raise AiprodError("is shorter than 100 ms")
    except AiprodError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise _bad(f"music upload {filename!r} is not usable audio: {exc.message}") from None
    (folder / "project.toml").write_text(f'[audio]\nmusic = "{path.name}"\n')


def _check(req: JobRequest, limits: Limits) -> None:
    from ..fountain import parse
    from ..plan import plan_from_data, parse_frame_rate
    from ..planner import PlannerSettings, plan_script

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
    try:
        fps = parse_frame_rate(req.fps) if req.fps else None
        if req.script is not None:
            if len(req.script.encode()) > limits.script_bytes:
                raise _bad(f"script is {len(req.script.encode())} bytes; the limit is "
                           f"{limits.script_bytes}")
            plan, _ = plan_script(parse(req.script, source="script"),
                                  PlannerSettings(width=w, height=h, fps=fps or 24))
        else:
            plan = plan_from_data(req.plan, source="plan")
    except AiprodError as exc:
        raise _bad(str(exc)) from None
    except ValueError as exc:
        raise _bad(f"fps: {exc}") from None
    shots = len(plan.shots())
    seconds = float(plan.duration / plan.fps)
    if shots > limits.max_shots:
        raise _bad(f"{shots} shots; the limit is {limits.max_shots}")
    if seconds > limits.max_seconds:
        raise _bad(f"{seconds:.0f} s of film; the limit is {limits.max_seconds:.0f} s")
