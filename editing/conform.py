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

import contextlib
import errno
import dataclasses
import itertools
import math
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import opentimelineio as otio

from aiprod_post.codecs import PROFILES, Profile  # the delivery codec table
from aiprod_post.errors import AiprodError, MediaError
from aiprod_post.files import atomic_path
from aiprod_post.hdr import (BT709_TO_BT2020, HLG_WHITE, REFERENCE_WHITE, bt2020_to_pq16,
                              hlg_oetf, intermediate_for, linear_to_hlg, linear_to_pq16,
                              pq16_to_linear, pq_eotf, pq_inverse_eotf, to_bt2020)
from aiprod_post.scaler import rgb24, rgb48, ycbcr_source

from .interchange import conformable
from .timeline import NAMESPACE, timeline_rate, url_to_path

__all__ = ["Profile", "PROFILES", "conform", "timeline_frames", "encode_master", "read_ahead", "probe",
           "burn_in", "bitrate_cap", "h264_level", "encoder_options", "gop_frames", "keyframe_plan",
           "cut_frames", "master_keyframes", "verify_master", "segment_ranges",
           "encode_segment", "join_segments", "Segment", "SegmentRunner",
           "segments_in_processes", "ClipTransform"]


# Bitrate caps for streaming by picture height, kbit/s at standard (up to 30 fps) and high
# (48-60 fps) frame rates: YouTube's recommended upload bitrates for SDR (2026); Vimeo asks
# 10-20 Mbit/s at 1080p and Apple's HLS authoring spec tops its 1080p ladder at 7.8 Mbit/s,
# so the 1080p cap of 8 Mbit/s sits where all three accept it.
_CAPS_KBPS: tuple[tuple[int, int, int], ...] = (
    (360, 1_000, 1_500), (480, 2_500, 4_000), (720, 5_000, 7_500), (1080, 8_000, 12_000),
    (1440, 16_000, 24_000), (2160, 45_000, 68_000), (1 << 30, 160_000, 240_000))


def bitrate_cap(width: int, height: int, rate: Fraction) -> tuple[int, int]:
    """VBV ``(maxrate, bufsize)`` in kbit/s and kbit for a streaming master: the platform
    figure for the picture's height (``_CAPS_KBPS``), a buffer of two seconds (one GOP).

    >>> bitrate_cap(1920, 1080, Fraction(24))
    (8000, 16000)
    >>> bitrate_cap(1280, 720, Fraction(60))
    (7500, 15000)
    """
    lines = max(height, math.ceil(width * 9 / 16))  # a 1920x804 scope picture is "1080p"
    for top, standard, high in _CAPS_KBPS:
        if lines <= top:
            cap = high if rate > 30 else standard
            return cap, 2 * cap
    raise AssertionError("unreachable: the last row has no height limit")


# H.264 levels (ITU-T H.264 Table A-1): name, MaxMBPS, MaxFS, MaxDpbMbs, MaxBR and MaxCPB
# (kbit/s and kbit for Baseline/Main; High profile allows 1.25 times, Table A-2).
_H264_LEVELS: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("1", 1485, 99, 396, 64, 175), ("1.1", 3000, 396, 900, 192, 500),
    ("1.2", 6000, 396, 2376, 384, 1000), ("1.3", 11880, 396, 2376, 768, 2000),
    ("2", 11880, 396, 2376, 2000, 2000), ("2.1", 19800, 792, 4752, 4000, 4000),
    ("2.2", 20250, 1620, 8100, 4000, 4000), ("3", 40500, 1620, 8100, 10000, 10000),
    ("3.1", 108000, 3600, 18000, 14000, 14000), ("3.2", 216000, 5120, 20480, 20000, 20000),
    ("4", 245760, 8192, 32768, 20000, 25000), ("4.1", 245760, 8192, 32768, 50000, 62500),
    ("4.2", 522240, 8704, 34816, 50000, 62500), ("5", 589824, 22080, 110400, 135000, 135000),
    ("5.1", 983040, 36864, 184320, 240000, 240000),
    ("5.2", 2073600, 36864, 184320, 240000, 240000),
    ("6", 4177920, 139264, 696320, 240000, 240000),
    ("6.1", 8355840, 139264, 696320, 480000, 480000),
    ("6.2", 16711680, 139264, 696320, 800000, 800000))


