"""Timeline exports for the editor's tool of choice, through OpenTimelineIO's adapters.

=========  ==========================  ==============================================
format     adapter                     opens in
=========  ==========================  ==============================================
otio       otio_json (built in)        DaVinci Resolve 18.5+, OTIO tools
otioz      otioz (built in)            the same, media bundled in one zip
fcp7       fcp_xml (otio-fcp-adapter)  Adobe Premiere Pro, Resolve, Final Cut Pro 7
fcpxml     fcpx_xml                    Final Cut Pro, Resolve
edl        cmx_3600                    anything: CMX 3600 EDL (picture track only)
aaf        AAF (otio-aaf-adapter)      Avid Media Composer, Resolve, Pro Tools
=========  ==========================  ==============================================
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import opentimelineio as otio

from aiprod_post.errors import AiprodError, MediaError
from aiprod_post.files import atomic_path

from .timeline import url_to_path

__all__ = ["FORMATS", "export_timeline", "read_timeline"]

FORMATS: dict[str, tuple[str, str]] = {
    "otio": ("otio_json", ".otio"),
    "otioz": ("otioz", ".otioz"),
    "fcp7": ("fcp_xml", ".xml"),
    "fcpxml": ("fcpx_xml", ".fcpxml"),
    "edl": ("cmx_3600", ".edl"),
    "aaf": ("AAF", ".aaf"),
}


def read_timeline(path: str | Path) -> otio.schema.Timeline:
    path = Path(path)
    if not path.is_file():
        raise MediaError("no such timeline", source=path)
    try:
        result = otio.adapters.read_from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any adapter failure is a bad file
        raise MediaError(f"cannot read timeline: {exc}", source=path) from None
    if isinstance(result, otio.schema.SerializableCollection):
        result = next(iter(result))
    return result


def _picture_only(tl: otio.schema.Timeline) -> otio.schema.Timeline:
    out = copy.deepcopy(tl)
    for track in list(out.tracks):
        if track.kind != otio.schema.TrackKind.Video:
            out.tracks.remove(track)
    return out


def _without_fades(tl: otio.schema.Timeline) -> otio.schema.Timeline:
    """Fades from or to black (a transition with no clip on one side): EDL, FCP X and AAF
    cannot say that through their adapters, so those exports get a cut there."""
    out = copy.deepcopy(tl)
    for track in out.tracks:
        items = list(track)
        for index, item in enumerate(items):
            if not isinstance(item, otio.schema.Transition):
                continue
            edge = index == 0 or index == len(items) - 1
            to_black = not edge and not (isinstance(items[index - 1], otio.schema.Clip)
                                         and isinstance(items[index + 1], otio.schema.Clip))
            if edge or to_black:
                track.remove(item)
    return out


# AAF's standard video dissolve effect (AAF Object Specification, kAAFEffectVideoDissolve)
_AAF_DISSOLVE = {
    "PointList": [{"Time": 0.0, "Value": 0.0}, {"Time": 1.0, "Value": 1.0}],
    "OperationGroup": {"Operation": {
        "Identification": "0c3bea40-fc05-11d2-8a29-0050040ef7d2",
        "Name": "Video Dissolve", "Description": "Cross dissolve between two clips",
        "DataDefinition": {"Name": "Picture"}, "IsTimeWarp": False, "Bypass": 1,
        "NumberInputs": 2, "OperationCategory": "OperationCategory_Effect",
    }},
}


def _for_aaf(tl: otio.schema.Timeline) -> otio.schema.Timeline:
    """AAF wants every rate at the edit rate and its effect definitions on transitions."""
    out = copy.deepcopy(tl)
    rate = next(iter(out.find_clips())).duration().rate
    for clip in out.find_clips():
        ref = clip.media_reference
        if ref.available_range is not None and ref.available_range.duration.rate != rate:
            ar = ref.available_range
            ref.available_range = otio.opentime.TimeRange(ar.start_time.rescaled_to(rate),
                                                           ar.duration.rescaled_to(rate))
    for track in out.tracks:
        for item in track:
            if isinstance(item, otio.schema.Transition):
                meta = copy.deepcopy(_AAF_DISSOLVE)
                meta["CutPoint"] = int(item.in_offset.value)
                item.metadata["AAF"] = meta
    return out


def _add_aaf_markers(path: Path, tl: otio.schema.Timeline) -> int:
    """Write the timeline's clip and track markers into the AAF the adapter wrote (its
    writer drops them), the way Avid stores them: each picture slot gets a
    PhysicalTrackNumber, and an EventMobSlot on the same track number holds one
    DescriptiveMarker per marker at its record position, describing that slot.
    Returns the number of markers written."""
    import aaf2

    video = [t for t in tl.tracks if t.kind == otio.schema.TrackKind.Video]
    placed: list[list[tuple[int, int, str]]] = []
    for track in video:
        marks = []
        for item in [track, *track.find_clips(shallow_search=True)]:
            for m in item.markers:
                start = m.marked_range.start_time
                if item is not track:
                    start = item.transformed_time(start, track)
                marks.append((int(round(start.value)),
                              int(round(m.marked_range.duration.value)), m.name))
        placed.append(sorted(marks))
    if not any(placed):
        return 0
    written = 0
    with aaf2.open(str(path), "rw") as f:
        mob = next(f.content.toplevel())
        pictures = [s for s in mob.slots if isinstance(s, aaf2.mobslots.TimelineMobSlot)
                    and s.segment.media_kind == "Picture"]
        next_id = max(s.slot_id for s in mob.slots) + 1
        for number, (slot, marks) in enumerate(zip(pictures, placed), start=1):
            if slot.get("PhysicalTrackNumber") is None or slot["PhysicalTrackNumber"].value is None:
                slot["PhysicalTrackNumber"].value = number
            if not marks:
                continue
            events = f.create.EventMobSlot()
            events["SlotID"].value = next_id
            next_id += 1
            events["EditRate"].value = slot.edit_rate
            events["PhysicalTrackNumber"].value = slot["PhysicalTrackNumber"].value
            events["SlotName"].value = f"{slot.name} markers"
            seq = f.create.Sequence(media_kind="DescriptiveMetadata")
            for position, length, name in marks:
                marker = f.create.DescriptiveMarker()
                marker["Position"].value = position
                marker["Length"].value = length
                marker["Comment"].value = name  # AAF has one text per marker: the name
                marker["DescribedSlots"].value = {slot.slot_id}
                seq.components.append(marker)
                written += 1
            events.segment = seq
            mob.slots.append(events)
    return written


def _for_edl(tl: otio.schema.Timeline) -> otio.schema.Timeline:
    """An EDL dissolve starts at the B-side's record in: move each centred dissolve's
    start onto its own cut (the outgoing clip ends there, the incoming one starts there)."""
    out = copy.deepcopy(tl)
    for track in out.tracks:
        items = list(track)
        for i, item in enumerate(items):
            if not isinstance(item, otio.schema.Transition) or not 0 < i < len(items) - 1:
                continue
            a, b = items[i - 1], items[i + 1]
            before = item.in_offset
            if before.value:
                ar, br = a.source_range, b.source_range
                a.source_range = otio.opentime.TimeRange(ar.start_time, ar.duration - before)
                b.source_range = otio.opentime.TimeRange(br.start_time - before,
                                                         br.duration + before)
                item.out_offset = item.out_offset + before
                item.in_offset = otio.opentime.RationalTime(0, before.rate)
    return out


def _relative(tl: otio.schema.Timeline, base: Path) -> otio.schema.Timeline:
    import urllib.parse

    out = copy.deepcopy(tl)
    for clip in out.find_clips():
        ref = clip.media_reference
        if isinstance(ref, otio.schema.ExternalReference) and ref.target_url.startswith("file://"):
            p = url_to_path(ref.target_url)
            ref.target_url = urllib.parse.quote(os.path.relpath(p, base.resolve()))
    return out


def export_timeline(timeline: otio.schema.Timeline, fmt: str, output: str | Path, *,
                    relative: bool = False) -> Path:
    """Write ``timeline`` as ``fmt`` to ``output`` (atomically)."""
    if fmt not in FORMATS:
        raise AiprodError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}",
                          where="--format")
    adapter, _suffix = FORMATS[fmt]
    output = Path(output)
    if not output.parent.is_dir():
        raise MediaError("output folder does not exist", source=output.parent)
    tl = timeline
    if relative and fmt != "otioz":
        tl = _relative(tl, output.parent)
    if fmt == "edl":
        tl = _for_edl(_without_fades(_picture_only(tl)))
    elif fmt == "aaf":
        tl = _for_aaf(_without_fades(tl))
    elif fmt == "fcpxml":
        tl = _without_fades(tl)
    extra = {"use_empty_mob_ids": True} if fmt == "aaf" else {}
    with atomic_path(output, f".part{output.suffix}") as tmp:
        tmp.unlink()  # some adapters refuse to write over an existing file
        try:
            otio.adapters.write_to_file(tl, str(tmp), adapter_name=adapter, **extra)
        except Exception as exc:  # noqa: BLE001 - surface the adapter's reason
            raise MediaError(f"the {fmt} adapter could not write the timeline: {exc}",
                             source=output) from None
        if fmt == "aaf":
            _add_aaf_markers(tmp, tl)
    return output
