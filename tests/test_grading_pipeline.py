"""The per-shot ASC CDL of a project file through a render: applied before the look,
carried in each clip's OTIO metadata and in a .ccc of every shot beside the exports, and a
colourist's change to it applied by the conform; clips footage in a camera colour space
converted before the look, and 10-bit clips kept above 8 bits into their shots."""

from __future__ import annotations

import json

import av
import numpy as np
import opentimelineio as otio
import pytest

from aiprod_post.errors import AiprodError, MediaError
from aiprod_post.grading.cdl import CDL, read_cdl, write_cdl
from aiprod_post.pipeline import RenderOptions, render
from aiprod_post.project import load_project

SCRIPT = """Title: Grade

EXT. PIER - DAY

Gulls over the water.

NELL
Ferry's gone.
"""
SMALL = dict(width=64, height=48, quiet=True, profiles=["web"])


def mean_rgb(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.mean([f.to_ndarray(format="rgb24").reshape(-1, 3).mean(0)
                        for f in c.decode(video=0)], axis=0)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("cdl")
    (root / "grade.fountain").write_text(SCRIPT)
    plain = render(root / "grade.fountain", root / "plain", RenderOptions(**SMALL))
    assert plain.exit_code == 0
    shots = sorted(p.stem for p in (root / "plain" / "shots").glob("*.mov"))
    write_cdl([CDL("warm", (1.3, 1.0, 0.6), (0.02, 0.0, 0.0), (1.0, 1.0, 1.2), 0.7)],
              root / "warm.cc")
    (root / "project.toml").write_text(f'[looks]\ncdl = {{ "{shots[0]}" = "warm.cc" }}\n')
    result = render(root / "grade.fountain", root / "out",
                    RenderOptions(project=load_project(root / "project.toml"), **SMALL))
    assert result.exit_code == 0
    return root, shots


def test_cdl_is_applied_before_the_look_to_its_shot_only(graded):
    root, shots = graded
    before = mean_rgb(root / "plain" / "shots" / f"{shots[0]}.mov")
    after = mean_rgb(root / "out" / "shots" / f"{shots[0]}.mov")
    assert after[0] - after[2] > before[0] - before[2] + 10  # warmer: red up, blue down
    for other in shots[1:]:
        np.testing.assert_allclose(mean_rgb(root / "out" / "shots" / f"{other}.mov"),
                                   mean_rgb(root / "plain" / "shots" / f"{other}.mov"),
                                   atol=0.01)


def test_each_clip_carries_its_cdl_and_a_ccc_of_every_shot_sits_beside(graded):
    root, shots = graded
    folder = root / "out" / "timeline"
    tl = otio.adapters.read_from_file(str(next(folder.glob("*.otio"))))
    clips = {c.name: c for t in tl.video_tracks() for c in t.find_clips()}
    meta = {k: v if isinstance(v, (str, float)) else list(v)  # OTIO's AnyVector
            for k, v in clips[shots[0]].metadata["aiprod_post"]["cdl"].items()}
    assert meta == {"id": "warm", "slope": [1.3, 1.0, 0.6], "offset": [0.02, 0.0, 0.0],
                    "power": [1.0, 1.0, 1.2], "sat": 0.7}
    for other in shots[1:]:
        assert CDL.from_metadata(clips[other].metadata["aiprod_post"]["cdl"]).is_identity
    ccc = read_cdl(next(folder.glob("*.ccc")))
    assert [c.id for c in ccc] == sorted(shots, key=[c.name for c in clips.values()].index)
    assert ccc[[c.id for c in ccc].index(shots[0])].slope == (1.3, 1.0, 0.6)
    report = json.loads((root / "out" / "report.json").read_text())
    assert any(p.endswith(".ccc") for p in report["timeline"])


def test_a_cdl_for_a_shot_not_in_the_plan_is_an_error(graded, tmp_path):
    root, _ = graded
    (tmp_path / "project.toml").write_text(f'[looks]\ncdl = {{ "9Z" = "{root / "warm.cc"}" }}\n')
    with pytest.raises(AiprodError, match=r"\[looks\] cdl: no shot 9Z"):
        render(root / "grade.fountain", tmp_path / "out",
               RenderOptions(project=load_project(tmp_path / "project.toml"), **SMALL))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_clips_footage_converter_matches_opencolorio_within_one_code(dtype):
    """What `[engine.clips] colourspace` puts before matching and the look: 8-bit frames
    through one table, 16-bit and float ones in float32 (no 8-bit step), each in its own
    depth."""
    ocio = pytest.importorskip("PyOpenColorIO")
    from aiprod_post.grading.colour import CONFIG_NAME, footage_converter, uint8_converter

    assert uint8_converter(None) is None and uint8_converter("rec709") is None
    assert footage_converter(None) is None
    convert = uint8_converter("S-Log3 S-Gamut3.Cine")
    top = 255 if dtype == np.uint8 else 65535
    img = np.random.default_rng(4).integers(0, top + 1, (40, 60, 3)).astype(np.uint16)
    cfg = ocio.Config.CreateFromBuiltinConfig(CONFIG_NAME)
    proc = cfg.getProcessor(ocio.DisplayViewTransform(
        src="S-Log3 S-Gamut3.Cine", display="Rec.1886 Rec.709 - Display",
        view="ACES 1.0 - SDR Video")).getDefaultCPUProcessor()
    x = (img / top).astype(np.float32)
    proc.applyRGB(x.reshape(-1, 3))
    if dtype == np.float32:
        got = convert(img.astype(np.float32) / np.float32(top))
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, x, atol=1e-6)
    else:
        got = convert(img.astype(dtype))
        assert got.dtype == dtype
        theirs = np.round(np.clip(x, 0, 1) * top)
        assert np.abs(got.astype(int) - theirs).max() <= 1
    with pytest.raises(AiprodError, match="unknown colour space 'LogC9'"):
        uint8_converter("LogC9")


