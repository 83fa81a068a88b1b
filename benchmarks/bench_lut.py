"""LUT benchmark: a 33-point .cube on 1920x1080 frames, side by side with FFmpeg's
``lut3d`` filter (tetrahedral) on the same frames and LUT, in one run, through PyAV's
filter graph (the same libavfilter the command line uses).

Prints JSON: frames per second for both, the ratio, and the accuracy of ours against
FFmpeg's output and against colour-science's tetrahedral interpolation. Target (issue 4):
at least 3x FFmpeg's frames per second on one core
(``taskset -c 0 python benchmarks/bench_lut.py``). With a CUDA GPU, also the torch path
at 3840x2160.

``float16bit``: the float path (:class:`FloatFrameGrader`, 16-bit ``rgb48`` in and out,
float32 inside) side by side with FFmpeg's ``lut3d`` on ``rgb48le`` frames, and its
error against OpenColorIO applied in float. Target (issue 17): within 2x of FFmpeg.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from aiprod_post.planner import PlannerSettings, plan_source
from aiprod_post.generation.engine import KeyframeStore, RenderContext, engine_by_name
from aiprod_post.grading.apply import FloatFrameGrader, FrameGrader, apply_lut
from aiprod_post.grading.looks import look_path
from aiprod_post.grading.lut import read_cube

ROOT = Path(__file__).resolve().parent.parent
N_FRAMES = 48


def frames() -> list[np.ndarray]:
    """Real pictures: rendered animatic frames from the bundled example, plus camera-like
    noise frames (the worst case for a table look-up)."""
    plan, _ = plan_source(ROOT / "examples" / "the_last_ferry.fountain",
                          PlannerSettings(width=1920, height=1080))
    eng = engine_by_name("animatic")
    out = []
    store = KeyframeStore()
    for scene, shot in plan.shots()[:: max(1, len(plan.shots()) // 8)]:
        small = shot.model_copy(update={"duration": 3})
        r = eng.render(small, RenderContext(scene, 1920, 1080, plan.fps, store.for_shot(scene, shot)))
        out += list(r)
    rng = np.random.default_rng(1)
    noisy = [np.clip(f.astype(np.int16) + rng.integers(-12, 13, f.shape), 0, 255).astype(np.uint8)
             for f in out[:8]]
    return (out * 4)[:N_FRAMES], noisy


def ffmpeg_lut3d(imgs: list[np.ndarray], cube: Path, fmt: str = "rgb24"
                 ) -> tuple[float, list[np.ndarray]]:
    graph = av.filter.Graph()
    src = graph.add_buffer(width=1920, height=1080, format=fmt, time_base=Fraction(1, 24))
    lut = graph.add("lut3d", f"file={cube}:interp=tetrahedral")
    sink = graph.add("buffersink")
    src.link_to(lut)
    lut.link_to(sink)
    graph.configure()
    frames = []
    for i, img in enumerate(imgs):  # made before the clock starts, as ours are
        frames.append(av.VideoFrame.from_ndarray(img, format=fmt))
        frames[-1].pts = i
    pulled = []
    t0 = time.perf_counter()
    for vf in frames:
        graph.push(vf)
        pulled.append(graph.pull())
    elapsed = time.perf_counter() - t0
    return elapsed, [f.to_ndarray(format=fmt) for f in pulled]


def float_path(lut, cube: Path, imgs8: list[np.ndarray]) -> dict:
    """16-bit frames (the 8-bit pictures widened, with noise below the 8th bit so that
    every 16-bit code can occur) through the float path and FFmpeg's lut3d on rgb48."""
    import PyOpenColorIO as ocio

    rng = np.random.default_rng(3)
    imgs = [(f.astype(np.uint32) * 257 + rng.integers(0, 257, f.shape)).clip(0, 65535)
            .astype(np.uint16) for f in imgs8[:12]]
    grader = FloatFrameGrader(lut)
    grader(imgs[0])  # compile
    graph = av.filter.Graph()
    src = graph.add_buffer(width=1920, height=1080, format="rgb48le", time_base=Fraction(1, 24))
    lut3d = graph.add("lut3d", f"file={cube}:interp=tetrahedral")
    sink = graph.add("buffersink")
    src.link_to(lut3d)
    lut3d.link_to(sink)
    graph.configure()
    frames = [av.VideoFrame.from_ndarray(f, format="rgb48le") for f in imgs]
    out = np.empty_like(imgs[0])
    t_ours = t_ff = 0.0
    theirs = []
    # interleaved frame by frame: on a shared machine both see the same load
    for i, (f, vf) in enumerate(zip(imgs, frames)):
        t0 = time.perf_counter()
        grader(f, out)
        t1 = time.perf_counter()
        vf.pts = i
        graph.push(vf)
        pulled = graph.pull()
        t2 = time.perf_counter()
        t_ours += t1 - t0
        t_ff += t2 - t1
        if i < 4:
            theirs.append(pulled.to_ndarray(format="rgb48le"))
    diff_ff = max(int(np.abs(grader(a).astype(np.int32) - b).max())
                  for a, b in zip(imgs, theirs))
    proc = ocio.Config.CreateRaw().getProcessor(ocio.FileTransform(
        src=str(cube), interpolation=ocio.INTERP_TETRAHEDRAL)).getDefaultCPUProcessor()
    x = (imgs[0] / 65535.0).astype(np.float32)
    proc.applyRGB(x.reshape(-1, 3))
    return {"frames": len(imgs), "ours_fps": round(len(imgs) / t_ours, 1),
            "ffmpeg_lut3d_rgb48_fps": round(len(imgs) / t_ff, 1),
            "ratio": round(t_ff / t_ours, 2), "target_ratio": 0.5,
            "max_code_difference_vs_ffmpeg_16bit": diff_ff,
            "max_error_vs_opencolorio_float": float(np.abs(grader(imgs[0]) / 65535.0 - x).max())}


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cube = look_path("teal_orange")
    lut = read_cube(cube)
    imgs, noisy = frames()
    t_build = time.perf_counter()
    grader = FrameGrader(lut)
    t_build = time.perf_counter() - t_build
    grader(imgs[0])  # compile
    t0 = time.perf_counter()
    ours = [grader(f) for f in imgs]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    for f in noisy:
        grader(f)
    t_noisy = time.perf_counter() - t0
    t_ff, theirs = ffmpeg_lut3d(imgs, cube)
    diff_ff = max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(ours, theirs))
    from colour.algebra import table_interpolation_tetrahedral
    x = np.random.default_rng(2).random((100000, 3))
    diff_cs = float(np.abs(apply_lut(x, lut) - table_interpolation_tetrahedral(x, lut.table)).max())
    result = {
        "benchmark": "lut3d",
        "size": "1920x1080",
        "frames": len(imgs),
        "ours_fps": round(len(imgs) / t_ours, 1),
        "ours_fps_noisy_frames": round(len(noisy) / t_noisy, 1),
        "ffmpeg_lut3d_fps": round(len(imgs) / t_ff, 1),
        "ratio": round(t_ff / t_ours, 2),
        "target_ratio": 3.0,
        "table_build_seconds": round(t_build, 2),
        "max_code_difference_vs_ffmpeg_8bit": diff_ff,
        "max_difference_vs_colour_science_float": diff_cs,
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "float16bit": float_path(lut, cube, imgs),
    }
    try:
        import torch
        if torch.cuda.is_available():
            from aiprod_post.grading.apply import apply_lut_torch
            big = torch.rand(2160, 3840, 3, device="cuda")
            apply_lut_torch(big, lut)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(50):
                apply_lut_torch(big, lut)
            torch.cuda.synchronize()
            result["gpu"] = {"name": torch.cuda.get_device_name(0), "size": "3840x2160",
                             "fps": round(50 / (time.perf_counter() - t0), 1),
                             "date": datetime.date.today().isoformat(), "target_fps": 500}
    except ImportError:
        result["gpu"] = None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
