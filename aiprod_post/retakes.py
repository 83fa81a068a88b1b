"""Retakes: one shot of a finished render made again, or another of its takes chosen.

Each reruns the render the folder remembers (:mod:`aiprod_post.takes`, ``render.json``)
with its source and options; the stage cache serves every shot but the one whose take
changed, and the timeline and masters are made again with the chosen take.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable

from .errors import AiprodError
from .files import sha256_file
from .outlock import output_lock
from .plan import ShotPlan
from .pipeline import RenderOptions, RenderResult, render
from .project import Project
from .takes import RenderRecord, Take, add_take, choose_take, load_render_record, rendered_plan

__all__ = ["options_of", "retake", "use_take"]


def options_of(record: RenderRecord, quiet: bool = False, log_json: bool = False
               ) -> RenderOptions:
    """The options a render was made with, from its record."""
    project = Project.model_validate(record.project)  # load_render_record checked it
    project.root = record.project_root
    return RenderOptions(
        engine=record.engine, profiles=record.profiles, project=project,
        fps=Fraction(record.fps) if record.fps else None, width=record.width,
        height=record.height, seed=record.seed, quiet=quiet, log_json=log_json,
        burn_in=record.burn_in, cast=Path(record.cast) if record.cast else None,
        executor=record.executor, address=record.address, cache=record.cache)


def _source(record: RenderRecord, outdir: Path) -> Path:
    """The render's source, as it was: a changed script would re-render more than a shot."""
    source = Path(record.source)
    if not source.is_file():
        raise AiprodError(f"the render's source {source} is gone; render again",
                          source=Path(outdir) / "render.json")
    if record.source_sha256 and sha256_file(source) != record.source_sha256:
        raise AiprodError("changed since this folder was rendered: a retake remakes one shot "
                          "of the render as it was; render the edited source instead",
                          source=source)
    return source


def _rerun(outdir: Path, change: Callable[[ShotPlan], Take], quiet: bool, log_json: bool
           ) -> tuple[Take, RenderResult]:
    outdir = Path(outdir)
    record = load_render_record(outdir)
    source = _source(record, outdir)
    with output_lock(outdir):  # no render may be writing the folder while takes change
        take = change(rendered_plan(outdir))
    return take, render(source, outdir, options_of(record, quiet, log_json))


def retake(outdir: Path, shot_id: str, *, seed: int | None = None,
           prompt_extra: str | None = None, note: str | None = None, quiet: bool = False,
           log_json: bool = False) -> tuple[Take, RenderResult]:
    """Render a new take of ``shot_id`` (``seed`` None: a new one), keep the earlier ones
    and make the timeline and masters with it."""
    return _rerun(outdir, lambda plan: add_take(outdir, plan, shot_id, seed=seed,
                                                prompt_extra=prompt_extra, note=note),
                  quiet, log_json)


def use_take(outdir: Path, shot_id: str, number: int, *, quiet: bool = False,
             log_json: bool = False) -> tuple[Take, RenderResult]:
    """Make take ``number`` of ``shot_id`` the one the masters use, and remake them."""
    return _rerun(outdir, lambda plan: choose_take(outdir, plan, shot_id, number),
                  quiet, log_json)
