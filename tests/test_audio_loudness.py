"""BS.1770-4 / EBU R128 measurement and normalisation, checked against the EBU test cases.

The signals are synthesised from their definitions in EBU Tech 3341 (cases 1-6, 9, 12 and
true-peak cases 15-19) and EBU Tech 3342 (cases 1-4); the tolerances are the published ones.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from aiprod_post.errors import MediaError
from aiprod_post.audio.io import read_audio, write_wav
from aiprod_post.audio.loudness import k_weighting_sos, measure, oversampled_peaks, true_peak
from aiprod_post.audio.normalize import TARGETS, limit_true_peak, normalize, resolve_target

FS = 48000


def sine(dbfs: float, seconds: float, freq: float = 1000.0, channels: int = 2, *,
         amplitude: float | None = None, phase_deg: float = 0.0, fs: int = FS) -> np.ndarray:
    t = np.arange(int(round(seconds * fs))) / fs
    a = amplitude if amplitude is not None else 10 ** (dbfs / 20)
    s = a * np.sin(2 * np.pi * freq * t + math.radians(phase_deg))
    return np.repeat(s[:, None], channels, axis=1)


def seq(*parts: tuple[float, float]) -> np.ndarray:
    return np.concatenate([sine(db, sec) for db, sec in parts])


def test_k_weighting_matches_the_coefficients_printed_in_bs1770():
    sos = k_weighting_sos(48000)
    # ITU-R BS.1770-4, Table 1 (pre-filter) and Table 2 (RLB filter), 48 kHz
    np.testing.assert_allclose(sos[0], [1.53512485958697, -2.69169618940638, 1.19839281085285,
                                        1.0, -1.69065929318241, 0.73248077421585], atol=1e-9)
    np.testing.assert_allclose(sos[1], [1.0, -2.0, 1.0, 1.0, -1.99004745483398,
                                        0.99007225036621], atol=1e-9)


@pytest.mark.parametrize("case,signal_,expected", [
    (1, lambda: seq((-23, 20)), -23.0),
    (2, lambda: seq((-33, 20)), -33.0),
    (3, lambda: seq((-36, 10), (-23, 60), (-36, 10)), -23.0),
    (4, lambda: seq((-72, 10), (-36, 10), (-23, 60), (-36, 10), (-72, 10)), -23.0),
    (5, lambda: seq((-26, 20), (-20, 20.1), (-26, 20)), -23.0),
])
def test_tech3341_integrated(case, signal_, expected):
    m = measure(signal_(), FS)
    assert m.integrated == pytest.approx(expected, abs=0.1), f"case {case}"


def test_tech3341_case1_momentary_and_short_term():
    m = measure(seq((-23, 20)), FS)
    assert m.momentary_max == pytest.approx(-23.0, abs=0.1)
    assert m.short_term_max == pytest.approx(-23.0, abs=0.1)


def test_tech3341_case6_five_channels_with_surround_weighting():
    t = np.arange(20 * FS) / FS
    s = np.sin(2 * np.pi * 1000 * t)
    x = np.stack([s * 10 ** (-28 / 20), s * 10 ** (-28 / 20), s * 10 ** (-24 / 20),
                  s * 10 ** (-30 / 20), s * 10 ** (-30 / 20)], axis=1)
    assert measure(x, FS).integrated == pytest.approx(-23.0, abs=0.1)


def test_lfe_is_excluded_in_5_1():
    t = np.arange(10 * FS) / FS
    s = 0.1 * np.sin(2 * np.pi * 1000 * t)
    quiet_lfe = np.stack([s, s, s, 0 * s, s, s], axis=1)
    loud_lfe = quiet_lfe.copy()
    loud_lfe[:, 3] = 0.9 * np.sin(2 * np.pi * 60 * t)
    assert measure(loud_lfe, FS).integrated == pytest.approx(measure(quiet_lfe, FS).integrated,
                                                             abs=1e-9)


def test_tech3341_case9_short_term_is_constant():
    x = np.concatenate([seq((-20, 1.34), (-30, 1.66)) for _ in range(5)])
    from aiprod_post.audio.loudness import _segment_power, _to_lufs, _window_power
    st = _to_lufs(_window_power(_segment_power(x, FS), 30))
    np.testing.assert_allclose(st, -23.0, atol=0.1)


def test_tech3341_case12_momentary_is_constant():
    x = np.concatenate([seq((-20, 0.18), (-30, 0.22)) for _ in range(25)])
    from aiprod_post.audio.loudness import _segment_power, _to_lufs, _window_power
    # momentary blocks that start on a period boundary hold exactly one cycle
    m = _to_lufs(_window_power(_segment_power(x, FS), 4))[::4]
    np.testing.assert_allclose(m, -23.0, atol=0.1)


def _faded(x: np.ndarray, ms: float = 20.0) -> np.ndarray:
    # The definitions describe steady sines; a step onset would ring in any
    # band-limited interpolator, so the synthesised files fade in and out.
    n = int(FS * ms / 1000)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))
    x = x.copy()
    x[:n] *= ramp[:, None]
    x[-n:] *= ramp[::-1, None]
    return x


@pytest.mark.parametrize("case,freq,amplitude,phase,expected", [
    (15, FS / 4, 0.50, 0.0, -6.0),
    (16, FS / 4, 0.50, 45.0, -6.0),
    (17, FS / 6, 0.50, 60.0, -6.0),
    (18, FS / 8, 0.50, 67.5, -6.0),
    (19, FS / 4, 1.41, 45.0, 3.0),
])
def test_tech3341_true_peak(case, freq, amplitude, phase, expected):
    x = _faded(sine(0, 1.0, freq, amplitude=amplitude, phase_deg=phase))
    tp = true_peak(x)
    assert expected - 0.4 <= tp <= expected + 0.2, f"case {case}: {tp:.3f} dBTP"
    if case == 19:
        # every sample is at or under full scale, yet the true peak is +3 dBTP
        assert np.abs(x).max() <= 1.0 + 1e-9


def test_per_sample_true_peaks_match_an_independent_4x_resampler():
    """The limiter's detector, sample by sample (across its internal block boundaries),
    against scipy's polyphase resampler with its own Kaiser filter."""
    from scipy import signal

    rng = np.random.default_rng(3)
    n = 70000
    sos = signal.butter(12, 16000, fs=FS, output="sos")
    x = signal.sosfilt(sos, rng.standard_normal((n + 2000, 2)), axis=0)[2000:]
    x /= np.abs(x).max()
    ours = oversampled_peaks(x)
    up = signal.resample_poly(x, 4, 1, axis=0, window=("kaiser", 10.0))
    ref = np.abs(up).reshape(n, 4, 2).max(axis=(1, 2))
    core = slice(100, n - 100)  # the two filters treat the programme's edges differently
    db = 20 * np.log10(ours[core] / ref[core])
    assert np.abs(db).max() < 0.01
    assert ours.shape == (n,) and np.all(ours >= np.abs(x).max(axis=1))


