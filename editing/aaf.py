"""AAF for Avid Media Composer, Pro Tools and Resolve, written with pyaaf2 from the edit in frames.

The structure is the one the AAF Object Specification (v1.1) and Avid's own files use:

* a top-level CompositionMob with one TimelineMobSlot per track, at the picture's edit
  rate, each with a PhysicalTrackNumber (V1 = 1; A1, A2, A3 = 1, 2, 3, numbered per
  kind as Avid does), its Sequence's Length the track's length, a timecode slot
  starting at the timeline's start (01:00:00:00), markers as DescriptiveMarkers on
  EventMobSlots;
* per media file a MasterMob, and a file SourceMob whose descriptor says what the
  file is: CDCIDescriptor (stored size, frames) for picture, PCMDescriptor (channels,
  bits, 48 kHz, length in samples) for sound, with a NetworkLocator to the file;
* dissolves and fades as Transitions carrying the standard Video Dissolve effect:
  a Transition overlaps the segments on either side of it, so the outgoing clip runs
  on into its tail handle and the incoming one starts early from its head handle;
  a fade is a dissolve from or to a Filler.

Positions come from :func:`interchange.edit_of` (rounded once, never per clip), so
a dialogue line sits within half a frame of its sample-exact place in the .otio.
"""

from __future__ import annotations

import uuid
from fractions import Fraction
from pathlib import Path
from typing import Callable

from aiprod_post.errors import MediaError

from .interchange import Edit, Event, Fade, TrackEdit

__all__ = ["write_aaf", "media_info", "VIDEO_DISSOLVE"]

# AAF Object Specification, kAAFEffectVideoDissolve / kAAFEffectMonoAudioDissolve
VIDEO_DISSOLVE = uuid.UUID("0c3bea40-fc05-11d2-8a29-0050040ef7d2")
AUDIO_DISSOLVE = uuid.UUID("0c3bea43-fc05-11d2-8a29-0050040ef7d2")


def media_info(path: Path | None, kind: str, rate: Fraction, fallback_frames: int | None,
               size: tuple[int, int]) -> dict:
    """What the descriptor says about a file: read from the file where it is there."""
    info: dict = {"width": size[0], "height": size[1], "frames": fallback_frames,
                  "channels": 2, "bits": 24, "sample_rate": 48000, "samples": None,
                  "has_audio": False}
    if path is None or not Path(path).is_file():
        return info
    if kind == "audio":
        import soundfile

        try:
            sf = soundfile.info(str(path))
        except Exception:  # noqa: BLE001 - not a sound file libsndfile reads: keep defaults
            return info
        bits = {"PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32, "PCM_U8": 8,
                "PCM_S8": 8, "DOUBLE": 64}.get(sf.subtype, 24)
        info.update(channels=sf.channels, bits=bits, sample_rate=sf.samplerate,
                    samples=sf.frames)
        return info
    import av

    try:
        with av.open(str(path)) as c:
            if c.streams.video:
                s = c.streams.video[0]
                info.update(width=s.width, height=s.height)
                if s.frames:
                    info["frames"] = s.frames
            info["has_audio"] = bool(c.streams.audio)
    except Exception:  # noqa: BLE001 - unreadable media: the timeline's figures stand
        pass
    return info


