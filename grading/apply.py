"""Applying a LUT: tetrahedral by default (trilinear on request); inputs outside the
domain clamp to its edges, as OpenColorIO and Resolve do, per channel and per stage
(prelut, 1D, 3D). NaN is taken as the bottom of the domain and ±inf as its edges,
as OpenColorIO's CPU path does: the result is always finite.

Four paths give the same numbers:

* :func:`apply_lut` — float, vectorised NumPy: the reference, any bit depth;
* :class:`FrameGrader` — 8-bit video frames: the LUT is evaluated once for all 2^24
  colours (a 64 MiB table, built by a compiled kernel) and each frame is then one
  table look-up per pixel; exact, since every 8-bit input has its entry;
* :class:`FloatFrameGrader` — frames above 8 bits (uint16 ``rgb48``) and float frames:
  one compiled pass per frame in float32, no 8-bit step;
* :func:`apply_lut_torch` — the same tetrahedral maths on a CUDA device, when torch
  and a GPU are present.

>>> lut = LUT.identity(5)
>>> apply_lut(np.array([[0.2, 0.5, 0.9]]), lut).round(6).tolist()
[[0.2, 0.5, 0.9]]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from aiprod_post.errors import MediaError

from .lut import LUT

if TYPE_CHECKING:
    from .cdl import CDL

__all__ = ["apply_lut", "apply_shaper", "FrameGrader", "FloatFrameGrader", "apply_lut_torch",
           "grade_uint8_torch", "lut_to_uint8_table", "cinespace_spline"]


def cinespace_spline(x: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A ``.csp`` prelut at ``x``: the Cinespace (Rising Sun Research) piecewise cubic
    through the points (xs, ys), as OpenColorIO evaluates it: Hermite segments whose
    slopes are the neighbours' central differences, quadratic end segments, straight
    for two points, the end values outside the points.

    >>> cinespace_spline(np.array([-1.0, 0.25, 2.0]), np.array([0.0, 0.5, 1.0]),
    ...                  np.array([0.0, 0.5, 1.0])).tolist()
    [0.0, 0.25, 1.0]
    """
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    n = len(xs)
    seg = np.clip(np.searchsorted(xs, x, side="right") - 1, 0, n - 2)
    delta = np.diff(xs)
    f0, f1 = ys[:-1], ys[1:]
    if n == 2:
        a, b, c, d = f0, f1 - f0, np.zeros(1), np.zeros(1)
    else:
        # slopes at each segment's ends, in units of the segment's width
        dfdx0 = np.zeros(n - 1)
        dfdx1 = np.zeros(n - 1)
        dfdx0[1:] = (ys[2:] - ys[:-2]) / (1 + delta[:-1] / delta[1:])
        dfdx1[:-1] = (ys[2:] - ys[:-2]) / (1 + delta[1:] / delta[:-1])
        a = f0.copy()
        b = dfdx0.copy()
        c = -3 * f0 - 2 * dfdx0 + 3 * f1 - dfdx1
        d = 2 * f0 + dfdx0 - 2 * f1 + dfdx1
        b[0], c[0], d[0] = -2 * f0[0] + 2 * f1[0] - dfdx1[0], f0[0] - f1[0] + dfdx1[0], 0.0
        c[-1], d[-1] = -f0[-1] + f1[-1] - dfdx0[-1], 0.0
    with np.errstate(invalid="ignore", over="ignore"):  # ±inf: replaced by the ends below
        z = (x - xs[seg]) / delta[seg]
        y = a[seg] + z * (b[seg] + z * (c[seg] + d[seg] * z))
    return np.where(x < xs[0], ys[0], np.where(x > xs[-1], ys[-1], y))


