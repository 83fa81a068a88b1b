"""The plan stage: the script planned (or a plan file read), each retaken shot at its chosen
take, and the film's cast."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

from ..cache import key_of
from ..checks import plan_problems
from ..errors import PlanError
from ..files import sha256_file, write_atomic
from ..plan import ShotPlan, is_plan_file, load_plan, plan_to_json
from ..planner import PlannerSettings, plan_source
from ..takes import load_takes, with_chosen_takes
from .context import Context, Planned

__all__ = ["run", "plan_of", "cast_for"]


def run(ctx: Context) -> Planned:
    plan = plan_of(ctx)
    takes = load_takes(ctx.outdir)
    plan, gone = with_chosen_takes(plan, takes)
    if gone:
        ctx.reporter.note(f"{ctx.outdir / 'takes.json'}: takes of shots this plan does not "
                          f"have are left aside: {', '.join(gone)}")
    return Planned(plan, takes, cast_for(ctx, plan))


def plan_of(ctx: Context) -> ShotPlan:
    """The plan: a plan file as it is (the output size and rate from the options or the
    project), or the script planned with them."""
    o, out, r = ctx.options, ctx.project.output, ctx.reporter
    r.stage("plan", 1)
    if is_plan_file(ctx.source):
        if o.seed is not None:
            raise PlanError("--seed applies when planning a script; a plan's seeds are "
                            "in its shots (edit them, or `retake` a shot)", source=ctx.source)
        plan = load_plan(ctx.source)
        changes: dict[str, Any] = {}
        if o.fps or out.fps:
            changes["fps"] = o.fps or out.fps
        if o.width or out.width:
            changes["width"] = o.width or out.width
        if o.height or out.height:
            changes["height"] = o.height or out.height
        plan = plan.model_copy(update=changes) if changes else plan
    else:
        settings = PlannerSettings(
            fps=o.fps or out.fps or Fraction(24),
            width=o.width or out.width or 1920,
            height=o.height or out.height or 1080,
            seed=o.seed or 0,
        )
        plan, warnings = plan_source(ctx.source, settings)
        for line, message in warnings:
            r.note(f"{ctx.source}:{line}: warning: {message}")
    problems = plan_problems(plan)
    if problems:
        where, message = problems[0]
        raise PlanError(message, source=ctx.source, where=where)
    marker = ctx.cache.path("plan", key_of("plan", plan_to_json(plan)), ".json")
    hit = marker.exists()
    if not hit:
        write_atomic(marker, plan_to_json(plan).encode())
    r.item("plan", 1, 1, cached=hit)
    return plan


def cast_for(ctx: Context, plan: ShotPlan):
    """The film's cast: a cast file's characters exactly as written (``--cast`` or
    ``[project] cast``), the script's facts for characters the file lacks (added with
    voices of their own, and reported), project ``[characters.X]`` keys over both; written
    to ``OUTDIR/cast.toml``."""
    from aiprod_post.audio.tts import cast_voices

    from ..cast import Cast, CastCharacter, complete, load_cast, merge_cast, read_cast, save_cast
    from ..fountain import parse_file

    o, project = ctx.options, ctx.project
    script: Path | None = ctx.source
    if ctx.source.suffix.lower() == ".json":
        # a plan names the script it came from: its facts, if it is there unchanged
        script = next((p for p in ([Path(plan.source), ctx.source.parent / plan.source]
                                   if plan.source else [])
                       if p.is_file() and plan.source_sha256 in (None, sha256_file(p))),
                      None)
    if script is not None:
        found = read_cast(parse_file(script), voices=cast_voices)
    else:
        found = complete(Cast(title=plan.title, characters={
            " ".join(c.name.split()).upper(): CastCharacter() for c in plan.cast}),
            cast_voices)
        if not (o.cast or project.project.cast):
            ctx.reporter.note(f"{ctx.source}: the plan's script is not beside it unchanged, "
                              "so nothing is known of its characters; give --cast")
    p = project.project.cast
    path = o.cast or (project.path(p) if p else None)
    added: list[str] = []
    fixed: set[str] = set()
    if path is not None:
        base = load_cast(path, cast_voices)
        # paths in a cast file are relative to the file
        base = base.model_copy(update={"characters": {k: ch.model_copy(update={
            f: str(Path(path).parent / v) for f in ("reference", "speaker_wav", "lora")
            if (v := getattr(ch, f)) and not Path(v).is_absolute()})
            for k, ch in base.characters.items()}})
        cast, added = merge_cast(base, found, cast_voices)
        fixed = set(base.characters)
        if added:
            ctx.reporter.note(f"{path}: new in this script, added with voices of their own: "
                              + ", ".join(added))
    else:
        cast = found
    chars = dict(cast.characters)
    for cname, ch in project.characters.items():
        key = " ".join(cname.split()).upper()
        if key not in chars:
            continue
        update = {f: getattr(ch, f) for f in ("voice", "pitch", "rate")
                  if getattr(ch, f) is not None}
        update.update({f: str(project.path(getattr(ch, f)))
                       for f in ("reference", "speaker_wav") if getattr(ch, f)})
        if update.get("voice"):
            fixed.add(key)
        chars[key] = chars[key].model_copy(update=update)
    # voices not fixed by a file are handed out again round any the project chose
    chars = {k: ch if k in fixed else ch.model_copy(update={"voice": None})
             for k, ch in chars.items()}
    cast = complete(cast.model_copy(update={"characters": chars}), cast_voices)
    save_cast(cast, ctx.outdir / "cast.toml")
    ctx.report["cast"] = {
        "file": str(path) if path else None, "added": added,
        "characters": {k: {"description": ch.description, "gender": ch.gender,
                           "age": ch.age, "age_band": ch.age_band, "wardrobe": ch.wardrobe,
                           "voice": ch.voice, "pitch": ch.pitch, "rate": ch.rate,
                           "introduction": ch.introduction, "lines": ch.lines}
                       for k, ch in cast.characters.items()}}
    return cast

