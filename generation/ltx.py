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
GPU the transformer is compiled and the text embeddings are computed once per shot
(``benchmarks/bench_ltx_gpu.py`` measures what that gives beside stock diffusers).

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from aiprod_post.errors import AiprodError
from aiprod_post.files import sha256_file
from aiprod_post.plan import Framing, Shot

from .engine import RenderContext, ShotRender, register

__all__ = ["LTXSettings", "LTXEngine", "PRESETS", "valid_frames", "valid_size", "shot_prompt",
           "NEGATIVE_PROMPT", "drop_module_mocks"]

NEGATIVE_PROMPT = ("worst quality, inconsistent motion, blurry, jittery, distorted, watermark, "
                   "text, subtitles, deformed faces, extra limbs")

#: the two model families' recommended settings (diffusers' LTX documentation)
PRESETS = {
    "distilled": {"num_inference_steps": 8, "guidance_scale": 1.0, "decode_timestep": 0.05,
                  "image_cond_noise_scale": 0.025},
    "dev": {"num_inference_steps": 40, "guidance_scale": 3.0, "decode_timestep": 0.05,
            "image_cond_noise_scale": 0.025},
}


@dataclass
class LTXSettings:
    model: str = ""
    config: str | None = None  # a local diffusers folder, for single-file checkpoints
    text_encoder: str | None = None
    tokenizer: str | None = None
    preset: str = "distilled"
    dtype: str = "bfloat16"
    device: str = "cuda"
    max_frames: int = 121  # frames per generation (8n+1)
    establishing_strength: float = 0.6
    previous_strength: float = 1.0
    vae_tiling: bool = False
    cpu_offload: bool = False
    steps: int | None = None
    guidance_scale: float | None = None
    max_sequence_length: int = 128
    #: compile the transformer (CUDA): ~1.35-1.4x faster after a one-off compile
    compile: bool = True
    #: a local latent upsampler (LTXLatentUpsamplerModel folder, or a pipeline folder with
    #: ``latent_upsampler/``): generate at half size, upsample the latents ×2, then refine
    upsampler: str | None = None
    upsample_steps: int = 10
    upsample_strength: float = 0.4  # denoise strength of the refining pass
    #: a character's reference image conditions the middle of the shot's first segment
    character_strength: float = 0.35
    extra: dict = field(default_factory=dict)


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
    cache = Path(os.environ.get("AIPROD_CACHE", Path.home() / ".cache" / "aiprod-post"))
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


