"""The ``aiprod-post`` command line.

Bad input prints one line, ``aiprod-post: error: FILE:LINE: what was expected``,
and exits 2 without writing output. An internal fault exits 1.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import NoReturn

import click

from . import __version__
from .checks import plan_problems
from .codecs import MASTERS as GRADE_MASTERS
from .codecs import PROFILES as MASTER_PROFILES
from .errors import AiprodError, PlanError
from .files import write_atomic
from .plan import (
    ShotPlan,
    is_plan_file,
    format_frame_rate,
    frames_to_timecode,
    load_plan,
    parse_frame_rate,
    plan_json_schema,
    plan_to_json,
)
from .planner import PlannerSettings, plan_source

EXIT_BAD_INPUT = 2


def _fail(exc: AiprodError) -> NoReturn:
    click.echo(f"aiprod-post: error: {exc}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _warn(source: str, line: int, message: str) -> None:
    click.echo(f"{source}:{line}: warning: {message}", err=True)


def _parse_fps(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Fraction | None:
    if value is None:
        return None
    try:
        return parse_frame_rate(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


class _EngineChoice(click.Choice):
    """The engines registered in :mod:`aiprod_post.engines`, read when the flag is parsed."""

    def __init__(self) -> None:
        super().__init__([])

    @property  # type: ignore[override]
    def choices(self) -> list[str]:
        from . import engines

        return engines.names()

    @choices.setter
    def choices(self, value) -> None:
        pass


def _parse_size(_ctx: click.Context, _param: click.Parameter, value: str | None
                ) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 1920x1080, got {value!r}") \
            from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192) or w % 2 or h % 2:
        raise click.BadParameter(f"{value}: width and height must be even, 16..8192")
    return w, h


def _load_or_plan(path: Path, fps: Fraction | None, seed: int | None,
                  size: tuple[int, int] | None) -> tuple[ShotPlan, list[tuple[int, str]]]:
    if is_plan_file(path):
        plan = load_plan(path)
        if fps is not None or seed is not None or size is not None:
            raise PlanError("--fps, --seed and --size apply when planning a script; "
                            "edit the plan's fields instead", source=path)
        return plan, []
    settings = PlannerSettings(
        fps=fps or Fraction(24),
        seed=seed or 0,
        width=size[0] if size else 1920,
        height=size[1] if size else 1080,
    )
    return plan_source(path, settings)


def _seconds(frames: int, fps: Fraction) -> str:
    return f"{float(frames / fps):.1f}s"


def plan_table(plan: ShotPlan) -> str:
    """A readable shot list: one row per shot."""
    rows = [("SCENE", "SHOT", "FRAMING", "MOVE", "FRAMES", "SECS", "IN", "CHARACTERS",
             "DIALOGUE / ACTION")]
    for scene, shot in plan.shots():
        if shot.dialogue:
            first = shot.dialogue[0]
            what = f"{first.speaker}: {first.text}"
        else:
            what = shot.title or shot.action
        what = what if len(what) <= 44 else what[:43] + "…"
        rows.append((scene.id, shot.id, shot.framing.value, shot.camera_move.value,
                     str(shot.duration), _seconds(shot.duration, plan.fps),
                     shot.transition_in.kind.value, ", ".join(shot.characters) or "-", what))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    total = plan.duration
    n_shots = len(plan.shots())
    lines.append("")
    lines.append(f"{plan.title}: {len(plan.scenes)} scenes, {n_shots} shots, {total} frames at "
                 f"{format_frame_rate(plan.fps)} fps ({frames_to_timecode(total, plan.fps)}, "
                 f"{_seconds(total, plan.fps)}), {plan.width}x{plan.height}; cast: "
                 f"{', '.join(c.name for c in plan.cast) or '-'}")
    return "\n".join(line.rstrip() for line in lines)


#: What the machine refused, not a fault of ours: the user can fix these (free space, a
#: writable folder, a path that is a folder), so they exit 2 with the file named.
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ENOENT,
                errno.ELOOP, errno.EFBIG}


def _os_error(exc: OSError) -> AiprodError | None:
    """The user-facing error for an OSError the user can fix, else None (a fault: exit 1)."""
    if exc.errno not in _USER_ERRNOS:
        return None
    what = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "the filesystem is read-only",
            errno.ENOTDIR: "a part of the path is a file, not a folder",
            errno.EEXIST: "a file is in the way where a folder is needed",
            errno.EISDIR: "expected a file, found a folder"}.get(exc.errno,
                                                                 exc.strerror or str(exc))
    return AiprodError(f"cannot write or read here: {what}", source=exc.filename)


def _sound_file_error(exc: Exception) -> AiprodError | None:
    """libsndfile says only "System error." when a write fails: name the likely cause."""
    try:
        import soundfile
    except ImportError:  # pragma: no cover - soundfile is a dependency
        return None
    if not isinstance(exc, soundfile.LibsndfileError):
        return None
    return AiprodError(f"audio file could not be written or read ({exc}); is the disk full "
                       "or the folder read-only?")


class _Cli(click.Group):
    """Every command: project errors and refusals by the machine exit 2 on one line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AiprodError as exc:
            _fail(exc)
        except OSError as exc:
            err = _os_error(exc)
            if err is None:
                raise
            _fail(err)
        except RuntimeError as exc:
            err = _sound_file_error(exc)
            if err is None:
                raise
            _fail(err)


