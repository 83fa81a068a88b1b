"""Render benchmark: the bundled example film (web + master) through ``aiprod-post render``,
beside the FFmpeg command line encoding the same frames (the rendered shot files at their
cut points) to the same two masters with the same settings, in one run.

Prints one JSON line: wall seconds of the render (cold cache) and of the FFmpeg encodes
alone, their ratio (target at most 1.5), peak RSS of the render (target under 2 GiB), and
with ``--scale K`` the same for a film K times longer (the script repeated), to show time
growing with length while peak memory stays flat.
``python benchmarks/bench_render.py [--size 1920x1080] [--scale 1]``
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ffmpeg import PRORES, X264, concat_list, encode, ffmpeg  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "the_last_ferry.fountain"


def longer_script(folder: Path, times: int) -> Path:
    """The example's scenes repeated ``times`` times, renumbered, one title page."""
    text = EXAMPLE.read_text()
    head, _, body = text.partition("FADE IN:")
    body = re.sub(r" #\d+#", "", body)
    out = folder / f"ferry_x{times}.fountain"
    out.write_text(head + "FADE IN:" + body * times)
    return out


def render(script: Path, out: Path, size: str) -> tuple[float, float]:
    # VmHWM, not ru_maxrss: after fork+exec, ru_maxrss still counts the parent's pages
    code = ("import time; from aiprod_post.pipeline import render, RenderOptions;"
            f"w,h={size.split('x')[0]},{size.split('x')[1]};"
            "t=time.perf_counter();"
            f"render({str(script)!r}, {str(out)!r}, RenderOptions(width=w, height=h, quiet=True));"
            "print(time.perf_counter()-t, [l.split()[1] for l in open('/proc/self/status')"
            " if l.startswith('VmHWM')][0])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    secs, rss = res.stdout.strip().splitlines()[-1].split()
    return float(secs), int(rss) / 1024


def ffmpeg_masters(out: Path) -> float:
    import opentimelineio as otio

    from aiprod_post.editing.timeline import timeline_rate, url_to_path

    tl = otio.adapters.read_from_file(str(next((out / "timeline").glob("*.otio"))))
    rate = timeline_rate(tl)
    clips = []
    for c in tl.tracks[0].find_clips():
        clips.append((url_to_path(c.media_reference.target_url),
                      int(c.source_range.start_time.value), int(c.source_range.duration.value)))
    n = sum(c[2] for c in clips)
    concat = concat_list(clips, rate, out)
    t = 0.0
    for mix, codec, name in (("mix_web.wav", X264, "ffmpeg_web.mp4"),
                             ("mix_master.wav", PRORES, "ffmpeg_master.mov")):
        t += encode(concat, out / "audio" / mix, rate, n, codec, out / name)
        (out / name).unlink()  # a 14-minute ProRes master is 8 GB: keep the disk free
    return t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--scale", type=int, default=1)
    args = ap.parse_args()
    if not ffmpeg():
        print(json.dumps({"benchmark": "render", "error": "ffmpeg command not found"}))
        return
    result = {"benchmark": "render", "size": args.size, "profiles": ["web", "master"]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = [("x1", EXAMPLE)] + ([(f"x{args.scale}", longer_script(folder, args.scale))]
                                    if args.scale > 1 else [])
        for name, script in runs:
            out = folder / name
            secs, rss = render(script, out, args.size)
            report = json.loads((out / "report.json").read_text())
            for master in [*(out / "masters").iterdir(), *(out / ".cache" / "masters").iterdir()]:
                master.unlink()  # measured; FFmpeg reads the shots and the mixes
            ff = ffmpeg_masters(out)
            result[name] = {"film_seconds": report["duration_seconds"],
                            "render_seconds": round(secs, 1), "ffmpeg_seconds": round(ff, 1),
                            "ratio": round(secs / ff, 2), "peak_rss_mib": round(rss, 1),
                            "stage_seconds": report["stage_seconds"]}
            shutil.rmtree(out)
        result["target_ratio"] = 1.5
        result["target_peak_rss_mib"] = 2048
    print(json.dumps(result))


if __name__ == "__main__":
    main()
