"""Shared helpers for the benchmarks that compare with the FFmpeg command line."""

from __future__ import annotations

import shutil
import subprocess
import time
from fractions import Fraction
from pathlib import Path

# The same encoder settings conform uses (editing/conform.py PROFILES)
X264 = ["-c:v", "libx264", "-profile:v", "high", "-preset", "medium", "-crf", "18",
        "-x264-params", "open-gop=0", "-g", "48", "-pix_fmt", "yuv420p",
        "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709",
        "-c:a", "aac", "-b:a", "256k", "-movflags", "+faststart"]
PRORES = ["-c:v", "prores", "-profile:v", "3", "-vendor", "apl0", "-pix_fmt", "yuv422p10le",
          "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709",
          "-c:a", "pcm_s24le"]


def ffmpeg() -> str | None:
    return shutil.which("ffmpeg")


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
