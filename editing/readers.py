"""Read back what the editors send: .otio, FCP 7 XML, FCPXML, CMX 3600 EDL and AAF.

Every reader returns an OpenTimelineIO timeline in the shape the conform renders:
a picture track of clips and gaps, each dissolve a Transition between two clips,
each fade a Transition beside a gap or at an end of the track (from or to black,
whichever tool wrote it), media as plain paths, and the exact rate and frame size
in the timeline's metadata. FCPXML, EDL and AAF are read here (EDL and AAF from
their published descriptions, FCPXML from Apple's reference); FCP 7 XML through
OpenTimelineIO's adapter. A media file a timeline names that is not where it says
is looked for in the ``media`` folders, by file name, then by clip or reel name.

Clips that are retimed (a speed change, a freeze frame, a time map) are refused,
naming the clip; so are clips counted at another frame rate than their timeline.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import opentimelineio as otio

from aiprod_post.errors import MediaError

from .timeline import NAMESPACE, START_TIMECODE_HOURS, url_to_path

__all__ = ["read_timeline", "READERS"]

_VIDEO_SUFFIXES = (".mov", ".mp4", ".mxf", ".mkv", ".m4v", ".avi", ".webm")


def _rt(frames: int | Fraction, rate: Fraction) -> otio.opentime.RationalTime:
    return otio.opentime.RationalTime(float(frames), float(rate))


def _range(start: int | Fraction, length: int | Fraction, rate: Fraction
           ) -> otio.opentime.TimeRange:
    return otio.opentime.TimeRange(_rt(start, rate), _rt(length, rate))


def _probe(path: Path) -> tuple[Fraction | None, int | None, int | None, int | None]:
    """(rate, frames, width, height) of a picture file, or Nones."""
    import av

    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            frames = s.frames or None
            if not frames and s.duration and s.time_base:
                frames = round(s.duration * s.time_base * (s.average_rate or 0)) or None
            return Fraction(s.average_rate) if s.average_rate else None, frames, s.width, \
                s.height
    except Exception:  # noqa: BLE001 - not picture media: nothing known
        return None, None, None, None


class _Finder:
    """Where a timeline's media are: as named, else in the ``media`` folders."""

    def __init__(self, timeline_path: Path, folders: Sequence[Path]) -> None:
        self.base = timeline_path.parent
        self.folders = [Path(f) for f in folders]
        for f in self.folders:
            if not f.is_dir():
                raise MediaError("media folder does not exist", source=f, where="--media")
        self._index: dict[str, Path] | None = None

    def _files(self) -> dict[str, Path]:
        if self._index is None:
            self._index = {}
            for folder in self.folders:
                for p in sorted(folder.rglob("*")):
                    if p.is_file():
                        self._index.setdefault(p.name.casefold(), p)
                        self._index.setdefault(p.stem.casefold(), p)
        return self._index

    def find(self, named: str | None, *names: str | None) -> Path | None:
        if named:
            p = url_to_path(named, self.base)
            if p.is_file():
                return p
            hit = self._files().get(Path(p).name.casefold())
            if hit is not None:
                return hit
        for name in names:
            if name and (hit := self._files().get(name.casefold())) is not None:
                return hit
        return None


def _timeline(name: str, rate: Fraction, start: int, width: int | None, height: int | None,
              track: otio.schema.Track) -> otio.schema.Timeline:
    tl = otio.schema.Timeline(name=name or "Untitled")
    tl.global_start_time = _rt(start, rate)
    tl.metadata[NAMESPACE] = {"rate": f"{rate.numerator}/{rate.denominator}"
                              if rate.denominator != 1 else str(rate.numerator),
                              "width": width, "height": height}
    tl.tracks.append(track)
    return tl


def _clip(name: str, path: Path | None, source_in: int | Fraction, length: int | Fraction,
          rate: Fraction, media_frames: int | None = None) -> otio.schema.Clip:
    if path is None:
        ref: otio.core.MediaReference = otio.schema.MissingReference()
    else:
        ref = otio.schema.ExternalReference(
            target_url=str(path),
            available_range=_range(0, media_frames, rate) if media_frames else None)
    return otio.schema.Clip(name=name, media_reference=ref,
                            source_range=_range(source_in, length, rate))


