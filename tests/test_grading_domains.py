"""LUT input ranges per channel in every dialect the readers accept, checked against
OpenColorIO's FileTransform on the same files: ramps and random colours well outside
the domains, NaN and ±inf, through the NumPy reference and the float frame path."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from aiprod_post.cli import main
from aiprod_post.errors import MediaError
from aiprod_post.grading.apply import FloatFrameGrader, apply_lut, apply_lut_torch
from aiprod_post.grading.lut import parse_cube, read_lut, write_cube

ocio = pytest.importorskip("PyOpenColorIO")
RNG = np.random.default_rng(17)


def ocio_apply(path, x: np.ndarray) -> np.ndarray:
    proc = ocio.Config.CreateRaw().getProcessor(ocio.FileTransform(
        src=str(path), interpolation=ocio.INTERP_BEST)).getDefaultCPUProcessor()
    y = np.ascontiguousarray(x, dtype=np.float32).copy()
    proc.applyRGB(y)
    return y


def signals() -> np.ndarray:
    """A per-channel ramp from -2 to 5, random colours in -3..6, and NaN/±inf mixes."""
    ramp = np.linspace(-2.0, 5.0, 1401)
    ramps = np.stack([ramp, ramp[::-1], np.roll(ramp, 300)], axis=1)
    rand = RNG.uniform(-3.0, 6.0, (3000, 3))
    special = np.array([[np.nan, 0.5, 0.5], [0.5, np.inf, 0.2], [-np.inf, 0.3, 0.9],
                        [np.nan, np.nan, np.nan], [np.inf, np.inf, np.inf],
                        [-np.inf, -np.inf, -np.inf], [np.nan, np.inf, -np.inf]])
    return np.concatenate([ramps, rand, special]).astype(np.float32)


def table3d(n: int) -> np.ndarray:
    g = np.linspace(0, 1, n)
    r, gg, b = np.meshgrid(g, g, g, indexing="ij")
    ident = np.stack([r, gg, b], axis=-1)
    return ident ** 1.4 + 0.1 * RNG.standard_normal(ident.shape)


def rows(a: np.ndarray) -> list[str]:
    return [" ".join(f"{v:.9f}" for v in row) for row in a.reshape(-1, 3)]


def cube_rows_3d(t: np.ndarray) -> list[str]:
    return rows(t.transpose(2, 1, 0, 3))  # red fastest


def curve(m: int) -> np.ndarray:
    u = np.linspace(0, 1, m)
    return np.stack([u ** 2.2, np.sqrt(u) * 1.3 - 0.1, 0.2 + 0.6 * np.sin(3 * u)], axis=1)


def iridas_1d(folder):
    text = ["TITLE \"iridas 1d\"", "LUT_1D_SIZE 17", "DOMAIN_MIN -0.5 0 0.2",
            "DOMAIN_MAX 1.5 4 0.8", *rows(curve(17))]
    return _write(folder / "iridas_1d.cube", text)


def iridas_3d(folder):
    text = ["LUT_3D_SIZE 9", "DOMAIN_MIN -1 0 0.25", "DOMAIN_MAX 2 1 3", *cube_rows_3d(table3d(9))]
    return _write(folder / "iridas_3d.cube", text)


def resolve_1d(folder):
    text = ["LUT_1D_SIZE 33", "LUT_1D_INPUT_RANGE -0.25 3.5", *rows(curve(33))]
    return _write(folder / "resolve_1d.cube", text)


def resolve_shaper(folder):
    text = ["LUT_1D_SIZE 20", "LUT_1D_INPUT_RANGE -0.1 6", *rows(np.clip(curve(20), 0, 1)),
            "LUT_3D_SIZE 7", "LUT_3D_INPUT_RANGE 0.05 0.9", *cube_rows_3d(table3d(7))]
    return _write(folder / "resolve_shaper.cube", text)


def spi1d_three(folder):
    text = ["Version 1", "From -0.25 2.5", "Length 40", "Components 3", "{", *rows(curve(40)), "}"]
    return _write(folder / "three.spi1d", text)


def spi1d_one(folder):
    vals = [f"{v:.9f}" for v in np.linspace(0, 1, 25) ** 0.45]
    return _write(folder / "one.spi1d",
                  ["Version 1", "From -1 4", "Length 25", "Components 1", "{", *vals, "}"])


def spi3d(folder):
    t = table3d(5)
    idx = np.indices((5, 5, 5)).reshape(3, -1).T  # blue fastest
    body = [f"{i} {j} {k} {t[i, j, k, 0]:.9f} {t[i, j, k, 1]:.9f} {t[i, j, k, 2]:.9f}"
            for i, j, k in idx]
    return _write(folder / "x.spi3d", ["SPILUT 1.0", "3 3", "5 5 5", *body])


def _prelut() -> list[str]:
    return ["4", "-0.5 0.0 0.25 2.0", "0.0 0.2 0.7 1.0",
            "3", "0 0.5 4", "0 0.5 1",
            "5", "-0.1 0.3 0.9 1.5 3", "0.0 0.4 0.6 0.95 1.0"]


def csp_3d(folder):
    text = ["CSPLUTV100", "3D", "", "BEGIN METADATA", "a grade", "END METADATA", "",
            *_prelut(), "", "6 6 6", *cube_rows_3d(table3d(6))]
    return _write(folder / "x3d.csp", text)


def csp_1d(folder):
    return _write(folder / "x1d.csp", ["CSPLUTV100", "1D", *_prelut(), "12", *rows(curve(12))])


def three_dl(folder):
    t = np.clip(table3d(9), 0, 1)
    codes = np.round(t * 4095).astype(int)
    body = [" ".join(str(v) for v in np.linspace(0, 1023, 9).round().astype(int))]
    body += [f"{r} {g} {b}" for r, g, b in codes.reshape(-1, 3)]  # blue fastest
    return _write(folder / "x.3dl", body)


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


FILES = [iridas_1d, iridas_3d, resolve_1d, resolve_shaper, spi1d_three, spi1d_one, spi3d,
         csp_3d, csp_1d, three_dl]


@pytest.mark.parametrize("make", FILES, ids=lambda f: f.__name__)
def test_every_dialect_matches_opencolorio_outside_domain_and_on_nan_inf(tmp_path, make):
    path = make(tmp_path)
    lut = read_lut(path)
    x = signals()
    theirs = ocio_apply(path, x)
    ours = apply_lut(x, lut)
    assert np.all(np.isfinite(ours))
    atol = 2e-6  # float32 against float64: measured at most 9e-7 on these files
    np.testing.assert_allclose(ours, theirs, atol=atol, rtol=0)
    fast = FloatFrameGrader(lut)(x.reshape(1, -1, 3)).reshape(-1, 3)
    np.testing.assert_allclose(fast, theirs, atol=atol, rtol=0)
    torch = pytest.importorskip("torch")  # the GPU path's arithmetic, here on the CPU
    on_torch = apply_lut_torch(torch.as_tensor(x), lut).numpy()
    np.testing.assert_allclose(on_torch, theirs, atol=atol, rtol=0)


def test_iridas_1d_domain_is_the_1d_tables_input_range(tmp_path):
    lut = read_lut(iridas_1d(tmp_path))
    assert lut.kind == "1D"
    assert lut.shaper_min.tolist() == [-0.5, 0, 0.2] and lut.shaper_max.tolist() == [1.5, 4, 0.8]
    # the middle of each channel's domain lands on the middle entry of its column
    mid = (lut.shaper_min + lut.shaper_max) / 2
    np.testing.assert_allclose(apply_lut(mid[None], lut)[0], curve(17)[8], atol=1e-12)


def test_iridas_1d_round_trips_with_its_domain(tmp_path):
    lut = read_lut(iridas_1d(tmp_path))
    back = read_lut(write_cube(lut, tmp_path / "back.cube"))
    x = signals()
    np.testing.assert_allclose(apply_lut(x, back), apply_lut(x, lut), atol=1e-8)


def test_domain_with_both_tables_is_refused_naming_the_line():
    text = "LUT_1D_SIZE 2\nDOMAIN_MIN -1 -1 -1\n0 0 0\n1 1 1\nLUT_3D_SIZE 2\n" + "0 0 0\n" * 8
    with pytest.raises(MediaError, match=r"x.cube:2: .*ambiguous"):
        parse_cube(text, "x.cube")


def test_per_channel_ranges_cannot_be_written_as_resolve(tmp_path):
    lut = read_lut(iridas_3d(tmp_path))
    with pytest.raises(MediaError, match="per-channel"):
        write_cube(lut, tmp_path / "r.cube", dialect="resolve")


def test_csp_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.csp"
    bad.write_text("CSPLUTV100\n3D\n2\n0 1\n0 1\n2\n1 0\n0 1\n")
    with pytest.raises(MediaError, match=r"bad.csp:7: the G prelut inputs must increase"):
        read_lut(bad)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage\x80", None], ids=["latin", "folder"])
def test_3dl_not_utf8_or_a_folder_is_a_clear_error_exit_2(tmp_path, content):
    path = tmp_path / "look.3dl"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(MediaError, match="look.3dl: (not a text LUT file|is a folder)"):
        read_lut(path)
    result = CliRunner().invoke(main, ["lut", "info", str(path)])
    assert result.exit_code == 2, result.output
    assert "look.3dl" in result.output and "Traceback" not in result.output


def test_the_torch_path_never_uses_another_luts_tables():
    """Tables were cached by id(lut): once a LUT was freed, a new LUT could get its id and
    be applied with the old tables (a test failed now and then)."""
    import gc

    torch = pytest.importorskip("torch")
    from aiprod_post.grading.apply import apply_lut, apply_lut_torch
    from aiprod_post.grading.lut import LUT

    rng = np.random.default_rng(3)
    x = rng.random((64, 3))
    for k in range(40):
        lut = LUT(table=rng.random((5, 5, 5, 3)))
        ours = apply_lut_torch(torch.as_tensor(x, dtype=torch.float32), lut).numpy()
        np.testing.assert_allclose(ours, apply_lut(x, lut), atol=1e-5)
        del lut
        gc.collect()  # the freed LUT's id is free for the next one
