"""Opening the footage the grading stage reads, with the project's errors."""

from __future__ import annotations

from pathlib import Path

from aiprod_post.errors import MediaError

__all__ = ["open_video"]


def open_video(path: str | Path):
    """``(container, first picture stream)`` of a video, a still or an image sequence
    (a ``%06d``-style name), decoded with FFmpeg's threads; a missing file, one FFmpeg
    cannot read or one without a picture is a
    :class:`~aiprod_post.errors.MediaError` naming it. Close the container when done."""
    import av

    path = Path(path)
    sequence = "%" in path.name
    if not sequence and not path.is_file():
        raise MediaError("no such video or image", source=path)
    try:
        container = av.open(str(path), format="image2" if sequence else None)
    except Exception as exc:  # noqa: BLE001 - any FFmpeg open failure is bad input
        raise MediaError(f"cannot read video: {exc}", source=path) from None
    if not container.streams.video:
        container.close()
        raise MediaError("has no picture stream", source=path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream
