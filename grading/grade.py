"""Grade a user's video or still with a look; the output's suffix picks the master.

==========  ============================================  ==================================
suffix      picture                                       audio
==========  ============================================  ==================================
``.mov``    ProRes 422 HQ (10-bit 4:2:2) or, with         copied (AAC, ALAC, PCM, MP3, AC-3);
            ``codec="prores_4444"``, ProRes 4444          else PCM 24-bit
``.mxf``    DNxHR HQX (10-bit 4:2:2) or ``dnxhr_444``     PCM copied; else PCM 24-bit
``.mp4``    H.264 8-bit 4:2:0 (CRF 18)                    copied where MP4 takes it; else AAC
``.mkv``    FFV1, lossless 16-bit RGB (``gbrp16le``)      copied, whatever it is
``.tif``    16-bit RGB image sequence                     none (an image has no sound)
``.png``    16-bit RGB image sequence                     none
``.exr``    half-float RGB image sequence (ZIP)           none
==========  ============================================  ==================================

An image output is a sequence named by a ``%06d``-style pattern (``shot_%06d.exr``);
without one, ``NAME_%06d.ext`` beside the name given. A still in (``.png``, ``.tif``,
``.exr``, ``.jpg``, ``.dpx``) gives one still out under the exact name; an image
sequence in is named by its pattern too.

Picture precision: an 8-bit source goes through the exact 2^24 table
(:class:`FrameGrader`), whatever the master; a source above 8 bits, a float one or a
camera log input is decoded to 16-bit or float RGB and graded in float32
(:class:`FloatFrameGrader`) with no 8-bit step before the encoder. An ASC ``cdl``
comes before the look in either.

Colour: footage in ``input_space`` (a name of the pinned OpenColorIO config, or one
its tags name: PQ, HLG, linear, sRGB; FFmpeg reads every EXR as linear) is converted to
the working space (display Rec.709, what the looks expect) before the look and to the
delivery space after (:class:`~aiprod_post.grading.colour.ColourPipeline`): Rec.709 unless
``output_space`` names another space of the config (``sRGB - Display``,
``Rec.2100-PQ - Display``, ``Display P3 - Display``, ``ACEScct`` …). The written file's
colour tags name the delivery space where the standards have a name for it
(:func:`~aiprod_post.grading.colour.tags_for_space`); elsewhere they say unspecified,
and ``notes`` say so.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from aiprod_post.codecs import MASTERS, Master
from aiprod_post.errors import MediaError
from aiprod_post.files import atomic_path
from aiprod_post.scaler import rgb24, rgb48, ycbcr_source

from .apply import FloatFrameGrader, FrameGrader
from .cdl import CDL
from .colour import ColourPipeline, space_from_tags, space_name, tags_for_space
from .looks import load_look
from .lut import LUT
from .media import open_video

__all__ = ["Master", "MASTERS", "STILL_SUFFIXES", "master_for", "grade_video"]

STILL_SUFFIXES = (".png", ".tif", ".tiff", ".exr", ".jpg", ".jpeg", ".dpx", ".bmp")
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}
_AUDIO_FORMAT = {"aac": "fltp", "pcm_s24le": "s32"}
# the masters by suffix (MASTERS) are the delivery codec table's: aiprod_post.codecs


def master_for(output: str | Path, codec: str | None = None) -> Master:
    """The master an output name asks for; ``codec`` picks among its suffix's codecs.

    >>> master_for("a.mov").codec, master_for("a.mov", "prores_4444").pix_fmt
    ('prores_422hq', 'yuv444p10le')
    """
    suffix = Path(output).suffix.lower()
    if suffix not in MASTERS:
        choices = ", ".join(f"{s} ({'/'.join(MASTERS[s])})" for s in MASTERS if s != ".tiff")
        raise MediaError(f"cannot grade to {suffix or 'a name without a suffix'}: "
                         f"expected one of {choices}", source=output)
    codecs = MASTERS[suffix]
    if codec is None:
        return next(iter(codecs.values()))
    if codec not in codecs:
        raise MediaError(f"{suffix} takes codec {' or '.join(codecs)}, not {codec!r}",
                         source=output)
    return codecs[codec]


def _is_deep(fmt) -> bool:
    """More than 8 bits a component, or float."""
    return any(c.bits > 8 for c in fmt.components) or "f16" in fmt.name or "f32" in fmt.name


def _float_planes(frame) -> np.ndarray:
    """A gbrp float frame (EXR) as H x W x 3 float32, read from its planes: FFmpeg's
    scaler mangles half floats, so they are not converted through it."""
    dtype = np.float16 if "f16" in frame.format.name else np.float32
    w, h = frame.width, frame.height
    g, b, r = (np.frombuffer(p, dtype).reshape(h, p.line_size // dtype().itemsize)[:, :w]
               for p in frame.planes[:3])
    return np.stack([r, g, b], axis=-1).astype(np.float32)


def _rgb(frame, deep: bool) -> np.ndarray:
    """A decoded frame as full-range RGB: uint8 (8-bit path), uint16 or float32."""
    if not deep:
        return rgb24(frame)
    if frame.format.name.startswith("gbrpf") or frame.format.name.startswith("gbrapf"):
        return _float_planes(frame)
    return rgb48(frame)  # white 65535 from Y'CbCr too (aiprod_post.scaler)


class _Grade:
    """One frame's colour work: input conversion, look, delivery conversion."""

    def __init__(self, lut: LUT, strength: float, colour: ColourPipeline, deep: bool,
                 cdl: CDL | None = None) -> None:
        self.colour = colour
        self.deep = deep
        self.table = None if deep else FrameGrader(lut, strength, cdl=cdl)
        self.floats = FloatFrameGrader(lut, strength, cdl=cdl) if deep else None

    def __call__(self, rgb: np.ndarray, want_float: bool) -> np.ndarray:
        if self.table is not None:
            graded = self.table(rgb)
            return graded.astype(np.float32) / np.float32(255) if want_float else graded
        if rgb.dtype == np.uint8:
            rgb = rgb.astype(np.uint16) * np.uint16(257)
        if rgb.dtype == np.uint16 and not want_float and self.colour.identity:
            return self.floats(rgb)  # uint16 in, float32 inside, uint16 out
        x = rgb.astype(np.float32) / np.float32(65535) if rgb.dtype == np.uint16 else rgb
        x = self.colour.to_working(x)
        x = self.colour.to_delivery(self.floats(np.ascontiguousarray(x, np.float32)))
        if want_float:
            return x
        return (np.clip(x, 0.0, 1.0) * 65535 + 0.5).astype(np.uint16)


