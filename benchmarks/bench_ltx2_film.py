"""LTX-2 on a whole film: the example film's plan through the ``ltx2`` engine, end to end on
one GPU, beside the stock diffusers LTX-2 condition pipeline shot by shot on the same plan.

The model is the full-size LTX-2 (19B) audio-video transformer in bf16 with random weights
built from its diffusers configuration (the same compute as trained weights; nothing
downloads), with LTX-2's video VAE, audio VAE, vocoder and text connectors at full size.
The text encoder is smaller than LTX-2's Gemma 3 12B (Gemma 3's architecture at its width,
3840, but ``--text-layers`` layers instead of 48; the connectors take that many hidden
states): text encoding runs once per shot and is not the hot path, and the 12B encoder's
24 GB would stand beside the transformer's 35 GB for no difference in what is measured.
``--model DIR`` takes the parts from a local diffusers LTX-2 folder instead (real weights,
or the tests' tiny model on the CPU).

The plan is ``examples/the_last_ferry.fountain`` as the planner makes it (handles for its
transitions included), at 768x512 and 24 fps, distilled settings (LTX-2's 8 distilled
sigmas, no guidance). No TTS runs here: each shot with dialogue (13 of the 20) gets a
stand-in voice the length of the shot (a 140 Hz voice with its harmonics, four syllables
a second, :func:`voice`), and is generated audio-to-video as a render generates it: the
engine's real path (the DFR pipeline, ``freeze_audio``, the lip-sync meter on its frames);
stock runs ``LTX2DFRPipeline`` shot by shot for those, with the same voice encoded to the
same audio latents. ``--no-dialogue`` runs every shot through the condition pipeline.

Ours is the engine as a render drives it: the film's frame-count buckets, the warm-up that
compiles them (timed apart: compile seconds), then every shot conditioned on the keyframes
of the shots before it (the render's keyframe store), frames streamed and counted. Stock
is ``LTX2ConditionPipeline`` (``LTX2DFRPipeline`` for dialogue) called per segment at each
segment's own 8n+1 length, with the prompt text, conditioned on the previous generation's
last frame, nothing compiled, ``output_type="np"`` as its documentation shows.

``--run both`` (the default) runs stock, then ours, in one process and prints one JSON
line; ``--run ours`` again with the same ``--cache`` measures the warm inductor cache.
``--subset`` runs each distinct shot length (handles included) once, and gives the film's
figures as those shots' seconds weighted by how many shots have each length. Distinct
shapes are the distinct inputs the transformer saw. Needs CUDA, torch, diffusers >= 0.42.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: LTX-2.0's video VAE as diffusers' conversion script configures it (its defaults differ:
#: a causal decoder)
VIDEO_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=128, block_out_channels=(256, 512, 1024, 2048),
    down_block_types=("LTX2VideoDownBlock3D",) * 4, decoder_block_out_channels=(256, 512, 1024),
    layers_per_block=(4, 6, 6, 2, 2), decoder_layers_per_block=(5, 5, 5, 5),
    spatio_temporal_scaling=(True,) * 4, decoder_spatio_temporal_scaling=(True,) * 3,
    decoder_inject_noise=(False,) * 4,
    downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    upsample_residual=(True,) * 3, upsample_factor=(2, 2, 2), timestep_conditioning=False,
    patch_size=4, patch_size_t=1, resnet_norm_eps=1e-6, encoder_causal=True,
    decoder_causal=False, encoder_spatial_padding_mode="zeros",
    decoder_spatial_padding_mode="reflect", spatial_compression_ratio=32,
    temporal_compression_ratio=8)


def build(device: str = "cuda", dtype=torch.bfloat16, text_layers: int = 4) -> dict:
    """The LTX-2 pipeline's parts with random weights: the transformer, audio VAE, vocoder
    and connectors at diffusers' LTX-2.0 defaults, the video VAE as above, and a Gemma 3
    text encoder of LTX-2's width with ``text_layers`` layers."""
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video,
                           FlowMatchEulerDiscreteScheduler, LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, GemmaTokenizer

    words = "a b c d e f g h i j k l m n o p q r s t u v w x y z".split()
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3,
             **{w: i + 4 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = GemmaTokenizer(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                               bos_token="<bos>", unk_token="<unk>")
    gemma = Gemma3Config(  # Gemma 3 12B's text width and heads; fewer layers
        text_config=dict(vocab_size=len(vocab), hidden_size=3840, intermediate_size=15360,
                         num_hidden_layers=text_layers, num_attention_heads=16,
                         num_key_value_heads=8, head_dim=256, max_position_embeddings=4096,
                         sliding_window=1024),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=28, patch_size=14),
        mm_tokens_per_image=4, boi_token_index=2, eoi_token_index=1, image_token_index=3)
    torch.manual_seed(0)
    with torch.device(device):  # initialised where they run: seconds, not minutes
        parts = dict(
            transformer=LTX2VideoTransformer3DModel(),
            vae=AutoencoderKLLTX2Video(**VIDEO_VAE),
            audio_vae=AutoencoderKLLTX2Audio(),
            vocoder=LTX2Vocoder(),
            connectors=LTX2TextConnectors(text_proj_in_factor=text_layers + 1),
            text_encoder=Gemma3ForConditionalGeneration(gemma))
        for name, module in parts.items():
            parts[name] = module.to(dtype).eval()
            torch.cuda.empty_cache() if device == "cuda" else None
    return dict(parts, tokenizer=tokenizer, scheduler=FlowMatchEulerDiscreteScheduler())


