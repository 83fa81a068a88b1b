"""A long-GOP master's segments as tasks on a real local Ray cluster (a head and one more
node, one CPU each): joined by the driver into a valid stream that matches a
single-process encode of the same timeline, its segments encoded in the cluster's workers."""

from __future__ import annotations

import glob
import json
import os
import signal
import threading
import time

import av
import opentimelineio as otio
import pytest

from aiprod_post.editing.conform import conform, timeline_frames, verify_master
from aiprod_post.editing.timeline import path_to_url
from aiprod_post.errors import MediaError
from aiprod_post.executors.ray import RayExecutor
from aiprod_post.pipeline import RenderOptions, render
from aiprod_post.project import OutputSettings, Project
from aiprod_post.stages.masters import segments_on

from test_masters import decode_order, film, psnr, strict_decode  # noqa: F401 (a fixture)
from test_pipeline import SMALL, write_script

ray = pytest.importorskip("ray")
from test_ray import cluster  # noqa: E402,F401 (a fixture: a head and one more node)


def _node_ids(address: str) -> set[str]:
    ray.init(address=address, log_to_driver=False)
    try:
        return {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()


def _packets(path) -> list[tuple[int, int]]:
    with av.open(str(path)) as c:
        return [(p.pts, p.dts) for p in c.demux(video=0) if p.size]


def test_segments_as_tasks_on_the_cluster_join_into_the_single_encode(cluster, film,
                                                                       tmp_path):
    folder, tl = film
    one = conform(tl, tmp_path / "one.mp4", "h264", audio=folder / "mix.wav")
    placed: dict = {}
    with RayExecutor(cluster.address) as executor:
        two = conform(tl, tmp_path / "two.mp4", "h264", audio=folder / "mix.wav", workers=2,
                      segments=segments_on(executor, placed))
    # the same timestamps, decode order and keyframes, packet by packet, and the audio
    assert decode_order(two) == decode_order(one)
    assert _packets(two) == _packets(one)
    with av.open(str(one)) as a, av.open(str(two)) as b:
        assert b.streams.audio[0].frames == a.streams.audio[0].frames > 0
    # a valid stream: FFmpeg's decoder, told to stop at the first damaged bit, reads it all
    single, joined = strict_decode(one), strict_decode(two)
    assert len(joined) == len(single) == 180
    assert [(p, k) for p, k, _ in joined] == [(p, k) for p, k, _ in single]
    assert [k for k, (_, key, _) in enumerate(joined) if key] == [0, 48, 96, 144]
    # pictures within CRF noise: as close to the source as the single encode, frame by frame
    for (_, _, x), (_, _, y), src in zip(single, joined, timeline_frames(tl, folder)):
        assert abs(psnr(y, src) - psnr(x, src)) < 1.5
        assert psnr(x, y) > 38
    assert verify_master(two, tl, "h264")["ok"]
    assert not list(tmp_path.glob(".segments-*"))  # the segments are cleaned up
    # two segments of two GOPs, each a task in a worker process of the cluster: one CPU
    # per node, both at once, so one on each node
    assert sorted(placed) == ["0-96", "96-180"]
    assert all(p["worker"] != os.getpid() and p["seconds"] > 0 and p["waited_s"] >= 0
               for p in placed.values())
    assert {p["node"] for p in placed.values()} == _node_ids(cluster.address)


def _segment_writers(folder) -> set[int]:
    """Processes with a half-written segment (an encoder's .part file) open under ``folder``."""
    pids = set()
    for fd in glob.glob("/proc/[0-9]*/fd/*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(folder)) and "/.segments-" in target and ".part." in target:
            pids.add(int(fd.split("/")[2]))
    return pids


def test_a_worker_killed_mid_segment_is_retried_to_the_same_master(cluster, film, tmp_path):
    folder, tl = film
    one = conform(tl, tmp_path / "one.mp4", "h264", audio=folder / "mix.wav")
    killed: list[int] = []

    def kill_a_segment_encoder() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for pid in _segment_writers(tmp_path) - {os.getpid()}:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    placed: dict = {}
    with RayExecutor(cluster.address) as executor:
        killer = threading.Thread(target=kill_a_segment_encoder)
        killer.start()
        try:
            two = conform(tl, tmp_path / "two.mp4", "h264", audio=folder / "mix.wav",
                          workers=2, segments=segments_on(executor, placed))
        finally:
            killer.join()
    assert len(killed) == 1, "no segment encoder was caught mid-segment"
    # its segment was encoded again by another process, and the master is whole
    assert sorted(placed) == ["0-96", "96-180"]
    assert killed[0] not in {p["worker"] for p in placed.values()}
    assert _packets(two) == _packets(one)
    assert len(strict_decode(two)) == 180 and verify_master(two, tl, "h264")["ok"]
    assert not list(tmp_path.glob(".segments-*"))


def test_a_render_on_the_cluster_encodes_its_web_master_in_segment_tasks(cluster, tmp_path):
    script = write_script(tmp_path)
    single = render(script, tmp_path / "single", RenderOptions(**SMALL, profiles=["web"]))
    project = Project(output=OutputSettings(workers=2))
    result = render(script, tmp_path / "out", RenderOptions(
        **SMALL, project=project, profiles=["web"], executor="ray", address=cluster.address))
    assert result.exit_code == 0, result.failed_shots
    # the local single-process master's packets, timestamps and keyframes; pictures within
    # CRF noise of its
    one, two = single.masters["web"], result.masters["web"]
    assert _packets(two) == _packets(one)
    a, b = strict_decode(one), strict_decode(two)
    assert len(a) == len(b) and [k for _, k, _ in a] == [k for _, k, _ in b]
    assert min(psnr(x, y) for (_, _, x), (_, _, y) in zip(a, b)) > 35
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["master_checks"]["web"]["ok"], report["master_checks"]["web"]
    # where each segment ran, by its frames: they tile the film, in the cluster's workers
    placed = report["segment_placement"]["web"]
    spans = sorted(tuple(map(int, k.split("-"))) for k in placed)
    assert len(spans) >= 2 and spans[0][0] == 0
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    with av.open(str(result.masters["web"])) as c:
        assert c.streams.video[0].frames == spans[-1][1]
    nodes = _node_ids(cluster.address)
    assert all(p["worker"] != os.getpid() and p["node"] in nodes and p["seconds"] > 0
               for p in placed.values())
    # picture QA measured on the decoded master (no frame passed through the driver)
    assert next(iter(report["qa"].values()))["measured_on"].endswith("decoded")


def test_a_segment_task_that_fails_fails_the_master_cleanly(cluster, film, tmp_path):
    folder, tl = film
    broken = tl.clone()
    last = list(broken.tracks[0].find_clips())[-1]
    last.media_reference = otio.schema.ExternalReference(path_to_url(folder / "gone.mov"))
    placed: dict = {}
    with RayExecutor(cluster.address) as executor, \
            pytest.raises(MediaError, match="shot2 is missing"):
        conform(broken, tmp_path / "x.mp4", "h264", audio=folder / "mix.wav", workers=2,
                segments=segments_on(executor, placed))
    assert list(tmp_path.iterdir()) == []  # no master, no part file, no segments


def test_a_segment_written_where_the_driver_cannot_see_it_is_named(film, tmp_path):
    """A worker that writes its segments on a disk of its own (the folder not shared):
    the runner says they are written, the driver finds nothing and says so."""
    folder, tl = film
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def on_another_disk(text, segments):
        for s in segments:
            s.encode(text, threads=1)
            os.replace(s.output, elsewhere / os.path.basename(s.output))
            yield s.index

    with pytest.raises(MediaError, match="every worker shares"):
        conform(tl, tmp_path / "x.mp4", "h264", audio=folder / "mix.wav",
                segments=on_another_disk)
    assert [p.name for p in tmp_path.iterdir()] == ["elsewhere"]  # no master, no segments
