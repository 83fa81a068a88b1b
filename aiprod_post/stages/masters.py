"""The masters stage: each delivery's master conformed from the timeline with its mix (web
H.264 with burnt-in subtitles where the project asks, ProRes, broadcast), held to its profile
by probe, with picture QA measured on the frames sent to the first master encoded."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..cache import file_digest, key_of, place
from ..errors import MediaError
from ..executors import Executor, Lost, Unit
from ..files import inside, write_atomic
from ..project import DELIVERY_PROFILES
from .context import Context, Delivered, Edited, Mixed, Pictures, Spoken, slug

if TYPE_CHECKING:
    from aiprod_post.editing.conform import SegmentRunner

__all__ = ["run", "segments_on"]


def run(ctx: Context, spoken: Spoken, pictures: Pictures, mixed: Mixed, edited: Edited
        ) -> Delivered:
    masters = encode(ctx, spoken, pictures, mixed, edited)
    qa(ctx, spoken, masters)
    return Delivered(masters)


def encode(ctx: Context, spoken: Spoken, pictures: Pictures, mixed: Mixed, edited: Edited
           ) -> dict[str, Path]:
    import opentimelineio as otio

    from aiprod_post.editing.conform import PROFILES, conform, verify_master
    from aiprod_post.grading.qa import QAMeter

    plan, r, profiles, tl = spoken.plan, ctx.reporter, ctx.profiles, edited.timeline
    r.stage("masters", len(profiles))
    out: dict[str, Path] = {}
    picture = key_of("picture", otio.adapters.write_to_string(tl, "otio_json"))
    watched = False  # picture QA rides along the first master encoded frame by frame
    step = _qa_step(plan.width)
    for i, name in enumerate(profiles, 1):
        prof = DELIVERY_PROFILES[name]
        codec = PROFILES[prof.video]
        audio = mixed.mixes[name]
        burn = ctx.project.output.burn_in_subtitles and prof.video == "h264"
        cues = list(edited.cues) if burn else None
        # the shots' pictures by their cache names: a shot made again under the same
        # timeline (another look file's contents, the cast, burn-in) is a new master
        key = key_of("master", picture, sorted(pictures.files.items()),
                     file_digest(audio), prof.video,
                     [c.__dict__ for c in cues] if cues else None)
        cached = ctx.cache.path("masters", key, codec.suffix)
        qa_file = ctx.cache.path("qa", key_of("qa-encoded", key), ".json")
        hit = cached.exists()
        # picture QA (EBU R103 levels, BT.1702 flashes) is for SDR pictures: not the PQ
        # or HLG frames of an HDR master
        encodes_all = (prof.video != "prores" or bool(cues)) and codec.hdr is None
        # encoded in segments by several processes: no frame passes here to be watched
        workers = ctx.project.output.workers if codec.gop_seconds is not None else 1
        if workers > 1:
            encodes_all = False
        meter = None
        if encodes_all and not watched and not (hit and qa_file.exists()):
            meter = QAMeter(plan.fps, 10 if "10" in codec.pix_fmt else 8)
            counter = iter(range(1 << 62))

            def watch(frame, meter=meter, counter=counter):
                meter.add_av(frame, step=step, levels=next(counter) % 6 == 0)
            hit = False  # the picture QA needs the frames: encode again
        if not hit:
            # on a cluster, the segments are the executor's units (a task each, any node),
            # written into the cache folder they share; with an object store each node has
            # a cache folder of its own, so they stay in this machine's processes
            segments = segments_on(ctx.executor, ctx.report.setdefault(
                "segment_placement", {}).setdefault(name, {})) \
                if workers > 1 and not ctx.executor.in_process and not ctx.cache.store \
                else None
            conform(tl, cached, prof.video, audio=audio, base=edited.otio_path.parent,
                    subtitles=cues, watch=watch if meter else None, workers=workers,
                    segments=segments,
                    progress=lambda done, total, name=name: r.progress(name, done, total))
        if meter is not None:
            result = dict(meter.result().as_dict(),
                          measured_on=f"{name} master, every frame as sent to its encoder")
            write_atomic(qa_file, json.dumps(result).encode())
        if encodes_all and not watched:
            ctx.report.setdefault("qa", {})[name] = json.loads(qa_file.read_text())
            watched = True
        dst = inside(ctx.outdir, "masters", f"{slug(plan.title)}_{name}{codec.suffix}")
        place(cached, dst)
        # held to its profile by probe: frames, GOP and keyframes, level, tags, VBV
        ctx.report.setdefault("master_checks", {})[name] = verify_master(dst, tl, prof.video)
        out[name] = dst
        r.item(name, i, len(profiles), cached=hit)
    return out


def segments_on(executor: Executor, placed: dict[str, Any]) -> SegmentRunner:
    """A master's segments encoded as ``executor``'s units (on Ray: tasks of one CPU, on
    any node, each writing its segment file into the cache folder every node reaches), for
    :func:`~aiprod_post.editing.conform.conform` to join as it joins its own processes'.
    Where each ran goes into ``placed``, by its frames (``FIRST-STOP``)."""
    from aiprod_post.editing.conform import Segment

    def run(timeline_json: str, segments: list[Segment]) -> Iterator[int]:
        units = [Unit(f"segment {s.first}-{s.stop}", s) for s in segments]
        with contextlib.closing(executor.run(_encode_segment, units, timeline_json)) as done:
            for unit, result, where in done:
                if isinstance(result, Lost):
                    raise MediaError(f"frames {unit.payload.first}-{unit.payload.stop}: the "
                                     f"worker encoding them died on every try ({result.reason})",
                                     source=unit.payload.output)
                placed[f"{unit.payload.first}-{unit.payload.stop}"] = {
                    "node": where.node, "host": where.host, "worker": where.worker,
                    "waited_s": where.waited, "seconds": where.seconds}
                yield unit.payload.index

    return run


def _encode_segment(segment: Any, needs: dict[str, Any], timeline_json: str) -> str:
    """A segment unit's work: one single-threaded encoder on the unit's one CPU."""
    return segment.encode(timeline_json, threads=1)


def _qa_step(width: int) -> int:
    """Levels on a pixel sample (every 2nd to 4th pixel each way) keep QA quick."""
    return max(2, min(4, width // 480))


def qa(ctx: Context, spoken: Spoken, masters: dict[str, Path]) -> None:
    """Picture QA. The masters are measured on the frames sent to the first master
    encoded frame by frame (no second decode); only where every master copied frames (a
    ProRes-only run) is a master decoded here for it."""
    from aiprod_post.grading.qa import qa_video

    ctx.reporter.stage("qa", 1)
    from aiprod_post.editing.conform import PROFILES

    results = ctx.report.setdefault("qa", {})
    hit = bool(results)
    # an SDR master (the checks are SDR's); a run of HDR masters only is not measured
    sdr = [(n, p) for n, p in masters.items()
           if PROFILES[DELIVERY_PROFILES[n].video].hdr is None]
    if not results and not sdr and masters:
        ctx.report["qa_note"] = ("not measured: picture QA (EBU R103 levels, BT.1702 "
                                 "flashes) is for SDR masters, and this run made HDR ones only")
    if not results and sdr:
        name, path = sdr[0]
        cached = ctx.cache.path("qa", key_of("qa", file_digest(path)), ".json")
        hit = cached.exists()
        if not hit:
            found = dict(qa_video(path, step=_qa_step(spoken.plan.width),
                                  levels_every=6).as_dict(),
                         measured_on=f"{path.name}, decoded")
            write_atomic(cached, json.dumps(found).encode())
        results[name] = json.loads(cached.read_text())
    ctx.reporter.item("qa", 1, 1, cached=hit)
