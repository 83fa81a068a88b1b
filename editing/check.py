"""Check a timeline file the way the application that opens it would.

* FCPXML: the element and attribute rules of its version, written here from Apple's
  published format reference (not Apple's DTD, which is not ours to ship): known
  elements and attributes only, required attributes present, every ``ref`` naming a
  resource, times as rational seconds on whole frames of the sequence, formats with a
  size, assets with a ``media-rep``, sound assets with channels and rate, a clip's
  connected clips before its markers, spine items end to end, transitions inside the
  spine beside the items they join, clips within their asset's media, markers inside
  their clip and at least a frame long. ``dtd`` also validates against a DTD the user
  has (through lxml, when installed).
* EDL: CMX 3600 columns, timecodes valid at the rate, each line's source length equal
  to its record length, events in record order without overlaps, dissolves written as
  two-line events.
* AAF: each top-level slot's Sequence length equal to what its components add up to
  (transitions overlapping their neighbours), transitions between two segments and no
  longer than either, clips inside the media they reference, descriptors present.
* FCP 7 XML: each clip item's ``end - start`` equal to its ``out - in``.
* every format: the media it names exist.

Each check returns a list of problems, each naming where it is; an empty list is a pass.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

from aiprod_post.errors import MediaError

from .timeline import url_to_path

__all__ = ["check_timeline_file", "check_fcpxml", "check_edl", "check_aaf", "check_fcp7"]

_TIME = re.compile(r"^(-?\d+)(?:/(\d+))?s$")

# FCPXML 1.8-1.11 elements this project writes or reads, with the attributes each
# may carry (from the FCPXML reference's element pages) and those it must carry.
_FCPXML_ATTRS: dict[str, tuple[set[str], set[str]]] = {
    "fcpxml": ({"version"}, {"version"}),
    "resources": (set(), set()),
    "format": ({"id", "name", "frameDuration", "fieldOrder", "width", "height", "paspH",
                "paspV", "colorSpace", "projection", "stereoscopic", "heroEye"}, {"id"}),
    "asset": ({"id", "name", "uid", "start", "duration", "hasVideo", "format",
               "videoSources", "hasAudio", "audioSources", "audioChannels", "audioRate",
               "customLUTOverride", "colorSpaceOverride", "projectionOverride",
               "stereoscopicOverride", "heroEye", "auxVideoFlags"}, {"id"}),
    "media-rep": ({"kind", "sig", "src", "suggestedFilename"}, {"src"}),
    "effect": ({"id", "name", "uid", "src"}, {"id", "uid"}),
    "library": ({"location", "colorProcessing"}, set()),
    "event": ({"name", "uid"}, set()),
    "project": ({"name", "uid", "id", "modDate"}, set()),
    "sequence": ({"format", "duration", "tcStart", "tcFormat", "audioLayout", "audioRate",
                  "renderFormat", "note", "keywords"}, {"format"}),
    "spine": ({"name", "offset", "format", "lane"}, set()),
    "asset-clip": ({"ref", "lane", "offset", "name", "start", "duration", "enabled",
                    "format", "tcStart", "tcFormat", "audioStart", "audioDuration",
                    "modDate", "srcEnable", "audioRole", "videoRole"}, {"ref"}),
    "gap": ({"name", "offset", "start", "duration", "enabled"}, set()),
    "clip": ({"name", "lane", "offset", "start", "duration", "enabled", "format", "tcStart",
              "tcFormat", "audioStart", "audioDuration", "modDate"}, set()),
    "video": ({"ref", "lane", "offset", "name", "start", "duration", "enabled", "role",
               "srcID"}, {"ref"}),
    "audio": ({"ref", "lane", "offset", "name", "start", "duration", "enabled", "role",
               "srcID", "srcCh", "outCh"}, {"ref"}),
    "transition": ({"name", "offset", "duration"}, {"duration"}),
    "filter-video": ({"ref", "name", "enabled"}, {"ref"}),
    "filter-audio": ({"ref", "name", "enabled", "presetID"}, {"ref"}),
    "marker": ({"start", "duration", "value", "completed", "note"}, {"start", "value"}),
    "chapter-marker": ({"start", "duration", "value", "note", "posterOffset"},
                       {"start", "value"}),
    "note": (set(), set()),
    "metadata": (set(), set()),
    "md": ({"key", "value", "editable", "type", "displayName", "displayDescription",
            "source"}, {"key"}),
    "import-options": (set(), set()),
    "option": ({"key", "value"}, {"key", "value"}),
}
_STORY = {"asset-clip", "gap", "clip", "title", "ref-clip", "sync-clip", "mc-clip",
          "audition", "video", "audio"}
_TIME_ATTRS = {"offset", "start", "duration", "tcStart", "frameDuration", "audioStart",
               "audioDuration"}


def _seconds(value: str) -> Fraction | None:
    m = _TIME.match(value or "")
    if not m:
        return None
    return Fraction(int(m.group(1)), int(m.group(2) or 1))


def _xml_root(path: Path, tag: str, problems: list[str]) -> ET.Element | None:
    """The document's root element if it is ``tag``; else None, with the reason added."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        problems.append(f"{path}: not well-formed XML: {exc}")
        return None
    if root.tag != tag:
        problems.append(f"{path}: the root element is <{root.tag}>, expected <{tag}>")
        return None
    return root