def _output_folder(path: Path) -> None:
    """An output folder must be a folder (or not exist yet, under a folder)."""
    if path.exists() and not path.is_dir():
        raise AiprodError("expected an output folder, found a file", source=path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise AiprodError("a part of the output path is a file, not a folder",
                                  source=parent)
            if not os.access(parent, os.W_OK | os.X_OK) and not path.exists():
                why = ("the filesystem is read-only"
                       if os.statvfs(parent).f_flag & os.ST_RDONLY else "not writable")
                raise AiprodError(f"cannot create the output folder here: {why}",
                                  source=parent)
            break


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aiprod-post")
def main() -> None:
    """aiprod-post: a screenplay in; graded, mixed masters and an editable timeline out."""


@main.command("plan")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write the shot plan JSON here (atomically).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="What to print on stdout.")
@click.option("--fps", callback=_parse_fps, help="Frame rate: 24, 25, 30, 24000/1001 or 23.976 "
              "(default 24).")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), help="Seed for every shot (default 0).")
@click.option("--size", callback=_parse_size, help="Frame size WIDTHxHEIGHT (default 1920x1080).")
def plan_command(source: Path, output: Path | None, fmt: str, fps: Fraction | None,
                 seed: int | None, size: tuple[int, int] | None) -> None:
    """Split a Fountain SCRIPT into scenes and shots (or show a PLAN.json).

    Prints a shot table, or the plan as JSON with --format json.
    """
    try:
        plan, warnings = _load_or_plan(source, fps, seed, size)
    except AiprodError as exc:
        _fail(exc)
    for line, message in warnings:
        _warn(str(source), line, message)
    text = plan_to_json(plan)
    if output is not None:
        try:
            write_atomic(output, text.encode("utf-8"))
        except OSError as exc:
            _fail(AiprodError(f"cannot write: {exc.strerror or exc}", source=output))
    click.echo(text if fmt == "json" else plan_table(plan), nl=fmt != "json")


@main.command("estimate")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--engine", type=_EngineChoice(), default="animatic", show_default=True,
              help="Generation engine.")
@click.option("--profile", default="web,master", show_default=True,
              help="Delivery profiles, comma-separated.")
@click.option("--size", callback=_parse_size, help="WIDTHxHEIGHT (default: the plan's).")
@click.option("--fps", callback=_parse_fps, help="Frame rate (default: the plan's).")
@click.option("--preset", type=click.Choice(["distilled", "dev"]), default="distilled",
              show_default=True, help="GPU engines: the sampling preset.")
@click.option("--price-per-gpu-hour", type=click.FloatRange(0), default=0.0,
              help="GPU engines: price of a GPU-hour, for the cost.")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
def estimate_command(source: Path, engine: str, profile: str, size, fps, preset: str,
                     price_per_gpu_hour: float, as_json: bool) -> None:
    """How long rendering a SCRIPT or PLAN will take on this machine, before any work.

    Stage times come from this machine's earlier renders (a history in the user's cache
    folder, AIPROD_CACHE), else a reference table; GPU engines' from their benchmarks,
    with GPU-hours and a cost at --price-per-gpu-hour.
    """
    from .estimate import estimate_work, work_of
    from .project import DELIVERY_PROFILES

    plan, _warnings = _load_or_plan(source, fps, None, size)
    profiles = [p.strip() for p in profile.split(",") if p.strip()]
    for p in profiles:
        if p not in DELIVERY_PROFILES:
            raise AiprodError(f"unknown delivery profile {p!r}: expected one of "
                              f"{', '.join(DELIVERY_PROFILES)}", where="--profile")
    work = work_of(plan, profiles, video={p: DELIVERY_PROFILES[p].video for p in profiles})
    est = estimate_work(work, engine, preset=preset, price_per_gpu_hour=price_per_gpu_hour)
    if as_json:
        click.echo(json.dumps(est, indent=2))
        return
    click.echo(f"{plan.title}: {len(plan.shots())} shots, {est['film_seconds']:.1f} s of film, "
               f"{plan.width}x{plan.height}, engine {engine}")
    for stage, seconds in est["stages"].items():
        shown = f"{seconds:8.1f} s" if seconds is not None else "       ? s"
        click.echo(f"  {stage:<11} {shown}   ({est['from'][stage]})")
    click.echo(f"  {'total':<11} {est['total_seconds']:8.1f} s"
               + ("" if est["complete"] else "   (without the stages marked ?)"))
    if est["gpu"]:
        g = est["gpu"]
        click.echo(f"  GPU: {g['gpu_hours']:.3f} GPU-hours on {g['gpu']}"
                   + (f", {g['cost']:.2f} at {price_per_gpu_hour:g}/GPU-hour"
                      if price_per_gpu_hour else ""))


@main.command("validate")
@click.argument("source", type=click.Path(path_type=Path))
def validate_command(source: Path) -> None:
    """Check a SCRIPT or PLAN.json and report problems with line numbers or JSON paths.

    Exits 0 when it is usable (warnings are printed), 2 when it is not.
    """
    try:
        plan, warnings = _load_or_plan(source, None, None, None)
    except AiprodError as exc:
        _fail(exc)
    for line, message in warnings:
        _warn(str(source), line, message)
    problems = plan_problems(plan)
    for where, message in problems:
        click.echo(f"{source}: {where}: error: {message}", err=True)
    if problems:
        sys.exit(EXIT_BAD_INPUT)
    n_shots = len(plan.shots())
    click.echo(f"{source}: ok: {len(plan.scenes)} scenes, {n_shots} shots, "
               f"{len(warnings)} warning{'s' * (len(warnings) != 1)}")


