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

Everything streams: the programme is read from a source (an array, a file, the sum
of stem files) a block at a time and written to a sink, so memory does not grow with
its length. One pass analyses it; each trial gain then re-reads only the stretches
the limiter works on; a last pass writes the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d

from aiprod_post.errors import MediaError

from .loudness import (
    PEAK_CONTEXT,
    PEAK_SEGMENT,
    Loudness,
    _as_frames,
    _check_rate,
    _gated_mean,
    _SegmentMeter,
    _window_power,
    abs_peak_per_frame,
    measure_source,
    oversampled_peaks,
    scan,
    summarise,
)
from .stream import ArraySink, ArraySource

__all__ = ["Target", "TARGETS", "resolve_target", "limit_true_peak", "normalize",
           "normalize_source"]

_PAD = PEAK_CONTEXT  # samples of context the oversampling filter reads each side
_BLOCK = 1 << 16  # samples a pass works on at a time


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
                    lookahead_ms: float = 5.0, release_ms: float = 80.0) -> np.ndarray:
    """Return ``samples`` with true peak at or under ``ceiling_dbtp``."""
    x = _as_frames(samples)
    src = ArraySource(x)
    peaks = scan(src, int(sample_rate), true_peaks=True, power=False).true_peaks
    lim = _Limiter(src, int(sample_rate), ceiling_dbtp, peaks, 1.0, lookahead_ms, release_ms)
    out = np.empty_like(x)
    _write(src, ArraySink(out), lim)
    return out


