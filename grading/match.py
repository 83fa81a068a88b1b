"""Shot matching: bring a shot's colour statistics to its scene's reference keyframe.

Per channel, the shot's mean and spread are mapped onto the reference's (Reinhard
et al. 2001, in display RGB). The mapping is a 256-entry curve per channel, so
applying it to a frame is one table look-up per pixel. ``amount`` blends towards it
(full matching can overshoot when a shot legitimately differs, a close-up on a face
against a wide of the set).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["match_curves", "apply_curves", "mean_delta_e"]


def match_curves(frame: np.ndarray, reference: np.ndarray, amount: float = 0.7) -> np.ndarray:
    """(3, 256) uint8 curves taking ``frame``'s statistics towards ``reference``'s."""
    levels = np.arange(256, dtype=np.float64)
    curves = np.zeros((3, 256), np.uint8)
    for c in range(3):
        a = frame[..., c].astype(np.float64)
        b = reference[..., c].astype(np.float64)
        sa, sb = a.std() or 1.0, b.std()
        mapped = (levels - a.mean()) * (sb / sa) + b.mean()
        out = levels + amount * (mapped - levels)
        curves[c] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return curves


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
