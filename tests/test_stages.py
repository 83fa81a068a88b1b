"""The stage table: each stage takes only earlier stages' outputs, its ``run`` is typed with
exactly them, and the runner renders by walking the table (a stage added to the table runs
with the outputs it asks for, without a change to the runner)."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest

from aiprod_post.stages import STAGES, Stage, run_stages
from aiprod_post.stages import context as handoff


def returns(stage: Stage):
    return typing.get_type_hints(stage.run, vars(handoff))["return"]


def test_each_stage_takes_earlier_outputs_typed_as_they_are_given():
    given: dict[str, type] = {}
    for stage in STAGES:
        params = list(inspect.signature(stage.run).parameters.values())
        hints = typing.get_type_hints(stage.run, vars(handoff))
        assert hints[params[0].name] is handoff.Context, stage.name
        assert len(params) == 1 + len(stage.takes), stage.name
        for param, name in zip(params[1:], stage.takes):
            assert name in given, f"{stage.name} takes {name}, which has not run before it"
            assert hints[param.name] is given[name], (stage.name, param.name)
        given[stage.name] = returns(stage)
    # what passes between stages is frozen
    for kind in given.values():
        if kind is not type(None):
            assert dataclasses.is_dataclass(kind) and kind.__dataclass_params__.frozen, kind


def test_the_runner_walks_the_table(monkeypatch, tmp_path):
    """A stage appended to the table runs after the others with the outputs it names, and a
    stage that raises stops the render with its error: render() holds no stage of its own."""
    from aiprod_post import pipeline

    seen = {}

    def extra(ctx, planned, delivered):
        seen["plan"] = planned.plan.title
        seen["masters"] = sorted(delivered.masters)
        raise RuntimeError("the extra stage ran")

    monkeypatch.setattr(pipeline, "run_stages", lambda ctx: run_stages(
        ctx, STAGES + (Stage("extra", extra, ("plan", "masters")),)))
    script = tmp_path / "s.fountain"
    script.write_text("Title: Walk\n\nEXT. PIER - DAY\n\nGulls.\n\nNELL\nHello.\n")
    with pytest.raises(RuntimeError, match="the extra stage ran"):
        pipeline.render(script, tmp_path / "out", pipeline.RenderOptions(
            width=160, height=96, quiet=True, profiles=["web"]))
    assert seen == {"plan": "Walk", "masters": ["web"]}

