"""Speakers for a cast by measured pitch: the F0 estimator against signals of known F0 and
against a cepstral estimate on espeak-ng's speech, and the choice on real measured pitch.

coqui-tts cannot be imported in CI, so a "model" here is a bank of real voices whose F0 is
measured the way CoquiEngine.speaker_pitches measures a model's speakers: glottal pulse
trains through vowel formants at known F0, and espeak-ng's variants."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from aiprod_post.audio.speakers import FEMALE_F0, choose_speakers, f0_track, median_f0
from aiprod_post.audio.tts import EspeakEngine, Voice

RATE = 48000
SENTENCE = "Nobody is waiting on the old harbour wall; we all go home alone."


def glottal_vowel(f0: float, seconds: float = 1.2, seed: int = 0, snr_db: float = 25.0
                  ) -> np.ndarray:
    """An /a/ at ``f0``: Rosenberg glottal pulses (40 % opening, 16 % closing) with 0.5 %
    jitter, differentiated (lip radiation), through three formant resonators, plus noise."""
    rng = np.random.default_rng(seed)
    out, t = [], 0.0
    while t < seconds:
        period = 1.0 / f0 * (1 + 0.005 * rng.standard_normal())
        n = int(round(period * RATE))
        tp, tn = int(0.4 * n), int(0.16 * n)
        pulse = np.zeros(n)
        pulse[:tp] = 0.5 * (1 - np.cos(np.pi * np.arange(tp) / tp))
        pulse[tp:tp + tn] = np.cos(np.pi / 2 * np.arange(tn) / tn)
        out.append(pulse)
        t += n / RATE
    x = np.diff(np.concatenate(out), prepend=0.0)
    for freq, bw in ((700, 80), (1220, 90), (2600, 120)):
        r = np.exp(-np.pi * bw / RATE)
        x = signal.lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * freq / RATE), r * r], x)
    x /= np.abs(x).max()
    noise = rng.standard_normal(x.size) * np.sqrt(np.mean(x ** 2) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def cepstral_track(x: np.ndarray, rate: int, fmin: float = 60.0, fmax: float = 500.0
                   ) -> np.ndarray:
    """An independent estimate every 10 ms: the real cepstrum's peak in 64 ms Hann frames
    (NaN where the frame is quiet or the peak does not stand out)."""
    x = signal.resample_poly(x.astype(np.float64), 1, rate // 16000)
    frames = np.lib.stride_tricks.sliding_window_view(x, 1024)[::160] * np.hanning(1024)
    energy = (frames ** 2).mean(axis=1)
    ceps = np.fft.irfft(np.log(np.abs(np.fft.rfft(frames, axis=1)) + 1e-9), axis=1)
    lo, hi = int(16000 / fmax), int(16000 / fmin)
    q = lo + np.argmax(ceps[:, lo:hi], axis=1)
    clear = (ceps[np.arange(len(q)), q] > 0.08) & (energy > 0.05 * energy.max())
    return np.where(clear, 16000 / q, np.nan)


@pytest.mark.parametrize("f0", [82.0, 97.5, 118.0, 141.0, 176.0, 204.0, 233.0, 287.0, 340.0])
def test_the_estimator_finds_a_known_f0(f0):
    measured = median_f0(glottal_vowel(f0, seed=int(f0)), RATE)
    assert measured == pytest.approx(f0, rel=0.01)


def test_the_estimator_follows_a_glide_and_says_nothing_of_noise():
    t = np.arange(int(1.0 * RATE)) / RATE
    f = 110 + 110 * t  # 110 → 220 Hz in a second
    x = signal.sawtooth(2 * np.pi * np.cumsum(f) / RATE).astype(np.float32)
    track = f0_track(x, RATE)
    times = np.arange(track.size) * 0.01 + 0.02  # each frame's middle
    ok = ~np.isnan(track)
    assert ok.mean() > 0.95
    np.testing.assert_allclose(track[ok], 110 + 110 * times[ok], rtol=0.02)
    noise = np.random.default_rng(1).standard_normal(RATE).astype(np.float32)
    assert median_f0(noise, RATE) is None
    assert median_f0(np.zeros(RATE, np.float32), RATE) is None


#: espeak-ng variants as a multi-speaker model's speakers (default pitch)
BANK = ["m1", "m2", "m3", "m7", "grandpa", "f1", "f2", "f4", "f5", "grandma", "steph"]
FEMALE = {"f1", "f2", "f4", "f5", "grandma", "steph"}


@pytest.fixture(scope="module")
def espeak_pitches() -> dict[str, float]:
    engine = EspeakEngine()
    out = {}
    for variant in BANK:
        s = engine.synthesize(SENTENCE, Voice("en", variant))
        # frame by frame against an independent estimate on the same speech (a cepstral
        # frame's middle is 4 ms from a YIN frame's; quefrency steps are ~1 % here)
        ours, ref = f0_track(s.samples, s.sample_rate), cepstral_track(s.samples, s.sample_rate)
        n = min(ours.size, ref.size)
        ratio = ours[:n] / ref[:n]
        ratio = ratio[~np.isnan(ratio)]
        assert ratio.size > 40 and np.median(ratio) == pytest.approx(1.0, abs=0.02), variant
        assert np.mean(np.abs(ratio - 1) < 0.05) > 0.7, variant  # octave errors are rare
        out[variant] = median_f0(s.samples, s.sample_rate)
    return out


def test_measured_espeak_voices_fall_in_their_gender_bands(espeak_pitches):
    for variant, f0 in espeak_pitches.items():
        assert (f0 >= FEMALE_F0) == (variant in FEMALE), (variant, f0)


CAST = {"NELL": ("female", 65), "IVO": ("male", 20), "MARTA": ("female", 24),
        "SKIPPER": ("male", 70), "ROSIE": ("female", 8), "STRANGER": ("unknown", None)}


def test_speakers_by_gender_and_age_on_measured_espeak_voices(espeak_pitches):
    chosen = choose_speakers(list(CAST), CAST, espeak_pitches)
    assert len(set(chosen.values())) == len(CAST)  # nobody shares
    for name in ("NELL", "MARTA", "ROSIE"):
        assert chosen[name] in FEMALE, (name, chosen)  # children: the high voices
    for name in ("IVO", "SKIPPER"):
        assert chosen[name] not in FEMALE, (name, chosen)
    f0 = {n: espeak_pitches[s] for n, s in chosen.items()}
    # the older woman lower than the young one and the girl; the young man higher than
    # the old one
    assert f0["ROSIE"] > f0["NELL"] and f0["MARTA"] > f0["NELL"] and f0["IVO"] > f0["SKIPPER"]
    # cast order: a character added later takes nobody's speaker
    more = choose_speakers([*CAST, "DOCKER"], {**CAST, "DOCKER": ("male", 40)}, espeak_pitches)
    assert {k: more[k] for k in CAST} == chosen and more["DOCKER"] not in chosen.values()


def test_speakers_on_glottal_voices_of_known_pitch():
    known = {"low": 92.0, "mid": 112.0, "bright": 138.0, "alto": 178.0, "soprano": 222.0,
             "treble": 285.0}
    pitches = {s: median_f0(glottal_vowel(f, seed=i), RATE) for i, (s, f) in
               enumerate(known.items())}
    for s, f in known.items():
        assert pitches[s] == pytest.approx(f, rel=0.01)
    people = {"ROSIE": ("female", 8), "NELL": ("female", 65), "IVO": ("male", 20),
              "SKIPPER": ("male", 70)}
    assert choose_speakers(list(people), people, pitches) == {
        "ROSIE": "treble", "NELL": "alto", "IVO": "bright", "SKIPPER": "mid"}


def test_a_speaker_is_shared_only_when_the_cast_says_so_or_none_is_left():
    pitches = {"a": 100.0, "b": 120.0, "c": 200.0}
    people = {"NELL": ("female", 65), "IVO": ("male", 20), "JONAH": ("male", 40)}
    # given: kept, even shared, and handed to nobody else
    given = choose_speakers(list(people), people, pitches, {"NELL": "a", "JONAH": "a"})
    assert given == {"NELL": "a", "IVO": "b", "JONAH": "a"}
    # four people, three speakers: one shared, the others distinct
    four = {**people, "MARTA": ("female", 30)}
    chosen = choose_speakers(list(four), four, pitches)
    assert sorted(chosen.values()).count("c") == 2 and len(set(chosen.values())) == 3
    assert chosen["NELL"] == "c"  # the women fit only c; NELL came first
    with pytest.raises(ValueError, match=r"characters\.NELL\.speaker: no speaker 'zz'"):
        choose_speakers(["NELL"], people, pitches, {"NELL": "zz"})
