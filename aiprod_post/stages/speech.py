"""The speech stage: every line voiced in its character's voice, with word and phoneme
timings, then placed in its shot; a shot too short for its lines is lengthened."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache import file_digest, key_of
from ..errors import AiprodError
from ..executors import Lost, Unit
from ..files import write_atomic
from ..plan import ShotPlan, frames_to_samples
from .context import Context, Line, Planned, Spoken

__all__ = ["run", "LineJob", "voice_line", "LINE_LEAD", "LINE_GAP", "LINE_TAIL"]

LINE_LEAD = 0.25  # seconds of picture before the first line of a shot
LINE_GAP = 0.25  # between lines in one shot
LINE_TAIL = 0.35  # after the last line


def run(ctx: Context, planned: Planned) -> Spoken:
    return fit_dialogue(ctx, planned.plan, voice_lines(ctx, planned))


def voice_lines(ctx: Context, planned: Planned) -> dict[str, list[Line]]:
    from aiprod_post.audio.tts import Voice, engine_by_name

    plan, r = planned.plan, ctx.reporter
    voices = {}
    for c in plan.cast:  # the cast gave every character a voice of their own
        ch = planned.character(c.name)
        language, _, variant = (ch.voice or "en").partition("+")
        voices[c.name] = Voice(language, variant, ch.pitch if ch.pitch is not None else 50,
                               50, ch.rate if ch.rate is not None else 165,
                               reference=ch.speaker_wav)
    ctx.report["voices"] = {n: v.name for n, v in voices.items()}
    a = ctx.project.audio
    if a.tts_engine == "coqui":
        engine = engine_by_name("coqui", model=ctx.project.path(a.tts_model)
                                if a.tts_model else None, device=a.tts_device)
        engine.check()  # a missing or broken model is bad input for the whole run
        tts_id: Any = engine.identity
        # a multi-speaker model: each character the speaker that fits their gender and age
        people = {c.name: planned.character(c.name) for c in plan.cast}
        chosen = engine.cast_speakers({n: (ch.gender, ch.age) for n, ch in people.items()},
                                      {n: ch.speaker for n, ch in people.items()
                                       if ch.speaker})
        voices = {n: dataclasses.replace(v, speaker=chosen.get(n)) for n, v in voices.items()}
    else:
        engine, tts_id = engine_by_name("espeak"), "espeak"
    ctx.report["tts"] = {"engine": a.tts_engine, "identity": engine.identity
                         if a.tts_engine == "coqui" else None}
    lines = [(shot, ln) for _, shot in plan.shots() for ln in shot.dialogue]
    r.stage("speech", len(lines))
    # each line is a unit of work for the executor (here, or a task on a cluster)
    tts = ("coqui", str(ctx.project.path(a.tts_model)) if a.tts_model else None,
           a.tts_device) if a.tts_engine == "coqui" else ("espeak", None, None)
    _TTS.clear()
    _TTS[tts] = engine  # a line voiced in this process uses the engine loaded here
    units, placed = [], {}
    for shot, ln in lines:
        voice = voices.get(ln.speaker) or Voice()
        # a voice without a speaker keys as it did before voices had speakers
        said = {k: v for k, v in voice.__dict__.items() if k != "speaker" or v is not None}
        key = key_of("speech", tts_id, ln.text, ln.parenthetical, said,
                     file_digest(Path(voice.reference)) if voice.reference else None)
        wav, meta = ctx.cache.path("speech", key, ".wav"), ctx.cache.path("speech", key, ".json")
        placed[ln.id] = (shot, ln, key, wav, meta)
        units.append(Unit(ln.id, LineJob(tts, ln.text, ln.parenthetical, voice,
                                         str(wav.resolve()), str(meta.resolve()))))
    where_made = ctx.report.setdefault("speech_placement", {})
    with contextlib.closing(ctx.executor.run(voice_line, units)) as running:
        for i, (unit, result, where) in enumerate(running, 1):
            if isinstance(result, Lost):
                raise AiprodError(f"line {unit.id}: the worker voicing it died on every try "
                                  f"({result.reason})")
            where_made[unit.id] = {"node": where.node, "host": where.host,
                                   "worker": where.worker, "seconds": where.seconds}
            r.item(unit.id, i, len(units), cached=not result)
    out: dict[str, list[Line]] = {}
    for shot, ln, key, wav, meta in placed.values():  # in the plan's order
        timings = json.loads(meta.read_text())
        out.setdefault(shot.id, []).append(Line(shot.id, ln.id, ln.speaker, ln.text,
                                                ln.parenthetical, key, wav, timings))
    return out


@dataclass(frozen=True)
class LineJob:
    """One line to voice into the speech cache: the TTS engine (name, model folder,
    device), the words, the delivery, the voice, and the cache entry's two files."""

    tts: tuple[str, str | None, str | None]
    text: str
    parenthetical: str | None
    voice: Any  # aiprod_post.audio.tts.Voice
    wav: str
    meta: str


