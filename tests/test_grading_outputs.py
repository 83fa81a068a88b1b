"""``grade`` outputs by suffix, the float path for sources above 8 bits, stills, and
camera log input - each checked by decoding the file back (FFmpeg through PyAV) and
against OpenColorIO applied in float to the same source values."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from click.testing import CliRunner

from aiprod_post.cli import main
from aiprod_post.errors import MediaError
from aiprod_post.grading.grade import MASTERS, grade_video
from aiprod_post.grading.looks import load_look, look_path

ocio = pytest.importorskip("PyOpenColorIO")
W, H = 256, 128  # DNxHR's smallest picture is 256x120


def ramp_rgb16(frames: int = 2) -> list[np.ndarray]:
    """A colour ramp covering every 10-bit code on each channel, shifted per frame."""
    codes = np.arange(W * H * 3).reshape(H, W, 3) % 1024
    codes[..., 1] = 1023 - codes[..., 1]
    codes[..., 2] = (codes[..., 2] * 7) % 1024
    return [((codes + 3 * i) % 1024).astype(np.uint16) for i in range(frames)]


def write_video(path, fmt, codec, pix_fmt, codes10: list[np.ndarray], audio: str | None,
                options=None) -> None:
    with av.open(str(path), "w", format=fmt) as out:
        v = out.add_stream(codec, rate=24)
        v.width, v.height, v.pix_fmt = W, H, pix_fmt
        v.options = options or {}
        a = out.add_stream(audio, rate=48000, layout="stereo") if audio else None
        for i, c in enumerate(codes10):
            # 10-bit codes to 16 bits by bit replication, as FFmpeg widens them
            vf = av.VideoFrame.from_ndarray((c << 6) | (c >> 4), format="rgb48le")
            vf = vf.reformat(format=pix_fmt)
            vf.pts = i
            for p in v.encode(vf):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        if a is not None:
            t = np.arange(2000 * len(codes10)) / 48000
            tone = (0.25 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
            af = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="s16p",
                                            layout="stereo")
            af.sample_rate, af.pts = 48000, 0
            for p in a.encode(af):
                out.mux(p)
            for p in a.encode():
                out.mux(p)


def ocio_look(rgb: np.ndarray, look: str = "teal_orange") -> np.ndarray:
    proc = ocio.Config.CreateRaw().getProcessor(ocio.FileTransform(
        src=str(look_path(look)), interpolation=ocio.INTERP_TETRAHEDRAL)).getDefaultCPUProcessor()
    x = np.ascontiguousarray(rgb, np.float32).copy()
    proc.applyRGB(x.reshape(-1, 3))
    return x


def decode_rgb48(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb48le") for f in c.decode(video=0)]


def read_exr(path) -> np.ndarray:
    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
    assert f.format.name == "gbrpf16le"  # half float, as asked
    g, b, r = (np.frombuffer(p, np.float16).reshape(f.height, -1)[:, :f.width]
               for p in f.planes)
    return np.stack([r, g, b], axis=-1).astype(np.float32)


@pytest.fixture(scope="module")
def source10(tmp_path_factory):
    """Lossless 10-bit RGB (FFV1 gbrp10le) with 16-bit PCM sound."""
    path = tmp_path_factory.mktemp("src") / "ramp10.mkv"
    write_video(path, "matroska", "ffv1", "gbrp10le", ramp_rgb16(), "pcm_s16le")
    return path


EXPECT = {  # suffix, codec -> container, codec, pix_fmt, profile, audio codec
    (".mov", None): ("mov", "prores", "yuv422p10le", "HQ", "pcm_s16le"),
    # FFmpeg decodes ProRes 4444 to 12 bits whatever went in
    (".mov", "prores_4444"): ("mov", "prores", "yuv444p12le", "4444", "pcm_s16le"),
    (".mxf", None): ("mxf", "dnxhd", "yuv422p10le", "DNXHR HQX", "pcm_s16le"),
    (".mxf", "dnxhr_444"): ("mxf", "dnxhd", "yuv444p10le", "DNXHR 444", "pcm_s16le"),
    (".mp4", None): ("mp4", "h264", "yuv420p", "High", "aac"),
    (".mkv", None): ("matroska", "ffv1", "gbrp16le", None, "pcm_s16le"),
}


@pytest.mark.parametrize("suffix,codec", list(EXPECT), ids=lambda v: str(v))
def test_each_video_suffix_writes_its_master_with_tags_and_sound(tmp_path, source10, suffix,
                                                                 codec):
    out = grade_video(source10, tmp_path / f"graded{suffix}", "teal_orange", codec=codec)
    container, name, pix_fmt, profile, audio = EXPECT[(suffix, codec)]
    with av.open(str(out)) as c:
        assert container in c.format.name
        v = c.streams.video[0].codec_context
        assert (v.name, v.format.name) == (name, pix_fmt)
        if profile:
            assert v.profile == profile
        assert (v.color_primaries, v.color_trc) == (1, 1)  # BT.709
        rgb = pix_fmt.startswith("gbr")
        assert v.colorspace == (0 if rgb else 1)
        # FFmpeg's DNxHR 444 decoder does not report the range it was written with
        assert v.color_range == (2 if rgb else 1) or codec == "dnxhr_444"
        assert [a.codec_context.name for a in c.streams.audio] == [audio]
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == 2
    assert not list(tmp_path.glob("*.part*"))


def test_sound_is_copied_bit_for_bit_where_the_container_takes_it(tmp_path, source10):
    out = grade_video(source10, tmp_path / "g.mov", "noir")

    def pcm(path):
        with av.open(str(path)) as c:
            return b"".join(bytes(p) for p in c.demux(audio=0) if p.size)

    assert pcm(out) == pcm(source10) and len(pcm(out)) == 2 * 2 * 4000


@pytest.mark.parametrize("suffix,count", [(".tif", 2), (".png", 2), (".exr", 2)])
def test_image_sequences_by_pattern_16_bit_and_half_float(tmp_path, source10, suffix, count):
    notes: list[str] = []
    pattern = grade_video(source10, tmp_path / f"shot_%06d{suffix}", "warm_film", notes=notes)
    assert notes == [f"the sound of ramp10.mkv is not carried: {suffix} images have none"]
    files = sorted(tmp_path.glob(f"shot_*{suffix}"))
    assert [f.name for f in files] == [f"shot_{i:06d}{suffix}" for i in range(count)]
    assert str(pattern).endswith(f"shot_%06d{suffix}")
    with av.open(str(files[0])) as c:
        fmt = next(c.decode(video=0)).format.name
    assert fmt == {".tif": "rgb48le", ".png": "rgb48be", ".exr": "gbrpf16le"}[suffix]


def test_any_other_suffix_is_an_error_listing_the_choices_exit_2(tmp_path, source10):
    result = CliRunner().invoke(main, ["grade", str(source10), "-o", str(tmp_path / "x.avi"),
                                       "--look", "noir"])
    assert result.exit_code == 2
    for suffix in (".mov", ".mxf", ".mp4", ".mkv", ".tif", ".png", ".exr"):
        assert suffix in result.output
    assert "x.avi" in result.output and not list(tmp_path.iterdir())
    result = CliRunner().invoke(main, ["grade", str(source10), "-o", str(tmp_path / "x.mov"),
                                       "--look", "noir", "--codec", "dnxhr_hqx"])
    assert result.exit_code == 2 and "prores_422hq or prores_4444" in result.output


def test_ten_bit_ramp_keeps_more_than_8_bits_against_opencolorio(tmp_path, source10):
    """Lossless 10-bit in, lossless 16-bit out: the grade is OCIO's float result to
    16-bit rounding, on all 1024 codes - an 8-bit step anywhere would cost 1/510."""
    out = grade_video(source10, tmp_path / "g.mkv", "teal_orange")
    src = ramp_rgb16()
    got = decode_rgb48(out)
    for codes, graded in zip(src, got):
        theirs = ocio_look(codes / 1023.0)
        err = np.abs(graded / 65535.0 - theirs).max()
        assert err < 2e-5, err
        assert len(np.unique(graded[..., 1])) > 900  # 1024 codes stay apart


def smooth_ramp10() -> np.ndarray:
    """Slow gradients (4:2:2 keeps them): red across, green down, blue diagonal."""
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([xx * 1023 // (W - 1), yy * 1023 // (H - 1),
                     (xx + yy) * 1023 // (W + H - 2)], axis=-1).astype(np.uint16)


def test_ten_bit_prores_to_prores_stays_within_its_own_codec_noise(tmp_path):
    src = tmp_path / "s.mov"
    write_video(src, "mov", "prores_ks", "yuv422p10le", [smooth_ramp10()], None,
                {"profile": "3"})
    out = grade_video(src, tmp_path / "g.mov", "teal_orange")
    decoded_src = decode_rgb48(src)[0] / 65535.0
    graded = decode_rgb48(out)[0] / 65535.0
    theirs = ocio_look(decoded_src)
    # a 10-bit 4:2:2 round trip, not an 8-bit table: mean error well under one 8-bit step
    assert np.abs(graded - theirs).mean() < 0.25 / 255


def test_float_still_in_float_still_out_keeps_out_of_range_values(tmp_path):
    """An EXR still with values below 0 and above 1 through a LUT whose 1D domain is
    -1..4: the half-float result matches OCIO's float result. (FFmpeg reads every EXR
    as linear; these values are said to be in the working space already.)"""
    lut = tmp_path / "wide.cube"
    u = np.linspace(0, 1, 33)
    lut.write_text("LUT_1D_SIZE 33\nDOMAIN_MIN -1 -1 -1\nDOMAIN_MAX 4 4 4\n"
                   + "".join(f"{v ** 0.8 * 3:.8f} {v:.8f} {1 - v:.8f}\n" for v in u))
    rng = np.random.default_rng(3)
    x = rng.uniform(-1.5, 5.0, (H, W, 3)).astype(np.float32)
    src = tmp_path / "plate.exr"
    cc = av.CodecContext.create("exr", "w")
    cc.width, cc.height, cc.pix_fmt, cc.time_base = W, H, "gbrpf32le", Fraction(1, 24)
    cc.options = {"format": "float"}
    src.write_bytes(b"".join(bytes(p) for p in cc.encode(
        av.VideoFrame.from_ndarray(x, format="gbrpf32le"))))
    out = grade_video(src, tmp_path / "graded.exr", str(lut), input_space="rec709")
    assert out == tmp_path / "graded.exr" and out.is_file()
    proc = ocio.Config.CreateRaw().getProcessor(ocio.FileTransform(src=str(lut))) \
        .getDefaultCPUProcessor()
    theirs = x.copy()
    proc.applyRGB(theirs.reshape(-1, 3))
    np.testing.assert_allclose(read_exr(out), theirs, rtol=1e-3, atol=1e-3)
    assert read_exr(out).max() > 2.0  # above 1 is kept


def test_still_to_a_video_suffix_is_refused(tmp_path):
    png = tmp_path / "still.png"
    cc = av.CodecContext.create("png", "w")
    cc.width, cc.height, cc.pix_fmt, cc.time_base = W, H, "rgb48be", Fraction(1, 24)
    png.write_bytes(b"".join(bytes(p) for p in cc.encode(av.VideoFrame.from_ndarray(
        ramp_rgb16(1)[0] * 64, format="rgb48le").reformat(format="rgb48be"))))
    with pytest.raises(MediaError, match="a still grades to a still"):
        grade_video(png, tmp_path / "x.mov", "noir")
    out = grade_video(png, tmp_path / "still_graded.tif", "noir")
    assert out.name == "still_graded.tif" and len(decode_rgb48(out)) == 1


def test_camera_log_input_is_rendered_to_rec709_before_the_look(tmp_path):
    """LogC4 code values through --input-space: the ACES SDR output transform to
    Rec.709, then the look - OCIO's DisplayViewTransform and FileTransform in float."""
    rng = np.random.default_rng(5)
    log = rng.uniform(0.05, 0.85, (H, W, 3)).astype(np.float32)
    src = tmp_path / "logc4.tif"
    cc = av.CodecContext.create("tiff", "w")
    cc.width, cc.height, cc.pix_fmt, cc.time_base = W, H, "rgb48le", Fraction(1, 24)
    codes = np.round(log * 65535).astype(np.uint16)
    src.write_bytes(b"".join(bytes(p) for p in cc.encode(
        av.VideoFrame.from_ndarray(codes, format="rgb48le"))))
    result = CliRunner().invoke(main, ["grade", str(src), "-o", str(tmp_path / "out.exr"),
                                       "--look", "warm_film", "--input-space", "ARRI LogC4"])
    assert result.exit_code == 0, result.output
    cfg = ocio.Config.CreateFromBuiltinConfig("studio-config-v2.1.0_aces-v1.3_ocio-v2.3")
    dv = cfg.getProcessor(ocio.DisplayViewTransform(
        src="ARRI LogC4", display="Rec.1886 Rec.709 - Display",
        view="ACES 1.0 - SDR Video")).getDefaultCPUProcessor()
    x = (codes / 65535.0).astype(np.float32)
    dv.applyRGB(x.reshape(-1, 3))
    theirs = ocio_look(x, "warm_film")
    np.testing.assert_allclose(read_exr(tmp_path / "out.exr"), theirs, atol=2e-3)
    bad = CliRunner().invoke(main, ["grade", str(src), "-o", str(tmp_path / "o.exr"),
                                    "--look", "noir", "--input-space", "Kodak 5219"])
    assert bad.exit_code == 2 and "unknown colour space 'Kodak 5219'" in bad.output