def _parse_voice(text: str | None):
    from aiprod_post.audio.tts import Voice

    if not text:
        return Voice()
    language, _, variant = text.partition("+")
    return Voice(language=language, variant=variant)


@main.command("speak")
@click.argument("text")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="WAV to write (48 kHz, 24-bit); timings go beside it as .json and .tsv.")
@click.option("--voice", help="espeak-ng voice: language[+variant], e.g. en-us+f2 or en+m3.")
@click.option("--engine", type=click.Choice(["espeak", "coqui"]), default="espeak",
              show_default=True)
@click.option("--model", type=click.Path(path_type=Path),
              help="coqui: a local coqui-tts model folder (config.json and a checkpoint).")
@click.option("--speaker-wav", type=click.Path(path_type=Path),
              help="coqui: a recording of the voice to clone (YourTTS, XTTS).")
@click.option("--device", default="cpu", show_default=True, help="coqui: cpu or cuda.")
@click.option("--parenthetical", help="Delivery, as in a script: (whispering), (shouting), (beat).")
@click.option("--fps", callback=_parse_fps, help="Frame rate for the mouth cues (default 24).")
def speak_command(text: str, output: Path, voice: str | None, engine: str, model: Path | None,
                  speaker_wav: Path | None, device: str, parenthetical: str | None,
                  fps: Fraction | None) -> None:
    """Speak TEXT into a WAV, with word, phoneme and mouth-shape timings.

    Writes OUTPUT (the speech), OUTPUT.json (words, phonemes, Rhubarb-style
    mouth cues) and OUTPUT.tsv (Rhubarb TSV).
    """
    from aiprod_post.audio.io import write_wav
    from aiprod_post.audio.tts import delivery_for, engine_by_name
    from aiprod_post.audio.visemes import mouth_cues, to_rhubarb_tsv

    try:
        v = _parse_voice(voice)
        if engine == "coqui":
            tts = engine_by_name("coqui", model=model, device=device)
            if speaker_wav:
                v = dataclasses.replace(v, reference=str(speaker_wav))
        else:
            tts = engine_by_name(engine)
        speech = tts.synthesize(text, v, delivery_for(parenthetical))
        cues = mouth_cues(speech.phonemes, speech.duration, fps or Fraction(24))
        timings = speech.timings()
        timings["fps"] = format_frame_rate(fps or Fraction(24))
        timings["mouth_cues"] = [{"start": round(c.start, 4), "end": round(c.end, 4),
                                  "value": c.value} for c in cues]
        write_atomic(output.with_suffix(".json"), json.dumps(timings, indent=2).encode())
        write_atomic(output.with_suffix(".tsv"), to_rhubarb_tsv(cues).encode())
        write_wav(output, speech.samples, speech.sample_rate)
    except AiprodError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(AiprodError(f"cannot write: {exc.strerror or exc}", source=output))
    click.echo(f"{output}: {speech.duration:.2f} s, {len(speech.words)} words, "
               f"{len(speech.phonemes)} phonemes, voice {speech.voice.name if speech.voice else '-'}")


def _fmt_level(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if value == float("-inf"):
        return f"-inf {unit}"
    return f"{value:.1f} {unit}"


@main.command("loudness")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, as a list.")
def loudness_command(files: tuple[Path, ...], as_json: bool) -> None:
    """Measure FILES per ITU-R BS.1770-4 / EBU R128.

    Integrated loudness, loudness range (EBU Tech 3342), true peak (4x
    oversampled), momentary and short-term maxima.
    """
    from aiprod_post.audio.loudness import loudness_source, measure_source

    results = []
    failed = False
    for path in files:
        try:
            src, rate = loudness_source(path)
            try:
                m = measure_source(src, rate)
            finally:
                src.close()
        except AiprodError as exc:
            click.echo(f"aiprod-post: error: {exc.with_source(path) if not exc.source else exc}",
                       err=True)
            failed = True
            continue
        for w in m.warnings:
            click.echo(f"{path}: warning: {w}", err=True)
        results.append({"file": str(path), **m.as_dict()})
        if not as_json:
            click.echo(f"{path}: I {_fmt_level(m.integrated, 'LUFS')}, "
                       f"LRA {_fmt_level(m.loudness_range, 'LU')}, "
                       f"TP {_fmt_level(m.true_peak, 'dBTP')}, "
                       f"M max {_fmt_level(m.momentary_max, 'LUFS')}, "
                       f"S max {_fmt_level(m.short_term_max, 'LUFS')}, "
                       f"{m.duration:.2f} s, {m.channels} ch, {m.sample_rate} Hz")
    if as_json:
        click.echo(json.dumps(results, indent=2))
    if failed:
        sys.exit(EXIT_BAD_INPUT)


@main.command("normalize")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="WAV to write (24-bit).")
@click.option("--target", default="ebu-r128", show_default=True,
              help="ebu-r128 (-23/-1), atsc-a85 (-24/-2), streaming (-14/-1), apple (-16/-1), "
                   "or a number of LUFS.")
