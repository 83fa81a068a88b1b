"""The project file (TOML): characters, looks, engine, format and delivery profiles.

Every key is checked: an unknown key is an error that names it, so a typo never
silently does nothing. CLI flags override what the file says.

.. code-block:: toml

    [project]
    cast = "cast.toml"          # who the characters are (aiprod-post cast SCRIPT -o cast.toml)

    [output]
    width = 1920
    height = 1080
    fps = "24"
    profiles = ["web", "master"]

    [engine]
    name = "animatic"          # a registered engine: animatic | clips | ltx | ltx2
    burn_in = false

    [engine.ltx]
    model = "/models/ltx-video-0.9.7-distilled"   # a diffusers folder (local only)
    preset = "distilled"        # or "dev"
    upsampler = "models/ltxv-spatial-upscaler"  # optional second stage (latent upsampler)
    compile = "auto"            # or true / false: compile the transformer's repeated block

    [engine.ltx2]
    model = "/models/ltx-2-distilled"  # a diffusers LTX-2 folder (local only)
    control_lora = "loras/ltx-2-ic-lora-canny.safetensors"  # follows the animatic's edges
    camera_loras = { dolly = "loras/dolly-in.safetensors", pan = "loras/pan.safetensors" }
    audio = true                # the sound made with shots without dialogue, on the FX stem
    lip_sync = true             # dialogue shots: audio to video on our own TTS lines

    [engine.clips]
    folder = "footage"          # 3A.mov, 3B_take2.mp4 …
    fit = "crop"                # crop | letterbox
    media = { "2C" = "pickups/2C.mov" }
    colourspace = "ARRI LogC4"  # the footage's, as the pinned OpenColorIO config names it

    [characters.NELL]
    voice = "en+f3"             # espeak-ng language[+variant]
    pitch = 60
    rate = 150
    reference = "refs/nell.png"
    speaker_wav = "refs/nell.wav"  # coqui engine: clone her voice (YourTTS, XTTS)

    [looks]
    scene = { "2" = "day-for-night" }
    shot = { "3A" = "noir" }
    cdl = { "3A" = "grades/3A.cc" }  # ASC CDL per shot (.cc/.ccc/.cdl), before the look

    [audio]
    duck_db = -12.0
    music = "music/theme.wav"   # one bed for the film, looped
    ambience = { "1" = "amb/harbour.wav" }
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from . import engines
from .codecs import DELIVERIES
from .codecs import PROFILES as MASTER_PROFILES
from .errors import AiprodError
from .plan import FrameRate

__all__ = ["Project", "load_project", "read_toml_model", "DELIVERY_PROFILES", "DeliveryProfile"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_M = TypeVar("_M", bound=BaseModel)


class OutputSettings(_Strict):
    width: int | None = Field(None, ge=16, le=8192)
    height: int | None = Field(None, ge=16, le=8192)
    fps: FrameRate | None = None
    profiles: list[str] | None = None
    burn_in_subtitles: bool = False
    #: long-GOP masters (H.264, HEVC) encoded as closed-GOP segments by this many processes
    #: and joined without re-encoding; picture QA is then measured on the decoded master.
    #: With the Ray executor: at least this many segments, each a task on the cluster
    workers: int = Field(1, ge=1, le=64)


class EngineSettings(_Strict):
    """``[engine]``: which engine renders, and a section per engine (``[engine.ltx]`` …)
    checked against that engine's settings model in the registry (:mod:`.engines`)."""

    model_config = ConfigDict(extra="allow")  # the sections: checked below, by the registry
    name: str = "animatic"
    burn_in: bool = False

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        return engines.known(value)

    @model_validator(mode="after")
    def _sections(self) -> "EngineSettings":
        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        for key, value in list(extra.items()):
            spec = engines.find(key)
            if spec is None or not spec.section:
                raise ValidationError.from_exception_data(
                    "EngineSettings", [{"type": "extra_forbidden", "loc": (key,), "input": value}])
            if isinstance(value, spec.settings):
                continue
            try:
                extra[key] = spec.settings.model_validate(value)
            except ValidationError as exc:  # the key's full place: engine.ltx.steps
                raise ValidationError.from_exception_data("EngineSettings", [
                    {"type": e["type"], "loc": (key, *e["loc"]), "input": e["input"],
                     **({"ctx": e["ctx"]} if "ctx" in e else {})}
                    for e in exc.errors(include_url=False)]) from None
        for name in engines.names():  # every engine's defaults where the file says nothing
            spec = engines.get(name)
            if spec.section and name not in extra:
                extra[name] = spec.settings()
        return self

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # type: ignore[misc]
        except AttributeError:
            spec = engines.find(name)
            if spec is not None and spec.section:
                return spec.settings()  # registered after this was read
            raise