def load(folder: str, device: str, dtype) -> dict:
    """The parts of a local diffusers LTX-2 folder."""
    from diffusers import LTX2InContextPipeline

    pipe = LTX2InContextPipeline.from_pretrained(folder, local_files_only=True, dtype=dtype)
    return {k: v for k, v in pipe.components.items() if v is not None}


def shape_counter(transformer) -> set:
    seen: set = set()
    transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.add((tuple(kwargs["hidden_states"].shape),
                                            tuple(kwargs["audio_hidden_states"].shape))),
        with_kwargs=True)
    return seen


def voice(frames: int, fps: float, rate: int = 48000) -> "np.ndarray":
    """A stand-in voice for a shot of ``frames`` frames (mono float32 at ``rate``): a 140 Hz
    voice with its first eight harmonics falling off, in syllables of a quarter second
    (raised-cosine envelopes), over the middle 80 % of the shot, silent around it."""
    import numpy as np

    n = int(round(frames / fps * rate))
    t = np.arange(n) / rate
    tone = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 9))
    syllables = 0.5 - 0.5 * np.cos(2 * np.pi * 4 * t)
    span = (t > 0.1 * t[-1]) & (t < 0.9 * t[-1]) if n else t > 0
    return (0.2 * tone * syllables * span).astype(np.float32)


def face_detector_note() -> str | None:
    """Where this OpenCV has no cascade classifier (a build without objdetect), the
    lip-sync meter's face search is replaced by one that finds no face (no detection
    cost; the meter then measures nothing); what the JSON says about it."""
    import cv2

    if hasattr(cv2, "CascadeClassifier"):
        return None
    from aiprod_post.generation import lipsync

    lipsync.find_face = lambda frame: None
    return ("this OpenCV has no CascadeClassifier: the lip-sync meter's face search was "
            "replaced by one that finds no face, at no cost")


