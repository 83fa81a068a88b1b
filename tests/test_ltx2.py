"""The ltx2 engine on the CPU, with a tiny randomly initialised LTX-2 built in the test
(audio-video transformer, video VAE, audio VAE, a Gemma 3 text encoder and tokenizer, text
connectors, vocoder), saved to a folder and loaded the way users load real weights: from a
local path only. A tiny canny IC-LoRA and a camera LoRA are built the same way."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from aiprod_post.generation.ltx import drop_module_mocks

torch = pytest.importorskip("torch", reason="the ltx extra (torch, diffusers) is not installed")
drop_module_mocks()
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("diffusers.pipelines.ltx2.pipeline_ltx2_dfr",
                    reason="diffusers without LTX-2's DFR pipeline (0.42 or later)")
pytest.importorskip("peft", reason="LoRAs need peft (the ltx extra)")

from aiprod_post.errors import AiprodError  # noqa: E402
from aiprod_post.generation.control import canny_frame  # noqa: E402
from aiprod_post.generation.engine import Keyframe, RenderContext, engine_by_name  # noqa: E402
from aiprod_post.generation.ltx2 import (  # noqa: E402
    dialogue_latents,
    log_mel_spectrogram,
    valid_frames,
)
from aiprod_post.plan import CameraMove, DialogueLine, Framing, Scene, Shot  # noqa: E402

W, H = 30, 22  # generated at 32×32 (the pipelines take multiples of 32), cropped
FPS = Fraction(24)


def tiny_gemma(folder: Path):
    """A Gemma 3 text encoder and tokenizer a few kilobytes big."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, GemmaTokenizer

    words = ("the a of and in on with shot wide close-up medium static camera pan dolly light "
             "day night dusk exterior interior pier nell ivo is speaking frame cinematic film "
             "still natural motion worst quality blurry gulls over water").split()
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3,
             **{w: i + 4 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = GemmaTokenizer(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                               bos_token="<bos>", unk_token="<unk>")
    cfg = Gemma3Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=16, max_position_embeddings=64, sliding_window=16),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=28, patch_size=14),
        mm_tokens_per_image=4, boi_token_index=2, eoi_token_index=1, image_token_index=3)
    torch.manual_seed(0)
    return Gemma3ForConditionalGeneration(cfg), tokenizer


def tiny_transformer():
    from diffusers import LTX2VideoTransformer3DModel

    torch.manual_seed(0)
    return LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
        attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4,
        audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8,
        num_layers=2, qk_norm="rms_norm_across_heads", caption_channels=32,
        rope_double_precision=False, rope_type="split")


def build_tiny_ltx2(folder: Path) -> Path:
    """A randomly initialised LTX-2, under a megabyte, saved like real weights."""
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video,
                           FlowMatchEulerDiscreteScheduler, LTX2InContextPipeline)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    text_encoder, tokenizer = tiny_gemma(folder)
    torch.manual_seed(0)
    connectors = LTX2TextConnectors(
        caption_channels=32, text_proj_in_factor=3, video_connector_num_attention_heads=4,
        video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32,
        rope_theta=10000.0, rope_double_precision=False, causal_temporal_positioning=False,
        rope_type="split")
    torch.manual_seed(0)
    # ×4 in space and time: few tokens, so a shot denoises in a fraction of a second
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8), layers_per_block=(1, 1),
        decoder_layers_per_block=(1, 1, 1), spatio_temporal_scaling=(True, True),
        decoder_spatio_temporal_scaling=(True, True), decoder_inject_noise=(False,) * 3,
        downsample_type=("spatiotemporal", "spatiotemporal"), upsample_residual=(False, False),
        upsample_factor=(1, 1), timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=True)  # frame 0 decodes from latent frame 0 alone
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    torch.manual_seed(0)
    # ×4 in time and mel bins, as LTX-2's (the pipelines assume it)
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1, 2, 4), num_res_blocks=1,
        attn_resolutions=None, in_channels=2, resolution=32, latent_channels=2,
        norm_type="pixel", causality_axis="height", dropout=0.0, mid_block_add_attention=False,
        sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8)
    torch.manual_seed(0)
    # ×160 = the mel hop: 16 kHz out, as the vocoder's config says
    vocoder = LTX2Vocoder(
        in_channels=16, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[32, 20],
        upsample_factors=[16, 10], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
        leaky_relu_negative_slope=0.1, output_sampling_rate=16000)
    pipe = LTX2InContextPipeline(
        transformer=tiny_transformer(), vae=vae, audio_vae=audio_vae,
        scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder,
        tokenizer=tokenizer, connectors=connectors, vocoder=vocoder)
    pipe.save_pretrained(folder / "model")
    return folder / "model"


def build_tiny_lora(path: Path, seed: int, downscale: int | None = None) -> Path:
    """A rank-2 LoRA on the tiny transformer's attention, as a diffusers .safetensors (with
    an IC-LoRA's ``reference_downscale_factor`` metadata when given)."""
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file

    t = tiny_transformer()
    torch.manual_seed(seed)
    t.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights=False,
                             target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    state = {f"transformer.{k}": v.contiguous() for k, v in get_peft_model_state_dict(t).items()}
    save_file(state, str(path), metadata={"format": "pt", **(
        {"reference_downscale_factor": str(downscale)} if downscale else {})})
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_ltx2(tmp_path_factory.mktemp("tiny-ltx2"))


