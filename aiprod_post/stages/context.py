"""What every stage is given (:class:`Context`) and what passes between stages: frozen
dataclasses, one per stage output, so a stage reads its inputs' fields and nothing set aside
by another stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

from .. import __version__
from ..cache import Cache, cache_folder, store_url
from ..executors import Executor
from ..executors.local import LocalExecutor
from ..plan import ShotPlan
from ..progress import Reporter
from ..project import Project

__all__ = ["Context", "Delivered", "Edited", "Line", "Mixed", "Pictures", "Planned",
           "RenderOptions", "Spoken", "new_context", "shot_cdl", "slug"]


@dataclass
class RenderOptions:
    engine: str | None = None
    profiles: list[str] | None = None
    project: Project = field(default_factory=Project)
    fps: Fraction | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    quiet: bool = False
    log_json: bool = False
    burn_in: bool | None = None
    #: a cast file (Cast.1 TOML); else the project's [project] cast, else read from the script
    cast: Path | None = None
    #: where shots run: ``local`` or ``ray`` (else the project's ``[run] executor``)
    executor: str | None = None
    #: the Ray cluster's address (else the project's ``[run] address``)
    address: str | None = None
    #: the stage cache, a folder or ``file://`` URL (else ``[run] cache``, else OUTDIR/.cache)
    cache: str | None = None


@dataclass(frozen=True)
class Context:
    """One render: its source, output folder, options and project, the cache, where progress
    goes, where shots run, and the report being written (each stage adds its section; only
    the report stage reads them) with the shots that failed."""

    source: Path
    outdir: Path
    options: RenderOptions
    project: Project
    cache: Cache
    reporter: Reporter
    executor: Executor
    profiles: tuple[str, ...]
    report: dict[str, Any] = field(default_factory=lambda: {"version": __version__})
    failed: dict[str, str] = field(default_factory=dict)


def new_context(source: Path, outdir: Path, options: RenderOptions,
                executor: Executor | None = None, profiles: tuple[str, ...] = ()) -> Context:
    """A render's context: a ``--cache`` folder is where the command runs from, the
    project's beside the project."""
    cache = cache_folder(options.cache, Path("."), outdir, "--cache") if options.cache else \
        cache_folder(options.project.run.cache, Path(options.project.root), outdir)
    store = store_url(options.cache or options.project.run.cache)
    if store:
        from ..store import Store

        # a bad URL or a missing fsspec backend is bad input, before any work
        Store(store, cache, where="--cache" if options.cache else "[run] cache")
    return Context(Path(source), Path(outdir), options, options.project, Cache(cache, store),
                   Reporter(options.quiet, options.log_json), executor or LocalExecutor(),
                   tuple(profiles))


@dataclass(frozen=True)
class Line:
    """A spoken line: its synthesis in the cache and its place in its shot and the film."""

    shot_id: str
    line_id: str
    speaker: str
    text: str
    parenthetical: str | None
    key: str
    wav: Path
    timings: dict
    offset: float = 0.0  # seconds from the shot's cut in
    start_sample: int = 0  # on the film, at the plan's audio rate


@dataclass(frozen=True)
class Planned:
    """The plan to render (each retaken shot at its chosen take), its takes and its cast."""

    plan: ShotPlan
    takes: Mapping[str, Any]
    cast: Any  # aiprod_post.cast.Cast

    def character(self, name: str):
        """A character of the cast by plan name (an empty one where the cast lacks them)."""
        from ..cast import CastCharacter

        return self.cast.get(name) or CastCharacter()


@dataclass(frozen=True)
class Spoken:
    """Every line voiced, and the plan with shots lengthened where speech needs it."""

    plan: ShotPlan
    lines: Mapping[str, tuple[Line, ...]]  # shot id → its lines, in film order

    def all_lines(self) -> list[Line]:
        return [ln for shot_lines in self.lines.values() for ln in shot_lines]


@dataclass(frozen=True)
class Pictures:
    """Every shot's picture placed under ``shots/`` (or its slate)."""

    media: Mapping[str, Any]  # shot id → aiprod_post.editing.timeline.ShotMedia
    files: Mapping[str, str]  # shot id → its picture's name in the cache (its inputs' hash)
    cached: Mapping[str, bool]  # shot id → whether it came from the cache this run
    sound: Mapping[str, tuple[Path, int]]  # shot id → sound an engine made with it, head


@dataclass(frozen=True)
class Mixed:
    """Stems, a loudness-normalised mix per delivery, the lines for editors."""

    mixes: Mapping[str, Path]
    stems: Mapping[str, Path]
    lines_dir: Path


@dataclass(frozen=True)
class Edited:
    """The timeline, written with its exports, and the subtitle cues."""

    timeline: Any  # opentimelineio Timeline
    otio_path: Path
    cues: tuple


@dataclass(frozen=True)
class Delivered:
    """The masters, each held to its profile by probe."""

    masters: Mapping[str, Path]


def shot_cdl(ctx: Context, shot_id: str):
    """The shot's ASC CDL from ``[looks] cdl`` (applied before its look), or None."""
    from aiprod_post.grading.cdl import cdl_for_shot

    name = ctx.project.looks.cdl.get(shot_id)
    return cdl_for_shot(ctx.project.path(name), shot_id) if name else None


def slug(title: str) -> str:
    """A file name's stem from a film's title.

    >>> slug("The Last Ferry!")
    'The_Last_Ferry'
    """
    keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in title.strip())
    return "_".join(p for p in keep.split("_") if p)[:80] or "film"
