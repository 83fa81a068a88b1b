"""Fountain screenplay parser (https://fountain.io/syntax), written for this project.

The parser works in three passes over the text:

1. decode (UTF-8, with or without BOM; the byte offset of bad bytes is reported),
   normalise CRLF/CR line ends and expand tabs to four spaces;
2. cut out boneyard ``/* */`` and notes ``[[ ]]`` while keeping each remaining
   line's source line number, so every element can point back into the file;
3. read the title page, then classify lines into elements by the Fountain rules
   (blank-line context, capitalisation and the forcing characters
   ``. ! @ ~ > = #``).

Any text is a valid script: prose without markup is action. The only parse
errors are undecodable bytes, an empty script and an unclosed boneyard or note.

>>> script = parse("INT. KITCHEN - NIGHT\\n\\nMARA\\n(quietly)\\nIt's *late*.\\n")
>>> heading, block = script.elements
>>> heading.location, heading.time_of_day, block.character.name, block.speech
('KITCHEN', 'NIGHT', 'MARA', "It's late.")
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ScriptError
from .script import (
    Action,
    Centered,
    Character,
    Dialogue,
    DialogueBlock,
    Element,
    Lyrics,
    Note,
    PageBreak,
    Parenthetical,
    SceneHeading,
    Script,
    Section,
    Span,
    StyledText,
    Synopsis,
    TitlePage,
    Transition,
)

__all__ = ["parse", "parse_bytes", "parse_file", "read_script_bytes", "is_character_cue", "parse_emphasis", "parse_character_cue"]

_BOM = b"\xef\xbb\xbf"
_CUT = re.compile(r"/\*|\[\[|\n")
_PAGE_BREAK = re.compile(r"={3,}")
_SCENE = re.compile(r"(INT\.?\s*/\s*EXT\.?|EXT\.?\s*/\s*INT\.?|I\s*/\s*E|INT|EXT|EST)(?=[.\s]|$)", re.I)
_TIME_DASHES = "-\u2013\u2014"  # hyphen, en dash, em dash
_TITLE_KEY = re.compile(r"([A-Za-z][A-Za-z0-9 _\-]{0,39}):(.*)$")
_KNOWN_TITLE_KEYS = {
    "title", "credit", "author", "authors", "source", "draft date", "date", "contact",
    "copyright", "notes", "revision", "format", "font", "template",
}
# Transitions Fountain only recognises when forced with ">", but which every
# screenwriter types bare on their own line; we accept these few as well.
_BARE_TRANSITIONS = {"FADE IN:", "FADE IN.", "FADE OUT.", "FADE OUT", "FADE TO BLACK.",
                     "CUT TO BLACK.", "FADE TO BLACK"}
_EMPHASIS = re.compile(r"\\([*_\\])|(\*{1,3})|(_)")
_STYLE_BY_STARS = {1: "italic", 2: "bold", 3: "bold_italic"}
_STYLES = (*_STYLE_BY_STARS.values(), "underline")


@dataclass
class _Line:
    text: str
    number: int
    notes: list[Note] = field(default_factory=list)

    @property
    def blank(self) -> bool:
        # A line of exactly two spaces is Fountain's way to keep an empty line
        # inside action or dialogue; it does not end the paragraph.
        return self.text.strip() == "" and self.text != "  "


# ---------------------------------------------------------------- public API


def parse_file(path: str | Path) -> Script:
    """Parse a Fountain file; errors name the file."""
    return parse_bytes(read_script_bytes(path), source=str(path))


def read_script_bytes(path: str | Path) -> bytes:
    """Read a script file; a missing or unreadable file is a :class:`ScriptError`."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ScriptError("no such file", source=path) from None
    except IsADirectoryError:
        raise ScriptError("is a directory, expected a Fountain file", source=path) from None
    except OSError as exc:
        raise ScriptError(f"cannot read: {exc.strerror or exc}", source=path) from None


def parse_bytes(data: bytes, source: str | None = None) -> Script:
    """Decode UTF-8 (BOM optional) and parse."""
    base = 0
    if data.startswith(_BOM):
        data, base = data[len(_BOM):], len(_BOM)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # count line ends as parse() does: CRLF, LF and a lone CR (old Mac files)
        before = data[: exc.start].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        line = before.count(b"\n") + 1
        raise ScriptError(
            f"not UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start + base} "
            "(save the script as UTF-8)",
            source=source, line=line,
        ) from None
    return parse(text, source=source)


