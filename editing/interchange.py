"""The edit in whole frames: one reading of the timeline that every export writes from.

An OpenTimelineIO timeline keeps times as floats (dialogue sits at sub-frame
positions, 12345 samples = 6.1725 frames at 24 fps). Interchange formats count
whole edit units. Rounding each clip's *length* and adding them up drifts (a
dialogue track of fifty lines can end up a dozen frames late); instead every
clip's record in and out are computed here once, from its exact position on the
timeline, and rounded to the nearest frame. A clip's length is then ``out - in``
of those rounded positions, so nothing accumulates: every cut is within half a
frame of the .otio, and every format written from this reading agrees with
every other to the frame.

Where a format cannot carry samples (CMX 3600, FCP 7 XML, AAF audio at the
picture's edit rate) a dialogue line therefore starts up to half a frame
(1000 samples at 24 fps) from its exact place; :attr:`Event.offset` is that
remainder, and the .otio keeps the exact position.

>>> _nearest(Fraction(25, 4)), _nearest(Fraction(5, 2)), _nearest(Fraction(-1, 2))
(6, 3, 0)
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import opentimelineio as otio

from aiprod_post.errors import MediaError

from .timeline import NAMESPACE, timeline_rate, url_to_path

__all__ = ["Event", "Fade", "TrackEdit", "Edit", "edit_of", "frames_of", "timecode",
           "conformable"]


def _nearest(x: Fraction) -> int:
    """Round half up (the same way for every position, unlike Python's half-even)."""
    return math.floor(x + Fraction(1, 2))


def frames_of(t: otio.opentime.RationalTime, rate: Fraction) -> Fraction:
    """``t`` as an exact number of frames at ``rate`` (OTIO stores float rates)."""
    value = Fraction(t.value)
    if abs(t.rate - float(rate)) < 1e-6:
        return value
    return value * rate / Fraction(t.rate).limit_denominator(100_000)


def timecode(frame: int, rate: Fraction) -> str:
    """Non-drop-frame timecode of an absolute frame count, counted at the nominal rate.

    >>> timecode(86400, Fraction(24)), timecode(86424 + 5, Fraction(24000, 1001))
    ('01:00:00:00', '01:00:01:05')
    """
    fps = round(rate)
    if frame < 0:
        raise ValueError(f"negative timecode frame {frame}")
    ff = frame % fps
    s = frame // fps
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}:{ff:02d}"


@dataclass(frozen=True)
class Marker:
    name: str
    record: int  # frame on the timeline (0 = its start)
    length: int
    comment: str = ""
    colour: str = "BLUE"


@dataclass(frozen=True)
class Event:
    """One clip on one track, in whole frames. ``record_*`` count from the timeline's
    first frame (0); ``source_in`` is in the media's own frames at the timeline rate."""

    name: str
    record_in: int
    record_out: int
    source_in: int
    path: Path | None
    media_frames: int | None  # the media's length, where the timeline says it
    media_start: int = 0  # the media's first frame (its available range start)
    offset: Fraction = Fraction(0)  # exact record in minus ``record_in`` (frames)
    markers: tuple[Marker, ...] = ()
    metadata: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def length(self) -> int:
        return self.record_out - self.record_in

    @property
    def source_out(self) -> int:
        return self.source_in + self.length


@dataclass(frozen=True)
class Fade:
    """A transition at a cut: ``before`` frames of it play before the cut, ``after``
    frames after. ``from_black``/``to_black``: a fade (no clip on that side)."""

    cut: int
    before: int
    after: int
    from_black: bool = False
    to_black: bool = False
    name: str = "Cross Dissolve"

    @property
    def length(self) -> int:
        return self.before + self.after

    @property
    def start(self) -> int:
        return self.cut - self.before


@dataclass
class TrackEdit:
    name: str
    kind: str  # "video" or "audio"
    events: list[Event]
    fades: list[Fade]
    markers: list[Marker]


@dataclass
class Edit:
    """The whole timeline in frames at ``rate``, starting at frame ``start`` (timecode)."""

    name: str
    rate: Fraction
    start: int
    duration: int
    width: int
    height: int
    sample_rate: int
    tracks: list[TrackEdit]
    source: otio.schema.Timeline | None = None

    @property
    def video(self) -> list[TrackEdit]:
        return [t for t in self.tracks if t.kind == "video"]

    @property
    def audio(self) -> list[TrackEdit]:
        return [t for t in self.tracks if t.kind == "audio"]


