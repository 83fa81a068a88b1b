"""Conform: render masters from the OpenTimelineIO timeline itself.

The video track is walked frame by frame: each clip's source range is decoded
from its media (with PyAV), dissolves blend the outgoing clip's tail handle
with the incoming clip's head handle, fades blend with black. Audio comes from
the mix the timeline names (or one given), cut or padded to the timeline's
exact length. Both are encoded with FFmpeg's encoders through PyAV and written
to a temporary name, renamed only when the master is complete.

At most two clips are open at once and frames are never collected, so memory
does not grow with the length of the film.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import opentimelineio as otio

from aiprod_post.errors import AiprodError, MediaError
from aiprod_post.files import atomic_path

from .timeline import NAMESPACE, timeline_rate, url_to_path

__all__ = ["Profile", "PROFILES", "conform", "timeline_frames", "encode_master", "read_ahead", "probe",
           "burn_in"]


@dataclass(frozen=True)
class Profile:
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


PROFILES: dict[str, Profile] = {
    "h264": Profile("h264", "mp4", ".mp4", "libx264", "yuv420p",
                    {"profile": "high", "preset": "medium", "crf": "18",
                     "x264-params": "open-gop=0"},
                    "aac", "fltp", 256_000, {"movflags": "+faststart"}),
    "prores": Profile("prores", "mov", ".mov", "prores", "yuv422p10le",
                      {"profile": "3", "vendor": "apl0"}, "pcm_s24le", "s32"),
    "dnxhr": Profile("dnxhr", "mov", ".mov", "dnxhd", "yuv422p10le",
                     {"profile": "dnxhr_hqx"}, "pcm_s24le", "s32"),
    "hdr-pq": Profile("hdr-pq", "mov", ".mov", "libx265", "yuv420p10le",
                      {"x265-params": "log-level=error:hdr10=1:repeat-headers=1", "crf": "18",
                       "preset": "fast", "profile": "main10"},
                      "pcm_s24le", "s32", primaries=9, transfer=16, matrix=9, hdr="pq"),
    "hdr-hlg": Profile("hdr-hlg", "mov", ".mov", "libx265", "yuv420p10le",
                       {"x265-params": "log-level=error:repeat-headers=1", "crf": "18",
                        "preset": "fast", "profile": "main10"},
                       "pcm_s24le", "s32", primaries=9, transfer=18, matrix=9, hdr="hlg"),
}


# ------------------------------------------------------------------ reading media


class _Reader:
    """Sequential frame access to one media file by timeline-rate frame index."""

    def __init__(self, path: Path, clip_name: str, rate: Fraction, width: int, height: int
                 ) -> None:
        import av

        if not path.is_file():
            raise MediaError(f"media for clip {clip_name} is missing", source=path)
        try:
            self.container = av.open(str(path))
        except Exception as exc:  # noqa: BLE001 - any open failure is bad media
            raise MediaError(f"media for clip {clip_name} cannot be read: {exc}",
                             source=path) from None
        if not self.container.streams.video:
            raise MediaError(f"media for clip {clip_name} has no video", source=path)
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.path, self.clip, self.rate = path, clip_name, rate
        self.size = (width, height)
        self.media_rate = Fraction(self.stream.average_rate or rate)
        if self.media_rate != rate:
            warnings.warn(f"{path}: media at {self.media_rate} fps on a {rate} fps timeline; "
                          "conformed by nearest frame", stacklevel=2)
        self._frames: Iterator | None = None
        self._current: tuple[int, np.ndarray] | None = None
        self._next: tuple[int, np.ndarray] | None = None

    def frame(self, index: int) -> np.ndarray:
        """The picture at timeline-rate frame ``index`` of this media, as RGB."""
        return self.decoded(index).to_ndarray(format="rgb24")

    def decoded(self, index: int):
        """The decoded frame (native pixel format, at the timeline's size) at ``index``."""
        target = int(math.floor(Fraction(index) * self.media_rate / self.rate + Fraction(1, 1000)))
        if self._frames is None or (self._current and target < self._current[0]):
            self._open_at(target)
        while self._current is None or self._current[0] < target:
            try:
                self._current = next(self._frames)  # type: ignore[arg-type]
            except StopIteration:
                raise MediaError(f"media for clip {self.clip} ends before frame {target} "
                                 "that its range needs", source=self.path) from None
        return self._current[1]

    def _open_at(self, target: int) -> None:
        tb = self.stream.time_base
        if target > 0 and tb:
            pts = int(Fraction(target) / self.media_rate / tb)
            self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)
        self._frames = self._iterate()
        self._current = None

    def _iterate(self) -> Iterator[tuple[int, np.ndarray]]:
        tb = self.stream.time_base
        w, h = self.size
        for fr in self.container.decode(self.stream):
            idx = int(round(Fraction(fr.pts) * tb * self.media_rate)) if fr.pts is not None else 0
            if (fr.width, fr.height) != (w, h):
                fr = fr.reformat(width=w, height=h)
            yield idx, fr

    def close(self) -> None:
        # The decode generator refers back to this reader (a reference cycle) and holds
        # the decoder's frame pool through the last frame: break the cycle now, or the
        # pools of every closed clip wait for the cycle collector and memory grows with
        # the length of the film.
        if self._frames is not None:
            self._frames.close()
        self._frames = None
        self._current = None
        self.container.close()


