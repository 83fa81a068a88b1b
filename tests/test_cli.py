"""The command line: output, exit codes, and no output file on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from aiprod_post import __version__
from aiprod_post.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_version_and_help_on_every_command():
    assert run("--version").output.strip().endswith(__version__)
    commands = sorted(main.commands)
    assert {"plan", "render", "batch", "export", "conform", "serve"} <= set(commands)
    for cmd in [[]] + [[c] for c in commands]:
        result = run(*cmd, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, (cmd, result.output)
        usage = result.output.splitlines()[0] + " "
        if cmd:  # the command's own help, with its description
            assert f" {cmd[0]} " in usage and main.commands[cmd[0]].help, cmd
        else:
            assert all(c in result.output for c in commands)


def test_plan_table_and_file(example_path, tmp_path: Path):
    out = tmp_path / "sub" / "plan.json"
    result = run("plan", str(example_path), "-o", str(out))
    assert result.exit_code == 0
    header = result.output.splitlines()[0].split()
    assert header[:4] == ["SCENE", "SHOT", "FRAMING", "MOVE"]
    assert "NELL: Ferry's gone" in result.output
    assert json.loads(out.read_text())["title"] == "The Last Ferry"
    assert not list(out.parent.glob(".*tmp"))  # no temporary left behind


def test_plan_json_on_stdout_with_fps(example_path):
    result = run("plan", str(example_path), "--format", "json", "--fps", "24000/1001")
    data = json.loads(result.output)
    assert data["fps"] == "24000/1001"


def test_plan_shows_an_existing_plan(example_path, tmp_path: Path):
    out = tmp_path / "plan.json"
    run("plan", str(example_path), "-o", str(out))
    again = run("plan", str(out))
    assert again.exit_code == 0 and "The Last Ferry: 3 scenes" in again.output


@pytest.mark.parametrize("content,needle", [
    (b"", "empty script"),
    (b"INT. A - DAY\n\n/* open", ":3: unclosed boneyard"),
    (b"INT. A\n\n[[ open", ":3: unclosed note"),
    (b"ok\n\xff\xfe", ":2: not UTF-8"),
])
def test_bad_scripts_exit_2_with_one_line_and_no_output(tmp_path: Path, content, needle):
    src = tmp_path / "bad.fountain"
    src.write_bytes(content)
    out = tmp_path / "plan.json"
    result = run("plan", str(src), "-o", str(out))
    assert result.exit_code == 2
    assert needle in result.output and str(src) in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_file_exits_2(tmp_path: Path):
    result = run("validate", str(tmp_path / "nope.fountain"))
    assert result.exit_code == 2 and "no such file" in result.output


def test_bad_fps_exits_2(example_path):
    result = run("plan", str(example_path), "--fps", "fast")
    assert result.exit_code == 2 and "frame rate" in result.output


def test_validate_script_and_plans(example_path, tmp_path: Path):
    assert run("validate", str(example_path)).exit_code == 0
    out = tmp_path / "plan.json"
    run("plan", str(example_path), "-o", str(out))
    data = json.loads(out.read_text())
    data["scenes"][0]["shots"][2]["conditioning"] = {"keyframe": "establishing", "shot": "9Z"}
    data["scenes"][0]["shots"][3]["dialogue"][0]["speaker"] = "GHOST"
    out.write_text(json.dumps(data))
    result = run("validate", str(out))
    assert result.exit_code == 2
    assert "$.scenes[0].shots[2].conditioning.shot" in result.output
    assert "'GHOST' is not in the cast list" in result.output


def test_validate_plan_with_unknown_version_exits_2(tmp_path: Path):
    p = tmp_path / "p.json"
    p.write_text('{"schema_version": "ShotPlan.7", "scenes": []}')
    result = run("validate", str(p))
    assert result.exit_code == 2 and "unknown schema version" in result.output


def test_validate_warns_with_line_numbers(tmp_path: Path):
    src = tmp_path / "w.fountain"
    src.write_text("INT. A - DAY\n\nRain.\n\nSTEEL ^\nHi.\n\nCUT TO:\n")
    result = run("validate", str(src))
    assert result.exit_code == 0
    assert f"{src}:5: warning: dual dialogue" in result.output
    assert f"{src}:8: warning: transition 'CUT TO:' has no shot after it" in result.output


def test_schema_prints_json_schema():
    data = json.loads(run("schema").output)
    assert data["title"] == "ShotPlan.1"


def test_console_script_is_installed(example_path):
    exe = Path(sys.executable).with_name("aiprod-post")
    result = subprocess.run([str(exe), "plan", str(example_path), "--format", "json"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and json.loads(result.stdout)["scenes"]
    bad = subprocess.run([str(exe), "plan", "/nonexistent/x.fountain"], capture_output=True,
                         text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("aiprod-post: error: ")