@pytest.fixture(scope="module")
def loras(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny-loras")
    return {"canny": build_tiny_lora(folder / "canny.safetensors", 1, downscale=1),
            "dolly": build_tiny_lora(folder / "dolly.safetensors", 2)}


SETTINGS = dict(device="cpu", dtype="float32", preset="distilled", steps=2,
                max_sequence_length=16, image_crf=0)


def scene() -> Scene:
    return Scene(id="1", heading="EXT. PIER - DUSK", int_ext="EXT", location="PIER",
                 light="dusk", shots=[])


def shot(duration: int = 9, seed: int = 3, move: CameraMove = CameraMove.STATIC,
         dialogue: bool = False) -> Shot:
    lines = [DialogueLine(id="1A-1", speaker="NELL", text="The last ferry.")] if dialogue \
        else []
    return Shot(id="1A", framing=Framing.WIDE, duration=duration, seed=seed,
                characters=["NELL"], action="Gulls over the water.", camera_move=move,
                dialogue=lines)


def ctx(**kw) -> RenderContext:
    return RenderContext(scene(), W, H, FPS, **kw)


def ramp_key() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([xx * 8, yy * 11, 255 - xx * 8], axis=-1).clip(0, 255).astype(np.uint8)


def test_renders_a_shot_with_its_sound_from_a_local_folder(model_dir):
    eng = engine_by_name("ltx2", model=str(model_dir), **SETTINGS)
    r = eng.render(shot(10), ctx())
    frames = list(r)
    assert len(frames) == 10 and frames[0].shape == (H, W, 3) and frames[0].dtype == np.uint8
    assert set(r.keyframes) == {"first", "last"}
    # the tiny VAE compresses time by 4: 10 frames are generated as 13 and trimmed
    assert eng.generations == [(13, 32, 32, "LTX2InContextPipeline")]
    # sound for exactly the shot's 10 frames, at the vocoder's rate
    assert r.audio_rate == 16000 and r.audio.shape == (round(10 / 24 * 16000), 2)
    assert np.abs(r.audio).max() > 0
    assert eng.identity["pipeline"] == "LTX2InContextPipeline"
    assert len(eng.identity["sha256"]) == 64
    again = list(engine_by_name("ltx2", model=str(model_dir), **SETTINGS).render(shot(10), ctx()))
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))  # the plan's seed
    off = engine_by_name("ltx2", model=str(model_dir), audio=False, **SETTINGS)
    r_off = off.render(shot(10), ctx())
    list(r_off)
    assert r_off.audio is None


def capture_calls(monkeypatch, cls) -> list[dict]:
    """Every call of a diffusers pipeline class, with its arguments, still run."""
    calls: list[dict] = []
    original = cls.__call__

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", spy)
    return calls


def test_keyframes_are_conditions_at_their_latent_frames(model_dir, monkeypatch):
    """The previous shot's last frame at latent frame 0, the character's reference in the
    middle of the generation; the conditions the pipeline is given are those images, placed
    on the generation canvas, and the pipeline puts their tokens where they belong."""
    from diffusers import LTX2InContextPipeline

    calls = capture_calls(monkeypatch, LTX2InContextPipeline)
    placed: list = []
    original = LTX2InContextPipeline.preprocess_conditions

    def spy(self, *a, **kw):
        out = original(self, *a, **kw)
        placed.append(out[2])  # the latent indices the pipeline uses
        return out

    monkeypatch.setattr(LTX2InContextPipeline, "preprocess_conditions", spy)
    eng = engine_by_name("ltx2", model=str(model_dir), **SETTINGS)
    key, ref = ramp_key(), ramp_key()[::-1].copy()
    r = eng.render(shot(17), ctx(keyframes={
        "previous": Keyframe("0", 0, key), "character:NELL": Keyframe("", 0, ref)}))
    assert len(list(r)) == 17
    conds = calls[0]["conditions"]
    assert [(c.index, c.strength) for c in conds] == [(0, 1.0), (2, 0.35)]  # 17 frames: 5 latents
    canvas = conds[0].frames
    assert canvas.shape == (32, 32, 3)
    np.testing.assert_array_equal(canvas[5:27, 1:31], key)  # the plan's frame, centred
    np.testing.assert_array_equal(conds[1].frames[5:27, 1:31], ref)
    assert placed == [[0, 2]]
    assert any("reference of NELL at latent frame 2 (frame 5)" in n for n in r.notes)
    # establishing, not previous: its own strength
    calls.clear()
    list(eng.render(shot(9), ctx(keyframes={"establishing": Keyframe("0", 0, key)})))
    assert [(c.index, c.strength) for c in calls[0]["conditions"]] == [(0, 0.6)]


