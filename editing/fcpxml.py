"""FCPXML 1.10 for Final Cut Pro and Resolve, written from the edit in frames.

Written from Apple's published description of the format (Professional Video
Applications, "FCPXML Reference"):

* times are rational seconds (``1001/24000s``), every one a whole number of frames;
* a ``format`` resource with ``frameDuration``, ``width`` and ``height`` (a named
  ``FFVideoFormat…`` only for the sizes and rates Final Cut Pro names);
* one ``asset`` per file, its file in a ``media-rep``; picture assets carry the format,
  sound assets ``audioChannels`` and ``audioRate`` and no video format;
* the ``sequence`` starts at ``tcStart`` (the timeline's 01:00:00:00), its primary
  storyline (``spine``) holds the picture track's clips and gaps end to end, offsets
  in sequence time;
* a dissolve or fade is a ``transition`` in the spine between (or beside) the clips it
  joins, at its own ``offset`` and ``duration``, with the built-in Cross Dissolve;
  a fade to black is a transition into a ``gap``, a fade in one at the spine's start;
* sound clips are connected to the spine clip under their start (``lane`` -1, -2, …,
  one per sound track), ``offset`` in that clip's local time;
* markers sit on their clip, ``start`` in the clip's local time, one frame long.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path
from typing import Callable

from aiprod_post.errors import MediaError

from .aaf import media_info
from .interchange import Edit, Event

__all__ = ["write_fcpxml", "FCPXML_VERSION", "CROSS_DISSOLVE_UID", "format_name"]

FCPXML_VERSION = "1.10"
# Final Cut Pro's built-in Cross Dissolve (an FxPlug effect)
CROSS_DISSOLVE_UID = "FxPlug:4731E73A-8DAC-4113-9A30-AE85B1761265"

_RATE_NAMES = {Fraction(24000, 1001): "2398", Fraction(24): "24", Fraction(25): "25",
               Fraction(30000, 1001): "2997", Fraction(30): "30", Fraction(50): "50",
               Fraction(60000, 1001): "5994", Fraction(60): "60"}
_SIZE_NAMES = {(1280, 720): "720p", (1920, 1080): "1080p", (3840, 2160): "2160p"}


def format_name(width: int, height: int, rate: Fraction) -> str | None:
    """Final Cut Pro's name for a standard progressive format, else None.

    >>> format_name(1920, 1080, Fraction(24000, 1001)), format_name(64, 36, Fraction(24))
    ('FFVideoFormat1080p2398', None)
    """
    size, r = _SIZE_NAMES.get((width, height)), _RATE_NAMES.get(rate)
    return f"FFVideoFormat{size}{r}" if size and r else None


def _time(frames: int | Fraction, rate: Fraction) -> str:
    """Rational seconds of a frame count: ``1001/24000s``, ``3600s``.

    >>> _time(86400, Fraction(24)), _time(5, Fraction(24000, 1001)), _time(0, Fraction(25))
    ('3600s', '5005/24000s', '0s')
    """
    num = Fraction(frames) * rate.denominator
    if num.denominator != 1:
        raise ValueError(f"{frames} is not a whole frame")
    n = int(num)
    if n % rate.numerator == 0:
        return f"{n // rate.numerator}s"
    return f"{n}/{rate.numerator}s"


def write_fcpxml(edit: Edit, media_url: Callable[[Path], str]) -> str:
    """``edit`` as an FCPXML 1.10 document (text)."""
    if not edit.video:
        raise MediaError("the timeline has no picture track for FCPXML")
    rate = edit.rate
    t0 = edit.start
    root = ET.Element("fcpxml", version=FCPXML_VERSION)
    resources = ET.SubElement(root, "resources")
    ids = iter(f"r{n}" for n in range(1, 1_000_000))
    formats: dict[tuple[int, int], str] = {}

    def fmt(width: int, height: int) -> str:
        if (width, height) not in formats:
            attrs = {"id": next(ids)}
            name = format_name(width, height, rate)
            if name:
                attrs["name"] = name
            attrs.update(frameDuration=_time(1, rate), width=str(width), height=str(height),
                         colorSpace="1-1-1 (Rec. 709)")
            ET.SubElement(resources, "format", attrs)
            formats[(width, height)] = attrs["id"]
        return formats[(width, height)]

    seq_format = fmt(edit.width, edit.height)
    dissolve_id = next(ids)
    ET.SubElement(resources, "effect", id=dissolve_id, name="Cross Dissolve",
                  uid=CROSS_DISSOLVE_UID)
    assets: dict[tuple[Path | str, str], str] = {}

    def asset(ev: Event, kind: str) -> str:
        key = (ev.path or ev.name, kind)
        if key in assets:
            return assets[key]
        frames = ev.media_frames if ev.media_frames is not None else ev.source_out
        info = media_info(ev.path, kind, rate, frames, (edit.width, edit.height))
        attrs = {"id": next(ids), "name": ev.path.stem if ev.path else ev.name,
                 "start": _time(ev.media_start, rate)}
        if kind == "audio":
            samples = info["samples"]
            seconds = Fraction(samples, info["sample_rate"]) if samples is not None \
                else Fraction(frames) / rate
            # a sound file need not end on a frame: its length in whole frames, rounded up
            whole = -(-seconds * rate // 1)
            attrs.update(duration=_time(max(int(whole), ev.source_out - ev.media_start), rate),
                         hasAudio="1", audioSources="1", audioChannels=str(info["channels"]),
                         audioRate=str(info["sample_rate"]))
        else:
            attrs.update(duration=_time(max(info["frames"] or frames,
                                            ev.source_out - ev.media_start), rate),
                         hasVideo="1", videoSources="1",
                         format=fmt(info["width"], info["height"]))
            if info["has_audio"]:
                attrs.update(hasAudio="1", audioSources="1", audioChannels="2",
                             audioRate="48000")
        a = ET.SubElement(resources, "asset", attrs)
        if ev.path is not None:
            ET.SubElement(a, "media-rep", kind="original-media", src=media_url(ev.path))
        assets[key] = attrs["id"]
        return attrs["id"]

    library = ET.SubElement(root, "library")
    event = ET.SubElement(library, "event", name=edit.name)
    project = ET.SubElement(event, "project", name=edit.name)
    sequence = ET.SubElement(project, "sequence", format=seq_format,
                             duration=_time(edit.duration, rate), tcStart=_time(t0, rate),
                             tcFormat="NDF", audioLayout="stereo", audioRate="48k")
    spine = ET.SubElement(sequence, "spine")
    track = edit.video[0]
    # the spine: clips and gaps end to end, each with its record range and local start
    hosts: list[tuple[int, int, int, ET.Element]] = []

    def gap(rec_in: int, rec_out: int) -> None:
        if rec_out > rec_in:
            g = ET.SubElement(spine, "gap", name="Gap", offset=_time(t0 + rec_in, rate),
                              start=_time(t0, rate), duration=_time(rec_out - rec_in, rate))
            hosts.append((rec_in, rec_out, t0, g))

    def transition(fd) -> None:
        tr = ET.SubElement(spine, "transition", name=fd.name if fd.name else "Cross Dissolve",
                           offset=_time(t0 + fd.start, rate), duration=_time(fd.length, rate))
        ET.SubElement(tr, "filter-video", ref=dissolve_id, name="Cross Dissolve")

    at = 0
    placed: set[int] = set()
    for ev in track.events:
        gap(at, ev.record_in)
        fin = next((fd for fd in track.fades if fd.cut == ev.record_in
                    and (fd.from_black or not fd.to_black)), None)
        if fin is not None and id(fin) not in placed:
            placed.add(id(fin))
            transition(fin)
        clip = ET.SubElement(spine, "asset-clip", ref=asset(ev, "video"),
                             offset=_time(t0 + ev.record_in, rate), name=ev.name,
                             start=_time(ev.source_in, rate), duration=_time(ev.length, rate),
                             format=fmt(edit.width, edit.height), tcFormat="NDF")
        for m in ev.markers:
            ET.SubElement(clip, "marker", start=_time(ev.source_in + m.record - ev.record_in,
                                                      rate),
                          duration=_time(max(1, m.length), rate), value=m.name,
                          **({"note": m.comment} if m.comment and m.comment != m.name else {}))
        hosts.append((ev.record_in, ev.record_out, ev.source_in, clip))
        fout = next((fd for fd in track.fades if fd.cut == ev.record_out
                     and not fd.from_black), None)
        if fout is not None and id(fout) not in placed:
            placed.add(id(fout))
            transition(fout)
        at = ev.record_out
    gap(at, edit.duration)
    if not hosts:
        raise MediaError("the picture track is empty: FCPXML needs a primary storyline")
    for lane, sound in enumerate(edit.audio, start=1):
        role = {1: "dialogue", 2: "music"}.get(lane, "effects")
        for ev in sound.events:
            host = next((h for h in hosts if h[0] <= ev.record_in < h[1]), hosts[-1])
            rec_in, _out, local, element = host
            ET.SubElement(element, "asset-clip", ref=asset(ev, "audio"), lane=str(-lane),
                          offset=_time(local + ev.record_in - rec_in, rate), name=ev.name,
                          start=_time(ev.source_in, rate), duration=_time(ev.length, rate),
                          audioRole=role)
    # a clip's connected clips come before its markers (the asset-clip content model)
    for _a, _b, _c, element in hosts:
        children = list(element)
        ordered = [c for c in children if c.tag != "marker"] + \
            [c for c in children if c.tag == "marker"]
        if ordered != children:
            for c in children:
                element.remove(c)
            element.extend(ordered)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE fcpxml>\n\n' + body + "\n"