def parse(text: str, source: str | None = None) -> Script:
    """Parse Fountain text into a :class:`Script`."""
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4)
    if not text.strip():
        raise ScriptError("empty script: expected Fountain text", source=source, line=1)
    script = Script(source=source)
    try:
        lines, loose_notes = _cut_boneyard_and_notes(text, script)
        start = _read_title_page(lines, script)
        _Reader(lines, start, script).run()
    except ScriptError as exc:
        raise exc.with_source(source) if source and exc.source is None else exc
    if loose_notes:
        script.elements.extend(loose_notes)
        script.elements.sort(key=lambda e: e.line)
    if not script.elements and script.title_page is None:
        raise ScriptError("empty script: only notes or boneyard", source=source, line=1)
    return script


def parse_emphasis(text: str) -> StyledText:
    """Split ``*italic*``, ``**bold**``, ``***bold italic***`` and ``_underline_``.

    Markers pair up on one line only; an opener must be followed, and a closer
    preceded, by a non-space. Unpaired markers stay as literal text and
    ``\\*`` escapes a marker.

    >>> st = parse_emphasis("a **big** _deal_ \\\\*not*")
    >>> st.plain, [(s.start, s.end, s.style) for s in st.spans]
    ('a big deal *not*', [(2, 5, 'bold'), (6, 10, 'underline')])
    """
    tokens: list[tuple[str, str]] = []  # ("t", text) or (style, raw)
    pos = 0
    for m in _EMPHASIS.finditer(text):
        if m.start() > pos:
            tokens.append(("t", text[pos:m.start()]))
        if m.group(1):
            tokens.append(("t", m.group(1)))
        elif m.group(2):
            tokens.append((_STYLE_BY_STARS[len(m.group(2))], m.group(2)))
        else:
            tokens.append(("underline", "_"))
        pos = m.end()
    if pos < len(text):
        tokens.append(("t", text[pos:]))
    if len(tokens) == 1 and tokens[0][0] == "t":
        return StyledText(text, text)

    partner: dict[int, int] = {}
    # One stack per style: a closer pairs with the latest open marker of its own
    # style, so other styles opened in between need not be searched (that search
    # made a long line of unclosed markers quadratic).
    open_by_style: dict[str, list[int]] = {style: [] for style in _STYLES}
    last = len(tokens) - 1
    for i, (kind, _raw) in enumerate(tokens):
        if kind == "t":
            continue
        # the line's ends count as spaces; a marker beside a marker, as a non-space
        can_close = i > 0 and not tokens[i - 1][1][-1].isspace()
        open_markers = open_by_style[kind]
        if can_close and open_markers:
            opener = open_markers.pop()
            partner[opener] = i
            partner[i] = opener
        elif i < last and not tokens[i + 1][1][0].isspace():
            open_markers.append(i)

    plain: list[str] = []
    length = 0
    starts: dict[int, int] = {}
    spans: list[Span] = []
    for i, (kind, raw) in enumerate(tokens):
        if kind != "t" and i in partner:
            if partner[i] > i:
                starts[i] = length
            else:
                spans.append(Span(starts[partner[i]], length, kind))  # type: ignore[arg-type]
            continue
        plain.append(raw)
        length += len(raw)
    spans.sort(key=lambda s: (s.start, s.end))
    return StyledText(text, "".join(plain), tuple(s for s in spans if s.end > s.start))


def parse_character_cue(cue: str) -> tuple[str, tuple[str, ...], bool]:
    """``"MARA (V.O.) (CONT'D) ^"`` → ``("MARA", ("V.O.", "CONT'D"), True)``.

    A cue is a name (no ``(`` or ``^``), then ``(extensions)`` each closed before
    the next opens, then an optional ``^``, and nothing else. Anything else (an
    unbalanced ``(``, text after the extensions) makes the whole line the name.

    >>> parse_character_cue("NELL (V.O.) (a) x")
    ('NELL (V.O.) (a) x', (), False)
    """
    # A scanner rather than a regular expression: the pattern this replaces
    # backtracked cubically on runs of spaces (issue 14: 1,600 spaces, 4.6 s).
    text = cue.strip()
    n = len(text)
    k = 0
    while k < n and text[k] not in "(^":
        k += 1
    name = " ".join(text[:k].split())
    exts: list[str] = []
    while k < n and text[k] == "(":
        close = text.find(")", k + 1)
        if close < 0 or text.find("(", k + 1, close) >= 0:
            k = -1  # an unbalanced "("
            break
        exts.append(text[k + 1:close].strip())
        k = close + 1
        while k < n and text[k].isspace():
            k += 1
    dual = 0 <= k < n and text[k] == "^"
    end = k + 1 if dual else k
    if k < 0 or end != n:  # text is stripped, so the "^" (if any) must be its last character
        return " ".join(text.rstrip("^").split()), (), text.endswith("^")
    return name, tuple(exts), dual


