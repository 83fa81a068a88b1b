"""Tiny rendered films for the editing tests: shot media with handles, from a plan."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from aiprod_post.editing.conform import PROFILES, encode_master
from aiprod_post.editing.timeline import ShotMedia, handles_for
from aiprod_post.generation.engine import KeyframeStore, RenderContext, engine_by_name
from aiprod_post.plan import ShotPlan


def render_shots(plan: ShotPlan, folder: Path, fps: Fraction, width: int, height: int,
                 extra: int = 0) -> dict[str, ShotMedia]:
    """Each shot rendered by the animatic engine as ProRes, with the handles its
    transitions need plus ``extra`` frames at either end (an editor's trimming room)."""
    engine = engine_by_name("animatic")
    store = KeyframeStore()
    handles = handles_for(plan)
    media = {}
    for scene, shot in plan.shots():
        head, tail = (h + extra for h in handles[shot.id])
        longer = shot.model_copy(update={"duration": shot.duration + head + tail})
        r = engine.render(longer, RenderContext(scene, width, height, fps,
                                                store.for_shot(scene, shot)))
        path = folder / f"{shot.id}.mov"
        encode_master(iter(r), longer.duration, fps, width, height, path, PROFILES["prores"],
                      None)
        store.add_shot(scene, shot, r.keyframes)
        media[shot.id] = ShotMedia(path, longer.duration, head)
    return media
