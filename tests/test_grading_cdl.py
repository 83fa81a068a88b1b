"""ASC CDL: reading and writing .cc/.ccc/.cdl (OpenColorIO reads what we write), applying
exactly as OpenColorIO's CDLTransform in both styles, and a CDL before the look in the
8-bit and float frame paths."""

from __future__ import annotations

import numpy as np
import pytest

from aiprod_post.errors import MediaError
from aiprod_post.grading.apply import FloatFrameGrader, FrameGrader
from aiprod_post.grading.cdl import CDL, apply_cdl, cdl_for_shot, read_cdl, write_cdl
from aiprod_post.grading.looks import look_path, load_look

ocio = pytest.importorskip("PyOpenColorIO")
RNG = np.random.default_rng(11)
STYLES = {"asc": "CDL_ASC", "no_clamp": "CDL_NO_CLAMP"}


def random_cdl(cid: str = "3A") -> CDL:
    return CDL(cid, tuple(RNG.uniform(0.6, 1.6, 3)), tuple(RNG.uniform(-0.1, 0.1, 3)),
               tuple(RNG.uniform(0.6, 1.5, 3)), float(RNG.uniform(0.3, 1.8)))


def ocio_cdl(cdl: CDL, style: str) -> "ocio.CDLTransform":
    t = ocio.CDLTransform(slope=list(cdl.slope), offset=list(cdl.offset),
                          power=list(cdl.power), sat=cdl.sat)
    t.setStyle(getattr(ocio.CDLStyle, STYLES[style]))
    return t


def run(transform, x: np.ndarray) -> np.ndarray:
    """OpenColorIO without its lossy optimisations: its default CPU path takes a fast
    approximate power (errors of 4e-5), the lossless one the exact power."""
    y = np.ascontiguousarray(x, np.float32).copy()
    ocio.Config.CreateRaw().getProcessor(transform) \
        .getOptimizedCPUProcessor(ocio.OPTIMIZATION_LOSSLESS).applyRGB(y.reshape(-1, 3))
    return y


def colours(n: int = 4000, lo: float = -0.5, hi: float = 1.8) -> np.ndarray:
    ramp = np.linspace(lo, hi, 512)
    return np.concatenate([np.stack([ramp, ramp[::-1], np.roll(ramp, 100)], axis=1),
                           RNG.uniform(lo, hi, (n, 3))]).astype(np.float32)


@pytest.mark.parametrize("style", ["asc", "no_clamp"])
def test_apply_matches_opencolorio_cdltransform(style):
    for _ in range(5):
        cdl = random_cdl()
        x = colours()
        np.testing.assert_allclose(apply_cdl(x, cdl, style), run(ocio_cdl(cdl, style), x),
                                   atol=2e-6, rtol=2e-6)


def test_asc_style_nan_and_infinities_match_opencolorio_and_stay_in_range():
    cdl = random_cdl()
    x = np.array([[np.nan, 0.5, 0.5], [np.inf, 0.2, -np.inf], [np.nan] * 3, [-np.inf] * 3,
                  [np.inf] * 3], np.float32)
    ours = apply_cdl(x, cdl, "asc")
    np.testing.assert_allclose(ours, run(ocio_cdl(cdl, "asc"), x), atol=2e-6)
    assert np.all((ours >= 0) & (ours <= 1))


@pytest.mark.parametrize("suffix", [".cc", ".ccc", ".cdl"])
def test_written_files_read_back_and_opencolorio_reads_the_same_numbers(tmp_path, suffix):
    grades = [random_cdl("3A")] if suffix == ".cc" else [random_cdl("3A"), random_cdl("4B")]
    path = write_cdl(grades, tmp_path / f"grade{suffix}")
    back = read_cdl(path)
    assert [c.id for c in back] == [g.id for g in grades]
    x = colours(1000, 0.0, 1.0)
    for i, g in enumerate(back):
        np.testing.assert_allclose(g.slope + g.offset + g.power + (g.sat,),
                                   grades[i].slope + grades[i].offset + grades[i].power
                                   + (grades[i].sat,), rtol=1e-5)
        t = ocio.FileTransform(src=str(path), cccId=g.id if suffix != ".cc" else "")
        np.testing.assert_allclose(apply_cdl(x, g, "no_clamp"), run(t, x), atol=2e-6)


