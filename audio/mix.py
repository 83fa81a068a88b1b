"""Bus mixing: dialogue placed by sample, music and ambience beds, ducking, stems.

All buses are 48 kHz stereo float32. Dialogue (DX) clips are mono, placed at
their sample position with short raised-cosine fades so no clip starts or ends
on a step (no clicks), and panned to the centre at equal power. Music (MX) and
ambience (FX) beds are looped with crossfades to fill their span and duck under
dialogue through a side-chain with attack and release. The mix is DX + MX + FX
exactly; loudness normalisation happens after, on the mix.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import signal

from aiprod_post.errors import MediaError

from .io import MIX_RATE

__all__ = ["DialogueClip", "Bed", "MixSettings", "Stems", "place_dialogue", "loop_to_length",
           "scene_beds",
           "procedural_bed", "duck_gain", "mix_stems", "render_stems"]

_CENTRE = 1 / math.sqrt(2)  # equal-power pan law at the centre


@dataclass
class DialogueClip:
    """A mono line at ``start`` (samples at MIX_RATE). ``samples`` may be a callable that
    loads them when the mixer reaches the line; ``length`` (in samples) is then needed."""

    start: int
    samples: np.ndarray | Callable[[], np.ndarray]
    gain_db: float = 0.0
    name: str = ""
    length: int | None = None

    @property
    def frames(self) -> int:
        if self.length is None:
            self.length = int(np.asarray(self.load()).reshape(-1).size)
        return self.length

    def load(self) -> np.ndarray:
        return self.samples() if callable(self.samples) else self.samples


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
    return _place_window(clips, 0, length, fade_ms)


def _place_window(clips: list[DialogueClip], lo: int, hi: int, fade_ms: float) -> np.ndarray:
    """Samples ``[lo, hi)`` of the mono dialogue bus."""
    bus = np.zeros(hi - lo, np.float32)
    nf = max(1, int(MIX_RATE * fade_ms / 1000))
    for clip in clips:
        if clip.start >= hi or clip.start + clip.frames <= lo:
            continue
        x = np.asarray(clip.load(), np.float32).reshape(-1).copy()
        if x.size == 0:
            continue
        k = min(nf, x.size // 2)
        if k:
            ramp = _fade(k)
            x[:k] *= ramp
            x[-k:] *= ramp[::-1]
        x *= np.float32(10 ** (clip.gain_db / 20))
        a = max(lo, clip.start)
        b = min(hi, clip.start + x.size)
        if b > a:
            bus[a - lo:b - lo] += x[a - clip.start: b - clip.start]
    return bus


def loop_to_length(x: np.ndarray, length: int, crossfade: int) -> np.ndarray:
    """Repeat ``x`` (frames, channels) to ``length`` frames, crossfading each seam."""
    return _loop_segment(x, length, crossfade, 0, length)


def _loop_segment(x: np.ndarray, length: int, crossfade: int, lo: int, hi: int) -> np.ndarray:
    """Frames ``[lo, hi)`` of ``loop_to_length(x, length, crossfade)``, made alone."""
    x = np.asarray(x, np.float32)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] == 0:
        raise MediaError("bed has no samples")
    if x.shape[0] >= length:
        return x[lo:hi].copy()
    crossfade = max(1, min(crossfade, x.shape[0] // 2))
    out = np.zeros((hi - lo, x.shape[1]), np.float32)
    ramp = _fade(crossfade)[:, None]
    step = x.shape[0] - crossfade
    for k in range(max(0, (lo - x.shape[0]) // step), -(-hi // step) + 1):
        pos = k * step
        if pos >= length or pos >= hi:
            break
        a, b = max(lo, pos), min(hi, length, pos + x.shape[0])
        if b <= a:
            continue
        piece = x[a - pos:b - pos].copy()
        if k > 0:  # fade in over the first `crossfade` frames of the piece
            f = slice(a - pos, min(b - pos, crossfade))
            if f.start < f.stop:
                piece[f.start - (a - pos):f.stop - (a - pos)] *= ramp[f]
        if pos + x.shape[0] < length:  # fade out over its last `crossfade` frames
            t0 = x.shape[0] - crossfade
            c, d = max(a - pos, t0), b - pos
            if c < d:
                piece[c - (a - pos):d - (a - pos)] *= ramp[::-1][c - t0:d - t0]
        out[a - lo:b - lo] += piece
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
    levels = _duck_levels(_block_rms(np.asarray(key, np.float64)), settings)
    return _duck_window(levels, 0, len(key))


_DUCK_BLOCK = MIX_RATE // 100  # the side-chain works on 10 ms blocks


def _block_rms(key: np.ndarray) -> np.ndarray:
    """RMS of every 10 ms block of ``key`` (the last one zero-padded)."""
    nb = -(-len(key) // _DUCK_BLOCK)
    padded = np.pad(np.asarray(key, np.float64), (0, nb * _DUCK_BLOCK - len(key)))
    return np.sqrt(np.mean(padded.reshape(nb, _DUCK_BLOCK) ** 2, axis=1))


def _duck_levels(rms: np.ndarray, settings: MixSettings) -> np.ndarray:
    """The side-chain's gain in dB per 10 ms block, with attack and release."""
    active = rms > 10 ** (settings.duck_threshold_db / 20)
    att = math.exp(-10.0 / max(settings.duck_attack_ms, 1e-3))
    rel = math.exp(-10.0 / max(settings.duck_release_ms, 1e-3))
    level = 0.0
    out = np.empty(len(rms))
    for k, on in enumerate(active.tolist()):
        target = settings.duck_db if on else 0.0
        coef = att if target < level else rel
        level = target + (level - target) * coef
        out[k] = level
    return out


