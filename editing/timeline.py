"""The edit as an OpenTimelineIO timeline: the single source of truth for delivery.

Tracks, top to bottom: ``V1`` the shots (with cross dissolves and fades from
the script); ``A1`` dialogue, one clip per line; ``A2`` music; ``A3``
ambience and effects. Each shot carries a marker with its id and scene
heading, and metadata under one namespace (``aiprod_post``: scene, shot, take,
look, engine, seed; a retaken shot's ``takes``, each with its media's ``target_url``,
the chosen one on V1). The timeline starts at 01:00:00:00.

Per-shot media has *handles*: frames rendered before and after the cut so a
dissolve has picture to dissolve through, and an editor room to trim.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import opentimelineio as otio

from aiprod_post.errors import MediaError
from aiprod_post.plan import ShotPlan, TransitionKind, format_frame_rate

__all__ = [
    "NAMESPACE",
    "ShotMedia",
    "LineMedia",
    "TimelineMedia",
    "build_timeline",
    "path_to_url",
    "url_to_path",
    "timeline_rate",
    "START_TIMECODE_HOURS",
    "handles_for",
]

NAMESPACE = "aiprod_post"
START_TIMECODE_HOURS = 1


def path_to_url(path: str | Path) -> str:
    """An absolute ``file://`` URL, percent-encoded, that survives non-ASCII names.

    >>> path_to_url("/media/Café shots/1A.mov")
    'file:///media/Caf%C3%A9%20shots/1A.mov'
    """
    return "file://" + urllib.parse.quote(str(Path(path).resolve()))


def url_to_path(url: str, base: Path | None = None) -> Path:
    """The path a media reference points to: a ``file://`` URL, a plain path, or a path
    relative to ``base``. Plain paths are taken as written (Resolve writes them so); a
    percent-encoded relative URL is decoded where the plain reading names no file.

    >>> url_to_path("file:///media/Caf%C3%A9%20shots/1A.mov").as_posix()
    '/media/Café shots/1A.mov'
    >>> url_to_path("/media/100%25 take.mov").as_posix()
    '/media/100%25 take.mov'
    """
    if url.startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    candidates = [Path(url)]
    if "%" in url:
        candidates.append(Path(urllib.parse.unquote(url)))
    resolved = [p if p.is_absolute() or base is None else (base / p) for p in candidates]
    return next((p for p in resolved if p.exists()), resolved[0])


def timeline_rate(timeline: otio.schema.Timeline) -> Fraction:
    """The exact frame rate (OTIO stores a float; the exact one is kept in metadata)."""
    meta = timeline.metadata.get(NAMESPACE, {})
    if "rate" in meta:
        return Fraction(str(meta["rate"]))
    rate = timeline.tracks.duration().rate if timeline.tracks else 24.0
    return Fraction(rate).limit_denominator(1001)


@dataclass
class ShotMedia:
    """A shot's rendered picture: ``frames`` long, the cut starts at ``head``."""

    path: Path
    frames: int
    head: int = 0
    look: str | None = None
    engine: str = "animatic"
    take: int = 1
    #: every take of the shot when it has more than one: dicts with ``take``, ``seed``,
    #: ``prompt_extra``, ``note``, ``chosen`` and ``path`` (its picture, with the same
    #: head handle); listed on the clip for an editor to swap in
    takes: list[dict] = field(default_factory=list)


@dataclass
class LineMedia:
    """A dialogue line's audio: where it plays on the timeline, in samples at 48 kHz."""

    line_id: str
    speaker: str
    path: Path
    start_sample: int
    samples: int
    text: str = ""


@dataclass
class TimelineMedia:
    shots: dict[str, ShotMedia]
    lines: list[LineMedia] = field(default_factory=list)
    music: Path | None = None
    ambience: Path | None = None
    mix: Path | None = None
    sample_rate: int = 48000


def _url(path: Path, relative_to: Path | None) -> str:
    # plain paths, not file:// URLs: Resolve 20 relinks only those (OTIO issue 1985)
    if relative_to is not None:
        return Path(os.path.relpath(Path(path).resolve(), relative_to.resolve())).as_posix()
    return str(Path(path).resolve())


def _ref(path: Path, relative_to: Path | None, available: otio.opentime.TimeRange
         ) -> otio.schema.ExternalReference:
    return otio.schema.ExternalReference(target_url=_url(path, relative_to),
                                         available_range=available)