def h264_level(width: int, height: int, rate: Fraction, maxrate: int, bufsize: int,
               dpb_frames: int = 4) -> str:
    """The lowest H.264 level (High profile) whose limits hold this stream: frame size,
    macroblocks per second, ``dpb_frames`` reference pictures, VBV maxrate and buffer.

    >>> h264_level(1920, 1080, Fraction(24), 8000, 16000)
    '4'
    >>> h264_level(1920, 1080, Fraction(60), 12000, 24000)
    '4.2'
    """
    mbs = math.ceil(width / 16) * math.ceil(height / 16)
    for name, mbps, fs, dpb, br, cpb in _H264_LEVELS:
        # frame width and height each at most sqrt(8 * MaxFS) macroblocks (A.3.1 f, g)
        side = math.isqrt(8 * fs)
        if (mbs <= fs and mbs * rate <= mbps and mbs * dpb_frames <= dpb
                and math.ceil(width / 16) <= side and math.ceil(height / 16) <= side
                and maxrate <= br * 5 // 4 and bufsize <= cpb * 5 // 4):
            return name
    raise MediaError(f"{width}x{height} at {rate} fps is beyond every H.264 level")


def encoder_options(profile: Profile, width: int, height: int, rate: Fraction) -> dict:
    """The encoder options ``profile`` is encoded with at this size and rate: the profile's
    own, then the GOP (closed, ``gop_seconds`` long, no scene-cut keyframes: keyframes go
    where :func:`keyframe_plan` puts them, forced as IDR), B-frames, VBV and level.

    >>> encoder_options(PROFILES["h264"], 1920, 1080, Fraction(24))["x264-params"]
    'b-pyramid=normal:keyint=48:min-keyint=1:scenecut=0:open-gop=0:bframes=2:vbv-maxrate=8000:vbv-bufsize=16000:level=4'
    """
    options = dict(profile.options)
    if profile.gop_seconds is None:
        return options
    gop = gop_frames(profile, rate)
    key = {"libx264": "x264-params", "libx265": "x265-params"}[profile.codec]
    params = [options[key]] if options.get(key) else []
    params += [f"keyint={gop}", "min-keyint=1", "scenecut=0", "open-gop=0",
               f"bframes={profile.b_frames}"]
    if profile.capped:
        maxrate, bufsize = bitrate_cap(width, height, rate)
        params += [f"vbv-maxrate={maxrate}", f"vbv-bufsize={bufsize}"]
        if profile.codec == "libx264":
            params.append(f"level={h264_level(width, height, rate, maxrate, bufsize)}")
    options[key] = ":".join(params)
    # a frame handed over as I becomes an IDR frame (a keyframe of a closed GOP), not an
    # I frame that later frames may reach past
    options["forced-idr"] = "1"
    return options


def gop_frames(profile: Profile, rate: Fraction) -> int:
    """Frames in one GOP of ``profile`` at ``rate`` (1 for an intra codec)."""
    if profile.gop_seconds is None:
        return 1
    return max(1, int(round(rate * profile.gop_seconds)))


def keyframe_plan(n_frames: int, gop: int, cuts: Iterable[int] = ()) -> list[int]:
    """Where the keyframes of a long-GOP master go: frame 0, then one ``gop`` frames after
    the last, and one at each of ``cuts`` (the count restarts there).

    >>> keyframe_plan(100, 48)
    [0, 48, 96]
    >>> keyframe_plan(100, 48, cuts=[30, 50])
    [0, 30, 50, 98]
    """
    starts: list[int] = []
    pending = sorted(c for c in set(cuts) if 0 < c < n_frames)
    at = 0
    while at < n_frames:
        starts.append(at)
        nxt = at + gop
        while pending and pending[0] <= at:
            pending.pop(0)
        if pending and pending[0] < nxt:
            nxt = pending.pop(0)
        at = nxt
    return starts


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
        self._scaler = av.video.reformatter.VideoReformatter()  # one for all its frames
        self.path, self.clip, self.rate = path, clip_name, rate
        self.size = (width, height)
        self.media_rate = Fraction(self.stream.average_rate or rate)
        if self.media_rate != rate:
            warnings.warn(f"{path}: media at {self.media_rate} fps on a {rate} fps timeline; "
                          "conformed by nearest frame", stacklevel=2)
        self._frames: Iterator | None = None
        self._current: tuple[int, np.ndarray] | None = None
        self._next: tuple[int, np.ndarray] | None = None

    def frame(self, index: int, deep: bool = False) -> np.ndarray:
        """The picture at timeline-rate frame ``index`` of this media, as RGB: uint8, or
        with ``deep`` uint16 (``rgb48``)."""
        frame = self.decoded(index)
        return rgb48(frame) if deep else rgb24(frame)

    def decoded(self, index: int):
        """The decoded frame (native pixel format, at the timeline's size) at ``index``."""
        import av

        target = int(math.floor(Fraction(index) * self.media_rate / self.rate + Fraction(1, 1000)))
        if self._frames is None or (self._current and target < self._current[0]):
            self._open_at(target)
        while self._current is None or self._current[0] < target:
            try:
                self._current = next(self._frames)  # type: ignore[arg-type]
            except StopIteration:
                raise MediaError(f"media for clip {self.clip} ends before frame {target} "
                                 "that its range needs", source=self.path) from None
            except av.error.FFmpegError as exc:  # damaged media: the file's fault, named
                raise MediaError(f"media for clip {self.clip} cannot be decoded at frame "
                                 f"{target}: {exc}", source=self.path) from None
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
                fr = self._scaler.reformat(fr, width=w, height=h)
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


#: what a conform may do to a clip's pictures: given the clip, a function of its RGB
#: frames (uint16 in, uint16 out), or None to leave them as they are
ClipTransform = Callable[[otio.schema.Clip], "Callable[[np.ndarray], np.ndarray] | None"]


def timeline_frames(timeline: otio.schema.Timeline, base: Path | None = None, *,
                    rgb: bool = True, copy_prores: bool = False, first: int = 0,
                    transform: ClipTransform | None = None, hdr: bool = False) -> Iterator:
    """The edited picture, frame by frame, transitions rendered, from timeline frame
    ``first`` on (a segment encoder's start: the clips before it are not opened).

    Frames are H×W×3 uint8 RGB; with ``rgb=False``, frames of plain cuts come as the
    decoded ``av.VideoFrame`` in the media's own pixel format (no conversion), and
    only blended frames as RGB arrays. With ``copy_prores``, frames of plain cuts from
    ProRes 422 HQ media come as compressed ``av.Packet`` objects, to be copied into a
    ProRes master without decoding or re-encoding (ProRes frames stand alone).

    ``transform`` gives, per clip, a function applied to its pictures (a colourist's
    changed CDL, say): such a clip's plain-cut frames are decoded to 16-bit RGB, go
    through it and come as uint16 RGB arrays (no 8-bit step into a 10-bit master); they
    are never copied as packets; in a transition they are blended at 8 bits as the rest.

    With ``hdr`` (an HDR master), frames of a clip whose media has an HDR intermediate
    beside it (:func:`aiprod_post.hdr.intermediate_for`: a shot the ``ltx2`` engine made
    with its HDR LoRA) come from that file as :class:`HDRPicture` (16-bit PQ), not from the
    SDR media; fades and dissolves that involve such a clip are blended in linear light
    (an SDR clip in them placed as :func:`_hdr_convert` places it). Not for a clip with a
    ``transform``: a colourist's change is made for the SDR picture, so that clip's SDR
    media is used.
    """
    if rgb:
        for frame in timeline_frames(timeline, base, rgb=False, first=first,
                                     transform=transform):
            if not isinstance(frame, np.ndarray):
                frame = rgb24(frame)
            elif frame.dtype == np.uint16:
                frame = ((frame.astype(np.uint32) + 128) // 257).astype(np.uint8)
            yield frame
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
    hdr_readers: dict[int, _Reader | None] = {}
    changes: dict[int, Callable[[np.ndarray], np.ndarray] | None] = {}

    def change(i: int) -> Callable[[np.ndarray], np.ndarray] | None:
        if transform is None:
            return None
        if i not in changes:
            changes[i] = transform(spans[i].clip)
        return changes[i]

    def picture(i: int, index: int) -> np.ndarray:
        """RGB to blend: uint8, or a changed clip's picture as float on the 0..255 scale."""
        fn = change(i)
        if fn is None:
            return reader(i).frame(index)
        return fn(reader(i).frame(index, deep=True)).astype(np.float32) / np.float32(257)

    def light(i: int, index: int) -> np.ndarray:
        """Linear BT.2020 light to blend into an HDR master (1.0 = diffuse white): from
        the clip's HDR intermediate, else its SDR picture placed as :func:`_hdr_convert`
        places it (BT.1886, white at 1.0)."""
        deep = hdr_reader(i)
        if deep is not None:
            return pq16_to_linear(deep.frame(index, deep=True))
        return to_bt2020(np.power(picture(i, index).astype(np.float32) / np.float32(255), 2.4))

    def reader(i: int) -> _Reader:
        if i not in readers:
            readers[i] = _Reader(spans[i].path, spans[i].clip.name, rate, width, height)
        return readers[i]

    def packets(i: int) -> _PacketReader | None:
        if not copy_prores or change(i) is not None:
            return None
        if i not in packet_readers:
            reader(i)  # opens with the clear errors for missing or unreadable media
            packet_readers[i] = _PacketReader(spans[i].path, rate, width, height)
        return packet_readers[i] if packet_readers[i].ok else None

    def hdr_reader(i: int) -> _Reader | None:
        """The clip's HDR intermediate, where the master is HDR and it has one."""
        if not hdr or change(i) is not None:
            return None
        if i not in hdr_readers:
            found = intermediate_for(spans[i].path)
            hdr_readers[i] = _Reader(found, spans[i].clip.name, rate, width, height) \
                if found.is_file() else None
        return hdr_readers[i]

    for i, sp in enumerate(spans):  # every clip's change now: a refused one stops at once
        if sp.path is not None and sp.start + sp.length > first:
            change(i)
    try:
        black = np.zeros((height, width, 3), np.uint8)
        for i, sp in enumerate(spans):
            # done with every earlier clip but the previous one when a dissolve into this
            # one still reads its tail: close them, after gaps too, or each one's decoder,
            # threads and frame pool stay open and memory grows with the film
            keep = i - 1 if sp.path is not None and sp.dissolve_in[1] else i
            for opened in (readers, packet_readers, hdr_readers):
                for done in [k for k in opened if k < keep]:
                    r = opened.pop(done)
                    if r is not None:
                        r.close()
            skip = max(0, first - sp.start)  # frames of this span before ``first``
            if skip >= sp.length:
                continue
            if sp.path is None:  # a gap is black
                for _ in range(skip, sp.length):
                    yield black
                continue
            nxt = spans[i + 1] if i + 1 < len(spans) else None
            if nxt is not None and nxt.path is None:
                nxt = None
            before, _after = nxt.dissolve_in if nxt else (0, 0)
            _b, after_in = sp.dissolve_in
            for k in range(skip, sp.length):
                t = sp.start + k
                incoming = nxt is not None and before and k >= sp.length - before
                outgoing = not incoming and after_in and k < after_in
                blends = (incoming or outgoing or (sp.fade_in and k < sp.fade_in)
                          or (sp.fade_out and k >= sp.length - sp.fade_out))
                if not blends:
                    pr = packets(i)
                    fn = change(i)
                    deep = hdr_reader(i)
                    if deep is not None:  # the shot's HDR picture, 16-bit PQ as it is
                        yield HDRPicture(deep.frame(sp.source_start + k, deep=True))
                    elif pr is not None:  # a plain cut into ProRes: the compressed frame itself
                        yield pr.packet(sp.source_start + k)
                    elif fn is not None:  # a changed clip: 16-bit RGB through its change
                        yield fn(reader(i).frame(sp.source_start + k, deep=True))
                    else:  # hand the decoded frame on as it is (no RGB round trip)
                        yield reader(i).decoded(sp.source_start + k)
                    continue
                # into an HDR master with an HDR clip in the blend: blended in linear light
                linear = hdr and any(hdr_reader(j) is not None for j in (
                    i, *([i + 1] if incoming else []), *([i - 1] if outgoing else [])))
                pic = light if linear else picture
                here = pic(i, sp.source_start + k)
                frame: np.ndarray | None = None  # float copy, only when something blends
                if incoming:
                    # incoming shot starts early, from its head handle
                    total = before + nxt.dissolve_in[1]
                    w = (t - (nxt.start - before) + 0.5) / total
                    other = pic(i + 1, nxt.source_start - (nxt.start - t))
                    frame = here * np.float32(1 - w) + other * np.float32(w)
                elif outgoing:
                    # outgoing shot continues into its tail handle
                    prev = spans[i - 1]
                    w = (k + sp.dissolve_in[0] + 0.5) / (sp.dissolve_in[0] + after_in)
                    other = pic(i - 1, prev.source_start + prev.length + k)
                    frame = here * np.float32(w) + other * np.float32(1 - w)
                if sp.fade_in and k < sp.fade_in:
                    frame = (here if frame is None else frame) * np.float32((k + 0.5)
                                                                             / sp.fade_in)
                if sp.fade_out and k >= sp.length - sp.fade_out:
                    frame = (here if frame is None else frame) * np.float32(
                        (sp.length - k - 0.5) / sp.fade_out)
                if linear:
                    yield HDRPicture(bt2020_to_pq16(here if frame is None else frame))
                elif frame is None and here.dtype == np.uint8:
                    yield here
                else:
                    frame = here if frame is None else frame
                    yield np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    finally:
        for r in readers.values():
            r.close()
        for r in packet_readers.values():
            r.close()
        for r in hdr_readers.values():
            if r is not None:
                r.close()


# ------------------------------------------------------------------ colour for HDR


def _hdr_convert(rgb: np.ndarray, kind: str) -> np.ndarray:
    """Rec.709 SDR (BT.1886) → Rec.2100 PQ or HLG, graphics white at 203 cd/m² (BT.2408),
    from uint8 or uint16 RGB.

    Returns RGB as uint16 (0..65535) for a 48-bit frame.
    """
    v = rgb.astype(np.float32) / np.float32(65535 if rgb.dtype == np.uint16 else 255)
    lin2020 = to_bt2020(np.power(v, 2.4))  # BT.1886 display light, relative
    if kind == "pq":
        out = pq_inverse_eotf(lin2020 * (REFERENCE_WHITE / 10000.0))
    else:  # HLG OETF on scene light, 203 cd/m² graphics white at 75 % signal
        out = hlg_oetf(lin2020 * HLG_WHITE)  # inverse OOTF approximation: SDR white to 75 %
    return (np.clip(out, 0, 1) * 65535 + 0.5).astype(np.uint16)


#: the mastering display an HDR10 master declares (SMPTE ST 2086): P3-D65 primaries, a
#: grading monitor's, in x265's units (chromaticity x 50 000); its peak is chosen from
#: the master's light (:func:`with_light_levels`), its black 0.0001 cd/m²
_P3_D65 = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)"


def light_levels(timeline: otio.schema.Timeline, base: Path | None,
                 transform: ClipTransform | None = None, subtitles: list | None = None
                 ) -> tuple[int, int]:
    """MaxCLL and MaxFALL (CTA-861.3), cd/m², of the timeline's PQ master: the brightest
    channel of its brightest pixel, and the largest frame average of each pixel's brightest
    channel, measured on every frame before the encode (before its 4:2:0 subsampling):
    an HDR picture from its PQ code values, an SDR one as the master places it
    (:func:`_hdr_convert`: BT.1886 light on BT.2020 with white at 203 cd/m²), computed in
    light without the PQ round trip; ``subtitles`` burned in as the master gets them.
    Rounded up to whole cd/m²."""
    pq_nits = (pq_eotf(np.arange(65536, dtype=np.float64) / 65535.0) * 10000.0
               ).astype(np.float32)
    light8 = (np.power(np.arange(256, dtype=np.float64) / 255.0, 2.4)
              * REFERENCE_WHITE).astype(np.float32)
    m = BT709_TO_BT2020.astype(np.float32)
    cll = fall = 0.0
    frames = timeline_frames(timeline, base, rgb=False, transform=transform, hdr=True)
    if subtitles:
        meta = timeline.metadata.get(NAMESPACE, {})
        frames = burn_in(frames, subtitles, timeline_rate(timeline),
                         int(meta.get("width", 1920)), int(meta.get("height", 1080)))
    for item in frames:
        if isinstance(item, HDRPicture):
            peak = pq_nits[item.pq16.max(axis=-1)]
        else:
            rgb = item if isinstance(item, np.ndarray) else rgb24(item)
            if rgb.dtype == np.uint16:
                light = np.power(rgb.astype(np.float32) / np.float32(65535), np.float32(2.4)
                                 ) * np.float32(REFERENCE_WHITE)
            else:
                light = light8[rgb]
            r, g, b = light[..., 0], light[..., 1], light[..., 2]
            peak = np.maximum(np.maximum(m[0, 0] * r + m[0, 1] * g + m[0, 2] * b,
                                         m[1, 0] * r + m[1, 1] * g + m[1, 2] * b),
                              m[2, 0] * r + m[2, 1] * g + m[2, 2] * b)
        cll, fall = max(cll, float(peak.max())), max(fall, float(peak.mean()))
    return math.ceil(cll - 1e-3), math.ceil(fall - 1e-3)


def with_light_levels(profile: Profile, max_cll: int, max_fall: int) -> Profile:
    """An HDR10 profile that writes its static metadata (x265's SEI, repeated with the
    parameter sets): the content light levels and the mastering display, whose peak is
    1000 cd/m² or, for a brighter master, 4000 or 10 000."""
    peak = next(p for p in (1000, 4000, 10000) if max_cll <= p or p == 10000)
    params = profile.options.get("x265-params", "")
    extra = f"master-display={_P3_D65}L({peak * 10000},1):max-cll={max_cll},{max_fall}"
    return dataclasses.replace(profile, options={
        **profile.options, "x265-params": f"{params}:{extra}" if params else extra})


class HDRPicture:
    """A frame of a shot's HDR intermediate on its way to an HDR master: PQ code values on
    BT.2020, full-range 16-bit RGB (:mod:`aiprod_post.hdr`)."""

    __slots__ = ("pq16",)

    def __init__(self, pq16: np.ndarray) -> None:
        self.pq16 = pq16

    def for_master(self, kind: str) -> np.ndarray:
        """As the ``pq`` or ``hlg`` master's RGB (uint16, full range): PQ as it is; HLG
        by the BT.2100 OETF on the scene light PQ carried (diffuse white at 75 %)."""
        if kind == "pq":
            return self.pq16
        return (linear_to_hlg(pq16_to_linear(self.pq16)) * 65535 + 0.5).astype(np.uint16)


@contextlib.contextmanager
def hdr_intermediate(output: Path, rate: Fraction, width: int, height: int
                     ) -> Iterator[Callable[[np.ndarray], None]]:
    """Write a shot's HDR intermediate at ``output`` (atomically: nothing there unless the
    block ends normally): the block gets a function to call with each scene-linear BT.709
    frame (H×W×3 float, 1.0 = diffuse white). FFV1 (lossless) 16-bit RGB of PQ code values
    on BT.2020 (:func:`aiprod_post.hdr.linear_to_pq16`), tagged BT.2020 / SMPTE ST 2084 /
    RGB, full range: no 8-bit (nor any lossy) step between the engine and the master."""
    import av

    with atomic_path(Path(output), ".part.mkv") as tmp, \
            av.open(str(tmp), "w", format="matroska") as out:
        s = out.add_stream("ffv1", rate=rate)
        s.width, s.height, s.pix_fmt = width, height, "gbrp16le"
        s.options = {"level": "3", "slicecrc": "1"}
        cc = s.codec_context
        cc.color_primaries, cc.color_trc = 9, 16  # BT.2020, SMPTE ST 2084
        cc.colorspace, cc.color_range = 0, 2  # RGB, full range
        cc.time_base = Fraction(1) / rate
        count = 0

        def write(linear: np.ndarray) -> None:
            nonlocal count
            vf = av.VideoFrame.from_ndarray(linear_to_pq16(linear), format="rgb48le")
            vf = vf.reformat(format="gbrp16le")
            vf.pts, vf.time_base = count, cc.time_base
            for p in s.encode(vf):
                out.mux(p)
            count += 1

        yield write
        for p in s.encode():
            out.mux(p)


# ------------------------------------------------------------------ encoding


def _samples_at(frame_index: int, rate: Fraction, sr: int) -> int:
    return int(round(Fraction(frame_index) * sr / rate))


def encode_master(frames: Iterator[np.ndarray], n_frames: int, rate: Fraction, width: int,
                  height: int, output: Path, profile: Profile, audio: Path | None,
                  *, progress: Callable[[int, int], None] | None = None,
                  sample_rate: int = 48000, copy_packets: bool = False,
                  watch: Callable[[Any], None] | None = None,
                  keyframes: Iterable[int] | None = None, threads: int = 0) -> Path:
    """Encode ``frames`` (and ``audio``) to ``output`` with ``profile``, atomically.

    Frames are RGB arrays, ``uint8`` or ``uint16`` (``rgb48``, full 0..65535: a 10-bit
    master then gets every level the picture has, with no 8-bit step), or PyAV frames.

    A long-GOP profile puts its keyframes at ``keyframes`` (default: every GOP start,
    :func:`keyframe_plan`) and nowhere else. ``threads``: the encoder's (0: as many as
    it likes).

    ``watch`` sees each frame exactly as it goes to the encoder (a PyAV frame in the
    encoder's pixel format, on the prefetch thread, in order): picture QA rides along
    there instead of decoding the master again. Copied packets are not shown to it."""
    import av
    import soundfile
    from av.video.frame import PictureType
    from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

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
                v.options = encoder_options(profile, width, height, rate)
                if profile.codec_tag:
                    v.codec_tag = profile.codec_tag
                # frame and slice threads, as the ffmpeg command uses; but where copied frames
                # are interleaved with encoded ones, the encoder must not hold frames back
                # (frame threads do), or its packets would arrive after later copied ones
                v.thread_type = "SLICE" if copy_packets else "AUTO"
                v.thread_count = threads
                cc = v.codec_context
                cc.color_primaries = profile.primaries
                cc.color_trc = profile.transfer
                cc.colorspace = profile.matrix
                cc.color_range = 1  # MPEG (limited) range
                cc.time_base = Fraction(1) / rate
                cc.gop_size = gop_frames(profile, rate)
                starts = set(keyframe_plan(n_frames, cc.gop_size) if keyframes is None
                             else keyframes)
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
                # One scaler for the decoded frames and one for RGB pictures, each made
                # once with its slice threads: a frame's own ``reformat`` builds a scaler
                # and a pool of threads for every frame. The conversion runs on the prefetch
                # thread, beside the encoder's threads, as the ffmpeg command's filter does.
                from_decoded, from_rgb = VideoReformatter(), VideoReformatter()
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
                    if isinstance(item, HDRPicture):  # a shot's HDR picture: no SDR step
                        vf = ycbcr_source(item.for_master(profile.hdr or "pq"))
                        return from_rgb.reformat(vf, format=profile.pix_fmt,
                                                 dst_colorspace=matrix,
                                                 dst_color_range=ColorRange.MPEG)
                    if isinstance(item, av.VideoFrame) and not profile.hdr:
                        # Y'CbCr in, Y'CbCr out: only chroma siting and bit depth change
                        return item if item.format.name == profile.pix_fmt else \
                            from_decoded.reformat(item, format=profile.pix_fmt)
                    rgb = item if isinstance(item, np.ndarray) else rgb24(item)
                    # 16-bit RGB at the scaler's full scale (aiprod_post.scaler)
                    vf = ycbcr_source(_hdr_convert(rgb, profile.hdr) if profile.hdr else rgb)
                    return from_rgb.reformat(vf, format=profile.pix_fmt, dst_colorspace=matrix,
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
                        # A decoded frame keeps the picture type its source gave it (I, for
                        # every frame of an intra-only ProRes shot), and libx264 and libx265
                        # take a typed frame as an order: reset it (as the ffmpeg command
                        # does), then ask for a keyframe only where the plan puts one.
                        item.pict_type = PictureType.I if i in starts else PictureType.NONE
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
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            # the disk, not the encoder: say so (the CLI names it and exits 2)
            raise OSError(exc.errno, os.strerror(exc.errno), str(output)) from None
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


def burn_in(frames: Iterator, cues: list, rate: Fraction, width: int, height: int,
            first: int = 0) -> Iterator:
    """Subtitles drawn onto the picture: white text with a dark outline, bottom centre.
    ``frames`` start at timeline frame ``first``.

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
        t = float(Fraction(first + i) / rate)
        while k < len(cues) and cues[k].end <= t:
            k += 1
        if k < len(cues) and cues[k].start <= t:
            rgb = frame if isinstance(frame, np.ndarray) else rgb24(frame)
            rgb = rgb.copy()
            colour_, alpha, top = overlay(k)
            white = np.float32(257 if rgb.dtype == np.uint16 else 1)  # 16-bit frames too
            region = rgb[top:top + colour_.shape[0]].astype(np.float32)
            rgb[top:top + colour_.shape[0]] = (region * (1 - alpha) + colour_ * white * alpha
                                               + 0.5).astype(rgb.dtype)
            yield rgb
        else:
            yield frame


def conform(timeline: otio.schema.Timeline | str | Path, output: Path,
            profile: str | Profile = "h264",
            *, audio: Path | None = None, base: Path | None = None,
            progress: Callable[[int, int], None] | None = None,
            subtitles: list | None = None, watch: Callable[[Any], None] | None = None,
            workers: int = 1, media: Iterable[Path] = (),
            transform: ClipTransform | None = None,
            segments: SegmentRunner | None = None) -> Path:
    """Render a master from ``timeline`` (an OTIO object, or a timeline file of any format
    :mod:`editing.readers` reads; ``media``: folders to look for its media in).

    ``subtitles`` (cues from :mod:`editing.subtitles`) are burned into the picture.
    ``watch`` sees every encoded frame (see :func:`encode_master`); a ProRes master without
    burn-in copies the compressed frames of plain cuts, which ``watch`` does not see.
    With ``workers`` above 1, a long-GOP master is encoded as closed-GOP segments by that
    many processes and joined without re-encoding (:func:`join_segments`); not while
    ``watch`` needs every frame in this process, nor with a ``transform``. ``segments``
    encodes the segments (at least ``workers`` of them) instead of local processes, such
    as an executor's units (see :data:`SegmentRunner`); they are joined here the same way.
    ``transform`` changes the pictures of the clips it gives a function for (see
    :func:`timeline_frames`): the caller decides what, this module only applies it.
    """
    if isinstance(profile, str) and profile not in PROFILES:
        raise AiprodError(f"unknown profile {profile!r}: expected one of {', '.join(PROFILES)}",
                          where="--profile")
    if not isinstance(timeline, otio.schema.Timeline):
        from .export import read_timeline

        path = Path(timeline)
        timeline = read_timeline(path, media=media)
        base = base or path.parent
    timeline = conformable(timeline)  # fades from any tool, retimed clips refused
    meta = timeline.metadata.get(NAMESPACE, {})
    rate = timeline_rate(timeline)
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    n = _timeline_length(timeline)
    if audio is None and meta.get("mix"):
        audio = url_to_path(meta["mix"], base)
    if audio is not None and not Path(audio).is_file():
        raise MediaError("the mix the timeline names is missing", source=audio)
    width, height = int(meta.get("width", 1920)), int(meta.get("height", 1080))
    if prof.hdr == "pq" and prof.codec == "libx265":
        # HDR10's static metadata, measured on the pictures first (a pass without encoding)
        prof = with_light_levels(prof, *light_levels(timeline, base, transform, subtitles))
    if (workers > 1 or segments is not None) and prof.gop_seconds is not None \
            and watch is None and transform is None:
        return _conform_in_segments(timeline, base, Path(output), prof,
                                    Path(audio) if audio else None, workers, subtitles,
                                    progress, segments)
    copy = prof.codec == "prores" and not subtitles
    frames = timeline_frames(timeline, base, rgb=False, copy_prores=copy, transform=transform,
                             hdr=prof.hdr is not None)
    if subtitles:
        frames = burn_in(frames, subtitles, rate, width, height)
    return encode_master(frames, n, rate, width, height, Path(output),
                         prof, Path(audio) if audio else None,
                         progress=progress, copy_packets=copy, watch=watch,
                         keyframes=master_keyframes(timeline, prof))


def probe(path: str | Path) -> dict:
    """What a player sees in a file: codec, profile, level, pixel format, colour tags, rate,
    lengths, and the video's GOP structure read from its packets: ``keyframes`` (frame
    numbers in display order), ``reordered`` (frames shown before one decoded earlier,
    i.e. B-frames), mean and peak bitrate (kbit/s; peak over any one-second window)."""
    import av

    with av.open(str(path)) as c:
        info: dict = {"format": c.format.name, "duration": c.duration / 1e6 if c.duration else None}
        if c.streams.video:
            s = c.streams.video[0]
            cc = s.codec_context
            rate = Fraction(s.average_rate)
            tb = s.time_base
            packets = [(p.pts, p.size, p.is_keyframe) for p in c.demux(s)
                       if p.size and p.pts is not None]
            first = min((pts for pts, _, _ in packets), default=0)
            index = [int(round(Fraction(pts - first) * tb * rate)) for pts, _, _ in packets]
            shown, reordered = -1, 0
            for k in index:  # packets come in decode order
                if k < shown:
                    reordered += 1
                shown = max(shown, k)
            bits = np.zeros(max(index, default=-1) + 1)
            for k, (_, size, _) in zip(index, packets):
                bits[k] += size * 8
            window = max(1, int(round(rate)))
            seconds = len(bits) / rate if len(bits) else Fraction(1)
            peak = np.convolve(bits, np.ones(window), "valid").max() if len(bits) >= window \
                else bits.sum()
            info["video"] = {
                "codec": cc.name, "profile": cc.profile, "level": cc.level,
                "pix_fmt": s.format.name, "width": s.width, "height": s.height, "rate": rate,
                "frames": len(packets), "primaries": cc.color_primaries,
                "transfer": cc.color_trc, "matrix": cc.colorspace, "range": cc.color_range,
                "tag": s.codec_tag,
                "keyframes": sorted(k for k, (_, _, key) in zip(index, packets) if key),
                "reordered": reordered,
                "kbps": round(float(bits.sum() / seconds) / 1000, 1),
                "peak_kbps_1s": round(float(peak) * float(rate) / window / 1000, 1),
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


def cut_frames(timeline: otio.schema.Timeline) -> list[int]:
    """Timeline frames where a hard cut starts a new clip or gap (not a dissolve or fade)."""
    video = next(t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Video)
    cuts, at, blended = [], 0, False
    for item in video:
        if isinstance(item, otio.schema.Transition):
            blended = True
            continue
        if at and not blended:
            cuts.append(at)
        blended = False
        at += int(round(item.duration().value))
    return cuts


def master_keyframes(timeline: otio.schema.Timeline, profile: Profile) -> list[int]:
    """Where ``profile`` puts the keyframes of ``timeline``'s master (every frame, intra)."""
    rate = timeline_rate(timeline)
    n = _timeline_length(timeline)
    cuts = cut_frames(timeline) if profile.keyframes_at_cuts else ()
    return keyframe_plan(n, gop_frames(profile, rate), cuts)


def _timeline_length(timeline: otio.schema.Timeline) -> int:
    return sum(int(round(i.duration().value)) for i in
               next(t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Video)
               if not isinstance(i, otio.schema.Transition))


def verify_master(path: str | Path, timeline: otio.schema.Timeline,
                  profile: str | Profile) -> dict:
    """Probe an encoded master and hold it to what ``profile`` promises for ``timeline``.

    Checked: frame count and rate, size, keyframes exactly where :func:`master_keyframes`
    puts them (so the GOP), B-frames in a long-GOP master, codec profile and (H.264) level,
    pixel format, colour tags and range, and for a capped profile the VBV: the video's
    packets replayed through the HRD's leaky bucket (filled at maxrate, one frame taken out
    per frame period, starting 90 % full as x264 does) never run it dry.
    Returns ``{"ok", "problems", "measured"}``; ``problems`` say what differs.
    """
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    info = probe(path)
    v = info.get("video")
    if v is None:
        return {"ok": False, "problems": ["no video stream"], "measured": info}
    meta = timeline.metadata.get(NAMESPACE, {})
    rate = timeline_rate(timeline)
    width, height = int(meta.get("width", 1920)), int(meta.get("height", 1080))
    expected_keys = master_keyframes(timeline, prof)
    want = {"frames": _timeline_length(timeline), "rate": rate, "width": width,
            "height": height, "pix_fmt": prof.pix_fmt, "primaries": prof.primaries,
            "transfer": prof.transfer, "matrix": prof.matrix, "range": 1}
    problems = [f"{k} is {v[k]}, expected {e}" for k, e in want.items() if v[k] != e]
    codec_profile = {"libx264": "High", "libx265": "Main 10"}.get(prof.codec)
    if codec_profile and v["profile"] != codec_profile:
        problems.append(f"codec profile is {v['profile']}, expected {codec_profile}")
    if prof.codec_tag and v["tag"] != prof.codec_tag:
        problems.append(f"sample entry is {v['tag']}, expected {prof.codec_tag}")
    if v["keyframes"] != expected_keys:
        extra = sorted(set(v["keyframes"]) - set(expected_keys))
        missing = sorted(set(expected_keys) - set(v["keyframes"]))
        problems.append(f"{len(v['keyframes'])} keyframes, expected {len(expected_keys)} "
                        f"(unexpected at {extra[:5]}, missing at {missing[:5]})")
    if prof.gop_seconds is not None and prof.b_frames and not v["reordered"]:
        problems.append("no B-frames in a long-GOP master")
    if prof.capped:
        maxrate, bufsize = bitrate_cap(width, height, rate)
        if prof.codec == "libx264":
            level = h264_level(width, height, rate, maxrate, bufsize)
            if v["level"] != int(round(float(level) * 10)):
                problems.append(f"level is {v['level'] / 10:g}, expected {level}")
        dry = _vbv_underflows(path, rate, maxrate * 1000, bufsize * 1000)
        if dry:
            problems.append(f"VBV ({maxrate} kbit/s, {bufsize} kbit) runs dry at frames "
                            f"{dry[:5]}")
    measured = {k: v[k] for k in ("codec", "profile", "level", "frames", "kbps",
                                  "peak_kbps_1s", "reordered")}
    measured["keyframes"] = len(v["keyframes"])
    measured["gop_frames"] = gop_frames(prof, rate)
    measured["size_bytes"] = Path(path).stat().st_size
    return {"ok": not problems, "problems": problems, "measured": measured}


def _vbv_underflows(path: str | Path, rate: Fraction, maxrate: int, bufsize: int) -> list[int]:
    """Frames (in decode order) that find the VBV buffer short of their bits (Annex C)."""
    import av

    with av.open(str(path)) as c:
        sizes = [p.size * 8 for p in c.demux(c.streams.video[0]) if p.size]
    fill = 0.9 * bufsize
    per_frame = maxrate / float(rate)
    dry = []
    for k, bits in enumerate(sizes):
        # a few bytes of slack per frame: packets carry the NAL length fields and SEI that
        # x264's own buffer model leaves out
        if bits > fill + 8 * 64:
            dry.append(k)
        fill = min(bufsize, max(0.0, fill - bits) + per_frame)
    return dry


# ------------------------------------------------------------------ segments in parallel


def segment_ranges(keyframes: list[int], n_frames: int, segments: int) -> list[tuple[int, int]]:
    """``[first, stop)`` frame ranges, about ``segments`` of them, each starting at a GOP
    start of ``keyframes`` (so each is closed and stands alone), as even in length as the
    GOPs allow.

    >>> segment_ranges([0, 48, 96, 144], 180, 2)
    [(0, 96), (96, 180)]
    """
    bounds = [0]
    for k in range(1, segments):
        ideal = n_frames * k / segments
        start = min(keyframes, key=lambda key: abs(key - ideal))
        if start > bounds[-1]:
            bounds.append(start)
    return list(zip(bounds, bounds[1:] + [n_frames]))


def encode_segment(timeline_json: str, base: str | None, profile: Profile, first: int,
                   stop: int, output: str, *, threads: int = 0,
                   subtitles: list | None = None) -> str:
    """Encode timeline frames ``[first, stop)`` to ``output`` (video only): one closed-GOP
    segment of the master, its keyframes where the whole master has them. A pure function
    of its arguments, so a worker process (or a Ray task on another node that reaches the
    media) can run it."""
    timeline = otio.adapters.read_from_string(timeline_json, "otio_json")
    meta = timeline.metadata.get(NAMESPACE, {})
    rate = timeline_rate(timeline)
    width, height = int(meta.get("width", 1920)), int(meta.get("height", 1080))
    keys = [k - first for k in master_keyframes(timeline, profile) if first <= k < stop]
    if keys[:1] != [0]:
        raise AiprodError(f"segment {first}-{stop} does not start at a GOP start")
    frames = timeline_frames(timeline, Path(base) if base else None, rgb=False, first=first,
                             hdr=profile.hdr is not None)
    if subtitles:
        frames = burn_in(frames, subtitles, rate, width, height, first=first)
    part = dataclasses.replace(profile, container_options=None)  # no faststart pass
    encode_master(frames, stop - first, rate, width, height, Path(output), part, None,
                  keyframes=keys, threads=threads)
    return output


def join_segments(parts: Iterable[tuple[Path, int]], output: Path, profile: Profile,
                  audio: Path | None, rate: Fraction, n_frames: int,
                  sample_rate: int = 48000) -> Path:
    """The master from its segments, ``(file, first frame)`` in order, without re-encoding:
    the compressed frames are copied and restamped onto the timeline's frame numbers, the
    audio is encoded beside them, and the file is written atomically. ``parts`` is read
    as it goes, so it may yield each segment as soon as it is encoded.

    The segments must share one set of parameter sets (SPS/PPS: the same encoder settings
    at the same size), or the joined stream would decode wrongly: that is checked."""
    import av
    import soundfile

    output = Path(output)
    parts = iter(parts)
    first_part = next(parts)
    snd = None
    try:
        with atomic_path(output, f".part{profile.suffix}") as tmp, \
                av.open(str(first_part[0])) as head:
            template = head.streams.video[0]
            headers = bytes(template.codec_context.extradata or b"")
            with av.open(str(tmp), "w", format=profile.container,
                         options=profile.container_options or {}) as out:
                v = out.add_stream_from_template(template)
                if profile.codec_tag:  # PyAV's template drops the segments' own tag
                    v.codec_tag = profile.codec_tag
                v.time_base = Fraction(1) / rate
                a = None
                if audio is not None:
                    snd = soundfile.SoundFile(str(audio))
                    a = out.add_stream(profile.audio_codec, rate=sample_rate, layout="stereo")
                    if profile.audio_bitrate:
                        a.bit_rate = profile.audio_bitrate
                count, heard, apts = 0, 0, 0
                frame = Fraction(1) / rate
                for path, first in itertools.chain([first_part], parts):
                    with av.open(str(path)) as seg:
                        s = seg.streams.video[0]
                        if bytes(s.codec_context.extradata or b"") != headers:
                            raise MediaError("segment has other parameter sets (SPS/PPS) "
                                             "than the first", source=path)
                        origin = None
                        for p in seg.demux(s):
                            if not p.size:
                                continue
                            if origin is None:  # the IDR frame that opens the segment
                                origin = p.pts
                            shown = first + int(round((p.pts - origin) * s.time_base / frame))
                            p.dts = first + int(round((p.dts - origin) * s.time_base / frame))
                            p.pts, p.time_base, p.duration = shown, frame, 1
                            p.stream = v
                            out.mux(p)
                            count += 1
                            while a is not None and snd is not None and heard <= shown:
                                apts = _mux_audio(a, out, snd, heard, rate, sample_rate, apts)
                                heard += 1
                if count != n_frames:
                    raise MediaError(f"the segments hold {count} frames, expected {n_frames}")
                while a is not None and snd is not None and heard < n_frames:
                    apts = _mux_audio(a, out, snd, heard, rate, sample_rate, apts)
                    heard += 1
                if a is not None:
                    for p in a.encode():
                        out.mux(p)
    finally:
        if snd is not None:
            snd.close()
    return output


@dataclass(frozen=True)
class Segment:
    """One closed-GOP segment of a master to encode: timeline frames ``[first, stop)``
    written to ``output`` (a path every process that may encode it reaches), the
    ``index``-th of the master's segments. Picklable: it travels to a worker process or
    a task on another node."""

    index: int
    base: str | None
    profile: Profile
    first: int
    stop: int
    output: str
    subtitles: list | None = None

    def encode(self, timeline_json: str, threads: int = 0) -> str:
        """Encode it (:func:`encode_segment`) from the timeline as OTIO JSON."""
        return encode_segment(timeline_json, self.base, self.profile, self.first, self.stop,
                              self.output, threads=threads, subtitles=self.subtitles)


#: ``run(timeline_json, segments)`` encodes every segment (:meth:`Segment.encode`) and
#: yields each one's index as soon as its file is written, in any order; it raises if a
#: segment cannot be encoded, and closing it early stops what it still runs. conform's
#: default runs them in local worker processes (:func:`segments_in_processes`); a render
#: on a cluster passes one that runs them as its executor's units.
SegmentRunner = Callable[[str, list[Segment]], Iterator[int]]


_SEGMENT_WORKER = ("import pickle, sys\n"
                   "text, threads, segments = pickle.loads(open(sys.argv[1], 'rb').read())\n"
                   "for segment in segments:\n"
                   "    segment.encode(text, threads)\n"
                   "    print(segment.index, flush=True)")


def segments_in_processes(workers: int) -> SegmentRunner:
    """Segments encoded by ``workers`` local processes, each taking every ``workers``-th
    segment, with an encoder given its share of the cores."""

    def run(timeline_json: str, segments: list[Segment]) -> Iterator[int]:
        # One fresh interpreter per worker, saying each segment's number when it is
        # written: not a fork (this process may hold encoder and prefetch threads) nor
        # multiprocessing's spawn (it re-runs the caller's main module, which a library
        # cannot ask of its callers).
        import pickle
        import queue
        import subprocess
        import sys
        import threading

        count = min(workers, len(segments))
        threads = max(1, (os.cpu_count() or 1) // count)
        folder = Path(segments[0].output).parent
        said: queue.Queue = queue.Queue()
        procs = []
        try:
            for w in range(count):
                job = folder / f"worker{w}.job"
                job.write_bytes(pickle.dumps((timeline_json, threads, segments[w::count])))
                with open(folder / f"worker{w}.log", "w") as log:
                    proc = subprocess.Popen([sys.executable, "-c", _SEGMENT_WORKER, str(job)],
                                            stdout=subprocess.PIPE, stderr=log, text=True)
                procs.append(proc)

                def listen(proc=proc, w=w) -> None:
                    for line in proc.stdout:  # type: ignore[union-attr]
                        said.put(int(line))
                    said.put((w, proc.wait()))

                threading.Thread(target=listen, daemon=True).start()
            ended = 0
            while ended < count:
                item = said.get()
                if isinstance(item, tuple):
                    w, code = item
                    if code:
                        lines = (folder / f"worker{w}.log").read_text().strip().splitlines()
                        raise MediaError("a segment encoder failed: "
                                         f"{(lines or ['no message'])[-1]}",
                                         source=segments[w].output)
                    ended += 1
                    continue
                yield item
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()

    return run


def _conform_in_segments(timeline: otio.schema.Timeline, base: Path | None, output: Path,
                         profile: Profile, audio: Path | None, workers: int,
                         subtitles: list | None,
                         progress: Callable[[int, int], None] | None,
                         runner: SegmentRunner | None = None) -> Path:
    """Closed-GOP segments encoded by ``runner`` (else ``workers`` local processes), each
    decoding its own stretch of the timeline, and joined in this process as they come in
    order (the join overlaps the encoding; each segment file is removed once copied).
    Segments of about 8 GOPs (at least ``workers``) keep the workers evenly loaded. The
    segments are written beside ``output``, so wherever it is a shared folder, so are they."""
    import tempfile

    rate = timeline_rate(timeline)
    n = _timeline_length(timeline)
    keys = master_keyframes(timeline, profile)
    count = max(workers, round(n / (8 * gop_frames(profile, rate))))
    ranges = segment_ranges(keys, n, count)
    text = otio.adapters.write_to_string(timeline, "otio_json")
    run = runner or segments_in_processes(workers)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".segments-") as tmp:
        # absolute: a worker elsewhere has its own working folder
        folder = Path(tmp).resolve()
        segments = [Segment(k, str(Path(base).resolve()) if base else None, profile, first,
                            stop, str(folder / f"{k:05d}{profile.suffix}"), subtitles)
                    for k, (first, stop) in enumerate(ranges)]

        def in_order() -> Iterator[tuple[Path, int]]:
            written: set[int] = set()
            nxt = 0
            with contextlib.closing(run(text, segments)) as said:
                for k in said:
                    written.add(k)
                    while nxt in written:
                        part = Path(segments[nxt].output)
                        if not part.is_file():  # said written, by a worker that sees another disk
                            raise MediaError("a segment said to be written is not here: the "
                                             "folder must be one every worker shares", source=part)
                        yield part, ranges[nxt][0]
                        part.unlink()  # copied into the master: free the disk
                        if progress:
                            progress(ranges[nxt][1], n)
                        nxt += 1
            if nxt < len(ranges):
                raise MediaError(f"segments {nxt} to {len(ranges) - 1} were not encoded",
                                 source=output)

        ready = in_order()
        try:
            return join_segments(ready, output, profile, audio, rate, n)
        finally:
            ready.close()  # a failed join stops the workers too