@register("ltx")
class LTXEngine:
    name = "ltx"

    def __init__(self, **settings) -> None:
        unknown = set(settings) - set(LTXSettings.__dataclass_fields__)
        if unknown:
            raise AiprodError(f"unknown ltx setting(s): {', '.join(sorted(unknown))}",
                              where="[engine.ltx]")
        self.s = LTXSettings(**settings)
        if self.s.preset not in PRESETS:
            raise AiprodError(f"unknown LTX preset {self.s.preset!r}: expected "
                              f"{' or '.join(PRESETS)}", where="[engine.ltx] preset")
        self._pipe = None
        self._upsample = None
        #: (width, height, steps) of each denoising pass run, for the manifest and tests
        self.passes: list[tuple[int, int, int]] = []
        self.tried: list[str] = []

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
        drop_module_mocks()
        try:
            import torch
            from diffusers import (
                AutoencoderKLLTXVideo,
                LTXConditionPipeline,
                LTXVideoTransformer3DModel,
            )
            from transformers import AutoTokenizer, T5EncoderModel
        except ImportError as exc:
            raise AiprodError("the ltx engine needs torch, diffusers and transformers "
                              "(pip install 'aiprod-post[ltx]')") from exc
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16,
                 "float32": torch.float32}[self.s.dtype]
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
        if self.s.upsampler:
            from diffusers import LTXLatentUpsamplePipeline
            from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

            try:
                model = LTXLatentUpsamplerModel.from_pretrained(
                    self._upsampler_dir(), local_files_only=True, torch_dtype=dtype)
            except (OSError, ValueError, KeyError) as exc:
                raise AiprodError(f"cannot load the latent upsampler: {exc}",
                                  source=self.s.upsampler) from None
            self._upsample = LTXLatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=model)
            self._upsample.latent_upsampler.to(pipe._execution_device if self.s.cpu_offload
                                               else device)
            self._upsample.set_progress_bar_config(disable=True)
        if self.s.compile and device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
            pipe.transformer = torch.compile(pipe.transformer,
                                             mode="max-autotune-no-cudagraphs", dynamic=False)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._embeddings: dict = {}
        self.identity = {"model": str(path), **_weights_identity(path), "dtype": self.s.dtype,
                         "pipeline": type(pipe).__name__, "settings": asdict(self.s)}
        if self.s.upsampler:
            self.identity["upsampler"] = _weights_identity(self._upsampler_dir())
        return pipe

    # ---- rendering
    def _generate(self, prompt: str, n: int, w: int, h: int, seed: int, conditions: list
                  ) -> np.ndarray:
        import torch
        from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

        pipe = self.pipeline()
        preset = dict(PRESETS[self.s.preset])
        if self.s.steps:
            preset["num_inference_steps"] = self.s.steps
        if self.s.guidance_scale is not None:
            preset["guidance_scale"] = self.s.guidance_scale
        from PIL import Image

        conds = [LTXVideoCondition(image=Image.fromarray(img), frame_index=index,
                                   strength=strength)
                 for img, strength, index in conditions] or None
        gen_device = "cpu" if self.s.cpu_offload else self.s.device
        generator = torch.Generator(device=gen_device).manual_seed(int(seed))
        cfg = preset["guidance_scale"] > 1.0
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
        if self._upsample is None:
            out = pipe(conditions=conds, **text, width=w, height=h, num_frames=n,
                       generator=generator, output_type="np", **settings)
            self.passes.append((w, h, settings["num_inference_steps"]))
        else:
            # LTX-Video's multi-scale recipe: a first pass at half size, its latents upsampled
            # ×2 by the latent upsampler, then a short refining pass at full size from them
            low = pipe(conditions=conds, **text, width=w // 2, height=h // 2, num_frames=n,
                       generator=generator, output_type="latent", **settings).frames
            up = self._upsample(latents=low, output_type="latent").frames
            refine = dict(settings, num_inference_steps=self.s.upsample_steps)
            out = pipe(conditions=conds, **text, width=w, height=h, num_frames=n,
                       denoise_strength=self.s.upsample_strength, latents=up,
                       generator=generator, output_type="np", **refine)
            self.passes += [(w // 2, h // 2, settings["num_inference_steps"]),
                            (w, h, self.s.upsample_steps)]
        frames = np.asarray(out.frames[0])
        return np.clip(frames * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def _with_fallbacks(self, shot: Shot, fn):
        """Run ``fn(segment_frames)``; out of GPU memory: tiling, offload, shorter segments."""
        import torch

        segment = self.s.max_frames
        steps = ["as configured"]
        while True:
            try:
                return fn(segment)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                pipe = self.pipeline()
                if not self.s.vae_tiling:
                    self.s.vae_tiling = True
                    pipe.vae.enable_tiling()
                    steps.append("VAE tiling")
                elif not self.s.cpu_offload:
                    self.s.cpu_offload = True
                    pipe.enable_model_cpu_offload()
                    steps.append("model CPU offload")
                elif segment > 17:
                    segment = valid_frames(segment // 2)
                    steps.append(f"{segment}-frame segments")
                else:
                    raise AiprodError("out of GPU memory; tried " + ", then ".join(steps),
                                      where=f"shot {shot.id}") from None

    def render(self, shot: Shot, context: RenderContext) -> ShotRender:
        W, H = context.width, context.height
        # with the upsampler, the first pass runs at half the size: keep that a multiple of 32
        gw, gh = valid_size(W, H) if not self.s.upsampler else \
            tuple(2 * v for v in valid_size(math.ceil(W / 2), math.ceil(H / 2)))
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
        first_n = valid_frames(min(shot.duration, self.s.max_frames))
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

        def frames() -> Iterator[np.ndarray]:
            produced = 0
            conditions = first_conditions
            segment_index = 0
            while produced < shot.duration:
                left = shot.duration - produced

                def one(segment: int) -> np.ndarray:
                    n = valid_frames(min(left + (1 if produced else 0), segment))
                    return self._generate(prompt, n, gw, gh, shot.seed + segment_index,
                                          conditions)

                clip = self._with_fallbacks(shot, one)
                # a chained segment starts on the frame it was conditioned on: skip it
                start = 1 if produced else 0
                for f in clip[start:start + left]:
                    produced += 1
                    yield _crop(f, W, H)
                conditions = [(clip[-1], 1.0, 0)]
                segment_index += 1

        r = ShotRender(shot, frames, f"ltx:{context.scene.location}", context.scene.light)
        r.notes.extend(notes)
        return r


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


def _crop(img: np.ndarray, w: int, h: int) -> np.ndarray:
    y0 = (img.shape[0] - h) // 2
    x0 = (img.shape[1] - w) // 2
    return np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w])
