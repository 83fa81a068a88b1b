"""Golden per-format checks of the timeline exports, each read back by an independent reader.

One timeline with everything an editor meets: handles on every shot, a dissolve, a
fade in, a fade to black before a title, markers, and dialogue at sub-frame
positions. Every clip's record in/out and source in/out as the independent reader
(pycmx for EDL, pyaaf2 walked here for AAF, lxml and the format's rules for FCPXML
and FCP 7 XML) sees them must equal the .otio's; dialogue within half a frame.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest

from films import render_shots

from aiprod_post.audio.io import write_wav
from aiprod_post.editing.export import FORMATS, export_timeline
from aiprod_post.editing.timeline import LineMedia, TimelineMedia, build_timeline
from aiprod_post.fountain import parse
from aiprod_post.planner import PlannerSettings, plan_script

W, H, FPS = 64, 36, Fraction(24)
EXTRA = 6  # editor's handles on every shot, beyond what its transitions use
SCRIPT = """FADE IN:

EXT. PIER - DUSK

Gulls over the water.

NELL
Ferry's gone.

IVO
Then we swim.

DISSOLVE TO:

INT. BOOTH - NIGHT

Rain on the glass.

NELL
Not tonight.

> FADE OUT.

> THE END <
"""
# (start sample, samples): none of them on a frame boundary (2000 samples a frame)
LINES = [(12_345, 30_001), (50_111, 41_333), (140_999, 27_777), (301_234, 20_500)]


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    folder = tmp_path_factory.mktemp("golden")
    plan, _ = plan_script(parse(SCRIPT), PlannerSettings(fps=FPS, width=W, height=H))
    media = render_shots(plan, folder, FPS, W, H, extra=EXTRA)
    samples = plan.duration * 2000
    t = np.arange(samples) / 48000
    for name, hz in (("mix", 440), ("MX", 220), ("FX", 330)):
        write_wav(folder / f"{name}.wav", np.stack([0.1 * np.sin(2 * np.pi * hz * t)] * 2, 1))
    lines = []
    for i, (start, length) in enumerate(LINES):
        p = folder / f"line{i}.wav"
        write_wav(p, 0.1 * np.sin(2 * np.pi * 300 * np.arange(length) / 48000)[:, None])
        lines.append(LineMedia(f"1.{i}", "NELL", p, start, length, "words"))
    tl = build_timeline(plan, TimelineMedia(media, lines, folder / "MX.wav", folder / "FX.wav",
                                            folder / "mix.wav"), name="Golden")
    otio.adapters.write_to_file(tl, str(folder / "golden.otio"))
    return folder, plan, tl


def expected(tl, track_index: int = 0) -> list[dict]:
    """What the .otio says, exactly: each clip's record and source range in frames, and
    the transitions on either side of it."""
    track = tl.tracks[track_index]
    items = list(track)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, otio.schema.Clip):
            continue
        rng = item.range_in_parent()
        before = items[i - 1] if i else None
        after = items[i + 1] if i + 1 < len(items) else None
        out.append({
            "name": item.name,
            "rec_in": Fraction(rng.start_time.value), "rec_out": Fraction(rng.end_time_exclusive()
                                                                        .value),
            "src_in": Fraction(item.source_range.start_time.value),
            "src_out": Fraction(item.source_range.end_time_exclusive().value),
            "into": before if isinstance(before, otio.schema.Transition) else None,
            "out_of": after if isinstance(after, otio.schema.Transition) else None,
        })
    return out


def test_the_golden_timeline_has_what_an_editor_meets(golden):
    _folder, _plan, tl = golden
    kinds = [i.metadata["aiprod_post"]["kind"] for i in tl.tracks[0]
             if isinstance(i, otio.schema.Transition)]
    assert kinds == ["fade-in", "dissolve", "fade-out"]
    assert any(isinstance(i, otio.schema.Gap) for i in tl.tracks[0])  # black before the title
    dialogue = expected(tl, 1)
    assert len(dialogue) == len(LINES)
    assert all(d["rec_in"].denominator != 1 for d in dialogue)  # sub-frame on purpose
    assert all(c["src_in"] > 0 for c in expected(tl))  # every shot has a head handle


# ------------------------------------------------------------------ AAF, read by pyaaf2


def _aaf_tracks(path: Path) -> dict[str, dict]:
    """Each timeline slot of the top-level composition, walked as the AAF Object
    Specification defines a Sequence: a Transition overlaps the segments either side;
    the cut sits ``CutPoint`` frames into it."""
    import aaf2

    tracks = {}
    with aaf2.open(str(path)) as f:
        comp = next(f.content.toplevel())
        for slot in comp.slots:
            if type(slot).__name__ != "TimelineMobSlot" or slot.segment.media_kind == "Timecode":
                if slot.segment.media_kind == "Timecode":
                    tracks["TC"] = {"start": slot.segment.start, "length": slot.segment.length}
                continue
            seq = slot.segment
            comps = list(seq.components)
            pos = 0
            placed = []
            for c in comps:
                kind = type(c).__name__
                if kind == "Transition":
                    pos -= c.length
                    placed.append(("T", pos, c.length, c["CutPoint"].value, None))
                    continue
                placed.append((kind, pos, c.length, c.start if kind == "SourceClip" else 0, c))
                pos += c.length
            clips = []
            for k, (kind, start, length, src, c) in enumerate(placed):
                if kind != "SourceClip":
                    continue
                rec_in, rec_out, src_in = start, start + length, src
                if k and placed[k - 1][0] == "T":
                    t = placed[k - 1]
                    rec_in, src_in = t[1] + t[3], src + t[3]
                if k + 1 < len(placed) and placed[k + 1][0] == "T":
                    t = placed[k + 1]
                    rec_out = t[1] + t[3]
                master = c.mob
                file_mob = master.slots[0].segment.mob
                d = file_mob.descriptor
                clips.append({"name": master.name, "rec_in": rec_in, "rec_out": rec_out,
                              "src_in": src_in, "src_out": src_in + rec_out - rec_in,
                              "descriptor": type(d).__name__,
                              "channels": d["Channels"].value if "Channels" in d.keys() else None,
                              "bits": d["QuantizationBits"].value
                              if "QuantizationBits" in d.keys() else None,
                              "url": d["Locator"][0]["URLString"].value})
            transitions = [(p[1], p[2], p[3]) for p in placed if p[0] == "T"]
            tracks[slot.name] = {"length": seq.length, "clips": clips,
                                 "transitions": transitions, "edit_rate": slot.edit_rate,
                                 "number": slot["PhysicalTrackNumber"].value,
                                 "total": pos}
    return tracks


def test_aaf_read_by_pyaaf2_matches_the_otio(golden, tmp_path):
    folder, plan, tl = golden
    out = export_timeline(tl, "aaf", tmp_path / "golden.aaf")
    tracks = _aaf_tracks(out)
    n = plan.duration
    assert tracks["TC"] == {"start": 3600 * 24, "length": n}
    for name in ("V1", "A1 Dialogue", "A2 Music", "A3 Ambience"):
        assert tracks[name]["length"] == tracks[name]["total"] == n, name  # was Length 0
        assert tracks[name]["edit_rate"] == 24
    assert [tracks[k]["number"] for k in ("V1", "A1 Dialogue", "A2 Music", "A3 Ambience")] \
        == [1, 1, 2, 3]
    picture = tracks["V1"]["clips"]
    want = expected(tl, 0)
    assert [(c["name"], c["rec_in"], c["rec_out"], c["src_in"], c["src_out"]) for c in picture] \
        == [(w["name"], w["rec_in"], w["rec_out"], w["src_in"], w["src_out"]) for w in want]
    # the fade in, the dissolve (centred: 12 before and 12 after the cut), the fade out
    cuts = {w["name"]: w for w in want}
    assert tracks["V1"]["transitions"] == [
        (0, 24, 0),
        (int(cuts["2"]["rec_in"]) - 12, 24, 12),
        (int(cuts["2A"]["rec_out"]) - 24, 24, 24)]
    assert all(c["descriptor"] == "CDCIDescriptor" for c in picture)
    dialogue = tracks["A1 Dialogue"]["clips"]
    for got, w in zip(dialogue, expected(tl, 1), strict=True):
        assert abs(got["rec_in"] - w["rec_in"]) <= Fraction(1, 2), w["name"]
        assert abs(got["rec_out"] - w["rec_out"]) <= Fraction(1, 2), w["name"]
        assert (got["descriptor"], got["channels"], got["bits"]) == ("PCMDescriptor", 1, 24)
    music = tracks["A2 Music"]["clips"][0]
    assert (music["channels"], music["bits"]) == (2, 24)
    assert all(c["url"].startswith("file:///") for t in tracks.values() if "clips" in t
               for c in t["clips"])


def test_aaf_dialogue_does_not_drift_over_many_lines(tmp_path):
    """Fifty lines each 1/3 frame longer than a whole frame: rounding each length would
    put the last one 16 frames late; rounding each position keeps all within half a frame."""
    rate = 24.0
    tl = otio.schema.Timeline("drift")
    video = otio.schema.Track("V1")
    ref = otio.schema.ExternalReference(target_url=str(tmp_path / "v.mov"),
                                        available_range=otio.opentime.TimeRange(
                                            otio.opentime.RationalTime(0, rate),
                                            otio.opentime.RationalTime(2000, rate)))
    video.append(otio.schema.Clip("v", ref, otio.opentime.TimeRange(
        otio.opentime.RationalTime(0, rate), otio.opentime.RationalTime(1000, rate))))
    audio = otio.schema.Track("A1", kind=otio.schema.TrackKind.Audio)
    exact = []
    at = Fraction(0)
    for i in range(50):
        length = Fraction(10) + Fraction(1, 3)
        aref = otio.schema.ExternalReference(target_url=str(tmp_path / f"l{i}.wav"))
        audio.append(otio.schema.Clip(f"l{i}", aref, otio.opentime.TimeRange(
            otio.opentime.RationalTime(0, rate), otio.opentime.RationalTime(float(length),
                                                                            rate))))
        exact.append(at)
        at += length
    tl.tracks.extend([video, audio])
    tracks = _aaf_tracks(export_timeline(tl, "aaf", tmp_path / "drift.aaf"))
    starts = [c["rec_in"] for c in tracks["A1"]["clips"]]
    assert max(abs(s - e) for s, e in zip(starts, exact, strict=True)) <= Fraction(1, 2)


# ------------------------------------------------------------------ EDL, read by pycmx


def _tc_frames(tc: str, fps: int = 24) -> int:
    hh, mm, ss, ff = (int(x) for x in tc.replace(";", ":").split(":"))
    return ((hh * 60 + mm) * 60 + ss) * fps + ff


def test_edl_read_by_pycmx_matches_the_otio(golden, tmp_path):
    import pycmx

    _folder, _plan, tl = golden
    out = export_timeline(tl, "edl", tmp_path / "golden.edl")
    text = out.read_text()
    assert text.splitlines()[1] == "FCM: NON-DROP FRAME"
    with out.open() as fh:
        edl = pycmx.parse_cmx3600(fh)
    assert edl.format == "3600" and not list(edl.unrecognized_statements)
    t0 = 3600 * 24
    edits = [(ev.number, e) for ev in edl.events for e in ev.edits]
    # the picture: what each edit shows, from when to when, from where
    shown = {}
    for _n, e in edits:
        rin, rout = _tc_frames(e.record_in) - t0, _tc_frames(e.record_out) - t0
        if rout > rin and not e.black:
            shown[e.clip_name] = (rin, rout, _tc_frames(e.source_in), _tc_frames(e.source_out),
                                  e.transition)
    assert edits[0][1].record_in == "01:00:00:00"  # record starts at the timeline's start
    for w in expected(tl, 0):
        rin, rout, sin, sout, trans = shown[w["name"]]
        into, out_of = w["into"], w["out_of"]
        # an EDL dissolve starts at its incoming event: that event begins `before` early
        early = int(into.in_offset.value) if into is not None else 0
        # ... and the outgoing event stops where the dissolve starts
        late = int(out_of.in_offset.value) if out_of is not None else 0
        assert (rin + early, rout + late, sin + early, sout + late) == \
            (w["rec_in"], w["rec_out"], w["src_in"], w["src_out"]), w["name"]
        if into is not None:
            assert trans.dissolve and trans.effect_duration == int(into.duration().value)
    dissolves = [(e.source, e.transition.effect_duration, prev.source)
                 for (n0, prev), (n1, e) in zip(edits, edits[1:])
                 if n0 == n1 and e.transition.dissolve]
    first = expected(tl, 0)[0]["name"]
    assert dissolves == [(first, 24, "BL"), ("2", 24, "1B"), ("BL", 24, "2A")]
    # LOC markers at record timecode: each shot's marker at the shot's cut
    locs = [line.split()[2] for line in text.splitlines() if line.startswith("* LOC:")]
    want = [w["rec_in"] for w in expected(tl, 0)]
    assert [_tc_frames(x) - t0 for x in locs] == want


# ------------------------------------------------------------------ FCPXML, read by lxml


def _fcpxml_seconds(value: str) -> Fraction:
    num, _, den = value.rstrip("s").partition("/")
    return Fraction(int(num), int(den or 1))


def test_fcpxml_read_by_lxml_matches_the_otio_and_follows_the_rules(golden, tmp_path):
    from lxml import etree

    from aiprod_post.editing.check import check_fcpxml

    _folder, _plan, tl = golden
    out = export_timeline(tl, "fcpxml", tmp_path / "golden.fcpxml")
    assert check_fcpxml(out) == []
    doc = etree.parse(str(out))
    fmt = doc.find("resources/format")
    assert (fmt.get("width"), fmt.get("height"), fmt.get("frameDuration")) == ("64", "36",
                                                                             "1/24s")
    seq = doc.find(".//sequence")
    assert seq.get("tcStart") == "3600s"
    frame = Fraction(1, 24)
    t0 = _fcpxml_seconds(seq.get("tcStart")) / frame
    spine = seq.find("spine")
    clips, transitions, dialogue, markers = [], [], [], []
    for el in spine:
        offset = _fcpxml_seconds(el.get("offset")) / frame - t0
        duration = _fcpxml_seconds(el.get("duration")) / frame
        if el.tag == "transition":
            assert el.find("filter-video") is not None
            transitions.append((offset, duration))
            continue
        start = _fcpxml_seconds(el.get("start", "0s")) / frame
        if el.tag == "asset-clip":
            clips.append((el.get("name"), offset, offset + duration, start, start + duration))
        for child in el:
            if child.tag == "marker":
                assert _fcpxml_seconds(child.get("duration")) == frame  # one frame, not zero
                markers.append(offset + _fcpxml_seconds(child.get("start")) / frame - start)
            elif child.get("lane") == "-1":
                at = offset + _fcpxml_seconds(child.get("offset")) / frame - start
                length = _fcpxml_seconds(child.get("duration")) / frame
                dialogue.append((at, at + length))
    want = expected(tl, 0)
    assert clips == [(w["name"], w["rec_in"], w["rec_out"], w["src_in"], w["src_out"])
                     for w in want]
    cuts = {w["name"]: w for w in want}
    assert transitions == [(0, 24), (cuts["2"]["rec_in"] - 12, 24),
                           (cuts["2A"]["rec_out"] - 24, 24)]  # the dissolve is there
    assert markers == [w["rec_in"] for w in want]
    for (rin, rout), w in zip(dialogue, expected(tl, 1), strict=True):
        assert abs(rin - w["rec_in"]) <= Fraction(1, 2) and abs(rout - w["rec_out"]) <= 0.5
    assets = {a.get("name"): a for a in doc.iter("asset")}
    assert assets["line0"].get("audioChannels") == "1" and assets["MX"].get("audioChannels") \
        == "2"
    assert assets["line0"].get("format") is None and assets["line0"].get("audioRate") == "48000"


def test_fcpxml_rules_catch_what_the_adapter_got_wrong(golden, tmp_path):
    """The checks can fail: OpenTimelineIO's FCP X adapter's file (no frame size, zero-length
    markers, no tcStart, sub-frame gaps) does not pass them."""
    from aiprod_post.editing.check import check_fcpxml

    _folder, _plan, tl = golden
    bad = tmp_path / "adapter.fcpxml"
    otio.adapters.write_to_file(tl, str(bad), adapter_name="fcpx_xml")
    problems = "\n".join(check_fcpxml(bad))
    assert "frameDuration, width and height" in problems
    assert "shorter than a frame" in problems
    assert "no tcStart" in problems
    assert "not on a frame boundary" in problems


# ------------------------------------------------------------------ FCP 7 XML, read by lxml


def test_fcp7_xml_read_by_lxml_matches_the_otio(golden, tmp_path):
    from lxml import etree

    from aiprod_post.editing.check import check_fcp7

    _folder, _plan, tl = golden
    out = export_timeline(tl, "fcp7", tmp_path / "golden.xml")
    assert check_fcp7(out) == []
    doc = etree.parse(str(out))
    seq = doc.find(".//sequence")
    assert seq.findtext("timecode/string") == "01:00:00:00"
    assert seq.findtext("media/video/format/samplecharacteristics/width") == "64"
    tracks = seq.findall("media/video/track") + seq.findall("media/audio/track")

    def items(track):
        """(name, record in, record out, source in, source out) at each cut, the -1 of a
        clip item beside a transition resolved to the transition's edge (xmeml)."""
        els = list(track)
        out = []
        for i, el in enumerate(els):
            if el.tag != "clipitem":
                continue
            s, e = int(el.findtext("start")), int(el.findtext("end"))
            a, b = int(el.findtext("in")), int(el.findtext("out"))
            before = els[i - 1] if i and els[i - 1].tag == "transitionitem" else None
            after = els[i + 1] if i + 1 < len(els) and els[i + 1].tag == "transitionitem" \
                else None
            # a transition belongs to the clip it touches (a fade to black before a gap
            # is not the next clip's)
            if before is not None and s >= 0 and int(before.findtext("start")) != s:
                before = None
            if after is not None and e >= 0 and int(after.findtext("end")) != e:
                after = None
            if s < 0:
                s = int(before.findtext("start"))
            if e < 0:
                e = int(after.findtext("end"))
            assert e - s == b - a, el.findtext("name")  # end-start = out-in, everywhere

            def cut(t):
                t0, t1 = int(t.findtext("start")), int(t.findtext("end"))
                return {"start-black": t0, "end-black": t1}.get(t.findtext("alignment"),
                                                                (t0 + t1) // 2)
            if before is not None:
                a, s = a + cut(before) - s, cut(before)
            if after is not None:
                b, e = b - (e - cut(after)), cut(after)
            out.append((el.findtext("name"), s, e, a, b))
        return out

    want = expected(tl, 0)
    assert items(tracks[0]) == [(w["name"], w["rec_in"], w["rec_out"], w["src_in"],
                                 w["src_out"]) for w in want]
    for (_n, rin, rout, _a, _b), w in zip(items(tracks[1]), expected(tl, 1), strict=True):
        assert abs(rin - w["rec_in"]) <= Fraction(1, 2) and abs(rout - w["rec_out"]) <= 0.5
    for kind, track in [("video", tracks[0]), *(("audio", t) for t in tracks[1:])]:
        for item in track.iter("clipitem"):
            assert len(item.findall("rate")) == 1
            assert item.findtext("sourcetrack/mediatype") == kind
    files = {f.findtext("name"): f for f in doc.iter("file") if f.find("pathurl") is not None}
    assert files["1.mov"].find("media/audio") is None  # silent shot media declare no sound
    assert files["1.mov"].findtext("media/video/samplecharacteristics/height") == "36"
    assert files["line0.wav"].findtext("media/audio/channelcount") == "1"
    assert files["MX.wav"].findtext("media/audio/channelcount") == "2"


# ------------------------------------------------------------------ media paths and --check


def _refs(path: Path) -> list[str]:
    tl = otio.adapters.read_from_file(str(path))
    return [c.media_reference.target_url for c in tl.find_clips()]


def test_otio_media_paths_plain_url_relative_and_moved(golden, tmp_path):
    from click.testing import CliRunner

    from aiprod_post.cli import main

    folder, _plan, _tl = golden
    src = str(folder / "golden.otio")
    run = CliRunner().invoke
    assert run(main, ["export", src, "--format", "otio", "-o", str(tmp_path / "a.otio")]
               ).exit_code == 0
    plain = _refs(tmp_path / "a.otio")
    assert all(u.startswith(str(folder)) and Path(u).is_file() for u in plain)  # Resolve 20
    assert run(main, ["export", src, "--format", "otio", "-o", str(tmp_path / "b.otio"),
                      "--url"]).exit_code == 0
    assert all(u.startswith("file:///") for u in _refs(tmp_path / "b.otio"))
    out = folder / "sub"
    out.mkdir(exist_ok=True)
    assert run(main, ["export", src, "--format", "otio", "-o", str(out / "c.otio"),
                      "--relative"]).exit_code == 0
    rel = _refs(out / "c.otio")
    assert all(u.startswith("../") and (out / u).resolve().is_file() for u in rel)
    assert run(main, ["export", src, "--format", "fcpxml", "-o", str(tmp_path / "d.fcpxml"),
                      "--media-root", f"{folder}=/Volumes/show/media"]).exit_code == 0
    text = (tmp_path / "d.fcpxml").read_text()
    assert 'src="file:///Volumes/show/media/1A.mov"' in text and str(folder) not in text
    assert run(main, ["export", src, "--format", "edl", "-o", str(tmp_path / "e.edl"),
                      "--media-root", "/elsewhere"]).exit_code == 0
    assert "* SOURCE FILE: /elsewhere/1A.mov" in (tmp_path / "e.edl").read_text()


@pytest.mark.parametrize("fmt", ["fcpxml", "edl", "aaf", "fcp7", "otio"])
def test_export_check_passes_our_exports_and_names_missing_media(golden, tmp_path, fmt):
    from click.testing import CliRunner

    from aiprod_post.cli import main

    folder, _plan, tl = golden
    out = export_timeline(tl, fmt, tmp_path / f"g{FORMATS[fmt][1]}")
    result = CliRunner().invoke(main, ["export", "--check", str(out)])
    assert result.exit_code == 0, result.output
    moved = export_timeline(tl, fmt, tmp_path / f"m{FORMATS[fmt][1]}", media_root="/nowhere")
    result = CliRunner().invoke(main, ["export", "--check", str(moved)])
    assert result.exit_code == 2 and "/nowhere/1A.mov does not exist" in result.output


def test_export_check_names_what_is_wrong_in_an_edl(tmp_path):
    from click.testing import CliRunner

    from aiprod_post.cli import main

    bad = tmp_path / "bad.edl"
    bad.write_text("TITLE: bad\n"
                   "001  AX       V     C        00:00:00:00 00:00:02:00 01:00:00:00 01:00:01:00\n"
                   "002 AX V C 00:00:00:00 00:00:01:00 01:00:00:12 01:00:01:12\n")
    result = CliRunner().invoke(main, ["export", "--check", str(bad)])
    assert result.exit_code == 2
    assert "no FCM: line" in result.output
    assert "bad.edl:2: source runs 48 frames, record 24" in result.output
    assert "bad.edl:3: event line not in CMX 3600 columns" in result.output
    assert "bad.edl:3: record in" in result.output and "overlaps" in result.output


# ------------------------------------------------------------------ conform reads them back


def _frames(tl) -> list[np.ndarray]:
    from aiprod_post.editing.conform import timeline_frames
    from aiprod_post.editing.interchange import conformable

    return [f.astype(np.int16) for f in timeline_frames(conformable(tl))]


def _same_picture(a: list[np.ndarray], b: list[np.ndarray]) -> list[int]:
    """Frames that differ (beyond a level of rounding in a blend)."""
    assert len(a) == len(b)
    return [k for k, (x, y) in enumerate(zip(a, b)) if np.abs(x - y).max() > 1]


@pytest.fixture(scope="module")
def golden_frames(golden):
    return _frames(golden[2])


@pytest.mark.parametrize("fmt", ["edl", "fcpxml", "fcp7", "aaf"])
def test_each_export_conforms_to_the_same_picture(golden, golden_frames, tmp_path, fmt):
    """Read back by the conform's readers: the same frames, dissolve, fade in and fade to
    black before the title included (each format says them its own way)."""
    from aiprod_post.editing.export import read_timeline

    _folder, _plan, tl = golden
    out = export_timeline(tl, fmt, tmp_path / f"g{FORMATS[fmt][1]}")
    assert _same_picture(golden_frames, _frames(read_timeline(out))) == []


def _without_1a_and_2b_trimmed(tl):
    """The same edit made on the .otio: 1A deleted (ripple), the last shot 6 frames shorter."""
    import copy

    out = copy.deepcopy(tl)
    track = out.tracks[0]
    track.remove(next(c for c in track if c.name == "1A"))
    last = next(c for c in track if c.name == "2B")
    sr = last.source_range
    last.source_range = otio.opentime.TimeRange(
        sr.start_time, sr.duration - otio.opentime.RationalTime(6, sr.duration.rate))
    return out


def _edit_edl(path: Path) -> None:
    """Delete 1A (its event) and ripple the record times after it; trim 2B's tail by 6."""
    from aiprod_post.editing.edl import EVENT_LINE
    from aiprod_post.editing.interchange import timecode

    lines = path.read_text().splitlines()
    out = []
    shift = 0
    gone = None
    for line in lines:
        m = EVENT_LINE.match(line)
        if m and m.group("reel").strip() == "1A" and m.group("trans").strip() == "C" \
                and m.group("ri") != m.group("ro"):
            gone = m.group("num")
            shift = _tc_frames(m.group("ro")) - _tc_frames(m.group("ri"))
            continue
        if m:
            ri, ro = _tc_frames(m.group("ri")) - shift, _tc_frames(m.group("ro")) - shift
            so = _tc_frames(m.group("so"))
            if m.group("reel").strip() == "2B":
                ro, so = ro - 6, so - 6
            line = line[:line.index(m.group("si"))] + " ".join(
                [m.group("si"), timecode(so, FPS), timecode(ri, FPS), timecode(ro, FPS)])
            out.append(line)
            continue
        if gone and line.startswith("*") and "1A" in line:
            continue  # the deleted event's remarks (clip name, file, marker)
        out.append(line)
    path.write_text("\r\n".join(out) + "\r\n")


def _remove_rippling(parent, gone, earlier) -> None:
    """Delete ``gone`` from ``parent`` and move each element after it ``earlier``."""
    after = False
    for el in list(parent):
        if el is gone:
            parent.remove(el)
            after = True
        elif after:
            earlier(el)


def _edit_fcpxml(path: Path) -> None:
    from lxml import etree

    doc = etree.parse(str(path))
    spine = doc.find(".//spine")
    one_a = next(e for e in spine if e.get("name") == "1A")
    shift = _fcpxml_seconds(one_a.get("duration"))
    _remove_rippling(spine, one_a, lambda el: el.set(
        "offset", f"{(_fcpxml_seconds(el.get('offset')) - shift) * 24}/24s"))
    last = spine[-1]
    last.set("duration", f"{(_fcpxml_seconds(last.get('duration')) * 24) - 6}/24s")
    doc.write(str(path))


def _edit_fcp7(path: Path) -> None:
    from lxml import etree

    doc = etree.parse(str(path))
    track = doc.find(".//sequence/media/video/track")
    one_a = next(e for e in track if e.findtext("name") == "1A")
    shift = int(one_a.findtext("end")) - int(one_a.findtext("start"))

    def earlier(el) -> None:
        for tag in ("start", "end"):
            if int(el.findtext(tag)) >= 0:  # -1: at a transition, which moves too
                el.find(tag).text = str(int(el.findtext(tag)) - shift)
    _remove_rippling(track, one_a, earlier)
    last = track[-1]
    last.find("end").text = str(int(last.findtext("end")) - 6)
    last.find("out").text = str(int(last.findtext("out")) - 6)
    doc.write(str(path))


def _edit_aaf(path: Path) -> None:
    import aaf2

    with aaf2.open(str(path), "rw") as f:
        comp = next(f.content.toplevel())
        seq = next(s for s in comp.slots if s.name == "V1").segment
        comps = list(seq.components)
        one_a = next(c for c in comps if type(c).__name__ == "SourceClip" and c.mob.name == "1A")
        last = comps[-1]
        removed = one_a.length
        seq.components.pop(comps.index(one_a))
        last.length = last.length - 6
        seq.length = seq.length - removed - 6


@pytest.mark.parametrize("fmt,edit", [("edl", _edit_edl), ("fcpxml", _edit_fcpxml),
                                      ("fcp7", _edit_fcp7), ("aaf", _edit_aaf)])
def test_round_trip_edited_in_the_file_then_conformed(golden, tmp_path, fmt, edit):
    """Export, edit the file as an editor would (delete a shot with a ripple, trim the last
    shot), conform it: the master's pictures and cut points are those of the same edit
    made on the .otio."""
    from aiprod_post.editing.export import read_timeline

    _folder, _plan, tl = golden
    out = export_timeline(tl, fmt, tmp_path / f"g{FORMATS[fmt][1]}")
    edit(out)
    back = read_timeline(out)
    want = _without_1a_and_2b_trimmed(tl)
    cuts = [(c.name, c.range_in_parent().start_time.value) for c in want.tracks[0].find_clips()]
    got = [(c.name, c.range_in_parent().start_time.value) for c in back.tracks[0].find_clips()]
    if fmt == "edl":  # the dissolve's incoming event starts where the dissolve does
        got = [(n, at + (12 if n == "2" else 0)) for n, at in got]
    assert got == cuts
    assert _same_picture(_frames(want), _frames(back)) == []


def test_conform_cli_renders_an_edl_relinked_from_media_folders(golden, tmp_path):
    """An EDL whose media moved: relinked by clip name from --media, rendered to a master
    with every frame, exit 0; without --media the clip is named in the error, exit 2."""
    import shutil

    from click.testing import CliRunner

    from aiprod_post.cli import main
    from aiprod_post.editing.conform import probe

    folder, plan, tl = golden
    moved = tmp_path / "moved"
    moved.mkdir()
    for p in folder.glob("*.mov"):
        shutil.copy(p, moved / p.name)
    edl = export_timeline(tl, "edl", tmp_path / "g.edl", media_root=f"{folder}=/gone")
    result = CliRunner().invoke(main, ["conform", str(edl), "-o", str(tmp_path / "m.mp4")])
    assert result.exit_code == 2 and "no media for event" in result.output \
        and "clip '1'" in result.output
    result = CliRunner().invoke(main, ["conform", str(edl), "-o", str(tmp_path / "m.mp4"),
                                       "--media", str(moved)])
    assert result.exit_code == 0, result.output
    assert probe(tmp_path / "m.mp4")["video"]["frames"] == plan.duration


def test_retimed_clips_and_other_rates_are_refused_naming_the_clip(golden, tmp_path):
    from aiprod_post.editing.export import read_timeline
    from aiprod_post.editing.interchange import conformable
    from aiprod_post.errors import MediaError

    import copy

    _folder, _plan, tl = golden
    fast = copy.deepcopy(tl)
    clip = next(c for c in fast.tracks[0].find_clips() if c.name == "1A")
    clip.effects.append(otio.schema.LinearTimeWarp(time_scalar=2.0))
    with pytest.raises(MediaError, match="clip '1A' is retimed"):
        conformable(fast)
    edl = export_timeline(tl, "edl", tmp_path / "g.edl")
    text = edl.read_text().replace("00:00:00:06 00:00:01:18 01:00:03:00 01:00:04:12",
                                   "00:00:00:06 00:00:02:18 01:00:03:00 01:00:04:12")
    edl.write_text(text)
    with pytest.raises(MediaError, match=r"event 2 \(1A\) plays 60 source frames in 36"):
        read_timeline(edl)
    fcpxml = export_timeline(tl, "fcpxml", tmp_path / "g.fcpxml")
    fcpxml.write_text(fcpxml.read_text().replace(
        'name="1A" start="6/24s" duration="36/24s" format="r1" tcFormat="NDF">',
        'name="1A" start="6/24s" duration="36/24s" format="r1" tcFormat="NDF"><timeMap/>'))
    with pytest.raises(MediaError, match="clip '1A' is retimed"):
        read_timeline(fcpxml)


def test_a_clip_counted_at_another_rate_is_refused_naming_it(golden):
    import copy

    from aiprod_post.editing.interchange import conformable
    from aiprod_post.errors import MediaError

    _folder, _plan, tl = golden
    other = copy.deepcopy(tl)
    clip = next(c for c in other.tracks[0].find_clips() if c.name == "2A")
    clip.source_range = otio.opentime.TimeRange(otio.opentime.RationalTime(6, 25),
                                                otio.opentime.RationalTime(36, 25))
    with pytest.raises(MediaError, match=r"clip '2A' is counted at 25 fps on a 24 fps"):
        conformable(other)


def test_export_check_runs_a_dtd_the_user_gives(golden, tmp_path):
    """--dtd validates through lxml: a DTD of our own that allows no <library> fails the
    export, naming the line; one that allows it passes."""
    from click.testing import CliRunner

    from aiprod_post.cli import main

    _folder, _plan, tl = golden
    out = export_timeline(tl, "fcpxml", tmp_path / "g.fcpxml")
    strict = tmp_path / "strict.dtd"
    strict.write_text('<!ELEMENT fcpxml (resources)>\n<!ATTLIST fcpxml version CDATA #REQUIRED>\n'
                      '<!ELEMENT resources ANY>\n')
    result = CliRunner().invoke(main, ["export", "--check", str(out), "--dtd", str(strict)])
    assert result.exit_code == 2 and "DTD strict.dtd: line" in result.output
    loose = tmp_path / "loose.dtd"
    rules = ["<!ELEMENT fcpxml ANY>", "<!ATTLIST fcpxml version CDATA #REQUIRED>"]
    for element, attrs in _DTD_ATTRS.items():
        rules.append(f"<!ELEMENT {element} ANY>")
        rules += [f"<!ATTLIST {element} {a} CDATA #IMPLIED>" for a in attrs]
    loose.write_text("\n".join(rules) + "\n")
    result = CliRunner().invoke(main, ["export", "--check", str(out), "--dtd", str(loose)])
    assert result.exit_code == 0, result.output


_DTD_ATTRS = {
    "resources": [], "library": [], "event": ["name"], "project": ["name"],
    "format": ["id", "name", "frameDuration", "width", "height", "colorSpace"],
    "effect": ["id", "name", "uid"],
    "asset": ["id", "name", "start", "duration", "hasVideo", "videoSources", "format",
              "hasAudio", "audioSources", "audioChannels", "audioRate"],
    "media-rep": ["kind", "src"],
    "sequence": ["format", "duration", "tcStart", "tcFormat", "audioLayout", "audioRate"],
    "spine": [], "gap": ["name", "offset", "start", "duration"],
    "transition": ["name", "offset", "duration"], "filter-video": ["ref", "name"],
    "asset-clip": ["ref", "lane", "offset", "name", "start", "duration", "format", "tcFormat",
                   "audioRole"],
    "marker": ["start", "duration", "value", "note"],
}


def _swap_fcpxml(path: Path) -> None:
    """Swap the first two shots (1 and 1A) in the storyline; the fade in stays first."""
    from lxml import etree

    doc = etree.parse(str(path))
    spine = doc.find(".//spine")
    one, one_a = (next(e for e in spine if e.get("name") == n) for n in ("1", "1A"))
    start = _fcpxml_seconds(one.get("offset"))
    one_a.set("offset", one.get("offset"))
    one.set("offset", f"{(start + _fcpxml_seconds(one_a.get('duration'))) * 24}/24s")
    spine.remove(one_a)
    spine.insert(list(spine).index(one), one_a)
    doc.write(str(path))


def _swap_aaf(path: Path) -> None:
    import aaf2

    with aaf2.open(str(path), "rw") as f:
        seq = next(s for s in next(f.content.toplevel()).slots if s.name == "V1").segment
        comps = list(seq.components)
        i = next(k for k, c in enumerate(comps) if type(c).__name__ == "SourceClip"
                 and c.mob.name == "1")
        one = comps[i]
        seq.components.pop(i)  # [.. 1A ..]
        seq.components.insert(i + 1, one)  # [.. 1A, 1 ..]


def _swap_edl(path: Path) -> None:
    """Events 1 (the fade in on shot 1) and 2 (1A) rewritten with the shots exchanged."""
    from aiprod_post.editing.edl import EVENT_LINE, _line
    from aiprod_post.editing.interchange import timecode

    lines = path.read_text().splitlines()
    events = {m.group("reel").strip(): m for m in map(EVENT_LINE.match, lines)
              if m and m.group("ri") != m.group("ro")}
    one, one_a = events["1"], events["1A"]
    n_a = _tc_frames(one_a.group("so")) - _tc_frames(one_a.group("si"))
    n_1 = _tc_frames(one.group("so")) - _tc_frames(one.group("si"))
    files = {ln.rsplit("/", 1)[-1]: ln for ln in lines if ln.startswith("* SOURCE FILE:")}
    t0 = 3600 * 24
    block = [_line(1, "BL", "C", None, "00:00:00:00", "00:00:00:00", timecode(t0, FPS),
                   timecode(t0, FPS)),
             _line(1, "1A", "D", 24, one_a.group("si"), one_a.group("so"), timecode(t0, FPS),
                   timecode(t0 + n_a, FPS)),
             "* TO CLIP NAME: 1A", files["1A.mov"],
             _line(2, "1", "C", None, one.group("si"), one.group("so"), timecode(t0 + n_a, FPS),
                   timecode(t0 + n_a + n_1, FPS)),
             "* FROM CLIP NAME: 1", files["1.mov"]]
    third = next(k for k, ln in enumerate(lines) if ln.startswith("003  "))
    path.write_text("\r\n".join(lines[:2] + block + lines[third:]) + "\r\n")


def _swap_fcp7(path: Path) -> None:
    """The clip items of shots 1 and 1A exchanged (the fade in stays first)."""
    from lxml import etree

    doc = etree.parse(str(path))
    track = doc.find(".//sequence/media/video/track")
    one, one_a = (next(e for e in track if e.findtext("name") == n) for n in ("1", "1A"))
    n_a = int(one_a.findtext("out")) - int(one_a.findtext("in"))
    end = int(one_a.findtext("end"))
    one_a.find("start").text, one_a.find("end").text = "-1", str(n_a)  # at the fade in
    one.find("start").text, one.find("end").text = str(n_a), str(end)
    track.remove(one_a)
    track.insert(list(track).index(one), one_a)
    doc.write(str(path))


@pytest.mark.parametrize("fmt,edit", [("fcpxml", _swap_fcpxml), ("aaf", _swap_aaf),
                                      ("edl", _swap_edl), ("fcp7", _swap_fcp7)])
def test_round_trip_with_two_shots_swapped_in_the_file(golden, tmp_path, fmt, edit):
    """Export, exchange the first two shots in the file (the fade in now on the other
    shot), conform: the same picture as the swap made on the .otio."""
    import copy

    from aiprod_post.editing.export import read_timeline

    _folder, _plan, tl = golden
    out = export_timeline(tl, fmt, tmp_path / f"s{FORMATS[fmt][1]}")
    edit(out)
    want = copy.deepcopy(tl)
    track = want.tracks[0]
    one = next(c for c in track if c.name == "1")
    index = list(track).index(one)
    track.remove(one)
    track.insert(index + 1, one)  # after 1A
    back = read_timeline(out)
    assert [c.name for c in back.tracks[0].find_clips()][:3] == ["1A", "1", "1B"]
    assert _same_picture(_frames(want), _frames(back)) == []


def test_a_fade_to_black_centred_on_a_cut_to_a_gap_is_rendered_as_another_tool_means_it(
        golden, golden_frames):
    """Another tool's fade: no metadata of ours, the dissolve centred on the cut between
    the shot and the black (half of it over the gap, from the shot's handle). The conform
    renders the same frames as our fade wholly before the cut."""
    import copy

    _folder, _plan, tl = golden
    other = copy.deepcopy(tl)
    track = other.tracks[0]
    for item in track:
        if isinstance(item, otio.schema.Transition):
            item.metadata.pop("aiprod_post", None)
    fade = [i for i in track if isinstance(i, otio.schema.Transition)][-1]
    shot = track[list(track).index(fade) - 1]
    gap = track[list(track).index(fade) + 1]
    twelve = otio.opentime.RationalTime(12, 24)
    sr = shot.source_range
    shot.source_range = otio.opentime.TimeRange(sr.start_time, sr.duration - twelve)
    gap.source_range = otio.opentime.TimeRange(gap.source_range.start_time,
                                               gap.source_range.duration + twelve)
    fade.in_offset, fade.out_offset = twelve, twelve
    assert _same_picture(golden_frames, _frames(other)) == []


def test_picture_the_conform_would_drop_is_refused_naming_it(golden, tmp_path):
    import copy

    from aiprod_post.editing.export import read_timeline
    from aiprod_post.editing.interchange import conformable
    from aiprod_post.errors import MediaError

    _folder, _plan, tl = golden
    two = copy.deepcopy(tl)
    v2 = otio.schema.Track("V2 titles", kind=otio.schema.TrackKind.Video)
    v2.append(copy.deepcopy(next(iter(tl.tracks[0].find_clips()))))
    two.tracks.insert(1, v2)
    with pytest.raises(MediaError, match="picture track 'V2 titles' has clips too"):
        conformable(two)
    out = export_timeline(tl, "fcpxml", tmp_path / "g.fcpxml")
    # a caption connected above the first shot, as Final Cut Pro writes a title
    out.write_text(out.read_text().replace(
        'audioRole="dialogue" />', 'audioRole="dialogue" /><title ref="r2" lane="1" '
        'name="Caption" offset="0s" duration="1s" />', 1))
    with pytest.raises(MediaError, match=r"<title 'Caption'> is connected above clip '1'"):
        read_timeline(out)


def test_ntsc_rate_exports_check_and_conform_to_the_same_picture(tmp_path):
    """24000/1001: FCPXML times in 1001/24000 s, AAF at 24000/1001, EDL and FCP 7 XML at
    timebase 24 non-drop; each read back at the exact rate, to the same frames."""
    from aiprod_post.editing.check import check_timeline_file
    from aiprod_post.editing.export import read_timeline
    from aiprod_post.editing.timeline import timeline_rate

    rate = Fraction(24000, 1001)
    plan, _ = plan_script(parse(SCRIPT), PlannerSettings(fps=rate, width=W, height=H))
    tl = build_timeline(plan, TimelineMedia(render_shots(plan, tmp_path, rate, W, H, 2)))
    want = _frames(tl)
    for fmt in ("edl", "fcpxml", "fcp7", "aaf"):
        out = export_timeline(tl, fmt, tmp_path / f"n{FORMATS[fmt][1]}")
        assert check_timeline_file(out, rate=rate) == [], fmt
        back = read_timeline(out)
        assert timeline_rate(back) == rate, fmt
        assert _same_picture(want, _frames(back)) == [], fmt
    assert 'frameDuration="1001/24000s"' in (tmp_path / "n.fcpxml").read_text()


def test_aaf_read_by_opentimelineios_aaf_reader_has_the_same_cuts(golden, tmp_path):
    """A second reader, written apart from ours (otio-aaf-adapter's, on pyaaf2): every
    picture clip at the .otio's record and source frames, the three transitions there."""
    _folder, _plan, tl = golden
    out = export_timeline(tl, "aaf", tmp_path / "g.aaf")
    back = otio.adapters.read_from_file(str(out), adapter_name="AAF")
    video = next(t for t in back.tracks if t.kind == otio.schema.TrackKind.Video)
    got = [(c.name, c.range_in_parent().start_time.value, c.source_range.start_time.value,
            c.source_range.duration.value) for c in video.find_clips()]
    assert got == [(w["name"], w["rec_in"], w["src_in"], w["rec_out"] - w["rec_in"])
                   for w in expected(tl, 0)]
    assert [(t.in_offset.value, t.out_offset.value) for t in video
            if isinstance(t, otio.schema.Transition)] == [(0, 24), (12, 12), (24, 0)]