def test_true_peak_has_no_ringing_from_where_the_programme_is_cut_up():
    """A long programme is oversampled a few segments at a time; the cut ends of those
    pieces ring and must not count (a constant level once read 1.1 dB high)."""
    n = 60 * FS
    x = np.full((n, 2), 0.5)
    r = int(0.05 * FS)  # smooth fades: the constant's own true peak is its level
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, r))
    x[:r] *= ramp[:, None]
    x[-r:] *= ramp[::-1, None]
    assert true_peak(x) == pytest.approx(20 * math.log10(0.5), abs=0.01)
    assert measure(x, FS).true_peak == pytest.approx(20 * math.log10(0.5), abs=0.01)


@pytest.mark.parametrize("case,parts,expected", [
    (1, [(-20, 20), (-30, 20)], 10),
    (2, [(-20, 20), (-15, 20)], 5),
    (3, [(-40, 20), (-20, 20)], 20),
    (4, [(-50, 20), (-35, 20), (-20, 20), (-35, 20), (-50, 20)], 15),
])
def test_tech3342_loudness_range(case, parts, expected):
    assert measure(seq(*parts), FS).loudness_range == pytest.approx(expected, abs=1.0)


def test_other_sample_rates_measure_the_same():
    for fs in (44100, 96000, 32000):
        m = measure(sine(-23, 5, fs=fs), fs)
        assert m.integrated == pytest.approx(-23.0, abs=0.1), fs


def test_mono_sine():
    assert measure(sine(-20, 5, channels=1), FS).integrated == pytest.approx(-23.0, abs=0.1)


