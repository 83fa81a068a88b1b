"""The shot plan: the versioned, editable contract between every stage.

Time is integer frames at an exact rational frame rate (``"24"``,
``"24000/1001"``); nothing in the plan is float seconds. The plan is written
as JSON a user can edit and feed back in. Every file carries
``schema_version``; :func:`upgrade_plan_data` brings an older file up to the
current schema one step at a time before it is validated.

>>> fps = parse_frame_rate("23.976")
>>> fps, format_frame_rate(fps)
(Fraction(24000, 1001), '24000/1001')
"""

from __future__ import annotations

import json
from enum import Enum
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from .errors import PlanError
from .files import write_atomic

__all__ = [
    "AUDIO_RATE",
    "frames_to_samples",
    "is_plan_file",
    "ID_PATTERN",
    "SafeId",
    "id_problem",
    "SCHEMA_VERSION",
    "UPGRADES",
    "FrameRate",
    "Framing",
    "CameraMove",
    "TransitionKind",
    "Transition",
    "Conditioning",
    "DialogueLine",
    "Shot",
    "Scene",
    "CastMember",
    "ShotPlan",
    "parse_frame_rate",
    "format_frame_rate",
    "frames_to_timecode",
    "upgrade_plan_data",
    "load_plan",
    "save_plan",
    "plan_json_schema",
    "plan_from_data",
    "plan_to_json",
]

SCHEMA_VERSION = "ShotPlan.1"

# NTSC rates as people type them, mapped to their exact values.
_NTSC = {
    "23.976": Fraction(24000, 1001), "23.98": Fraction(24000, 1001),
    "29.97": Fraction(30000, 1001), "47.952": Fraction(48000, 1001),
    "59.94": Fraction(60000, 1001), "119.88": Fraction(120000, 1001),
}


def parse_frame_rate(value: Any) -> Fraction:
    """Read ``24``, ``"25"``, ``"24000/1001"`` or ``"29.97"`` as an exact rate."""
    if isinstance(value, Fraction):
        rate = value
    elif isinstance(value, bool):
        raise ValueError("expected a frame rate such as 24 or \"24000/1001\"")
    elif isinstance(value, int):
        rate = Fraction(value)
    elif isinstance(value, float):
        rate = _NTSC.get(f"{value:g}") or Fraction(value).limit_denominator(1001)
    elif isinstance(value, str):
        text = value.strip()
        try:
            rate = _NTSC.get(text) or Fraction(text)
        except (ValueError, ZeroDivisionError):
            raise ValueError(
                f"expected a frame rate such as 24 or \"24000/1001\", got {value!r}") from None
    else:
        raise ValueError(f"expected a frame rate such as 24 or \"24000/1001\", got {value!r}")
    if not (1 <= rate <= 1000):
        raise ValueError(f"frame rate {value!r} is outside 1..1000 fps")
    return rate


def format_frame_rate(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


FrameRate = Annotated[
    Fraction,
    BeforeValidator(parse_frame_rate),
    PlainSerializer(format_frame_rate, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(/\d+)?$",
                    "description": "exact frame rate, e.g. \"24\" or \"24000/1001\""}),
]


#: Ids of scenes, shots and lines become file names (``shots/3A.mov``,
#: ``audio/lines/3.4.wav``): letters, digits, ``.``, ``_`` and ``-``, starting and ending
#: with a letter or digit, at most 64 characters. Fountain scene numbers (``#12A#``,
#: ``#I-1-A#``) fit; anything that could name a path does not.
ID_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$"
ID_MAX = 64

SafeId = Annotated[str, StringConstraints(pattern=ID_PATTERN, max_length=ID_MAX)]


def id_problem(value: str, max_len: int = ID_MAX) -> str | None:
    """Why ``value`` cannot be a scene, shot or line id, or None where it can.

    >>> id_problem("12A"), id_problem("I-1-A")
    (None, None)
    >>> id_problem("../x")
    "'../x' is not a safe id: expected 1-64 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
    """
    import re

    if len(value) <= max_len and re.fullmatch(ID_PATTERN, value) and ".." not in value:
        return None
    return (f"{value[:80]!r} is not a safe id: expected 1-{max_len} letters, digits, '.', '_' "
            "or '-', starting and ending with a letter or digit")


#: the one sample rate of the film's sound: speech, stems, mixes and masters
AUDIO_RATE = 48000


