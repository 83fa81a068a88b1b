"""Ids and names from data never make a path outside their folder (issue 14, item 1).

Shot, scene and line ids become file names (``shots/3A.mov``, ``audio/lines/3.4.wav``);
they come from Fountain scene numbers (``#12A#``) or straight from a plan's JSON. These
tests take the attacker's path: the script or plan a user (or a service client) sends.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from aiprod_post.cli import main
from aiprod_post.errors import PathError, PlanError, ScriptError
from aiprod_post.files import inside
from aiprod_post.plan import id_problem, load_plan, plan_from_data
from aiprod_post.planner import plan_bytes

def plan_text(text: str):
    return plan_bytes(text.encode())[0]


SCRIPT = """Title: Ids

INT. ROOM - DAY {number}

Rain on the glass.

NELL
Drink up.
"""


def _plan_data(tmp_path: Path) -> dict:
    script = tmp_path / "ok.fountain"
    script.write_text(SCRIPT.format(number="#7#"))
    out = tmp_path / "ok.json"
    result = CliRunner().invoke(main, ["plan", str(script), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


@pytest.mark.parametrize("number", ["/srv/elsewhere/y", "../../../other-job/out/shots/1",
                                    "..", "a/b", "a\\b", "x" * 49, "-1", "1.", "3..4"])
def test_a_scene_number_that_names_a_path_is_refused_at_its_line(tmp_path, number):
    script = tmp_path / "bad.fountain"
    script.write_text(SCRIPT.format(number=f"#{number}#"))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["render", str(script), "-o", str(out), "--size", "160x96",
                                       "--quiet"])
    assert result.exit_code == 2, result.output
    assert f"{script}:3:" in result.output and "not a safe id" in result.output
    # nothing was written anywhere: not the target, not a finished-looking output folder
    assert not (out / "masters").exists() and not (out / "shots").exists()
    assert not Path("/srv/elsewhere/y.mov").exists()


@pytest.mark.parametrize("number", ["12A", "I-1-A", "110", "1.1", "A_2"])
def test_fountain_scene_numbers_that_are_names_still_plan(number):
    plan = plan_text(SCRIPT.format(number=f"#{number}#"))
    assert plan.scenes[0].id == number
    assert all(id_problem(sh.id) is None for _, sh in plan.shots())


@pytest.mark.parametrize("where, value", [
    (("scenes", 0, "shots", 0, "id"), "../../x"),
    (("scenes", 0, "shots", 0, "id"), "/etc/passwd"),
    (("scenes", 0, "shots", 0, "id"), "a\x00b"),
    (("scenes", 0, "shots", 0, "id"), ""),
    (("scenes", 0, "shots", "with-dialogue", "dialogue", 0, "id"), "../lines"),
    (("scenes", 0, "id"), "x" * 65),
])
def test_a_plan_with_an_unsafe_id_is_refused_naming_the_field(tmp_path, where, value):
    data = _plan_data(tmp_path)
    talking = next(i for i, sh in enumerate(data["scenes"][0]["shots"]) if sh.get("dialogue"))
    where = tuple(talking if k == "with-dialogue" else k for k in where)
    node = data
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    with pytest.raises(PlanError) as err:
        plan_from_data(data)
    path = "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in where)
    assert err.value.where == path


def test_duplicate_ids_in_a_plan_are_refused_case_insensitively(tmp_path):
    data = _plan_data(tmp_path)
    shots = data["scenes"][0]["shots"]
    twin = json.loads(json.dumps(shots[0]))
    twin["id"] = shots[0]["id"].lower() + "a"  # "7a" beside a "7A"
    shots.append(twin)
    shots[0]["id"] = shots[0]["id"] + "A"
    bad = tmp_path / "twin.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(PlanError, match="used twice"):
        load_plan(bad)
    result = CliRunner().invoke(main, ["render", str(bad), "-o", str(tmp_path / "o"),
                                       "--quiet"])
    assert result.exit_code == 2 and "used twice" in result.output


def test_scene_numbers_that_collide_with_a_shot_letter_are_an_error():
    # scene 3's second shot is 3A; a scene numbered 3a would write the same files
    text = ("INT. A - DAY #3#\n\nNELL\nOne.\n\nIVO\nTwo.\n\nNELL\nThree.\n\nIVO\nFour.\n\n"
            "INT. B - DAY #3a#\n\nRain.\n")
    with pytest.raises(ScriptError, match="shot id '3a' is used twice"):
        plan_text(text)


def test_inside_refuses_every_escape(tmp_path):
    root = tmp_path / "job"
    (root / "shots").mkdir(parents=True)
    outside = tmp_path / "other"
    outside.mkdir()
    (root / "shots" / "planted.mov").symlink_to(outside / "x.mov")
    (root / "linkdir").symlink_to(outside)
    assert inside(root, "shots", "3A.mov") == root / "shots" / "3A.mov"
    for parts in [("..", "x"), ("shots", "../../x"), ("/etc/passwd",), ("shots", ""),
                  ("a\x00b",), ("shots", "planted.mov"), ("linkdir", "x.mov"), (".",)]:
        with pytest.raises(PathError):
            inside(root, *parts)


@settings(max_examples=400, deadline=None)
@given(st.text(min_size=0, max_size=40))
def test_inside_never_returns_a_path_outside_its_folder(tmp_path_factory, name):
    root = tmp_path_factory.getbasetemp() / "fuzz-root"
    root.mkdir(exist_ok=True)
    try:
        p = inside(root, "shots", name)
    except PathError:
        return
    resolved = os.path.realpath(p)
    assert resolved.startswith(os.path.realpath(root) + os.sep)


@settings(max_examples=400, deadline=None)
@given(st.text(min_size=1, max_size=70))
def test_every_id_the_schema_accepts_is_a_plain_file_name(value):
    if id_problem(value) is None:
        assert "/" not in value and "\\" not in value and "\x00" not in value
        assert value not in (".", "..") and not value.startswith((".", "-"))
