"""The engines' registry: each generation engine's name, its settings model and how it runs.

One entry per engine says everything the front doors need to know of it: the
project file's ``[engine.NAME]`` section is checked against its settings model (the
one definition of those settings: the engine is constructed with them), the CLI's
``--engine`` choices and the service's validation list the registered names, and
:func:`settings_for` turns a project's section into what the engine is built with
(paths resolved against the project's folder, CLI overrides applied). A new engine
registers itself here once and touches none of those files.

The kernel imports no stage: an entry names its factory as ``"module:attribute"``,
imported only when the engine is built (:func:`aiprod_post.generation.engine.engine_by_name`).

>>> sorted(names())
['animatic', 'clips', 'ltx', 'ltx2']
>>> get("ltx").gpu, get("animatic").gpu
(True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import AiprodError

__all__ = ["EngineSpec", "register", "unregister", "names", "get", "find", "known", "served",
           "section_of", "settings_for", "uses_gpu", "memory_for", "AnimaticSettings",
           "ClipsSettings", "LTXSettings", "LTX2Settings"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- the engines' settings


class AnimaticSettings(_Strict):
    """The animatic's settings (``[engine] burn_in``: the shot label burnt into the picture)."""

    burn_in: bool = False


class ClipsSettings(_Strict):
    """``[engine.clips]``: footage from a folder (``3A.mov``, ``3B_take2.mp4`` …)."""

    folder: str | None = None
    fit: Literal["crop", "letterbox"] = "crop"
    fill: Literal["hold", "loop"] = "hold"
    media: dict[str, str] = Field(default_factory=dict)
    #: the footage's colour space (a name of the pinned OpenColorIO config); None: Rec.709
    colourspace: str | None = None


_Dtype = Literal["bfloat16", "float16", "float32"]
_Preset = Literal["distilled", "dev"]


class LTXSettings(_Strict):
    """``[engine.ltx]``: LTX-Video through diffusers, local weights only."""

    model: str = ""
    config: str | None = None  # a local diffusers folder, for single-file checkpoints
    text_encoder: str | None = None
    tokenizer: str | None = None
    preset: _Preset = "distilled"
    dtype: _Dtype = "bfloat16"
    device: str = "cuda"
    max_frames: int = Field(121, ge=9)  # frames per generation (8n+1)
    establishing_strength: float = Field(0.6, ge=0.0, le=1.0)
    previous_strength: float = Field(1.0, ge=0.0, le=1.0)
    vae_tiling: bool = False
    cpu_offload: bool = False
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = None
    #: compile the transformer's repeated block: true, false, or "auto" (on CUDA, when the
    #: film's estimated GPU time repays the compile, counting what the cache already holds)
    compile: bool | Literal["auto"] = "auto"
    compile_mode: Literal["default", "reduce-overhead", "max-autotune",
                          "max-autotune-no-cudagraphs"] = "default"
    compile_backend: Literal["inductor", "eager"] = "inductor"  # eager: traces only
    #: compile ahead of time: the block is exported once and compiled by inductor into an
    #: artifact in the cache (``AIPROD_CACHE/aot``) that later runs load without tracing
    #: (inductor backend, no LoRAs, no CPU offload; else, or where the block cannot be
    #: exported, torch.compile); false: torch.compile each run
    precompile: bool = True
    #: the most frame counts a film is generated at (each is a compiled shape)
    max_buckets: int = Field(4, ge=1, le=16)
    #: a local latent upsampler (LTXLatentUpsamplerModel folder, or a pipeline folder with
    #: ``latent_upsampler/``): generate at half size, upsample the latents ×2, then refine
    upsampler: str | None = None
    upsample_steps: int = Field(10, ge=1)
    upsample_strength: float = Field(0.4, gt=0.0, le=1.0)  # denoise of the refining pass
    #: a character's reference image conditions the middle of the shot's first segment
    character_strength: float = Field(0.35, ge=0.0, le=1.0)

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_choice(cls, value: object) -> object:
        if value not in (True, False, "auto") or isinstance(value, int) and \
                not isinstance(value, bool):
            raise ValueError('expected true, false or "auto"')
        return value


