"""Conform benchmark: the web master rendered from an OTIO timeline by ``editing.conform``,
beside the FFmpeg command line encoding the same frames (the same shot files and cut points,
via its concat demuxer) and moviepy assembling the same shots, all three at the same encoder
settings (profile, preset, CRF, closed 2-s GOP, B-frames, VBV, level: ``_ffmpeg.x264``);
the ProRes master beside FFmpeg's. Runs are interleaved, ``--rounds`` times, best kept.

Equal work first: times are compared only when the files have the same frame count and
keyframes and are within 10 % of each other in size (``comparable``); otherwise the
figures are printed with the reason and no ratio.

Also peak memory of conform on a 1-minute and a 10-minute timeline (640x360, each in its
own process) with ``--memory``: frames stream, so the two should be within 10 %.

Prints one JSON line. Targets (issue 23): conform within 1.05x of FFmpeg's time, at least
1.2x faster than moviepy. Beside the wall times, each tool's processor seconds (all its
threads and processes): on a machine shared with other work they show the work done when
the wall times mostly show the neighbours. moviepy runs in its own process, under ``--moviepy-python``
(default: this interpreter; ``pip install .[bench]``).
``python benchmarks/bench_conform.py [--size 1920x1080] [--shots 8] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import opentimelineio as otio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ffmpeg import PRORES, concat_list, encode, ffmpeg, x264  # noqa: E402

from aiprod_post.planner import PlannerSettings, plan_source  # noqa: E402
from aiprod_post.audio.io import write_wav  # noqa: E402
from aiprod_post.editing.conform import PROFILES, conform, encode_master, probe  # noqa: E402
from aiprod_post.editing.timeline import ShotMedia, TimelineMedia, build_timeline, handles_for  # noqa: E402
from aiprod_post.generation.engine import KeyframeStore, RenderContext, engine_by_name  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "the_last_ferry.fountain"


def make_media(folder: Path, width: int, height: int, shots: int):
    plan, _ = plan_source(EXAMPLE, PlannerSettings(width=width, height=height))
    keep = {s.id for _, s in plan.shots()[:shots]}
    scenes = []
    for sc in plan.scenes:
        kept = [s for s in sc.shots if s.id in keep]
        if kept:
            scenes.append(sc.model_copy(update={"shots": kept}))
    plan = plan.model_copy(update={"scenes": scenes})
    engine, store, hand = engine_by_name("animatic"), KeyframeStore(), handles_for(plan)
    media = {}
    for sc, sh in plan.shots():
        h, t = hand[sh.id]
        longer = sh.model_copy(update={"duration": sh.duration + h + t})
        r = engine.render(longer, RenderContext(sc, width, height, plan.fps,
                                                store.for_shot(sc, sh)))
        path = folder / f"{sh.id}.mov"
        encode_master(iter(r), longer.duration, plan.fps, width, height, path,
                      PROFILES["prores"], None)
        store.add_shot(sc, sh, r.keyframes)
        media[sh.id] = ShotMedia(path, longer.duration, h)
    n = plan.duration
    rng = np.random.default_rng(0)
    mix = folder / "mix.wav"
    write_wav(mix, rng.standard_normal((int(n * 48000 / plan.fps), 2)) * 0.05)
    return plan, media, mix


def peak_rss_of_conform(otio_path: Path, out: Path) -> float:
    # VmHWM, not ru_maxrss: after fork+exec, ru_maxrss still counts the parent's pages
    code = ("from aiprod_post.editing.conform import conform; "
            f"conform({str(otio_path)!r}, {str(out)!r}, 'h264'); "
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(res.stdout.strip().splitlines()[-1]) / 1024


def cuts_only(tl: otio.schema.Timeline) -> None:
    """Transitions removed, so FFmpeg's concat and moviepy can cut exactly the same frames."""
    for track in tl.tracks:
        for item in list(track):
            if isinstance(item, otio.schema.Transition):
                track.remove(item)


def long_timeline(tl: otio.schema.Timeline, repeats: int) -> otio.schema.Timeline:
    """The same cuts over and over: a longer film from the same media."""
    out = otio.schema.Timeline(name="long", metadata=dict(tl.metadata))
    out.global_start_time = tl.global_start_time
    v = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    clips = [c for c in tl.tracks[0] if isinstance(c, otio.schema.Clip)]
    for _ in range(repeats):
        for c in clips:
            v.append(c.clone())
    out.tracks.append(v)
    return out


