"""Bus mixing: dialogue placed by sample, music and ambience beds, ducking, stems.

All buses are 48 kHz stereo float32. Dialogue (DX) clips are mono, placed at
their sample position with short raised-cosine fades so no clip starts or ends
on a step (no clicks), and panned to the centre at equal power. Music (MX) and
ambience (FX) beds are looped with crossfades to fill their span and duck under
dialogue through a side-chain with attack and release. The mix is DX + MX + FX
exactly; loudness normalisation happens after, on the mix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import signal

from aiprod_post.errors import MediaError

from .io import MIX_RATE

__all__ = ["DialogueClip", "Bed", "MixSettings", "Stems", "place_dialogue", "loop_to_length",
           "procedural_bed", "duck_gain", "mix_stems"]

_CENTRE = 1 / math.sqrt(2)  # equal-power pan law at the centre


@dataclass
class DialogueClip:
    start: int  # sample at MIX_RATE
    samples: np.ndarray  # mono
    gain_db: float = 0.0
    name: str = ""


@dataclass
class Bed:
    """A bed over ``[start, end)`` samples, looped from ``samples`` (frames, 1 or 2), or
    from what ``samples()`` returns when it is a callable: made when mixed, then dropped,
    so a film of many scenes does not hold every scene's bed at once."""

    start: int
    end: int
    samples: np.ndarray | Callable[[], np.ndarray]
    gain_db: float = 0.0
    name: str = ""


@dataclass(frozen=True)
class MixSettings:
    fade_ms: float = 5.0
    duck_db: float = -12.0
    duck_attack_ms: float = 80.0
    duck_release_ms: float = 400.0
    duck_threshold_db: float = -45.0
    bed_crossfade_ms: float = 1000.0
    music_db: float = -8.0
    ambience_db: float = -14.0


@dataclass
class Stems:
    dx: np.ndarray
    mx: np.ndarray
    fx: np.ndarray
    rate: int = MIX_RATE
    notes: list[str] = field(default_factory=list)

    @property
    def mix(self) -> np.ndarray:
        return self.dx + self.mx + self.fx


def _fade(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, n, endpoint=False))).astype(np.float32)


