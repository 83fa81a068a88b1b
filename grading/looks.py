"""The bundled looks (``luts/``), and which one a scene gets by default.

A scene's time of day picks its default look; the project file can override it per
scene or per shot. A look is a name from the library or a path to any LUT file.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from aiprod_post.errors import MediaError

from .lut import LUT, read_lut

__all__ = ["LOOKS_DIR", "LOOK_NAMES", "DEFAULT_LOOK_BY_LIGHT", "look_path", "load_look",
           "default_look", "look_for"]

# package data of aiprod_post.luts (the repository's luts/ folder), so a wheel finds them too
LOOKS_DIR = Path(str(resources.files("aiprod_post.luts")))
LOOK_NAMES = ["neutral_rec709", "warm_film", "teal_orange", "bleach_bypass", "day_for_night",
              "noir"]
_ALIASES = {"neutral": "neutral_rec709", "day-for-night": "day_for_night",
            "teal-orange": "teal_orange", "bleach-bypass": "bleach_bypass",
            "warm": "warm_film", "warm-film": "warm_film", "bw-noir": "noir",
            "black-and-white-noir": "noir"}
DEFAULT_LOOK_BY_LIGHT = {"day": "neutral_rec709", "dawn": "warm_film", "dusk": "warm_film",
                         "night": "day_for_night"}


def look_path(look: str, root: Path | None = None) -> Path:
    """A library look by name (``warm_film``, ``day-for-night``) or a LUT file path."""
    name = _ALIASES.get(look, look)
    if name in LOOK_NAMES:
        return LOOKS_DIR / f"{name}.cube"
    p = Path(look)
    if not p.is_absolute() and root is not None:
        p = root / p
    if p.suffix.lower() in (".cube", ".3dl", ".spi1d", ".spi3d", ".csp"):
        if not p.is_file():
            raise MediaError("look file not found", source=p)
        return p
    raise MediaError(f"unknown look {look!r}: expected one of {', '.join(LOOK_NAMES)} "
                     "or a LUT file (.cube, .3dl, .spi1d, .spi3d, .csp)")


@lru_cache(maxsize=16)
def _load(path: str, mtime: float) -> LUT:
    return read_lut(path)


def load_look(look: str, root: Path | None = None) -> LUT:
    p = look_path(look, root)
    return _load(str(p), p.stat().st_mtime)


def default_look(light: str) -> str:
    return DEFAULT_LOOK_BY_LIGHT.get(light, "neutral_rec709")


def look_for(shot, scene, shot_looks: dict[str, str] | None = None,
             scene_looks: dict[str, str] | None = None) -> str:
    """The look a shot is graded with, first found: the project's ``[looks] shot`` entry,
    the plan's shot look, neutral for a title card (graphics on black: the scene's grade is
    not for it), the project's ``[looks] scene`` entry, the plan's scene look, the default
    for the scene's light.

    >>> from aiprod_post.plan import Scene, Shot
    >>> scene = Scene(id="1", heading="EXT. PIER - NIGHT", light="night", shots=[])
    >>> shot = Shot(id="1A", framing="wide", duration=24, seed=1)
    >>> look_for(shot, scene), look_for(shot, scene, {"1A": "warm_film"})
    ('day_for_night', 'warm_film')
    """
    return ((shot_looks or {}).get(shot.id) or shot.look
            or ("neutral_rec709" if shot.framing.value == "title" else None)
            or (scene_looks or {}).get(scene.id) or scene.look or default_look(scene.light))