def grade_video(source: str | Path, output: str | Path, look: str, strength: float = 1.0,
                codec: str | None = None, input_space: str | None = None,
                root: Path | None = None, cdl: CDL | None = None,
                notes: list[str] | None = None, output_space: str | None = None) -> Path:
    """Grade ``source`` (a video or a still) with ``look`` into ``output``; returns the
    file written, or the image sequence's pattern. What is not carried over (sound into
    an image sequence) is said in ``notes``."""
    source, output = Path(source), Path(output)
    master = master_for(output, codec)
    still = source.suffix.lower() in STILL_SUFFIXES and "%" not in source.name
    if still and not master.image:
        raise MediaError("a still grades to a still: expected .tif, .png or .exr",
                         source=output)
    if not output.parent.is_dir():
        raise MediaError("output folder does not exist", source=output.parent)
    lut = load_look(look, root or Path.cwd())
    inp, vin = open_video(source)
    with inp:
        src_deep = vin.codec_context.format is not None and _is_deep(vin.codec_context.format)
        colour = ColourPipeline(input_space or space_from_tags(vin.codec_context),
                                delivery=output_space or "rec709")
        if tags_for_space(colour.delivery) is None and notes is not None:
            notes.append(f"{output.name} is in {space_name(colour.delivery)}, which a file's "
                         "colour tags cannot name: its primaries and transfer are tagged "
                         "unspecified")
        # an 8-bit source keeps the exact 8-bit table (and its speed) whatever the master
        grade = _Grade(lut, strength, colour, src_deep or not colour.identity, cdl)
        if master.image:
            if inp.streams.audio and notes is not None:
                notes.append(f"the sound of {source.name} is not carried: "
                             f"{output.suffix} images have none")
            return _write_images(inp, vin, output, master, grade, still)
        return _write_video(inp, vin, output, master, grade)


