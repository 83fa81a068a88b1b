"""Service benchmark: 20 short jobs submitted at once to a local server (127.0.0.1).

Reports queue latency (submit → running) and end-to-end times, throughput, the server's
peak memory (its own process; renders run in child processes, reported separately), and
checks that every job is accounted for. ``python benchmarks/bench_service.py [--jobs 20]
[--workers 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

SCRIPT = """EXT. PIER - DUSK

Gulls over the water. NELL waits.

NELL
Ferry's gone.
"""


def vm(pid: int, key: str) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp())
    out = subprocess.run([sys.executable, "-m", "aiprod_post.cli", "token", "create", "bench",
                          "--data", str(data)], capture_output=True, text=True, check=True).stdout
    token = out.split("token: ")[1].split()[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "aiprod_post.cli", "serve", "--port",
                               str(port), "--data", str(data), "--workers", str(args.workers)],
                              start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        body = {"script": SCRIPT, "profiles": ["web"], "width": 160, "height": 96}
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.jobs) as pool:
            responses = list(pool.map(lambda i: httpx.post(url + "/v1/jobs", json=body,
                                                           headers=headers, timeout=60),
                                      range(args.jobs)))
        submitted = time.monotonic() - t0
        ids = [r.json()["id"] for r in responses if r.status_code == 202]
        started: dict[str, float] = {}
        finished: dict[str, float] = {}
        peak_server = 0.0
        while len(finished) < len(ids) and time.monotonic() - t0 < 1800:
            peak_server = max(peak_server, vm(server.pid, "VmRSS"))
            for job_id in ids:
                if job_id in finished:
                    continue
                job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers).json()
                now = time.monotonic() - t0
                if job["state"] != "queued" and job_id not in started:
                    started[job_id] = now
                if job["state"] in ("succeeded", "failed", "cancelled"):
                    finished[job_id] = now
            time.sleep(0.25)
        states = {}
        for job_id in ids:
            s = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers).json()["state"]
            states[s] = states.get(s, 0) + 1
        total = max(finished.values()) if finished else float("nan")
        lat = sorted(started.values())
        print(json.dumps({
            "benchmark": "service", "jobs": args.jobs, "workers": args.workers,
            "accepted": len(ids), "states": states,
            "all_accounted_for": len(ids) == args.jobs and states.get("succeeded", 0) == args.jobs,
            "submit_seconds": round(submitted, 3),
            "queue_latency_seconds": {"min": round(lat[0], 2), "median": round(lat[len(lat) // 2], 2),
                                      "max": round(lat[-1], 2)} if lat else None,
            "all_done_seconds": round(total, 2),
            "throughput_jobs_per_minute": round(60 * len(finished) / total, 2) if finished else 0,
            "server_peak_rss_mib": round(peak_server, 1),
            "server_vmhwm_mib": round(vm(server.pid, "VmHWM"), 1),
        }))
    finally:
        os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