class _Limiter:
    """The limiter's gain for ``source * gain``: the stretches (groups) that need it,
    and their gain curve a chunk at a time, computed the same way every time asked.

    ``seg_peaks`` are the source's linear true peaks per :data:`PEAK_SEGMENT`."""

    def __init__(self, src, fs: int, ceiling_dbtp: float, seg_peaks: np.ndarray, gain: float,
                 lookahead_ms: float = 5.0, release_ms: float = 80.0) -> None:
        self.src, self.gain = src, gain
        # a thousandth of a dB of headroom absorbs the rounding of the peak detector
        self.thr = 10 ** ((ceiling_dbtp - 0.001) / 20)
        self.attack = max(2, int(fs * lookahead_ms / 1000))
        self.block = max(1, fs // 1000)
        # per 1 ms block, the dB gain falls back towards 0 dB by this factor
        self.decay = math.exp(-1.0 / max(release_ms, 1.0))
        reach = 2 * self.attack + int(fs * release_ms / 1000) * 8 + self.block
        n = src.frames
        self.need = seg_peaks * gain > self.thr  # per PEAK_SEGMENT: some sample is over
        need = np.flatnonzero(self.need)
        groups: list[list[int]] = []
        if need.size:
            for run in np.split(need, np.flatnonzero(np.diff(need) > 1) + 1):
                lo = max(0, int(run[0]) * PEAK_SEGMENT - reach)
                hi = min(n, (int(run[-1]) + 1) * PEAK_SEGMENT + reach)
                if groups and lo <= groups[-1][1]:
                    groups[-1][1] = hi
                else:
                    groups.append([lo, hi])
        self.groups = [(lo, hi) for lo, hi in groups]

    def chunks(self, lo: int, hi: int, context: int = 0):
        """``(c0, c1, e0, e1, gain)``: the gain on ``[e0, e1)``, which is the chunk
        ``[c0, c1)`` of ``[lo, hi)`` and ``context`` samples more on both sides (within
        the programme)."""
        n = self.src.frames
        A, B = self.attack, self.block
        E = 2 * A + 3 * B + context
        prev: tuple[int, np.ndarray] | None = None  # (first block, levels) of the last chunk
        for c0 in range(lo, hi, _BLOCK):
            c1 = min(hi, c0 + _BLOCK)
            e0, e1 = max(0, c0 - context), min(n, c1 + context)
            w0, w1 = max(0, c0 - E), min(n, c1 + E)
            req = np.ones(w1 - w0)
            for a, b in self.needed(w0, w1):
                r0, r1 = max(0, a - _PAD), min(n, b + _PAD)
                peaks = oversampled_peaks(self.src.read(r0, r1))[a - r0:b - r0]
                peaks *= self.gain
                with np.errstate(divide="ignore"):
                    np.minimum(1.0, self.thr / peaks, out=req[a - w0:b - w0])
            m = minimum_filter1d(req, size=2 * A + 1, mode="nearest")
            u = uniform_filter1d(m, size=A, mode="nearest")  # attack ramp ends at the peak
            b0, b1 = e0 // B - 1, -(-e1 // B) + 1  # 1 ms blocks, one more each side
            pos = np.clip(np.arange(b0 * B, b1 * B) - w0, 0, len(u) - 1)  # nearest at the ends
            want = 20 * np.log10(np.maximum(u[pos].reshape(-1, B).min(axis=1), 1e-9))
            carry = 0.0
            if prev is not None and prev[0] <= b0 - 1 < prev[0] + len(prev[1]):
                carry = float(prev[1][b0 - 1 - prev[0]])
            levels = _decaying_minimum(want, self.decay, carry)
            prev = (b0, levels)
            stepped = np.repeat(10 ** (levels / 20), B)
            smooth = uniform_filter1d(stepped, size=B, mode="nearest")
            yield c0, c1, e0, e1, np.minimum(u[e0 - w0:e1 - w0], smooth[e0 - b0 * B:e1 - b0 * B])

    def needed(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of ``[lo, hi)`` in segments with a sample over the threshold (the
        required gain is exactly 1 everywhere else)."""
        s0, s1 = lo // PEAK_SEGMENT, -(-hi // PEAK_SEGMENT)
        idx = np.flatnonzero(self.need[s0:s1]) + s0
        out = []
        for run in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if idx.size else []:
            a = max(lo, int(run[0]) * PEAK_SEGMENT)
            b = min(hi, (int(run[-1]) + 1) * PEAK_SEGMENT)
            out.append((a, b))
        return out

    def all_chunks(self):
        for lo, hi in self.groups:
            yield from self.chunks(lo, hi)


def _decaying_minimum(want: np.ndarray, decay: float, carry: float = 0.0,
                      chunk: int = 256) -> np.ndarray:
    """``out[k] = min(want[k], out[k - 1] * decay)`` from ``out[-1] = carry``, for
    ``want, carry <= 0``.

    Unrolled, ``out[k] = decay**k * min_j(want[j] * decay**-j)``: a running minimum,
    worked in chunks so ``decay**-j`` stays small, the last value carried over.
    """
    out = np.empty(len(want))
    scale = decay ** -np.arange(chunk, dtype=np.float64)
    for a in range(0, len(want), chunk):
        w = want[a:a + chunk]
        k = len(w)
        run = np.minimum.accumulate(w * scale[:k])
        np.minimum(run, carry * decay, out=run)
        out[a:a + k] = run / scale[:k]
        carry = out[a + k - 1]
    return out


def _limited_figures(src, fs: int, lim: _Limiter, seg_power: np.ndarray,
                     seg_peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """100 ms powers and per-segment true peaks of ``src * gain`` after the limiter, from
    the input's (scaled) outside the limited stretches and measured inside them.

    The K-weighting filter is linear, so outside the limited stretches the powers are
    the input's times the gain squared; inside, they are measured from half a second
    before (the filters settle in a few milliseconds). True peaks are measured again in
    the segments the limiter had to bring down; elsewhere the input's scaled peak stands
    (under the ceiling there, and the limiter only lowers the gain).
    """
    g = lim.gain
    power = seg_power * (g * g)
    peaks = seg_peaks * g
    seg = int(round(fs * 0.1))
    n_full = len(seg_power) * seg
    settle = 5
    fresh = np.ones(len(peaks), bool)  # segments not yet measured after limiting
    for lo, hi in lim.groups:
        first = max(0, lo // seg - settle)
        end = min(n_full, (-(-hi // seg) + settle) * seg)
        meter = _SegmentMeter(fs, src.channels)
        if first * seg < lo:
            meter.feed(src.read(first * seg, lo) * g)
        for c0, c1, e0, e1, gain in lim.chunks(lo, hi, _PAD):
            y = src.read(e0, e1) * g
            y *= gain[:, None]
            meter.feed(y[c0 - e0:c1 - e0])
            for a, b in lim.needed(c0, c1):
                p = oversampled_peaks(y[max(0, a - _PAD - e0):b + _PAD - e0])
                p = p[a - max(e0, a - _PAD):][:b - a]
                starts = np.unique(np.r_[a, np.arange(-(-a // PEAK_SEGMENT) * PEAK_SEGMENT, b,
                                                      PEAK_SEGMENT)])
                k = starts // PEAK_SEGMENT
                # a segment split between two chunks takes the larger of its parts
                seg_max = np.maximum.reduceat(p, starts - a)
                peaks[k] = np.where(fresh[k], seg_max, np.maximum(peaks[k], seg_max))
                fresh[k] = False
        if hi < end:
            meter.feed(src.read(hi, end) * g)
        part = meter.powers()
        keep = lo // seg - first if first > 0 else 0
        power[first + keep:first + len(part)] = part[keep:]
    return power, peaks


def _write(src, sink, lim: _Limiter) -> tuple[float, int]:
    """Stream ``src * gain``, limited, into ``sink``; its sample peak and clipped count."""
    n = src.frames
    g = lim.gain
    chunks = lim.all_chunks()
    cur = next(chunks, None)
    peak, clipped = 0.0, 0
    for a in range(0, n, _BLOCK):
        b = min(n, a + _BLOCK)
        y = np.array(src.read(a, b))
        if g != 1.0:
            y *= g
        while cur is not None and cur[0] < b:
            e0, e1, gain = cur[2:]
            c0, c1 = max(a, e0), min(b, e1)
            if c0 < c1:
                y[c0 - a:c1 - a] *= gain[c0 - e0:c1 - e0, None]
            if e1 <= b:
                cur = next(chunks, None)
            else:
                break
        sink.write(y)
        p = abs_peak_per_frame(y)
        peak = max(peak, float(p.max(initial=0.0)))
        if peak >= 1.0:
            clipped += int(np.count_nonzero(p >= 1.0))
    return peak, clipped


def normalize(samples: np.ndarray, sample_rate: int, target: Target, *,
              tolerance_lu: float = 0.05) -> tuple[np.ndarray, Loudness, list[str]]:
    """Gain to the target's integrated loudness, limiting true peak to its ceiling.

    Returns the new samples (a new array), their measurement, and warnings. Silence is
    returned unchanged with a warning; a programme too short to measure is an error.
    """
    x = _as_frames(samples)
    out = np.empty_like(x)
    after, warnings = normalize_source(ArraySource(x), sample_rate, target, ArraySink(out),
                                       tolerance_lu=tolerance_lu)
    return out, after, warnings


def normalize_source(src, sample_rate: int, target: Target, sink, *,
                     tolerance_lu: float = 0.05) -> tuple[Loudness, list[str]]:
    """:func:`normalize` from a :mod:`audio.stream` source to a sink, a block at a time.

    The input is analysed once: gain scales its K-weighted powers and true peaks
    exactly, so each trial gain only re-measures what the limiter touches.
    """
    fs = _check_rate(sample_rate)
    sc = scan(src, fs, true_peaks=True)
    blocks = _window_power(sc.seg_power, 4)
    if blocks.size == 0:
        raise MediaError("too short to normalise: integrated loudness needs at least 400 ms")
    warnings: list[str] = []
    level0 = _gated_mean(blocks, -10.0)[0]
    if level0 == -math.inf:
        warnings.append("silence: no gain applied")
        _write(src, sink, _Limiter(src, fs, 0.0, np.zeros(0), 1.0))
        return measure_source(src, fs), warnings
    margin = 0.1  # dB under the ceiling, for the limiter's own interpolation error
    for _attempt in range(3):
        gain_db = target.integrated - level0
        tried: list[tuple[float, float]] = []  # (gain, resulting loudness)
        for _ in range(12):
            lim = _Limiter(src, fs, target.true_peak - margin, sc.true_peaks, 10 ** (gain_db / 20))
            power, peaks = _limited_figures(src, fs, lim, sc.seg_power, sc.true_peaks)
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
        tp = float(peaks.max(initial=0.0))
        over = 20 * math.log10(tp) - target.true_peak if tp > 0 else -1.0
        if over <= 0:
            break
        # the limiter's smoothing let a hair through: aim lower by that much
        margin += over + 0.01
    sample_peak, clipped = _write(src, sink, lim)
    after = summarise(replace(sc, seg_power=power, sample_peaks=np.array([sample_peak]),
                              true_peaks=None, clipped=clipped), tp, fs)
    warnings += [w for w in after.warnings if "clipped" not in w]
    if after.integrated is not None and abs(after.integrated - target.integrated) > 0.1:
        warnings.append(f"reached {after.integrated:.2f} LUFS, not {target.integrated:.1f}: "
                        "the true-peak ceiling does not allow more gain without heavy limiting")
    return after, warnings