class _PacketReader:
    """Compressed frames of a ProRes file, for copying into a ProRes master untouched."""

    def __init__(self, path: Path, rate: Fraction, width: int, height: int) -> None:
        import av

        self.container = av.open(str(path))
        s = self.container.streams.video[0]
        cc = s.codec_context
        self.ok = (cc.name == "prores" and str(cc.profile) == "HQ"
                   and s.format.name == "yuv422p10le" and (s.width, s.height) == (width, height)
                   and Fraction(s.average_rate or 0) == rate)
        self.stream, self.rate = s, rate
        self._packets = None
        self._next_index = None

    def packet(self, index: int):
        if self._packets is None or self._next_index is None or index < self._next_index:
            tb = self.stream.time_base
            self.container.seek(int(Fraction(index) / self.rate / tb) if index else 0,
                                stream=self.stream, backward=True)
            self._packets = (p for p in self.container.demux(self.stream) if p.size)
        tb = self.stream.time_base
        for p in self._packets:
            at = int(round(Fraction(p.pts) * tb * self.rate))
            if at == index:
                self._next_index = index + 1
                return p
            if at > index:
                break
        raise MediaError(f"no compressed frame {index} to copy", source=self.container.name)

    def close(self) -> None:
        # the packet generator holds the container: drop it, or it outlives the close
        self._packets = None
        self.container.close()


# ------------------------------------------------------------------ the picture


@dataclass
class _Span:
    clip: otio.schema.Clip
    start: int  # timeline frame of the cut in
    length: int
    source_start: int  # media frame at the cut in
    path: Path | None  # None for a gap (black)
    fade_in: int = 0  # frames fading from black after the cut in
    fade_out: int = 0  # frames fading to black before the cut out
    dissolve_in: tuple[int, int] = (0, 0)  # (frames before the cut, frames after)


def _spans(timeline: otio.schema.Timeline, rate: Fraction, base: Path | None) -> list[_Span]:
    video = [t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Video]
    if not video:
        raise AiprodError("the timeline has no video track")
    spans: list[_Span] = []
    pending: otio.schema.Transition | None = None
    t = 0
    for item in video[0]:
        if isinstance(item, otio.schema.Transition):
            kind = item.metadata.get(NAMESPACE, {}).get("kind")
            if kind == "fade-out" or (spans and item is video[0][-1]):
                spans[-1].fade_out = int(round(item.in_offset.value))
            else:
                pending = item
            continue
        if isinstance(item, otio.schema.Gap):
            gap = _Span(item, t, int(round(item.duration().value)), 0, None)  # type: ignore
            if pending is not None:
                pending = None
            spans.append(gap)
            t += gap.length
            continue
        if not isinstance(item, otio.schema.Clip):
            continue
        ref = item.media_reference
        if not isinstance(ref, otio.schema.ExternalReference):
            raise MediaError(f"clip {item.name} has no media reference", where=f"clip {item.name}")
        sr = item.source_range or item.available_range()
        span = _Span(item, t, int(round(sr.duration.value)), int(round(sr.start_time.value)),
                     url_to_path(ref.target_url, base))
        if pending is not None:
            kind = pending.metadata.get(NAMESPACE, {}).get("kind")
            if kind == "fade-in" or not spans:
                span.fade_in = int(round(pending.out_offset.value))
            else:
                span.dissolve_in = (int(round(pending.in_offset.value)),
                                    int(round(pending.out_offset.value)))
            pending = None
        spans.append(span)
        t += span.length
    return spans