def test_masters_table_names_every_suffix_the_docs_promise():
    assert {".mov", ".mxf", ".mp4", ".mkv", ".tif", ".png", ".exr"} <= set(MASTERS)


def write_png16(path, rgb16: np.ndarray) -> None:
    cc = av.CodecContext.create("png", "w")
    cc.width, cc.height, cc.pix_fmt, cc.time_base = rgb16.shape[1], rgb16.shape[0], "rgb48be", \
        Fraction(1, 24)
    path.write_bytes(b"".join(bytes(p) for p in cc.encode(
        av.VideoFrame.from_ndarray(rgb16, format="rgb48le").reformat(format="rgb48be"))))


def test_an_8_bit_source_keeps_the_exact_8_bit_table_in_a_deep_master(tmp_path):
    from aiprod_post.grading.apply import FrameGrader

    frames = [np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8)
              for i in range(2)]
    src = tmp_path / "eight.mkv"
    with av.open(str(src), "w") as out:
        v = out.add_stream("ffv1", rate=24)
        v.width, v.height, v.pix_fmt = W, H, "bgr0"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="bgr0")
            vf.pts = i
            for p in v.encode(vf):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
    got = decode_rgb48(grade_video(src, tmp_path / "g.mkv", "bleach_bypass"))
    table = FrameGrader(load_look("bleach_bypass"))
    for f, g in zip(frames, got):
        assert np.array_equal(g, table(f).astype(np.uint16) * 257)


