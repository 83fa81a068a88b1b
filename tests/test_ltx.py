"""The ltx engine on the CPU, with a tiny randomly initialised LTX-Video built in the test
(transformer, VAE, T5 encoder, tokenizer), saved to a folder and loaded the way users load
real weights: from a local path only."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from aiprod_post.generation.ltx import drop_module_mocks  # noqa: E402

torch = pytest.importorskip("torch", reason="the ltx extra (torch, diffusers) is not installed")
drop_module_mocks()
diffusers = pytest.importorskip("diffusers")

from aiprod_post.errors import AiprodError  # noqa: E402
from aiprod_post.plan import Framing, Scene, Shot  # noqa: E402
from aiprod_post.generation.engine import Keyframe, RenderContext, engine_by_name  # noqa: E402
from aiprod_post.generation.ltx import (  # noqa: E402
    choose_buckets,
    generation_lengths,
    shot_prompt,
    valid_frames,
    valid_size,
)

W, H = 60, 40  # not multiples of 32 on purpose


def tiny_tokenizer(folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ("the a of and in on with shot wide close-up medium static camera pan light day "
             "night dusk dawn exterior interior pier booth nell ivo is speaking frame cinematic "
             "film still natural motion look worst quality blurry").split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.save_pretrained(folder)
    return fast, len(vocab)


def tiny_transformer():
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(0)
    return LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
        attention_head_dim=8, cross_attention_dim=32, num_layers=1, caption_channels=32)


def build_tiny_ltx(folder: Path) -> Path:
    """A randomly initialised LTX-Video, a few hundred kilobytes, saved like real weights."""
    from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler,
                           LTXConditionPipeline)
    from transformers import T5Config, T5EncoderModel

    tokenizer, vocab = tiny_tokenizer(folder / "tok")
    transformer = tiny_transformer()
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False), upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False, patch_size=1, patch_size_t=1, encoder_causal=True,
        decoder_causal=True)  # frame 0 decodes from latent frame 0 alone
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    # A trained VAE's posterior is sharp; a random one's variance is huge, and the
    # pipeline *samples* the conditioning latents. Give the tiny VAE a trained VAE's
    # certainty: the last encoder channel is the shared log-variance.
    with torch.no_grad():
        conv = vae.encoder.conv_out.conv
        conv.weight[-1].zero_()
        conv.bias[-1] = -30.0
    text = T5EncoderModel(T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                   num_heads=4, relative_attention_num_buckets=8))
    pipe = LTXConditionPipeline(transformer=transformer, vae=vae,
                                scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=text,
                                tokenizer=tokenizer)
    pipe.save_pretrained(folder / "model")
    return folder / "model"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_ltx(tmp_path_factory.mktemp("tiny-ltx"))


SETTINGS = dict(device="cpu", dtype="float32", preset="distilled", steps=2,
                max_sequence_length=16,
                extra={"image_cond_noise_scale": 0.0, "decode_timestep": 0.0})


def scene() -> Scene:
    return Scene(id="1", heading="EXT. PIER - DUSK", int_ext="EXT", location="PIER",
                 light="dusk", shots=[])


def shot(duration: int = 10, seed: int = 3) -> Shot:
    return Shot(id="1A", framing=Framing.WIDE, duration=duration, seed=seed,
                characters=["NELL"], action="Gulls over the water.")


def test_constraints_and_prompt():
    assert valid_frames(121) == 121 and valid_frames(122) == 129
    assert valid_size(W, H) == (64, 64)
    p = shot_prompt(shot(), RenderContext(scene(), W, H, Fraction(24)))
    assert "Gulls over the water" in p and "wide shot" in p and "dusk light" in p


def test_renders_a_shot_end_to_end_from_a_local_folder(model_dir):
    eng = engine_by_name("ltx", model=str(model_dir), **SETTINGS)
    r = eng.render(shot(10), RenderContext(scene(), W, H, Fraction(24)))
    frames = list(r)
    assert len(frames) == 10 and frames[0].shape == (H, W, 3) and frames[0].dtype == np.uint8
    assert set(r.keyframes) == {"first", "last"}
    assert eng.identity["pipeline"] == "LTXConditionPipeline" and len(eng.identity["sha256"]) == 64
    again = list(engine_by_name("ltx", model=str(model_dir), **SETTINGS).render(
        shot(10), RenderContext(scene(), W, H, Fraction(24))))
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))  # the plan's seed


def build_tiny_lora(path: Path, seed: int) -> Path:
    """A rank-2 LoRA on the tiny transformer's attention, as a diffusers .safetensors."""
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file

    t = tiny_transformer()
    torch.manual_seed(seed)
    t.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights=False,
                             target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    state = {f"transformer.{k}": v.contiguous() for k, v in get_peft_model_state_dict(t).items()}
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def test_a_characters_lora_is_on_for_the_shots_they_are_in(model_dir, tmp_path):
    """The cast file's LoRA of a character: loaded from its local path, on for the shots
    with that character (the picture changes), off for the others (the same picture as
    without it), its hash in the engine's identity; a missing file names the cast key."""
    pytest.importorskip("peft", reason="LoRAs need peft (the ltx extra)")
    from aiprod_post.files import sha256_file

    lora = build_tiny_lora(tmp_path / "nell.safetensors", 5)
    plain = engine_by_name("ltx", model=str(model_dir), **SETTINGS)
    eng = engine_by_name("ltx", model=str(model_dir), **SETTINGS,
                         cast_loras={"NELL": {"path": str(lora), "weight": 1.0}})
    nell, ivo = shot(9), shot(9).model_copy(update={"characters": ["IVO"]})
    ctx = RenderContext(scene(), W, H, Fraction(24))
    r = eng.render(nell, ctx)
    with_lora = np.stack(list(r)).astype(float)
    without = np.stack(list(plain.render(nell, ctx))).astype(float)
    assert np.abs(with_lora - without).mean() > 1.0  # grey levels
    assert "LoRAs: cast:NELL" in r.notes
    assert eng.pipeline().get_active_adapters() == ["cast_0"]
    np.testing.assert_array_equal(np.stack(list(eng.render(ivo, ctx))),
                                  np.stack(list(plain.render(ivo, ctx))))
    assert eng.identity["loras"]["cast:NELL"]["sha256"] == sha256_file(lora)
    assert "loras" not in plain.identity
    with pytest.raises(AiprodError, match=r"nope\.safetensors: cast file: characters\.NELL\.lora"
                                          r": no such LoRA file"):
        engine_by_name("ltx", model=str(model_dir), **SETTINGS,
                       cast_loras={"NELL": {"path": str(tmp_path / "nope.safetensors")}})


