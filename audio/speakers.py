"""A multi-speaker model's speakers for a cast: measured pitch, chosen by gender and age.

A model's speakers come as names (``p225``, ``spk3`` …) that say nothing of who they
are. Each speaker's median fundamental frequency (F0), measured once from a sample the
model speaks, places them: voices above :data:`FEMALE_F0` sound female, below it male,
and within a band a higher voice sounds younger. :func:`choose_speakers` gives each
character the free speaker nearest the pitch their gender and age call for
(:func:`target_f0`), in cast order, so a character keeps their speaker when others are
added after them; two characters share a speaker only when the cast file says so.

:func:`median_f0` is YIN (de Cheveigné and Kawahara, 2002): the cumulative mean
normalised difference of each 40 ms frame, its first dip under a threshold, refined
by a parabola, over the voiced frames.

>>> choose_speakers(["NELL", "IVO"], {"NELL": ("female", 65), "IVO": ("male", 20)},
...                 {"p1": 118.0, "p2": 210.0, "p3": 188.0, "p4": 131.0})
{'NELL': 'p3', 'IVO': 'p4'}
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy import signal

__all__ = ["median_f0", "target_f0", "choose_speakers", "FEMALE_F0"]

#: the F0 (Hz) that parts female-sounding from male-sounding adult voices: adult men speak
#: around 85-155 Hz, adult women around 165-255 Hz
FEMALE_F0 = 160.0

_RATE = 16000  # analysis rate: F0 up to 500 Hz needs no more
_FRAME = 0.040  # seconds: two periods of the lowest F0 measured
_HOP = 0.010
_APERIODIC = 0.35  # frames whose best dip is shallower than this are not voiced


def median_f0(samples: np.ndarray, rate: int, fmin: float = 60.0, fmax: float = 500.0,
              threshold: float = 0.15) -> float | None:
    """The median F0 in Hz of the voiced frames of mono ``samples`` (None: nothing voiced).

    >>> t = np.arange(48000) / 48000
    >>> round(median_f0(np.sign(np.sin(2 * np.pi * 150 * t)), 48000))
    150
    """
    f0 = f0_track(samples, rate, fmin, fmax, threshold)
    voiced = f0[~np.isnan(f0)]
    return float(np.median(voiced)) if voiced.size else None


def f0_track(samples: np.ndarray, rate: int, fmin: float = 60.0, fmax: float = 500.0,
             threshold: float = 0.15) -> np.ndarray:
    """F0 in Hz every 10 ms (NaN where unvoiced or silent)."""
    x = np.asarray(samples, np.float64).reshape(-1)
    if rate != _RATE:
        ratio = Fraction(_RATE, int(rate))
        x = signal.resample_poly(x, ratio.numerator, ratio.denominator)
    w, hop = int(_FRAME * _RATE), int(_HOP * _RATE)
    tau_min, tau_max = int(_RATE / fmax), int(math.ceil(_RATE / fmin))
    if x.size < w + tau_max + 1:
        return np.full(0, np.nan)
    frames = np.lib.stride_tricks.sliding_window_view(x, w + tau_max + 1)[::hop]
    # the difference function d(τ) = Σ (x_j − x_{j+τ})², j over the window, via the FFT
    n = 1 << int(math.ceil(math.log2(2 * (w + tau_max + 1))))
    spec = np.fft.rfft(frames, n)
    head = np.fft.rfft(frames[:, :w], n)
    cross = np.fft.irfft(spec * np.conj(head), n)[:, :tau_max + 1]
    sq = np.cumsum(np.pad(frames ** 2, ((0, 0), (1, 0))), axis=1)
    energy = sq[:, w:w + tau_max + 1] - sq[:, :tau_max + 1]  # Σ x_{j+τ}², j < w
    d = np.maximum(energy[:, :1] + energy - 2 * cross, 0.0)
    # cumulative mean normalised difference
    taus = np.arange(tau_max + 1)
    running = np.cumsum(d[:, 1:], axis=1)
    cmnd = np.ones_like(d)
    cmnd[:, 1:] = d[:, 1:] * taus[1:] / np.maximum(running, 1e-12)
    loud = energy[:, 0] / w > (1e-4 * np.max(energy[:, 0] / w) + 1e-10)
    out = np.full(len(frames), np.nan)
    for i in np.flatnonzero(loud):
        c = cmnd[i]
        under = np.flatnonzero(c[tau_min:tau_max] < threshold)
        if under.size:
            t = tau_min + under[0]
        else:  # a breathy or rough voice: the deepest dip, if it is deep enough at all
            t = tau_min + int(np.argmin(c[tau_min:tau_max]))
            if c[t] >= _APERIODIC:
                continue
        while t + 1 < tau_max and c[t + 1] < c[t]:  # down to the dip's bottom
            t += 1
        a, b, e = c[t - 1], c[t], c[t + 1]
        shift = 0.5 * (a - e) / (a - 2 * b + e) if a - 2 * b + e > 0 else 0.0
        out[i] = _RATE / (t + shift)
    return out


def target_f0(gender: str, age: int | None) -> float:
    """The F0 (Hz) a character is voiced nearest: by gender (women about an octave's
    two-thirds above men), then age (children highest; within a gender, the older the
    lower, a casting convention more than physiology).

    >>> [round(target_f0("female", 65)), round(target_f0("male", 20)), target_f0("unknown", 8)]
    [185, 130, 260.0]
    """
    if age is not None and age < 13:
        return 260.0
    base = {"female": 210.0, "male": 118.0}.get(gender, FEMALE_F0)
    if age is None:
        return base
    if age < 20:
        return base * (1.12 if gender == "male" else 1.05)
    if age < 35:
        return base * (1.1 if gender == "male" else 1.03)
    if age < 55:
        return base
    return base * (0.9 if gender == "male" else 0.88)


def _fits(gender: str, age: int | None, f0: float) -> bool:
    """Whether a speaker of ``f0`` can voice someone of ``gender`` and ``age`` at all."""
    if age is not None and age < 13:
        return f0 >= FEMALE_F0
    if gender == "female":
        return f0 >= FEMALE_F0
    if gender == "male":
        return f0 < FEMALE_F0
    return True


def choose_speakers(names: list[str], people: dict[str, tuple[str, int | None]],
                    pitches: dict[str, float | None],
                    given: dict[str, str] | None = None) -> dict[str, str]:
    """A speaker per character, in cast order.

    ``people``: name → (gender, age) from the cast; ``pitches``: speaker → median F0 in Hz
    (None: not measurable, used last); ``given``: name → speaker the cast file fixes (kept,
    shared ones included, and never handed to anyone else). The others get the free
    speaker that fits their gender (and childhood) nearest :func:`target_f0`, on a log
    scale; failing that the nearest free one; only when every speaker is taken do two
    share one (the least used that fits). Ties go to the speaker's name.
    """
    given = dict(given or {})
    for name, speaker in given.items():
        if speaker not in pitches:
            raise ValueError(f"characters.{name}.speaker: no speaker {speaker!r} in the "
                             f"model: expected one of {', '.join(sorted(pitches))}")
    uses = {s: 0 for s in pitches}
    for s in given.values():
        uses[s] += 1
    out: dict[str, str] = {}
    for name in names:
        if name in given:
            out[name] = given[name]
            continue
        gender, age = people.get(name, ("unknown", None))
        target = target_f0(gender, age)

        def distance(s: str) -> tuple:
            f0 = pitches[s]
            miss = abs(math.log2(f0 / target)) if f0 else math.inf
            return (0 if f0 and _fits(gender, age, f0) else 1, miss, s)

        free = [s for s in pitches if uses[s] == 0]
        pool = free or [s for s in pitches if uses[s] == min(uses.values())]
        if not pool:
            raise ValueError("the model has no speakers")
        choice = min(pool, key=distance)
        uses[choice] += 1
        out[name] = choice
    return out