def timeline_frames(timeline: otio.schema.Timeline, base: Path | None = None, *,
                    rgb: bool = True, copy_prores: bool = False) -> Iterator:
    """The edited picture, frame by frame, transitions rendered.

    Frames are H×W×3 uint8 RGB; with ``rgb=False``, frames of plain cuts come as the
    decoded ``av.VideoFrame`` in the media's own pixel format (no conversion), and
    only blended frames as RGB arrays. With ``copy_prores``, frames of plain cuts from
    ProRes 422 HQ media come as compressed ``av.Packet`` objects, to be copied into a
    ProRes master without decoding or re-encoding (ProRes frames stand alone).
    """
    if rgb:
        for frame in timeline_frames(timeline, base, rgb=False):
            yield frame if isinstance(frame, np.ndarray) else frame.to_ndarray(format="rgb24")
        return
    rate = timeline_rate(timeline)
    meta = timeline.metadata.get(NAMESPACE, {})
    spans = _spans(timeline, rate, base)
    if not spans:
        return
    clips = [sp for sp in spans if sp.path is not None]
    width = int(meta.get("width") or 0)
    height = int(meta.get("height") or 0)
    if not (width and height):
        import av

        with av.open(str(clips[0].path)) as c:
            width, height = c.streams.video[0].width, c.streams.video[0].height
    readers: dict[int, _Reader] = {}
    packet_readers: dict[int, _PacketReader] = {}

    def reader(i: int) -> _Reader:
        if i not in readers:
            readers[i] = _Reader(spans[i].path, spans[i].clip.name, rate, width, height)
        return readers[i]

    def packets(i: int) -> _PacketReader | None:
        if not copy_prores:
            return None
        if i not in packet_readers:
            reader(i)  # opens with the clear errors for missing or unreadable media
            packet_readers[i] = _PacketReader(spans[i].path, rate, width, height)
        return packet_readers[i] if packet_readers[i].ok else None

    try:
        black = np.zeros((height, width, 3), np.uint8)
        for i, sp in enumerate(spans):
            # done with every earlier clip but the previous one when a dissolve into this
            # one still reads its tail: close them, after gaps too, or each one's decoder,
            # threads and frame pool stay open and memory grows with the film
            keep = i - 1 if sp.path is not None and sp.dissolve_in[1] else i
            for opened in (readers, packet_readers):
                for done in [k for k in opened if k < keep]:
                    opened.pop(done).close()
            if sp.path is None:  # a gap is black
                for _ in range(sp.length):
                    yield black
                continue
            nxt = spans[i + 1] if i + 1 < len(spans) else None
            if nxt is not None and nxt.path is None:
                nxt = None
            before, _after = nxt.dissolve_in if nxt else (0, 0)
            _b, after_in = sp.dissolve_in
            for k in range(sp.length):
                t = sp.start + k
                blends = ((nxt is not None and before and k >= sp.length - before)
                          or (after_in and k < after_in) or (sp.fade_in and k < sp.fade_in)
                          or (sp.fade_out and k >= sp.length - sp.fade_out))
                if not blends:
                    pr = packets(i)
                    if pr is not None:  # a plain cut into ProRes: the compressed frame itself
                        yield pr.packet(sp.source_start + k)
                    else:  # hand the decoded frame on as it is (no RGB round trip)
                        yield reader(i).decoded(sp.source_start + k)
                    continue
                picture = reader(i).frame(sp.source_start + k)
                frame: np.ndarray | None = None  # float copy, only when something blends
                if nxt is not None and before and k >= sp.length - before:
                    # incoming shot starts early, from its head handle
                    total = before + nxt.dissolve_in[1]
                    w = (t - (nxt.start - before) + 0.5) / total
                    other = reader(i + 1).frame(nxt.source_start - (nxt.start - t))
                    frame = picture * np.float32(1 - w) + other * np.float32(w)
                elif after_in and k < after_in:
                    # outgoing shot continues into its tail handle
                    prev = spans[i - 1]
                    w = (k + sp.dissolve_in[0] + 0.5) / (sp.dissolve_in[0] + after_in)
                    other = reader(i - 1).frame(prev.source_start + prev.length + k)
                    frame = picture * np.float32(w) + other * np.float32(1 - w)
                if sp.fade_in and k < sp.fade_in:
                    frame = (picture if frame is None else frame) * np.float32((k + 0.5)
                                                                                / sp.fade_in)
                if sp.fade_out and k >= sp.length - sp.fade_out:
                    frame = (picture if frame is None else frame) * np.float32(
                        (sp.length - k - 0.5) / sp.fade_out)
                if frame is None:
                    yield picture
                else:
                    yield np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    finally:
        for r in readers.values():
            r.close()
        for r in packet_readers.values():
            r.close()


