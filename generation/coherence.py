"""How alike two shots look: a coherence score for keyframe continuity.

The score mixes two measures on the first frames of consecutive shots:

* colour: histogram intersection of 8×8×8-bin RGB histograms (1 = same colours);
* structure: SSIM (Wang et al. 2004) of the *set region*, the top 40 % of the
  frame, where the set shows above the characters, at 1/8 scale in luma.

Both are 1 for identical frames; the score is their mean.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["colour_similarity", "set_structure_similarity", "coherence"]


def colour_similarity(a: np.ndarray, b: np.ndarray) -> float:
    ha = cv2.calcHist([a], [0, 1, 2], None, [8, 8, 8], [0, 256] * 3).ravel()
    hb = cv2.calcHist([b], [0, 1, 2], None, [8, 8, 8], [0, 256] * 3).ravel()
    return float(np.minimum(ha / ha.sum(), hb / hb.sum()).sum())


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    ssim = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(ssim.mean())


def set_structure_similarity(a: np.ndarray, b: np.ndarray) -> float:
    h = a.shape[0]
    small = (max(8, a.shape[1] // 8), max(8, int(h * 0.4) // 8))
    ga = cv2.resize(cv2.cvtColor(a[: int(h * 0.4)], cv2.COLOR_RGB2GRAY), small,
                    interpolation=cv2.INTER_AREA)
    gb = cv2.resize(cv2.cvtColor(b[: int(h * 0.4)], cv2.COLOR_RGB2GRAY), small,
                    interpolation=cv2.INTER_AREA)
    return _ssim(ga, gb)


def coherence(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of colour and set-structure similarity, 1 for identical frames."""
    return 0.5 * (colour_similarity(a, b) + set_structure_similarity(a, b))
