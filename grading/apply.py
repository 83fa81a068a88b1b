"""Applying a LUT: tetrahedral by default (trilinear on request); inputs outside the
domain clamp to its edges, as OpenColorIO and Resolve do.

Three paths give the same numbers:

* :func:`apply_lut` — float, vectorised NumPy: the reference, any bit depth;
* :class:`FrameGrader` — 8-bit video frames: the LUT is evaluated once for all 2^24
  colours (a 64 MiB table, built by a compiled kernel) and each frame is then one
  table look-up per pixel; exact, since every 8-bit input has its entry;
* :func:`apply_lut_torch` — the same tetrahedral maths on a CUDA device, when torch
  and a GPU are present.

>>> lut = LUT.identity(5)
>>> apply_lut(np.array([[0.2, 0.5, 0.9]]), lut).round(6).tolist()
[[0.2, 0.5, 0.9]]
"""

from __future__ import annotations

import numpy as np

from aiprod_post.errors import MediaError

from .lut import LUT

__all__ = ["apply_lut", "apply_shaper", "FrameGrader", "apply_lut_torch", "grade_uint8_torch",
           "lut_to_uint8_table"]


def apply_shaper(x: np.ndarray, lut: LUT) -> np.ndarray:
    """The 1D part, per channel, linear interpolation, clamped to its input range."""
    sh = lut.shaper
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
    if lut.shaper is not None:
        y = apply_shaper(y, lut)
    if lut.table is not None:
        t = np.clip((y - lut.domain_min) / (lut.domain_max - lut.domain_min), 0.0, 1.0)
        y = (_tetrahedral if method == "tetrahedral" else _trilinear)(t, lut.table)
    y = y.reshape(shape)
    if strength != 1.0:
        y = x + strength * (y - x)
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
    if lut.shaper is not None:
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


def _table_kernel():
    global _TABLE
    if _TABLE is not None:
        return _TABLE or None
    try:
        import numba
    except ImportError:  # pragma: no cover
        _TABLE = False
        return None

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
                    if fr >= fg:
                        if fg >= fb:
                            s1 = sr; s2 = sr + sg; f1 = fr; f2 = fg; f3 = fb  # noqa: E702
                        elif fr >= fb:
                            s1 = sr; s2 = sr + 1; f1 = fr; f2 = fb; f3 = fg  # noqa: E702
                        else:
                            s1 = 1; s2 = 1 + sr; f1 = fb; f2 = fr; f3 = fg  # noqa: E702
                    else:
                        if fb >= fg:
                            s1 = 1; s2 = 1 + sg; f1 = fb; f2 = fg; f3 = fr  # noqa: E702
                        elif fb >= fr:
                            s1 = sg; s2 = sg + 1; f1 = fg; f2 = fb; f3 = fr  # noqa: E702
                        else:
                            s1 = sg; s2 = sg + sr; f1 = fg; f2 = fr; f3 = fb  # noqa: E702
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
    """Grade 8-bit RGB frames with a LUT: build once, then one look-up per pixel."""

    def __init__(self, lut: LUT, strength: float = 1.0, method: str = "tetrahedral") -> None:
        global _GATHER
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


_TORCH_TABLES: dict = {}


def apply_lut_torch(rgb, lut: LUT, method: str = "tetrahedral"):
    """Tetrahedral interpolation of a float torch tensor (..., 3) on its own device.

    The same arithmetic as :func:`apply_lut`: the tetrahedron is chosen by comparing
    the three fractions, so no sort is needed per pixel.
    """
    import torch

    if method != "tetrahedral":
        raise MediaError("the GPU path implements tetrahedral interpolation")
    device = rgb.device
    key = (id(lut), str(device))
    if key not in _TORCH_TABLES:  # upload the table once per LUT and device
        _TORCH_TABLES[key] = tuple(torch.as_tensor(a, dtype=torch.float32, device=device)
                                   for a in (lut.table, lut.domain_min, lut.domain_max))
    table, dmin, dmax = _TORCH_TABLES[key]
    n = table.shape[0]
    flat = table.reshape(-1, 3)
    x = ((rgb.reshape(-1, 3).float() - dmin) / (dmax - dmin)).clamp_(0, 1) * (n - 1)
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