def check_fcpxml(path: Path, *, dtd: Path | None = None, media: bool = True) -> list[str]:
    """Problems an FCPXML importer would meet in ``path`` (see the module's docstring)."""
    problems: list[str] = []
    root = _xml_root(path, "fcpxml", problems)
    if root is None:
        return problems
    version = root.get("version", "")
    if not re.fullmatch(r"1\.(\d+)", version) or not 8 <= int(version.split(".")[1]) <= 13:
        problems.append(f"<fcpxml version={version!r}>: these checks know versions 1.8 to 1.13")
    minor = int(version.split(".")[1]) if re.fullmatch(r"1\.\d+", version) else 10
    ids: dict[str, ET.Element] = {}
    for el in root.iter():
        where = f"<{el.tag}{' ' + repr(el.get('name')) if el.get('name') else ''}>"
        rules = _FCPXML_ATTRS.get(el.tag)
        if el.tag == "asset" and minor < 9:  # before 1.9 an asset named its file itself
            rules = (rules[0] | {"src"}, rules[1])
        if rules is None:
            problems.append(f"{where}: element not in the FCPXML reference (or not checked)")
            continue
        allowed, required = rules
        for attr in el.attrib:
            if attr not in allowed:
                problems.append(f"{where}: attribute {attr!r} is not one of <{el.tag}>'s")
        for attr in required - set(el.attrib):
            problems.append(f"{where}: required attribute {attr!r} is missing")
        for attr in _TIME_ATTRS & set(el.attrib):
            if _seconds(el.get(attr)) is None:
                problems.append(f"{where}: {attr}={el.get(attr)!r} is not a time "
                                "(rational seconds such as '1001/24000s')")
        if el.get("id"):
            if el.get("id") in ids:
                problems.append(f"{where}: id {el.get('id')!r} is used twice")
            ids[el.get("id")] = el
    for el in root.iter():
        for attr in ("ref", "format"):
            if el.get(attr) and el.get(attr) not in ids:
                problems.append(f"<{el.tag} {el.get('name')!r}>: {attr}={el.get(attr)!r} names "
                                "no resource")
    for fmt in root.iter("format"):
        if not (fmt.get("width") and fmt.get("height") and fmt.get("frameDuration")):
            problems.append(f"<format id={fmt.get('id')!r}>: frameDuration, width and height "
                            "are needed for a sequence or picture format")
    for asset in root.iter("asset"):
        where = f"<asset {asset.get('name')!r}>"
        reps = asset.findall("media-rep")
        if asset.get("src"):
            reps.append(ET.Element("media-rep", src=asset.get("src")))
        if not reps:
            problems.append(f"{where}: no <media-rep> naming its file")
        if asset.get("hasVideo") == "1" and not asset.get("format"):
            problems.append(f"{where}: picture without a format")
        if asset.get("hasAudio") == "1" and not (asset.get("audioChannels")
                                                  and asset.get("audioRate")):
            problems.append(f"{where}: sound without audioChannels and audioRate")
        if asset.get("hasVideo") != "1" and asset.get("format"):
            fmt = ids.get(asset.get("format"))
            if fmt is not None and fmt.get("width"):
                problems.append(f"{where}: a sound-only asset carries the video format "
                                f"{asset.get('format')!r}")
        if media:
            for rep in reps:
                p = url_to_path(rep.get("src", ""), path.parent)
                if not p.exists():
                    problems.append(f"{where}: media {p} does not exist")
    for sequence in root.iter("sequence"):
        problems += _check_sequence(sequence, ids)
    if dtd is not None:
        problems += _check_dtd(path, dtd)
    return problems


