"""What the machine refuses is a clear exit 2 naming the path, never a traceback (issue 14,
item 7): an output path that is a file, a parent that is a file, a read-only filesystem, a
full disk, a truncated clip.

The read-only and full-disk cases run the real CLI in a private mount namespace
(``unshare -m``) over a small tmpfs; they skip where the machine does not allow that.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from aiprod_post.cli import main

SCRIPT = """Title: Errors

EXT. PIER - DUSK

Gulls over the water.

NELL
Ferry's gone.
"""

CLI = str(Path(sys.executable).with_name("aiprod-post"))


def _script(tmp_path: Path) -> Path:
    p = tmp_path / "s.fountain"
    p.write_text(SCRIPT)
    return p


def _render(*args: str):
    return CliRunner().invoke(main, ["render", *args, "--size", "160x96", "--quiet",
                                     "--profile", "web"])


def test_output_that_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("x")
    r = _render(str(_script(tmp_path)), "-o", str(target))
    assert r.exit_code == 2, r.output
    assert f"{target}: expected an output folder, found a file" in r.output
    assert target.read_text() == "x"


def test_output_under_a_file(tmp_path):
    parent = tmp_path / "file"
    parent.write_text("x")
    r = _render(str(_script(tmp_path)), "-o", str(parent / "out"))
    assert r.exit_code == 2, r.output
    assert "is a file, not a folder" in r.output and str(parent) in r.output


def _namespace_ok() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt"],
                           capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _namespace_ok(),
                                  reason="needs unshare -m and tmpfs mounts (root in CI)")


def _in_namespace(tmp_path: Path, mount: str, command: str) -> subprocess.CompletedProcess:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sh = f"{mount.format(mnt=mnt)} && {command.format(mnt=mnt)}"
    return subprocess.run(["unshare", "-m", "sh", "-c", sh], capture_output=True, text=True,
                          timeout=300)


@needs_mounts
def test_read_only_filesystem(tmp_path):
    script = _script(tmp_path)
    r = _in_namespace(tmp_path, "mount -t tmpfs tmpfs {mnt} && mount -o remount,ro {mnt}",
                      f"{CLI} render {script} -o {{mnt}}/out --size 160x96 --quiet "
                      "--profile web")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "read-only" in r.stderr and f"{tmp_path}/mnt" in r.stderr


@needs_mounts
@pytest.mark.parametrize("size", ["96k", "1m", "2m"])  # speech, shots, the mix
def test_full_disk(tmp_path, size):
    """A disk that fills early (the plan, the speech) or later (shots, the mix): exit 2
    saying the disk is full, not slates (exit 3) and not a traceback (exit 1)."""
    script = _script(tmp_path)
    r = _in_namespace(tmp_path, f"mount -t tmpfs -o size={size} tmpfs {{mnt}}",
                      f"{CLI} render {script} -o {{mnt}}/out --size 160x96 --quiet "
                      "--profile web; echo rc=$? >&2; ls {mnt}/out/masters 2>/dev/null")
    assert "rc=2" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "no space left" in r.stderr or "disk full" in r.stderr
    assert r.stdout.strip() == ""  # no master that looks finished


def _noise_clip(path: Path, codec: str, pix_fmt: str, seed: int) -> None:
    """48 frames of noise at 160x96, 24 fps."""
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=24)
        s.width, s.height, s.pix_fmt = 160, 96, pix_fmt
        rng = np.random.default_rng(seed)
        for _ in range(48):
            img = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def test_truncated_clip_is_bad_input_naming_the_file(tmp_path):
    """The clips engine's footage cut short: exit 2 naming the clip, not a slate."""
    clip = tmp_path / "clips" / "1.mp4"
    clip.parent.mkdir()
    _noise_clip(clip, "libx264", "yuv420p", seed=1)
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])  # cut in half: no index, damaged packets
    project = tmp_path / "p.toml"
    project.write_text(f'[engine]\nname = "clips"\n\n[engine.clips]\nfolder = "{clip.parent}"\n')
    r = _render(str(_script(tmp_path)), "-o", str(tmp_path / "out"), "--project", str(project))
    assert r.exit_code == 2, r.output
    assert "1.mp4" in r.output
    assert not (tmp_path / "out" / "masters").exists()


def test_damaged_media_in_a_conform_is_named_not_blamed_on_the_encoder(tmp_path):
    """A shot whose packets are damaged part-way: exit 2 naming the file, not "the h264
    encoder refused" (the decode error used to be reported as the encoder's)."""
    import opentimelineio as otio

    media = tmp_path / "1.mov"
    _noise_clip(media, "prores_ks", "yuv422p10le", seed=0)
    data = bytearray(media.read_bytes())
    for off in range(len(data) // 3, len(data) // 3 + len(data) // 4, 97):
        data[off] = 0xFF  # scribble over packets in the middle
    media.write_bytes(bytes(data))
    rate = 24
    clip = otio.schema.Clip(
        name="1", media_reference=otio.schema.ExternalReference(
            target_url=str(media), available_range=otio.opentime.TimeRange(
                otio.opentime.RationalTime(0, rate), otio.opentime.RationalTime(48, rate))),
        source_range=otio.opentime.TimeRange(otio.opentime.RationalTime(0, rate),
                                             otio.opentime.RationalTime(48, rate)))
    tl = otio.schema.Timeline(name="damaged")
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    track.append(clip)
    tl.tracks.append(track)
    tl_path = tmp_path / "cut.otio"
    otio.adapters.write_to_file(tl, str(tl_path))
    master = tmp_path / "master.mp4"
    r = CliRunner().invoke(main, ["conform", str(tl_path), "-o", str(master),
                                  "--profile", "h264"])
    assert r.exit_code == 2, r.output
    assert "1.mov" in r.output and "cannot be decoded" in r.output
    assert "encoder refused" not in r.output
    assert not master.exists()
