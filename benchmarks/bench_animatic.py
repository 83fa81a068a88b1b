"""Animatic benchmark: render the bundled example at 1920x1080 with the animatic engine.

Prints JSON: frames, seconds, frames per second and peak RSS. Target (issue 6): at least
48 fps on one core (run pinned: ``taskset -c 0 python benchmarks/bench_animatic.py``).
Frames are produced and dropped, as the pipeline streams them to the encoder.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

from aiprod_post.planner import PlannerSettings, plan_source
from aiprod_post.generation.engine import KeyframeStore, RenderContext, engine_by_name

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "the_last_ferry.fountain"


def main() -> None:
    plan, _ = plan_source(EXAMPLE, PlannerSettings(width=1920, height=1080))
    engine = engine_by_name("animatic")
    store = KeyframeStore()
    frames = 0
    t0 = time.perf_counter()
    for scene, shot in plan.shots():
        r = engine.render(shot, RenderContext(scene, 1920, 1080, plan.fps,
                                              store.for_shot(scene, shot)))
        for _ in r:
            frames += 1
        store.add_shot(scene, shot, r.keyframes)
    seconds = time.perf_counter() - t0
    print(json.dumps({
        "benchmark": "animatic",
        "size": "1920x1080",
        "frames": frames,
        "seconds": round(seconds, 2),
        "fps": round(frames / seconds, 1),
        "target_fps": 48,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_affinity": len(os.sched_getaffinity(0)),
    }))


if __name__ == "__main__":
    main()
