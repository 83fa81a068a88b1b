"""Starts queued jobs as render processes, follows them, and delivers their webhooks.

Every change of a job's state is a compare-and-set in the database
(:func:`~aiprod_post.service.db.transition`): a DELETE that lands while the dispatcher
picks a job up wins or loses as a whole, never half. Each render's pid and start time are
recorded; a server that starts after a crash stops the renders the dead server left
running before it queues their jobs again, so a job never renders twice at once (the
output folder's lock, :mod:`aiprod_post.outlock`, refuses a second render anyway).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..outlock import lock_holder, process_identity
from .db import Job, Token, now, transition
from .webhooks import WebhookPolicy, deliver

__all__ = ["Dispatcher", "webhook_body"]

_ACTIVE = ("queued", "running")


class Dispatcher:
    """Starts queued jobs as render processes, at most ``workers`` at a time, and follows them."""

    def __init__(self, sessions, data: Path, workers: int,
                 webhooks: WebhookPolicy | None = None, render_flags: tuple[str, ...] = ()
                 ) -> None:
        self.sessions, self.data, self.workers = sessions, data, workers
        #: added to every render's command line (``--executor ray --address …``)
        self.render_flags = tuple(render_flags)
        self.webhooks = webhooks or WebhookPolicy()
        self.running: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)

    # ---- start-up and shut-down
    def start(self) -> None:
        with self.sessions() as s:
            left = [(j.id, j.render_pid, j.render_identity)
                    for j in s.query(Job).filter_by(state="running")]
            unsent = [j.id for j in s.query(Job).filter_by(webhook_state="pending")]
        for job_id, pid, identity in left:  # a previous server's renders: stop, then go again
            if not (pid and identity):  # killed before it recorded them: the lock file says
                pid, identity = lock_holder(self.data / "jobs" / job_id / "out") or (0, None)
            if pid and identity:
                _stop_orphan(pid, identity)
            with self.sessions.begin() as s:
                transition(s, job_id, ("running",), state="queued", stage="resuming",
                           render_pid=None, render_identity=None)
        for job_id in unsent:
            self.send_webhook(job_id)
        self.thread.start()

    def shutdown(self) -> None:
        self.stop.set()
        with self.lock:
            for proc in self.running.values():
                _kill(proc)

    # ---- state changes a client asks for
    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False if it had already ended."""
        with self.sessions.begin() as s:
            won = transition(s, job_id, _ACTIVE, state="cancelled", finished=now(),
                             error="cancelled by the client", webhook_state=_pending(s, job_id),
                             render_pid=None, render_identity=None)
        with self.lock:
            proc = self.running.pop(job_id, None)
        if proc is not None and _on_a_cluster(self.render_flags):
            # interrupted, as by Ctrl-C: the render cancels its units on the cluster (a
            # unit in a long-lived actor outlives a killed render), then killed if it lingers
            threading.Thread(target=_interrupt_then_kill, args=(proc,), daemon=True).start()
        elif proc is not None:
            _kill(proc)
        if won:
            self.send_webhook(job_id)
        return won

    # ---- the loop
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
            try:
                if self._step():
                    continue
            except Exception as exc:  # noqa: BLE001 - a busy or lost database: try again
                print(f"aiprod-post dispatcher: {type(exc).__name__}: {exc}", file=sys.stderr)
                self.stop.wait(1.0)
            self.stop.wait(0.2)

    def _step(self) -> bool:
        """Start the next queued job if a worker is free; True if one was started."""
        with self.lock:
            free = self.workers - len(self.running)
        picked = None
        if free > 0:
            with self.sessions.begin() as s:
                job = self._next(s)
                if job is not None and transition(s, job.id, ("queued",), state="running",
                                                  started=job.started or now()):
                    picked = (job.id, dict(job.request))
        if picked is not None:
            try:
                self._launch(*picked)
            except Exception as exc:  # noqa: BLE001 - one job's fault must not stop the loop
                self._finish(picked[0], "failed", f"the render could not start: {exc}")
        return picked is not None

    def _launch(self, job_id: str, request: dict) -> None:
        folder = self.data / "jobs" / job_id
        # Relative paths from the job's folder: the render's messages, which become the job's
        # error, name files as the client knows them, never the server's folders.
        cmd = [sys.executable, "-m", "aiprod_post.service.worker", "render", "plan.json",
               "-o", "out", "--log-json", "--profile", ",".join(request["profiles"]),
               "--engine", request.get("engine", "animatic")]
        if (folder / "project.toml").exists():
            cmd += ["--project", "project.toml"]
        cmd += self.render_flags  # the server's, over the job's project
        log = open(folder / "render.log", "ab")
        proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.PIPE, stderr=log,
                                start_new_session=True)
        with self.lock:
            self.running[job_id] = proc
        with self.sessions.begin() as s:
            # a DELETE between the pick-up and here has set "cancelled" and found no process
            # to kill: the state check below sees it and stops the render
            still = transition(s, job_id, ("running",), render_pid=proc.pid,
                               render_identity=process_identity(proc.pid))
        if not still:
            with self.lock:
                self.running.pop(job_id, None)
            _kill(proc)
        threading.Thread(target=self._follow, args=(job_id, proc, log), daemon=True).start()

    def _follow(self, job_id: str, proc: subprocess.Popen, log) -> None:
        t0 = time.monotonic()
        for raw in proc.stdout:  # type: ignore[union-attr]
            try:
                event = json.loads(raw)
                kind = event["event"]
            except (ValueError, KeyError, TypeError):
                continue
            try:
                self._progress(job_id, kind, event)
            except Exception:  # noqa: BLE001 - progress is advisory: a busy database skips it
                pass
        code = proc.wait()
        log.close()
        with self.lock:
            self.running.pop(job_id, None)
        if self.stop.is_set():
            return  # the server is stopping: the job stays running and resumes on start
        folder = self.data / "jobs" / job_id
        report_file = folder / "out" / "report.json"
        try:
            report = json.loads(report_file.read_text()) if report_file.exists() else {}
        except (OSError, ValueError):
            report = {}
        extra = {"render_seconds": time.monotonic() - t0,
                 "output_seconds": report.get("duration_seconds")}
        if code in (0, 3):
            error = None
            if code == 3:
                error = "some shots failed and were replaced by slates: " + "; ".join(
                    f"{k}: {v}" for k, v in report.get("failed_shots", {}).items())
            self._finish(job_id, "succeeded", error, stage="done", **extra)
        else:
            error = _error_from_log(folder / "render.log", code)
            # renders name files relative to the job's folder; anything absolute is not the
            # client's business
            error = error.replace(f"{folder}{os.sep}", "").replace(str(self.data), "<data>")
            self._finish(job_id, "failed", error, **extra)

    def _progress(self, job_id: str, kind: str, event: dict) -> None:
        values: dict = {}
        with self.sessions.begin() as s:
            job = s.get(Job, job_id)
            if job is None or job.state != "running":
                return
            if kind == "stage_start":
                values["stage"] = event["stage"]
            elif kind == "item":  # items of a stage (shots, lines, masters) ...
                values["progress"] = {**(job.progress or {}), "stage": event["stage"],
                                      "done": event["index"], "total": event["total"],
                                      "item": event["item"]}
            elif kind == "progress":  # ... and movement within one (frames, audio seconds)
                values["progress"] = {**(job.progress or {}), "within": {
                    k: event.get(k) for k in ("stage", "item", "done", "total", "unit", "rate",
                                              "eta")}}
            elif kind == "stage_end":
                values["timings"] = {**(job.timings or {}), event["stage"]: event["seconds"]}
            if values:
                transition(s, job_id, ("running",), **values)

    def _finish(self, job_id: str, state: str, error: str | None, **values) -> None:
        for attempt in range(10):  # the end of a job is not advisory: retry a busy database
            try:
                with self.sessions.begin() as s:
                    won = transition(s, job_id, ("running",), state=state, error=error,
                                     finished=now(), render_pid=None, render_identity=None,
                                     webhook_state=_pending(s, job_id), **values)
                break
            except Exception:  # noqa: BLE001
                if attempt == 9:
                    raise
                time.sleep(0.5 * (attempt + 1))
        if won:  # a cancel that came first has sent its own webhook
            self.send_webhook(job_id)

    # ---- webhooks
    def send_webhook(self, job_id: str) -> None:
        with self.sessions() as s:
            job = s.get(Job, job_id)
            if job is None or not job.callback_url or job.webhook_state != "pending":
                return
            url, body = job.callback_url, webhook_body(job)
            secret = s.get(Token, job.token_id).webhook_secret
        threading.Thread(target=self._deliver, args=(job_id, url, body, secret),
                         daemon=True).start()

    def _deliver(self, job_id: str, url: str, body: bytes, secret: str) -> None:
        state = "failed"
        try:
            signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            state, _reason = deliver(url, body, signature, self.webhooks)
        finally:  # whatever happened, the job says what became of its webhook
            with self.sessions.begin() as s:
                job = s.get(Job, job_id)
                if job is not None:
                    job.webhook_state = state