def ramp_key() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([xx * 4, yy * 6, 255 - xx * 4], axis=-1).clip(0, 255).astype(np.uint8)


def first_frames(eng, key: np.ndarray):
    """First frames for seeds 1 and 2, conditioned on ``key`` and free."""
    ctx = RenderContext(scene(), W, H, Fraction(24),
                        {"previous": Keyframe("1", 0, key, light="dusk")})
    free = RenderContext(scene(), W, H, Fraction(24))
    return [next(iter(eng.render(shot(9, seed=seed), c))).astype(float)
            for c in (ctx, free) for seed in (1, 2)]


def test_the_keyframe_is_honoured(model_dir):
    eng = engine_by_name("ltx", model=str(model_dir), **SETTINGS)
    key = ramp_key()
    first_a, first_b, free_a, free_b = first_frames(eng, key)
    # conditioned, the first frame is the keyframe's (seed hardly matters); free, it is noise's
    conditioned_spread = np.abs(first_a - first_b).mean()
    free_spread = np.abs(free_a.astype(float) - free_b.astype(float)).mean()
    assert conditioned_spread < 0.2 * free_spread
    # and it is the keyframe as the model's VAE sees it (encoded and decoded)
    pipe = eng.pipeline()
    x = pipe.video_processor.preprocess(_padded(key), 64, 64).unsqueeze(2)
    with torch.no_grad():
        lat = pipe.vae.encode(x).latent_dist.mode()
        seen = pipe.vae.decode(lat, return_dict=False)[0][0, :, 0].permute(1, 2, 0).numpy()
    seen = np.clip((seen + 1) * 127.5 + 0.5, 0, 255)[12:52, 2:62]  # the plan's crop
    near = np.abs(first_a - seen).mean()
    far = np.abs(free_a.astype(float) - seen).mean()
    assert near < 0.1 * far, (near, far)


def _padded(img):
    import cv2
    from PIL import Image
    return Image.fromarray(cv2.copyMakeBorder(img, 12, 12, 2, 2, cv2.BORDER_REPLICATE))


def test_long_shots_chain_segments(model_dir):
    eng = engine_by_name("ltx", model=str(model_dir), **{**SETTINGS, "max_frames": 9})
    frames = list(eng.render(shot(20), RenderContext(scene(), W, H, Fraction(24))))
    assert len(frames) == 20


def test_missing_or_wrong_model_paths(tmp_path):
    with pytest.raises(AiprodError, match="no such model path"):
        list(engine_by_name("ltx", model=str(tmp_path / "nope"), **SETTINGS).render(
            shot(), RenderContext(scene(), W, H, Fraction(24))))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model_index.json").write_text("{}")
    with pytest.raises(AiprodError, match="missing transformer, vae, scheduler"):
        list(engine_by_name("ltx", model=str(tmp_path / "half"), **SETTINGS).render(
            shot(), RenderContext(scene(), W, H, Fraction(24))))
    with pytest.raises(AiprodError, match="single-file checkpoint needs"):
        (tmp_path / "m.safetensors").write_bytes(b"x")
        list(engine_by_name("ltx", model=str(tmp_path / "m.safetensors"), **SETTINGS).render(
            shot(), RenderContext(scene(), W, H, Fraction(24))))
    with pytest.raises(AiprodError, match="unknown ltx setting"):
        engine_by_name("ltx", model="x", lora="y")


def test_render_with_ltx_and_no_model_stops_with_a_clear_error(tmp_path):
    from click.testing import CliRunner

    from aiprod_post.cli import main
    script = tmp_path / "s.fountain"
    script.write_text("EXT. PIER - DUSK\n\nGulls.\n")
    project = tmp_path / "p.toml"
    project.write_text(f'[engine]\nname = "ltx"\n[engine.ltx]\nmodel = "{tmp_path / "nope"}"\n')
    r = CliRunner().invoke(main, ["render", str(script), "-o", str(tmp_path / "out"),
                                  "--project", str(project), "--size", "160x96", "--quiet"])
    assert r.exit_code == 2 and "no such model path" in r.output
    assert not (tmp_path / "out" / "masters").exists()


