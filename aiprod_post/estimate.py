"""How long a render will take, and what it costs on a GPU, before anything is rendered.

Each stage's time on a reference machine is a fixed start plus rates times the work the
plan asks of it: dialogue lines (speech), frames and frames per megapixel (generation, each
master), seconds of film (the mix, for each delivery). This machine's own finished renders
teach each stage's speed relative to that reference (each render appends them to a
history file in the user's cache folder, ``AIPROD_CACHE``); without any, the reference
stands. The GPU
engines' per-frame figures come from their benchmarks (the table names the GPU and date).

>>> work = Work(film_seconds=10.0, frames=240, generated_frames=260, megapixels=2.0736,
...             lines=4, shots=3, profiles=("web",), video={"web": "h264"})
>>> e = estimate_work(work, "animatic", history=[])
>>> sorted(e["stages"]) == sorted(STAGES) and e["total_seconds"] > 0
True
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import engines

__all__ = ["Work", "work_of", "estimate_work", "rates_of", "record_render", "history_path",
           "STAGES",
           "GPU_FIGURES", "REFERENCE"]

STAGES = ("plan", "speech", "generation", "mix", "timeline", "subtitles", "masters", "qa")

#: Seconds each stage takes on the reference machine (2 shared cores, this project's CI
#: kind), as ``fixed + per * units``, fitted to renders of two scripts (13 s and 85 s of
#: film) at 160x96 and 640x360. The units (see :meth:`Work.units`): ``once``, dialogue
#: lines, shots, seconds of film, generated frames (with handles) and master frames, each
#: of the last two also per megapixel.
REFERENCE = {
    "plan": {"once": 3.0},
    "speech": {"once": 0.4, "lines": 0.067},
    "generation": {"once": 4.5, "generated_frame_mp": 0.115},
    "mix": {"once": 1.2, "mix_seconds": 0.167},
    "timeline": {"once": 1.0, "shots": 0.07},
    "subtitles": {"once": 0.05},
    "masters": {"master_frames": 0.0023, "master_frame_mp": 0.106},
    "qa": {"once": 0.05, "film_seconds": 0.001},
}
#: The GPU engines' benchmark figures: seconds for one shot of ``frames`` at ``width`` x
#: ``height`` (warm, compiled), per preset, scaled per frame and pixel; plus, where the
#: benchmark measured it, the warm-up that compiles a film's shapes (once per render).
#: A preset without figures leaves the generation time unknown.
GPU_FIGURES = {
    "ltx": {"gpu": "NVIDIA H200", "date": "2026-11", "benchmark": "benchmarks/bench_ltx_gpu.py",
            "width": 768, "height": 512, "frames": 121,
            "seconds_per_shot": {"distilled": 0.65, "dev": 4.89}},
    # the example film (84.4 s, 20 shots, 2050 frames with handles; its 13 dialogue shots
    # audio-to-video) through the engine (19B, bf16, compiled): 74.4 s of shots, as seconds
    # per 121-frame shot (VAE decode, sound and conditioning included), and the warm-up that
    # compiled its 4 shapes from a warm cache (50.2 s cold); the whole film took 92.4 s,
    # 1.09 s per second of film
    "ltx2": {"gpu": "NVIDIA H200", "date": "2026-11-30",
             "benchmark": "benchmarks/bench_ltx2_film.py", "width": 768, "height": 512,
             "frames": 121, "seconds_per_shot": {"distilled": 4.39},
             "warm_up_seconds": {"distilled": 18.0},
             "seconds_per_film_second": {"distilled": 1.09}},
}


def _gpu_engine(name: str) -> bool:
    """An engine that generates on a GPU (as the registry says): its time comes from
    GPU_FIGURES, never the animatic's."""
    spec = engines.find(name)
    return bool(spec and spec.gpu)

#: Masters' relative cost per frame by codec (H.264 long-GOP encodes; ProRes of plain cuts
#: is mostly copied; HEVC HDR at 960x540 on two cores: HLG 2.4x H.264, PQ 3.6x with its
#: light-level pass, 2026-11-30).
_CODEC_WEIGHT = {"h264": 1.0, "hdr-pq": 3.6, "hdr-hlg": 2.4, "prores": 0.6, "dnxhr": 0.8}


@dataclass(frozen=True)
class Work:
    """What a render of a plan asks of each stage."""

    film_seconds: float
    frames: int
    generated_frames: int  # with handles
    megapixels: float
    lines: int
    shots: int
    profiles: tuple[str, ...]
    video: dict  # profile -> codec family

    def units(self, unit: str) -> float:
        """How many of ``unit`` (a key of :data:`REFERENCE`'s entries) this render asks."""
        weighted = sum(_CODEC_WEIGHT.get(self.video[p], 1.0) for p in self.profiles)
        return {"once": 1.0, "lines": float(self.lines), "shots": float(self.shots),
                "film_seconds": self.film_seconds,
                "mix_seconds": self.film_seconds * (1 + len(self.profiles)),
                "generated_frame_mp": self.generated_frames * self.megapixels,
                "master_frames": self.frames * weighted,
                "master_frame_mp": self.frames * self.megapixels * weighted}[unit]

    def reference_seconds(self, stage: str) -> float:
        """The stage's time for this work on the reference machine."""
        return sum(per * self.units(unit) for unit, per in REFERENCE[stage].items())