def _fill_size(tl: otio.schema.Timeline) -> otio.schema.Timeline:
    """Width and height from the first clip's media where the file did not say them."""
    meta = tl.metadata.setdefault(NAMESPACE, {})
    if not (meta.get("width") and meta.get("height")):
        for clip in tl.find_clips():
            ref = clip.media_reference
            if isinstance(ref, otio.schema.ExternalReference):
                _r, _n, w, h = _probe(url_to_path(ref.target_url))
                if w and h:
                    meta["width"], meta["height"] = w, h
                    break
    return tl


# ------------------------------------------------------------------ EDL


def read_edl(path: Path, media: Sequence[Path] = (), rate: Fraction | None = None
             ) -> otio.schema.Timeline:
    """A CMX 3600 EDL's picture events as a timeline (see the module's docstring). The
    rate, which an EDL does not carry, comes from ``rate`` or the first media found."""
    from .edl import parse_edl

    finder = _Finder(path, media)
    title, events = parse_edl(path, rate or Fraction(24))
    found: dict[int, Path | None] = {}
    for k, ev in enumerate(events):
        if ev.reel.upper() in ("BL", "BLK", "BLACK"):
            continue
        name = ev.to_clip_name if k and events[k - 1].number == ev.number and ev.to_clip_name \
            else ev.clip_name
        found[k] = finder.find(ev.source_file, name, ev.reel)
    if rate is None:  # an EDL has no rate: the media's
        first = next((p for p in found.values() if p is not None), None)
        rate = (_probe(first)[0] if first else None) or Fraction(24)
        if round(rate) != 24:
            title, events = parse_edl(path, rate)
    picture = [(k, ev) for k, ev in enumerate(events) if "V" in ev.channels.upper()
               or ev.channels.upper() == "B"]
    if not picture:
        raise MediaError("the EDL has no picture events", source=path)
    start = min(ev.record_in for _k, ev in picture)
    track = otio.schema.Track("V1", kind=otio.schema.TrackKind.Video)
    at = start
    for n, (k, ev) in enumerate(picture):
        nxt = picture[n + 1][1] if n + 1 < len(picture) else None
        if nxt is not None and nxt.number == ev.number and ev.record_out == ev.record_in:
            continue  # the outgoing half of a dissolve: already on the timeline
        if ev.source_out - ev.source_in != ev.record_out - ev.record_in:
            raise MediaError(f"event {ev.number} ({ev.clip_name or ev.reel}) plays "
                             f"{ev.source_out - ev.source_in} source frames in "
                             f"{ev.record_out - ev.record_in} record frames: a speed change; "
                             "render it into the media first", source=path, line=ev.line)
        if ev.record_in > at:
            track.append(otio.schema.Gap(source_range=_range(0, ev.record_in - at, rate)))
        elif ev.record_in < at:
            raise MediaError(f"event {ev.number} starts at record frame "
                             f"{ev.record_in - start}, before the event before it ends "
                             f"({at - start})", source=path, line=ev.line)
        if ev.transition.upper().startswith(("D", "W")) and ev.duration:
            track.append(otio.schema.Transition(
                name="Cross Dissolve", transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                in_offset=_rt(0, rate), out_offset=_rt(ev.duration, rate)))
        length = ev.record_out - ev.record_in
        if ev.reel.upper() in ("BL", "BLK", "BLACK"):
            track.append(otio.schema.Gap(source_range=_range(0, length, rate)))
        else:
            name = ev.to_clip_name or ev.clip_name or ev.reel
            p = found.get(k)
            if p is None:
                looked = ", ".join(str(f) for f in finder.folders) or "no --media folders"
                raise MediaError(f"no media for event {ev.number} (clip {name!r}, reel "
                                 f"{ev.reel!r}) as named or in {looked}", source=path,
                                 line=ev.line)
            media_rate, frames, _w, _h = _probe(p)
            if media_rate is not None and media_rate != rate:
                raise MediaError(f"clip {name!r} is {media_rate} fps media in a {rate} fps EDL",
                                 source=path, line=ev.line)
            clip = _clip(name, p, ev.source_in, length, rate, frames)
            if ev.cdl is not None:  # a colourist's grade comes back with the edit
                clip.metadata.setdefault(NAMESPACE, {})["cdl"] = {"id": name, **ev.cdl}
            for at_frame, label in ev.markers:
                clip.markers.append(otio.schema.Marker(
                    name=label, marked_range=_range(ev.source_in + at_frame - ev.record_in, 0,
                                                    rate)))
            track.append(clip)
        at = ev.record_out
    return _fill_size(_timeline(title, rate, start, None, None, track))


