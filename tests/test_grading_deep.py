"""The 16-bit path of the clips engine: a 10-bit ProRes clip is decoded to uint16, kept
through the footage conversion, shot matching, lip-sync and the look in float, and
encoded to a 10-bit ProRes master with no 8-bit step. Checked against OpenColorIO (the
look's .cube and the colour spaces) and the BT.709 matrix written out here."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from aiprod_post.editing.conform import PROFILES, encode_master
from aiprod_post.generation.clips import ClipsEngine
from aiprod_post.generation.engine import RenderContext
from aiprod_post.generation.lipsync import MouthAnimator
from aiprod_post.grading.apply import FloatFrameGrader, FrameGrader
from aiprod_post.grading.looks import load_look, look_path
from aiprod_post.grading.match import apply_affine, apply_curves, match_affine, match_curves
from aiprod_post.plan import Framing, Scene, Shot

ocio = pytest.importorskip("PyOpenColorIO")

W, H, N = 1024, 16, 3
FPS = Fraction(24)


def y_plane(path) -> list[np.ndarray]:
    """The 10-bit luma of each frame of a yuv4xxp10 file, read from the plane itself."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            assert f.format.name.startswith("yuv") and f.format.name.endswith("p10le")
            p = f.planes[0]
            out.append(np.frombuffer(p, np.uint16).reshape(f.height, p.line_size // 2)
                       [:, :f.width].copy())
    return out


def luma10(rgb: np.ndarray) -> np.ndarray:
    """BT.709 Y' in 10-bit limited range (64..940) of R'G'B' on 0..1."""
    return 64 + 876 * (rgb @ np.array([0.2126, 0.7152, 0.0722]))


@pytest.fixture(scope="module")
def ramp_clip(tmp_path_factory):
    """A 10-bit ProRes 422 HQ clip of a grey ramp over ~830 luma codes."""
    path = tmp_path_factory.mktemp("deep") / "1.mov"
    ramp = np.linspace(0.05, 0.95, W)
    rgb = np.repeat(np.round(ramp * 65535).astype(np.uint16)[None, :, None], 3, axis=2)
    rgb = np.ascontiguousarray(np.repeat(rgb, H, axis=0))
    return write_prores(path, [rgb] * N, "prores_ks")


def write_prores(path, frames, encoder: str = "prores_ks"):
    """16-bit RGB frames as a 10-bit ProRes 422 HQ file at 24 fps, by FFmpeg alone
    (BT.709 matrix, limited range)."""
    with av.open(str(path), "w") as out:
        v = out.add_stream(encoder, rate=24)
        v.pix_fmt = "yuv422p10le"
        v.options = {"profile": "3"}
        for i, rgb in enumerate(frames):
            if i == 0:
                v.height, v.width = rgb.shape[:2]
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb48le").reformat(
                format="yuv422p10le", dst_colorspace="ITU709", dst_color_range="MPEG")
            vf.pts = i
            for p in v.encode(vf):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
    return path


def shot_frames(clip, deep: bool) -> list[np.ndarray]:
    engine = ClipsEngine(media={"1": clip}, deep=deep)
    scene = Scene(id="1", heading="INT. ROOM - DAY", int_ext="INT", location="ROOM",
                  light="day", shots=[])
    return list(engine.render(Shot(id="1", framing=Framing.WIDE, duration=N, seed=1), RenderContext(scene, W, H, FPS)))