class LTX2Settings(_Strict):
    """``[engine.ltx2]``: LTX-2 (picture and sound) through diffusers, local weights only."""

    model: str = ""  # a diffusers LTX-2 folder
    preset: _Preset = "distilled"
    dtype: _Dtype = "bfloat16"
    device: str = "cuda"
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = None
    max_frames: int = Field(121, ge=9)  # frames per generation (8n+1 on LTX-2's VAE)
    establishing_strength: float = Field(0.6, ge=0.0, le=1.0)
    previous_strength: float = Field(1.0, ge=0.0, le=1.0)
    character_strength: float = Field(0.35, ge=0.0, le=1.0)
    #: H.264 CRF that image keyframes are re-compressed at before encoding (what LTX-2 was
    #: trained on); None: the model's default, 0: none
    image_crf: int | None = Field(None, ge=0, le=51)
    #: the control signal computed from the animatic: edges of its frames, its depth pass or
    #: its pose pass
    control: Literal["canny", "depth", "pose", "none"] = "canny"
    control_lora: str | None = None  # a local IC-LoRA .safetensors for that control
    control_lora_scale: float = Field(1.0, ge=0.0)
    control_strength: float = Field(1.0, ge=0.0, le=1.0)  # how clean the reference looks
    #: reference size = generation size / this; None: the LoRA's own metadata, else 1
    reference_downscale: int | None = Field(None, ge=1)
    #: camera LoRAs by the plan's camera move: {"dolly": "loras/dolly-in.safetensors", ...}
    camera_loras: dict[str, str] = Field(default_factory=dict)
    camera_lora_scale: float = Field(1.0, ge=0.0)
    audio: bool = True  # the sound made with shots without dialogue goes to the FX stem
    lip_sync: bool = True  # dialogue shots are generated on our TTS lines, held fixed
    #: a local HDR IC-LoRA .safetensors: each shot's SDR generation is the reference of an
    #: HDR pass (LTX2HDRPipeline) whose scene-linear frames go to the hdr-pq / hdr-hlg
    #: masters with no 8-bit step (the SDR picture: those frames clipped at diffuse white)
    hdr_lora: str | None = None
    hdr_lora_scale: float = Field(1.0, ge=0.0)
    #: the HDR LoRA's pre-computed text-connector embeddings where it comes with them (a
    #: .safetensors of ``video_context`` and ``audio_context``); none: the shot's prompt
    hdr_embeddings: str | None = None
    #: a local LTX2LatentUpsamplerModel (or a folder with latent_upsampler/): two stages
    upsampler: str | None = None
    vae_tiling: bool = False
    cpu_offload: bool = False
    #: as ``[engine.ltx]``'s: compile the transformer's repeated block (true, false, or
    #: "auto": where the film's estimated GPU time repays it), and the most frame counts
    #: a film is generated at (each a compiled shape)
    compile: bool | Literal["auto"] = "auto"
    compile_mode: Literal["default", "reduce-overhead", "max-autotune",
                          "max-autotune-no-cudagraphs"] = "default"
    compile_backend: Literal["inductor", "eager"] = "inductor"  # eager: traces only
    #: as ``[engine.ltx]``'s, one artifact per shape (with LoRAs: built with the control
    #: LoRA on, run while only it is; not with fp8)
    precompile: bool = True
    max_buckets: int = Field(4, ge=1, le=16)
    #: the transformer blocks' linear layers in FP8 (e4m3 weights and row-scaled inputs
    #: on the FP8 tensor cores, :mod:`.fp8`): half their memory, faster products, not
    #: bit-identical to bf16; not with LoRAs
    fp8: bool = False


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class EngineSpec:
    """What the front doors know of an engine."""

    name: str
    #: the engine's settings: the one definition, read from ``[engine.NAME]``
    settings: type[BaseModel]
    #: what builds it: ``"module:attribute"`` (imported when first built) or a callable
    factory: str | Callable[..., Any]
    #: settings that are paths (or {key: path} tables), resolved against the project folder
    paths: tuple[str, ...] = ()
    #: runs on a GPU (where its ``device`` setting says cuda)
    gpu: bool = False
    #: False: its settings are keys of ``[engine]`` itself, not of a section of their own
    section: bool = True
    #: settings the project keeps for the pipeline, not handed to the engine
    not_engine: tuple[str, ...] = ()
    #: offered by the HTTP service (which renders only what its machines can)
    served: bool = False
    description: str = ""


_REGISTRY: dict[str, EngineSpec] = {}


