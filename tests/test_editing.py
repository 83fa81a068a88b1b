"""Timeline assembly, exports read back through OTIO's adapters, conformed masters, subtitles."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest
from click.testing import CliRunner

from aiprod_post.cli import main
from aiprod_post.errors import MediaError
from aiprod_post.fountain import parse
from aiprod_post.planner import PlannerSettings, plan_script
from aiprod_post.audio.io import write_wav
from aiprod_post.editing.conform import PROFILES, conform, encode_master, probe, timeline_frames
from aiprod_post.editing.export import FORMATS, export_timeline, read_timeline
from aiprod_post.editing.subtitles import MAX_CPS, MAX_LINE, MIN_SECONDS, SpokenLine, subtitle_cues, to_srt, \
    to_webvtt
from aiprod_post.editing.timeline import NAMESPACE, TimelineMedia, build_timeline, url_to_path
from films import render_shots

W, H = 160, 96
SCRIPT = """FADE IN:

EXT. PIER - DUSK

Gulls over the water.

NELL
Ferry's gone.

DISSOLVE TO:

INT. BOOTH - NIGHT

Rain on the glass.
"""


def make_film(folder: Path, fps: Fraction = Fraction(24)):
    plan, _ = plan_script(parse(SCRIPT), PlannerSettings(fps=fps, width=W, height=H))
    media = render_shots(plan, folder, fps, W, H)
    n = plan.duration
    samples = int(round(n * 48000 / fps))
    t = np.arange(samples) / 48000
    mix = np.stack([0.1 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1)
    write_wav(folder / "mix.wav", mix)
    tl = build_timeline(plan, TimelineMedia(media, mix=folder / "mix.wav"))
    otio.adapters.write_to_file(tl, str(folder / "film.otio"))
    return plan, tl


@pytest.fixture(scope="module")
def film(tmp_path_factory):
    folder = tmp_path_factory.mktemp("Café film")  # a non-ASCII path on purpose
    plan, tl = make_film(folder)
    return folder, plan, tl


def video_track(tl):
    return next(t for t in tl.tracks if t.kind == otio.schema.TrackKind.Video)


def test_timeline_tracks_markers_metadata_and_start(film):
    folder, plan, tl = film
    assert [t.name for t in tl.tracks] == ["V1", "A1 Dialogue", "A2 Music", "A3 Ambience"]
    clips = list(video_track(tl).find_clips())
    assert [c.name for c in clips] == [s.id for _, s in plan.shots()]
    assert all(c.markers and c.markers[0].name == c.name for c in clips)
    meta = clips[0].metadata[NAMESPACE]
    assert {"scene", "shot", "take", "look", "engine", "seed"} <= set(meta)
    assert tl.global_start_time.to_timecode() == "01:00:00:00"
    assert tl.duration().to_frames() == plan.duration
    kinds = [i.metadata[NAMESPACE]["kind"] for i in video_track(tl)
             if isinstance(i, otio.schema.Transition)]
    assert kinds == ["fade-in", "dissolve"]
    # a plain absolute path, as Resolve 20 relinks (OTIO issue 1985), not percent-encoded
    url = clips[0].media_reference.target_url
    assert url.startswith("/") and "Café film" in url
    assert url_to_path(url).is_file()


def test_exact_ntsc_rate_is_kept(tmp_path):
    plan, tl = make_film(tmp_path, Fraction(24000, 1001))
    assert tl.metadata[NAMESPACE]["rate"] == "24000/1001"
    again = read_timeline(tmp_path / "film.otio")
    from aiprod_post.editing.timeline import timeline_rate
    assert timeline_rate(again) == Fraction(24000, 1001)
    master = conform(tmp_path / "film.otio", tmp_path / "m.mp4", "h264")
    info = probe(master)
    assert info["video"]["rate"] == Fraction(24000, 1001)
    assert info["video"]["frames"] == plan.duration


def _cuts(tl) -> list[tuple[str, int, int]]:
    out = []
    for clip in video_track(tl).find_clips():
        rng = clip.range_in_parent()
        out.append((clip.name, int(round(rng.start_time.value)), int(round(rng.duration.value))))
    return out


@pytest.mark.parametrize("fmt", ["otio", "otioz", "fcp7"])
def test_exports_read_back_with_the_same_clips_cuts_and_durations(film, tmp_path, fmt):
    """Through OpenTimelineIO's own adapters; each format read by an independent reader
    (pycmx, pyaaf2, lxml and the format's rules) is in test_exports.py."""
    folder, plan, tl = film
    out = export_timeline(tl, fmt, tmp_path / f"film{FORMATS[fmt][1]}")
    back = read_timeline(out)
    assert back.duration().to_frames() == plan.duration
    assert _cuts(back) == _cuts(tl)
    names = [m.name for c in video_track(back).find_clips() for m in c.markers]
    assert set(s.id for _, s in plan.shots()) <= set(names)
    if fmt in ("otio", "otioz"):  # these keep each marker on its clip, at its frame
        def marks(t):
            return sorted((c.name, m.name, c.transformed_time(m.marked_range.start_time,
                                                              video_track(t)).to_frames())
                          for c in video_track(t).find_clips() for m in c.markers)
        assert marks(back) == marks(tl)


def test_relative_media_paths(film, tmp_path):
    folder, plan, tl = film
    out = export_timeline(tl, "otio", folder / "relative.otio", relative=True)
    back = read_timeline(out)
    url = next(iter(back.find_clips())).media_reference.target_url
    assert not url.startswith("file:") and url_to_path(url, folder).is_file()


def test_h264_master(film, tmp_path):
    folder, plan, _ = film
    m = conform(folder / "film.otio", tmp_path / "web.mp4", "h264")
    info = probe(m)
    v, a = info["video"], info["audio"]
    assert (v["codec"], v["profile"], v["pix_fmt"]) == ("h264", "High", "yuv420p")
    assert (v["primaries"], v["transfer"], v["matrix"]) == (1, 1, 1)  # BT.709
    assert v["frames"] == plan.duration and v["rate"] == 24
    assert (a["codec"], a["rate"]) == ("aac", 48000)
    assert abs(a["samples"] - plan.duration * 2000) < 2000  # within one frame (AAC frames)
    data = m.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # +faststart
    assert b"open_gop=0" in data  # closed GOPs, as x264 records its settings


def test_prores_master(film, tmp_path):
    folder, plan, _ = film
    m = conform(folder / "film.otio", tmp_path / "master.mov", "prores")
    info = probe(m)
    v, a = info["video"], info["audio"]
    assert (v["codec"], v["profile"], v["pix_fmt"], v["tag"]) == ("prores", "HQ", "yuv422p10le",
                                                                  "apch")
    assert (v["primaries"], v["transfer"], v["matrix"]) == (1, 1, 1)
    assert v["frames"] == plan.duration
    assert (a["codec"], a["rate"], a["samples"]) == ("pcm_s24le", 48000, plan.duration * 2000)
    data = m.read_bytes()
    i = data.find(b"apch")
    assert data[i + 16:i + 20] == b"apl0"  # sample description vendor


def test_dissolve_and_fade_are_rendered(film):
    folder, plan, tl = film
    frames = list(timeline_frames(read_timeline(folder / "film.otio"), folder))
    assert len(frames) == plan.duration
    assert frames[0].mean() < 0.2 * frames[30].mean()  # fading in from black
    shots = [s for _, s in plan.shots()]
    cut = sum(s.duration for s in shots[:-1])  # the dissolve is centred on the last cut
    before, mid, after = frames[cut - 13], frames[cut], frames[cut + 12]
    # halfway through, the picture is between the two shots
    blend = 0.5 * (before.astype(float) + after.astype(float))
    assert np.abs(mid.astype(float) - blend).mean() < np.abs(before.astype(float) -
                                                             after.astype(float)).mean()


def test_each_clips_decoder_is_closed_once_passed_gaps_included(film, monkeypatch):
    """Clip, black gap, clip, gap … : a clip's decoder (its threads and frame pool) is
    closed once the picture has moved past it, so memory does not grow with the film."""
    import aiprod_post.editing.conform as conform_module

    folder, plan, tl = film
    clips = [c for c in video_track(tl) if isinstance(c, otio.schema.Clip)]
    cut = otio.schema.Timeline(name="gappy", metadata=dict(tl.metadata))
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    for _ in range(3):
        for clip in clips:
            track.append(clip.clone())
            track.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(
                duration=otio.opentime.RationalTime(3, 24))))
    cut.tracks.append(track)
    live: set[int] = set()
    most = 0
    opened, closed = conform_module._Reader.__init__, conform_module._Reader.close

    def init(self, *args, **kwargs):
        opened(self, *args, **kwargs)
        live.add(id(self))

    def close(self):
        closed(self)
        live.discard(id(self))

    monkeypatch.setattr(conform_module._Reader, "__init__", init)
    monkeypatch.setattr(conform_module._Reader, "close", close)
    n = 0
    for _ in timeline_frames(cut, folder, rgb=False):
        n += 1
        most = max(most, len(live))
    assert n == int(track.duration().value)
    assert most <= 2 and not live  # the clip just passed at most, and none left open