@click.option("--ceiling", type=float, help="True-peak ceiling in dBTP (default: the target's).")
def normalize_command(source: Path, output: Path, target: str, ceiling: float | None) -> None:
    """Normalise SOURCE to a loudness target with a true-peak limiter, and check the result."""
    from aiprod_post.audio.loudness import loudness_source, measure_file
    from aiprod_post.audio.normalize import normalize_source, resolve_target
    from aiprod_post.audio.stream import WavWriter

    try:
        goal = resolve_target(target, ceiling)
        src, rate = loudness_source(source)
        try:  # read, normalised and written a block at a time
            with WavWriter(output, src.channels, rate) as out:
                _after, warnings = normalize_source(src, rate, goal, out)
        finally:
            src.close()
        for w in warnings:
            click.echo(f"{source}: warning: {w}", err=True)
        check = measure_file(output)  # measured again from the file as written
    except AiprodError as exc:
        _fail(exc if exc.source else exc.with_source(source))
    except OSError as exc:
        _fail(AiprodError(f"cannot write: {exc.strerror or exc}", source=output))
    click.echo(f"{output}: I {_fmt_level(check.integrated, 'LUFS')} (target "
               f"{goal.integrated:.1f}), TP {_fmt_level(check.true_peak, 'dBTP')} (ceiling "
               f"{goal.true_peak:.1f}), LRA {_fmt_level(check.loudness_range, 'LU')}")


@main.command("export")
@click.argument("timeline", type=click.Path(path_type=Path), required=False)
@click.option("--format", "fmt",
              type=click.Choice(["otio", "otioz", "fcp7", "fcpxml", "edl", "aaf"]),
              help="otio/otioz (Resolve 18.5+), fcp7 (Premiere), fcpxml (Final Cut Pro), "
                   "edl (CMX 3600), aaf (Avid).")
@click.option("-o", "--output", type=click.Path(path_type=Path))
@click.option("--relative", is_flag=True, help="Media paths relative to the output file.")
@click.option("--url", "as_url", is_flag=True,
              help=".otio: media as file:// URLs (default: plain absolute paths, which "
                   "Resolve relinks).")
@click.option("--media-root", metavar="NEW|OLD=NEW",
              help="Move the media for another machine: OLD=NEW replaces the prefix OLD, a "
                   "bare NEW the folder all the media share.")
@click.option("--check", "check", type=click.Path(path_type=Path), metavar="FILE",
              help="Check FILE (.fcpxml, .edl, .aaf, .xml, .otio) as its application would, "
                   "instead of exporting.")
@click.option("--dtd", type=click.Path(path_type=Path),
              help="With --check on FCPXML: also validate against this DTD (needs lxml).")
@click.option("--fps", callback=_parse_fps, help="With --check on an EDL: its frame rate "
              "(default 24).")
def export_command(timeline: Path | None, fmt: str | None, output: Path | None,
                   relative: bool, as_url: bool, media_root: str | None, check: Path | None,
                   dtd: Path | None, fps: Fraction | None) -> None:
    """Export a TIMELINE (.otio, or an EDL, XML or AAF) for Resolve, Premiere, Final Cut
    Pro or Avid; or --check a timeline file."""
    from aiprod_post.editing.export import export_timeline, read_timeline

    if check is not None:
        from aiprod_post.editing.check import check_timeline_file

        try:
            problems = check_timeline_file(check, dtd=dtd, rate=fps)
        except AiprodError as exc:
            _fail(exc)
        for problem in problems:
            click.echo(f"{check}: {problem}" if not problem.startswith(str(check)) else problem,
                       err=True)
        if problems:
            sys.exit(EXIT_BAD_INPUT)
        click.echo(f"{check}: ok")
        return
    if timeline is None or fmt is None or output is None:
        raise click.UsageError("export needs TIMELINE, --format and -o (or --check FILE)")
    try:
        export_timeline(read_timeline(timeline), fmt, output, relative=relative, url=as_url,
                        media_root=media_root, base=timeline.parent)
    except AiprodError as exc:
        _fail(exc)
    click.echo(f"{output}: {fmt}")


@main.command("conform")
@click.argument("timeline", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--profile", type=click.Choice(list(MASTER_PROFILES)), default="h264",
              show_default=True)
@click.option("--audio", type=click.Path(path_type=Path),
              help="Mix to lay in (default: the mix the timeline names).")
@click.option("--media", "media", type=click.Path(path_type=Path), multiple=True,
              help="A folder to find the timeline's media in by file, clip or reel name "
                   "(repeatable; for EDLs, and timelines from another machine).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Encode a long-GOP master (h264, hdr-*) as closed-GOP segments in this "
                   "many processes, joined without re-encoding.")
@click.option("--graded-with", type=click.Path(path_type=Path), default=None,
              help="The CDLs the media were graded with (a .ccc by shot id; default: the "
                   ".ccc in the timeline/ folder of the render the media come from, else "
                   "none). A clip whose CDL differs gets the change applied to its pictures.")
