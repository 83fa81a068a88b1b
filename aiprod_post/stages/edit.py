"""The edit stage: the OpenTimelineIO timeline of the film (shots with handles, lines, stems,
the mix), written with its exports for Resolve, Premiere, Final Cut and Avid, each shot's ASC
CDL carried out, and the subtitles."""

from __future__ import annotations

from pathlib import Path

from ..cache import write_if_changed
from ..errors import AiprodError
from ..files import inside
from ..plan import AUDIO_RATE, ShotPlan, plan_to_json
from ..project import DELIVERY_PROFILES
from .context import Context, Edited, Mixed, Pictures, Spoken, shot_cdl, slug

__all__ = ["run"]


def run(ctx: Context, spoken: Spoken, pictures: Pictures, mixed: Mixed) -> Edited:
    tl, otio_path = timeline(ctx, spoken, pictures, mixed)
    return Edited(tl, otio_path, subtitles(ctx, spoken))


def timeline(ctx: Context, spoken: Spoken, pictures: Pictures, mixed: Mixed):
    import opentimelineio as otio

    from aiprod_post.editing.export import FORMATS, export_timeline
    from aiprod_post.editing.timeline import LineMedia, TimelineMedia, build_timeline

    plan, r = spoken.plan, ctx.reporter
    r.stage("timeline", 1)
    line_media = [LineMedia(ln.line_id, ln.speaker,
                            inside(mixed.lines_dir, f"{ln.line_id}.wav"), ln.start_sample,
                            int(round(ln.timings["duration"] * AUDIO_RATE)), ln.text)
                  for ln in spoken.all_lines()]
    main_mix = mixed.mixes.get("master") or next(iter(mixed.mixes.values()))
    tl = build_timeline(plan, TimelineMedia(dict(pictures.media), line_media,
                                            mixed.stems["MX"], mixed.stems["FX"], main_mix))
    folder = ctx.outdir / "timeline"
    folder.mkdir(parents=True, exist_ok=True)
    stem = slug(plan.title)
    ccc = _carry_cdls(ctx, plan, tl, folder / f"{stem}.ccc")
    write_if_changed(folder / "plan.json", plan_to_json(plan).encode())
    otio_path = folder / f"{stem}.otio"
    text = otio.adapters.write_to_string(tl, "otio_json").encode()
    changed = write_if_changed(otio_path, text)
    written = [otio_path, ccc]
    if any(DELIVERY_PROFILES[p].exports for p in ctx.profiles):
        # .otioz is left to `aiprod-post export`: it would copy every shot's media again
        for fmt in ("fcp7", "fcpxml", "edl", "aaf"):
            target = folder / f"{stem}{FORMATS[fmt][1]}"
            if target.exists() and not changed:
                written.append(target)
                continue
            try:
                written.append(export_timeline(tl, fmt, target))
            except AiprodError as exc:
                r.note(f"timeline export {fmt} failed: {exc}")
    r.item("timeline", 1, 1, cached=not changed)
    ctx.report["timeline"] = [str(p.relative_to(ctx.outdir)) for p in written]
    return tl, otio_path


def _carry_cdls(ctx: Context, plan: ShotPlan, tl, path: Path) -> Path:
    """Each clip's ASC CDL in its metadata (``aiprod_post.cdl``: id, slope, offset, power,
    sat) for the exports, and a .ccc of every shot (identity where none is given) for
    the colourist."""
    from aiprod_post.grading.cdl import CDL, cdl_xml

    shots = [s.id for _, s in plan.shots()]
    unknown = sorted(set(ctx.project.looks.cdl) - set(shots))
    if unknown:
        raise AiprodError(f"no shot {', '.join(unknown)} in the plan", where="[looks] cdl")
    cdls = {sid: shot_cdl(ctx, sid) or CDL(sid) for sid in shots}
    for track in tl.video_tracks():
        for clip in track.find_clips():
            cdl = cdls.get(clip.name)  # a shot's clip is named by its id
            if cdl is not None:
                clip.metadata.setdefault("aiprod_post", {})["cdl"] = cdl.to_metadata()
    # a shot's correction carries its shot's id in the collection, whatever its file says
    write_if_changed(path, cdl_xml([CDL(sid, c.slope, c.offset, c.power, c.sat,
                                        c.description) for sid, c in cdls.items()]).encode())
    return path


def subtitles(ctx: Context, spoken: Spoken) -> tuple:
    from aiprod_post.editing.subtitles import SpokenLine, subtitle_cues, to_srt, to_webvtt

    ctx.reporter.stage("subtitles", 1)
    spoken_lines = [SpokenLine(ln.start_sample / AUDIO_RATE, ln.text,
                               [(w["text"], w["start"], w["end"]) for w in ln.timings["words"]],
                               ln.speaker)
                    for ln in spoken.all_lines()]
    cues = subtitle_cues(spoken_lines)
    folder = ctx.outdir / "subtitles"
    stem = slug(spoken.plan.title)
    changed = write_if_changed(folder / f"{stem}.srt", to_srt(cues).encode())
    changed |= write_if_changed(folder / f"{stem}.vtt", to_webvtt(cues).encode())
    ctx.report["subtitles"] = {"cues": len(cues)}
    ctx.reporter.item("subtitles", 1, 1, cached=not changed)
    return tuple(cues)