def work_of(plan, profiles: list[str], width: int | None = None, height: int | None = None,
            video: dict[str, str] | None = None, handles: int = 12) -> Work:
    """The work a plan asks for at a size (the plan's own when not given)."""
    w, h = width or plan.width, height or plan.height
    shots = [s for _, s in plan.shots()]
    return Work(film_seconds=float(plan.duration / plan.fps), frames=plan.duration,
                generated_frames=sum(s.duration + 2 * handles for s in shots),
                megapixels=w * h / 1e6, lines=sum(len(s.dialogue) for s in shots),
                shots=len(shots),
                profiles=tuple(profiles), video=dict(video or {p: "h264" for p in profiles}))


def history_path() -> Path:
    """The CLI's local history of finished renders: ``AIPROD_CACHE``, else
    ``~/.cache/aiprod-post``, ``history.jsonl``."""
    root = Path(os.environ.get("AIPROD_CACHE", Path.home() / ".cache" / "aiprod-post"))
    return root / "history.jsonl"


def _machine() -> str:
    return f"{platform.node()}/{os.cpu_count()}cpu"


def read_history(path: Path | None = None, engine: str | None = None) -> list[dict]:
    path = path or history_path()
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: skip it
        if isinstance(entry, dict) and (engine is None or entry.get("engine") == engine) \
                and entry.get("machine") == _machine():
            out.append(entry)
    return out


def rates_of(work: Work, stage_seconds: dict[str, float], made: dict[str, int],
             cached: dict[str, int]) -> dict[str, float]:
    """Each stage's speed in a finished render relative to the reference machine (its
    seconds over the reference's for the same work); stages that took anything from the
    cache, or made nothing, say nothing about speed and are left out."""
    rates = {}
    for stage, seconds in stage_seconds.items():
        if stage not in REFERENCE or cached.get(stage, 0) or not made.get(stage, 0):
            continue
        ref = work.reference_seconds(stage)
        if ref > 0:
            rates[stage] = seconds / ref
    return rates


def record_render(work: Work, engine: str, stage_seconds: dict[str, float],
                  made: dict[str, int], cached: dict[str, int], path: Path | None = None
                  ) -> dict | None:
    """Append a finished render's rates (stages it did in full: nothing from the cache) to
    the history. Returns the entry, or None when nothing was measured."""
    rates = rates_of(work, stage_seconds, made, cached)
    if not rates:
        return None
    entry = {"time": time.time(), "machine": _machine(), "engine": engine, "rates": rates,
             "work": asdict(work)}
    path = path or history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:  # one line, one write: atomic enough
            fh.write(json.dumps(entry) + "\n")
    except OSError:
        return None  # a read-only home must not fail a finished render
    return entry


def estimate_work(work: Work, engine: str, *, history: list[dict] | None = None,
                  preset: str = "distilled", price_per_gpu_hour: float = 0.0) -> dict[str, Any]:
    """Seconds per stage and in total, and for GPU engines GPU-hours and their cost."""
    history = read_history(engine=engine) if history is None else history
    stages, sources = {}, {}
    for stage in STAGES:
        learned = [h["rates"][stage] for h in history[-5:] if stage in h.get("rates", {})]
        factor = statistics.median(learned) if learned else 1.0
        sources[stage] = f"{len(learned)} earlier render(s)" if learned else "reference table"
        stages[stage] = factor * work.reference_seconds(stage)
    gpu = None
    fig = GPU_FIGURES.get(engine)
    if fig and preset in fig["seconds_per_shot"]:
        per_frame_px = fig["seconds_per_shot"][preset] / (fig["frames"] * fig["width"]
                                                          * fig["height"])
        seconds = per_frame_px * work.generated_frames * work.megapixels * 1e6 \
            + fig.get("warm_up_seconds", {}).get(preset, 0.0)
        stages["generation"] = seconds
        sources["generation"] = f"{fig['benchmark']} on {fig['gpu']} ({fig['date']}), {preset}"
        gpu = {"gpu": fig["gpu"], "gpu_hours": round(seconds / 3600, 4),
               "cost": round(seconds / 3600 * price_per_gpu_hour, 2),
               "price_per_gpu_hour": price_per_gpu_hour}
    elif _gpu_engine(engine):
        # a GPU engine with no benchmark figures yet: say so, rather than the animatic's time
        learned = any("generation" in h.get("rates", {}) for h in history[-5:])
        if not learned:
            stages["generation"] = None
            sources["generation"] = (f"unknown: no GPU benchmark figures for {engine} "
                                     f"({preset}) yet")
    known = [v for v in stages.values() if v is not None]
    return {"engine": engine, "film_seconds": round(work.film_seconds, 3),
            "frames": work.frames,
            "stages": {k: (round(v, 2) if v is not None else None) for k, v in stages.items()},
            "total_seconds": round(sum(known), 1), "complete": len(known) == len(stages),
            "from": sources, "gpu": gpu}
