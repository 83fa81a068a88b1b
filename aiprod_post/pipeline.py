"""The render pipeline: script (or plan) to masters, timeline, stems, subtitles and a report.

Stages run in order: plan → speech → generation (keyframe-conditioned) with
lip-sync, shot matching and the look → mix → timeline and exports → masters →
picture QA → subtitles → report. Every
stage output is cached under ``OUTDIR/.cache`` by a hash of its inputs and
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

import base64
import contextlib
import errno
import functools
import hashlib
import html
import json
import math
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import unquote, urlsplit

import numpy as np

from . import __version__
from .checks import plan_problems
from .errors import AiprodError, MediaError, PlanError
from .executors import Executor, Lost, Unit, executor_for
from .executors.local import LocalExecutor
from .files import atomic_path
from .files import inside, sha256_file, write_atomic
from .files import place as _place
from .outlock import output_lock, remove_stale_temporaries
from .plan import (Scene, Shot, ShotPlan, format_frame_rate, is_plan_file, load_plan,
                   plan_to_json)
from .planner import PlannerSettings, plan_source
from .project import DELIVERY_PROFILES, Project
from .takes import (RenderRecord, load_takes, save_render_record, take_file, takes_report,
                    with_chosen_takes)

__all__ = ["RenderOptions", "RenderResult", "render", "EXIT_SHOTS_FAILED", "Reporter"]

EXIT_SHOTS_FAILED = 3
CACHE_VERSION = "1"
LINE_LEAD = 0.25  # seconds of picture before the first line of a shot
LINE_GAP = 0.25  # between lines in one shot
LINE_TAIL = 0.35  # after the last line


#: Errors of the machine, not of a shot: retrying or slating cannot help.
_MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}


def key_of(*parts: Any) -> str:
    """A stable hash of a stage's inputs and settings."""
    blob = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """SHA-256 of a file, remembered by path, size and modification time: the same look
    is asked for by every shot, and masters of gigabytes by the QA stage and the
    manifest, so each file is read once per process."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def _peak_rss_mib() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``path`` atomically unless it already holds ``data``; True if it was written."""
    if path.exists() and path.read_bytes() == data:
        return False
    write_atomic(path, data)
    return True


# ------------------------------------------------------------------ progress


class Reporter:
    """Progress for people (stderr) or machines (one JSON event per line on stdout)."""

    def __init__(self, quiet: bool = False, log_json: bool = False) -> None:
        self.quiet, self.log_json = quiet, log_json
        self.t0 = time.monotonic()
        self._stage: str | None = None
        self._stage_t0 = 0.0
        self.timings: dict[str, float] = {}
        #: the process's peak resident memory at the end of each stage
        self.peak_rss_mib: dict[str, float] = {}
        self.done: dict[str, int] = {}
        self.cached: dict[str, int] = {}
        self._tty = sys.stderr.isatty()
        #: a terminal is redrawn at most this often; a log (CI, a service) gets a line at
        #: most every LOG_EVERY seconds, and --log-json a progress event at most every second
        self._last_line = 0.0
        self._last_event = 0.0
        self._progress: tuple[int, int] = (0, 0)
        #: where events go (None: stdout as it is when each is printed)
        self.events: Any = None
        #: a heartbeat thread per stage says the stage is alive when nothing else has for
        #: HEARTBEAT seconds (a model loading, a long filter pass): its clock moves
        self._lock = threading.RLock()
        self._activity = time.monotonic()
        self._item = ""
        self._line = ""
        self._beat_stop: threading.Event | None = None
        self._beat: threading.Thread | None = None

    HEARTBEAT = 1.0

    REDRAW_EVERY = 0.25
    LOG_EVERY = 5.0

    def _may_print(self, final: bool = False) -> bool:
        now = time.monotonic()
        if final or now - self._last_line >= (self.REDRAW_EVERY if self._tty
                                              else self.LOG_EVERY):
            self._last_line = now
            return True
        return False

    def progress(self, item: str, done: int, total: int, unit: str = "frames") -> None:
        """Movement inside an item (frames of a master or of a long shot): rate and time
        left, so no stage sits still for more than a second."""
        stage = self._stage or "?"
        now = time.monotonic()
        if self._progress[1] != total or done < self._progress[0]:
            self._progress_t0 = now  # a new item: its own clock
        self._progress = (done, total)
        elapsed = now - getattr(self, "_progress_t0", now)
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (total - done) / rate if rate > 0 else None
        if self.log_json:
            if now - self._last_event >= 1.0 or done == total:
                self._last_event = now
                self._emit("progress", stage=stage, item=item, done=done, total=total,
                           unit=unit, rate=round(rate, 2),
                           eta=round(left, 1) if left is not None else None)
            return
        if self.quiet or not self._may_print(final=done == total and not self._tty):
            return
        line = (f"\r{stage:>10} {item:<10} {done}/{total} {unit}, {rate:5.1f} {unit}/s, "
                + (f"~{left:5.1f}s left" if left is not None else "starting"))
        self._write(line, item)

    def _write(self, line: str, item: str | None = None) -> None:
        """A progress line on stderr: redrawn in place on a terminal, a line in a log."""
        with self._lock:
            self._activity = time.monotonic()
            if item is not None:
                self._item, self._line = item, line.rstrip()
            sys.stderr.write(line if self._tty else line.lstrip("\r") + "\n")
            sys.stderr.flush()

    def _emit(self, event: str, **fields: Any) -> None:
        if self.log_json:
            with self._lock:
                self._activity = time.monotonic()
                if "item" in fields:
                    self._item = str(fields["item"])
                print(json.dumps({"event": event, "t": round(time.monotonic() - self.t0, 3),
                                  **fields}), file=self.events or sys.stdout, flush=True)

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(0.25):
            with self._lock:
                now = time.monotonic()
                quiet_for = now - self._activity
                if self._stage is None or quiet_for < self.HEARTBEAT:
                    continue
                elapsed = now - self._stage_t0
                if self.log_json:
                    self._emit("heartbeat", stage=self._stage, item=self._item,
                               elapsed=round(elapsed, 1))
                elif self._tty:
                    base = self._line or f"\r{self._stage:>10}"
                    sys.stderr.write(f"{base}  [{elapsed:5.0f}s in {self._stage}]")
                    sys.stderr.flush()
                    self._activity = now
                elif quiet_for >= self.LOG_EVERY:
                    self._write(f"{self._stage:>10} still working"
                                + (f" on {self._item}" if self._item else "")
                                + f", {elapsed:.0f}s in")

    def stage(self, name: str, total: int = 0) -> None:
        self.end_stage()
        self._stage, self._stage_t0 = name, time.monotonic()
        self._item, self._line, self._activity = "", "", time.monotonic()
        self.done.setdefault(name, 0)
        self.cached.setdefault(name, 0)
        self._emit("stage_start", stage=name, total=total)
        if not self.quiet or self.log_json:
            self._beat_stop = threading.Event()
            self._beat = threading.Thread(target=self._heartbeat, args=(self._beat_stop,),
                                          name="aiprod-progress", daemon=True)
            self._beat.start()

    def item(self, name: str, index: int, total: int, cached: bool, **fields: Any) -> None:
        stage = self._stage or "?"
        (self.cached if cached else self.done)[stage] = \
            (self.cached if cached else self.done).get(stage, 0) + 1
        self._emit("item", stage=stage, item=name, index=index, total=total, cached=cached,
                   **fields)
        if self.quiet or self.log_json or not self._may_print(final=index == total):
            return
        elapsed = time.monotonic() - self._stage_t0
        eta = elapsed / max(index, 1) * (total - index) if index else 0.0
        width = 24
        filled = int(width * index / max(total, 1))
        line = (f"\r{stage:>10} [{'#' * filled}{'.' * (width - filled)}] {index}/{total} "
                f"{name:<10} {elapsed:6.1f}s elapsed, ~{eta:5.1f}s left"
                + (" (cached)" if cached else ""))
        self._write(line, name)

    def note(self, message: str, **fields: Any) -> None:
        self._emit("note", message=message, **fields)
        if not self.quiet and not self.log_json:
            sys.stderr.write(("\n" if self._tty else "") + message + "\n")

    def stop_heartbeat(self) -> None:
        if self._beat_stop is not None:
            self._beat_stop.set()
            self._beat.join()  # type: ignore[union-attr]
            self._beat_stop = self._beat = None

    def end_stage(self) -> None:
        self.stop_heartbeat()
        if self._stage is None:
            return
        seconds = time.monotonic() - self._stage_t0
        self.timings[self._stage] = round(self.timings.get(self._stage, 0.0) + seconds, 3)
        self.peak_rss_mib[self._stage] = _peak_rss_mib()
        self._emit("stage_end", stage=self._stage, seconds=round(seconds, 3),
                   done=self.done.get(self._stage, 0), cached=self.cached.get(self._stage, 0))
        if not self.quiet and not self.log_json:
            if self._tty:
                sys.stderr.write("\n")
            sys.stderr.write(f"{self._stage:>10} done in {seconds:.1f}s "
                             f"({self.done.get(self._stage, 0)} made, "
                             f"{self.cached.get(self._stage, 0)} cached)\n")
        self._stage = None


# ------------------------------------------------------------------ options and results


@dataclass
class RenderOptions:
    engine: str | None = None
    profiles: list[str] | None = None
    project: Project = field(default_factory=Project)
    fps: Fraction | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    quiet: bool = False
    log_json: bool = False
    burn_in: bool | None = None
    #: a cast file (Cast.1 TOML); else the project's [project] cast, else read from the script
    cast: Path | None = None
    #: where shots run: ``local`` or ``ray`` (else the project's ``[run] executor``)
    executor: str | None = None
    #: the Ray cluster's address (else the project's ``[run] address``)
    address: str | None = None
    #: the stage cache, a folder or ``file://`` URL (else ``[run] cache``, else OUTDIR/.cache)
    cache: str | None = None