def conform_command(timeline: Path, output: Path, profile: str, audio: Path | None,
                    media: tuple[Path, ...], workers: int, graded_with: Path | None) -> None:
    """Render a master from a TIMELINE (.otio, FCP 7 .xml, .fcpxml, .edl or .aaf): decode,
    transitions, encode. A colourist's changed ASC CDL (*ASC_SOP/*ASC_SAT in an EDL, the
    clip's aiprod_post cdl in an .otio) is applied to that clip's pictures."""
    from aiprod_post.editing.conform import conform, probe

    applied: list[str] = []
    try:
        conform(timeline, output, profile, audio=audio, media=media, workers=workers,
                transform=_cdl_changes(timeline, graded_with, applied))
        info = probe(output)
    except AiprodError as exc:
        _fail(exc)
    for clip in applied:
        click.echo(f"note: clip {clip}: its changed CDL is applied to its pictures")
    v = info.get("video", {})
    click.echo(f"{output}: {v.get('codec')} {v.get('profile')} {v.get('pix_fmt')} "
               f"{v.get('width')}x{v.get('height')} {v.get('frames')} frames at "
               f"{format_frame_rate(v.get('rate'))} fps, {len(v.get('keyframes', []))} "
               f"keyframes, {v.get('kbps', 0) / 1000:.2f} Mbit/s"
               + (f", audio {info['audio']['codec']}" if "audio" in info else ""))


def _cdl_changes(timeline: Path, graded_with: Path | None, applied: list[str]):
    """The conform's change to each clip: the CDL the edit gives it where that differs
    from the one its media were graded with (:func:`grading.cdl.changed_cdl`), exactly as
    OpenColorIO's CDLTransform applies it, on 16-bit RGB. The media's CDLs: those of
    ``graded_with``, else of the one ``.ccc`` that the render of the media wrote beside its
    timeline (``OUT/timeline/`` for media in ``OUT/shots/``), else none."""
    from aiprod_post.editing.timeline import NAMESPACE, url_to_path
    from aiprod_post.grading.cdl import CDL, cdl_frames, changed_cdl, read_cdl

    known: dict[Path | None, dict] = {}
    if graded_with is not None:
        known[None] = {c.id: c for c in read_cdl(graded_with)}

    def graded(clip) -> dict:
        if None in known:
            return known[None]
        media = url_to_path(clip.media_reference.target_url, timeline.parent)
        folder = media.parent.parent / "timeline"
        if folder not in known:
            found = sorted(folder.glob("*.ccc")) if folder.is_dir() else []
            if len(found) > 1:
                raise AiprodError(f"{len(found)} .ccc files: name the one the media were "
                                  "graded with", source=folder, where="--graded-with")
            known[folder] = {c.id: c for c in read_cdl(found[0])} if found else {}
        return known[folder]

    def change(clip):
        meta = clip.metadata.get(NAMESPACE, {}).get("cdl")
        if meta is None or not hasattr(clip.media_reference, "target_url"):
            return None
        cdl = CDL.from_metadata(dict(meta), where=f"clip {clip.name}")
        new = changed_cdl(cdl, graded(clip).get(clip.name), clip.name)
        if new is None:
            return None
        applied.append(clip.name)
        return cdl_frames(new)

    return change


def _render_options(engine, profile, project, fps, size, seed, quiet, log_json, burn_in,
                    cast=None, executor=None, address=None, cache=None):
    from .pipeline import RenderOptions
    from .project import Project, load_project

    proj = load_project(project) if project else Project()
    return RenderOptions(
        engine=engine, profiles=[p.strip() for p in profile.split(",")] if profile else None,
        project=proj, fps=fps, width=size[0] if size else None,
        height=size[1] if size else None, seed=seed, quiet=quiet, log_json=log_json,
        burn_in=burn_in, cast=cast, executor=executor, address=address, cache=cache)


_render_flags = [
    click.option("--engine", type=_EngineChoice(),
                 help="Generation engine (default: the project's, else animatic)."),
    click.option("--profile", help="Delivery profiles, comma-separated: web, broadcast-ebu, "
                                   "broadcast-atsc, master, hdr10, hlg (default web,master)."),
    click.option("--project", type=click.Path(path_type=Path), help="Project file (TOML)."),
    click.option("--fps", callback=_parse_fps, help="Frame rate (overrides the project)."),
    click.option("--size", callback=_parse_size, help="WIDTHxHEIGHT (overrides the project)."),
    click.option("--seed", type=click.IntRange(0, 2**31 - 1), help="Plan seed (default 0)."),
    click.option("--quiet", is_flag=True, help="No progress output."),
    click.option("--log-json", is_flag=True, help="One JSON event per line on stdout."),
    click.option("--burn-in/--no-burn-in", default=None, help="Burn shot ids into the picture."),
    click.option("--cast", type=click.Path(path_type=Path),
                 help="Cast file (TOML, from `aiprod-post cast`): who the characters are, their "
                      "voices and looks (default: the project's, else read from the script)."),
    click.option("--executor", type=click.Choice(["local", "ray"]),
                 help="Where the shots run: this machine, or a Ray cluster (default: the "
                      "project's [run] executor, else local)."),
    click.option("--address", help="With --executor ray: the cluster, auto (one started here "
                                    "with `ray start`), HOST:PORT or ray://HOST:PORT (default: "
                                    "the project's [run] address, else a Ray started for the "
                                    "render)."),
    click.option("--cache", help="The stage cache: a folder or file:// URL that renders into "
                                  "other folders (and every node) may share (default: the "
                                  "project's [run] cache, else OUTDIR/.cache)."),
]


def _with_render_flags(fn):
    for flag in reversed(_render_flags):
        fn = flag(fn)
    return fn


