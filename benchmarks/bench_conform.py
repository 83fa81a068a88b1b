"""Conform benchmark: masters rendered from an OTIO timeline by ``editing.conform``, beside
the FFmpeg command line encoding the same frames (the same shot files and cut points, via
its concat demuxer) to the same codecs with the same settings, in one run.

Also peak memory of conform on a 1-minute and a 10-minute timeline (640x360, each in its
own process): frames stream, so the two should be within 10 %.

Prints one JSON line. Target (issue 5): conform at most 1.2x FFmpeg's time.
``python benchmarks/bench_conform.py [--size 1920x1080] [--shots 8]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import opentimelineio as otio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ffmpeg import PRORES, X264, concat_list, encode, ffmpeg  # noqa: E402

from aiprod_post.planner import PlannerSettings, plan_source  # noqa: E402
from aiprod_post.audio.io import write_wav  # noqa: E402
from aiprod_post.editing.conform import PROFILES, conform, encode_master  # noqa: E402
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--shots", type=int, default=8)
    args = ap.parse_args()
    if not ffmpeg():
        print(json.dumps({"benchmark": "conform", "error": "ffmpeg command not found"}))
        return
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plan, media, mix = make_media(folder, w, h, args.shots)
        tl = build_timeline(plan, TimelineMedia(media, mix=mix))
        # cuts only, so FFmpeg's concat can encode exactly the same frames
        for track in tl.tracks:
            for item in list(track):
                if isinstance(item, otio.schema.Transition):
                    track.remove(item)
        n = plan.duration
        rate = plan.fps
        result = {"benchmark": "conform", "size": args.size, "frames": n,
                  "seconds_of_film": round(float(n / rate), 2)}
        clips = [(media[c.name].path, int(c.source_range.start_time.value),
                  int(c.source_range.duration.value)) for c in tl.tracks[0].find_clips()]
        concat = concat_list(clips, rate, folder)
        for prof, codec, suffix in (("h264", X264, ".mp4"), ("prores", PRORES, ".mov")):
            t0 = time.perf_counter()
            conform(tl, folder / f"ours{suffix}", prof, audio=mix)
            ours = time.perf_counter() - t0
            theirs = encode(concat, mix, rate, n, codec, folder / f"ffmpeg{suffix}")
            result[prof] = {"conform_seconds": round(ours, 2), "ffmpeg_seconds": round(theirs, 2),
                            "ratio": round(ours / theirs, 3), "target_ratio": 1.2}
        # memory: 1 and 10 minutes, same media, 640x360 keeps this quick
        small_plan, small_media, _ = make_media(folder / "small", 640, 360, args.shots) \
            if (folder / "small").mkdir() is None else (None, None, None)
        small = build_timeline(small_plan, TimelineMedia(small_media))
        for track in small.tracks:
            for item in list(track):
                if isinstance(item, otio.schema.Transition):
                    track.remove(item)
        per = small.duration().to_seconds()
        rss = {}
        for minutes in (1, 10):
            reps = max(1, round(minutes * 60 / per))
            long = long_timeline(small, reps)
            p = folder / f"long{minutes}.otio"
            otio.adapters.write_to_file(long, str(p))
            rss[f"{minutes}min"] = round(peak_rss_of_conform(p, folder / f"long{minutes}.mp4"), 1)
        result["peak_rss_mib"] = rss
        result["rss_growth"] = round(rss["10min"] / rss["1min"] - 1, 3)
        result["rss_target_growth"] = 0.10
        result["peak_rss_self_mib"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
