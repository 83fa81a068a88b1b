"""Rec.2100 for HDR pictures: numbers only (NumPy), read by the generation engines, the
picture stage and the conform alike.

The scene-linear picture an HDR engine makes (``ltx2`` with the HDR IC-LoRA: linear light
in [0, inf), BT.709 primaries, 1.0 = the SDR picture's white) is carried as follows:

- **PQ** (SMPTE ST 2084 / BT.2100): diffuse white 1.0 is BT.2408's reference white,
  203 cd/m²; light scales linearly from it (no tone curve) up to PQ's 10 000 cd/m²
  (≈ 49× diffuse white), above which it clips.
- **HLG** (BT.2100 OETF on scene light): diffuse white at 75 % signal, BT.2408's
  reference level, i.e. scene light ×0.2646 into the OETF; light above ≈ 3.8× diffuse
  white clips.
- **SDR** from the same light: clipped at diffuse white (no tone curve), BT.709 /
  BT.1886 encoded (γ 2.4), 8 bits, as every engine's SDR frames: an SDR shot placed into
  PQ or HLG by the conform and an HDR shot agree on diffuse white.
- **Grade**: the shot's grade is made for the SDR picture; the HDR picture takes it by
  :func:`graded_light` (the same light as the graded SDR picture up to white, highlights
  in proportion above it).

Primaries BT.709 → BT.2020 by BT.2087's matrix. A shot's HDR picture between the picture
stage and the conform (its *HDR intermediate*) is PQ code values on BT.2020 in 16-bit
full-range RGB (:data:`INTERMEDIATE_SUFFIX`, FFV1: lossless).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["REFERENCE_WHITE", "HLG_WHITE", "BT709_TO_BT2020", "INTERMEDIATE_SUFFIX",
           "pq_inverse_eotf", "pq_eotf", "hlg_oetf", "to_bt2020", "linear_to_pq16",
           "bt2020_to_pq16",
           "pq16_to_linear", "linear_to_hlg", "sdr_signal", "sdr_from_linear", "graded_light",
           "intermediate_for"]

#: BT.2408's HDR reference white (diffuse white, graphics white), cd/m²
REFERENCE_WHITE = 203.0
#: the scene light (HLG OETF input) of BT.2408's reference white, 75 % HLG signal
HLG_WHITE = 0.2646
#: BT.2087: linear BT.709 RGB → linear BT.2020 RGB (from the two sets of primaries and
#: D65, to 12 places; BT.2087 prints it to 4)
BT709_TO_BT2020 = np.array([[0.627403895935, 0.329283038378, 0.043313065687],
                            [0.069097289358, 0.919540395075, 0.011362315566],
                            [0.016391438875, 0.088013307877, 0.895595253248]])
#: what a shot's HDR intermediate is named after its picture's stem: ``1A.hdr.mkv``
INTERMEDIATE_SUFFIX = ".hdr.mkv"

_M1, _M2, _C1, _C2, _C3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
_A, _B, _C = 0.17883277, 0.28466892, 0.55991073


def pq_inverse_eotf(y: np.ndarray) -> np.ndarray:
    """ST 2084's inverse EOTF: display light ``y`` as a fraction of 10 000 cd/m² → PQ
    signal, both in [0, 1]."""
    yp = np.power(y, _M1)
    return np.power((_C1 + _C2 * yp) / (1 + _C3 * yp), _M2)


def pq_eotf(e: np.ndarray) -> np.ndarray:
    """ST 2084's EOTF: PQ signal in [0, 1] → display light as a fraction of 10 000 cd/m²."""
    ep = np.power(np.clip(e, 0.0, 1.0), 1.0 / _M2)
    return np.power(np.maximum(ep - _C1, 0.0) / (_C2 - _C3 * ep), 1.0 / _M1)


def hlg_oetf(e: np.ndarray) -> np.ndarray:
    """BT.2100's HLG OETF: scene light in [0, 1] → HLG signal."""
    return np.where(e <= 1 / 12, np.sqrt(3 * e), _A * np.log(np.maximum(12 * e - _B, 1e-6)) + _C)


