"""The ``ltx`` engine: LTX-Video through diffusers' condition pipeline, local weights only.

Each shot is generated from a prompt built from the plan (action, framing, camera
move, set, time of day, look) and conditioned on keyframes: the previous shot's last
frame for a continuous scene (strength 1, frame 0), the scene's establishing keyframe
otherwise (``establishing_strength``). LTX's constraints are handled here: frames are
8n+1 (a shot is generated at the next valid length and trimmed), sizes are multiples of
32 (generated at the next valid size and centre-cropped to the plan's), and a shot
longer than one generation is chained in segments, each conditioned on the end of
the last. Out of GPU memory, a shot is retried with VAE tiling, then with model CPU
offload, then with shorter segments, before it fails with an error that says so. On a
GPU the text embeddings are computed once per shot.

Shapes: every new input shape of a compiled transformer compiles again, and shot lengths
are shapes. So a film is generated at a few frame counts only (at most ``max_buckets``,
8n+1, chosen from the plan so that the frames generated and thrown away stay few) and
each generation is trimmed to the frames the plan asks for; the guidance batch (1, or 2
with classifier-free guidance) is fixed by the preset. On CUDA the transformer's
repeated block is compiled (regional compilation: one block's graph serves all 28),
with inductor's caches under the user's cache folder (``AIPROD_CACHE``), so a second run
of any film starts warm; ``compile = "auto"`` compiles only the shapes whose generations
repay their compile (the others run eagerly). The block is compiled with symbolic token
counts, so one graph serves every bucket. :meth:`LTXEngine.warm_up` compiles before the
first shot (``benchmarks/bench_ltx_film.py`` measures a whole film beside stock
diffusers, ``benchmarks/bench_ltx_gpu.py`` one shot, ``benchmarks/bench_ltx_compile.py``
the warm-up shape by shape).

Weights: a diffusers-format folder (``model_index.json``, transformer, vae,
text_encoder, tokenizer, scheduler), or a single-file checkpoint with a local diffusers
``config`` folder for the rest. Nothing is downloaded (``local_files_only``). With ``upsampler`` set (a local latent upsampler), each generation is LTX-Video's
multi-scale recipe: a first pass at half size, the latents upsampled ×2, and a short
refining pass at full size. A character with a reference image in the project is
conditioned on it in the middle of the shot's first segment (``character_strength``).
The LTX
weights carry their own licence (OpenRAIL-M for LTX-Video 0.9.5 and later; the LTX-2
Community License for LTX-2) and are not shipped with aiprod-post.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from pydantic import Field, ValidationError

from aiprod_post import engines
from aiprod_post.errors import AiprodError
from aiprod_post.files import sha256_file
from aiprod_post.plan import Framing, Shot

from .aot import one_line
from .engine import RenderContext, ShotRender, register

__all__ = ["LTXSettings", "LTXEngine", "PRESETS", "valid_frames", "valid_size", "shot_prompt",
           "NEGATIVE_PROMPT", "drop_module_mocks", "generation_lengths", "choose_buckets",
           "bucket_for", "cache_folder", "to_uint8_frames"]

NEGATIVE_PROMPT = ("worst quality, inconsistent motion, blurry, jittery, distorted, watermark, "
                   "text, subtitles, deformed faces, extra limbs")

#: the two model families' recommended settings (diffusers' LTX documentation)
PRESETS = {
    "distilled": {"num_inference_steps": 8, "guidance_scale": 1.0, "decode_timestep": 0.05,
                  "image_cond_noise_scale": 0.025},
    "dev": {"num_inference_steps": 40, "guidance_scale": 3.0, "decode_timestep": 0.05,
            "image_cond_noise_scale": 0.025},
}


class LTXSettings(engines.LTXSettings):
    """``[engine.ltx]`` (defined once, in :mod:`aiprod_post.engines`), and what only code
    sets: the text encoder's token budget and extra keyword arguments for the pipeline."""

    max_sequence_length: int = 128
    extra: dict = Field(default_factory=dict)


def valid_frames(n: int) -> int:
    """The smallest 8k+1 ≥ n.

    >>> [valid_frames(n) for n in (1, 9, 10, 72)]
    [1, 9, 17, 73]
    """
    return 8 * math.ceil(max(0, n - 1) / 8) + 1


def valid_size(width: int, height: int) -> tuple[int, int]:
    """The smallest multiples of 32 that hold the frame.

    >>> valid_size(1920, 1080)
    (1920, 1088)
    """
    return 32 * math.ceil(width / 32), 32 * math.ceil(height / 32)


def generation_lengths(duration: int, max_frames: int) -> list[int]:
    """Frames each generation of a shot must deliver: the first segment, then chained
    segments, each of which also holds the frame it is conditioned on (its first).

    >>> generation_lengths(235, 121)
    [121, 115]
    >>> generation_lengths(40, 121)
    [40]
    """
    out: list[int] = []
    produced = 0
    while produced < duration:
        chained = 1 if produced else 0
        need = min(duration - produced + chained, max_frames)
        out.append(need)
        produced += need - chained
    return out


def choose_buckets(needs: Iterable[int], max_buckets: int = 4) -> tuple[int, ...]:
    """At most ``max_buckets`` frame counts (8n+1) that hold every need, chosen so the
    frames generated beyond the needs (then trimmed) are fewest (an exact dynamic
    programme over the sorted distinct needs).

    >>> choose_buckets([9, 40, 41, 121, 100], max_buckets=2)
    (41, 121)
    >>> choose_buckets([10, 17])
    (17,)
    """
    counts: dict[int, int] = {}
    for n in needs:
        counts[n] = counts.get(n, 0) + 1
    values = sorted(counts)
    if not values:
        return ()
    k = min(max_buckets, len(values))
    def waste(i: int, j: int) -> int:  # needs i..j in the bucket that holds need j
        b = valid_frames(values[j])
        return sum((b - values[t]) * counts[values[t]] for t in range(i, j + 1))

    inf = float("inf")
    m = len(values)
    best = [[inf] * (m + 1) for _ in range(k + 1)]  # best[g][j]: first j needs in g buckets
    cut = [[0] * (m + 1) for _ in range(k + 1)]
    best[0][0] = 0
    for g in range(1, k + 1):
        for j in range(1, m + 1):
            for i in range(g - 1, j):
                cost = best[g - 1][i] + waste(i, j - 1)
                if cost < best[g][j]:
                    best[g][j], cut[g][j] = cost, i
    g = min(range(1, k + 1), key=lambda g: (best[g][m], g))
    buckets = []
    j = m
    while g > 0:
        buckets.append(valid_frames(values[j - 1]))
        j, g = cut[g][j], g - 1
    return tuple(sorted(set(buckets)))


