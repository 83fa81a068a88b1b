"""Shot matching: bring a shot's colour statistics to its scene's reference keyframe.

Per channel, the shot's mean and spread are mapped onto the reference's (Reinhard
et al. 2001, in display RGB): a gain and an offset per channel
(:func:`match_affine`). For 8-bit frames it is a 256-entry curve per channel
(:func:`match_curves`), so applying it is one table look-up per pixel; frames above
8 bits (uint16) and float frames take the gain and offset themselves in float, with no
8-bit step (:func:`apply_affine`, or ``FloatFrameGrader(..., match=)``). ``amount``
blends towards it (full matching can overshoot when a shot legitimately differs, a
close-up on a face against a wide of the set). The frame and the reference may differ
in depth (a 10-bit shot against an 8-bit keyframe): both are read on a 0..1 scale.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["match_curves", "match_affine", "apply_curves", "apply_affine", "unit_scale",
           "mean_delta_e"]


def unit_scale(dtype) -> float:
    """What 1.0 is in frames of ``dtype``: 255 (uint8), 65535 (uint16), 1 (float)."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind == "u" else 1.0


def _matched(x: np.ndarray, a: np.ndarray, b: np.ndarray, amount: float, flat: float
             ) -> np.ndarray:
    """Values ``x`` of one channel moved ``amount`` of the way from ``a``'s mean and spread
    to ``b``'s (all on one scale; ``flat``: the spread taken for a flat ``a``)."""
    sa, sb = a.std() or flat, b.std()
    mapped = (x - a.mean()) * (sb / sa) + b.mean()
    return x + amount * (mapped - x)


def match_affine(frame: np.ndarray, reference: np.ndarray, amount: float = 0.7
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(gain, offset)``, three each, on a 0..1 scale: ``x * gain + offset`` takes
    ``frame``'s per-channel mean and spread ``amount`` of the way to ``reference``'s."""
    ends = np.array([0.0, 1.0])
    fs, rs = unit_scale(frame.dtype), unit_scale(reference.dtype)
    at = np.array([_matched(ends, frame[..., c].astype(np.float64) / fs,
                            reference[..., c].astype(np.float64) / rs, amount, 1 / 255)
                   for c in range(3)])
    return at[:, 1] - at[:, 0], at[:, 0]


def match_curves(frame: np.ndarray, reference: np.ndarray, amount: float = 0.7) -> np.ndarray:
    """(3, 256) uint8 curves taking 8-bit ``frame``'s statistics towards ``reference``'s
    (a deeper reference is read on the 8-bit scale)."""
    levels = np.arange(256, dtype=np.float64)
    curves = np.zeros((3, 256), np.uint8)
    to8 = 255 / unit_scale(reference.dtype)  # 1.0 for an 8-bit reference: exact
    for c in range(3):
        out = _matched(levels, frame[..., c].astype(np.float64),
                       reference[..., c].astype(np.float64) * to8, amount, 1.0)
        curves[c] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return curves


def apply_affine(frame: np.ndarray, affine: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``frame`` (uint16 or float32) through :func:`match_affine`'s gain and offset, in
    float32, clamped to 0..1 as the 8-bit curves are; the same dtype back."""
    gain, offset = (np.asarray(v, np.float32) for v in affine)
    scale = np.float32(unit_scale(frame.dtype))
    y = frame.astype(np.float32) * gain + offset * scale
    np.clip(y, 0, scale, out=y)
    if frame.dtype == np.uint16:
        y += np.float32(0.5)
        return y.astype(np.uint16)
    if frame.dtype != np.float32:
        raise ValueError(f"expected uint16 or float32 frames, not {frame.dtype}")
    return y


def apply_curves(frame: np.ndarray, curves: np.ndarray) -> np.ndarray:
    channels = [cv2.LUT(np.ascontiguousarray(frame[..., c]), curves[c]) for c in range(3)]
    return np.stack(channels, axis=-1)


def mean_delta_e(a: np.ndarray, b: np.ndarray) -> float:
    """Mean CIEDE2000 between the average colours of two frames' 8×8 grids of tiles."""
    import colour

    def tiles(img):
        small = cv2.resize(img, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0
        linear = small ** 2.4  # BT.1886 display light of Rec.709 video
        xyz = colour.RGB_to_XYZ(linear, colour.RGB_COLOURSPACES["ITU-R BT.709"])
        return colour.XYZ_to_Lab(xyz)

    return float(np.mean(colour.delta_E(tiles(a), tiles(b), method="CIE 2000")))
