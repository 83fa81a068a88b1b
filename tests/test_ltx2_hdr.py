"""The ltx2 engine's HDR pass on the CPU (the tiny random LTX-2 of test_ltx2 and a tiny
HDR IC-LoRA): the SDR generation is the reference of LTX2HDRPipeline, whose scene-linear
frames reach the shot's HDR intermediate and the hdr-pq / hdr-hlg masters with no 8-bit
step, checked against colour-science's ST 2084 and BT.2100 HLG (an independent
reference)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aiprod_post.generation.ltx import drop_module_mocks

torch = pytest.importorskip("torch", reason="the ltx extra (torch, diffusers) is not installed")
drop_module_mocks()
pytest.importorskip("diffusers.pipelines.ltx2.pipeline_ltx2_hdr_lora",
                    reason="diffusers without LTX-2's HDR LoRA pipeline (0.42 or later)")
pytest.importorskip("peft", reason="LoRAs need peft (the ltx extra)")
colour = pytest.importorskip("colour")
cm = colour.models

import av  # noqa: E402
import opentimelineio as otio  # noqa: E402
from test_ltx2 import (FPS, SETTINGS, H, W, build_tiny_lora, build_tiny_ltx2,  # noqa: E402
                       ctx, shot)

from aiprod_post.editing.conform import (PROFILES, conform, encode_master,  # noqa: E402
                                         hdr_intermediate, probe)
from aiprod_post.editing.timeline import NAMESPACE, path_to_url  # noqa: E402
from aiprod_post.errors import AiprodError  # noqa: E402
from aiprod_post.generation.engine import engine_by_name  # noqa: E402
from aiprod_post.hdr import intermediate_for  # noqa: E402

N = 10  # frames of the shot: generated as 13 (the tiny VAE's ×4 in time), trimmed
STEP_12 = 1 / 4095  # one 12-bit code value of a full-range signal


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_ltx2(tmp_path_factory.mktemp("tiny-ltx2-hdr"))


@pytest.fixture(scope="module")
def hdr_lora(tmp_path_factory) -> Path:
    return build_tiny_lora(tmp_path_factory.mktemp("hdr-lora") / "hdr.safetensors", 11)


def bt2020(lin709: np.ndarray) -> np.ndarray:
    """colour-science's BT.709 → BT.2020 (linear light), negatives clipped."""
    cs = colour.RGB_COLOURSPACES
    return np.clip(colour.RGB_to_RGB(lin709.astype(np.float64), cs["ITU-R BT.709"],
                                     cs["ITU-R BT.2020"]), 0.0, None)


