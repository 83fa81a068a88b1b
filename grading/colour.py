"""Colour management through OpenColorIO, with a built-in config pinned by its full name.

The config is ``studio-config-v2.1.0_aces-v1.3_ocio-v2.3`` (ACES 1.3): the ``latest``
alias would change meaning between OpenColorIO releases, so it is not used.

Working spaces, stated, never implied:

* the animatic, the looks and the masters are display-referred Rec.709 video
  (BT.1886, gamma 2.4): ``rec709``;
* scene-linear work uses ``acescg``; log grading ``acescct``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from aiprod_post.errors import MediaError

__all__ = ["CONFIG_NAME", "SPACES", "convert", "processor", "hdr_output"]

CONFIG_NAME = "studio-config-v2.1.0_aces-v1.3_ocio-v2.3"

#: short names for the colour spaces the pipeline uses, as the config names them
SPACES = {
    "srgb": "sRGB - Texture",
    "rec709": "Gamma 2.4 Rec.709 - Texture",
    "lin_rec709": "Linear Rec.709 (sRGB)",
    "lin_rec2020": "Linear Rec.2020",
    "acescg": "ACEScg",
    "acescct": "ACEScct",
    "aces2065": "ACES2065-1",
}

#: display, view for the HDR deliverables (ACES output transforms)
_HDR = {
    "pq": ("Rec.2100-PQ - Display", "ACES 1.1 - HDR Video (1000 nits & Rec.2020 lim)"),
    "hlg": ("Rec.2100-HLG - Display", "ACES 1.1 - HDR Video (1000 nits & Rec.2020 lim)"),
}


@lru_cache(maxsize=1)
def _config():
    import PyOpenColorIO as ocio

    return ocio.Config.CreateFromBuiltinConfig(CONFIG_NAME)


def _space(name: str) -> str:
    if name in SPACES:
        return SPACES[name]
    names = {cs.getName() for cs in _config().getColorSpaces()}
    if name in names:
        return name
    raise MediaError(f"unknown colour space {name!r}: expected one of {', '.join(SPACES)} "
                     f"or a colour space of {CONFIG_NAME}")


@lru_cache(maxsize=32)
def processor(src: str, dst: str):
    """An OpenColorIO CPU processor from ``src`` to ``dst`` (short or config names)."""
    return _config().getProcessor(_space(src), _space(dst)).getDefaultCPUProcessor()


def convert(rgb: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Convert float RGB (..., 3) between colour spaces; returns float32."""
    x = np.ascontiguousarray(rgb, dtype=np.float32).copy()
    shape = x.shape
    flat = x.reshape(-1, 3)
    processor(src, dst).applyRGB(flat)
    return flat.reshape(shape)


@lru_cache(maxsize=4)
def _hdr_processor(kind: str, src: str):
    import PyOpenColorIO as ocio

    if kind not in _HDR:
        raise MediaError(f"unknown HDR output {kind!r}: expected pq or hlg")
    display, view = _HDR[kind]
    cfg = _config()
    if view not in cfg.getViews(display):
        view = cfg.getViews(display)[0]
    t = ocio.DisplayViewTransform(src=_space(src), display=display, view=view)
    return cfg.getProcessor(t).getDefaultCPUProcessor()


def hdr_output(rgb: np.ndarray, kind: str, src: str = "acescg") -> np.ndarray:
    """Scene-referred ``src`` RGB through the ACES output transform for Rec.2100 PQ or HLG."""
    x = np.ascontiguousarray(rgb, dtype=np.float32).copy()
    flat = x.reshape(-1, 3)
    _hdr_processor(kind, src).applyRGB(flat)
    return flat.reshape(x.shape)
