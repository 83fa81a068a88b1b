"""The render pipeline: script (or plan) to masters, timeline, stems, subtitles and a report.

The runner walks the stage table of :mod:`aiprod_post.stages`: plan → speech →
picture (keyframe-conditioned generation with lip-sync, shot matching and the look)
→ mix → edit (timeline, exports, subtitles) → masters (with picture QA) → report.
Every stage output is cached under ``OUTDIR/.cache`` by a hash of its inputs and
settings, written atomically; a rerun with nothing changed does no work, a
render killed at any point resumes where it stopped, and an edit redoes only
what depends on it. The documented layout is filled from the cache:

.. code-block:: text

    OUTDIR/
      masters/     TITLE_web.mp4, TITLE_master.mov …
      timeline/    TITLE.otio, TITLE.xml (FCP 7), TITLE.fcpxml, TITLE.edl, TITLE.aaf, plan.json
      shots/       1.mov, 1A.mov … (ProRes 422 HQ with handles), 1.wav … (dialogue)
      audio/       DX.wav, MX.wav, FX.wav, mix_web.wav, mix_master.wav, lines/
      subtitles/   TITLE.srt, TITLE.vtt
      report.html  contact sheet, shot list, loudness, picture QA, stage timings, cache use
      report.json, manifest.json
      cast.toml    the cast this film used (facts, voices, figures; feed it back with --cast)
      cast/        NAME.png: each character's turnaround sheet (front, three-quarter, profile)
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_folder, key_of
from .errors import AiprodError
from .executors import executor_for
from .outlock import output_lock, remove_stale_temporaries
from .progress import Reporter
from .project import DELIVERY_PROFILES
from .stages import STAGES, run_stages
from .stages.context import RenderOptions, new_context
from .stages.picture import ShotJob, ShotResult, conditioned_on, make_shot

__all__ = ["RenderOptions", "RenderResult", "render", "EXIT_SHOTS_FAILED", "Reporter",
           "STAGES", "ShotJob", "ShotResult", "cache_folder", "conditioned_on", "key_of",
           "make_shot"]

EXIT_SHOTS_FAILED = 3


@dataclass
class RenderResult:
    outdir: Path
    masters: dict[str, Path]
    failed_shots: dict[str, str]
    report: dict

    @property
    def exit_code(self) -> int:
        return EXIT_SHOTS_FAILED if self.failed_shots else 0


def render(source: str | Path, outdir: str | Path, options: RenderOptions | None = None
           ) -> RenderResult:
    """Run every stage for ``source`` into ``outdir``; see the module docstring."""
    options = options or RenderOptions()
    source, outdir = Path(source), Path(outdir)
    profiles = options.profiles or options.project.output.profiles or ["web", "master"]
    for p in profiles:
        if p not in DELIVERY_PROFILES:
            raise AiprodError(f"unknown delivery profile {p!r}: expected one of "
                              f"{', '.join(DELIVERY_PROFILES)}", where="--profile")
    outdir.mkdir(parents=True, exist_ok=True)
    if not os.access(outdir, os.W_OK):
        raise AiprodError("output folder is not writable", source=outdir)
    run_settings = options.project.run
    name = options.executor or run_settings.executor
    executor = executor_for(name, options.address or (run_settings.address if name == "ray"
                                                      else None), run_settings.retries)
    events = sys.stdout
    # --log-json: the events alone on stdout; what else prints there while the render runs
    # (Ray's messages from its nodes about workers that died) goes to stderr
    quiet_stdout = contextlib.redirect_stdout(sys.stderr) if options.log_json \
        else contextlib.nullcontext()
    # the cluster is reached (or found unreachable) before any work
    with quiet_stdout, executor, output_lock(outdir):  # a second render here stops, named
        remove_stale_temporaries(outdir)  # left by a render that was killed
        ctx = new_context(source, outdir, options, executor, tuple(profiles))
        ctx.reporter.events = events
        try:
            outputs = run_stages(ctx)
        finally:
            ctx.reporter.stop_heartbeat()  # a render that fails mid-stage leaves no thread
    return RenderResult(outdir, dict(outputs["masters"].masters), ctx.failed, ctx.report)