MOVIEPY = """
import json, sys, time
from moviepy import AudioFileClip, VideoFileClip, concatenate_videoclips
spec = json.load(open(sys.argv[1]))
t0 = time.perf_counter()
# moviepy reads a file's duration to 1/100 s: a range to the file's last frame can end
# past it, so the end is held to what it read (the frame count is checked afterwards)
clips = [(lambda c: c.subclipped(a, min(b, c.duration)))(VideoFileClip(p, audio=False))
         for p, a, b in spec["clips"]]
film = concatenate_videoclips(clips)
film = film.with_audio(AudioFileClip(spec["mix"]).subclipped(0, film.duration))
film.write_videofile(spec["out"], fps=spec["fps"], codec="libx264", preset=spec["preset"],
                     audio_codec="aac", audio_bitrate="256k", ffmpeg_params=spec["params"],
                     pixel_format="yuv420p", logger=None)
print(time.perf_counter() - t0)
"""


def moviepy_assembly(python: str, clips, rate: Fraction, mix: Path, out: Path, folder: Path,
                     args: list[str]) -> float | str:
    """Seconds moviepy takes to cut the same shots together and encode them with the same
    x264 settings (its own process), or why it could not run."""
    script, spec = folder / "moviepy_assembly.py", folder / "moviepy_spec.json"
    script.write_text(MOVIEPY)
    # the x264 settings without the ones moviepy passes itself (codec, preset, audio, pix_fmt)
    skip = {"-c:v", "-preset", "-c:a", "-b:a", "-pix_fmt"}
    params = [a for k, a in enumerate(args)
              if a not in skip and (k == 0 or args[k - 1] not in skip)]
    spec.write_text(json.dumps({
        "clips": [(str(p), float(Fraction(first) / rate), float(Fraction(first + n) / rate))
                  for p, first, n in clips],
        "mix": str(mix), "out": str(out), "fps": float(rate), "params": params,
        "preset": args[args.index("-preset") + 1]}))
    res = subprocess.run([python, str(script), str(spec)], capture_output=True, text=True)
    if res.returncode:
        return "moviepy failed: " + (res.stderr.strip().splitlines() or ["?"])[-1]
    return float(res.stdout.strip().splitlines()[-1])


def encoded(path: Path) -> dict:
    """What is compared for equal work: frames, keyframes, size, bitrate."""
    v = probe(path)["video"]
    return {"frames": v["frames"], "keyframes": v["keyframes"], "reordered": v["reordered"],
            "mbytes": round(path.stat().st_size / 1e6, 3), "kbps": v["kbps"]}


def summary(f: dict) -> dict:
    return {**f, "keyframes": len(f["keyframes"])}


