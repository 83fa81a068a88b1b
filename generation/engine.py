"""The engine interface, keyframes, and the registry engines are found through.

An engine renders one shot at a time: ``engine.render(shot, context)`` returns
a :class:`ShotRender`, an iterable that streams frames (H×W×3 uint8 RGB,
display-referred Rec.709) at the plan's size and rate. While it streams, the
render records the keyframes it produced (first and last frame), so the next
shot can be conditioned on them. Nothing holds a whole shot in memory.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterator, Protocol

import numpy as np

from aiprod_post import engines
from aiprod_post.errors import AiprodError
from aiprod_post.plan import Scene, Shot

__all__ = [
    "Keyframe",
    "KeyframeStore",
    "RenderContext",
    "ShotRender",
    "Engine",
    "register",
    "engine_by_name",
    "ENGINES",
]


@dataclass
class Keyframe:
    """One frame an engine produced, with what it knows about it."""

    shot_id: str
    frame: int
    image: np.ndarray  # H×W×3 uint8
    set_key: str = ""  # which set (location) it shows
    light: str = ""
    characters: tuple[str, ...] = ()


@dataclass
class KeyframeStore:
    """Keyframes per scene, per shot and per character, for conditioning later shots."""

    establishing: dict[str, Keyframe] = field(default_factory=dict)  # scene id → keyframe
    shots: dict[str, dict[str, Keyframe]] = field(default_factory=dict)  # shot id → first/last
    characters: dict[str, np.ndarray] = field(default_factory=dict)  # name → reference sheet
    _scene: str | None = None
    _last_shot: str | None = None

    def add_shot(self, scene: Scene, shot: Shot, keyframes: dict[str, Keyframe]) -> None:
        """Record a rendered shot's keyframes; keep only what later shots can ask for.

        A shot is conditioned on its own scene's establishing keyframe or on the shot
        just before it, so older scenes' keyframes are dropped: memory stays flat
        however long the film is.
        """
        if self._scene is not None and self._scene != scene.id:
            keep = self.shots.get(self._last_shot) if self._last_shot else None
            self.shots = {self._last_shot: keep} if keep and self._last_shot else {}
            self.establishing = {}
        first_id = scene.shots[0].id if scene.shots else None
        self.shots = {k: v for k, v in self.shots.items() if k in (first_id, self._last_shot)}
        self._scene, self._last_shot = scene.id, shot.id
        self.shots[shot.id] = keyframes
        if scene.shots and scene.shots[0].id == shot.id and "first" in keyframes:
            self.establishing[scene.id] = keyframes["first"]

    def for_shot(self, scene: Scene, shot: Shot) -> dict[str, Keyframe]:
        """The keyframes ``shot`` is conditioned on, by the plan's conditioning."""
        out: dict[str, Keyframe] = {}
        cond = shot.conditioning
        if cond.keyframe == "establishing" and cond.shot in self.shots:
            out["establishing"] = self.shots[cond.shot]["first"]
        elif cond.keyframe == "previous-shot" and cond.shot in self.shots:
            out["previous"] = self.shots[cond.shot]["last"]
        if scene.id in self.establishing and "establishing" not in out:
            if self.establishing[scene.id].shot_id != shot.id:
                out["establishing"] = self.establishing[scene.id]
        for name in shot.characters:  # reference images the project gives
            if name in self.characters:
                out[f"character:{name}"] = Keyframe("", 0, self.characters[name],
                                                    characters=(name,))
        return out


@dataclass
class RenderContext:
    """Everything besides the shot that a render depends on."""

    scene: Scene
    width: int
    height: int
    fps: Fraction
    keyframes: dict[str, Keyframe] = field(default_factory=dict)
    #: per character, the mouth shape (A–H, X) on each frame of this shot
    visemes: dict[str, list[str]] = field(default_factory=dict)
    burn_in: bool = False
    label: str = ""
    #: the look the shot will be graded with (an engine may describe it in its prompt)
    look: str | None = None
    #: how the cast describes each character in the shot ("an older woman in a yellow
    #: oilskin"): the same words in every shot of that person
    cast: dict[str, str] = field(default_factory=dict)
    #: the shot's dialogue as the mix will play it: mono float32 at 48 kHz from the shot's
    #: first frame (handles included), silence between lines; None for a shot without lines.
    #: An engine that lip-syncs to given audio (ltx2) takes it; the others ignore it.
    dialogue: np.ndarray | None = None


class ShotRender:
    """Frames of one shot, streamed; ``keyframes`` is complete once iteration ends."""

    def __init__(self, shot: Shot, frames: Callable[[], Iterator[np.ndarray]], set_key: str = "",
                 light: str = "") -> None:
        self.shot = shot
        self.n_frames = shot.duration
        self._frames = frames
        self.keyframes: dict[str, Keyframe] = {}
        #: things the report should say about this shot (e.g. lip-sync skipped)
        self.notes: list[str] = []
        self.set_key = set_key
        self.light = light
        #: sound the engine generated with the picture (samples × channels, float32, at
        #: ``audio_rate``, from the shot's first frame), complete once iteration ends; None
        #: when the engine makes none. The pipeline puts it on the FX stem.
        self.audio: np.ndarray | None = None
        self.audio_rate: int = 48000
        #: whether the engine makes an HDR picture besides the SDR frames (ltx2 with its
        #: HDR LoRA); where it does and ``linear`` is set (by the consumer, before
        #: iterating), each frame's scene-linear light (H×W×3 float32, BT.709 primaries,
        #: 1.0 = diffuse white, unbounded) is given to ``linear`` as its SDR frame is
        #: yielded (:mod:`aiprod_post.hdr` says how both are carried)
        self.hdr = False
        self.linear: Callable[[np.ndarray], None] | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        last = None
        count = 0
        for i, frame in enumerate(self._frames()):
            if i == 0:
                self.keyframes["first"] = self._keyframe(0, frame)
            last = frame
            count += 1
            yield frame
        if last is not None:
            self.keyframes["last"] = self._keyframe(count - 1, last)
        if count != self.n_frames:
            raise AiprodError(f"engine produced {count} frames, the plan asks for "
                              f"{self.n_frames}", where=f"shot {self.shot.id}")

    def _keyframe(self, index: int, frame: np.ndarray) -> Keyframe:
        return Keyframe(self.shot.id, index, frame.copy(), self.set_key, self.light,
                        tuple(self.shot.characters))


class Engine(Protocol):
    name: str

    def render(self, shot: Shot, context: RenderContext) -> ShotRender:
        ...


ENGINES: dict[str, Callable[..., Engine]] = {}


def register(name: str) -> Callable[[Callable[..., Engine]], Callable[..., Engine]]:
    """Class decorator: the factory of engine ``name`` (its entry, with its settings model,
    is in :mod:`aiprod_post.engines`)."""

    def wrap(factory: Callable[..., Engine]) -> Callable[..., Engine]:
        ENGINES[name] = factory
        return factory

    return wrap


def engine_by_name(name: str, **settings) -> Engine:
    """Build engine ``name`` (registered in :mod:`aiprod_post.engines`) with ``settings``."""
    if engines.find(name) is None and name in ENGINES:  # only here: a test's own engine
        return ENGINES[name](**settings)
    factory = engines.get(name).factory  # an unknown name: an error listing the known ones
    if isinstance(factory, str):  # "module:attribute", imported when first built
        module, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
    # what registered itself under the name wins (a test may stand in for an engine)
    return ENGINES.get(name, factory)(**settings)
