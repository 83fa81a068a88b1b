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
    name = "animatic"          # animatic | clips | ltx | ltx2
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
from typing import Callable, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class ClipsSettings(_Strict):
    folder: str | None = None
    fit: Literal["crop", "letterbox"] = "crop"
    fill: Literal["hold", "loop"] = "hold"
    media: dict[str, str] = Field(default_factory=dict)
    #: the footage's colour space (a name of the pinned OpenColorIO config); None: Rec.709
    colourspace: str | None = None


class LTXProjectSettings(_Strict):
    model: str = ""
    config: str | None = None
    text_encoder: str | None = None
    tokenizer: str | None = None
    preset: Literal["distilled", "dev"] = "distilled"
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    device: str = "cuda"
    max_frames: int = Field(121, ge=9)
    establishing_strength: float = Field(0.6, ge=0.0, le=1.0)
    previous_strength: float = Field(1.0, ge=0.0, le=1.0)
    vae_tiling: bool = False
    cpu_offload: bool = False
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = None
    compile: bool | Literal["auto"] = "auto"  # auto: where the film's GPU time repays it
    compile_mode: Literal["default", "reduce-overhead", "max-autotune",
                          "max-autotune-no-cudagraphs"] = "default"
    compile_backend: Literal["inductor", "eager"] = "inductor"
    max_buckets: int = Field(4, ge=1, le=16)  # frame counts (compiled shapes) per film
    upsampler: str | None = None
    upsample_steps: int = Field(10, ge=1)
    upsample_strength: float = Field(0.4, gt=0.0, le=1.0)
    character_strength: float = Field(0.35, ge=0.0, le=1.0)

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_choice(cls, value: object) -> object:
        if value not in (True, False, "auto") or isinstance(value, int) and \
                not isinstance(value, bool):
            raise ValueError('expected true, false or "auto"')
        return value


class LTX2ProjectSettings(_Strict):
    model: str = ""  # a diffusers LTX-2 folder
    preset: Literal["distilled", "dev"] = "distilled"
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    device: str = "cuda"
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = None
    max_frames: int = Field(121, ge=9)
    establishing_strength: float = Field(0.6, ge=0.0, le=1.0)
    previous_strength: float = Field(1.0, ge=0.0, le=1.0)
    character_strength: float = Field(0.35, ge=0.0, le=1.0)
    image_crf: int | None = Field(None, ge=0, le=51)
    control: Literal["canny", "none"] = "canny"  # computed from the animatic's frames
    control_lora: str | None = None  # the IC-LoRA for that control (.safetensors)
    control_lora_scale: float = Field(1.0, ge=0.0)
    control_strength: float = Field(1.0, ge=0.0, le=1.0)
    reference_downscale: int | None = Field(None, ge=1)
    camera_loras: dict[str, str] = Field(default_factory=dict)  # camera move → .safetensors
    camera_lora_scale: float = Field(1.0, ge=0.0)
    audio: bool = True  # the sound made with shots without dialogue goes to the FX stem
    lip_sync: bool = True  # dialogue shots are generated on our TTS lines, held fixed
    upsampler: str | None = None  # an LTX-2 latent upsampler: two stages
    vae_tiling: bool = False
    cpu_offload: bool = False


class EngineSettings(_Strict):
    name: Literal["animatic", "clips", "ltx", "ltx2"] = "animatic"
    burn_in: bool = False
    clips: ClipsSettings = Field(default_factory=ClipsSettings)
    ltx: LTXProjectSettings = Field(default_factory=LTXProjectSettings)
    ltx2: LTX2ProjectSettings = Field(default_factory=LTX2ProjectSettings)


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
    video: Literal["h264", "prores"]
    loudness: float
    true_peak: float
    stems: bool = False
    exports: bool = False


DELIVERY_PROFILES: dict[str, DeliveryProfile] = {
    "web": DeliveryProfile(name="web", video="h264", loudness=-14.0, true_peak=-1.0),
    "broadcast-ebu": DeliveryProfile(name="broadcast-ebu", video="prores", loudness=-23.0,
                                     true_peak=-1.0),
    "broadcast-atsc": DeliveryProfile(name="broadcast-atsc", video="prores", loudness=-24.0,
                                      true_peak=-2.0),
    "master": DeliveryProfile(name="master", video="prores", loudness=-23.0, true_peak=-1.0,
                              stems=True, exports=True),
}


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