def subset(shots: list) -> tuple[list, list[int]]:
    """One shot of each distinct length (the first), and how many shots have that length."""
    counts = Counter(s.duration for _, s in shots)
    firsts = {}
    for sc, s in shots:
        firsts.setdefault(s.duration, (sc, s))
    return list(firsts.values()), [counts[s.duration] for _, s in firsts.values()]


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def run_stock(parts, shots, width, height, fps: float, device: str, max_seq: int,
              dialogue: dict | None = None) -> dict:
    from diffusers import LTX2ConditionPipeline, LTX2DFRPipeline
    from diffusers.pipelines.ltx2 import LTX2VideoCondition
    from diffusers.pipelines.ltx2.dfr_layout import resolve_canvas
    from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES

    from aiprod_post.generation.engine import RenderContext
    from aiprod_post.generation.ltx import NEGATIVE_PROMPT, generation_lengths, shot_prompt
    from aiprod_post.generation.ltx2 import MIX_RATE, dialogue_latents, valid_frames

    pipe = LTX2ConditionPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    dfr = LTX2DFRPipeline(**{k: parts[k] for k in (
        "scheduler", "vae", "audio_vae", "text_encoder", "tokenizer", "connectors",
        "transformer", "vocoder")})
    dfr.set_progress_bar_config(disable=True)
    seen = shape_counter(pipe.transformer)
    r = pipe.vae_temporal_compression_ratio
    distilled = dict(sigmas=list(DISTILLED_SIGMA_VALUES), guidance_scale=1.0, stg_scale=0.0,
                     modality_scale=1.0, audio_guidance_scale=1.0, audio_stg_scale=0.0,
                     audio_modality_scale=1.0)
    per_shot = []
    previous = None
    synchronize(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for scene, shot in shots:
        t = time.perf_counter()
        prompt = shot_prompt(shot, RenderContext(scene, width, height, Fraction(fps)))
        speech = (dialogue or {}).get(shot.id)
        produced = 0
        for i, need in enumerate(generation_lengths(shot.duration, 121)):
            conds = [LTX2VideoCondition(frames=previous, index=0, strength=1.0)] \
                if previous is not None else None
            n = valid_frames(max(need, r + 1), r)
            generator = torch.Generator(device).manual_seed(shot.seed + i)
            if speech is None:
                out = pipe(conditions=conds, prompt=prompt, negative_prompt=NEGATIVE_PROMPT,
                           width=width, height=height, num_frames=n, frame_rate=fps,
                           num_inference_steps=len(distilled["sigmas"]), generator=generator,
                           output_type="np", max_sequence_length=max_seq, **distilled)
            else:  # audio to video: the voice's latents held fixed (no guidance in DFR)
                start = produced - (1 if produced else 0)
                a = round(start / fps * MIX_RATE)
                canvas, _, _ = resolve_canvas(n, dfr.vae_temporal_compression_ratio)
                length = round(canvas / fps * dfr.audio_sampling_rate / dfr.audio_hop_length
                               / float(dfr.audio_vae_temporal_compression_ratio))
                audio = dialogue_latents(dfr, speech[a:a + math.ceil(n / fps * MIX_RATE)],
                                         MIX_RATE, length)
                out = dfr(conditions=conds, prompt=prompt, width=width, height=height,
                          num_frames=n, frame_rate=fps, audio_latents=audio, freeze_audio=True,
                          generate_slots=False, sigmas=distilled["sigmas"],
                          generator=generator, output_type="np", max_sequence_length=max_seq)
            produced += need - (1 if produced else 0)
            previous = (out.frames[0][need - 1] * 255).round().astype("uint8")
        per_shot.append(round(time.perf_counter() - t, 3))
        print(f"stock {shot.id} {shot.duration} {per_shot[-1]}", file=sys.stderr, flush=True)
    synchronize(device)
    return {"seconds": round(time.perf_counter() - t0, 3), "per_shot_seconds": per_shot,
            "peak_gib": peak_gib(device), "distinct_shapes": len(seen)}


def run_ours(parts, shots, width, height, fps: float, device: str, dtype: str, compile_,
             max_seq: int, film_durations: list[int], fp8: bool = False,
             attention: str | None = None, cudnn_benchmark: bool = False,
             dialogue: dict | None = None, precompile: bool = True) -> dict:
    from diffusers import LTX2InContextPipeline
    from torch._dynamo.utils import counters

    from bench_ltx_film import compile_figures, render_shots

    from aiprod_post.generation.ltx2 import LTX2Engine

    engine = LTX2Engine.from_pipeline(
        LTX2InContextPipeline(**parts), device=device, dtype=dtype, preset="distilled",
        compile=compile_, max_sequence_length=max_seq, control="none", fp8=fp8,
        precompile=precompile)
    if attention:
        engine.pipeline().transformer.set_attention_backend(attention)
    if cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    seen = shape_counter(engine.pipeline().transformer)
    synchronize(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    # the whole film's lengths choose the buckets, also when a subset of it is run
    info = engine.warm_up(film_durations, width, height, fps)
    print(f"warm-up {info}", file=sys.stderr, flush=True)
    graphs_after_warm_up = counters["stats"]["unique_graphs"]
    t_film = time.perf_counter()
    per_shot = render_shots(engine, shots, width, height, Fraction(fps), "ours", dialogue)
    synchronize(device)
    end = time.perf_counter()
    return {"seconds": round(end - t0, 3), "shots_seconds": round(end - t_film, 3),
            "per_shot_seconds": per_shot, "peak_gib": peak_gib(device),
            "distinct_shapes": len(seen), **compile_figures(info, graphs_after_warm_up),
            "aot": info.get("aot"),
            "aot_fallbacks": getattr(engine._aot_package, "fallbacks", None),
            "generations_by_pipeline": dict(Counter(g[3] for g in engine.generations))}


def weighted(run: dict, weights: list[int] | None) -> None:
    """With a subset: the film's seconds as each shot's seconds times its length's count."""
    if weights is None:
        return
    shots = sum(s * w for s, w in zip(run["per_shot_seconds"], weights))
    run["film_shots_seconds_weighted"] = round(shots, 3)
    run["film_seconds_weighted"] = round(shots + run.get("compile_seconds", 0.0), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", choices=["both", "ours", "stock"], default="both")
    ap.add_argument("--size", default="768x512")
    ap.add_argument("--shots", type=int, default=None, help="only the first N shots")
    ap.add_argument("--subset", action="store_true",
                    help="each distinct shot length once, weighted by its count")
    ap.add_argument("--compile", default="true", help="true, false or auto (ours)")
    ap.add_argument("--cache", default=None, help="AIPROD_CACHE for ours (inductor's cache)")
    ap.add_argument("--model", default=None, help="a local diffusers LTX-2 folder")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--text-layers", type=int, default=4)
    ap.add_argument("--max-sequence-length", type=int, default=1024)
    ap.add_argument("--fp8", action="store_true", help="ours: FP8 linear layers")
    ap.add_argument("--no-precompile", dest="precompile", action="store_false",
                    help="ours: torch.compile the block each run instead of loading the "
                         "artifacts compiled ahead of time ([engine.ltx2] precompile = false)")
    ap.add_argument("--attention", default=None, help="ours: a diffusers attention backend")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="ours: cuDNN autotuning on (the engine leaves it off)")
    ap.add_argument("--no-dialogue", action="store_true",
                    help="no shot audio-to-video (every shot through the condition pipeline)")
    args = ap.parse_args()
    if args.cache:  # the user's cache folder, and inductor's inside it as the engine sets it
        os.environ["AIPROD_CACHE"] = args.cache
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(args.cache) / "inductor")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    from bench_ltx_film import EXAMPLE, film

    from aiprod_post.generation.ltx import drop_module_mocks

    drop_module_mocks()
    width, height = (int(v) for v in args.size.split("x"))
    fps = 24.0
    shots, film_frames = film(width, height, args.shots)
    durations = [s.duration for _, s in shots]
    weights = None
    if args.subset:
        shots, weights = subset(shots)
    dialogue = None if args.no_dialogue else \
        {s.id: voice(s.duration, fps) for _, s in shots if s.dialogue}
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    t = time.perf_counter()
    parts = load(args.model, args.device, dtype) if args.model else \
        build(args.device, dtype, args.text_layers)
    for v in parts.values():
        if isinstance(v, torch.nn.Module):
            v.to(args.device)
    import diffusers

    result = {"benchmark": "ltx2-film",
              "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else args.device,
              "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "diffusers": diffusers.__version__, "film": EXAMPLE.name,
              "model": args.model or f"LTX-2.0 19B random weights, Gemma-3 text encoder of "
                                     f"{args.text_layers} layers",
              "transformer_parameters": sum(p.numel() for p in parts["transformer"].parameters()),
              "shots": len(shots), "film_seconds": round(film_frames / fps, 3),
              "frames_with_handles": sum(durations),
              "run_frames": sum(s.duration for _, s in shots),
              "subset": [s.duration for _, s in shots] if args.subset else None,
              "subset_weights": weights, "size": f"{width}x{height}", "dtype": args.dtype,
              "preset": "distilled", "fp8": args.fp8, "attention": args.attention,
              "cudnn_benchmark": args.cudnn_benchmark,
              "dialogue_shots": sorted(dialogue or {}),
              "face_detector": face_detector_note() if dialogue else None,
              "build_seconds": round(time.perf_counter() - t, 1)}
    film_s = film_frames / fps

    def per_film_second(run: dict) -> None:
        total = run.get("film_seconds_weighted", run["seconds"])
        run["seconds_per_film_second"] = round(total / film_s, 3)

    # stock first: ours compiles the transformer's blocks in place, and they are shared
    if args.run in ("both", "stock"):
        result["stock"] = run_stock(parts, shots, width, height, fps, args.device,
                                    args.max_sequence_length, dialogue)
        weighted(result["stock"], weights)
        per_film_second(result["stock"])
        print(json.dumps({"stock": result["stock"]}), flush=True)
    if args.run in ("both", "ours"):
        compile_ = {"true": True, "false": False}.get(args.compile, args.compile)
        ours = run_ours(parts, shots, width, height, fps, args.device, args.dtype, compile_,
                        args.max_sequence_length, durations, args.fp8, args.attention,
                        args.cudnn_benchmark, dialogue, args.precompile)
        weighted(ours, weights)
        per_film_second(ours)
        ours["compile_share"] = round(ours["compile_seconds"] / ours.get(
            "film_seconds_weighted", ours["seconds"]), 4)
        result["ours"] = ours
    if "stock" in result and "ours" in result:
        key = "film_seconds_weighted" if weights else "seconds"
        shots_key = "film_shots_seconds_weighted" if weights else "shots_seconds"
        stock = result["stock"][key]
        result["speedup"] = round(stock / result["ours"][key], 3)
        result["speedup_shots_only"] = round(
            result["stock"]["film_shots_seconds_weighted" if weights else "seconds"]
            / result["ours"][shots_key], 3)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
