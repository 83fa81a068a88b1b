"""The animatic engine: a deterministic previz renderer that needs no model weights.

Per shot it paints a *stage* once (the set from the scene heading, the
characters in their framing, on a canvas larger than the frame so the camera
can move), then streams frames by moving a virtual camera over the stage
(a crop for a static shot, one affine warp for a move) and drawing what
changes per frame on top: eyes that blink, mouths that follow the viseme
track, a hand that gestures while its owner speaks.

Everything is seeded: the location name seeds the set layout (a location looks
the same in every scene that returns to it), the time of day picks palette and
light, the cast gives each character's figure (hair, beard, build, wardrobe colours and
age cues read from the script; a stand-in seeded by the name when a plan has no cast), the
shot seed drives blinks and handheld shake.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import cv2
import numpy as np

from aiprod_post.plan import CameraMove, Framing, Scene, Shot

from .engine import RenderContext, ShotRender, register

__all__ = ["AnimaticEngine", "CharacterSheet", "character_sheet", "sheet_from_figure", "set_key",
           "render_reference_sheet", "render_turnaround", "title_card"]

cv2.setNumThreads(1)  # frames are produced one at a time; encoders use the other cores

_MARGIN_X, _MARGIN_Y = 0.30, 0.20  # stage is this much bigger than the frame, for moves


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _stable(text: str) -> int:
    """A hash that is the same in every process (Python's ``hash`` of str is salted)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def set_key(scene: Scene) -> str:
    """The identity of a set: the location without shot-level detail, upper case."""
    loc = re.sub(r"\s+", " ", scene.location.upper()).strip()
    return f"{'EXT' if scene.int_ext in ('EXT', 'EST') else 'INT'}:{loc}"


# ------------------------------------------------------------------ palettes

# sky top, sky horizon, ambient tint (multiplier), key light strength
_LIGHT = {
    "day": ((92, 148, 220), (190, 215, 240), (1.0, 1.0, 1.0), 1.0),
    "dawn": ((70, 80, 150), (245, 170, 160), (1.0, 0.9, 0.9), 0.8),
    "dusk": ((40, 40, 110), (250, 140, 80), (1.0, 0.82, 0.72), 0.7),
    # night is lit for a day-for-night grade on top (the default night look)
    "night": ((10, 16, 44), (34, 46, 88), (0.66, 0.7, 0.86), 0.35),
}

_WATER = re.compile(r"HARBOU?R|PIER|DOCK|BEACH|SEA|OCEAN|RIVER|LAKE|SHORE|PORT|BAY|FERRY", re.I)
_GREEN = re.compile(r"PARK|FIELD|GARDEN|FOREST|WOOD|FARM|MEADOW|YARD", re.I)


def _c(rgb) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, v))) for v in rgb)  # type: ignore[return-value]


# ------------------------------------------------------------------ characters


@dataclass(frozen=True)
class CharacterSheet:
    """A character's look: what a reference sheet shows and every shot draws.

    Made from the cast's figure (:func:`sheet_from_figure`: hair, colours, build and age
    cues read from the script); :func:`character_sheet` without a figure is a seeded
    stand-in for a plan that carries no cast.
    """

    name: str
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    coat: tuple[int, int, int]
    trousers: tuple[int, int, int]
    height: float  # relative, ~0.9 .. 1.08 for adults, less for children
    build: float  # shoulder width factor
    hair_style: str  # short, long, bun, bald
    blink_period: int  # frames between blinks at 24 fps
    beard: bool = False
    glasses: bool = False
    older: bool = False  # a lined forehead (and grey hair, from the cast)
    long_coat: bool = False  # the coat (or dress, robe) reaches the knees


_SKINS = [(241, 204, 176), (224, 172, 130), (198, 134, 94), (141, 85, 54), (92, 58, 40),
          (250, 220, 196)]
_HAIRS = [(30, 24, 20), (84, 56, 32), (170, 120, 60), (200, 200, 200), (120, 40, 20),
          (60, 50, 45)]
_COATS = [(200, 160, 40), (40, 70, 130), (130, 40, 40), (60, 110, 70), (90, 90, 100),
          (160, 90, 40), (70, 50, 90), (30, 30, 35)]
_STYLES = ["short", "long", "bald", "bun"]


def _hex(value: str) -> tuple[int, int, int]:
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


def sheet_from_figure(name: str, figure: dict) -> CharacterSheet:
    """The sheet for a cast figure (``aiprod_post.cast.Figure`` as a dict, colours as
    ``#rrggbb``). Only the blink rhythm is seeded by the name: it is not a look.

    >>> s = sheet_from_figure("NELL", {"coat": "#e8c020", "hair_style": "bun", "older": True})
    >>> s.coat, s.hair_style, s.older
    ((232, 192, 32), 'bun', True)
    """
    f = {"hair_style": "short", "hair": "#3c3028", "skin": "#e0b090", "coat": "#5a5a64",
         "trousers": "#36363c", "build": 1.0, "height": 1.0, **figure}
    r = _rng("blink", name.upper())
    return CharacterSheet(
        name=name, skin=_hex(f["skin"]), hair=_hex(f["hair"]), coat=_hex(f["coat"]),
        trousers=_hex(f["trousers"]), height=float(f["height"]), build=float(f["build"]),
        hair_style=f["hair_style"] if f["hair_style"] in _STYLES else "short",
        blink_period=int(r.integers(70, 120)), beard=bool(f.get("beard")),
        glasses=bool(f.get("glasses")), older=bool(f.get("older")),
        long_coat=bool(f.get("long_coat")))


def character_sheet(name: str, figure: dict | None = None) -> CharacterSheet:
    """The cast's figure for ``name`` when given, else a stand-in seeded by the name."""
    if figure is not None:
        return sheet_from_figure(name, figure)
    r = _rng("character", name.upper())
    style = _STYLES[int(r.integers(4))]
    return CharacterSheet(
        name=name,
        skin=_SKINS[int(r.integers(len(_SKINS)))],
        hair=_HAIRS[int(r.integers(len(_HAIRS)))],
        coat=_COATS[int(r.integers(len(_COATS)))],
        trousers=_c(np.array(_COATS[int(r.integers(len(_COATS)))]) * 0.6),
        height=float(r.uniform(0.9, 1.08)),
        build=float(r.uniform(0.85, 1.15)),
        hair_style=style,
        blink_period=int(r.integers(70, 120)),
        beard=style == "bald",
    )