def is_character_cue(s: str) -> bool:
    """An unforced cue: upper-case name with a letter in it, extensions in any case."""
    name, _exts, _dual = parse_character_cue(s)
    return bool(name) and any(c.isalpha() for c in name) and name == name.upper() \
        and not name.endswith(":") and "(" not in name and ")" not in name


# ---------------------------------------------------------------- passes


def _cut_boneyard_and_notes(text: str, script: Script) -> tuple[list[_Line], list[Note]]:
    lines: list[_Line] = []
    loose: list[Note] = []
    buf: list[str] = []
    notes: list[Note] = []
    line_no = 1
    first = 1  # source line of the output line being built
    pos = 0

    def end_line() -> None:
        nonlocal buf, notes
        joined = "".join(buf)
        if notes and not joined.strip():
            loose.extend(notes)  # a line that held only notes is not a blank line
        else:
            lines.append(_Line(joined if joined == "  " else joined.rstrip(), first, notes))
        buf, notes = [], []

    for m in _CUT.finditer(text):
        if m.start() < pos:
            continue  # inside a boneyard or note already consumed
        buf.append(text[pos:m.start()])
        token = m.group()
        if token == "\n":
            end_line()
            line_no += 1
            first = line_no
            pos = m.end()
            continue
        closer = "*/" if token == "/*" else "]]"
        end = text.find(closer, m.end())
        if end < 0:
            what = "boneyard \"/*\"" if token == "/*" else "note \"[[\""
            raise ScriptError(f"unclosed {what}: expected a closing \"{closer}\"", line=line_no)
        body = text[m.end():end]
        if token == "/*":
            script.boneyard.append(Note(body, line_no))
        else:
            notes.append(Note(" ".join(body.split()), line_no))
        line_no += body.count("\n")
        pos = end + len(closer)
        if token == "[[" and buf and buf[-1].endswith(" ") and text.startswith(" ", pos):
            pos += 1  # "word [[note]] word" reads "word word"
    buf.append(text[pos:])
    end_line()
    return lines, loose


def _read_title_page(lines: list[_Line], script: Script) -> int:
    i = 0
    while i < len(lines) and lines[i].blank:
        i += 1
    if i >= len(lines):
        return i
    m = _TITLE_KEY.match(lines[i].text)
    if not m or lines[i].text.startswith((" ", ".")):
        return 0
    key, value = m.group(1).strip(), m.group(2).strip()
    if key.lower() not in _KNOWN_TITLE_KEYS and not value:
        return 0
    if _SCENE.match(lines[i].text):
        return 0
    # each key with the lines of its value; joined once at the end, since adding
    # line by line to one string copies it every time (quadratic on a long value)
    fields: list[tuple[str, list[str]]] = []
    first_line = lines[i].number
    while i < len(lines) and not lines[i].blank:
        raw = lines[i].text
        m = _TITLE_KEY.match(raw)
        if m and not raw.startswith(" "):
            fields.append((m.group(1).strip(), [m.group(2).strip()]))
        else:
            fields[-1][1].append(raw.strip())
        i += 1
    script.title_page = TitlePage(tuple((k, _join_value(v)) for k, v in fields), first_line)
    return i


def _join_value(parts: list[str]) -> str:
    """A title-page value's lines, one per line, from the first that is not empty."""
    first = next((k for k, p in enumerate(parts) if p), len(parts))
    return "\n".join(parts[first:])


