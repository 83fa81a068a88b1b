"""LTX-Video on a whole film: the example film's plan through the ``ltx`` engine, end to
end on one GPU, beside the stock diffusers condition pipeline shot by shot on the same plan.

The model is the full-size LTX-Video 2B architecture in bf16 with random weights built
from its config (the same compute as trained weights; nothing downloads), with the T5-XXL
encoder's architecture. The plan is ``examples/the_last_ferry.fountain`` as the planner
makes it (handles for its transitions included; speech lengthening is not applied: no
TTS runs here), at 768x512 and 24 fps.

Ours is the engine as a render drives it: the film's frame-count buckets, the warm-up that
compiles them (timed apart: compile seconds), then every shot conditioned on the keyframes
of the shots before it (the render's keyframe store), frames streamed and counted. Stock
is ``LTXConditionPipeline`` called per segment at each segment's own 8n+1 length, with the
prompt text, conditioned on the previous generation's last frame, nothing compiled.

``--run both`` (the default) runs stock, then ours, in one process and prints one JSON
line; ``--run ours`` again with the same ``--cache`` measures the warm inductor cache;
``--shapes static`` compiles a graph per bucket instead of the engine's one for all.
Distinct shapes are the distinct inputs the transformer saw. Needs CUDA, torch, diffusers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "the_last_ferry.fountain"


def film(width: int, height: int, limit: int | None):
    """(scene, shot with handles) of the example film, and its length in frames."""
    from aiprod_post.editing.timeline import handles_for
    from aiprod_post.planner import PlannerSettings, plan_source

    plan, _ = plan_source(EXAMPLE, PlannerSettings(fps=Fraction(24), width=width,
                                                   height=height, seed=0))
    handles = handles_for(plan)
    shots = [(sc, s.model_copy(update={"duration": s.duration + sum(handles[s.id])}))
             for sc, s in plan.shots()][:limit]
    return shots, sum(s.duration for _, s in plan.shots()[:limit])


def shape_counter(transformer) -> set:
    seen: set = set()
    transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.add(tuple(kwargs["hidden_states"].shape)),
        with_kwargs=True)
    return seen


def process_warm_up(pipe) -> None:
    """One small generation, untimed, before anything is timed: the process's CUDA
    libraries (cuBLAS, cuDNN) start here, not in the first side's first shot."""
    pipe.set_progress_bar_config(disable=True)
    pipe(prompt="a", width=256, height=256, num_frames=9, num_inference_steps=1,
         output_type="latent", max_sequence_length=128)
    torch.cuda.synchronize()


def run_stock(parts, shots, width, height, preset: dict, weights: Path | None = None
              ) -> dict:
    from diffusers import LTXConditionPipeline
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition
    from PIL import Image

    from aiprod_post.generation.engine import RenderContext
    from aiprod_post.generation.ltx import (NEGATIVE_PROMPT, generation_lengths, shot_prompt,
                                             valid_frames)

    t = time.perf_counter()
    if weights is not None:  # as a user loads it
        pipe = LTXConditionPipeline.from_pretrained(weights, torch_dtype=torch.bfloat16,
                                                    local_files_only=True).to("cuda")
        torch.cuda.synchronize()
    else:
        pipe = LTXConditionPipeline(**parts)
    load = time.perf_counter() - t
    pipe.set_progress_bar_config(disable=True)
    seen = shape_counter(pipe.transformer)
    per_shot = []
    previous = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for scene, shot in shots:
        t = time.perf_counter()
        prompt = shot_prompt(shot, RenderContext(scene, width, height, Fraction(24)))
        for i, need in enumerate(generation_lengths(shot.duration, 121)):
            conds = [LTXVideoCondition(image=previous, frame_index=0, strength=1.0)] \
                if previous is not None else None
            out = pipe(conditions=conds, prompt=prompt, negative_prompt=NEGATIVE_PROMPT,
                       width=width, height=height, num_frames=valid_frames(need),
                       generator=torch.Generator("cuda").manual_seed(shot.seed + i),
                       output_type="np", max_sequence_length=128, **preset)
            previous = Image.fromarray((out.frames[0][need - 1] * 255).round().astype("uint8"))
        per_shot.append(round(time.perf_counter() - t, 3))
    torch.cuda.synchronize()
    out = {"seconds": round(time.perf_counter() - t0, 3), "per_shot_seconds": per_shot,
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
           "distinct_shapes": len(seen)}
    if weights is not None:
        out["load_seconds"] = round(load, 3)
    return out


