"""The ``coqui`` speech engine: coqui-tts models loaded from a local folder.

A model folder holds the model's ``config.json`` and its checkpoint (``model.pth``,
``best_model.pth``, ``model_file.pth`` or the last ``checkpoint_N.pth``); nothing is
downloaded. Voices: a multi-speaker model gives each character one of its speakers by
the cast's gender and age (:meth:`CoquiEngine.cast_speakers`: each speaker's median F0,
measured once from a sample it speaks and kept in the user's cache folder, places it;
no two characters share one unless the cast file says so), or, for a voice given no
speaker, one picked from the voice; a model that clones (YourTTS, XTTS) uses the
character's reference recording where the project gives one
(``[characters.NAME] speaker_wav``).

Timings. For VITS-family models (VITS, YourTTS) the words are timed from the model's own
durations: the duration predictor gives every input token (character or phoneme) its
length in decoder frames, and a frame is ``hop_length`` samples, so each word's start and
end fall where its tokens do. The mouth-shape phonemes come from espeak-ng's phonemizer
(the default engine's events), each word's phonemes stretched onto the time the model
gave that word. For other models (no durations exposed), the espeak-ng word and phoneme
timings are scaled to the spoken length.

Delivery: gain and pauses as with espeak-ng; a VITS model speaks faster or slower
through its length scale; whispering is not something these models can do, so a
whispered line is only softer and slower.

coqui-tts needs torch together with a torchaudio that loads beside it. On x86-64, PyPI's
torchaudio is built against CUDA torch, so a CPU-only install is not possible from PyPI;
see the README.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal

from aiprod_post.errors import MediaError
from aiprod_post.files import sha256_file, write_atomic

from .speakers import choose_speakers, median_f0

from .tts import (
    OUTPUT_RATE,
    Delivery,
    EspeakEngine,
    Speech,
    TimedUnit,
    Voice,
    _voiced_until,
    speakable_text,
)

__all__ = ["CoquiEngine", "model_files"]

_HEADROOM_DB = 8.0
#: what each speaker says to have their pitch measured: voiced sounds throughout
_PITCH_SAMPLE = "Nobody is waiting on the old harbour wall; we all go home alone."
_CHECKPOINTS = ("model.pth", "best_model.pth", "model_file.pth", "model.pth.tar")
_LOCK = threading.Lock()


def model_files(folder: str | Path | None) -> tuple[Path, Path]:
    """(config.json, checkpoint) of a local coqui-tts model folder, or a clear error."""
    if not folder:
        raise MediaError("the coqui engine needs a local model folder (--model, or "
                         "[audio] tts_model in the project)")
    d = Path(folder)
    if not d.is_dir():
        raise MediaError("no such coqui-tts model folder: expected a folder with config.json "
                         "and a checkpoint (.pth)", source=d)
    cfg = d / "config.json"
    if not cfg.is_file():
        raise MediaError("not a coqui-tts model folder: no config.json", source=d)
    try:
        json.loads(cfg.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MediaError(f"config.json is not valid JSON: {exc}", source=cfg) from None
    for name in _CHECKPOINTS:
        if (d / name).is_file():
            return cfg, d / name
    steps = sorted(d.glob("checkpoint_*.pth"),
                   key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if steps:
        return cfg, steps[-1]
    raise MediaError("not a coqui-tts model folder: no checkpoint (model.pth, best_model.pth, "
                     "model_file.pth or checkpoint_N.pth)", source=d)


class CoquiEngine:
    """coqui-tts from a local folder, with word timings from the model where it has them."""

    name = "coqui"

    def __init__(self, model: str | Path | None = None, *, device: str = "cpu") -> None:
        self.model_dir = Path(model) if model else None
        self.device = device
        self._synth = None
        self._espeak = EspeakEngine()
        self.identity: dict | None = None

    # ---- loading
    def check(self) -> None:
        """Load the model now: a missing or broken model stops a run before any line."""
        self._load()

    def _load(self):
        if self._synth is not None:
            return self._synth
        cfg, ckpt = model_files(self.model_dir)
        try:
            from TTS.utils.synthesizer import Synthesizer
        except ImportError as exc:
            raise MediaError("the coqui engine needs coqui-tts and a torch with a torchaudio "
                             "that loads beside it (pip install 'aiprod-post[coqui]'): "
                             f"{exc}") from None
        try:
            synth = Synthesizer(tts_checkpoint=ckpt, tts_config_path=cfg,
                                use_cuda=self.device == "cuda")
        except Exception as exc:  # noqa: BLE001 - coqui raises many kinds; say which file
            raise MediaError(f"cannot load the coqui-tts model: {type(exc).__name__}: {exc}",
                             source=ckpt) from None
        self._synth = synth
        self.identity = {"model": str(self.model_dir), "checkpoint": ckpt.name,
                         "sha256": sha256_file(ckpt),
                         "class": type(synth.tts_model).__name__}
        return synth

    def speakers(self) -> list[str]:
        synth = self._load()
        manager = getattr(synth.tts_model, "speaker_manager", None)
        names = getattr(manager, "name_to_id", None) or {}
        return sorted(names)

    def speaker_for(self, voice: Voice) -> str | None:
        """A multi-speaker model's speaker for ``voice``: the one it names
        (:meth:`cast_speakers` chose it), else one picked from the voice: stable, and
        different voices map to spread-out speakers."""
        names = self.speakers()
        if not names:
            return None
        if voice.speaker is not None:
            if voice.speaker not in names:
                raise MediaError(f"no speaker {voice.speaker!r} in the coqui-tts model: "
                                 f"expected one of {', '.join(names)}", source=self.model_dir)
            return voice.speaker
        key = f"{voice.language}+{voice.variant}:{voice.pitch}:{voice.rate}"
        return names[int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")
                     % len(names)]

    def speaker_pitches(self) -> dict[str, float | None]:
        """Each speaker's median F0 in Hz (None: nothing voiced), measured from a sample
        sentence the speaker says, once per model: kept in the user's cache folder
        (``AIPROD_CACHE``) under the checkpoint's hash."""
        names = self.speakers()
        if not names:
            return {}
        root = Path(os.environ.get("AIPROD_CACHE", Path.home() / ".cache" / "aiprod-post"))
        path = root / "coqui-speaker-f0" / f"{self.identity['sha256']}.json"
        try:
            known = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
        missing = [n for n in names if n not in known]
        for name in missing:
            sample = self.synthesize(_PITCH_SAMPLE, Voice(speaker=name))
            known[name] = median_f0(sample.samples, sample.sample_rate)
        if missing:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, json.dumps(known, indent=1, sort_keys=True).encode())
            except OSError:
                pass  # an unwritable cache: measured again next time
        return {n: known[n] for n in names}

    def cast_speakers(self, people: dict[str, tuple[str, int | None]],
                      given: dict[str, str] | None = None) -> dict[str, str]:
        """A speaker per character by the cast's gender and age (``people``: name →
        (gender, age), in cast order; ``given``: name → speaker the cast file fixes).
        Empty for a model without speakers. See :func:`audio.speakers.choose_speakers`."""
        pitches = self.speaker_pitches()
        if not pitches:
            return {}
        try:
            return choose_speakers(list(people), people, pitches, given)
        except ValueError as exc:
            raise MediaError(f"cast file: {exc}", source=self.model_dir) from None

    # ---- synthesis
    def synthesize(self, text: str, voice: Voice, delivery: Delivery | None = None) -> Speech:
        delivery = delivery or Delivery()
        spoken = speakable_text(" ".join(text.split()))
        if not spoken.strip():
            raise MediaError("nothing to speak: the line is empty once markup is removed")
        synth = self._load()
        import torch

        model = synth.tts_model
        rate = int(synth.output_sample_rate)
        reference = getattr(voice, "reference", None)
        if reference and not Path(reference).is_file():
            raise MediaError("no such reference recording for voice cloning", source=reference)
        with _LOCK, torch.inference_mode():
            torch.manual_seed(0)  # VITS draws noise: the same line gives the same audio
            tokens = None
            if type(model).__name__ == "Vits" and not reference:
                raw, tokens = self._vits(model, spoken, voice, delivery, rate)
            else:
                kw = {"speaker_wav": str(reference)} if reference else {}
                speaker = None if reference else self.speaker_for(voice)
                if speaker:
                    kw["speaker_name"] = speaker
                raw = np.asarray(synth.tts(spoken, split_sentences=False, **kw), np.float32)
        ratio = Fraction(OUTPUT_RATE, rate)
        audio = signal.resample_poly(raw, ratio.numerator, ratio.denominator).astype(np.float32)
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        if peak > 0:  # models differ in level: same headroom as the espeak-ng engine
            audio *= np.float32(10 ** ((delivery.gain_db - _HEADROOM_DB) / 20) / peak)
        lead = int(round(delivery.pause_before * OUTPUT_RATE))
        tail = int(round(delivery.pause_after * OUTPUT_RATE))
        audio = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(tail, np.float32)])
        offset = delivery.pause_before
        spoken_seconds = len(raw) / rate
        guide = self._espeak.synthesize(spoken, voice, Delivery())  # phonemes and fallback
        words = _words_from_tokens(tokens, spoken, offset) if tokens else None
        if not words:  # no durations from this model: espeak-ng's timing, scaled
            scale = spoken_seconds / max(guide.duration, 1e-6)
            words = [TimedUnit(w.text, round(offset + w.start * scale, 4),
                               round(offset + w.end * scale, 4)) for w in guide.words]
        voiced = _voiced_until(audio)
        words = [TimedUnit(w.text, w.start, round(max(w.start, voiced(w.start, w.end)), 4))
                 for w in words]
        phonemes = _phonemes_onto_words(guide.words, guide.phonemes, words)
        return Speech(audio, OUTPUT_RATE, words, phonemes, voice, spoken)

    def _vits(self, model, text: str, voice: Voice, delivery: Delivery, rate: int):
        """VITS inference with the per-token durations it decides on."""
        import torch

        device = next(model.parameters()).device
        ids = model.tokenizer.text_to_ids(text)
        x = torch.as_tensor(ids, dtype=torch.long, device=device)[None]
        aux = {"x_lengths": torch.tensor([x.shape[1]], device=device), "d_vectors": None,
               "speaker_ids": None, "language_ids": None, "durations": None}
        speaker = self.speaker_for(voice)
        if speaker is not None:
            sid = model.speaker_manager.name_to_id[speaker]
            aux["speaker_ids"] = torch.tensor([sid], device=device)
        old = model.length_scale
        model.length_scale = old / max(delivery.rate, 0.1)
        try:
            out = model.inference(x, aux_input=aux)
        finally:
            model.length_scale = old
        wav = out["model_outputs"][0, 0].float().cpu().numpy()
        frames = out["durations"][0, 0].float().cpu().numpy()
        hop = int(model.config.audio.hop_length)
        chars = model.tokenizer.characters
        tokens = [(chars.id_to_char(int(i)), float(d) * hop / rate) for i, d in zip(ids, frames)]
        return wav, tokens