def luma_signal(f) -> np.ndarray:
    """A 10-bit Y'CbCr frame's luma signal E'Y in [0, 1] (H, W), limited range (64-940):
    read off its Y' plane, not through the conform's own scaler."""
    y = np.frombuffer(f.planes[0], np.uint16).reshape(-1, f.planes[0].line_size // 2)
    return (y[:f.height, :f.width].astype(np.float64) - 64) / 876


def decode_luma(path: Path) -> np.ndarray:
    """A master's luma signal (F, H, W), decoded."""
    with av.open(str(path)) as c:
        return np.stack([luma_signal(f) for f in c.decode(video=0)])


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.2020's non-constant-luminance E'Y of an R'G'B' signal (colour-science's weights)."""
    k = colour.WEIGHTS_YCBCR["ITU-R BT.2020"]
    return rgb @ np.array([k[0], 1 - k[0] - k[1], k[1]])


def sdr_picture(f) -> np.ndarray:
    """A decoded frame of 10-bit BT.709 Y'CbCr (ProRes 422's yuv422p10le) as the 8-bit
    R'G'B' picture BT.709 gives, from its planes by colour-science's Y'CbCr → R'G'B', not
    through FFmpeg's scaler: chroma brought to full width linearly from centre-sited
    samples (swscale's default siting), each channel rounded to 8 bits."""
    y, cb, cr = (np.frombuffer(p, np.uint16).reshape(-1, p.line_size // 2)
                 [:p.height, :p.width].astype(np.float64) for p in f.planes)

    def full_width(c: np.ndarray) -> np.ndarray:
        left, right = np.roll(c, 1, 1), np.roll(c, -1, 1)
        left[:, 0], right[:, -1] = c[:, 0], c[:, -1]
        return np.stack([0.75 * c + 0.25 * left, 0.75 * c + 0.25 * right], -1
                        ).reshape(c.shape[0], -1)

    assert y.shape[1] == 2 * cb.shape[1] and y.shape[0] == cb.shape[0], f.format.name
    rgb = colour.YCbCr_to_RGB(np.stack([y, full_width(cb), full_width(cr)], -1),
                              K=colour.WEIGHTS_YCBCR["ITU-R BT.709"], in_bits=10,
                              in_legal=True, in_int=True)
    return np.floor(np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def edit(*items) -> otio.schema.Timeline:
    """A one-track timeline at the test's size and rate: ``(media, first, frames)`` clips,
    ``("fade-in", frames)`` and ``("dissolve", frames)`` (half each side) between them."""
    rt = lambda v: otio.opentime.RationalTime(v, int(FPS))  # noqa: E731
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    for item in items:
        if isinstance(item[0], str):
            kind, n = item
            before = 0 if kind == "fade-in" else n // 2
            track.append(otio.schema.Transition(in_offset=rt(before), out_offset=rt(n - before),
                                                metadata={NAMESPACE: {"kind": kind}}))
        else:
            path, first, n = item
            track.append(otio.schema.Clip(
                name=path.stem, media_reference=otio.schema.ExternalReference(path_to_url(path)),
                source_range=otio.opentime.TimeRange(rt(first), rt(n))))
    tl = otio.schema.Timeline(name="hdr", metadata={NAMESPACE: {
        "width": W, "height": H, "rate": str(FPS)}})
    tl.tracks.append(track)
    return tl


# colour-science's HLG OETF takes the log of both branches of its np.where
@pytest.mark.filterwarnings("ignore:invalid value encountered in log:RuntimeWarning")
def test_hdr_pass_linear_frames_reach_pq_and_hlg_masters(model_dir, hdr_lora, tmp_path,
                                                         monkeypatch):
    from diffusers import LTX2HDRPipeline, LTX2InContextPipeline

    made, hdr_calls = [], []
    sdr_call, hdr_call = LTX2InContextPipeline.__call__, LTX2HDRPipeline.__call__

    def spy_sdr(self, *a, **kw):
        out = sdr_call(self, *a, **kw)
        made.append(out.frames[0].clone())
        return out

    def spy_hdr(self, *a, **kw):
        hdr_calls.append(kw)
        return hdr_call(self, *a, **kw)

    monkeypatch.setattr(LTX2InContextPipeline, "__call__", spy_sdr)
    monkeypatch.setattr(LTX2HDRPipeline, "__call__", spy_hdr)
    eng = engine_by_name("ltx2", model=str(model_dir), hdr_lora=str(hdr_lora), **SETTINGS)
    r = eng.render(shot(N), ctx())
    assert r.hdr
    linear, sdr = [], []
    mov = tmp_path / "1A.mov"

    def tap(frames):
        for f in frames:
            sdr.append(f)
            yield f

    with hdr_intermediate(intermediate_for(mov), FPS, W, H) as write:
        r.linear = lambda f: (linear.append(f.copy()), write(f))
        encode_master(tap(r), N, FPS, W, H, mov, PROFILES["prores"], None)
    # the HDR pass's reference is the SDR generation itself, as floats (no 8-bit step)
    assert eng.generations == [(13, 32, 32, "LTX2InContextPipeline"),
                               (13, 32, 32, "LTX2HDRPipeline")]
    ref = hdr_calls[0]["reference_conditions"][0]
    assert ref.frames.dtype == torch.float32 and torch.equal(ref.frames, made[0].float())
    assert eng.identity["loras"]["hdr"]["sha256"]  # the manifest names it by hash
    lin = np.stack(linear)
    assert lin.dtype == np.float32 and lin.shape == (N, H, W, 3)
    assert (lin > 1.0).mean() > 0.05 and lin.max() > 4.0  # linear HDR: above SDR white
    above = 100 * (lin > 1).any(axis=-1).mean()
    assert f"HDR: peak {lin.max():.1f}x diffuse white ({min(lin.max() * 203, 10000):.0f} " \
        f"cd/m2 in PQ), {above:.1f} % of pixels above white" in r.notes  # in the report
    # the SDR frames: the same light clipped at diffuse white, BT.1886-encoded
    want_sdr = cm.eotf_inverse_BT1886(np.clip(lin, 0, 1).astype(np.float64))
    assert np.abs(np.stack(sdr) / 255.0 - want_sdr).max() <= 0.5 / 255 + 1e-6

    # the HDR intermediate: tagged BT.2020 / PQ, and its code values, mapped back by the
    # PQ EOTF, are the engine's light at 203 cd/m² diffuse white within 12-bit steps
    info = probe(intermediate_for(mov))["video"]
    assert (info["primaries"], info["transfer"], info["matrix"], info["range"]) == (9, 16, 0, 2)
    with av.open(str(intermediate_for(mov))) as c:
        pq = np.stack([f.to_ndarray(format="rgb48le") for f in c.decode(video=0)]) / 65535.0
    nits = np.minimum(bt2020(lin) * 203.0, 10000.0)
    assert np.abs(cm.eotf_ST2084(pq) - nits).max() < 0.05 * nits.max()
    assert np.abs(pq - cm.eotf_inverse_ST2084(nits)).max() <= 0.5 * STEP_12
    # (an 8-bit SDR step would have capped the light at white: 203 cd/m², PQ 0.58)
    assert cm.eotf_ST2084(pq).max() > 4 * 203

    # the masters from a timeline of the shot's SDR media: hdr-pq and hdr-hlg read the HDR
    # intermediate beside it. What goes to the encoder (10-bit 4:2:0 Y'CbCr) is the
    # engine's light within the master's own quantisation: luma (full resolution) within
    # one 10-bit code; the encoded master (lossy HEVC, CRF 18) on each frame's mean
    tl = edit((mov, 0, N))
    # HDR10's content light levels of that timeline: the engine's light, per pixel its
    # brightest channel (the intermediate's 16-bit PQ steps are far below 1 %)
    from aiprod_post.editing.conform import light_levels

    max_cll, max_fall = light_levels(tl, None)
    brightest = nits.max(axis=-1)
    assert abs(max_cll - brightest.max()) <= 1 + 0.005 * brightest.max()
    assert abs(max_fall - brightest.mean(axis=(1, 2)).max()) <= 1 + 0.005 * max_fall
    for profile, want in (("hdr-pq", cm.eotf_inverse_ST2084(nits)),
                          ("hdr-hlg", cm.oetf_BT2100_HLG(np.clip(bt2020(lin) * 0.2646, 0, 1)))):
        sent: list = []
        master = conform(tl, tmp_path / f"{profile}.mov", profile,
                         watch=lambda f: sent.append(luma_signal(f)))
        tags = probe(master)["video"]
        assert (tags["primaries"], tags["transfer"], tags["matrix"]) == \
            (9, PROFILES[profile].transfer, 9)
        assert np.abs(np.stack(sent) - luma(want)).max() <= 1 / 876, profile
        got = decode_luma(master)
        assert np.abs(got.mean(axis=(1, 2)) - luma(want).mean(axis=(1, 2))).max() < 3 / 1023
        if profile == "hdr-pq":  # light above diffuse white reached the master
            assert cm.eotf_ST2084(np.stack(sent)).max() > 4 * 203
    # and the SDR master from the same shot: the SDR picture (clipped at white), on luma
    # (BT.709, 8-bit limited range), each frame's mean
    web = conform(tl, tmp_path / "web.mp4", "h264")
    with av.open(str(web)) as c:
        y = np.stack([np.frombuffer(f.planes[0], np.uint8).reshape(
            -1, f.planes[0].line_size)[:H, :W] for f in c.decode(video=0)])
    k = colour.WEIGHTS_YCBCR["ITU-R BT.709"]
    want_y = (np.stack(sdr) / 255.0) @ np.array([k[0], 1 - k[0] - k[1], k[1]])
    got_y = (y - 16.0) / 219
    assert got_y.shape == (N, H, W)
    assert np.abs(got_y.mean(axis=(1, 2)) - want_y.mean(axis=(1, 2))).max() < 3 / 219


def test_without_the_intermediate_an_hdr_master_places_the_sdr_shot(model_dir, hdr_lora,
                                                                    tmp_path):
    """The HDR master's light comes from the intermediate: the same timeline with the
    intermediate gone gives the SDR picture placed into PQ, capped near 203 cd/m²."""
    eng = engine_by_name("ltx2", model=str(model_dir), hdr_lora=str(hdr_lora), **SETTINGS)
    r = eng.render(shot(N), ctx())
    mov = tmp_path / "1A.mov"
    encode_master(iter(r), N, FPS, W, H, mov, PROFILES["prores"], None)
    assert not intermediate_for(mov).exists()  # nobody asked for the linear frames
    got = decode_luma(conform(edit((mov, 0, N)), tmp_path / "pq.mov", "hdr-pq"))
    assert cm.eotf_ST2084(got).max() < 2 * 203  # SDR white at 203 (HEVC overshoots a little)


def test_a_missing_hdr_lora_is_named(model_dir, tmp_path):
    with pytest.raises(AiprodError, match=r"no such LoRA file \(hdr_lora\)") as e:
        engine_by_name("ltx2", model=str(model_dir), hdr_lora=str(tmp_path / "nope.safetensors"),
                       **SETTINGS).check()
    assert e.value.where == "[engine.ltx2] hdr_lora"


def test_render_and_conform_hdr_through_the_cli(model_dir, hdr_lora, tmp_path):
    """The user's path: render with [engine.ltx2] hdr_lora (the SDR web master as ever,
    each shot's HDR intermediate beside its picture, the LoRA's hash in the manifest),
    then conform the timeline to hdr-pq: its light goes above SDR white."""
    from click.testing import CliRunner

    from aiprod_post.cli import main
    from aiprod_post.files import sha256_file

    script = tmp_path / "s.fountain"
    script.write_text("EXT. PIER - DUSK\n\nGulls over the water.\n")
    project = tmp_path / "p.toml"
    project.write_text(
        f'[engine]\nname = "ltx2"\n[engine.ltx2]\nmodel = "{model_dir}"\n'
        f'device = "cpu"\ndtype = "float32"\nsteps = 2\nimage_crf = 0\naudio = false\n'
        f'hdr_lora = "{hdr_lora}"\n')
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["render", str(script), "-o", str(out), "--project",
                                  str(project), "--size", "32x32", "--fps", "12",
                                  "--profile", "web", "--quiet"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine"]["identity"]["loras"]["hdr"]["sha256"] == sha256_file(hdr_lora)
    shots = sorted((out / "shots").glob("*.mov"))
    assert shots and all(intermediate_for(s).is_file() for s in shots)
    assert list((out / "masters").glob("*_web.mp4"))  # the SDR master, as ever
    # the HDR picture is graded as the SDR one (the scene's dusk look): below white, its
    # light is the graded SDR shot's (ProRes, 10-bit luma) within a few codes (median)
    from aiprod_post.grading.looks import default_look

    assert default_look("dusk") != "neutral_rec709"
    with av.open(str(shots[0])) as c:
        sdr_y = np.stack([(np.frombuffer(f.planes[0], np.uint16).reshape(
            -1, f.planes[0].line_size // 2)[:32, :32] - 64.0) / 876 for f in c.decode(video=0)])
    with av.open(str(intermediate_for(shots[0]))) as c:
        pq = np.stack([f.to_ndarray(format="rgb48le") for f in c.decode(video=0)]) / 65535.0
    cs = colour.RGB_COLOURSPACES
    lin709 = colour.RGB_to_RGB(cm.eotf_ST2084(pq) / 203.0, cs["ITU-R BT.2020"],
                               cs["ITU-R BT.709"])
    k = colour.WEIGHTS_YCBCR["ITU-R BT.709"]
    hdr_y = cm.eotf_inverse_BT1886(np.clip(lin709, 0, 1)) @ np.array(
        [k[0], 1 - k[0] - k[1], k[1]])
    below = (lin709 < 0.95).all(axis=-1)
    assert below.mean() > 0.3
    # (the SDR shot's graded frames are 8-bit: a step is 3.4 10-bit codes; measured 2.7
    # codes median, and 12 with the HDR picture left ungraded)
    assert np.median(np.abs(sdr_y - hdr_y)[below]) < 5 / 876
    timeline = next((out / "timeline").glob("*.otio"))
    master = tmp_path / "pq.mov"
    r = CliRunner().invoke(main, ["conform", str(timeline), "-o", str(master),
                                  "--profile", "hdr-pq"])
    assert r.exit_code == 0, r.output
    tags = probe(master)["video"]
    assert (tags["primaries"], tags["transfer"], tags["matrix"]) == (9, 16, 9)
    assert cm.eotf_ST2084(decode_luma(master)).max() > 2 * 203
    # a retake keeps each take's HDR picture beside it (shots/ID_tN.hdr.mkv): an HDR
    # conform of a timeline on either take finds it
    shot_id = shots[0].stem
    r = CliRunner().invoke(main, ["retake", str(out), shot_id, "--seed", "5", "--quiet"])
    assert r.exit_code == 0, r.output
    takes = [out / "shots" / f"{shot_id}_t{n}.mov" for n in (1, 2)]
    assert all(t.is_file() and intermediate_for(t).is_file() for t in takes)
    assert intermediate_for(takes[0]).read_bytes() != intermediate_for(takes[1]).read_bytes()
    assert intermediate_for(takes[1]).read_bytes() == intermediate_for(shots[0]).read_bytes()


def test_dialogue_and_long_shots_get_the_hdr_pass_too(model_dir, hdr_lora):
    """A dialogue shot (audio to video, the DFR pipeline) and a shot longer than one
    generation (the next segment conditioned on the last frame, as SDR) each get an HDR
    pass per generation, and every frame of the shot its linear light."""
    from test_ltx2 import speech

    eng = engine_by_name("ltx2", model=str(model_dir), hdr_lora=str(hdr_lora),
                         **{**SETTINGS, "max_frames": 9})
    r = eng.render(shot(13, dialogue=True), ctx(dialogue=speech(13 / 24 + 0.2)))
    linear: list = []
    r.linear = linear.append
    frames = list(r)
    assert [g[3] for g in eng.generations] == ["LTX2DFRPipeline", "LTX2HDRPipeline"] * 2
    assert len(linear) == len(frames) == 13
    lin = np.stack(linear)
    assert lin.dtype == np.float32 and lin.max() > 1.0
    # each SDR frame is its linear light clipped and encoded, the chained segment too
    want = cm.eotf_inverse_BT1886(np.clip(lin, 0, 1).astype(np.float64))
    assert np.abs(np.stack(frames) / 255.0 - want).max() <= 0.5 / 255 + 1e-6


def test_dissolves_and_fades_with_an_hdr_shot_blend_in_linear_light(tmp_path):
    """An SDR shot fading in, dissolving into an HDR shot: into hdr-pq, every frame is the
    light the edit asks for (the HDR shot's from its intermediate, the SDR shot's placed at
    203 cd/m² white; the dissolve blended by the documented weights in linear light, the
    SDR-only fade in the SDR signal as before), within one 10-bit code of luma as sent to
    the encoder."""
    from aiprod_post.hdr import sdr_from_linear

    yy, xx = np.mgrid[0:H, 0:W] / np.array([H, W])[:, None, None]
    sdr_a = [np.stack([xx * 255, yy * 200, np.full_like(xx, 40.0 + 5 * k)], -1)
             .astype(np.uint8) for k in range(16)]
    lin_b = [np.stack([xx * 6, yy * 2, np.full_like(xx, 0.3 + 0.1 * k)], -1)
             .astype(np.float32) for k in range(20)]
    a, b = tmp_path / "a.mov", tmp_path / "b.mov"
    encode_master(iter(sdr_a), 16, FPS, W, H, a, PROFILES["prores"], None)
    encode_master(iter([sdr_from_linear(f) for f in lin_b]), 20, FPS, W, H, b,
                  PROFILES["prores"], None)
    with hdr_intermediate(intermediate_for(b), FPS, W, H) as write:
        for f in lin_b:
            write(f)
    with av.open(str(a)) as c:  # the SDR shot's 8-bit picture at BT.709's levels
        dec_a = [sdr_picture(f) for f in c.decode(video=0)]

    # timeline 0-11 from a (the first 3 fading in), 12-23 from b (frame 4 on); 10-13 dissolve
    tl = edit(("fade-in", 3), (a, 0, 12), ("dissolve", 4), (b, 4, 12))
    sent: list = []
    conform(tl, tmp_path / "pq.mov", "hdr-pq", watch=lambda f: sent.append(luma_signal(f)))

    def light_a(i: int) -> np.ndarray:
        return bt2020(cm.eotf_BT1886(dec_a[i] / 255.0))

    def light_b(i: int) -> np.ndarray:
        return bt2020(lin_b[i])

    want = []
    for t in range(24):
        if t < 10:  # no HDR shot in it: the SDR fade as ever (in the 8-bit signal), placed
            faded = np.clip(dec_a[t] * min(1.0, (t + 0.5) / 3) + 0.5, 0, 255).astype(np.uint8)
            x = bt2020(cm.eotf_BT1886(faded / 255.0))
        elif t < 12:  # B from its head handle, 2 frames early
            w = (t - 10 + 0.5) / 4
            x = light_a(t) * (1 - w) + light_b(4 - (12 - t)) * w
        elif t < 14:  # A into its tail handle
            w = (t - 12 + 2 + 0.5) / 4
            x = light_b(4 + t - 12) * w + light_a(12 + t - 12) * (1 - w)
        else:
            x = light_b(4 + t - 12)
        want.append(luma(cm.eotf_inverse_ST2084(np.minimum(x * 203.0, 10000.0))))
    assert len(sent) == 24
    for t in range(24):
        assert np.abs(sent[t] - want[t]).max() <= 1 / 876, t
    # the HDR shot's light is above white in the master (its red edge 6x white: luma 2.5x)
    assert cm.eotf_ST2084(np.stack(sent[14:])).max() > 2 * 203


def test_hdr_master_in_segments_reads_the_intermediate_too(tmp_path):
    """A long-GOP HDR master encoded as segments by worker processes reads each shot's
    HDR intermediate as the single encode does: the same light in every segment."""
    from aiprod_post.hdr import sdr_from_linear

    n = 100  # 2-s GOPs at 24 fps: three segments' worth
    lin = [np.full((H, W, 3), 0.05 * (k % 50), np.float32) for k in range(n)]  # to 2.45x
    mov = tmp_path / "1A.mov"
    encode_master(iter([sdr_from_linear(f) for f in lin]), n, FPS, W, H, mov,
                  PROFILES["prores"], None)
    with hdr_intermediate(intermediate_for(mov), FPS, W, H) as write:
        for f in lin:
            write(f)
    tl = edit((mov, 0, n))
    one = decode_luma(conform(tl, tmp_path / "one.mov", "hdr-pq"))
    parts = decode_luma(conform(tl, tmp_path / "parts.mov", "hdr-pq", workers=2))
    want = luma(cm.eotf_inverse_ST2084(bt2020(np.stack(lin)) * 203.0))
    for got in (one, parts):
        assert np.abs(got.mean(axis=(1, 2)) - want.mean(axis=(1, 2))).max() < 3 / 876
    assert cm.eotf_ST2084(parts[48:]).max() > 2 * 203  # above white after the first GOP


def test_graded_light_is_the_graded_sdr_below_white_and_in_proportion_above():
    from aiprod_post.hdr import graded_light, sdr_signal

    lin = np.array([[[0.0, 0.18, 0.9], [1.0, 1.0, 1.0], [4.0, 0.5, 2.0]]], np.float32)
    graded = sdr_signal(lin) * np.float32(0.9)  # a grade that darkens by 0.9 in signal
    out = graded_light(lin, graded)
    want_below = cm.eotf_BT1886(0.9 * cm.eotf_inverse_BT1886(np.clip(lin, 0, 1)))
    np.testing.assert_allclose(out[0, :2], want_below[0, :2], rtol=1e-5, atol=1e-7)
    white = 0.9 ** 2.4
    np.testing.assert_allclose(out[0, 2], [4 * white, want_below[0, 2, 1], 2 * white],
                               rtol=1e-5)


def test_the_hdr_loras_own_embeddings_replace_the_prompt(model_dir, hdr_lora, tmp_path,
                                                        monkeypatch):
    """hdr_embeddings (the connector outputs an HDR LoRA may come with) go to the HDR pass
    as they are, the prompt's do not; their hash is in the identity; a file without them,
    or without the LoRA, is named."""
    from diffusers import LTX2HDRPipeline
    from safetensors.torch import save_file

    from aiprod_post.files import sha256_file

    calls: list = []
    original = LTX2HDRPipeline.__call__
    monkeypatch.setattr(LTX2HDRPipeline, "__call__",
                        lambda self, *a, **kw: calls.append(kw) or original(self, *a, **kw))
    plain = engine_by_name("ltx2", model=str(model_dir), hdr_lora=str(hdr_lora), **SETTINGS)
    r = plain.render(shot(N), ctx())
    base: list = []
    r.linear = base.append
    list(r)
    pipe = plain.pipeline()
    pe, pm, _, _ = pipe.encode_prompt("gulls over water at dusk", do_classifier_free_guidance=False,
                                      max_sequence_length=16, device="cpu")
    video, audio, _ = pipe.connectors(pe, pm, padding_side=pipe.tokenizer.padding_side)
    emb = tmp_path / "hdr-embeds.safetensors"
    save_file({"video_context": video.contiguous(), "audio_context": audio.contiguous()},
              str(emb))
    eng = engine_by_name("ltx2", model=str(model_dir), hdr_lora=str(hdr_lora),
                         hdr_embeddings=str(emb), **SETTINGS)
    r = eng.render(shot(N), ctx())
    given: list = []
    r.linear = given.append
    list(r)
    assert torch.equal(calls[-1]["connector_video_embeds"], video)
    assert torch.equal(calls[-1]["connector_audio_embeds"], audio)
    assert "connector_video_embeds" not in calls[0]
    assert not np.allclose(np.stack(base), np.stack(given))  # they steer the HDR pass
    assert eng.identity["hdr_embeddings"]["sha256"] == sha256_file(emb)
    bad = tmp_path / "bad.safetensors"
    save_file({"other": video.contiguous()}, str(bad))
    with pytest.raises(AiprodError, match="video_context and audio_context") as e:
        engine_by_name("ltx2", model=str(model_dir), hdr_lora=str(hdr_lora),
                       hdr_embeddings=str(bad), **SETTINGS).pipeline()
    assert e.value.where == "[engine.ltx2] hdr_embeddings"
    with pytest.raises(AiprodError, match="set hdr_lora too"):
        engine_by_name("ltx2", model=str(model_dir), hdr_embeddings=str(emb), **SETTINGS)
    with pytest.raises(AiprodError, match=r"no such HDR embeddings file \(hdr_embeddings\)"):
        engine_by_name("ltx2", model=str(model_dir), hdr_lora=str(hdr_lora),
                       hdr_embeddings=str(tmp_path / "nope"), **SETTINGS).check()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_hdr_pass_on_the_gpu(model_dir, hdr_lora, tmp_path):
    """The GPU path users take: CUDA, bfloat16, the SDR generation then the HDR pass; its
    linear frames reach the PQ intermediate (light above white kept), and the SDR frames
    are that light clipped at white, BT.1886-encoded (colour-science)."""
    eng = engine_by_name("ltx2", model=str(model_dir), hdr_lora=str(hdr_lora),
                         **{**SETTINGS, "device": "cuda", "dtype": "bfloat16"})
    r = eng.render(shot(N), ctx())
    assert r.hdr
    linear, sdr = [], []
    mov = tmp_path / "1A.mov"
    with hdr_intermediate(intermediate_for(mov), FPS, W, H) as write:
        r.linear = lambda f: (linear.append(f.copy()), write(f))
        sdr = list(r)
    assert [g[3] for g in eng.generations] == ["LTX2InContextPipeline", "LTX2HDRPipeline"]
    lin = np.stack(linear)
    assert lin.dtype == np.float32 and lin.shape == (N, H, W, 3) and np.isfinite(lin).all()
    assert lin.max() > 1.0  # above diffuse white: no 8-bit step on the way
    want_sdr = cm.eotf_inverse_BT1886(np.clip(lin, 0, 1).astype(np.float64))
    assert np.abs(np.stack(sdr) / 255.0 - want_sdr).max() <= 0.5 / 255 + 1e-6
    with av.open(str(intermediate_for(mov))) as c:
        pq = np.stack([f.to_ndarray(format="rgb48le") for f in c.decode(video=0)]) / 65535.0
    nits = np.minimum(bt2020(lin) * 203.0, 10000.0)
    assert np.abs(pq - cm.eotf_inverse_ST2084(nits)).max() <= 0.5 * STEP_12


def test_the_hdr_pass_compiles_nothing_in_the_middle_of_the_film(model_dir, hdr_lora,
                                                                 tmp_path, monkeypatch):
    """The warm-up compiles the film's generation shapes; the HDR pass (another input: the
    SDR picture as its reference) then runs eagerly instead of compiling a graph of its own
    on the film's first HDR shot (dynamo's counters, the eager backend)."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    eng = engine_by_name("ltx2", model=str(model_dir), hdr_lora=str(hdr_lora), compile=True,
                         compile_backend="eager", **SETTINGS)
    torch._dynamo.reset()
    counters.clear()
    info = eng.warm_up([N], W, H, fps=float(FPS))
    assert info["compile"]
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    r = eng.render(shot(N), ctx())
    r.linear = lambda frame: None
    assert len(list(r)) == N and r.hdr
    assert [g[3] for g in eng.generations][-2:] == ["LTX2InContextPipeline", "LTX2HDRPipeline"]
    assert counters["stats"]["unique_graphs"] == graphs  # the HDR pass traced nothing
    torch._dynamo.reset()
