"""The mix stage: dialogue, music and ambience (and sound an engine made with its picture)
into DX/MX/FX stems, a loudness-normalised mix per delivery measured again from the file
written, each line and each shot's sync sound for editors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..cache import file_digest, key_of, place
from ..files import inside, write_atomic
from ..plan import AUDIO_RATE, frames_to_samples
from ..progress import Watched
from ..project import DELIVERY_PROFILES
from .context import Context, Mixed, Pictures, Spoken

__all__ = ["run"]


def run(ctx: Context, spoken: Spoken, pictures: Pictures) -> Mixed:
    import soundfile

    from aiprod_post.audio.io import read_audio, resample, write_wav
    from aiprod_post.audio.loudness import measure_source
    from aiprod_post.audio.mix import (DialogueClip, MixSettings, render_stems, scene_beds)
    from aiprod_post.audio.normalize import Target, normalize_source
    from aiprod_post.audio.stream import FileSource, SumSource, WavWriter

    plan, r, a, profiles = spoken.plan, ctx.reporter, ctx.project.audio, ctx.profiles
    fps = plan.fps
    total = frames_to_samples(plan.duration, fps)
    all_lines = spoken.all_lines()
    beds = [{"scene": scene.id, "start": frames_to_samples(start, fps),
             "end": frames_to_samples(end, fps), "light": scene.light,
             "exterior": scene.int_ext in ("EXT", "EST"), "ambience": a.ambience.get(scene.id)}
            for scene, start, end in plan.scene_spans()]
    settings = MixSettings(duck_db=a.duck_db, music_db=a.music_db, ambience_db=a.ambience_db)
    # the engine's sound for its shot, on FX: shot, start, end, head, file
    sounds = [(shot.id, frames_to_samples(start, fps), frames_to_samples(end, fps),
               frames_to_samples(pictures.sound[shot.id][1], fps), pictures.sound[shot.id][0])
              for _, shot, start, end in plan.shot_spans() if shot.id in pictures.sound]
    key = key_of("mix", [(s_id, a0, a1, h, file_digest(f)) for s_id, a0, a1, h, f in sounds],
                 [(ln.key, ln.start_sample) for ln in all_lines], beds, a.music,
                 plan.seed, total, settings.__dict__,
                 [file_digest(ctx.project.path(p)) for p in
                  [a.music, *a.ambience.values()] if p])
    stem_paths = {s: ctx.cache.path("mix", f"{key}_{s}", ".wav") for s in ("DX", "MX", "FX")}
    r.stage("mix", 1 + len(profiles))
    hit = all(p.exists() for p in stem_paths.values())
    if not hit:
        # each line is read when the mixer reaches it (memory stays flat with the film)
        clips = [DialogueClip(ln.start_sample,
                              lambda ln=ln: read_audio(ln.wav, "float32")[0][:, 0],
                              name=ln.line_id, length=soundfile.info(str(ln.wav)).frames)
                 for ln in all_lines]

        def user_bed(path: str) -> np.ndarray:
            x, rate = read_audio(ctx.project.path(path))
            return resample(x, rate).astype(np.float32)

        music, ambience = scene_beds(beds, plan.seed, user_bed(a.music) if a.music else None,
                                     user_bed)
        for s_id, a0, a1, h, f in sounds:
            ambience.append(_engine_sound(s_id, a0, a1, h, f, read_audio))
        with WavWriter(stem_paths["DX"], 2) as dx, WavWriter(stem_paths["MX"], 2) as mx, \
                WavWriter(stem_paths["FX"], 2) as fx:
            render_stems(clips, music, ambience, total,
                         {"DX": Watched(dx, total, "stems", r), "MX": mx, "FX": fx}, settings)
    r.item("stems", 1, 1 + len(profiles), cached=hit)
    audio_dir = ctx.outdir / "audio"
    for s, p in stem_paths.items():
        place(p, audio_dir / f"{s}.wav")
    mixes: dict[str, Path] = {}
    loud: dict[str, dict] = {}
    for i, name in enumerate(profiles, 2):
        prof = DELIVERY_PROFILES[name]
        mkey = key_of("mixdown", key, prof.loudness, prof.true_peak)
        path = ctx.cache.path("mix", mkey, ".wav")
        info = ctx.cache.path("mix", mkey, ".json")
        hit = path.exists() and info.exists()
        if not hit:
            # the stems' sum, normalised and written a block at a time
            stems_sum = SumSource([FileSource(stem_paths[s]) for s in ("DX", "MX", "FX")])
            try:
                with WavWriter(path, 2) as out:
                    _after, warnings = normalize_source(
                        Watched(stems_sum, stems_sum.frames, f"mix {name}", r),
                        AUDIO_RATE, Target(name, prof.loudness, prof.true_peak),
                        Watched(out, stems_sum.frames, f"mix {name}", r))
            finally:
                stems_sum.close()
            written = FileSource(path)
            try:  # measured again, from the file written
                check = measure_source(Watched(written, written.frames, f"check {name}", r),
                                       written.rate)
            finally:
                written.close()
            write_atomic(info, json.dumps({**check.as_dict(), "warnings": warnings}).encode())
        loud[name] = {"target": prof.loudness, "ceiling": prof.true_peak,
                      **json.loads(info.read_text())}
        place(path, audio_dir / f"mix_{name}.wav")
        mixes[name] = audio_dir / f"mix_{name}.wav"
        r.item(f"mix {name}", i, 1 + len(profiles), cached=hit)
    lines_dir = audio_dir / "lines"
    for ln in all_lines:
        place(ln.wav, inside(lines_dir, f"{ln.line_id}.wav"))
    # per-shot sync sound for editors: the dialogue stem over each shot's cut
    dx: FileSource | None = None
    for _, shot, start, end in plan.shot_spans():
        a0, a1 = frames_to_samples(start, fps), frames_to_samples(end, fps)
        cached = ctx.cache.path("mix", key_of("shotwav", key, a0, a1), ".wav")
        if not cached.exists():
            if dx is None:
                dx = FileSource(stem_paths["DX"])
            write_wav(cached, dx.read(a0, a1))
        place(cached, inside(ctx.outdir, "shots", f"{shot.id}.wav"))
    if dx is not None:
        dx.close()
    ctx.report["loudness"] = loud
    return Mixed(mixes, {s: audio_dir / f"{s}.wav" for s in stem_paths}, lines_dir)


def _engine_sound(shot_id: str, a0: int, a1: int, head: int, path: Path, read_audio):
    """The sound an engine made with a shot, over the shot's cut (its head handle off)."""
    from aiprod_post.audio.mix import Bed

    return Bed(a0, a1, lambda: read_audio(path, "float32")[0][head:head + a1 - a0],
               name=f"sound {shot_id}")
