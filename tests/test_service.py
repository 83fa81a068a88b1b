"""The HTTP service, over real HTTP, with a server started on 127.0.0.1 and a real SQLite file."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from aiprod_post.cli import main

SCRIPT = """EXT. PIER - DUSK

Gulls over the water. NELL waits.

NELL
Ferry's gone.
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``aiprod-post serve`` in its own process (and session) on a free loopback port."""

    def __init__(self, data: Path, *args: str) -> None:
        self.data, self.port, self.proc, self.args = data, free_port(), None, args
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> "Server":
        self.proc = subprocess.Popen([sys.executable, "-m", "aiprod_post.cli", "serve", "--port",
                                      str(self.port), "--data", str(self.data), "--workers", "1",
                                      *self.args],
                                     start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=open(self.data / "server.log", "ab"))
        for _ in range(200):
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError((self.data / "server.log").read_text())

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def token(data: Path, name: str) -> tuple[str, str]:
    out = CliRunner().invoke(main, ["token", "create", name, "--data", str(data)]).output
    lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
    return lines["token"], lines["webhook secret"]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    data = tmp_path_factory.mktemp("service")
    alice, alice_hook = token(data, "alice")
    bob, _ = token(data, "bob")
    server = Server(data, "--webhook-allow", "127.0.0.1/32").start()  # the test's listener
    yield server, alice, alice_hook, bob
    server.kill()


def auth(t: str) -> dict:
    return {"Authorization": f"Bearer {t}"}


def submit(server, tok, **extra):
    body = {"script": SCRIPT, "profiles": ["web"], "width": 160, "height": 96, **extra}
    return httpx.post(server.url + "/v1/jobs", json=body, headers=auth(tok), timeout=30)


def wait(server, tok, job_id, states=("succeeded", "failed", "cancelled"), timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=auth(tok)).json()
        if job["state"] in states:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job['state']}")


def test_submit_poll_download_and_probe(service, tmp_path):
    server, alice, _, bob = service
    r = submit(server, alice)
    assert r.status_code == 202
    job = r.json()
    assert job["state"] == "queued" and job["status_url"].endswith(job["id"])
    done = wait(server, alice, job["id"])
    assert done["state"] == "succeeded", done
    assert set(done["timings"]) >= {"speech", "generation", "masters"}
    # the status carries the render's progress within an item too: here the last master's
    # frames, all of them, with a rate and time left
    within = done["progress"]["within"]
    assert within["stage"] == "masters" and within["unit"] == "frames"
    assert within["done"] == within["total"] > 0 and within["eta"] == 0
    arts = httpx.get(done["artifacts_url"], headers=auth(alice)).json()["artifacts"]
    names = {a["name"] for a in arts}
    assert "report.json" in names and "timeline/plan.json" in names
    url = next(a["url"] for a in arts if a["name"].startswith("masters/")
               and a["name"].endswith("_web.mp4"))
    part = httpx.get(url, headers={**auth(alice), "Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100
    whole = httpx.get(url, headers=auth(alice))
    master = tmp_path / "web.mp4"
    master.write_bytes(whole.content)
    from aiprod_post.editing.conform import probe
    info = probe(master)
    assert info["video"]["codec"] == "h264" and info["video"]["width"] == 160
    # another token does not see the job; no token is refused
    assert httpx.get(done["status_url"], headers=auth(bob)).status_code == 404
    assert httpx.get(done["status_url"]).status_code == 401
    assert httpx.get(done["status_url"], headers=auth("aip_wrong")).status_code == 401
    # artifact names cannot leave the job's folder
    for name in ("../../aiprod.db", "..%2F..%2Faiprod.db", "%2e%2e/%2e%2e/aiprod.db",
                 ".cache/plan"):
        r = httpx.get(f"{server.url}/v1/jobs/{done['id']}/artifacts/{name}", headers=auth(alice))
        assert r.status_code == 404, name
    metrics = httpx.get(server.url + "/metrics", headers=auth(alice)).text
    assert 'aiprod_jobs{state="succeeded"}' in metrics and "aiprod_queue_depth" in metrics
    assert "/v1/jobs" in httpx.get(server.url + "/openapi.json", headers=auth(alice)).json()[
        "paths"]


def test_idempotency_key_makes_retries_safe(service):
    server, alice, _, _ = service
    headers = {**auth(alice), "Idempotency-Key": "retry-42"}
    body = {"script": SCRIPT, "profiles": ["web"], "width": 160, "height": 96}
    a = httpx.post(server.url + "/v1/jobs", json=body, headers=headers).json()
    b = httpx.post(server.url + "/v1/jobs", json=body, headers=headers).json()
    assert a["id"] == b["id"]
    wait(server, alice, a["id"])


@pytest.mark.parametrize("body,needle", [
    ({"script": "x" * 1_100_000}, "limit is 1000000"),
    ({"script": SCRIPT, "width": 7680, "height": 4320}, "resolution 7680x4320"),
    ({"script": SCRIPT, "profiles": ["cinema"]}, "unknown profile 'cinema'"),
    ({"script": SCRIPT, "plan": {}}, "exactly one of"),
    ({"script": "INT. A - DAY\n\n/* open"}, "unclosed boneyard"),
    ({"plan": {"schema_version": "ShotPlan.9", "scenes": []}}, "unknown schema version"),
    ({"script": SCRIPT, "colour": "red"}, "colour"),
])
def test_bad_requests_get_400_with_a_readable_reason(service, body, needle):
    server, alice, _, _ = service
    r = httpx.post(server.url + "/v1/jobs", json=body, headers=auth(alice))
    assert r.status_code == 400 and needle in r.json()["detail"]
    r = httpx.post(server.url + "/v1/jobs", content=b"{not json", headers=auth(alice))
    assert r.status_code == 400 and "not JSON" in r.json()["detail"]


def test_upload_a_script_file(service):
    server, alice, _, _ = service
    r = httpx.post(server.url + "/v1/jobs", headers=auth(alice),
                   files={"script": ("ferry.fountain", SCRIPT.encode())},
                   data={"profiles": "web", "width": "160", "height": "96"})
    assert r.status_code == 202
    assert wait(server, alice, r.json()["id"])["state"] == "succeeded"
    r = httpx.post(server.url + "/v1/jobs", headers=auth(alice),
                   files={"script": ("bad.fountain", b"\xff\xfe\x00")})
    assert r.status_code == 400 and "not UTF-8" in r.json()["detail"]


def test_cancel_a_running_job(service):
    server, alice, _, _ = service
    job = submit(server, alice, width=320, height=180, profiles=["web", "master"]).json()
    wait(server, alice, job["id"], states=("running",))
    r = httpx.delete(job["status_url"], headers=auth(alice))
    assert r.json()["state"] == "cancelled"
    time.sleep(1.0)
    assert httpx.get(job["status_url"], headers=auth(alice)).json()["state"] == "cancelled"


def test_webhook_is_signed(service):
    server, alice, alice_hook, _ = service
    received: list[tuple[dict, bytes]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        job = submit(server, alice,
                     callback_url=f"http://127.0.0.1:{hook.server_address[1]}/done").json()
        wait(server, alice, job["id"])
        deadline = time.monotonic() + 20
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        hook.shutdown()
    headers, body = received[0]
    expected = "sha256=" + hmac.new(alice_hook.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Aiprod-Signature"], expected)
    assert json.loads(body) == {**json.loads(body), "id": job["id"], "state": "succeeded"}


def test_a_restart_loses_no_job(tmp_path):
    alice, _ = token(tmp_path, "alice")
    server = Server(tmp_path).start()
    try:
        job = submit(server, alice, width=320, height=180).json()
        wait(server, alice, job["id"], states=("running",))
        time.sleep(1.5)
        server.kill()  # mid-render
        server = Server(tmp_path).start()
        done = wait(server, alice, job["id"])
        assert done["state"] == "succeeded"
    finally:
        server.kill()


def test_uploaded_music_is_probed_by_the_render_not_the_web_process(service, tmp_path):
    import numpy as np

    from aiprod_post.audio.io import write_wav
    server, alice, _, _ = service
    r = httpx.post(server.url + "/v1/jobs", headers=auth(alice),
                   files={"script": ("s.fountain", SCRIPT.encode()),
                          "music": ("theme.wav", b"RIFF this is not audio at all")},
                   data={"profiles": "web", "width": "160", "height": "96"})
    assert r.status_code == 202  # stored, not decoded, by the web process
    bad = wait(server, alice, r.json()["id"])
    assert bad["state"] == "failed" and "music upload is not audio" in bad["error"], bad
    assert str(server.data) not in bad["error"] and "/" not in bad["error"]
    t = np.arange(48000 * 2) / 48000
    wav = write_wav(tmp_path / "theme.wav", np.stack([0.2 * np.sin(2 * np.pi * 220 * t)] * 2, 1))
    r = httpx.post(server.url + "/v1/jobs", headers=auth(alice),
                   files={"script": ("s.fountain", SCRIPT.encode()),
                          "music": ("theme.wav", wav.read_bytes())},
                   data={"profiles": "web", "width": "160", "height": "96"})
    assert r.status_code == 202
    assert wait(server, alice, r.json()["id"])["state"] == "succeeded"


@pytest.mark.skipif(not os.environ.get("AIPROD_TEST_POSTGRES_URL"),
                    reason="set AIPROD_TEST_POSTGRES_URL to a PostgreSQL database to run")
def test_jobs_persist_in_postgresql(tmp_path):
    url = os.environ["AIPROD_TEST_POSTGRES_URL"]
    out = CliRunner().invoke(main, ["token", "create", f"pg-{os.getpid()}-{time.time_ns()}",
                                    "--data", str(tmp_path), "--db", url]).output
    tok = dict(line.split(": ", 1) for line in out.strip().splitlines())["token"]
    server = Server(tmp_path)
    server.proc = subprocess.Popen([sys.executable, "-m", "aiprod_post.cli", "serve", "--port",
                                    str(server.port), "--data", str(tmp_path), "--db", url],
                                   start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=open(tmp_path / "server.log", "ab"))
    try:
        for _ in range(200):
            try:
                if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        job = submit(server, tok).json()
        assert wait(server, tok, job["id"])["state"] == "succeeded"
    finally:
        server.kill()
    import sqlalchemy
    with sqlalchemy.create_engine(url).connect() as c:
        state = c.execute(sqlalchemy.text("select state from jobs where id = :i"),
                          {"i": job["id"]}).scalar()
    assert state == "succeeded"


def test_migration_0002_keeps_the_oldest_job_of_a_repeated_idempotency_key(tmp_path):
    import sqlite3

    import sqlalchemy
    from alembic import command
    from alembic.config import Config

    from aiprod_post.service.db import Job, connect

    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent.parent / "aiprod_post" /
                                               "service" / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0001")  # a database from before the unique key, with the race's debris
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("insert into tokens values (1, 't', 'h', 'w', '2026-01-01')")
        for i, created in enumerate(["2026-01-01 00:00:03", "2026-01-01 00:00:01",
                                     "2026-01-01 00:00:02"]):
            db.execute("insert into jobs (id, token_id, state, progress, request, "
                       "idempotency_key, created, timings) values (?, 1, 'queued', '{}', '{}', "
                       "'k', ?, '{}')", (f"job{i}", created))
    sessions = connect(url)  # migrates to the newest revision
    with sessions() as s:
        keys = {j.id: j.idempotency_key for j in s.query(Job)}
    assert keys == {"job0": None, "job1": "k", "job2": None}
    with pytest.raises(sqlalchemy.exc.IntegrityError), sessions.begin() as s:
        s.add(Job(id="job3", token_id=1, state="queued", request={}, progress={}, timings={},
                  idempotency_key="k"))


def test_estimates_learn_from_the_services_own_finished_jobs(tmp_path, example_path):
    """A fresh server estimates from the reference table; once a job has succeeded, from
    what that job measured (its report and plan in the job's folder)."""
    server = Server(tmp_path).start()
    try:
        tok, _ = token(tmp_path, "estimator")
        body = {"script": example_path.read_text(), "width": 160, "height": 96,
                "profiles": ["web"]}
        first = httpx.post(server.url + "/v1/estimates", headers=auth(tok), json=body).json()
        assert set(first["from"].values()) == {"reference table"}
        job = submit(server, tok).json()
        assert wait(server, tok, job["id"])["state"] == "succeeded"
        after = httpx.post(server.url + "/v1/estimates", headers=auth(tok), json=body).json()
        assert after["from"]["generation"] == "1 earlier render(s)"
        assert after["stages"]["generation"] != first["stages"]["generation"]
    finally:
        server.kill()


def test_estimates_through_the_api(service, example_path):
    server, alice, _, _ = service
    r = httpx.post(server.url + "/v1/estimates", headers=auth(alice),
                   json={"script": example_path.read_text(), "engine": "ltx", "width": 768,
                         "height": 512, "price_per_gpu_hour": 2.5})
    assert r.status_code == 200, r.text
    est = r.json()
    assert est["frames"] > 2000 and est["total_seconds"] > 0
    assert set(est["stages"]) >= {"speech", "generation", "mix", "masters"}
    assert est["gpu"]["gpu"] and est["gpu"]["cost"] == pytest.approx(
        est["gpu"]["gpu_hours"] * 2.5, abs=0.01)
    for body, needle in [({"engine": "animatic"}, "exactly one of script"),
                         ({"script": "x", "profiles": ["cinema"]}, "cinema"),
                         ({"script": "x", "engine": "sora"}, "engine"),
                         ({"script": "x", "_music": 1}, "_music")]:
        r = httpx.post(server.url + "/v1/estimates", headers=auth(alice), json=body)
        assert r.status_code == 400 and needle in r.text, (body, r.text)
    assert httpx.post(server.url + "/v1/estimates", json={"script": "x"}).status_code == 401