def test_a_10bit_clip_keeps_its_levels_through_the_look_into_a_10bit_master(ramp_clip,
                                                                             tmp_path):
    look = load_look("warm_film")
    frames = shot_frames(ramp_clip, deep=True)
    assert frames[0].dtype == np.uint16 and frames[0].shape == (H, W, 3)
    grader = FloatFrameGrader(look)
    mov = encode_master((grader(f) for f in frames), N, FPS, W, H, tmp_path / "deep.mov",
                        PROFILES["prores"], None)
    got = y_plane(mov)[0][H // 2].astype(np.int64)

    # the independent reference: the source's own luma codes as grey R'G'B', the look's
    # .cube through OpenColorIO (tetrahedral), then the BT.709 matrix into 10-bit luma
    src = y_plane(ramp_clip)[0][H // 2].astype(np.float64)
    grey = np.repeat(((src - 64) / 876)[:, None], 3, axis=1).astype(np.float32)
    t = ocio.FileTransform(src=str(look_path("warm_film")),
                           interpolation=ocio.INTERP_TETRAHEDRAL)
    ocio.Config.CreateRaw().getProcessor(t).getDefaultCPUProcessor().applyRGB(grey)
    expected = luma10(grey.astype(np.float64))
    assert np.abs(got - expected).max() <= 2.0, np.abs(got - expected).max()
    deep_levels = len(np.unique(got))
    assert deep_levels > 600  # of the ~830 codes in the source ramp

    # the 8-bit path of the same clip has at most 256 (one per 8-bit grey)
    frames8 = shot_frames(ramp_clip, deep=False)
    assert frames8[0].dtype == np.uint8
    table = FrameGrader(look)
    mov8 = encode_master((table(f) for f in frames8), N, FPS, W, H, tmp_path / "8bit.mov",
                         PROFILES["prores"], None)
    assert len(np.unique(y_plane(mov8)[0][H // 2])) <= 256 < deep_levels


def test_an_8bit_clip_stays_8bit_when_deep(tmp_path):
    path = tmp_path / "1.mkv"
    with av.open(str(path), "w") as out:
        v = out.add_stream("ffv1", rate=24)
        v.width, v.height, v.pix_fmt = W, H, "bgr0"
        vf = av.VideoFrame.from_ndarray(np.full((H, W, 3), 99, np.uint8), format="rgb24")
        for p in v.encode(vf.reformat(format="bgr0")):
            out.mux(p)
        for p in v.encode():
            out.mux(p)
    frames = shot_frames(path, deep=True)
    assert frames[0].dtype == np.uint8 and int(frames[0][0, 0, 0]) == 99


def test_shot_matching_in_16_bits_is_the_8bit_curves_without_their_steps():
    rng = np.random.default_rng(5)
    ref8 = rng.integers(40, 220, (30, 50, 3), dtype=np.uint8)
    shot16 = (rng.normal(0.35, 0.1, (30, 50, 3)).clip(0, 1) * 65535).astype(np.uint16)
    shot8 = ((shot16.astype(np.float64) / 257) + 0.5).astype(np.uint8)
    affine = match_affine(shot16, ref8)
    # independent: Reinhard's per-channel mean and spread, written out here
    for c in range(3):
        a, b = shot16[..., c] / 65535.0, ref8[..., c] / 255.0
        k = b.std() / a.std()
        mapped = (0.5 - a.mean()) * k + b.mean()
        assert abs(0.5 * affine[0][c] + affine[1][c] - (0.5 + 0.7 * (mapped - 0.5))) < 1e-12
    matched16 = apply_affine(shot16, affine)
    matched8 = apply_curves(shot8, match_curves(shot8, ref8))
    assert np.abs(matched16 / 257.0 - matched8).max() <= 1.5  # the 8-bit curve's rounding
    assert len(np.unique(matched16)) > 256
    # in the grader, in the same pass as the look (as the 8-bit grader takes the curves),
    # with no rounding between them
    look = load_look("teal_orange")
    one_pass = FloatFrameGrader(look)(shot16, match=affine)
    x = apply_affine(shot16.astype(np.float32) / np.float32(65535), affine)
    two_steps = np.clip(FloatFrameGrader(look)(x) * 65535 + 0.5, 0, 65535).astype(np.uint16)
    assert np.abs(one_pass.astype(int) - two_steps).max() <= 1


def test_lipsync_paints_16bit_frames_as_it_paints_8bit_ones():
    frame16 = np.full((120, 160, 3), 40000, np.uint16)
    frame8 = np.full((120, 160, 3), round(40000 / 257), np.uint8)
    out = []
    for frame in (frame8, frame16):
        animator = MouthAnimator(24.0)
        animator.box = np.array([50.0, 20.0, 60.0, 70.0])  # a face where the detector saw one
        out.append(animator(frame, 1, "D"))
    assert out[1].dtype == np.uint16 and out[0].dtype == np.uint8
    assert (out[1] != frame16).any()
    assert np.abs(out[1] / 257.0 - out[0]).max() <= 1.0


def test_a_shot_is_graded_in_its_own_depth_with_its_match():
    """graded_frames + ShotGrader: 8-bit frames exactly as the 8-bit table with the match
    curves, uint16 ones in float with the gain and offset, against an 8-bit or a 16-bit
    reference keyframe alike; a repeated frame is the same array again."""
    from aiprod_post.grading.cdl import CDL
    from aiprod_post.grading.shot import ShotGrader, graded_frames

    rng = np.random.default_rng(9)
    look, cdl = load_look("noir"), CDL("x", slope=(1.1, 1.0, 0.9))
    ref8 = rng.integers(30, 200, (20, 30, 3), dtype=np.uint8)
    ref16 = ref8.astype(np.uint16) * 257
    f8 = rng.integers(60, 250, (20, 30, 3), dtype=np.uint8)
    f16 = f8.astype(np.uint16) * 257 + rng.integers(0, 257, f8.shape).astype(np.uint16)
    grader = ShotGrader(look, cdl=cdl)
    out8 = list(graded_frames(iter([f8, f8]), grader, ref8))
    assert out8[1] is out8[0]
    np.testing.assert_array_equal(out8[0], FrameGrader(look, cdl=cdl)(f8, match_curves(f8, ref8)))
    assert np.abs(match_curves(f8, ref16).astype(int) - match_curves(f8, ref8)).max() == 0
    for ref in (ref8, ref16):
        (out16,) = graded_frames(iter([f16]), grader, ref)
        want = FloatFrameGrader(look, cdl=cdl)(f16, match=match_affine(f16, ref))
        np.testing.assert_array_equal(out16, want)
        assert out16.dtype == np.uint16 and len(np.unique(out16)) > 256
    # and the 16-bit result is the 8-bit one but for its steps
    assert np.abs(out16 / 257.0 - out8[0]).mean() < 1.0
