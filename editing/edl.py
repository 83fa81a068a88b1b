"""CMX 3600 edit decision lists: written from the edit in frames, and read back for a conform.

The layout is CMX 3600's fixed columns, as every EDL reader expects them::

    001  1A       V     C        00:00:00:06 00:00:03:06 01:00:00:00 01:00:03:00
    002  1A       V     C        00:00:03:06 00:00:03:06 01:00:03:00 01:00:03:00
    002  2        V     D    024 00:00:00:00 00:00:04:00 01:00:03:00 01:00:07:00

event number (3), two spaces, reel (8), space, channels (4), two spaces, transition
(4), space, its duration (3), then source in, source out, record in, record out.
A dissolve is an event of two lines: the outgoing source held at the dissolve's
start (a zero-length cut), then the incoming source with ``D`` and the length. It
starts at the incoming event's record in, so a dissolve centred on a cut is written
starting ``before`` frames earlier, the incoming clip from its head handle: the
same pictures, frame for frame. A fade is a dissolve from or to black (reel ``BL``).
Record timecode starts at the timeline's start (01:00:00:00), non-drop-frame
(``FCM: NON-DROP FRAME``). Markers are ``* LOC:`` remarks at record timecode. Clip
names and media paths ride along as ``* FROM CLIP NAME:`` / ``* TO CLIP NAME:`` and
``* SOURCE FILE:`` remarks; an EDL has no frame rate, which the conform takes from
the media. Picture only: sound travels as AAF or XML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

from aiprod_post.errors import MediaError

from .interchange import Edit, Event, Marker, timecode

__all__ = ["write_edl", "EdlEvent", "parse_edl", "reel_name", "EVENT_LINE"]

# the standard form, for readers and checks: event, reel, channels, transition, its
# duration, source in/out, record in/out (CMX 3600 columns, 8-character reels)
EVENT_LINE = re.compile(
    r"^(?P<num>\d{3,6})  (?P<reel>.{8}) (?P<chan>.{4})  (?P<trans>.{4}) (?P<dur>[ \d]{3}) "
    r"(?P<si>\d\d:\d\d:\d\d[:;]\d\d) (?P<so>\d\d:\d\d:\d\d[:;]\d\d) "
    r"(?P<ri>\d\d:\d\d:\d\d[:;]\d\d) (?P<ro>\d\d:\d\d:\d\d[:;]\d\d)\s*$")
_LOOSE = re.compile(
    r"^(?P<num>\d+)\s+(?P<reel>\S+)\s+(?P<chan>V|A|A2|AA|B|AA/V|A/V|NONE|A\d?/V)\s+"
    r"(?P<trans>C|D|W\d{3}|K[BO]?)\s+(?P<dur>\d{0,3})\s*"
    r"(?P<si>\d\d:\d\d:\d\d[:;.]\d\d)\s+(?P<so>\d\d:\d\d:\d\d[:;.]\d\d)\s+"
    r"(?P<ri>\d\d:\d\d:\d\d[:;.]\d\d)\s+(?P<ro>\d\d:\d\d:\d\d[:;.]\d\d)\s*$")


def reel_name(name: str) -> str:
    """Eight characters of letters, digits and underscores, as CMX 3600 reels are.

    >>> reel_name("1A"), reel_name("line 3.4 NELL"), reel_name("Café")
    ('1A', 'LINE_3_4', 'CAF')
    """
    reel = re.sub(r"[^A-Z0-9_]", "", re.sub(r"[\s.\-]+", "_", name.upper()))
    return (reel or "AX")[:8]


@dataclass
class _Seg:
    reel: str
    rec_in: int
    rec_out: int
    src_in: int
    name: str = ""
    path: Path | None = None
    dissolve: int = 0  # frames of dissolve from the previous segment at rec_in
    markers: list[Marker] = field(default_factory=list)
    cdl: dict | None = None  # the clip's ASC CDL (slope, offset, power, sat), if graded

    @property
    def black(self) -> bool:
        return self.reel == "BL"


def _segments(edit: Edit) -> list[_Seg]:
    """The picture track as EDL segments: clips and black, each dissolve starting at
    its incoming segment's record in."""
    track = edit.video[0]
    fades = track.fades
    reels: dict[Path | str, str] = {}
    segs: list[_Seg] = []

    def reel_for(ev: Event) -> str:
        key = ev.path or ev.name
        if key not in reels:
            base = reel_name(ev.path.stem if ev.path else ev.name)
            reel, n = base, 1
            while reel in reels.values() or reel == "BL":
                n += 1
                reel = f"{base[:8 - len(str(n))]}{n}"
            reels[key] = reel
        return reels[key]

    def black_until(end: int, dissolve: int = 0) -> None:
        at = segs[-1].rec_out if segs else 0
        if end > at:
            segs.append(_Seg("BL", at, end, 0, dissolve=dissolve))

    for i, ev in enumerate(track.events):
        prev = track.events[i - 1] if i else None
        fin = next((fd for fd in fades if fd.cut == ev.record_in
                    and (fd.from_black or not fd.to_black)), None)
        joined = fin is not None and not fin.from_black and prev is not None \
            and prev.record_out == ev.record_in
        start = ev.record_in - (fin.before if fin is not None else 0)
        if fin is not None and not joined:
            # from black: black (if any) up to the fade, then a dissolve out of it
            black_until(start)
            if not segs or not segs[-1].black:
                segs.append(_Seg("BL", start, start, 0))
        elif not joined:
            black_until(ev.record_in)
        # a dissolve starts early: the incoming clip from its head handle
        seg = _Seg(reel_for(ev), start, ev.record_out, ev.source_in - (ev.record_in - start),
                   ev.name, ev.path, dissolve=fin.length if fin is not None else 0)
        if segs and segs[-1].rec_out > start:  # the outgoing clip stops where this starts
            segs[-1].rec_out = start
        seg.markers = list(ev.markers)
        seg.cdl = ev.metadata.get("cdl")
        segs.append(seg)
        fout = next((fd for fd in fades if fd.cut == ev.record_out and fd.to_black
                     and not fd.from_black), None)
        if fout is not None:
            seg.rec_out = fout.start
            nxt = track.events[i + 1].record_in if i + 1 < len(track.events) else max(
                edit.duration, ev.record_out + fout.after)
            segs.append(_Seg("BL", fout.start, max(nxt, fout.start + fout.length), 0,
                             dissolve=fout.length))
    black_until(edit.duration)
    for m in track.markers:
        host = next((s for s in segs if s.rec_in <= m.record < s.rec_out), segs[-1] if segs
                    else None)
        if host is not None:
            host.markers.append(m)
    return segs