class _Writer:
    def __init__(self, f, edit: Edit, media_url: Callable[[Path], str]) -> None:
        self.f, self.edit, self.media_url = f, edit, media_url
        self.masters: dict[tuple[Path, str], object] = {}
        self.rate = edit.rate
        self._opdefs: dict[str, object] = {}

    def master(self, ev: Event, kind: str):
        """The MasterMob of ``ev``'s media file (one per file), with its file SourceMob."""
        key = (ev.path, kind)
        if key in self.masters:
            return self.masters[key]
        f, rate = self.f, self.rate
        frames = ev.media_frames if ev.media_frames is not None else \
            ev.source_out - ev.media_start
        info = media_info(ev.path, kind, rate, frames, (self.edit.width, self.edit.height))
        frames = max(frames, ev.source_out - ev.media_start)
        source = f.create.SourceMob(f"{ev.path.name if ev.path else ev.name}")
        if kind == "audio":
            d = f.create.PCMDescriptor()
            samples = info["samples"]
            if samples is None:
                samples = int(Fraction(frames) * info["sample_rate"] / rate)
            d["Channels"].value = info["channels"]
            d["QuantizationBits"].value = info["bits"]
            d["AudioSamplingRate"].value = info["sample_rate"]
            d["SampleRate"].value = info["sample_rate"]
            d["BlockAlign"].value = info["channels"] * ((info["bits"] + 7) // 8)
            d["AverageBPS"].value = info["sample_rate"] * d["BlockAlign"].value
            d["Length"].value = samples
            file_rate, file_length = info["sample_rate"], samples
            media_kind = "sound"
        else:
            d = f.create.CDCIDescriptor()
            d["StoredWidth"].value = info["width"]
            d["StoredHeight"].value = info["height"]
            d["FrameLayout"].value = "FullFrame"
            d["VideoLineMap"].value = [0, 0]
            d["ImageAspectRatio"].value = f"{info['width']}/{info['height']}"
            d["ComponentWidth"].value = 10
            d["HorizontalSubsampling"].value = 2
            d["SampleRate"].value = f"{rate.numerator}/{rate.denominator}"
            d["Length"].value = frames
            file_rate, file_length = f"{rate.numerator}/{rate.denominator}", frames
            media_kind = "picture"
        if ev.path is not None:
            loc = f.create.NetworkLocator()
            loc["URLString"].value = self.media_url(ev.path)
            d["Locator"].append(loc)
        source.descriptor = d
        slot = source.create_empty_slot(edit_rate=file_rate, media_kind=media_kind, slot_id=1)
        slot.segment.length = file_length
        f.content.mobs.append(source)
        master = f.create.MasterMob(ev.path.stem if ev.path else ev.name)
        mslot = master.create_timeline_slot(edit_rate=f"{rate.numerator}/{rate.denominator}",
                                            slot_id=1)
        clip = source.create_source_clip(slot_id=1, start=0, length=file_length)
        # the master's slot counts in the composition's edit units (frames)
        clip.length = frames
        mslot.segment = clip
        mslot["PhysicalTrackNumber"].value = 1
        f.content.mobs.append(master)
        self.masters[key] = master
        return master

    def operation(self, media_kind: str):
        if media_kind in self._opdefs:
            return self._opdefs[media_kind]
        f = self.f
        ident = VIDEO_DISSOLVE if media_kind == "picture" else AUDIO_DISSOLVE
        name = "Video Dissolve" if media_kind == "picture" else "Mono Audio Dissolve"
        op = f.create.OperationDef(ident, name, "dissolve between two segments")
        op["IsTimeWarp"].value = False
        op["NumberInputs"].value = 2
        op["OperationCategory"].value = "OperationCategory_Effect"
        op["DataDefinition"].value = f.dictionary.lookup_datadef(media_kind)
        f.dictionary.register_def(op)
        self._opdefs[media_kind] = op
        return op

    def transition(self, fade: Fade, media_kind: str):
        f = self.f
        # pyaaf2's ``create`` remembers the class last named: no nested create calls
        op = self.operation(media_kind)
        group = f.create.OperationGroup(op, fade.length)
        group["DataDefinition"].value = f.dictionary.lookup_datadef(media_kind)
        t = f.create.Transition(media_kind, fade.length)
        t["OperationGroup"].value = group
        t["CutPoint"].value = fade.before
        return t

    def sequence(self, track: TrackEdit, media_kind: str):
        """The track as a Sequence: fillers for black, each transition overlapping its
        neighbours (the outgoing clip runs ``after`` frames past the cut into its tail
        handle, the incoming one starts ``before`` frames early from its head handle);
        a fade from or to black dissolves out of or into a Filler."""
        f = self.f
        seq = f.create.Sequence(media_kind=media_kind)
        seq["Components"].value = []
        into = {fd.cut: fd for fd in track.fades if not fd.to_black or fd.from_black}
        out_of = {fd.cut: fd for fd in track.fades if not fd.from_black}
        pos = 0  # where the next component starts (transitions step back over their length)

        def add(component, length: int) -> None:
            nonlocal pos
            seq.components.append(component)
            pos += length

        for i, ev in enumerate(track.events):
            prev = track.events[i - 1] if i else None
            fin = into.get(ev.record_in)
            joined = fin is not None and not fin.from_black and prev is not None \
                and prev.record_out == ev.record_in and out_of.get(ev.record_in) is fin
            if fin is not None and not joined:  # from black: a filler to dissolve out of
                length = ev.record_in + fin.after - pos
                if length < fin.length:
                    raise MediaError(f"no room for the fade into clip {ev.name!r} at frame "
                                     f"{ev.record_in}", where=f"clip {ev.name}")
                add(f.create.Filler(media_kind, length), length)
                add(self.transition(fin, media_kind), -fin.length)
            elif not joined and ev.record_in > pos:
                add(f.create.Filler(media_kind, ev.record_in - pos), ev.record_in - pos)
            head = fin.before if fin is not None else 0
            fout = out_of.get(ev.record_out)
            tail = fout.after if fout is not None else 0
            if ev.source_in - ev.media_start - head < 0:
                raise MediaError(f"clip {ev.name!r} has {ev.source_in} frames of head handle, "
                                 f"its transition needs {head}", where=f"clip {ev.name}")
            master = self.master(ev, "audio" if media_kind == "sound" else "picture")
            # the master's slot counts from the media's first frame
            clip = master.create_source_clip(slot_id=1, start=ev.source_in - ev.media_start - head,
                                             length=head + ev.length + tail)
            add(clip, clip.length)
            if fout is not None:
                add(self.transition(fout, media_kind), -fout.length)
        if pos < self.edit.duration:
            add(f.create.Filler(media_kind, self.edit.duration - pos), self.edit.duration - pos)
        seq.length = pos
        return seq, pos


def write_aaf(edit: Edit, path: Path, media_url: Callable[[Path], str]) -> int:
    """Write ``edit`` to ``path`` as AAF; returns the number of markers written."""
    import aaf2

    rate = edit.rate
    er = f"{rate.numerator}/{rate.denominator}"
    written = 0
    with aaf2.open(str(path), "w") as f:
        w = _Writer(f, edit, media_url)
        comp = f.create.CompositionMob(edit.name)
        comp.usage = "Usage_TopLevel"
        f.content.mobs.append(comp)
        numbers = {"video": 0, "audio": 0}
        for track in edit.tracks:
            numbers[track.kind] += 1
            media_kind = "picture" if track.kind == "video" else "sound"
            seq, total = w.sequence(track, media_kind)
            slot = comp.create_timeline_slot(edit_rate=er)
            slot.name = track.name
            slot["PhysicalTrackNumber"].value = numbers[track.kind]
            slot.segment = seq
            marks = [*track.markers, *(m for ev in track.events for m in ev.markers)]
            if marks:
                events = f.create.EventMobSlot()
                events["SlotID"].value = max(s.slot_id for s in comp.slots) + 1
                events["EditRate"].value = er
                events["PhysicalTrackNumber"].value = numbers[track.kind]
                events["SlotName"].value = f"{track.name} markers"
                mseq = f.create.Sequence(media_kind="DescriptiveMetadata")
                for m in sorted(marks, key=lambda m: m.record):
                    marker = f.create.DescriptiveMarker()
                    marker["Position"].value = m.record
                    marker["Length"].value = max(1, m.length)
                    marker["Comment"].value = m.name
                    marker["CommentMarkerColor"].value = _colour(m.colour)
                    marker["DescribedSlots"].value = {slot.slot_id}
                    mseq.components.append(marker)
                    written += 1
                events.segment = mseq
                comp.slots.append(events)
        tc = comp.create_timeline_slot(edit_rate=er)
        tc.name = "TC1"
        tc["PhysicalTrackNumber"].value = 1
        tc.segment = f.create.Timecode(round(rate), drop=False, length=edit.duration)
        tc.segment.start = edit.start
    return written


def _colour(name: str) -> dict:
    rgb = {"RED": (65535, 0, 0), "GREEN": (0, 65535, 0), "BLUE": (0, 0, 65535),
           "YELLOW": (65535, 65535, 0), "CYAN": (0, 65535, 65535),
           "MAGENTA": (65535, 0, 65535), "WHITE": (65535, 65535, 65535),
           "BLACK": (0, 0, 0)}.get(str(name).upper(), (0, 0, 65535))
    return {"red": rgb[0], "green": rgb[1], "blue": rgb[2]}
