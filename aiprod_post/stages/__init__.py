"""The stages of a render, as a table the runner walks.

Each stage is a module with ``run(context, *inputs) -> output``: the context
(:class:`~aiprod_post.stages.context.Context`: source, options, project, cache, progress,
executor, the report being written) and the outputs of the stages it takes, frozen
dataclasses from :mod:`aiprod_post.stages.context`. No stage imports another; what one
hands the next is in its output, nothing else.

========  ===================  =============================================================
stage     takes                gives
========  ===================  =============================================================
plan      -                    Planned: the plan (chosen takes), its takes, the cast
speech    plan                 Spoken: voiced lines in place, shots lengthened for them
picture   plan, speech         Pictures: every shot generated, graded, encoded, placed
mix       speech, picture      Mixed: stems, a normalised mix per delivery, lines
edit      speech, picture,     Edited: the timeline and its exports, subtitle cues
          mix
masters   speech, picture,     Delivered: each delivery's master, probe-checked, picture QA
          mix, edit
report    plan, speech,        report.html/json, manifest, estimate history, render record
          picture, masters
========  ===================  =============================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import edit, masters, mix, picture, plan, report, speech

__all__ = ["Stage", "STAGES", "run_stages"]


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[..., Any]
    takes: tuple[str, ...] = ()


STAGES: tuple[Stage, ...] = (
    Stage("plan", plan.run),
    Stage("speech", speech.run, ("plan",)),
    Stage("picture", picture.run, ("plan", "speech")),
    Stage("mix", mix.run, ("speech", "picture")),
    Stage("edit", edit.run, ("speech", "picture", "mix")),
    Stage("masters", masters.run, ("speech", "picture", "mix", "edit")),
    Stage("report", report.run, ("plan", "speech", "picture", "masters")),
)


def run_stages(ctx, stages: tuple[Stage, ...] = STAGES) -> dict[str, Any]:
    """Run each stage with the outputs of the stages it takes; every output, by name."""
    outputs: dict[str, Any] = {}
    for stage in stages:
        outputs[stage.name] = stage.run(ctx, *(outputs[name] for name in stage.takes))
    return outputs