@pytest.fixture(scope="module")
def upsampler_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised latent upsampler, saved as the real one is."""
    from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

    torch.manual_seed(1)
    model = LTXLatentUpsamplerModel(in_channels=8, mid_channels=32, num_blocks_per_stage=1,
                                    dims=3, spatial_upsample=True)
    folder = tmp_path_factory.mktemp("tiny-upsampler")
    model.save_pretrained(folder / "latent_upsampler")
    return folder


def test_two_stage_generation_with_the_latent_upsampler(model_dir, upsampler_dir):
    eng = engine_by_name("ltx", model=str(model_dir), upsampler=str(upsampler_dir),
                         upsample_steps=2, **SETTINGS)
    frames = list(eng.render(shot(10), RenderContext(scene(), W, H, Fraction(24))))
    assert len(frames) == 10 and frames[0].shape == (H, W, 3)
    # half size first (a multiple of 32 that doubles to cover the plan), then full size
    assert eng.passes == [(32, 32, 2), (64, 64, 2)]
    assert len(eng.identity["upsampler"]["sha256"]) == 64
    one = engine_by_name("ltx", model=str(model_dir), **SETTINGS)
    single = list(one.render(shot(10), RenderContext(scene(), W, H, Fraction(24))))
    assert one.passes == [(64, 64, 2)]
    assert not np.array_equal(frames[5], single[5])
    with pytest.raises(AiprodError, match="not a latent upsampler folder"):
        engine_by_name("ltx", model=str(model_dir), upsampler=str(model_dir),
                       **SETTINGS).check()


def test_the_keyframe_is_honoured_through_both_stages(model_dir, upsampler_dir):
    eng = engine_by_name("ltx", model=str(model_dir), upsampler=str(upsampler_dir),
                         upsample_steps=2, **SETTINGS)
    a, b, fa, fb = first_frames(eng, ramp_key())
    assert np.abs(a - b).mean() < 0.2 * np.abs(fa - fb).mean()


def test_a_character_reference_conditions_the_middle_of_the_shot(model_dir):
    """LTX takes an image at a frame other than 0 as extra keyframe tokens placed at that
    time; what a trained model makes of them a random one cannot show, so the test checks
    the tokens reach the transformer, and that they change the picture."""
    eng = engine_by_name("ltx", model=str(model_dir), **SETTINGS)
    ref = ramp_key()[:, :, ::-1].copy()
    with_ref = RenderContext(scene(), W, H, Fraction(24),
                             {"character:NELL": Keyframe("", 0, ref, characters=("NELL",))})
    seen: list[int] = []
    hook = eng.pipeline().transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["hidden_states"].shape[1]),
        with_kwargs=True)
    try:
        r1 = eng.render(shot(17, seed=1), with_ref)
        a = list(r1)
        free = list(eng.render(shot(17, seed=1), RenderContext(scene(), W, H, Fraction(24))))
    finally:
        hook.remove()
    assert r1.notes == ["conditioned on the reference of NELL at frame 8"]
    vae = eng.pipeline().vae
    per_latent_frame = (64 // vae.spatial_compression_ratio) ** 2
    steps = len(seen) // 2
    assert seen[0] - seen[steps] == per_latent_frame  # one latent frame of reference tokens
    assert not np.array_equal(a[8], free[8])
    short = eng.render(shot(9, seed=1), with_ref)
    list(short)
    assert "references not used" in short.notes[0]


def test_the_prompt_names_the_look():
    ctx = RenderContext(scene(), W, H, Fraction(24), look="teal_orange")
    assert "teal orange look" in shot_prompt(shot(), ctx, ctx.look)


EXAMPLE = Path(__file__).parent.parent / "examples" / "the_last_ferry.fountain"


def example_lengths() -> list[tuple[str, int]]:
    """Every shot of the example film with the frames its media needs (handles included),
    as the render's generation stage asks for them."""
    from aiprod_post.editing.timeline import handles_for
    from aiprod_post.planner import PlannerSettings, plan_source

    plan, _ = plan_source(EXAMPLE, PlannerSettings(fps=Fraction(24), width=W, height=H))
    handles = handles_for(plan)
    return [(s.id, s.duration + sum(handles[s.id])) for _, s in plan.shots()]


def test_the_example_film_is_generated_at_four_frame_counts_and_trimmed_exactly(monkeypatch):
    """Bucketed lengths: at most 4 frame counts (8n+1) for the whole example, each shot's
    generations trimmed back to exactly the plan's frames, few frames thrown away."""
    shots = example_lengths()
    eng = engine_by_name("ltx", model="unused", **SETTINGS)
    buckets = eng.plan_film([n for _, n in shots])
    assert 1 <= len(buckets) <= 4 and all(b % 8 == 1 for b in buckets)
    needs = [need for _, n in shots for need in generation_lengths(n, 121)]
    # a bucket can only be worse than each need's own 8n+1 by what the buckets must merge
    waste = sum(b - need for (_, n) in shots
                for need, b in zip(generation_lengths(n, 121), eng.lengths_for(n)))
    assert waste <= 0.1 * sum(needs)
    assert len({valid_frames(n) for n in needs}) > 4  # bucketing did something

    # the render path itself: generations of the bucket's length, frames counted out
    made: list[int] = []

    def fake_generate(prompt, n, w, h, seed, conditions):
        made.append(n)
        return np.full((n, h, w, 3), len(made) % 256, np.uint8)

    monkeypatch.setattr(eng, "_generate", fake_generate)
    for sid, n in shots:
        before = len(made)
        frames = list(eng.render(shot(n), RenderContext(scene(), W, H, Fraction(24))))
        assert len(frames) == n, sid  # no shot loses or gains frames
        assert made[before:] == eng.lengths_for(n), sid
    assert set(made) <= set(buckets)


