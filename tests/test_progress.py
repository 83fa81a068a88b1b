"""Progress that never sits still (issue 22): the masters stage counts frames per master,
generation counts frames within each shot, the mix counts seconds of audio; a log gets a
line at most every few seconds, --log-json machine-readable events."""

from __future__ import annotations

import json
import time

from click.testing import CliRunner

from aiprod_post.cli import main
from aiprod_post.pipeline import Reporter
from aiprod_post.plan import load_plan

SCRIPT = """Title: Progress

EXT. PIER - DUSK

Gulls over the water. NELL waits.

NELL
The ferry's gone.

IVO
Tonight?

INT. BOOTH - NIGHT

NELL
Drink up.
"""


def _render(tmp_path, *flags):
    script = tmp_path / "p.fountain"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = CliRunner().invoke(main, ["render", str(script), "-o", str(out), "--size", "160x96",
                                  *flags])
    assert r.exit_code == 0, r.output
    return r, out, time.monotonic() - t0


def test_every_stage_reports_movement_as_json_events(tmp_path):
    r, out, _ = _render(tmp_path, "--log-json")
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    progress = [e for e in events if e["event"] == "progress"]
    plan = load_plan(out / "timeline" / "plan.json")
    # masters: frames per master, ending on the film's length, with a rate and time left
    for name in ("web", "master"):
        mine = [e for e in progress if e["stage"] == "masters" and e["item"] == name]
        if name == "master" and not mine:
            continue  # plain ProRes cuts are copied, not encoded frame by frame
        assert mine and mine[-1]["done"] == mine[-1]["total"] == plan.duration
        assert all(e["unit"] == "frames" and "eta" in e and "rate" in e for e in mine)
        assert [e["done"] for e in mine] == sorted(e["done"] for e in mine)
    # generation: every shot's frames counted to its end (handles included)
    gen = {e["item"]: e for e in progress if e["stage"] == "generation"}
    for _, shot in plan.shots():
        assert gen[shot.id]["done"] == gen[shot.id]["total"] >= shot.duration
    # the mix moves in seconds of audio
    mix = [e for e in progress if e["stage"] == "mix"]
    assert {e["unit"] for e in mix} == {"s of audio"}
    assert {"stems", "mix web", "mix master"} <= {e["item"] for e in mix}
    # events are ordered in time and stages open and close in pairs
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)
    starts = [e["stage"] for e in events if e["event"] == "stage_start"]
    ends = [e["stage"] for e in events if e["event"] == "stage_end"]
    assert starts == ends and "masters" in starts


def test_a_log_gets_a_line_every_few_seconds_not_one_per_item(tmp_path, capsys):
    rep = Reporter()
    assert not rep._tty  # pytest's stderr is not a terminal
    rep.stage("masters", 1)
    for i in range(1, 1001):
        rep.progress("web", i, 1000)
    for i in range(1, 51):
        rep.item(f"shot{i}", i, 50, cached=False)
    rep.end_stage()
    lines = capsys.readouterr().err.splitlines()
    # within one run of well under LOG_EVERY seconds: the first line, each item's final
    # line, the stage's last item and its summary - not 1,050 lines
    assert len(lines) <= 4, lines
    assert lines[-1].strip().startswith("masters done in")
    assert any("1000/1000 frames" in line for line in lines)


def test_a_stage_that_waits_still_shows_it_is_alive(capsys):
    """Between counted movements (a model loading, a long filter pass) a heartbeat says
    which stage and item is working and for how long: its clock moves, its counts don't."""
    import io

    events = io.StringIO()
    rep = Reporter(log_json=True)
    rep.events = events
    rep.stage("generation", 3)
    rep.item("1", 1, 3, cached=False)
    time.sleep(3.5)  # nothing happens
    rep.end_stage()
    beats = [json.loads(line) for line in events.getvalue().splitlines()
             if json.loads(line)["event"] == "heartbeat"]
    assert len(beats) >= 2
    assert all(b["stage"] == "generation" and b["item"] == "1" for b in beats)
    assert [b["elapsed"] for b in beats] == sorted(b["elapsed"] for b in beats)
    assert beats[-1]["elapsed"] > beats[0]["elapsed"] + 0.5
    # the stage ended: no heartbeat after its end
    after = events.getvalue().splitlines()[-1]
    assert json.loads(after)["event"] == "stage_end"


def test_a_failed_render_leaves_no_heartbeat_behind(tmp_path):
    """A render that stops mid-stage (here: bad input in its plan stage) must stop its
    heartbeat thread, or it writes into whatever stderr comes next."""
    import threading

    bad = tmp_path / "bad.fountain"
    bad.write_text("INT. A - DAY #../x#\n\nNELL\nHi.\n")
    r = CliRunner().invoke(main, ["render", str(bad), "-o", str(tmp_path / "o"), "--log-json"])
    assert r.exit_code == 2
    assert not [t for t in threading.enumerate() if t.name == "aiprod-progress"]