def _pending(s, job_id: str) -> str | None:
    job = s.get(Job, job_id)
    return "pending" if job is not None and job.callback_url else None


def _error_from_log(log: Path, code: int) -> str:
    try:
        tail = log.read_text(errors="replace").strip().splitlines()[-50:]
    except OSError:
        tail = []
    line = next((ln.split("error: ", 1)[-1] for ln in reversed(tail) if "error" in ln),
                tail[-1] if tail else f"the render ended with exit status {code}")
    return line[:2000]


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _on_a_cluster(flags: tuple[str, ...]) -> bool:
    return any(a == "--executor" and b == "ray" for a, b in zip(flags, flags[1:]))


def _interrupt_then_kill(proc: subprocess.Popen, grace: float = 20.0) -> None:
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        _kill(proc)


def _stop_orphan(pid: int, identity: str, grace: float = 5.0) -> None:
    """Stop a render a dead server left running, if ``pid`` is still that render."""
    if process_identity(pid) != identity:
        return  # gone, or the pid now belongs to another process
    try:
        os.killpg(pid, signal.SIGTERM)  # the render leads its own process group
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and process_identity(pid) == identity:
        time.sleep(0.05)
    if process_identity(pid) == identity:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30  # past that it is stuck in the kernel; the
        while time.monotonic() < deadline and process_identity(pid) == identity:
            time.sleep(0.05)  # output lock still keeps a new render out of its folder


def webhook_body(job: Job) -> bytes:
    return json.dumps({"id": job.id, "state": job.state, "error": job.error,
                       "finished": job.finished.isoformat() + "Z" if job.finished else None},
                      sort_keys=True).encode()