def _refuse_retimes(clip: otio.core.Item) -> None:
    for effect in clip.effects:
        if isinstance(effect, otio.schema.TimeEffect) or "speed" in effect.effect_name.lower() \
                or "warp" in effect.effect_name.lower() or "freeze" in effect.effect_name.lower():
            what = effect.effect_name or type(effect).__name__
            raise MediaError(f"clip {clip.name!r} is retimed ({what}); render the speed change "
                             "into its media first", where=f"clip {clip.name}")


def edit_of(timeline: otio.schema.Timeline, base: Path | None = None) -> Edit:
    """Read ``timeline`` once into whole frames (see the module's docstring).

    Media paths are resolved against ``base`` where the timeline holds relative ones.
    A retimed clip (a speed change or freeze frame) is refused, naming the clip.
    """
    rate = timeline_rate(timeline)
    meta = timeline.metadata.get(NAMESPACE, {})
    start = _nearest(frames_of(timeline.global_start_time, rate)) \
        if timeline.global_start_time is not None else 0
    tracks: list[TrackEdit] = []
    duration = 0
    for track in timeline.tracks:
        if not isinstance(track, otio.schema.Track):
            raise MediaError(f"nested stack {track.name!r} on the timeline: flatten it first",
                             where=f"track {track.name}")
        kind = "video" if track.kind == otio.schema.TrackKind.Video else "audio"
        events: list[Event] = []
        fades: list[Fade] = []
        items = list(track)
        at = Fraction(0)  # exact record position of the next item
        for index, item in enumerate(items):
            if isinstance(item, otio.schema.Transition):
                cut = _nearest(at)
                before = _nearest(frames_of(item.in_offset, rate))
                after = _nearest(frames_of(item.out_offset, rate))
                prev = next((i for i in reversed(items[:index])
                             if not isinstance(i, otio.schema.Transition)), None)
                nxt = next((i for i in items[index + 1:]
                            if not isinstance(i, otio.schema.Transition)), None)
                own = item.metadata.get(NAMESPACE, {}).get("kind")
                fades.append(Fade(cut, before, after,
                                  from_black=own == "fade-in" or not isinstance(
                                      prev, otio.schema.Clip),
                                  to_black=own == "fade-out" or not isinstance(
                                      nxt, otio.schema.Clip),
                                  name=item.name or "Cross Dissolve"))
                continue
            length = frames_of(item.source_range.duration if item.source_range
                               else item.duration(), rate)
            if isinstance(item, otio.schema.Clip):
                _refuse_retimes(item)
                sr = item.source_range or item.available_range()
                exact_src = frames_of(sr.start_time, rate)
                ref = item.media_reference
                path = None
                media_frames = None
                media_start = 0
                if isinstance(ref, otio.schema.ExternalReference):
                    path = url_to_path(ref.target_url, base)
                    if ref.available_range is not None:
                        media_start = _nearest(frames_of(ref.available_range.start_time, rate))
                        media_frames = _nearest(frames_of(ref.available_range.duration, rate))
                elif not isinstance(ref, otio.schema.MissingReference):
                    raise MediaError(f"clip {item.name!r} has a {type(ref).__name__}, not media "
                                     "on disk", where=f"clip {item.name}")
                rec_in, rec_out = _nearest(at), _nearest(at + length)
                marks = []
                for m in item.markers:
                    pos = at + frames_of(m.marked_range.start_time, rate) - exact_src
                    marks.append(Marker(m.name, _nearest(pos),
                                        _nearest(frames_of(m.marked_range.duration, rate)),
                                        m.comment or "", str(m.color or "BLUE")))
                events.append(Event(item.name, rec_in, rec_out, _nearest(exact_src), path,
                                    media_frames, media_start, at - rec_in, tuple(marks),
                                    dict(item.metadata.get(NAMESPACE, {}))))
            at += length
        track_marks = [Marker(m.name, _nearest(frames_of(m.marked_range.start_time, rate)),
                              _nearest(frames_of(m.marked_range.duration, rate)),
                              m.comment or "", str(m.color or "BLUE")) for m in track.markers]
        tracks.append(TrackEdit(track.name, kind, events, fades, track_marks))
        duration = max(duration, _nearest(at))
    return Edit(timeline.name or "Untitled", rate, start, duration,
                int(meta.get("width") or 1920), int(meta.get("height") or 1080),
                int(meta.get("sample_rate") or 48000), tracks, timeline)