@main.command("render")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output folder (reruns reuse its cache).")
@_with_render_flags
def render_command(source: Path, output: Path, engine, profile, project, fps, size, seed, quiet,
                   log_json, burn_in, cast, executor, address, cache) -> None:
    """Render a SCRIPT (.fountain) or PLAN (.json) to masters, timeline, stems and a report.

    Exits 0 when everything rendered, 3 when some shots failed and were replaced
    by slates (the report says why), 2 on bad input.
    """
    from .pipeline import render

    try:
        if not source.exists():
            raise AiprodError("no such file", source=source)
        _output_folder(output)
        result = render(source, output, _render_options(engine, profile, project, fps, size,
                                                        seed, quiet, log_json, burn_in, cast,
                                                        executor, address, cache))
    except AiprodError as exc:
        _fail(exc)
    if not quiet and not log_json:
        for name, path in result.masters.items():
            click.echo(f"{name}: {path}")
        click.echo(f"report: {output / 'report.html'}")
    sys.exit(result.exit_code)


@main.command("retake")
@click.argument("outdir", type=click.Path(path_type=Path))
@click.argument("shot")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1),
              help="The new take's seed (default: one no take of the shot has used).")
@click.option("--new-seed", is_flag=True, help="A seed no take of the shot has used "
              "(the default; says so explicitly).")
@click.option("--prompt-extra", help="Words added to the shot's prompt for this take.")
@click.option("--note", help="A note kept with the take (report, timeline).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--log-json", is_flag=True, help="One JSON event per line on stdout.")
def retake_command(outdir: Path, shot: str, seed: int | None, new_seed: bool,
                   prompt_extra: str | None, note: str | None, quiet: bool,
                   log_json: bool) -> None:
    """Render a new take of SHOT in the render in OUTDIR, keeping the earlier takes.

    Only that shot is rendered again (the stage cache serves the rest); the timeline and
    masters are made again with the new take. Takes are kept as shots/SHOT_tN.mov and
    listed in report.html and on the shot's timeline clip; `aiprod-post take` chooses.
    """
    from .retakes import retake

    if seed is not None and new_seed:
        raise AiprodError("give --seed N or --new-seed, not both", where="--seed")
    take, result = retake(outdir, shot, seed=seed, prompt_extra=prompt_extra, note=note,
                          quiet=quiet, log_json=log_json)
    _print_take(shot, take, result, quiet or log_json)


@main.command("take")
@click.argument("outdir", type=click.Path(path_type=Path))
@click.argument("shot")
@click.argument("number", type=int)
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--log-json", is_flag=True, help="One JSON event per line on stdout.")
def take_command(outdir: Path, shot: str, number: int, quiet: bool, log_json: bool) -> None:
    """Choose take NUMBER of SHOT for the render in OUTDIR; remake its timeline and masters."""
    from .retakes import use_take

    take, result = use_take(outdir, shot, number, quiet=quiet, log_json=log_json)
    _print_take(shot, take, result, quiet or log_json)


def _print_take(shot: str, take, result, silent: bool) -> None:
    if not silent:
        click.echo(f"{shot}: take {take.take} (seed {take.seed}) in the film")
        again = [s["id"] for s in result.report.get("shots", [])
                 if s.get("cached") is False and s["id"] != shot]
        if again:  # conditioned on the retaken shot's keyframes (or not in the cache)
            click.echo(f"also made again: {', '.join(again)}")
        for name, path in result.masters.items():
            click.echo(f"{name}: {path}")
    if result.exit_code:
        sys.exit(result.exit_code)


def _batch_one(args: tuple) -> dict:
    source, outdir, opts = args
    from .pipeline import render

    t0 = __import__("time").monotonic()
    try:
        result = render(source, outdir, opts)
        status = "ok" if not result.failed_shots else "shots failed"
        error = "; ".join(f"{k}: {v}" for k, v in result.failed_shots.items())
        added = result.report.get("cast", {}).get("added", [])
    except AiprodError as exc:
        status, error, added = "error", str(exc), []
    except Exception as exc:  # noqa: BLE001 - one script must not stop the batch
        status, error, added = "error", f"{type(exc).__name__}: {exc}", []
    return {"script": str(source), "output": str(outdir), "status": status, "error": error,
            "seconds": round(__import__("time").monotonic() - t0, 2),
            # characters the series cast file did not have: added with voices of their own
            "new_characters": added}