# ------------------------------------------------------------------ colour for HDR


def _hdr_convert(rgb8: np.ndarray, kind: str) -> np.ndarray:
    """Rec.709 SDR (BT.1886) → Rec.2100 PQ or HLG, graphics white at 203 cd/m² (BT.2408).

    Returns RGB as uint16 (0..65535) for a 48-bit frame.
    """
    v = rgb8.astype(np.float32) / 255.0
    lin = np.power(v, 2.4)  # BT.1886 display light, relative
    m = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]],
                 np.float32)  # BT.2087 709 → 2020 primaries
    lin2020 = np.clip(lin @ m.T, 0.0, None)
    if kind == "pq":
        y = lin2020 * (203.0 / 10000.0)
        m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
        yp = np.power(y, m1)
        out = np.power((c1 + c2 * yp) / (1 + c3 * yp), m2)
    else:  # HLG OETF on scene light, 203 cd/m² graphics white at 75 % signal
        e = lin2020 * 0.2646  # inverse OOTF approximation: maps SDR white to HLG 75 %
        a, b, c = 0.17883277, 0.28466892, 0.55991073
        out = np.where(e <= 1 / 12, np.sqrt(3 * e), a * np.log(np.maximum(12 * e - b, 1e-6)) + c)
    return (np.clip(out, 0, 1) * 65535 + 0.5).astype(np.uint16)


# ------------------------------------------------------------------ encoding


def _samples_at(frame_index: int, rate: Fraction, sr: int) -> int:
    return int(round(Fraction(frame_index) * sr / rate))


