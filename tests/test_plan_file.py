"""Shot plan JSON: round trip, exact rates, schema, upgrades and load errors."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from click.testing import CliRunner

from aiprod_post.cli import main
from aiprod_post.errors import PlanError
from aiprod_post.plan import (
    SCHEMA_VERSION,
    ShotPlan,
    load_plan,
    parse_frame_rate,
    plan_json_schema,
    plan_to_json,
    save_plan,
    upgrade_plan_data,
)
from aiprod_post.planner import PlannerSettings, plan_source


@pytest.fixture
def plan(example_path) -> ShotPlan:
    return plan_source(example_path, PlannerSettings(fps=Fraction(24000, 1001)))[0]


def test_round_trip_is_lossless(plan, tmp_path: Path):
    path = save_plan(plan, tmp_path / "plan.json")
    again = load_plan(path)
    assert again == plan
    assert plan_to_json(again) == path.read_text()


def test_rate_stays_exactly_24000_over_1001(plan, tmp_path: Path):
    data = json.loads(plan_to_json(plan))
    assert data["fps"] == "24000/1001" and data["schema_version"] == SCHEMA_VERSION
    assert load_plan(save_plan(plan, tmp_path / "p.json")).fps == Fraction(24000, 1001)


@pytest.mark.parametrize("text,rate", [("24", Fraction(24)), ("25", Fraction(25)),
                                       ("30000/1001", Fraction(30000, 1001)),
                                       ("23.976", Fraction(24000, 1001)),
                                       ("29.97", Fraction(30000, 1001)), (50, Fraction(50))])
def test_frame_rates(text, rate):
    assert parse_frame_rate(text) == rate


@pytest.mark.parametrize("bad", ["0", "abc", "1/0", "-24", True, None])
def test_bad_frame_rates(bad):
    with pytest.raises(ValueError):
        parse_frame_rate(bad)


def test_edited_plan_is_fed_back_in(plan, tmp_path: Path):
    data = json.loads(plan_to_json(plan))
    data["scenes"][0]["shots"][1]["framing"] = "close-up"
    data["scenes"][0]["shots"][1]["duration"] = 100
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    edited = load_plan(path)
    shot = edited.scenes[0].shots[1]
    assert shot.framing.value == "close-up" and shot.duration == 100


def _write(tmp_path: Path, data) -> Path:
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def test_missing_field_names_the_json_path(plan, tmp_path: Path):
    data = json.loads(plan_to_json(plan))
    del data["scenes"][1]["shots"][2]["duration"]
    with pytest.raises(PlanError) as err:
        load_plan(_write(tmp_path, data))
    assert "$.scenes[1].shots[2].duration" in str(err.value)
    assert "missing field" in str(err.value) and "plan.json" in str(err.value)


def test_unknown_field_is_refused(plan, tmp_path: Path):
    data = json.loads(plan_to_json(plan))
    data["scenes"][0]["shots"][0]["lens"] = "35mm"
    with pytest.raises(PlanError, match=r"\$\.scenes\[0\]\.shots\[0\]\.lens: unknown field"):
        load_plan(_write(tmp_path, data))


def test_unknown_schema_version(plan, tmp_path: Path):
    data = json.loads(plan_to_json(plan))
    data["schema_version"] = "ShotPlan.99"
    with pytest.raises(PlanError, match="unknown schema version 'ShotPlan.99'"):
        load_plan(_write(tmp_path, data))


def test_invalid_json_names_the_line(tmp_path: Path):
    with pytest.raises(PlanError) as err:
        load_plan(_write(tmp_path, '{\n  "schema_version": "ShotPlan.1",\n  "scenes": [,]\n}'))
    assert err.value.line == 3


def test_upgrade_chain_runs_each_step_in_order(plan):
    # A registry standing in for two future schema changes: .1 is what older
    # files say, the steps rename a field and then drop an obsolete one.
    current = json.loads(plan_to_json(plan))
    old = dict(current, schema_version="ShotPlan.-1", frame_rate=current["fps"], legacy=True)
    del old["fps"]
    calls = []

    def rename_rate(d):
        calls.append("rename")
        d["fps"] = d.pop("frame_rate")
        return d

    def drop_legacy(d):
        calls.append("drop")
        d.pop("legacy")
        return d

    registry = {"ShotPlan.-1": ("ShotPlan.0", rename_rate),
                "ShotPlan.0": (SCHEMA_VERSION, drop_legacy)}
    upgraded = upgrade_plan_data(old, registry)
    assert calls == ["rename", "drop"]
    assert ShotPlan.model_validate(upgraded) == plan


def test_upgrade_refuses_a_cycle():
    registry = {"A": ("B", lambda d: d), "B": ("A", lambda d: d)}
    with pytest.raises(PlanError, match="unknown schema version"):
        upgrade_plan_data({"schema_version": "A"}, registry)


def test_json_schema_describes_the_plan():
    schema = plan_json_schema()
    assert schema["title"] == SCHEMA_VERSION
    assert {"schema_version", "fps", "scenes"} <= set(schema["properties"])
    assert "Shot" in schema["$defs"] and "duration" in schema["$defs"]["Shot"]["required"]


def test_every_front_door_tells_a_plan_by_the_same_rule(tmp_path, example_path):
    """A plan saved without the .json suffix is a plan for `plan` and `render` alike (render
    went by suffix and read it as a screenplay), and --seed on a plan is refused by both
    (render ignored it)."""
    from aiprod_post.plan import is_plan_file

    plan = tmp_path / "cut.plan"
    r = CliRunner().invoke(main, ["plan", str(example_path), "-o", str(plan)])
    assert r.exit_code == 0 and is_plan_file(plan) and not is_plan_file(example_path)
    r = CliRunner().invoke(main, ["render", str(plan), "-o", str(tmp_path / "o"), "--seed", "5",
                                  "--quiet"])
    assert r.exit_code == 2 and "--seed applies when planning a script" in r.output
    r = CliRunner().invoke(main, ["plan", str(plan), "--seed", "5"])
    assert r.exit_code == 2 and "--seed" in r.output
    r = CliRunner().invoke(main, ["validate", str(plan)])
    assert r.exit_code == 0, r.output