def test_choose_buckets_is_the_least_waste():
    needs = [5, 36, 41, 48, 60, 72, 101, 121, 121]
    best = choose_buckets(needs, 3)
    from itertools import combinations

    def waste(bs):
        return sum(min(b for b in bs if b >= n) - n for n in needs)

    candidates = sorted({valid_frames(n) for n in needs})
    brute = min(waste(c) for k in (1, 2, 3) for c in combinations(candidates, k)
                if max(c) >= max(needs))
    assert waste(best) == brute and len(best) <= 3


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "static"])
def test_a_film_compiles_once_and_not_again_while_rendering(model_dir, tmp_path, monkeypatch,
                                                            dynamic):
    """Shots of four lengths in two buckets: the warm-up traces the transformer's block
    once for all of them (the engine's symbolic token counts; with static shapes once per
    bucket), counted with dynamo's counters; the shots, free or on a keyframe, then run
    without tracing again, at one guidance batch; the compiled shapes are recorded in the
    user's cache folder, where a second run finds them warm."""
    from torch._dynamo.utils import counters

    from aiprod_post.generation import ltx

    assert ltx.LTXEngine.dynamic_shapes  # the engine's own choice
    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "unset-below")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setattr(ltx.LTXEngine, "dynamic_shapes", dynamic)
    torch._dynamo.reset()
    counters.clear()
    lengths = [10, 12, 20, 25]
    eng = engine_by_name("ltx", model=str(model_dir), compile=True, compile_backend="eager",
                         max_buckets=2, **SETTINGS)
    info = eng.warm_up(lengths, W, H)
    graphs = 1 if dynamic else 2
    assert info["compile"] and info["buckets"] == [17, 25]
    # dynamic: traced once, at the largest bucket
    assert [s[:3] for s in info["shapes"]] == \
        ([[25, 64, 64]] if dynamic else [[17, 64, 64], [25, 64, 64]])
    assert counters["stats"]["unique_graphs"] == graphs
    seen: set[tuple[int, ...]] = set()
    hook = eng.pipeline().transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.add(tuple(kwargs["hidden_states"].shape)),
        with_kwargs=True)
    key = {"previous": Keyframe("1", 0, ramp_key(), light="dusk")}
    try:
        for i, n in enumerate(lengths):  # the first shot free, the others on a keyframe
            ctx = RenderContext(scene(), W, H, Fraction(24), key if i else {})
            assert len(list(eng.render(shot(n), ctx))) == n
    finally:
        hook.remove()
    assert counters["stats"]["unique_graphs"] == graphs  # no shot traced again
    assert {s[0] for s in seen} == {1}  # distilled: no guidance batch
    assert len(seen) == 2 and [g[0] for g in eng.generations] == [17, 17, 25, 25]
    # the warm cache: inductor's folder and the compiled shapes under AIPROD_CACHE
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "inductor")
    again = engine_by_name("ltx", model=str(model_dir), compile=True, compile_backend="eager",
                           max_buckets=2, **SETTINGS)
    again.pipeline()
    again.plan_film(lengths)
    _, _, cost = again._compile_decision(lengths, W, H)
    assert cost == ltx._COMPILE_START_WARM_S + graphs * ltx._COMPILE_WARM_S  # all warm
    torch._dynamo.reset()


def test_a_shot_with_no_keyframe_is_the_same_picture_as_a_free_generation(model_dir):
    """Free generations are conditioned on a grey frame at strength 0 (one compiled shape
    for all): the picture is the stock pipeline's with no condition at all."""
    from aiprod_post.generation.ltx import NEGATIVE_PROMPT

    eng = engine_by_name("ltx", model=str(model_dir), **SETTINGS)
    ctx = RenderContext(scene(), W, H, Fraction(24))
    ours = np.stack(list(eng.render(shot(17, seed=5), ctx)))
    pipe = eng.pipeline()
    stock = pipe(prompt=shot_prompt(shot(17), ctx), negative_prompt=NEGATIVE_PROMPT,
                 width=64, height=64, num_frames=17, num_inference_steps=2,
                 guidance_scale=1.0, max_sequence_length=16, output_type="np",
                 generator=torch.Generator().manual_seed(5), **SETTINGS["extra"]).frames[0]
    stock = np.clip(stock * 255 + 0.5, 0, 255).astype(np.uint8)[:, 12:52, 2:62]
    assert np.abs(ours.astype(int) - stock).max() <= 1


def test_compile_auto_stays_off_on_the_cpu(model_dir):
    eng = engine_by_name("ltx", model=str(model_dir), **SETTINGS)
    info = eng.warm_up([10, 30], W, H)
    assert info["compile"] is False and "CUDA only" in info["reason"]
    assert info["buckets"] == [33] or len(info["buckets"]) <= 2
    assert not eng.compiled


def test_the_guidance_batch_is_fixed_by_the_preset(model_dir):
    eng = engine_by_name("ltx", model=str(model_dir), **{**SETTINGS, "preset": "dev"})
    eng.plan_film([9, 17])
    batches = set()
    hook = eng.pipeline().transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: batches.add(kwargs["hidden_states"].shape[0]),
        with_kwargs=True)
    try:
        for n in (9, 17):
            list(eng.render(shot(n), RenderContext(scene(), W, H, Fraction(24))))
    finally:
        hook.remove()
    assert batches == {2}


