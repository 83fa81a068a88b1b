"""The render pipeline end to end at a small size: outputs, caching, edits, resume, batch."""

from __future__ import annotations

import hashlib
import json
import signal
import struct
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from aiprod_post.cli import main
from aiprod_post.errors import AiprodError
from aiprod_post.pipeline import RenderOptions, render
from aiprod_post.project import load_project
from aiprod_post.editing.conform import probe
from aiprod_post.generation.engine import ENGINES

SCRIPT = """Title: Two Lines

EXT. PIER - DUSK

Gulls over the water. NELL waits.

NELL
Ferry's gone.

IVO
Tonight?

DISSOLVE TO:

INT. BOOTH - NIGHT

Rain on the glass.

NELL
(quietly)
Drink up.
"""

SMALL = dict(width=160, height=96, quiet=True)


def write_script(folder: Path, text: str = SCRIPT) -> Path:
    p = folder / "two_lines.fountain"
    p.write_text(text)
    return p


def decoded_digest(path: Path) -> tuple[str, str]:
    """Hashes of the decoded picture and sound: what a viewer gets, not container bytes."""
    v, a = hashlib.sha256(), hashlib.sha256()
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            v.update(frame.to_ndarray(format="rgb24").tobytes())
    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            a.update(frame.to_ndarray().tobytes())
    return v.hexdigest(), a.hexdigest()


