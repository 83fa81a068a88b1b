"""Picture QA: broadcast-legal levels, photosensitive flashes, black and frozen frames.

* Levels, EBU R 103: in 8-bit video R', G', B' (and Y') stay within 5–246, in 10-bit
  within 20–984; we report the share of pixels outside. R'G'B' are computed in code
  values from the decoded Y'CbCr with the BT.709 matrix, as a waveform monitor does.
* Flashes, ITU-R BT.1702: a flash is a pair of opposing changes in luminance of at
  least 20 cd/m² where the darker state is below 160 cd/m², over at least a quarter
  of the screen; more than three flashes in any one second fails. Saturated red
  transitions (R/(R+G+B) ≥ 0.8) are counted the same way.
* Black frames: average under 2 % of full scale and nothing brighter than 1 cd/m²
  (so a title card's white text is not black); frozen frames: at least a second of
  frames that do not change (a held title card shows up here, by design).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from aiprod_post.errors import MediaError
from aiprod_post.scaler import rgb24

from .media import open_video

__all__ = ["PictureQA", "QAMeter", "qa_frames", "qa_video", "legal_range"]

_KR, _KB = 0.2126, 0.0722  # BT.709


def legal_range(bits: int) -> tuple[int, int]:
    return (5, 246) if bits == 8 else (20, 984)


@dataclass
class PictureQA:
    frames: int = 0
    fps: float = 24.0
    bits: int = 8
    outside_pixels: int = 0
    total_pixels: int = 0
    code_min: int = 1 << 16
    code_max: int = 0
    flashes_max_per_second: int = 0
    red_flashes_max_per_second: int = 0
    flash_failures: list[float] = field(default_factory=list)  # seconds where it fails
    black: list[tuple[int, int]] = field(default_factory=list)  # frame ranges [a, b)
    frozen: list[tuple[int, int]] = field(default_factory=list)

    @property
    def share_outside(self) -> float:
        return self.outside_pixels / self.total_pixels if self.total_pixels else 0.0

    def as_dict(self) -> dict:
        lo, hi = legal_range(self.bits)
        return {
            "frames": self.frames,
            "levels": {"standard": "EBU R 103", "bits": self.bits, "legal": [lo, hi],
                       "min": self.code_min, "max": self.code_max,
                       "share_outside": round(self.share_outside, 6),
                       "pass": self.share_outside < 0.01},
            "flashes": {"standard": "ITU-R BT.1702",
                        "max_per_second": self.flashes_max_per_second,
                        "red_max_per_second": self.red_flashes_max_per_second,
                        "failures_at_seconds": [round(t, 2) for t in self.flash_failures[:20]],
                        "pass": self.flashes_max_per_second <= 3
                        and self.red_flashes_max_per_second <= 3},
            "black_frames": [list(r) for r in self.black],
            "frozen_frames": [list(r) for r in self.frozen],
        }


def _luminance(rgb8: np.ndarray) -> np.ndarray:
    """Approximate screen luminance in cd/m² (BT.1886, 100 cd/m² white) on a coarse grid."""
    small = cv2.resize(rgb8, (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    lin = small ** 2.4
    return 100.0 * (lin @ np.array([_KR, 1 - _KR - _KB, _KB], np.float32)), small


class QAMeter:
    """Picture QA fed one frame at a time (memory stays flat), so it can watch frames
    wherever they already pass: a decoder, or the frames a master is encoded from."""

    def __init__(self, fps: Fraction | float, bits: int = 8):
        self.qa = PictureQA(fps=float(fps), bits=bits)
        self._prev_l = self._prev_red = self._prev_frame = None
        self._transitions: list[tuple[int, int]] = []  # (frame, sign) of large-area changes
        self._red_transitions: list[tuple[int, int]] = []
        self._last_sign = self._last_red_sign = 0
        self._black_start: int | None = None
        self._frozen_start: int | None = None
        self._last_av: Any = None  # the PyAV frame add_av saw last, and it at 256×144
        self._last_small: np.ndarray | None = None

    def add(self, frame: np.ndarray, codes: np.ndarray | None = None) -> None:
        """One RGB frame (any size; 256×144 is plenty) and, for levels, R'G'B' codes."""
        qa = self.qa
        i = qa.frames
        qa.frames += 1
        if codes is not None:
            lo, hi = legal_range(qa.bits)
            qa.outside_pixels += int(np.count_nonzero(((codes < lo) | (codes > hi)).any(axis=-1)))
            qa.total_pixels += codes.shape[0] * codes.shape[1]
            qa.code_min = min(qa.code_min, int(codes.min()))
            qa.code_max = max(qa.code_max, int(codes.max()))
        lum, small = _luminance(frame)
        red = (small[..., 0] / (small.sum(axis=-1) + 1e-6) >= 0.8) & (small[..., 0] > 0.2)
        prev_l, prev_red = self._prev_l, self._prev_red
        if prev_l is not None:
            delta = lum - prev_l
            darker = np.minimum(lum, prev_l)
            big = (np.abs(delta) >= 20.0) & (darker < 160.0)
            if big.mean() >= 0.25:
                sign = int(np.sign(delta[big].mean()))
                if sign and sign != self._last_sign:
                    self._transitions.append((i, sign))
                    self._last_sign = sign
            red_change = red ^ prev_red
            if red_change.mean() >= 0.25:
                sign = 1 if red.mean() > prev_red.mean() else -1
                if sign != self._last_red_sign:
                    self._red_transitions.append((i, sign))
                    self._last_red_sign = sign
        is_black = float(frame.mean()) < 0.02 * 255 and float(np.percentile(lum, 99.5)) < 1.0
        if is_black and self._black_start is None:
            self._black_start = i
        elif not is_black and self._black_start is not None:
            qa.black.append((self._black_start, i))
            self._black_start = None
        same = self._prev_frame is not None and np.array_equal(frame, self._prev_frame)
        if same and self._frozen_start is None:
            self._frozen_start = i - 1
        elif not same and self._frozen_start is not None:
            if i - self._frozen_start >= qa.fps:
                qa.frozen.append((self._frozen_start, i))
            self._frozen_start = None
        self._prev_l, self._prev_red, self._prev_frame = lum, red, frame

    def add_av(self, frame, *, step: int = 1, levels: bool = True) -> None:
        """A decoded (or about to be encoded) PyAV frame in Y'CbCr: flashes, black and
        frozen frames at 256×144 scaled by swscale; levels from its own code values.

        The same frame object again (a held frame, which an encoder on another thread
        may be reading right now) is not scaled again: PyAV's reformat rewrites the source
        frame's colour tags while it scales, which another thread must not see."""
        codes = _rgb_codes(frame, self.qa.bits, step) if levels else None
        if frame is not self._last_av:
            self._last_av = frame
            self._last_small = rgb24(frame, 256, 144)
        self.add(self._last_small, codes)

    def result(self) -> PictureQA:
        qa = self.qa
        n = qa.frames
        black, frozen = list(qa.black), list(qa.frozen)
        if self._black_start is not None:
            black.append((self._black_start, n))
        if self._frozen_start is not None and n - self._frozen_start >= qa.fps:
            frozen.append((self._frozen_start, n))
        out = PictureQA(frames=n, fps=qa.fps, bits=qa.bits, outside_pixels=qa.outside_pixels,
                        total_pixels=qa.total_pixels, code_min=qa.code_min,
                        code_max=qa.code_max, black=black, frozen=frozen)
        window = max(1, int(round(qa.fps)))
        for trans, attr in ((self._transitions, "flashes_max_per_second"),
                            (self._red_transitions, "red_flashes_max_per_second")):
            frames_at = [t for t, _ in trans]
            best = 0
            for k, t in enumerate(frames_at):
                inside = sum(1 for u in frames_at[k:] if u < t + window)
                flashes = inside // 2  # a flash is a pair of opposing transitions
                if flashes > 3:
                    out.flash_failures.append(t / qa.fps)
                best = max(best, flashes)
            setattr(out, attr, best)
        return out


