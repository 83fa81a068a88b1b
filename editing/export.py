"""Timeline exports for the editor's tool of choice.

=========  ===========================================  ===================================
format     written by                                   opens in
=========  ===========================================  ===================================
otio       otio_json (built in)                         DaVinci Resolve 18.5+, OTIO tools
otioz      otioz (built in)                             the same, media bundled in one zip
fcp7       fcp_xml (otio-fcp-adapter), on whole frames  Adobe Premiere Pro, Resolve, FCP 7
fcpxml     :mod:`.fcpxml` (ours)                        Final Cut Pro, Resolve
edl        :mod:`.edl` (ours)                           anything: CMX 3600 (picture only)
aaf        :mod:`.aaf` (ours, pyaaf2)                   Avid Media Composer, Pro Tools
=========  ===========================================  ===================================

Every format but .otio is written from one reading of the timeline in whole frames
(:func:`.interchange.edit_of`): positions are rounded once, never clip by clip, so
the formats agree with each other and with the .otio to within half a frame (exactly,
for picture). Where an adapter was wrong or silent (dissolves and fades in FCPXML,
EDL fades and marker timecode, AAF lengths and descriptors) the format is written
here, from its published description.
"""

from __future__ import annotations

import copy
from fractions import Fraction
from pathlib import Path

import opentimelineio as otio

from aiprod_post.errors import AiprodError, MediaError
from aiprod_post.files import atomic_path

from .interchange import Edit, edit_of
from .media_paths import MediaPaths
from .timeline import NAMESPACE, url_to_path

__all__ = ["FORMATS", "export_timeline", "read_timeline", "on_whole_frames"]

FORMATS: dict[str, tuple[str, str]] = {
    "otio": ("otio_json", ".otio"),
    "otioz": ("otioz", ".otioz"),
    "fcp7": ("fcp_xml", ".xml"),
    "fcpxml": ("fcpx_xml", ".fcpxml"),
    "edl": ("cmx_3600", ".edl"),
    "aaf": ("AAF", ".aaf"),
}


def read_timeline(path: str | Path, *, media: list[Path] | tuple = (),
                  rate: Fraction | None = None) -> otio.schema.Timeline:
    """A timeline file of any format this project reads (see :mod:`.readers`)."""
    from .readers import read_timeline as read

    return read(path, media=media, rate=rate)


def _rewrite_media(tl: otio.schema.Timeline, paths: MediaPaths, base: Path | None,
                   url: bool) -> otio.schema.Timeline:
    """A copy whose media references (and named mix) follow ``paths``."""
    out = copy.deepcopy(tl)
    refs = [c.media_reference for c in out.find_clips()
            if isinstance(c.media_reference, otio.schema.ExternalReference)]
    meta = out.metadata.get(NAMESPACE, {})
    files = [url_to_path(r.target_url, base) for r in refs]
    paths = paths.with_media(files)
    for ref, path in zip(refs, files):
        ref.target_url = paths.url(path) if url else paths.path(path)
    if meta.get("mix"):
        mix = url_to_path(meta["mix"], base)
        meta["mix"] = paths.url(mix) if url else paths.path(mix)
    return out