def place_dialogue(clips: list[DialogueClip], length: int, fade_ms: float = 5.0) -> np.ndarray:
    """A mono dialogue bus of ``length`` samples with every clip faded in and out."""
    bus = np.zeros(length, np.float32)
    nf = max(1, int(MIX_RATE * fade_ms / 1000))
    for clip in clips:
        x = np.asarray(clip.samples, np.float32).reshape(-1).copy()
        if x.size == 0:
            continue
        k = min(nf, x.size // 2)
        if k:
            ramp = _fade(k)
            x[:k] *= ramp
            x[-k:] *= ramp[::-1]
        x *= np.float32(10 ** (clip.gain_db / 20))
        a = max(0, clip.start)
        b = min(length, clip.start + x.size)
        if b > a:
            bus[a:b] += x[a - clip.start: b - clip.start]
    return bus


def loop_to_length(x: np.ndarray, length: int, crossfade: int) -> np.ndarray:
    """Repeat ``x`` (frames, channels) to ``length`` frames, crossfading each seam."""
    x = np.asarray(x, np.float32)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] == 0:
        raise MediaError("bed has no samples")
    if x.shape[0] >= length:
        return x[:length].copy()
    crossfade = max(1, min(crossfade, x.shape[0] // 2))
    out = np.zeros((length, x.shape[1]), np.float32)
    ramp = _fade(crossfade)[:, None]
    step = x.shape[0] - crossfade
    pos = 0
    first = True
    while pos < length:
        piece = x.copy()
        if not first:
            piece[:crossfade] *= ramp
        if pos + x.shape[0] < length:
            piece[-crossfade:] *= ramp[::-1]
        n = min(x.shape[0], length - pos)
        out[pos:pos + n] += piece[:n]
        pos += step
        first = False
    return out


def procedural_bed(kind: str, seconds: float, seed: int, light: str = "day",
                   exterior: bool = False) -> np.ndarray:
    """An original bed made by this project, stereo at MIX_RATE, about -20 dBFS RMS.

    ``music``: a slow pad on a four-chord progression chosen by the seed, minor
    at night and dusk, major by day, with a gentle tremolo. ``ambience``: pink
    noise shaped as wind outdoors or as a low room tone indoors. Licence:
    generated output of aiprod-post, free to use (CC0).
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * MIX_RATE)
    t = np.arange(n, dtype=np.float64) / MIX_RATE
    if kind == "music":
        root = 110.0 * 2 ** (rng.integers(0, 7) / 12)
        minor = light in ("night", "dusk")
        degrees = [0, 8, 3, 10] if minor else [0, 5, 9, 7]
        third = 3 if minor else 4
        bar = 4.0
        out = np.zeros((n, 2))
        for i, deg in enumerate(degrees * int(math.ceil(seconds / (bar * 4)) + 1)):
            a, b = int(i * bar * MIX_RATE), int((i + 1) * bar * MIX_RATE)
            if a >= n:
                break
            b = min(b + MIX_RATE // 2, n)  # half a second of overlap into the next chord
            tt = t[a:b] - t[a]
            env = np.minimum(1.0, tt / 1.2) * np.minimum(1.0, (tt[-1] - tt + 1e-9) / 1.0)
            f0 = root * 2 ** (deg / 12)
            chord = sum(np.sin(2 * np.pi * f0 * 2 ** (s / 12) * tt + rng.uniform(0, 6.28))
                        for s in (0, third, 7, 12))
            detune = np.sin(2 * np.pi * f0 * 1.003 * tt) * 0.4
            out[a:b, 0] += env * (chord + detune)
            out[a:b, 1] += env * (chord - detune)
        out *= (1 + 0.15 * np.sin(2 * np.pi * 0.2 * t))[:, None]
    elif kind == "ambience":
        white = rng.standard_normal((n, 2))
        # pink-ish: 1/f via a standard three-pole approximation
        b = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
        a = [1, -2.494956002, 2.017265875, -0.522189400]
        pink = signal.lfilter(b, a, white, axis=0)
        if exterior:
            sos = signal.butter(2, [80, 1800], btype="band", fs=MIX_RATE, output="sos")
            gust = 0.6 + 0.4 * np.sin(2 * np.pi * (0.07 + 0.05 * rng.random()) * t
                                     + rng.uniform(0, 6.28))
            out = signal.sosfilt(sos, pink, axis=0) * gust[:, None]
        else:
            sos = signal.butter(2, 400, btype="low", fs=MIX_RATE, output="sos")
            hum = 0.05 * np.sin(2 * np.pi * 50 * t)[:, None]
            out = signal.sosfilt(sos, pink, axis=0) + hum
    else:
        raise MediaError(f"unknown bed kind {kind!r}: expected music or ambience")
    rms = float(np.sqrt(np.mean(out ** 2))) or 1.0
    return (out * (0.1 / rms)).astype(np.float32)


def duck_gain(key: np.ndarray, settings: MixSettings) -> np.ndarray:
    """Side-chain gain (linear, per sample) that dips by ``duck_db`` while ``key`` speaks."""
    block = MIX_RATE // 100  # 10 ms
    nb = -(-len(key) // block)
    if nb == 0:
        return np.ones(0, np.float32)
    padded = np.pad(np.asarray(key, np.float64), (0, nb * block - len(key)))
    rms = np.sqrt(np.mean(padded.reshape(nb, block) ** 2, axis=1))
    active = rms > 10 ** (settings.duck_threshold_db / 20)
    att = math.exp(-10.0 / max(settings.duck_attack_ms, 1e-3))
    rel = math.exp(-10.0 / max(settings.duck_release_ms, 1e-3))
    level = 0.0
    out = np.empty(nb)
    for k, on in enumerate(active.tolist()):
        target = settings.duck_db if on else 0.0
        coef = att if target < level else rel
        level = target + (level - target) * coef
        out[k] = level
    centres = (np.arange(nb) + 0.5) * block
    gain = np.empty(len(key), np.float32)
    step = 1 << 20  # interpolated a chunk at a time: no programme-long float64 temporaries
    for a in range(0, len(key), step):
        b = min(len(key), a + step)
        gain[a:b] = 10 ** (np.interp(np.arange(a, b), centres, out) / 20)
    return gain


def _bed_bus(beds: list[Bed], length: int, settings: MixSettings) -> np.ndarray:
    bus = np.zeros((length, 2), np.float32)
    xf = int(MIX_RATE * settings.bed_crossfade_ms / 1000)
    for bed in beds:
        a, b = max(0, bed.start), min(length, bed.end)
        if b <= a:
            continue
        lo, hi = max(0, a - xf // 2), min(length, b + xf // 2)
        x = bed.samples() if callable(bed.samples) else bed.samples
        x = x if x.ndim == 2 else x[:, None]
        if x.shape[1] == 1:
            x = np.repeat(x, 2, axis=1)
        elif x.shape[1] > 2:
            x = x[:, :2]
        piece = loop_to_length(x, hi - lo, xf) * np.float32(10 ** (bed.gain_db / 20))
        k = min(xf, (hi - lo) // 2)
        if k:
            ramp = _fade(k)[:, None]
            if lo > 0:
                piece[:k] *= ramp
            if hi < length:
                piece[-k:] *= ramp[::-1]
        bus[lo:hi] += piece
    return bus


def mix_stems(dialogue: list[DialogueClip], music: list[Bed], ambience: list[Bed], length: int,
              settings: MixSettings | None = None) -> Stems:
    """Build the DX, MX and FX stems (stereo, 48 kHz) for a programme of ``length`` samples."""
    settings = settings or MixSettings()
    dx_mono = place_dialogue(dialogue, length, settings.fade_ms)
    gain = duck_gain(dx_mono, settings)[:, None]
    dx_mono *= np.float32(_CENTRE)
    dx = np.repeat(dx_mono[:, None], 2, axis=1)
    del dx_mono
    # programme-long buses are scaled in place: memory is a few stereo float32 arrays
    mx = _bed_bus(music, length, settings)
    mx *= np.float32(10 ** (settings.music_db / 20))
    mx *= gain
    fx = _bed_bus(ambience, length, settings)
    fx *= np.float32(10 ** (settings.ambience_db / 20))
    fx *= gain
    return Stems(dx, mx, fx)