def _into_gap(clip: otio.schema.Clip, gap: otio.core.Item | None,
              over: otio.opentime.RationalTime, *, head: bool) -> bool:
    """Lengthen ``clip`` by ``over`` at its head or tail (from its handle) into the
    ``gap`` beside it, and shorten the gap as much; False where there is no such gap."""
    if not over.value or not isinstance(gap, otio.schema.Gap) or \
            gap.source_range.duration < over:
        return False
    sr = clip.source_range
    clip.source_range = otio.opentime.TimeRange(sr.start_time - over if head else sr.start_time,
                                                sr.duration + over)
    g = gap.source_range
    gap.source_range = otio.opentime.TimeRange(g.start_time, g.duration - over)
    return True


def conformable(timeline: otio.schema.Timeline) -> otio.schema.Timeline:
    """A copy of ``timeline`` in the shape the conform renders, whichever tool wrote it.

    A transition with black on one side (a gap, or the end of the track) is a fade:
    it is marked ``fade-in``/``fade-out`` (this project's metadata) and moved wholly
    onto its clip: the part another tool placed over the black (a dissolve centred on
    the cut to a gap) becomes more of the clip, from its handle, and less of the gap,
    so the same frames fade. Retimed clips, clips counted at another rate than the
    timeline, and a second picture track with clips are refused, naming them.
    """
    out = copy.deepcopy(timeline)
    rate = timeline_rate(out)
    pictures = [t for t in out.tracks if isinstance(t, otio.schema.Track)
                and t.kind == otio.schema.TrackKind.Video and any(t.find_clips())]
    if len(pictures) > 1:  # nothing is dropped without a word
        raise MediaError(f"picture track {pictures[1].name or 2!r} has clips too: the conform "
                         "renders one picture track; flatten the edit first",
                         where=f"track {pictures[1].name}")
    for track in out.tracks:
        if not isinstance(track, otio.schema.Track):
            continue
        for item in track:
            if isinstance(item, otio.schema.Clip):
                _refuse_retimes(item)
                sr = item.source_range
                if sr is not None and abs(sr.duration.rate - float(rate)) > 1e-6 \
                        and track.kind == otio.schema.TrackKind.Video:
                    raise MediaError(f"clip {item.name!r} is counted at {sr.duration.rate:g} fps "
                                     f"on a {float(rate):g} fps timeline: conform it to the "
                                     "timeline's rate first", where=f"clip {item.name}")
        if track.kind != otio.schema.TrackKind.Video:
            continue
        items = list(track)
        for i, item in enumerate(items):
            if not isinstance(item, otio.schema.Transition):
                continue
            prev = items[i - 1] if i else None
            nxt = items[i + 1] if i + 1 < len(items) else None
            meta = item.metadata.setdefault(NAMESPACE, {})
            r = item.in_offset.rate
            zero = otio.opentime.RationalTime(0, r)
            if isinstance(prev, otio.schema.Clip) and not isinstance(nxt, otio.schema.Clip):
                meta["kind"] = "fade-out"
                if _into_gap(prev, nxt, item.out_offset, head=False):
                    item.in_offset, item.out_offset = item.in_offset + item.out_offset, zero
            elif isinstance(nxt, otio.schema.Clip) and not isinstance(prev, otio.schema.Clip):
                meta["kind"] = "fade-in"
                if _into_gap(nxt, prev, item.in_offset, head=True):
                    item.in_offset, item.out_offset = zero, item.out_offset + item.in_offset
            elif meta.get("kind") in ("fade-in", "fade-out") and \
                    isinstance(prev, otio.schema.Clip) and isinstance(nxt, otio.schema.Clip):
                meta["kind"] = "dissolve"  # an edit put a clip where the black was
        for item in [i for i in track if isinstance(i, otio.schema.Gap)]:
            if item.source_range.duration.value <= 0:
                track.remove(item)
    return out
