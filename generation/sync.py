"""Lip-sync measured on a generated picture: how far mouth opening lags speech.

Speech activity comes from the dialogue the shot was generated on (its energy per frame,
against its own loudest frames); mouth openness from the picture: the face found with
OpenCV's frontal-face cascade (:func:`.lipsync.find_face`, again every second, every
quarter second until a face is found), the mouth in the lower part of the face box,
openness the share of its pixels much darker than the face (an open mouth shows its dark
inside). The offset is the lag that best lines the two
up (normalised cross-correlation within ±0.5 s): positive when the mouth opens after the
sound. Frames are fed one at a time, so a shot is never held whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SyncMeter", "SyncResult", "speech_activity", "best_lag"]


@dataclass(frozen=True)
class SyncResult:
    offset_frames: int
    offset_ms: float
    correlation: float
    frames_with_face: int

    def describe(self) -> str:
        return (f"lip-sync measured: mouth opening {'after' if self.offset_ms >= 0 else 'before'}"
                f" speech by {abs(self.offset_ms):.0f} ms ({self.offset_frames:+d} frames, "
                f"correlation {self.correlation:.2f}, face on {self.frames_with_face} frames)")


def speech_activity(samples: np.ndarray, rate: int, fps: float, frames: int) -> np.ndarray:
    """1 on frames where the line is voiced (RMS within 30 dB of its loudest frames), else
    0: one value per picture frame.

    >>> x = np.zeros(48000, np.float32); x[24000:36000] = 0.5
    >>> speech_activity(x, 48000, 24.0, 24).nonzero()[0].tolist()
    [12, 13, 14, 15, 16, 17]
    """
    x = np.asarray(samples, np.float64).reshape(len(samples), -1).mean(axis=1)
    edges = np.round(np.arange(frames + 1) * rate / fps).astype(int)
    rms = np.array([np.sqrt(np.mean(x[a:b] ** 2)) if b > a and a < x.size else 0.0
                    for a, b in zip(edges[:-1], edges[1:])])
    if not np.any(rms > 0):
        return np.zeros(frames)
    loud = np.percentile(rms[rms > 0], 95)
    return (rms > loud * 10 ** (-30 / 20)).astype(np.float64)


def best_lag(activity: np.ndarray, openness: np.ndarray, max_lag: int
             ) -> tuple[int, float] | None:
    """The lag (frames; positive: ``openness`` later) with the highest normalised
    correlation, and that correlation; None where either signal is flat.

    >>> a = np.array([0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 0], float)
    >>> best_lag(a, np.roll(a, 2), 4)[0]
    2
    """
    a = np.asarray(activity, np.float64)
    o = np.asarray(openness, np.float64)
    ok = np.isfinite(o)
    best = None
    for lag in range(-max_lag, max_lag + 1):
        # activity at t against openness at t + lag, where both exist
        if lag >= 0:
            x, y, m = a[:a.size - lag], o[lag:], ok[lag:]
        else:
            x, y, m = a[-lag:], o[:o.size + lag], ok[:o.size + lag]
        x, y = x[m], y[m]
        if x.size < 4 or x.std() == 0 or y.std() == 0:
            continue
        c = float(np.mean((x - x.mean()) * (y - y.mean())) / (x.std() * y.std()))
        if best is None or c > best[1]:
            best = (lag, c)
    return best


class SyncMeter:
    """Feed a shot's frames with :meth:`add`; :meth:`result` measures the offset against
    the dialogue they were generated on."""

    def __init__(self, fps: float, redetect_seconds: float = 1.0) -> None:
        self.fps = fps
        self.every = max(1, int(round(fps * redetect_seconds)))
        # with no face yet, looked for again four times as often: a shot without a
        # frontal face (or a random model's noise, 0.1-0.4 s a frame for the cascade)
        # is not searched frame by frame
        self.retry = max(1, self.every // 4)
        self.box: np.ndarray | None = None
        self.openness: list[float] = []

    def add(self, frame: np.ndarray) -> None:
        import cv2

        from .lipsync import find_face

        index = len(self.openness)
        if index % self.every == 0 or (self.box is None and index % self.retry == 0):
            face = find_face(frame)
            if face is not None:
                box = np.array(face, np.float64)
                self.box = box if self.box is None else 0.6 * self.box + 0.4 * box
        if self.box is None:
            self.openness.append(np.nan)
            return
        x, y, w, h = self.box
        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY).astype(np.float32)
        face = grey[int(y):int(y + h), int(x):int(x + w)]
        # the mouth: centred, 78 % down the cascade's face box (where lipsync.py paints it)
        cy, cx = y + 0.78 * h, x + w / 2
        mouth = grey[int(max(0, cy - 0.14 * h)):int(cy + 0.14 * h),
                     int(max(0, cx - 0.3 * w)):int(cx + 0.3 * w)]
        if face.size == 0 or mouth.size == 0:
            self.openness.append(np.nan)
            return
        self.openness.append(float(np.mean(mouth < 0.45 * np.median(face))))

    def result(self, samples: np.ndarray, rate: int, max_lag_s: float = 0.5
               ) -> SyncResult | None:
        """The offset, or None where no face was found or the mouth never moved."""
        o = np.array(self.openness)
        seen = int(np.isfinite(o).sum())
        if seen < 4:
            return None
        a = speech_activity(samples, rate, self.fps, o.size)
        found = best_lag(a, o, max(1, int(round(max_lag_s * self.fps))))
        if found is None:
            return None
        lag, c = found
        return SyncResult(lag, 1000.0 * lag / self.fps, round(c, 3), seen)