def test_cdl_before_the_look_from_the_command_line_matches_opencolorio(tmp_path):
    from aiprod_post.grading.cdl import CDL, write_cdl

    grades = [CDL("a", (1.2, 1.0, 0.8), (0.01, 0.0, -0.02), (1.1, 1.0, 0.9), 0.6),
              CDL("b", (0.9, 1.1, 1.3), (0.0, 0.02, 0.0), (1.0, 1.2, 1.0), 1.4)]
    ccc = write_cdl(grades, tmp_path / "grades.ccc")
    src16 = (smooth_ramp10().astype(np.uint32) * 65535 // 1023).astype(np.uint16)
    png = tmp_path / "plate.png"
    write_png16(png, src16)
    result = CliRunner().invoke(main, ["grade", str(png), "-o", str(tmp_path / "out.tif"),
                                       "--look", "teal_orange", "--cdl", str(ccc),
                                       "--cdl-id", "b"])
    assert result.exit_code == 0, result.output
    b = grades[1]
    t = ocio.CDLTransform(slope=list(b.slope), offset=list(b.offset), power=list(b.power),
                          sat=b.sat)
    t.setStyle(ocio.CDL_ASC)
    group = ocio.GroupTransform([t, ocio.FileTransform(src=str(look_path("teal_orange")),
                                                       interpolation=ocio.INTERP_TETRAHEDRAL)])
    x = (src16 / 65535.0).astype(np.float32)
    ocio.Config.CreateRaw().getProcessor(group).getOptimizedCPUProcessor(
        ocio.OPTIMIZATION_LOSSLESS).applyRGB(x.reshape(-1, 3))
    got = decode_rgb48(tmp_path / "out.tif")[0] / 65535.0
    assert np.abs(got - x).max() < 3e-5
    many = CliRunner().invoke(main, ["grade", str(png), "-o", str(tmp_path / "o2.tif"),
                                     "--look", "noir", "--cdl", str(ccc)])
    assert many.exit_code == 2 and "holds 2 corrections" in many.output


def test_an_image_sequence_in_grades_to_a_sequence_out(tmp_path):
    for i, codes in enumerate(ramp_rgb16(3)):
        write_png16(tmp_path / f"plate_{i:04d}.png", (codes << 6) | (codes >> 4))
    out = grade_video(tmp_path / "plate_%04d.png", tmp_path / "graded_%06d.tif", "noir")
    assert out.name == "graded_%06d.tif"
    assert sorted(p.name for p in tmp_path.glob("graded_*")) == \
        [f"graded_{i:06d}.tif" for i in range(3)]


def test_a_rate_mxf_cannot_hold_is_a_clear_error(tmp_path):
    src = tmp_path / "twelve.mkv"
    with av.open(str(src), "w") as out:
        v = out.add_stream("ffv1", rate=12)
        v.width, v.height, v.pix_fmt = W, H, "bgr0"
        vf = av.VideoFrame.from_ndarray(np.zeros((H, W, 3), np.uint8), format="rgb24")
        for p in v.encode(vf.reformat(format="bgr0")):
            out.mux(p)
        for p in v.encode():
            out.mux(p)
    with pytest.raises(MediaError, match=r"x.mxf: MXF takes 23.976, 24, 25, 29.97, 30, 50, "
                                         r"59.94, 60 frames a second; the source is 12"):
        grade_video(src, tmp_path / "x.mxf", "noir")
    assert not list(tmp_path.glob("*.mxf*"))


def test_a_pq_tagged_source_is_rendered_to_rec709_by_its_tags(tmp_path):
    """No --input-space: the file's PQ transfer tag picks the conversion."""
    from av.video.reformatter import ColorTrc

    src = tmp_path / "pq.mkv"
    codes = smooth_ramp10()
    with av.open(str(src), "w") as out:
        v = out.add_stream("ffv1", rate=24)
        v.width, v.height, v.pix_fmt = W, H, "gbrp10le"
        v.codec_context.color_trc = ColorTrc.SMPTE2084
        v.codec_context.color_primaries = 9  # BT.2020
        vf = av.VideoFrame.from_ndarray((codes << 6) | (codes >> 4), format="rgb48le")
        for p in v.encode(vf.reformat(format="gbrp10le")):
            out.mux(p)
        for p in v.encode():
            out.mux(p)
    with av.open(str(src)) as c:
        assert c.streams.video[0].codec_context.color_trc == ColorTrc.SMPTE2084
    out = grade_video(src, tmp_path / "sdr.mkv", "neutral_rec709")
    cfg = ocio.Config.CreateFromBuiltinConfig("studio-config-v2.1.0_aces-v1.3_ocio-v2.3")
    # the source as decoded (16-bit): PQ's steep top would magnify the 10-to-16-bit step
    x = (decode_rgb48(src)[0] / 65535.0).astype(np.float32)
    cfg.getProcessor(ocio.DisplayViewTransform(
        src="Rec.2100-PQ - Display", display="Rec.1886 Rec.709 - Display",
        view="ACES 1.0 - SDR Video")).getDefaultCPUProcessor().applyRGB(x.reshape(-1, 3))
    theirs = ocio_look(np.clip(x, 0, 1), "neutral_rec709")
    got = decode_rgb48(out)[0] / 65535.0
    assert np.abs(got - theirs).max() < 2e-5


def test_output_space_converts_after_the_look_and_tags_the_file(tmp_path):
    """`--output-space sRGB - Display`: the graded Rec.709 picture (BT.1886, gamma 2.4)
    re-encoded for an sRGB display, display to display: checked against the two standards'
    formulas written out here, and the file tagged sRGB; a space the tags cannot name
    (ACEScct) is tagged unspecified and said; an unknown name is exit 2."""
    from aiprod_post.grading.lut import LUT, write_cube

    identity = write_cube(LUT.identity(2), tmp_path / "identity.cube")
    src16 = (smooth_ramp10().astype(np.uint32) * 65535 // 1023).astype(np.uint16)
    runner = CliRunner()
    clip = tmp_path / "plate.mkv"
    with av.open(str(clip), "w") as out:
        v = out.add_stream("ffv1", rate=24)
        v.width, v.height, v.pix_fmt = src16.shape[1], src16.shape[0], "gbrp16le"
        for p in v.encode(av.VideoFrame.from_ndarray(src16, format="rgb48le")
                          .reformat(format="gbrp16le")):
            out.mux(p)
        for p in v.encode():
            out.mux(p)
    r = runner.invoke(main, ["grade", str(clip), "-o", str(tmp_path / "srgb.mkv"), "--look",
                             str(identity), "--output-space", "sRGB - Display"])
    assert r.exit_code == 0, r.output
    got = decode_rgb48(tmp_path / "srgb.mkv")[0] / 65535.0
    light = (src16 / 65535.0) ** 2.4  # BT.1886 (black at 0): the Rec.709 working space
    want = np.where(light <= 0.0031308, 12.92 * light, 1.055 * light ** (1 / 2.4) - 0.055)
    assert np.abs(got - want).max() < 2e-4
    assert np.abs(got - src16 / 65535.0).max() > 0.02  # a visible change
    with av.open(str(tmp_path / "srgb.mkv")) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.color_primaries, cc.color_trc) == (1, 13)  # BT.709, IEC 61966-2-1
    pq = grade_video(clip, tmp_path / "pq.mov", str(identity),
                     output_space="Rec.2100-PQ - Display")
    with av.open(str(pq)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.color_primaries, cc.color_trc) == (9, 16)  # BT.2020, SMPTE ST 2084
    notes: list[str] = []
    log = grade_video(clip, tmp_path / "log.mkv", str(identity), output_space="ACEScct",
                      notes=notes)
    with av.open(str(log)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.color_primaries, cc.color_trc) == (2, 2)  # unspecified
    assert any("ACEScct" in n and "unspecified" in n for n in notes)
    r = runner.invoke(main, ["grade", str(clip), "-o", str(tmp_path / "x.mkv"), "--look",
                             str(identity), "--output-space", "Rec.9999"])
    assert r.exit_code == 2 and "unknown colour space 'Rec.9999'" in r.output