#: this process's TTS engine (the latest asked for): a worker voicing many lines loads a
#: coqui model once
_TTS: dict[tuple, Any] = {}


def voice_line(job: LineJob, _needs: Any = None, _shared: Any = None) -> bool:
    """Voice one line into the cache (word and phoneme timings beside it), or find it
    there; True when it was made."""
    from aiprod_post.audio.io import write_wav
    from aiprod_post.audio.tts import delivery_for, engine_by_name

    wav, meta = Path(job.wav), Path(job.meta)
    if wav.exists() and meta.exists():
        return False
    if job.tts not in _TTS:
        _TTS.clear()
        name, model, device = job.tts
        _TTS[job.tts] = engine_by_name(name, model=model, device=device) \
            if name == "coqui" else engine_by_name(name)
    s = _TTS[job.tts].synthesize(job.text, job.voice, delivery_for(job.parenthetical))
    write_atomic(meta, json.dumps(s.timings()).encode())
    write_wav(wav, s.samples, s.sample_rate)
    return True


def line_offsets(durations: list[float], dual: list[bool]) -> tuple[list[float], float]:
    """Where each line of a shot starts (seconds from the cut in) and how long the shot
    must be for them: a lead before the first, a gap between, a tail after the last; the
    second of two dual lines starts with the first.

    >>> line_offsets([1.0, 0.5], [False, False])
    ([0.25, 1.5], 2.35)
    >>> line_offsets([1.0, 0.5], [True, True])
    ([0.25, 0.25], 1.6)
    """
    t = LINE_LEAD
    prev_dual = False
    last_start = t
    offsets = []
    for seconds, is_dual in zip(durations, dual):
        start = last_start if (is_dual and prev_dual) else t
        offsets.append(start)
        t = max(t, start + seconds + LINE_GAP)
        last_start, prev_dual = start, is_dual
    return offsets, t - LINE_GAP + LINE_TAIL


def fit_dialogue(ctx: Context, plan: ShotPlan, lines: dict[str, list[Line]]) -> Spoken:
    """Each line at its place in its shot and on the film; shots lengthened to hold their
    lines (reported)."""
    fps = plan.fps
    scenes = []
    lengthened = {}
    placed: dict[str, list[Line]] = {}
    for scene in plan.scenes:
        shots = []
        for shot in scene.shots:
            mine = lines.get(shot.id, [])
            pairs = list(zip(mine, shot.dialogue))
            offsets, seconds = line_offsets([ln.timings["duration"] for ln, _ in pairs],
                                            [dl.dual for _, dl in pairs])
            if shot.id in lines:
                placed[shot.id] = [dataclasses.replace(ln, offset=off)
                                   for (ln, _), off in zip(pairs, offsets)] + mine[len(pairs):]
            needed = math.ceil(seconds * fps) if shot.id in lines else 0
            if needed > shot.duration:
                lengthened[shot.id] = (shot.duration, needed)
                shot = shot.model_copy(update={"duration": needed})
            shots.append(shot)
        scenes.append(scene.model_copy(update={"shots": shots}))
    if lengthened:
        ctx.reporter.note(f"speech lengthened {len(lengthened)} shots: " + ", ".join(
            f"{k} {a}→{b}" for k, (a, b) in lengthened.items()))
    ctx.report["lengthened"] = {k: list(v) for k, v in lengthened.items()}
    edited = plan.model_copy(update={"scenes": scenes})
    on_film = {shot.id: tuple(dataclasses.replace(
        ln, start_sample=frames_to_samples(start, fps, ln.offset)) for ln in placed[shot.id])
        for _, shot, start, _ in edited.shot_spans() if shot.id in placed}
    # in the order they were voiced (film order)
    return Spoken(edited, {sid: on_film[sid] for sid in lines})