def _check_sequence(sequence: ET.Element, ids: dict[str, ET.Element]) -> list[str]:
    problems: list[str] = []
    fmt = ids.get(sequence.get("format", ""))
    frame = _seconds(fmt.get("frameDuration", "")) if fmt is not None else None
    if frame is None:
        return ["<sequence>: its format has no frameDuration"]
    if sequence.get("tcStart") is None:
        problems.append("<sequence>: no tcStart (the timeline's start timecode)")
    t0 = _seconds(sequence.get("tcStart", "0s")) or Fraction(0)

    def frames(el: ET.Element, attr: str, default: str = "0s") -> Fraction:
        value = _seconds(el.get(attr, default)) or Fraction(0)
        f = value / frame
        if f.denominator != 1:
            problems.append(f"<{el.tag} {el.get('name')!r}>: {attr}={el.get(attr)!r} is not "
                            "on a frame boundary")
        return f

    spine = sequence.find("spine")
    if spine is None:
        return problems + ["<sequence>: no primary storyline (<spine>)"]
    items = list(spine)
    at = None
    for i, el in enumerate(items):
        where = f"<{el.tag} {el.get('name')!r}>"
        if el.tag == "transition":
            start, length = frames(el, "offset"), frames(el, "duration")
            prev = items[i - 1] if i else None
            nxt = items[i + 1] if i + 1 < len(items) else None
            if prev is not None and prev.tag == "transition" or \
                    nxt is not None and nxt.tag == "transition":
                problems.append(f"{where}: two transitions side by side")
            lo = frames(prev, "offset") if prev is not None else start
            hi = (frames(nxt, "offset") + frames(nxt, "duration")) if nxt is not None \
                else start + length
            if start < lo or start + length > hi:
                problems.append(f"{where}: reaches outside the items it joins")
            continue
        if el.tag not in _STORY:
            problems.append(f"{where}: not a story element a spine may hold")
            continue
        offset = frames(el, "offset")
        if at is not None and offset != at:
            problems.append(f"{where}: starts at frame {offset - t0 / frame} of the "
                            f"sequence, the item before it ends at {at - t0 / frame}")
        duration = frames(el, "duration")
        at = offset + duration
        problems += _check_clip(el, ids, frames, frame)
    total = frames(sequence, "duration")
    if at is not None and at - t0 / frame != total:
        problems.append(f"<sequence>: duration {total} frames, its spine runs "
                        f"{at - t0 / frame}")
    return problems


def _check_clip(el: ET.Element, ids: dict[str, ET.Element], frames, frame: Fraction
                ) -> list[str]:
    problems: list[str] = []
    where = f"<{el.tag} {el.get('name')!r}>"
    start, duration = frames(el, "start"), frames(el, "duration")
    if el.tag == "spine":
        start, duration = Fraction(-10**12), Fraction(10**13)  # a storyline: no extent
    elif duration <= 0:
        problems.append(f"{where}: duration must be positive")
    asset = ids.get(el.get("ref", ""))
    if el.tag == "asset-clip" and asset is not None and asset.get("duration"):
        a0 = (_seconds(asset.get("start", "0s")) or Fraction(0)) / frame
        a1 = a0 + (_seconds(asset.get("duration")) or Fraction(0)) / frame
        if start < a0 or start + duration > a1:
            problems.append(f"{where}: uses frames {start}..{start + duration} of "
                            f"{asset.get('name')!r}, which has {a0}..{a1}")
    seen_marker = False
    for child in el:
        if child.tag in ("marker", "chapter-marker"):
            seen_marker = True
            m0, mlen = frames(child, "start"), frames(child, "duration", "0s")
            if mlen < 1:
                problems.append(f"<marker {child.get('value')!r}>: shorter than a frame")
            if not start <= m0 < start + duration:
                problems.append(f"<marker {child.get('value')!r}>: outside its clip {where}")
        elif child.tag in _STORY or child.tag == "spine":
            if seen_marker:
                problems.append(f"{where}: connected clip {child.get('name')!r} after a marker "
                                "(connected clips come first)")
            lane = child.get("lane")
            own = (el.tag == "clip" and lane is None) \
                or el.tag == "spine"  # a clip's own content; a storyline's items in turn
            if not own and (lane is None or not re.fullmatch(r"-?[1-9]\d*", lane)):
                problems.append(f"<{child.tag} {child.get('name')!r}>: a connected clip needs "
                                "a non-zero lane")
            problems += _check_clip(child, ids, frames, frame)
    return problems