def test_missing_media_names_the_clip_and_path(film, tmp_path):
    folder, plan, tl = film
    broken = tl.clone()
    clip = next(iter(video_track(broken).find_clips()))
    clip.media_reference.target_url = "file:///nowhere/missing.mov"
    with pytest.raises(MediaError) as err:
        conform(broken, tmp_path / "x.mp4", "h264", audio=folder / "mix.wav")
    assert "clip 1" in str(err.value) and "/nowhere/missing.mov" in str(err.value)
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob(".*part*"))


def test_media_shorter_than_its_range(film, tmp_path):
    folder, plan, tl = film
    broken = tl.clone()
    clip = next(iter(video_track(broken).find_clips()))
    sr = clip.source_range
    clip.source_range = otio.opentime.TimeRange(sr.start_time, sr.duration + sr.duration)
    with pytest.raises(MediaError, match="ends before"):
        conform(broken, tmp_path / "x.mp4", "h264", audio=folder / "mix.wav")
    assert not list(tmp_path.iterdir())


def test_cli_errors_exit_2(film, tmp_path):
    folder, _, _ = film
    runner = CliRunner()
    r = runner.invoke(main, ["conform", str(folder / "film.otio"), "-o",
                             str(tmp_path / "no" / "dir" / "m.mp4")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(main, ["export", str(folder / "film.otio"), "--format", "mp3", "-o", "x"])
    assert r.exit_code == 2
    r = runner.invoke(main, ["export", str(folder / "film.otio"), "--format", "fcp7", "-o",
                             str(tmp_path / "f.xml")])
    assert r.exit_code == 0 and (tmp_path / "f.xml").read_text().startswith("<?xml")


def test_subtitles_keep_the_limits():
    from aiprod_post.audio.tts import EspeakEngine, Voice

    engine = EspeakEngine()
    texts = ["Because you ran. Nobody runs for a ferry unless something is waiting for them "
             "on the other side of the water, and tonight something is.",
             "Tomorrow.", "Tonight?", "No."]
    lines, t = [], 1.0
    for text in texts:
        s = engine.synthesize(text, Voice())
        lines.append(SpokenLine(t, text, [(w.text, w.start, w.end) for w in s.words]))
        t += s.duration + 0.3
    cues = subtitle_cues(lines)
    assert len(cues) >= 5
    for a, b in zip(cues, cues[1:]):
        assert a.end <= b.start + 1e-9
    for c in cues:
        assert len(c.lines) <= 2 and all(len(x) <= MAX_LINE for x in c.lines)
        assert c.end - c.start >= MIN_SECONDS - 1e-9
        assert len(c.text.replace("\n", "")) / (c.end - c.start) <= MAX_CPS + 1e-6
    srt, vtt = to_srt(cues), to_webvtt(cues)
    assert srt.startswith("1\n00:00:01,") and vtt.startswith("WEBVTT\n\n00:00:01.")


def test_subtitles_burn_into_the_picture_only_while_shown(film, tmp_path):
    from aiprod_post.editing.subtitles import Cue
    folder, plan, _ = film
    cues = [Cue(1.0, 2.0, ["Ferry's gone."])]
    plain = conform(folder / "film.otio", tmp_path / "plain.mp4", "h264")
    burned = conform(folder / "film.otio", tmp_path / "burned.mp4", "h264", subtitles=cues)
    import av
    with av.open(str(plain)) as a, av.open(str(burned)) as b:
        pairs = list(zip(a.decode(video=0), b.decode(video=0)))
    diff = [np.abs(x.to_ndarray(format="rgb24").astype(int)
                   - y.to_ndarray(format="rgb24").astype(int)) for x, y in pairs]
    during = diff[36]  # 1.5 s at 24 fps
    assert during.max() > 100
    rows = np.nonzero(during.max(axis=(1, 2)) > 100)[0]
    assert rows.min() > H // 2  # bottom of the frame
    # before and after, the subtitle band holds only compression noise (the encoder spends
    # its bits a little differently around the change), far less than the text itself
    band = slice(rows.min(), rows.max() + 1)
    shown = during[band].mean()
    assert shown > 10 * max(diff[12][band].mean(), diff[60][band].mean(), 0.1)


def test_dnxhr_master(tmp_path):
    # DNxHR needs at least 256x120 or so: a small frame of its own
    frames = (np.full((144, 256, 3), 16 * i, np.uint8) for i in range(12))
    m = encode_master(frames, 12, Fraction(25), 256, 144, tmp_path / "d.mov", PROFILES["dnxhr"],
                      None)
    v = probe(m)["video"]
    assert (v["codec"], v["pix_fmt"], v["frames"]) == ("dnxhd", "yuv422p10le", 12)
    assert "HQX" in str(v["profile"]).upper() and (v["primaries"], v["matrix"]) == (1, 1)
    with pytest.raises(MediaError, match="dnxhd"):
        encode_master(iter([np.zeros((96, 160, 3), np.uint8)]), 1, Fraction(25), 160, 96,
                      tmp_path / "small.mov", PROFILES["dnxhr"], None)
    assert not list(tmp_path.glob("small*")) and not list(tmp_path.glob(".small*"))


@pytest.mark.parametrize("profile,codec,pix,tags", [
    ("hdr-pq", "hevc", "yuv420p10le", (9, 16, 9)),
    ("hdr-hlg", "hevc", "yuv420p10le", (9, 18, 9)),
])
def test_optional_masters(film, tmp_path, profile, codec, pix, tags):
    folder, plan, _ = film
    m = conform(folder / "film.otio", tmp_path / f"m{PROFILES[profile].suffix}", profile)
    v = probe(m)["video"]
    assert (v["codec"], v["pix_fmt"]) == (codec, pix)
    assert (v["primaries"], v["transfer"], v["matrix"]) == tags
    assert v["frames"] == plan.duration and "10" in str(v["profile"])


def test_media_at_another_rate_is_conformed_with_a_warning(film, tmp_path):
    folder, plan, tl = film
    other = tl.clone()
    clip = next(iter(video_track(other).find_clips()))
    frames = (np.full((H, W, 3), 80, np.uint8) for _ in range(200))
    src = encode_master(frames, 200, Fraction(25), W, H, tmp_path / "pal.mov",
                        PROFILES["prores"], None)
    clip.media_reference.target_url = f"file://{src}"
    with pytest.warns(UserWarning, match="25 fps on a 24 fps timeline"):
        m = conform(other, tmp_path / "x.mp4", "h264", audio=folder / "mix.wav")
    assert probe(m)["video"]["frames"] == plan.duration


def test_a_held_frame_is_converted_once_and_encoded_each_time(tmp_path):
    """The same array yielded again (a held frame) gives the same master as copies of it."""
    import av

    rng = np.random.default_rng(5)
    a, b = (rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(2))
    held = [a, a, a, b, b, a]
    copies = [f.copy() for f in held]
    outs = []
    for name, frames in (("held", held), ("copies", copies)):
        out = encode_master(iter(frames), 6, Fraction(24), 96, 64, tmp_path / f"{name}.mov",
                            PROFILES["prores"], None)
        with av.open(str(out)) as c:
            outs.append([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert len(outs[0]) == 6
    assert all(np.array_equal(x, y) for x, y in zip(*outs))
    assert not np.array_equal(outs[0][2], outs[0][3])
