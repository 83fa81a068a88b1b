"""Takes of a shot, and how a render was made so that one shot can be made again.

A render folder remembers how it was made in ``render.json`` (``Render.1``: the source and
the options a rerun needs). A retake adds a take to ``takes.json`` (``Takes.1``): per shot,
each take's seed, the words added to its prompt and a note, and which take the film uses.
Every render into the folder reads ``takes.json`` and renders each shot with its chosen
take (:func:`with_chosen_takes`), so the stage cache re-renders only the shot whose take
changed. Takes are kept side by side under ``shots/`` (``3A_t1.mov``, ``3A_t2.mov``).

>>> from aiprod_post.plan import plan_from_data
>>> plan = plan_from_data({"schema_version": "ShotPlan.1", "scenes": [{
...     "id": "1", "heading": "EXT. PIER", "shots": [
...     {"id": "1A", "framing": "wide", "duration": 24, "seed": 7, "action": "Gulls."}]}]})
>>> takes = {"1A": ShotTakes(2, [Take(1, 7), Take(2, 99, prompt_extra="low sun")])}
>>> shot = with_chosen_takes(plan, takes)[0].shots()[0][1]
>>> shot.seed, shot.action
(99, 'Gulls. low sun')
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import AiprodError, PathError
from .files import inside, write_atomic
from .hdr import place_picture
from .plan import ShotPlan, load_plan
from .project import Project

__all__ = [
    "RENDER_FILE",
    "TAKES_FILE",
    "RenderRecord",
    "Take",
    "ShotTakes",
    "save_render_record",
    "load_render_record",
    "load_takes",
    "save_takes",
    "rendered_plan",
    "with_chosen_takes",
    "take_file",
    "add_take",
    "choose_take",
    "takes_report",
    "MAX_TEXT",
]

RENDER_FILE = "render.json"
TAKES_FILE = "takes.json"
MAX_TEXT = 500  # characters of a prompt extra or a note


# ------------------------------------------------------------------ how a render was made


@dataclass(frozen=True)
class RenderRecord:
    """What a rerun of a render needs: its source and options, paths absolute.

    ``project`` is the project as the render used it (its keys, as JSON), ``project_root``
    the folder its relative paths resolve against; a retake renders with that project, not
    with the file as it may read now.
    """

    source: str
    source_sha256: str | None = None
    engine: str | None = None
    profiles: list[str] | None = None
    fps: str | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    burn_in: bool | None = None
    cast: str | None = None
    executor: str | None = None  # where the shots ran: a retake runs its shot there too
    address: str | None = None
    cache: str | None = None  # a stage cache shared with other folders: a retake uses it too
    project: dict[str, Any] = field(default_factory=dict)
    project_root: str = "."


def save_render_record(outdir: Path, record: RenderRecord) -> Path:
    data = {"schema": "Render.1", **asdict(record)}
    return write_atomic(Path(outdir) / RENDER_FILE, json.dumps(data, indent=2).encode())


def _read_json(path: Path, schema: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AiprodError(f"cannot be read as JSON ({exc})", source=path) from None
    if not isinstance(data, dict) or data.get("schema") != schema:
        raise AiprodError(f"expected a {schema} file (\"schema\": \"{schema}\")", source=path)
    return data


def load_render_record(outdir: Path) -> RenderRecord:
    """How the render in ``outdir`` was made; an error naming the folder if it holds none."""
    outdir = Path(outdir)
    path = outdir / RENDER_FILE
    if not outdir.is_dir() or not path.is_file() or not (outdir / "timeline" / "plan.json"
                                                         ).is_file():
        raise AiprodError(f"not a render folder: no {RENDER_FILE} and timeline/plan.json "
                          "(render into it with `aiprod-post render` first)", source=outdir)
    data = _read_json(path, "Render.1")
    data.pop("schema")
    try:
        record = RenderRecord(**data)
    except TypeError as exc:
        raise AiprodError(f"unexpected keys ({exc})", source=path) from None
    try:  # a record from another version, or edited by hand
        Project.model_validate(record.project)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise AiprodError(f"{err['msg']}", source=path,
                          where="project." + ".".join(map(str, err["loc"]))) from None
    return record


def rendered_plan(outdir: Path) -> ShotPlan:
    """The plan as the render in ``outdir`` rendered it (``timeline/plan.json``)."""
    load_render_record(outdir)
    return load_plan(Path(outdir) / "timeline" / "plan.json")


# ------------------------------------------------------------------ takes


@dataclass(frozen=True)
class Take:
    """One take of a shot: the seed it was generated with and what was asked of it."""

    take: int
    seed: int
    prompt_extra: str | None = None
    note: str | None = None
    made: str | None = None  # UTC, ISO 8601


@dataclass(frozen=True)
class ShotTakes:
    """A shot's takes, numbered from 1, and the one the film uses."""

    chosen: int
    takes: list[Take]

    def get(self, number: int) -> Take | None:
        return next((t for t in self.takes if t.take == number), None)