def encode_master(frames: Iterator[np.ndarray], n_frames: int, rate: Fraction, width: int,
                  height: int, output: Path, profile: Profile, audio: Path | None,
                  *, progress: Callable[[int, int], None] | None = None,
                  sample_rate: int = 48000, copy_packets: bool = False,
                  watch: Callable[[Any], None] | None = None) -> Path:
    """Encode ``frames`` (and ``audio``) to ``output`` with ``profile``, atomically.

    ``watch`` sees each frame exactly as it goes to the encoder (a PyAV frame in the
    encoder's pixel format, on the prefetch thread, in order): picture QA rides along
    there instead of decoding the master again. Copied packets are not shown to it."""
    import av
    import soundfile
    from av.video.reformatter import ColorRange, Colorspace

    output = Path(output)
    if not output.parent.exists():
        raise MediaError("output folder does not exist", source=output.parent)
    if not os.access(output.parent, os.W_OK):
        raise MediaError("output folder is not writable", source=output.parent)
    snd = None
    try:
        with atomic_path(output, f".part{profile.suffix}") as tmp:
            with av.open(str(tmp), "w", format=profile.container,
                         options=profile.container_options or {}) as out:
                v = out.add_stream(profile.codec, rate=rate)
                v.width, v.height = width, height
                v.pix_fmt = profile.pix_fmt
                v.options = dict(profile.options)
                # frame and slice threads, as the ffmpeg command uses; but where copied frames
                # are interleaved with encoded ones, the encoder must not hold frames back
                # (frame threads do), or its packets would arrive after later copied ones
                v.thread_type = "SLICE" if copy_packets else "AUTO"
                v.thread_count = 0
                cc = v.codec_context
                cc.color_primaries = profile.primaries
                cc.color_trc = profile.transfer
                cc.colorspace = profile.matrix
                cc.color_range = 1  # MPEG (limited) range
                cc.time_base = Fraction(1) / rate
                if profile.codec == "libx264":
                    cc.gop_size = max(1, int(round(rate)) * 2)  # closed (open-gop=0), 2 s
                a = None
                if audio is not None:
                    snd = soundfile.SoundFile(str(audio))
                    if snd.samplerate != sample_rate:
                        raise MediaError(f"mix is {snd.samplerate} Hz, expected {sample_rate}",
                                         source=audio)
                    a = out.add_stream(profile.audio_codec, rate=sample_rate, layout="stereo")
                    if profile.audio_bitrate:
                        a.bit_rate = profile.audio_bitrate
                if profile.codec == "prores":
                    # open the encoder now: copied ProRes frames may be muxed before any frame
                    # is encoded, and the header needs the stream's parameters
                    cc.open(strict=False)
                matrix = Colorspace.BT2020 if profile.matrix == 9 else Colorspace.ITU709
                count = 0
                apts = 0
                last: list = [None, None]  # the item prepared last, and what it became

                def prepare(item):
                    """Into the encoder's pixel format (runs on the prefetch thread). The same
                    array again (a held frame) is converted once."""
                    if item is last[0]:
                        return last[1]
                    last[0], last[1] = item, convert(item)
                    return last[1]

                def convert(item):
                    if isinstance(item, av.Packet):
                        return item
                    if isinstance(item, av.VideoFrame) and not profile.hdr:
                        # Y'CbCr in, Y'CbCr out: only chroma siting and bit depth change
                        return item if item.format.name == profile.pix_fmt else \
                            item.reformat(format=profile.pix_fmt)
                    rgb = item if isinstance(item, np.ndarray) else item.to_ndarray(format="rgb24")
                    if profile.hdr:
                        vf = av.VideoFrame.from_ndarray(_hdr_convert(rgb, profile.hdr),
                                                        format="rgb48le")
                    else:
                        vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    return vf.reformat(format=profile.pix_fmt, dst_colorspace=matrix,
                                       dst_color_range=ColorRange.MPEG)

                def prepare_and_watch(item):
                    out_frame = prepare(item)
                    if not isinstance(out_frame, av.Packet):
                        watch(out_frame)
                    return out_frame

                for i, item in enumerate(_prefetch(frames, prepare_and_watch if watch else prepare,
                                                   n_frames)):
                    if isinstance(item, av.Packet):
                        # a ProRes frame copied from the shot's media: no decode, no encode
                        item.stream = v
                        item.time_base = cc.time_base
                        item.pts = item.dts = i
                        item.duration = 1
                        out.mux(item)
                    else:
                        item.pts = i
                        item.time_base = cc.time_base
                        for p in v.encode(item):
                            out.mux(p)
                    count += 1
                    if a is not None and snd is not None:
                        apts = _mux_audio(a, out, snd, i, rate, sample_rate, apts)
                    if progress:
                        progress(count, n_frames)
                if count != n_frames:
                    raise MediaError(f"the timeline gave {count} frames, expected {n_frames}")
                for p in v.encode():
                    out.mux(p)
                if a is not None:
                    for p in a.encode():
                        out.mux(p)
            if profile.codec == "prores":
                _set_mov_vendor(tmp, b"apl0")
    except av.error.FFmpegError as exc:
        raise MediaError(f"the {profile.codec} encoder refused {width}x{height} at {rate} fps: "
                         f"{exc}", source=output) from None
    finally:
        if snd is not None:
            snd.close()
    return output