@dataclass
class RenderResult:
    outdir: Path
    masters: dict[str, Path]
    failed_shots: dict[str, str]
    report: dict

    @property
    def exit_code(self) -> int:
        return EXIT_SHOTS_FAILED if self.failed_shots else 0


@dataclass
class _Line:
    shot_id: str
    line_id: str
    speaker: str
    text: str
    parenthetical: str | None
    key: str
    wav: Path
    timings: dict
    offset: float = 0.0  # seconds from the shot's cut in
    start_sample: int = 0  # on the film, at 48 kHz


def cache_folder(location: str | None, root: Path, outdir: Path, where: str = "[run] cache"
                 ) -> Path:
    """Where the stage cache is: ``OUTDIR/.cache`` unless a folder or a ``file://`` URL is
    given (relative folders against the project's). Entries are named by their inputs'
    hash and written to a name of their own then renamed, so folders, renders and nodes
    can share one.

    >>> cache_folder("file:///srv/cache", Path("."), Path("out"))
    PosixPath('/srv/cache')
    >>> cache_folder(None, Path("."), Path("out"))
    PosixPath('out/.cache')
    """
    if not location:
        return outdir / ".cache"
    scheme, sep, _ = location.partition("://")
    if not sep:
        path = Path(location)
        return path if path.is_absolute() else root / path
    if scheme != "file":
        raise AiprodError(f"{scheme}:// is not a store the cache can use yet: give a folder "
                          "(a shared mount) or a file:// URL", where=where)
    parts = urlsplit(location)
    if parts.netloc not in ("", "localhost"):
        raise AiprodError(f"{location}: a file:// URL names a path on this machine "
                          "(file:///PATH)", where=where)
    return Path(unquote(parts.path))


# ------------------------------------------------------------------ one shot, as a unit of work


@dataclass(frozen=True)
class ShotJob:
    """One shot to generate, grade and encode into the shot cache: everything it needs
    except the keyframes of the shots it is conditioned on, which come with those shots'
    results (an executor runs it once they are done, here or on another machine)."""

    scene: Scene
    shot: Shot  # with its handles: duration = head + cut + tail
    head: int
    engine: tuple[str, dict, dict]  # name, settings, per-film extras (the cast's figures)
    width: int
    height: int
    fps: Fraction
    visemes: dict[str, list[str]]
    look: str
    look_file: str
    cdl: Any  # the shot's ASC CDL (grading.cdl.CDL) or None
    footage_space: str | None
    #: the shot cache key's parts before and after those known only once the shots it
    #: is conditioned on exist (whether it is matched, and to which keyframe)
    key_before: tuple
    key_middle: tuple
    key_after: tuple
    cast: dict[str, str]
    lines: tuple  # its dialogue lines (_Line), for an engine that lip-syncs to them
    #: (scene, shot id) of each shot it is conditioned on, in the plan's order
    conditioned_on: tuple[tuple[Scene, str], ...]
    cache: str
    #: the folder the render started in: relative paths of the project resolve against it
    workdir: str
    #: seconds to stop halfway through the shot (a fault drill: AIPROD_HOLD_SHOT)
    hold: float = 0.0
    #: an engine shaped per film (ltx: the frame counts it generates at, compiled): the
    #: film's shot lengths and size, for a worker's engine to be shaped as the runner's
    film: tuple | None = None


@dataclass(frozen=True)
class ShotResult:
    """What a shot's work left in the cache: its picture (or its slate), keyframes and
    sound; small enough to travel between machines."""

    shot_id: str
    key: str | None
    mov: str
    first: str | None  # keyframes (.npy), None for a failed shot
    last: str | None
    sound: str | None
    frames: int
    error: str | None = None
    notes: tuple[str, ...] = ()
    cached: bool = False


def conditioned_on(plan: ShotPlan) -> dict[str, list[str]]:
    """The shots each shot's keyframes come from: its scene's establishing shot (the
    scene's first: its keyframe is the reference every later shot of the scene is
    matched to), and the shot its plan conditioning names where that is the shot just
    before it (``previous-shot``) or the establishing shot: the keyframes a
    :class:`~aiprod_post.generation.engine.KeyframeStore` keeps for it. Everything
    else is independent."""
    out: dict[str, list[str]] = {}
    before = None
    for scene, shot in plan.shots():
        first = scene.shots[0].id
        needs = [first] if first != shot.id else []
        cond = shot.conditioning
        if cond.keyframe != "none" and cond.shot in (first, before) \
                and cond.shot not in (shot.id, *needs):
            needs.append(cond.shot)
        out[shot.id] = needs
        before = shot.id
    return out


def _held_shots() -> dict[str, float]:
    """``AIPROD_HOLD_SHOT=ID=SECONDS[,ID=SECONDS]``: shots that stop halfway for that long,
    so a fault drill can kill the process making them (the Ray executor's tests)."""
    out = {}
    for item in filter(None, os.environ.get("AIPROD_HOLD_SHOT", "").split(",")):
        sid, _, seconds = item.partition("=")
        try:
            out[sid.strip()] = float(seconds)
        except ValueError:
            raise AiprodError(f"expected ID=SECONDS, got {item!r}",
                              where="AIPROD_HOLD_SHOT") from None
    return out


#: this process's engine (the latest asked for): a worker that makes many shots of a
#: film loads its engine, and a GPU engine its model, once
_ENGINES: dict[str, Any] = {}
#: the film (shot lengths, size) the engine in _ENGINES was last shaped for
_SHAPED: dict[int, tuple] = {}


def _engine_for(name: str, settings: dict, extra: dict, fresh: bool = False):
    from aiprod_post.generation.engine import engine_by_name

    k = key_of("engine", name, settings, extra)
    if fresh or k not in _ENGINES:
        _ENGINES.clear()
        _SHAPED.clear()
        _ENGINES[k] = engine_by_name(name, **settings, **extra)
    return _ENGINES[k]


_GRADERS: dict[tuple, Any] = {}


def _grader(look_file: Path, cdl=None):
    from aiprod_post.grading.apply import FrameGrader
    from aiprod_post.grading.lut import read_lut

    if (look_file, cdl) not in _GRADERS:
        if cdl is not None:
            # a 64 MiB table per look and shot CDL: keep only the latest such one, so
            # memory does not grow with the number of graded shots
            for key in [k for k in _GRADERS if k[1] is not None]:
                del _GRADERS[key]
        if len(_GRADERS) >= 16:  # a long-lived worker sees many films' looks
            _GRADERS.clear()
        _GRADERS[look_file, cdl] = FrameGrader(read_lut(look_file), cdl=cdl)
    return _GRADERS[look_file, cdl]


_CONVERTERS: dict[str | None, Any] = {}


def _footage_converter(space: str | None):
    """The clips' footage to the working space (8-bit frames), before matching and the
    look; None for Rec.709 footage and the generating engines."""
    from aiprod_post.grading.colour import uint8_converter

    if space not in _CONVERTERS:
        try:
            _CONVERTERS[space] = uint8_converter(space)
        except AiprodError as exc:
            raise AiprodError(exc.message, where="[engine.clips] colourspace") from None
    return _CONVERTERS[space]


@contextlib.contextmanager
def _working_folder(folder: str) -> Iterator[None]:
    """Run in the folder the render started in (a worker elsewhere: the same path on the
    shared storage), back where it was after."""
    here = os.getcwd()
    if here == folder:
        yield
        return
    try:
        os.chdir(folder)
    except OSError:
        raise AiprodError("the render's folder is not on this machine at the same path "
                          f"({socket.gethostname()}): the project, cache and output must be "
                          "on storage every node reaches", source=folder) from None
    try:
        yield
    finally:
        os.chdir(here)


def _held(frames: Iterator[np.ndarray], at: int, seconds: float) -> Iterator[np.ndarray]:
    for i, frame in enumerate(frames):
        if i == at:
            time.sleep(seconds)
        yield frame


