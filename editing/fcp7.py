"""FCP 7 XML (xmeml 4) for Premiere Pro and Resolve: the adapter's file, on whole frames, completed.

OpenTimelineIO's fcp_xml adapter writes the clips, transitions and markers; it is
given the timeline already on whole frames (:func:`.export.on_whole_frames`), so
every clip item's ``end - start`` equals its ``out - in``. What it leaves out or
gets wrong is completed here, from the xmeml description (Final Cut Pro 7 XML
Interchange Format, version 4/5):

* each ``file``'s ``media`` says what the file holds: ``video`` with its
  ``samplecharacteristics`` (width, height) only where it has picture, ``audio``
  with ``channelcount`` and ``samplecharacteristics`` (depth, sample rate) only
  where it has sound (the adapter declares sound on silent shot media);
* the sequence's ``format`` gives the frame size and rate, and its ``timecode``
  starts at the timeline's start (01:00:00:00);
* each clip item names its ``sourcetrack`` (the file's picture or first sound track)
  and carries its ``rate`` once.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .aaf import media_info
from .interchange import Edit, timecode
from .timeline import url_to_path

__all__ = ["fix_fcp7"]


def _rate(parent: ET.Element, edit: Edit) -> None:
    rate = ET.SubElement(parent, "rate")
    ET.SubElement(rate, "timebase").text = str(round(edit.rate))
    ET.SubElement(rate, "ntsc").text = "TRUE" if edit.rate.denominator == 1001 else "FALSE"


def _text(parent: ET.Element, tag: str, value: object) -> ET.Element:
    el = ET.SubElement(parent, tag)
    el.text = str(value)
    return el


def fix_fcp7(path: Path, edit: Edit) -> None:
    """Complete the xmeml file at ``path`` (written by the adapter from ``edit``) in place."""
    tree = ET.parse(path)
    root = tree.getroot()
    sound_files = {ev.path for t in edit.audio for ev in t.events if ev.path is not None}
    for file in root.iter("file"):
        url = file.findtext("pathurl")
        media = file.find("media")
        if url is None or media is None:
            continue  # a later reference to a file described before
        p = url_to_path(url)
        kind = "audio" if p in sound_files or p.suffix.lower() in (".wav", ".aif", ".aiff") \
            else "video"
        info = media_info(p, kind, edit.rate, None, (edit.width, edit.height))
        for child in list(media):
            media.remove(child)
        if kind == "video":
            video = ET.SubElement(media, "video")
            sc = ET.SubElement(video, "samplecharacteristics")
            _rate(sc, edit)
            _text(sc, "width", info["width"])
            _text(sc, "height", info["height"])
        if kind == "audio" or info["has_audio"]:
            audio = ET.SubElement(media, "audio")
            sc = ET.SubElement(audio, "samplecharacteristics")
            _text(sc, "depth", info["bits"])
            _text(sc, "samplerate", info["sample_rate"])
            _text(audio, "channelcount", info["channels"])
    for kind in ("video", "audio"):
        for track in root.iterfind(f".//sequence/media/{kind}/track"):
            for item in track.iter("clipitem"):
                rates = item.findall("rate")
                for extra in rates[1:]:  # the adapter writes the clip's rate twice
                    item.remove(extra)
                if item.find("sourcetrack") is None:
                    # which of the file's tracks the clip plays (Premiere links sound by it)
                    source = ET.SubElement(item, "sourcetrack")
                    _text(source, "mediatype", kind)
                    _text(source, "trackindex", 1)
    for sequence in root.iter("sequence"):
        media = sequence.find("media")
        video = media.find("video") if media is not None else None
        if video is not None:
            fmt = video.find("format")
            if fmt is None:
                fmt = ET.Element("format")
                video.insert(0, fmt)
            for child in list(fmt):
                fmt.remove(child)
            sc = ET.SubElement(fmt, "samplecharacteristics")
            _rate(sc, edit)
            _text(sc, "width", edit.width)
            _text(sc, "height", edit.height)
            _text(sc, "pixelaspectratio", "square")
        if sequence.find("timecode") is None:
            tc = ET.Element("timecode")
            _rate(tc, edit)
            _text(tc, "string", timecode(edit.start, edit.rate))
            _text(tc, "frame", edit.start)
            _text(tc, "displayformat", "NDF")
            index = list(sequence).index(media) if media is not None else len(sequence)
            sequence.insert(index, tc)
    ET.indent(root, space="    ")
    body = ET.tostring(root, encoding="unicode")
    Path(path).write_text('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE xmeml>\n'
                          + body + "\n", encoding="utf-8")