def on_whole_frames(tl: otio.schema.Timeline, edit: Edit) -> otio.schema.Timeline:
    """A copy of ``tl`` rebuilt on the whole-frame positions of ``edit`` (for adapters
    that would otherwise truncate each length on their own, and drift): clips at their
    rounded record in and out, gaps filling what lies between, transitions at their cuts.
    """
    out = copy.deepcopy(tl)
    rate = float(edit.rate)

    def rt(v: int) -> otio.opentime.RationalTime:
        return otio.opentime.RationalTime(v, rate)

    for track, te in zip(out.tracks, edit.tracks):
        items = list(track)
        clips = [i for i in items if isinstance(i, otio.schema.Clip)]
        transitions = dict(zip(map(id, te.fades),
                               [i for i in items if isinstance(i, otio.schema.Transition)]))
        end = max([te.events[-1].record_out if te.events else 0,
                   round(track.duration().to_frames() if track.duration().rate == rate
                         else track.duration().rescaled_to(rate).value)])
        for item in items:
            track.remove(item)
        placed: set[int] = set()
        at = 0

        def place(fade) -> None:
            if fade is not None and id(fade) not in placed:
                placed.add(id(fade))
                tr = transitions[id(fade)]
                tr.in_offset, tr.out_offset = rt(fade.before), rt(fade.after)
                track.append(tr)

        for ev, clip in zip(te.events, clips):
            if ev.record_in > at:
                track.append(otio.schema.Gap(
                    source_range=otio.opentime.TimeRange(rt(0), rt(ev.record_in - at))))
            place(next((fd for fd in te.fades if fd.cut == ev.record_in
                        and (fd.from_black or not fd.to_black)), None))
            clip.source_range = otio.opentime.TimeRange(rt(ev.source_in), rt(ev.length))
            ref = clip.media_reference
            if isinstance(ref, otio.schema.ExternalReference) and ev.media_frames is not None:
                ref.available_range = otio.opentime.TimeRange(rt(ev.media_start),
                                                              rt(ev.media_frames))
            track.append(clip)
            place(next((fd for fd in te.fades if fd.cut == ev.record_out
                        and not fd.from_black), None))
            at = ev.record_out
        if end > at:
            track.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(rt(0),
                                                                              rt(end - at))))
    return out


def export_timeline(timeline: otio.schema.Timeline, fmt: str, output: str | Path, *,
                    relative: bool = False, url: bool = False, media_root: str | None = None,
                    base: Path | None = None) -> Path:
    """Write ``timeline`` as ``fmt`` to ``output`` (atomically).

    Media are named by absolute plain path in an .otio (``url=True``: ``file://``
    URLs), by URL in the XML formats and AAF; ``relative`` makes them relative to
    ``output``'s folder, ``media_root`` moves them (see :class:`.MediaPaths`).
    ``base`` is the folder relative references in ``timeline`` are relative to.
    """
    if fmt not in FORMATS:
        raise AiprodError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}",
                          where="--format")
    adapter, _suffix = FORMATS[fmt]
    output = Path(output)
    if not output.parent.is_dir():
        raise MediaError("output folder does not exist", source=output.parent)
    paths = MediaPaths(output.parent, relative=relative and fmt != "otioz",
                       media_root=media_root)
    with atomic_path(output, f".part{output.suffix}") as tmp:
        tmp.unlink()  # some adapters refuse to write over an existing file
        if fmt in ("otio", "otioz"):
            tl = _rewrite_media(timeline, paths, base, url=url and fmt == "otio")
            if fmt == "otioz":
                tl = _rewrite_media(timeline, paths, base, url=True)
            _adapter_write(tl, tmp, adapter, fmt, output)
            return output
        edit = edit_of(timeline, base)
        files = [ev.path for t in edit.tracks for ev in t.events if ev.path is not None]
        paths = paths.with_media(files)
        if fmt == "aaf":
            from .aaf import write_aaf

            write_aaf(edit, tmp, paths.url)
        elif fmt == "edl":
            from .edl import write_edl

            tmp.write_text(write_edl(edit, paths.path), encoding="utf-8")
        elif fmt == "fcpxml":
            from .fcpxml import write_fcpxml

            tmp.write_text(write_fcpxml(edit, paths.url), encoding="utf-8")
        elif fmt == "fcp7":
            from .fcp7 import fix_fcp7

            tl = _rewrite_media(on_whole_frames(timeline, edit), paths, base, url=True)
            _adapter_write(tl, tmp, adapter, fmt, output)
            fix_fcp7(tmp, edit)
    return output


def _adapter_write(tl: otio.schema.Timeline, tmp: Path, adapter: str, fmt: str,
                   output: Path) -> None:
    try:
        otio.adapters.write_to_file(tl, str(tmp), adapter_name=adapter)
    except Exception as exc:  # noqa: BLE001 - surface the adapter's reason
        raise MediaError(f"the {fmt} adapter could not write the timeline: {exc}",
                         source=output) from None