class _Reader:
    """Classify lines into elements (pass 3)."""

    def __init__(self, lines: list[_Line], start: int, script: Script) -> None:
        self.lines = lines
        self.i = start
        self.script = script
        self.out: list[Element] = script.elements

    def run(self) -> None:
        lines = self.lines
        prev_blank = True
        while self.i < len(lines):
            ln = lines[self.i]
            s = ln.text.strip()
            if not s:
                prev_blank = True
                self.i += 1
                continue
            next_blank = self.i + 1 >= len(lines) or lines[self.i + 1].blank
            self._element(ln, s, prev_blank, next_blank)
            prev_blank = False

    # -- one element starting at self.i; advances self.i past it
    def _element(self, ln: _Line, s: str, prev_blank: bool, next_blank: bool) -> None:
        if _PAGE_BREAK.fullmatch(s):
            self.out.append(PageBreak(ln.number))
        elif s.startswith("#"):
            depth = len(s) - len(s.lstrip("#"))
            self.out.append(Section(s[depth:].strip(), depth, ln.number))
        elif s.startswith("="):
            self.out.append(Synopsis(s[1:].strip(), ln.number))
        elif s.startswith("~"):
            self._lyrics_outside_dialogue()
            return
        elif s.startswith("!"):
            self._action(forced=True)
            return
        elif s.startswith("@") and len(s) > 1:
            self._dialogue_block(forced=True)
            return
        elif s.startswith(">") and s.endswith("<") and len(s) >= 2:
            self.out.append(Centered(parse_emphasis(s[1:-1].strip()), ln.number, tuple(ln.notes)))
        elif s.startswith(">"):
            self.out.append(Transition(s[1:].strip(), ln.number, forced=True))
        elif s.startswith(".") and len(s) > 1 and s[1].isalnum():
            self.out.append(_scene_heading(s[1:], ln, forced=True))
        elif prev_blank and _SCENE.match(s):
            self.out.append(_scene_heading(s, ln, forced=False))
        elif prev_blank and next_blank and _is_transition(s):
            self.out.append(Transition(s, ln.number))
        elif prev_blank and not next_blank and is_character_cue(s):
            self._dialogue_block(forced=False)
            return
        else:
            self._action(forced=False)
            return
        self.i += 1

    def _stops_action(self, s: str) -> bool:
        return bool(_PAGE_BREAK.fullmatch(s)) or s.startswith(("#", "=", ">", "~"))

    def _action(self, forced: bool) -> None:
        first = self.lines[self.i]
        texts: list[str] = []
        notes: list[Note] = []
        while self.i < len(self.lines):
            ln = self.lines[self.i]
            if ln.blank or (texts and self._stops_action(ln.text.strip())):
                break
            text = ln.text
            if not texts and forced:
                text = text.replace("!", "", 1)
            texts.append("" if text == "  " else text.rstrip())
            notes.extend(ln.notes)
            self.i += 1
        self.out.append(Action(_styled_lines(texts), first.number, forced, tuple(notes)))

    def _lyrics_outside_dialogue(self) -> None:
        first = self.lines[self.i]
        texts: list[str] = []
        notes: list[Note] = []
        while self.i < len(self.lines):
            s = self.lines[self.i].text.strip()
            if not s.startswith("~"):
                break
            texts.append(s[1:].strip())
            notes.extend(self.lines[self.i].notes)
            self.i += 1
        # Lyrics outside a cue are sung by nobody in particular (a song on the radio).
        self.out.append(Lyrics(_styled_lines(texts), first.number, tuple(notes)))

    def _dialogue_block(self, forced: bool) -> None:
        cue_line = self.lines[self.i]
        raw = cue_line.text.strip()
        name, exts, dual = parse_character_cue(raw[1:] if forced else raw)
        character = Character(name or raw, exts, cue_line.number, forced, dual, raw)
        self.i += 1
        items: list[Parenthetical | Dialogue | Lyrics] = []
        buf: list[str] = []
        buf_line = 0
        buf_notes: list[Note] = []

        def flush() -> None:
            nonlocal buf, buf_notes
            if buf:
                items.append(Dialogue(_styled_lines(buf), buf_line, tuple(buf_notes)))
            buf, buf_notes = [], []

        while self.i < len(self.lines):
            ln = self.lines[self.i]
            if ln.blank:
                break
            s = ln.text.strip()
            if s.startswith("(") and not buf:
                end = self._parenthetical_end()
                if end is not None:
                    text = " ".join(self.lines[k].text.strip() for k in range(self.i, end + 1))
                    items.append(Parenthetical(text, ln.number))
                    self.i = end + 1
                    continue
            if s.startswith("(") and buf and s.endswith(")"):
                flush()
                items.append(Parenthetical(s, ln.number))
            elif s.startswith("~"):
                flush()
                items.append(Lyrics(parse_emphasis(s[1:].strip()), ln.number, tuple(ln.notes)))
            else:
                if not buf:
                    buf_line = ln.number
                buf.append(s)
                buf_notes.extend(ln.notes)
            self.i += 1
        flush()

        dual_side = None
        if dual:
            k = next((k for k in range(len(self.out) - 1, -1, -1)
                      if not isinstance(self.out[k], Note)), None)
            prev = self.out[k] if k is not None else None
            if k is not None and isinstance(prev, DialogueBlock):
                # by position: list.index would scan from the top (quadratic over many
                # dual blocks) and could find an equal block earlier in the script
                self.out[k] = dataclasses.replace(prev, dual="left")
                dual_side = "right"
            else:
                self.script.warnings.append(
                    (cue_line.number, "dual dialogue '^' with no dialogue block before it"))
        if not items:
            self.script.warnings.append(
                (cue_line.number, f"character cue {name!r} has no dialogue after it"))
        self.out.append(DialogueBlock(character, tuple(items), cue_line.number, dual_side))

    def _parenthetical_end(self) -> int | None:
        """Index of the line closing a parenthetical that opens at self.i (≤ 3 lines)."""
        for k in range(self.i, min(self.i + 3, len(self.lines))):
            ln = self.lines[k]
            if ln.blank:
                return None
            if ln.text.strip().endswith(")"):
                return k
        return None