def to_bt2020(lin709: np.ndarray) -> np.ndarray:
    """Linear BT.709 RGB (…×3, float32 or float64: kept) → linear BT.2020 RGB, negatives
    clipped."""
    x = np.asarray(lin709)
    return np.clip(x @ BT709_TO_BT2020.T.astype(x.dtype), 0.0, None)


def linear_to_pq16(lin709: np.ndarray) -> np.ndarray:
    """Scene-linear BT.709 (1.0 = diffuse white) → PQ on BT.2020 as full-range 16-bit RGB
    (the HDR intermediate's code values), diffuse white at 203 cd/m²."""
    # in float64: PQ is steep near black, where float32's rounding would show
    return bt2020_to_pq16(to_bt2020(np.asarray(lin709, np.float64)))


def bt2020_to_pq16(lin2020: np.ndarray) -> np.ndarray:
    """Linear BT.2020 light (1.0 = diffuse white) → full-range 16-bit PQ, white at
    203 cd/m²."""
    y = np.clip(np.asarray(lin2020, np.float64) * (REFERENCE_WHITE / 10000.0), 0.0, 1.0)
    return (pq_inverse_eotf(y) * 65535.0 + 0.5).astype(np.uint16)


def pq16_to_linear(codes: np.ndarray) -> np.ndarray:
    """The inverse of :func:`linear_to_pq16` up to the primaries: full-range 16-bit PQ →
    scene-linear BT.2020 (1.0 = diffuse white), float32."""
    y = pq_eotf(codes.astype(np.float64) / 65535.0)
    return (y * (10000.0 / REFERENCE_WHITE)).astype(np.float32)


def linear_to_hlg(lin2020: np.ndarray) -> np.ndarray:
    """Scene-linear BT.2020 (1.0 = diffuse white) → HLG signal in [0, 1], diffuse white at
    75 % (BT.2408)."""
    return np.clip(hlg_oetf(np.clip(lin2020 * HLG_WHITE, 0.0, 1.0)), 0.0, 1.0)


def sdr_signal(lin709: np.ndarray) -> np.ndarray:
    """Scene-linear BT.709 → the SDR signal (float32 in [0, 1], BT.1886 γ 2.4): clipped at
    diffuse white, no tone curve."""
    return np.power(np.clip(np.asarray(lin709, np.float32), 0.0, 1.0), np.float32(1 / 2.4))


def sdr_from_linear(lin709: np.ndarray) -> np.ndarray:
    """Scene-linear BT.709 → the SDR picture (H×W×3 uint8): :func:`sdr_signal` in 8 bits."""
    return (sdr_signal(lin709) * np.float32(255) + np.float32(0.5)).astype(np.uint8)


def graded_light(lin709: np.ndarray, graded: np.ndarray) -> np.ndarray:
    """The HDR picture under the SDR picture's grade: ``graded`` is the grade (scene match,
    CDL, look) of :func:`sdr_signal` of ``lin709``, in float (no 8-bit step). Up to
    diffuse white the light is that graded signal's (BT.1886), as on the SDR master; a
    channel above white keeps its ratio to white, at the graded white's level and tint:
    ``graded_light = graded^2.4 × max(light, 1)`` (continuous at white)."""
    g = np.power(np.clip(np.asarray(graded, np.float32), 0.0, None), np.float32(2.4))
    return g * np.maximum(np.asarray(lin709, np.float32), np.float32(1))


def place_picture(src: str | Path, dst: str | Path) -> None:
    """Put a shot's picture at ``dst`` (:func:`aiprod_post.files.place`) with its HDR
    intermediate beside it where it has one, and none left from an earlier picture."""
    from .files import place

    place(src, dst)
    if intermediate_for(src).is_file():
        place(intermediate_for(src), intermediate_for(dst))
    else:
        intermediate_for(dst).unlink(missing_ok=True)


def intermediate_for(picture: str | Path) -> Path:
    """The HDR intermediate beside a shot's picture (``shots/1A.mov`` →
    ``shots/1A.hdr.mkv``); whether it exists says whether the shot has one."""
    p = Path(picture)
    return p.with_name(p.stem + INTERMEDIATE_SUFFIX)