def test_the_first_frame_follows_the_keyframe(model_dir):
    """Conditioned at strength 1, the first frame is the keyframe (seed hardly matters);
    free, it is the noise's."""
    eng = engine_by_name("ltx2", model=str(model_dir), **SETTINGS)
    key = ramp_key()
    firsts = [next(iter(eng.render(shot(9, seed=s), ctx(keyframes=k)))).astype(float)
              for k in ({"previous": Keyframe("0", 0, key)}, {}) for s in (1, 2)]
    conditioned = np.abs(firsts[0] - firsts[1]).mean()
    free = np.abs(firsts[2] - firsts[3]).mean()
    assert conditioned < 0.5 * free, (conditioned, free)


def test_the_previz_is_the_ic_lora_reference_frame_for_frame(model_dir, loras, monkeypatch):
    """With a canny IC-LoRA, the animatic's render of the same shot (Canny edges, at the
    generation size) is the reference video: one control frame per generated frame, and
    the camera LoRA of the plan's move is on."""
    from diffusers import LTX2InContextPipeline

    from aiprod_post.generation.animatic import AnimaticEngine
    from aiprod_post.generation.ltx import _fit

    calls = capture_calls(monkeypatch, LTX2InContextPipeline)
    eng = engine_by_name("ltx2", model=str(model_dir), control_lora=str(loras["canny"]),
                         camera_loras={"dolly": str(loras["dolly"])}, **SETTINGS)
    s = shot(20, move=CameraMove.DOLLY)
    r = eng.render(s, ctx())
    frames = list(r)
    assert len(frames) == 20
    ref = calls[0]["reference_conditions"][0].frames
    assert ref.shape == (21, 32, 32, 3)  # 20 frames generated as 21: the last repeated
    previz = list(AnimaticEngine().render(s, ctx()))
    expected = np.stack([canny_frame(_fit(f, 32, 32, W, H)) for f in previz])
    np.testing.assert_array_equal(ref[:20], expected)
    np.testing.assert_array_equal(ref[20], expected[19])
    assert ref[:20].max() == 255  # the previz has edges
    assert calls[0]["reference_downscale_factor"] == 1
    assert "LoRAs: control, camera:dolly" in r.notes
    pipe = eng.pipeline()
    assert set(pipe.get_active_adapters()) == {"control", "camera_dolly"}
    # the LoRAs change the picture, and their hashes are in the engine's identity
    plain = list(engine_by_name("ltx2", model=str(model_dir), **SETTINGS).render(s, ctx()))
    assert not np.array_equal(frames[5], plain[5])
    assert set(eng.identity["loras"]) == {"control", "camera:dolly"}
    assert len(eng.identity["loras"]["control"]["sha256"]) == 64
    assert eng.identity["loras"]["control"]["reference_downscale_factor"] == 1
    # a static shot: the dolly LoRA is off
    list(eng.render(shot(9), ctx()))
    assert pipe.get_active_adapters() == ["control"]



