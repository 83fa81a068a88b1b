"""LUT files, LUT application against colour-science and OpenColorIO, colour management,
the looks library, shot matching and picture QA."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import colour
import numpy as np
import pytest
from click.testing import CliRunner

from aiprod_post.cli import main
from aiprod_post.errors import MediaError
from aiprod_post.grading.apply import FrameGrader, apply_lut
from aiprod_post.grading.colour import CONFIG_NAME, convert
from aiprod_post.grading.looks import LOOK_NAMES, LOOKS_DIR, default_look, load_look
from aiprod_post.grading.lut import LUT, parse_cube, read_cube, read_lut, write_cube
from aiprod_post.grading.match import apply_curves, match_curves, mean_delta_e
from aiprod_post.grading.qa import qa_frames

RNG = np.random.default_rng(7)


def random_lut(n: int = 9) -> LUT:
    g = np.linspace(0, 1, n)
    r, gg, b = np.meshgrid(g, g, g, indexing="ij")
    ident = np.stack([r, gg, b], axis=-1)
    return LUT(table=np.clip(ident ** 1.3 + 0.08 * RNG.standard_normal(ident.shape), 0, 1),
               title="random")


# ------------------------------------------------------------------ files

IRIDAS = """# a comment
TITLE "two"
DOMAIN_MIN 0 0 0
DOMAIN_MAX 1 1 2
LUT_3D_SIZE 2

0 0 0
1 0 0
0 1 0
1 1 0
# blank lines and comments may sit inside the data