def test_a_render_reports_its_compile_stage(model_dir, tmp_path):
    """The render warms the engine up before the first shot and reports it as a stage of
    its own, with the film's buckets and why it compiled or not."""
    import json

    from click.testing import CliRunner

    from aiprod_post.cli import main
    script = tmp_path / "s.fountain"
    script.write_text("EXT. PIER - DUSK\n\nGulls.\n")
    project = tmp_path / "p.toml"
    project.write_text(f'[engine]\nname = "ltx"\n[engine.ltx]\nmodel = "{model_dir}"\n'
                       'device = "cpu"\ndtype = "float32"\nsteps = 1\n')
    r = CliRunner().invoke(main, ["render", str(script), "-o", str(tmp_path / "out"),
                                  "--project", str(project), "--size", "64x64", "--quiet"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "compile" in report["stage_seconds"]
    assert report["compile"]["compile"] is False and "CUDA only" in report["compile"]["reason"]
    assert len(report["compile"]["buckets"]) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_bf16_two_stage_render(model_dir, upsampler_dir):
    """The GPU path users take: CUDA, bfloat16, the compiled transformer, both stages."""
    eng = engine_by_name("ltx", model=str(model_dir), upsampler=str(upsampler_dir),
                         **{**SETTINGS, "device": "cuda", "dtype": "bfloat16", "compile": True,
                            "upsample_steps": 2})
    key = ramp_key()
    ctx = RenderContext(scene(), W, H, Fraction(24),
                        {"previous": Keyframe("1", 0, key, light="dusk"),
                         "character:NELL": Keyframe("", 0, key[::-1].copy())})
    frames = list(eng.render(shot(20), ctx))
    assert len(frames) == 20 and frames[0].shape == (H, W, 3)
    assert eng.passes[:2] == [(32, 32, 2), (64, 64, 2)]
    assert eng.identity["dtype"] == "bfloat16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_block_compiled_ahead_of_time(model_dir, tmp_path, monkeypatch):
    """The ahead-of-time block on the GPU (bfloat16, inductor's Triton kernels): built by
    the warm-up, every generation of two buckets runs it (no fallback, no dynamo graph),
    the frames as the eager model makes them within bfloat16's noise; a second engine
    loads it."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    gpu = {**SETTINGS, "device": "cuda", "dtype": "bfloat16", "max_buckets": 2}
    lengths = [10, 20]

    def film(eng) -> list[np.ndarray]:
        return [np.stack(list(eng.render(shot(n), RenderContext(scene(), W, H, Fraction(24),
                                                                {})))) for n in lengths]

    expected = film(engine_by_name("ltx", model=str(model_dir), compile=False, **gpu))
    torch._dynamo.reset()
    counters.clear()
    eng = engine_by_name("ltx", model=str(model_dir), compile=True, **gpu)
    eng.build_in_background = False  # (the test below builds in a child process)
    info = eng.warm_up(lengths, W, H)
    assert info["aot"]["built"] and "error" not in info["aot"], info["aot"]
    frames = film(eng)
    assert eng._aot_package.fallbacks == 0 and counters["stats"]["unique_graphs"] == 0
    for a, b in zip(frames, expected):
        assert a.shape == b.shape and np.abs(a.astype(int) - b).mean() < 2
    again = engine_by_name("ltx", model=str(model_dir), compile=True, **gpu)
    info = again.warm_up(lengths, W, H)
    assert not info["aot"]["built"]
    assert all(np.array_equal(a, b) for a, b in zip(film(again), frames))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_block_built_in_a_child_process(model_dir, tmp_path, monkeypatch):
    """On a GPU with memory to spare a cold cache's artifact is built in a child process
    (the default there): the first shot runs the blocks' own code, the next loads the
    artifact and runs it on every call, frames as the eager model's within bfloat16's
    noise."""
    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    gpu = {**SETTINGS, "device": "cuda", "dtype": "bfloat16", "max_buckets": 2}
    lengths = [10, 20]

    def one(eng, n) -> np.ndarray:
        return np.stack(list(eng.render(shot(n), RenderContext(scene(), W, H, Fraction(24),
                                                                {}))))

    plain = engine_by_name("ltx", model=str(model_dir), compile=False, **gpu)
    expected = [one(plain, n) for n in lengths]
    eng = engine_by_name("ltx", model=str(model_dir), compile=True, **gpu)
    info = eng.warm_up(lengths, W, H)["aot"]
    aot = eng._aot_package
    assert "background" in info and not aot.installed, info
    first = one(eng, lengths[0])
    assert aot._child.wait(timeout=600) == 0, aot.path_for(None).with_suffix(".log").read_text()
    second = one(eng, lengths[1])
    assert aot.installed and aot.fallbacks == 0 and "error" not in aot.background
    for a, b in zip([first, second], expected):
        assert a.shape == b.shape and np.abs(a.astype(int) - b).mean() < 2


def test_the_warm_up_step_runs_only_the_blocks_that_compile():
    """trace_blocks: inside, the first two blocks (and those kept) run and the others
    pass their input through; after, the transformer has its own blocks again."""
    from aiprod_post.generation.ltx import trace_blocks

    class Block(torch.nn.Module):
        calls = 0

        def forward(self, hidden_states):
            self.calls += 1
            return hidden_states + 1

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer_blocks = torch.nn.ModuleList(Block() for _ in range(5))

        def forward(self, x):
            for block in self.transformer_blocks:
                x = block(hidden_states=x)
            return x

    model = Model()
    blocks = list(model.transformer_blocks)
    with trace_blocks(model, keep=[3]):
        assert model(torch.zeros(1)).item() == 3
    assert [b.calls for b in blocks] == [1, 1, 0, 1, 0]
    assert isinstance(model.transformer_blocks, torch.nn.ModuleList)
    assert list(model.transformer_blocks) == blocks and model(torch.zeros(1)).item() == 5
    with trace_blocks(model, full=True):
        assert model(torch.zeros(1)).item() == 5


def test_auto_compiles_the_shapes_that_repay_it_and_runs_the_others_eagerly(
        model_dir, tmp_path, monkeypatch):
    """compile = "auto" weighs each shape: the transformer time its generations would save
    against what compiling it costs (cold here: an empty cache); a shape left out is
    generated eagerly, and rendering it traces nothing (dynamo's counters)."""
    from torch._dynamo.utils import counters

    from aiprod_post.generation import ltx

    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ltx.LTXEngine, "dynamic_shapes", False)  # a graph per shape
    eng = engine_by_name("ltx", model=str(model_dir), compile_backend="eager",
                         max_buckets=2, **SETTINGS)
    lengths = [10, 12, 20, 25]
    eng.pipeline()
    eng.plan_film(lengths)
    assert eng.buckets == (17, 25)
    # the plan as on a GPU, where 25 frames carry most of the film's transformer time
    eng.s.device = "cuda"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "a GPU")
    seconds = {(17, 64, 64): 1.0, (25, 64, 64): 200.0}
    monkeypatch.setattr(eng, "_shape_gpu_seconds", lambda *a: seconds)
    verdict, reason, cost, chosen = eng._compile_plan(lengths, W, H)
    assert verdict and chosen == [(25, 64, 64)] and "1 of 2 shapes" in reason
    assert cost == ltx._COMPILE_START_COLD_S + ltx._COMPILE_COLD_S
    seconds[(25, 64, 64)] = 2.0  # nothing repays compiling
    verdict, reason, cost, chosen = eng._compile_plan(lengths, W, H)
    assert not verdict and chosen == [] and cost == 0.0 and "0 of 2" in reason
    # what the warm-up leaves for a render: 25 frames compiled, 17 eager
    eng.s.device = "cpu"
    torch._dynamo.reset()
    counters.clear()
    eng._compile_blocks()
    eng.compiled_shapes = {(25, 64, 64)}
    for n in (10, 12):  # the 17-frame bucket
        assert len(list(eng.render(shot(n), RenderContext(scene(), W, H, Fraction(24))))) == n
    assert counters["stats"]["unique_graphs"] == 0
    assert len(list(eng.render(shot(20), RenderContext(scene(), W, H, Fraction(24))))) == 20
    assert counters["stats"]["unique_graphs"] == 1
    assert [g[0] for g in eng.generations] == [17, 17, 25]
    torch._dynamo.reset()


def test_the_block_compiled_ahead_of_time_is_built_once_and_loaded_after(model_dir, tmp_path,
                                                                        monkeypatch):
    """precompile: the warm-up exports the transformer's block once (its weights as inputs,
    the token count symbolic) and AOTInductor compiles it into a package in the user's
    cache; every block then calls it. Shots of both buckets come out as the eager model
    makes them, nothing falls back to the block's own code and dynamo traces nothing. A
    second engine loads the package (no build) and makes the same frames."""
    from torch._dynamo.utils import counters

    from aiprod_post.generation import ltx

    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    lengths = [10, 20]
    key = {"previous": Keyframe("1", 0, ramp_key(), light="dusk")}

    def film(eng) -> list[np.ndarray]:
        out = []
        for i, n in enumerate(lengths):
            ctx = RenderContext(scene(), W, H, Fraction(24), key if i else {})
            out.append(np.stack(list(eng.render(shot(n), ctx))))
        return out

    eager = film(engine_by_name("ltx", model=str(model_dir), compile=False, max_buckets=2,
                                **SETTINGS))
    torch._dynamo.reset()
    counters.clear()
    eng = engine_by_name("ltx", model=str(model_dir), compile=True, precompile=True,
                         max_buckets=2, **SETTINGS)
    info = eng.warm_up(lengths, W, H)
    assert info["aot"]["built"] and "error" not in info["aot"], info["aot"]
    package = Path(info["aot"]["package"])
    assert package.parent == tmp_path / "cache" / "aot" and package.is_file()
    assert all("forward" in vars(b) for b in eng.pipeline().transformer.transformer_blocks)
    frames = film(eng)
    assert [g[0] for g in eng.generations] == [17, 25]
    assert eng._aot_package.fallbacks == 0
    assert counters["stats"]["unique_graphs"] == 0  # no dynamo: the package ran
    for a, b in zip(frames, eager):
        assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 1
    # a later run: the package is loaded, not built, and costs the load in the plan
    again = engine_by_name("ltx", model=str(model_dir), compile=True, precompile=True,
                           max_buckets=2,
                           **SETTINGS)
    again.pipeline()
    again.plan_film(lengths)
    assert again._compile_decision(lengths, W, H)[2] == ltx._AOT_LOAD_S
    info = again.warm_up(lengths, W, H)
    assert not info["aot"]["built"] and info["aot"]["load_seconds"] < 5
    assert all(np.array_equal(a, b) for a, b in zip(film(again), frames))
    assert again._aot_package.fallbacks == 0


def test_the_block_built_in_a_child_process_is_loaded_between_shots(model_dir, tmp_path,
                                                                    monkeypatch):
    """build_in_background: with a cold cache the warm-up hands the block and its inputs
    to a child process and returns without building; the shots run the block's own code
    until the artifact is ready, and the next generation after that loads and calls it.
    Frames as the eager model makes them either way; a later run loads the artifact."""
    from aiprod_post.generation.aot import AOTBlocks, _lock_owner

    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    lengths = [10, 20]
    key = {"previous": Keyframe("1", 0, ramp_key(), light="dusk")}
    calls: list[int] = []
    call = AOTBlocks._call

    def counted(self, *args, **kwargs):
        calls.append(1)
        return call(self, *args, **kwargs)

    monkeypatch.setattr(AOTBlocks, "_call", counted)

    def one(eng, i: int) -> np.ndarray:
        ctx = RenderContext(scene(), W, H, Fraction(24), key if i else {})
        return np.stack(list(eng.render(shot(lengths[i]), ctx)))

    plain = engine_by_name("ltx", model=str(model_dir), compile=False, max_buckets=2,
                           **SETTINGS)
    eager = [one(plain, i) for i in range(2)]
    eng = engine_by_name("ltx", model=str(model_dir), compile=True, precompile=True,
                         max_buckets=2, **SETTINGS)
    eng.build_in_background = True
    info = eng.warm_up(lengths, W, H)["aot"]
    assert not info["built"] and "error" not in info, info
    aot = eng._aot_package
    child = aot._child
    assert info["background"]["building_in"] == child.pid
    lock = aot.path_for(None).with_suffix(".building")
    assert _lock_owner(lock) == child.pid  # a second run would wait for this one
    blocks = eng.pipeline().transformer.transformer_blocks
    assert child.poll() is None and not any("forward" in vars(b) for b in blocks)
    # the same engine's next film while the child builds: it waits for the same child
    again_info = eng.warm_up(lengths, W, H)["aot"]
    assert again_info["background"]["building_in"] == child.pid and aot._child is child
    first = one(eng, 0)  # meanwhile: the blocks' own code
    assert not calls and not aot.installed
    assert child.wait(timeout=600) == 0, aot.path_for(None).with_suffix(".log").read_text()
    assert aot.cached and not lock.exists()
    second = one(eng, 1)  # its generation loads the artifact first, then calls it
    assert aot.installed and len(calls) == len(blocks) * 2  # 2 steps
    assert aot.fallbacks == 0 and aot.background["load_seconds"] > 0
    assert aot.background["generations_before"] == 1 and "error" not in aot.background
    for a, b in zip([first, second], eager):
        assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 1
    again = engine_by_name("ltx", model=str(model_dir), compile=True, precompile=True,
                           max_buckets=2, **SETTINGS)
    again.build_in_background = True
    info = again.warm_up(lengths, W, H)["aot"]
    assert "background" not in info and not info["built"] and again._aot_package.installed


def test_inductor_is_imported_beside_the_model_load_where_an_artifact_will_be_used(
        monkeypatch):
    """An engine that will load (or build) its block's artifact on the GPU starts importing
    inductor's load path in a background thread before it loads its model; the load of
    an artifact waits for that thread. Not where nothing compiles ahead of time."""
    from types import SimpleNamespace

    from aiprod_post.generation import aot, ltx

    started: list[int] = []
    monkeypatch.setattr(aot, "prefetch", lambda: started.append(1))

    def engine(**kw):
        s = dict(precompile=True, compile="auto", compile_backend="inductor",
                 cpu_offload=False, device="cuda", **kw)
        return SimpleNamespace(aot_blocks=True, s=SimpleNamespace(**s))

    ltx.prefetch_compiler(engine())
    assert started == [1]
    for settings in ({"compile": False}, {"precompile": False}, {"device": "cpu"},
                     {"cpu_offload": True}, {"compile_backend": "eager"}):
        e = engine()
        vars(e.s).update(settings)
        ltx.prefetch_compiler(e)
    assert started == [1]
    # the thread itself (the real one): imports, and computes the key the load checks
    monkeypatch.undo()
    import threading

    from torch._inductor import codecache

    key = codecache.torch_key
    keyed: list[str] = []

    def torch_key():
        keyed.append(threading.current_thread().name)
        return key()

    monkeypatch.setattr(codecache, "torch_key", torch_key)
    monkeypatch.setattr(aot, "_prefetch", None)
    aot.prefetch()
    thread = aot._prefetch
    aot.prefetch()  # once a process
    assert aot._prefetch is thread
    assert aot.prefetched() >= 0 and not thread.is_alive()
    assert keyed == ["aiprod-inductor-prefetch"]


class UntraceableBlock(torch.nn.Module):
    """A block export cannot trace (its branch depends on its input's values); module
    level, so a build job can pickle it."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(4))

    def forward(self, hidden_states):
        if hidden_states.sum().item() > 0:
            return hidden_states * self.w
        return hidden_states


class OneBlock(torch.nn.Module):
    """A transformer of one :class:`UntraceableBlock`."""

    def __init__(self):
        super().__init__()
        self.transformer_blocks = torch.nn.ModuleList([UntraceableBlock()])
        self.config = {"blocks": 1}


def test_a_failed_build_in_a_child_process_is_remembered_and_the_film_goes_on(tmp_path):
    """The child's build (aot._main) of a block that cannot be exported leaves the reason
    beside the artifact (later runs do not try again), no artifact and no lock; the
    engine's poll then reports it and installs nothing (the shots keep the block's own
    code)."""
    import subprocess
    import sys

    from aiprod_post.generation import aot

    blocks = aot.AOTBlocks(OneBlock(), ["test"], tmp_path)
    path = blocks.path_for(None)
    job = tmp_path / "one.job"
    torch.save({"block": UntraceableBlock(), "args": (), "kwargs": {"hidden_states": torch.ones(1, 3, 4)},
                "path": str(path), "options": {}, "dynamic": True, "mode": None}, job)
    lock = path.with_suffix(".building")
    lock.write_text(str(os.getpid()))
    with torch._inductor.config.patch(fx_graph_cache=False):  # (the child sets it)
        with pytest.raises(Exception):
            aot._main(str(job))
    assert not job.exists() and not lock.exists()
    assert not blocks.cached and blocks.failed_for(None)
    blocks._child = subprocess.Popen([sys.executable, "-c", "pass"])
    blocks._child.wait()
    blocks.background = {"started": 0.0}
    assert blocks.poll() is None and not blocks.installed
    assert blocks.background["error"] == blocks.failed_for(None)
    # a job that cannot be read (not the block's fault): nothing remembered, nothing left
    path.with_suffix(".failed").unlink()
    job = tmp_path / f".{path.stem}.x1y2.job"
    job.write_bytes(b"not a pickle")
    lock.write_text(str(os.getpid()))
    with pytest.raises(Exception):
        aot._main(str(job))
    assert not job.exists() and not lock.exists() and not blocks.failed_for(None)


def test_a_background_build_is_stopped_when_the_gpu_runs_out_beside_it(model_dir, tmp_path):
    """The OOM ladder's first step while a child builds: the child is stopped, its lock
    removed, and the engine's report says why (the next run builds it again)."""
    import subprocess
    import sys

    from aiprod_post.generation import aot

    blocks = aot.AOTBlocks(OneBlock(), ["test"], tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    lock = blocks.path_for(None).with_suffix(".building")
    lock.write_text(str(child.pid))
    blocks._child, blocks.background = child, {"started": 0.0}
    assert blocks.building()
    eng = engine_by_name("ltx", model=str(model_dir), **SETTINGS)
    eng.pipeline()
    eng._aot_package = blocks
    tries: list[int] = []

    def generate(segment):  # out of memory once, beside the child
        tries.append(segment)
        if len(tries) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return "frames"

    assert eng._with_fallbacks(shot(10), generate) == "frames"
    assert child.poll() is not None and not lock.exists() and not blocks.building()
    assert blocks.background == {"error": "stopped: the GPU ran out of memory beside it"}
    # the ladder's first step was the child; nothing else stepped down
    assert not eng.s.vae_tiling and not eng.s.cpu_offload and tries[0] == tries[1]


def test_a_failed_hand_over_to_the_child_compiles_just_in_time_and_leaves_nothing(
        model_dir, tmp_path, monkeypatch):
    """A hand-over that fails (the disk full when the block's job file is written) is not
    the block's fault: this run compiles just in time, the cache remembers no failure and
    holds no job file or lock."""
    from aiprod_post.generation import ltx

    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    jit: list[int] = []

    def compile_blocks(self):
        jit.append(1)
        self.compiled = True

    monkeypatch.setattr(ltx.LTXEngine, "_compile_blocks", compile_blocks)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    eng = engine_by_name("ltx", model=str(model_dir), compile=True, precompile=True,
                         max_buckets=2, **SETTINGS)
    eng.build_in_background = True
    info = eng.warm_up([10, 20], W, H)
    assert "No space left" in info["aot"]["error"] and jit == [1]
    assert sorted(p.name for p in (tmp_path / "cache" / "aot").iterdir()) == []


def test_a_build_lock_names_a_live_process_and_a_dead_one_is_cleared(tmp_path):
    """Two runs never build the same artifact at once: the lock names the building
    process while it runs; one left by a process that died is removed."""
    import subprocess
    import sys

    from aiprod_post.generation.aot import _lock_owner

    lock = tmp_path / "a.building"
    assert _lock_owner(lock) is None
    lock.write_text(str(os.getpid()))
    assert _lock_owner(lock) == os.getpid()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    lock.write_text(dead)
    assert _lock_owner(lock) is None and not lock.exists()


def test_a_failed_build_or_a_damaged_artifact_falls_back_to_compiling_just_in_time(
        model_dir, tmp_path, monkeypatch):
    """A block that cannot be built ahead of time is compiled just in time (torch.compile),
    and the cache remembers the failure (the next run does not try again); an artifact of
    the cache that does not load is removed (the next run builds it) and this run compiles
    just in time."""
    from aiprod_post.generation import ltx
    from aiprod_post.generation.aot import AOTBlocks

    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    jit: list[str] = []

    def compile_blocks(self):  # what torch.compile would be asked to do (not run: slow)
        jit.append(self.name)
        self.compiled = True

    monkeypatch.setattr(ltx.LTXEngine, "_compile_blocks", compile_blocks)
    tries: list[int] = []

    def no_export(self, step, shape=None):
        tries.append(1)
        raise RuntimeError("cannot export this block\nsecond line")

    monkeypatch.setattr(AOTBlocks, "build", no_export)
    lengths = [10, 20]

    def engine():
        return engine_by_name("ltx", model=str(model_dir), compile=True, max_buckets=2,
                              **SETTINGS)

    info = engine().warm_up(lengths, W, H)
    assert info["aot"]["error"] == "RuntimeError: cannot export this block"
    assert jit == ["ltx"] and tries == [1] and info["shapes"]  # compiled just in time
    info = engine().warm_up(lengths, W, H)  # the next run: not tried again
    assert info["aot"]["error"].startswith("an earlier build failed: RuntimeError")
    assert jit == ["ltx", "ltx"] and tries == [1]
    # a damaged artifact (another Triton, a truncated file): removed, compiled just in time
    eng = engine()
    eng.pipeline()
    aot = ltx.aot_package(eng)
    aot.path_for(None).with_suffix(".failed").unlink()
    aot.path_for(None).write_bytes(b"not an artifact")
    aot.path_for(None).with_suffix(".json").write_text(json.dumps(
        {"key": [], "mask": [], "tree": "", "out": ""}))
    info = eng.warm_up(lengths, W, H)
    assert info["aot"]["error"].endswith("(removed from the cache)")
    assert not aot.path_for(None).exists() and not aot.cached and jit == ["ltx"] * 3