# ------------------------------------------------------------------ FCPXML


def _seconds(value: str | None, where: str, path: Path) -> Fraction:
    from .check import _seconds as parse

    t = parse(value or "0s")
    if t is None:
        raise MediaError(f"{where}: {value!r} is not an FCPXML time", source=path)
    return t


def read_fcpxml(path: Path, media: Sequence[Path] = ()) -> otio.schema.Timeline:
    """An FCPXML project's primary storyline as a timeline (see the module's docstring)."""
    finder = _Finder(path, media)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise MediaError(f"not well-formed XML: {exc}", source=path) from None
    res = {el.get("id"): el for el in root.iter() if el.get("id")}
    sequence = root.find(".//sequence")
    if sequence is None or sequence.find("spine") is None:
        raise MediaError("no project sequence with a primary storyline", source=path)
    fmt = res.get(sequence.get("format"))
    if fmt is None or not fmt.get("frameDuration"):
        raise MediaError("the sequence's format has no frameDuration", source=path)
    frame = _seconds(fmt.get("frameDuration"), "format", path)
    rate = 1 / frame

    def frames(el: ET.Element, attr: str) -> Fraction:
        value = _seconds(el.get(attr), f"<{el.tag} {el.get('name')!r}> {attr}", path) / frame
        if value.denominator != 1:
            raise MediaError(f"<{el.tag} {el.get('name')!r}>: {attr} {el.get(attr)} is not on "
                             "a frame", source=path)
        return value

    t0 = frames(sequence, "tcStart") if sequence.get("tcStart") else Fraction(0)
    items = list(sequence.find("spine"))
    track = otio.schema.Track("V1", kind=otio.schema.TrackKind.Video)
    for i, el in enumerate(items):
        name = el.get("name") or el.tag
        if el.tag == "transition":
            offset, duration = frames(el, "offset") - t0, frames(el, "duration")
            nxt = items[i + 1] if i + 1 < len(items) else None
            prev = items[i - 1] if i else None
            cut = frames(nxt, "offset") - t0 if nxt is not None else \
                frames(prev, "offset") - t0 + frames(prev, "duration")
            track.append(otio.schema.Transition(
                name=name, transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                in_offset=_rt(cut - offset, rate), out_offset=_rt(offset + duration - cut, rate)))
            continue
        duration = frames(el, "duration")
        if el.tag == "gap":
            track.append(otio.schema.Gap(source_range=_range(0, duration, rate)))
            continue
        if el.find("timeMap") is not None or (el.find("conform-rate") is not None
                                              and el.find("conform-rate").get("srcFrameRate")):
            raise MediaError(f"clip {name!r} is retimed (timeMap or conform-rate); render the "
                             "speed change into its media first", source=path)
        ref = el.get("ref")
        if el.tag == "clip":
            video = el.find("video")
            ref = video.get("ref") if video is not None else None
        if el.tag not in ("asset-clip", "clip") or ref not in res:
            raise MediaError(f"<{el.tag} {name!r}> in the storyline: only clips of media, gaps "
                             "and transitions are conformed", source=path)
        asset = res[ref]
        rep = asset.find("media-rep")
        src = rep.get("src") if rep is not None else asset.get("src")
        p = finder.find(src, asset.get("name"), name)
        if p is None:
            raise MediaError(f"no media for clip {name!r} ({src})", source=path,
                             where=f"clip {name}")
        asset_fmt = res.get(asset.get("format") or "")
        if asset_fmt is not None and asset_fmt.get("frameDuration") and \
                _seconds(asset_fmt.get("frameDuration"), "format", path) != frame:
            raise MediaError(f"clip {name!r} is at another frame rate than its sequence",
                             source=path, where=f"clip {name}")
        above = next((c for c in el if c.get("lane", "0").lstrip("-").isdigit()
                      and int(c.get("lane", "0")) > 0), None)
        if above is not None:  # picture over the storyline would be dropped: say so
            raise MediaError(f"<{above.tag} {above.get('name')!r}> is connected above clip "
                             f"{name!r} (lane {above.get('lane')}): the conform renders the "
                             "primary storyline only; flatten the edit first", source=path)
        a_start = frames(asset, "start") if asset.get("start") else Fraction(0)
        a_len = frames(asset, "duration") if asset.get("duration") else None
        start = frames(el, "start") if el.get("start") else a_start
        clip = _clip(name, p, start - a_start, duration, rate,
                     int(a_len) if a_len is not None else None)
        for m in el.findall("marker"):
            clip.markers.append(otio.schema.Marker(
                name=m.get("value") or "", marked_range=_range(
                    frames(m, "start") - a_start, 0, rate)))
        track.append(clip)
    meta = fmt.get("width"), fmt.get("height")
    project = root.find(".//project")
    return _fill_size(_timeline(
        project.get("name", "") if project is not None else "", rate, int(t0),
        int(meta[0]) if meta[0] else None, int(meta[1]) if meta[1] else None, track))