def test_silence_and_short_programmes():
    silent = measure(np.zeros((FS * 2, 2)), FS)
    assert silent.integrated == -math.inf and any("silence" in w for w in silent.warnings)
    short = measure(sine(-20, 0.3), FS)
    assert short.integrated is None and short.true_peak == pytest.approx(-20, abs=0.1)
    assert any("400 ms" in w for w in short.warnings)
    with pytest.raises(MediaError, match="too short"):
        normalize(sine(-20, 0.3), FS, TARGETS["ebu-r128"])


def test_silence_is_not_amplified():
    x = np.zeros((FS * 2, 2))
    y, _, warnings = normalize(x, FS, TARGETS["ebu-r128"])
    assert not y.any() and any("no gain" in w for w in warnings)


def test_unknown_target_and_channel_layout():
    with pytest.raises(MediaError, match="unknown loudness target 'loud'"):
        resolve_target("loud")
    assert resolve_target("-18").integrated == -18.0
    with pytest.raises(MediaError, match="4 channels"):
        measure(np.zeros((FS, 4)), FS)


def programme(seconds: float = 30.0, seed: int = 3) -> np.ndarray:
    """Speech-like noise bursts with a few hard transients: a hard case for a limiter."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FS)
    env = np.repeat(rng.random(n // 2400 + 1) ** 2, 2400)[:n]
    x = rng.standard_normal((n, 2)) * 0.08 * env[:, None]
    x[rng.integers(0, n, 12)] = 0.95
    return x


@pytest.mark.parametrize("name", ["ebu-r128", "atsc-a85", "streaming", "apple"])
def test_normalize_hits_target_and_ceiling_after_writing(tmp_path, name):
    target = TARGETS[name]
    y, _, _ = normalize(programme(), FS, target)
    out = write_wav(tmp_path / f"{name}.wav", y, FS)
    m = measure(*read_audio(out))
    assert m.integrated == pytest.approx(target.integrated, abs=0.1)
    assert m.true_peak <= target.true_peak


def test_normalising_stem_files_streams_to_the_same_result(tmp_path):
    """Three stem files summed, normalised and written a block at a time give what the
    in-memory path gives from their sum; measuring the file streams too."""
    from aiprod_post.audio.loudness import measure_file
    from aiprod_post.audio.normalize import normalize_source
    from aiprod_post.audio.stream import FileSource, SumSource, WavWriter

    rng = np.random.default_rng(9)
    n = 40 * FS
    stems = [0.2 * sine(-6, 40, 220.0 * (k + 1)) * (1 + 0.5 * np.sin(np.arange(n) / FS * k))[:, None]
             for k in range(3)]
    stems[2][::9973] += 0.6 * rng.standard_normal((len(stems[2][::9973]), 2))  # sharp peaks
    paths = [write_wav(tmp_path / f"{k}.wav", s) for k, s in enumerate(stems)]
    total = sum(read_audio(p)[0] for p in paths)
    expected, expected_after, _ = normalize(total, FS, TARGETS["streaming"])
    sources = [FileSource(p) for p in paths]
    out = tmp_path / "mix.wav"
    with WavWriter(out, 2) as w:
        after, _ = normalize_source(SumSource(sources), FS, TARGETS["streaming"], w)
    got = read_audio(out)[0]
    np.testing.assert_allclose(got, expected, atol=2 ** -22)
    assert after.integrated == pytest.approx(expected_after.integrated, abs=1e-9)
    again = measure_file(out)
    assert again.integrated == pytest.approx(-14.0, abs=0.1)
    assert again.true_peak <= -1.0
    m = measure(got, FS)
    assert again.integrated == pytest.approx(m.integrated, abs=1e-6)
    assert again.true_peak == pytest.approx(m.true_peak, abs=1e-6)


def test_limiter_leaves_quiet_programme_untouched_and_never_clips():
    quiet = sine(-12, 2)
    np.testing.assert_array_equal(limit_true_peak(quiet, FS, -1.0), quiet)
    loud = programme(10) * 3
    y = limit_true_peak(loud, FS, -1.0)
    assert true_peak(y) <= -1.0
    # far from the transients the gain is back to unity (release, no pumping)
    ratio = np.abs(y[:, 0]) / np.maximum(np.abs(loud[:, 0]), 1e-12)
    assert np.median(ratio) > 0.5