def write_edl(edit: Edit, media_path: Callable[[Path], str]) -> str:
    """The picture track of ``edit`` as a CMX 3600 EDL (text)."""
    if not edit.video or not edit.video[0].events:
        raise MediaError("the timeline has no picture to write as an EDL")
    rate, s0 = edit.rate, edit.start

    def tc(frame: int) -> str:
        return timecode(frame, rate)

    lines = [f"TITLE: {edit.name[:70]}", "FCM: NON-DROP FRAME"]
    segs = _segments(edit)
    number = 0
    for k, seg in enumerate(segs):
        if seg.rec_out <= seg.rec_in:
            continue  # a black start a dissolve comes out of: written with that dissolve
        number += 1
        if number > 999:
            raise MediaError("more than 999 events: CMX 3600 cannot number them")
        src_out = seg.src_in + (seg.rec_out - seg.rec_in)
        if seg.dissolve:
            if seg.dissolve > 999:
                raise MediaError(f"a {seg.dissolve}-frame dissolve into {seg.name or 'black'} "
                                 "is longer than CMX 3600's 999 frames")
            prev = segs[k - 1] if k else _Seg("BL", seg.rec_in, seg.rec_in, 0)
            held = prev.src_in + (seg.rec_in - prev.rec_in)
            lines.append(_line(number, prev.reel, "C", None, tc(held), tc(held),
                               tc(s0 + seg.rec_in), tc(s0 + seg.rec_in)))
            lines.append(_line(number, seg.reel, "D", seg.dissolve, tc(seg.src_in),
                               tc(src_out), tc(s0 + seg.rec_in), tc(s0 + seg.rec_out)))
            if not prev.black:
                lines.append(f"* FROM CLIP NAME: {prev.name}")
            if not seg.black:
                lines.append(f"* TO CLIP NAME: {seg.name}")
        else:
            lines.append(_line(number, seg.reel, "C", None, tc(seg.src_in), tc(src_out),
                               tc(s0 + seg.rec_in), tc(s0 + seg.rec_out)))
            if not seg.black:
                lines.append(f"* FROM CLIP NAME: {seg.name}")
        if seg.path is not None:
            lines.append(f"* SOURCE FILE: {media_path(seg.path)}")
        if seg.cdl and not seg.black:
            lines += asc_cdl_remarks(seg.cdl)
        for m in seg.markers:
            colour = (m.colour or "BLUE").upper()
            lines.append(f"* LOC: {tc(s0 + m.record)} {colour:<7} {m.name}")
    return "\r\n".join(lines) + "\r\n"


def asc_cdl_remarks(cdl: dict) -> list[str]:
    """The ASC CDL of an event as the remarks colourists' tools exchange in an EDL:
    ``*ASC_SOP (slope)(offset)(power)`` and ``*ASC_SAT sat``, per the ASC CDL v1.2 EDL form.

    >>> asc_cdl_remarks({"slope": [1.2, 1, 0.9], "offset": [0, 0.01, -0.02],
    ...                  "power": [1, 1, 1.1], "sat": 0.8})
    ['*ASC_SOP (1.2000 1.0000 0.9000)(0.0000 0.0100 -0.0200)(1.0000 1.0000 1.1000)', '*ASC_SAT 0.8000']
    """
    def three(v) -> str:
        return "(" + " ".join(f"{float(x):.4f}" for x in v) + ")"

    return [f"*ASC_SOP {three(cdl['slope'])}{three(cdl['offset'])}{three(cdl['power'])}",
            f"*ASC_SAT {float(cdl['sat']):.4f}"]