def test_clips_in_a_camera_space_are_converted_before_the_look(graded, tmp_path):
    """Flat S-Log3 grey footage for every shot: with `[engine.clips] colourspace` the
    shots come out at OpenColorIO's Rec.709 rendering of that grey (then the look)."""
    ocio = pytest.importorskip("PyOpenColorIO")
    from aiprod_post.grading.apply import apply_lut
    from aiprod_post.grading.colour import CONFIG_NAME
    from aiprod_post.grading.looks import load_look

    root, shots = graded
    footage = tmp_path / "footage"
    footage.mkdir()
    grey = 150  # an S-Log3 code a stop or two over mid grey, 8-bit: renders to about 206
    for sid in shots:
        with av.open(str(footage / f"{sid}.mkv"), "w") as out:
            v = out.add_stream("ffv1", rate=24)
            v.width, v.height, v.pix_fmt = 64, 48, "bgr0"
            vf = av.VideoFrame.from_ndarray(np.full((48, 64, 3), grey, np.uint8), format="rgb24")
            for p in v.encode(vf.reformat(format="bgr0")):
                out.mux(p)
            for p in v.encode():
                out.mux(p)
    (tmp_path / "project.toml").write_text(
        f'[engine]\nname = "clips"\n[engine.clips]\nfolder = "{footage}"\n'
        'colourspace = "S-Log3 S-Gamut3.Cine"\n')
    result = render(root / "grade.fountain", tmp_path / "out",
                    RenderOptions(project=load_project(tmp_path / "project.toml"), **SMALL))
    assert result.exit_code == 0, result.failed_shots
    cfg = ocio.Config.CreateFromBuiltinConfig(CONFIG_NAME)
    x = np.full((1, 3), grey / 255.0, np.float32)
    cfg.getProcessor(ocio.DisplayViewTransform(
        src="S-Log3 S-Gamut3.Cine", display="Rec.1886 Rec.709 - Display",
        view="ACES 1.0 - SDR Video")).getDefaultCPUProcessor().applyRGB(x)
    expected = apply_lut(np.round(x * 255) / 255, load_look("neutral_rec709"))[0] * 255
    got = mean_rgb(tmp_path / "out" / "shots" / f"{shots[0]}.mov")
    assert abs(expected[1] - grey) > 10  # the conversion is a visible change
    np.testing.assert_allclose(got, expected, atol=2.5)


