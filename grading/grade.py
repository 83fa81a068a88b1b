"""Grade a user's video file with a look, keeping its audio untouched."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from aiprod_post.errors import MediaError
from aiprod_post.files import atomic_path

from .apply import FrameGrader
from .looks import load_look

__all__ = ["grade_video"]


def grade_video(source: str | Path, output: str | Path, look: str, strength: float = 1.0) -> Path:
    """Decode ``source``, grade every frame, encode (H.264 for .mp4, ProRes HQ for .mov),
    and copy the audio packets as they are (re-encoded to AAC only when an .mp4 cannot
    carry the source's audio codec)."""
    import av
    from av.video.reformatter import ColorRange, Colorspace

    source, output = Path(source), Path(output)
    if not source.is_file():
        raise MediaError("no such video", source=source)
    grader = FrameGrader(load_look(look, Path.cwd()), strength)
    mov = output.suffix.lower() == ".mov"
    if not output.parent.is_dir():
        raise MediaError("output folder does not exist", source=output.parent)
    with atomic_path(output, f".part{output.suffix}") as tmp:
        try:
            inp = av.open(str(source))
        except Exception as exc:  # noqa: BLE001
            raise MediaError(f"cannot read video: {exc}", source=source) from None
        with inp, av.open(str(tmp), "w", format="mov" if mov else "mp4",
                          options={} if mov else {"movflags": "+faststart"}) as out:
            vin = inp.streams.video[0]
            rate = Fraction(vin.average_rate or 24)
            v = out.add_stream("prores" if mov else "libx264", rate=rate)
            v.width, v.height = vin.width, vin.height
            v.pix_fmt = "yuv422p10le" if mov else "yuv420p"
            v.options = {"profile": "3"} if mov else {"crf": "18", "preset": "medium"}
            cc = v.codec_context
            cc.color_primaries = cc.color_trc = cc.colorspace = 1
            cc.color_range = 1
            cc.time_base = Fraction(1) / rate
            ain = inp.streams.audio[0] if inp.streams.audio else None
            aout = None
            copy_audio = ain is not None and (mov or ain.codec_context.name in
                                              ("aac", "mp3", "alac", "ac3", "eac3", "opus"))
            if ain is not None and copy_audio:
                aout = out.add_stream_from_template(ain)  # the sound, bit for bit
            elif ain is not None:
                aout = out.add_stream("aac", rate=ain.rate, layout=ain.layout.name)
            streams = [vin] + ([ain] if ain is not None else [])
            n = 0
            for packet in inp.demux(*streams):
                if packet.stream.type == "video":
                    for fr in packet.decode():
                        rgb = grader(fr.to_ndarray(format="rgb24"))
                        vf = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                            format=v.pix_fmt, dst_colorspace=Colorspace.ITU709,
                            dst_color_range=ColorRange.MPEG)
                        vf.pts = n
                        vf.time_base = cc.time_base
                        n += 1
                        for p in v.encode(vf):
                            out.mux(p)
                elif aout is not None and copy_audio:
                    if packet.dts is None:
                        continue  # the demuxer's flush packet
                    packet.stream = aout
                    out.mux(packet)
                elif aout is not None:
                    for fr in packet.decode():
                        fr.pts = None
                        for p in aout.encode(fr):
                            out.mux(p)
            for p in v.encode():
                out.mux(p)
            if aout is not None and not copy_audio:
                for p in aout.encode():
                    out.mux(p)
    return output