def test_with_the_control_lora_the_warm_up_traces_what_the_shots_run(model_dir, loras,
                                                                     tmp_path, monkeypatch):
    """The warm-up's step runs as the film's shots do: the control LoRA on and a reference
    video of the previz's size; a shot then traces nothing more (dynamo's counters, the
    eager backend), a dialogue shot (DFR, the previz as reference latents) neither, on the
    same graph. A shot with another LoRA on (the camera's) runs eagerly rather than
    compiling a graph in the middle of the film."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    eng = engine_by_name("ltx2", model=str(model_dir), control_lora=str(loras["canny"]),
                         camera_loras={"dolly": str(loras["dolly"])}, compile=True,
                         compile_backend="eager", **SETTINGS)
    torch._dynamo.reset()
    counters.clear()
    eng.warm_up([20], W, H, fps=float(FPS))
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1 and eng._active == ([], [])  # switched off again after the step
    eager: list[int] = []
    real = eng._eager
    monkeypatch.setattr(eng, "_eager", lambda: (eager.append(1), real())[1])
    assert len(list(eng.render(shot(20), ctx()))) == 20  # static: the control LoRA alone
    # a dialogue shot (the DFR pipeline, the previz as reference latents): the same graph
    r = eng.render(shot(20, dialogue=True), ctx(dialogue=speech(20 / 24 + 0.2)))
    assert len(list(r)) == 20 and eng.generations[-1][3] == "LTX2DFRPipeline"
    assert counters["stats"]["unique_graphs"] == graphs and not eager  # compiled, no trace
    r = eng.render(shot(20, move=CameraMove.DOLLY), ctx())
    assert len(list(r)) == 20 and "LoRAs: control, camera:dolly" in r.notes
    assert counters["stats"]["unique_graphs"] == graphs and eager  # eagerly, no trace
    torch._dynamo.reset()


@pytest.mark.parametrize("kind", ["depth", "pose"])
def test_with_a_depth_or_pose_ic_lora_the_reference_is_the_animatics_pass(model_dir, loras,
                                                                          monkeypatch, kind):
    """``control = "depth"`` / ``"pose"``: the reference video is the animatic's depth or
    pose pass of the same shot (its geometry, the same camera), placed on the generation
    canvas, frame for frame; not edges."""
    from diffusers import LTX2InContextPipeline

    from aiprod_post.generation.animatic import AnimaticEngine
    from aiprod_post.generation.ltx import _fit

    calls = capture_calls(monkeypatch, LTX2InContextPipeline)
    eng = engine_by_name("ltx2", model=str(model_dir), control=kind,
                         control_lora=str(loras["canny"]), **SETTINGS)
    s = shot(12, move=CameraMove.PAN)
    list(eng.render(s, ctx()))
    ref = calls[0]["reference_conditions"][0].frames
    made = list(getattr(AnimaticEngine(), kind)(s, ctx()))
    expected = np.stack([_fit(f, 32, 32, W, H) for f in made])
    np.testing.assert_array_equal(ref[:12], expected)
    assert len(np.unique(ref[:12])) > 8  # a depth ramp or coloured limbs, not edges

def test_a_characters_lora_is_on_for_the_shots_they_are_in(model_dir, tmp_path):
    """The cast file's LoRA of a character: on (beside the camera LoRA) for the shots with
    that character, changing the picture; off for the others; its hash in the engine's
    identity; a missing file is an error naming the cast key."""
    from aiprod_post.files import sha256_file

    lora = build_tiny_lora(tmp_path / "nell.safetensors", 5)
    plain = engine_by_name("ltx2", model=str(model_dir), **SETTINGS)
    eng = engine_by_name("ltx2", model=str(model_dir), **SETTINGS,
                         cast_loras={"NELL": {"path": str(lora), "weight": 0.8}})
    nell, ivo = shot(9), shot(9).model_copy(update={"characters": ["IVO"]})
    r = eng.render(nell, ctx())
    with_lora = np.stack(list(r)).astype(float)
    without = np.stack(list(plain.render(nell, ctx()))).astype(float)
    assert np.abs(with_lora - without).mean() > 1.0  # grey levels
    assert "LoRAs: cast:NELL" in r.notes
    assert eng.pipeline().get_active_adapters() == ["cast_0"]
    np.testing.assert_array_equal(np.stack(list(eng.render(ivo, ctx()))),
                                  np.stack(list(plain.render(ivo, ctx()))))
    assert eng.identity["loras"]["cast:NELL"]["sha256"] == sha256_file(lora)
    with pytest.raises(AiprodError, match=r"nope\.safetensors: cast file: characters\.NELL\.lora"
                                          r": no such LoRA file"):
        engine_by_name("ltx2", model=str(model_dir), **SETTINGS,
                       cast_loras={"NELL": {"path": str(tmp_path / "nope.safetensors")}})


def speech(seconds: float) -> np.ndarray:
    """A voice-like test line at 48 kHz: a 150 Hz buzz with harmonics, on for 0.2 s then
    silence, then on again."""
    t = np.arange(int(seconds * 48000)) / 48000
    buzz = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    gate = ((t > 0.05) & (t < 0.25)) | (t > 0.4)
    return (0.3 * buzz * gate).astype(np.float32)


def test_dialogue_is_held_fixed_while_the_picture_follows_it(model_dir, monkeypatch):
    """A dialogue shot runs audio to video: the latents of the shot's TTS line, encoded by
    the audio VAE, come out of the denoising loop unchanged (freeze_audio), and the line
    changes the picture; without lip_sync the audio stream is denoised like any other."""
    from diffusers import LTX2DFRPipeline

    seen: list = []
    original = LTX2DFRPipeline._public_audio_from_packed

    def spy(self, packed, n):
        out = original(self, packed, n)
        seen.append(out)
        return out

    monkeypatch.setattr(LTX2DFRPipeline, "_public_audio_from_packed", spy)
    eng = engine_by_name("ltx2", model=str(model_dir), **SETTINGS)
    line = speech(17 / 24 + 0.2)
    r = eng.render(shot(17, dialogue=True), ctx(dialogue=line))
    frames = list(r)
    assert len(frames) == 17 and r.audio is None  # the mix plays our own line
    assert r.notes[-1].startswith("lip-sync not measured: no face")  # a random model's
    assert eng.generations[-1][3] == "LTX2DFRPipeline"
    given = eng.dialogue_latents_in
    assert given.abs().max() > 0
    torch.testing.assert_close(seen[0], given, atol=1e-5, rtol=1e-5)
    # and independently: the same line, encoded again
    expect = dialogue_latents(eng.pipeline(), line[:round(17 / 24 * 48000) + 1], 48000,
                              given.shape[2])
    torch.testing.assert_close(given[..., :3, :], expect[..., :3, :], atol=1e-4, rtol=1e-4)
    # another line: another picture (the video attends to the audio)
    other = list(eng.render(shot(17, dialogue=True), ctx(dialogue=np.roll(line, 9000))))
    assert not np.array_equal(frames[8], other[8])
    # free audio: the stream moves
    seen.clear()
    from diffusers import LTX2InContextPipeline  # noqa: F401

    free = engine_by_name("ltx2", model=str(model_dir), lip_sync=False, **SETTINGS)
    list(free.render(shot(17, dialogue=True), ctx(dialogue=line)))
    assert free.generations[-1][3] == "LTX2InContextPipeline" and not seen


def test_log_mel_matches_a_direct_dft_reference():
    """The spectrogram against a plain DFT of one windowed frame and the filterbank's
    definition (triangles peaking at their centres, area-normalised)."""
    from aiprod_post.generation.ltx2 import _slaney_mel_filters

    rate, hop, n_fft = 16000, 160, 1024
    t = np.arange(rate) / rate
    x = np.sin(2 * np.pi * 1000 * t) + 0.5 * np.sin(2 * np.pi * 3000 * t)
    mel = log_mel_spectrogram(x, rate, 64, hop, n_fft)
    fb = _slaney_mel_filters(rate, n_fft, 64)
    frame = 40
    seg = x[frame * hop - n_fft // 2: frame * hop + n_fft // 2]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    ref = np.log(np.maximum(fb @ np.abs(np.fft.rfft(seg * window)), 1e-5))
    np.testing.assert_allclose(mel[0, frame], ref, atol=1e-3)
    peaks = fb.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0)  # centres rise with the band
    assert valid_frames(10, 4) == 13


def test_two_stages_with_the_latent_upsampler(model_dir, tmp_path):
    from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel

    torch.manual_seed(0)
    LTX2LatentUpsamplerModel(in_channels=4, mid_channels=32, num_blocks_per_stage=1, dims=3,
                             spatial_upsample=True, temporal_upsample=False,
                             use_rational_resampler=False).save_pretrained(tmp_path / "up")
    eng = engine_by_name("ltx2", model=str(model_dir), upsampler=str(tmp_path / "up"),
                         **SETTINGS)
    r = eng.render(shot(9), ctx())
    frames = list(r)
    assert len(frames) == 9 and frames[0].shape == (H, W, 3)
    # half size (a multiple of 32 that doubles to cover the plan), then full
    assert [g[:3] for g in eng.generations] == [(9, 32, 32), (9, 64, 64)]
    assert len(eng.identity["upsampler"]["sha256"]) == 64 and r.audio is not None
    r2 = eng.render(shot(9, dialogue=True), ctx(dialogue=speech(0.6)))
    assert len(list(r2)) == 9
    assert [g[3] for g in eng.generations[2:]] == ["LTX2DFRPipeline"] * 2


def test_missing_parts_and_bad_settings_are_named(tmp_path, model_dir):
    with pytest.raises(AiprodError, match="no such LTX-2 model folder"):
        engine_by_name("ltx2", model=str(tmp_path / "nope"), **SETTINGS).check()
    half = tmp_path / "half"
    half.mkdir()
    (half / "model_index.json").write_text("{}")
    (half / "transformer").mkdir()
    with pytest.raises(AiprodError, match=r"missing vae \(the video VAE\), audio_vae \(the "
                                          r"audio VAE\), text_encoder \(the Gemma 3"):
        engine_by_name("ltx2", model=str(half), **SETTINGS).check()
    with pytest.raises(AiprodError, match="no such LoRA file \\(camera_loras.pan\\)"):
        engine_by_name("ltx2", model=str(model_dir), camera_loras={"pan": "nope.safetensors"},
                       **SETTINGS).check()
    with pytest.raises(AiprodError, match="unknown camera move"):
        engine_by_name("ltx2", model="x", camera_loras={"barrel-roll": "x"})
    with pytest.raises(AiprodError, match="unknown control 'normals'"):
        engine_by_name("ltx2", model="x", control="normals")
    with pytest.raises(AiprodError, match="unknown ltx2 setting"):
        engine_by_name("ltx2", model="x", lora="y")


def test_render_with_ltx2_through_the_cli(model_dir, loras, tmp_path, monkeypatch):
    """The user's path: render --engine ltx2 with a project file naming a local model and
    LoRAs. The dialogue shot is generated on its TTS line; the other shot's generated sound
    is on the FX stem, and off with [engine.ltx2] audio = false; the manifest names the
    model and every LoRA by hash."""
    import json

    import soundfile
    from click.testing import CliRunner

    from aiprod_post.cli import main

    from diffusers import LTX2DFRPipeline

    a2v = capture_calls(monkeypatch, LTX2DFRPipeline)
    import shutil

    loras = {k: Path(shutil.copy(v, tmp_path / v.name)) for k, v in loras.items()}
    script = tmp_path / "s.fountain"
    script.write_text("EXT. PIER - DUSK\n\nGulls over the water.\n\nNELL\nFerry.\n")

    def render(audio: bool) -> tuple[np.ndarray, dict]:
        project = tmp_path / "p.toml"
        project.write_text(
            f'[engine]\nname = "ltx2"\n[engine.ltx2]\nmodel = "{model_dir}"\n'
            f'device = "cpu"\ndtype = "float32"\nsteps = 2\nimage_crf = 0\n'
            f'audio = {str(audio).lower()}\ncontrol_lora = "{loras["canny"]}"\n'
            f'camera_loras = {{ static = "{loras["dolly"]}" }}\n')
        r = CliRunner().invoke(main, ["render", str(script), "-o", str(tmp_path / "out"),
                                      "--project", str(project), "--size", "32x32",
                                      "--fps", "12", "--profile", "web", "--quiet"])
        assert r.exit_code == 0, r.output
        out = tmp_path / "out"
        fx, rate = soundfile.read(str(out / "audio" / "FX.wav"), dtype="float32")
        assert rate == 48000
        return fx, json.loads((out / "manifest.json").read_text())

    with_sound, manifest = render(True)
    assert manifest["engine"]["name"] == "ltx2"
    assert manifest["engine"]["identity"]["pipeline"] == "LTX2InContextPipeline"
    assert len(manifest["engine"]["identity"]["sha256"]) == 64
    # one generation of the dialogue shot (18 frames and handles), on its line held fixed
    assert len(a2v) == 1 and a2v[0]["freeze_audio"] is True
    assert a2v[0]["audio_latents"].abs().max() > 0
    # with the control LoRA, its previz too: one latent frame per 4 generated, 32×32 / 4
    n = a2v[0]["num_frames"]
    assert tuple(a2v[0]["reference_latents"].shape[2:]) == ((n - 1) // 4 + 1, 8, 8)
    from aiprod_post.files import sha256_file

    assert {k: v["sha256"] for k, v in manifest["engine"]["identity"]["loras"].items()} == {
        "control": sha256_file(loras["canny"]), "camera:static": sha256_file(loras["dolly"])}
    without, _ = render(False)
    # shot 1 is frames 0-35 at 12 fps: 3 s; its sound is on FX there, and only there
    inside = slice(int(0.6 * 48000), int(2.4 * 48000))
    assert np.abs(with_sound[inside] - without[inside]).max() > 1e-4
    after = slice(int(3.6 * 48000), int(4.5 * 48000))  # 1A, beyond the bed's crossfade
    np.testing.assert_allclose(with_sound[after], without[after], atol=1e-6)
    # the shots' cache follows the weights: the same settings reuse both shots, a new LoRA
    # file at the same path makes them again
    shots = tmp_path / "out" / ".cache" / "shots"
    made = set(shots.glob("*.mov"))
    render(False)
    assert set(shots.glob("*.mov")) == made
    before = sha256_file(loras["canny"])
    build_tiny_lora(loras["canny"], 7, downscale=1)
    assert sha256_file(loras["canny"]) != before
    _, again = render(False)
    assert again["engine"]["identity"]["loras"]["control"]["sha256"] != before
    assert len(set(shots.glob("*.mov")) - made) == 2


def test_out_of_gpu_memory_takes_the_ltx_ladder(model_dir, monkeypatch):
    """Out of GPU memory, a generation is retried with VAE tiling, then model CPU offload,
    then at half the length; the shot still has every frame, the sound too."""
    eng = engine_by_name("ltx2", model=str(model_dir), max_frames=33, cpu_offload=True,
                         **SETTINGS)  # offload already on (no CUDA here): tiling, then halves
    asked: list[int] = []

    def generate(prompt, n, w, h, fps, seed, conditions, reference, dialogue):
        asked.append(n)
        if n > 17:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return np.full((n, h, w, 3), len(asked), np.uint8), np.zeros((n * 100, 2)), 2400

    monkeypatch.setattr(eng, "_generate", generate)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    r = eng.render(shot(40), ctx())
    assert len(list(r)) == 40
    assert eng.s.vae_tiling and asked[:3] == [33, 33, 17]
    # every later generation tries the full length first, as ltx's do, then halves
    made = [n for n in asked if n <= 17]
    assert made[0] == 17 and sum(made) - (len(made) - 1) >= 40  # chained on one frame each
    assert r.audio.shape[0] == 40 * 100


def test_dialogue_shots_report_the_measured_lip_sync(model_dir, monkeypatch):
    """The engine measures mouth opening against the line on its own output: a generation
    that opens the astronaut's mouth 3 frames after each voiced stretch is reported as
    125 ms late (the tiny random model draws no face: it says so)."""
    from test_sync import N, talking_face, voice_line

    eng = engine_by_name("ltx2", model=str(model_dir), **SETTINGS)
    face = talking_face(3)

    def generate(prompt, n, w, h, fps, seed, conditions, reference, dialogue):
        assert dialogue is not None and (w, h) == (512, 512)
        return np.stack((face + face[-1:] * n)[:n]), None, 0

    monkeypatch.setattr(eng, "_generate", generate)
    ctx512 = RenderContext(scene(), 512, 512, FPS, dialogue=voice_line())
    r = eng.render(shot(N, dialogue=True), ctx512)
    assert len(list(r)) == N
    assert r.lip_sync.offset_frames == 3 and r.lip_sync.offset_ms == pytest.approx(125.0)
    assert r.notes[-1].startswith("lip-sync measured: mouth opening after speech by 125 ms")


def test_a_film_runs_at_its_buckets_and_traces_each_once(model_dir, tmp_path, monkeypatch,
                                                           example_path):
    """The example's shots (handles included) are generated at no more than 4 frame
    counts, each holding its segment; the warm-up traces each bucket once (dynamo's
    counters, the eager backend: tracing without inductor) and shots of every bucket then
    render their exact frames with no new graph; the compiled shapes are indexed in the
    user's cache, so the next film's estimate counts them warm."""
    from torch._dynamo.utils import counters

    from aiprod_post.editing.timeline import handles_for
    from aiprod_post.generation import ltx2
    from aiprod_post.generation.ltx import generation_lengths
    from aiprod_post.planner import plan_source

    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    plan, _ = plan_source(example_path)
    handles = handles_for(plan)
    film = [s.duration + sum(handles[s.id]) for _, s in plan.shots()]
    eng = engine_by_name("ltx2", model=str(model_dir), compile=True, compile_backend="eager",
                         **SETTINGS)
    buckets = eng.plan_film(film)
    assert 1 < len(buckets) <= 4 and all((b - 1) % 4 == 0 for b in buckets)
    for d in film:
        needs = generation_lengths(d, 121)
        made = eng.lengths_for(d)
        assert len(made) == len(needs) and all(m >= n for m, n in zip(made, needs))
        assert set(made) <= set(buckets)
    # a short film of three lengths, one per bucket
    lengths = [10, 30, 60]
    counters.clear()
    info = eng.warm_up(lengths, W, H, fps=24)  # the film's rate: the sound's length
    assert info["compile"] and info["reason"] == "compile = true"
    assert [s[:4] for s in info["shapes"]] == [[b, 32, 32, True] for b in (17, 33, 65)]
    assert list(eng.buckets) == [17, 33, 65]
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == len(eng.buckets)  # one graph per shape, shared by every block
    eng.generations.clear()
    for n in lengths:
        assert len(list(eng.render(shot(n), ctx()))) == n  # trimmed to the plan's frames
    assert [g[0] for g in eng.generations] == [17, 33, 65]
    assert counters["stats"]["unique_graphs"] == graphs  # nothing traced again
    # a character's reference appends its tokens (another input shape): that generation
    # runs eagerly rather than compiling in the middle of the film
    r = eng.render(shot(30), ctx(keyframes={"character:NELL": Keyframe("", 0, ramp_key())}))
    assert len(list(r)) == 30 and any("reference of NELL" in n for n in r.notes)
    assert counters["stats"]["unique_graphs"] == graphs
    # the next film (a new engine, same cache): every shape is warm in the estimate
    again = engine_by_name("ltx2", model=str(model_dir), compile=True,
                           compile_backend="eager", **SETTINGS)
    again.plan_film(lengths)
    _, _, cost = again._compile_decision(lengths, W, H)
    assert cost == pytest.approx(ltx2._COMPILE_START_WARM_S + 3 * ltx2._COMPILE_WARM_S)
    # "auto" on the CPU: no compile, and the report says why
    auto = engine_by_name("ltx2", model=str(model_dir), **SETTINGS)
    info = auto.warm_up(lengths, W, H)
    assert not info["compile"] and "CUDA only" in info["reason"] and not auto.compiled


def test_fp8_linear_layers_against_their_quantised_product():
    """Float8Linear is the product of the e4m3 input and weight with their row scales (a
    float64 reference from the quantised values), and within e4m3's error of the layer
    it replaces; to_float8 replaces the layers whose sizes FP8 products take."""
    from aiprod_post.generation.fp8 import E4M3_MAX, Float8Linear, to_float8

    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48)
    x = torch.randn(2, 7, 64) * torch.linspace(0.1, 10, 64)  # rows of different ranges
    f8 = Float8Linear(layer)
    y = f8(x)
    assert y.shape == (2, 7, 48) and y.dtype == x.dtype
    assert f8.weight.dtype == torch.float8_e4m3fn
    # the reference: quantise as the layer says, multiply in float64
    xs = x.reshape(-1, 64).double()
    sx = xs.abs().amax(1, keepdim=True) / E4M3_MAX
    qx = (xs / sx).float().to(torch.float8_e4m3fn).double() * sx
    w = layer.weight.double()
    sw = w.abs().amax(1, keepdim=True) / E4M3_MAX
    qw = (w / sw).float().to(torch.float8_e4m3fn).double() * sw
    ref = (qx @ qw.T + layer.bias.double()).reshape(2, 7, 48)
    assert torch.allclose(y.double(), ref, rtol=1e-4, atol=1e-4)
    exact = layer(x).double()
    assert 0 < (y.double() - exact).norm() / exact.norm() < 0.08
    net = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.GELU(), torch.nn.Linear(48, 10))
    assert to_float8(net) == 1 and isinstance(net[0], Float8Linear)
    assert isinstance(net[2], torch.nn.Linear)  # 10 outputs: not a multiple of 16


def test_fp8_engine_renders_and_refuses_loras(model_dir, loras):
    from aiprod_post.generation.fp8 import Float8Linear

    eng = engine_by_name("ltx2", model=str(model_dir), fp8=True, **SETTINGS)
    frames = list(eng.render(shot(10), ctx()))
    assert len(frames) == 10 and eng.identity["fp8_linears"] > 0
    blocks = eng.pipeline().transformer.transformer_blocks
    assert any(isinstance(m, Float8Linear) for m in blocks.modules())
    with pytest.raises(AiprodError, match="fp8"):
        engine_by_name("ltx2", model=str(model_dir), fp8=True, control_lora=str(loras["canny"]),
                       **SETTINGS).check()


def test_the_block_compiled_ahead_of_time_one_artifact_per_shape(model_dir, tmp_path,
                                                                  monkeypatch):
    """precompile (inductor): the warm-up exports the block once per shape (its weights as
    inputs) and compiles each into an artifact in the user's cache; every block then calls
    the one of its shape. A film of two buckets, one shot with dialogue (the DFR pipeline,
    on the same block inputs), comes out as the eager model makes it, dynamo traces
    nothing, no call falls back to the block's own code; a second engine loads the
    artifacts without building them and makes the same frames."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    lengths = [10, 30]
    line = speech(30 / 24 + 0.2)

    def film(eng) -> list[np.ndarray]:
        out = [np.stack(list(eng.render(shot(10), ctx())))]
        r = eng.render(shot(30, dialogue=True), ctx(dialogue=line))
        out.append(np.stack(list(r)))
        assert eng.generations[-1][3] == "LTX2DFRPipeline"
        return out

    eager = engine_by_name("ltx2", model=str(model_dir), compile=False, **SETTINGS)
    eager.warm_up(lengths, W, H, fps=24)
    expected = film(eager)
    torch._dynamo.reset()
    counters.clear()
    eng = engine_by_name("ltx2", model=str(model_dir), compile=True, **SETTINGS)
    info = eng.warm_up(lengths, W, H, fps=24)
    assert "error" not in info["aot"] and info["aot"]["built"], info["aot"]
    assert [s[:4] for s in info["shapes"]] == [[17, 32, 32, True], [33, 32, 32, True]]
    made = sorted((tmp_path / "cache" / "aot").glob("*.bin"))
    assert [p.name.split("-", 1)[1] for p in made] == ["17x32x32xTrue.bin",
                                                        "33x32x32xTrue.bin"]
    frames = film(eng)
    assert eng._aot_package.fallbacks == 0
    assert counters["stats"]["unique_graphs"] == 0  # no dynamo: the artifacts ran
    for a, b in zip(frames, expected):
        assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 1
    # a later run loads them
    again = engine_by_name("ltx2", model=str(model_dir), compile=True, **SETTINGS)
    info = again.warm_up(lengths, W, H, fps=24)
    assert not info["aot"]["built"] and info["aot"]["build_seconds"] == 0
    assert all(np.array_equal(a, b) for a, b in zip(film(again), frames))
    assert again._aot_package.fallbacks == 0
    # not with FP8 linear layers (compiled just in time)
    assert not engine_by_name("ltx2", model=str(model_dir), compile=True, fp8=True,
                              **SETTINGS).aot_blocks