def _words_from_tokens(tokens: list[tuple[str, float]], text: str, offset: float
                       ) -> list[TimedUnit] | None:
    """Words timed by their tokens' durations: tokens between word separators make a
    word; blanks and pads take time and belong to no word. None when the groups do not
    line up with the text's words (a phonemizer that merged or split words)."""
    wanted = text.split()
    groups: list[list[float]] = []
    t = offset
    current: list[float] | None = None
    for token, seconds in tokens:
        if token == " ":
            current = None
        elif token.strip() and not _is_blank(token):
            if current is None:
                current = [t, t + seconds]
                groups.append(current)
            else:
                current[1] = t + seconds
        t += seconds
    if len(groups) != len(wanted):
        return None
    return [TimedUnit(w, round(a, 4), round(b, 4)) for w, (a, b) in zip(wanted, groups)]


def _is_blank(token: str) -> bool:
    return token in ("<BLNK>", "<PAD>", "<EOS>", "<BOS>") or token.startswith("<")


def _phonemes_onto_words(guide_words: list[TimedUnit], guide_phonemes: list[TimedUnit],
                         words: list[TimedUnit]) -> list[TimedUnit]:
    """espeak-ng's phonemes, each word's stretched onto the time the model gave it (or,
    when the words do not pair up, all of them onto the spoken span)."""
    out: list[TimedUnit] = []
    if len(guide_words) == len(words) and words:
        pairs = list(zip(guide_words, words))
        for p in guide_phonemes:
            mid = (p.start + p.end) / 2
            g, w = min(pairs, key=lambda gw: 0 if gw[0].start <= mid < gw[0].end else
                       min(abs(mid - gw[0].start), abs(mid - gw[0].end)))
            span = max(g.end - g.start, 1e-6)
            a = w.start + (p.start - g.start) / span * (w.end - w.start)
            b = w.start + (p.end - g.start) / span * (w.end - w.start)
            out.append(TimedUnit(p.text, round(a, 4), round(max(a, b), 4)))
        return out
    if not words or not guide_phonemes:
        return out
    g0, g1 = guide_phonemes[0].start, guide_phonemes[-1].end
    w0, w1 = words[0].start, words[-1].end
    scale = (w1 - w0) / max(g1 - g0, 1e-6)
    return [TimedUnit(p.text, round(w0 + (p.start - g0) * scale, 4),
                      round(w0 + (p.end - g0) * scale, 4)) for p in guide_phonemes]
