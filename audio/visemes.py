"""Phonemes to mouth shapes (visemes), timed to the frame.

The shapes are the animators' convention popularised by Preston Blair and used
by Rhubarb Lip Sync: A–H plus X for rest.

====  =====================================  ==========================
A     closed: P, B, M                         /p b m/
B     slightly open, teeth together            most consonants, EE /i/
C     open: EH, AE                            /ɛ æ ʌ ə e/
D     wide open: AA                           /ɑ a aɪ aʊ/
E     slightly rounded: AO, ER                /ɔ ɒ ɜ ɚ oʊ/
F     puckered: UW, OW, W                     /u ʊ w/
G     upper teeth on lower lip: F, V          /f v/
H     tongue up: L                            /l/
X     rest                                    pauses
====  =====================================  ==========================

>>> viseme_for("ˈəʊ"), viseme_for("m"), viseme_for("f"), viseme_for("iː")
('E', 'A', 'G', 'B')
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable

__all__ = ["MouthCue", "viseme_for", "mouth_cues", "shapes_per_frame", "to_rhubarb_tsv",
           "to_rhubarb_json", "SHAPES"]

SHAPES = "ABCDEFGHX"
_MARKS = str.maketrans("", "", "ˈˌːˑ̩̯̃ʰʲʷ'")
_CONSONANTS = {
    "p": "A", "b": "A", "m": "A",
    "f": "G", "v": "G",
    "l": "H", "ɫ": "H", "l̩": "H",
    "w": "F", "ʍ": "F",
}
_VOWEL_START = [
    ("aɪ", "D"), ("aʊ", "D"), ("ɑ", "D"), ("a", "D"), ("ɒ", "E"), ("ɔ", "E"), ("o", "E"),
    ("ɜ", "E"), ("ɚ", "E"), ("əʊ", "E"), ("oʊ", "E"), ("u", "F"), ("ʊ", "F"), ("ɛ", "C"),
    ("æ", "C"), ("ʌ", "C"), ("ɐ", "C"), ("ə", "C"), ("e", "C"), ("i", "B"), ("ɪ", "B"),
    ("j", "B"),
]


def viseme_for(phoneme: str) -> str:
    """The mouth shape of one IPA phoneme as espeak-ng writes it."""
    p = phoneme.translate(_MARKS).strip()
    if not p or p in {"_", "#", "||", "|"}:
        return "X"
    if p in _CONSONANTS:
        return _CONSONANTS[p]
    for prefix, shape in _VOWEL_START:
        if p.startswith(prefix):
            return shape
    if p[0] in _CONSONANTS:
        return _CONSONANTS[p[0]]
    return "B"  # the remaining consonants: t d k g s z ʃ ʒ θ ð n ŋ h ɹ tʃ dʒ …


@dataclass(frozen=True)
class MouthCue:
    """A mouth shape held from ``start`` to ``end`` (seconds, on frame boundaries)."""

    start: float
    end: float
    value: str


def mouth_cues(phonemes: Iterable, duration: float, fps: Fraction, offset: float = 0.0
               ) -> list[MouthCue]:
    """Frame-quantised cues from timed phonemes (anything with ``text``, ``start``, ``end``).

    Each phoneme's shape starts on the frame nearest its onset; a shape shorter
    than one frame is dropped (the eye cannot see it); gaps are rest (X).
    """
    fps = Fraction(fps)
    total = max(1, math.ceil(duration * fps - 1e-9))
    frames = ["X"] * total
    for ph in phonemes:
        a = round((ph.start + offset) * fps)
        b = round((ph.end + offset) * fps)
        shape = viseme_for(ph.text)
        for f in range(max(0, a), min(total, b)):
            frames[f] = shape
    return _cues_from_frames(frames, fps)


def _cues_from_frames(frames: list[str], fps: Fraction) -> list[MouthCue]:
    cues: list[MouthCue] = []
    start = 0
    for f in range(1, len(frames) + 1):
        if f == len(frames) or frames[f] != frames[start]:
            cues.append(MouthCue(float(start / fps), float(f / fps), frames[start]))
            start = f
    return cues


def shapes_per_frame(cues: list[MouthCue], n_frames: int, fps: Fraction, offset: float = 0.0
                     ) -> list[str]:
    """The shape on each of ``n_frames`` frames; cue times are shifted by ``offset`` seconds."""
    fps = Fraction(fps)
    out = ["X"] * n_frames
    for cue in cues:
        a = max(0, round((cue.start + offset) * fps))
        b = min(n_frames, round((cue.end + offset) * fps))
        for f in range(a, b):
            out[f] = cue.value
    return out


def to_rhubarb_tsv(cues: list[MouthCue]) -> str:
    """Rhubarb's TSV: one cue per line, ``start<TAB>shape``, then the final rest."""
    lines = [f"{c.start:.2f}\t{c.value}" for c in cues]
    if cues:
        lines.append(f"{cues[-1].end:.2f}\tX")
    return "\n".join(lines) + "\n"


def to_rhubarb_json(cues: list[MouthCue], sound_file: str = "", duration: float | None = None
                    ) -> str:
    """Rhubarb's JSON: ``metadata`` and ``mouthCues`` with start, end, value."""
    return json.dumps({
        "metadata": {"soundFile": sound_file,
                     "duration": round(duration if duration is not None else
                                       (cues[-1].end if cues else 0.0), 2)},
        "mouthCues": [{"start": round(c.start, 2), "end": round(c.end, 2), "value": c.value}
                      for c in cues],
    }, indent=2)