def make_shot(job: ShotJob, conditioned: dict[str, Any], characters: dict | None = None,
              progress: Callable[[str, int, int], None] | None = None) -> ShotResult:
    """Generate, grade and encode one shot into the cache (or find it there).

    ``conditioned`` holds the results of the shots in ``job.conditioned_on`` (a failed or
    lost one gives no keyframe); ``characters`` the reference image of each character.
    A shot that fails twice is replaced by a slate, outside the shot cache (a rerun tries
    it again); bad media and a full or read-only disk are raised.
    """
    from aiprod_post.editing.conform import PROFILES, encode_master, read_ahead
    from aiprod_post.generation.engine import Keyframe, KeyframeStore, RenderContext

    scene, shot, n, W, H, fps = job.scene, job.shot, job.shot.duration, job.width, \
        job.height, job.fps
    with _working_folder(job.workdir):
        # the keyframes a store that had seen the film so far would give it
        store = KeyframeStore(characters=dict(characters or {}))
        for dep_scene, dep_id in job.conditioned_on:
            done = conditioned.get(dep_id)
            if isinstance(done, ShotResult) and done.error is None:
                dep_shot = next(s for s in dep_scene.shots if s.id == dep_id)
                store.add_shot(dep_scene, dep_shot, {
                    "first": Keyframe(dep_id, 0, np.load(done.first), light=dep_scene.light),
                    "last": Keyframe(dep_id, done.frames - 1, np.load(done.last),
                                     light=dep_scene.light)})
        reference = store.establishing.get(scene.id)
        match = reference is not None and reference.shot_id != shot.id
        key = key_of("shot", *job.key_before, match, *job.key_middle,
                     _array_digest(reference.image) if match else None, *job.key_after)
        folder = Path(job.cache) / "shots"
        folder.mkdir(parents=True, exist_ok=True)
        mov, first, last, sound = (folder / f"{key}{s}" for s in
                                   (".mov", ".first.npy", ".last.npy", ".sound.wav"))
        if mov.exists() and first.exists() and last.exists():
            return ShotResult(shot.id, key, str(mov), str(first), str(last),
                              str(sound) if sound.exists() else None, n, cached=True)
        name, settings, extra = job.engine
        engine = _engine_for(name, settings, extra)
        if job.film is not None and _SHAPED.get(id(engine)) != job.film:
            # the same frame counts as the runner's engine chose for the film (they are in
            # the shot's key); compiled once per worker and film
            engine.warm_up(list(job.film[0]), job.film[1], job.film[2])
            _SHAPED[id(engine)] = job.film
        ctx = RenderContext(scene, W, H, fps, store.for_shot(scene, shot), job.visemes,
                            label=shot.id, look=job.look, cast=job.cast,
                            dialogue=_shot_dialogue(list(job.lines), n, fps, job.head)
                            if job.lines else None)
        error = None
        notes: list[str] = []
        grader = _grader(Path(job.look_file), job.cdl)
        to_working = _footage_converter(job.footage_space)
        for attempt in (1, 2):
            try:
                r = engine.render(shot, ctx)
                # three threads: the engine renders, matching and the grade run on
                # encode_master's prefetch thread, the encoder on this one
                frames = iter(r) if to_working is None else map(to_working, iter(r))
                if job.hold:
                    frames = _held(frames, n // 2, job.hold)
                graded = _graded(read_ahead(frames), grader, reference.image if match else None)
                encode_master(graded, n, fps, W, H, mov, PROFILES["prores"], None,
                              progress=(lambda done, total: progress(shot.id, done, total))
                              if progress else None)
                if r.audio is not None:  # sound made with the picture: FX
                    from aiprod_post.audio.io import resample, write_wav

                    write_wav(sound, resample(r.audio, r.audio_rate), 48000, "FLOAT")
                elif sound.exists():
                    sound.unlink()
                notes = list(r.notes)
                # keyframes in the working space too: they are later shots' references
                keep = to_working or (lambda image: image)
                for path, image in ((first, r.keyframes["first"].image),
                                    (last, r.keyframes["last"].image)):
                    # a name of its own: another node may be writing the same entry
                    with atomic_path(path, ".tmp.npy") as tmp:
                        np.save(tmp, keep(image))
                error = None
                break
            except MediaError:
                raise  # the user's media (a clip, a look) is bad input: exit 2, no slate
            except AiprodError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - one shot must not take all down
                if isinstance(exc, OSError) and exc.errno in _MACHINE_ERRNOS:
                    raise  # a full or read-only disk fails every shot: say so, once
                error = f"{type(exc).__name__}: {exc}"
        if error is None:
            return ShotResult(shot.id, key, str(mov), str(first), str(last),
                              str(sound) if sound.exists() else None, n, notes=tuple(notes))
        return ShotResult(shot.id, key, str(_slate(Path(job.cache), shot.id, n, W, H, fps,
                                                   error)), None, None, None, n, error=error)


def _slate(cache: Path, shot_id: str, n: int, W: int, H: int, fps: Fraction, error: str
           ) -> Path:
    """A failed shot's stand-in: a card that says so, for as long as the shot."""
    from aiprod_post.editing.conform import PROFILES, encode_master
    from aiprod_post.generation.animatic import title_card

    mov = cache / "slates" / f"{key_of('slate', shot_id, n, W, H, error)}.mov"
    mov.parent.mkdir(parents=True, exist_ok=True)
    card = title_card(f"SHOT {shot_id} FAILED - {error[:120]}", W, H)
    # a slate lives outside the shot cache, so a rerun tries the shot again
    encode_master(iter([card] * n), n, fps, W, H, mov, PROFILES["prores"], None)
    return mov


# ------------------------------------------------------------------ the runner


class _Render:
    def __init__(self, source: Path, outdir: Path, options: RenderOptions) -> None:
        self.source, self.outdir, self.o = source, outdir, options
        self.project = options.project
        # a --cache folder is where the command runs from, the project's beside the project
        self.cache = cache_folder(options.cache, Path("."), outdir, "--cache") \
            if options.cache else \
            cache_folder(options.project.run.cache, Path(options.project.root), outdir)
        self.r = Reporter(options.quiet, options.log_json)
        self.failed: dict[str, str] = {}
        self.report: dict[str, Any] = {"version": __version__}
        self.width = 1920
        self._cast = None
        #: shot id → (the sound an engine generated with it, 48 kHz, and its head handle)
        self.generated_sound: dict[str, tuple[Path, int]] = {}
        #: where the shots run (render() opens the one the options ask for)
        self.executor: Executor = LocalExecutor()
        #: shot id → its takes (takes.json): the chosen one is rendered, all are listed
        self.takes: dict = {}
        #: shot id → whether its picture came from the cache this run
        self.shot_cached: dict[str, bool] = {}
        #: shot id → the name of its picture's file in the cache (its inputs' hash)
        self.shot_files: dict[str, str] = {}

    def cached(self, stage: str, key: str, suffix: str) -> Path:
        p = self.cache / stage / f"{key}{suffix}"
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # ---- plan
    def plan(self) -> ShotPlan:
        self.r.stage("plan", 1)
        out = self.project.output
        if is_plan_file(self.source):
            if self.o.seed is not None:
                raise PlanError("--seed applies when planning a script; a plan's seeds are "
                                "in its shots (edit them, or `retake` a shot)",
                                source=self.source)
            plan = load_plan(self.source)
            changes: dict[str, Any] = {}
            if self.o.fps or out.fps:
                changes["fps"] = self.o.fps or out.fps
            if self.o.width or out.width:
                changes["width"] = self.o.width or out.width
            if self.o.height or out.height:
                changes["height"] = self.o.height or out.height
            plan = plan.model_copy(update=changes) if changes else plan
        else:
            settings = PlannerSettings(
                fps=self.o.fps or out.fps or Fraction(24),
                width=self.o.width or out.width or 1920,
                height=self.o.height or out.height or 1080,
                seed=self.o.seed or 0,
            )
            plan, warnings = plan_source(self.source, settings)
            for line, message in warnings:
                self.r.note(f"{self.source}:{line}: warning: {message}")
        problems = plan_problems(plan)
        if problems:
            where, message = problems[0]
            raise PlanError(message, source=self.source, where=where)
        self.width = plan.width
        marker = self.cached("plan", key_of("plan", plan_to_json(plan)), ".json")
        hit = marker.exists()
        if not hit:
            write_atomic(marker, plan_to_json(plan).encode())
        self.r.item("plan", 1, 1, cached=hit)
        return plan

    # ---- cast
    def cast_for(self, plan: ShotPlan):
        """The film's cast: a cast file's characters exactly as written (``--cast`` or
        ``[project] cast``), the script's facts for characters the file lacks (added with
        voices of their own, and reported), project ``[characters.X]`` keys over both."""
        if self._cast is not None:
            return self._cast
        from aiprod_post.audio.tts import cast_voices

        from .cast import Cast, CastCharacter, complete, load_cast, merge_cast, read_cast, save_cast
        from .fountain import parse_file

        script = self.source
        if self.source.suffix.lower() == ".json":
            # a plan names the script it came from: its facts, if it is there unchanged
            script = next((p for p in ([Path(plan.source), self.source.parent / plan.source]
                                       if plan.source else [])
                           if p.is_file() and plan.source_sha256 in (None, sha256_file(p))),
                          None)
        if script is not None:
            found = read_cast(parse_file(script), voices=cast_voices)
        else:
            found = complete(Cast(title=plan.title, characters={
                " ".join(c.name.split()).upper(): CastCharacter() for c in plan.cast}),
                cast_voices)
            if not (self.o.cast or self.project.project.cast):
                self.r.note(f"{self.source}: the plan's script is not beside it unchanged, so "
                            "nothing is known of its characters; give --cast")
        p = self.project.project.cast
        path = self.o.cast or (self.project.path(p) if p else None)
        added: list[str] = []
        fixed: set[str] = set()
        if path is not None:
            base = load_cast(path, cast_voices)
            # paths in a cast file are relative to the file
            base = base.model_copy(update={"characters": {k: ch.model_copy(update={
                f: str(Path(path).parent / v) for f in ("reference", "speaker_wav", "lora")
                if (v := getattr(ch, f)) and not Path(v).is_absolute()})
                for k, ch in base.characters.items()}})
            cast, added = merge_cast(base, found, cast_voices)
            fixed = set(base.characters)
            if added:
                self.r.note(f"{path}: new in this script, added with voices of their own: "
                            + ", ".join(added))
        else:
            cast = found
        chars = dict(cast.characters)
        for cname, ch in self.project.characters.items():
            key = " ".join(cname.split()).upper()
            if key not in chars:
                continue
            update = {f: getattr(ch, f) for f in ("voice", "pitch", "rate")
                      if getattr(ch, f) is not None}
            update.update({f: str(self.project.path(getattr(ch, f)))
                           for f in ("reference", "speaker_wav") if getattr(ch, f)})
            if update.get("voice"):
                fixed.add(key)
            chars[key] = chars[key].model_copy(update=update)
        # voices not fixed by a file are handed out again round any the project chose
        chars = {k: ch if k in fixed else ch.model_copy(update={"voice": None})
                 for k, ch in chars.items()}
        cast = complete(cast.model_copy(update={"characters": chars}), cast_voices)
        save_cast(cast, self.outdir / "cast.toml")
        self.report["cast"] = {
            "file": str(path) if path else None, "added": added,
            "characters": {k: {"description": ch.description, "gender": ch.gender,
                               "age": ch.age, "age_band": ch.age_band, "wardrobe": ch.wardrobe,
                               "voice": ch.voice, "pitch": ch.pitch, "rate": ch.rate,
                               "introduction": ch.introduction, "lines": ch.lines}
                           for k, ch in cast.characters.items()}}
        self._cast = cast
        return cast

    def _character(self, plan: ShotPlan, name: str):
        from .cast import CastCharacter

        return self.cast_for(plan).get(name) or CastCharacter()

    # ---- speech
    def speech(self, plan: ShotPlan) -> dict[str, list[_Line]]:
        from aiprod_post.audio.io import write_wav
        from aiprod_post.audio.tts import Voice, delivery_for, engine_by_name

        voices = {}
        for c in plan.cast:  # the cast gave every character a voice of their own
            ch = self._character(plan, c.name)
            language, _, variant = (ch.voice or "en").partition("+")
            voices[c.name] = Voice(language, variant, ch.pitch if ch.pitch is not None else 50,
                                   50, ch.rate if ch.rate is not None else 165,
                                   reference=ch.speaker_wav)
        self.report["voices"] = {n: v.name for n, v in voices.items()}
        a = self.project.audio
        if a.tts_engine == "coqui":
            engine = engine_by_name("coqui", model=self.project.path(a.tts_model)
                                    if a.tts_model else None, device=a.tts_device)
            engine.check()  # a missing or broken model is bad input for the whole run
            tts_id: Any = engine.identity
        else:
            engine, tts_id = engine_by_name("espeak"), "espeak"
        self.report["tts"] = {"engine": a.tts_engine, "identity": engine.identity
                              if a.tts_engine == "coqui" else None}
        lines = [(shot, ln) for _, shot in plan.shots() for ln in shot.dialogue]
        self.r.stage("speech", len(lines))
        out: dict[str, list[_Line]] = {}
        for i, (shot, ln) in enumerate(lines, 1):
            voice = voices.get(ln.speaker) or Voice()
            key = key_of("speech", tts_id, ln.text, ln.parenthetical, voice.__dict__,
                         _file_digest(Path(voice.reference)) if voice.reference else None)
            wav, meta = self.cached("speech", key, ".wav"), self.cached("speech", key, ".json")
            hit = wav.exists() and meta.exists()
            if not hit:
                s = engine.synthesize(ln.text, voice, delivery_for(ln.parenthetical))
                write_atomic(meta, json.dumps(s.timings()).encode())
                write_wav(wav, s.samples, s.sample_rate)
            timings = json.loads(meta.read_text())
            out.setdefault(shot.id, []).append(_Line(shot.id, ln.id, ln.speaker, ln.text,
                                                     ln.parenthetical, key, wav, timings))
            self.r.item(ln.id, i, len(lines), cached=hit)
        return out

    # ---- timing: speech can lengthen a shot
    def fit_dialogue(self, plan: ShotPlan, lines: dict[str, list[_Line]]) -> ShotPlan:
        fps = plan.fps
        scenes = []
        lengthened = {}
        for scene in plan.scenes:
            shots = []
            for shot in scene.shots:
                t = LINE_LEAD
                prev_dual = False
                last_start = t
                for ln, dl in zip(lines.get(shot.id, []), shot.dialogue):
                    start = last_start if (dl.dual and prev_dual) else t
                    ln.offset = start
                    t = max(t, start + ln.timings["duration"] + LINE_GAP)
                    last_start, prev_dual = start, dl.dual
                needed = math.ceil((t - LINE_GAP + LINE_TAIL) * fps) if shot.id in lines else 0
                if needed > shot.duration:
                    lengthened[shot.id] = (shot.duration, needed)
                    shot = shot.model_copy(update={"duration": needed})
                shots.append(shot)
            scenes.append(scene.model_copy(update={"shots": shots}))
        if lengthened:
            self.r.note(f"speech lengthened {len(lengthened)} shots: " + ", ".join(
                f"{k} {a}→{b}" for k, (a, b) in lengthened.items()))
        self.report["lengthened"] = {k: list(v) for k, v in lengthened.items()}
        edited = plan.model_copy(update={"scenes": scenes})
        start = 0
        for _, shot in edited.shots():
            for ln in lines.get(shot.id, []):
                ln.start_sample = int(round((Fraction(start) / fps + Fraction(ln.offset)
                                             .limit_denominator(48000)) * 48000))
            start += shot.duration
        return edited

    # ---- generation
    def generation(self, plan: ShotPlan, lines: dict[str, list[_Line]]) -> dict[str, Any]:
        from aiprod_post.audio.visemes import MouthCue, shapes_per_frame
        from aiprod_post.editing.timeline import ShotMedia, handles_for
        from aiprod_post.grading.looks import default_look, look_path

        name = self.o.engine or self.project.engine.name
        settings: dict[str, Any] = {}
        if name == "animatic":
            settings["burn_in"] = self.o.burn_in if self.o.burn_in is not None \
                else self.project.engine.burn_in
        elif name == "clips":
            c = self.project.engine.clips
            settings = {"media": {k: str(self.project.path(v)) for k, v in c.media.items()},
                        "folder": str(self.project.path(c.folder)) if c.folder else None,
                        "fit": c.fit, "fill": c.fill}
        elif name == "ltx":
            lx = self.project.engine.ltx.model_dump()
            for key in ("model", "config", "text_encoder", "tokenizer", "upsampler"):
                if lx.get(key):
                    lx[key] = str(self.project.path(lx[key]))
            settings = lx
        elif name == "ltx2":
            lx = self.project.engine.ltx2.model_dump()
            for key in ("model", "control_lora", "upsampler"):
                if lx.get(key):
                    lx[key] = str(self.project.path(lx[key]))
            lx["camera_loras"] = {k: str(self.project.path(v))
                                  for k, v in lx["camera_loras"].items()}
            settings = lx
        people = {c.name: self._character(plan, c.name) for c in plan.cast}
        # the cast's figures are per-shot inputs (in each shot's key), not engine settings
        extra = {"figures": {n: ch.figure.model_dump() for n, ch in people.items()}} \
            if name in ("animatic", "ltx2") else {}
        engine = _engine_for(name, settings, extra, fresh=True)
        if hasattr(engine, "check"):
            engine.check()  # a missing model is bad input for the run, not a failed shot
        _footage_converter(self._footage_space(name))  # an unknown colourspace: bad input
        handles = handles_for(plan)
        sheets = self._sheets(people)
        characters: dict[str, np.ndarray] = {}  # the reference image each one is given
        references = {}  # character → digest of the reference image the engine is given
        for cname, ch in people.items():
            if ch.reference:
                characters[cname] = _read_image(Path(ch.reference),
                                                f"[characters.{cname}] reference")
            elif name in ("ltx", "ltx2"):  # no reference: the front view of the cast's sheet
                characters[cname] = sheets[cname]
            if cname in characters:
                references[cname] = _array_digest(characters[cname])
        who = {n: [ch.description, ch.figure.model_dump()] for n, ch in people.items()}
        figure_samples: dict[str, list] = {}
        shots = plan.shots()
        if hasattr(engine, "warm_up"):
            # the film's shapes compiled before its first shot, timed as a stage of their own
            self.r.stage("compile", 1)
            film = (tuple(s.duration + sum(handles[s.id]) for _, s in shots), plan.width,
                    plan.height)
            self.report["compile"] = engine.warm_up(list(film[0]), film[1], film[2])
            _SHAPED[id(engine)] = film
            self.r.item("compile", 1, 1, cached=False)
        self.r.stage("generation", len(shots))
        W, H, fps = plan.width, plan.height, plan.fps
        needs = conditioned_on(plan)
        scene_of = {shot.id: scene for scene, shot in shots}
        held = _held_shots()
        # a GPU engine's shot takes a GPU of the cluster; the others a CPU
        gpus = 1.0 if str(settings.get("device", "")).startswith("cuda") else 0.0
        units: list[Unit] = []
        for scene, shot in shots:
            head, tail = handles[shot.id]
            n = shot.duration + head + tail
            longer = shot.model_copy(update={"duration": n})
            visemes: dict[str, list[str]] = {}
            for ln in lines.get(shot.id, []):
                cues = [MouthCue(c["start"], c["end"], c["value"])
                        for c in _mouth_cues(ln.timings, fps)]
                track = shapes_per_frame(cues, n, fps, offset=head / fps + ln.offset)
                old = visemes.get(ln.speaker, ["X"] * n)
                visemes[ln.speaker] = [b if b != "X" else a for a, b in zip(old, track)]
            look = (self.project.looks.shot.get(shot.id) or shot.look or (
                # a title card is graphics on black: the scene's grade is not for it
                "neutral_rec709" if shot.framing.value == "title" else None)
                or self.project.looks.scene.get(scene.id) or scene.look
                or default_look(scene.light))
            look_file = look_path(look, Path(self.project.root))
            cdl = self._cdl(shot.id)  # the shot's ASC CDL, before the look
            speaks = name == "ltx2" and shot.id in lines  # ltx2 lip-syncs to the lines
            job = ShotJob(
                scene=scene, shot=longer, head=head, engine=(name, settings, extra), width=W,
                height=H, fps=fps, visemes=visemes, look=look, look_file=str(look_file),
                cdl=cdl, footage_space=self._footage_space(name),
                key_before=(name, settings, {c: who.get(c) for c in shot.characters},
                            longer.model_dump(mode="json"),
                            scene.model_dump(mode="json", exclude={"shots"}), W, H, str(fps),
                            visemes, _file_digest(look_file)),
                key_middle=(cdl.to_metadata() if cdl else None, self._footage_space(name)),
                key_after=({c: references[c] for c in shot.characters if c in references},
                           # the frame counts it is generated at (ltx: the film's buckets)
                           *([engine.lengths_for(n)] if hasattr(engine, "lengths_for")
                             else []),
                           # ltx2 lip-syncs to the lines themselves, not only their timing; and
                           # its weights and LoRAs are known by hash: a new file at the same
                           # path makes the shot again
                           *([[(ln.key, ln.offset) for ln in lines.get(shot.id, [])],
                              _weights_key(getattr(engine, "identity", None))]
                             if name == "ltx2" else [])),
                cast={c: people[c].description for c in shot.characters if c in people},
                lines=tuple(lines[shot.id]) if speaks else (),
                conditioned_on=tuple((scene_of[s], s) for s in needs[shot.id]),
                cache=str(self.cache), workdir=os.getcwd(), hold=held.get(shot.id, 0.0),
                film=_SHAPED.get(id(engine)))
            units.append(Unit(shot.id, job, after=tuple(needs[shot.id]), gpus=gpus))
        executor = self.executor
        work = functools.partial(make_shot, progress=self.r.progress) \
            if executor.in_process else make_shot
        done: dict[str, ShotResult] = {}
        self.report["executor"] = executor.describe()
        placements = self.report.setdefault("placement", {})
        with contextlib.closing(executor.run(work, units, characters)) as running:
            for i, (unit, result, where) in enumerate(running, 1):
                job = unit.payload
                if isinstance(result, Lost):  # its worker died on every try: slated here
                    error = f"the worker making it died on every try ({result.reason})"
                    result = ShotResult(unit.id, None, str(_slate(
                        self.cache, unit.id, job.shot.duration, W, H, fps, error)), None, None,
                        None, job.shot.duration, error=error)
                done[unit.id] = result
                placements[unit.id] = {"node": where.node, "host": where.host,
                                       "worker": where.worker, "waited_s": where.waited,
                                       "seconds": where.seconds}
                if result.error is not None:
                    self.failed[unit.id] = result.error
                    self.r.note(f"shot {unit.id} failed twice, replaced by a slate: "
                                f"{result.error}")
                for note in result.notes:
                    self.r.note(note)
                    self.report.setdefault("notes", {})[unit.id] = note
                self.r.item(unit.id, i, len(units), cached=result.cached)
        media: dict[str, ShotMedia] = {}
        for unit in units:  # in the plan's order
            job, result, shot, scene = unit.payload, done[unit.id], unit.payload.shot, \
                unit.payload.scene
            n, head, look, mov, hit = shot.duration, job.head, job.look, Path(result.mov), \
                result.cached
            if result.error is None and result.sound is not None:
                self.generated_sound[shot.id] = (Path(result.sound), head)
            if result.error is None and hasattr(engine, "figure_masks"):
                self._sample_figures(engine, shot, scene, np.load(result.first), plan,
                                     figure_samples)
            dst = inside(self.outdir, "shots", f"{shot.id}.mov")
            _place(mov, dst)
            chosen = self.takes[shot.id].chosen if shot.id in self.takes else 1
            if shot.id in self.takes:  # kept beside the other takes as shots/ID_tN.mov
                _place(mov, take_file(self.outdir, shot.id, chosen))
            takes = takes_report(self.outdir, self.takes).get(shot.id, {}).get("takes", [])
            media[shot.id] = ShotMedia(dst, n, head, look=look, engine=name, take=chosen,
                                       takes=[{**t, "path": self.outdir / t["file"]}
                                              for t in takes])
            self.shot_cached[shot.id] = hit
            self.shot_files[shot.id] = mov.name
        if figure_samples:
            from aiprod_post.generation.coherence import identity_scores

            self.report["identity"] = identity_scores(figure_samples)
        self.report["engine"] = {"name": name, "settings": settings,
                                 "identity": getattr(engine, "identity", None)}
        return media

    def _sheets(self, people: dict) -> dict[str, np.ndarray]:
        """Each character's turnaround sheet, drawn by the animatic from the cast, written to
        ``cast/NAME.png``; returns the front views (the default reference image)."""
        import cv2

        from aiprod_post.generation.animatic import render_turnaround

        fronts = {}
        for cname, ch in people.items():
            figure = ch.figure.model_dump()
            size = 384
            png = self.cached("cast", key_of("sheet", cname, figure, size), ".png")
            if not png.exists():
                sheet = render_turnaround(cname, figure, size)
                ok, data = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
                write_atomic(png, data.tobytes())
            _place(png, inside(self.outdir / "cast", f"{cname}.png"))
            sheet = cv2.imread(str(png), cv2.IMREAD_COLOR)[..., ::-1]
            fronts[cname] = np.ascontiguousarray(sheet[:, :size])
        return fronts

    def _sample_figures(self, engine, shot, scene, image: np.ndarray, plan: ShotPlan,
                        samples: dict[str, list]) -> None:
        """Colour histograms of each character's figure in a shot's first frame, for the
        identity check (the same person should match themselves from shot to shot)."""
        from aiprod_post.generation.coherence import figure_histogram
        from aiprod_post.generation.engine import RenderContext

        masks = engine.figure_masks(shot, RenderContext(scene, plan.width, plan.height, plan.fps))
        for cname, mask in masks.items():
            if mask.sum() >= 64:  # a figure mostly out of frame says nothing
                samples.setdefault(cname, []).append((shot.id, figure_histogram(image, mask)))

    def _cdl(self, shot_id: str):
        """The shot's ASC CDL from ``[looks] cdl``, or None."""
        from aiprod_post.grading.cdl import cdl_for_shot

        name = self.project.looks.cdl.get(shot_id)
        return cdl_for_shot(self.project.path(name), shot_id) if name else None

    def _footage_space(self, engine: str) -> str | None:
        return self.project.engine.clips.colourspace if engine == "clips" else None

    # ---- picture QA of the masters
    def qa(self, masters: dict[str, Path]) -> None:
        """Picture QA. The masters stage measures it on the frames it sends to the first
        master it encodes frame by frame (no second decode); only where every master
        copied frames (a ProRes-only run) is a master decoded here for it."""
        from aiprod_post.grading.qa import qa_video

        self.r.stage("qa", 1)
        results = self.report.setdefault("qa", {})
        hit = bool(results)
        if not results and masters:
            name, path = next(iter(masters.items()))
            key = key_of("qa", _file_digest(path))
            cached = self.cached("qa", key, ".json")
            hit = cached.exists()
            if not hit:
                # levels on a pixel sample (every 2nd to 4th pixel each way) keep QA quick
                step = max(2, min(4, self.width // 480))
                qa = dict(qa_video(path, step=step, levels_every=6).as_dict(),
                          measured_on=f"{path.name}, decoded")
                write_atomic(cached, json.dumps(qa).encode())
            results[name] = json.loads(cached.read_text())
        self.r.item("qa", 1, 1, cached=hit)

    # ---- mix
    def mix(self, plan: ShotPlan, lines: dict[str, list[_Line]], profiles: list[str]
            ) -> dict[str, Any]:
        import soundfile

        from aiprod_post.audio.io import read_audio, resample, write_wav
        from aiprod_post.audio.loudness import measure_source
        from aiprod_post.audio.mix import Bed, DialogueClip, MixSettings, procedural_bed, render_stems
        from aiprod_post.audio.normalize import Target, normalize_source
        from aiprod_post.audio.stream import FileSource, SumSource, WavWriter

        a = self.project.audio
        fps = plan.fps
        total = int(round(Fraction(plan.duration) * 48000 / fps))
        all_lines = [ln for shot_lines in lines.values() for ln in shot_lines]
        beds: list[dict] = []
        start = 0
        for scene in plan.scenes:
            frames = sum(s.duration for s in scene.shots)
            beds.append({"scene": scene.id, "start": int(round(Fraction(start) * 48000 / fps)),
                         "end": int(round(Fraction(start + frames) * 48000 / fps)),
                         "light": scene.light, "exterior": scene.int_ext in ("EXT", "EST"),
                         "ambience": a.ambience.get(scene.id)})
            start += frames
        settings = MixSettings(duck_db=a.duck_db, music_db=a.music_db, ambience_db=a.ambience_db)
        sounds: list[tuple[str, int, int, int, Path]] = []  # shot, start, end, head, file
        start = 0
        for _, shot in plan.shots():
            end = start + shot.duration
            if shot.id in self.generated_sound:
                path, head = self.generated_sound[shot.id]
                sounds.append((shot.id, int(round(Fraction(start) * 48000 / fps)),
                               int(round(Fraction(end) * 48000 / fps)),
                               int(round(Fraction(head) * 48000 / fps)), path))
            start = end
        key = key_of("mix", [(s_id, a0, a1, h, _file_digest(f)) for s_id, a0, a1, h, f in sounds],
                     [(ln.key, ln.start_sample) for ln in all_lines], beds, a.music,
                     plan.seed, total, settings.__dict__,
                     [_file_digest(self.project.path(p)) for p in
                      [a.music, *a.ambience.values()] if p])
        stem_paths = {s: self.cached("mix", f"{key}_{s}", ".wav") for s in ("DX", "MX", "FX")}
        self.r.stage("mix", 1 + len(profiles))
        hit = all(p.exists() for p in stem_paths.values())
        if not hit:
            # each line is read when the mixer reaches it (memory stays flat with the film)
            clips = [DialogueClip(ln.start_sample,
                                  lambda ln=ln: read_audio(ln.wav, "float32")[0][:, 0],
                                  name=ln.line_id, length=soundfile.info(str(ln.wav)).frames)
                     for ln in all_lines]

            def user_bed(path: str) -> np.ndarray:
                x, rate = read_audio(self.project.path(path))
                return resample(x, rate).astype(np.float32)

            music_src = user_bed(a.music) if a.music else None
            music, ambience = [], []
            for b in beds:  # each scene's beds are made when mixed (memory stays flat)
                seconds = (b["end"] - b["start"]) / 48000
                m = music_src if music_src is not None else (
                    lambda b=b, seconds=seconds: procedural_bed(
                        "music", min(seconds, 32.0) + 1, plan.seed + _seed(b["scene"]),
                        b["light"]))
                music.append(Bed(b["start"], b["end"], m, name=f"music {b['scene']}"))
                amb = (lambda b=b: user_bed(b["ambience"])) if b["ambience"] else (
                    lambda b=b, seconds=seconds: procedural_bed(
                        "ambience", min(seconds, 20.0) + 1, plan.seed + 7 + _seed(b["scene"]),
                        b["light"], exterior=b["exterior"]))
                ambience.append(Bed(b["start"], b["end"], amb, name=f"ambience {b['scene']}"))
            for s_id, a0, a1, h, f in sounds:  # the engine's sound for its shot, on FX
                ambience.append(Bed(a0, a1, lambda f=f, h=h, n=a1 - a0: read_audio(
                    f, "float32")[0][h:h + n], name=f"sound {s_id}"))
            with WavWriter(stem_paths["DX"], 2) as dx, WavWriter(stem_paths["MX"], 2) as mx, \
                    WavWriter(stem_paths["FX"], 2) as fx:
                render_stems(clips, music, ambience, total,
                             {"DX": _Watched(dx, total, "stems", self.r), "MX": mx, "FX": fx},
                             settings)
        self.r.item("stems", 1, 1 + len(profiles), cached=hit)
        audio_dir = self.outdir / "audio"
        for s, p in stem_paths.items():
            _place(p, audio_dir / f"{s}.wav")
        mixes: dict[str, Path] = {}
        loud: dict[str, dict] = {}
        for i, name in enumerate(profiles, 2):
            prof = DELIVERY_PROFILES[name]
            mkey = key_of("mixdown", key, prof.loudness, prof.true_peak)
            path = self.cached("mix", mkey, ".wav")
            info = self.cached("mix", mkey, ".json")
            hit = path.exists() and info.exists()
            if not hit:
                # the stems' sum, normalised and written a block at a time
                stems_sum = SumSource([FileSource(stem_paths[s]) for s in ("DX", "MX", "FX")])
                try:
                    with WavWriter(path, 2) as out:
                        _after, warnings = normalize_source(
                            _Watched(stems_sum, stems_sum.frames, f"mix {name}", self.r),
                            48000, Target(name, prof.loudness, prof.true_peak),
                            _Watched(out, stems_sum.frames, f"mix {name}", self.r))
                finally:
                    stems_sum.close()
                written = FileSource(path)
                try:  # measured again, from the file written
                    check = measure_source(_Watched(written, written.frames,
                                                    f"check {name}", self.r), written.rate)
                finally:
                    written.close()
                write_atomic(info, json.dumps({**check.as_dict(), "warnings": warnings}).encode())
            loud[name] = {"target": prof.loudness, "ceiling": prof.true_peak,
                          **json.loads(info.read_text())}
            _place(path, audio_dir / f"mix_{name}.wav")
            mixes[name] = audio_dir / f"mix_{name}.wav"
            self.r.item(f"mix {name}", i, 1 + len(profiles), cached=hit)
        lines_dir = audio_dir / "lines"
        for ln in all_lines:
            _place(ln.wav, inside(lines_dir, f"{ln.line_id}.wav"))
        # per-shot sync sound for editors: the dialogue stem over each shot's cut
        dx: FileSource | None = None
        start = 0
        for _, shot in plan.shots():
            a0 = int(round(Fraction(start) * 48000 / fps))
            a1 = int(round(Fraction(start + shot.duration) * 48000 / fps))
            start += shot.duration
            skey = key_of("shotwav", key, a0, a1)
            cached = self.cached("mix", skey, ".wav")
            if not cached.exists():
                if dx is None:
                    dx = FileSource(stem_paths["DX"])
                write_wav(cached, dx.read(a0, a1))
            _place(cached, inside(self.outdir, "shots", f"{shot.id}.wav"))
        if dx is not None:
            dx.close()
        self.report["loudness"] = loud
        return {"mixes": mixes, "stems": {s: audio_dir / f"{s}.wav" for s in stem_paths},
                "lines_dir": lines_dir}

    # ---- timeline and exports
    def timeline(self, plan: ShotPlan, media, lines, mix, profiles: list[str]):
        import opentimelineio as otio

        from aiprod_post.editing.export import FORMATS, export_timeline
        from aiprod_post.editing.timeline import LineMedia, TimelineMedia, build_timeline

        self.r.stage("timeline", 1)
        line_media = [LineMedia(ln.line_id, ln.speaker,
                                inside(mix["lines_dir"], f"{ln.line_id}.wav"), ln.start_sample,
                                int(round(ln.timings["duration"] * 48000)), ln.text)
                      for shot_lines in lines.values() for ln in shot_lines]
        main_mix = mix["mixes"].get("master") or next(iter(mix["mixes"].values()))
        tl = build_timeline(plan, TimelineMedia(media, line_media, mix["stems"]["MX"],
                                                mix["stems"]["FX"], main_mix))
        folder = self.outdir / "timeline"
        folder.mkdir(parents=True, exist_ok=True)
        stem = _slug(plan.title)
        ccc = self._carry_cdls(plan, tl, folder / f"{stem}.ccc")
        _write_if_changed(folder / "plan.json", plan_to_json(plan).encode())
        otio_path = folder / f"{stem}.otio"
        text = otio.adapters.write_to_string(tl, "otio_json").encode()
        changed = _write_if_changed(otio_path, text)
        written = [otio_path, ccc]
        if any(DELIVERY_PROFILES[p].exports for p in profiles):
            # .otioz is left to `aiprod-post export`: it would copy every shot's media again
            for fmt in ("fcp7", "fcpxml", "edl", "aaf"):
                target = folder / f"{stem}{FORMATS[fmt][1]}"
                if target.exists() and not changed:
                    written.append(target)
                    continue
                try:
                    written.append(export_timeline(tl, fmt, target))
                except AiprodError as exc:
                    self.r.note(f"timeline export {fmt} failed: {exc}")
        self.r.item("timeline", 1, 1, cached=not changed)
        self.report["timeline"] = [str(p.relative_to(self.outdir)) for p in written]
        return tl, otio_path

    def _carry_cdls(self, plan: ShotPlan, tl, path: Path) -> Path:
        """Each clip's ASC CDL in its metadata (``aiprod.cdl``: id, slope, offset, power,
        sat) for the exports, and a .ccc of every shot (identity where none is given) for
        the colourist."""
        from aiprod_post.grading.cdl import CDL, cdl_xml

        shots = [s.id for _, s in plan.shots()]
        unknown = sorted(set(self.project.looks.cdl) - set(shots))
        if unknown:
            raise AiprodError(f"no shot {', '.join(unknown)} in the plan",
                              where="[looks] cdl")
        cdls = {sid: self._cdl(sid) or CDL(sid) for sid in shots}
        for track in tl.video_tracks():
            for clip in track.find_clips():
                cdl = cdls.get(clip.name)  # a shot's clip is named by its id
                if cdl is not None:
                    clip.metadata.setdefault("aiprod_post", {})["cdl"] = cdl.to_metadata()
        # a shot's correction carries its shot's id in the collection, whatever its file says
        _write_if_changed(path, cdl_xml([CDL(sid, c.slope, c.offset, c.power, c.sat,
                                             c.description) for sid, c in cdls.items()]).encode())
        return path

    # ---- masters
    def masters(self, plan: ShotPlan, tl, otio_path: Path, mix, profiles: list[str]
                ) -> dict[str, Path]:
        import opentimelineio as otio

        from aiprod_post.editing.conform import PROFILES, conform, verify_master
        from aiprod_post.grading.qa import QAMeter

        self.r.stage("masters", len(profiles))
        out: dict[str, Path] = {}
        picture = key_of("picture", otio.adapters.write_to_string(tl, "otio_json"))
        watched = False  # picture QA rides along the first master encoded frame by frame
        step = max(2, min(4, self.width // 480))
        for i, name in enumerate(profiles, 1):
            prof = DELIVERY_PROFILES[name]
            codec = PROFILES[prof.video]
            audio = mix["mixes"][name]
            burn = self.project.output.burn_in_subtitles and prof.video == "h264"
            cues = self.cues if burn else None
            # the shots' pictures by their cache names: a shot made again under the same
            # timeline (another look file's contents, the cast, burn-in) is a new master
            key = key_of("master", picture, sorted(self.shot_files.items()),
                         _file_digest(audio), prof.video,
                         [c.__dict__ for c in cues] if cues else None)
            cached = self.cached("masters", key, codec.suffix)
            qa_file = self.cached("qa", key_of("qa-encoded", key), ".json")
            hit = cached.exists()
            encodes_all = prof.video != "prores" or bool(cues)
            meter = None
            if encodes_all and not watched and not (hit and qa_file.exists()):
                meter = QAMeter(plan.fps, 10 if "10" in codec.pix_fmt else 8)
                counter = iter(range(1 << 62))

                def watch(frame, meter=meter, counter=counter):
                    meter.add_av(frame, step=step, levels=next(counter) % 6 == 0)
                hit = False  # the picture QA needs the frames: encode again
            if not hit:
                conform(tl, cached, prof.video, audio=audio, base=otio_path.parent,
                        subtitles=cues, watch=watch if meter else None,
                        progress=lambda done, total, name=name: self.r.progress(
                            name, done, total))
            if meter is not None:
                qa = dict(meter.result().as_dict(),
                          measured_on=f"{name} master, every frame as sent to its encoder")
                write_atomic(qa_file, json.dumps(qa).encode())
            if encodes_all and not watched:
                self.report.setdefault("qa", {})[name] = json.loads(qa_file.read_text())
                watched = True
            dst = inside(self.outdir, "masters", f"{_slug(plan.title)}_{name}{codec.suffix}")
            _place(cached, dst)
            # held to its profile by probe: frames, GOP and keyframes, level, tags, VBV
            self.report.setdefault("master_checks", {})[name] = verify_master(dst, tl, prof.video)
            out[name] = dst
            self.r.item(name, i, len(profiles), cached=hit)
        return out

    # ---- subtitles
    def subtitles(self, plan: ShotPlan, lines: dict[str, list[_Line]]) -> None:
        from aiprod_post.editing.subtitles import SpokenLine, subtitle_cues, to_srt, to_webvtt

        self.r.stage("subtitles", 1)
        spoken = [SpokenLine(ln.start_sample / 48000, ln.text,
                             [(w["text"], w["start"], w["end"]) for w in ln.timings["words"]],
                             ln.speaker)
                  for shot_lines in lines.values() for ln in shot_lines]
        cues = subtitle_cues(spoken)
        self.cues = cues
        folder = self.outdir / "subtitles"
        stem = _slug(plan.title)
        changed = _write_if_changed(folder / f"{stem}.srt", to_srt(cues).encode())
        changed |= _write_if_changed(folder / f"{stem}.vtt", to_webvtt(cues).encode())
        self.report["subtitles"] = {"cues": len(cues)}
        self.r.item("subtitles", 1, 1, cached=not changed)

    # ---- takes
    def chosen_takes(self, plan: ShotPlan) -> ShotPlan:
        """The plan with each retaken shot's chosen take (``takes.json`` in the folder)."""
        self.takes = load_takes(self.outdir)
        plan, gone = with_chosen_takes(plan, self.takes)
        if gone:
            self.r.note(f"{self.outdir / 'takes.json'}: takes of shots this plan does not "
                        f"have are left aside: {', '.join(gone)}")
        return plan

    def record(self) -> RenderRecord:
        """How this render was made, for a rerun of one shot (paths made absolute)."""
        o = self.o
        return RenderRecord(
            source=str(self.source.resolve()), source_sha256=sha256_file(self.source),
            engine=o.engine, profiles=o.profiles,
            fps=format_frame_rate(o.fps) if o.fps else None, width=o.width, height=o.height,
            seed=o.seed, burn_in=o.burn_in, cast=str(Path(o.cast).resolve()) if o.cast else None,
            executor=o.executor, address=o.address,
            # a --cache folder from where the command ran; a URL is absolute already
            cache=o.cache if not o.cache or "://" in o.cache else str(Path(o.cache).resolve()),
            project=self.project.model_dump(mode="json"),
            project_root=str(Path(self.project.root).resolve()))

    # ---- report
    def record_history(self, plan: ShotPlan, profiles: list[str]) -> None:
        """This render's stage rates, for later estimates on this machine."""
        from .estimate import record_render, work_of

        video = {p: DELIVERY_PROFILES[p].video for p in profiles}
        record_render(work_of(plan, profiles, video=video),
                      self.report.get("engine", {}).get("name", "animatic"),
                      self.r.timings, self.r.done, self.r.cached)

    def _charts(self, plan: ShotPlan) -> dict[str, str]:
        """Loudness over time per delivery and per stem, the waveform by shot, stage times."""
        from .charts import report_charts

        audio = self.outdir / "audio"
        mixes = {name: _curve_of(audio / f"mix_{name}.wav")
                 for name in self.report.get("loudness", {})
                 if (audio / f"mix_{name}.wav").is_file()}
        stems = {s: _curve_of(audio / f"{s}.wav") for s in ("DX", "MX", "FX")
                 if (audio / f"{s}.wav").is_file()}
        spans, t = [], 0.0
        for _, s in plan.shots():
            d = float(s.duration / plan.fps)
            spans.append((s.id, t, t + d))
            t += d
        return report_charts(
            seconds=float(plan.duration / plan.fps), mixes=mixes, stems=stems, shots=spans,
            targets={k: v["target"] for k, v in self.report.get("loudness", {}).items()},
            stage_seconds=self.r.timings)

    def write_report(self, plan: ShotPlan, media, masters: dict[str, Path]) -> None:
        import cv2

        self.r.end_stage()
        self.report.update({
            "title": plan.title,
            "fps": format_frame_rate(plan.fps),
            "size": [plan.width, plan.height],
            "duration_frames": plan.duration,
            "duration_seconds": round(float(plan.duration / plan.fps), 3),
            "shots": [{"id": s.id, "scene": sc.id, "framing": s.framing.value,
                       "move": s.camera_move.value, "frames": s.duration,
                       "characters": s.characters,
                       "dialogue": [f"{d.speaker}: {d.text}" for d in s.dialogue],
                       "failed": self.failed.get(s.id), "cached": self.shot_cached.get(s.id)}
                      for sc, s in plan.shots()],
            "failed_shots": self.failed,
            "stage_seconds": self.r.timings,
            "peak_rss_mib_after_stage": self.r.peak_rss_mib,
            "made": self.r.done,
            "cached": self.r.cached,
            "masters": {k: str(v.relative_to(self.outdir)) for k, v in masters.items()},
            "takes": takes_report(self.outdir, self.takes),
        })
        for _, s in plan.shots():  # each character's first line: their voice sample
            for d in s.dialogue:
                entry = self.report.get("cast", {}).get("characters", {}).get(
                    " ".join(d.speaker.split()).upper())
                if entry is not None and "sample" not in entry:
                    entry["sample"] = f"audio/lines/{d.id}.wav"
        def thumb(path: Path, index: int) -> str | None:
            """The frame as a JPEG the width of a contact-sheet cell, base64."""
            frame = _frame_at(path, index)
            if frame is None:
                return None
            small = cv2.resize(frame, (320, max(2, round(320 * plan.height / plan.width))))
            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
            return base64.b64encode(jpg.tobytes()).decode()

        thumbs = []
        for sc, s in plan.shots():
            m = media[s.id]
            b64 = thumb(m.path, m.head + s.duration // 2)
            if b64 is not None:
                thumbs.append((s.id, sc.heading, b64))
        # each shot's takes side by side, the same frame of each
        takes = {s.id: (media[s.id].head + s.duration // 2, self.report["takes"][s.id])
                 for _, s in plan.shots() if s.id in self.report["takes"]}
        takes_html = _takes_html({sid: [(t, thumb(self.outdir / t["file"], at)
                                          if t["kept"] else None) for t in entry["takes"]]
                                  for sid, (at, entry) in takes.items()})
        write_atomic(self.outdir / "report.json", json.dumps(self.report, indent=2).encode())
        write_atomic(self.outdir / "report.html",
                     _report_html(self.report, thumbs, self._charts(plan), takes_html).encode())
        files = {}
        for p in sorted(self.outdir.rglob("*")):
            if p.is_file() and ".cache" not in p.parts and p.name != "manifest.json" \
                    and not p.name.startswith("."):
                files[str(p.relative_to(self.outdir))] = {"bytes": p.stat().st_size,
                                                          "sha256": _file_digest(p)}
        manifest = {"schema": "Manifest.1", "generator": f"aiprod-post {__version__}",
                    "source": str(self.source), "engine": self.report.get("engine"),
                    "voices": self.report.get("voices"), "files": files}
        write_atomic(self.outdir / "manifest.json", json.dumps(manifest, indent=2).encode())


class _Watched:
    """An audio source or sink that reports how far it has been read or written, in
    seconds of audio, so the mix stage moves on the progress line (a normaliser reads
    its source more than once: each pass counts up again)."""

    def __init__(self, inner, frames: int, item: str, reporter: "Reporter") -> None:
        self.inner, self.total, self.item, self.r = inner, frames, item, reporter
        self.written = 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def read(self, lo: int, hi: int):
        self.r.progress(self.item, hi // 48000, self.total // 48000, "s of audio")
        return self.inner.read(lo, hi)

    def write(self, block) -> None:
        self.inner.write(block)
        self.written += len(block)
        self.r.progress(self.item, self.written // 48000, self.total // 48000, "s of audio")


def _curve_of(path: Path):
    """Loudness over time of a WAV the render wrote, read a block at a time."""
    from aiprod_post.audio.loudness import loudness_curve
    from aiprod_post.audio.stream import FileSource

    src = FileSource(path)
    try:
        return loudness_curve(src, src.rate)
    finally:
        src.close()


def _graded(frames, grader, reference: np.ndarray | None):
    """Frames matched to the scene's reference keyframe (when given), then graded, in one
    pass per frame. A frame equal to the one before (a held shot, a mouth that keeps its
    shape) is not graded again: the same graded array is yielded, which the encoder's
    conversion also recognises."""
    from aiprod_post.grading.match import match_curves

    curves = None
    prev_in = prev_out = None
    for frame in frames:
        if prev_in is not None and np.array_equal(frame, prev_in):
            yield prev_out
            continue
        if reference is not None and curves is None:
            curves = match_curves(frame, reference)
        prev_in, prev_out = frame, grader(frame, curves)
        yield prev_out


def _read_image(path: Path, field: str) -> np.ndarray:
    """An RGB image the project names, or an error naming the field and file."""
    import cv2

    if not path.is_file():
        raise AiprodError(f"{field}: no such image", source=path)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise AiprodError(f"{field}: not an image OpenCV can read (PNG, JPEG, TIFF …)",
                          source=path)
    return np.ascontiguousarray(img[..., ::-1])


def _weights_key(identity: dict | None) -> list:
    """What an engine's identity says of its weights: the model's and each LoRA's hash."""
    identity = identity or {}
    return [identity.get("sha256"), identity.get("upsampler", {}).get("sha256"),
            {k: v.get("sha256") for k, v in identity.get("loras", {}).items()}]


def _shot_dialogue(lines: list["_Line"], frames: int, fps: Fraction, head: int) -> np.ndarray:
    """A shot's dialogue as the mix places it: mono, 48 kHz, from the shot's first frame
    (its head handle included), each line at its offset, silence between."""
    from aiprod_post.audio.io import read_audio, resample

    out = np.zeros(int(round(Fraction(frames) * 48000 / fps)), np.float32)
    for ln in lines:
        x, rate = read_audio(ln.wav, "float32")
        x = resample(x[:, 0], rate)
        at = int(round((Fraction(head) / fps + Fraction(ln.offset).limit_denominator(48000))
                       * 48000))
        n = max(0, min(x.size, out.size - at))
        out[at:at + n] += x[:n]
    return out


def _array_digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:3], "big")


def _slug(title: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in title.strip())
    return "_".join(p for p in keep.split("_") if p)[:80] or "film"


def _mouth_cues(timings: dict, fps: Fraction) -> list[dict]:
    from aiprod_post.audio.tts import TimedUnit
    from aiprod_post.audio.visemes import mouth_cues

    phonemes = [TimedUnit(p["text"], p["start"], p["end"]) for p in timings["phonemes"]]
    return [c.__dict__ for c in mouth_cues(phonemes, timings["duration"], fps)]


def _frame_at(path: Path, index: int) -> np.ndarray | None:
    import av

    try:
        with av.open(str(path)) as c:
            for i, fr in enumerate(c.decode(video=0)):
                if i >= index:
                    return fr.to_ndarray(format="rgb24")
    except Exception:  # noqa: BLE001 - a contact sheet without one frame is still a report
        return None
    return None


def _takes_html(takes: dict[str, list[tuple[dict, str | None]]]) -> str:
    """Each retaken shot's takes side by side: a frame of each, its seed, prompt and note,
    the take the film uses marked."""
    if not takes:
        return ""
    e = html.escape
    rows = []
    for sid, entries in takes.items():
        cells = "".join(
            f"<figure{' class=chosen' if t['chosen'] else ''}>"
            + (f"<img src='data:image/jpeg;base64,{b64}' alt='{e(sid)} take {t['take']}'>"
               if b64 else "<p>(file missing)</p>")
            + f"<figcaption><b>{e(sid)} take {t['take']}</b>"
            + (" (in the film)" if t["chosen"] else "")
            + f"<br><a href='{e(t['file'])}'>{e(t['file'])}</a> seed {t['seed']}"
            + (f"<br>prompt: +{e(t['prompt_extra'])}" if t.get("prompt_extra") else "")
            + (f"<br>note: {e(t['note'])}" if t.get("note") else "")
            + "</figcaption></figure>" for t, b64 in entries)
        rows.append(f"<div class='sheet takes'>{cells}</div>")
    return "<h2>Takes</h2>" + "".join(rows)


def _made_on(placement: dict | None) -> str:
    """Where a shot was made, how long it took and waited for a CPU or GPU."""
    if not placement or not placement.get("host"):
        return ""
    node = placement["node"]
    where = placement["host"] + (f" ({node[:8]})" if node != placement["host"] else "")
    return html.escape(f"{where}, {placement['seconds']} s, waited {placement['waited_s']} s")


def _report_html(report: dict, thumbs: list[tuple[str, str, str]],
                 charts: dict[str, str] | None = None, takes: str = "") -> str:
    charts = charts or {}
    e = html.escape
    cells = "".join(f"<figure><img src='data:image/jpeg;base64,{b64}' alt='{e(sid)}'>"
                    f"<figcaption><b>{e(sid)}</b> {e(head)}</figcaption></figure>"
                    for sid, head, b64 in thumbs)
    rows = "".join(
        f"<tr{' class=failed' if s['failed'] else ''}><td>{e(s['scene'])}</td><td>{e(s['id'])}"
        f"</td><td>{e(s['framing'])}</td><td>{e(s['move'])}</td><td>{s['frames']}</td>"
        f"<td>{e(', '.join(s['characters']))}</td><td>{e(' / '.join(s['dialogue'])[:160])}</td>"
        f"<td>{_made_on(report.get('placement', {}).get(s['id']))}</td>"
        f"</tr>" for s in report["shots"])
    loud = "".join(
        f"<tr><td>{e(k)}</td><td>{v.get('target')}</td><td>{v.get('integrated')}</td>"
        f"<td>{v.get('true_peak')}</td><td>{v.get('loudness_range')}</td></tr>"
        for k, v in report.get("loudness", {}).items())
    stages = "".join(
        f"<tr><td>{e(k)}</td><td>{v}</td><td>{report['made'].get(k, 0)}</td>"
        f"<td>{report['cached'].get(k, 0)}</td></tr>" for k, v in report["stage_seconds"].items())
    failed = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in report["failed_shots"].items())
    qa = "".join(
        f"<tr><td>{e(v.get('measured_on', k))}</td><td>{'pass' if v['levels']['pass'] else 'FAIL'} "
        f"({v['levels']['share_outside']:.4%} outside {v['levels']['legal']})</td>"
        f"<td>{'pass' if v['flashes']['pass'] else 'FAIL'} "
        f"(max {v['flashes']['max_per_second']}/s)</td><td>{len(v['black_frames'])}</td>"
        f"<td>{len(v['frozen_frames'])}</td></tr>" for k, v in report.get("qa", {}).items())
    from urllib.parse import quote

    identity = report.get("identity", {}).get("characters", {})
    cast = "".join(
        f"<tr><td><b>{e(name)}</b><br><img class=castsheet src='cast/{e(quote(name))}.png' "
        f"alt='{e(name)} turnaround'></td><td>{e(c['description'])}</td>"
        f"<td>{e(c['gender'])}, {e(str(c['age']) if c['age'] is not None else 'age unknown')}"
        f" ({e(c['age_band'])})<br>{e(', '.join(c['wardrobe']))}<br><i>{e(c['introduction'])}"
        f"</i><br>lines: {e('; '.join(k + ' ' + ', '.join(map(str, v)) for k, v in c['lines'].items()))}"
        f"</td><td>{e(c['voice'] or '')} pitch {c['pitch']} rate {c['rate']}"
        + (f"<br><a href='{e(c['sample'])}'>voice sample</a>" if c.get("sample") else "")
        + "</td><td>" + (f"self {identity[name]['self']} / others {identity[name]['others']}"
                         if identity.get(name, {}).get("self") is not None else "")
        + "</td></tr>" for name, c in report.get("cast", {}).get("characters", {}).items())
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>{e(report['title'])} - aiprod-post report</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;background:#111;color:#ddd}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #444;padding:3px 8px}}
.sheet{{display:flex;flex-wrap:wrap;gap:8px}}figure{{margin:0;width:320px}}
img{{width:320px;display:block}}figcaption{{font-size:12px}}tr.failed{{background:#600}}
img.castsheet{{width:240px}}figure.chosen{{outline:3px solid #4c4}}.takes a{{color:#8cf}}
svg.chart{{background:#fff;color:#111;display:block;
margin:8px 0;max-width:100%;height:auto}}</style>
</head><body><h1>{e(report['title'])}</h1>
<p>{report['duration_seconds']} s, {report['duration_frames']} frames at {e(report['fps'])} fps,
{report['size'][0]}x{report['size'][1]}, aiprod-post {e(report['version'])}</p>
{'<h2>Failed shots</h2><ul>' + failed + '</ul>' if failed else ''}
<h2>Contact sheet</h2><div class="sheet">{cells}</div>
{takes}
{charts.get('waveform', '')}
<h2>Cast</h2><table><tr><th>character</th><th>described as</th><th>facts (script lines)</th>
<th>voice</th><th>identity across shots</th></tr>{cast}</table>
<h2>Shots</h2><table><tr><th>scene</th><th>shot</th><th>framing</th><th>move</th>
<th>frames</th><th>characters</th><th>dialogue</th><th>made on</th></tr>{rows}</table>
<h2>Loudness</h2><table><tr><th>profile</th><th>target LUFS</th><th>integrated</th>
<th>true peak dBTP</th><th>LRA</th></tr>{loud}</table>
{charts.get('loudness', '')}{charts.get('stems', '')}
<h2>Picture QA</h2><table><tr><th>measured on</th><th>levels (EBU R 103)</th>
<th>flashes (ITU-R BT.1702)</th><th>black runs</th><th>frozen runs</th></tr>{qa}</table>
<h2>Stages</h2>{charts.get('stages', '')}
<table><tr><th>stage</th><th>seconds</th><th>made</th><th>cached</th></tr>
{stages}</table></body></html>"""


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
        run = _Render(source, outdir, options)
        run.r.events = events
        run.executor = executor
        try:
            plan = run.plan()
            plan = run.chosen_takes(plan)
            lines = run.speech(plan)
            plan = run.fit_dialogue(plan, lines)
            media = run.generation(plan, lines)
            mix = run.mix(plan, lines, profiles)
            tl, otio_path = run.timeline(plan, media, lines, mix, profiles)
            run.subtitles(plan, lines)
            masters = run.masters(plan, tl, otio_path, mix, profiles)
            run.qa(masters)
            run.write_report(plan, media, masters)
            run.record_history(plan, profiles)
            save_render_record(outdir, run.record())  # what `aiprod-post retake` reruns
        finally:
            run.r.stop_heartbeat()  # a render that fails mid-stage leaves no thread behind
    return RenderResult(outdir, masters, run.failed, run.report)