# ------------------------------------------------------------------ AAF


def read_aaf(path: Path, media: Sequence[Path] = ()) -> otio.schema.Timeline:
    """An AAF's top-level composition, picture slot, as a timeline (see the module's
    docstring): Transitions overlap their neighbours, the cut ``CutPoint`` into them."""
    import aaf2

    finder = _Finder(path, media)
    try:
        f = aaf2.open(str(path), "r")
    except Exception as exc:  # noqa: BLE001 - anything pyaaf2 cannot open is a bad file
        raise MediaError(f"not an AAF file: {exc}", source=path) from None
    with f:
        comp = next(iter(f.content.toplevel()), None)
        if comp is None:
            raise MediaError("no top-level composition", source=path)
        slots = [s for s in comp.slots if type(s).__name__ == "TimelineMobSlot"]
        picture = next((s for s in slots if s.segment.media_kind == "Picture"), None)
        if picture is None:
            raise MediaError("no picture track", source=path)
        tc = next((s for s in slots if s.segment.media_kind == "Timecode"), None)
        rate = Fraction(str(picture.edit_rate))
        start = tc.segment.start if tc is not None else START_TIMECODE_HOURS * 3600 * round(rate)
        seg = picture.segment
        comps = list(seg.components) if type(seg).__name__ == "Sequence" else [seg]
        placed = []  # [kind, aaf start, length, component, cut in, cut out]
        pos = 0
        for c in comps:
            kind = type(c).__name__
            if kind == "Transition":
                pos -= c.length
                placed.append(["T", pos, c.length, c, None, None])
            else:
                placed.append([kind, pos, c.length, c, pos, pos + c.length])
                pos += c.length
        for k, item in enumerate(placed):
            if item[0] != "T":
                continue
            cut = item[1] + item[3]["CutPoint"].value
            if k:
                placed[k - 1][5] = cut
            if k + 1 < len(placed):
                placed[k + 1][4] = cut
        track = otio.schema.Track(picture.name or "V1", kind=otio.schema.TrackKind.Video)
        for k, (kind, a0, length, c, cin, cout) in enumerate(placed):
            if kind == "T":
                cut = a0 + c["CutPoint"].value
                track.append(otio.schema.Transition(
                    name="Cross Dissolve",
                    transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                    in_offset=_rt(cut - a0, rate), out_offset=_rt(a0 + length - cut, rate)))
                continue
            if kind == "Filler":
                track.append(otio.schema.Gap(source_range=_range(0, cout - cin, rate)))
                continue
            if kind == "OperationGroup" and c.operation is not None and \
                    c.operation["IsTimeWarp"].value:
                raise MediaError(f"segment {k} ({c.operation.name}) is a speed change; render "
                                 "it into the media first", source=path, where=f"segment {k}")
            if kind != "SourceClip":
                raise MediaError(f"segment {k} is a {kind}: only clips, fillers and "
                                 "transitions are conformed", source=path)
            master = c.mob
            name = master.name if master is not None else f"segment {k}"
            file_mob, url = _file_of(master)
            p = finder.find(url, Path(url).stem if url else None, name)
            if p is None:
                raise MediaError(f"no media for clip {name!r} ({url or 'no locator'})",
                                 source=path, where=f"clip {name}")
            master_slot = master.slot_at(c.slot_id) if master is not None else None
            if master_slot is not None and Fraction(str(master_slot.edit_rate)) != rate:
                raise MediaError(f"clip {name!r} counts at {master_slot.edit_rate} fps in a "
                                 f"{rate} fps composition", source=path, where=f"clip {name}")
            media_frames = master_slot.segment.length if master_slot is not None else None
            clip = _clip(name, p, c.start + (cin - a0), cout - cin, rate, media_frames)
            track.append(clip)
        tl = _timeline(comp.name, rate, start, None, None, track)
        for slot in comp.slots:
            if type(slot).__name__ != "EventMobSlot":
                continue
            for m in slot.segment.components:
                pos = m["Position"].value
                host = next((cl for cl in tl.tracks[0] if isinstance(cl, otio.schema.Clip)
                             and cl.range_in_parent().start_time.value <= pos
                             < cl.range_in_parent().end_time_exclusive().value), None)
                if host is not None:
                    offset = pos - host.range_in_parent().start_time.value
                    host.markers.append(otio.schema.Marker(
                        name=m["Comment"].value or "", marked_range=_range(
                            Fraction(host.source_range.start_time.value) + Fraction(offset), 0,
                            rate)))
    return _fill_size(tl)


