"""Subtitles (SRT and WebVTT) from the dialogue's word timings.

Rules, as broadcasters' style guides set them: at most 42 characters a line and
two lines a subtitle, at most 17 characters per second, at least 5/6 s on
screen, no two subtitles overlapping. A line too long or too fast for one
subtitle is split at word boundaries using the words' own times.

>>> cues = subtitle_cues([SpokenLine(1.0, "Ferry's gone. Left at six.", [])])
>>> to_srt(cues).splitlines()[1]
'00:00:01,000 --> 00:00:02,588'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["SpokenLine", "Cue", "subtitle_cues", "to_srt", "to_webvtt", "MAX_LINE", "MAX_CPS",
           "MIN_SECONDS"]

MAX_LINE = 42
MAX_LINES = 2
MAX_CPS = 17.0
MIN_SECONDS = 5 / 6


@dataclass
class SpokenLine:
    """A line of dialogue on the programme's clock: start in seconds, and its words
    as (text, start, end) seconds relative to the line's start."""

    start: float
    text: str
    words: list[tuple[str, float, float]] = field(default_factory=list)
    speaker: str = ""


@dataclass
class Cue:
    start: float
    end: float
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _wrap(words: list[str]) -> list[str] | None:
    """Two balanced lines of at most MAX_LINE characters, or None if it cannot fit."""
    text = " ".join(words)
    if len(text) <= MAX_LINE:
        return [text]
    best = None
    for k in range(1, len(words)):
        a, b = " ".join(words[:k]), " ".join(words[k:])
        if len(a) <= MAX_LINE and len(b) <= MAX_LINE:
            score = max(len(a), len(b))
            if best is None or score < best[0]:
                best = (score, [a, b])
    return best[1] if best else None


def _chunks(line: SpokenLine) -> list[tuple[list[str], float, float]]:
    words = [w for w in line.text.split()]
    timed = line.words if len(line.words) == len(words) else []
    if not timed and line.words:
        # the speech engine's words differ from the written ones: spread the written
        # words over the spoken span by length
        a, b = line.words[0][1], line.words[-1][2]
        total = sum(len(w) + 1 for w in words)
        t = a
        for w in words:
            d = (b - a) * (len(w) + 1) / total
            timed.append((w, t, t + d))
            t += d
    if not timed:
        # no word times: spread the line at the subtitle reading rate
        per_char = 1 / MAX_CPS
        t = 0.0
        timed = []
        for w in words:
            d = (len(w) + 1) * per_char
            timed.append((w, t, t + d))
            t += d
    out: list[tuple[list[str], float, float]] = []
    current: list[str] = []
    start = 0.0
    for i, w in enumerate(words):
        trial = current + [w]
        fits = _wrap(trial) is not None
        if current and not fits:
            out.append((current, start, timed[i - 1][2]))
            current, start = [w], timed[i][1]
        else:
            if not current:
                start = timed[i][1]
            current = trial
    if current:
        out.append((current, start, timed[-1][2]))
    return out


def subtitle_cues(lines: list[SpokenLine]) -> list[Cue]:
    """Cues that keep the length, line, speed and duration limits, in time order."""
    raw: list[tuple[list[str], float, float]] = []
    for line in sorted(lines, key=lambda ln: ln.start):
        for words, a, b in _chunks(line):
            raw.append((words, line.start + a, line.start + b))
    cues: list[Cue] = []
    for words, a, b in raw:
        text = " ".join(words)
        need = max(MIN_SECONDS, len(text) / MAX_CPS)
        # Never over the previous subtitle: when lines come too fast to read, a subtitle
        # waits for the one before it to be read, and catches up in the next pause.
        start = max(a, cues[-1].end) if cues else a
        cues.append(Cue(start, max(b, start + need), _wrap(words) or [text[:MAX_LINE]]))
    return cues


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(cues: list[Cue]) -> str:
    blocks = [f"{i}\n{_stamp(c.start, ',')} --> {_stamp(c.end, ',')}\n{c.text}\n"
              for i, c in enumerate(cues, 1)]
    return "\n".join(blocks)


def to_webvtt(cues: list[Cue]) -> str:
    blocks = [f"{_stamp(c.start, '.')} --> {_stamp(c.end, '.')}\n{c.text}\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def reading_speed(cue: Cue) -> float:
    """Characters per second, counting the line break as none."""
    chars = len(cue.text.replace("\n", ""))
    return chars / max(cue.end - cue.start, 1e-9) if not math.isinf(cue.end) else 0.0