def read_ahead(items: Iterator, depth: int = 4) -> Iterator:
    """``items`` produced on a thread of their own, a few ahead of the consumer: a frame
    source (a generation engine) then runs beside the thread that grades and converts its
    frames and the encoder's threads, instead of taking turns with them. The source is
    run to its end, so what it does after its last item (an engine's keyframes) is done
    when this iterator is exhausted."""
    return _prefetch(items, _same, None, depth)


def _same(item):
    return item


def _prefetch(items: Iterator, prepare: Callable, limit: int | None, depth: int = 6
              ) -> Iterator:
    """``prepare(item)`` for the first ``limit`` items (all: None), on a second thread, a
    few ahead.

    Decoding, compositing and pixel-format conversion then overlap with encoding (PyAV
    releases the GIL inside FFmpeg), as the ffmpeg command's threads do. The queue is
    short, so memory stays flat.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for k, item in enumerate(items):
                if (limit is not None and k >= limit) or stop.is_set():
                    break
                q.put(("ok", prepare(item)))
            q.put(("end", done))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer to raise
            q.put(("error", exc))

    thread = threading.Thread(target=work, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def _mux_audio(a, out, snd, i: int, rate: Fraction, sample_rate: int, apts: int) -> int:
    """Encode and mux the audio that belongs under video frame ``i``; returns the new pts."""
    import av

    want = _samples_at(i + 1, rate, sample_rate) - apts
    block = snd.read(want, dtype="float32", always_2d=True)
    if block.shape[1] == 1:
        block = np.repeat(block, 2, axis=1)
    block = block[:, :2]
    if len(block) < want:
        block = np.pad(block, ((0, want - len(block)), (0, 0)))
    af = av.AudioFrame.from_ndarray(np.ascontiguousarray(block.T), format="fltp",
                                    layout="stereo")
    af.sample_rate = sample_rate
    af.pts = apts
    for p in a.encode(af):
        out.mux(p)
    return apts + want


def _set_mov_vendor(path: Path, vendor: bytes) -> None:
    """Write ``vendor`` into the video sample description of a MOV.

    FFmpeg's muxer writes "FFMP" there; QuickTime-family tools expect Apple's "apl0"
    for ProRes. The field is four bytes at a fixed offset in the ``stsd`` entry
    (QuickTime File Format, video sample description), so it is patched in place.
    """
    with open(path, "r+b") as fh:
        # the moov atom is at the end of a MOV written without faststart: read only the tail
        size = fh.seek(0, os.SEEK_END)
        base = max(0, size - (16 << 20))
        fh.seek(base)
        data = fh.read()
        moov = data.rfind(b"moov")
        if moov < 0:
            return
        for tag in (b"apch", b"apcn", b"apcs", b"apco", b"ap4h", b"ap4x"):
            at = data.find(tag, moov)
            if at > 0 and data[at + 4:at + 10] == b"\0" * 6:
                # fourcc, 6 reserved, data reference index, version, revision, then vendor
                fh.seek(base + at + 4 + 6 + 2 + 2 + 2)
                fh.write(vendor)
                return


def burn_in(frames: Iterator, cues: list, rate: Fraction, width: int, height: int) -> Iterator:
    """Subtitles drawn onto the picture: white text with a dark outline, bottom centre.

    Frames without a subtitle pass through untouched (and unconverted).
    """
    from PIL import Image, ImageDraw, ImageFont

    size = max(10, height // 20)
    font = ImageFont.load_default(size=size)
    overlays: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}

    def overlay(k: int) -> tuple[np.ndarray, np.ndarray, int]:
        if k not in overlays:
            overlays.clear()  # one cue on screen at a time: keep one rendered
            lines = cues[k].lines
            img = Image.new("RGBA", (width, int(size * 1.35 * len(lines)) + size), (0, 0, 0, 0))
            draw = ImageDraw.Draw(img)
            for j, text in enumerate(lines):
                tw = draw.textlength(text, font=font)
                draw.text(((width - tw) / 2, j * size * 1.35 + size / 4), text, font=font,
                          fill=(255, 255, 255, 255), stroke_width=max(1, size // 12),
                          stroke_fill=(0, 0, 0, 255))
            arr = np.asarray(img).astype(np.float32)
            top = height - arr.shape[0] - int(height * 0.05)
            overlays[k] = (arr[..., :3], arr[..., 3:] / 255.0, top)
        return overlays[k]

    k = 0
    for i, frame in enumerate(frames):
        t = float(Fraction(i) / rate)
        while k < len(cues) and cues[k].end <= t:
            k += 1
        if k < len(cues) and cues[k].start <= t:
            rgb = frame if isinstance(frame, np.ndarray) else frame.to_ndarray(format="rgb24")
            rgb = rgb.copy()
            colour_, alpha, top = overlay(k)
            region = rgb[top:top + colour_.shape[0]].astype(np.float32)
            rgb[top:top + colour_.shape[0]] = (region * (1 - alpha) + colour_ * alpha + 0.5
                                               ).astype(np.uint8)
            yield rgb
        else:
            yield frame


def conform(timeline: otio.schema.Timeline | str | Path, output: Path, profile: str = "h264",
            *, audio: Path | None = None, base: Path | None = None,
            progress: Callable[[int, int], None] | None = None,
            subtitles: list | None = None, watch: Callable[[Any], None] | None = None
            ) -> Path:
    """Render a master from ``timeline`` (an OTIO object or a .otio path).

    ``subtitles`` (cues from :mod:`editing.subtitles`) are burned into the picture.
    ``watch`` sees every encoded frame (see :func:`encode_master`); a ProRes master without
    burn-in copies the compressed frames of plain cuts, which ``watch`` does not see.
    """
    if profile not in PROFILES:
        raise AiprodError(f"unknown profile {profile!r}: expected one of {', '.join(PROFILES)}",
                          where="--profile")
    if not isinstance(timeline, otio.schema.Timeline):
        from .export import read_timeline

        path = Path(timeline)
        timeline = read_timeline(path)
        base = base or path.parent
    meta = timeline.metadata.get(NAMESPACE, {})
    rate = timeline_rate(timeline)
    n = sum(int(round(i.duration().value)) for i in
            next(t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Video)
            if not isinstance(i, otio.schema.Transition))
    if audio is None and meta.get("mix"):
        audio = url_to_path(meta["mix"], base)
    if audio is not None and not Path(audio).is_file():
        raise MediaError("the mix the timeline names is missing", source=audio)
    width, height = int(meta.get("width", 1920)), int(meta.get("height", 1080))
    copy = profile == "prores" and not subtitles
    frames = timeline_frames(timeline, base, rgb=False, copy_prores=copy)
    if subtitles:
        frames = burn_in(frames, subtitles, rate, width, height)
    return encode_master(frames, n, rate, width, height, Path(output),
                         PROFILES[profile], Path(audio) if audio else None,
                         progress=progress, copy_packets=copy, watch=watch)


def probe(path: str | Path) -> dict:
    """What a player sees in a file: codec, profile, pixel format, colour tags, rate, lengths."""
    import av

    with av.open(str(path)) as c:
        info: dict = {"format": c.format.name, "duration": c.duration / 1e6 if c.duration else None}
        if c.streams.video:
            s = c.streams.video[0]
            cc = s.codec_context
            frames = s.frames or sum(1 for _ in c.demux(s))
            info["video"] = {
                "codec": cc.name, "profile": cc.profile, "pix_fmt": s.format.name,
                "width": s.width, "height": s.height, "rate": Fraction(s.average_rate),
                "frames": frames, "primaries": cc.color_primaries, "transfer": cc.color_trc,
                "matrix": cc.colorspace, "range": cc.color_range, "tag": s.codec_tag,
            }
    with av.open(str(path)) as c:
        if c.streams.audio:
            s = c.streams.audio[0]
            samples = 0
            for packet in c.demux(s):
                for fr in packet.decode():
                    samples += fr.samples
            info["audio"] = {"codec": s.codec_context.name, "rate": s.rate,
                             "channels": s.codec_context.channels, "samples": samples,
                             "format": s.format.name}
    return info
