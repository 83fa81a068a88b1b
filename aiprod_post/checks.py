"""Consistency checks on a shot plan a user may have edited by hand."""

from __future__ import annotations

from .plan import ShotPlan

__all__ = ["plan_problems"]


def plan_problems(plan: ShotPlan) -> list[tuple[str, str]]:
    """Return ``(json_path, message)`` for every inconsistency in ``plan``.

    Schema-level problems (types, missing fields) are caught when the plan is
    loaded; these are the ones that need the whole plan to see.
    """
    problems: list[tuple[str, str]] = []
    cast = {c.name.upper() for c in plan.cast}
    scene_ids: set[str] = set()
    shot_order: dict[str, int] = {}
    line_ids: set[str] = set()
    n = 0
    for si, scene in enumerate(plan.scenes):
        where_scene = f"$.scenes[{si}]"
        if scene.id in scene_ids:
            problems.append((f"{where_scene}.id", f"scene id {scene.id!r} is used twice"))
        scene_ids.add(scene.id)
        for hi, shot in enumerate(scene.shots):
            where = f"{where_scene}.shots[{hi}]"
            if shot.id in shot_order:
                problems.append((f"{where}.id", f"shot id {shot.id!r} is used twice"))
            cond = shot.conditioning
            if cond.keyframe != "none":
                if cond.shot is None:
                    problems.append((f"{where}.conditioning.shot",
                                     f"keyframe {cond.keyframe!r} needs the id of a shot"))
                elif cond.shot not in shot_order:
                    problems.append((f"{where}.conditioning.shot",
                                     f"shot {cond.shot!r} is not an earlier shot of the plan"))
            shot_order[shot.id] = n
            n += 1
            for name in shot.characters:
                if name.upper() not in cast:
                    problems.append((f"{where}.characters",
                                     f"{name!r} is not in the cast list"))
            for li, line in enumerate(shot.dialogue):
                if line.speaker.upper() not in cast:
                    problems.append((f"{where}.dialogue[{li}].speaker",
                                     f"speaker {line.speaker!r} is not in the cast list"))
                if line.id in line_ids:
                    problems.append((f"{where}.dialogue[{li}].id",
                                     f"dialogue line id {line.id!r} is used twice"))
                line_ids.add(line.id)
            for name in ("transition_in", "transition_out"):
                tr = getattr(shot, name)
                if tr is not None and tr.duration > shot.duration:
                    problems.append((f"{where}.{name}.duration",
                                     f"{tr.duration} frames is longer than the shot "
                                     f"({shot.duration} frames)"))
    if n == 0:
        problems.append(("$.scenes", "the plan has no shots"))
    return problems