def test_the_cdl_goes_out_in_the_edl_and_a_colourists_change_comes_back(graded):
    """*ASC_SOP / *ASC_SAT remarks under each graded event (the form colourists' tools
    exchange), read with a pattern written from the ASC's EDL form, not our reader; a
    colourist's edit of them comes back on the clip when the EDL is read for a conform."""
    import re

    from aiprod_post.editing.readers import read_edl

    from click.testing import CliRunner

    from aiprod_post.cli import main

    root, shots = graded
    edl = root / "cut.edl"
    r = CliRunner().invoke(main, ["export", str(next((root / "out" / "timeline").glob(
        "*.otio"))), "--format", "edl", "-o", str(edl)])
    assert r.exit_code == 0, r.output
    text = edl.read_text()
    num = r"(-?\d+\.\d+)"
    sops = re.findall(r"^\*ASC_SOP \(" + r" ".join([num] * 3) + r"\)\(" + r" ".join([num] * 3)
                      + r"\)\(" + r" ".join([num] * 3) + r"\)\r?$", text, re.M)
    sats = re.findall(r"^\*ASC_SAT " + num + r"\r?$", text, re.M)
    assert len(sops) == len(sats) >= len(shots)
    warm = [tuple(map(float, s)) for s in sops if float(s[0]) != 1.0]
    assert warm == [(1.3, 1.0, 0.6, 0.02, 0.0, 0.0, 1.0, 1.0, 1.2)]
    assert sorted({float(s) for s in sats}) == [0.7, 1.0]
    # and pycmx, an independent CMX 3600 reader, reads the same grade on the shot's event
    import pycmx

    with open(edl) as fh:
        graded_edits = {ed.clip_name: ed for ev in pycmx.parse_cmx3600(fh).events
                        for ed in ev.edits if ed.asc_sop is not None}
    sop = graded_edits[shots[0]].asc_sop
    assert (sop.slope.red, sop.slope.green, sop.slope.blue) == (1.3, 1.0, 0.6)
    assert (sop.power.blue, graded_edits[shots[0]].asc_sat) == (1.2, 0.7)
    # the colourist warms it further and desaturates: the conform reads it back
    changed = text.replace("*ASC_SOP (1.3000 1.0000 0.6000)", "*ASC_SOP (1.4000 1.0000 0.5000)")
    changed = changed.replace("*ASC_SAT 0.7000", "*ASC_SAT 0.5000")
    assert changed != text
    edited = root / "colourist.edl"
    edited.write_text(changed)
    tl = read_edl(edited, media=[root / "out" / "shots"])
    clips = {c.name: c for c in tl.video_tracks()[0].find_clips()}
    cdl = clips[shots[0]].metadata["aiprod_post"]["cdl"]
    assert list(cdl["slope"]) == [1.4, 1.0, 0.5] and cdl["sat"] == 0.5
    assert all(list(clips[s].metadata["aiprod_post"]["cdl"]["slope"]) == [1.0, 1.0, 1.0]
               for s in shots[1:] if s in clips)
    bad = root / "bad.edl"
    bad.write_text(text.replace("*ASC_SAT 0.7000", "*ASC_SAT lots"))
    with pytest.raises(MediaError, match="ASC_SAT"):
        read_edl(bad, media=[root / "out" / "shots"])