def apply_shaper(x: np.ndarray, lut: LUT) -> np.ndarray:
    """The 1D part (prelut, then shaper), per channel, linear interpolation, clamped to
    each one's input range. NaN reads as the bottom of the range."""
    x = np.where(np.isnan(x), -np.inf, x)
    if lut.prelut is not None:
        x = np.stack([cinespace_spline(x[..., c], xs, ys) for c, (xs, ys) in
                      enumerate(lut.prelut)], axis=-1)
    sh = lut.shaper
    if sh is None:
        return x.astype(np.float64)
    n = sh.shape[0]
    out = np.empty_like(x, dtype=np.float64)
    for c in range(3):
        t = (x[..., c] - lut.shaper_min[c]) / (lut.shaper_max[c] - lut.shaper_min[c])
        t = np.clip(t, 0.0, 1.0) * (n - 1)
        out[..., c] = np.interp(t, np.arange(n), sh[:, c])
    return out


def _tetrahedral(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    n = table.shape[0]
    flat = table.reshape(-1, 3)
    s = x * (n - 1)
    i = np.minimum(np.floor(s).astype(np.int64), n - 2)
    f = s - i
    fr, fg, fb = f[:, 0], f[:, 1], f[:, 2]
    sr, sg, sb = n * n, n, 1
    base = i[:, 0] * sr + i[:, 1] * sg + i[:, 2] * sb
    c1, c2, c3 = fr >= fg, fg >= fb, fr >= fb
    conds = [c1 & c2, c1 & ~c2 & c3, c1 & ~c3, ~c1 & ~c3 & ~c2, ~c1 & c2 & c3, ~c1 & c2 & ~c3]
    # r>=g>=b, r>=b>g, b>r>=g, b>g>r, g>=b... split by the b/r order
    f1 = np.select(conds, [fr, fr, fb, fb, fg, fg])
    f2 = np.select(conds, [fg, fb, fr, fg, fr, fb])
    f3 = np.select(conds, [fb, fg, fg, fr, fb, fr])
    s1 = np.select(conds, [sr, sr, sb, sb, sg, sg])
    s2 = s1 + np.select(conds, [sg, sb, sr, sg, sr, sb])
    out = (flat[base] * (1 - f1)[:, None] + flat[base + s1] * (f1 - f2)[:, None]
           + flat[base + s2] * (f2 - f3)[:, None] + flat[base + sr + sg + sb] * f3[:, None])
    return out


def _trilinear(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    n = table.shape[0]
    s = x * (n - 1)
    i = np.minimum(np.floor(s).astype(np.int64), n - 2)
    f = s - i
    out = np.zeros((x.shape[0], 3))
    for dr in (0, 1):
        wr = f[:, 0] if dr else 1 - f[:, 0]
        for dg in (0, 1):
            wg = f[:, 1] if dg else 1 - f[:, 1]
            for db in (0, 1):
                wb = f[:, 2] if db else 1 - f[:, 2]
                out += (wr * wg * wb)[:, None] * table[i[:, 0] + dr, i[:, 1] + dg, i[:, 2] + db]
    return out


def apply_lut(rgb: np.ndarray, lut: LUT, method: str = "tetrahedral",
              strength: float = 1.0) -> np.ndarray:
    """Apply ``lut`` to float RGB of any shape (..., 3); returns float64."""
    if method not in ("tetrahedral", "trilinear"):
        raise MediaError(f"unknown interpolation {method!r}: expected tetrahedral or trilinear")
    x = np.asarray(rgb, dtype=np.float64)
    shape = x.shape
    if shape[-1] != 3:
        raise MediaError("expected RGB values in the last axis")
    y = x.reshape(-1, 3)
    if lut.shaper is not None or lut.prelut is not None:
        y = apply_shaper(y, lut)
    if lut.table is not None:
        t = np.clip((y - lut.domain_min) / (lut.domain_max - lut.domain_min), 0.0, 1.0)
        t[np.isnan(t)] = 0.0  # NaN in: the bottom of the domain, as OpenColorIO
        y = (_tetrahedral if method == "tetrahedral" else _trilinear)(t, lut.table)
    y = y.reshape(shape)
    if strength != 1.0:
        # the mix with the source reads NaN as 0 and ±inf as the float32 extremes
        src = np.nan_to_num(x, nan=0.0, posinf=np.finfo(np.float32).max,
                            neginf=np.finfo(np.float32).min)
        y = src + strength * (y - src)
    return y


def lut_to_uint8_table(lut: LUT, strength: float = 1.0, method: str = "tetrahedral"
                       ) -> np.ndarray:
    """The LUT evaluated for every 8-bit RGB colour: (2^24, 4) uint8, index r<<16|g<<8|b.

    The shaper and the domain are per channel, so they reduce to 256 positions per
    channel; the 3D interpolation then runs in a compiled loop over all 2^24 colours
    (the NumPy reference is used where numba is missing, or for trilinear).
    """
    levels = np.arange(256, dtype=np.float64) / 255.0
    x = np.repeat(levels[:, None], 3, axis=1)
    if lut.shaper is not None or lut.prelut is not None:
        x = apply_shaper(x, lut)
    kernel = _table_kernel() if method == "tetrahedral" and lut.table is not None else None
    if kernel is None:
        table = np.zeros((1 << 24, 4), np.uint8)
        for r in range(0, 256, 16):  # 16 slices of 1M colours bound the float memory
            rr, gg, bb = np.meshgrid(levels[r:r + 16], levels, levels, indexing="ij")
            rgb = np.stack([rr, gg, bb], axis=-1).reshape(-1, 3)
            y = apply_lut(rgb, lut, method, strength)
            table[r << 16:(r + 16) << 16, :3] = np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return table
    n = lut.table.shape[0]
    t = np.clip((x - lut.domain_min) / (lut.domain_max - lut.domain_min), 0.0, 1.0) * (n - 1)
    off = np.minimum(np.floor(t).astype(np.int64), n - 2)
    frac = t - off
    table = np.zeros((1 << 24, 4), np.uint8)
    kernel(np.ascontiguousarray(off), np.ascontiguousarray(frac),
           np.ascontiguousarray(lut.table.reshape(-1, 3), dtype=np.float64), n, float(strength),
           table)
    return table


_TABLE = None
_TETRAHEDRON = None


def _tetrahedron():
    """A compiled helper: which of the six tetrahedra holds the fractions (fr, fg, fb),
    as the two steps along it (flat offsets s1, s2) and its sorted fractions."""
    global _TETRAHEDRON
    if _TETRAHEDRON is None:
        import numba

        @numba.njit(inline="always", nogil=True, cache=True)
        def tetrahedron(fr, fg, fb, sr, sg):
            if fr >= fg:
                if fg >= fb:
                    return sr, sr + sg, fr, fg, fb
                if fr >= fb:
                    return sr, sr + 1, fr, fb, fg
                return 1, 1 + sr, fb, fr, fg
            if fb >= fg:
                return 1, 1 + sg, fb, fg, fr
            if fb >= fr:
                return sg, sg + 1, fg, fb, fr
            return sg, sg + sr, fg, fr, fb

        _TETRAHEDRON = tetrahedron
    return _TETRAHEDRON


def _table_kernel():
    global _TABLE
    if _TABLE is not None:
        return _TABLE or None
    try:
        import numba
    except ImportError:  # pragma: no cover
        _TABLE = False
        return None
    tetrahedron = _tetrahedron()

    @numba.njit(boundscheck=False, nogil=True, cache=True)
    def build(off, frac, flat, n, strength, table):
        sr = n * n
        sg = n
        for r in range(256):
            for g in range(256):
                for b in range(256):
                    base = off[r, 0] * sr + off[g, 1] * sg + off[b, 2]
                    fr = frac[r, 0]
                    fg = frac[g, 1]
                    fb = frac[b, 2]
                    s1, s2, f1, f2, f3 = tetrahedron(fr, fg, fb, sr, sg)
                    w0 = 1.0 - f1
                    w1 = f1 - f2
                    w2 = f2 - f3
                    i3 = base + sr + sg + 1
                    k = (r << 16) | (g << 8) | b
                    src = (r / 255.0, g / 255.0, b / 255.0)
                    for c in range(3):
                        v = (w0 * flat[base, c] + w1 * flat[base + s1, c]
                             + w2 * flat[base + s2, c] + f3 * flat[i3, c])
                        v = src[c] + strength * (v - src[c])
                        v = v * 255.0 + 0.5
                        table[k, c] = 0 if v < 0 else (255 if v >= 255 else np.uint8(v))
        return table

    _TABLE = build
    return build


def _gather_kernel():
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; NumPy keeps it working
        return None

    @numba.njit(boundscheck=False, nogil=True, cache=True)
    def gather(img, curves, table, out):
        h, w = img.shape[0], img.shape[1]
        for y in range(h):
            for x in range(w):
                v = table[(np.int64(curves[0, img[y, x, 0]]) << 16)
                          | (np.int64(curves[1, img[y, x, 1]]) << 8)
                          | np.int64(curves[2, img[y, x, 2]])]
                out[y, x, 0] = v[0]
                out[y, x, 1] = v[1]
                out[y, x, 2] = v[2]
        return out

    return gather


_GATHER = None
_IDENTITY_CURVES = np.tile(np.arange(256, dtype=np.uint8), (3, 1))


class FrameGrader:
    """Grade 8-bit RGB frames with a LUT: build once, then one look-up per pixel.

    With an ASC ``cdl``, the correction comes first (as OpenColorIO's ``CDLTransform``,
    ``cdl_style``) and the look after it; with ``before`` (float RGB to float RGB, such
    as a colour conversion), that comes before both. All are baked into the one table."""

    def __init__(self, lut: LUT, strength: float = 1.0, method: str = "tetrahedral",
                 cdl: "CDL | None" = None, cdl_style: str = "asc",
                 before: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        global _GATHER
        if cdl is not None and cdl.is_identity:
            cdl = None
        if cdl is not None or before is not None:
            if method != "tetrahedral":
                raise MediaError("a CDL or conversion before the look is baked with "
                                 "tetrahedral interpolation")
            self.table = _baked_uint8_table(lut, strength, cdl, cdl_style, before)
        else:
            self.table = lut_to_uint8_table(lut, strength, method)
        if _GATHER is None:
            _GATHER = _gather_kernel() or False

    def __call__(self, frame: np.ndarray, curves: np.ndarray | None = None) -> np.ndarray:
        """``frame`` graded; with ``curves`` (3×256 uint8 per-channel curves, as shot
        matching makes) applied first, in the same pass."""
        out = np.empty_like(frame)
        if _GATHER:
            return _GATHER(np.ascontiguousarray(frame),
                           _IDENTITY_CURVES if curves is None else curves, self.table, out)
        if curves is not None:
            frame = np.stack([curves[c][frame[..., c]] for c in range(3)], axis=-1)
        idx = (frame[..., 0].astype(np.int64) << 16) | (frame[..., 1].astype(np.int64) << 8) \
            | frame[..., 2]
        return self.table[idx][..., :3]


_FLOAT = None


def _float_kernel():
    global _FLOAT
    if _FLOAT is not None:
        return _FLOAT
    import numba

    tetrahedron = _tetrahedron()

    @numba.njit(boundscheck=False, nogil=True, cache=True, fastmath=False)
    def grade(img, out, in_scale, quantise, lut1d, lo1, k1, flat, n, lo3, k3, strength):
        h, w = img.shape[0], img.shape[1]
        m = lut1d.shape[0]
        sr = n * n
        sg = n
        v = np.empty(3, np.float32)
        src = np.empty(3, np.float32)
        for y in range(h):
            for x in range(w):
                for c in range(3):
                    a = np.float32(img[y, x, c]) * in_scale
                    src[c] = a
                    if m > 0:
                        t = (a - lo1[c]) * k1[c]
                        if not t > 0:  # below, -inf and NaN: the bottom of the range
                            t = np.float32(0)
                        elif t > m - 1:
                            t = np.float32(m - 1)
                        i = min(np.int64(t), m - 2)
                        f = t - i
                        a = lut1d[i, c] + f * (lut1d[i + 1, c] - lut1d[i, c])
                    v[c] = a
                if n > 0:
                    for c in range(3):
                        t = (v[c] - lo3[c]) * k3[c]
                        if not t > 0:
                            t = np.float32(0)
                        elif t > n - 1:
                            t = np.float32(n - 1)
                        v[c] = t
                    ir = min(np.int64(v[0]), n - 2)
                    ig = min(np.int64(v[1]), n - 2)
                    ib = min(np.int64(v[2]), n - 2)
                    fr = v[0] - ir
                    fg = v[1] - ig
                    fb = v[2] - ib
                    base = ir * sr + ig * sg + ib
                    s1, s2, f1, f2, f3 = tetrahedron(fr, fg, fb, sr, sg)
                    i3 = base + sr + sg + 1
                    for c in range(3):
                        v[c] = ((1 - f1) * flat[base, c] + (f1 - f2) * flat[base + s1, c]
                                + (f2 - f3) * flat[base + s2, c] + f3 * flat[i3, c])
                for c in range(3):
                    a = v[c]
                    if strength != 1:
                        b = src[c]
                        if b != b:
                            b = np.float32(0)
                        a = b + strength * (a - b)
                    if quantise:
                        a = a * np.float32(65535) + np.float32(0.5)
                        out[y, x, c] = 0 if not a > 0 else (65535 if a >= 65535 else a)
                    else:
                        out[y, x, c] = a
        return out

    _FLOAT = grade
    return grade


def _uniform_1d(lut: LUT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The LUT's 1D stage as one uniform table per channel (M, 3), with each channel's
    input minimum and points per unit: the shaper as it is, or a ``.csp`` prelut (and any
    shaper after it) resampled on 65536 points, as OpenColorIO resamples it. M is 0 when
    there is no 1D stage."""
    f32 = np.float32
    if lut.prelut is not None:
        lo = np.array([xs[0] for xs, _ in lut.prelut])
        hi = np.array([xs[-1] for xs, _ in lut.prelut])
        grid = lo + np.linspace(0.0, 1.0, 65536)[:, None] * (hi - lo)
        k = 65535 / (hi - lo)
        return apply_shaper(grid, lut).astype(f32), lo.astype(f32), k.astype(f32)
    if lut.shaper is not None:
        k = (lut.shaper.shape[0] - 1) / (lut.shaper_max - lut.shaper_min)
        return lut.shaper.astype(f32), lut.shaper_min.astype(f32), k.astype(f32)
    return np.zeros((0, 3), f32), np.zeros(3, f32), np.ones(3, f32)


class FloatFrameGrader:
    """Grade frames above 8 bits in float32, one compiled pass per frame.

    ``uint16`` frames (``rgb48``, full 0..65535) come back as ``uint16``; ``float32``
    frames come back as ``float32`` (unclamped, what the LUT gives). A ``.csp`` prelut
    is resampled on 65536 points per channel, as OpenColorIO resamples it.

    >>> g = FloatFrameGrader(LUT.identity(5))
    >>> g(np.array([[[0, 1000, 65535]]], np.uint16)).tolist()
    [[[0, 1000, 65535]]]
    """

    def __init__(self, lut: LUT, strength: float = 1.0, cdl: "CDL | None" = None,
                 cdl_style: str = "asc") -> None:
        self.cdl = None if cdl is None or cdl.is_identity else cdl
        self.cdl_style = cdl_style
        f32 = np.float32
        lut1d, lo1, k1 = _uniform_1d(lut)
        n = 0 if lut.table is None else lut.table.shape[0]
        self._args = (lut1d, lo1, k1,
                      np.zeros((0, 3), f32) if n == 0 else
                      np.ascontiguousarray(lut.table.reshape(-1, 3), dtype=f32), n,
                      lut.domain_min.astype(f32),
                      ((n - 1) / (lut.domain_max - lut.domain_min)).astype(f32),
                      f32(strength))
        self._kernel = _float_kernel()

    def __call__(self, frame: np.ndarray, out: np.ndarray | None = None, *,
                 match: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """``frame`` graded; with ``match`` (shot matching's per-channel gain and offset,
        :func:`~aiprod_post.grading.match.match_affine`) applied first, in float."""
        if frame.dtype == np.uint16:
            scale, quantise = np.float32(1 / 65535), True
        elif frame.dtype == np.float32:
            scale, quantise = np.float32(1), False
        else:
            raise MediaError(f"float grading takes uint16 or float32 frames, not {frame.dtype}")
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise MediaError("expected frames of H x W x 3")
        if out is None:
            out = np.empty_like(frame)
        if self.cdl is None and match is None:
            return self._kernel(np.ascontiguousarray(frame), out, scale, quantise, *self._args)
        x = frame.astype(np.float32) * scale
        if match is not None:  # shot matching first, clamped to 0..1 as its 8-bit curves
            from .match import apply_affine

            x = apply_affine(x, match)
        if self.cdl is not None:  # the CDL, in float; then the look
            from .cdl import apply_cdl

            x = apply_cdl(x, self.cdl, self.cdl_style)
        y = self._kernel(np.ascontiguousarray(x), np.empty_like(x), np.float32(1), False,
                         *self._args)
        if not quantise:
            out[...] = y
            return out
        np.clip(y * np.float32(65535) + np.float32(0.5), 0, 65535, out=y)
        out[...] = y
        return out


def _baked_uint8_table(lut: LUT, strength: float, cdl: "CDL | None", style: str,
                       before: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    """Every 8-bit colour through ``before``, the CDL and then the look (the float path),
    1M colours at a time: a conversion or the CDL's saturation mixes channels, so there
    is no per-channel shortcut."""
    from .cdl import apply_cdl, cdl_saturation, cdl_sop

    grader = FloatFrameGrader(lut, strength)
    levels = np.arange(256, dtype=np.float32) / np.float32(255)
    # without a conversion first, the CDL's per-channel part needs 256 values a channel
    sop = None if before is not None or cdl is None else \
        cdl_sop(np.repeat(levels[:, None], 3, axis=1), cdl, style)
    table = np.zeros((1 << 24, 4), np.uint8)
    for r in range(0, 256, 16):
        if sop is not None:
            rgb = np.empty((16, 256, 256, 3), np.float32)
            rgb[..., 0] = sop[r:r + 16, 0][:, None, None]
            rgb[..., 1] = sop[:, 1][None, :, None]
            rgb[..., 2] = sop[:, 2][None, None, :]
            rgb = cdl_saturation(rgb.reshape(1, -1, 3), cdl, style)
        else:
            rr, gg, bb = np.meshgrid(levels[r:r + 16], levels, levels, indexing="ij")
            rgb = np.stack([rr, gg, bb], axis=-1).reshape(1, -1, 3)
            if before is not None:
                rgb = np.asarray(before(rgb), np.float32)
            if cdl is not None:
                rgb = apply_cdl(rgb, cdl, style)
        y = grader(np.ascontiguousarray(rgb))[0]
        table[r << 16:(r + 16) << 16, :3] = np.clip(y * 255 + 0.5, 0, 255).astype(np.uint8)
    return table


_TORCH_TABLES: dict = {}


def apply_lut_torch(rgb, lut: LUT, method: str = "tetrahedral"):
    """Tetrahedral interpolation of a float torch tensor (..., 3) on its own device,
    after the LUT's 1D stage (as :class:`FloatFrameGrader` makes it); NaN reads as the
    bottom of each range, as in the other paths.

    The same arithmetic as :func:`apply_lut`: the tetrahedron is chosen by comparing
    the three fractions, so no sort is needed per pixel.
    """
    import torch

    if method != "tetrahedral":
        raise MediaError("the GPU path implements tetrahedral interpolation")
    device = rgb.device
    key = (id(lut), str(device))
    cached = _TORCH_TABLES.get(key)
    # upload the tables once per LUT and device; the entry keeps its LUT, so the id cannot
    # be reused by another LUT while it is cached (a freed LUT's id was, and a new LUT got
    # the old one's tables)
    if cached is None or cached[0] is not lut:
        one_d = _uniform_1d(lut)
        if len(_TORCH_TABLES) >= 16:
            _TORCH_TABLES.pop(next(iter(_TORCH_TABLES)))
        cached = _TORCH_TABLES[key] = (lut, *(
            None if a is None else torch.as_tensor(a, dtype=torch.float32, device=device)
            for a in (lut.table, lut.domain_min, lut.domain_max, *one_d)))
    _lut, table, dmin, dmax, lut1d, lo1, k1 = cached
    x = rgb.reshape(-1, 3).float()
    m = lut1d.shape[0]
    if m:
        t = torch.nan_to_num((x - lo1) * k1, nan=0.0).clamp_(0, m - 1)
        i = torch.clamp(t.floor(), max=m - 2)
        f = t - i
        i = i.long()
        x = torch.gather(lut1d, 0, i) * (1 - f) + torch.gather(lut1d, 0, i + 1) * f
    if table is None:
        return x.reshape(rgb.shape)
    n = table.shape[0]
    flat = table.reshape(-1, 3)
    x = torch.nan_to_num((x - dmin) / (dmax - dmin), nan=0.0).clamp_(0, 1) * (n - 1)
    i = torch.clamp(x.floor(), max=n - 2)
    f = x - i
    i = i.long()
    fr, fg, fb = f[:, 0], f[:, 1], f[:, 2]
    sr, sg, sb = n * n, n, 1
    base = i[:, 0] * sr + i[:, 1] * sg + i[:, 2] * sb
    rg, gb, rb = fr >= fg, fg >= fb, fr >= fb
    # the six orderings of (fr, fg, fb), as in _tetrahedral
    f1 = torch.where(rg, torch.where(rb, fr, fb), torch.where(gb, fg, fb))
    f3 = torch.where(rg, torch.where(gb, fb, fg), torch.where(rb, fb, fr))
    f2 = fr + fg + fb - f1 - f3
    s1 = torch.where(rg, torch.where(rb, sr, sb), torch.where(gb, sg, sb))
    s3 = torch.where(rg, torch.where(gb, sb, sg), torch.where(rb, sb, sr))
    s2 = s1 + (sr + sg + sb - s1 - s3)
    out = (flat[base] * (1 - f1)[:, None] + flat[base + s1] * (f1 - f2)[:, None]
           + flat[base + s2] * (f2 - f3)[:, None] + flat[base + sr + sg + sb] * f3[:, None])
    return out.reshape(rgb.shape)


def grade_uint8_torch(frames, table):
    """8-bit frames (..., 3) uint8 on a GPU through the 2^24-entry table of
    :func:`lut_to_uint8_table` (as a torch tensor on the same device): exact, one gather."""
    import torch

    idx = (frames[..., 0].long() << 16) | (frames[..., 1].long() << 8) | frames[..., 2].long()
    return torch.index_select(table, 0, idx.reshape(-1))[:, :3].reshape(frames.shape)