def equal_work(files: dict[str, dict], reference: str) -> tuple[bool, list[str]]:
    """The frames of ``reference`` to 1 % (moviepy's cutting drops a frame here and there:
    said in ``files``), keyframes at the same frames, sizes within 10 %."""
    ref, why = files[reference], []
    for name, f in files.items():
        if abs(f["frames"] - ref["frames"]) > ref["frames"] // 100:
            why.append(f"{name}: {f['frames']} frames, {reference} {ref['frames']}")
        shared = min(f["frames"], ref["frames"])
        if [k for k in f["keyframes"] if k < shared] != \
                [k for k in ref["keyframes"] if k < shared]:
            why.append(f"{name}: {len(f['keyframes'])} keyframes, {reference} "
                       f"{len(ref['keyframes'])}")
        if abs(f["mbytes"] / ref["mbytes"] - 1) > 0.10:
            why.append(f"{name}: {f['mbytes']} MB, {reference} {ref['mbytes']} MB (over 10 %)")
    return not why, why


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--moviepy-python", default=sys.executable)
    ap.add_argument("--memory", action="store_true", help="also peak memory, 1 vs 10 minutes")
    ap.add_argument("--segments", type=float, default=0, metavar="SECONDS",
                    help="also the parallel segment encoder, 1 vs 2 workers, on a film this "
                         "long (the shots repeated) at --segments-size")
    ap.add_argument("--segments-size", default="960x540")
    ap.add_argument("--only-segments", action="store_true")
    ap.add_argument("--ray", action="store_true",
                    help="with --segments: also the segments as Ray tasks on a local cluster "
                         "of 1 and of 2 nodes of one CPU each (needs aiprod-post[ray])")
    args = ap.parse_args()
    if not ffmpeg():
        print(json.dumps({"benchmark": "conform", "error": "ffmpeg command not found"}))
        return
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.only_segments:
            print(json.dumps({"benchmark": "conform", "segments": segments(
                folder, args.shots, args.segments_size, args.segments or 90, args.rounds,
                args.ray)}))
            return
        plan, media, mix = make_media(folder, w, h, args.shots)
        tl = build_timeline(plan, TimelineMedia(media, mix=mix))
        cuts_only(tl)
        n = plan.duration
        rate = plan.fps
        result: dict = {"benchmark": "conform", "size": args.size, "frames": n,
                        "seconds_of_film": round(float(n / rate), 2), "rounds": args.rounds,
                        "cores": os.cpu_count(),
                        "caveat": "shared machine: runs interleaved, best of rounds"}
        clips = [(media[c.name].path, int(c.source_range.start_time.value),
                  int(c.source_range.duration.value)) for c in tl.tracks[0].find_clips()]
        concat = concat_list(clips, rate, folder)
        web = x264(w, h, rate)
        runs: dict[str, Callable[[Path], object]] = {
            "conform": lambda out: conform(tl, out, "h264", audio=mix),
            "ffmpeg": lambda out: encode(concat, mix, rate, n, web, out),
            "moviepy": lambda out: moviepy_assembly(args.moviepy_python, clips, rate, mix, out,
                                                    folder, web),
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        failed: dict[str, str] = {}
        load = [round(os.getloadavg()[0], 1)]
        for _ in range(args.rounds):
            for name, run in runs.items():
                if name in failed:
                    continue
                c0, t0 = _cpu(), time.perf_counter()
                said = run(folder / f"{name}.mp4")
                if isinstance(said, str):
                    failed[name] = said
                else:  # moviepy says its own time, its interpreter's start left out
                    times[name].append(said if isinstance(said, float)
                                       else time.perf_counter() - t0)
                    cpu[name].append(_cpu() - c0)
                load.append(round(os.getloadavg()[0], 1))
        files = {k: encoded(folder / f"{k}.mp4") for k in runs if k not in failed}
        # each tool held to conform's file on its own: one tool's difference does not void
        # the other's comparison
        checks = {k: equal_work({"conform": files["conform"], k: files[k]}, "conform")
                  for k in files if k != "conform"}
        why = [w for _, reasons in checks.values() for w in reasons]
        web_result: dict = {
            "settings": " ".join(web),
            "seconds": {k: round(min(v), 2) for k, v in times.items() if v},
            # processor seconds (user + system, all threads and child processes): the work
            # done, which other load on a shared machine barely moves (wall time it does)
            "cpu_seconds": {k: round(min(v), 2) for k, v in cpu.items() if v},
            "load_average_1min": load,
            "files": {k: summary(f) for k, f in files.items()},
            "comparable": {k: ok for k, (ok, _) in checks.items()},
            "not_comparable_because": why, "failed": failed,
            "target_vs_ffmpeg": 1.05, "target_speedup_vs_moviepy": 1.2}
        best = web_result["seconds"]
        work = web_result["cpu_seconds"]
        if checks.get("ffmpeg", (False,))[0]:
            web_result["ratio_vs_ffmpeg"] = round(best["conform"] / best["ffmpeg"], 3)
            web_result["cpu_ratio_vs_ffmpeg"] = round(work["conform"] / work["ffmpeg"], 3)
        if checks.get("moviepy", (False,))[0]:
            web_result["speedup_vs_moviepy"] = round(best["moviepy"] / best["conform"], 3)
            web_result["cpu_speedup_vs_moviepy"] = round(work["moviepy"] / work["conform"], 3)
        result["h264"] = web_result
        t0 = time.perf_counter()
        conform(tl, folder / "ours.mov", "prores", audio=mix)
        ours = time.perf_counter() - t0
        # the same work: conform copies the shots' ProRes frames of plain cuts, so FFmpeg
        # copies them too (-c:v copy through its concat demuxer)
        copy = ["-c:v", "copy", *PRORES[PRORES.index("-c:a"):]]
        theirs = encode(concat, mix, rate, n, copy, folder / "ffmpeg.mov")
        result["prores"] = {"conform_seconds": round(ours, 2),
                            "ffmpeg_copy_seconds": round(theirs, 2),
                            "ratio": round(ours / theirs, 3), "target_ratio": 1.2,
                            "files": {k: summary(encoded(folder / f"{k}.mov"))
                                      for k in ("ours", "ffmpeg")}}
        if args.memory:
            result.update(memory(folder, args.shots))
        if args.segments:
            result["segments"] = segments(folder, args.shots, args.segments_size, args.segments,
                                          args.rounds, args.ray)
    print(json.dumps(result))


def _cpu() -> float:
    """Processor seconds so far of this process and its finished children."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def _timed(work: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    work()
    return time.perf_counter() - t0


def segments(folder: Path, shots: int, size: str, seconds: float, rounds: int,
             on_ray: bool = False) -> dict:
    """The segment encoder's efficiency: the same long film by conform in one process and
    by the segment encoder with 1 worker process and with 2, interleaved; the outputs
    checked for equal work and decoded by the ffmpeg command. Then its parts, for the
    projection to more cores: each segment encoded alone with one encoder thread (the
    work a core does), the join alone (serial), a worker interpreter's start. ``on_ray``:
    also as Ray tasks (the render's masters stage on a cluster) on a local cluster of one
    node and of two, one CPU each."""
    import aiprod_post.editing.conform as conform_module

    w, h = (int(v) for v in size.split("x"))
    seg = folder / "seg"
    seg.mkdir()
    plan, media, mix = make_media(seg, w, h, shots)
    short = build_timeline(plan, TimelineMedia(media))
    cuts_only(short)
    tl = long_timeline(short, max(1, round(seconds / short.duration().to_seconds())))
    rate = plan.fps
    n = sum(int(c.source_range.duration.value) for c in tl.tracks[0].find_clips())
    long_mix = seg / "long_mix.wav"
    write_wav(long_mix, np.random.default_rng(1).standard_normal(
        (int(n * 48000 / rate), 2)) * 0.05)
    prof = PROFILES["h264"]
    runs = {
        "one_process": lambda out: conform(tl, out, "h264", audio=long_mix),
        # the segment encoder itself with one worker process: what 2 workers are measured on
        "segments_1_worker": lambda out: conform(
            tl, out, "h264", audio=long_mix, segments=conform_module.segments_in_processes(1)),
        "segments_2_workers": lambda out: conform(tl, out, "h264", audio=long_mix, workers=2),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            c0 = _cpu()
            times[name].append(_timed(lambda: run(seg / f"{name}.mp4")))
            cpu[name].append(_cpu() - c0)
    files = {k: encoded(seg / f"{k}.mp4") for k in runs}
    same, why = equal_work(files, "one_process")
    decodes = {}
    for k in runs:
        res = subprocess.run([ffmpeg(), "-v", "error", "-xerror", "-i", str(seg / f"{k}.mp4"),
                              "-f", "null", "-"], capture_output=True, text=True)
        decodes[k] = "clean" if res.returncode == 0 and not res.stderr.strip() else \
            res.stderr.strip()[-200:]
    # the parts: segments one by one, one encoder thread each; the join alone
    text = otio.adapters.write_to_string(tl, "otio_json")
    ranges = conform_module.segment_ranges(conform_module.master_keyframes(tl, prof), n,
                                           max(2, round(n / (8 * 48))))
    one_thread = []
    for k, (first, stop) in enumerate(ranges):
        one_thread.append(_timed(lambda: conform_module.encode_segment(
            text, None, prof, first, stop, str(seg / f"part{k}.mp4"), threads=1)))
    join = _timed(lambda: conform_module.join_segments(
        [(seg / f"part{k}.mp4", r[0]) for k, r in enumerate(ranges)], seg / "joined.mp4", prof,
        long_mix, rate, n))
    start = _timed(lambda: subprocess.run(
        [sys.executable, "-c", "import aiprod_post.editing.conform"], check=True))
    best = {k: min(v) for k, v in times.items()}
    t1, t2 = best["segments_1_worker"], best["segments_2_workers"]
    work = sum(one_thread)

    gops = len(conform_module.master_keyframes(tl, prof))

    def projected(cores: int) -> float:
        # as many segments as cores (down to one GOP each), one encoder thread per core,
        # the join overlapping them, one interpreter start
        return round(start + max(work / min(cores, gops), join), 1)

    result = {"size": size, "frames": n, "seconds_of_film": round(float(n / rate), 1),
            "seconds": {k: round(v, 2) for k, v in best.items()},
            # the segment workers' processor seconds too: what splitting the film costs
            "cpu_seconds": {k: round(min(v), 2) for k, v in cpu.items()},
            "speedup_2_workers": round(t1 / t2, 3),
            "efficiency_2_workers": round(t1 / (2 * t2), 3),
            "parts": {"segments": len(ranges), "gops": gops,
                      "encode_one_thread_seconds": round(work, 1),
                      "longest_segment_seconds": round(max(one_thread), 1),
                      "join_seconds": round(join, 2), "interpreter_start_seconds": round(start, 2)},
            "projected_seconds": {f"{c}_cores": projected(c) for c in (2, 8, 32)},
            "files": {k: summary(f) for k, f in files.items()},
            "comparable": same, "not_comparable_because": why, "ffmpeg_decode": decodes}
    if on_ray:
        result["ray"] = ray_segments(tl, long_mix, seg, rounds, files["one_process"])
    return result


def ray_segments(tl, mix: Path, folder: Path, rounds: int, reference: dict) -> dict:
    """The same film's segments as Ray tasks of one CPU (one encoder thread) each, as a
    render with ``--executor ray`` and ``[output] workers = 2`` encodes them, on a local
    cluster of one node of one CPU and then of two: wall time (the tasks' processor time
    is spent in the cluster's workers, not counted here), where they ran, the file held
    to the one-process encode's. The first run on each cluster is a warm-up (Ray starts
    its worker processes)."""
    from ray.cluster_utils import Cluster

    from aiprod_post.executors.ray import RayExecutor
    from aiprod_post.stages.masters import segments_on

    node = {"num_cpus": 1, "object_store_memory": 100 * 1024 ** 2}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    out: dict = {"seconds": {}, "nodes_used": {}}
    try:
        for nodes in (1, 2):
            if nodes == 2:
                cluster.add_node(**node)
            cluster.wait_for_nodes()
            name = f"ray_{nodes}_node{'s' if nodes > 1 else ''}"
            path = folder / f"{name}.mp4"
            times, used = [], set()
            with RayExecutor(cluster.address) as executor:
                for _ in range(rounds + 1):
                    placed: dict = {}
                    times.append(_timed(lambda: conform(
                        tl, path, "h264", audio=mix, workers=2,
                        segments=segments_on(executor, placed))))
                    used |= {p["node"] for p in placed.values()}
            out["seconds"][name] = round(min(times[1:]), 2)
            out["nodes_used"][name] = len(used)
            made = encoded(path)
            out.setdefault("files", {})[name] = summary(made)
            same, why = equal_work({"one_process": reference, name: made}, "one_process")
            out.setdefault("comparable", {})[name] = same
            out.setdefault("not_comparable_because", []).extend(why)
    finally:
        cluster.shutdown()
    t1, t2 = out["seconds"]["ray_1_node"], out["seconds"]["ray_2_nodes"]
    out["speedup_2_nodes"] = round(t1 / t2, 3)
    out["efficiency_2_nodes"] = round(t1 / (2 * t2), 3)
    return out


def memory(folder: Path, shots: int) -> dict:
    """Peak memory of conform on a 1- and a 10-minute timeline (the same media, 640x360)."""
    (folder / "small").mkdir()
    small_plan, small_media, _ = make_media(folder / "small", 640, 360, shots)
    small = build_timeline(small_plan, TimelineMedia(small_media))
    cuts_only(small)
    per = small.duration().to_seconds()
    rss = {}
    for minutes in (1, 10):
        reps = max(1, round(minutes * 60 / per))
        long = long_timeline(small, reps)
        p = folder / f"long{minutes}.otio"
        otio.adapters.write_to_file(long, str(p))
        rss[f"{minutes}min"] = round(peak_rss_of_conform(p, folder / f"long{minutes}.mp4"), 1)
    return {"peak_rss_mib": rss, "rss_growth": round(rss["10min"] / rss["1min"] - 1, 3),
            "rss_target_growth": 0.10,
            "peak_rss_self_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                       1)}


if __name__ == "__main__":
    main()