def register(spec: EngineSpec) -> EngineSpec:
    """Add (or replace) an engine; the project file, CLI and service accept it from then on."""
    if not spec.name.isidentifier() or spec.name in ("name", "burn_in"):
        raise AiprodError(f"an engine name must be an identifier other than name and "
                          f"burn_in, got {spec.name!r}")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """The registered engines' names, in registration order."""
    return list(_REGISTRY)


def get(name: str, where: str = "--engine") -> EngineSpec:
    """The entry of ``name``; an unknown name is an error listing the known ones."""
    try:
        return _REGISTRY[known(name)]
    except ValueError as exc:
        raise AiprodError(str(exc), where=where) from None


def find(name: str) -> EngineSpec | None:
    """The entry of ``name``, or None."""
    return _REGISTRY.get(name)


def known(name: str) -> str:
    """``name`` if an engine has it, else a ValueError listing them (for pydantic models'
    validators: the project file's ``[engine] name``, the service's requests)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown engine {name!r}: expected one of {', '.join(names())}")
    return name


def served() -> list[str]:
    """The engines the HTTP service offers."""
    return [n for n, s in _REGISTRY.items() if s.served]


class _Project(Protocol):
    engine: Any

    def path(self, value: str) -> Any: ...


def section_of(project: _Project, name: str) -> BaseModel:
    """``project``'s settings for engine ``name`` (its defaults where the file gives none)."""
    spec = get(name)
    if not spec.section:
        return spec.settings.model_validate({k: getattr(project.engine, k)
                                             for k in spec.settings.model_fields})
    value = (getattr(project.engine, "model_extra", None) or {}).get(name)
    if value is None:
        value = getattr(project.engine, name, None)
    return value if isinstance(value, spec.settings) else spec.settings()


def settings_for(project: _Project, name: str, overrides: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The settings engine ``name`` is constructed with, from ``project``: its section's
    values, paths resolved against the project's folder, and ``overrides`` (the CLI's, e.g.
    ``{"burn_in": True}``) where they are not None and are settings of this engine."""
    spec = get(name)
    out = section_of(project, name).model_dump(exclude=set(spec.not_engine))
    for key in spec.paths:
        value = out.get(key)
        if isinstance(value, dict):
            out[key] = {k: str(project.path(v)) for k, v in value.items()}
        elif value:
            out[key] = str(project.path(value))
    for key, value in (overrides or {}).items():
        if value is not None and key in out:
            out[key] = value
    return out


#: the files that hold a model's weights
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")


def memory_for(name: str, settings: dict[str, Any]) -> int:
    """Bytes of the weights that engine ``name``'s settings name on disk (its model folder,
    text encoder, upsampler, LoRAs), each file once: about what its loaded model holds in
    a worker's memory, and what a cluster node must have for it. 0 for an engine without a
    model (the animatic, the clips)."""
    spec = get(name)
    if not spec.gpu:
        return 0
    seen: set[Path] = set()
    for key in spec.paths:
        value = settings.get(key)
        for v in (value.values() if isinstance(value, dict) else [value]):
            p = Path(v) if v else None
            files = [p] if p and p.is_file() else p.rglob("*") if p and p.is_dir() else []
            seen.update(f.resolve() for f in files if f.suffix in _WEIGHTS and f.is_file())
    return sum(f.stat().st_size for f in seen)


def uses_gpu(name: str, settings: dict[str, Any]) -> bool:
    """Whether engine ``name`` built with ``settings`` takes a GPU (a shot of it takes one
    of the cluster's)."""
    return get(name).gpu and str(settings.get("device", "")).startswith("cuda")


register(EngineSpec("animatic", AnimaticSettings, "aiprod_post.generation.animatic:AnimaticEngine",
                    section=False, served=True,
                    description="previz drawn from the plan: sets, figures, camera"))
register(EngineSpec("clips", ClipsSettings, "aiprod_post.generation.clips:ClipsEngine",
                    paths=("folder", "media"), not_engine=("colourspace",),
                    description="footage from a folder, one file per shot"))
register(EngineSpec("ltx", LTXSettings, "aiprod_post.generation.ltx:LTXEngine",
                    paths=("model", "config", "text_encoder", "tokenizer", "upsampler"),
                    gpu=True, description="LTX-Video through diffusers"))
register(EngineSpec("ltx2", LTX2Settings, "aiprod_post.generation.ltx2:LTX2Engine",
                    paths=("model", "control_lora", "hdr_lora", "hdr_embeddings", "upsampler",
                           "camera_loras"),
                    gpu=True,
                    description="LTX-2 (picture and sound) through diffusers"))
