"""espeak-ng speech with event timings, voices, delivery, visemes, and the dialogue mix."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

from aiprod_post.cli import main
from aiprod_post.errors import MediaError
from aiprod_post.audio.io import read_audio
from aiprod_post.audio.loudness import measure
from aiprod_post.audio.mix import (
    Bed,
    DialogueClip,
    MixSettings,
    loop_to_length,
    mix_stems,
    place_dialogue,
    procedural_bed,
)
from aiprod_post.audio.tts import EspeakEngine, Voice, assign_voices, delivery_for, speakable_text
from aiprod_post.audio.visemes import mouth_cues, shapes_per_frame, to_rhubarb_json, to_rhubarb_tsv, viseme_for

ENGINE = EspeakEngine()
FS = 48000


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2))) if len(x) else 0.0


def test_speech_is_48k_with_ordered_word_timings_that_hold_the_sound():
    s = ENGINE.synthesize("The board is optimistic. Tomorrow, then.", Voice("en", "m3"))
    assert s.sample_rate == FS and s.samples.dtype == np.float32 and s.duration > 1.0
    assert [w.text for w in s.words] == ["The", "board", "is", "optimistic", "Tomorrow", "then"]
    starts = [w.start for w in s.words]
    assert starts == sorted(starts) and all(w.end > w.start for w in s.words)
    assert s.words[-1].end <= s.duration + 1e-6
    # the sound is inside the words: the pause between the sentences is quiet
    inside = np.concatenate([s.samples[int(w.start * FS):int(w.end * FS)] for w in s.words])
    gap = s.samples[int(s.words[3].end * FS) + 480:int(s.words[4].start * FS) - 480]
    assert len(gap) > FS // 20 and rms(gap) < 0.1 * rms(inside)


def test_phonemes_cover_the_words():
    s = ENGINE.synthesize("My brother runs a boat.", Voice("en-us", "f2"))
    assert len(s.phonemes) >= 12
    assert s.phonemes[0].start <= s.words[0].start + 0.05
    assert {viseme_for(p.text) for p in s.phonemes} >= {"A", "B"}  # m, b: closed lips


def test_numbers_and_abbreviations_are_spoken_as_words():
    assert speakable_text("Dr. Ames paid $5 at 7:00.") == "Doctor Ames paid 5 dollars at 7 o'clock."
    # espeak-ng reads digits as words: "42" takes longer to say than "4"
    four = ENGINE.synthesize("4", Voice()).duration
    forty_two = ENGINE.synthesize("42", Voice()).duration
    assert forty_two > four * 1.3


def test_each_character_gets_a_distinct_stable_voice_and_overrides_win():
    cast = ["NELL", "IVO", "JONAH", "MARA", "TOM"]
    voices = assign_voices(cast)
    assert len({(v.name, v.pitch, v.rate) for v in voices.values()}) == len(cast)
    assert assign_voices(cast + ["ADA"])["NELL"] == voices["NELL"]  # stable when cast grows
    custom = Voice("en-gb-scotland", "f1", pitch=70)
    assert assign_voices(cast, {"nell": custom})["NELL"] == custom


def test_voices_sound_different():
    voices = assign_voices(["NELL", "IVO"])
    a = ENGINE.synthesize("One for the island, please.", voices["NELL"])
    b = ENGINE.synthesize("One for the island, please.", voices["IVO"])
    assert a.voice != b.voice
    assert abs(a.duration - b.duration) > 0.02 or not np.allclose(
        a.samples[:4800], b.samples[:4800], atol=1e-3)


def test_parentheticals_change_delivery():
    text = "Then drink up before the boat leaves."
    plain = ENGINE.synthesize(text, Voice())
    whisper = ENGINE.synthesize(text, Voice(), delivery_for("(whispering)"))
    shout = ENGINE.synthesize(text, Voice(), delivery_for("(shouting over the engine)"))
    beat = ENGINE.synthesize(text, Voice(), delivery_for("(beat)"))
    assert whisper.duration > plain.duration and rms(whisper.samples) < rms(plain.samples) / 2
    assert shout.duration < plain.duration and rms(shout.samples) > rms(plain.samples)
    assert beat.words[0].start == pytest.approx(0.6, abs=0.02)
    assert rms(beat.samples[: int(0.55 * FS)]) == 0.0


def test_bad_voice_and_empty_text():
    with pytest.raises(MediaError, match="unknown espeak-ng voice 'xx-nowhere"):
        ENGINE.synthesize("Hello.", Voice("xx-nowhere", ""))
    with pytest.raises(MediaError, match="nothing to speak"):
        ENGINE.synthesize("   ", Voice())


def test_mouth_cues_are_frame_quantised_and_follow_the_speech_envelope():
    fps = Fraction(24)
    s = ENGINE.synthesize("Bob may buy a map of the bay.", Voice())
    cues = mouth_cues(s.phonemes, s.duration, fps)
    for c in cues:
        assert c.start * 24 == pytest.approx(round(c.start * 24), abs=1e-9)
        assert c.end * 24 == pytest.approx(round(c.end * 24), abs=1e-9)
    n = len(shapes_per_frame(cues, int(s.duration * 24) + 1, fps))
    open_ = np.array([sh not in "XA" for sh in shapes_per_frame(cues, n, fps)], float)
    env = np.array([rms(s.samples[int(f / 24 * FS):int((f + 1) / 24 * FS)]) for f in range(n)])
    lags = list(range(-4, 5))
    a, b = open_ - open_.mean(), env - env.mean()
    score = [float(np.dot(np.roll(a, k)[4:-4], b[4:-4])) for k in lags]
    assert abs(lags[int(np.argmax(score))]) <= 1  # mouth and sound agree within one frame


def test_rhubarb_exports():
    s = ENGINE.synthesize("Hello there.", Voice())
    cues = mouth_cues(s.phonemes, s.duration, Fraction(24))
    tsv = to_rhubarb_tsv(cues).splitlines()
    assert tsv[0].split("\t")[0] == "0.00" and all(ln.split("\t")[1] in "ABCDEFGHX" for ln in tsv)
    data = json.loads(to_rhubarb_json(cues, "hello.wav"))
    assert data["metadata"]["soundFile"] == "hello.wav"
    assert {"start", "end", "value"} <= set(data["mouthCues"][0])


# ---------------------------------------------------------------- mixing


def test_dialogue_is_placed_by_sample_without_clicks():
    tone = np.full(4800, 0.5, np.float32)  # a DC step: worst case for clicks
    bus = place_dialogue([DialogueClip(12345, tone)], 48000)
    assert bus[12344] == 0.0 and bus[12345] == 0.0 and bus[12345 + 2400] == pytest.approx(0.5)
    assert np.abs(np.diff(bus)).max() < 0.5 / 100  # no step larger than 1% of the level


def test_stems_sum_to_the_mix_and_beds_duck_under_dialogue():
    n = 20 * FS
    speech = ENGINE.synthesize("The ferry left at six, and it will not come back tonight.",
                               Voice()).samples
    music = procedural_bed("music", 8, seed=1, light="night")
    amb = procedural_bed("ambience", 5, seed=2, exterior=True)
    settings = MixSettings(duck_db=-12)
    st = mix_stems([DialogueClip(8 * FS, speech)], [Bed(0, n, music)], [Bed(0, n, amb)], n,
                   settings)
    dry = mix_stems([], [Bed(0, n, music)], [Bed(0, n, amb)], n, settings)
    np.testing.assert_array_equal(st.mix, st.dx + st.mx + st.fx)

    def change_db(lo: float, hi: float) -> float:
        a, b = int(lo * FS), int(hi * FS)
        return 20 * np.log10(rms(st.mx[a:b]) / rms(dry.mx[a:b]))

    assert change_db(3, 6) == pytest.approx(0.0, abs=0.01)  # before the line: untouched
    assert change_db(8.8, 10.5) == pytest.approx(-12, abs=1.5)  # under the line: ducked
    assert change_db(17, 19) == pytest.approx(0.0, abs=0.05)  # after: released


def test_stems_are_mixed_a_window_at_a_time_without_seams(tmp_path):
    """Stems stream to WAV writers a window (2**18 samples) at a time; a line across a
    window boundary, loaded only when mixed, lands whole, and the beds run on."""
    from aiprod_post.audio.mix import render_stems
    from aiprod_post.audio.stream import WavWriter

    n = 12 * FS
    boundary = 1 << 18
    tone = np.full(FS, 0.5, np.float32)
    loads = []

    def line():
        loads.append(1)
        return tone

    music = procedural_bed("music", 4, seed=3)
    clip = DialogueClip(boundary - FS // 2, line, length=FS)
    paths = {s: tmp_path / f"{s}.wav" for s in ("DX", "MX", "FX")}
    with WavWriter(paths["DX"], 2) as dx, WavWriter(paths["MX"], 2) as mx, \
            WavWriter(paths["FX"], 2) as fx:
        render_stems([clip], [Bed(0, n, music)], [], n, {"DX": dx, "MX": mx, "FX": fx})
    assert loads  # the line was read when mixed, not before
    dx = read_audio(paths["DX"])[0]
    centre = 0.5 / np.sqrt(2)
    assert dx.shape == (n, 2)
    # whole and flat across the boundary, zero outside the line
    np.testing.assert_allclose(dx[boundary - FS // 4:boundary + FS // 4], centre, atol=1e-6)
    assert np.abs(dx[:boundary - FS // 2]).max() == 0 and np.abs(dx[boundary + FS // 2:]).max() == 0
    # the same programme mixed in one piece agrees with the streamed stems (24-bit WAV)
    whole = mix_stems([DialogueClip(boundary - FS // 2, tone)], [Bed(0, n, music)], [], n)
    np.testing.assert_allclose(read_audio(paths["MX"])[0], whole.mx, atol=2 ** -22)
    mx = read_audio(paths["MX"])[0][:, 0]
    jumps = np.abs(np.diff(mx))
    assert jumps[boundary - 1] < 4 * np.percentile(jumps, 99)  # no seam at the boundary


def test_beds_loop_seamlessly_and_are_deterministic():
    bed = procedural_bed("ambience", 3, seed=5)
    np.testing.assert_array_equal(bed, procedural_bed("ambience", 3, seed=5))
    long = loop_to_length(bed, 10 * FS, 4800)
    assert long.shape == (10 * FS, 2)
    # no dropout at the seams: level in every 100 ms stays near the bed's level
    blocks = long[: 100 * 4800].reshape(100, 4800, 2)
    levels = np.sqrt((blocks ** 2).mean(axis=(1, 2)))
    assert levels.min() > 0.5 * levels.mean()
    assert measure(bed, FS).integrated == pytest.approx(measure(bed, FS).integrated)


# ---------------------------------------------------------------- CLI


def test_speak_loudness_normalize_cli(tmp_path):
    runner = CliRunner()
    out = tmp_path / "line.wav"
    r = runner.invoke(main, ["speak", "Get in, then!", "-o", str(out), "--voice", "en-us+f2",
                             "--parenthetical", "(shouting)"])
    assert r.exit_code == 0, r.output
    timings = json.loads(out.with_suffix(".json").read_text())
    assert [w["text"] for w in timings["words"]] == ["Get", "in", "then"]
    assert timings["mouth_cues"] and out.with_suffix(".tsv").exists()
    r = runner.invoke(main, ["loudness", str(out), "--json"])
    data = json.loads(r.output[r.output.index("["):])
    assert data[0]["true_peak"] < 0 and data[0]["channels"] == 1
    norm = tmp_path / "norm.wav"
    r = runner.invoke(main, ["normalize", str(out), "-o", str(norm), "--target", "ebu-r128"])
    assert r.exit_code == 0 and "I -23.0 LUFS" in r.output
    r = runner.invoke(main, ["normalize", str(out), "-o", str(tmp_path / "x.wav"),
                             "--target", "loud"])
    assert r.exit_code == 2 and "unknown loudness target" in r.output
    assert not (tmp_path / "x.wav").exists()
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not audio")
    r = runner.invoke(main, ["loudness", str(bad)])
    assert r.exit_code == 2 and "bad.wav" in r.output


def test_the_same_line_gives_the_same_samples_whatever_was_spoken_before():
    voices = assign_voices(["NELL", "IVO"])
    first = ENGINE.synthesize("Tonight, then?", voices["IVO"])
    ENGINE.synthesize("Ferry's gone. Left at six.", voices["NELL"], delivery_for("(whispering)"))
    ENGINE.synthesize("Get in!", voices["NELL"], delivery_for("(shouting)"))
    again = ENGINE.synthesize("Tonight, then?", voices["IVO"])
    np.testing.assert_array_equal(first.samples, again.samples)
    assert first.phonemes == again.phonemes
