"""The ``ltx2`` engine: LTX-2 through diffusers, following the film's own previz, voices and cast.

LTX-2 makes picture and sound together. Each shot is generated from the plan's prompt (as
for ``ltx``) and from what the pipeline already made for it:

- **Keyframes** as ``LTX2VideoCondition``: the previous shot's last frame for a continuous
  scene, else the scene's establishing keyframe (latent frame 0, ``previous_strength`` /
  ``establishing_strength``), and each character's reference image in the middle of the
  first segment (``character_strength``). LTX-2 indexes conditions by *latent* frame.
- **Previz as control**: with a control IC-LoRA (``control_lora``, kind ``control``), the
  animatic's render of the same shot, turned into the LoRA's control signal in code
  (:mod:`.control`: Canny edges), is the in-context reference video
  (``LTX2ReferenceCondition``), frame for frame with the generation. The plan's camera move
  picks a camera LoRA from ``camera_loras`` where the user has one on disk.
- **Lip-sync from our voices**: a shot with dialogue is generated audio-to-video. The
  shot's TTS dialogue (``RenderContext.dialogue``) is turned into the log-mel spectrogram
  LTX-2's audio VAE was trained on, encoded, and held fixed while the picture denoises
  (``LTX2DFRPipeline(freeze_audio=True)``: the audio stream stays at sigma 0 and the video
  cross-attends to it), so the mouths follow the line the mix will play. The offset of
  mouth opening after the speech is measured on the output (:mod:`.sync`) and reported.
- **Sound**: for shots without dialogue, the audio the model generates with the picture
  is returned on the render (``ShotRender.audio``) and the pipeline lays it on the FX stem
  (``audio = false`` turns it off).
- **HDR** (``hdr_lora``, kind ``hdr``): each generation's SDR picture (the decoded
  frames, as floats) is the reference video of an HDR pass through ``LTX2HDRPipeline``
  with the HDR IC-LoRA (on the same modules), which gives the same picture as scene-linear
  light in [0, inf) (LogC3 decoded; BT.709 primaries, 1.0 = SDR white). Those frames go,
  as floats, to ``ShotRender.linear`` (the picture stage writes them to the shot's HDR
  intermediate, 16-bit PQ, which the hdr-pq / hdr-hlg masters read: no 8-bit step); the
  shot's SDR frames are the same light clipped at diffuse white (:mod:`aiprod_post.hdr`).
  The reference is the SDR generation, not the previz: the HDR IC-LoRA re-renders the
  video it is given in HDR, content for content, so given the animatic it would make an
  HDR animatic; the previz has already steered the SDR generation through the control
  LoRA. The HDR pass runs at the full generation size in one stage, without keyframes
  (``LTX2HDRPipeline`` takes none: its reference fixes every frame).
- **Two stages** (``upsampler`` set): half size, the LTX-2 latent upsampler ×2, then a short
  refining pass at full size on LTX-2's stage-2 distilled sigmas.
- **Shapes and compiling**, as the ``ltx`` engine: a film is generated at a few frame counts
  (buckets, ``max_buckets``) and trimmed; :meth:`LTX2Engine.warm_up` compiles the
  transformer's repeated block for each before the first shot (``compile``: true, false,
  "auto"), inductor's cache under ``AIPROD_CACHE``. ``fp8`` runs the blocks' linear layers
  on the FP8 tensor cores (:mod:`.fp8`). ``benchmarks/bench_ltx2_film.py`` measures the
  example film at full size on a GPU beside stock diffusers.

What diffusers 0.42.1 has, and where it differs from a single pipeline that does it all:
``LTX2InContextPipeline`` takes frame conditions and IC-LoRA references together but has no
``freeze_audio``; ``LTX2DFRPipeline`` has ``freeze_audio``, frame conditions and a raw
IC-LoRA reference latent, but runs without classifier-free guidance. So shots with dialogue
go through the DFR pipeline (built on the same modules, no second copy of the weights) and
the others through the in-context one.

Weights: a local diffusers LTX-2 folder (``model_index.json``, transformer, vae, audio_vae,
text_encoder (Gemma 3), tokenizer, connectors, vocoder, scheduler); LoRAs as local
``.safetensors`` files. Nothing is downloaded. The LTX-2 weights carry the LTX-2 Community
License and are not shipped with aiprod-post.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from pydantic import Field

from aiprod_post import engines
from aiprod_post.errors import AiprodError
from aiprod_post.files import sha256_file
from aiprod_post.hdr import REFERENCE_WHITE, sdr_from_linear
from aiprod_post.plan import CameraMove, Shot

from .control import CONTROL_KINDS, ControlStream
from .engine import RenderContext, ShotRender, register
from .ltx import (
    NEGATIVE_PROMPT,
    CastLoras,
    LTXEngine,
    _crop,
    _fit,
    _lora_identity,
    _weights_identity,
    bucket_for,
    checked_settings,
    choose_buckets,
    drop_module_mocks,
    generation_lengths,
    prefetch_compiler,
    shot_prompt,
    to_uint8_frames,
    trace_blocks,
)
from .sync import SyncMeter, SyncResult

__all__ = ["LTX2Settings", "LTX2Engine", "PRESETS", "FOLDER_PARTS", "valid_frames",
           "log_mel_spectrogram", "dialogue_latents"]

#: LTX-2's two model families (diffusers' LTX-2 documentation): the distilled one runs its
#: own 8-sigma schedule without guidance; the dev one 40 steps with CFG, STG and modality
#: guidance
PRESETS = {
    "distilled": {"num_inference_steps": 8, "guidance_scale": 1.0, "stg_scale": 0.0,
                  "modality_scale": 1.0},
    "dev": {"num_inference_steps": 40, "guidance_scale": 4.0, "stg_scale": 1.0,
            "modality_scale": 3.0},
}

#: the parts of a diffusers LTX-2 folder, and what each is
FOLDER_PARTS = {
    "model_index.json": "the pipeline's index",
    "transformer": "the LTX-2 audio-video transformer",
    "vae": "the video VAE",
    "audio_vae": "the audio VAE",
    "text_encoder": "the Gemma 3 text encoder",
    "tokenizer": "Gemma's tokenizer",
    "connectors": "the text connectors",
    "vocoder": "the vocoder",
    "scheduler": "the scheduler",
}

MIX_RATE = 48000  # RenderContext.dialogue's rate


class LTX2Settings(engines.LTX2Settings):
    """``[engine.ltx2]`` (defined once, in :mod:`aiprod_post.engines`), and what only code
    sets: Gemma's token budget and extra keyword arguments for the pipeline."""

    max_sequence_length: int = 1024
    extra: dict = Field(default_factory=dict)


def valid_frames(n: int, ratio: int = 8) -> int:
    """The smallest ``ratio``·k+1 ≥ n (LTX-2's VAE compresses time by ``ratio``).

    >>> [valid_frames(n) for n in (1, 9, 10, 72)], valid_frames(10, 4)
    ([1, 9, 17, 73], 13)
    """
    return ratio * math.ceil(max(0, n - 1) / ratio) + 1


