"""Deep RGB (16-bit, float) across FFmpeg's scaler (swscale) to and from Y'CbCr, at
BT.709's levels: read by the generation engines, the grade, the picture stage and the
conform alike, so every path that meets the scaler does it once, here.

swscale's RGB ↔ Y'CbCr conversions take 65280 (255 × 256), not 65535, as 16-bit RGB's
full scale, both ways (measured with PyAV 18.1, libswscale 9.5): 16-bit RGB 65535 (and
float 1.0) went to 10-bit Y' 943, not 940, every level 0.34 % too high, and 10-bit Y' 940
was decoded to 65283. 8-bit RGB is right (255 ↔ 940). So 16-bit and float RGB are scaled
to the scaler's full scale on the way in (:func:`ycbcr_source`) and from it on the way
out (:func:`rgb48`). RGB to RGB (FFV1 ``gbrp16le``, 16-bit TIFF, PNG) is a repacking:
nothing is scaled there.

8-bit RGB from Y'CbCr above 8 bits has a defect of its own: swscale's packed RGB writers
(``rgb24``, ``rgba``) for horizontally subsampled Y'CbCr (ProRes 422's ``yuv422p10le``,
``yuv420p10le``), which it uses unless asked for full chroma interpolation, came out about
0.8 % dark: 10-bit Y' 940 gave 253, 502 gave 126, 283 gave 62 (the colours up to 3 codes
off), whatever the frames' colour range tags say. Its planar RGB writer (``gbrp``, full
chroma) is right (940 → 255, 502 → 128, all within half a code of BT.709) and the faster
of the right ones, so :func:`rgb24` decodes such frames through it.

8-bit Y'CbCr (H.264 footage, the web master) came out half a code dark on average in
8-bit RGB (up to 0.99: swscale truncates where it should round), and its 16-bit RGB
0.4 % dark (Y' 235 → 65021 where 10-bit white gives 65283). With swscale's accurate
rounding (``ACCURATE_RND``) its planar RGB is within half a code of BT.709 and its 16-bit
RGB at the same full scale as deeper sources, so both functions convert 8-bit Y'CbCr so
(about 7 ms a 1080p picture for 8-bit RGB, beside 1.3 ms).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SCALER_WHITE", "for_scaler", "ycbcr_source", "rgb48", "rgb24"]

#: what swscale's RGB ↔ Y'CbCr conversions take for 16-bit full scale
SCALER_WHITE = 65280

_FORMATS = {np.dtype(np.uint8): "rgb24", np.dtype(np.uint16): "rgb48le",
            np.dtype(np.float32): "gbrpf32le"}


def for_scaler(rgb: np.ndarray) -> np.ndarray:
    """Full-range RGB (uint16 0..65535, float32 0..1) at the scaler's full scale, for its
    conversion to Y'CbCr; uint8 as it is."""
    if rgb.dtype == np.uint16:
        return ((rgb.astype(np.uint32) * SCALER_WHITE + 32767) // 65535).astype(np.uint16)
    if rgb.dtype == np.float32:
        return rgb * np.float32(SCALER_WHITE / 65535)
    return rgb


def ycbcr_source(rgb: np.ndarray) -> Any:
    """An RGB picture (H×W×3 uint8, uint16 or float32, full range) as the
    ``av.VideoFrame`` to convert to Y'CbCr (``reformat`` to a ``yuv*`` format, BT.709
    limited range gives Y' 64..940 for 0..full scale)."""
    import av

    fmt = _FORMATS.get(rgb.dtype)
    if fmt is None:
        raise TypeError(f"RGB pictures are uint8, uint16 or float32, not {rgb.dtype}")
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(for_scaler(rgb)), format=fmt)


def rgb48(frame: Any) -> np.ndarray:
    """A decoded ``av.VideoFrame`` as full-range 16-bit RGB (H×W×3 uint16, white 65535):
    Y'CbCr from the scaler's full scale; 8-bit RGB widened exactly (× 257, which the
    scaler does not do: 255 → 65283); deeper RGB as the scaler repacks it."""
    if not frame.format.is_rgb:
        a = (frame.reformat(format="rgb48le", interpolation=_accurate())
             if _eight_bit(frame) else frame.reformat(format="rgb48le")
             ).to_ndarray().astype(np.uint32)
        return np.minimum((a * 65535 + SCALER_WHITE // 2) // SCALER_WHITE, 65535
                          ).astype(np.uint16)
    if _eight_bit(frame):
        return frame.to_ndarray(format="rgb24").astype(np.uint16) * np.uint16(257)
    return frame.to_ndarray(format="rgb48le")


def rgb24(frame: Any, width: int | None = None, height: int | None = None) -> np.ndarray:
    """A decoded ``av.VideoFrame`` as full-range 8-bit RGB (H×W×3 uint8), scaled to
    ``width`` × ``height`` where given: Y'CbCr through the scaler's planar RGB (its
    packed 8-bit RGB is 0.8 % dark above 8 bits), 8-bit Y'CbCr with accurate rounding
    (half a code dark without); RGB as the scaler packs it."""
    if frame.format.is_rgb:
        if width or height:
            frame = frame.reformat(width=width, height=height, format="rgb24")
        return frame.to_ndarray(format="rgb24")
    # planar RGB (PyAV gives gbrp as H×W×3 in R, G, B order); 8-bit with accurate rounding
    return frame.reformat(width=width, height=height, format="gbrp",
                          interpolation=_accurate() if _eight_bit(frame) else None).to_ndarray()


def _eight_bit(frame: Any) -> bool:
    return all(c.bits <= 8 for c in frame.format.components)


def _accurate() -> Any:
    """swscale's bilinear scaling with accurate rounding."""
    from av.video.reformatter import Interpolation

    return Interpolation.BILINEAR | Interpolation.ACCURATE_RND