def _frames(inp, vin, grade: _Grade, want_float: bool) -> Iterator[np.ndarray]:
    for frame in inp.decode(vin):
        yield grade(_rgb(frame, grade.deep), want_float)


def _write_images(inp, vin, output: Path, master: Master, grade: _Grade, still: bool) -> Path:
    import av

    pattern = str(output)
    if "%" in output.name:
        try:
            output.name % 0
        except (TypeError, ValueError):
            raise MediaError("an image sequence name takes one %d-style number, "
                             "as in shot_%06d.exr", source=output) from None
    elif not still:
        pattern = str(output.with_name(f"{output.stem}_%06d{output.suffix}"))
    cc = None
    written: list[tuple[Path, Path]] = []
    try:
        for n, rgb in enumerate(_frames(inp, vin, grade, master.encoder == "exr")):
            if cc is None:
                cc = av.CodecContext.create(master.encoder, "w")
                cc.width, cc.height = rgb.shape[1], rgb.shape[0]
                cc.pix_fmt = master.pix_fmt
                cc.time_base = Fraction(1, 24)
                cc.options = dict(master.options)
                _tag(cc, rgb_out=True, space=grade.colour.delivery)
            vf = _to_frame(rgb, master.pix_fmt)
            vf.pts = n
            data = b"".join(bytes(p) for p in cc.encode(vf))
            final = Path(pattern % n) if "%" in Path(pattern).name else output
            part = final.with_name(f".{final.name}.part")
            part.write_bytes(data)
            written.append((part, final))
        if cc is None:
            raise MediaError("has no frames", source=output)
        for part, final in written:  # the sequence appears whole or not at all
            os.replace(part, final)
    finally:
        for part, _ in written:
            part.unlink(missing_ok=True)
    return Path(pattern)


def _to_frame(rgb: np.ndarray, pix_fmt: str):
    import av
    from av.video.reformatter import ColorRange, Colorspace

    if pix_fmt.startswith("yuv"):  # at the scaler's full scale (aiprod_post.scaler)
        return ycbcr_source(rgb).reformat(format=pix_fmt, dst_colorspace=Colorspace.ITU709,
                                          dst_color_range=ColorRange.MPEG)
    if rgb.dtype == np.float32:
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="gbrpf32le")
    if rgb.dtype == np.uint8:
        # widened here, exactly (x * 257): FFmpeg's scaler does not widen 8-bit RGB exactly
        rgb = rgb.astype(np.uint16) * np.uint16(257)
    vf = av.VideoFrame.from_ndarray(rgb, format="rgb48le")
    if vf.format.name == pix_fmt:
        return vf
    return vf.reformat(format=pix_fmt)  # RGB repacked: no matrix, full range


#: FFmpeg's AVCOL_SPC_RGB (RGB stored as it is, no matrix): PyAV's Colorspace has no name
_AVCOL_SPC_RGB = 0


def _tag(cc, rgb_out: bool, space: str = "rec709") -> None:
    """The delivery ``space``'s primaries and transfer (BT.709's for Rec.709, unspecified
    where the standards have no name for it); the matrix and range of what is stored (RGB
    full range, or BT.709 limited-range YUV)."""
    from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc

    cc.color_primaries, cc.color_trc = tags_for_space(space) or (ColorPrimaries.UNSPECIFIED,
                                                                 ColorTrc.UNSPECIFIED)
    cc.colorspace = _AVCOL_SPC_RGB if rgb_out else Colorspace.ITU709
    cc.color_range = ColorRange.JPEG if rgb_out else ColorRange.MPEG  # full / limited


