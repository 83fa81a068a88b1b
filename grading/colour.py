"""Colour management through OpenColorIO, with a built-in config pinned by its full name.

The config is ``studio-config-v2.1.0_aces-v1.3_ocio-v2.3`` (ACES 1.3): the ``latest``
alias would change meaning between OpenColorIO releases, so it is not used.

Working spaces, stated, never implied:

* the animatic, the looks and the masters are display-referred Rec.709 video
  (BT.1886, gamma 2.4): ``rec709``;
* scene-linear work uses ``acescg``; log grading ``acescct``.

Camera footage (``ARRI LogC4``, ``S-Log3 S-Gamut3.Cine``, any colour space of the
config) reaches the Rec.709 working space the way a colourist's viewing pipeline
renders it: through the config's ACES SDR output transform onto a Rec.1886 Rec.709
display (:class:`ColourPipeline`); texture and utility spaces are converted directly.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from aiprod_post.errors import MediaError

__all__ = ["CONFIG_NAME", "SPACES", "WORKING", "convert", "processor", "hdr_output",
           "space_name", "ColourPipeline", "space_from_tags", "uint8_converter",
           "footage_converter", "tags_for_space"]

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
    cs = _config().getColorSpace(name)  # names and their aliases (arri_logc4, slog3_sgamut3)
    if cs is not None:
        return cs.getName()
    raise MediaError(f"unknown colour space {name!r}: expected one of {', '.join(SPACES)} "
                     f"or a colour space of {CONFIG_NAME} (for example ARRI LogC4, "
                     "S-Log3 S-Gamut3.Cine, V-Log V-Gamut, Log3G10 REDWideGamutRGB)")


def space_name(name: str) -> str:
    """The config's own name for a short name, config name or alias.

    >>> space_name("rec709"), space_name("arri_logc4")
    ('Gamma 2.4 Rec.709 - Texture', 'ARRI LogC4')
    """
    return _space(name)


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


#: the space the looks are made for and the masters are delivered in
WORKING = "rec709"
#: the viewing pipeline that renders scene-referred footage into the working space
SDR_DISPLAY, SDR_VIEW = "Rec.1886 Rec.709 - Display", "ACES 1.0 - SDR Video"


@lru_cache(maxsize=32)
def _to_working(src: str, working: str):
    import PyOpenColorIO as ocio

    cfg = _config()
    cs = cfg.getColorSpace(src)
    rendered = (cs.getReferenceSpaceType() == ocio.REFERENCE_SPACE_DISPLAY
                or cs.getFamily().startswith(("Input", "ACES")))
    if rendered and _space(working) == _space(WORKING):
        t = ocio.DisplayViewTransform(src=src, display=SDR_DISPLAY, view=SDR_VIEW)
        return cfg.getProcessor(t).getDefaultCPUProcessor()
    return cfg.getProcessor(src, _space(working)).getDefaultCPUProcessor()


class ColourPipeline:
    """Footage in ``input_space`` to the working space (before matching and the look),
    and the working space to ``delivery`` (after); identity where they agree.

    Camera and ACES spaces, and display spaces such as PQ or HLG, are rendered into the
    Rec.709 working space through the ACES SDR output transform; other spaces convert
    directly. Out of the working space, a display ``delivery`` (``sRGB - Display``,
    ``Rec.2100-PQ - Display``, ``Display P3 - Display`` …) is reached from the working
    space's own display (``Rec.1886 Rec.709 - Display``: the same picture, already
    rendered), display to display, with no second rendering; other spaces directly.

    >>> ColourPipeline(None).identity, ColourPipeline("ARRI LogC4").identity
    (True, False)
    """

    def __init__(self, input_space: str | None, working: str = WORKING,
                 delivery: str = WORKING) -> None:
        self.input_space = _space(input_space) if input_space else None
        self.working, self.delivery = _space(working), _space(delivery)
        self._in = (None if self.input_space in (None, self.working)
                    else _to_working(self.input_space, working))
        self._out = None if self.delivery == self.working else _from_working(working,
                                                                              self.delivery)

    @property
    def identity(self) -> bool:
        return self._in is None and self._out is None

    def to_working(self, rgb: np.ndarray) -> np.ndarray:
        return rgb if self._in is None else _apply(self._in, rgb)

    def to_delivery(self, rgb: np.ndarray) -> np.ndarray:
        return rgb if self._out is None else _apply(self._out, rgb)


@lru_cache(maxsize=32)
def _from_working(working: str, delivery: str):
    import PyOpenColorIO as ocio

    cfg = _config()
    display = cfg.getColorSpace(delivery).getReferenceSpaceType() == \
        ocio.REFERENCE_SPACE_DISPLAY
    if display and _space(working) == _space(WORKING):
        return cfg.getProcessor(SDR_DISPLAY, delivery).getDefaultCPUProcessor()
    return processor(working, delivery)


def _apply(proc, rgb: np.ndarray) -> np.ndarray:
    x = np.array(rgb, dtype=np.float32, order="C")  # a copy: OCIO works in place
    proc.applyRGB(x.reshape(-1, 3))
    return x


def tags_for_space(name: str) -> tuple[int, int] | None:
    """FFmpeg's colour primaries and transfer (``AVCOL_PRI_*``, ``AVCOL_TRC_*``) for a
    colour space of the config, where the standards name it; None where they do not
    (camera log, ACES, gamma 1.8 …: a file's tags cannot say those).

    >>> tags_for_space("rec709"), tags_for_space("ACEScct")
    ((1, 1), None)
    """
    from av.video.reformatter import ColorPrimaries as P, ColorTrc as T

    tags = {
        "Gamma 2.4 Rec.709 - Texture": (P.BT709, T.BT709),
        "Rec.1886 Rec.709 - Display": (P.BT709, T.BT709),
        "Camera Rec.709": (P.BT709, T.BT709),
        "Rec.1886 Rec.2020 - Display": (P.BT2020, T.BT2020_10),
        "sRGB - Texture": (P.BT709, T.IEC61966_2_1),
        "sRGB - Display": (P.BT709, T.IEC61966_2_1),
        "Gamma 2.2 Rec.709 - Texture": (P.BT709, T.GAMMA22),
        "Linear Rec.709 (sRGB)": (P.BT709, T.LINEAR),
        "Linear Rec.2020": (P.BT2020, T.LINEAR),
        "Rec.2100-PQ - Display": (P.BT2020, T.SMPTE2084),
        "Rec.2100-HLG - Display": (P.BT2020, T.ARIB_STD_B67),
        "Display P3 - Display": (P.SMPTE432, T.IEC61966_2_1),
        "sRGB Encoded P3-D65 - Texture": (P.SMPTE432, T.IEC61966_2_1),
        "ST2084-P3-D65 - Display": (P.SMPTE432, T.SMPTE2084),
    }.get(_space(name))
    return None if tags is None else (int(tags[0]), int(tags[1]))


def space_from_tags(codec_context) -> str | None:
    """The colour space a file's tags name, where they are specific (PQ, HLG, linear,
    sRGB); None (the Rec.709 default) otherwise."""
    from av.video.reformatter import ColorPrimaries, ColorTrc

    trc = getattr(codec_context, "color_trc", None)
    wide = getattr(codec_context, "color_primaries", None) == ColorPrimaries.BT2020
    return {ColorTrc.SMPTE2084: "Rec.2100-PQ - Display",
            ColorTrc.ARIB_STD_B67: "Rec.2100-HLG - Display",
            ColorTrc.LINEAR: "Linear Rec.2020" if wide else "Linear Rec.709 (sRGB)",
            ColorTrc.IEC61966_2_1: "sRGB - Texture"}.get(trc)


class _FootageConverter:
    """Frames from the footage's space to the working space, in their own depth: 8-bit
    through one exact table look-up a pixel (built on first use), uint16 and float32
    through OpenColorIO in float32 (no 8-bit step; uint16 is clamped to 0..1 and
    rounded once, at the end)."""

    def __init__(self, pipe: ColourPipeline) -> None:
        self.pipe = pipe
        self._table = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if frame.dtype == np.uint8:
            if self._table is None:
                from .apply import FrameGrader
                from .lut import LUT

                # an identity 2-point table: the look is nothing, the conversion is all
                self._table = FrameGrader(LUT.identity(2), before=self.pipe.to_working)
            return self._table(frame)
        if frame.dtype == np.uint16:
            x = self.pipe.to_working(frame.astype(np.float32) * np.float32(1 / 65535))
            np.clip(x * np.float32(65535) + np.float32(0.5), 0, 65535, out=x)
            return x.astype(np.uint16)
        if frame.dtype == np.float32:
            return self.pipe.to_working(frame)
        raise MediaError(f"footage frames are uint8, uint16 or float32, not {frame.dtype}")


def footage_converter(input_space: str | None):
    """RGB frames from ``input_space`` to the working space, each in its own depth
    (uint8, uint16 or float32 in, the same out; a callable frame -> frame); None when
    there is nothing to convert."""
    pipe = ColourPipeline(input_space)
    return None if pipe.identity else _FootageConverter(pipe)


def uint8_converter(input_space: str | None):
    """8-bit RGB frames from ``input_space`` to the working space, one table look-up a
    pixel (a callable frame -> frame); None when there is nothing to convert. The
    converter takes uint16 and float32 frames too (:func:`footage_converter`)."""
    return footage_converter(input_space)