def master_digest(path: Path) -> tuple:
    """What two renders of the same inputs must share in a master: its decoded pictures and
    sound (:func:`decoded_digest`), except an H.264 master's pictures. At these tests'
    160x96 libx264 reads memory nothing wrote (tests/test_golden.py, which renders in a
    process of its own for that), and on some pictures (a dissolve's) its bytes then follow
    this process's history: for it, its sound, frame count and keyframes; its pictures are
    the ProRes master's, compared exactly, and within noise in
    test_same_inputs_give_identical_pictures_and_sound."""
    if path.suffix != ".mp4":
        return decoded_digest(path)
    with av.open(str(path)) as c:
        keys = [i for i, p in enumerate(c.demux(video=0)) if p.size and p.is_keyframe]
    with av.open(str(path)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    return "h264", frames, tuple(keys), decoded_digest(path)[1]


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("render")
    script = write_script(folder)
    out = folder / "out"
    result = render(script, out, RenderOptions(**SMALL))
    return script, out, result


def test_layout_masters_and_report(rendered):
    script, out, result = rendered
    assert result.exit_code == 0
    for rel in ["masters/Two_Lines_web.mp4", "masters/Two_Lines_master.mov",
                "timeline/Two_Lines.otio", "timeline/Two_Lines.xml", "timeline/Two_Lines.fcpxml",
                "timeline/Two_Lines.edl", "timeline/plan.json", "audio/DX.wav", "audio/MX.wav",
                "audio/FX.wav", "audio/mix_web.wav", "audio/mix_master.wav",
                "subtitles/Two_Lines.srt", "subtitles/Two_Lines.vtt", "report.html",
                "report.json", "manifest.json", "shots/1.mov", "shots/1.wav"]:
        assert (out / rel).is_file(), rel
    report = json.loads((out / "report.json").read_text())
    web = probe(out / "masters/Two_Lines_web.mp4")
    assert web["video"]["frames"] == report["duration_frames"]
    assert web["video"]["width"] == 160 and web["video"]["codec"] == "h264"
    assert report["loudness"]["web"]["integrated"] == pytest.approx(-14.0, abs=0.1)
    assert report["loudness"]["master"]["integrated"] == pytest.approx(-23.0, abs=0.1)
    html = (out / "report.html").read_text()
    # one contact-sheet thumbnail per shot (the cast section's sheets are files beside it)
    assert html.count("<img src='data:image/jpeg") == len(report["shots"]) and "Loudness" in html
    # picture QA rode along the web encode; decoding the master gives the same findings
    from aiprod_post.grading.qa import qa_video
    ridealong = report["qa"]["web"]
    decoded = qa_video(out / "masters/Two_Lines_web.mp4").as_dict()
    assert "sent to its encoder" in ridealong["measured_on"]
    assert ridealong["frames"] == decoded["frames"] == report["duration_frames"]
    for k in ("black_frames", "flashes"):
        assert ridealong[k] == decoded[k], k
    # a frozen run is identical frames: a codec can break a run up, never make one
    held = {f for a, b in ridealong["frozen_frames"] for f in range(a, b)}
    assert {f for a, b in decoded["frozen_frames"] for f in range(a, b)} <= held
    assert ridealong["levels"]["pass"] == decoded["levels"]["pass"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert "masters/Two_Lines_web.mp4" in manifest["files"]


def test_stems_sum_to_the_mix_before_normalisation(rendered):
    from aiprod_post.audio.io import read_audio
    _, out, _ = rendered
    dx, mx, fx = (read_audio(out / "audio" / f"{s}.wav")[0] for s in ("DX", "MX", "FX"))
    assert dx.shape == mx.shape == fx.shape and np.abs(dx).max() > 0.01


def test_rerun_with_nothing_changed_does_no_work(rendered):
    script, out, _ = rendered
    result = render(script, out, RenderOptions(**SMALL))
    assert sum(result.report["made"].values()) == 0


def test_editing_one_line_redoes_only_what_depends_on_it(rendered, tmp_path):
    script, out, _ = rendered
    import shutil
    work = tmp_path / "out"
    shutil.copytree(out, work, symlinks=True)
    edited = write_script(tmp_path, SCRIPT.replace("Tonight?", "Tonight, then?"))
    result = render(edited, work, RenderOptions(**SMALL))
    made = result.report["made"]
    assert made["speech"] == 1  # that line only
    assert made["generation"] == 1  # the shot it is in
    assert made["mix"] >= 1 and made["masters"] == 2
    assert result.report["cached"]["speech"] == 2 and result.report["cached"]["generation"] >= 4


def test_same_inputs_give_identical_pictures_and_sound(rendered, tmp_path):
    script, out, _ = rendered
    again = render(script, tmp_path / "again", RenderOptions(**SMALL))
    for name in ("web", "master"):
        first = out / "masters" / f"Two_Lines_{name}{'.mp4' if name == 'web' else '.mov'}"
        assert master_digest(first) == master_digest(again.masters[name])
    # the web master's pictures: the same but for libx264's noise (see master_digest)
    for x, y in zip(decoded_frames(out / "masters/Two_Lines_web.mp4"),
                    decoded_frames(again.masters["web"])):
        mse = np.mean((x.astype(float) - y.astype(float)) ** 2)
        assert mse == 0 or 10 * np.log10(255 ** 2 / mse) > 40


def test_a_master_only_run_decodes_its_master_for_picture_qa(rendered, tmp_path):
    script, out, _ = rendered
    # the ProRes master copies the shots' compressed frames, so no encoder saw them
    result = render(script, tmp_path / "m", RenderOptions(**dict(SMALL, profiles=["master"])))
    qa = result.report["qa"]
    assert list(qa) == ["master"] and "decoded" in qa["master"]["measured_on"]
    assert qa["master"]["levels"]["bits"] == 10
    assert qa["master"]["frames"] == result.report["duration_frames"]


def test_a_killed_render_resumes_to_the_same_masters(rendered, tmp_path):
    script, out, _ = rendered
    target = tmp_path / "killed"
    cmd = [sys.executable, "-m", "aiprod_post.cli", "render", str(script), "-o", str(target),
           "--size", "160x96", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill it once some shots are in the cache, before the masters exist
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        shots = list((target / ".cache" / "shots").glob("*.mov")) if (target / ".cache").exists() \
            else []
        if len(shots) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.05)
    # the kill must land mid-render, or this test proves nothing about resuming
    assert proc.poll() is None, "the render ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (target / "masters").exists() or not list((target / "masters").iterdir())
    result = render(script, target, RenderOptions(**SMALL))
    assert result.exit_code == 0
    for name in ("web", "master"):
        assert master_digest(result.masters[name]) == master_digest(
            out / f"masters/Two_Lines_{name}{'.mp4' if name == 'web' else '.mov'}")


def test_a_failing_shot_becomes_a_slate_and_the_run_says_so(tmp_path):
    from aiprod_post.generation.animatic import AnimaticEngine

    class Flaky(AnimaticEngine):
        name = "flaky"

        def render(self, shot, context):
            if shot.id == "1A":
                raise RuntimeError("model fell over")
            return super().render(shot, context)

    ENGINES["flaky"] = Flaky
    try:
        script = write_script(tmp_path)
        result = render(script, tmp_path / "out", RenderOptions(engine="flaky", profiles=["web"],
                                                                **SMALL))
    finally:
        ENGINES.pop("flaky")
    assert result.exit_code == 3
    assert "1A" in result.failed_shots and "model fell over" in result.failed_shots["1A"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["failed_shots"]["1A"]
    assert (tmp_path / "out" / "masters" / "Two_Lines_web.mp4").is_file()


def test_project_file_sets_things_and_refuses_unknown_keys(tmp_path):
    good = tmp_path / "project.toml"
    good.write_text('[output]\nwidth = 320\nheight = 180\nfps = "25"\nprofiles = ["web"]\n'
                    '[characters.NELL]\nvoice = "en-us+f2"\npitch = 70\n')
    project = load_project(good)
    assert project.output.fps == Fraction(25) and project.characters["NELL"].pitch == 70
    bad = tmp_path / "bad.toml"
    bad.write_text("[output]\nwidht = 320\n")
    with pytest.raises(AiprodError) as err:
        load_project(bad)
    assert "output.widht" in str(err.value) and "unknown key" in str(err.value)
    r = CliRunner().invoke(main, ["render", str(write_script(tmp_path)), "-o",
                                  str(tmp_path / "x"), "--project", str(bad)])
    assert r.exit_code == 2 and "widht" in r.output


def test_log_json_and_batch(tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    write_script(scripts)
    (scripts / "empty.fountain").write_text("   \n")
    runner = CliRunner()
    r = runner.invoke(main, ["batch", str(scripts), "-o", str(tmp_path / "b"), "--jobs", "2",
                             "--size", "160x96", "--profile", "web"])
    summary = json.loads((tmp_path / "b" / "batch.json").read_text())
    status = {Path(s["script"]).name: s["status"] for s in summary}
    assert status == {"empty.fountain": "error", "two_lines.fountain": "ok"}
    assert r.exit_code == 2 and "empty script" in r.output
    r = runner.invoke(main, ["render", str(scripts / "two_lines.fountain"), "-o",
                             str(tmp_path / "b" / "two_lines"), "--size", "160x96",
                             "--profile", "web", "--log-json"])
    events = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    assert {e["event"] for e in events} >= {"stage_start", "item", "stage_end"}
    assert all(e["cached"] for e in events if e["event"] == "item")


def test_character_references_reach_the_engine(tmp_path):
    """A reference image in the project conditions the shots its character is in (the
    ltx engine uses it; a recording engine here shows what every engine is given)."""
    import cv2

    from aiprod_post.generation.animatic import AnimaticEngine
    from aiprod_post.generation.engine import register

    seen: dict[str, list[str]] = {}

    @register("recording")
    class Recording(AnimaticEngine):
        name = "recording"

        def render(self, shot, context):
            seen[shot.id] = sorted(k for k in context.keyframes if k.startswith("character:"))
            return super().render(shot, context)

    ref = np.zeros((64, 48, 3), np.uint8)
    ref[:, :, 2] = 200
    cv2.imwrite(str(tmp_path / "nell.png"), ref)
    project = tmp_path / "p.toml"
    project.write_text('[characters.NELL]\nreference = "nell.png"\n')
    opts = dict(SMALL, engine="recording", profiles=["web"], project=load_project(project))
    render(write_script(tmp_path), tmp_path / "out", RenderOptions(**opts))
    with_nell = [k for k, v in seen.items() if v == ["character:NELL"]]
    assert with_nell and all(v in ([], ["character:NELL"]) for v in seen.values())
    project.write_text('[characters.NELL]\nreference = "missing.png"\n')
    with pytest.raises(AiprodError, match=r"\[characters.NELL\] reference: no such image"):
        render(write_script(tmp_path), tmp_path / "out2",
               RenderOptions(**dict(opts, project=load_project(project))))
    ENGINES.pop("recording", None)


def test_a_shot_made_again_under_the_same_timeline_makes_the_master_again(tmp_path):
    """Burn-in changes every shot's picture but not one word of the timeline: the master
    must follow the pictures, not be served from the cache by its timeline."""
    script = write_script(tmp_path)
    out = tmp_path / "out"
    options = dict(SMALL, profiles=["master"])
    render(script, out, RenderOptions(**options))
    otio_before = (out / "timeline" / "Two_Lines.otio").read_text()
    result = render(script, out, RenderOptions(**options, burn_in=True))
    assert (out / "timeline" / "Two_Lines.otio").read_text() == otio_before
    assert result.report["made"]["masters"] == 1
    with av.open(str(out / "masters" / "Two_Lines_master.mov")) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    with av.open(str(out / "shots" / "1.mov")) as c:
        shot = next(c.decode(video=0)).to_ndarray(format="rgb24")
    np.testing.assert_array_equal(first, shot)  # the burnt-in shot, copied into the master


def test_web_master_in_parallel_segments_is_the_same_film(tmp_path):
    """``[output] workers = 2``: the web master is encoded as closed-GOP segments by two
    processes and joined; it passes its probe check (frames, GOP, keyframes, VBV), its
    picture QA is measured on the decoded master, and its pictures are those of the
    single-process master within CRF noise."""
    script = write_script(tmp_path)
    outs = {}
    for workers in (1, 2):
        project = tmp_path / f"p{workers}.toml"
        project.write_text(f'[output]\nprofiles = ["web"]\nworkers = {workers}\n')
        out = tmp_path / f"w{workers}"
        result = render(script, out, RenderOptions(project=load_project(project), **SMALL))
        assert result.exit_code == 0
        outs[workers] = (result.masters["web"], result.report)
    (one, _), (two, report) = outs[1], outs[2]
    assert report["master_checks"]["web"]["ok"], report["master_checks"]["web"]["problems"]
    assert report["qa"]["web"]["measured_on"].endswith("decoded")
    # the report names the engine as the registry describes it
    assert report["engine"]["description"].startswith("previz") and not report["engine"]["gpu"]

    def frames(path):
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgb24").astype(np.float64) for f in c.decode(video=0)]

    a, b = frames(one), frames(two)
    assert len(a) == len(b)
    mse = np.mean([np.mean((x - y) ** 2) for x, y in zip(a, b)])
    assert 10 * np.log10(255 ** 2 / max(mse, 1e-9)) > 35


def test_hdr_deliveries_come_from_a_render(rendered, tmp_path):
    """hdr10 and hlg are delivery profiles like the others: a render makes an HEVC Main 10
    master tagged BT.2020 with PQ (or HLG), its mix at the profile's loudness (hdr10:
    -24 LKFS, -2 dBTP), its GOP checked by the probe. The animatic's SDR pictures are
    placed with diffuse white at BT.2408's 203 cd/m²: the PQ master's luma is what
    colour-science's ST 2084 makes of the ProRes master's pictures."""
    import colour

    from aiprod_post.audio.io import read_audio
    from aiprod_post.audio.loudness import measure
    from aiprod_post.scaler import rgb24

    script, out, _ = rendered
    result = render(script, tmp_path / "h", RenderOptions(**dict(SMALL,
                                                                 profiles=["hdr10", "hlg"])))
    frames = result.report["duration_frames"]
    # picture QA's checks (EBU R103 levels, BT.1702 flashes) are SDR's: not run on PQ/HLG
    assert not result.report.get("qa") and "HDR ones only" in result.report["qa_note"]
    assert "HDR ones only" in (tmp_path / "h" / "report.html").read_text()
    for name, trc in (("hdr10", 16), ("hlg", 18)):
        m = result.masters[name]
        with av.open(str(m)) as c:
            cc = c.streams.video[0].codec_context
            assert (cc.name, cc.format.name, cc.profile) == ("hevc", "yuv420p10le", "Main 10")
            decoded = list(c.decode(video=0))
        assert len(decoded) == frames
        assert (int(decoded[0].color_primaries), int(decoded[0].color_trc),
                int(decoded[0].colorspace)) == (9, trc, 9)
        assert result.report["master_checks"][name]["ok"], result.report["master_checks"][name]
        sound, rate = read_audio(m)
        loud = measure(sound, rate)
        target = {"hdr10": (-24.0, -2.0), "hlg": (-23.0, -1.0)}[name]
        assert loud.integrated == pytest.approx(target[0], abs=0.2)
        assert loud.true_peak <= target[1] + 0.05
    # the PQ master's pictures against the SDR master's, placed by the formulas
    with av.open(str(out / "masters" / "Two_Lines_master.mov")) as c:
        sdr = [rgb24(f) for i, f in zip(range(12), c.decode(video=0))][-1]
    with av.open(str(result.masters["hdr10"])) as c:
        pq = [f for i, f in zip(range(12), c.decode(video=0))][-1]
    light = (sdr / 255.0) ** 2.4 * 203.0  # BT.1886 display light, white at 203 cd/m²
    rgb2020 = colour.RGB_to_RGB(light, colour.RGB_COLOURSPACES["ITU-R BT.709"],
                                colour.RGB_COLOURSPACES["ITU-R BT.2020"])
    code = colour.models.eotf_inverse_ST2084(np.clip(rgb2020, 0, None))
    y = code @ np.array([0.2627, 0.6780, 0.0593])  # BT.2020's non-constant luminance
    expected = 64 + 876 * y
    luma = pq.to_ndarray(format="yuv420p10le")[:pq.height].astype(float)
    assert abs(luma.mean() - expected.mean()) < 1.5
    assert np.abs(luma - expected).mean() < 4  # x265 at CRF 18 on a 160x96 picture
    # HDR10's static metadata (SEI, read back by FFmpeg's decoder): the mastering display
    # (P3-D65, 1000 cd/m²) and the content light levels, as measured here on every frame
    # of the SDR master placed the same way (colour-science's BT.2020 conversion)
    with av.open(str(result.masters["hdr10"])) as c:
        side = {sd.type.name: bytes(memoryview(sd)) for sd in next(c.decode(video=0)).side_data}
        assert c.streams.video[0].codec_tag == "hvc1"  # what QuickTime and Apple play
    max_cll, max_fall = struct.unpack("<II", side["CONTENT_LIGHT_LEVEL"])
    rationals = struct.unpack("<20i", side["MASTERING_DISPLAY_METADATA"][:80])
    ratio = [rationals[i] / rationals[i + 1] for i in range(0, 20, 2)]
    assert ratio[:8] == pytest.approx([0.680, 0.320, 0.265, 0.690, 0.150, 0.060,
                                       0.3127, 0.3290], abs=1e-4)  # R, G, B, white
    assert ratio[8:] == pytest.approx([0.0001, 1000.0])  # black and peak, cd/m²
    cll = fall = 0.0
    with av.open(str(out / "masters" / "Two_Lines_master.mov")) as c:
        for f in c.decode(video=0):
            nits = colour.RGB_to_RGB((rgb24(f) / 255.0) ** 2.4 * 203.0,
                                     colour.RGB_COLOURSPACES["ITU-R BT.709"],
                                     colour.RGB_COLOURSPACES["ITU-R BT.2020"]).max(axis=-1)
            cll, fall = max(cll, nits.max()), max(fall, nits.mean())
    assert 100 < cll <= 203.5  # the animatic's brightest pixel: below diffuse white
    assert abs(max_cll - cll) <= 1.5 and abs(max_fall - fall) <= 1.5, (max_cll, cll,
                                                                         max_fall, fall)
