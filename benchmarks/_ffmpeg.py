"""Shared helpers for the benchmarks that compare with the FFmpeg command line.

The command is ``ffmpeg`` on the PATH or, failing that, the one the ``imageio-ffmpeg``
package ships (``pip install .[bench]``).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from fractions import Fraction
from pathlib import Path

from aiprod_post.editing.conform import PROFILES, encoder_options, gop_frames


def x264(width: int, height: int, rate: Fraction) -> list[str]:
    """The ffmpeg arguments for the web master's exact encoder settings at this size and
    rate (editing/conform.py: profile, preset, CRF, GOP, B-frames, VBV, level), so that the
    two sides do the same work: scene-cut keyframes are off in both, and keyframes come
    every ``keyint`` frames, where conform forces them too."""
    opts = encoder_options(PROFILES["h264"], width, height, rate)
    return ["-c:v", "libx264", "-profile:v", opts["profile"], "-preset", opts["preset"],
            "-crf", opts["crf"], "-x264-params", opts["x264-params"],
            "-g", str(gop_frames(PROFILES["h264"], rate)), "-forced-idr", "1",
            "-pix_fmt", "yuv420p",
            "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709",
            "-c:a", "aac", "-b:a", "256k", "-movflags", "+faststart"]


X264 = x264(1920, 1080, Fraction(24))  # the example film's web master
PRORES = ["-c:v", "prores", "-profile:v", "3", "-vendor", "apl0", "-pix_fmt", "yuv422p10le",
          "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709",
          "-c:a", "pcm_s24le"]


def ffmpeg() -> str | None:
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    return imageio_ffmpeg.get_ffmpeg_exe()


def concat_list(clips: list[tuple[Path, int, int]], rate: Fraction, folder: Path) -> Path:
    """An ffmpeg concat-demuxer list: (file, first frame, frame count) per clip."""
    lines = ["ffconcat version 1.0"]
    for path, first, count in clips:
        lines.append(f"file '{path}'")
        lines.append(f"inpoint {float(Fraction(first) / rate):.6f}")
        lines.append(f"outpoint {float(Fraction(first + count) / rate):.6f}")
    out = folder / "concat.txt"
    out.write_text("\n".join(lines) + "\n")
    return out


def encode(concat: Path, audio: Path, rate: Fraction, frames: int, codec: list[str],
           output: Path) -> float:
    cmd = [ffmpeg(), "-y", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(concat),
           "-i", str(audio), "-map", "0:v", "-map", "1:a", "-frames:v", str(frames),
           "-r", f"{rate.numerator}/{rate.denominator}", *codec, "-shortest", str(output)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0