@main.command("batch")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--jobs", type=click.IntRange(1, 64), default=2, show_default=True)
@_with_render_flags
def batch_command(source: Path, output: Path, jobs: int, engine, profile, project, fps, size, seed,
                  quiet, log_json, burn_in, cast, executor, address, cache) -> None:
    """Render every script in a folder, or listed one per line in a file, in parallel.

    One failing script does not stop the others; a summary table and
    OUTPUT/batch.json come at the end. Exits 0 only if every script rendered.
    With ``--cast`` every episode uses one cast file: the same person has the same voice
    and look in each; characters new to an episode are added and listed.
    With ``--executor ray`` each script's shots run on the cluster, JOBS scripts at once.
    """
    import contextlib
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    try:
        if source.is_dir():
            scripts = sorted(p for p in source.iterdir()
                             if p.suffix.lower() in (".fountain", ".txt", ".json"))
        elif source.is_file():
            scripts = [Path(line.strip()) for line in source.read_text().splitlines()
                       if line.strip() and not line.startswith("#")]
        else:
            raise AiprodError("no such folder or list", source=source)
        if not scripts:
            raise AiprodError("no scripts found (.fountain, .txt or .json)", source=source)
        opts = _render_options(engine, profile, project, fps, size, seed, True, False, burn_in,
                               cast, executor, address, cache)
        if opts.cast is not None:
            from .cast import load_cast

            load_cast(opts.cast)  # a bad cast file is bad input for the whole batch
        cluster = contextlib.ExitStack()
        mp_context = None
        if (opts.executor or opts.project.run.executor) == "ray":
            from .executors import executor_for

            # reached once here (an unreachable address is bad input for the whole batch);
            # without an address the Ray started here serves every script's render
            ray_executor = cluster.enter_context(executor_for(
                "ray", opts.address or opts.project.run.address, opts.project.run.retries))
            opts.executor, opts.address = "ray", ray_executor.cluster_address()
            mp_context = multiprocessing.get_context("spawn")  # a Ray driver does not fork
    except AiprodError as exc:
        _fail(exc)
    jobs_args = [(s, output / s.stem, opts) for s in scripts]
    with cluster, ProcessPoolExecutor(max_workers=jobs, mp_context=mp_context) as pool:
        results = list(pool.map(_batch_one, jobs_args))
    width = max(len(r["script"]) for r in results)
    for r in results:
        click.echo(f"{r['script']:<{width}}  {r['status']:<12} {r['seconds']:>8.1f}s  "
                   f"{r['error'][:100]}"
                   + (f"  new characters: {', '.join(r['new_characters'])}"
                      if r["new_characters"] else ""))
    write_atomic(output / "batch.json", json.dumps(results, indent=2).encode())
    sys.exit(0 if all(r["status"] == "ok" for r in results) else EXIT_BAD_INPUT
             if any(r["status"] == "error" for r in results) else 3)


@main.command("cast")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Cast file to write (TOML).")
@click.option("--series", type=click.Path(path_type=Path),
              help="A series' cast file: everyone in it is kept as written; the script's new "
                   "characters are added with voices and looks of their own.")
def cast_command(source: Path, output: Path, series: Path | None) -> None:
    """Read who each character in a SCRIPT is (age, gender, wardrobe, hair …) into a cast file.

    Facts keep the script lines they came from; what the script does not say stays
    unknown. Edit the file and render with ``--cast`` (or ``[project] cast``).
    """
    from aiprod_post.audio.tts import cast_voices

    from .cast import load_cast, merge_cast, read_cast, save_cast
    from .fountain import parse_file

    try:
        cast = read_cast(parse_file(source), voices=cast_voices)
        if series is not None:
            cast, added = merge_cast(load_cast(series, cast_voices), cast, cast_voices)
            if added:
                click.echo(f"new in {source}: {', '.join(added)}", err=True)
        save_cast(cast, output)
    except AiprodError as exc:
        _fail(exc)
    for name, ch in cast.characters.items():
        age = f"{ch.age} ({ch.age_band})" if ch.age is not None else "age unknown"
        click.echo(f"{name:<16} {ch.gender:<8} {age:<16} {ch.voice:<16} {ch.description}")


@main.group("lut")
def lut_group() -> None:
    """Inspect and convert LUT files (.cube, .3dl, .spi1d, .spi3d, .csp)."""


@lut_group.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def lut_info_command(path: Path, as_json: bool) -> None:
    """Print a LUT's kind, size, domain and title."""
    from aiprod_post.grading.lut import read_lut

    try:
        info = read_lut(path).info()
    except AiprodError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo("\n".join(f"{k}: {v}" for k, v in info.items()))


@lut_group.command("convert")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--dialect", type=click.Choice(["iridas", "resolve"]), default=None,
              help="Output .cube dialect (default: resolve when there is a shaper).")
def lut_convert_command(source: Path, output: Path, dialect: str | None) -> None:
    """Convert a LUT to .cube."""
    from aiprod_post.grading.lut import read_lut, write_cube

    try:
        if output.suffix.lower() != ".cube":
            raise AiprodError("can write .cube only", source=output)
        lut = read_lut(source)
        write_cube(lut, output, dialect or ("resolve" if lut.shaper is not None
                                            and lut.table is not None else "iridas"))
    except AiprodError as exc:
        _fail(exc)
    click.echo(f"{output}: {lut.kind}, size {lut.size}")


# what `grade` writes, from the delivery codec table: suffixes of movies and of images,
# and the codecs a suffix offers beside its default
_GRADE_SUFFIXES = {image: [s for s, c in GRADE_MASTERS.items() if s != ".tiff"
                           and next(iter(c.values())).image == image] for image in (False, True)}
_GRADE_CODECS = "For " + "; for ".join(
    f"{suffix}: {names[0]} (default) or {' or '.join(names[1:])}"
    for suffix, names in ((s, list(c)) for s, c in GRADE_MASTERS.items()) if len(names) > 1) + "."


@main.command("grade")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help=f"The suffix picks the master: {' '.join(_GRADE_SUFFIXES[False])}, or "
                   f"{' '.join(_GRADE_SUFFIXES[True])} images (shot_%06d.exr).")
@click.option("--look", required=True, help="A library look (warm_film, noir …) or a LUT file.")
@click.option("--strength", type=click.FloatRange(0.0, 1.0), default=1.0, show_default=True)
@click.option("--codec", default=None, help=_GRADE_CODECS)
@click.option("--input-space", default=None,
              help="The footage's colour space, as the pinned OpenColorIO config names it "
                   "(ARRI LogC4, S-Log3 S-Gamut3.Cine …); default: from the file's tags, "
                   "else Rec.709.")