def _slaney_mel_filters(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-style mel filterbank (``n_mels`` × ``n_fft // 2 + 1``), area-normalised, as
    torchaudio's ``MelSpectrogram(mel_scale="slaney", norm="slaney")`` builds it."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0

    def to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) /
                                                               min_log_hz) / logstep, f / f_sp)

    def to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)),
                        f_sp * m)

    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    hz = to_hz(np.linspace(to_mel(0.0), to_mel(rate / 2), n_mels + 2))
    lower = (freqs[None, :] - hz[:-2, None]) / (hz[1:-1] - hz[:-2])[:, None]
    upper = (hz[2:, None] - freqs[None, :]) / (hz[2:] - hz[1:-1])[:, None]
    fb = np.maximum(0.0, np.minimum(lower, upper))
    return (fb * (2.0 / (hz[2:] - hz[:-2]))[:, None]).astype(np.float32)


def log_mel_spectrogram(samples: np.ndarray, rate: int, n_mels: int, hop: int,
                        n_fft: int = 1024) -> np.ndarray:
    """The log-mel spectrogram LTX-2's audio VAE reads: magnitude STFT (Hann window of
    ``n_fft``, centred with reflection), Slaney mel filters from 0 to Nyquist, natural log
    floored at 1e-5. ``samples``: (frames,) or (frames, channels) at ``rate``; returns
    (channels, time, n_mels) with ``time = frames // hop + 1``.

    >>> t = np.arange(16000) / 16000
    >>> m = log_mel_spectrogram(np.sin(2 * np.pi * 440 * t), 16000, 64, 160)
    >>> m.shape, int(m[0, 50].argmax()) == int(np.abs(m[0, 50] - m[0, 50].max()).argmin())
    ((1, 101, 64), True)
    """
    import torch

    x = np.asarray(samples, np.float32)
    x = x[:, None] if x.ndim == 1 else x
    wave = torch.from_numpy(np.ascontiguousarray(x.T))
    if wave.shape[1] <= n_fft // 2:  # reflection padding needs more than half a window
        wave = torch.nn.functional.pad(wave, (0, n_fft // 2 + 1 - wave.shape[1]))
    spec = torch.stft(wave, n_fft, hop_length=hop, win_length=n_fft,
                      window=torch.hann_window(n_fft), center=True, pad_mode="reflect",
                      return_complex=True).abs()  # (channels, bins, time)
    mel = torch.from_numpy(_slaney_mel_filters(rate, n_fft, n_mels)) @ spec
    out = torch.log(torch.clamp(mel, min=1e-5)).transpose(1, 2)
    return out[:, :x.shape[0] // hop + 1].numpy()


def dialogue_latents(pipe, samples: np.ndarray, rate: int, length: int):
    """Raw LTX-2 audio latents (1, channels, ``length``, mel bins) of mono ``samples`` at
    ``rate``: resampled to the audio VAE's rate, as its input channels (the same line on
    each), log-mel, encoded (the posterior's mode), silence-padded or cut to ``length``
    latent frames."""
    import torch
    from scipy.signal import resample_poly

    vae = pipe.audio_vae
    cfg = vae.config
    g = math.gcd(int(cfg.sample_rate), int(rate))
    x = resample_poly(np.asarray(samples, np.float64), int(cfg.sample_rate) // g, int(rate) // g)
    per_latent = cfg.mel_hop_length * pipe.audio_vae_temporal_compression_ratio
    want = (length + 1) * per_latent  # a little over: the encoder's causal edge
    x = np.pad(x, (0, max(0, want - x.size)))[:want]
    mel = log_mel_spectrogram(np.repeat(x[:, None], cfg.in_channels, axis=1),
                              int(cfg.sample_rate), int(cfg.mel_bins), int(cfg.mel_hop_length))
    param = next(vae.parameters())
    with torch.no_grad():
        lat = vae.encode(torch.from_numpy(mel)[None].to(param.device, param.dtype)
                         ).latent_dist.mode()
    if lat.shape[2] < length:
        lat = torch.nn.functional.pad(lat, (0, 0, 0, length - lat.shape[2]))
    return lat[:, :, :length]


@register("ltx2")
class LTX2Engine:
    name = "ltx2"

    def __init__(self, figures: dict[str, dict] | None = None,
                 cast_loras: dict[str, dict] | None = None, **settings) -> None:
        self.s = checked_settings(LTX2Settings, settings, "ltx2", "LTX-2", PRESETS)
        #: the characters' LoRAs (the cast file's), on for the shots they are in
        self.cast = CastLoras(cast_loras)
        if self.s.hdr_embeddings and not self.s.hdr_lora:
            raise AiprodError("hdr_embeddings are the HDR LoRA's: set hdr_lora too",
                              where="[engine.ltx2] hdr_embeddings")
        if self.s.control not in CONTROL_KINDS:
            raise AiprodError(f"unknown control {self.s.control!r}: expected one of "
                              f"{', '.join(CONTROL_KINDS)} (computed from the animatic)",
                              where="[engine.ltx2] control")
        moves = {m.value for m in CameraMove}
        bad = sorted(set(self.s.camera_loras) - moves)
        if bad:
            raise AiprodError(f"camera_loras: unknown camera move(s) {', '.join(bad)}: "
                              f"expected {', '.join(sorted(moves))}",
                              where="[engine.ltx2] camera_loras")
        #: the cast's animatic figures: the previz is drawn as the animatic engine draws it
        self.figures = figures or {}
        self._pipe = None
        self._dfr = None
        self._hdr = None  # the HDR pipeline (hdr_lora), on the same modules
        self._hdr_context: dict = {}  # the HDR LoRA's own connector embeddings, if given
        self._active: tuple[list[str], list[float]] = ([], [])  # the shot's adapters
        #: what the warm-up traced a graph for (:meth:`_signature`); a generation with
        #: another runs eagerly, never compiled in the middle of the film
        self._traced: set[tuple] = set()
        self._upsample = None
        self._embeddings: dict = {}
        self._adapters: dict[str, str] = {}  # adapter name → kind
        self.identity: dict = {}
        #: (frames, width, height, pipeline) of each generation, for the report and tests
        self.generations: list[tuple[int, int, int, str]] = []
        #: the frame counts shots are generated at; set from the film by :meth:`plan_film`
        self.buckets: tuple[int, ...] = ()
        self.compiled = False
        #: the shapes the warm-up compiled, the others eager (None: all, on first use)
        self.compiled_shapes: set[tuple] | None = None
        self._aot_package = None  # the block compiled ahead of time (ltx.aot_package)
        self._upsampler_model = None
        self._fps = 24.0  # the film's frame rate, from warm_up (the sound's length)

    @classmethod
    def from_pipeline(cls, pipe, **settings) -> "LTX2Engine":
        """An engine around an in-context pipeline already built (benchmarks: random
        weights built from a config); set up for the settings' device like a loaded one."""
        engine = cls(**settings)
        engine.identity = {"model": "(in memory)", "dtype": engine.s.dtype,
                           "pipeline": type(pipe).__name__, "loras": {},
                           "settings": engine.s.model_dump()}
        engine._setup(pipe)
        return engine

    # ---- loading
    def _check_paths(self) -> Path:
        if not self.s.model:
            raise AiprodError("the ltx2 engine needs a local LTX-2 model folder "
                              "([engine.ltx2] model)", where="[engine.ltx2] model")
        path = Path(self.s.model)
        if not path.is_dir():
            raise AiprodError("no such LTX-2 model folder: expected a diffusers folder with "
                              + ", ".join(FOLDER_PARTS), source=path)
        missing = [n for n in FOLDER_PARTS if not (path / n).exists()]
        if missing:
            raise AiprodError("not a diffusers LTX-2 folder: missing " + ", ".join(
                f"{n} ({FOLDER_PARTS[n]})" for n in missing), source=path)
        loras = ([("control_lora", self.s.control_lora)] if self.s.control_lora else []) + \
            ([("hdr_lora", self.s.hdr_lora)] if self.s.hdr_lora else []) + \
            [(f"camera_loras.{k}", v) for k, v in self.s.camera_loras.items()]
        for key, value in loras:
            if not Path(value).is_file():
                raise AiprodError(f"no such LoRA file ({key}): expected a local .safetensors",
                                  source=value, where=f"[engine.ltx2] {key}")
        if self.s.hdr_embeddings and not Path(self.s.hdr_embeddings).is_file():
            raise AiprodError("no such HDR embeddings file (hdr_embeddings): expected a local "
                              ".safetensors of video_context and audio_context",
                              source=self.s.hdr_embeddings, where="[engine.ltx2] hdr_embeddings")
        if self.s.upsampler and not (self._upsampler_dir() / "config.json").is_file():
            raise AiprodError("not an LTX-2 latent upsampler folder: expected config.json "
                              "(an LTX2LatentUpsamplerModel) or latent_upsampler/config.json",
                              source=self.s.upsampler)
        return path

    # the same settings names as ltx's: its helpers serve as they are (the out-of-memory
    # ladder too: VAE tiling, model CPU offload, then generations half as long)
    _upsampler_dir = LTXEngine._upsampler_dir
    check = LTXEngine.check
    _torch_dtype = LTXEngine._torch_dtype
    _with_fallbacks = LTXEngine._with_fallbacks
    _compile_blocks = LTXEngine._compile_blocks

    def pipeline(self):
        """The in-context pipeline (loaded once, with its LoRAs); the DFR pipeline and the
        upsampler share its modules."""
        if self._pipe is not None:
            return self._pipe
        path = self._check_paths()
        drop_module_mocks()
        try:
            import torch
            from diffusers import LTX2InContextPipeline
        except ImportError as exc:
            raise AiprodError("the ltx2 engine needs torch, diffusers (0.42 or later), "
                              "transformers and peft (pip install 'aiprod-post[ltx]')") from exc
        if self.s.device == "cuda" and not torch.cuda.is_available():
            raise AiprodError("the ltx2 engine's device is cuda but no CUDA GPU is present; "
                              "set [engine.ltx2] device = \"cpu\" (slow) or use the animatic "
                              "engine")
        dtype = self._torch_dtype()
        prefetch_compiler(self)  # beside the load from disk
        try:
            pipe = LTX2InContextPipeline.from_pretrained(path, local_files_only=True, dtype=dtype)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AiprodError(f"cannot load LTX-2: {exc}", source=path) from None
        self.identity = {"model": str(path), **_weights_identity(path), "dtype": self.s.dtype,
                         "pipeline": type(pipe).__name__, "loras": {},
                         "settings": self.s.model_dump()}
        self._load_loras(pipe)
        if self.s.hdr_embeddings:
            self._hdr_context = _hdr_embeddings(Path(self.s.hdr_embeddings))
            self.identity["hdr_embeddings"] = {
                "path": self.s.hdr_embeddings, "sha256": sha256_file(self.s.hdr_embeddings)}
        if self.s.upsampler:
            from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel

            try:
                self._upsampler_model = LTX2LatentUpsamplerModel.from_pretrained(
                    self._upsampler_dir(), local_files_only=True, dtype=dtype)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise AiprodError(f"cannot load the LTX-2 latent upsampler: {exc}",
                                  source=self.s.upsampler) from None
            self.identity["upsampler"] = _weights_identity(self._upsampler_dir())
        self._setup(pipe)
        return pipe

    def _setup(self, pipe) -> None:
        """Device, offload, tiling, the DFR pipeline and the upsampler on the in-context
        pipeline's modules; compiling waits for :meth:`warm_up`."""
        import torch
        from diffusers import LTX2DFRPipeline

        if self.s.fp8 and self._adapters:
            raise AiprodError("fp8 and LoRAs do not go together: the LoRAs need the "
                              "transformer's linear layers in bf16", where="[engine.ltx2] fp8")
        if self.s.cpu_offload and self.s.device == "cuda":
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(self.s.device)
        if self.s.fp8:  # where the weights are (on the GPU: seconds)
            from .fp8 import to_float8

            self.identity["fp8_linears"] = to_float8(pipe.transformer.transformer_blocks)
        if self.s.vae_tiling:
            pipe.vae.enable_tiling()
        pipe.set_progress_bar_config(disable=True)
        # the DFR pipeline (freeze_audio) on the same modules: no second copy of the weights
        self._dfr = LTX2DFRPipeline(**{k: pipe.components[k] for k in (
            "scheduler", "vae", "audio_vae", "text_encoder", "tokenizer", "connectors",
            "transformer", "vocoder")})
        self._dfr.set_progress_bar_config(disable=True)
        if "hdr" in self._adapters:
            from diffusers import LTX2HDRPipeline

            self._hdr = LTX2HDRPipeline(**{k: pipe.components[k] for k in (
                "scheduler", "vae", "audio_vae", "text_encoder", "tokenizer", "connectors",
                "transformer", "vocoder")})
            self._hdr.set_progress_bar_config(disable=True)
        if self._upsampler_model is not None:
            from diffusers import LTX2LatentUpsamplePipeline

            self._upsample = LTX2LatentUpsamplePipeline(vae=pipe.vae,
                                                        latent_upsampler=self._upsampler_model)
            self._upsampler_model.to(pipe._execution_device if self.s.cpu_offload
                                     else self.s.device)
            self._upsample.set_progress_bar_config(disable=True)
        if self.s.device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            # not cudnn.benchmark: autotuning each new shape of the VAEs' 3D convolutions
            # cost the example film ~9.5 s on an H200 and gained nothing back
        self._pipe = pipe
        self._embeddings = {}

    def _load_loras(self, pipe) -> None:
        """The control IC-LoRA, the camera LoRAs and the characters' LoRAs, each an adapter
        switched per shot."""
        wanted = ([("control", self.s.control_lora, "control")] if self.s.control_lora
                  else []) + ([("hdr", self.s.hdr_lora, "hdr")] if self.s.hdr_lora else []) + \
            [(f"camera_{k.replace('-', '_')}", v, f"camera:{k}")
             for k, v in sorted(self.s.camera_loras.items())]
        for adapter, value, kind in wanted:
            try:
                pipe.load_lora_weights(str(value), adapter_name=adapter)
            except ImportError as exc:
                raise AiprodError("LoRAs need peft (pip install 'aiprod-post[ltx]')") from exc
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise AiprodError(f"cannot load the LoRA: {exc}", source=value) from None
            self._adapters[adapter] = kind
            self.identity["loras"][kind] = _lora_identity(Path(value))
        self.cast.load(pipe, self.identity, self._adapters)
        if self._adapters:
            pipe.disable_lora()

    def _reference_downscale(self) -> int:
        if self.s.reference_downscale:
            return self.s.reference_downscale
        meta = self.identity.get("loras", {}).get("control", {})
        return meta.get("reference_downscale_factor") or 1

    def _use_adapters(self, shot: Shot, control: bool) -> list[str]:
        """Switch on the shot's adapters: the control LoRA where a reference is given, the
        camera LoRA of the plan's move where there is one, the LoRA of each character in the
        shot who has one. Returns what is on."""
        pipe = self.pipeline()
        names, weights = [], []
        if control and "control" in self._adapters:
            names.append("control")
            weights.append(self.s.control_lora_scale)
        cam = f"camera_{shot.camera_move.value.replace('-', '_')}"
        if cam in self._adapters:
            names.append(cam)
            weights.append(self.s.camera_lora_scale)
        cast, cast_weights, _ = self.cast.for_shot(shot)
        names, weights = names + cast, weights + cast_weights
        self._active = (names, weights)
        if names:
            pipe.enable_lora()
            pipe.set_adapters(names, weights)
        elif self._adapters:
            pipe.disable_lora()
        return [self._adapters[n] for n in names]

    # ---- shapes
    def _ratios(self) -> tuple[int, int]:
        pipe = self.pipeline()
        return pipe.vae_temporal_compression_ratio, pipe.vae_spatial_compression_ratio

    def _max_segment(self) -> int:
        r, _ = self._ratios()
        return max(r + 1, r * ((self.s.max_frames - 1) // r) + 1)

    def plan_film(self, durations: Iterable[int]) -> tuple[int, ...]:
        """Choose the frame counts (buckets) the film's shots are generated at, from every
        shot's length (handles included), as the ``ltx`` engine does: at most
        ``max_buckets``, the frames generated beyond the plan's (then trimmed) fewest."""
        r, _ = self._ratios()
        needs = [max(n, r + 1) for d in durations
                 for n in generation_lengths(d, self._max_segment())]
        self.buckets = choose_buckets(needs, self.s.max_buckets)
        return self.buckets

    def _frames_for(self, need: int, full: bool = True) -> int:
        """The frame count one generation of ``need`` frames runs at: the film's bucket
        (``full``: a segment of the configured length), else the next valid count."""
        r, _ = self._ratios()
        if self.buckets and full:
            return bucket_for(max(need, r + 1), self.buckets)
        return valid_frames(max(need, r + 1), r)

    def lengths_for(self, duration: int) -> list[int]:
        """The frame counts a shot of ``duration`` frames is generated at (for the stage
        cache's key)."""
        return [self._frames_for(n) for n in generation_lengths(duration, self._max_segment())]

    def _film_shapes(self, width: int, height: int) -> list[tuple[int, int, int, bool]]:
        """(frames, width, height, guided) of every transformer input the film needs: each
        bucket at the generation size, or with the upsampler at half size (guided as the
        preset says) and at full size (the refining pass, unguided)."""
        gw, gh = self._size(width, height)
        sizes = [(gw // 2, gh // 2, True), (gw, gh, False)] if self.s.upsampler \
            else [(gw, gh, True)]
        return [(b, w, h, guided) for b in self.buckets for w, h, guided in sizes]

    def _passes(self, guided: bool) -> tuple[int, int]:
        """(denoising steps, transformer passes per step) of a first (``guided``) or
        refining pass: classifier-free guidance doubles the batch, STG and modality
        guidance each add a pass."""
        from diffusers.pipelines.ltx2.utils import STAGE_2_DISTILLED_SIGMA_VALUES

        if not guided:
            return len(STAGE_2_DISTILLED_SIGMA_VALUES), 1
        g = self._guidance()
        return g["num_inference_steps"], (1 + (g["guidance_scale"] > 1.0) + (g["stg_scale"] > 0)
                                           + (g["modality_scale"] != 1.0))

    def _shape_key(self, frames: int, w: int, h: int, guided: bool) -> str:
        """What one compiled shape depends on, as a key of the compiled-shapes index."""
        import torch

        pipe = self.pipeline()
        device = torch.cuda.get_device_name() if self.s.device == "cuda" else self.s.device
        return hashlib.sha256(json.dumps([
            "ltx2", torch.__version__, device, self.s.dtype, self.s.compile_mode,
            self.s.compile_backend, {k: v for k, v in pipe.transformer.config.items()
                                     if not k.startswith("_")}, frames, w, h,
            self._passes(guided)[1], self.s.max_sequence_length, round(self._fps, 3)]
            + (["dynamic"] if self.dynamic_shapes else []),
            sort_keys=True, default=str).encode()).hexdigest()[:24]

    def _transformer_seconds(self, frames: int, w: int, h: int, guided: bool) -> float:
        """Eager transformer seconds of one generation pass, from its arithmetic: 2 FLOPs
        per parameter per token (the video stream's on video tokens, the audio stream's on
        audio tokens), self-attention's 4·T²·d per layer; × steps × passes."""
        pipe = self.pipeline()
        cfg = pipe.transformer.config
        r, s = self._ratios()
        video = ((frames - 1) // r + 1) * (h // s) * (w // s)
        audio = round(frames / self._fps * pipe.audio_sampling_rate / pipe.audio_hop_length
                      / pipe.audio_vae_temporal_compression_ratio)
        params = {True: 0, False: 0}
        for name, p in pipe.transformer.named_parameters():
            params["audio" in name] += p.numel()
        dim = cfg.num_attention_heads * cfg.attention_head_dim
        flops = 2 * params[False] * video + 2 * params[True] * audio + \
            4 * cfg.num_layers * video ** 2 * dim
        steps, passes = self._passes(guided)
        return flops * steps * passes / (_EAGER_TFLOPS * 1e12)

    def _film_gpu_seconds(self, durations: Sequence[int], width: int, height: int) -> float:
        """The eager transformer's seconds for the film's generations."""
        shapes = self._film_shapes(width, height)
        return sum(self._transformer_seconds(*x) for d in durations
                   for b in self.lengths_for(d) for x in shapes if x[0] == b)

    _compile_decision = LTXEngine._compile_decision
    _compile_plan = LTXEngine._compile_plan
    _shape_gpu_seconds = LTXEngine._shape_gpu_seconds
    _graph_of = LTXEngine._graph_of
    _stance = LTXEngine._stance
    _use_package = LTXEngine._use_package
    #: its artifacts are built before the first shot, never in a child process: its
    #: generations do not look for one becoming ready (whatever ``dynamic_shapes`` is)
    build_in_background = False
    _builds_elsewhere = LTXEngine._builds_elsewhere
    _compile_costs = property(lambda self: (_COMPILE_COLD_S, _COMPILE_WARM_S,
                                            _COMPILED_SPEEDUP, _COMPILE_START_COLD_S,
                                            _COMPILE_START_WARM_S))

    def warm_up(self, durations: Sequence[int], width: int, height: int,
                fps: float = 24.0) -> dict:
        """Choose the film's buckets and compile the shapes that pay now, as the ``ltx``
        engine does (a step through the blocks that compile each shape, latents out), at
        the film's frame rate (the sound's length follows it). Returns what was done, for
        the report. (Dialogue shots run the DFR pipeline on the same block inputs: on an
        H200 the example's 16 DFR generations compiled no graph of their own.)"""
        self._fps = float(fps)
        return LTXEngine.warm_up(self, durations, width, height)

    full_trace_step = LTXEngine.full_trace_step

    def _captured(self) -> None:
        """After the warm-up's steps stopped at their first block: the control LoRA off
        again, as a finished step leaves it."""
        if self._active != ([], []):
            self._active = ([], [])
            self.pipeline().disable_lora()

    @property
    def aot_blocks(self) -> bool:
        """Whether the block may be compiled ahead of time (:func:`.ltx.aot_package`, one
        artifact per shape): not with FP8 linear layers, nor with ``attention_kwargs`` in
        ``extra`` (its scale multiplies peft's, unseen by the mode). With LoRAs an artifact
        runs only with the adapters on that it was built with (:attr:`_active`, its mode):
        the control LoRA's shots; another LoRA on (a camera's, a character's) runs
        eagerly, as :meth:`_stance_of` has it for compiled graphs."""
        return not self.s.fp8 and "attention_kwargs" not in self.s.extra  # (a LoRA scale)

    @property
    def _active(self) -> tuple[list[str], list[float]]:
        """The shot's adapters on and their weights (what the artifacts' mode is)."""
        return self.__dict__["_adapters_on"]

    @_active.setter
    def _active(self, value: tuple[list[str], list[float]]) -> None:
        self.__dict__["_adapters_on"] = value
        if self.__dict__.get("_aot_package") is not None:
            self._aot_package.set_mode(value)

    _aot_costs = property(lambda self: (_AOT_BUILD_S, _AOT_LOAD_S, _AOT_BUILD_START_S,
                                        _AOT_LOAD_START_S))

    def _aot_identity(self) -> list:
        """What the block's artifacts depend on besides the model, torch and the shape."""
        return [self.name, self.s.dtype, self._guidance(), self.s.max_sequence_length,
                round(self._fps, 3), self.identity.get("loras", {}),
                # the mode its artifacts are built in: another scale is another artifact
                self._step_adapters()]
    #: static shapes, one graph per bucket: symbolic ones traced slower (the first block's
    #: inputs, views, are a graph of their own too), 27.9 s warm beside 13.6 s static on an
    #: H200 (benchmarks/bench_ltx_compile.py), 46.7 s cold beside 44.7 s
    dynamic_shapes = False

    def _trace(self, frames: int, w: int, h: int, guided: bool) -> None:
        """One denoising step at a shape, latents out, through the blocks that compile
        (or load) that shape (:func:`.ltx.trace_blocks`)."""
        import torch

        pipe = self.pipeline()
        g = self._guidance() if guided else dict(guidance_scale=1.0, stg_scale=0.0,
                                                 modality_scale=1.0)
        cfg = g["guidance_scale"] > 1.0
        pe, pm, ne, nm = self._prompt("", cfg)
        gen_device = "cpu" if self.s.cpu_offload else self.s.device
        # STG perturbs its own blocks: their inputs differ, so they run in the step too
        stg = inspect.signature(type(pipe).__call__).parameters.get(
            "spatio_temporal_guidance_blocks")
        keep = (stg.default or []) if stg is not None and g["stg_scale"] > 0 else []
        # as the film's shots run: with the control LoRA on and, in a first pass, a
        # reference video of the previz's size (its tokens are part of the input)
        # (the step's adapters, whatever the last shot left on: a camera's, a character's)
        self._active = self._step_adapters()
        control = bool(self._active[0])
        reference, extra = None, {}
        if not control and self._adapters:
            pipe.disable_lora()
        if control:
            from diffusers.pipelines.ltx2 import LTX2ReferenceCondition

            pipe.enable_lora()
            pipe.set_adapters(*self._active)
            if guided:
                ds = self._reference_downscale()
                reference = np.zeros((frames, h // ds, w // ds, 3), np.uint8)
                extra = dict(reference_conditions=[LTX2ReferenceCondition(
                    frames=reference, strength=self.s.control_strength)],
                    reference_downscale_factor=ds)
        with trace_blocks(pipe.transformer, keep, full=self.full_trace_step):
            pipe(**extra, prompt_embeds=pe, prompt_attention_mask=pm,
                 negative_prompt_embeds=ne if cfg else None,
                 negative_prompt_attention_mask=nm if cfg else None, width=w,
                 height=h, num_frames=frames, frame_rate=self._fps, num_inference_steps=1,
                 sigmas=[1.0], guidance_scale=g["guidance_scale"], stg_scale=g["stg_scale"],
                 modality_scale=g["modality_scale"], audio_guidance_scale=g["guidance_scale"],
                 audio_stg_scale=g["stg_scale"], audio_modality_scale=g["modality_scale"],
                 max_sequence_length=self.s.max_sequence_length, output_type="latent",
                 generator=torch.Generator(device=gen_device).manual_seed(0))
        self._traced.add(self._signature((frames, w, h, guided), None, reference is not None))
        if control:  # the shots switch on their own
            self._active = ([], [])
            pipe.disable_lora()
        if self.s.device == "cuda":
            torch.cuda.synchronize()

    def _step_adapters(self) -> tuple[list[str], list[float]]:
        """The adapters on in the warm-up's step (as the film's shots run): the control
        LoRA where there is one, else none."""
        if self.s.control != "none" and "control" in self._adapters:
            return ["control"], [self.s.control_lora_scale]
        return [], []

    def _signature(self, shape: tuple, conds: list | None, reference: bool,
                   guided: bool | None = None) -> tuple:
        """What a compiled graph of the block serves (static shapes): the size and frames,
        the guidance that sets the batch (``guided``: the preset's, else none; by default
        the shape's own flag), the LoRAs on and their weights (peft's state is in dynamo's
        guards), a reference (the in-context pipeline's previz video or the DFR
        pipeline's latents: the same tokens, checked with dynamo's counters) and
        conditions past the first latent frame (a character's reference): both append
        their tokens to the input."""
        g = self._guidance() if (shape[3] if guided is None else guided) else {}
        mode = (g.get("guidance_scale", 1.0) > 1.0, g.get("stg_scale", 0.0) > 0,
                g.get("modality_scale", 1.0) != 1.0)
        names, weights = self._active
        extra = sum(1 for c in conds or [] if getattr(c, "index", 0) > 0)
        return (tuple(shape[:3]), mode, tuple(names), tuple(weights), bool(reference), extra)

    def _size(self, width: int, height: int) -> tuple[int, int]:
        """The generation size: the plan's, rounded up to multiples of 32 (what the LTX-2
        pipelines take, and the VAE divides); with the upsampler, half of it too."""
        _, s = self._ratios()
        m = math.lcm(32, s) * (2 if self.s.upsampler else 1)
        return m * math.ceil(width / m), m * math.ceil(height / m)

    # ---- rendering
    def _guidance(self) -> dict:
        p = dict(PRESETS[self.s.preset])
        if self.s.steps:
            p["num_inference_steps"] = self.s.steps
        if self.s.guidance_scale is not None:
            p["guidance_scale"] = self.s.guidance_scale
        return p

    def _sigmas(self) -> list[float] | None:
        """The distilled model's own schedule, unless the steps were set."""
        from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES

        if self.s.preset == "distilled" and not self.s.steps:
            return list(DISTILLED_SIGMA_VALUES)
        return None

    def _prompt(self, prompt: str, cfg: bool):
        pipe = self.pipeline()
        key = (prompt, cfg)
        if key not in self._embeddings:  # Gemma runs once per shot, not once per segment
            self._embeddings = {key: pipe.encode_prompt(
                prompt=prompt, negative_prompt=NEGATIVE_PROMPT, do_classifier_free_guidance=cfg,
                max_sequence_length=self.s.max_sequence_length, device=pipe._execution_device)}
        return self._embeddings[key]

    def _conditions(self, conditions: list[tuple[np.ndarray, float, int]]):
        from diffusers.pipelines.ltx2 import LTX2VideoCondition

        return [LTX2VideoCondition(frames=img, index=index, strength=strength,
                                   crf=self.s.image_crf) for img, strength, index in conditions]

    def _generate(self, prompt: str, n: int, w: int, h: int, fps: float, seed: int,
                  conditions: list, reference: np.ndarray | None, dialogue: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray | None, int]:
        """One generation: frames (n, h, w, 3) uint8, and the sound (samples, channels) at
        its rate, or None where the sound was given (dialogue)."""
        import torch

        pipe = self.pipeline()
        if self.s.compile is True and not self.compiled:
            self._compile_blocks()
        g = self._guidance()
        gen_device = "cpu" if self.s.cpu_offload else self.s.device
        generator = torch.Generator(device=gen_device).manual_seed(int(seed))
        conds = self._conditions(conditions) or None
        ds = self._reference_downscale()
        two = self._upsample is not None
        sizes = [(w // 2, h // 2), (w, h)] if two else [(w, h)]
        if dialogue is not None:
            return self._generate_a2v(prompt, n, sizes, fps, generator, conds, reference, ds,
                                      dialogue)
        cfg = g["guidance_scale"] > 1.0
        pe, pm, ne, nm = self._prompt(prompt, cfg)
        text = dict(prompt_embeds=pe, prompt_attention_mask=pm,
                    negative_prompt_embeds=ne if cfg else None,
                    negative_prompt_attention_mask=nm if cfg else None)
        guidance = dict(guidance_scale=g["guidance_scale"], stg_scale=g["stg_scale"],
                        modality_scale=g["modality_scale"],
                        audio_guidance_scale=g["guidance_scale"],
                        audio_stg_scale=g["stg_scale"], audio_modality_scale=g["modality_scale"])
        from diffusers.pipelines.ltx2 import LTX2ReferenceCondition

        refs = [LTX2ReferenceCondition(frames=reference, strength=self.s.control_strength)] \
            if reference is not None else None
        common = dict(**text, **guidance, num_frames=n, frame_rate=fps, generator=generator,
                      max_sequence_length=self.s.max_sequence_length, **self.s.extra)
        w0, h0 = sizes[0]
        with self._stance_of((n, w0, h0, True), conds, bool(refs)):
            first = pipe(conditions=conds, reference_conditions=refs,
                         reference_downscale_factor=ds, width=w0, height=h0,
                         num_inference_steps=g["num_inference_steps"], sigmas=self._sigmas(),
                         output_type="latent" if two else "pt", **common)
        self.generations.append((n, w0, h0, type(pipe).__name__))
        if two:
            from diffusers.pipelines.ltx2.utils import STAGE_2_DISTILLED_SIGMA_VALUES

            up = self._upsample(latents=first.frames, latents_normalized=False,
                                output_type="latent").frames
            # the refining pass follows the keyframes; the previz set the composition already
            with self._stance_of((n, w, h, False), conds):
                out = pipe(conditions=conds, width=w, height=h, latents=up,
                           audio_latents=first.audio,
                           sigmas=list(STAGE_2_DISTILLED_SIGMA_VALUES),
                           noise_scale=STAGE_2_DISTILLED_SIGMA_VALUES[0], output_type="pt",
                           **{**common, **dict(guidance_scale=1.0, stg_scale=0.0,
                                               modality_scale=1.0, audio_guidance_scale=1.0,
                                               audio_stg_scale=0.0, audio_modality_scale=1.0,
                                               negative_prompt_embeds=None,
                                               negative_prompt_attention_mask=None)})
            self.generations.append((n, w, h, type(pipe).__name__))
        else:
            out = first
        audio = out.audio[0].float().cpu().numpy().T  # (samples, channels)
        return self._picture(out.frames[0], pe, pm, fps, seed), audio, \
            int(pipe.vocoder.config.output_sampling_rate)

    def _generate_a2v(self, prompt, n, sizes, fps, generator, conds, reference, ds, dialogue):
        """Audio to video: the dialogue's latents held at sigma 0 while the picture denoises
        (DFR pipeline, ``freeze_audio``), no guidance."""
        import torch
        from diffusers.pipelines.ltx2.dfr_layout import resolve_canvas
        from diffusers.pipelines.ltx2.utils import STAGE_2_DISTILLED_SIGMA_VALUES

        dfr = self._dfr
        pe, pm, _, _ = self._prompt(prompt, False)
        canvas, _, _ = resolve_canvas(n, dfr.vae_temporal_compression_ratio)
        per_second = dfr.audio_sampling_rate / dfr.audio_hop_length / \
            float(dfr.audio_vae_temporal_compression_ratio)
        length = round(canvas / fps * per_second)
        audio = dialogue_latents(dfr, dialogue, MIX_RATE, length)
        self.dialogue_latents_in = audio  # what the shot's voice was encoded to (tests)
        ref = None
        if reference is not None:
            pixels = dfr.video_processor.preprocess_video(reference, reference.shape[1],
                                                          reference.shape[2])
            param = next(dfr.vae.parameters())
            with torch.no_grad():
                ref = dfr.vae.encode(pixels.to(param.device, param.dtype)).latent_dist.mode()
        sigmas = self._sigmas() or [float(s) for s in np.linspace(
            1.0, 1.0 / self._guidance()["num_inference_steps"],
            self._guidance()["num_inference_steps"])]
        common = dict(prompt_embeds=pe, prompt_attention_mask=pm, conditions=conds,
                      num_frames=n, frame_rate=fps, audio_latents=audio, freeze_audio=True,
                      generate_slots=False, generator=generator,
                      max_sequence_length=self.s.max_sequence_length, **self.s.extra)
        w0, h0 = sizes[0]
        # no guidance in the DFR pipeline: its batch is the refining pass's
        with self._stance_of((n, w0, h0, True), conds, ref is not None, guided=False):
            first = dfr(width=w0, height=h0, reference_latents=ref,
                        reference_downscale_factor=ds, sigmas=sigmas,
                        output_type="latent" if len(sizes) == 2 else "pt", **common)
        self.generations.append((n, w0, h0, type(dfr).__name__))
        if len(sizes) == 2:
            w, h = sizes[1]
            up = self._upsample(latents=first.frames, latents_normalized=False,
                                output_type="latent").frames
            with self._stance_of((n, w, h, False), conds, guided=False):
                first = dfr(width=w, height=h, latents=up,
                            sigmas=list(STAGE_2_DISTILLED_SIGMA_VALUES), output_type="pt",
                            **common)
            self.generations.append((n, w, h, type(dfr).__name__))
        return self._picture(first.frames[0], pe, pm, fps, generator.initial_seed()), None, 0

    def _eager(self):
        """Within: the transformer runs eagerly where its blocks are compiled. For what the
        warm-up compiled no graph for (static shapes: each input shape is a graph), which
        would otherwise be compiled in the middle of the film: the HDR pass, and a segment
        whose character references add tokens."""
        if not self.compiled:
            return contextlib.nullcontext()
        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.compiler.set_stance("force_eager"))
        if self._aot_package is not None:  # and the artifacts too
            stack.enter_context(self._aot_package.paused())
        return stack

    def _stance_of(self, shape: tuple, conds: list | None, reference: bool = False,
                   guided: bool | None = None):
        """Where a generation of ``shape`` with ``conds`` (and a ``reference``, see
        :meth:`_signature`) runs: as :meth:`_stance` says, but eagerly (:meth:`_eager`)
        where the warm-up traced no graph for what it is (another LoRA, a reference the
        warm-up had not, a character's reference's tokens) rather than compile one in the
        middle of the film."""
        if self._traced and self._signature(shape, conds, reference, guided) \
                not in self._traced:
            return self._eager()
        return self._stance(shape)

    def _picture(self, frames, pe, pm, fps: float, seed: int) -> np.ndarray:
        """A generation's picture, (F, 3, H, W) floats in [0, 1] as the pipelines give it:
        8-bit SDR (F, H, W, 3) uint8; with the HDR LoRA, the HDR pass's scene-linear light
        (F, H, W, 3) float32, the SDR picture its reference (as floats: no 8-bit step),
        the shot's prompt, the HDR adapter alone on."""
        if self._hdr is None:
            return to_uint8_frames(frames)
        import torch
        from diffusers.pipelines.ltx2.pipeline_ltx2_hdr_lora import LTX2HDRReferenceCondition

        pipe = self.pipeline()
        n, _, h, w = frames.shape
        names, weights = self._active
        pipe.enable_lora()
        pipe.set_adapters(["hdr"], [self.s.hdr_lora_scale])
        try:
            gen = torch.Generator(device="cpu" if self.s.cpu_offload else self.s.device)
            # the LoRA's own embeddings where given (they override the prompt's); not among
            # the warm-up's shapes: eagerly, not compiled in the middle of the film
            with self._eager():
                out = self._hdr(
                    prompt_embeds=pe, prompt_attention_mask=pm, **self._hdr_context,
                    reference_conditions=[
                        LTX2HDRReferenceCondition(frames=frames.float(), strength=1.0)],
                    reference_downscale_factor=self.identity["loras"]["hdr"].get(
                        "reference_downscale_factor") or 1,
                    width=w, height=h, num_frames=n, frame_rate=fps,
                    num_inference_steps=self._guidance()["num_inference_steps"],
                    sigmas=self._sigmas(), guidance_scale=1.0, generator=gen.manual_seed(seed),
                    max_sequence_length=self.s.max_sequence_length, output_type="pt")
        finally:  # the shot's own adapters again, for its next generation
            if names:
                pipe.set_adapters(names, weights)
            else:
                pipe.disable_lora()
        self.generations.append((n, w, h, type(self._hdr).__name__))
        return out.frames[0].float().cpu().numpy()

    def _previz(self, shot: Shot, context: RenderContext, size: tuple[int, int],
                canvas: tuple[int, int]) -> ControlStream:
        """The animatic's render of this shot (the cast's figures, no burn-in), as the
        control signal at the reference size."""
        from .animatic import AnimaticEngine

        animatic = AnimaticEngine(figures=self.figures)
        ctx = RenderContext(context.scene, context.width, context.height, context.fps,
                            visemes=context.visemes, label=context.label, look=context.look,
                            cast=context.cast)
        passes = {"depth": animatic.depth, "pose": animatic.pose}
        frames = passes[self.s.control](shot, ctx) if self.s.control in passes \
            else iter(animatic.render(shot, ctx))
        return ControlStream(frames, self.s.control, size, canvas,
                             (context.width, context.height))

    def render(self, shot: Shot, context: RenderContext) -> ShotRender:
        W, H = context.width, context.height
        gw, gh = self._size(W, H)
        r, _ = self._ratios()
        fps = float(context.fps)
        prompt = shot_prompt(shot, context, context.look)
        first_conditions: list[tuple[np.ndarray, float, int]] = []
        if "previous" in context.keyframes:
            first_conditions.append((_fit(context.keyframes["previous"].image, gw, gh, W, H),
                                     self.s.previous_strength, 0))
        elif "establishing" in context.keyframes:
            first_conditions.append((_fit(context.keyframes["establishing"].image, gw, gh, W,
                                          H), self.s.establishing_strength, 0))
        refs = sorted(k for k in context.keyframes if k.startswith("character:"))
        references = [_fit(context.keyframes[k].image, gw, gh, W, H) for k in refs]
        notes: list[str] = []
        hdr = self._hdr is not None
        if hdr:
            notes.append("HDR: the SDR generation re-rendered by the HDR IC-LoRA, scene-linear "
                         "to the HDR masters; the SDR picture clipped at diffuse white")
        control = self.s.control != "none" and "control" in self._adapters
        if self.s.control_lora is None and self.s.control != "none":
            notes.append("no control LoRA ([engine.ltx2] control_lora): previz not followed")
        ds = self._reference_downscale()
        previz = self._previz(shot, context, (gw // ds, gh // ds), (gw, gh)) if control else None
        speech = context.dialogue if (self.s.lip_sync and shot.dialogue and
                                      context.dialogue is not None and
                                      np.any(context.dialogue)) else None
        if speech is not None:
            notes.append("audio to video: the shot's dialogue held fixed (lip-sync)")

        def with_references(conditions: list, n: int) -> tuple[list, str | None]:
            """The first generation's conditions: its keyframe, and each character's
            reference in its middle (a latent index; latent 0 belongs to the keyframe),
            with what the report should say about it."""
            middle = ((n - 1) // r + 1) // 2
            if not refs:
                return conditions, None
            if middle < 1:
                return conditions, ("too short for a character reference besides its "
                                    "keyframe: references not used")
            return conditions + [(img, self.s.character_strength, middle) for img in
                                 references], (
                f"conditioned on the reference of {', '.join(x[10:] for x in refs)} at "
                f"latent frame {middle} (frame {(middle - 1) * r + 1})")

        # the generated mouths against the line they were generated on, measured on the output
        meter = SyncMeter(fps) if speech is not None else None

        def frames() -> Iterator[np.ndarray]:
            # the shot's LoRAs, switched on when its frames are made (renders made before
            # are iterated before or after: each sets its own)
            on = self._use_adapters(shot, control)
            if on:
                r_.notes.append("LoRAs: " + ", ".join(on))
            produced, segment_index = 0, 0
            conditions = first_conditions
            sound: list[np.ndarray] = []
            rate = 0
            light = [0.0, 0, 0]  # HDR: the peak, pixels above white, pixels
            while produced < shot.duration:
                chained = 1 if produced else 0
                start = produced - chained  # the shot frame this generation's frame 0 shows
                need, note = 0, None

                def one(segment: int):
                    nonlocal need, note
                    need = min(shot.duration - produced + chained, segment)
                    # the film's bucket; shorter segments (out of memory) leave the buckets
                    n = self._frames_for(need, segment >= self._max_segment())
                    reference = previz.take(start, n) if previz is not None else None
                    dialogue = None
                    if speech is not None:
                        a = round(start / fps * MIX_RATE)
                        dialogue = speech[a:a + math.ceil(n / fps * MIX_RATE)]
                    conds = conditions
                    if not produced:
                        conds, note = with_references(conditions, n)
                    return self._generate(prompt, n, gw, gh, fps, shot.seed + segment_index,
                                          conds, reference, dialogue)

                # out of GPU memory: VAE tiling, then CPU offload, then shorter generations
                clip, audio, rate = self._with_fallbacks(shot, one)
                if note:
                    r_.notes.append(note)
                for f in clip[chained:need]:
                    produced += 1
                    out = _crop(f, W, H)
                    if hdr:  # scene-linear: to the HDR intermediate; SDR: clipped
                        if r_.linear is not None:
                            r_.linear(out)
                        light[0] = max(light[0], float(out.max()))
                        light[1] += int((out > 1).any(axis=-1).sum())
                        light[2] += out.shape[0] * out.shape[1]
                        out = sdr_from_linear(out)
                    if meter is not None:
                        meter.add(out)
                    yield out
                if audio is not None:
                    a, b = round(chained / fps * rate), round(need / fps * rate)
                    sound.append(audio[a:b])
                conditions = [(sdr_from_linear(clip[need - 1]) if hdr else clip[need - 1],
                               1.0, 0)]
                segment_index += 1
            if light[2]:
                nits = min(light[0] * REFERENCE_WHITE, 10000)
                r_.notes.append(f"HDR: peak {light[0]:.1f}x diffuse white ({nits:.0f} cd/m2 "
                                f"in PQ), {100 * light[1] / light[2]:.1f} % of pixels above "
                                "white")
            if sound and self.s.audio and speech is None:
                r_.audio, r_.audio_rate = np.concatenate(sound).astype(np.float32), rate
            if meter is not None:
                r_.lip_sync = meter.result(speech, MIX_RATE)
                r_.notes.append(r_.lip_sync.describe() if r_.lip_sync else
                                "lip-sync not measured: no face found, or no mouth movement")

        r_ = ShotRender(shot, frames, f"ltx2:{context.scene.location}", context.scene.light)
        r_.hdr = hdr
        r_.notes.extend(notes)
        #: dialogue shots: the measured offset of mouth opening after speech (None: not found)
        r_.lip_sync: SyncResult | None = None
        return r_


#: what compiling buys and costs, from benchmarks/bench_ltx2_film.py on an H200 (the
#: full-size 19B LTX-2 transformer, bf16, 768x512, the example film with its dialogue
#: shots, distilled, 2026-11-30): the eager transformer's throughput by the arithmetic of
#: LTX2Engine._transformer_seconds (~340 TFLOP/s: 27 PFLOP in stock's ~80 s, ~83 s for
#: the film), and the speed-up compiling gives that time, calibrated on the film's shots
#: on one machine (eager 120.6 s, compiled 70.8 and 74.4 s: ~48 s saved of ~83 s); the
#: seconds to compile one shape of the block (the warm-up's step through the blocks that
#: compile it), cold and warm, and what the first one costs besides (compiling's start-up,
#: the first kernels loaded): cold 21.3, 9.7, 9.5, 8.8 s for the four buckets, warm 7.9,
#: 2.6, 3.5, 2.6 s. "auto" compiles the shapes whose generations repay them
_EAGER_TFLOPS = 340.0
_COMPILED_SPEEDUP = 2.3
_COMPILE_COLD_S = 9.3
_COMPILE_WARM_S = 2.9
_COMPILE_START_COLD_S = 12.0
_COMPILE_START_WARM_S = 5.0
#: the block compiled ahead of time (:mod:`.aot`), one artifact per shape: seconds to
#: build one and to load one, and the start-up of the first build and of the first load
#: (inductor's imports). 19B, bf16, one H200, torch 2.11, the example's 4 shapes at
#: 768x512: built in 44.4 s, loaded in 3.9 s for the first and 0.1-0.4 s the others
_AOT_BUILD_S = 10.0
_AOT_LOAD_S = 0.3
_AOT_BUILD_START_S = 4.0
_AOT_LOAD_START_S = 3.5


def _hdr_embeddings(path: Path) -> dict:
    """The HDR LoRA's pre-computed connector embeddings, as the HDR pipeline takes them."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {"connector_video_embeds": f.get_tensor("video_context"),
                    "connector_audio_embeds": f.get_tensor("audio_context")}
    except Exception as exc:  # noqa: BLE001 - not safetensors, or without those tensors
        raise AiprodError(f"cannot read the HDR embeddings (video_context and audio_context "
                          f"expected): {exc}", source=path,
                          where="[engine.ltx2] hdr_embeddings") from None
