"""The animatic and clips engines on real rendered frames."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from aiprod_post.errors import AiprodError, MediaError
from aiprod_post.plan import CameraMove, Framing, Scene, Shot
from aiprod_post.planner import plan_source
from aiprod_post.audio.tts import EspeakEngine, Voice
from aiprod_post.audio.visemes import mouth_cues, shapes_per_frame
from aiprod_post.generation.animatic import character_sheet, render_reference_sheet
from aiprod_post.generation.coherence import coherence
from aiprod_post.generation.engine import KeyframeStore, RenderContext, engine_by_name

W, H = 480, 270
FPS = Fraction(24)


def shot(**kw) -> Shot:
    base = dict(id="1", framing=Framing.WIDE, duration=12, seed=7, characters=["NELL", "IVO"])
    base.update(kw)
    return Shot(**base)


def scene(**kw) -> Scene:
    base = dict(id="1", heading="EXT. HARBOUR PIER - DUSK", int_ext="EXT",
                location="HARBOUR PIER", light="dusk", shots=[])
    base.update(kw)
    return Scene(**base)


def frames_of(engine, s: Shot, sc: Scene, **ctx) -> list[np.ndarray]:
    return list(engine.render(s, RenderContext(sc, W, H, FPS, **ctx)))


ANIMATIC = engine_by_name("animatic")


def test_frames_have_the_plan_size_count_and_type():
    out = frames_of(ANIMATIC, shot(duration=10), scene())
    assert len(out) == 10
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in out)
    odd = list(ANIMATIC.render(shot(duration=3), RenderContext(scene(), 322, 180, Fraction(25))))
    assert odd[0].shape == (180, 322, 3)


def test_render_is_deterministic():
    a = [hashlib.sha256(f.tobytes()).hexdigest() for f in frames_of(ANIMATIC, shot(), scene())]
    b = [hashlib.sha256(f.tobytes()).hexdigest() for f in frames_of(ANIMATIC, shot(), scene())]
    assert a == b


def test_keyframes_are_returned_for_conditioning():
    r = ANIMATIC.render(shot(), RenderContext(scene(), W, H, FPS))
    frames = list(r)
    assert np.array_equal(r.keyframes["first"].image, frames[0])
    assert np.array_equal(r.keyframes["last"].image, frames[-1])
    assert r.keyframes["first"].set_key == "EXT:HARBOUR PIER"


def test_time_of_day_drives_the_light():
    day = frames_of(ANIMATIC, shot(duration=1), scene(light="day"))[0].mean()
    night = frames_of(ANIMATIC, shot(duration=1), scene(light="night"))[0].mean()
    assert night < 0.5 * day


def test_a_location_looks_the_same_when_the_story_returns_to_it():
    pier = frames_of(ANIMATIC, shot(duration=1, characters=[]), scene())[0]
    pier_again = frames_of(ANIMATIC, shot(duration=1, characters=[], id="5", seed=99),
                           scene(id="5"))[0]
    booth = frames_of(ANIMATIC, shot(duration=1, characters=[]),
                      scene(heading="INT. TICKET BOOTH - DUSK", int_ext="INT",
                            location="TICKET BOOTH"))[0]
    assert np.array_equal(pier, pier_again)
    assert coherence(pier, pier_again) > coherence(pier, booth) + 0.3


def test_camera_moves_move_the_picture():
    def shift(move: CameraMove) -> float:
        f = frames_of(ANIMATIC, shot(camera_move=move, characters=[], duration=24), scene())
        a = f[0].mean(axis=2).astype(np.float32)
        b = f[-1].mean(axis=2).astype(np.float32)
        import cv2
        (dx, dy), _ = cv2.phaseCorrelate(a, b)
        return abs(dx) + abs(dy)

    assert shift(CameraMove.STATIC) < 0.5
    assert shift(CameraMove.PAN) > W * 0.1
    assert shift(CameraMove.TILT) > H * 0.05
    zoomed = frames_of(ANIMATIC, shot(camera_move=CameraMove.ZOOM, characters=[], duration=24),
                       scene())
    assert not np.array_equal(zoomed[0], zoomed[-1])


def test_characters_are_stable_figures_seeded_by_name():
    assert character_sheet("NELL").coat == character_sheet("nell").coat
    assert character_sheet("NELL") != character_sheet("IVO")
    sheet = render_reference_sheet("NELL", 256)
    assert sheet.shape == (256, 256, 3) and (sheet != 128).any()


def test_eyes_blink():
    f = frames_of(ANIMATIC, shot(framing=Framing.CLOSE_UP, characters=["NELL"], duration=130),
                  scene())
    diffs = [np.abs(f[i].astype(int) - f[0].astype(int)).sum() for i in range(len(f))]
    assert max(diffs) > 0 and min(diffs[1:]) == 0  # some frames differ (blinks), most do not


def test_title_card_shows_the_text():
    f = frames_of(ANIMATIC, shot(framing=Framing.TITLE, title="THE END", characters=[],
                                 duration=2), scene())[0]
    centre = f[H // 3: 2 * H // 3, W // 4: 3 * W // 4]
    assert f[:10].max() == 0 and centre.max() > 200


def test_mouth_follows_the_speech_within_one_frame():
    speech = EspeakEngine().synthesize(
        "Bob may buy a map, but the bay is wide and open at night.", Voice())
    n = int(speech.duration * 24) + 6
    cues = mouth_cues(speech.phonemes, speech.duration, FPS)
    track = shapes_per_frame(cues, n, FPS)
    frames = frames_of(ANIMATIC, shot(framing=Framing.CLOSE_UP, characters=["NELL"], duration=n),
                       scene(), visemes={"NELL": track})
    rest = frames_of(ANIMATIC, shot(framing=Framing.CLOSE_UP, characters=["NELL"], duration=n),
                     scene())
    # mouth opening measured in the picture: pixels that differ from the resting face
    opening = np.array([np.abs(a.astype(int) - b.astype(int)).sum() for a, b in zip(frames, rest)],
                       float)
    fs = speech.sample_rate
    env = np.array([np.sqrt(np.mean(speech.samples[int(i / 24 * fs):int((i + 1) / 24 * fs)] ** 2))
                    if i / 24 < speech.duration else 0.0 for i in range(n)])
    a, b = opening - opening.mean(), env - env.mean()
    lags = list(range(-5, 6))
    score = [float(np.dot(np.roll(a, k)[5:-5], b[5:-5])) for k in lags]
    best = lags[int(np.argmax(score))]
    assert abs(best) <= 1, f"mouth is {best} frames off the speech"


def test_coherence_is_better_within_a_scene_than_across(example_path):
    plan, _ = plan_source(example_path)
    store = KeyframeStore()
    firsts: list[tuple[str, np.ndarray]] = []
    for sc, sh in plan.shots():
        small = sh.model_copy(update={"duration": 1})
        r = ANIMATIC.render(small, RenderContext(sc, W, H, plan.fps, store.for_shot(sc, sh)))
        for frame in r:
            firsts.append((sc.id, frame))
        store.add_shot(sc, sh, r.keyframes)
    within = [coherence(a, b) for (sa, a), (sb, b) in zip(firsts, firsts[1:]) if sa == sb]
    across = [coherence(a, b) for (sa, a), (sb, b) in zip(firsts, firsts[1:]) if sa != sb]
    assert np.mean(within) > np.mean(across) + 0.1


def test_unknown_engine():
    with pytest.raises(AiprodError, match="unknown engine 'sora'"):
        engine_by_name("sora")


# ---------------------------------------------------------------- clips


def write_frames(path: Path, frames, rate: int = 24) -> Path:
    """A lossless H.264 clip of the given RGB frames."""
    frames = list(frames)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=rate)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv444p"
        s.options = {"qp": "0"}
        for img in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def write_clip(path: Path, n: int, rate: int, size=(320, 240)) -> Path:
    """A clip whose frame k is filled with grey level 10 * k (so frames can be identified)."""
    return write_frames(path, (np.full((size[1], size[0], 3), 10 * k, np.uint8)
                               for k in range(n)), rate)


def test_clips_are_trimmed_held_looped_and_rate_conformed(tmp_path):
    clip = write_clip(tmp_path / "3A.mp4", 6, 12)
    eng = engine_by_name("clips", folder=tmp_path)
    sc = scene()
    f = frames_of(eng, shot(id="3A", duration=16), sc)  # 6 frames at 12 fps = 12 at 24 fps
    levels = [int(round(x.mean() / 10)) for x in f]
    assert levels[:12] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5] and levels[12:] == [5] * 4
    looped = frames_of(engine_by_name("clips", media={"3A": clip}, fill="loop"),
                       shot(id="3A", duration=14), sc)
    assert [int(round(x.mean() / 10)) for x in looped][12:] == [0, 1]
    trimmed = frames_of(eng, shot(id="3A", duration=4), sc)
    assert len(trimmed) == 4 and trimmed[0].shape == (H, W, 3)


def test_clip_letterbox_and_crop(tmp_path):
    write_clip(tmp_path / "1.mp4", 2, 24, size=(200, 200))
    box = frames_of(engine_by_name("clips", folder=tmp_path, fit="letterbox"), shot(duration=1),
                    scene())[0]
    crop = frames_of(engine_by_name("clips", folder=tmp_path, fit="crop"), shot(duration=1),
                     scene())[0]
    assert box[:, :50].max() == 0 and box[:, W // 2].min() == 0  # pillarboxed sides, black frame
    assert crop.shape == (H, W, 3)


def test_missing_or_broken_clip_names_the_shot_and_path(tmp_path):
    with pytest.raises(AiprodError, match="no clip for shot 9"):
        engine_by_name("clips", folder=tmp_path).render(shot(id="9"),
                                                        RenderContext(scene(), W, H, FPS))
    bad = tmp_path / "2.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(MediaError) as err:
        list(engine_by_name("clips", folder=tmp_path).render(shot(id="2"),
                                                             RenderContext(scene(), W, H, FPS)))
    assert "2.mp4" in str(err.value) and "shot 2" in str(err.value)


# ---------------------------------------------------------------- lip-sync on footage


def test_mouth_on_a_filmed_face_follows_the_visemes(tmp_path):
    from skimage import data  # the astronaut photograph (NASA, public domain)

    from aiprod_post.generation.lipsync import find_face
    face_img = data.astronaut()
    x, y, w, h = find_face(face_img)
    write_frames(tmp_path / "1.mp4", [face_img] * 30)
    track = ["X"] * 10 + ["D"] * 10 + ["X"] * 10
    eng = engine_by_name("clips", folder=tmp_path, fit="letterbox")
    r = eng.render(shot(duration=30, characters=["NELL"]),
                   RenderContext(scene(), 512, 512, FPS, visemes={"NELL": track}))
    frames = list(r)
    rest, open_ = frames[5].astype(int), frames[15].astype(int)
    changed = np.abs(open_ - rest).sum(axis=2) > 30
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 100 and not r.notes
    # the change is the mouth: inside the lower part of the detected face
    assert x <= xs.min() and xs.max() <= x + w and y + h * 0.5 <= ys.min() and ys.max() <= y + h * 1.1
    assert np.abs(frames[25].astype(int) - rest).max() <= 2  # closed again: untouched


def test_footage_without_a_face_is_left_alone_and_reported(tmp_path):
    write_clip(tmp_path / "1.mp4", 12, 24)
    eng = engine_by_name("clips", folder=tmp_path)
    plain = list(eng.render(shot(duration=12), RenderContext(scene(), W, H, FPS)))
    r = eng.render(shot(duration=12), RenderContext(scene(), W, H, FPS,
                                                    visemes={"NELL": ["D"] * 12}))
    talked = list(r)
    assert all(np.array_equal(a, b) for a, b in zip(plain, talked))
    assert r.notes and "no face found" in r.notes[0]


@pytest.mark.parametrize("int_ext", ["EXT", "INT"])
def test_the_depth_pass_is_the_animatics_geometry_frame_for_frame(int_ext):
    """The animatic's depth pass (the depth IC-LoRA's control video): one grey frame per
    picture frame; far above the ground line (the sky, or an interior's back wall), nearer
    row by row down the ground; each figure nearer than the ground seen behind it, and
    where the picture has it (the same camera, a pan moving both alike)."""
    eng = engine_by_name("animatic")
    sc = scene(int_ext=int_ext)
    s = shot(framing=Framing.WIDE, characters=["NELL"], camera_move=CameraMove.PAN,
             duration=12)
    ctx = RenderContext(sc, 192, 108, Fraction(24))
    depth = list(eng.depth(s, ctx))
    assert len(depth) == 12 and depth[0].shape == (108, 192, 3)
    assert all(np.array_equal(d[..., 0], d[..., 2]) for d in depth)  # grey
    d0 = depth[0][..., 0].astype(int)
    mask = eng.figure_masks(s, ctx)["NELL"]
    assert mask.sum() > 200
    cols = ~mask.any(axis=0)  # columns the figure does not cross
    ground = d0[:, cols].mean(axis=1)
    assert np.all(np.diff(ground[int(108 * 0.75):]) >= 0)  # nearer down the ground
    assert ground[-1] > ground[int(108 * 0.3)] + 40
    if int_ext == "EXT":
        assert ground[:int(108 * 0.3)].max() == 0  # the sky
    rows = np.nonzero(mask.any(axis=1))[0]
    body = rows[rows < rows.max() - 5]  # above the feet
    behind = np.array([d0[r, cols].mean() for r in body])
    figure = np.array([d0[r, mask[r]].mean() for r in body])
    assert np.all(figure > behind + 10)
    # the pan moves the depth as the camera moves the picture: the last frame is the first
    # shifted by the camera's own translation (to the pixel)
    from aiprod_post.generation.animatic import _camera, _rng, _smooth_noise

    shake = _smooth_noise(_rng("shake", s.seed), 12)
    moved = _camera(s, 11, 12, 192, 108, shake)[0, 2] - _camera(s, 0, 12, 192, 108, shake)[0, 2]
    last = depth[-1][..., 0].astype(int)
    band = slice(75, 117)
    errors = {k: np.abs(np.roll(d0, k, axis=1)[:, band] - last[:, band]).mean()
              for k in range(-70, 71)}
    best = min(errors, key=errors.get)
    assert abs(moved) > 3 and abs(best - moved) <= 1.0


def test_the_pose_pass_puts_openpose_skeletons_on_the_figures():
    """The animatic's pose pass (the pose IC-LoRA's control video): OpenPose's 18-keypoint
    skeleton in OpenPose's colours on black, on each figure of the picture (the joints
    inside the figure's mask, the neck between the shoulders above the hips), moving with a
    pan as the camera does; nothing on a title card."""
    from aiprod_post.generation.animatic import POSE_COLOURS

    eng = engine_by_name("animatic")
    sc = scene()
    s = shot(framing=Framing.WIDE, characters=["NELL", "IVO"], duration=6)
    ctx = RenderContext(sc, 256, 144, Fraction(24))
    pose = list(eng.pose(s, ctx))
    assert len(pose) == 6 and pose[0].shape == (144, 256, 3) and pose[0].dtype == np.uint8
    masks = eng.figure_masks(s, ctx)
    body = masks["NELL"] | masks["IVO"]
    drawn = pose[0].any(axis=2)
    assert drawn.sum() > 100
    grown = cv2.dilate(body.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert (drawn & ~grown).sum() / drawn.sum() < 0.02  # on the figures, not beside them
    for name, mask in masks.items():
        xs = np.nonzero(mask.any(axis=0))[0]
        part = pose[0][:, xs.min():xs.max() + 1]
        colours = {tuple(c) for c in part.reshape(-1, 3)}
        # every one of OpenPose's limb colours is on each figure facing the camera
        assert sum(c in colours for c in POSE_COLOURS[:17]) >= 15, name
    pan = s.model_copy(update={"camera_move": CameraMove.PAN})
    panned = list(eng.pose(pan, ctx))
    from aiprod_post.generation.animatic import _camera, _rng, _smooth_noise

    shake = _smooth_noise(_rng("shake", s.seed), 6)
    moved = _camera(pan, 5, 6, 256, 144, shake)[0, 2] - _camera(pan, 0, 6, 256, 144, shake)[0, 2]
    cx = [np.nonzero(p.any(axis=2))[1].mean() for p in (panned[0], panned[-1])]
    assert abs(moved) > 3 and abs((cx[1] - cx[0]) - moved) < 1.5
    title = list(eng.pose(shot(framing=Framing.TITLE, title="THE END", characters=[]), ctx))
    assert all(not f.any() for f in title)


def test_the_over_the_shoulder_foreground_is_nearest_in_the_depth_pass():
    eng = engine_by_name("animatic")
    s = shot(framing=Framing.OVER_THE_SHOULDER, characters=["NELL", "IVO"], duration=2)
    ctx = RenderContext(scene(int_ext="INT"), 192, 108, Fraction(24))
    d = next(eng.depth(s, ctx))[..., 0].astype(int)
    facing = eng.figure_masks(s, ctx)["NELL"]
    assert d[facing].mean() < d.max() - 20 and d.max() == 255  # the foreground at 255