def _file_of(master) -> tuple[object, str | None]:
    """The file SourceMob under a MasterMob, and its locator's URL."""
    try:
        mob = master.slots[0].segment.mob
        desc = mob.descriptor
        locators = desc["Locator"] if "Locator" in desc.keys() else []
        return mob, (locators[0]["URLString"].value if len(locators) else None)
    except Exception:  # noqa: BLE001 - a master without a file: no locator
        return None, None


# ------------------------------------------------------------------ dispatch


def _read_otio(path: Path, media: Sequence[Path] = ()) -> otio.schema.Timeline:
    try:
        result = otio.adapters.read_from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any adapter failure is a bad file
        raise MediaError(f"cannot read timeline: {exc}", source=path) from None
    if isinstance(result, otio.schema.SerializableCollection):
        result = next(iter(result))
    if media:
        finder = _Finder(path, media)
        for clip in result.find_clips():
            ref = clip.media_reference
            if isinstance(ref, otio.schema.ExternalReference) and \
                    not url_to_path(ref.target_url, path.parent).exists():
                p = finder.find(ref.target_url, clip.name)
                if p is not None:
                    ref.target_url = str(p)
    return result


def _read_fcp7(path: Path, media: Sequence[Path] = ()) -> otio.schema.Timeline:
    tl = _read_otio(path, media)
    root = ET.parse(path).getroot()
    seq = root.find(".//sequence")
    meta = tl.metadata.setdefault(NAMESPACE, {})
    if seq is not None:
        base = int(seq.findtext("rate/timebase") or 0)
        if base:
            ntsc = (seq.findtext("rate/ntsc") or "").upper() == "TRUE"
            rate = Fraction(base * 1000, 1001) if ntsc else Fraction(base)
            meta["rate"] = f"{rate.numerator}/{rate.denominator}"
        w = seq.findtext("media/video/format/samplecharacteristics/width")
        h = seq.findtext("media/video/format/samplecharacteristics/height")
        if w and h:
            meta["width"], meta["height"] = int(w), int(h)
    return _fill_size(tl)


READERS = {".otio": _read_otio, ".otioz": _read_otio, ".xml": _read_fcp7,
           ".fcpxml": read_fcpxml, ".edl": read_edl, ".aaf": read_aaf}


def read_timeline(path: str | Path, *, media: Sequence[Path] = (),
                  rate: Fraction | None = None) -> otio.schema.Timeline:
    """Read a timeline file by its extension (see :data:`READERS`)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError("no such timeline", source=path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise MediaError(f"cannot read {path.suffix or 'a file without extension'}: expected "
                         f"one of {', '.join(READERS)}", source=path)
    if reader is read_edl:
        return read_edl(path, media, rate)
    return reader(path, media)