0 0 1
1 0 1
0 1 1
1 1 1
"""


def test_iridas_cube_red_varies_fastest_with_domain_crlf_and_integers():
    lut = parse_cube(IRIDAS.replace("\n", "\r\n"))
    assert lut.kind == "3D" and lut.title == "two" and lut.size == 2
    assert lut.table[1, 0, 0].tolist() == [1, 0, 0]  # second entry: red moved first
    assert lut.table[0, 1, 0].tolist() == [0, 1, 0] and lut.table[0, 0, 1].tolist() == [0, 0, 1]
    assert lut.domain_max.tolist() == [1, 1, 2]


def test_resolve_cube_with_shaper_and_input_ranges(tmp_path):
    shaper = LUT(shaper=np.stack([np.linspace(0, 1, 16) ** 0.5] * 3, axis=1),
                 shaper_min=np.full(3, -0.1), shaper_max=np.full(3, 4.0),
                 table=random_lut(5).table, title="resolve")
    path = write_cube(shaper, tmp_path / "r.cube", dialect="resolve")
    text = path.read_text()
    assert "LUT_1D_INPUT_RANGE -0.1 4" in text and "LUT_3D_SIZE 5" in text
    back = read_cube(path)
    assert back.kind == "1D+3D"
    np.testing.assert_allclose(back.shaper, shaper.shaper, atol=1e-8)
    np.testing.assert_allclose(back.table, shaper.table, atol=1e-8)
    assert back.shaper_min[0] == -0.1 and back.shaper_max[0] == 4.0


def test_cube_matches_colour_science_reader(tmp_path):
    lut = random_lut(7)
    path = write_cube(lut, tmp_path / "a.cube")
    ours = read_cube(path)
    theirs = colour.io.read_LUT(str(path))
    np.testing.assert_allclose(ours.table, np.asarray(theirs.table), atol=1e-7)


@pytest.mark.parametrize("ext", [".spi3d", ".csp"])
def test_other_3d_formats_read_through_colour(tmp_path, ext):
    lut = random_lut(9)
    path = tmp_path / f"x{ext}"
    colour.io.write_LUT(colour.LUT3D(lut.table, name="x"), str(path))
    back = read_lut(path)
    np.testing.assert_allclose(back.table, lut.table, atol=1e-5)


def test_3dl_agrees_with_opencolorio(tmp_path):
    import PyOpenColorIO as ocio
    lut = random_lut(9)
    codes = np.round(lut.table * 4095).astype(int)  # 12-bit output
    body = [" ".join(str(v) for v in np.linspace(0, 1023, 9).round().astype(int))]
    body += [f"{r} {g} {b}" for r, g, b in codes.reshape(-1, 3)]  # blue fastest
    path = tmp_path / "x.3dl"
    path.write_text("\n".join(body) + "\n")
    ours = read_lut(path)
    np.testing.assert_allclose(ours.table, codes / 4095.0)
    proc = ocio.Config.CreateRaw().getProcessor(ocio.FileTransform(
        src=str(path), interpolation=ocio.INTERP_TETRAHEDRAL)).getDefaultCPUProcessor()
    x = RNG.random((2000, 3)).astype(np.float32)
    theirs = x.copy()
    proc.applyRGB(theirs)
    np.testing.assert_allclose(apply_lut(x, ours), theirs, atol=1e-4)


def test_spi1d(tmp_path):
    path = tmp_path / "x.spi1d"
    colour.io.write_LUT(colour.LUT1D(np.linspace(0, 1, 32) ** 2.2), str(path))
    back = read_lut(path)
    assert back.kind == "1D"
    np.testing.assert_allclose(apply_lut(np.full((1, 3), 0.5), back)[0], 0.5 ** 2.2, atol=1e-3)


@pytest.mark.parametrize("text,line,what", [
    ("LUT_3D_SIZE 2\n0 0 0\n1 0 0\n", 4, "expected 8 table entries"),
    ("LUT_3D_SIZE 2\n" + "0 0 0\n" * 7 + "0 x 0\n", 9, "not a number"),
    ("LUT_3D_SIZE 2\n" + "0 0 0\n" * 7 + "0 nan 0\n", 9, "NaN"),
    ("LUT_3D_SIZE 300\n", 1, "outside 2..256"),
    ("LUT_3D_SIZE 1\n", 1, "outside 2..256"),
    ("LUT_3D_SIZE 2\nLUT_3D_SIZE 2\n", 2, "given twice"),
    ("LUT_3D_SIZE 2\nGAMMA 2\n", 2, "unknown keyword GAMMA"),
    ("DOMAIN_MIN 1 0 0\nDOMAIN_MAX 0 1 1\nLUT_3D_SIZE 2\n" + "0 0 0\n" * 8, 1, "minimum"),
    ("0 0 0\n", 1, "before LUT_1D_SIZE"),
    ("LUT_3D_SIZE 2\n" + "0 0\n" * 8, 2, "needs 3 numbers"),
])
def test_malformed_cube_names_line_and_problem(text, line, what):
    with pytest.raises(MediaError) as err:
        parse_cube(text, "bad.cube")
    assert err.value.line == line and what in str(err.value)
    assert str(err.value).startswith(f"bad.cube:{line}:")


def test_write_both_dialects_round_trip(tmp_path):
    lut = random_lut(5)
    for dialect in ("iridas", "resolve"):
        back = read_cube(write_cube(lut, tmp_path / f"{dialect}.cube", dialect))
        np.testing.assert_allclose(back.table, lut.table, atol=1e-8)


# ------------------------------------------------------------------ application

def test_tetrahedral_and_trilinear_match_colour_science():
    lut = random_lut(17)
    x = RNG.random((20000, 3))
    from colour.algebra import table_interpolation_tetrahedral, table_interpolation_trilinear
    np.testing.assert_allclose(apply_lut(x, lut), table_interpolation_tetrahedral(x, lut.table),
                               atol=1e-4)
    np.testing.assert_allclose(apply_lut(x, lut, "trilinear"),
                               table_interpolation_trilinear(x, lut.table), atol=1e-4)
    # at 10 bits, within one code value
    ten = lambda v: np.round(np.clip(v, 0, 1) * 1023)  # noqa: E731
    assert np.abs(ten(apply_lut(x, lut)) - ten(table_interpolation_tetrahedral(x, lut.table))
                  ).max() <= 1


def test_matches_opencolorio_on_the_same_file(tmp_path):
    import PyOpenColorIO as ocio
    lut = random_lut(17)
    path = write_cube(lut, tmp_path / "l.cube")
    cfg = ocio.Config.CreateRaw()
    t = ocio.FileTransform(src=str(path), interpolation=ocio.INTERP_TETRAHEDRAL)
    proc = cfg.getProcessor(t).getDefaultCPUProcessor()
    x = RNG.random((5000, 3)).astype(np.float32)
    theirs = x.copy()
    proc.applyRGB(theirs)
    np.testing.assert_allclose(apply_lut(x, read_cube(path)), theirs, atol=1e-4)


def test_inputs_outside_the_domain_clamp():
    lut = random_lut(5)
    out = apply_lut(np.array([[-0.5, 1.7, 0.5]]), lut)
    np.testing.assert_allclose(out, apply_lut(np.array([[0.0, 1.0, 0.5]]), lut))


def test_8bit_frame_path_equals_the_float_path():
    lut = random_lut(33)
    frame = RNG.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    fast = FrameGrader(lut, strength=0.6)(frame)
    ref = np.clip(apply_lut(frame / 255.0, lut, strength=0.6) * 255 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(fast, ref)


def test_curves_and_grade_in_one_pass_equal_curves_then_grade():
    from aiprod_post.grading.match import apply_curves

    lut = random_lut(17)
    frame = RNG.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    curves = np.stack([np.clip(np.arange(256) * k + o, 0, 255) for k, o in
                       ((0.8, 20), (1.1, -5), (0.95, 3))]).astype(np.uint8)
    grader = FrameGrader(lut)
    np.testing.assert_array_equal(grader(frame, curves), grader(apply_curves(frame, curves)))


def test_gpu_path_matches_cpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from aiprod_post.grading.apply import apply_lut_torch
    lut = random_lut(33)
    x = RNG.random((100000, 3))
    gpu = apply_lut_torch(torch.as_tensor(x, device="cuda"), lut).cpu().numpy()
    np.testing.assert_allclose(gpu, apply_lut(x, lut), atol=1e-4)


# ------------------------------------------------------------------ colour management

def test_ocio_config_is_pinned_and_converts():
    assert CONFIG_NAME == "studio-config-v2.1.0_aces-v1.3_ocio-v2.3"
    grey = np.array([[0.18, 0.18, 0.18]])
    # ACEScct of scene-linear 0.18 (S-2016-001): (log2(0.18) + 9.72) / 17.52
    expected = (np.log2(0.18) + 9.72) / 17.52
    np.testing.assert_allclose(convert(grey, "acescg", "acescct"), expected, atol=1e-5)
    x = RNG.random((100, 3))
    np.testing.assert_allclose(convert(convert(x, "rec709", "acescg"), "acescg", "rec709"), x,
                               atol=1e-3)
    with pytest.raises(MediaError, match="unknown colour space"):
        convert(grey, "rec709", "technicolor")


# ------------------------------------------------------------------ looks

def test_six_looks_are_bundled_documented_and_33_point():
    readme = (LOOKS_DIR / "README.md").read_text()
    for name in LOOK_NAMES:
        lut = load_look(name)
        assert lut.size == 33 and f"`{name}.cube`" in readme
    ramp = np.stack([np.linspace(0, 1, 50)] * 3, axis=1) * np.array([1.0, 0.6, 0.3])
    noir = apply_lut(ramp, load_look("noir"))
    np.testing.assert_allclose(noir[:, 0], noir[:, 1]) and np.testing.assert_allclose(
        noir[:, 1], noir[:, 2])
    assert apply_lut(ramp, load_look("day-for-night")).mean() < 0.7 * ramp.mean()
    np.testing.assert_allclose(apply_lut(ramp, load_look("neutral")), ramp, atol=1e-6)
    assert default_look("night") == "day_for_night" and default_look("day") == "neutral_rec709"
    with pytest.raises(MediaError, match="unknown look"):
        load_look("sepia-dream")


# ------------------------------------------------------------------ matching

def test_matching_brings_a_scene_s_shots_closer():
    from aiprod_post.plan import Framing, Scene, Shot
    from aiprod_post.generation.engine import RenderContext, engine_by_name
    scene = Scene(id="1", heading="INT. BOOTH - NIGHT", int_ext="INT", location="BOOTH",
                  light="night", shots=[])
    eng = engine_by_name("animatic")
    ref = next(iter(eng.render(Shot(id="1", framing=Framing.WIDE, duration=1, seed=1,
                                    characters=["NELL"]), RenderContext(scene, 320, 180, 24))))
    other = next(iter(eng.render(Shot(id="1A", framing=Framing.MEDIUM, duration=1, seed=2,
                                      characters=["NELL"]), RenderContext(scene, 320, 180, 24))))
    # a mismatched take: the same shot graded warm, as a different camera might record it
    off = FrameGrader(load_look("warm_film"))(other)
    before = mean_delta_e(ref, off)
    after = mean_delta_e(ref, apply_curves(off, match_curves(off, ref)))
    assert after < before


# ------------------------------------------------------------------ QA

def test_flashes_fail_and_slow_changes_pass():
    black = np.zeros((36, 64, 3), np.uint8)
    white = np.full((36, 64, 3), 255, np.uint8)
    fast = [white if (i // 2) % 2 else black for i in range(48)]  # 6 flashes a second
    slow = [white if (i // 24) % 2 else black for i in range(96)]  # 0.5 a second
    assert qa_frames(fast, 24).as_dict()["flashes"]["pass"] is False
    assert qa_frames(slow, 24).as_dict()["flashes"]["pass"] is True
    red = np.zeros((36, 64, 3), np.uint8)
    red[..., 0] = 255
    reds = [red if (i // 2) % 2 else black for i in range(48)]
    assert qa_frames(reds, 24).red_flashes_max_per_second > 3


def test_levels_black_and_frozen_frames():
    grey = np.full((36, 64, 3), 128, np.uint8)
    black = np.zeros((36, 64, 3), np.uint8)
    frames = [black] * 10 + [grey] * 40 + [(grey + 1 + i % 3).astype(np.uint8) for i in range(10)]
    codes = [np.full((4, 4, 3), 64.0)] * 59 + [np.full((4, 4, 3), 1000.0)]
    qa = qa_frames(frames, 24, codes, bits=10)
    d = qa.as_dict()
    assert d["black_frames"] == [[0, 10]]
    assert d["frozen_frames"] == [[10, 50]]
    assert d["levels"]["max"] == 1000 and 0 < d["levels"]["share_outside"] < 0.05


# ------------------------------------------------------------------ CLI

def test_lut_info_convert_grade_and_qa_commands(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["lut", "info", str(LOOKS_DIR / "warm_film.cube"), "--json"])
    assert json.loads(r.output)["size_3d"] == 33
    spi = tmp_path / "x.spi3d"
    colour.io.write_LUT(colour.LUT3D(random_lut(9).table), str(spi))
    r = runner.invoke(main, ["lut", "convert", str(spi), str(tmp_path / "x.cube")])
    assert r.exit_code == 0 and read_cube(tmp_path / "x.cube").size == 9
    bad = tmp_path / "bad.cube"
    bad.write_text("LUT_3D_SIZE 2\n0 0 0\n")
    r = runner.invoke(main, ["lut", "info", str(bad)])
    assert r.exit_code == 2 and "bad.cube:3" in r.output
    # grade a small clip with sound and keep its sound
    import av
    src = tmp_path / "in.mp4"
    with av.open(str(src), "w") as out:
        v = out.add_stream("libx264", rate=24)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = out.add_stream("aac", rate=48000, layout="stereo")
        for i in range(24):
            for p in v.encode(av.VideoFrame.from_ndarray(
                    np.full((48, 64, 3), 100 + i, np.uint8), format="rgb24")):
                out.mux(p)
        t = np.arange(48000) / 48000
        tone = np.stack([0.2 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
        af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="stereo")
        af.sample_rate = 48000
        for p in a.encode(af):
            out.mux(p)
        for s in (v, a):
            for p in s.encode():
                out.mux(p)
    graded = tmp_path / "graded.mp4"
    r = runner.invoke(main, ["grade", str(src), "-o", str(graded), "--look", "noir"])
    assert r.exit_code == 0, r.output
    from aiprod_post.editing.conform import probe
    info = probe(graded)
    assert info["video"]["frames"] == 24 and info["audio"]["samples"] == probe(src)["audio"][
        "samples"]
    with av.open(str(graded)) as c:
        f = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert np.abs(f[..., 0] - f[..., 2]).max() <= 3  # noir: grey
    r = runner.invoke(main, ["qa", str(graded)])
    assert json.loads(r.output)["levels"]["bits"] == 8


def test_hdr_output_transforms():
    from aiprod_post.grading.colour import hdr_output

    def pq(nits: float) -> float:  # SMPTE ST 2084 inverse EOTF, the independent reference
        m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
        y = (nits / 10000) ** m1
        return ((c1 + c2 * y) / (1 + c3 * y)) ** m2

    ramp = np.array([[v, v, v] for v in (0.01, 0.18, 1.0, 4.0)])
    out = hdr_output(ramp, "pq")[:, 1]
    assert np.all(np.diff(out) > 0) and out.max() <= pq(1000) + 1e-3
    # ACES 1.x HDR output puts scene 18 % grey at about 15 cd/m²
    assert pq(10) < out[1] < pq(20)
    hlg = hdr_output(ramp, "hlg")[:, 1]
    assert np.all(np.diff(hlg) > 0) and 0 < hlg[1] < 0.5
