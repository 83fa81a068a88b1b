"""The typed screenplay model the Fountain parser produces.

Every element keeps the 1-based source line it started on, so planner
warnings and errors can point back into the script. Text that carries
emphasis is a :class:`StyledText`: the source text with markup, the plain
text with markup stripped (what TTS speaks), and the emphasis as spans over
the plain text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

__all__ = [
    "Emphasis",
    "Span",
    "StyledText",
    "Note",
    "TitlePage",
    "SceneHeading",
    "Action",
    "Centered",
    "Character",
    "Parenthetical",
    "Dialogue",
    "Lyrics",
    "DialogueBlock",
    "Transition",
    "Section",
    "Synopsis",
    "PageBreak",
    "Element",
    "Script",
]

Emphasis = Literal["italic", "bold", "bold_italic", "underline"]


@dataclass(frozen=True)
class Span:
    """Emphasis over ``plain[start:end]``."""

    start: int
    end: int
    style: Emphasis


@dataclass(frozen=True)
class StyledText:
    """Text as written (``source``), without markup (``plain``), and its emphasis."""

    source: str
    plain: str
    spans: tuple[Span, ...] = ()

    def __str__(self) -> str:
        return self.plain


@dataclass(frozen=True)
class Note:
    """A ``[[note]]``: never printed, never spoken."""

    text: str
    line: int


@dataclass(frozen=True)
class TitlePage:
    """``Key: value`` pairs from the top of the script, keys as written, in order."""

    fields: tuple[tuple[str, str], ...]
    line: int = 1

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.fields:
            if k.lower() == key.lower():
                return v
        return default


@dataclass(frozen=True)
class SceneHeading:
    text: str
    line: int
    int_ext: Literal["INT", "EXT", "EST", "INT/EXT"] | None
    location: str
    time_of_day: str | None
    scene_number: str | None = None
    forced: bool = False
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True)
class Action:
    """An action paragraph; line breaks and indentation (tabs as four spaces) kept."""

    text: StyledText
    line: int
    forced: bool = False
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True)
class Centered:
    text: StyledText
    line: int
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True)
class Character:
    """A character cue: ``name`` without extensions, ``extensions`` such as ``V.O.``."""

    name: str
    extensions: tuple[str, ...]
    line: int
    forced: bool = False
    dual: bool = False
    source: str = ""


@dataclass(frozen=True)
class Parenthetical:
    text: str
    line: int


@dataclass(frozen=True)
class Dialogue:
    """Dialogue lines as written, joined by ``\\n``."""

    text: StyledText
    line: int
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True)
class Lyrics:
    text: StyledText
    line: int
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True)
class DialogueBlock:
    """A character cue and what follows it, in order.

    ``dual`` is ``"left"`` for the first and ``"right"`` for the second of a
    dual-dialogue pair (the second cue carries ``^``).
    """

    character: Character
    lines: tuple[Union[Parenthetical, Dialogue, Lyrics], ...]
    line: int
    dual: Literal["left", "right"] | None = None

    @property
    def speech(self) -> str:
        """What is spoken: dialogue and lyrics without markup or notes, one line."""
        parts = [ln.text.plain for ln in self.lines if isinstance(ln, (Dialogue, Lyrics))]
        return " ".join(" ".join(p.split()) for p in parts if p.strip())


@dataclass(frozen=True)
class Transition:
    text: str
    line: int
    forced: bool = False


@dataclass(frozen=True)
class Section:
    title: str
    depth: int
    line: int


@dataclass(frozen=True)
class Synopsis:
    text: str
    line: int


@dataclass(frozen=True)
class PageBreak:
    line: int


Element = Union[
    SceneHeading, Action, Centered, DialogueBlock, Lyrics, Transition, Section, Synopsis,
    PageBreak, Note,
]


@dataclass
class Script:
    """A parsed screenplay: optional title page, then elements in reading order."""

    elements: list[Element] = field(default_factory=list)
    title_page: TitlePage | None = None
    boneyard: list[Note] = field(default_factory=list)
    source: str | None = None
    #: (line, message) for things that parsed but are probably not what was meant.
    warnings: list[tuple[int, str]] = field(default_factory=list)

    @property
    def title(self) -> str | None:
        return self.title_page.get("title") if self.title_page else None

    def of_type(self, kind: type) -> list:
        """Elements of one type, in order."""
        return [e for e in self.elements if isinstance(e, kind)]