def render_shots(engine, shots, width: int, height: int, fps: Fraction,
                 label: str = "", dialogue: dict | None = None) -> list[float]:
    """Every shot through the engine as a render drives it (each conditioned on the
    keyframes of the shots before it, frames streamed and counted; ``dialogue``: shot id
    → the shot's voice, mono 48 kHz, as the speech stage hands it over): seconds per shot."""
    from aiprod_post.generation.engine import KeyframeStore, RenderContext

    store = KeyframeStore()
    per_shot = []
    for scene, shot in shots:
        t = time.perf_counter()
        r = engine.render(shot, RenderContext(scene, width, height, fps,
                                              store.for_shot(scene, shot),
                                              dialogue=(dialogue or {}).get(shot.id)))
        frames = sum(1 for _ in r)
        assert frames == shot.duration, (shot.id, frames, shot.duration)
        store.add_shot(scene, shot, r.keyframes)
        per_shot.append(round(time.perf_counter() - t, 3))
        if label:
            print(f"{label} {shot.id} {shot.duration} {per_shot[-1]}", file=sys.stderr,
                  flush=True)
    return per_shot


def run_ours(parts, shots, width, height, preset_name: str, steps: int | None,
             compile_: str, shapes: str | None = None, precompile: bool = True,
             weights: Path | None = None, background: bool | None = None) -> dict:
    from diffusers import LTXConditionPipeline
    from torch._dynamo.utils import counters

    from aiprod_post.generation.ltx import LTXEngine

    settings = dict(device="cuda", dtype="bfloat16", preset=preset_name, steps=steps,
                    compile={"true": True, "false": False}.get(compile_, compile_),
                    precompile=precompile)
    t = time.perf_counter()
    if weights is not None:  # as a render loads it (inductor imported beside the load)
        engine = LTXEngine(model=str(weights), **settings)
        engine.pipeline()
        torch.cuda.synchronize()
    else:
        engine = LTXEngine.from_pipeline(LTXConditionPipeline(**parts), **settings)
    load = time.perf_counter() - t
    engine.build_in_background = background
    if shapes:  # else the engine's own choice (dynamic)
        engine.dynamic_shapes = shapes == "dynamic"
    seen = shape_counter(engine.pipeline().transformer)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    info = engine.warm_up([s.duration for _, s in shots], width, height)
    graphs_after_warm_up = counters["stats"]["unique_graphs"]
    t_film = time.perf_counter()
    per_shot = render_shots(engine, shots, width, height, Fraction(24))
    torch.cuda.synchronize()
    end = time.perf_counter()
    aot = engine._aot_package
    out = {"seconds": round(end - t0, 3), "shots_seconds": round(end - t_film, 3),
           "per_shot_seconds": per_shot,
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
           "distinct_shapes": len(seen), "dynamic_shapes": engine.dynamic_shapes,
           "aot": info.get("aot"), "aot_fallbacks": getattr(aot, "fallbacks", None),
           **compile_figures(info, graphs_after_warm_up)}
    if weights is not None:
        out["load_seconds"] = round(load, 3)
    if aot is not None and aot.background:
        # built in a child process beside the shots: the film paid its load between two
        # generations (in the shots' seconds, and counted as compile seconds here)
        building = aot.building()
        t = time.perf_counter()
        aot.poll(wait=True, timeout=600)  # untimed: the next run finds the artifact
        out["background"] = dict(aot.background, ready_after_film=building,
                                 waited_after_film_seconds=round(time.perf_counter() - t, 2)
                                 if building else 0.0)
        if not building:
            out["compile_seconds"] = round(out["compile_seconds"] +
                                           aot.background.get("load_seconds", 0.0), 3)
            out["generations_before_ready"] = aot.background.get("generations_before")
    return out