class CharacterSettings(_Strict):
    voice: str | None = None
    pitch: int | None = Field(None, ge=0, le=100)
    rate: int | None = Field(None, ge=80, le=450)
    reference: str | None = None
    speaker_wav: str | None = None  # a recording to clone the voice from (coqui engine)


class LookSettings(_Strict):
    scene: dict[str, str] = Field(default_factory=dict)
    shot: dict[str, str] = Field(default_factory=dict)
    #: shot id -> an ASC CDL file (.cc, .ccc, .cdl), applied before the look
    cdl: dict[str, str] = Field(default_factory=dict)


class AudioSettings(_Strict):
    duck_db: float = Field(-12.0, le=0.0, ge=-60.0)
    music: str | None = None
    ambience: dict[str, str] = Field(default_factory=dict)
    music_db: float = -8.0
    ambience_db: float = -14.0
    tts_engine: Literal["espeak", "coqui"] = "espeak"
    tts_model: str | None = None  # coqui: a local model folder (config.json + checkpoint)
    tts_device: str = "cpu"


class ProjectSection(_Strict):
    cast: str | None = Field(None, description="the cast file (Cast.1 TOML) the film uses")


class RunSettings(_Strict):
    """Where a render's shots run: ``local`` (this machine) or ``ray`` (a Ray cluster)."""

    executor: Literal["local", "ray"] = "local"
    address: str | None = None  # the cluster's: auto, HOST:PORT or ray://HOST:PORT
    retries: int = Field(2, ge=0, le=10)  # tries more for a shot whose worker or node died
    #: the stage cache: a folder or a file:// URL (else OUTDIR/.cache); folders and
    #: renders that name the same one share what any of them made
    cache: str | None = None


class Project(_Strict):
    project: ProjectSection = Field(default_factory=ProjectSection)
    run: RunSettings = Field(default_factory=RunSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    characters: dict[str, CharacterSettings] = Field(default_factory=dict)
    looks: LookSettings = Field(default_factory=LookSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    root: str = Field(".", exclude=True, description="folder relative paths resolve against")

    def path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else Path(self.root) / p


class DeliveryProfile(BaseModel):
    name: str
    video: Literal[tuple(MASTER_PROFILES)]  # type: ignore[valid-type]  # a master's name
    loudness: float
    true_peak: float
    stems: bool = False
    exports: bool = False


#: the delivery profiles, from the delivery codec table (aiprod_post.codecs)
DELIVERY_PROFILES: dict[str, DeliveryProfile] = {
    name: DeliveryProfile(name=name, **spec) for name, spec in DELIVERIES.items()}


def read_toml_model(path: str | Path, model: type[_M], what: str,
                    check: Callable[[dict], None] | None = None) -> _M:
    """Read a TOML file into ``model``; errors name the file and the key at fault.

    ``check`` sees the decoded table first (a schema version, say)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AiprodError(f"no such {what}", source=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise AiprodError(f"invalid TOML: {exc}", source=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AiprodError(f"cannot read: {exc}", source=path) from None
    if check is not None:
        try:
            check(data)
        except AiprodError as exc:
            raise exc.with_source(path) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else \
            err["msg"].removeprefix("Value error, ")
        raise AiprodError(f"{msg}", source=path, where=key) from None


def load_project(path: str | Path) -> Project:
    """Read and check a project file; errors name the file and the key."""
    path = Path(path)
    project = read_toml_model(path, Project, "project file")
    project.root = str(path.parent)
    for name in project.output.profiles or []:
        if name not in DELIVERY_PROFILES:
            raise AiprodError(f"unknown delivery profile {name!r}: expected one of "
                              f"{', '.join(DELIVERY_PROFILES)}", source=path,
                              where="output.profiles")
    return project