V101 = """<?xml version="1.0" encoding="UTF-8"?>
<ColorCorrectionCollection xmlns="urn:ASC:CDL:v1.01">
  <ColorCorrection id="A">
    <SOPNode><Description>warm</Description>
      <Slope>1.1 1 0.9</Slope><Offset>0 0 0</Offset><Power>1 1 1</Power></SOPNode>
    <SATNode><Saturation>0.8</Saturation></SATNode>
  </ColorCorrection>
  <ColorCorrection id="3A">
    <SatNode><Saturation>0.5</Saturation></SatNode>
  </ColorCorrection>
</ColorCorrectionCollection>
"""


def test_v101_satnode_missing_nodes_and_the_shots_own_id(tmp_path):
    path = tmp_path / "old.ccc"
    path.write_text(V101)
    a, b = read_cdl(path)
    assert (a.slope, a.sat, a.description) == ((1.1, 1.0, 0.9), 0.8, ("warm",))
    assert (b.slope, b.power, b.sat) == ((1.0,) * 3, (1.0,) * 3, 0.5)
    assert cdl_for_shot(path, "3A") == b
    with pytest.raises(MediaError, match="old.ccc: holds 2 corrections and none has id '9Z'"):
        cdl_for_shot(path, "9Z")


@pytest.mark.parametrize("text,match", [
    ("<ColorCorrection id='x'><SOPNode><Slope>1 1</Slope></SOPNode></ColorCorrection>",
     r"bad.cc:1: <Slope> needs 3 numbers, got 2"),
    ("<ColorCorrection id='x'>\n<SOPNode>\n<Slope>1 -1 1</Slope></SOPNode></ColorCorrection>",
     r"bad.cc:1: ColorCorrection 'x': slope must not be negative"),
    ("<ColorCorrection id='x'>\n<SatNode><Saturation>lots</Saturation></SatNode>"
     "</ColorCorrection>", r"bad.cc:2: <Saturation> has a value that is not a number"),
    ("<ColorCorrection id='x'>\n<SOPNode>\n<Power>1 0 1</Power>", r"bad.cc:3: not well-formed"),
    ("<?xml version='1.0'?>\n<!DOCTYPE x [<!ENTITY a 'b'>]><ColorCorrection/>",
     r"bad.cc:2: a DOCTYPE is not accepted"),
    ("<Look/>", r"bad.cc:1: <Look> is not an ASC CDL element"),
])
def test_bad_files_name_the_line_and_the_problem(tmp_path, text, match):
    path = tmp_path / "bad.cc"
    path.write_text(text)
    with pytest.raises(MediaError, match=match):
        read_cdl(path)


def test_cdl_before_the_look_in_both_frame_paths_matches_opencolorio(tmp_path):
    cdl = random_cdl()
    lut = load_look("teal_orange")
    group = ocio.GroupTransform([ocio_cdl(cdl, "asc"), ocio.FileTransform(
        src=str(look_path("teal_orange")), interpolation=ocio.INTERP_TETRAHEDRAL)])
    img8 = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    theirs8 = run(group, img8 / 255.0)
    ours8 = FrameGrader(lut, cdl=cdl)(img8)
    assert np.abs(ours8.astype(int) - np.round(theirs8 * 255).astype(int)).max() <= 1
    img16 = RNG.integers(0, 65536, (32, 48, 3), dtype=np.uint16)
    ours16 = FloatFrameGrader(lut, cdl=cdl)(img16)
    theirs16 = run(group, img16 / 65535.0)
    assert np.abs(ours16 / 65535.0 - theirs16).max() < 2e-5
    # an identity CDL changes nothing
    assert np.array_equal(FrameGrader(lut, cdl=CDL("n"))(img8), FrameGrader(lut)(img8))