def load_takes(outdir: Path) -> dict[str, ShotTakes]:
    """The takes recorded in ``outdir`` (none when it has no ``takes.json``)."""
    path = Path(outdir) / TAKES_FILE
    if not path.exists():
        return {}
    data = _read_json(path, "Takes.1")
    out: dict[str, ShotTakes] = {}
    try:
        for shot_id, entry in data["shots"].items():
            takes = [_checked(Take(**t), shot_id) for t in entry["takes"]]
            if len({t.take for t in takes}) != len(takes):
                raise ValueError(f"shot {shot_id}: a take number is listed twice")
            out[shot_id] = ShotTakes(int(entry["chosen"]), takes)
            if out[shot_id].get(out[shot_id].chosen) is None:
                raise ValueError(f"shot {shot_id}: chosen take {entry['chosen']} is not listed")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AiprodError(f"not a valid takes file ({exc})", source=path) from None
    return out


def _checked(take: Take, shot_id: str) -> Take:
    """A take as the renderer may use it: its seed is what the plan allows."""
    ok = (isinstance(take.take, int) and take.take >= 1 and isinstance(take.seed, int)
          and not isinstance(take.seed, bool) and 0 <= take.seed < 2**31
          and all(v is None or isinstance(v, str)
                  for v in (take.prompt_extra, take.note, take.made)))
    if not ok:
        raise ValueError(f"shot {shot_id}: take {take.take!r}: expected a take number from 1, "
                         f"a seed from 0 to {2**31 - 1} and text or null for prompt_extra, "
                         "note and made")
    return take


def save_takes(outdir: Path, takes: dict[str, ShotTakes]) -> Path:
    data = {"schema": "Takes.1", "shots": {
        k: {"chosen": v.chosen, "takes": [asdict(t) for t in v.takes]}
        for k, v in sorted(takes.items())}}
    return write_atomic(Path(outdir) / TAKES_FILE, json.dumps(data, indent=2).encode())


def _with_extra(action: str, extra: str | None) -> str:
    if not extra:
        return action
    return f"{action.rstrip()} {extra}".strip()


def with_chosen_takes(plan: ShotPlan, takes: dict[str, ShotTakes]
                      ) -> tuple[ShotPlan, list[str]]:
    """``plan`` with each shot that has takes set to its chosen take (seed; prompt extra
    added to the action, which the generating engines' prompts are made from), and the
    ids of takes' shots the plan no longer has."""
    ids = {s.id for _, s in plan.shots()}
    scenes = []
    for scene in plan.scenes:
        shots = []
        for shot in scene.shots:
            entry = takes.get(shot.id)
            take = entry.get(entry.chosen) if entry else None
            if take is not None:
                shot = shot.model_copy(update={
                    "seed": take.seed, "action": _with_extra(shot.action, take.prompt_extra)})
            shots.append(shot)
        scenes.append(scene.model_copy(update={"shots": shots}))
    return plan.model_copy(update={"scenes": scenes}), sorted(set(takes) - ids)


def take_file(outdir: Path, shot_id: str, number: int) -> Path:
    """``OUTDIR/shots/3A_t2.mov``: where take ``number`` of a shot is kept."""
    return inside(Path(outdir), "shots", f"{shot_id}_t{number}.mov")


def _shot_of(plan: ShotPlan, shot_id: str, where: str):
    for _, shot in plan.shots():
        if shot.id == shot_id:
            return shot
    raise AiprodError(f"no shot {shot_id!r} in this render; its shots are "
                      + ", ".join(s.id for _, s in plan.shots()), where=where)