def frames_to_samples(frames: int, rate: Fraction, plus_seconds: float = 0.0,
                      audio_rate: int = AUDIO_RATE) -> int:
    """The audio sample at a frame of the film (and ``plus_seconds`` after it), exact in
    fractions, rounded once: the mix, the timeline and the masters agree on every cut.

    >>> frames_to_samples(24000, Fraction(24000, 1001))
    48048000
    >>> frames_to_samples(24, Fraction(24), 0.25)
    60000
    """
    at = Fraction(frames) / rate + Fraction(plus_seconds).limit_denominator(audio_rate)
    return int(round(at * audio_rate))


def frames_to_timecode(frames: int, rate: Fraction) -> str:
    """Non-drop-frame SMPTE timecode at the rate's nominal frame count.

    >>> frames_to_timecode(24 * 61 + 3, Fraction(24))
    '00:01:01:03'
    """
    nominal = round(rate)
    f = frames % nominal
    s = frames // nominal
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}:{f:02d}"


class Framing(str, Enum):
    WIDE = "wide"
    MEDIUM = "medium"
    CLOSE_UP = "close-up"
    OVER_THE_SHOULDER = "over-the-shoulder"
    TWO_SHOT = "two-shot"
    INSERT = "insert"
    TITLE = "title"


class CameraMove(str, Enum):
    STATIC = "static"
    PAN = "pan"
    TILT = "tilt"
    DOLLY = "dolly"
    PUSH_IN = "push-in"
    TRACKING = "tracking"
    ZOOM = "zoom"
    HANDHELD = "handheld"


class TransitionKind(str, Enum):
    CUT = "cut"
    DISSOLVE = "dissolve"
    FADE_IN = "fade-in"
    FADE_OUT = "fade-out"
    WIPE = "wipe"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)


class Transition(_Model):
    """How the picture gets into (or out of) a shot; ``duration`` in frames."""

    kind: TransitionKind = TransitionKind.CUT
    duration: int = Field(0, ge=0)
    text: str | None = Field(None, description="the script's transition as written")
    source_line: int | None = None


class Conditioning(_Model):
    """Which keyframe a shot's first frame is conditioned on.

    ``establishing``: the scene's establishing shot (its keyframes carry set and
    light); ``previous-shot``: the shot just before, for a scene that continues
    directly from the last; ``none``: a new set.
    """

    keyframe: Literal["none", "establishing", "previous-shot"] = "none"
    shot: str | None = Field(None, description="id of the shot whose keyframe is used")


class DialogueLine(_Model):
    id: SafeId = Field(description="stable id: scene, then the line's order in the scene")
    speaker: str = Field(description="normalised cast name")
    text: str = Field(description="what is spoken: no emphasis markup, no notes")
    parenthetical: str | None = None
    extensions: list[str] = Field(default_factory=list)
    lyric: bool = False
    dual: bool = False
    source_line: int | None = None


class Shot(_Model):
    id: SafeId = Field(description="scene number plus letter: 3, 3A, 3B …")
    framing: Framing
    camera_move: CameraMove = CameraMove.STATIC
    duration: int = Field(ge=1, description="frames at the plan's frame rate")
    characters: list[str] = Field(default_factory=list)
    dialogue: list[DialogueLine] = Field(default_factory=list)
    action: str = Field("", description="what we see, from the action text")
    title: str | None = Field(None, description="card text for title shots")
    transition_in: Transition = Field(default_factory=Transition)
    transition_out: Transition | None = None
    seed: int = Field(ge=0, lt=2**31)
    conditioning: Conditioning = Field(default_factory=Conditioning)
    look: str | None = Field(None, description="look override for this shot")
    source_lines: tuple[int, int] | None = None


class Scene(_Model):
    id: SafeId
    heading: str
    int_ext: Literal["INT", "EXT", "EST", "INT/EXT"] | None = None
    location: str = ""
    time_of_day: str | None = None
    light: Literal["day", "night", "dusk", "dawn"] = "day"
    continuous: bool = Field(False, description="continues directly from the scene before")
    look: str | None = None
    source_line: int | None = None
    shots: list[Shot]


class CastMember(_Model):
    name: str
    lines: int = 0
    first_line: int | None = None