def compile_figures(info: dict, graphs_after_warm_up: int) -> dict:
    """What the warm-up did and what dynamo and inductor counted since (for the JSON)."""
    from torch._dynamo.utils import counters

    return {"compile_seconds": info["seconds"], "buckets": info["buckets"],
            "compiled": info["compile"], "compile_reason": info["reason"],
            "compile_shapes": info["shapes"], "eager_shapes": info.get("eager_shapes", []),
            "graphs_compiled": graphs_after_warm_up,
            "graphs_compiled_during_shots": counters["stats"]["unique_graphs"]
            - graphs_after_warm_up,
            "fx_graph_cache": {k: v for k, v in counters["inductor"].items()
                               if k.startswith("fxgraph_cache")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=["distilled", "dev"], default="distilled")
    ap.add_argument("--run", choices=["both", "ours", "stock"], default="both")
    ap.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    ap.add_argument("--size", default="768x512")
    ap.add_argument("--shots", type=int, default=None, help="only the first N shots")
    ap.add_argument("--compile", default="true", help="true, false or auto (ours)")
    ap.add_argument("--cache", default=None, help="AIPROD_CACHE for ours (inductor's cache)")
    ap.add_argument("--shapes", choices=["dynamic", "static"], default=None,
                    help="ours: one graph of the block for every frame count (symbolic, the "
                         "engine's default) or one per bucket")
    ap.add_argument("--no-precompile", dest="precompile", action="store_false",
                    help="ours: torch.compile the block each run instead of loading the "
                         "artifact compiled ahead of time ([engine.ltx] precompile = false)")
    ap.add_argument("--weights", type=Path, default=None,
                    help="load both from this folder as a user's run does (the random "
                         "model is saved there first if it holds none), timing the loads")
    ap.add_argument("--background", choices=["auto", "on", "off"], default="auto",
                    help="ours, cold cache: build the block's artifact in a child process "
                         "beside the first shots (the engine's choice by default)")
    args = ap.parse_args()
    import os

    if args.cache:  # the user's cache folder, and inductor's inside it as the engine sets it
        os.environ["AIPROD_CACHE"] = args.cache
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(args.cache) / "inductor")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # one line per call about timesteps otherwise
    from bench_ltx_gpu import build

    from aiprod_post.generation.ltx import PRESETS, drop_module_mocks

    drop_module_mocks()
    width, height = (int(v) for v in args.size.split("x"))
    shots, film_frames = film(width, height, args.shots)
    preset = {k: v for k, v in PRESETS[args.preset].items() if k != "image_cond_noise_scale"}
    if args.steps:
        preset["num_inference_steps"] = args.steps
    t = time.perf_counter()
    parts = build()
    from diffusers import LTXConditionPipeline

    process_warm_up(LTXConditionPipeline(**parts))
    if args.weights is not None:
        if not (args.weights / "model_index.json").is_file():
            LTXConditionPipeline(**parts).save_pretrained(args.weights,
                                                          safe_serialization=True)
        parts = None  # each side loads its own from disk
        torch.cuda.empty_cache()
        for f in args.weights.rglob("*.safetensors"):  # both sides read from the page cache
            with open(f, "rb") as fh:
                while fh.read(1 << 26):
                    pass
    import diffusers

    result = {"benchmark": "ltx-film", "gpu": torch.cuda.get_device_name(0),
              "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "diffusers": diffusers.__version__, "film": EXAMPLE.name, "shots": len(shots),
              "film_seconds": round(film_frames / 24, 3),
              "frames_with_handles": sum(s.duration for _, s in shots),
              "size": f"{width}x{height}", "dtype": "bfloat16", "preset": args.preset,
              "steps": preset["num_inference_steps"], "guidance": preset["guidance_scale"],
              "build_seconds": round(time.perf_counter() - t, 1)}
    film_s = film_frames / 24
    # stock first: ours compiles the transformer's blocks in place, and they are shared
    if args.run in ("both", "stock"):
        result["stock"] = run_stock(parts, shots, width, height, preset, args.weights)
        torch.cuda.empty_cache()
        result["stock"]["seconds_per_film_second"] = round(result["stock"]["seconds"] / film_s, 3)
    if args.run in ("both", "ours"):
        ours = run_ours(parts, shots, width, height, args.preset, args.steps, args.compile,
                        args.shapes, args.precompile, args.weights,
                        {"auto": None, "on": True, "off": False}[args.background])
        ours["seconds_per_film_second"] = round(ours["seconds"] / film_s, 3)
        ours["compile_share"] = round(ours["compile_seconds"] / ours["seconds"], 4)
        result["ours"] = ours
    if "stock" in result and "ours" in result:
        result["speedup"] = round(result["stock"]["seconds"] / result["ours"]["seconds"], 3)
        if args.weights is not None:  # the whole job: the load from disk and the film
            stock_job = result["stock"]["seconds"] + result["stock"]["load_seconds"]
            ours_job = result["ours"]["seconds"] + result["ours"]["load_seconds"]
            result["job_seconds"] = {"stock": round(stock_job, 3), "ours": round(ours_job, 3)}
            result["speedup_job"] = round(stock_job / ours_job, 3)
        result["speedup_shots_only"] = round(result["stock"]["seconds"]
                                             / result["ours"]["shots_seconds"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
