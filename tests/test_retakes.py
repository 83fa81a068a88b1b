"""Retakes: one shot made again with another seed, its takes kept, listed and chosen."""

from __future__ import annotations

import doctest
import hashlib
import json
from pathlib import Path

import av
import httpx
import numpy as np
import opentimelineio as otio
import pytest
from click.testing import CliRunner

from aiprod_post import takes as takes_module
from aiprod_post.cli import main
from aiprod_post.errors import AiprodError
from aiprod_post.pipeline import RenderOptions, render
from aiprod_post.plan import plan_to_json
from aiprod_post.planner import PlannerSettings, plan_source
from test_pipeline import SCRIPT  # two scenes, five shots

SHOT = "1A"  # a shot between two plain cuts, handheld: the animatic's shake follows its seed
SEED = 4242


def frames_of(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def write_plan(folder: Path, seed_of_shot: int | None = None) -> Path:
    """The script planned at 160x96 with SHOT handheld (and given ``seed_of_shot``)."""
    script = folder / "two_lines.fountain"
    script.write_text(SCRIPT)
    plan, _ = plan_source(script, PlannerSettings(width=160, height=96))
    data = json.loads(plan_to_json(plan))
    for scene in data["scenes"]:
        for shot in scene["shots"]:
            if shot["id"] == SHOT:
                shot["camera_move"] = "handheld"
                if seed_of_shot is not None:
                    shot["seed"] = seed_of_shot
    path = folder / "plan.json"
    path.write_text(json.dumps(data))
    return path


def cut_of(out: Path, shot_id: str) -> tuple[int, int, int]:
    """(first frame of the shot on the film, its head handle, its length), from the plan the
    render wrote and its timeline."""
    tl = otio.adapters.read_from_file(str(next((out / "timeline").glob("*.otio"))))
    start = 0
    for clip in tl.video_tracks()[0].find_clips():
        if clip.name == shot_id:
            return start, int(clip.source_range.start_time.value), \
                int(clip.source_range.duration.value)
        start += int(clip.source_range.duration.value)
    raise AssertionError(f"no clip {shot_id}")


@pytest.fixture(scope="module")
def retaken(tmp_path_factory):
    folder = tmp_path_factory.mktemp("retake")
    plan = write_plan(folder)
    out = folder / "out"
    first = render(plan, out, RenderOptions(profiles=["master"], quiet=True))
    assert first.exit_code == 0
    before = {"shot": sha(out / "shots" / f"{SHOT}.mov"),
              "master": sha(out / "masters" / "Two_Lines_master.mov")}
    r = cli("retake", out, SHOT, "--seed", SEED, "--note", "more shake", "--quiet")
    assert r.exit_code == 0, r.output
    # the same plan with the shot's seed given directly, rendered in a folder of its own
    direct = folder / "direct"
    direct.mkdir()
    render(write_plan(direct, SEED), direct / "out", RenderOptions(profiles=["master"],
                                                                   quiet=True))
    return out, before, direct / "out"


def test_retake_renders_only_that_shot_and_keeps_the_first_take(retaken):
    out, before, _ = retaken
    report = json.loads((out / "report.json").read_text())
    assert report["made"]["generation"] == 1 and report["cached"]["generation"] == 4
    assert [s["id"] for s in report["shots"] if not s["cached"]] == [SHOT]
    t1, t2 = out / "shots" / f"{SHOT}_t1.mov", out / "shots" / f"{SHOT}_t2.mov"
    assert sha(t1) == before["shot"]  # the earlier take, kept as it was
    assert sha(out / "shots" / f"{SHOT}.mov") == sha(t2)
    assert sha(out / "masters" / "Two_Lines_master.mov") != before["master"]
    takes = json.loads((out / "takes.json").read_text())["shots"][SHOT]
    assert takes["chosen"] == 2
    assert [(t["take"], t["note"]) for t in takes["takes"]] == [(1, None), (2, "more shake")]
    assert takes["takes"][1]["seed"] == SEED


def test_new_take_is_a_direct_render_with_its_seed(retaken):
    out, _, direct = retaken
    t1 = frames_of(out / "shots" / f"{SHOT}_t1.mov")
    t2 = frames_of(out / "shots" / f"{SHOT}_t2.mov")
    assert t1.shape == t2.shape
    assert np.abs(t1.astype(int) - t2.astype(int)).mean() > 1.0  # another shake
    np.testing.assert_array_equal(t2, frames_of(direct / "shots" / f"{SHOT}.mov"))


def test_master_over_the_shot_is_the_chosen_take(retaken):
    out, _, _ = retaken
    start, head, length = cut_of(out, SHOT)
    master = frames_of(out / "masters" / "Two_Lines_master.mov")
    take = frames_of(out / "shots" / f"{SHOT}_t2.mov")
    np.testing.assert_array_equal(master[start:start + length], take[head:head + length])
    assert not np.array_equal(master[start:start + length],
                              frames_of(out / "shots" / f"{SHOT}_t1.mov")[head:head + length])


def test_timeline_carries_the_takes(retaken):
    out, _, _ = retaken
    tl = otio.adapters.read_from_file(str(out / "timeline" / "Two_Lines.otio"))
    clips = {c.name: c for c in tl.video_tracks()[0].find_clips()}
    meta = clips[SHOT].metadata["aiprod_post"]
    assert meta["take"] == 2 and meta["seed"] == SEED
    listed = {t["take"]: t for t in meta["takes"]}
    assert sorted(listed) == [1, 2] and listed[2]["chosen"] and not listed[1]["chosen"]
    for n, t in listed.items():
        assert Path(t["target_url"]).resolve() == (out / "shots" / f"{SHOT}_t{n}.mov").resolve()
    assert sha(Path(clips[SHOT].media_reference.target_url)) == sha(
        Path(listed[2]["target_url"]))
    assert "takes" not in clips["1"].metadata["aiprod_post"]  # one take: nothing to list


def test_report_shows_the_takes_side_by_side(retaken):
    out, _, _ = retaken
    page = (out / "report.html").read_text()
    section = page.split("<h2>Takes</h2>", 1)[1].split("<h2>", 1)[0]
    assert section.count("<img src='data:image/jpeg;base64,") == 2
    assert f"shots/{SHOT}_t1.mov" in section and "more shake" in section
    assert "class=chosen" in section.split(f"{SHOT} take 2")[0].rsplit("<figure", 1)[1]


def test_take_chooses_the_first_take_again_from_the_cache(retaken):
    out, before, _ = retaken
    r = cli("take", out, SHOT, "1", "--quiet")
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["made"]["generation"] == 0
    assert sha(out / "shots" / f"{SHOT}.mov") == before["shot"]
    start, head, length = cut_of(out, SHOT)
    np.testing.assert_array_equal(
        frames_of(out / "masters" / "Two_Lines_master.mov")[start:start + length],
        frames_of(out / "shots" / f"{SHOT}_t1.mov")[head:head + length])
    assert json.loads((out / "takes.json").read_text())["shots"][SHOT]["chosen"] == 1


@pytest.mark.parametrize("args, needle", [
    (["retake", "{out}", "9Z"], "no shot '9Z'"),
    (["take", "{out}", SHOT, "7"], f"shot {SHOT} has takes 1, 2, not 7"),
    (["take", "{out}", "1", "2"], "shot 1 has take 1, not 2"),
    (["retake", "{out}", SHOT, "--seed", str(SEED)], f"take 2 of shot {SHOT} has seed {SEED}"),
    (["retake", "{out}", SHOT, "--seed", "5", "--new-seed"], "--seed N or --new-seed"),
    (["retake", "{out}", SHOT, "--note", "x" * 600], "--note: 600 characters"),
    (["retake", "{out}", "../1"], "no shot '../1'"),
    (["retake", "{tmp}", SHOT], "not a render folder"),
    (["take", "{tmp}/nowhere", SHOT, "1"], "not a render folder"),
])
def test_bad_input_exits_2_naming_it(retaken, tmp_path, args, needle):
    out, _, _ = retaken
    takes_before = (out / "takes.json").read_bytes()
    r = cli(*[a.format(out=out, tmp=tmp_path) for a in args])
    assert r.exit_code == 2, r.output
    assert needle in r.output and r.output.count("\n") == 1
    assert (out / "takes.json").read_bytes() == takes_before


@pytest.mark.parametrize("record, needle", [
    ({"source_sha256": "0" * 64}, "changed since this folder was rendered"),
    ({"source": "/nowhere/two_lines.json"}, "source /nowhere/two_lines.json is gone"),
    ({"project": {"output": {"widht": 320}}}, "render.json: project.output.widht"),
])
def test_retake_refuses_a_record_it_cannot_rerun(tmp_path, record, needle):
    plan = write_plan(tmp_path)
    out = tmp_path / "out"
    (out / "timeline").mkdir(parents=True)
    (out / "timeline" / "plan.json").write_text(plan.read_text())
    takes_module.save_render_record(out, takes_module.RenderRecord(**{
        "source": str(plan), "source_sha256": sha(plan), **record}))
    r = cli("retake", out, SHOT)
    assert r.exit_code == 2 and needle in r.output, r.output
    assert not (out / "takes.json").exists()


@pytest.mark.parametrize("take, needle", [
    ({"take": 1, "seed": "7"}, "take 1: expected a take number from 1, a seed"),
    ({"take": 1, "seed": 2**31}, "take 1: expected"),
    ({"take": 0, "seed": 7}, "take 0: expected"),
])
def test_a_takes_file_edited_by_hand_is_checked(tmp_path, take, needle):
    (tmp_path / "takes.json").write_text(json.dumps({"schema": "Takes.1", "shots": {
        "1A": {"chosen": take["take"], "takes": [take]}}}))
    with pytest.raises(AiprodError, match=needle) as exc:
        takes_module.load_takes(tmp_path)
    assert "takes.json" in str(exc.value)


def test_the_render_record_gives_back_every_option(tmp_path):
    """A retake reruns the render with the options it was made with: each one (a new
    option that the record does not carry fails here)."""
    import dataclasses
    from fractions import Fraction

    from aiprod_post.stages.context import new_context
    from aiprod_post.stages.report import record
    from aiprod_post.project import load_project
    from aiprod_post.retakes import options_of

    (tmp_path / "project.toml").write_text('[output]\nprofiles = ["web"]\n'
                                           '[looks]\nscene = { "1" = "noir" }\n')
    cast = tmp_path / "cast.toml"
    plan = write_plan(tmp_path)
    given = RenderOptions(engine="animatic", profiles=["web", "master"],
                          project=load_project(tmp_path / "project.toml"),
                          fps=Fraction(24000, 1001), width=320, height=180, seed=3,
                          burn_in=True, cast=cast, executor="local", address="auto",
                          cache=str(tmp_path / "shared cache"))
    takes_module.save_render_record(tmp_path, record(new_context(plan, tmp_path, given)))
    (tmp_path / "timeline").mkdir()
    (tmp_path / "timeline" / "plan.json").write_text(plan.read_text())
    back = options_of(takes_module.load_render_record(tmp_path), quiet=True)
    for f in dataclasses.fields(RenderOptions):
        if f.name not in ("quiet", "log_json", "project"):
            assert getattr(back, f.name) == getattr(given, f.name), f.name
    assert back.project == given.project
    assert Path(back.project.root).resolve() == tmp_path.resolve()


def test_takes_doctests():
    assert doctest.testmod(takes_module).failed == 0


def test_retakes_through_the_api(tmp_path):
    from test_service import SCRIPT as ONE_SCENE, Server, auth, token, wait

    alice, _ = token(tmp_path, "alice")
    bob, _ = token(tmp_path, "bob")
    server = Server(tmp_path).start()
    try:
        r = httpx.post(server.url + "/v1/jobs", headers=auth(alice), timeout=30, json={
            "script": ONE_SCENE, "profiles": ["web"], "width": 160, "height": 96})
        job = r.json()["id"]
        # not ended yet: its render holds the folder
        early = httpx.post(f"{server.url}/v1/jobs/{job}/retakes", headers=auth(alice),
                           json={"shot": "1A"})
        assert early.status_code == 409, early.text
        assert wait(server, alice, job)["state"] == "succeeded"
        out = tmp_path / "jobs" / job / "out"
        first = sha(out / "shots" / "1A.mov")
        r = httpx.post(f"{server.url}/v1/jobs/{job}/retakes", headers=auth(alice), json={
            "shot": "1A", "seed": SEED, "prompt_extra": "wind in her hair", "note": "windier"})
        assert r.status_code == 202, r.text
        assert r.json()["state"] == "queued" and r.json()["take"]["take"] == 2
        assert wait(server, alice, job)["state"] == "succeeded"
        report = json.loads((out / "report.json").read_text())
        assert [s["id"] for s in report["shots"] if not s["cached"]] == ["1A"]
        assert report["takes"]["1A"]["chosen"] == 2
        assert sha(out / "shots" / "1A_t1.mov") == first
        plan = json.loads((out / "timeline" / "plan.json").read_text())
        shot = plan["scenes"][0]["shots"][1]
        assert shot["seed"] == SEED and shot["action"].endswith("wind in her hair")
        for body, path, code, needle in [
            ({"take": 3}, "1A", 400, "has takes 1, 2, not 3"),
            ({"take": 1}, "9Z", 404, "no shot '9Z'"),
            ({"take": "1"}, "1A", 400, "take:"),
        ]:
            bad = httpx.put(f"{server.url}/v1/jobs/{job}/shots/{path}/take",
                            headers=auth(alice), json=body)
            assert bad.status_code == code and needle in bad.json()["detail"], bad.text
        other = httpx.put(f"{server.url}/v1/jobs/{job}/shots/1A/take", headers=auth(bob),
                          json={"take": 1})
        assert other.status_code == 404  # another token's job is not there
        r = httpx.put(f"{server.url}/v1/jobs/{job}/shots/1A/take", headers=auth(alice),
                      json={"take": 1})
        assert r.status_code == 202, r.text
        assert wait(server, alice, job)["state"] == "succeeded"
        report = json.loads((out / "report.json").read_text())
        assert report["made"]["generation"] == 0 and report["takes"]["1A"]["chosen"] == 1
        assert sha(out / "shots" / "1A.mov") == first
    finally:
        server.kill()


def test_a_takes_hdr_picture_is_kept_beside_it(tmp_path):
    """A shot with an HDR picture (shots/1A.hdr.mkv, the ltx2 engine's HDR LoRA): its first
    retake keeps that picture beside the first take (shots/1A_t1.hdr.mkv) as it keeps the
    SDR one, where an HDR conform of a timeline on take 1 looks for it (conform's
    intermediate_for; the ltx2 HDR tests conform such a shot)."""
    from aiprod_post.hdr import intermediate_for
    from aiprod_post.plan import plan_from_data
    from aiprod_post.takes import add_take, take_file

    plan = plan_from_data({"schema_version": "ShotPlan.1", "scenes": [{
        "id": "1", "heading": "EXT. PIER", "shots": [
            {"id": "1A", "framing": "wide", "duration": 24, "seed": 7, "action": "Gulls."}]}]})
    shots = tmp_path / "shots"
    shots.mkdir()
    (shots / "1A.mov").write_bytes(b"sdr picture")
    (shots / "1A.hdr.mkv").write_bytes(b"hdr picture")
    add_take(tmp_path, plan, "1A", seed=99)
    first = take_file(tmp_path, "1A", 1)
    assert first.read_bytes() == b"sdr picture"
    assert intermediate_for(first) == shots / "1A_t1.hdr.mkv"
    assert intermediate_for(first).read_bytes() == b"hdr picture"
