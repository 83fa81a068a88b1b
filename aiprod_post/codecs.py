"""The delivery codecs: one table read by the conform (masters from a timeline), the grade
(a graded file, its codec picked by the output's suffix), the delivery profiles of a
project and the command line.

Pure data and small look-ups: nothing here imports a stage package or FFmpeg, so every
part of the house reads the same settings (stage packages may not import each other).

- :data:`PROFILES`: the masters a conform encodes (``conform --profile``), with their
  GOP, B-frames and bitrate cap (how those become encoder options, levels and VBV
  figures is the conform's: ``editing.conform.encoder_options``).
- :data:`MASTERS`: what a grade writes, by the output's suffix (``grade --codec``).
- :data:`DELIVERIES`: the delivery profiles (``render --profile``): which master each
  one's picture is (a key of :data:`PROFILES`), its loudness and what else it delivers.

The ProRes 422 HQ and DNxHR HQX settings are shared by the two tables; their encoders
differ (the conform's ``prores`` copies and matches shots made by that encoder, the grade
uses ``prores_ks``), and stay as they were so that every file keeps its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

__all__ = ["Profile", "PROFILES", "Master", "MASTERS", "DELIVERIES"]


@dataclass(frozen=True)
class Profile:
    """A master's encoder settings.

    ``gop_seconds`` makes a long-GOP master: a closed GOP (it starts with an IDR frame and
    refers to nothing before it) of that length, with keyframes at those GOP starts only,
    and also at every hard cut where ``keyframes_at_cuts`` asks; ``None`` is an intra
    codec, every frame a keyframe. ``capped`` limits the bitrate for streaming (VBV
    maxrate and buffer beside the CRF) and names the H.264 level that fits.
    """

    name: str
    container: str
    suffix: str
    codec: str
    pix_fmt: str
    options: dict
    audio_codec: str
    audio_format: str
    audio_bitrate: int | None = None
    container_options: dict | None = None
    primaries: int = 1  # AVCOL_PRI_BT709
    transfer: int = 1  # AVCOL_TRC_BT709
    matrix: int = 1  # AVCOL_SPC_BT709
    hdr: str | None = None
    gop_seconds: int | None = None
    keyframes_at_cuts: bool = False
    capped: bool = False
    b_frames: int = 0
    #: the sample entry the container must carry (HEVC in MOV: hvc1, what QuickTime and
    #: Apple's devices play; FFmpeg's default, hev1, they refuse); None: FFmpeg's own
    codec_tag: str | None = None


# the settings two tables share (each entry gets its own copy)
_PRORES_422HQ = {"profile": "3", "vendor": "apl0"}
_PRORES_4444 = {"profile": "4", "vendor": "apl0"}
_DNXHR_HQX = {"profile": "dnxhr_hqx"}
_X264_CRF = {"crf": "18", "preset": "medium"}

PROFILES: dict[str, Profile] = {
    # Web: what YouTube, Vimeo and Apple's HLS authoring spec ask of an H.264 upload or
    # rendition - High profile, CABAC, closed GOP of 2 s with keyframes at the GOP starts
    # only (HLS and DASH segments then start on one), 2 consecutive B-frames (YouTube's
    # figure) with a B-pyramid (High profile allows it; every platform's decoder takes it),
    # a level that fits size, rate and VBV, and the bitrate capped by a VBV (README).
    "h264": Profile("h264", "mp4", ".mp4", "libx264", "yuv420p",
                    {"profile": "high", "preset": _X264_CRF["preset"], "crf": _X264_CRF["crf"],
                     "x264-params": "b-pyramid=normal"},
                    "aac", "fltp", 256_000, {"movflags": "+faststart"},
                    gop_seconds=2, capped=True, b_frames=2),
    "prores": Profile("prores", "mov", ".mov", "prores", "yuv422p10le",
                      dict(_PRORES_422HQ), "pcm_s24le", "s32"),
    "dnxhr": Profile("dnxhr", "mov", ".mov", "dnxhd", "yuv422p10le",
                     dict(_DNXHR_HQX), "pcm_s24le", "s32"),
    "hdr-pq": Profile("hdr-pq", "mov", ".mov", "libx265", "yuv420p10le",
                      {"x265-params": "log-level=error:hdr10=1:repeat-headers=1", "crf": "18",
                       "preset": "fast", "profile": "main10"},
                      "pcm_s24le", "s32", primaries=9, transfer=16, matrix=9, hdr="pq",
                      gop_seconds=2, b_frames=4, codec_tag="hvc1"),
    "hdr-hlg": Profile("hdr-hlg", "mov", ".mov", "libx265", "yuv420p10le",
                       {"x265-params": "log-level=error:repeat-headers=1", "crf": "18",
                        "preset": "fast", "profile": "main10"},
                       "pcm_s24le", "s32", primaries=9, transfer=18, matrix=9, hdr="hlg",
                       gop_seconds=2, b_frames=4, codec_tag="hvc1"),
}


@dataclass(frozen=True)
class Master:
    """How one kind of graded output file is written."""

    codec: str  # the name ``--codec`` takes
    encoder: str  # FFmpeg's encoder
    pix_fmt: str
    options: dict = field(default_factory=dict)
    container: str | None = None  # None: an image sequence
    audio_copy: frozenset | None = frozenset()  # None: any codec is copied
    audio_encoder: str | None = None  # what other audio becomes; None: dropped

    @property
    def image(self) -> bool:
        return self.container is None


_PCM = frozenset({"pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_s16be", "pcm_s24be", "pcm_f32le"})
_PRORES = dict(encoder="prores_ks", container="mov", audio_encoder="pcm_s24le",
               audio_copy=frozenset({"aac", "alac", "mp3", "ac3", "eac3"} | _PCM))
_DNXHR = dict(encoder="dnxhd", container="mxf", audio_encoder="pcm_s24le",
              audio_copy=frozenset({"pcm_s16le", "pcm_s24le"}))

#: suffix -> the codecs it takes, the first the default
MASTERS: dict[str, dict[str, Master]] = {
    ".mov": {
        "prores_422hq": Master("prores_422hq", pix_fmt="yuv422p10le",
                               options=dict(_PRORES_422HQ), **_PRORES),
        "prores_4444": Master("prores_4444", pix_fmt="yuv444p10le",
                              options=dict(_PRORES_4444), **_PRORES),
    },
    ".mxf": {
        "dnxhr_hqx": Master("dnxhr_hqx", pix_fmt="yuv422p10le", options=dict(_DNXHR_HQX),
                            **_DNXHR),
        "dnxhr_444": Master("dnxhr_444", pix_fmt="yuv444p10le", options={"profile": "dnxhr_444"},
                            **_DNXHR),
    },
    ".mp4": {
        "h264": Master("h264", "libx264", "yuv420p", dict(_X264_CRF),
                       container="mp4", audio_encoder="aac",
                       audio_copy=frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus"})),
    },
    ".mkv": {
        "ffv1": Master("ffv1", "ffv1", "gbrp16le", {"level": "3", "slicecrc": "1"},
                       container="matroska", audio_copy=None),
    },
    ".tif": {"tiff": Master("tiff", "tiff", "rgb48le", {"compression_algo": "deflate"})},
    ".png": {"png": Master("png", "png", "rgb48be")},
    ".exr": {"exr_half": Master("exr_half", "exr", "gbrpf32le",
                                {"format": "half", "compression": "zip16"})},
}
MASTERS[".tiff"] = MASTERS[".tif"]

#: delivery profile -> its master (a key of PROFILES), loudness (LUFS), true peak (dBTP),
#: and whether it also delivers stems and timeline exports
DELIVERIES: Mapping[str, Mapping] = MappingProxyType({
    "web": {"video": "h264", "loudness": -14.0, "true_peak": -1.0},
    "broadcast-ebu": {"video": "prores", "loudness": -23.0, "true_peak": -1.0},
    "broadcast-atsc": {"video": "prores", "loudness": -24.0, "true_peak": -2.0},
    "master": {"video": "prores", "loudness": -23.0, "true_peak": -1.0, "stems": True,
               "exports": True},
    # HDR: HDR10 (HEVC Main 10, BT.2020 / PQ with its static metadata, ATSC A/85's
    # -24 LKFS and -2 dBTP), HLG for broadcast (BT.2100 HLG, EBU R128's -23 LUFS and
    # -1 dBTP); a shot with an HDR picture (ltx2's HDR LoRA) is read from it, the others
    # are placed with diffuse white at BT.2408's 203 cd/m² (editing.conform)
    "hdr10": {"video": "hdr-pq", "loudness": -24.0, "true_peak": -2.0},
    "hlg": {"video": "hdr-hlg", "loudness": -23.0, "true_peak": -1.0},
})
