"""Loudness and true peak per ITU-R BS.1770-4, EBU R128 / Tech 3341 / Tech 3342.

Everything is computed from 100 ms segments of K-weighted energy: the 400 ms
momentary blocks (75 % overlap, used for gating) and the 3 s short-term
windows (used for loudness range) are sums of 4 and 30 consecutive segments.
That makes the whole analysis one filter pass plus a few array sums.

True peak follows BS.1770-4 Annex 2: 4x oversampling (polyphase FIR) and the
absolute maximum. Only the parts of the programme that could hold the peak are
oversampled: a segment's interpolated values are bounded by its sample peak
times the largest L1 norm of the filter's phases, so segments whose bound is
below the running maximum cannot change the result and are skipped.

>>> fs = 48000
>>> t = np.arange(fs * 20) / fs
>>> tone = 10 ** (-23 / 20) * np.sin(2 * np.pi * 1000 * t)
>>> m = measure(np.stack([tone, tone], axis=1), fs)
>>> round(m.integrated, 1), round(m.true_peak, 1)
(-23.0, -23.0)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
from scipy import signal

from aiprod_post.errors import MediaError

__all__ = [
    "Loudness",
    "LoudnessCurve",
    "loudness_source",
    "loudness_curve",
    "k_weighting_sos",
    "channel_weights",
    "measure",
    "measure_source",
    "measure_file",
    "scan",
    "true_peak",
    "oversampled_peaks",
    "TRUE_PEAK_OVERSAMPLING",
]

ABSOLUTE_GATE = -70.0
RELATIVE_GATE_INTEGRATED = -10.0
RELATIVE_GATE_LRA = -20.0
TRUE_PEAK_OVERSAMPLING = 4
_SEGMENT_SECONDS = 0.1


@dataclass
class Loudness:
    """One programme's figures. Levels in LUFS / dBTP / dBFS, range in LU.

    ``None`` where the standard gives no value (e.g. integrated loudness of a
    programme shorter than one 400 ms block); ``-inf`` for digital silence.
    """

    integrated: float | None
    loudness_range: float | None
    true_peak: float
    sample_peak: float
    momentary_max: float | None
    short_term_max: float | None
    duration: float
    sample_rate: int
    channels: int
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None if math.isnan(v) else ("-inf" if v < 0 else "inf")
            return round(v, 2) if isinstance(v, float) else v
        return {k: clean(v) for k, v in asdict(self).items()}


def k_weighting_sos(sample_rate: int) -> np.ndarray:
    """BS.1770 K-weighting (pre-filter shelf, then RLB high-pass) as second-order sections.

    Derived from the analog prototypes of the BS.1770 filters, so any sample
    rate works; at 48 kHz it reproduces the coefficients printed in the
    Recommendation (Tables 1 and 2).
    """
    fs = float(sample_rate)
    # High shelf (head acoustic model): gain, Q and centre frequency of the prototype.
    gain_db, q, fc = 3.999843853973347, 0.7071752369554196, 1681.974450955533
    k = math.tan(math.pi * fc / fs)
    vh = 10 ** (gain_db / 20)
    vb = vh ** 0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0,
             1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    # RLB high-pass.
    q, fc = 0.5003270373238773, 38.13547087602444
    k = math.tan(math.pi * fc / fs)
    a0 = 1 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, highpass])


def channel_weights(channels: int) -> np.ndarray:
    """BS.1770 weights in WAV/SMPTE order: mono, stereo, L R C, 5.0 (L R C Ls Rs), 5.1 (L R C LFE Ls Rs).

    The LFE channel is excluded (weight 0); surrounds weigh 1.41 (+1.5 dB).
    """
    table = {
        1: [1.0],
        2: [1.0, 1.0],
        3: [1.0, 1.0, 1.0],
        5: [1.0, 1.0, 1.0, 1.41, 1.41],
        6: [1.0, 1.0, 1.0, 0.0, 1.41, 1.41],
    }
    if channels not in table:
        raise MediaError(f"{channels} channels: loudness is defined here for mono, stereo, "
                         "3.0, 5.0 and 5.1 layouts")
    return np.array(table[channels])


def _as_frames(samples: np.ndarray) -> np.ndarray:
    """(frames, channels); float32 stays float32 (programme-long audio at half the
    memory: the filters below work in float64 a block at a time), anything else float64."""
    samples = np.asarray(samples)
    x = samples if samples.dtype == np.float32 else np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise MediaError("expected samples shaped (frames,) or (frames, channels)")
    return x


def _to_lufs(power: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -0.691 + 10 * np.log10(power)


class _SegmentMeter:
    """K-weighted, channel-weighted mean square per 100 ms segment, fed a block at a time
    (the filters' state carried from block to block)."""

    def __init__(self, fs: int, channels: int) -> None:
        self.seg = int(round(fs * _SEGMENT_SECONDS))
        self.sos = k_weighting_sos(fs)
        self.weights = channel_weights(channels)
        self.zi = [np.zeros((self.sos.shape[0], 2)) for _ in range(channels)]
        self.rest = np.zeros(0)
        self.parts: list[np.ndarray] = []

    def feed(self, x: np.ndarray) -> None:
        p = None
        for c, w in enumerate(self.weights):
            if w == 0:
                continue
            y, self.zi[c] = signal.sosfilt(self.sos, np.asarray(x[:, c], dtype=np.float64),
                                           zi=self.zi[c])
            y *= y
            if w != 1.0:
                y *= w
            if p is None:
                p = y
            else:
                p += y
        if p is None:
            p = np.zeros(x.shape[0])
        if self.rest.size:
            p = np.concatenate([self.rest, p])
        k = len(p) // self.seg
        self.parts.append(p[:k * self.seg].reshape(k, self.seg).sum(axis=1))
        self.rest = p[k * self.seg:].copy()

    def powers(self) -> np.ndarray:
        """Mean power of every complete segment fed so far."""
        return np.concatenate(self.parts) / self.seg if self.parts else np.zeros(0)


def _segment_power(x: np.ndarray, fs: int) -> np.ndarray:
    """Weighted K-filtered mean square per 100 ms segment (summed over channels)."""
    meter = _SegmentMeter(fs, x.shape[1])
    block = 32 * meter.seg  # the filters work in float64 on cache-sized blocks
    for a in range(0, x.shape[0], block):
        meter.feed(x[a:a + block])
    return meter.powers()


def _window_power(seg_power: np.ndarray, n: int) -> np.ndarray:
    """Mean power over every run of ``n`` consecutive segments (hop one segment)."""
    if len(seg_power) < n:
        return np.zeros(0)
    c = np.concatenate([[0.0], np.cumsum(seg_power)])
    return (c[n:] - c[:-n]) / n


def _gated_mean(power: np.ndarray, relative: float) -> tuple[float, np.ndarray]:
    above_abs = power[_to_lufs(power) > ABSOLUTE_GATE]
    if above_abs.size == 0:
        return -math.inf, above_abs
    gate = _to_lufs(np.array([above_abs.mean()]))[0] + relative
    kept = above_abs[_to_lufs(above_abs) > gate]
    return float(_to_lufs(np.array([kept.mean()]))[0]), kept


@lru_cache(maxsize=8)
def _oversampling_phases(factor: int) -> tuple[tuple[np.ndarray, ...], int, float]:
    """The non-trivial phases of a windowed-sinc interpolator, as FIRs.

    The sinc is cut at the original Nyquist frequency, so it is a Nyquist
    filter: phase 0 reproduces the input samples exactly and only the
    ``factor - 1`` in-between phases need computing. 24 taps per phase and a
    Kaiser window keep it flat to 20 kHz at 48 kHz, well inside BS.1770's
    +0.2/-0.4 dB true-peak tolerance.
    """
    half = 12 * factor
    taps = signal.firwin(2 * half + 1, 1.0 / factor, window=("kaiser", 8.0)) * factor
    phases = []
    for p in range(1, factor):
        # y[factor*n + p] = sum_j x[n - j] * taps[factor*j + p + half], j = -12 .. 11
        idx = factor * np.arange(-12, 12) + p + half
        phases.append(taps[idx])  # float64: numpy's direct convolution is fastest there
    bound = max(float(np.abs(ph).sum()) for ph in phases)
    return tuple(phases), 12, bound


# samples of context on each side that make a piece's oversampled peaks exact
PEAK_CONTEXT = 2 * _oversampling_phases(TRUE_PEAK_OVERSAMPLING)[1] + 2


def oversampled_peaks(x: np.ndarray, factor: int = TRUE_PEAK_OVERSAMPLING) -> np.ndarray:
    """Per input sample ``n``, the largest absolute value of the oversampled signal
    on ``[n, n + 1)``, maximum over channels (a linked detector, as a limiter needs).

    ``x`` is (frames, channels). Long inputs are worked through in blocks that stay in
    the processor's cache (with the filter's overlap), not as programme-long temporaries.
    """
    n = x.shape[0]
    peaks = np.empty(n)
    if n == 0:
        return peaks
    low, high = _phase_matrix(factor)
    block = 1 << 15
    for a in range(0, n, block):
        b = min(n, a + block)
        peaks[a:b] = _oversampled_block(x, low, high, a, b)
    return peaks


@lru_cache(maxsize=8)
def _phase_matrix(factor: int) -> tuple[np.ndarray, np.ndarray]:
    """The in-between phases as two Toeplitz blocks, so that one matrix product computes
    every phase of 24 consecutive samples at once.

    With the input cut into rows of ``L = 24`` samples, ``X[m] = x[L m - 11 : L m + 13]``
    shifted, output sample ``L m + r`` of phase ``p`` reads ``X[m]`` and ``X[m + 1]``:
    ``Y = X[:-1] @ low + X[1:] @ high``, column ``p L + r``. BLAS does in one call what
    three direct convolutions did, about five times faster in float32 (its rounding,
    ~1e-6 relative, is far under the limiter's 0.001 dB of headroom).
    """
    phases, lead, _ = _oversampling_phases(factor)
    L = len(phases[0])
    t = np.zeros((2 * L, len(phases) * L))
    for p, h in enumerate(phases):
        g = h[::-1]  # y[n] = sum_t g[t] x[n - (L - 1 - lead) + t]
        for r in range(L):
            t[r:r + L, p * L + r] = g
    t = t.astype(np.float32)
    return t[:L], t[L:]


def _oversampled_block(x: np.ndarray, low: np.ndarray, high: np.ndarray, a: int, b: int
                       ) -> np.ndarray:
    """oversampled_peaks of ``x[a:b]`` (reading the filter's overlap around it)."""
    L, width = low.shape
    before = L - 1 - 12  # samples of history each output reads (the phases' lead is 12)
    rows = -(-(b - a) // L)
    n = x.shape[0]
    lo, hi = max(0, a - before), min(n, b + 12)
    xp = np.zeros((rows + 1) * L, np.float32)
    peaks = None
    for c in range(x.shape[1]):
        xp[lo - a + before: hi - a + before] = x[lo:hi, c]
        rows_x = xp.reshape(rows + 1, L)
        y = rows_x[:-1] @ low
        y += rows_x[1:] @ high
        np.abs(y, out=y)
        y = y.reshape(rows, width // L, L)
        m = y[:, 0]
        for p in range(1, y.shape[1]):
            m = np.maximum(m, y[:, p])
        m = m.reshape(-1)[: b - a]
        if peaks is None:
            peaks = np.abs(np.asarray(x[a:b, c], dtype=np.float64))
        else:
            np.maximum(peaks, np.abs(x[a:b, c]), out=peaks)
        np.maximum(peaks, m, out=peaks)
    return peaks


def abs_peak_per_frame(x: np.ndarray) -> np.ndarray:
    """``max(|x[n, c]|)`` over channels, without numpy's slow reduction over a short axis,
    a cache-sized block at a time."""
    n = x.shape[0]
    peaks = np.empty(n)
    block = 1 << 15
    for a in range(0, n, block):
        b = min(n, a + block)
        out = peaks[a:b]
        np.abs(x[a:b, 0], out=out, casting="unsafe")
        for c in range(1, x.shape[1]):
            np.maximum(out, np.abs(x[a:b, c]), out=out)
    return peaks


PEAK_SEGMENT = 4800  # samples per segment of the per-segment true-peak map


def _segment_maxima(peaks: np.ndarray, seg: int = PEAK_SEGMENT) -> np.ndarray:
    """The maximum of every ``seg`` values (the last group may be short)."""
    k = -(-len(peaks) // seg)
    return np.pad(peaks, (0, k * seg - len(peaks))).reshape(k, seg).max(axis=1)


@dataclass
class Scan:
    """What one pass over a programme gives: 100 ms K-weighted powers, the sample peak
    (and, when asked, the true peak) of every :data:`PEAK_SEGMENT`, clipped samples."""

    seg_power: np.ndarray
    sample_peaks: np.ndarray
    true_peaks: np.ndarray | None
    clipped: int
    frames: int
    channels: int


def scan(src, fs: int, true_peaks: bool = False, power: bool = True) -> Scan:
    """One pass over ``src`` (a :mod:`audio.stream` source), a block at a time (without
    the K-weighted powers when ``power`` is false)."""
    n = src.frames
    meter = _SegmentMeter(fs, src.channels)
    pad = PEAK_CONTEXT
    n_seg = -(-n // PEAK_SEGMENT)
    sample_peaks = np.zeros(n_seg)
    tps = np.zeros(n_seg) if true_peaks else None
    clipped = 0
    block = 32 * PEAK_SEGMENT
    for a in range(0, n, block):
        b = min(n, a + block)
        lo, hi = (max(0, a - pad), min(n, b + pad)) if true_peaks else (a, b)
        xc = src.read(lo, hi)
        x = xc[a - lo:b - lo]
        if not np.isfinite(x).all():
            raise MediaError(f"samples contain NaN or infinity (at {a / fs:.2f} s or after)")
        if power:
            meter.feed(x)
        absx = abs_peak_per_frame(x)
        s0 = a // PEAK_SEGMENT
        part = _segment_maxima(absx)
        sample_peaks[s0:s0 + len(part)] = part
        if part.max(initial=0.0) >= 1.0:
            clipped += int(np.count_nonzero(np.abs(x) >= 1.0))
        if tps is not None:
            tps[s0:s0 + len(part)] = _segment_maxima(oversampled_peaks(xc)[a - lo:b - lo])
    return Scan(meter.powers(), sample_peaks, tps, clipped, n, src.channels)


def _screened_true_peak(src, sample_peaks: np.ndarray, factor: int = TRUE_PEAK_OVERSAMPLING
                        ) -> float:
    """Linear true peak of ``src`` from its per-segment sample peaks, oversampling only
    the segments whose bound can still beat the running maximum."""
    _, _, bound = _oversampling_phases(factor)
    pad = PEAK_CONTEXT
    seg = PEAK_SEGMENT
    n_seg = len(sample_peaks)
    if n_seg == 0:
        return 0.0
    seg_peak = sample_peaks
    # a segment's interpolation also reads `pad` samples of its neighbours
    neighbour = np.maximum(seg_peak, np.maximum(np.r_[0, seg_peak[:-1]], np.r_[seg_peak[1:], 0]))
    best = float(seg_peak.max())
    order = np.argsort(-neighbour)
    # Oversample the most promising segments first, a batch at a time (contiguous
    # segments of a batch are processed as one run), until no remaining segment
    # can beat the running maximum.
    batch = 256
    for start in range(0, n_seg, batch):
        chosen = order[start:start + batch]
        chosen = chosen[neighbour[chosen] * bound > best]
        if chosen.size == 0:
            break
        chosen.sort()
        breaks = np.flatnonzero(np.diff(chosen) > 1) + 1
        for run in np.split(chosen, breaks):
            for first in range(int(run[0]), int(run[-1]) + 1, 64):
                last = min(int(run[-1]) + 1, first + 64)
                a, b = first * seg, min(src.frames, last * seg)
                lo, hi = max(0, a - pad), min(src.frames, b + pad)
                # only the run itself: the cut ends of the context would ring
                peaks = oversampled_peaks(src.read(lo, hi), factor)[a - lo:b - lo]
                best = max(best, float(peaks.max()))
    return best


def _db(linear: float) -> float:
    with np.errstate(divide="ignore"):
        return float(20 * np.log10(linear)) if linear > 0 else -math.inf


def true_peak(samples: np.ndarray, factor: int = TRUE_PEAK_OVERSAMPLING) -> float:
    """Maximum true-peak level in dBTP (BS.1770-4 Annex 2)."""
    from .stream import ArraySource

    x = _as_frames(samples)
    if x.size == 0:
        return -math.inf
    sample_peaks = np.concatenate([
        _segment_maxima(abs_peak_per_frame(x[a:a + 64 * PEAK_SEGMENT]))
        for a in range(0, x.shape[0], 64 * PEAK_SEGMENT)])
    return _db(_screened_true_peak(ArraySource(x), sample_peaks, factor))


def _check_rate(sample_rate) -> int:
    fs = int(sample_rate)
    if fs <= 0:
        raise MediaError(f"sample rate {sample_rate} is not positive")
    if round(fs * _SEGMENT_SECONDS) != fs * _SEGMENT_SECONDS:
        raise MediaError(f"sample rate {fs} Hz: resample to 48 kHz before measuring")
    return fs


def measure(samples: np.ndarray, sample_rate: int) -> Loudness:
    """Integrated loudness, loudness range, true peak, momentary and short-term maxima."""
    from .stream import as_source

    return measure_source(as_source(samples), sample_rate)


def measure_source(src, sample_rate: int) -> Loudness:
    """:func:`measure` of a :mod:`audio.stream` source (a file, a sum of stems), read a
    block at a time: memory does not grow with the programme's length."""
    fs = _check_rate(sample_rate)
    sc = scan(src, fs)
    tp = _screened_true_peak(src, sc.sample_peaks)
    return summarise(sc, tp, fs)


def measure_file(path) -> Loudness:
    """:func:`measure_source` of an audio file libsndfile reads."""
    from .stream import FileSource

    src = FileSource(path)
    try:
        return measure_source(src, src.rate)
    finally:
        src.close()


def summarise(sc: Scan, true_peak_linear: float, fs: int, seg_power: np.ndarray | None = None
              ) -> Loudness:
    """All figures from a :class:`Scan` and the programme's linear true peak
    (``seg_power`` in place of the scan's, where the caller knows better)."""
    warnings: list[str] = []
    seg_power = sc.seg_power if seg_power is None else seg_power
    duration = sc.frames / fs
    momentary = _window_power(seg_power, 4)
    short_term = _window_power(seg_power, 30)
    sample_peak = float(sc.sample_peaks.max(initial=0.0))
    sample_peak_db = _db(sample_peak)
    tp_db = _db(true_peak_linear)

    integrated: float | None
    if momentary.size == 0:
        integrated = None
        warnings.append(f"programme is {duration * 1000:.0f} ms long: integrated loudness needs "
                        "at least one 400 ms gating block")
    else:
        integrated, _ = _gated_mean(momentary, RELATIVE_GATE_INTEGRATED)
        if integrated == -math.inf:
            warnings.append("silence: every block is below the -70 LUFS absolute gate")
    lra: float | None = None
    if short_term.size:
        # Tech 3342: short-term loudness at >= 10 Hz, absolute then -20 LU relative gate,
        # range between the 10th and 95th percentiles.
        _, kept = _gated_mean(short_term, RELATIVE_GATE_LRA)
        if kept.size:
            levels = _to_lufs(kept)
            lra = float(np.percentile(levels, 95) - np.percentile(levels, 10))
        else:
            lra = 0.0
    if sc.clipped:
        warnings.append(f"{sc.clipped} samples at or beyond full scale: the input may be "
                        "clipped")
    return Loudness(
        integrated=integrated,
        loudness_range=lra,
        true_peak=tp_db,
        sample_peak=sample_peak_db,
        momentary_max=float(_to_lufs(momentary).max()) if momentary.size else None,
        short_term_max=float(_to_lufs(short_term).max()) if short_term.size else None,
        duration=duration,
        sample_rate=fs,
        channels=sc.channels,
        warnings=warnings,
    )


@dataclass
class LoudnessCurve:
    """Loudness over time of a programme, for plots: momentary (400 ms) and short-term
    (3 s) loudness, BS.1770 K-weighted, one value per ``step`` seconds (the loudest window
    ending in that step, as a meter's peak-hold shows it), and the sample envelope."""

    step: float
    momentary: np.ndarray
    short_term: np.ndarray
    envelope: np.ndarray  # (steps, 2): the lowest and highest sample value of each step


def loudness_curve(src, sample_rate: int, points: int = 1200) -> LoudnessCurve:
    """:class:`LoudnessCurve` of a :mod:`audio.stream` source, read a block at a time, at
    most ``points`` values (steps of whole 100 ms segments)."""
    fs = _check_rate(sample_rate)
    meter = _SegmentMeter(fs, src.channels)
    seg = meter.seg
    n = src.frames
    n_seg = max(1, n // seg)
    per = max(1, -(-n_seg // points))  # segments per step
    steps = -(-n_seg // per)
    env = np.zeros((steps, 2))
    block = 32 * seg * per
    for a in range(0, n, block):
        b = min(n, a + block)
        x = src.read(a, b)
        meter.feed(x)
        mono = x.max(axis=1), x.min(axis=1)
        for s in range(a // (seg * per), min(steps, -(-b // (seg * per)))):
            lo, hi = max(a, s * seg * per) - a, min(b, (s + 1) * seg * per) - a
            if hi > lo:
                env[s, 0] = min(env[s, 0], mono[1][lo:hi].min())
                env[s, 1] = max(env[s, 1], mono[0][lo:hi].max())
    power = meter.powers()

    def held(window: int) -> np.ndarray:
        w = _window_power(power, window)  # w[i]: the window of segments i .. i+window-1
        out = np.full(steps, -np.inf)
        if w.size:
            ends = np.arange(len(w)) + window - 1  # the segment each window ends in
            lufs = _to_lufs(np.maximum(w, 1e-20))
            np.maximum.at(out, np.minimum(ends // per, steps - 1), lufs)
        return out

    return LoudnessCurve(per * _SEGMENT_SECONDS, held(4), held(30), env)


def loudness_source(path):
    """A file to measure, as (source, sample rate): a file libsndfile reads at a rate of
    whole 100 ms segments is read a block at a time (memory stays flat however long it
    is); anything else (another container, an odd rate such as 22.05 kHz) is decoded whole
    and, at an odd rate, resampled to 48 kHz first, since BS.1770's blocks are whole 100 ms
    segments. The caller closes the source."""
    from pathlib import Path

    from .io import read_audio, resample
    from .stream import ArraySource, FileSource

    path = Path(path)
    if path.is_file():
        try:
            src = FileSource(path)
        except MediaError:
            src = None
        if src is not None:
            if src.rate % 10 == 0:
                return src, src.rate
            src.close()
    samples, rate = read_audio(path)
    if rate % 10:
        samples, rate = resample(samples, rate), 48000
    return ArraySource(samples if samples.ndim == 2 else samples[:, None]), rate