def qa_frames(frames: Iterable[np.ndarray], fps: Fraction | float,
              yuv_codes: Iterable[np.ndarray] | None = None, bits: int = 8) -> PictureQA:
    """QA of RGB frames (and, for levels, their R'G'B' code values if known)."""
    meter = QAMeter(fps, bits)
    codes = iter(yuv_codes) if yuv_codes is not None else None
    for frame in frames:
        meter.add(frame, next(codes) if codes is not None else None)
    return meter.result()


def _rgb_codes(frame, bits: int, step: int = 1) -> np.ndarray:
    """R'G'B' code values from a decoded frame's Y'CbCr (BT.709), not rescaled; every
    ``step``-th pixel in each direction."""
    planes = _sampled_planes(frame, step)
    if planes is None:
        # PyAV gives these two formats as (3, H, W) planes at full size
        fmt = "yuv444p" if bits == 8 else "yuv422p10le"
        planes = frame.reformat(format=fmt).to_ndarray()[:, ::step, ::step]
    y, cb, cr = (p.astype(np.float32) for p in planes)
    mid = 128.0 if bits == 8 else 512.0
    r = y + 2 * (1 - _KR) * (cr - mid)
    b = y + 2 * (1 - _KB) * (cb - mid)
    g = (y - _KR * r - _KB * b) / (1 - _KR - _KB)
    return np.stack([r, g, b], axis=-1)


