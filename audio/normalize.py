"""Loudness normalisation to a delivery target with a look-ahead true-peak limiter.

The limiter is linked across channels (one gain for all, so the image does not
shift) and works from the 4x oversampled peak of each sample, so it limits true
peak, not sample peak. Its gain curve:

1. a running minimum of the required gain over ``[n - lookahead, n + lookahead]``,
2. a centred moving average over the look-ahead: a smooth attack that reaches
   the required gain at the peak, since every value averaged is at most it,
3. an exponential release (in dB, on 1 ms blocks), never above step 2.

So the ceiling holds by construction and nothing is clipped. Only the
stretches of programme that need limiting are filtered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d

from aiprod_post.errors import MediaError

from .loudness import (
    PEAK_SEGMENT,
    Loudness,
    _as_frames,
    _gated_mean,
    _oversampling_phases,
    _segment_power,
    _window_power,
    measure,
    oversampled_peaks,
    summarise,
    segment_true_peaks,
)

__all__ = ["Target", "TARGETS", "resolve_target", "limit_true_peak", "normalize"]


@dataclass(frozen=True)
class Target:
    name: str
    integrated: float  # LUFS / LKFS
    true_peak: float  # dBTP ceiling


TARGETS: dict[str, Target] = {
    "ebu-r128": Target("ebu-r128", -23.0, -1.0),
    "atsc-a85": Target("atsc-a85", -24.0, -2.0),
    "streaming": Target("streaming", -14.0, -1.0),
    "apple": Target("apple", -16.0, -1.0),
}


def resolve_target(value: str | float, ceiling: float | None = None) -> Target:
    """A named target (``ebu-r128``) or a number of LUFS (``-18``, ceiling -1 dBTP)."""
    if isinstance(value, str) and value.strip().lower() in TARGETS:
        t = TARGETS[value.strip().lower()]
        return Target(t.name, t.integrated, ceiling if ceiling is not None else t.true_peak)
    try:
        lufs = float(value)
    except (TypeError, ValueError):
        names = ", ".join(TARGETS)
        raise MediaError(f"unknown loudness target {value!r}: expected one of {names} "
                         "or a number of LUFS such as -18") from None
    if not (-70.0 < lufs < 0.0):
        raise MediaError(f"loudness target {lufs} LUFS is outside -70..0")
    return Target(f"{lufs:g} LUFS", lufs, ceiling if ceiling is not None else -1.0)


def limit_true_peak(samples: np.ndarray, sample_rate: int, ceiling_dbtp: float, *,
                    lookahead_ms: float = 5.0, release_ms: float = 80.0,
                    segment_peaks: np.ndarray | None = None) -> np.ndarray:
    """Return ``samples`` with true peak at or under ``ceiling_dbtp``.

    ``segment_peaks`` (linear true peak per :data:`PEAK_SEGMENT` samples, from
    :func:`segment_true_peaks`) saves measuring them again.
    """
    x = _as_frames(samples)
    if segment_peaks is None and x.shape[0]:
        segment_peaks = segment_true_peaks(x)
    runs = _limit(x, sample_rate, ceiling_dbtp, lookahead_ms, release_ms, segment_peaks)
    return _apply(x, 1.0, runs)


def _apply(x: np.ndarray, gain: float, runs: list[tuple[int, int, np.ndarray]]) -> np.ndarray:
    """``x`` times ``gain``, times each run's limiter gain where it has one (a new array)."""
    y = x * gain if gain != 1.0 else x.copy()
    for lo, hi, g in runs:
        y[lo:hi] *= g[:, None]
    return y