@dataclass
class _Figure:
    sheet: CharacterSheet
    x: float  # stage pixels: centre
    feet: float  # stage pixels: where the feet are (may be below the frame)
    size: float  # full-figure height in pixels
    facing: int = 1  # 1 towards camera, -1 back to camera (over-the-shoulder foreground)
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def head(self) -> tuple[float, float, float]:
        """Centre and radius of the head on the stage."""
        size = self.size * self.sheet.height
        return self.x, self.feet - 0.88 * size, 0.085 * size


# ------------------------------------------------------------------ stage painting


def _gradient(h: int, w: int, top, bottom) -> np.ndarray:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    col = (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)
    return np.repeat(col[:, None, :], w, axis=1)


def _paint_exterior(img: np.ndarray, scene: Scene, r: np.random.Generator, light: str) -> int:
    h, w = img.shape[:2]
    # `r` lays out the set and is drawn from in the same order whatever the light, so a
    # location looks the same by day and by night; `sky` places what the light adds.
    sky = np.random.default_rng(int(r.integers(1 << 31)))
    top, horizon_col, _, _ = _LIGHT[light]
    horizon = int(h * r.uniform(0.50, 0.58))
    img[:horizon] = _gradient(horizon, w, top, horizon_col)
    if light == "night":
        for _ in range(int(w * h / 9000)):
            x, y = int(sky.integers(w)), int(sky.integers(horizon))
            cv2.circle(img, (x, y), 1, (230, 230, 255), -1)
        cv2.circle(img, (int(w * sky.uniform(0.6, 0.9)), int(h * 0.14)), int(h * 0.04),
                   (240, 240, 225), -1, cv2.LINE_AA)
    elif light in ("dusk", "dawn"):
        cv2.circle(img, (int(w * sky.uniform(0.2, 0.8)), horizon - int(h * 0.02)), int(h * 0.06),
                   (255, 200, 120), -1, cv2.LINE_AA)
    else:
        cv2.circle(img, (int(w * sky.uniform(0.1, 0.9)), int(h * 0.12)), int(h * 0.05),
                   (255, 250, 220), -1, cv2.LINE_AA)
    # distant skyline or hills
    x = 0
    far = _c(np.array(horizon_col) * 0.45 + np.array(top) * 0.2)
    if r.random() < 0.6:
        while x < w:
            bw = int(r.integers(w // 30, w // 10))
            bh = int(r.integers(h // 14, h // 4))
            cv2.rectangle(img, (x, horizon - bh), (x + bw, horizon), far, -1)
            if light in ("night", "dusk"):
                for _ in range(int(bw * bh / 2500)):
                    wx = x + int(sky.integers(3, max(4, bw - 6)))
                    wy = horizon - int(sky.integers(4, bh))
                    cv2.rectangle(img, (wx, wy), (wx + 4, wy + 6), (255, 214, 120), -1)
            x += bw + int(r.integers(0, w // 40))
    else:
        pts = [(0, horizon)]
        for i in range(9):
            pts.append((int(w * (i + 0.5) / 8), horizon - int(r.integers(h // 20, h // 6))))
        pts.append((w, horizon))
        cv2.fillPoly(img, [np.array(pts, np.int32)], far, cv2.LINE_AA)
    # ground
    if _WATER.search(scene.location):
        water_top = _c(np.array(top) * 0.7 + 20)
        water_bottom = _c(np.array(top) * 0.35)
        img[horizon:] = _gradient(h - horizon, w, water_top, water_bottom)
        for _ in range(int(w / 6)):
            y = int(r.integers(horizon + 4, h))
            x0 = int(r.integers(w))
            ln = int(r.integers(10, 60)) * (1 + (y - horizon) / h * 3)
            cv2.line(img, (x0, y), (int(x0 + ln), y), _c(np.array(horizon_col) * 0.8), 1)
        # a pier across the foreground
        deck = int(h * 0.78)
        wood = (110, 82, 58)
        cv2.rectangle(img, (0, deck), (w, h), wood, -1)
        for px in range(0, w, max(12, w // 60)):
            cv2.line(img, (px, deck), (px - w // 40, h), (80, 58, 40), 2)
        for px in range(int(r.integers(40, 120)), w, int(w / 7)):
            cv2.rectangle(img, (px, deck - h // 6), (px + w // 120, deck + 4), (70, 50, 35), -1)
            if light in ("night", "dusk"):
                cv2.circle(img, (px + w // 240, deck - h // 6), h // 90, (255, 220, 150), -1,
                           cv2.LINE_AA)
    else:
        ground = (84, 128, 62) if _GREEN.search(scene.location) else (120, 116, 110)
        img[horizon:] = _gradient(h - horizon, w, _c(np.array(ground) * 1.05),
                                  _c(np.array(ground) * 0.7))
        for _ in range(int(r.integers(3, 7))):
            cx = int(r.integers(w))
            if ground[1] > 120:  # trees
                cv2.rectangle(img, (cx - 6, horizon - h // 10), (cx + 6, horizon + h // 40),
                              (70, 50, 35), -1)
                cv2.circle(img, (cx, horizon - h // 8), h // 14, (50, 100, 50), -1, cv2.LINE_AA)
            else:  # lamp posts
                cv2.rectangle(img, (cx - 3, horizon - h // 5), (cx + 3, horizon + h // 20),
                              (50, 50, 55), -1)
                glow = (255, 225, 150) if light in ("night", "dusk") else (200, 200, 190)
                cv2.circle(img, (cx, horizon - h // 5), h // 70, glow, -1, cv2.LINE_AA)
    return horizon  # where the ground meets the sky



def _paint_interior(img: np.ndarray, scene: Scene, r: np.random.Generator, light: str) -> int:
    h, w = img.shape[:2]
    wall = _c(r.uniform(110, 200, 3))
    floor_y = int(h * r.uniform(0.66, 0.74))
    img[:floor_y] = _gradient(floor_y, w, _c(np.array(wall) * 0.85), wall)
    floor = _c(r.uniform(60, 130, 3) * np.array([1.0, 0.85, 0.7]))
    img[floor_y:] = _gradient(h - floor_y, w, floor, _c(np.array(floor) * 0.7))
    for x in range(0, w, max(20, w // 24)):
        cv2.line(img, (x, floor_y), (x + (x - w // 2) // 3, h), _c(np.array(floor) * 0.85), 2)
    cv2.line(img, (0, int(floor_y - h * 0.18)), (w, int(floor_y - h * 0.18)),
             _c(np.array(wall) * 0.75), 3)
    # window shows the sky of the time of day
    top, horizon_col, _, _ = _LIGHT[light]
    sky = np.random.default_rng(int(r.integers(1 << 31)))
    wx = int(w * r.uniform(0.1, 0.6))
    ww, wh = int(w * 0.16), int(h * 0.26)
    wy = int(h * 0.16)
    img[wy:wy + wh, wx:wx + ww] = _gradient(wh, ww, top, horizon_col)
    if light == "night":
        for _ in range(12):
            cv2.circle(img, (wx + int(sky.integers(ww)), wy + int(sky.integers(wh))), 1,
                       (230, 230, 255), -1)
    cv2.rectangle(img, (wx, wy), (wx + ww, wy + wh), (60, 50, 40), 6)
    cv2.line(img, (wx + ww // 2, wy), (wx + ww // 2, wy + wh), (60, 50, 40), 4)
    cv2.line(img, (wx, wy + wh // 2), (wx + ww, wy + wh // 2), (60, 50, 40), 4)
    # door
    dx = int(w * r.uniform(0.7, 0.88))
    cv2.rectangle(img, (dx, int(floor_y - h * 0.42)), (dx + int(w * 0.08), floor_y),
                  _c(np.array(wall) * 0.55), -1)
    cv2.circle(img, (dx + int(w * 0.068), int(floor_y - h * 0.2)), 5, (200, 180, 90), -1)
    # picture frames and shelf
    for _ in range(int(r.integers(1, 4))):
        px, py = int(r.integers(w // 10, w - w // 6)), int(r.integers(h // 12, h // 3))
        pw, ph = int(r.integers(w // 30, w // 14)), int(r.integers(h // 20, h // 9))
        cv2.rectangle(img, (px, py), (px + pw, py + ph), _c(r.uniform(40, 220, 3)), -1)
        cv2.rectangle(img, (px, py), (px + pw, py + ph), (70, 55, 40), 3)
    # table with a lamp
    tx = int(w * r.uniform(0.25, 0.7))
    ty = int(floor_y - h * 0.12)
    cv2.rectangle(img, (tx - w // 14, ty), (tx + w // 14, ty + h // 60), (95, 65, 45), -1)
    cv2.rectangle(img, (tx - w // 16, ty), (tx - w // 16 + 8, floor_y + h // 20), (80, 55, 40), -1)
    cv2.rectangle(img, (tx + w // 16 - 8, ty), (tx + w // 16, floor_y + h // 20), (80, 55, 40), -1)
    lamp_on = light in ("night", "dusk")
    cv2.line(img, (tx, ty), (tx, ty - h // 10), (60, 60, 60), 3)
    shade = np.array([[tx - w // 60, ty - h // 10], [tx + w // 60, ty - h // 10],
                      [tx + w // 40, ty - h // 16], [tx - w // 40, ty - h // 16]], np.int32)
    cv2.fillPoly(img, [shade], (250, 220, 150) if lamp_on else (200, 190, 170), cv2.LINE_AA)
    if lamp_on:
        glow = np.zeros(img.shape[:2], np.float32)
        cv2.circle(glow, (tx, ty - h // 12), int(h * 0.35), 1.0, -1)
        glow = cv2.GaussianBlur(glow, (0, 0), h * 0.12)
        img += glow[:, :, None] * np.array([70, 50, 15], np.float32)
    return floor_y  # where the floor meets the back wall



def _paint_figure(img: np.ndarray, f: _Figure, draw_face: bool, turn: float = 0.0) -> None:
    s = f.sheet
    size = f.size * s.height
    x, feet = f.x, f.feet
    shoulder = feet - 0.78 * size
    hip = feet - 0.45 * size
    half = 0.14 * size * s.build * (1 - 0.45 * turn)  # a turned body shows less width

    def col(c):
        return _c(np.array(c) * np.array(f.tint))

    legs = np.array([[x - half * 0.8, hip], [x + half * 0.8, hip], [x + half * 0.6, feet],
                     [x - half * 0.6, feet]], np.int32)
    cv2.fillPoly(img, [legs], col(s.trousers), cv2.LINE_AA)
    cv2.line(img, (int(x), int(hip + 0.05 * size)), (int(x), int(feet)),
             col(np.array(s.trousers) * 0.6), max(1, int(size * 0.008)))
    hem = hip + (0.24 if s.long_coat else 0.04) * size
    flare = 1.05 if s.long_coat else 0.95
    torso = np.array([[x - half, shoulder], [x + half, shoulder], [x + half * flare, hem],
                      [x - half * flare, hem]], np.int32)
    cv2.fillPoly(img, [torso], col(s.coat), cv2.LINE_AA)
    arm_w = max(2, int(size * 0.05))
    cv2.line(img, (int(x - half), int(shoulder + 0.02 * size)),
             (int(x - half * 1.15), int(hip + 0.02 * size)), col(np.array(s.coat) * 0.85), arm_w,
             cv2.LINE_AA)
    neck_r = int(0.045 * size)
    hx, hy, hr = x, feet - 0.88 * size, 0.085 * size
    cv2.circle(img, (int(x), int(shoulder - neck_r * 0.3)), neck_r, col(s.skin), -1, cv2.LINE_AA)
    if f.facing < 0:
        # back to camera: all hair, no face
        cv2.circle(img, (int(hx), int(hy)), int(hr * 1.05), col(s.hair), -1, cv2.LINE_AA)
        return
    if draw_face:
        _paint_head(img, hx, hy, hr, s, f.tint, turn)


def _paint_head(img: np.ndarray, hx: float, hy: float, hr: float, s: CharacterSheet,
                tint=(1.0, 1.0, 1.0), turn: float = 0.0) -> None:
    """Hair, head, beard and ear. ``turn`` 0 faces the camera, 0.5 is three-quarter,
    1 is profile (facing right): features slide towards the face's side."""
    def col(c):
        return _c(np.array(c) * np.array(tint))

    back = -turn * hr * 0.35  # hair and ear sit further back as the head turns
    if s.hair_style == "long":  # long hair behind the head
        cv2.ellipse(img, (int(hx + back), int(hy + hr * 0.4)), (int(hr * 1.15), int(hr * 1.4)),
                    0, 0, 360, col(s.hair), -1, cv2.LINE_AA)
    cv2.ellipse(img, (int(hx), int(hy)), (int(hr * (0.92 - 0.06 * turn)), int(hr)), 0, 0, 360,
                col(s.skin), -1, cv2.LINE_AA)
    if turn > 0.7:  # profile: the nose
        nose = np.array([[hx + hr * 0.8, hy - hr * 0.15], [hx + hr * 1.12, hy + hr * 0.2],
                         [hx + hr * 0.8, hy + hr * 0.3]], np.int32)
        cv2.fillPoly(img, [nose], col(s.skin), cv2.LINE_AA)
    if s.hair_style != "bald":
        cv2.ellipse(img, (int(hx + back * 0.5), int(hy - hr * 0.35)),
                    (int(hr * 0.95), int(hr * 0.7)), 0, 180, 360, col(s.hair), -1, cv2.LINE_AA)
    else:  # a fringe of hair above the ears
        for side in (-1, 1):
            cv2.ellipse(img, (int(hx + side * hr * 0.85 + back), int(hy - hr * 0.05)),
                        (int(hr * 0.16), int(hr * 0.3)), 0, 0, 360, col(s.hair), -1, cv2.LINE_AA)
    if s.hair_style == "bun":
        cv2.circle(img, (int(hx + back * 1.5), int(hy - hr * 1.05)), int(hr * 0.35),
                   col(s.hair), -1, cv2.LINE_AA)
    if s.beard:
        cv2.ellipse(img, (int(hx + turn * hr * 0.2), int(hy + hr * 0.55)),
                    (int(hr * (0.8 - 0.3 * turn)), int(hr * 0.5)), 0, 0, 180, col(s.hair), -1,
                    cv2.LINE_AA)
    if s.older:  # lines across the forehead
        for k in (0, 1):
            y = int(hy - hr * (0.42 - 0.12 * k))
            cv2.line(img, (int(hx - hr * 0.3 + turn * hr * 0.3), y),
                     (int(hx + hr * 0.3 + turn * hr * 0.3), y),
                     col(np.array(s.skin) * 0.78), max(1, int(hr * 0.035)), cv2.LINE_AA)
    ear_x = hx + hr * 0.9 if turn < 0.3 else hx - hr * 0.1 * turn
    cv2.ellipse(img, (int(ear_x), int(hy)), (int(hr * 0.15), int(hr * 0.25)), 0, 0, 360,
                col(np.array(s.skin) * 0.9), -1, cv2.LINE_AA)


# mouth shapes as (half width, half height) relative to head radius, and a fill hint
_MOUTHS = {
    "X": (0.26, 0.02, "line"), "A": (0.24, 0.015, "line"), "B": (0.24, 0.06, "teeth"),
    "C": (0.25, 0.13, "open"), "D": (0.28, 0.22, "open"), "E": (0.2, 0.14, "open"),
    "F": (0.12, 0.1, "round"), "G": (0.22, 0.05, "teeth"), "H": (0.24, 0.14, "tongue"),
}


def _draw_face(frame: np.ndarray, hx: float, hy: float, hr: float, shape: str, blink: bool,
               s: CharacterSheet, tint=(1.0, 1.0, 1.0), turn: float = 0.0) -> None:
    """Eyes, glasses and mouth, drawn on the output frame (they change every frame)."""
    dark = _c(np.array((35, 25, 25)) * np.array(tint))
    ey = int(hy - hr * 0.1)
    eyes = [-0.38, 0.38] if turn < 0.7 else [0.55]
    eyes = [dx + turn * 0.3 for dx in eyes]
    if s.glasses:
        frame_col = _c(np.array((30, 30, 30)) * np.array(tint))
        for dx in eyes:
            cv2.circle(frame, (int(hx + dx * hr), ey), max(2, int(hr * 0.24)), frame_col,
                       max(1, int(hr * 0.05)), cv2.LINE_AA)
        if len(eyes) == 2:
            cv2.line(frame, (int(hx + (eyes[0] + 0.24) * hr), ey),
                     (int(hx + (eyes[1] - 0.24) * hr), ey), frame_col, max(1, int(hr * 0.05)))
    hx = hx + turn * 0.3 * hr  # the mouth follows the face round
    for dx in eyes:
        ex = int(hx - turn * 0.3 * hr + dx * hr)
        if blink:
            cv2.line(frame, (ex - int(hr * 0.14), ey), (ex + int(hr * 0.14), ey), dark,
                     max(1, int(hr * 0.05)), cv2.LINE_AA)
        else:
            cv2.ellipse(frame, (ex, ey), (max(1, int(hr * 0.1)), max(1, int(hr * 0.14))), 0, 0, 360,
                        dark, -1, cv2.LINE_AA)
    mw, mh, kind = _MOUTHS.get(shape, _MOUTHS["X"])
    mx, my = int(hx), int(hy + hr * 0.5)
    w, h = max(1, int(mw * hr)), max(1, int(mh * hr))
    lip = _c(np.array((120, 45, 45)) * np.array(tint))
    if kind == "line":
        cv2.line(frame, (mx - w, my), (mx + w, my), lip, max(1, int(hr * 0.05)), cv2.LINE_AA)
        return
    inside = _c(np.array((55, 15, 20)) * np.array(tint))
    cv2.ellipse(frame, (mx, my), (w, h), 0, 0, 360, inside, -1, cv2.LINE_AA)
    if kind == "teeth":
        cv2.rectangle(frame, (mx - w + 2, my - h), (mx + w - 2, my), _c(np.array((235, 235, 225))
                                                                         * np.array(tint)), -1)
    elif kind == "tongue":
        cv2.ellipse(frame, (mx, my + h // 3), (max(1, w // 2), max(1, h // 2)), 0, 0, 360,
                    _c(np.array((200, 90, 100)) * np.array(tint)), -1, cv2.LINE_AA)
    cv2.ellipse(frame, (mx, my), (w, h), 0, 0, 360, lip, max(1, int(hr * 0.04)), cv2.LINE_AA)


# ------------------------------------------------------------------ text cards

_FONT_CACHE: dict[int, object] = {}


def _font(size: int):
    from PIL import ImageFont

    if size not in _FONT_CACHE:
        _FONT_CACHE[size] = ImageFont.load_default(size=size)
    return _FONT_CACHE[size]


def title_card(text: str, width: int, height: int) -> np.ndarray:
    """White text, centred on black, wrapped to the frame (title cards, THE END)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    size = max(12, height // 12)
    font = _font(size)
    words = text.split() or [""]
    lines: list[str] = []
    for word in words:
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(trial, font=font) <= width * 0.8:
            lines[-1] = trial
        else:
            lines.append(word)
    total = len(lines) * size * 1.3
    y = (height - total) / 2
    for line in lines:
        tw = draw.textlength(line, font=font)
        draw.text(((width - tw) / 2, y), line, font=font, fill=(235, 235, 235))
        y += size * 1.3
    return np.asarray(img).copy()


def _burn_in(frame: np.ndarray, text: str) -> None:
    h = frame.shape[0]
    scale = max(0.4, h / 1080 * 0.9)
    org = (int(h * 0.02), int(h * 0.05))
    cv2.putText(frame, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), int(4 * scale) + 1,
                cv2.LINE_AA)
    cv2.putText(frame, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                max(1, int(2 * scale)), cv2.LINE_AA)


# ------------------------------------------------------------------ composition


def _compose(scene: Scene, shot: Shot, W: int, H: int, sheets: dict[str, CharacterSheet]
             ) -> tuple[list[_Figure], str]:
    """Where the figures stand on the stage for the shot's framing."""
    ox, oy = W * _MARGIN_X / 2, H * _MARGIN_Y / 2
    names = list(dict.fromkeys(shot.characters))
    figs: list[_Figure] = []
    fr = shot.framing
    if fr in (Framing.TITLE, Framing.INSERT):
        return figs, "none"
    def by_head(name: str, x: float, head_y: float, head_r: float, facing: int = 1,
                tint=(1.0, 1.0, 1.0)) -> _Figure:
        # place a figure so its head is at (x, head_y) with radius head_r (frame fractions)
        sheet = sheets[name]
        size = head_r * H / (0.085 * sheet.height)
        feet = oy + head_y * H + 0.88 * size * sheet.height
        return _Figure(sheet, ox + x * W, feet, size / 1.0, facing, tint)

    if fr == Framing.WIDE:
        n = len(names)
        for i, name in enumerate(names[:5]):
            x = ox + W * (0.5 + (i - (n - 1) / 2) * min(0.2, 0.7 / max(n, 1)))
            figs.append(_Figure(sheets[name], x, oy + H * 0.88, H * 0.42))
    elif fr == Framing.MEDIUM:
        for i, name in enumerate(names[:2]):
            figs.append(by_head(name, 0.5 if len(names) == 1 else 0.38 + 0.24 * i, 0.34, 0.09))
    elif fr == Framing.CLOSE_UP:
        figs.append(by_head(names[0], 0.5, 0.46, 0.2))
    elif fr == Framing.TWO_SHOT:
        for i, name in enumerate(names[:2]):
            figs.append(by_head(name, 0.34 + 0.32 * i, 0.34, 0.085))
    elif fr == Framing.OVER_THE_SHOULDER:
        figs.append(by_head(names[0], 0.62, 0.37, 0.11))
        if len(names) > 1:
            figs.append(by_head(names[1], 0.2, 0.45, 0.17, facing=-1, tint=(0.55, 0.55, 0.6)))
    return figs, "figures"


_PROPS = [
    (re.compile(r"kettle|pot|cup|tea|coffee", re.I), "kettle"),
    (re.compile(r"light|lamp|torch|candle|beam", re.I), "light"),
    (re.compile(r"coin|money|tin|ticket", re.I), "coins"),
    (re.compile(r"phone|radio", re.I), "phone"),
    (re.compile(r"letter|note|paper|board|sign|book", re.I), "paper"),
]


def _paint_insert(img: np.ndarray, shot: Shot, r: np.random.Generator, light: str,
                  W: int, H: int) -> None:
    ox, oy = int(W * _MARGIN_X / 2), int(H * _MARGIN_Y / 2)
    cx, cy = ox + W // 2, oy + int(H * 0.55)
    kind = next((k for pat, k in _PROPS if pat.search(shot.action)), "object")
    # a surface, out of focus behind
    img[oy + int(H * 0.62):] = _gradient(img.shape[0] - oy - int(H * 0.62), img.shape[1],
                                         (110, 80, 55), (70, 50, 35))
    if kind == "kettle":
        cv2.ellipse(img, (cx, cy), (int(H * 0.28), int(H * 0.22)), 0, 0, 360, (150, 150, 160), -1,
                    cv2.LINE_AA)
        cv2.ellipse(img, (cx - int(H * 0.33), cy - int(H * 0.05)), (int(H * 0.1), int(H * 0.03)),
                    -30, 0, 360, (130, 130, 140), -1, cv2.LINE_AA)
        cv2.ellipse(img, (cx, cy - int(H * 0.24)), (int(H * 0.18), int(H * 0.12)), 0, 180, 360,
                    (60, 60, 60), int(H * 0.02), cv2.LINE_AA)
        for k in range(4):  # steam
            cv2.ellipse(img, (cx - int(H * 0.42) - k * 20, cy - int(H * 0.15) - k * 50),
                        (30 + k * 10, 20 + k * 6), 0, 0, 360, (235, 235, 240), -1, cv2.LINE_AA)
    elif kind == "light":
        cv2.circle(img, (cx, cy - int(H * 0.1)), int(H * 0.05), (255, 240, 200), -1, cv2.LINE_AA)
        glow = np.zeros(img.shape[:2], np.float32)
        cv2.circle(glow, (cx, cy - int(H * 0.1)), int(H * 0.25), 1.0, -1)
        img += cv2.GaussianBlur(glow, (0, 0), H * 0.08)[:, :, None] * np.array([140, 110, 50],
                                                                               np.float32)
    elif kind == "coins":
        for _ in range(9):
            px, py = cx + int(r.normal(0, H * 0.15)), cy + int(r.normal(0, H * 0.06))
            cv2.ellipse(img, (px, py), (int(H * 0.06), int(H * 0.035)), 0, 0, 360, (210, 180, 80),
                        -1, cv2.LINE_AA)
            cv2.ellipse(img, (px, py), (int(H * 0.06), int(H * 0.035)), 0, 0, 360, (150, 120, 40),
                        3, cv2.LINE_AA)
    elif kind == "phone":
        cv2.rectangle(img, (cx - int(H * 0.12), cy - int(H * 0.25)),
                      (cx + int(H * 0.12), cy + int(H * 0.25)), (25, 25, 30), -1)
        cv2.rectangle(img, (cx - int(H * 0.1), cy - int(H * 0.21)),
                      (cx + int(H * 0.1), cy + int(H * 0.2)), (90, 140, 200), -1)
    else:
        pts = np.array([[cx - H * 0.3, cy - H * 0.2], [cx + H * 0.28, cy - H * 0.24],
                        [cx + H * 0.32, cy + H * 0.18], [cx - H * 0.26, cy + H * 0.22]], np.int32)
        cv2.fillPoly(img, [pts], (235, 230, 215), cv2.LINE_AA)
        for k in range(6):
            y = int(cy - H * 0.14 + k * H * 0.06)
            cv2.line(img, (int(cx - H * 0.22), y), (int(cx + H * 0.2), y - 6), (60, 60, 80), 3,
                     cv2.LINE_AA)


def _paint_stage(scene: Scene, shot: Shot, W: int, H: int, figures: list[_Figure],
                 light: str) -> np.ndarray:
    sw, sh = int(W * (1 + _MARGIN_X)), int(H * (1 + _MARGIN_Y))
    img = np.zeros((sh, sw, 3), np.float32)
    layout = _rng("set", set_key(scene))
    if shot.framing == Framing.INSERT:
        # an insert is a tight detail: the set blurred behind the object
        base = np.zeros_like(img)
        (_paint_exterior if scene.int_ext in ("EXT", "EST") else _paint_interior)(
            base, scene, layout, light)
        img = cv2.GaussianBlur(base, (0, 0), H * 0.02)
        _paint_insert(img, shot, _rng("insert", shot.id, shot.seed), light, W, H)
    elif scene.int_ext in ("EXT", "EST"):
        _paint_exterior(img, scene, layout, light)
    else:
        _paint_interior(img, scene, layout, light)
    # closer framings see less of the set, more softly (shallow depth of field)
    blur = {Framing.MEDIUM: 0.004, Framing.CLOSE_UP: 0.009, Framing.OVER_THE_SHOULDER: 0.006,
            Framing.TWO_SHOT: 0.004}.get(shot.framing, 0.0)
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), H * blur)
    for f in figures:
        if f.facing > 0:
            _paint_figure(img, f, draw_face=True)
    for f in figures:  # foreground shoulders last, softened
        if f.facing < 0:
            layer = img.copy()
            _paint_figure(layer, f, draw_face=False)
            layer = cv2.GaussianBlur(layer, (0, 0), H * 0.006)
            mask = np.zeros(img.shape[:2], np.float32)
            _paint_figure_mask(mask, f)
            mask = cv2.GaussianBlur(mask, (0, 0), H * 0.006)[:, :, None]
            img = img * (1 - mask) + layer * mask
    tint = np.array(_LIGHT[light][2], np.float32)
    img *= tint
    return np.clip(img, 0, 255).astype(np.uint8)


def _depth_stage(scene: Scene, shot: Shot, W: int, H: int, figures: list[_Figure]
                 ) -> np.ndarray:
    """The stage's nearness, 0 (the sky, infinitely far) to 1 (the nearest thing): the
    disparity-like map a depth IC-LoRA follows, from the animatic's own geometry rather
    than a model's guess. The ground is a plane seen from eye level (nearness grows
    linearly below the horizon, as inverse depth does on a plane); an interior's back wall
    stands where the floor meets it; each figure stands where its feet touch the ground (a
    figure nearer than everything behind it), the over-the-shoulder foreground nearest of
    all. An insert is its set (the object on it is not modelled); a title card is black."""
    sw, sh = int(W * (1 + _MARGIN_X)), int(H * (1 + _MARGIN_Y))
    if shot.framing == Framing.TITLE:
        return np.zeros((sh, sw), np.float32)
    exterior = scene.int_ext in ("EXT", "EST")
    # the set's ground line, laid out as the picture's (the layout ignores the light)
    ground = (_paint_exterior if exterior else _paint_interior)(
        np.zeros((sh, sw, 3), np.float32), scene, _rng("set", set_key(scene)), "day")
    eye = ground if exterior else int(sh * 0.45)  # the horizon: eye level
    rows = np.arange(sh, dtype=np.float32) - eye
    standing = [f for f in figures if f.facing > 0]
    # the nearest of the ground and the standing figures at 0.85: the over-the-shoulder
    # foreground, nearer than all, at 1
    k = 0.85 / max(1.0, sh - eye, *(f.feet - eye for f in standing))
    near = np.clip(rows * k, 0.0, 1.0)
    if not exterior:
        near[:ground] = near[ground]  # the back wall
    depth = np.repeat(near[:, None], sw, axis=1)
    for f in sorted(standing, key=lambda f: f.feet) + [f for f in figures if f.facing < 0]:
        mask = np.zeros((sh, sw), np.float32)
        _paint_figure_mask(mask, f)
        hx, hy, hr = f.head
        cv2.ellipse(mask, (int(hx), int(hy)), (int(hr), int(hr)), 0, 0, 360, 1.0, -1)
        value = 1.0 if f.facing < 0 else float(np.clip((f.feet - eye) * k, 0.0, 0.85))
        depth[mask > 0.5] = value
    return depth


#: OpenPose's body: 18 COCO keypoints (nose, neck, right shoulder, elbow, wrist, left
#: shoulder, elbow, wrist, right hip, knee, ankle, left hip, knee, ankle, right eye, left eye,
#: right ear, left ear), the limbs between them and the colours OpenPose draws them in: what
#: a pose IC-LoRA was trained on
POSE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
              (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
POSE_COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0),
                (85, 255, 0), (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255),
                (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255), (170, 0, 255),
                (255, 0, 255), (255, 0, 170), (255, 0, 85))


def _keypoints(f: _Figure) -> dict[int, tuple[float, float]]:
    """A figure's OpenPose keypoints on the stage, from the proportions it is painted with
    (arms hanging, legs straight). The figure's right is the picture's left when it faces
    the camera; with its back to the camera the sides swap and the face is not seen."""
    size = f.size * f.sheet.height
    x, feet = f.x, f.feet
    shoulder, hip = feet - 0.78 * size, feet - 0.45 * size
    half = 0.14 * size * f.sheet.build
    hx, hy, hr = f.head
    side = -1.0 if f.facing > 0 else 1.0  # where the figure's right side is, in x
    points = {1: (x, shoulder),
              2: (x + side * half, shoulder), 5: (x - side * half, shoulder),
              3: (x + side * half * 1.08, (shoulder + hip) / 2),
              6: (x - side * half * 1.08, (shoulder + hip) / 2),
              4: (x + side * half * 1.15, hip + 0.02 * size),
              7: (x - side * half * 1.15, hip + 0.02 * size),
              8: (x + side * half * 0.6, hip), 11: (x - side * half * 0.6, hip),
              9: (x + side * half * 0.7, (hip + feet) / 2),
              12: (x - side * half * 0.7, (hip + feet) / 2),
              10: (x + side * half * 0.6, feet), 13: (x - side * half * 0.6, feet),
              16: (x + side * hr * 0.95, hy), 17: (x - side * hr * 0.95, hy)}
    if f.facing > 0:
        points.update({0: (x, hy + 0.15 * hr), 14: (x + side * hr * 0.35, hy - 0.1 * hr),
                       15: (x - side * hr * 0.35, hy - 0.1 * hr)})
    return points


def _draw_pose(frame: np.ndarray, points: dict[int, tuple[float, float]], m: np.ndarray,
               width: int) -> None:
    """A skeleton as OpenPose draws it (coloured limbs, then joints) through the camera."""
    at = {k: (m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2])
          for k, (x, y) in points.items()}
    for (a, b), colour in zip(POSE_LIMBS, POSE_COLOURS):
        if a in at and b in at:
            cv2.line(frame, (int(round(at[a][0])), int(round(at[a][1]))),
                     (int(round(at[b][0])), int(round(at[b][1]))), colour, width, cv2.LINE_AA)
    for k, (x, y) in at.items():
        cv2.circle(frame, (int(round(x)), int(round(y))), width, POSE_COLOURS[k], -1,
                   cv2.LINE_AA)


def _paint_figure_mask(mask: np.ndarray, f: _Figure) -> None:
    fake = np.zeros(mask.shape + (3,), np.float32)
    white = dataclasses.replace(f.sheet, skin=(255,) * 3, hair=(255,) * 3, coat=(255,) * 3,
                                trousers=(255,) * 3)
    _paint_figure(fake, _Figure(white, f.x, f.feet, f.size, f.facing), draw_face=False)
    mask[:] = fake[:, :, 0] / 255.0


# ------------------------------------------------------------------ camera


def _camera(shot: Shot, i: int, n: int, W: int, H: int, r_shake: np.ndarray) -> np.ndarray:
    """2×3 affine from stage pixels to frame pixels for frame ``i`` of ``n``."""
    t = i / max(1, n - 1)
    ease = t * t * (3 - 2 * t)  # smoothstep: moves start and stop gently
    mx, my = W * _MARGIN_X / 2, H * _MARGIN_Y / 2
    scale, dx, dy, rot = 1.0, 0.0, 0.0, 0.0
    move = shot.camera_move
    if move == CameraMove.PAN:
        dx = (ease - 0.5) * 2 * mx * 0.9
    elif move == CameraMove.TRACKING:
        dx = (ease - 0.5) * 2 * mx * 0.9
    elif move == CameraMove.TILT:
        dy = (0.5 - ease) * 2 * my * 0.9
    elif move in (CameraMove.DOLLY, CameraMove.PUSH_IN):
        scale = 1.0 + 0.18 * ease
    elif move == CameraMove.ZOOM:
        scale = 1.0 + 0.35 * ease
    elif move == CameraMove.HANDHELD:
        dx, dy, rot = r_shake[i, 0] * W * 0.006, r_shake[i, 1] * H * 0.006, r_shake[i, 2] * 0.25
    cx, cy = mx + W / 2 + dx, my + H / 2 + dy  # stage point at the frame centre
    m = cv2.getRotationMatrix2D((cx, cy), rot, scale)
    m[0, 2] += W / 2 - cx
    m[1, 2] += H / 2 - cy
    return m


def _smooth_noise(r: np.random.Generator, n: int) -> np.ndarray:
    """Handheld shake: low-passed noise, about unit amplitude, three channels."""
    raw = r.standard_normal((n + 48, 3))
    k = np.hanning(25)
    k /= k.sum()
    out = np.stack([np.convolve(raw[:, c], k, mode="same") for c in range(3)], axis=1)[24:24 + n]
    return out / (out.std() + 1e-9)


@register("animatic")
class AnimaticEngine:
    """Deterministic previz from the plan alone."""

    name = "animatic"

    def __init__(self, burn_in: bool = False, figures: dict[str, dict] | None = None) -> None:
        self.burn_in = burn_in
        #: the cast's figure per character (``aiprod_post.cast.Figure`` as dicts)
        self.figures = {k.upper(): v for k, v in (figures or {}).items()}

    def sheet(self, name: str) -> CharacterSheet:
        return character_sheet(name, self.figures.get(name.upper()))

    def figure_masks(self, shot: Shot, context: RenderContext) -> dict[str, np.ndarray]:
        """Where each character facing the camera is in the shot's first frame: a boolean
        H×W mask per name (head and body, less what stands in front). The identity check
        compares what these regions hold from shot to shot."""
        W, H = context.width, context.height
        if shot.framing in (Framing.TITLE, Framing.INSERT):
            return {}
        sheets = {name: self.sheet(name) for name in shot.characters}
        figures, _ = _compose(context.scene, shot, W, H, sheets)
        m = _camera(shot, 0, shot.duration, W, H, _smooth_noise(_rng("shake", shot.seed),
                                                                  shot.duration))
        sw, sh = int(W * (1 + _MARGIN_X)), int(H * (1 + _MARGIN_Y))
        out: dict[str, np.ndarray] = {}
        taken = np.zeros((H, W), bool)
        for f in reversed(figures):  # later figures are painted over earlier ones
            stage = np.zeros((sh, sw), np.float32)
            _paint_figure_mask(stage, f)
            hx, hy, hr = f.head
            cv2.ellipse(stage, (int(hx), int(hy)), (int(hr), int(hr)), 0, 0, 360, 1.0, -1)
            mask = cv2.warpAffine(stage, m, (W, H), flags=cv2.INTER_NEAREST) > 0.5
            if f.facing > 0:
                out[f.sheet.name] = mask & ~taken
            taken |= mask
        return out

    def depth(self, shot: Shot, context: RenderContext) -> Iterator[np.ndarray]:
        """The shot's depth pass, frame for frame with :meth:`render` (the same camera):
        grey RGB frames, nearness 0 (far, black) to 255 (near, white), as the depth
        IC-LoRA's control video."""
        W, H = context.width, context.height
        figures, _ = _compose(context.scene, shot, W, H,
                              {name: self.sheet(name) for name in shot.characters})
        stage = (_depth_stage(context.scene, shot, W, H, figures) * 255 + 0.5).astype(np.uint8)
        n = shot.duration
        shake = _smooth_noise(_rng("shake", shot.seed), n)
        ox, oy = int(W * _MARGIN_X / 2), int(H * _MARGIN_Y / 2)
        for i in range(n):
            if shot.camera_move == CameraMove.STATIC or shot.framing == Framing.TITLE:
                frame = stage[oy:oy + H, ox:ox + W]
            else:
                frame = cv2.warpAffine(stage, _camera(shot, i, n, W, H, shake), (W, H),
                                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            yield np.repeat(frame[:, :, None], 3, axis=2)

    def pose(self, shot: Shot, context: RenderContext) -> Iterator[np.ndarray]:
        """The shot's pose pass, frame for frame with :meth:`render` (the same camera): each
        figure's OpenPose skeleton (18 keypoints, OpenPose's colours) on black, as the pose
        IC-LoRA's control video. Title cards and inserts have no one in them: black."""
        W, H = context.width, context.height
        figures, _ = _compose(context.scene, shot, W, H,
                              {name: self.sheet(name) for name in shot.characters})
        points = [_keypoints(f) for f in figures]
        n = shot.duration
        shake = _smooth_noise(_rng("shake", shot.seed), n)
        width = max(1, round(H / 128))
        ox, oy = int(W * _MARGIN_X / 2), int(H * _MARGIN_Y / 2)
        crop = np.array([[1.0, 0.0, -ox], [0.0, 1.0, -oy]])  # a static shot's window
        for i in range(n):
            m = crop if shot.camera_move == CameraMove.STATIC else _camera(shot, i, n, W, H, shake)
            frame = np.zeros((H, W, 3), np.uint8)
            for p in points:
                _draw_pose(frame, p, m, width)
            yield frame

    def render(self, shot: Shot, context: RenderContext) -> ShotRender:
        scene = context.scene
        W, H = context.width, context.height
        light = scene.light
        if "previous" in context.keyframes and context.keyframes["previous"].light:
            # a continuous scene keeps the light of the shot it continues from
            light = context.keyframes["previous"].light
        sheets = {name: self.sheet(name) for name in shot.characters}
        figures, _ = _compose(scene, shot, W, H, sheets)
        n = shot.duration
        fps = Fraction(context.fps)
        burn = self.burn_in or context.burn_in
        label = context.label or shot.id

        def frames() -> Iterator[np.ndarray]:
            if shot.framing == Framing.TITLE:
                card = title_card(shot.title or "", W, H)
                for i in range(n):
                    frame = card.copy()
                    if burn:
                        _burn_in(frame, f"{label}  {i + 1}/{n}")
                    yield frame
                return
            stage = _paint_stage(scene, shot, W, H, figures, light)
            shake = _smooth_noise(_rng("shake", shot.seed), n)
            tint = _LIGHT[light][2]
            static = shot.camera_move == CameraMove.STATIC
            ox, oy = int(W * _MARGIN_X / 2), int(H * _MARGIN_Y / 2)
            speaking = {name: context.visemes.get(name, []) for name in sheets}
            for i in range(n):
                m = _camera(shot, i, n, W, H, shake)
                if static:
                    frame = stage[oy:oy + H, ox:ox + W].copy()
                else:
                    frame = cv2.warpAffine(stage, m, (W, H), flags=cv2.INTER_LINEAR,
                                           borderMode=cv2.BORDER_REFLECT)
                for f in figures:
                    if f.facing < 0:
                        continue
                    hx, hy, hr = f.head
                    track = speaking.get(f.sheet.name) or []
                    shape = track[i] if i < len(track) else "X"
                    talking = shape not in ("X",)
                    # a small nod while talking, seeded per character
                    phase = (i + _stable(f.sheet.name) % 97) / float(fps)
                    nod = math.sin(phase * 5.0) * hr * 0.04 if talking else 0.0
                    fx = m[0, 0] * hx + m[0, 1] * (hy + nod) + m[0, 2]
                    fy = m[1, 0] * hx + m[1, 1] * (hy + nod) + m[1, 2]
                    fr = hr * math.hypot(m[0, 0], m[1, 0])
                    if -fr < fx < W + fr and -fr < fy < H + fr:
                        period = f.sheet.blink_period
                        blink = (i + _stable(f.sheet.name) % period) % period < 3
                        _draw_face(frame, fx, fy, fr, shape, blink, f.sheet, tint)
                if burn:
                    _burn_in(frame, f"{label}  {i + 1}/{n}")
                yield frame

        return ShotRender(shot, frames, set_key(scene), light)


def render_reference_sheet(name: str, size: int = 512, figure: dict | None = None,
                           turn: float = 0.0) -> np.ndarray:
    """One view of a character, full length, on grey: ``turn`` 0 front, 0.5 three-quarter,
    1 profile."""
    sheet = character_sheet(name, figure)
    img = np.full((size, size, 3), 128, np.float32)
    f = _Figure(sheet, size / 2, size * 0.95, size * 0.85)
    _paint_figure(img, f, draw_face=True, turn=turn)
    out = np.clip(img, 0, 255).astype(np.uint8)
    hx, hy, hr = f.head
    _draw_face(out, hx, hy, hr, "X", False, sheet, turn=turn)
    return out


def render_turnaround(name: str, figure: dict | None = None, size: int = 512) -> np.ndarray:
    """A character's turnaround sheet: front, three-quarter and profile side by side
    (``size`` × 3·``size``), the default reference image for the diffusion engines."""
    views = [render_reference_sheet(name, size, figure, turn) for turn in (0.0, 0.5, 1.0)]
    return np.concatenate(views, axis=1)
