"""Lip-sync on footage: animate the mouth of a detected face from a viseme track.

The face is found with OpenCV's frontal-face Haar cascade (shipped in the
opencv-python wheels, 4.x), on the first frames of the shot and again every
second, smoothed. The mouth sits in the lower third of the face box; on each
frame whose shape is open (B–H), a mouth of that shape is painted there, shaded
from the skin around it so it sits in the picture; closed shapes (A, X) leave the
frame untouched. Where no face is found, the shot is left as it is and the
caller is told, so the report can say so.

Frames may be 8-bit (``uint8``) or 16-bit (``uint16``, as the clips engine gives footage
above 8 bits): the face is looked for on an 8-bit view, and the mouth is painted and
feathered in the frame's own depth, so a 10-bit picture keeps its levels around it.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

__all__ = ["find_face", "MouthAnimator", "MOUTH_OPENING"]

#: how open each shape is: (width, height) as fractions of the mouth box
MOUTH_OPENING = {"A": None, "X": None, "B": (0.7, 0.18), "C": (0.75, 0.45), "D": (0.8, 0.7),
                 "E": (0.6, 0.5), "F": (0.35, 0.35), "G": (0.65, 0.2), "H": (0.7, 0.45)}


@lru_cache(maxsize=1)
def _cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():  # OpenCV 5 wheels ship no cascades
        raise RuntimeError(f"OpenCV's face cascade is missing ({path}): install opencv 4.x")
    return cascade


def find_face(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest frontal face as (x, y, w, h), or None (uint8 or uint16 frames)."""
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)  # the detector works on 8-bit grey
    h, w = frame.shape[:2]
    scale = min(1.0, 640 / max(h, w))
    small = cv2.resize(frame, (int(w * scale), int(h * scale))) if scale < 1 else frame
    gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    faces = _cascade().detectMultiScale(gray, 1.1, 5, minSize=(24, 24))
    if len(faces) == 0:
        return None
    x, y, fw, fh = max(faces, key=lambda f: f[2] * f[3])
    return tuple(int(round(v / scale)) for v in (x, y, fw, fh))  # type: ignore[return-value]


class MouthAnimator:
    """Paints mouth shapes on a face found in the footage."""

    def __init__(self, fps: float, redetect_seconds: float = 1.0) -> None:
        self.every = max(1, int(round(fps * redetect_seconds)))
        self.box: np.ndarray | None = None
        self.found_any = False

    def __call__(self, frame: np.ndarray, index: int, shape: str) -> np.ndarray:
        if index % self.every == 0 or (self.box is None and index < self.every):
            face = find_face(frame)
            if face is not None:
                box = np.array(face, np.float64)
                self.box = box if self.box is None else 0.6 * self.box + 0.4 * box
                self.found_any = True
        opening = MOUTH_OPENING.get(shape)
        if self.box is None or opening is None:
            return frame
        x, y, w, h = self.box
        cx, cy = x + w / 2, y + h * 0.78
        mw, mh = w * 0.42, h * 0.2
        y0, y1 = int(max(0, cy - mh)), int(min(frame.shape[0], cy + mh))
        x0, x1 = int(max(0, cx - mw)), int(min(frame.shape[1], cx + mw))
        if y1 <= y0 or x1 <= x0:
            return frame
        top = 65535.0 if frame.dtype == np.uint16 else 255.0  # the frame's white
        skin = frame[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
        inside = skin * 0.25
        lip = np.clip(skin * np.array([0.75, 0.45, 0.45]), 0, top)
        teeth = np.array([225, 225, 215]) * (top / 255)
        ax = max(1, int(mw * opening[0]))
        ay = max(1, int(mh * opening[1]))
        centre = (int(cx), int(cy))
        out = frame.astype(np.float32)
        _paint(out, lambda m: cv2.ellipse(m, centre, (ax, ay), 0, 0, 360, 255, -1, cv2.LINE_AA),
               inside)
        if shape in ("B", "G"):  # teeth showing
            _paint(out, lambda m: cv2.rectangle(m, (centre[0] - ax + 2, centre[1] - ay),
                                                (centre[0] + ax - 2, centre[1]), 255, -1), teeth)
        _paint(out, lambda m: cv2.ellipse(m, centre, (ax, ay), 0, 0, 360, 255,
                                          max(1, int(h * 0.012)), cv2.LINE_AA), lip)
        # feather the edit into the picture
        mask = np.zeros(frame.shape[:2], np.float32)
        cv2.ellipse(mask, centre, (ax + 3, ay + 3), 0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, h * 0.01))[..., None]
        return (frame * (1 - mask) + out * mask + 0.5).astype(frame.dtype)


def _paint(canvas: np.ndarray, draw, colour: np.ndarray) -> None:
    """Paint ``colour`` onto a float ``canvas`` through the coverage of a shape that
    ``draw`` draws (anti-aliased) on an 8-bit mask: OpenCV anti-aliases on 8-bit pictures
    only, so a 16-bit one is painted through the mask at its own depth."""
    mask = np.zeros(canvas.shape[:2], np.uint8)
    draw(mask)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return
    sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    a = mask[sl].astype(np.float32)[..., None] / np.float32(255)
    canvas[sl] += a * (np.asarray(colour, np.float32) - canvas[sl])