def _check_dtd(path: Path, dtd: Path) -> list[str]:
    try:
        from lxml import etree
    except ImportError:
        raise MediaError("--dtd needs lxml (pip install lxml)", source=dtd) from None
    try:
        schema = etree.DTD(str(dtd))
    except (etree.DTDParseError, OSError) as exc:
        raise MediaError(f"cannot read the DTD: {exc}", source=dtd) from None
    doc = etree.parse(str(path))
    if schema.validate(doc):
        return []
    return [f"DTD {dtd.name}: line {e.line}: {e.message}" for e in schema.error_log]


# ------------------------------------------------------------------ EDL


def check_edl(path: Path, rate: Fraction = Fraction(24), *, media: bool = True) -> list[str]:
    """CMX 3600 columns and record/source consistency (see the module's docstring)."""
    from .edl import EVENT_LINE, parse_edl

    problems: list[str] = []
    text = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    if not any(ln.startswith("FCM:") for ln in text[:3]):
        problems.append(f"{path}: no FCM: line (NON-DROP FRAME or DROP FRAME) after the title")
    for n, line in enumerate(text, start=1):
        if re.match(r"^\d+\s", line) and not EVENT_LINE.match(line.rstrip("\r")):
            problems.append(f"{path}:{n}: event line not in CMX 3600 columns")
    try:
        _title, events = parse_edl(path, rate)
    except MediaError as exc:
        return problems + [str(exc)]
    last_out = None
    for k, ev in enumerate(events):
        here = f"{path}:{ev.line}"
        if ev.source_out - ev.source_in != ev.record_out - ev.record_in:
            problems.append(f"{here}: source runs {ev.source_out - ev.source_in} frames, record "
                            f"{ev.record_out - ev.record_in}")
        if ev.record_out < ev.record_in:
            problems.append(f"{here}: record out before record in")
        nxt = events[k + 1] if k + 1 < len(events) else None
        pair = nxt is not None and nxt.number == ev.number
        if ev.transition.startswith(("D", "W")):
            prev = events[k - 1] if k else None
            if prev is None or prev.number != ev.number:
                problems.append(f"{here}: a dissolve without the outgoing source on the line "
                                "before it")
            if not ev.duration:
                problems.append(f"{here}: a dissolve without its length")
        if pair:
            continue  # the outgoing half of a dissolve: held, zero length
        if last_out is not None and ev.record_in < last_out and "V" in ev.channels:
            problems.append(f"{here}: record in {ev.record_in} overlaps the event before "
                            f"(out {last_out})")
        last_out = ev.record_out if "V" in ev.channels else last_out
        if media and ev.source_file and not url_to_path(ev.source_file, path.parent).exists():
            problems.append(f"{here}: media {ev.source_file} does not exist")
    return problems


# ------------------------------------------------------------------ AAF