_PLANAR = {"yuv420p": (np.uint8, 2, 2), "yuv422p": (np.uint8, 2, 1), "yuv444p": (np.uint8, 1, 1),
           "yuv420p10le": (np.uint16, 2, 2), "yuv422p10le": (np.uint16, 2, 1),
           "yuv444p10le": (np.uint16, 1, 1)}


def _sampled_planes(frame, step: int):
    """Y', Cb, Cr on the same every-``step``-th-pixel grid, read straight from a planar
    frame's planes (no conversion), where its chroma siting allows; else None."""
    kind = _PLANAR.get(frame.format.name)
    if kind is None:
        return None
    dtype, sx, sy = kind
    if step % sx or step % sy:
        return None
    out = []
    for i, plane in enumerate(frame.planes[:3]):
        width = plane.line_size // np.dtype(dtype).itemsize
        a = np.frombuffer(plane, dtype).reshape(-1, width)
        if i == 0:
            out.append(a[:frame.height:step, :frame.width:step])
        else:
            out.append(a[:frame.height // sy:step // sy, :frame.width // sx:step // sx])
    h = min(p.shape[0] for p in out)
    w = min(p.shape[1] for p in out)
    return [p[:h, :w] for p in out]


def qa_video(path: str | Path, step: int = 1, levels_every: int = 1) -> PictureQA:
    """QA of a video file, decoded frame by frame (memory stays flat).

    Flashes and black frames are judged on every frame at 64×36 (what the flash
    rules measure is large-area change), frozen frames at 256×144; levels on every
    ``levels_every``-th
    frame, on every ``step``-th pixel each way (1 and 1: every pixel of every frame).
    """
    path = Path(path)
    container, stream = open_video(path)
    with container:
        trc = int(stream.codec_context.color_trc or 2)
        if trc in (16, 18):  # SMPTE ST 2084 (PQ), ARIB STD-B67 (HLG)
            raise MediaError(f"an HDR video ({'PQ' if trc == 16 else 'HLG'} transfer): these "
                             "checks (EBU R 103 levels, BT.1702 flashes) are for SDR; check "
                             "the SDR master of the same timeline", source=path)
        bits = 10 if "10" in stream.format.name else 8
        fps = Fraction(stream.average_rate or 24)
        meter = QAMeter(fps, bits)
        for i, fr in enumerate(container.decode(stream)):
            meter.add_av(fr, step=step, levels=i % levels_every == 0)
        return meter.result()
