#!/usr/bin/env python3
"""Author the bundled looks in luts/ as 33-point .cube files (run from the repo root).

Each look is a small, readable function of display-referred Rec.709 RGB (BT.1886,
gamma 2.4), the space the looks are built for and applied in. The files are the
output of this script, written by the aiprod-post developers, licensed CC0.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiprod_post.grading.lut import LUT, write_cube  # noqa: E402

SIZE = 33
LUMA = np.array([0.2126, 0.7152, 0.0722])  # BT.709


def contrast(x, amount):
    # smoothstep blend: amount 0 = identity, 1 = smoothstep
    return x + amount * (x * x * (3 - 2 * x) - x)


def saturation(rgb, amount):
    y = (rgb @ LUMA)[..., None]
    return y + amount * (rgb - y)


def neutral(rgb):
    return rgb


def warm_film(rgb):
    out = contrast(rgb, 0.25)
    out = out * np.array([1.06, 1.0, 0.90]) + np.array([0.012, 0.006, 0.0])
    out = saturation(out, 0.92)
    return 0.02 + 0.96 * out  # lifted blacks, soft highlights, as print film


def teal_orange(rgb):
    y = (rgb @ LUMA)[..., None]
    shadows = (1 - y) ** 2
    highlights = y ** 2
    out = rgb + shadows * np.array([-0.05, 0.02, 0.06]) + highlights * np.array([0.06, 0.01, -0.06])
    return contrast(saturation(out, 1.12), 0.2)


def bleach_bypass(rgb):
    y = (rgb @ LUMA)[..., None]
    mono = contrast(np.repeat(y, 3, axis=-1), 0.6)
    return 0.55 * contrast(rgb, 0.3) + 0.45 * mono  # silver left in: low saturation, hard contrast


def day_for_night(rgb):
    out = saturation(rgb, 0.45)
    out = out * np.array([0.55, 0.68, 0.95])  # under-exposed, cool
    return contrast(out, 0.15) * 0.8


def noir(rgb):
    y = (rgb @ LUMA)[..., None]
    return np.repeat(contrast(contrast(y, 0.8), 0.4), 3, axis=-1)


LOOKS = {
    "neutral_rec709": (neutral, "Neutral Rec.709: identity, a reference for QA"),
    "warm_film": (warm_film, "Warm film: gentle S-curve, warm balance, lifted blacks"),
    "teal_orange": (teal_orange, "Teal and orange: cool shadows, warm highlights, more saturation"),
    "bleach_bypass": (bleach_bypass, "Bleach bypass: desaturated, hard contrast"),
    "day_for_night": (day_for_night, "Day for night: darker, cooler, desaturated"),
    "noir": (noir, "Black-and-white noir: luma only, high contrast"),
}


def main() -> None:
    out = Path("luts")
    out.mkdir(exist_ok=True)
    for name, (fn, title) in LOOKS.items():
        lut = LUT.identity(SIZE, title=title)
        lut.table = np.clip(fn(lut.table), 0.0, 1.0)
        lut.comments = ["aiprod-post look, authored by scripts/make_looks.py, licence CC0",
                        "input and output: display-referred Rec.709 (BT.1886, gamma 2.4)"]
        write_cube(lut, out / f"{name}.cube")
        print(out / f"{name}.cube")


if __name__ == "__main__":
    main()
