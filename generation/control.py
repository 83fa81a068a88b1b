"""Control videos from the previz: what an IC-LoRA follows, computed from the animatic's frames.

The animatic renders every shot's blocking, framing and camera move in seconds; an LTX-2
IC-LoRA (canny, depth or pose) takes a control video of the same shot as an in-context
reference, so the generated shot keeps the previz's composition. Here the control signal is
computed from the animatic in code: edges of its frames by OpenCV's Canny detector (the signal
the canny IC-LoRA was trained on), or its depth pass, drawn from the animatic's own geometry
(ground plane, back wall, figures where they stand), or its pose pass (each figure's
OpenPose skeleton), with the same camera. Frames stream in
and out; a shot is never held whole.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

# the ltx engine's placement of a plan-size frame on its generation canvas (centred, edges
# repeated: the inverse of its output crop), so the control lines up with the picture
from .ltx import _fit as fit_frame

__all__ = ["CONTROL_KINDS", "canny_frame", "ControlStream"]

#: control signals computed from the animatic: Canny edges of its frames, or its own depth
#: or pose pass (from its geometry: :meth:`~.animatic.AnimaticEngine.depth`, ``.pose``)
CONTROL_KINDS = ("canny", "depth", "pose", "none")


def canny_frame(img: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """Edges of an RGB frame as a white-on-black RGB frame (the canny IC-LoRA's input).

    >>> f = np.zeros((16, 16, 3), np.uint8); f[:, 8:] = 255
    >>> e = canny_frame(f); e.shape, int(e[:, 7:9].max()), int(e[:, :5].max())
    ((16, 16, 3), 255, 0)
    """
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, low, high)
    return np.repeat(edges[:, :, None], 3, axis=2)


class ControlStream:
    """The control frames of one shot, read from the animatic's frame iterator as the
    engine's segments ask for them (each segment starts on the frame the last one ended).

    ``take(start, count)`` returns frames ``start .. start+count-1`` of the shot at the
    reference size; frames past the shot's end repeat its last (a generation may be longer
    than the shot it serves, then trimmed)."""

    def __init__(self, frames: Iterator[np.ndarray], kind: str, size: tuple[int, int],
                 canvas: tuple[int, int], plan: tuple[int, int]) -> None:
        self._it = iter(frames)
        self.kind = kind
        self.size = size  # (width, height) of the reference video
        self.canvas = canvas  # the generation canvas the plan's frame sits in
        self.plan = plan
        self._buffer: list[np.ndarray] = []  # frames from _first on
        self._first = 0
        self._last: np.ndarray | None = None

    def _control(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        placed = fit_frame(frame, *self.canvas, *self.plan)
        if placed.shape[1::-1] != self.size:
            placed = cv2.resize(placed, self.size, interpolation=cv2.INTER_AREA)
        return canny_frame(placed) if self.kind == "canny" else placed

    def take(self, start: int, count: int) -> np.ndarray:
        # frames before ``start`` are never asked for again: drop them
        drop = max(0, start - self._first)
        del self._buffer[:drop]
        self._first += drop
        while self._first + len(self._buffer) < start + count:
            frame = next(self._it, None)
            if frame is None:
                break
            self._last = self._control(frame)
            self._buffer.append(self._last)
        out = self._buffer[start - self._first:start - self._first + count]
        if self._last is None:
            raise ValueError("the previz produced no frames")
        out = out + [out[-1] if out else self._last] * (count - len(out))
        return np.stack(out)
