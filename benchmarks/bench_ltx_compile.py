"""What the warm-up of the ``ltx`` / ``ltx2`` engines costs, and what it buys, shape by shape.

The engine is built as in ``bench_ltx_film.py`` / ``bench_ltx2_film.py`` (full-size model,
bf16, random weights, the example film's buckets at 768x512), the warm-up runs as a render
runs it, and then one denoising step is timed at each of the film's shapes, compiled and
eager (``torch.compiler.set_stance("force_eager")``), the median of ``--repeats``. Printed as
one JSON line: the warm-up's seconds per shape, dynamo's and the compiler's own seconds
(``torch._dynamo.utils.compilation_time_metrics``, summed), the graphs dynamo made, the
FX graph cache's hits and misses, and the step times.

``--scheme static`` is the engine's (one graph per bucket); ``--scheme dynamic`` compiles
the block with symbolic token counts (``dynamic=True``: one graph for all buckets).
``--full-step`` runs the warm-up's step through every block (as before the warm-up ran
only the blocks that compile). Run twice with the same ``--cache`` for the warm cache (a
new process: dynamo traces again, inductor loads). ``--device cpu --model DIR`` runs the
tests' tiny models on the CPU. Needs torch, diffusers (>= 0.42 for ltx2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def engine_for(args):
    """The engine around a freshly built pipeline, and the film's frame counts."""
    from bench_ltx_film import film

    width, height = (int(v) for v in args.size.split("x"))
    shots, _ = film(width, height, None)
    durations = [s.duration for _, s in shots]
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    common = dict(device=args.device, dtype=args.dtype, preset=args.preset, compile=True,
                  compile_backend=args.backend)
    if args.engine == "ltx2":
        from bench_ltx2_film import build, load
        from diffusers import LTX2InContextPipeline

        from aiprod_post.generation.ltx2 import LTX2Engine

        parts = load(args.model, args.device, dtype) if args.model else \
            build(args.device, dtype, 4)
        for v in parts.values():
            if isinstance(v, torch.nn.Module):
                v.to(args.device)
        engine = LTX2Engine.from_pipeline(LTX2InContextPipeline(**parts), control="none",
                                          max_sequence_length=args.max_sequence_length,
                                          **common)
    else:
        from diffusers import LTXConditionPipeline

        from aiprod_post.generation.ltx import LTXEngine

        if args.model:
            parts = LTXConditionPipeline.from_pretrained(
                args.model, local_files_only=True, dtype=dtype).components
        else:
            from bench_ltx_gpu import build

            parts = build(args.device, dtype)
        engine = LTXEngine.from_pipeline(LTXConditionPipeline(**parts),
                                         max_sequence_length=128, **common)
    engine.dynamic_shapes = args.scheme == "dynamic"
    engine.build_in_background = False  # the compile itself is what is timed here
    engine.full_trace_step = args.full_step
    return engine, durations, width, height


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=["ltx", "ltx2"], default="ltx2")
    ap.add_argument("--scheme", choices=["static", "dynamic"], default="static")
    ap.add_argument("--full-step", action="store_true")
    ap.add_argument("--preset", default="distilled")
    ap.add_argument("--size", default="768x512")
    ap.add_argument("--cache", default=None, help="AIPROD_CACHE (inductor's cache inside)")
    ap.add_argument("--model", default=None, help="a local diffusers folder")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-sequence-length", type=int, default=1024)
    ap.add_argument("--no-steps", action="store_true", help="time the warm-up only")
    args = ap.parse_args()
    if args.cache:
        os.environ["AIPROD_CACHE"] = args.cache
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(args.cache) / "inductor")
    from diffusers.utils import logging as diffusers_logging
    from torch._dynamo.utils import compilation_time_metrics, counters

    from aiprod_post.generation.ltx import drop_module_mocks

    drop_module_mocks()
    diffusers_logging.set_verbosity_error()
    t = time.perf_counter()
    engine, durations, width, height = engine_for(args)
    build_s = time.perf_counter() - t
    cache_existed = bool(args.cache) and (Path(args.cache) / "inductor").exists()
    counters.clear()
    compilation_time_metrics.clear()
    sync(args.device)
    info = engine.warm_up(durations, width, height, 24.0)
    sync(args.device)
    metrics = {k: round(sum(v), 2) for k, v in compilation_time_metrics.items()
               if sum(v) >= 0.05}
    graphs = counters["stats"]["unique_graphs"]
    result = {"benchmark": "ltx-compile", "engine": args.engine, "scheme": args.scheme,
              "full_step": args.full_step, "preset": args.preset, "size": args.size,
              "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "torch": torch.__version__, "cache_existed": cache_existed,
              "build_seconds": round(build_s, 1), "buckets": info["buckets"],
              "warm_up_seconds": info["seconds"], "warm_up_shapes": info["shapes"],
              "graphs": graphs, "compile_metrics": metrics,
              "fx_graph_cache": {k: v for k, v in counters["inductor"].items()
                                 if k.startswith("fxgraph_cache")},
              "aot_autograd": {k: v for k, v in counters["aot_autograd"].items()
                               if "cache" in k}}
    print(json.dumps(result), flush=True)
    if args.no_steps:
        return
    engine.full_trace_step = True
    steps = {}
    for shape in engine._film_shapes(width, height):
        row = {}
        for mode in ("compiled", "eager"):
            times = []
            for _ in range(args.repeats):
                sync(args.device)
                t = time.perf_counter()
                if mode == "eager":
                    with torch.compiler.set_stance("force_eager"):
                        engine._trace(*shape)
                else:
                    engine._trace(*shape)
                sync(args.device)
                times.append(time.perf_counter() - t)
            row[mode] = round(statistics.median(times), 4)
        row["speedup"] = round(row["eager"] / row["compiled"], 3)
        steps["x".join(str(v) for v in shape)] = row
    result["step_seconds"] = steps
    result["graphs_after_steps"] = counters["stats"]["unique_graphs"]
    if args.device == "cuda":
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