def _duck_window(levels: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The per-sample linear gain on ``[lo, hi)``, interpolated between block centres."""
    if len(levels) == 0:
        return np.ones(hi - lo, np.float32)
    centres = (np.arange(len(levels)) + 0.5) * _DUCK_BLOCK
    return (10 ** (np.interp(np.arange(lo, hi), centres, levels) / 20)).astype(np.float32)


class _BedBus:
    """A bus of beds, made a window at a time; each bed's source is made when the
    window first reaches it and dropped once past it."""

    def __init__(self, beds: list[Bed], length: int, settings: MixSettings) -> None:
        self.length = length
        self.xf = int(MIX_RATE * settings.bed_crossfade_ms / 1000)
        self.beds = []
        for bed in beds:
            a, b = max(0, bed.start), min(length, bed.end)
            if b > a:
                self.beds.append((bed, max(0, a - self.xf // 2), min(length, b + self.xf // 2)))
        self.made: dict[int, np.ndarray] = {}

    def _source(self, i: int) -> np.ndarray:
        if i not in self.made:
            bed = self.beds[i][0]
            x = bed.samples() if callable(bed.samples) else bed.samples
            x = np.asarray(x, np.float32)
            x = x if x.ndim == 2 else x[:, None]
            if x.shape[1] == 1:
                x = np.repeat(x, 2, axis=1)
            elif x.shape[1] > 2:
                x = x[:, :2]
            self.made[i] = x
        return self.made[i]

    def window(self, w0: int, w1: int) -> np.ndarray:
        bus = np.zeros((w1 - w0, 2), np.float32)
        for i, (bed, lo, hi) in enumerate(self.beds):
            if hi <= w0:
                self.made.pop(i, None)
                continue
            if lo >= w1:
                continue
            a, b = max(w0, lo), min(w1, hi)
            piece = _loop_segment(self._source(i), hi - lo, self.xf, a - lo, b - lo)
            piece *= np.float32(10 ** (bed.gain_db / 20))
            k = min(self.xf, (hi - lo) // 2)
            if k:
                ramp = _fade(k)
                rel = np.arange(a - lo, b - lo)
                if lo > 0:
                    head = rel < k
                    piece[head] *= ramp[rel[head]][:, None]
                if hi < self.length:
                    tail = rel >= (hi - lo) - k
                    piece[tail] *= ramp[::-1][rel[tail] - ((hi - lo) - k)][:, None]
            bus[a - w0:b - w0] += piece
        return bus


_WINDOW = 1 << 18  # samples mixed at a time (a multiple of the side-chain's block)


def render_stems(dialogue: list[DialogueClip], music: list[Bed], ambience: list[Bed],
                 length: int, sinks: dict, settings: MixSettings | None = None) -> None:
    """Write the DX, MX and FX stems (stereo float32, 48 kHz) of a programme of ``length``
    samples to ``sinks["DX"]``, ``["MX"]``, ``["FX"]`` a window at a time: memory does
    not grow with the programme. Lines are read when their window is mixed."""
    settings = settings or MixSettings()
    window = _WINDOW - _WINDOW % _DUCK_BLOCK
    # first pass: the side-chain's level, from the dialogue bus's 10 ms RMS
    rms = [_block_rms(_place_window(dialogue, w0, min(length, w0 + window), settings.fade_ms))
           for w0 in range(0, length, window)]
    levels = _duck_levels(np.concatenate(rms) if rms else np.zeros(0), settings)
    music_bus, amb_bus = _BedBus(music, length, settings), _BedBus(ambience, length, settings)
    mx_gain = np.float32(10 ** (settings.music_db / 20))
    fx_gain = np.float32(10 ** (settings.ambience_db / 20))
    for w0 in range(0, length, window):
        w1 = min(length, w0 + window)
        dx_mono = _place_window(dialogue, w0, w1, settings.fade_ms)
        gain = _duck_window(levels, w0, w1)[:, None]
        dx_mono *= np.float32(_CENTRE)
        sinks["DX"].write(np.repeat(dx_mono[:, None], 2, axis=1))
        mx = music_bus.window(w0, w1)
        mx *= mx_gain
        mx *= gain
        sinks["MX"].write(mx)
        fx = amb_bus.window(w0, w1)
        fx *= fx_gain
        fx *= gain
        sinks["FX"].write(fx)


def mix_stems(dialogue: list[DialogueClip], music: list[Bed], ambience: list[Bed], length: int,
              settings: MixSettings | None = None) -> Stems:
    """Build the DX, MX and FX stems (stereo, 48 kHz) for a programme of ``length`` samples."""
    from .stream import ArraySink

    out = {s: np.zeros((length, 2), np.float32) for s in ("DX", "MX", "FX")}
    render_stems(dialogue, music, ambience, length, {s: ArraySink(a) for s, a in out.items()},
                 settings)
    return Stems(out["DX"], out["MX"], out["FX"])


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:3], "big")


def scene_beds(scenes: list[dict], seed: int, music: np.ndarray | None = None,
               user_bed: Callable[[str], np.ndarray] | None = None
               ) -> tuple[list[Bed], list[Bed]]:
    """A music bed and an ambience bed for each scene (``scene``, ``start``, ``end`` in
    samples, ``light``, ``exterior``, ``ambience``: a file of the user's or None): the
    user's music looped under every scene where given, else a procedural cue per scene
    (seeded by the film's seed and the scene, at most 32 s, looped); the scene's ambience
    file, else procedural ambience by light and exterior (at most 20 s, looped). Each bed
    is made when mixed, so memory stays flat with the film."""
    music_beds, ambience = [], []
    for b in scenes:
        seconds = (b["end"] - b["start"]) / MIX_RATE
        m = music if music is not None else (
            lambda b=b, seconds=seconds: procedural_bed(
                "music", min(seconds, 32.0) + 1, seed + _seed_of(b["scene"]), b["light"]))
        music_beds.append(Bed(b["start"], b["end"], m, name=f"music {b['scene']}"))
        if b["ambience"] and user_bed is None:
            raise MediaError(f"scene {b['scene']}: an ambience file needs a reader")
        amb = (lambda b=b: user_bed(b["ambience"])) if b["ambience"] else (
            lambda b=b, seconds=seconds: procedural_bed(
                "ambience", min(seconds, 20.0) + 1, seed + 7 + _seed_of(b["scene"]),
                b["light"], exterior=b["exterior"]))
        ambience.append(Bed(b["start"], b["end"], amb, name=f"ambience {b['scene']}"))
    return music_beds, ambience