def _text(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    value = " ".join(value.split())
    if len(value) > MAX_TEXT:
        raise AiprodError(f"{len(value)} characters; at most {MAX_TEXT}", where=name)
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise AiprodError("control characters are not allowed", where=name)
    return value or None


def _new_seed(shot_id: str, number: int, used: set[int]) -> int:
    """A seed for take ``number`` that no take of the shot has used: derived from the shot
    and take, so the same retake of the same render is the same picture."""
    attempt = 0
    while True:
        digest = hashlib.sha256(f"{shot_id}:take{number}:{attempt}".encode()).digest()
        seed = int.from_bytes(digest[:4], "big") % (2**31)
        if seed not in used:
            return seed
        attempt += 1


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def add_take(outdir: Path, plan: ShotPlan, shot_id: str, *, seed: int | None = None,
             prompt_extra: str | None = None, note: str | None = None) -> Take:
    """Record a new take of ``shot_id`` in ``outdir`` and choose it.

    The shot's first retake first records the take the render made (its seed from the
    rendered ``plan``) and keeps its picture as ``shots/ID_t1.mov``. ``seed`` None: a new
    seed no take of the shot has used. A take that would repeat an earlier one (same seed,
    same prompt extra) is refused: it would be the same picture.
    """
    shot = _shot_of(plan, shot_id, "shot")
    if seed is not None and not 0 <= seed < 2**31:
        raise AiprodError(f"{seed}: expected 0 to {2**31 - 1}", where="--seed")
    prompt_extra, note = _text(prompt_extra, "--prompt-extra"), _text(note, "--note")
    takes = load_takes(outdir)
    entry = takes.get(shot_id)
    if entry is None:
        first = take_file(outdir, shot_id, 1)
        shown = inside(Path(outdir), "shots", f"{shot_id}.mov")
        if shown.is_file() and not first.exists():
            place_picture(shown, first)  # its HDR picture goes with it
        entry = ShotTakes(1, [Take(1, shot.seed, made=None)])
    used = {t.seed for t in entry.takes}
    for t in entry.takes:
        if seed is not None and t.seed == seed and t.prompt_extra == prompt_extra:
            raise AiprodError(f"take {t.take} of shot {shot_id} has seed {seed} and the same "
                              "prompt already; choose it with `aiprod-post take`",
                              where="--seed")
    number = max(t.take for t in entry.takes) + 1
    take = Take(number, seed if seed is not None else _new_seed(shot_id, number, used),
                prompt_extra, note, _now())
    takes[shot_id] = ShotTakes(number, [*entry.takes, take])
    save_takes(outdir, takes)
    return take


def choose_take(outdir: Path, plan: ShotPlan, shot_id: str, number: int) -> Take:
    """Make take ``number`` of ``shot_id`` the one the film uses."""
    _shot_of(plan, shot_id, "shot")
    takes = load_takes(outdir)
    entry = takes.get(shot_id)
    numbers = [t.take for t in entry.takes] if entry else [1]
    if number not in numbers:
        raise AiprodError(f"shot {shot_id} has take{'s' * (len(numbers) > 1)} "
                          f"{', '.join(map(str, numbers))}, not {number}", where="take")
    if entry is None:  # one take, and it is chosen already
        return Take(1, _shot_of(plan, shot_id, "shot").seed)
    takes[shot_id] = ShotTakes(number, entry.takes)
    save_takes(outdir, takes)
    return entry.get(number)  # type: ignore[return-value]


def takes_report(outdir: Path, takes: dict[str, ShotTakes]) -> dict[str, Any]:
    """Takes as report.json and the timeline list them: per shot, the chosen number and
    each take with its file (relative to ``outdir``) and whether the file is there."""
    out: dict[str, Any] = {}
    for shot_id, entry in sorted(takes.items()):
        rows = []
        for t in entry.takes:
            try:
                path = take_file(outdir, shot_id, t.take)
            except PathError:
                continue
            rows.append({**asdict(t), "chosen": t.take == entry.chosen,
                         "file": path.relative_to(outdir).as_posix(), "kept": path.is_file()})
        out[shot_id] = {"chosen": entry.chosen, "takes": rows}
    return out