class _PeakCache:
    """Per-sample oversampled peaks of one input, measured once per segment and scaled by
    the gain of each normalisation pass (peaks scale linearly with gain)."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.peaks = np.zeros(x.shape[0], np.float32)
        self.done = np.zeros(-(-x.shape[0] // PEAK_SEGMENT), bool)

    def segment_peaks(self) -> np.ndarray:
        """The true peak of every :data:`PEAK_SEGMENT`, measuring all of ``x`` once (no
        programme-long float64 copy of the per-sample peaks)."""
        n = self.x.shape[0]
        out = np.zeros(len(self.done))
        step = 64 * PEAK_SEGMENT
        for a in range(0, n, step):
            b = min(n, a + step)
            self.get(a, b, 1.0)
            p = self.peaks[a:b]
            k = -(-(b - a) // PEAK_SEGMENT)
            full = (b - a) // PEAK_SEGMENT
            out[a // PEAK_SEGMENT: a // PEAK_SEGMENT + full] = \
                p[:full * PEAK_SEGMENT].reshape(full, PEAK_SEGMENT).max(axis=1)
            if k > full:
                out[a // PEAK_SEGMENT + full] = p[full * PEAK_SEGMENT:].max()
        return out

    def get(self, lo: int, hi: int, gain: float) -> np.ndarray:
        a, b = lo // PEAK_SEGMENT, -(-hi // PEAK_SEGMENT)
        todo = np.flatnonzero(~self.done[a:b]) + a
        if todo.size:
            _, lead, _ = _oversampling_phases(4)
            pad = 2 * lead + 2
            for run in np.split(todo, np.flatnonzero(np.diff(todo) > 1) + 1):
                s0, s1 = int(run[0]) * PEAK_SEGMENT, min(self.x.shape[0],
                                                         (int(run[-1]) + 1) * PEAK_SEGMENT)
                p0, p1 = max(0, s0 - pad), min(self.x.shape[0], s1 + pad)
                self.peaks[s0:s1] = oversampled_peaks(self.x[p0:p1])[s0 - p0: s1 - p0]
            self.done[todo] = True
        return self.peaks[lo:hi].astype(np.float64) * gain


def _limit(x: np.ndarray, sample_rate: int, ceiling_dbtp: float, lookahead_ms: float,
           release_ms: float, segment_peaks: np.ndarray | None,
           cache: _PeakCache | None = None, gain: float = 1.0
           ) -> list[tuple[int, int, np.ndarray]]:
    """The limiter's gain for ``x * gain``, only where it is needed: a list of
    ``(lo, hi, gain curve)`` sample ranges (empty when nothing needs limiting).
    ``segment_peaks`` are those of ``x * gain``. Nothing programme-long is allocated,
    so a long programme that needs little limiting costs little."""
    # a thousandth of a dB of headroom absorbs the rounding of the peak detector
    thr = 10 ** ((ceiling_dbtp - 0.001) / 20)
    n = x.shape[0]
    if n == 0:
        return []
    seg = PEAK_SEGMENT
    need = np.flatnonzero(segment_peaks > thr)
    if need.size == 0:
        return []
    _, lead, _ = _oversampling_phases(4)
    pad = 2 * lead + 2
    parts = []  # (lo, hi, required gain, first and last sample over)
    for run in np.split(need, np.flatnonzero(np.diff(need) > 1) + 1):
        lo, hi = max(0, int(run[0]) * seg - pad), min(n, (int(run[-1]) + 1) * seg + pad)
        peaks = cache.get(lo, hi, gain) if cache else oversampled_peaks(x[lo:hi]) * gain
        with np.errstate(divide="ignore"):
            req = np.minimum(1.0, thr / peaks)
        over = np.flatnonzero(req < 1.0)
        if over.size:
            parts.append((lo, hi, req, lo + int(over[0]), lo + int(over[-1])))
    if not parts:
        return []

    attack = max(2, int(sample_rate * lookahead_ms / 1000))
    block = max(1, sample_rate // 1000)
    # per 1 ms block, the dB gain falls back towards 0 dB by this factor
    decay = math.exp(-1.0 / max(release_ms, 1.0))
    reach = 2 * attack + int(sample_rate * release_ms / 1000) * 8 + block
    groups: list[list] = []
    for part in parts:
        if groups and part[3] - groups[-1][-1][4] <= 2 * reach:
            groups[-1].append(part)
        else:
            groups.append([part])
    runs = []
    for group in groups:
        lo, hi = max(0, group[0][3] - reach), min(n, group[-1][4] + reach + 1)
        required = np.ones(hi - lo)
        for plo, phi, req, _, _ in group:
            a, b = max(lo, plo), min(hi, phi)
            np.minimum(required[a - lo:b - lo], req[a - plo:b - plo],
                       out=required[a - lo:b - lo])
        g = minimum_filter1d(required, size=2 * attack + 1, mode="nearest")
        g = uniform_filter1d(g, size=attack, mode="nearest")  # attack ramp ends at the peak
        runs.append((lo, hi, _release(g, block, decay)))
    return runs


def _release(g: np.ndarray, block: int, decay: float) -> np.ndarray:
    """Hold each gain reduction and let it recover exponentially (in dB), per block.

    The recursion runs on 1 ms blocks, not samples; the blocky curve is then
    smoothed and the result never exceeds ``g``, so the ceiling still holds.
    """
    nb = -(-len(g) // block)
    padded = np.pad(g, (0, nb * block - len(g)), mode="edge").reshape(nb, block).min(axis=1)
    want = 20 * np.log10(np.maximum(padded, 1e-9))
    out = _decaying_minimum(want, decay)
    stepped = np.repeat(10 ** (out / 20), block)[: len(g)]
    return np.minimum(g, uniform_filter1d(stepped, size=block, mode="nearest"))


def _decaying_minimum(want: np.ndarray, decay: float, chunk: int = 256) -> np.ndarray:
    """``out[k] = min(want[k], out[k - 1] * decay)`` (from 0), for ``want <= 0``.

    Unrolled, ``out[k] = decay**k * min_j(want[j] * decay**-j)``: a running minimum,
    worked in chunks so ``decay**-j`` stays small, the last value carried over.
    """
    out = np.empty(len(want))
    scale = decay ** -np.arange(chunk, dtype=np.float64)
    carry = 0.0
    for a in range(0, len(want), chunk):
        w = want[a:a + chunk]
        k = len(w)
        run = np.minimum.accumulate(w * scale[:k])
        np.minimum(run, carry * decay, out=run)
        out[a:a + k] = run / scale[:k]
        carry = out[a + k - 1]
    return out


def _retouch_power(seg_power: np.ndarray, x: np.ndarray, gain: float,
                   runs: list[tuple[int, int, np.ndarray]], fs: int) -> np.ndarray:
    """Segment powers of the limited programme, from ``seg_power`` (already scaled by
    ``gain`` squared) outside the limited stretches.

    The K-weighting filter is linear, so outside the limited stretches the powers are
    the input's times the gain squared; inside, they are recomputed from half a second
    before (the filters settle in a few milliseconds), on those stretches alone.
    """
    seg = int(round(fs * 0.1))
    out = seg_power.copy()
    settle = 5
    for lo, hi, _ in runs:
        first = max(0, lo // seg - settle)
        last = min(len(out), -(-hi // seg) + settle)
        if last <= first:
            continue
        a, b = first * seg, last * seg
        y = x[a:b] * gain
        for rlo, rhi, g in runs:  # this stretch's limiting (and a neighbour's, if close)
            c, d = max(a, rlo), min(b, rhi)
            if c < d:
                y[c - a:d - a] *= g[c - rlo:d - rlo, None]
        part = _segment_power(y, fs)
        keep = max(0, lo // seg - first) if first > 0 else 0
        out[first + keep: first + len(part)] = part[keep:]
    return out


def normalize(samples: np.ndarray, sample_rate: int, target: Target, *,
              tolerance_lu: float = 0.05) -> tuple[np.ndarray, Loudness, list[str]]:
    """Gain to the target's integrated loudness, limiting true peak to its ceiling.

    Returns the new samples, their measurement, and warnings. Silence is
    returned unchanged with a warning; a programme too short to measure is an
    error. The input is analysed once: gain scales its K-weighted powers and
    true peaks exactly, so each iteration only re-measures what the limiter
    touched.
    """
    x = _as_frames(samples)
    fs = int(sample_rate)
    seg_power = _segment_power(x, fs)
    blocks = _window_power(seg_power, 4)
    if blocks.size == 0:
        raise MediaError("too short to normalise: integrated loudness needs at least 400 ms")
    warnings: list[str] = []
    level0 = _gated_mean(blocks, -10.0)[0]
    if level0 == -math.inf:
        warnings.append("silence: no gain applied")
        return x.copy(), measure(x, fs), warnings
    cache = _PeakCache(x)
    n_seg = len(cache.done)
    # one oversampling pass serves both the segment map and the limiter's detector
    seg_peaks = cache.segment_peaks()
    margin = 0.1  # dB under the ceiling, for the limiter's own interpolation error
    gain_db = target.integrated - level0
    tried: list[tuple[float, float]] = []  # (gain, resulting loudness)
    for _ in range(12):
        g = 10 ** (gain_db / 20)
        runs = _limit(x, fs, target.true_peak - margin, 5.0, 80.0, seg_peaks * g, cache, g)
        power = _retouch_power(seg_power * g * g, x, g, runs, fs)
        level = _gated_mean(_window_power(power, 4), -10.0)[0]
        if abs(level - target.integrated) <= tolerance_lu:
            break
        tried.append((gain_db, level))
        if len(tried) >= 2 and tried[-1][1] != tried[-2][1]:
            # secant step: limiting makes loudness grow slower than gain
            (g0, l0), (g1, l1) = tried[-2], tried[-1]
            slope = max(0.05, (l1 - l0) / (g1 - g0)) if g1 != g0 else 1.0
            gain_db = g1 + (target.integrated - l1) / slope
        else:
            gain_db += target.integrated - level
    y = _apply(x, g, runs)
    peaks = seg_peaks * g
    for lo, hi, _ in runs:
        a, b = lo // PEAK_SEGMENT, -(-hi // PEAK_SEGMENT)
        peaks[a:b] = segment_true_peaks(y[a * PEAK_SEGMENT: b * PEAK_SEGMENT])
    after = summarise(power, float(peaks.max()), y, fs)
    if after.true_peak > target.true_peak:
        # The oversampled peak detector and the meter disagree by a hair: one more pass.
        y = limit_true_peak(y, fs, target.true_peak - margin - (after.true_peak
                                                                 - target.true_peak))
        after = measure(y, fs)
    warnings += [w for w in after.warnings if "clipped" not in w]
    if after.integrated is not None and abs(after.integrated - target.integrated) > 0.1:
        warnings.append(f"reached {after.integrated:.2f} LUFS, not {target.integrated:.1f}: "
                        "the true-peak ceiling does not allow more gain without heavy limiting")
    return y, after, warnings