class ShotPlan(_Model):
    schema_version: Literal["ShotPlan.1"] = SCHEMA_VERSION
    title: str = "Untitled"
    source: str | None = None
    source_sha256: str | None = None
    fps: FrameRate = Fraction(24)
    width: int = Field(1920, ge=16, le=8192)
    height: int = Field(1080, ge=16, le=8192)
    seed: int = Field(0, ge=0, lt=2**31)
    generator: str | None = None
    cast: list[CastMember] = Field(default_factory=list)
    scenes: list[Scene]

    @model_validator(mode="after")
    def _ids_unique(self) -> "ShotPlan":
        """Scene, shot and line ids name files: each must be unique in the plan (shots and
        lines share the ``shots/`` and ``audio/lines/`` folders with nothing else)."""
        for kind, ids in (("scene", [s.id for s in self.scenes]),
                          ("shot", [sh.id for _, sh in self.shots()]),
                          ("dialogue line", [ln.id for _, sh in self.shots() for ln in sh.dialogue])):
            seen: set[str] = set()
            for i in ids:
                if ".." in i:
                    raise ValueError(f"{kind} id {i!r}: '..' is not allowed in an id")
                if i.casefold() in seen:  # 3a and 3A are one file on macOS and Windows
                    raise ValueError(f"{kind} id {i!r} is used twice (letter case aside); "
                                     "ids must be unique")
                seen.add(i.casefold())
        return self

    def shots(self) -> list[tuple[Scene, Shot]]:
        """Every shot in film order with its scene."""
        return [(scene, shot) for scene in self.scenes for shot in scene.shots]

    @property
    def duration(self) -> int:
        """Film length in frames (cuts; transitions overlap nothing yet)."""
        return sum(shot.duration for _, shot in self.shots())

    def shot_spans(self) -> list[tuple[Scene, Shot, int, int]]:
        """Every shot in film order with its scene and its first and end frame on the
        film (end exclusive)."""
        out, start = [], 0
        for scene, shot in self.shots():
            out.append((scene, shot, start, start + shot.duration))
            start += shot.duration
        return out

    def scene_spans(self) -> list[tuple[Scene, int, int]]:
        """Every scene with its first and end frame on the film (end exclusive)."""
        out, start = [], 0
        for scene in self.scenes:
            end = start + sum(s.duration for s in scene.shots)
            out.append((scene, start, end))
            start = end
        return out


# --------------------------------------------------------------- versions

#: ``{old version: function(data) -> data one version newer}``. Each schema
#: change adds one entry; loading walks the chain to SCHEMA_VERSION.
UPGRADES: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {}


def upgrade_plan_data(data: Any, upgrades: dict[str, tuple[str, Callable[[dict], dict]]] | None
                      = None) -> dict[str, Any]:
    """Upgrade a decoded plan to the current schema, step by step.

    Raises :class:`PlanError` for a file that is not a plan or whose version
    this release does not know.
    """
    upgrades = UPGRADES if upgrades is None else upgrades
    if not isinstance(data, dict):
        raise PlanError("expected a JSON object (a shot plan)", where="$")
    version = data.get("schema_version")
    if version is None:
        raise PlanError("missing field: expected \"schema_version\": \"ShotPlan.N\"",
                        where="$.schema_version")
    seen = set()
    while version != SCHEMA_VERSION:
        if version not in upgrades or version in seen:
            known = ", ".join(sorted({SCHEMA_VERSION, *upgrades}))
            raise PlanError(f"unknown schema version {version!r}: this release reads {known}",
                            where="$.schema_version")
        seen.add(version)
        version, step = upgrades[version]
        data = step(dict(data))
        data["schema_version"] = version
    return data


def _json_path(loc: tuple[Any, ...]) -> str:
    out = "$"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def plan_from_data(data: Any, source: str | None = None) -> ShotPlan:
    data = upgrade_plan_data(data)
    try:
        return ShotPlan.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "missing field"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        raise PlanError(f"{msg}{more}", source=source, where=_json_path(err["loc"])) from None


def is_plan_file(path: str | Path) -> bool:
    """Whether ``path`` holds a shot plan (JSON) rather than a screenplay: a ``.json``
    suffix, or a file whose first character (after a byte-order mark and white space) is
    ``{``. One rule for every front door (``plan``, ``render``, ``batch``, the service)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return False
    return head.startswith(b"{")


def load_plan(path: str | Path) -> ShotPlan:
    """Read, upgrade and validate a plan file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PlanError("no such file", source=path) from None
    except UnicodeDecodeError as exc:
        raise PlanError(f"not UTF-8 at byte offset {exc.start}", source=path) from None
    except OSError as exc:
        raise PlanError(f"cannot read: {exc.strerror or exc}", source=path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"invalid JSON: {exc.msg} (column {exc.colno})", source=path,
                        line=exc.lineno) from None
    try:
        return plan_from_data(data, source=str(path))
    except PlanError as exc:
        raise exc.with_source(path) from None


def plan_to_json(plan: ShotPlan) -> str:
    return plan.model_dump_json(indent=2, exclude_none=True) + "\n"


def save_plan(plan: ShotPlan, path: str | Path) -> Path:
    """Write the plan atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    write_atomic(path, plan_to_json(plan).encode("utf-8"))
    return path


def plan_json_schema() -> dict[str, Any]:
    schema = ShotPlan.model_json_schema()
    schema["title"] = SCHEMA_VERSION
    return schema