def _decoded(path) -> list[np.ndarray]:
    """Every frame of a master as 16-bit RGB."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb48le") for f in c.decode(video=0)]


def test_the_conform_applies_a_colourists_changed_cdl_to_that_shot_only(graded, tmp_path):
    """A slope changed in an EDL's *ASC_SOP moves that shot's pixels as OpenColorIO's
    CDLTransform says, at 16 bits into the 10-bit master; the other shots (the warm one
    too, whose CDL the render already put under the look) stay bit for bit; the same
    change in the .otio's clip metadata gives the same master; a change to a CDL that
    sits under the look is refused, naming the clip."""
    import re

    from click.testing import CliRunner

    from aiprod_post.cli import main
    from test_grading_deep import write_prores

    ocio = pytest.importorskip("PyOpenColorIO")
    root, shots = graded
    otio_file = next((root / "out" / "timeline").glob("*.otio"))
    edl = tmp_path / "cut.edl"
    runner = CliRunner()
    assert runner.invoke(main, ["export", str(otio_file), "--format", "edl", "-o",
                                str(edl)]).exit_code == 0
    text = edl.read_text()
    clip = re.search(rf"^\* FROM CLIP NAME: {re.escape(shots[1])}\r?$", text, re.M)
    plain = "*ASC_SOP (1.0000 1.0000 1.0000)"
    at = text.index(plain, clip.end())
    changed = tmp_path / "colourist.edl"
    changed.write_text(text[:at] + "*ASC_SOP (1.2500 1.0000 0.8000)" + text[at + len(plain):],
                       newline="")

    def conform(timeline, name, *extra):
        r = runner.invoke(main, ["conform", str(timeline), "-o", str(tmp_path / name),
                                 "--profile", "prores", *extra])
        return r, tmp_path / name

    r, base = conform(edl, "base.mov")
    assert r.exit_code == 0 and "note:" not in r.output, r.output
    r, moved = conform(changed, "moved.mov")
    assert r.exit_code == 0, r.output
    assert f"clip {shots[1]}: its changed CDL is applied" in r.output

    tl = otio.adapters.read_from_file(str(otio_file))
    ranges = {c.name: c.range_in_parent() for c in tl.video_tracks()[0].find_clips()}
    first = int(ranges[shots[1]].start_time.value)
    span = range(first, first + int(ranges[shots[1]].duration.value))
    base_rgb, moved_rgb = _decoded(base), _decoded(moved)
    assert len(base_rgb) == len(moved_rgb)
    for k in range(len(base_rgb)):
        if k not in span:
            np.testing.assert_array_equal(moved_rgb[k], base_rgb[k])
    # the reference: OpenColorIO's CDLTransform (ASC style) on the shot's decoded pixels
    t = ocio.CDLTransform(slope=[1.25, 1.0, 0.8], offset=[0.0] * 3, power=[1.0] * 3, sat=1.0)
    t.setStyle(ocio.CDLStyle.CDL_ASC)
    proc = ocio.Config.CreateRaw().getProcessor(t).getOptimizedCPUProcessor(
        ocio.OPTIMIZATION_LOSSLESS)
    # on the scaler's own 16-bit scale both ways (FFmpeg reads and writes 16-bit RGB with
    # 65280 as full scale: tests/test_deep_levels.py), so no pixel of it is off scale
    def expected(k: int) -> np.ndarray:
        x = (base_rgb[k] / 65280.0).astype(np.float32)
        proc.applyRGB(x.reshape(-1, 3))
        return np.round(np.clip(x, 0.0, 1.0) * 65280).astype(np.uint16)

    # OpenColorIO's result through FFmpeg alone
    reference = write_prores(tmp_path / "reference.mov", map(expected, span), "prores")
    for k, want in zip(span, _decoded(reference)):
        diff = np.abs(moved_rgb[k].astype(int) - want)
        # the same pictures but for the last bit of rounding, which ProRes's rate control
        # may answer with another quantiser in a slice: measured 0.05-0.08 of a 10-bit code
        # on average, at most 5.4 codes, 2-4 % of the values beyond one code
        assert diff.mean() < 16 and diff.max() <= 512 and (diff > 64).mean() < 0.08, \
            (k, diff.mean(), diff.max(), (diff > 64).mean())
        was = base_rgb[k].reshape(-1, 3).mean(0)
        got = moved_rgb[k].reshape(-1, 3).mean(0)
        assert got[0] - was[0] > 2000 and was[2] - got[2] > 2000  # it did move

    # the same change in the .otio's own metadata
    tl2 = otio.adapters.read_from_file(str(otio_file))
    for c in tl2.video_tracks()[0].find_clips():
        if c.name == shots[1]:
            c.metadata["aiprod_post"]["cdl"]["slope"] = [1.25, 1.0, 0.8]
    otio.adapters.write_to_file(tl2, str(tmp_path / "colourist.otio"))
    r, from_otio = conform(tmp_path / "colourist.otio", "otio.mov")
    assert r.exit_code == 0, r.output
    for a, b in zip(_decoded(from_otio), moved_rgb):
        np.testing.assert_array_equal(a, b)

    # the warm shot's CDL is under its look: a change to it is refused, naming the clip
    warm = text.replace("*ASC_SOP (1.3000 1.0000 0.6000)", "*ASC_SOP (1.4000 1.0000 0.5000)")
    assert warm != text
    (tmp_path / "warm.edl").write_text(warm, newline="")
    r, refused = conform(tmp_path / "warm.edl", "refused.mov")
    assert r.exit_code == 2 and f"clip {shots[0]}" in r.output and "[looks] cdl" in r.output
    assert not refused.exists()


def test_a_10bit_clip_keeps_more_than_256_levels_in_its_shots_prores(tmp_path):
    """The clips engine's 16-bit path through a render: a 10-bit ProRes clip of a fine grey
    ramp for every shot, matched and graded in float, comes out in the shot's 10-bit ProRes
    with more than 256 luma levels (an 8-bit step anywhere leaves at most 256)."""
    from test_grading_deep import write_prores

    (tmp_path / "grade.fountain").write_text(SCRIPT)
    footage = tmp_path / "footage"
    footage.mkdir()
    w, h = 1024, 16
    ramp = np.round(np.linspace(0.05, 0.95, w) * 65535).astype(np.uint16)
    rgb = np.ascontiguousarray(np.broadcast_to(ramp[None, :, None], (h, w, 3)))
    plan_shots = ["1", "1A"]
    for sid in plan_shots:
        write_prores(footage / f"{sid}.mov", [rgb] * 4, "prores_ks")
    (tmp_path / "project.toml").write_text(
        f'[engine]\nname = "clips"\n[engine.clips]\nfolder = "{footage}"\n')
    result = render(tmp_path / "grade.fountain", tmp_path / "out",
                    RenderOptions(project=load_project(tmp_path / "project.toml"),
                                  **{**SMALL, "width": w, "height": h}))
    assert result.exit_code == 0, result.failed_shots
    shots = sorted((tmp_path / "out" / "shots").glob("*.mov"))
    assert [p.stem for p in shots] == plan_shots
    for mov in shots:
        with av.open(str(mov)) as c:
            f = next(c.decode(video=0))
            assert f.format.name == "yuv422p10le"
            p = f.planes[0]
            row = np.frombuffer(p, np.uint16).reshape(f.height, p.line_size // 2)[h // 2, :w]
        assert len(np.unique(row)) > 256, (mov.name, len(np.unique(row)))