def _write_video(inp, vin, output: Path, master: Master, grade: _Grade) -> Path:
    import av

    rate = Fraction(vin.average_rate or vin.guessed_rate or 24)
    if master.encoder == "dnxhd" and (vin.width < 256 or vin.height < 120):
        # FFmpeg's DNxHR encoder refuses smaller pictures
        raise MediaError(f"DNxHR needs a picture of at least 256x120, the source is "
                         f"{vin.width}x{vin.height}", source=output)
    if master.container == "mxf" and rate not in _MXF_RATES:
        rates = ", ".join(_fps(r) for r in sorted(_MXF_RATES))
        raise MediaError(f"MXF takes {rates} frames a second; the source is {_fps(rate)}",
                         source=output)
    try:
        return _encode_video(inp, vin, output, master, grade, rate)
    except av.error.FFmpegError as exc:  # what the encoder or muxer refuses about this input
        raise MediaError(f"FFmpeg cannot write this {master.codec} master: {exc}",
                         source=output) from None


def _fps(rate: Fraction) -> str:
    """23.976, 24, 59.94."""
    return f"{float(rate):.3f}".rstrip("0").rstrip(".")


#: the frame rates FFmpeg's MXF muxer writes
_MXF_RATES = {Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001),
              Fraction(30), Fraction(50), Fraction(60000, 1001), Fraction(60)}


def _encode_video(inp, vin, output: Path, master: Master, grade: _Grade, rate: Fraction
                  ) -> Path:
    import av

    pix_fmt = master.pix_fmt
    options = {"movflags": "+faststart"} if master.container == "mp4" else {}
    with atomic_path(output, f".part{output.suffix}") as tmp, \
            av.open(str(tmp), "w", format=master.container, options=options) as out:
        v = out.add_stream(master.encoder, rate=rate)
        v.width, v.height = vin.width, vin.height
        v.pix_fmt = pix_fmt
        v.options = dict(master.options)
        cc = v.codec_context
        _tag(cc, rgb_out=not pix_fmt.startswith("yuv"), space=grade.colour.delivery)
        cc.time_base = Fraction(1) / rate
        ain = inp.streams.audio[0] if inp.streams.audio else None
        aout = None
        copy_audio = ain is not None and (master.audio_copy is None
                                          or ain.codec_context.name in master.audio_copy)
        if ain is not None and copy_audio:
            aout = out.add_stream_from_template(ain)  # the sound, bit for bit
        elif ain is not None and master.audio_encoder:
            # the default layout for the channel count: "2 channels" is not one AAC takes
            layout = _LAYOUTS.get(ain.codec_context.channels, "stereo")
            aout = out.add_stream(master.audio_encoder, rate=ain.rate, layout=layout)
            aout.format = _AUDIO_FORMAT[master.audio_encoder]
            resampler = av.AudioResampler(format=aout.format.name, layout=layout, rate=ain.rate)
        streams = [vin] + ([ain] if aout is not None else [])
        n = 0
        for packet in inp.demux(*streams):
            if packet.stream.type == "video":
                for fr in packet.decode():
                    vf = _to_frame(grade(_rgb(fr, grade.deep), False), pix_fmt)
                    vf.pts = n
                    vf.time_base = cc.time_base
                    n += 1
                    for p in v.encode(vf):
                        out.mux(p)
            elif copy_audio:
                if packet.dts is None:
                    continue  # the demuxer's flush packet
                packet.stream = aout
                out.mux(packet)
            else:
                for fr in packet.decode():
                    for rs in resampler.resample(fr):
                        rs.pts = None
                        for p in aout.encode(rs):
                            out.mux(p)
        for p in v.encode():
            out.mux(p)
        if aout is not None and not copy_audio:
            for p in aout.encode():
                out.mux(p)
    return output
