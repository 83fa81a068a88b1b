"""The clips engine: the user's own footage, one clip per shot.

Clips are found by shot id in the project file (``media``) or by file name in
a folder (``3A.mov``, ``3A_take2.mp4``: the stem up to the first ``_`` or
``.`` is the shot id). Any file FFmpeg reads works. Each clip is trimmed,
held on its last frame or looped to the shot's duration (``fill``), scaled to
the plan's size with crop or letterbox (``fit``), and its frame rate is
conformed by taking, for each output frame, the source frame on screen at
that time. When the shot has dialogue, the mouth of the face in the footage is
animated from the viseme track (``generation.lipsync``); a clip with no face
found is left untouched and the render's ``notes`` say so.

Depth: frames are 8-bit RGB (``uint8``) by default. With ``deep=True`` a clip of more
than 8 bits a component (10-bit ProRes or DNxHR, 12-bit, 16-bit) keeps them: its frames
come as ``uint16`` RGB (``rgb48``, full 0..65535) through the scaling and the lip-sync,
so a 16-bit grade and a 10-bit master see the footage's own levels; an 8-bit clip stays
``uint8`` either way.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from aiprod_post.errors import AiprodError, MediaError
from aiprod_post.plan import Shot
from aiprod_post.scaler import rgb24, rgb48

from .engine import RenderContext, ShotRender, register
from .lipsync import MouthAnimator

__all__ = ["ClipsEngine", "find_clip", "fit_frame", "is_deep"]

_VIDEO_EXT = {".mov", ".mp4", ".m4v", ".mxf", ".mkv", ".avi", ".webm", ".mpg", ".mts", ".y4m"}


def find_clip(shot_id: str, media: dict[str, str | Path], folder: Path | None) -> Path | None:
    if shot_id in media:
        return Path(media[shot_id])
    if folder is None or not folder.is_dir():
        return None
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in _VIDEO_EXT and p.stem.split("_")[0] == shot_id:
            return p
    return None


def fit_frame(img: np.ndarray, width: int, height: int, fit: str) -> np.ndarray:
    """Scale ``img`` (uint8 or uint16) to width×height, cropping (fill the frame) or
    letterboxing (show it all)."""
    import cv2

    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    scale = max(width / w, height / h) if fit == "crop" else min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1
                         else cv2.INTER_LINEAR)
    if fit == "crop":
        x0, y0 = (nw - width) // 2, (nh - height) // 2
        return np.ascontiguousarray(resized[y0:y0 + height, x0:x0 + width])
    out = np.zeros((height, width, 3), img.dtype)
    x0, y0 = (width - nw) // 2, (height - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = resized
    return out


def is_deep(fmt) -> bool:
    """A pixel format (``av.VideoFormat``) of more than 8 bits a component."""
    return fmt is not None and any(c.bits > 8 for c in fmt.components)


@register("clips")
class ClipsEngine:
    name = "clips"

    def __init__(self, media: dict[str, str | Path] | None = None, folder: str | Path | None = None,
                 fit: Literal["crop", "letterbox"] = "crop",
                 fill: Literal["hold", "loop"] = "hold", deep: bool = False) -> None:
        self.media = dict(media or {})
        self.deep = deep
        self.folder = Path(folder) if folder else None
        self.fit = fit
        self.fill = fill

    def render(self, shot: Shot, context: RenderContext) -> ShotRender:
        path = find_clip(shot.id, self.media, self.folder)
        if path is None:
            where = f"folder {self.folder}" if self.folder else "the project file's media table"
            raise AiprodError(f"no clip for shot {shot.id} in {where}", where=f"shot {shot.id}")
        if not path.is_file():
            raise MediaError(f"clip for shot {shot.id} is missing", source=path)
        fps = Fraction(context.fps)
        n = shot.duration
        W, H = context.width, context.height

        talking = _combined_track(context.visemes, n)
        animator = MouthAnimator(float(fps)) if talking else None
        render_notes: list[str] = []

        def frames() -> Iterator[np.ndarray]:
            for i, frame in enumerate(footage()):
                if animator is not None:
                    frame = animator(frame, i, talking[i] if i < len(talking) else "X")
                    if i == n - 1 and not animator.found_any:
                        render_notes.append(f"no face found in the clip for shot {shot.id}: "
                                            "lip-sync skipped, footage left as it is")
                yield frame

        def footage() -> Iterator[np.ndarray]:
            import av

            try:
                container = av.open(str(path))
            except Exception as exc:  # noqa: BLE001 - any FFmpeg open failure is bad input
                raise MediaError(f"clip for shot {shot.id} cannot be read: {exc}",
                                 source=path) from None
            with container:
                if not container.streams.video:
                    raise MediaError(f"clip for shot {shot.id} has no video stream", source=path)
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                src_rate = Fraction(stream.average_rate or stream.guessed_rate or fps)
                decoded: list[np.ndarray] = []  # only kept when looping needs them again
                out = 0
                current = None
                src_index = 0
                for frame in _decoded(container, stream, path, shot.id):
                    deep = self.deep and is_deep(frame.format)
                    # 16-bit at BT.709's levels (white 65535: aiprod_post.scaler)
                    img = fit_frame(rgb48(frame) if deep else rgb24(frame),
                                    W, H, self.fit)
                    # emit every output frame whose time falls within this source frame
                    while out < n and out / fps < (src_index + 1) / src_rate:
                        yield img
                        out += 1
                    current = img
                    if self.fill == "loop":
                        decoded.append(img)
                    src_index += 1
                    if out >= n:
                        return
                if current is None:
                    raise MediaError(f"clip for shot {shot.id} has no frames", source=path)
                k = 0
                while out < n:  # shorter than the shot: hold the last frame or loop
                    yield decoded[k % len(decoded)] if self.fill == "loop" else current
                    k += 1
                    out += 1

        render = ShotRender(shot, frames, f"clip:{path.name}", context.scene.light)
        render.notes = render_notes
        return render


def _decoded(container, stream, path: Path, shot_id: str) -> Iterator:
    """The clip's frames; a decode error part-way (a truncated or damaged file) is bad
    input naming the file, not a failed shot to slate."""
    import av

    try:
        yield from container.decode(stream)
    except (av.error.FFmpegError, EOFError) as exc:
        raise MediaError(f"clip for shot {shot_id} cannot be decoded: {exc}",
                         source=path) from None


def _combined_track(visemes: dict[str, list[str]], n: int) -> list[str]:
    """One mouth track for the face in the clip: any speaker's open shape wins."""
    if not visemes:
        return []
    out = ["X"] * n
    for track in visemes.values():
        for i, shape in enumerate(track[:n]):
            if shape not in ("X", "A"):
                out[i] = shape
    return out if any(s != "X" for s in out) else []
