"""Fuzzing the LUT readers: whatever the bytes, reading a .cube, .3dl, .spi1d, .spi3d or
.csp file gives a LUT or the project's MediaError - never another exception, a hang or
a crash - and a LUT that was read applies to any input, NaN and infinities included,
with finite results."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiprod_post.errors import MediaError
from aiprod_post.grading.apply import FloatFrameGrader, apply_lut
from aiprod_post.grading.lut import LUT, read_lut

NUMBERS = st.one_of(
    st.integers(-5, 70000).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(lambda v: f"{v:.6g}"),
    st.sampled_from(["0", "1", "2", "-0", "1e309", "-1e-320", "nan", "inf", "0x10", "1_0",
                     "٣", "", "  ", "0.5.5", "+", "-", "1e"]),
)
WORDS = st.sampled_from([
    "TITLE", "LUT_1D_SIZE", "LUT_3D_SIZE", "DOMAIN_MIN", "DOMAIN_MAX", "LUT_1D_INPUT_RANGE",
    "LUT_3D_INPUT_RANGE", "#", "Version", "From", "Length", "Components", "{", "}", "SPILUT",
    "1.0", "CSPLUTV100", "1D", "3D", "BEGIN METADATA", "END METADATA", "3DMESH", "Mesh",
    "LUT8", "gamma", '"', "\t", "\x00", "é",
])
LINE = st.lists(st.one_of(NUMBERS, WORDS), min_size=0, max_size=7).map(" ".join)

SEEDS = {
    ".cube": ["LUT_3D_SIZE 2", *["0 0 0", "1 0 0", "0 1 0", "1 1 0", "0 0 1", "1 0 1",
                                 "0 1 1", "1 1 1"]],
    ".3dl": ["0 1023", *["0 0 0", "0 0 4095", "0 4095 0", "0 4095 4095", "4095 0 0",
                         "4095 0 4095", "4095 4095 0", "4095 4095 4095"]],
    ".spi1d": ["Version 1", "From 0 1", "Length 2", "Components 1", "{", "0", "1", "}"],
    ".spi3d": ["SPILUT 1.0", "3 3", "2 2 2", *[f"{i} {j} {k} {i} {j} {k}" for i in (0, 1)
                                               for j in (0, 1) for k in (0, 1)]],
    ".csp": ["CSPLUTV100", "3D", "2", "0 1", "0 1", "2", "0 1", "0 1", "2", "0 1", "0 1",
             "2 2 2", *["0 0 0"] * 8],
}


@st.composite
def lut_files(draw):
    ext = draw(st.sampled_from(sorted(SEEDS)))
    kind = draw(st.integers(0, 2))
    if kind == 0:  # a valid file, mutated line by line
        lines = list(SEEDS[ext])
        for _ in range(draw(st.integers(0, 4))):
            at = draw(st.integers(0, len(lines)))
            op = draw(st.sampled_from(["insert", "replace", "delete", "duplicate"]))
            if op == "insert" or not lines:
                lines.insert(at, draw(LINE))
            elif op == "replace":
                lines[min(at, len(lines) - 1)] = draw(LINE)
            elif op == "delete":
                del lines[min(at, len(lines) - 1)]
            else:
                lines.insert(at, lines[min(at, len(lines) - 1)])
        data = "\n".join(lines).encode("utf-8", "surrogatepass")
    elif kind == 1:  # lines of the format's words and numbers
        data = "\n".join(draw(st.lists(LINE, max_size=30))).encode("utf-8", "surrogatepass")
    else:  # any bytes
        data = draw(st.binary(max_size=400))
    return ext, data


PROBE = np.array([[0.0, 0.5, 1.0], [-1e30, 1e30, 0.2], [np.nan, np.inf, -np.inf]], np.float32)


@pytest.fixture(scope="module")
def compiled():
    """The float kernel compiled before the clock starts: the deadline is per input."""
    FloatFrameGrader(LUT.identity(2))(PROBE[None])


@settings(max_examples=2000, deadline=2000, suppress_health_check=[HealthCheck.too_slow],
          database=None)
@given(lut_files())
def test_reading_any_bytes_gives_a_lut_or_a_media_error(compiled, tmp_path_factory, case):
    ext, data = case
    path = tmp_path_factory.mktemp("fuzz", numbered=True) / f"x{ext}"
    path.write_bytes(data)
    try:
        lut = read_lut(path)
    except MediaError as exc:
        assert str(path) in str(exc)
        return
    out = apply_lut(PROBE, lut)
    assert out.shape == PROBE.shape and np.all(np.isfinite(out))
    assert np.all(np.isfinite(FloatFrameGrader(lut)(PROBE[None])))


CDL_SEED = ['<ColorCorrectionCollection xmlns="urn:ASC:CDL:v1.2">', '<ColorCorrection id="3A">',
            "<SOPNode>", "<Slope>1 1 1</Slope>", "<Offset>0 0 0</Offset>",
            "<Power>1 1 1</Power>", "</SOPNode>", "<SatNode>", "<Saturation>1</Saturation>",
            "</SatNode>", "</ColorCorrection>", "</ColorCorrectionCollection>"]
XML_BITS = st.sampled_from(["<", ">", "</", "/>", "<SOPNode>", "</SOPNode>", "<Slope>",
                            "</Slope>", "<SatNode>", "<SATNode>", "<Saturation>",
                            "<ColorCorrection id='x'>", "</ColorCorrection>", "&amp;", "&x;",
                            "<!DOCTYPE a>", "<?xml version='1.0'?>", "<![CDATA[1]]>", '"'])


@st.composite
def cdl_files(draw):
    lines = list(CDL_SEED)
    for _ in range(draw(st.integers(0, 5))):
        at = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["insert", "replace", "delete"]))
        piece = draw(st.lists(st.one_of(XML_BITS, NUMBERS), max_size=5).map(" ".join))
        if op == "insert":
            lines.insert(at, piece)
        elif op == "replace":
            lines[at] = piece
        elif len(lines) > 1:
            del lines[at]
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = draw(st.binary(max_size=200))
    return draw(st.sampled_from([".cc", ".ccc", ".cdl"])), data


@settings(max_examples=600, deadline=2000, database=None)
@given(cdl_files())
def test_reading_any_cdl_gives_corrections_or_a_media_error(tmp_path_factory, case):
    from aiprod_post.grading.cdl import apply_cdl, read_cdl

    ext, data = case
    path = tmp_path_factory.mktemp("cdl", numbered=True) / f"x{ext}"
    path.write_bytes(data)
    try:
        found = read_cdl(path)
    except MediaError as exc:
        assert str(path) in str(exc)
        return
    for cdl in found:
        assert np.all(np.isfinite(apply_cdl(PROBE, cdl, "asc")))
