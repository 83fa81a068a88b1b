"""How alike two shots look: a coherence score for keyframe continuity.

The score mixes two measures on the first frames of consecutive shots:

* colour: histogram intersection of 8×8×8-bin RGB histograms (1 = same colours);
* structure: SSIM (Wang et al. 2004) of the *set region*, the top 40 % of the
  frame, where the set shows above the characters, at 1/8 scale in luma.

Both are 1 for identical frames; the score is their mean.

Identity, per character: a hue-saturation histogram of the character's figure (the
pixels the engine drew them on) in each shot's first frame. The same person in two
shots should match far better than two different people do (:func:`identity_scores`).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["colour_similarity", "set_structure_similarity", "coherence", "figure_histogram",
           "identity_scores"]


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


def figure_histogram(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Hue × saturation histogram (12 × 4 bins, sums to 1) of ``frame`` (RGB) under ``mask``.

    Brightness is left out (a night scene darkens a coat) and the bins are wide (30° of
    hue): a scene's light shifts hues a little, and a person must still match themselves.
    """
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], mask.astype(np.uint8), [12, 4], [0, 180, 0, 256])
    hist = hist.ravel().astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def identity_scores(samples: dict[str, list[tuple[str, np.ndarray]]]) -> dict:
    """Per character, how their figure matches itself across shots against the others.

    ``samples``: name → [(shot id, :func:`figure_histogram`), …]. ``self``: mean histogram
    intersection over pairs of that character's shots; ``others``: mean intersection of
    their shots with every other character's; ``margin``: the difference. ``holds`` when
    every character seen in two or more shots matches themselves better than anyone else.
    """
    def inter(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.minimum(a, b).sum())

    out: dict = {"characters": {}}
    for name, own in samples.items():
        pairs = [inter(a, b) for i, (_, a) in enumerate(own) for _, b in own[i + 1:]]
        rest = [inter(a, b) for _, a in own for other, theirs in samples.items()
                if other != name for _, b in theirs]
        entry = {"shots": [s for s, _ in own],
                 "self": round(float(np.mean(pairs)), 4) if pairs else None,
                 "others": round(float(np.mean(rest)), 4) if rest else None,
                 "nearest_other": round(max(rest), 4) if rest else None}
        if pairs and rest:
            entry["margin"] = round(entry["self"] - entry["others"], 4)
        out["characters"][name] = entry
    margins = [c["margin"] for c in out["characters"].values() if "margin" in c]
    out["min_margin"] = round(min(margins), 4) if margins else None
    out["holds"] = bool(margins) and all(m > 0 for m in margins)
    return out
