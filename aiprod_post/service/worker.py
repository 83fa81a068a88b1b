"""A job's render process: probes the client's uploads, then renders.

The web process only stores an upload (streamed to disk within its byte limit); decoding it
is work for this process, which the dispatcher starts in the job's folder:
``python -m aiprod_post.service.worker render plan.json -o out ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["probe_upload", "main"]


def probe_upload(path: Path, label: str) -> str | None:
    """Why ``path`` is not usable audio (naming it as ``label``), or None if it is."""
    try:
        import soundfile

        info = soundfile.info(str(path))
        frames, rate = info.frames, info.samplerate
    except Exception:  # noqa: BLE001 - libsndfile cannot read it; let FFmpeg try
        try:
            import av

            with av.open(str(path)) as container:
                if not container.streams.audio:
                    return f"{label} has no audio stream"
                stream = container.streams.audio[0]
                rate = stream.rate or 0
                seconds = (float(stream.duration * stream.time_base) if stream.duration
                           else (container.duration or 0) / 1_000_000)
                frames = int(seconds * rate)
                if frames <= 0:  # no duration in the header: decode a little to be sure
                    frames = sum(f.samples for _, f in zip(range(50),
                                                           container.decode(stream)))
        except Exception:  # noqa: BLE001 - any decoder failure is bad input here
            return f"{label} is not audio that libsndfile or FFmpeg can read"
    if not rate or frames < rate // 10:
        return f"{label} is shorter than 100 ms"
    return None


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    for music in sorted(Path(".").glob("music.*")):
        problem = probe_upload(music, "the music upload")
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(2)
    from ..cli import main as cli

    cli.main(argv, prog_name="aiprod-post")


if __name__ == "__main__":
    main()
