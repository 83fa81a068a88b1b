"""16-bit RGB into and out of 10-bit Y'CbCr keeps BT.709's levels on every path that
takes a deep frame through FFmpeg's scaler: the picture stage's deep clips (clips engine
to the shot's 10-bit ProRes), a conform's colourist ``transform`` into a 10-bit master,
the grade (``grade_video``) into ProRes and out of it into 16-bit RGB.

swscale reads and writes 16-bit RGB with 65280 (255 x 256), not 65535, as full scale: a
16-bit white of 65535 came out at 10-bit Y' 943 and every level 0.34 % hot; 10-bit white
(940) decoded to 65283. The reference here is colour-science's BT.709 Y'CbCr (narrow
range, 10 bits) of R'G'B' = code / 65535, and Y' = 64 + 876 (0.2126 R' + 0.7152 G' +
0.0722 B') written out; the masters are decoded and their luma read from the plane.

10-bit Y'CbCr into 8-bit RGB (the conform's dissolves and fades, ``timeline_frames(rgb=True)``,
burnt-in subtitles, the clips engine's 8-bit frames, the report's frames, the QA's small
frames) at the end: swscale's packed rgb24 from 4:2:2 10-bit was 0.8 % dark (Y' 940 gave
253); the reference there is colour-science's BT.709 Y'CbCr -> R'G'B' of the codes."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import opentimelineio as otio
import pytest

from aiprod_post.editing.conform import PROFILES, conform, encode_master

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # colour-science: no matplotlib
    colour = pytest.importorskip("colour")

FPS = Fraction(24)
N = 2
PATCH = 64  # flat patches, a multiple of ProRes's 16-pixel blocks
#: 16-bit R'G'B' patches: black, greys to full white, the primaries at full scale
PATCHES = np.array([(0, 0, 0), (16384, 16384, 16384), (32768, 32768, 32768),
                    (49152, 49152, 49152), (65535, 65535, 65535), (65535, 0, 0),
                    (0, 65535, 0), (0, 0, 65535), (65535, 32768, 0)], np.uint16)
W, H = PATCH * len(PATCHES), PATCH
#: 10-bit Y' codes written straight into a Y'CbCr file's planes (no scaler)
CODES = np.array([64, 119, 283, 502, 721, 900, 940])
TOL = 1.0  # 10-bit codes; the flat-field test below shows ProRes itself adds none


def ramp() -> np.ndarray:
    """The patches as an H x W x 3 uint16 picture."""
    return np.ascontiguousarray(np.repeat(np.repeat(PATCHES[None], PATCH, axis=1), H, axis=0))


def reference_luma(rgb16: np.ndarray) -> np.ndarray:
    """10-bit narrow-range BT.709 Y' of 16-bit full-range R'G'B' (float codes), by
    colour-science, checked against the formula written out."""
    rgb = rgb16.astype(np.float64) / 65535
    y = colour.RGB_to_YCbCr(rgb, K=colour.WEIGHTS_YCBCR["ITU-R BT.709"], out_bits=10,
                            out_legal=True, out_int=False)[..., 0] * 1023
    np.testing.assert_allclose(y, 64 + 876 * (rgb @ [0.2126, 0.7152, 0.0722]), atol=1e-9)
    return y


def luma(path: Path) -> list[np.ndarray]:
    """Each frame's 10-bit Y' plane, read from the plane itself."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            assert f.format.name in ("yuv422p10le", "yuv444p10le"), f.format.name
            p = f.planes[0]
            out.append(np.frombuffer(p, np.uint16).reshape(f.height, p.line_size // 2)
                       [:, :f.width].astype(np.float64))
    return out


def centres(plane: np.ndarray, count: int) -> np.ndarray:
    """The value at each flat patch's centre."""
    return np.array([plane[plane.shape[0] // 2, i * PATCH + PATCH // 2] for i in range(count)])


def yuv_frame(codes: np.ndarray) -> av.VideoFrame:
    """A yuv422p10le frame of grey patches with these Y' codes, Cb = Cr = 512, written
    into its planes (limited range, BT.709)."""
    w = PATCH * len(codes)
    f = av.VideoFrame(w, H, "yuv422p10le")
    for i, p in enumerate(f.planes):
        plane = np.full((p.height, p.line_size // 2), 512, np.uint16)
        if i == 0:
            plane[:, :w] = np.repeat(codes.astype(np.uint16), PATCH)[None]
        p.update(plane.tobytes())
    f.color_range = 1
    f.colorspace = 1
    return f


def write_yuv_prores(path: Path, codes: np.ndarray) -> Path:
    """A 10-bit ProRes 422 HQ clip of grey patches at these Y' codes (no RGB step)."""
    return encode_master(iter([yuv_frame(codes)] * N), N, FPS, PATCH * len(codes), H, path,
                         PROFILES["prores"], None)


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    """A lossless RGB clip of ``rgb`` (FFV1: uint16 as gbrp16le, uint8 as bgr0)."""
    fmt, src = ("gbrp16le", "rgb48le") if rgb.dtype == np.uint16 else ("bgr0", "rgb24")
    with av.open(str(path), "w") as out:
        v = out.add_stream("ffv1", rate=24)
        v.width, v.height, v.pix_fmt = rgb.shape[1], rgb.shape[0], fmt
        vf = av.VideoFrame.from_ndarray(rgb, format=src).reformat(format=fmt)
        for i in range(N):
            vf.pts = i
            out.mux(v.encode(vf))
        out.mux(v.encode())
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("levels")


@pytest.fixture(scope="module")
def identity_cube(folder) -> Path:
    """A look that changes nothing (a 2-point identity .cube)."""
    path = folder / "identity.cube"
    rows = [f"{r} {g} {b}" for b in (0, 1) for g in (0, 1) for r in (0, 1)]
    path.write_text("LUT_3D_SIZE 2\n" + "\n".join(rows) + "\n")
    return path


def assert_levels(master: Path, rgb16: np.ndarray) -> None:
    want = centres(reference_luma(rgb16), len(PATCHES))
    for plane in luma(master):
        got = centres(plane, len(PATCHES))
        assert np.abs(got - want).max() <= TOL, (got.tolist(), np.round(want, 2).tolist())
        assert got[0] == 64 and got[4] == 940


def test_prores_adds_no_error_to_flat_patches(folder):
    """The tolerance's ground: Y' codes written into the planes come back exactly."""
    for plane in luma(write_yuv_prores(folder / "flat.mov", CODES)):
        np.testing.assert_array_equal(centres(plane, len(CODES)), CODES)


def test_16bit_rgb_into_the_shot_and_master_encoder(tmp_path):
    """encode_master (the picture stage's shots, the conform's masters) of uint16 RGB."""
    mov = encode_master(iter([ramp()] * N), N, FPS, W, H, tmp_path / "m.mov",
                        PROFILES["prores"], None)
    assert_levels(mov, ramp())


def _shot(folder: Path, media: Path, look: Path, tmp: Path):
    """A deep clips shot made by the picture stage (make_shot), its picture's path."""
    from aiprod_post.plan import Framing, Scene, Shot
    from aiprod_post.stages.picture import ShotJob, make_shot

    width = W if media.suffix == ".mkv" else PATCH * len(CODES)
    shot = Shot(id="1", framing=Framing.WIDE, duration=N, seed=1)
    scene = Scene(id="1", heading="INT. ROOM - DAY", int_ext="INT", location="ROOM",
                  light="day", shots=[shot])
    job = ShotJob(scene=scene, shot=shot, head=0,
                  engine=("clips", {"media": {"1": str(media)}, "deep": True}, {}),
                  width=width, height=H, fps=FPS, visemes={}, look="identity",
                  look_file=str(look), cdl=None, footage_space=None, key_before=(str(media),),
                  key_middle=(), key_after=(), cast={}, lines=(), conditioned_on=(),
                  cache=str(tmp), store=None, workdir=str(tmp))
    result = make_shot(job, {})
    assert result.error is None, result.error
    return Path(result.mov)


def test_a_deep_clip_of_16bit_rgb_through_the_picture_stage(folder, identity_cube, tmp_path):
    src = write_rgb(folder / "rgb16.mkv", ramp())
    assert_levels(_shot(folder, src, identity_cube, tmp_path), ramp())


def test_a_10bit_clip_keeps_its_codes_through_the_picture_stage(folder, identity_cube,
                                                                tmp_path):
    """The decode side: 10-bit Y' codes to 16-bit RGB and back, each level kept."""
    src = write_yuv_prores(folder / "codes.mov", CODES)
    for plane in luma(_shot(folder, src, identity_cube, tmp_path)):
        assert np.abs(centres(plane, len(CODES)) - CODES).max() <= TOL


def test_a_10bit_clip_is_full_range_16bit_rgb_in_the_clips_engine(folder):
    """The deep frames the engine gives: 10-bit Y' c is (c - 64) / 876 of 65535."""
    from aiprod_post.generation.clips import ClipsEngine
    from aiprod_post.generation.engine import RenderContext
    from aiprod_post.plan import Framing, Scene, Shot

    src = write_yuv_prores(folder / "codes.mov", CODES)
    scene = Scene(id="1", heading="INT. ROOM - DAY", int_ext="INT", location="ROOM",
                  light="day", shots=[])
    engine = ClipsEngine(media={"1": src}, deep=True)
    frames = list(engine.render(Shot(id="1", framing=Framing.WIDE, duration=N, seed=1),
                                RenderContext(scene, PATCH * len(CODES), H, FPS)))
    want = (CODES - 64) / 876 * 65535
    for f in frames:
        assert f.dtype == np.uint16
        got = centres(f[..., 1].astype(np.float64), len(CODES))
        # half a 10-bit code is 37 16-bit codes
        assert np.abs(got - want).max() <= 37, (got.tolist(), np.round(want).tolist())


def _timeline(media: Path, width: int) -> otio.schema.Timeline:
    from aiprod_post.editing.timeline import NAMESPACE

    tl = otio.schema.Timeline(name="levels")
    tl.metadata[NAMESPACE] = {"width": width, "height": H}
    track = otio.schema.Track(kind=otio.schema.TrackKind.Video)
    rng = otio.opentime.TimeRange(otio.opentime.RationalTime(0, 24),
                                  otio.opentime.RationalTime(N, 24))
    track.append(otio.schema.Clip(name="1", source_range=rng,
                                  media_reference=otio.schema.ExternalReference(
                                      target_url=media.as_uri(), available_range=rng)))
    tl.tracks.append(track)
    return tl


def test_a_colourists_transform_into_a_10bit_master(folder, tmp_path):
    """conform(transform=...): the changed clip's frames as 16-bit RGB into ProRes."""
    src = write_yuv_prores(folder / "codes.mov", CODES)
    width = PATCH * len(CODES)
    # a change that gives the 16-bit patches: into the master at BT.709's levels
    to_ramp = ramp()[:, :width]
    master = conform(_timeline(src, width), tmp_path / "t.mov", "prores",
                     transform=lambda clip: (lambda frame: to_ramp))
    want = centres(reference_luma(to_ramp), len(CODES))
    for plane in luma(master):
        assert np.abs(centres(plane, len(CODES)) - want).max() <= TOL
    # a change that changes nothing: the clip's own codes
    master = conform(_timeline(src, width), tmp_path / "i.mov", "prores",
                     transform=lambda clip: (lambda frame: frame.copy()))
    for plane in luma(master):
        assert np.abs(centres(plane, len(CODES)) - CODES).max() <= TOL


def test_the_grade_into_prores_and_into_16bit_rgb(folder, identity_cube, tmp_path):
    """grade_video: 16-bit RGB and 8-bit RGB into ProRes at BT.709's levels; 10-bit
    Y'CbCr into 16-bit RGB (FFV1) at (c - 64) / 876 of 65535."""
    from aiprod_post.grading.grade import grade_video

    src = write_rgb(folder / "rgb16.mkv", ramp())
    assert_levels(grade_video(src, tmp_path / "g16.mov", str(identity_cube)), ramp())

    rgb8 = (ramp() // 257).astype(np.uint8)  # 0, 63, 127, 191, 255
    src8 = write_rgb(tmp_path / "rgb8.mkv", rgb8)
    assert_levels(grade_video(src8, tmp_path / "g8.mov", str(identity_cube)),
                  rgb8.astype(np.uint16) * 257)

    codes = write_yuv_prores(folder / "codes.mov", CODES)
    out = grade_video(codes, tmp_path / "g.mkv", str(identity_cube))
    with av.open(str(out)) as c:
        (f, *_) = c.decode(video=0)
        assert f.format.name == "gbrp16le"
        got = centres(f.to_ndarray(format="rgb48le")[..., 1].astype(np.float64), len(CODES))
    want = (CODES - 64) / 876 * 65535
    assert np.abs(got - want).max() <= 37, (got.tolist(), np.round(want).tolist())


def test_float_rgb_into_ycbcr_at_the_same_levels():
    """float32 RGB (1.0 = white) meets the scaler as 16-bit does: it read 1.0 as 943."""
    from aiprod_post.scaler import ycbcr_source

    rgb = ramp().astype(np.float32) / np.float32(65535)
    f = ycbcr_source(rgb).reformat(format="yuv444p10le", dst_colorspace="ITU709",
                                   dst_color_range="MPEG")
    p = f.planes[0]
    plane = np.frombuffer(p, np.uint16).reshape(H, p.line_size // 2)[:, :W]
    got = centres(plane.astype(np.float64), len(PATCHES))
    want = centres(reference_luma(ramp()), len(PATCHES))
    assert np.abs(got - want).max() <= TOL and got[4] == 940, got.tolist()


# ------------------------------------------------- 10-bit Y'CbCr into 8-bit RGB
#
# swscale's packed 8-bit RGB (rgb24) from horizontally subsampled Y'CbCr above 8 bits
# (ProRes 422's yuv422p10le) came out about 0.8 % dark: Y' 940 gave 253, 502 gave 126.
# The reference is colour-science's BT.709 narrow-range Y'CbCr -> R'G'B' of the codes
# written into the planes (for greys, (Y' - 64) / 876 of 255).

#: full-range R'G'B' (0..1): greys (Y' 64, 283, 502, 721, 940) and saturated colours
COLOURS = np.array([(0, 0, 0), (.25, .25, .25), (.5, .5, .5), (.75, .75, .75), (1, 1, 1),
                    (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, .5, 0), (0, 1, 1), (1, 0, 1),
                    (.2, .4, .8)])
#: their 10-bit narrow-range Y'CbCr codes (colour-science, BT.709)
YCC = colour.RGB_to_YCbCr(COLOURS, K=colour.WEIGHTS_YCBCR["ITU-R BT.709"], out_bits=10,
                          out_legal=True, out_int=True)
CW = PATCH * len(YCC)  # the colour patches' width
#: at most this far from the reference (8-bit codes)
TOL8 = 1.0


def reference_rgb8() -> np.ndarray:
    """The colour patches' Y'CbCr codes as 8-bit full-range R'G'B' (float), by
    colour-science, checked against (Y' - 64) / 876 for the greys."""
    rgb = colour.YCbCr_to_RGB(YCC, K=colour.WEIGHTS_YCBCR["ITU-R BT.709"], in_bits=10,
                              in_legal=True, in_int=True) * 255
    np.testing.assert_array_equal(YCC[:5, 0], [64, 283, 502, 721, 940])
    np.testing.assert_allclose(rgb[:5], np.repeat((YCC[:5, :1] - 64) / 876 * 255, 3, 1),
                               atol=1e-9)
    return rgb


def ycc_frame() -> av.VideoFrame:
    """A yuv422p10le frame of the colour patches, their codes written into its planes."""
    f = av.VideoFrame(CW, H, "yuv422p10le")
    for i, p in enumerate(f.planes):
        plane = np.zeros((p.height, p.line_size // 2), np.uint16)
        plane[:, :p.width] = np.repeat(YCC[:, i].astype(np.uint16), PATCH * p.width // CW)[None]
        p.update(plane.tobytes())
    f.color_range = 1
    f.colorspace = 1
    return f


def rgb_centres(rgb: np.ndarray, count: int = len(YCC)) -> np.ndarray:
    """Each flat patch's centre pixel of an H x W x 3 picture, as float."""
    y, step = rgb.shape[0] // 2, rgb.shape[1] // count
    return np.array([rgb[y, i * step + step // 2] for i in range(count)], np.float64)


def assert_rgb8(rgb: np.ndarray, gain: float = 1.0) -> None:
    assert rgb.dtype == np.uint8, rgb.dtype
    got, want = rgb_centres(rgb), reference_rgb8() * gain
    err = float(np.abs(got - want).max())
    assert err <= TOL8, (err, got[:5, 1].tolist(), np.round(want[:5, 1], 2).tolist())


@pytest.fixture(scope="module")
def colours_mov(folder) -> Path:
    """A 12-frame 10-bit ProRes 422 HQ clip of the colour patches (no RGB step)."""
    path = encode_master(iter([ycc_frame()] * 12), 12, FPS, CW, H, folder / "colours.mov",
                         PROFILES["prores"], None)
    with av.open(str(path)) as c:  # ProRes carries the flat patches' codes exactly
        f = next(c.decode(video=0))
        for i, p in enumerate(f.planes):
            plane = np.frombuffer(p, np.uint16).reshape(p.height, p.line_size // 2)[:, :p.width]
            n = len(YCC)
            np.testing.assert_array_equal(centres(plane, n) if i == 0 else np.array(
                [plane[H // 2, k * p.width // n + p.width // n // 2] for k in range(n)]),
                YCC[:, i])
    return path


def _dissolve_timeline(media: Path) -> otio.schema.Timeline:
    """The clip, a 4-frame dissolve into the same clip (frames 4..7), a 2-frame fade out
    (frames 10, 11): a dissolve of a picture into itself is that picture."""
    from aiprod_post.editing.timeline import NAMESPACE

    tl = otio.schema.Timeline(name="levels8")
    tl.metadata[NAMESPACE] = {"width": CW, "height": H}
    track = otio.schema.Track(kind=otio.schema.TrackKind.Video)
    avail = otio.opentime.TimeRange(otio.opentime.RationalTime(0, 24),
                                    otio.opentime.RationalTime(12, 24))

    def clip(name, start):
        return otio.schema.Clip(name=name, media_reference=otio.schema.ExternalReference(
            target_url=media.as_uri(), available_range=avail),
            source_range=otio.opentime.TimeRange(otio.opentime.RationalTime(start, 24),
                                                 otio.opentime.RationalTime(6, 24)))

    track.append(clip("a", 0))
    track.append(otio.schema.Transition(
        in_offset=otio.opentime.RationalTime(2, 24), out_offset=otio.opentime.RationalTime(2, 24),
        metadata={NAMESPACE: {"kind": "dissolve"}}))
    track.append(clip("b", 4))
    track.append(otio.schema.Transition(
        in_offset=otio.opentime.RationalTime(2, 24), out_offset=otio.opentime.RationalTime(0, 24),
        metadata={NAMESPACE: {"kind": "fade-out"}}))
    tl.tracks.append(track)
    return tl


def test_10bit_ycbcr_to_8bit_rgb_in_the_scaler():
    """aiprod_post.scaler.rgb24: the frame as it is and scaled (the QA's 256 x 144)."""
    from aiprod_post.scaler import rgb24

    assert_rgb8(rgb24(ycc_frame()))
    assert_rgb8(rgb24(ycc_frame(), CW // 2, H // 2))


def test_8bit_ycbcr_to_rgb_in_the_scaler():
    """8-bit Y'CbCr (H.264 footage, the web master) in 8- and 16-bit RGB: every patch within
    half a code of colour-science's BT.709 (0.52: swscale's fixed-point coefficients);
    swscale's own conversion truncates: 0.57 of a code dark on average, up to 1.75 on
    these colours, and its 16-bit RGB 0.4 % dark (Y' 235 → 65021)."""
    from aiprod_post.scaler import rgb24, rgb48

    k = colour.WEIGHTS_YCBCR["ITU-R BT.709"]
    ycc8 = colour.RGB_to_YCbCr(COLOURS, K=k, out_bits=8, out_legal=True, out_int=True)
    want = colour.YCbCr_to_RGB(ycc8, K=k, in_bits=8, in_legal=True, in_int=True)
    f = av.VideoFrame(CW, H, "yuv420p")  # flat patches, an even number of pixels wide
    for i, p in enumerate(f.planes):
        plane = np.zeros((p.height, p.line_size), np.uint8)
        plane[:, :p.width] = np.repeat(ycc8[:, i].astype(np.uint8), PATCH * p.width // CW)[None]
        p.update(plane.tobytes())
    f.color_range, f.colorspace = 1, 1
    err8 = np.abs(rgb_centres(rgb24(f)) - want * 255)
    assert err8.max() <= 0.52, err8.max()
    err16 = np.abs(rgb_centres(rgb48(f)) - want * 65535) / 257  # in 8-bit codes
    assert err16.max() <= 0.52, err16.max()
    # what the scaler alone gives, for the record: the defect these functions avoid
    plain = rgb_centres(f.to_ndarray(format="rgb24")) - want * 255
    assert plain.mean() < -0.25 and np.abs(plain).max() > 0.5


def test_a_dissolve_and_a_fade_of_10bit_prores_in_8bit_rgb(colours_mov):
    """timeline_frames(rgb=True): cut frames, the dissolve's frames (the conform's 8-bit
    blend) and the fade's (the reference times the fade's gain)."""
    from aiprod_post.editing.conform import timeline_frames

    frames = list(timeline_frames(_dissolve_timeline(colours_mov), rgb=True))
    assert len(frames) == 12
    for t, rgb in enumerate(frames):
        gain = (12 - t - 0.5) / 2 if t >= 10 else 1.0
        assert_rgb8(rgb, gain)


def test_a_dissolve_of_10bit_prores_into_a_prores_master(colours_mov, tmp_path):
    """The dissolve's frames (blended at 8 bits) in the master: at the clip's own Y'
    codes, within one 8-bit step (876 / 255 codes) and the rounding of each side."""
    master = conform(_dissolve_timeline(colours_mov), tmp_path / "d.mov", "prores")
    planes = luma(master)
    for t in range(4, 8):
        got = centres(planes[t], len(YCC))
        err = float(np.abs(got - YCC[:, 0]).max())
        assert err <= 876 / 255 / 2 + 1, (t, err, got[:5].tolist())


def test_8bit_frames_of_a_10bit_clip_in_the_clips_engine(colours_mov):
    from aiprod_post.generation.clips import ClipsEngine
    from aiprod_post.generation.engine import RenderContext
    from aiprod_post.plan import Framing, Scene, Shot

    scene = Scene(id="1", heading="INT. ROOM - DAY", int_ext="INT", location="ROOM",
                  light="day", shots=[])
    engine = ClipsEngine(media={"1": colours_mov}, deep=False)
    frames = list(engine.render(Shot(id="1", framing=Framing.WIDE, duration=N, seed=1),
                                RenderContext(scene, CW, H, FPS)))
    assert frames
    for f in frames:
        assert_rgb8(f)


def test_burned_in_subtitles_and_the_report_frame_of_10bit_prores(colours_mov):
    """burn_in converts a decoded frame under a cue to RGB (the rows above the text are
    the picture's); the report's contact sheet reads a master's frame."""
    from aiprod_post.editing.conform import burn_in
    from aiprod_post.editing.subtitles import Cue
    from aiprod_post.stages.report import _frame_at

    with av.open(str(colours_mov)) as c:
        decoded = [next(c.decode(video=0))]
    (rgb,) = burn_in(iter(decoded), [Cue(0.0, 1.0, ["x"])], FPS, CW, H)
    assert_rgb8(rgb[:4])
    assert_rgb8(_frame_at(colours_mov, 3))