def check_aaf(path: Path, *, media: bool = True) -> list[str]:
    """Structure and lengths of an AAF's top-level composition (see the module's docstring)."""
    import aaf2

    problems: list[str] = []
    try:
        f = aaf2.open(str(path), "r")
    except Exception as exc:  # noqa: BLE001 - any failure to open is a bad file
        return [f"{path}: not an AAF file pyaaf2 opens: {exc}"]
    with f:
        tops = list(f.content.toplevel())
        if not tops:
            return [f"{path}: no top-level composition"]
        comp = tops[0]
        for slot in comp.slots:
            if type(slot).__name__ != "TimelineMobSlot":
                continue
            seg = slot.segment
            where = f"{path}: slot {slot.slot_id} {slot.name!r}"
            if slot.get("PhysicalTrackNumber") is None or \
                    slot["PhysicalTrackNumber"].value is None:
                problems.append(f"{where}: no PhysicalTrackNumber")
            if type(seg).__name__ != "Sequence":
                continue
            comps = list(seg.components)
            total = 0
            for i, c in enumerate(comps):
                kind = type(c).__name__
                if kind == "Transition":
                    before = comps[i - 1] if i else None
                    after = comps[i + 1] if i + 1 < len(comps) else None
                    if before is None or after is None or "Transition" in (
                            type(before).__name__, type(after).__name__):
                        problems.append(f"{where}: transition {i} is not between two segments")
                    elif c.length > min(before.length, after.length):
                        problems.append(f"{where}: transition {i} ({c.length} frames) is longer "
                                        "than a segment it overlaps")
                    total -= c.length
                    continue
                total += c.length
                if kind == "SourceClip" and c.mob is not None:
                    ref = c.mob.slot_at(c.slot_id) if c.slot_id is not None else None
                    if ref is None:
                        problems.append(f"{where}: clip {i} names a slot its mob lacks")
                    elif c.start < 0 or c.start + c.length > ref.segment.length:
                        problems.append(f"{where}: clip {i} ({c.mob.name!r}) uses "
                                        f"{c.start}..{c.start + c.length} of "
                                        f"{ref.segment.length}")
                    problems += _check_master(c.mob, where, i, path, media)
                elif kind == "SourceClip":
                    problems.append(f"{where}: clip {i} refers to no mob")
            if seg.length != total:
                problems.append(f"{where}: Sequence Length {seg.length}, its components add "
                                f"up to {total}")
    return problems


def _check_master(mob, where: str, i: int, path: Path, media: bool) -> list[str]:
    problems = []
    try:
        file_mob = mob.slots[0].segment.mob
    except Exception:  # noqa: BLE001 - a master without a file source
        file_mob = None
    desc = getattr(file_mob, "descriptor", None) if file_mob is not None else None
    if desc is None:
        return [f"{where}: clip {i} ({mob.name!r}) has no essence descriptor"]
    keys = set(desc.keys())
    if type(desc).__name__ == "PCMDescriptor":
        for k in ("Channels", "QuantizationBits", "AudioSamplingRate", "Length"):
            if k not in keys:
                problems.append(f"{where}: clip {i} ({mob.name!r}) descriptor lacks {k}")
    if media and "Locator" in keys:
        for loc in desc["Locator"]:
            p = url_to_path(loc["URLString"].value, path.parent)
            if not p.exists():
                problems.append(f"{where}: clip {i} media {p} does not exist")
    return problems


# ------------------------------------------------------------------ FCP 7 XML and dispatch


def check_fcp7(path: Path, *, media: bool = True) -> list[str]:
    problems: list[str] = []
    root = _xml_root(path, "xmeml", problems)
    if root is None:
        return problems
    for item in root.iter("clipitem"):
        name = item.findtext("name")
        try:
            s, e, i, o = (int(item.findtext(t)) for t in ("start", "end", "in", "out"))
        except (TypeError, ValueError):
            problems.append(f"<clipitem {name!r}>: start, end, in and out must be frames")
            continue
        if s >= 0 and e >= 0 and e - s != o - i:
            problems.append(f"<clipitem {name!r}>: end-start {e - s} but out-in {o - i}")
    if media:
        for f in root.iter("file"):
            url = f.findtext("pathurl")
            if url and not url_to_path(url, path.parent).exists():
                problems.append(f"<file {f.findtext('name')!r}>: media {url_to_path(url)} "
                                "does not exist")
    return problems


def check_timeline_file(path: Path, *, dtd: Path | None = None, rate: Fraction | None = None,
                        media: bool = True) -> list[str]:
    """Check ``path`` by its kind (from its extension or content)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError("no such timeline", source=path)
    suffix = path.suffix.lower()
    if suffix == ".fcpxml":
        return check_fcpxml(path, dtd=dtd, media=media)
    if suffix == ".edl":
        return check_edl(path, rate or Fraction(24), media=media)
    if suffix == ".aaf":
        return check_aaf(path, media=media)
    if suffix == ".xml":
        return check_fcp7(path, media=media)
    if suffix == ".otio":
        from .export import read_timeline
        from .interchange import edit_of

        edit = edit_of(read_timeline(path), path.parent)
        return [f"{path}: clip {ev.name!r} media {ev.path} does not exist"
                for t in edit.tracks for ev in t.events
                if media and ev.path is not None and not ev.path.exists()]
    raise MediaError(f"cannot check {suffix or 'a file without extension'}: expected .fcpxml, "
                     ".edl, .aaf, .xml (FCP 7) or .otio", source=path)