def test_with_loras_an_artifact_runs_only_with_the_adapters_it_was_built_with(
        model_dir, loras, tmp_path, monkeypatch):
    """With the control IC-LoRA, the artifact is built with it on (the warm-up's step as
    the shots run) and the shots with the control LoRA alone run it, a dialogue shot (DFR,
    the previz as reference latents) too; a shot with the camera LoRA on as well has the
    same input shapes but another adapter state baked in: it runs the blocks' own code.
    Every shot's frames are those of the same engine uncompiled."""
    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    settings = dict(model=str(model_dir), control_lora=str(loras["canny"]),
                    camera_loras={"dolly": str(loras["dolly"])}, **SETTINGS)
    line = speech(20 / 24 + 0.2)

    def shots(eng, check=None) -> list[np.ndarray]:
        out = []
        for s, c in ((shot(20), ctx()), (shot(20, dialogue=True), ctx(dialogue=line)),
                     (shot(20, move=CameraMove.DOLLY), ctx())):
            before = eng._aot_package.fallbacks if check else 0
            out.append(np.stack(list(eng.render(s, c))))
            if check:
                check(s, eng._aot_package.fallbacks - before)
        return out

    eager = engine_by_name("ltx2", compile=False, **settings)
    eager.warm_up([20], W, H, fps=float(FPS))
    expected = shots(eager)
    eng = engine_by_name("ltx2", compile=True, **settings)
    info = eng.warm_up([20], W, H, fps=float(FPS))
    assert "error" not in info["aot"] and info["aot"]["built"], info["aot"]
    assert eng._active == ([], [])  # the control LoRA off again after the capture
    ran: dict[str, int] = {}
    frames = shots(eng, lambda s, fell: ran.__setitem__(
        f"{s.camera_move.value}{'+line' if s.dialogue else ''}", fell))
    assert ran["static"] == 0 and ran["static+line"] == 0  # the artifact, every call
    assert ran["dolly"] > 0  # the camera LoRA on: the blocks' own code
    assert eng.generations[1][3] == "LTX2DFRPipeline"
    for a, b in zip(frames, expected):
        assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 1
    # the mode it is built in is in its name: another control scale, or no control, is
    # another artifact (not the cached one, which that film's shots would never run)
    from aiprod_post.generation.ltx import aot_package

    x = sorted(eng.compiled_shapes)[0]
    built = eng._aot_package.path_for(x)
    for other in (dict(control_lora_scale=0.5), dict(control="none")):
        e = engine_by_name("ltx2", compile=True, **{**settings, **other})
        assert aot_package(e).path_for(x) != built
