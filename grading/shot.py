"""A shot's frames through shot matching and its look, each frame in its own depth.

8-bit frames (what the generating engines make) go through the exact 2^24 table of
:class:`~aiprod_post.grading.apply.FrameGrader`, with matching as 256-entry curves in the
same pass; frames above 8 bits (``uint16``, as the clips engine gives 10-bit footage) and
float frames go through :class:`~aiprod_post.grading.apply.FloatFrameGrader`, matching as
a gain and an offset in float: no 8-bit step between a 10-bit clip and a 10-bit shot.

>>> from aiprod_post.grading.lut import LUT
>>> grade = ShotGrader(LUT.identity(2))
>>> [f.dtype.name for f in graded_frames(iter([np.zeros((2, 2, 3), np.uint16)]), grade)]
['uint16']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np

from .apply import FloatFrameGrader, FrameGrader
from .lut import LUT
from .match import match_affine, match_curves

if TYPE_CHECKING:
    from .cdl import CDL

__all__ = ["ShotGrader", "graded_frames"]


class ShotGrader:
    """A look (after a shot's ASC ``cdl``) for frames of any depth: uint8 frames through
    the 2^24 table (64 MiB, built when the first 8-bit frame comes), uint16 and float32
    ones in float32. ``grader(frame, match)``: ``match`` is what :func:`graded_frames`
    computes (8-bit curves, or a gain and an offset)."""

    def __init__(self, lut: LUT, strength: float = 1.0, cdl: "CDL | None" = None) -> None:
        self.lut, self.strength, self.cdl = lut, strength, cdl
        self._table: FrameGrader | None = None
        self._float: FloatFrameGrader | None = None

    def __call__(self, frame: np.ndarray, match=None) -> np.ndarray:
        if frame.dtype == np.uint8:
            if self._table is None:
                self._table = FrameGrader(self.lut, self.strength, cdl=self.cdl)
            return self._table(frame, match)
        if self._float is None:
            self._float = FloatFrameGrader(self.lut, self.strength, cdl=self.cdl)
        return self._float(frame, match=match)


def graded_frames(frames: Iterator[np.ndarray], grader: ShotGrader,
                  reference: np.ndarray | None = None, amount: float = 0.7
                  ) -> Iterator[np.ndarray]:
    """``frames`` matched to ``reference`` (the scene's establishing keyframe, of any
    depth; the match is taken from the shot's first frame), then graded, one pass per
    frame, each in its own depth. A frame equal to the one before (a held shot, a mouth
    that keeps its shape) is not graded again: the same graded array is yielded, which
    the encoder's conversion also recognises."""
    match = None
    prev_in = prev_out = None
    for frame in frames:
        if prev_in is not None and np.array_equal(frame, prev_in):
            yield prev_out
            continue
        if reference is not None and match is None:
            match = (match_curves if frame.dtype == np.uint8 else match_affine)(
                frame, reference, amount)
        prev_in, prev_out = frame, grader(frame, match)
        yield prev_out