@click.option("--cdl", "cdl_file", type=click.Path(path_type=Path), default=None,
              help="An ASC CDL (.cc, .ccc, .cdl) applied before the look.")
@click.option("--cdl-id", default=None,
              help="Which correction of a .ccc/.cdl holding several (its id).")
@click.option("--output-space", default=None,
              help="The delivery colour space, as the pinned OpenColorIO config names it "
                   "(sRGB - Display, Rec.2100-PQ - Display, Display P3 - Display, ACEScct "
                   "…); default: Rec.709 (Gamma 2.4 Rec.709 - Texture).")
def grade_command(source: Path, output: Path, look: str, strength: float, codec: str | None,
                  input_space: str | None, cdl_file: Path | None, cdl_id: str | None,
                  output_space: str | None) -> None:
    """Grade a video or a still with a look, keeping its audio where the container takes it.

    Sources above 8 bits, float images and camera log footage are graded in float32
    with no 8-bit step.
    """
    from aiprod_post.grading.cdl import cdl_for_shot
    from aiprod_post.grading.grade import grade_video

    try:
        cdl = cdl_for_shot(cdl_file, cdl_id or "") if cdl_file else None
        notes: list[str] = []
        written = grade_video(source, output, look, strength, codec=codec,
                              input_space=input_space, cdl=cdl, notes=notes,
                              output_space=output_space)
    except AiprodError as exc:
        _fail(exc)
    for note in notes:
        click.echo(f"note: {note}")
    click.echo(f"{written}: graded with {look} at {strength:g}")


@main.command("qa")
@click.argument("video", type=click.Path(path_type=Path))
def qa_command(video: Path) -> None:
    """Picture QA of a video as JSON: legal levels (EBU R 103), flashes (ITU-R BT.1702),
    black and frozen frames."""
    from aiprod_post.grading.qa import qa_video

    try:
        report = qa_video(video).as_dict()
    except AiprodError as exc:
        _fail(exc)
    click.echo(json.dumps(report, indent=2))


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--data", type=click.Path(path_type=Path), default=Path("aiprod-data"),
              show_default=True, help="Folder for the database and the jobs' files.")
@click.option("--db", "db_url", help="SQLAlchemy URL (default: SQLite in --data).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Renders at a time.")
@click.option("--webhook-allow", "webhook_allow", multiple=True, metavar="CIDR_OR_HOST",
              help="Let webhooks reach this network or host although it is loopback, "
                   "private, link-local or reserved (repeatable).")
@click.option("--public-docs", is_flag=True,
              help="Serve /docs and /openapi.json without a token.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Where every job's shots run (default: each job's project, else local).")
@click.option("--address", help="With --executor ray: the cluster every job's render joins "
                                "(HOST:PORT, ray://HOST:PORT or auto; default RAY_ADDRESS).")
def serve_command(host: str, port: int, data: Path, db_url: str | None, workers: int,
                  webhook_allow: tuple[str, ...], public_docs: bool, executor: str | None,
                  address: str | None) -> None:
    """Run the HTTP API (OpenAPI at /docs and /openapi.json, with a token)."""
    import os

    import uvicorn

    from .service.app import create_app
    from .service.webhooks import WebhookPolicy

    flags: list[str] = []
    try:
        WebhookPolicy.from_options(list(webhook_allow))
        if address and executor != "ray":
            raise AiprodError("an address is for --executor ray", where="--address")
        if executor == "ray":
            from .executors.ray import check_reachable

            address = address or os.environ.get("RAY_ADDRESS")
            if not address:  # a Ray per job would start and stop with each render
                raise AiprodError("serve --executor ray needs the cluster every job joins: "
                                  "--address or RAY_ADDRESS", where="--address")
            check_reachable(address)  # named now, not in every job's error
            flags = ["--executor", "ray", "--address", address]
        elif executor == "local":
            flags = ["--executor", "local"]
    except ValueError as exc:
        _fail(AiprodError(str(exc), where="serve"))
    except AiprodError as exc:
        _fail(exc)
    uvicorn.run(create_app(data, db_url, workers, webhook_allow=webhook_allow,
                           public_docs=public_docs, render_flags=tuple(flags)),
                host=host, port=port, log_level="warning")


@main.group("token")
def token_group() -> None:
    """API tokens for the HTTP service."""


@token_group.command("create")
@click.argument("name")
@click.option("--data", type=click.Path(path_type=Path), default=Path("aiprod-data"),
              show_default=True)
@click.option("--db", "db_url", help="SQLAlchemy URL (default: SQLite in --data).")
def token_create_command(name: str, data: Path, db_url: str | None) -> None:
    """Create a token: prints the bearer secret and the webhook signing secret once."""
    from .service.db import connect, create_token

    data.mkdir(parents=True, exist_ok=True)
    try:
        secret, hook = create_token(connect(db_url or f"sqlite:///{data / 'aiprod.db'}"), name)
    except ValueError as exc:
        _fail(AiprodError(str(exc), where="token"))
    click.echo(f"token: {secret}\nwebhook secret: {hook}")


@main.command("schema")
def schema_command() -> None:
    """Print the shot plan's JSON Schema."""
    click.echo(json.dumps(plan_json_schema(), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