def bucket_for(need: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``need`` frames (or ``need``'s own 8n+1 if none does).

    >>> bucket_for(50, (41, 121))
    121
    """
    fit = [b for b in buckets if b >= need]
    return min(fit) if fit else valid_frames(need)


def cache_folder() -> Path:
    """The user's cache folder: ``AIPROD_CACHE``, else ``~/.cache/aiprod-post``."""
    return Path(os.environ.get("AIPROD_CACHE", Path.home() / ".cache" / "aiprod-post"))


_FRAMING_WORDS = {
    Framing.WIDE: "wide shot", Framing.MEDIUM: "medium shot", Framing.CLOSE_UP: "close-up",
    Framing.OVER_THE_SHOULDER: "over-the-shoulder shot", Framing.TWO_SHOT: "two-shot",
    Framing.INSERT: "insert close-up of a detail", Framing.TITLE: "title card",
}


def shot_prompt(shot: Shot, context: RenderContext, look: str | None = None) -> str:
    """A prompt in the way LTX-Video was trained on: what we see, then how it is shot."""
    scene = context.scene
    where = {"INT": "Interior", "EXT": "Exterior", "EST": "Exterior", "INT/EXT": "Interior and "
             "exterior"}.get(scene.int_ext or "", "")
    parts = []
    if shot.action:
        parts.append(shot.action)
    if shot.characters:
        # the cast's description names the person the same way in every shot
        who = ", ".join(context.cast.get(c) or c.title() for c in shot.characters)
        speaking = [context.cast.get(d.speaker) or d.speaker.title() for d in shot.dialogue]
        parts.append(f"{who} in frame" + (f"; {speaking[0]} is speaking" if speaking else ""))
    parts.append(f"{_FRAMING_WORDS.get(shot.framing, 'shot')}, "
                 f"{'static camera' if shot.camera_move.value == 'static' else 'camera ' + shot.camera_move.value}")
    setting = " ".join(p for p in (where, scene.location.lower()) if p)
    if setting:
        parts.append(f"{setting}, {scene.light} light")
    if look:
        parts.append(f"{look.replace('_', ' ')} look")
    parts.append("cinematic, film still, natural motion")
    return ". ".join(p.strip(". ") for p in parts) + "."


def drop_module_mocks() -> None:
    """colour-science puts a MagicMock in ``sys.modules["matplotlib"]`` when matplotlib is
    missing; diffusers' import probes then fail on it. Remove such stand-ins (they are not
    modules) before importing diffusers."""
    import sys
    import types

    for name in ("matplotlib",):
        mod = sys.modules.get(name)
        if mod is not None and not isinstance(mod, types.ModuleType):
            del sys.modules[name]


def _weights_identity(folder: Path) -> dict:
    """A hash of the weights files (cached by size and time, hashing GBs is slow)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".gguf"))
    if folder.is_file():
        files = [folder]
    cache = cache_folder()
    cache.mkdir(parents=True, exist_ok=True)
    index_path = cache / "weights-hashes.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    digest = hashlib.sha256()
    for p in files:
        st = p.stat()
        key = f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if key not in index:
            index[key] = sha256_file(p)
        digest.update(index[key].encode())
    try:
        index_path.write_text(json.dumps(index))
    except OSError:
        pass
    return {"sha256": digest.hexdigest(), "files": len(files)}


def checked_settings(cls, settings: dict, section: str, family: str, presets: dict):
    """``cls(**settings)`` for ``[engine.SECTION]``: unknown keys, bad values and a preset
    not in ``presets`` are errors naming them (the ltx and ltx2 engines share this)."""
    unknown = set(settings) - set(cls.model_fields)
    if unknown:
        raise AiprodError(f"unknown {section} setting(s): {', '.join(sorted(unknown))}",
                          where=f"[engine.{section}]")
    try:
        s = cls.model_validate({k: os.fspath(v) if isinstance(v, os.PathLike) else v
                                for k, v in settings.items()})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "literal_error":  # e.g. "unknown control 'pose': expected …"
            msg = f"unknown {key} {err['input']!r}: {msg.replace('Input should be', 'expected')}"
        raise AiprodError(msg, where=f"[engine.{section}] {key}") from None
    if s.preset not in presets:
        raise AiprodError(f"unknown {family} preset {s.preset!r}: expected "
                          f"{' or '.join(presets)}", where=f"[engine.{section}] preset")
    return s


def _lora_identity(path: Path) -> dict:
    meta = {}
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 - a LoRA without readable metadata still has a hash
        pass
    return {"path": str(path), "sha256": sha256_file(path),
            "reference_downscale_factor": int(meta["reference_downscale_factor"])
            if "reference_downscale_factor" in meta else None}


class CastLoras:
    """Characters' LoRAs (the cast file's ``lora`` and ``lora_weight``): each loaded as an
    adapter and switched on for the shots the character is in.

    ``loras``: character → ``{"path": local .safetensors, "weight": scale}``; a path that is
    not a file is an error naming the character's key in the cast file."""

    def __init__(self, loras: dict[str, dict] | None) -> None:
        self.loras: dict[str, tuple[str, float]] = {}
        self.adapters: dict[str, str] = {}  # character → adapter name
        for name, lora in sorted((loras or {}).items()):
            path = str(lora["path"])
            if not Path(path).is_file():
                raise AiprodError("no such LoRA file (expected a local .safetensors)",
                                  source=path, where=f"cast file: characters.{name}.lora")
            self.loras[name] = (path, float(lora.get("weight", 1.0)))
            self.adapters[name] = f"cast_{len(self.adapters)}"

    def load(self, pipe, identity: dict, adapters: dict[str, str] | None = None) -> None:
        """Load every character's LoRA into ``pipe`` as an adapter (``adapters``: adapter
        name → ``cast:NAME``), their hashes into ``identity["loras"]`` as ``cast:NAME``."""
        for name, (path, _) in self.loras.items():
            adapter = self.adapters[name]
            try:
                pipe.load_lora_weights(path, adapter_name=adapter)
            except ImportError as exc:
                raise AiprodError("LoRAs need peft (pip install 'aiprod-post[ltx]')") from exc
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise AiprodError(f"cannot load the LoRA: {exc}", source=path,
                                  where=f"cast file: characters.{name}.lora") from None
            if adapters is not None:
                adapters[adapter] = f"cast:{name}"
            identity.setdefault("loras", {})[f"cast:{name}"] = _lora_identity(Path(path))

    def for_shot(self, shot: Shot) -> tuple[list[str], list[float], list[str]]:
        """(adapter names, weights, ``cast:NAME`` kinds) of the characters in ``shot``."""
        names = [n for n in self.adapters if n in shot.characters]
        return ([self.adapters[n] for n in names], [self.loras[n][1] for n in names],
                [f"cast:{n}" for n in names])


@register("ltx")
class LTXEngine:
    name = "ltx"
    #: compile the block with symbolic token counts: one graph for every bucket (and for
    #: a shorter segment after running out of memory) instead of one static graph per
    #: bucket. On an H200 (benchmarks/bench_ltx_compile.py, the example's 4 buckets) the
    #: warm-up took 18.5 s cold beside 29.1 s static, warm ~9.5 s beside 10.6 s, the
    #: shots as fast. ltx2 keeps static shapes (its class attribute says why)
    dynamic_shapes = True
    #: the block compiled ahead of time (one artifact for every shape) where the settings
    #: allow (:func:`aot_package`): not with LoRAs, whose modules and scale it would not see
    aot_blocks = property(lambda self: not self.cast.loras)
    #: (seconds to build an artifact, to load one, the first build's and the first load's
    #: start-up)
    _aot_costs = property(lambda self: (_AOT_BUILD_S, _AOT_LOAD_S, 0.0, 0.0))

    def _aot_identity(self) -> list:
        """What the block's artifact depends on besides the model and torch."""
        return [self.name, self.s.dtype, 2 if self._guidance() else 1,
                self.s.max_sequence_length]
    #: (seconds to compile one shape cold, warm; the compiled transformer's speed-up)
    _compile_costs = property(lambda self: (_COMPILE_COLD_S, _COMPILE_WARM_S,
                                            _COMPILED_SPEEDUP, _COMPILE_START_COLD_S,
                                            _COMPILE_START_WARM_S))

    def __init__(self, cast_loras: dict[str, dict] | None = None, **settings) -> None:
        self.s = checked_settings(LTXSettings, settings, "ltx", "LTX", PRESETS)
        #: the characters' LoRAs (the cast file's), on for the shots they are in
        self.cast = CastLoras(cast_loras)
        self._pipe = None
        self._upsample = None
        self._embeddings: dict = {}
        #: (width, height, steps) of each denoising pass run, for the manifest and tests
        self.passes: list[tuple[int, int, int]] = []
        #: (frames, width, height) of each generation, for the benchmark and tests
        self.generations: list[tuple[int, int, int]] = []
        self.tried: list[str] = []
        #: the frame counts shots are generated at; set from the film by :meth:`plan_film`
        self.buckets: tuple[int, ...] = ()
        self.compiled = False
        #: the shapes the warm-up compiled; the others run eagerly (None: all compiled,
        #: on first use)
        self.compiled_shapes: set[tuple] | None = None
        self._aot_package = None

    @classmethod
    def from_pipeline(cls, pipe, **settings) -> "LTXEngine":
        """An engine around a pipeline already built (benchmarks: random weights built from a
        config); set up for the settings' device like a loaded one."""
        engine = cls(**settings)
        engine._setup(pipe)
        engine.identity = {"model": "(in memory)", "dtype": engine.s.dtype,
                           "pipeline": type(pipe).__name__, "settings": engine.s.model_dump()}
        return engine

    # ---- loading
    def _check_paths(self) -> Path:
        if not self.s.model:
            raise AiprodError("the ltx engine needs a local model path ([engine.ltx] model)",
                              where="[engine.ltx] model")
        path = Path(self.s.model)
        if not path.exists():
            raise AiprodError("no such model path: expected a diffusers folder with "
                              "model_index.json, or a single-file .safetensors checkpoint",
                              source=path)
        if path.is_dir():
            needed = ["model_index.json", "transformer", "vae", "scheduler"]
            if not (self.s.text_encoder and self.s.tokenizer):
                needed += ["text_encoder", "tokenizer"]
            missing = [n for n in needed if not (path / n).exists()]
            if missing:
                raise AiprodError(f"not a diffusers LTX-Video folder: missing {', '.join(missing)}"
                                  " (expected model_index.json, transformer/, vae/, scheduler/, "
                                  "text_encoder/, tokenizer/)", source=path)
        else:
            if not self.s.config:
                raise AiprodError("a single-file checkpoint needs [engine.ltx] config: a local "
                                  "diffusers folder with the other components' configs",
                                  source=path)
            for name in ("text_encoder", "tokenizer"):
                if not getattr(self.s, name) and not (Path(self.s.config) / name).exists():
                    raise AiprodError(f"no {name}: set [engine.ltx] {name} to a local folder",
                                      source=path)
        for name in ("text_encoder", "tokenizer", "config", "upsampler"):
            value = getattr(self.s, name)
            if value and not Path(value).exists():
                raise AiprodError(f"no such {name} path", source=value)
        if self.s.upsampler and not (self._upsampler_dir() / "config.json").is_file():
            raise AiprodError("not a latent upsampler folder: expected config.json (an "
                              "LTXLatentUpsamplerModel) or latent_upsampler/config.json",
                              source=self.s.upsampler)
        return path

    def _upsampler_dir(self) -> Path:
        up = Path(self.s.upsampler or "")
        return up / "latent_upsampler" if (up / "latent_upsampler").is_dir() else up

    def check(self) -> None:
        """Fail before any shot is rendered when the model cannot be loaded at all."""
        self.pipeline()

    def pipeline(self):
        if self._pipe is not None:
            return self._pipe
        path = self._check_paths()
        prefetch_compiler(self)  # beside the load from disk
        pipe = self._load(path)
        loras: dict = {}
        self.cast.load(pipe, loras)  # before the pipeline is placed on its device
        if self.cast.adapters:
            pipe.disable_lora()
        self._setup(pipe)
        self.identity = {"model": str(path), **_weights_identity(path), "dtype": self.s.dtype,
                         "pipeline": type(pipe).__name__, "settings": self.s.model_dump(),
                         **loras}
        if self.s.upsampler:
            self.identity["upsampler"] = _weights_identity(self._upsampler_dir())
        return pipe

    def _torch_dtype(self):
        import torch

        return {"bfloat16": torch.bfloat16, "float16": torch.float16,
                "float32": torch.float32}[self.s.dtype]

    def _load(self, path: Path):
        """The pipeline from local files (and the latent upsampler's model, if set)."""
        drop_module_mocks()
        try:
            from diffusers import (
                AutoencoderKLLTXVideo,
                LTXConditionPipeline,
                LTXVideoTransformer3DModel,
            )
            from transformers import AutoTokenizer, T5EncoderModel
        except ImportError as exc:
            raise AiprodError("the ltx engine needs torch, diffusers and transformers "
                              "(pip install 'aiprod-post[ltx]')") from exc
        dtype = self._torch_dtype()
        kw = {"local_files_only": True, "dtype": dtype}
        extra = {}
        if self.s.text_encoder:
            extra["text_encoder"] = T5EncoderModel.from_pretrained(self.s.text_encoder, **kw)
        if self.s.tokenizer:
            extra["tokenizer"] = AutoTokenizer.from_pretrained(self.s.tokenizer,
                                                               local_files_only=True)
        try:
            if path.is_dir():
                pipe = LTXConditionPipeline.from_pretrained(path, **kw, **extra)
            else:
                cfg = Path(self.s.config)
                transformer = LTXVideoTransformer3DModel.from_single_file(
                    str(path), config=str(cfg / "transformer"), **kw)
                vae = AutoencoderKLLTXVideo.from_single_file(str(path), config=str(cfg / "vae"),
                                                             **kw)
                pipe = LTXConditionPipeline.from_pretrained(cfg, transformer=transformer, vae=vae,
                                                            **kw, **extra)
        except (OSError, ValueError, KeyError) as exc:
            raise AiprodError(f"cannot load LTX-Video: {exc}", source=path) from None
        self._upsampler_model = None
        if self.s.upsampler:
            from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

            try:
                self._upsampler_model = LTXLatentUpsamplerModel.from_pretrained(
                    self._upsampler_dir(), local_files_only=True, torch_dtype=dtype)
            except (OSError, ValueError, KeyError) as exc:
                raise AiprodError(f"cannot load the latent upsampler: {exc}",
                                  source=self.s.upsampler) from None
        return pipe

    def _setup(self, pipe) -> None:
        """Device, offload, tiling and the upsampler; compiling waits for :meth:`warm_up`
        (or the first generation, when ``compile = true`` and no warm-up ran)."""
        import torch

        device = self.s.device
        if device == "cuda" and not torch.cuda.is_available():
            raise AiprodError("the ltx engine's device is cuda but no CUDA GPU is present; "
                              "set [engine.ltx] device = \"cpu\" (slow) or use the animatic "
                              "engine")
        if self.s.cpu_offload and device == "cuda":
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(device)
        if self.s.vae_tiling:
            pipe.vae.enable_tiling()
        self._upsample = None
        if getattr(self, "_upsampler_model", None) is not None:
            from diffusers import LTXLatentUpsamplePipeline

            self._upsample = LTXLatentUpsamplePipeline(vae=pipe.vae,
                                                       latent_upsampler=self._upsampler_model)
            self._upsample.latent_upsampler.to(pipe._execution_device if self.s.cpu_offload
                                               else device)
            self._upsample.set_progress_bar_config(disable=True)
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._embeddings = {}

    # ---- shapes and compilation
    def _max_segment(self) -> int:
        """The longest generation: ``max_frames`` rounded down to 8n+1."""
        return max(9, 8 * ((self.s.max_frames - 1) // 8) + 1)

    def plan_film(self, durations: Iterable[int]) -> tuple[int, ...]:
        """Choose the frame counts (buckets) the film's shots are generated at, from every
        shot's length (handles included); shots are then generated at the smallest bucket
        that holds each segment and trimmed to the plan's frames."""
        needs = [n for d in durations for n in generation_lengths(d, self._max_segment())]
        self.buckets = choose_buckets(needs, self.s.max_buckets)
        return self.buckets

    def lengths_for(self, duration: int) -> list[int]:
        """The frame counts a shot of ``duration`` frames is generated at (what its
        picture depends on besides the shot, for the stage cache's key)."""
        return [bucket_for(n, self.buckets) for n in
                generation_lengths(duration, self._max_segment())]

    def _sizes(self, width: int, height: int) -> list[tuple[int, int]]:
        """The generation sizes of one shot: the plan's size rounded up to multiples of 32,
        or, with the upsampler, half of it first."""
        if not self.s.upsampler:
            return [valid_size(width, height)]
        half = valid_size(math.ceil(width / 2), math.ceil(height / 2))
        return [half, (2 * half[0], 2 * half[1])]

    def _guidance(self) -> bool:
        g = self.s.guidance_scale if self.s.guidance_scale is not None \
            else PRESETS[self.s.preset]["guidance_scale"]
        return g > 1.0

    def _shape_key(self, frames: int, w: int, h: int) -> str:
        """What one compiled shape depends on, as a key of the compiled-shapes index."""
        import torch

        pipe = self.pipeline()
        device = torch.cuda.get_device_name() if self.s.device == "cuda" else self.s.device
        return hashlib.sha256(json.dumps([
            torch.__version__, device, self.s.dtype, self.s.compile_mode,
            self.s.compile_backend, dict(pipe.transformer.config), frames, w, h,
            2 if self._guidance() else 1, self.s.max_sequence_length]
            + (["dynamic"] if self.dynamic_shapes else []), sort_keys=True,
            default=str).encode()).hexdigest()[:24]

    def _transformer_seconds(self, frames: int, w: int, h: int) -> float:
        """Eager transformer seconds of one generation, from its arithmetic: 2 FLOPs per
        parameter per token, self-attention's 4·T²·d per layer; steps × guidance batch."""
        pipe = self.pipeline()
        cfg = pipe.transformer.config
        tokens = ((frames - 1) // pipe.vae_temporal_compression_ratio + 1) * \
            (h // pipe.vae_spatial_compression_ratio) * (w // pipe.vae_spatial_compression_ratio)
        params = sum(p.numel() for p in pipe.transformer.parameters())
        dim = cfg.num_attention_heads * cfg.attention_head_dim
        flops = 2 * params * tokens + 4 * cfg.num_layers * tokens ** 2 * dim
        steps = self.s.steps or PRESETS[self.s.preset]["num_inference_steps"]
        if self.s.upsampler:
            steps = steps / 4 + self.s.upsample_steps  # half size first: ~¼ the tokens
        return flops * steps * (2 if self._guidance() else 1) / (_EAGER_TFLOPS * 1e12)

    def _film_shapes(self, width: int, height: int) -> list[tuple[int, int, int]]:
        """(frames, width, height) of every generation shape the film needs."""
        return [(b, w, h) for b in self.buckets for w, h in self._sizes(width, height)]

    def _film_gpu_seconds(self, durations: Sequence[int], width: int, height: int) -> float:
        """The eager transformer's seconds for the film's generations."""
        return sum(self._transformer_seconds(b, w, h) for d in durations
                   for b in self.lengths_for(d) for w, h in self._sizes(width, height))

    def _graph_of(self, shape: tuple) -> tuple:
        """What one compiled graph of the block covers: a shape (static shapes), or with
        :attr:`dynamic_shapes` every frame count and size of the same batch."""
        return tuple(shape[3:]) if self.dynamic_shapes else tuple(shape)

    def _compile_decision(self, durations: Sequence[int], width: int, height: int
                          ) -> tuple[bool, str, float]:
        """Whether to compile, why, and the compile seconds expected."""
        return self._compile_plan(durations, width, height)[:3]

    def _compile_plan(self, durations: Sequence[int], width: int, height: int
                      ) -> tuple[bool, str, float, list[tuple]]:
        """Whether to compile, why, the compile seconds expected, and the film's shapes
        to compile: all of them (``compile = true``), or with ``"auto"`` those whose
        generations save more transformer time than their graph costs to compile (cold or
        warm, as the cache holds it; the first graph also pays compiling's start-up). A
        shape left out runs eagerly (:meth:`_stance`)."""
        cold_s, warm_s, speedup, start_cold, start_warm = self._compile_costs
        shapes = self._film_shapes(width, height)
        aot = aot_package(self)
        if aot is not None and aot.dynamic and aot.failed_for(None):
            aot = None  # its build failed before: compiled just in time (warm_up)
        graphs: dict[tuple, list[tuple]] = {}
        if aot is not None:  # one artifact serves every shape, or one per shape
            for x in shapes:
                graphs.setdefault(("package",) if aot.dynamic else tuple(x), []).append(x)
            cached = {g for g, xs in graphs.items()
                      if aot.cached_for(None if aot.dynamic else xs[0])}
            cold_s, warm_s, start_cold, start_warm = self._aot_costs
            if self._builds_elsewhere(aot):  # the film pays the load only
                cold_s, start_cold = warm_s, start_warm
        else:
            index = _compiled_index()
            for x in shapes:
                graphs.setdefault(self._graph_of(x), []).append(x)
            cached = {g for g, xs in graphs.items()
                      if all(self._shape_key(*x) in index for x in xs)}

        def cost(chosen: Sequence[tuple]) -> float:
            if not chosen:
                return 0.0
            cold = [g for g in chosen if g not in cached]
            return (start_cold if cold else start_warm) + len(cold) * cold_s + \
                (len(chosen) - len(cold)) * warm_s

        everything = [x for g in graphs for x in graphs[g]]
        if self.s.compile is True:
            return True, "compile = true", cost(list(graphs)), everything
        if self.s.compile is False:
            return False, "compile = false", 0.0, []
        if self.s.device != "cuda" or self.s.cpu_offload:
            return False, "auto: compiles on CUDA only, without CPU offload", 0.0, []
        seconds = self._shape_gpu_seconds(durations, width, height)
        saves = {g: sum(seconds[x] for x in xs) * (1 - 1 / speedup) for g, xs in graphs.items()}
        order = sorted(graphs, key=lambda g: -saves[g])
        k = max(range(len(order) + 1), key=lambda k: (
            sum(saves[g] for g in order[:k]) - cost(order[:k]), -k))
        chosen = order[:k]
        gpu = sum(seconds.values())
        what = "package" if aot is not None else "graph" if self.dynamic_shapes else "shape"
        return bool(chosen), (
            f"auto: {len(chosen)} of {len(graphs)} {what}s compiled, ~"
            f"{sum(saves[g] for g in chosen):.0f} s saved for ~{cost(chosen):.0f} s of "
            f"compiling (all: ~{sum(saves.values()):.0f} s of ~{gpu:.0f} s of transformer "
            f"time for ~{cost(order):.0f} s, {len(graphs) - len(cached)} not in the cache)"), \
            cost(chosen), [x for g in chosen for x in graphs[g]]

    def _shape_gpu_seconds(self, durations: Sequence[int], width: int, height: int
                           ) -> dict[tuple, float]:
        """The eager transformer's seconds at each of the film's shapes."""
        gens = Counter(b for d in durations for b in self.lengths_for(d))
        return {x: gens[x[0]] * self._transformer_seconds(*x)
                for x in self._film_shapes(width, height)}

    def _stance(self, shape: tuple):
        """Where a generation of ``shape`` runs: compiled, or eagerly where the warm-up
        left its shape out (``compile = "auto"``: it would not pay)."""
        if self.compiled_shapes is None or tuple(shape) in self.compiled_shapes:
            return nullcontext()
        import torch

        return torch.compiler.set_stance("force_eager")

    def _compile_blocks(self) -> None:
        """Compile the transformer's repeated block in place (regional compilation), with
        inductor's caches under the user's cache folder."""
        import torch

        if self.compiled:
            return
        use_inductor_cache()
        # each bucket (and size, with the upsampler; and a reference image's extra tokens)
        # is one more entry of the block's code: leave room beyond dynamo's default of 8
        limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") \
            else "cache_size_limit"
        setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), 64))
        # static shapes: the buckets are the shapes (``dynamic_shapes``: one graph for all
        # frame counts, traced with symbolic token counts; see the class attribute)
        self.pipeline().transformer.compile_repeated_blocks(
            mode=None if self.s.compile_mode == "default" else self.s.compile_mode,
            backend=self.s.compile_backend, dynamic=self.dynamic_shapes, fullgraph=True)
        self.compiled = True

    def warm_up(self, durations: Sequence[int], width: int, height: int,
                fps: float | None = None) -> dict:
        """Choose the film's buckets and compile the shapes that pay (all with ``compile =
        true``; :meth:`_compile_plan`) now, before the first shot: one step per graph
        through the blocks that compile it (:func:`trace_blocks`), no decode; the shapes
        left out run eagerly. Returns what was done, for the report. (``fps``: the film's frame rate, which
        LTX-Video's shapes do not depend on; ltx2's sound does.)"""
        t0 = time.perf_counter()
        self.pipeline()
        self.plan_film(durations)
        compile_, reason, expected, chosen = self._compile_plan(durations, width, height)
        info = {"buckets": list(self.buckets), "compile": compile_, "reason": reason,
                "expected_seconds": round(expected, 1), "shapes": [],
                "eager_shapes": [list(x) for x in self._film_shapes(width, height)
                                 if x not in chosen]}
        aot = aot_package(self) if compile_ else None
        if aot is not None:
            info["aot"] = self._use_package(aot, chosen)
            if "error" in info["aot"]:
                aot = None  # torch.compile then, below
            else:
                info["shapes"] += info["aot"].pop("shapes")
                self.compiled_shapes = set(chosen)
        if compile_ and aot is None:
            self._compile_blocks()
            info["cache"] = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
            index = _compiled_index()
            graphs: dict[tuple, list[tuple]] = {}
            for x in chosen:
                graphs.setdefault(self._graph_of(x), []).append(x)
            for xs in graphs.values():
                # one trace per graph: with dynamic shapes at its largest shape (the hint
                # its kernels are tuned for), the others then only checked by its guards
                t = time.perf_counter()
                self._trace(*max(xs))
                for x in xs:
                    index[self._shape_key(*x)] = round(time.perf_counter() - t, 1)
                info["shapes"].append([*max(xs), round(time.perf_counter() - t, 2)])
            self.compiled_shapes = set(chosen)
            _save_compiled_index(index)
        info["seconds"] = round(time.perf_counter() - t0, 3)
        return info

    def _use_package(self, aot, chosen: Sequence[tuple]) -> dict:
        """Load the block's ahead-of-time artifacts (building each first, from a step's
        block inputs, where the cache has none): the one of a dynamic block (built at the
        largest shape, the hint its kernels are tuned for), or one per chosen shape; then
        put them in every block. What was done, for the report; with ``error`` where the
        block could not be exported or compiled ahead of time, or an artifact of the cache
        could not be loaded (the caller compiles it just in time instead). A failed build
        is remembered in the cache (later runs compile just in time without trying it
        again); an artifact that fails to load is removed (the next run builds it)."""
        t = time.perf_counter()
        todo = [None] if aot.dynamic else sorted(set(chosen))
        info: dict = {"package": str(aot.path_for(todo[0])), "built": False,
                      "build_seconds": 0.0, "load_seconds": 0.0, "shapes": []}
        try:
            for x in todo:
                s = time.perf_counter()
                shape = max(chosen) if x is None else x
                failed = aot.failed_for(x)
                if failed:
                    info["error"] = f"an earlier build failed: {failed}"
                    return info
                loaded = aot.poll()  # an earlier film's build that ended: loaded if made
                if loaded is not None:
                    info["load_seconds"] += loaded
                    info["shapes"].append([*shape, round(time.perf_counter() - s, 2)])
                    continue
                if aot.building():  # (an earlier film's, or another run's)
                    info["background"] = aot._building_info()
                    info["shapes"].append([*shape, round(time.perf_counter() - s, 2)])
                    continue
                if not aot.cached_for(x) and self._builds_elsewhere(aot):
                    use_inductor_cache()
                    # the first shots run the block's own code meanwhile; each generation
                    # then looks whether the artifact is ready
                    try:
                        started = aot.build_elsewhere(lambda: self._trace(*shape), x)
                    except Exception as exc:  # the hand-over (a full disk...): not the
                        info["error"] = one_line(exc)  # block's fault, not remembered
                        return info
                    if started is not None:
                        info["background"] = started
                        aot.background["generations_at_start"] = len(self.generations)
                        info["shapes"].append([*shape, round(time.perf_counter() - s, 2)])
                        continue
                if not aot.cached_for(x):
                    use_inductor_cache()
                    try:
                        # the step stops at the first block, the engine's state (its
                        # adapters) as the step set it, which the export then sees
                        info["build_seconds"] += aot.build(lambda: self._trace(*shape), x)
                    except Exception as exc:  # export and inductor raise many kinds
                        info["error"] = one_line(exc)
                        aot.mark_failed(x, info["error"])
                        return info
                    info["built"] = True
                try:
                    info["load_seconds"] += aot.load(x)
                except Exception as exc:  # another Triton, a damaged file...
                    info["error"] = f"{one_line(exc)} (removed from the cache)"
                    aot.evict(x)
                    return info
                info["shapes"].append([*shape, round(time.perf_counter() - s, 2)])
        finally:
            self._captured()
        info["build_seconds"] = round(info["build_seconds"], 2)
        info["load_seconds"] = round(info["load_seconds"], 3)
        if "background" not in info:
            aot.install()
        self.compiled = True  # (not compiled just in time meanwhile)
        info["seconds"] = round(time.perf_counter() - t, 2)
        return info

    #: build the block's artifact in a child process while the film's first shots run
    #: the block's own code (:meth:`.aot.AOTBlocks.build_elsewhere`), rather than before
    #: the first shot: None (the default) where the cache has no artifact, the engine
    #: makes one for every shape (dynamic shapes) and a CUDA GPU has
    #: ``_BACKGROUND_FREE_GIB`` free after the model loaded (the child's own context,
    #: block and compile take a few); True or False to force either way
    build_in_background: bool | None = None

    def _builds_elsewhere(self, aot) -> bool:
        if not aot.dynamic or self.build_in_background is False:
            return False
        if self.build_in_background:
            return True
        if self.s.device != "cuda":
            return False
        import torch

        return torch.cuda.mem_get_info()[0] >= _BACKGROUND_FREE_GIB * 2**30

    def _captured(self) -> None:
        """Undo what a warm-up step stopped at its first block left set (ltx: nothing)."""

    #: the warm-up's step runs every block (True), or only the blocks that compile the
    #: shape (:func:`trace_blocks`: the others pass their input through)
    full_trace_step = False

    def _trace(self, frames: int, w: int, h: int) -> None:
        """One denoising step at a shape, latents out, through the blocks that compile
        (or load) that shape (:func:`trace_blocks`)."""
        import torch

        pipe = self.pipeline()
        cfg = self._guidance()
        pe, pm, ne, nm = pipe.encode_prompt(
            prompt="", negative_prompt="", do_classifier_free_guidance=cfg,
            max_sequence_length=self.s.max_sequence_length, device=pipe._execution_device)
        gen_device = "cpu" if self.s.cpu_offload else self.s.device
        with trace_blocks(pipe.transformer, full=self.full_trace_step):
            pipe(conditions=_free_condition(w, h), prompt_embeds=pe, prompt_attention_mask=pm,
                 negative_prompt_embeds=ne if cfg else None,
                 negative_prompt_attention_mask=nm if cfg else None, width=w, height=h,
                 num_frames=frames, num_inference_steps=1,
                 guidance_scale=3.0 if cfg else 1.0, output_type="latent",
                 generator=torch.Generator(device=gen_device).manual_seed(0))
        if self.s.device == "cuda":
            torch.cuda.synchronize()

    # ---- rendering
    def _generate(self, prompt: str, n: int, w: int, h: int, seed: int, conditions: list
                  ) -> np.ndarray:
        import torch
        from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

        pipe = self.pipeline()
        if self.s.compile is True and not self.compiled:
            self._compile_blocks()
        if self._aot_package is not None and not self.s.cpu_offload and \
                self._aot_package.poll() is not None:  # built in the background: ready
            done = self._aot_package.background
            done["generations_before"] = len(self.generations) - \
                done.pop("generations_at_start", 0)
        preset = dict(PRESETS[self.s.preset])
        if self.s.steps:
            preset["num_inference_steps"] = self.s.steps
        if self.s.guidance_scale is not None:
            preset["guidance_scale"] = self.s.guidance_scale
        from PIL import Image

        conds = [LTXVideoCondition(image=Image.fromarray(img), frame_index=index,
                                   strength=strength)
                 for img, strength, index in conditions] or _free_condition(w, h)
        gen_device = "cpu" if self.s.cpu_offload else self.s.device
        generator = torch.Generator(device=gen_device).manual_seed(int(seed))
        cfg = self._guidance()
        key = (prompt, cfg)
        if key not in self._embeddings:  # once per shot, not once per segment
            self._embeddings = {key: pipe.encode_prompt(
                prompt=prompt, negative_prompt=NEGATIVE_PROMPT, do_classifier_free_guidance=cfg,
                max_sequence_length=self.s.max_sequence_length, device=pipe._execution_device)}
        pe, pm, ne, nm = self._embeddings[key]
        text = dict(prompt_embeds=pe, prompt_attention_mask=pm,
                    negative_prompt_embeds=ne if cfg else None,
                    negative_prompt_attention_mask=nm if cfg else None)
        settings = {**preset, **self.s.extra}
        self.generations.append((n, w, h))
        if self._upsample is None:
            with self._stance((n, w, h)):
                out = pipe(conditions=conds, **text, width=w, height=h, num_frames=n,
                           generator=generator, output_type="pt", **settings)
            self.passes.append((w, h, settings["num_inference_steps"]))
        else:
            # LTX-Video's multi-scale recipe: a first pass at half size, its latents upsampled
            # ×2 by the latent upsampler, then a short refining pass at full size from them
            with self._stance((n, w // 2, h // 2)):
                low = pipe(conditions=conds, **text, width=w // 2, height=h // 2, num_frames=n,
                           generator=generator, output_type="latent", **settings).frames
            up = self._upsample(latents=low, output_type="latent").frames
            refine = dict(settings, num_inference_steps=self.s.upsample_steps)
            with self._stance((n, w, h)):
                out = pipe(conditions=conds, **text, width=w, height=h, num_frames=n,
                           denoise_strength=self.s.upsample_strength, latents=up,
                           generator=generator, output_type="pt", **refine)
            self.passes += [(w // 2, h // 2, settings["num_inference_steps"]),
                            (w, h, self.s.upsample_steps)]
        return to_uint8_frames(out.frames[0])

    def _with_fallbacks(self, shot: Shot, fn):
        """Run ``fn(segment_frames)``; out of GPU memory: tiling, offload, shorter segments."""
        import torch

        segment = self._max_segment()
        steps = ["as configured"]
        while True:
            try:
                return fn(segment)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                pipe = self.pipeline()
                if self._aot_package is not None and self._aot_package.building() \
                        and not isinstance(self._aot_package._child, Path):
                    # the artifact's build shares the GPU: stop it before stepping down
                    self._aot_package.stop_building("the GPU ran out of memory beside it")
                    steps.append("the compile's background build stopped")
                elif not self.s.vae_tiling:
                    self.s.vae_tiling = True
                    pipe.vae.enable_tiling()
                    steps.append("VAE tiling")
                elif not self.s.cpu_offload:
                    self.s.cpu_offload = True
                    if self._aot_package is not None:
                        self._aot_package.uninstall()  # built for the GPU's weights
                    pipe.enable_model_cpu_offload()
                    steps.append("model CPU offload")
                elif segment > 17:
                    segment = valid_frames(segment // 2)
                    steps.append(f"{segment}-frame segments")
                else:
                    raise AiprodError("out of GPU memory; tried " + ", then ".join(steps),
                                      where=f"shot {shot.id}") from None

    def _use_cast(self, shot: Shot) -> None:
        """The LoRAs of the characters in ``shot`` on, the others off."""
        if not self.cast.loras:
            return
        pipe = self.pipeline()  # loads the LoRAs
        names, weights, _ = self.cast.for_shot(shot)
        if names:
            pipe.enable_lora()
            pipe.set_adapters(names, weights)
        else:
            pipe.disable_lora()

    def render(self, shot: Shot, context: RenderContext) -> ShotRender:
        W, H = context.width, context.height
        # with the upsampler, the first pass runs at half the size: keep that a multiple of 32
        gw, gh = self._sizes(W, H)[-1]
        prompt = shot_prompt(shot, context, context.look)
        first_conditions = []
        if "previous" in context.keyframes:
            first_conditions.append((_fit(context.keyframes["previous"].image, gw, gh, W, H),
                                     self.s.previous_strength, 0))
        elif "establishing" in context.keyframes:
            first_conditions.append((_fit(context.keyframes["establishing"].image, gw, gh, W,
                                          H), self.s.establishing_strength, 0))
        # character references: in the middle of the first segment (LTX conditions on
        # latent frames, so the index is a multiple of 8; frame 0 belongs to the keyframe)
        first_n = valid_frames(min(shot.duration, self._max_segment()))
        middle = 8 * ((first_n - 1) // 16)
        refs = sorted(k for k in context.keyframes if k.startswith("character:"))
        notes = []
        if refs and middle >= 8:
            for k in refs:
                first_conditions.append((_fit(context.keyframes[k].image, gw, gh, W, H),
                                         self.s.character_strength, middle))
            notes.append(f"conditioned on the reference of {', '.join(r[10:] for r in refs)} "
                         f"at frame {middle}")
        elif refs:
            notes.append("too short for a character reference besides its keyframe: "
                         "references not used")

        cast = self.cast.for_shot(shot)[2]
        if cast:
            notes.append(f"LoRAs: {', '.join(cast)}")

        def frames() -> Iterator[np.ndarray]:
            self._use_cast(shot)
            produced = 0
            conditions = first_conditions
            segment_index = 0
            while produced < shot.duration:
                left = shot.duration - produced
                # a chained segment starts on the frame it was conditioned on: skip it
                chained = 1 if produced else 0
                need = 0

                def one(segment: int) -> np.ndarray:
                    nonlocal need
                    need = min(left + chained, segment)
                    # the film's bucket; shorter segments (out of memory) leave the buckets
                    n = bucket_for(need, self.buckets) if segment >= self._max_segment() \
                        else valid_frames(need)
                    return self._generate(prompt, n, gw, gh, shot.seed + segment_index,
                                          conditions)

                clip = self._with_fallbacks(shot, one)
                for f in clip[chained:need]:  # frames past the need were the bucket's
                    produced += 1
                    yield _crop(f, W, H)
                conditions = [(clip[need - 1], 1.0, 0)]
                segment_index += 1

        r = ShotRender(shot, frames, f"ltx:{context.scene.location}", context.scene.light)
        r.notes.extend(notes)
        return r


#: what compiling buys and costs, on an H200 (2B, bf16, 768x512, the example film): the
#: eager transformer's throughput (stock: ~325 TFLOP/s by the arithmetic of
#: _transformer_seconds) and the compiled blocks' speed-up over it (~500 TFLOP/s at dev
#: settings, benchmarks/bench_ltx_film.py); the seconds to compile one graph of the block
#: (the warm-up's step through the blocks that compile it), cold and warm, and what the
#: first one costs besides (compiling's own start-up, the first kernels loaded). With the
#: dynamic shapes the film has one graph: 16.7-18.1 s cold, 8.0-8.1 s warm (2026-11-30,
#: bench_ltx_compile.py and bench_ltx_film.py; static shapes were 14.3, 5.5, 3.6, 4.5 s
#: cold and 5.9, 1.2, 1.1, 0.9 s warm for the four buckets)
_EAGER_TFLOPS = 325.0
#: the block's ahead-of-time artifact (:mod:`.aot`): seconds to build it (export and
#: inductor) and to load it from the cache, inductor's start-up in a new process included
#: (2B, bf16, one H200, torch 2.11: built in 13.9 and 16.4 s distilled, 20.4 s with the
#: dev preset's guidance batch; loaded in 2.9-3.0 s)
_AOT_BUILD_S = 17.0
_AOT_LOAD_S = 3.0
#: GPU memory free after the model loaded for the artifact to be built in the background
#: (the child process's CUDA context, one block, its activations and inductor's
#: autotuning)
_BACKGROUND_FREE_GIB = 12
_COMPILED_SPEEDUP = 1.5
_COMPILE_COLD_S = 8.0
_COMPILE_WARM_S = 3.3
_COMPILE_START_COLD_S = 10.0
_COMPILE_START_WARM_S = 4.8


class _PassThrough:
    """Stands for a transformer block in a warm-up step: returns its input unchanged
    (LTX-2's blocks take and return the audio stream too)."""

    def __call__(self, hidden_states, audio_hidden_states=None, **_):
        return hidden_states if audio_hidden_states is None else \
            (hidden_states, audio_hidden_states)


@contextmanager
def trace_blocks(transformer, keep: Iterable[int] = (), full: bool = False):
    """Within: the transformer runs its first two blocks (and those in ``keep``) and
    passes its input through the others. The warm-up's step needs no more: the first
    call of the compiled block traces (or loads) the shape for every block, the second
    checks that a block's output, the next one's input, finds it too, and the rest would
    only compute. The step's output is meaningless and thrown away. ``full``: all run."""
    blocks = transformer.transformer_blocks
    if full:
        yield
        return
    wanted = {0, 1, *keep}
    stand_in = _PassThrough()
    # a plain list, not a ModuleList: the stand-in is no module and nothing is registered
    transformer._modules.pop("transformer_blocks")
    object.__setattr__(transformer, "transformer_blocks",
                       [b if i in wanted else stand_in for i, b in enumerate(blocks)])
    try:
        yield
    finally:
        object.__delattr__(transformer, "transformer_blocks")
        transformer._modules["transformer_blocks"] = blocks


def use_inductor_cache() -> None:
    """Inductor's caches under the user's cache folder."""
    import torch
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    # inductor reads the folder when it compiles (and writes its default back into the
    # environment once asked): a folder the user set wins, torch's default does not
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_folder() / "inductor")
    torch._inductor.config.fx_graph_cache = True


def precompiles(engine) -> bool:
    """Whether the engine's settings have its block compiled ahead of time (without
    loading anything): :func:`aot_package`'s conditions."""
    return bool(getattr(engine, "aot_blocks", False) and getattr(engine.s, "precompile", False)
                and engine.s.compile_backend == "inductor" and not engine.s.cpu_offload)


def prefetch_compiler(engine) -> None:
    """Where the engine will load (or build) its block's artifact on the GPU, start
    importing what that needs while its model loads (:func:`.aot.prefetch`)."""
    if precompiles(engine) and engine.s.compile is not False and engine.s.device == "cuda":
        from .aot import prefetch

        prefetch()


def aot_package(engine):
    """The engine's block compiled ahead of time (:mod:`.aot`) where it can use it:
    ``precompile`` on, the inductor backend, no CPU offload, an engine that takes one
    (``aot_blocks``: ltx without LoRAs, ltx2 without fp8); else None. One artifact for
    every shape where the engine traces symbolic shapes, else one per shape."""
    if not precompiles(engine):
        return None
    transformer = engine.pipeline().transformer  # (its LoRAs loaded: in the identity)
    identity = engine._aot_identity()
    if engine._aot_package is None or engine._aot_package.identity != identity:
        from .aot import AOTBlocks, inductor_options

        if engine._aot_package is not None:  # another film's (ltx2: another frame rate)
            engine._aot_package.uninstall()
        engine._aot_package = AOTBlocks(
            transformer, identity, cache_folder() / "aot",
            inductor_options(engine.s.compile_mode), dynamic=engine.dynamic_shapes)
        engine._aot_package.set_mode(getattr(engine, "_active", None))
    return engine._aot_package


def _free_condition(w: int, h: int) -> list:
    """What a generation with no keyframe is conditioned on: a grey frame at strength 0.

    Conditioned on a keyframe, the transformer gets a timestep per token; with no condition
    at all, one per sample: another shape to compile. At strength 0 the frame changes
    nothing (the same picture as none, to 1e-6 on the tests' model) and every generation
    has the keyframe-conditioned shape."""
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition
    from PIL import Image

    return [LTXVideoCondition(image=Image.new("RGB", (w, h), (128, 128, 128)), frame_index=0,
                              strength=0.0)]


def _compiled_index_path() -> Path:
    return cache_folder() / "ltx-compiled-shapes.json"


def _compiled_index() -> dict:
    """Shapes compiled before into the user's inductor cache (key → seconds it took)."""
    try:
        return json.loads(_compiled_index_path().read_text())
    except (OSError, ValueError):
        return {}


def _save_compiled_index(index: dict) -> None:
    path = _compiled_index_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(index))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache folder only costs the next run its warm estimate


def _fit(img: np.ndarray, w: int, h: int, plan_w: int, plan_h: int) -> np.ndarray:
    """A keyframe at the generation size: scaled to the plan's size, then padded (edge
    pixels repeated) to the generation size, the inverse of the centre crop of the output,
    so what the keyframe shows lands where the plan's frame is."""
    import cv2

    if img.shape[:2] != (plan_h, plan_w):
        img = cv2.resize(img, (plan_w, plan_h), interpolation=cv2.INTER_AREA)
    top, left = (h - plan_h) // 2, (w - plan_w) // 2
    return cv2.copyMakeBorder(img, top, h - plan_h - top, left, w - plan_w - left,
                              cv2.BORDER_REPLICATE)


def to_uint8_frames(frames) -> np.ndarray:
    """Float frames in [0, 1] as the pipelines' tensor output (F, 3, H, W) to 8 bits
    (F, H, W, 3), rounded, where the frames are: a quarter of the bytes cross to the host,
    no float copy of the whole generation is made there, and the channels are interleaved
    on the device, so each frame arrives contiguous (a host-side copy of a planar frame
    per frame cost 2.7 ms a 768x512 frame, 5.5 s of the example film on an H200)."""
    import torch

    x = frames.float().mul_(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _crop(img: np.ndarray, w: int, h: int) -> np.ndarray:
    y0 = (img.shape[0] - h) // 2
    x0 = (img.shape[1] - w) // 2
    return np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w])