def _styled_lines(texts: list[str]) -> StyledText:
    if len(texts) == 1:
        return parse_emphasis(texts[0])
    plain: list[str] = []
    spans: list[Span] = []
    offset = 0
    for t in texts:
        st = parse_emphasis(t)
        spans.extend(Span(s.start + offset, s.end + offset, s.style) for s in st.spans)
        plain.append(st.plain)
        offset += len(st.plain) + 1
    return StyledText("\n".join(texts), "\n".join(plain), tuple(spans))


def _is_transition(s: str) -> bool:
    if s in _BARE_TRANSITIONS:
        return True
    return s.endswith("TO:") and s == s.upper() and any(c.isalpha() for c in s)


def _scene_number(s: str) -> tuple[str | None, str]:
    """``"INT. A - DAY #12A#"`` → ``("12A", "INT. A - DAY ")``: a ``#number#`` ending the line.

    The number is what lies between the last two ``#`` when only spaces follow
    the last; it must not start with a space.

    >>> _scene_number("INT. A #1# #2#"), _scene_number("INT. A # 2#")
    (('2', 'INT. A #1# '), (None, 'INT. A # 2#'))
    """
    body = s.rstrip()
    if not body.endswith("#"):
        return None, s
    opening = body.rfind("#", 0, len(body) - 1)
    if opening < 0 or opening + 1 == len(body) - 1 or body[opening + 1].isspace():
        return None, s
    return body[opening + 1:-1].strip(), s[:opening]


def _split_time_of_day(rest: str) -> list[str]:
    """Split a heading at dashes with spaces on both sides: ``"A - B -- DAY"`` → ``A, B, DAY``.

    Separators are taken left to right without overlapping, so in ``"A - - B"``
    the second dash belongs to ``"- B"``.

    >>> _split_time_of_day("PIER \u2014 LATER - NIGHT"), _split_time_of_day("A - - B")
    (['PIER', 'LATER', 'NIGHT'], ['A', '- B'])
    """
    # A scanner: the regular expression it replaces (\s+[-–—]+\s+) was quadratic on
    # long runs of spaces, each start in the run rescanning the rest of it.
    parts: list[str] = []
    start = i = 0
    n = len(rest)
    while i < n:
        if not rest[i].isspace():
            i += 1
            continue
        j = i
        while j < n and rest[j].isspace():
            j += 1
        k = j
        while k < n and rest[k] in _TIME_DASHES:
            k += 1
        if j < k < n and rest[k].isspace():
            parts.append(rest[start:i])
            while k < n and rest[k].isspace():
                k += 1
            start = k
        i = k if k > j else j
    parts.append(rest[start:])
    return parts


def _scene_heading(s: str, ln: _Line, forced: bool) -> SceneHeading:
    number, s = _scene_number(s)
    text = s.strip()
    int_ext = None
    rest = text
    m = _SCENE.match(text)
    if m:
        prefix = re.sub(r"[\s.]", "", m.group(1).upper())
        int_ext = {"INT": "INT", "EXT": "EXT", "EST": "EST"}.get(prefix, "INT/EXT")
        rest = text[m.end():].lstrip(". ").strip()
    parts = _split_time_of_day(rest)
    if len(parts) > 1:
        location, time_of_day = " - ".join(p.strip() for p in parts[:-1]), parts[-1].strip()
    else:
        location, time_of_day = rest, None
    return SceneHeading(text, ln.number, int_ext, location, time_of_day or None, number,
                        forced, tuple(ln.notes))