def build_timeline(plan: ShotPlan, media: TimelineMedia, *, relative_to: Path | None = None,
                   name: str | None = None) -> otio.schema.Timeline:
    """Assemble the OTIO timeline from the plan and the media the stages produced."""
    rate = plan.fps
    r = float(rate)

    def rt(frames: int | float) -> otio.opentime.RationalTime:
        return otio.opentime.RationalTime(frames, r)

    tl = otio.schema.Timeline(name=name or plan.title)
    start_frames = START_TIMECODE_HOURS * 3600 * round(rate)
    tl.global_start_time = rt(start_frames)
    tl.metadata[NAMESPACE] = {
        "rate": format_frame_rate(rate),
        "width": plan.width,
        "height": plan.height,
        "schema": plan.schema_version,
        "title": plan.title,
        "sample_rate": media.sample_rate,
        "mix": str(Path(media.mix).resolve()) if media.mix else None,
    }
    video = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    tl.tracks.append(video)
    shots = plan.shots()
    trim_head = 0  # frames of black taken from the start of a shot after a fade to black
    for index, (scene, shot) in enumerate(shots):
        m = media.shots.get(shot.id)
        if m is None:
            raise MediaError(f"no rendered media for shot {shot.id}", where=f"shot {shot.id}")
        if m.frames < m.head + shot.duration:
            raise MediaError(f"media for shot {shot.id} has {m.frames} frames, the cut needs "
                             f"{m.head + shot.duration}", source=m.path)
        tin = shot.transition_in
        if tin.kind in (TransitionKind.DISSOLVE, TransitionKind.WIPE) and tin.duration and index:
            half = tin.duration // 2
            video.append(otio.schema.Transition(
                name=tin.text or "Cross Dissolve",
                transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                in_offset=rt(half), out_offset=rt(tin.duration - half),
                metadata={NAMESPACE: {"kind": tin.kind.value}}))
        elif tin.kind == TransitionKind.FADE_IN and tin.duration:
            video.append(otio.schema.Transition(
                name="Fade In", transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                in_offset=rt(0), out_offset=rt(tin.duration),
                metadata={NAMESPACE: {"kind": "fade-in"}}))
        clip = otio.schema.Clip(
            name=shot.id,
            media_reference=_ref(m.path, relative_to,
                                 otio.opentime.TimeRange(rt(0), rt(m.frames))),
            source_range=otio.opentime.TimeRange(rt(m.head + trim_head),
                                                 rt(shot.duration - trim_head)),
            metadata={NAMESPACE: {
                "scene": scene.id, "shot": shot.id, "take": m.take, "look": m.look,
                "engine": m.engine, "seed": shot.seed, "heading": scene.heading,
                "framing": shot.framing.value, "camera_move": shot.camera_move.value,
                # the shot's takes (the chosen one is this clip's media), for an editor
                # to swap in: the same length and handles as this clip's media
                **({"takes": [{**{k: v for k, v in t.items() if k != "path"},
                               "target_url": _url(t["path"], relative_to)}
                              for t in m.takes]} if m.takes else {}),
            }},
        )
        trim_head = 0
        clip.markers.append(otio.schema.Marker(
            name=shot.id,
            marked_range=otio.opentime.TimeRange(clip.source_range.start_time, rt(0)),
            color=otio.schema.MarkerColor.BLUE,
            metadata={NAMESPACE: {"heading": scene.heading}},
        ))
        clip.markers[-1].comment = f"{shot.id} {scene.heading}".strip()
        video.append(clip)
        tout = shot.transition_out
        if tout is not None and tout.kind == TransitionKind.FADE_OUT and tout.duration:
            video.append(otio.schema.Transition(
                name="Fade Out", transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                in_offset=rt(tout.duration), out_offset=rt(0),
                metadata={NAMESPACE: {"kind": "fade-out"}}))
            if index + 1 < len(shots):
                # Fade to black, hold black, then the next shot (THE END card): the black
                # is a gap taken from the head of the next shot, so the cut stays in time.
                trim_head = min(round(rate / 2), shots[index + 1][1].duration // 4)
                if trim_head:
                    video.append(otio.schema.Gap(
                        source_range=otio.opentime.TimeRange(rt(0), rt(trim_head))))

    total = sum(s.duration for _, s in shots)
    total_samples = int(round(total * media.sample_rate / rate))

    def frames_of(samples: int) -> Fraction:
        return Fraction(samples) * rate / media.sample_rate

    dialogue = otio.schema.Track(name="A1 Dialogue", kind=otio.schema.TrackKind.Audio)
    cursor = 0  # in samples
    for line in sorted(media.lines, key=lambda ln: ln.start_sample):
        start = max(line.start_sample, cursor)
        if start > cursor:
            dialogue.append(otio.schema.Gap(
                source_range=otio.opentime.TimeRange(rt(0), rt(float(frames_of(start - cursor))))))
        length = min(line.samples, total_samples - start)
        if length <= 0:
            continue
        # audio media ranges are given at the timeline rate too: FCP 7 XML and AAF
        # express every time in edit units of the sequence
        dialogue.append(otio.schema.Clip(
            name=f"{line.line_id} {line.speaker}",
            media_reference=_ref(line.path, relative_to, otio.opentime.TimeRange(
                rt(0), rt(float(frames_of(line.samples))))),
            source_range=otio.opentime.TimeRange(rt(0), rt(float(frames_of(length)))),
            metadata={NAMESPACE: {"line": line.line_id, "speaker": line.speaker,
                                  "text": line.text}},
        ))
        cursor = start + length
    tl.tracks.append(dialogue)
    for track_name, path in (("A2 Music", media.music), ("A3 Ambience", media.ambience)):
        track = otio.schema.Track(name=track_name, kind=otio.schema.TrackKind.Audio)
        if path is not None:
            track.append(otio.schema.Clip(
                name=Path(path).stem,
                media_reference=_ref(path, relative_to, otio.opentime.TimeRange(
                    rt(0), rt(total))),
                source_range=otio.opentime.TimeRange(rt(0), rt(total)),
            ))
        tl.tracks.append(track)
    return tl


def handles_for(plan: ShotPlan) -> dict[str, tuple[int, int]]:
    """Frames each shot's media needs before and after its cut, for its transitions.

    A dissolve of D frames centred on the cut plays ``D // 2`` frames of the
    incoming shot before its cut (its head handle) and the rest of the
    outgoing shot after its cut (its tail handle).
    """
    shots = [s for _, s in plan.shots()]
    out = {s.id: (0, 0) for s in shots}
    for i, s in enumerate(shots):
        tin = s.transition_in
        if i and tin.kind in (TransitionKind.DISSOLVE, TransitionKind.WIPE) and tin.duration:
            half = tin.duration // 2
            head = out[s.id][0]
            out[s.id] = (max(head, half), out[s.id][1])
            prev = shots[i - 1].id
            out[prev] = (out[prev][0], max(out[prev][1], tin.duration - half))
    return out
