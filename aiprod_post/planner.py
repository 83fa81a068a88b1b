"""The shot planner: a parsed screenplay becomes a shot plan a director would recognise.

Coverage rules, in the order a scene is covered:

* every scene opens on an **establishing wide** (built from the scene's first
  action paragraph when it has one);
* **action** paragraphs are wides; a paragraph cued ``INSERT`` / ``CLOSE ON`` /
  ``ECU``, or a short beat that names no character, is an insert (a close-up
  when it names one);
* **dialogue** runs are covered as singles in shot / reverse-shot: a speaker's
  first single in a scene is over the shoulder of the listener, later ones
  tighten to close-ups; three or more quick lines bouncing between two people
  play in one two-shot; dual dialogue is a two-shot; (V.O.) plays over the
  picture before it, (O.S.) over a reaction shot of the listener;
* **camera moves** come from the action text when it asks for one (PAN, TILT,
  DOLLY, PUSH IN, TRACKING, ZOOM, HANDHELD in capitals, or in lower case in a
  sentence about the camera); otherwise static;
* **centred text** becomes a title card; transitions go onto the shot after
  them (DISSOLVE TO:, FADE IN:, CUT TO:) or the shot before (FADE OUT.).

Durations are estimates in whole frames, bounded, from word counts: speech
lengthens a shot later if the voice needs longer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Union

from pydantic import ValidationError

from . import __version__
from .errors import PlanError, ScriptError
from .fountain import parse_bytes, read_script_bytes
from .plan import (
    CameraMove,
    CastMember,
    Conditioning,
    DialogueLine,
    Framing,
    Scene,
    Shot,
    ShotPlan,
    Transition,
    TransitionKind,
    id_problem,
)
from .script import (
    Action,
    Centered,
    Dialogue,
    DialogueBlock,
    Lyrics,
    Parenthetical,
    SceneHeading,
    Script,
)
from .script import Transition as ScriptTransition

__all__ = ["PlannerSettings", "plan_script", "plan_source", "plan_bytes", "shot_suffix",
           "camera_move_in"]


@dataclass(frozen=True)
class PlannerSettings:
    """Pacing and format of the plan. Defaults give a conventional cut."""

    fps: Fraction = Fraction(24)
    width: int = 1920
    height: int = 1080
    seed: int = 0
    #: Speaking rate for duration estimates (2.5 words/s ≈ 150 wpm, screen pace).
    words_per_second: float = 2.5
    #: Reading pace of action: seconds per word of description, plus a base.
    action_seconds_per_word: float = 0.3
    action_base_seconds: float = 1.0
    establishing_seconds: float = 3.0
    title_seconds: float = 3.0
    min_shot_seconds: float = 1.5
    max_action_seconds: float = 10.0
    max_dialogue_seconds: float = 20.0
    beat_seconds: float = 1.0
    dissolve_seconds: float = 1.0
    fade_seconds: float = 1.0
    #: Lines of at most this many words count as quick for a two-shot exchange.
    quick_line_words: int = 4
    #: Refuse a script that plans more shots than this (:class:`PlanError`), checked
    #: as each shot is planned; None plans any number.
    max_shots: int | None = None
    #: Refuse a script with more speaking characters than this (:class:`PlanError`).
    #: A wide lists everyone in its scene, so a plan grows with shots times cast:
    #: 2,000 wides of a 60,000-name scene hold 120 million names. None allows any.
    max_cast: int | None = None


# -------------------------------------------------------------- helpers

_SKIPPED_LETTERS = "IO"  # film convention: I and O read as 1 and 0 on a slate
_LETTERS = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in _SKIPPED_LETTERS]


def shot_suffix(index: int) -> str:
    """Letter(s) after the scene number for the ``index``-th shot of a scene.

    >>> [shot_suffix(i) for i in (0, 1, 2, 8, 9, 24, 25)]
    ['', 'A', 'B', 'H', 'J', 'Z', 'AA']
    """
    if index == 0:
        return ""
    n = index - 1
    out = ""
    while True:
        out = _LETTERS[n % len(_LETTERS)] + out
        n = n // len(_LETTERS) - 1
        if n < 0:
            return out


_MOVES: list[tuple[CameraMove, str]] = [
    (CameraMove.HANDHELD, r"hand-?held|shaky cam"),
    (CameraMove.PUSH_IN, r"push(?:es|ing)?[- ]in|creep(?:s|ing)? in"),
    (CameraMove.DOLLY, r"doll(?:y|ies|ying)"),
    (CameraMove.TRACKING, r"track(?:s|ing)?|follows? (?:him|her|them)"),
    (CameraMove.ZOOM, r"zoom(?:s|ing)?"),
    (CameraMove.PAN, r"pan(?:s|ning)?"),
    (CameraMove.TILT, r"tilt(?:s|ing)?"),
]
_MOVE_RE = [(move, re.compile(rf"\b(?:{pat})\b", re.I)) for move, pat in _MOVES]
_CAMERA_CONTEXT = re.compile(r"\b(?:camera|we|lens|shot|frame)\b", re.I)
_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
_INSERT_CUE = re.compile(r"^\s*(INSERT|CLOSE ON|CLOSE-UP|CLOSEUP|ECU|EXTREME CLOSE|ANGLE ON)\b")
_WORD = re.compile(r"[\w'’-]+")
_BEAT = re.compile(r"\b(beat|pause|a moment|long pause)\b", re.I)
_OFF_SCREEN = {"O.S.", "O.C.", "OS", "OC", "OFF", "OFF-SCREEN"}
_VOICE_OVER = {"V.O.", "VO", "V/O", "VOICE OVER", "VOICE-OVER", "PRE-LAP", "PRELAP", "FILTERED",
               "ON PHONE", "ON THE PHONE", "OVER PHONE"}
_CONTD = re.compile(r"^CONT['’]?D\.?$|^CONTINUED$|^CONT\.?$", re.I)
_LIGHT_WORDS = [
    ("night", r"NIGHT|MIDNIGHT"),
    ("dusk", r"DUSK|SUNSET|EVENING|TWILIGHT|MAGIC HOUR|SUNDOWN"),
    ("dawn", r"DAWN|SUNRISE|DAYBREAK|FIRST LIGHT|EARLY MORNING"),
    ("day", r"DAY|MORNING|AFTERNOON|NOON|MIDDAY|DAYTIME"),
]
_INHERIT_LIGHT = re.compile(r"\b(CONTINUOUS|SAME|LATER|MOMENTS LATER|CONT['’]?D)\b", re.I)
_CONTINUOUS = re.compile(r"\b(CONTINUOUS|SAME|SAME TIME|CONT['’]?D)\b", re.I)


# Maximal runs of word and of non-word characters (word as regex \w). A name
# found between word boundaries starts and ends on run boundaries, so a name is
# a sequence of whole runs, and finding names is matching run sequences.
_RUN = re.compile(r"\w+|\W+")


def _is_word_run(run: str) -> bool:
    return run[0].isalnum() or run[0] == "_"


class _NameFinder:
    """Which of many names occur in a text, each between word boundaries (like
    ``\\bNAME\\b``), in one pass over the text however many names there are.

    An Aho–Corasick automaton whose symbols are runs of word or non-word
    characters: searching each name's pattern in turn cost the text's length
    times the size of the cast.

    >>> finder = _NameFinder({"ANN": ["ANN", "Ann"], "ANN MAY": ["ANN MAY"], "MAY": ["MAY"]})
    >>> sorted(finder.find("Ann sees ANN MAY.")), sorted(finder.find("ANNA and MAYA"))
    (['ANN', 'ANN MAY', 'MAY'], [])
    """

    def __init__(self, names: dict[str, Iterable[str]]) -> None:
        self._goto: list[dict[str, int]] = [{}]
        self._keys: list[list[str]] = [[]]  # names ending at each node
        for key, variants in names.items():
            for variant in variants:
                node = 0
                for run in _RUN.findall(variant):
                    child = self._goto[node].get(run)
                    if child is None:
                        child = len(self._goto)
                        self._goto[node][run] = child
                        self._goto.append({})
                        self._keys.append([])
                    node = child
                if node:
                    self._keys[node].append(key)
        # fail: the longest proper suffix that is a node; found_link: the longest
        # proper suffix at which a name ends (-1: none)
        self._fail = [0] * len(self._goto)
        self._found_link = [-1] * len(self._goto)
        queue = deque(self._goto[0].values())
        while queue:
            node = queue.popleft()
            for run, child in self._goto[node].items():
                f = self._fail[node]
                while f and run not in self._goto[f]:
                    f = self._fail[f]
                suffix = self._goto[f].get(run, 0)
                self._fail[child] = suffix
                self._found_link[child] = suffix if self._keys[suffix] else \
                    self._found_link[suffix]
                queue.append(child)

    def find(self, text: str) -> set[str]:
        """Keys of the names in ``text``."""
        runs = _RUN.findall(text)
        if not runs:
            return set()
        # \b never holds at the ends of the text beside a non-word character, so
        # a name may not start (end) on a non-word run that starts (ends) the text
        first_is_word, last_is_word = _is_word_run(runs[0]), _is_word_run(runs[-1])
        if not first_is_word:
            runs[0] = ""  # no name has an empty run
        if not last_is_word:
            runs[-1] = ""
        goto, fail, keys, link = self._goto, self._fail, self._keys, self._found_link
        found: set[str] = set()
        reported: set[int] = set()
        node = 0
        for run in runs:
            while node and run not in goto[node]:
                node = fail[node]
            node = goto[node].get(run, 0)
            hit = node if keys[node] else link[node]
            # a node's suffix chain is reported with it, so stop at one seen before
            while hit > 0 and hit not in reported:
                reported.add(hit)
                found.update(keys[hit])
                hit = link[hit]
        return found


def camera_move_in(text: str) -> CameraMove:
    """The camera move an action paragraph asks for, or static.

    A move word counts in capitals (``We PUSH IN``) or in a sentence about the
    camera (``the camera pans left``), so "she scrubs a pan" stays static.

    >>> camera_move_in("She scrubs a pan."), camera_move_in("The camera pans to the door.")
    (<CameraMove.STATIC: 'static'>, <CameraMove.PAN: 'pan'>)
    """
    for sentence in _SENTENCE.findall(text):
        about_camera = bool(_CAMERA_CONTEXT.search(sentence))
        for move, pattern in _MOVE_RE:
            for m in pattern.finditer(sentence):
                if about_camera or m.group(0).isupper():
                    return move
    return CameraMove.STATIC


def _words(text: str) -> int:
    return len(_WORD.findall(text))


def _light(time_of_day: str | None, previous: str) -> str:
    if not time_of_day:
        return previous
    upper = time_of_day.upper()
    for light, pattern in _LIGHT_WORDS:
        if re.search(rf"\b(?:{pattern})\b", upper):
            return light
    return previous if _INHERIT_LIGHT.search(upper) else "day"


def _transition(text: str, line: int, s: PlannerSettings, fps: Fraction) -> Transition:
    upper = text.upper()
    if "FADE IN" in upper or "FADE UP" in upper:
        kind, seconds = TransitionKind.FADE_IN, s.fade_seconds
    elif "FADE OUT" in upper or "FADE TO BLACK" in upper:
        kind, seconds = TransitionKind.FADE_OUT, s.fade_seconds
    elif "DISSOLVE" in upper:
        kind, seconds = TransitionKind.DISSOLVE, s.dissolve_seconds
    elif "WIPE" in upper:
        kind, seconds = TransitionKind.WIPE, s.dissolve_seconds
    else:
        kind, seconds = TransitionKind.CUT, 0.0
    return Transition(kind=kind, duration=round(seconds * fps), text=text, source_line=line)


def _is_contd(ext: str) -> bool:
    return bool(_CONTD.match(ext.strip()))


def _cast_key(name: str) -> str:
    return " ".join(name.split()).upper()


# -------------------------------------------------------------- planner

Unit = Union[Action, DialogueBlock, Centered, Lyrics]


@dataclass
class _SceneDraft:
    heading: SceneHeading | None
    units: list[Unit] = field(default_factory=list)
    # transitions met while collecting, with the index of the unit they precede
    transitions: list[tuple[int, ScriptTransition]] = field(default_factory=list)


@dataclass
class _ShotDraft:
    framing: Framing
    seconds: float
    characters: list[str]
    lines: list[DialogueLine] = field(default_factory=list)
    action: str = ""
    title: str | None = None
    move: CameraMove = CameraMove.STATIC
    first_line: int = 0
    last_line: int = 0
    transition_in: Transition | None = None
    transition_out: Transition | None = None


class _Planner:
    def __init__(self, script: Script, s: PlannerSettings) -> None:
        self.script = script
        self.s = s
        self.fps = s.fps
        self.warnings: list[tuple[int, str]] = list(script.warnings)
        self.cast: dict[str, CastMember] = {}
        self.names = _NameFinder({})
        self.shots_planned = 0

    # ---- cast
    def _collect_cast(self) -> None:
        for block in self.script.of_type(DialogueBlock):
            key = _cast_key(block.character.name)
            n_lines = sum(isinstance(x, (Dialogue, Lyrics)) for x in block.lines)
            if key not in self.cast:
                if self.s.max_cast is not None and len(self.cast) >= self.s.max_cast:
                    raise PlanError(f"more than {self.s.max_cast} speaking characters: the "
                                    f"cast limit (max_cast) is {self.s.max_cast}",
                                    line=block.line)
                self.cast[key] = CastMember(name=block.character.name, lines=0,
                                            first_line=block.line)
            self.cast[key].lines += n_lines
        self.names = _NameFinder({key: {m.name, m.name.upper(), m.name.title()}
                                  for key, m in self.cast.items()})
        self.cast_order = {key: k for k, key in enumerate(self.cast)}

    def _mentioned(self, text: str) -> list[str]:
        """Cast members named in ``text`` as whole words, in order of their first cue."""
        found = sorted(self.names.find(text), key=self.cast_order.__getitem__)
        return [self.cast[key].name for key in found]

    def _name(self, character_name: str) -> str:
        return self.cast[_cast_key(character_name)].name

    # ---- scenes
    def _drafts(self) -> list[_SceneDraft]:
        drafts: list[_SceneDraft] = [_SceneDraft(None)]
        for e in self.script.elements:
            if isinstance(e, SceneHeading):
                drafts.append(_SceneDraft(e))
            elif isinstance(e, (Action, DialogueBlock, Centered, Lyrics)):
                drafts[-1].units.append(e)
            elif isinstance(e, ScriptTransition):
                drafts[-1].transitions.append((len(drafts[-1].units), e))
        prologue = drafts[0]
        if not prologue.units:
            if len(drafts) > 1:
                # transitions before the first heading (FADE IN:) belong to scene one
                drafts[1].transitions[:0] = [(0, t) for _, t in prologue.transitions]
            drafts = drafts[1:]
        return drafts

    def plan(self, title: str, source: str | None, sha256: str | None) -> ShotPlan:
        self._collect_cast()
        drafts = self._drafts()
        if not drafts:
            raise ScriptError("nothing to plan: no scene, action or dialogue", line=1)
        scenes: list[Scene] = []
        seen_ids: dict[str, int] = {}
        light = "day"
        pending: list[ScriptTransition] = []
        previous_shot: Shot | None = None
        auto_number = 0
        for draft in drafts:
            h = draft.heading
            if h is None:
                scene_id = "0"
            else:
                auto_number += 1
                scene_id = h.scene_number or str(auto_number)
            line = h.line if h else 1
            if (problem := id_problem(scene_id, max_len=48)) is not None:  # room for 3AB.12
                raise ScriptError(f"scene number {problem}", line=line)
            if scene_id.casefold() in seen_ids:  # 3a and 3A would be one file on macOS
                raise ScriptError(f"scene number {scene_id!r} is already used by the scene on "
                                  f"line {seen_ids[scene_id.casefold()]}; scene numbers must be "
                                  "unique", line=line)
            seen_ids[scene_id.casefold()] = line
            light = _light(h.time_of_day if h else None, light)
            continuous = bool(h and h.time_of_day and _CONTINUOUS.search(h.time_of_day))
            shots = self._cover(draft, pending)
            if not shots:
                self.warnings.append((line, "scene has no action or dialogue; planned as an "
                                            "establishing shot only"))
            ids = [scene_id + shot_suffix(i) for i in range(len(shots))]
            built: list[Shot] = []
            for i, d in enumerate(shots):
                if i == 0:
                    if continuous and previous_shot is not None:
                        cond = Conditioning(keyframe="previous-shot", shot=previous_shot.id)
                    else:
                        cond = Conditioning()
                elif d.framing == Framing.TITLE:
                    cond = Conditioning()  # a card on black carries no set
                else:
                    cond = Conditioning(keyframe="establishing", shot=ids[0])
                built.append(self._shot(ids[i], d, cond))
            if built:
                previous_shot = built[-1]
            scenes.append(Scene(
                id=scene_id,
                heading=h.text if h else "",
                int_ext=h.int_ext if h else None,
                location=h.location if h else "",
                time_of_day=h.time_of_day if h else None,
                light=light,  # type: ignore[arg-type]
                continuous=continuous,
                source_line=h.line if h else None,
                shots=built,
            ))
        for t in pending:
            self.warnings.append((t.line, f"transition {t.text!r} has no shot after it"))
        self._number_lines(scenes)
        try:
            return ShotPlan(
                title=title, source=source, source_sha256=sha256, fps=self.fps,
                width=self.s.width, height=self.s.height, seed=self.s.seed,
                generator=f"aiprod-post {__version__}",
                cast=list(self.cast.values()), scenes=scenes,
            )
        except ValidationError as exc:  # e.g. shot 3A of scene 3 beside a scene numbered 3A
            raise ScriptError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None

    def _shot(self, shot_id: str, d: _ShotDraft, cond: Conditioning) -> Shot:
        frames = max(1, round(Fraction(d.seconds).limit_denominator(1000) * self.fps))
        digest = hashlib.sha256(f"{self.s.seed}/{shot_id}".encode()).digest()
        return Shot(
            id=shot_id, framing=d.framing, camera_move=d.move, duration=frames,
            characters=d.characters, dialogue=d.lines, action=d.action, title=d.title,
            transition_in=d.transition_in or Transition(),
            transition_out=d.transition_out,
            seed=int.from_bytes(digest[:4], "big") & 0x7FFFFFFF,
            conditioning=cond,
            source_lines=(d.first_line, d.last_line) if d.first_line else None,
        )

    @staticmethod
    def _number_lines(scenes: list[Scene]) -> None:
        for scene in scenes:
            k = 0
            for shot in scene.shots:
                for ln in shot.dialogue:
                    k += 1
                    ln.id = f"{scene.id}.{k}"

    # ---- coverage of one scene
    def _cover(self, draft: _SceneDraft, pending: list[ScriptTransition]) -> list[_ShotDraft]:
        s = self.s
        shots: list[_ShotDraft] = []
        seen: dict[str, None] = {}  # a dict keeps first-seen order with a set's lookup
        for u in draft.units:
            names = ([self._name(u.character.name)] if isinstance(u, DialogueBlock)
                     else self._mentioned(u.text.plain))
            seen.update(dict.fromkeys(names))
        present = list(seen)

        units = list(draft.units)
        trans_at: dict[int, list[ScriptTransition]] = {}
        for idx, t in draft.transitions:
            trans_at.setdefault(idx, []).append(t)

        def apply_transitions(idx: int) -> None:
            for t in trans_at.pop(idx, []):
                tr = _transition(t.text, t.line, s, self.fps)
                if tr.kind == TransitionKind.FADE_OUT:
                    if shots:
                        shots[-1].transition_out = tr
                    else:
                        pending.append(t)  # fade out before anything: keep looking back
                else:
                    pending.append(t)

        def take_pending(d: _ShotDraft) -> None:
            if not pending:
                return
            chosen = None
            for t in pending:
                tr = _transition(t.text, t.line, s, self.fps)
                if tr.kind == TransitionKind.FADE_OUT:
                    continue
                # FADE IN and DISSOLVE outrank a plain CUT TO: written beside them
                if chosen is None or chosen.kind == TransitionKind.CUT:
                    chosen = tr
            d.transition_in = chosen
            pending.clear()

        # Establishing wide
        apply_transitions(0)
        first = units[0] if units else None
        if isinstance(first, Action) and not _INSERT_CUE.match(first.text.plain):
            est = self._action_shot(first, Framing.WIDE, present)
            est.seconds = max(est.seconds, s.establishing_seconds)
            units = units[1:]
            offset = 1
        else:
            line = draft.heading.line if draft.heading else 1
            est = _ShotDraft(Framing.WIDE, s.establishing_seconds, list(present),
                             first_line=line, last_line=line)
            offset = 0
        take_pending(est)
        self._count_shot(est)
        shots.append(est)

        covered: set[str] = set()
        last_speaker: str | None = None
        i = 0
        while i < len(units):
            apply_transitions(i + offset)
            u = units[i]
            if isinstance(u, DialogueBlock):
                j = i
                while j < len(units) and isinstance(units[j], DialogueBlock) and \
                        (j == i or not trans_at.get(j + offset)):
                    j += 1
                run = [x for x in units[i:j] if isinstance(x, DialogueBlock)]
                new, last_speaker = self._cover_dialogue(run, present, covered, last_speaker,
                                                         shots)
                for d in new:
                    take_pending(d)
                    shots.append(d)
                i = j
                continue
            if isinstance(u, Centered):
                d = _ShotDraft(Framing.TITLE, s.title_seconds, [], title=u.text.plain,
                               first_line=u.line, last_line=u.line)
            else:
                mentioned = self._mentioned(u.text.plain)
                framing = Framing.WIDE
                if _INSERT_CUE.match(u.text.plain):
                    framing = Framing.CLOSE_UP if mentioned else Framing.INSERT
                elif not mentioned and _words(u.text.plain) <= 10 and shots:
                    framing = Framing.INSERT
                d = self._action_shot(u, framing, mentioned if framing != Framing.WIDE
                                      else present)
            take_pending(d)
            self._count_shot(d)
            shots.append(d)
            i += 1
        apply_transitions(len(units) + offset)
        return shots

    def _count_shot(self, d: _ShotDraft) -> None:
        """Count a planned shot; over the limit, stop planning at once."""
        self.shots_planned += 1
        limit = self.s.max_shots
        if limit is not None and self.shots_planned > limit:
            raise PlanError(f"more than {limit} shots: the shot limit (max_shots) is {limit}; "
                            "plan a shorter script or raise the limit",
                            line=d.first_line or None)

    def _action_shot(self, u: Action | Lyrics, framing: Framing, chars: list[str]) -> _ShotDraft:
        s = self.s
        text = u.text.plain
        seconds = s.action_base_seconds + _words(text) * s.action_seconds_per_word
        seconds = min(max(seconds, 2.0 if framing != Framing.INSERT else s.min_shot_seconds),
                      s.max_action_seconds)
        last = u.line + text.count("\n")
        return _ShotDraft(framing, seconds, list(chars), action=" ".join(text.split()),
                          move=camera_move_in(text), first_line=u.line, last_line=last)

    def _lines_of(self, block: DialogueBlock) -> list[DialogueLine]:
        speaker = self._name(block.character.name)
        exts = [e for e in block.character.extensions if not _is_contd(e)]
        out: list[DialogueLine] = []
        paren: str | None = None
        for item in block.lines:
            if isinstance(item, Parenthetical):
                paren = item.text
                continue
            out.append(DialogueLine(
                id="0", speaker=speaker, text=" ".join(item.text.plain.split()),
                parenthetical=paren, extensions=exts, lyric=isinstance(item, Lyrics),
                dual=block.dual is not None, source_line=item.line))
            paren = None
        if paren is not None and out:
            # a trailing (beat) holds the end of the line
            out[-1].parenthetical = (out[-1].parenthetical or "") + " " + paren
        return [ln for ln in out if ln.text]

    def _dialogue_seconds(self, lines: list[DialogueLine]) -> float:
        s = self.s
        words = sum(_words(ln.text) for ln in lines)
        beats = sum(1 for ln in lines if ln.parenthetical and _BEAT.search(ln.parenthetical))
        seconds = 0.4 + words / s.words_per_second + beats * s.beat_seconds \
            + 0.3 * max(0, len(lines) - 1)
        return min(max(seconds, s.min_shot_seconds), s.max_dialogue_seconds)

    def _cover_dialogue(self, run: list[DialogueBlock], present: list[str], covered: set[str],
                        last_speaker: str | None, shots: list[_ShotDraft]
                        ) -> tuple[list[_ShotDraft], str | None]:
        s = self.s
        out: list[_ShotDraft] = []
        i = 0
        while i < len(run):
            b = run[i]
            speaker = self._name(b.character.name)
            exts = {e.upper() for e in b.character.extensions}
            lines = self._lines_of(b)
            # dual dialogue: both speak at once, so both are in frame
            if b.dual == "left" and i + 1 < len(run) and run[i + 1].dual == "right":
                other = run[i + 1]
                both = lines + self._lines_of(other)
                d = _ShotDraft(Framing.TWO_SHOT,
                               max(self._dialogue_seconds(lines),
                                   self._dialogue_seconds(self._lines_of(other))),
                               _unique([speaker, self._name(other.character.name)]), both,
                               first_line=b.line, last_line=_last_line(other))
                self._count_shot(d)
                out.append(d)
                last_speaker = self._name(other.character.name)
                i += 2
                continue
            # quick exchange: 3+ short lines between the same two people
            j = i
            pair: list[str] = []
            while j < len(run) and run[j].dual is None:
                sp = self._name(run[j].character.name)
                if sum(_words(x.text) for x in self._lines_of(run[j])) > s.quick_line_words:
                    break
                if sp not in pair:
                    if len(pair) == 2:
                        break
                    pair.append(sp)
                if j > i and sp == self._name(run[j - 1].character.name):
                    break
                j += 1
            if j - i >= 3 and len(pair) == 2:
                quick = [ln for x in run[i:j] for ln in self._lines_of(x)]
                d = _ShotDraft(Framing.TWO_SHOT, self._dialogue_seconds(quick), pair, quick,
                               first_line=b.line, last_line=_last_line(run[j - 1]))
                self._count_shot(d)
                out.append(d)
                covered.update(pair)
                last_speaker = self._name(run[j - 1].character.name)
                i = j
                continue
            listener = last_speaker if last_speaker and last_speaker != speaker else next(
                (p for p in present if p != speaker), None)
            seconds = self._dialogue_seconds(lines)
            if exts & _VOICE_OVER:
                # Voice-over plays over the picture: extend the shot before it.
                target = out[-1] if out else (shots[-1] if shots else None)
                if target is not None and not target.title:
                    target.lines.extend(lines)
                    target.seconds = min(target.seconds + seconds, s.max_dialogue_seconds)
                    target.last_line = _last_line(b)
                else:
                    d = _ShotDraft(Framing.WIDE, seconds, [], lines, first_line=b.line,
                                   last_line=_last_line(b))
                    self._count_shot(d)
                    out.append(d)
                i += 1
                continue
            if exts & _OFF_SCREEN:
                # Off-screen speaker: hold on the listener's reaction.
                chars = [listener] if listener else []
                d = _ShotDraft(Framing.MEDIUM if listener else Framing.WIDE, seconds, chars,
                               lines, first_line=b.line, last_line=_last_line(b))
            elif listener is None:
                framing = Framing.MEDIUM if speaker not in covered else Framing.CLOSE_UP
                d = _ShotDraft(framing, seconds, [speaker], lines, first_line=b.line,
                               last_line=_last_line(b))
            else:
                framing = (Framing.OVER_THE_SHOULDER if speaker not in covered
                           else Framing.CLOSE_UP)
                d = _ShotDraft(framing, seconds, [speaker, listener], lines, first_line=b.line,
                               last_line=_last_line(b))
            covered.add(speaker)
            self._count_shot(d)
            out.append(d)
            last_speaker = speaker
            i += 1
        return out, last_speaker


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _last_line(block: DialogueBlock) -> int:
    last = block.lines[-1] if block.lines else None
    if last is None:
        return block.line
    text = last.text if isinstance(last, Parenthetical) else last.text.source
    return last.line + text.count("\n")


# -------------------------------------------------------------- entry points


def plan_script(script: Script, settings: PlannerSettings | None = None, *,
                source_sha256: str | None = None, max_shots: int | None = None
                ) -> tuple[ShotPlan, list[tuple[int, str]]]:
    """Plan a parsed script; returns the plan and (line, message) warnings.

    ``max_shots`` (when given, in place of ``settings.max_shots``) stops planning
    with a :class:`PlanError` as soon as the plan would pass that many shots.

    >>> from aiprod_post.fountain import parse
    >>> plan, _ = plan_script(parse("INT. A - DAY\\n\\nNELL\\nHi.\\n\\nIVO\\nHi.\\n"))
    >>> [shot.id for _, shot in plan.shots()]
    ['1', '1A', '1B']
    >>> plan_script(parse("INT. A - DAY\\n\\nNELL\\nHi.\\n\\nIVO\\nHi.\\n"), max_shots=2)
    Traceback (most recent call last):
    aiprod_post.errors.PlanError: line 6: more than 2 shots: the shot limit (max_shots) is 2; plan a shorter script or raise the limit
    """
    settings = settings or PlannerSettings()
    if max_shots is not None:
        settings = dataclasses.replace(settings, max_shots=max_shots)
    if settings.max_shots is not None and settings.max_shots < 1:
        raise ValueError(f"max_shots must be at least 1, not {settings.max_shots}")
    planner = _Planner(script, settings)
    title = script.title
    if title:
        title = " ".join(title.replace("*", "").replace("_", " ").split())
    elif script.source:
        title = Path(script.source).stem.replace("_", " ").title()
    try:
        plan = planner.plan(title or "Untitled", script.source, source_sha256)
    except (ScriptError, PlanError) as exc:
        raise exc.with_source(script.source) if script.source and exc.source is None else exc
    return plan, sorted(planner.warnings)


def plan_source(path: str | Path, settings: PlannerSettings | None = None, *,
                max_shots: int | None = None) -> tuple[ShotPlan, list[tuple[int, str]]]:
    """Parse and plan a Fountain file."""
    data = read_script_bytes(path)
    return plan_bytes(data, source=str(path), settings=settings, max_shots=max_shots)


def plan_bytes(data: bytes, source: str | None = None, settings: PlannerSettings | None = None,
               *, max_shots: int | None = None) -> tuple[ShotPlan, list[tuple[int, str]]]:
    """Parse and plan Fountain bytes (for services that receive a script upload)."""
    script = parse_bytes(data, source=source)
    return plan_script(script, settings, source_sha256=hashlib.sha256(data).hexdigest(),
                       max_shots=max_shots)
