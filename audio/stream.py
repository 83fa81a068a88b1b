"""Programme audio a block at a time: sources to read from, sinks to write to.

Measurement, normalisation and mixing take a source (an array, a file, the sum of
stem files) and write to a sink (an array, a WAV being written), so a film's audio
never has to be in memory whole: memory stays flat with the film's length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from aiprod_post.errors import MediaError
from aiprod_post.files import atomic_path

__all__ = ["Source", "Sink", "ArraySource", "ArraySink", "FileSource", "SumSource",
           "WavWriter", "as_source"]


class Source(Protocol):
    frames: int
    channels: int

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Samples ``[lo, hi)`` as (frames, channels) float32 or float64."""

    def close(self) -> None:
        """Let go of what it reads from."""


class Sink(Protocol):
    def write(self, block: np.ndarray) -> None:
        """The next samples, in order."""


class ArraySource:
    """An in-memory (frames, channels) array."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.frames, self.channels = x.shape

    def read(self, lo: int, hi: int) -> np.ndarray:
        return self.x[lo:hi]

    def close(self) -> None:
        pass


class ArraySink:
    """Fills ``out`` (preallocated) in order."""

    def __init__(self, out: np.ndarray) -> None:
        self.out = out
        self.pos = 0

    def write(self, block: np.ndarray) -> None:
        self.out[self.pos:self.pos + len(block)] = block
        self.pos += len(block)


class FileSource:
    """An audio file libsndfile reads (WAV, FLAC, AIFF …), read where asked."""

    def __init__(self, path: str | Path) -> None:
        import soundfile

        self.path = Path(path)
        try:
            self._f = soundfile.SoundFile(str(self.path))
        except Exception as exc:  # noqa: BLE001 - unreadable input is bad input here
            raise MediaError(f"cannot read audio: {exc}", source=self.path) from None
        self.frames, self.channels, self.rate = self._f.frames, self._f.channels, self._f.samplerate

    def read(self, lo: int, hi: int) -> np.ndarray:
        try:
            self._f.seek(lo)
            x = self._f.read(hi - lo, dtype="float64", always_2d=True)
        except Exception as exc:  # noqa: BLE001 - a file cut short or corrupt inside
            raise MediaError(f"cannot read audio at frame {lo}: {exc}", source=self.path) from None
        if len(x) != hi - lo:
            raise MediaError(f"ends at frame {lo + len(x)}, expected {hi} frames",
                             source=self.path)
        return x

    def close(self) -> None:
        self._f.close()


class SumSource:
    """The sample-wise sum of sources of one length and layout (stems to a mix)."""

    def __init__(self, sources: list) -> None:
        if not sources:
            raise MediaError("nothing to sum")
        first = sources[0]
        for s in sources[1:]:
            if (s.frames, s.channels) != (first.frames, first.channels):
                raise MediaError(f"stems differ in length or channels: {first.frames}x"
                                 f"{first.channels} and {s.frames}x{s.channels}")
        self.sources = sources
        self.frames, self.channels = first.frames, first.channels

    def read(self, lo: int, hi: int) -> np.ndarray:
        out = np.array(self.sources[0].read(lo, hi), dtype=np.float64)
        for s in self.sources[1:]:
            out += s.read(lo, hi)
        return out

    def close(self) -> None:
        for s in self.sources:
            s.close()


class WavWriter:
    """A WAV (24-bit by default) written a block at a time to a temporary name, renamed
    over ``path`` only when closed after a complete write (use it as a context manager)."""

    def __init__(self, path: str | Path, channels: int, rate: int = 48000,
                 subtype: str = "PCM_24") -> None:
        self.path = Path(path)
        self.channels, self.rate, self.subtype = channels, rate, subtype

    def __enter__(self) -> "WavWriter":
        import soundfile

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._atomic = atomic_path(self.path, ".tmp.wav")
        tmp = self._atomic.__enter__()
        self._f = soundfile.SoundFile(str(tmp), "w", self.rate, self.channels,
                                      subtype=self.subtype, format="WAV")
        return self

    def write(self, block: np.ndarray) -> None:
        # full scale is the largest positive 24-bit code: nothing wraps
        try:
            self._f.write(np.clip(np.asarray(block, dtype=np.float64), -1.0, 1.0 - 2.0 ** -23))
        except RuntimeError as exc:  # soundfile.LibsndfileError: "System error."
            raise self._refused(exc) from None

    def _refused(self, exc: Exception) -> Exception:
        """libsndfile reports a failed write as "System error.": name the file, and say the
        disk is full where it is."""
        import errno
        import shutil

        try:
            full = shutil.disk_usage(self.path.parent).free < (1 << 20)
        except OSError:
            full = False
        if full:
            return OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return MediaError(f"cannot write audio: {exc}", source=self.path)

    def __exit__(self, kind, value, tb) -> bool:
        try:
            self._f.close()
        except RuntimeError as exc:
            if kind is None:
                self._atomic.__exit__(type(exc), exc, None)
                raise self._refused(exc) from None
        return bool(self._atomic.__exit__(kind, value, tb))


def as_source(x) -> Source:
    """An array (frames,) or (frames, channels), or anything with ``read``, as a source."""
    if hasattr(x, "read") and hasattr(x, "frames"):
        return x
    from .loudness import _as_frames

    return ArraySource(_as_frames(x))