_NUM = r"\s*(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"
_SOP = re.compile(r"^ASC_SOP\s*" + r"\s*".join([r"\(" + _NUM * 3 + r"\s*\)"] * 3) + r"\s*$",
                  re.I)
_SAT = re.compile(r"^ASC_SAT" + _NUM + r"\s*$", re.I)


def _line(n: int, reel: str, trans: str, dur: int | None, si: str, so: str, ri: str,
          ro: str, chan: str = "V") -> str:
    d = f"{dur:03d}" if dur is not None else "   "
    return f"{n:03d}  {reel:<8} {chan:<4}  {trans:<4} {d} {si} {so} {ri} {ro}"


# ------------------------------------------------------------------ reading


@dataclass
class EdlEvent:
    number: int
    reel: str
    channels: str
    transition: str
    duration: int
    source_in: int
    source_out: int
    record_in: int
    record_out: int
    line: int
    clip_name: str | None = None
    to_clip_name: str | None = None
    source_file: str | None = None
    markers: list[tuple[int, str]] = field(default_factory=list)
    cdl: dict | None = None  # from *ASC_SOP / *ASC_SAT remarks (a colourist's grade)


def _frames(tc: str, fps: int, line: int, source: Path) -> int:
    hh, mm, ss, ff = (int(x) for x in re.split(r"[:;.]", tc))
    if mm > 59 or ss > 59 or ff >= fps:
        raise MediaError(f"timecode {tc} is not valid at {fps} fps", source=source, line=line)
    return ((hh * 60 + mm) * 60 + ss) * fps + ff


def parse_edl(path: Path, rate: Fraction) -> tuple[str, list[EdlEvent]]:
    """The events of a CMX 3600 EDL (any tool's: columns read strictly, then loosely),
    times in frames at ``rate``. Returns the title and the events in order."""
    fps = round(rate)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise MediaError(f"cannot read the EDL: {exc.strerror or exc}", source=path) from None
    title = ""
    events: list[EdlEvent] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not line.strip():
            continue
        if line.startswith("TITLE:"):
            title = line[6:].strip()
            continue
        if line.startswith("FCM:"):
            if "NON" not in line.upper() and "DROP" in line.upper():
                raise MediaError("drop-frame timecode is not supported: export the EDL "
                                 "non-drop-frame", source=path, line=n)
            continue
        m = EVENT_LINE.match(line) or _LOOSE.match(line)
        if m:
            dur = (m.group("dur") or "").strip()
            events.append(EdlEvent(
                int(m.group("num")), m.group("reel").strip(), m.group("chan").strip(),
                m.group("trans").strip(), int(dur) if dur else 0,
                _frames(m.group("si"), fps, n, path), _frames(m.group("so"), fps, n, path),
                _frames(m.group("ri"), fps, n, path), _frames(m.group("ro"), fps, n, path), n))
            continue
        if line.startswith("*") and events:
            remark = line[1:].strip()
            upper = remark.upper()
            if upper.startswith("FROM CLIP NAME:"):
                events[-1].clip_name = remark[15:].strip()
            elif upper.startswith("TO CLIP NAME:"):
                events[-1].to_clip_name = remark[13:].strip()
            elif upper.startswith("SOURCE FILE:"):
                events[-1].source_file = remark[12:].strip()
            elif upper.startswith(("ASC_SOP", "ASC_SAT")):
                sop, sat = _SOP.match(remark), _SAT.match(remark)
                if not (sop or sat):
                    raise MediaError(f"expected *ASC_SOP (s s s)(o o o)(p p p) or *ASC_SAT s, "
                                     f"got {line.strip()!r}", source=path, line=n)
                cdl = events[-1].cdl or {"slope": [1.0] * 3, "offset": [0.0] * 3,
                                         "power": [1.0] * 3, "sat": 1.0}
                if sop:
                    v = [float(x) for x in sop.groups()]
                    cdl.update(slope=v[0:3], offset=v[3:6], power=v[6:9])
                else:
                    cdl["sat"] = float(sat.group(1))
                events[-1].cdl = cdl
            elif upper.startswith("LOC:"):
                parts = remark[4:].split(None, 2)
                if parts:
                    events[-1].markers.append((_frames(parts[0], fps, n, path),
                                               parts[2] if len(parts) > 2 else ""))
            continue
        if re.match(r"^\d+\s", line):
            raise MediaError(f"event line does not follow CMX 3600's columns: {line.strip()!r}",
                             source=path, line=n)
    return title, events
