"""Reading any audio a user has, and writing WAV atomically.

Reading tries libsndfile (WAV, FLAC, AIFF, OGG …) and falls back to FFmpeg
through PyAV (MP3, AAC, audio tracks of video files). Writing is 24-bit PCM
WAV by default, to a temporary name that is renamed when complete.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal

from aiprod_post.errors import MediaError

__all__ = ["read_audio", "write_wav", "resample", "MIX_RATE"]

MIX_RATE = 48000


def resample(x: np.ndarray, rate: int, to: int = MIX_RATE) -> np.ndarray:
    """Polyphase resampling along the first axis (exact rational ratio)."""
    if rate == to:
        return x
    ratio = Fraction(to, rate)
    return signal.resample_poly(x, ratio.numerator, ratio.denominator, axis=0)


def read_audio(path: str | Path, dtype: str = "float64") -> tuple[np.ndarray, int]:
    """Decode ``path`` to samples shaped (frames, channels) and the sample rate
    (``dtype`` float64, or float32 for programme-long audio: half the memory)."""
    path = Path(path)
    if not path.exists():
        raise MediaError("no such file", source=path)
    if path.is_dir():
        raise MediaError("is a directory, expected an audio file", source=path)
    try:
        import soundfile

        data, rate = soundfile.read(str(path), dtype=dtype, always_2d=True)
        return data, int(rate)
    except Exception:  # noqa: BLE001 - libsndfile cannot read it; let FFmpeg try
        pass
    try:
        import av

        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError("has no audio stream", source=path)
            stream = container.streams.audio[0]
            chunks = []
            rate = stream.rate
            for frame in container.decode(stream):
                arr = frame.to_ndarray()
                if frame.format.is_planar:
                    arr = arr.T
                else:
                    arr = arr.reshape(-1, len(frame.layout.channels))
                if arr.dtype.kind == "i":
                    arr = arr / float(np.iinfo(arr.dtype).max + 1)
                chunks.append(arr.astype(np.float64))
        if not chunks:
            raise MediaError("decodes to no audio samples", source=path)
        return np.concatenate(chunks).astype(dtype, copy=False), int(rate)
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is bad input here
        raise MediaError(f"cannot decode audio: {exc}", source=path) from None


def write_wav(path: str | Path, samples: np.ndarray, rate: int = MIX_RATE,
              subtype: str = "PCM_24") -> Path:
    """Write a WAV (24-bit by default) atomically. Samples beyond full scale are clipped."""
    from .stream import WavWriter

    x = np.asarray(samples)
    channels = 1 if x.ndim == 1 else x.shape[1]
    block = 1 << 20  # written a block at a time: no programme-long temporary copies
    with WavWriter(path, channels, rate, subtype) as w:
        for a in range(0, max(len(x), 1), block):
            w.write(x[a:a + block])
    return Path(path)
