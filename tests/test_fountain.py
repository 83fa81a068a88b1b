"""Every Fountain element from https://fountain.io/syntax, plus the error cases."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aiprod_post.errors import ScriptError
from aiprod_post.fountain import parse, parse_bytes, parse_emphasis, parse_file
from aiprod_post.script import (
    Action,
    Centered,
    Dialogue,
    DialogueBlock,
    Lyrics,
    Note,
    PageBreak,
    Parenthetical,
    SceneHeading,
    Script,
    Section,
    Synopsis,
    Transition,
)


def only(script: Script, kind: type):
    return script.of_type(kind)


# ------------------------------------------------------------------ title page

def test_title_page_keys_and_indented_values():
    s = parse("Title:\n    _**BRICK & STEEL**_\n    _**FULL RETIRED**_\nCredit: Written by\n"
              "Author: Stu Maschwitz\nDraft date: 1/20/2012\nContact:\n\tNext Level Productions\n"
              "\t1588 Mission Dr.\n\nINT. HOUSE - DAY\n")
    tp = s.title_page
    assert tp is not None
    assert [k for k, _ in tp.fields] == ["Title", "Credit", "Author", "Draft date", "Contact"]
    assert tp.get("title") == "_**BRICK & STEEL**_\n_**FULL RETIRED**_"
    assert tp.get("contact") == "Next Level Productions\n1588 Mission Dr."
    assert isinstance(s.elements[0], SceneHeading) and s.elements[0].line == 11


def test_fade_in_is_not_a_title_page():
    s = parse("FADE IN:\n\nINT. HOUSE - DAY\n")
    assert s.title_page is None
    assert isinstance(s.elements[0], Transition)


# ------------------------------------------------------------------ scene headings

@pytest.mark.parametrize("heading,int_ext,location,tod", [
    ("INT. KITCHEN - NIGHT", "INT", "KITCHEN", "NIGHT"),
    ("EXT. BRICK'S POOL - DAY", "EXT", "BRICK'S POOL", "DAY"),
    ("EST. CITY SKYLINE - DAWN", "EST", "CITY SKYLINE", "DAWN"),
    ("INT./EXT. CAR - MOVING - DUSK", "INT/EXT", "CAR - MOVING", "DUSK"),
    ("INT/EXT CAR - NIGHT", "INT/EXT", "CAR", "NIGHT"),
    ("I/E TRUCK - DAY", "INT/EXT", "TRUCK", "DAY"),
    ("int. house – continuous", "INT", "house", "continuous"),
    ("EXT. FIELD", "EXT", "FIELD", None),
])
def test_scene_heading_split(heading, int_ext, location, tod):
    (h,) = parse(f"{heading}\n\nAction.\n").of_type(SceneHeading)
    assert (h.int_ext, h.location, h.time_of_day) == (int_ext, location, tod)


def test_forced_scene_heading_and_scene_numbers():
    s = parse("Prose.\n\n.SNIPER SCOPE POV\n\nINT. HOUSE - DAY #1A#\n\nEXT. YARD - DAY #110.2#\n")
    h1, h2, h3 = s.of_type(SceneHeading)
    assert h1.forced and h1.location == "SNIPER SCOPE POV" and h1.int_ext is None
    assert h2.scene_number == "1A" and h2.text == "INT. HOUSE - DAY"
    assert h3.scene_number == "110.2"


def test_ellipsis_and_words_starting_int_are_not_headings():
    s = parse("...and then.\n\nINTERIOR DESIGN matters.\n\nEXTRA large.\n")
    assert not s.of_type(SceneHeading)
    assert len(s.of_type(Action)) == 3


def test_heading_needs_blank_line_before():
    s = parse("He walks.\nINT. HOUSE - DAY\n")
    assert not s.of_type(SceneHeading)


# ------------------------------------------------------------------ action

def test_action_keeps_line_breaks_and_indentation_and_tabs():
    s = parse("INT. A - DAY\n\nThey pause.\n    Indented four.\n\tTabbed.\n")
    (a,) = s.of_type(Action)
    assert a.text.plain == "They pause.\n    Indented four.\n    Tabbed."


def test_forced_action_and_two_space_blank_line():
    s = parse("!SCANNING THE AISLES...\nWhere is he?\n  \nStill nothing.\n")
    (a,) = s.of_type(Action)
    assert a.forced
    assert a.text.plain == "SCANNING THE AISLES...\nWhere is he?\n\nStill nothing."


def test_plain_prose_is_action():
    text = "It was a dark and stormy night.\nThe rain fell.\n\nThen it stopped."
    s = parse(text)
    assert [type(e) for e in s.elements] == [Action, Action]
    assert s.elements[1].line == 4


# ------------------------------------------------------------------ characters & dialogue

def test_character_extensions_parenthetical_and_multiline_dialogue():
    s = parse("INT. A - DAY\n\nSTEEL (V.O.) (CONT'D)\n(quietly)\nThe man's a myth!\n"
              "He's not real.\n")
    (b,) = s.of_type(DialogueBlock)
    assert b.character.name == "STEEL"
    assert b.character.extensions == ("V.O.", "CONT'D")
    assert isinstance(b.lines[0], Parenthetical) and b.lines[0].text == "(quietly)"
    assert isinstance(b.lines[1], Dialogue)
    assert b.lines[1].text.plain == "The man's a myth!\nHe's not real."
    assert b.speech == "The man's a myth! He's not real."
    assert (b.line, b.lines[0].line, b.lines[1].line) == (3, 4, 5)


def test_lowercase_extension_and_forced_character():
    s = parse("HANS (on the radio)\nWhat was it?\n\n@McCLANE\nYippie ki-yay!\n")
    b1, b2 = s.of_type(DialogueBlock)
    assert b1.character.name == "HANS" and b1.character.extensions == ("on the radio",)
    assert b2.character.forced and b2.character.name == "McCLANE"


def test_character_needs_dialogue_after_it():
    s = parse("BANG!\n\nThe door opens.\n")
    assert not s.of_type(DialogueBlock)


def test_parenthetical_between_dialogue_and_two_space_line():
    s = parse("NELL\nMy brother.\n(beat)\nHe owes me.\n  \nAlways.\n")
    (b,) = s.of_type(DialogueBlock)
    kinds = [type(x) for x in b.lines]
    assert kinds == [Dialogue, Parenthetical, Dialogue]
    assert b.lines[2].text.plain == "He owes me.\n\nAlways."


def test_dual_dialogue():
    s = parse("BRICK\nScrew retirement.\n\nSTEEL ^\nScrew retirement.\n")
    left, right = s.of_type(DialogueBlock)
    assert (left.dual, right.dual) == ("left", "right")
    assert right.character.name == "STEEL"


def test_dual_without_partner_warns():
    s = parse("The rain.\n\nSTEEL ^\nHello.\n")
    (b,) = s.of_type(DialogueBlock)
    assert b.dual is None
    assert s.warnings and s.warnings[0][0] == 3


def test_lyrics_in_and_out_of_dialogue():
    s = parse("~Willy Wonka! Willy Wonka!\n~The amazing chocolatier!\n\nNELL\n~La la la.\n")
    (lyr,) = s.of_type(Lyrics)
    assert lyr.text.plain == "Willy Wonka! Willy Wonka!\nThe amazing chocolatier!"
    (b,) = s.of_type(DialogueBlock)
    assert isinstance(b.lines[0], Lyrics) and b.speech == "La la la."


# ------------------------------------------------------------------ transitions & centred

def test_transitions_natural_and_forced():
    s = parse("He leaves.\n\nCUT TO:\n\nINT. B - DAY\n\n> Burn to White.\n\nSmash cut to:\n")
    t = s.of_type(Transition)
    assert [(x.text, x.forced) for x in t] == [("CUT TO:", False), ("Burn to White.", True)]
    # lower case "to:" is action, not a transition
    assert s.of_type(Action)[-1].text.plain == "Smash cut to:"


def test_centered_text():
    s = parse("> THE END <\n\n>*Intermission*<\n")
    c1, c2 = s.of_type(Centered)
    assert c1.text.plain == "THE END"
    assert c2.text.plain == "Intermission" and c2.text.spans[0].style == "italic"


# ------------------------------------------------------------------ emphasis

def test_emphasis_spans_and_plain_text():
    st = parse_emphasis("*italics* **bold** ***both*** _under_ _**bold under**_")
    assert st.plain == "italics bold both under bold under"
    got = {(st.plain[s.start:s.end], s.style) for s in st.spans}
    assert got == {("italics", "italic"), ("bold", "bold"), ("both", "bold_italic"),
                   ("under", "underline"), ("bold under", "underline"),
                   ("bold under", "bold")}


def test_emphasis_escapes_and_unpaired_markers_stay_literal():
    st = parse_emphasis(r"Steel enters the code: \*9765\* and 5 * 3 = 15, *open")
    assert st.plain == "Steel enters the code: *9765* and 5 * 3 = 15, *open"
    assert st.spans == ()


def test_emphasis_does_not_cross_lines_and_is_stripped_for_speech():
    s = parse("NELL\nThe board is *optimistic*.\nIt *lies\nto us*.\n")
    (b,) = s.of_type(DialogueBlock)
    assert b.speech == "The board is optimistic. It *lies to us*."


# ------------------------------------------------------------------ notes, boneyard, structure

def test_inline_standalone_and_multiline_notes():
    s = parse("INT. A - DAY\n\nHe waits. [[check the clock prop]]\n\n[[A standalone\nnote]]\n\n"
              "NELL\nHello [[louder?]] there.\n")
    a = s.of_type(Action)[0]
    assert a.text.plain == "He waits." and a.notes[0].text == "check the clock prop"
    loose = s.of_type(Note)
    assert [(n.text, n.line) for n in loose] == [("A standalone note", 5)]
    (b,) = s.of_type(DialogueBlock)
    assert b.speech == "Hello there."
    assert b.lines[0].notes[0].text == "louder?"


def test_boneyard_removed_and_line_numbers_kept():
    s = parse("INT. A - DAY\n\n/* cut scene\n\nINT. B - DAY\n\nGone.\n*/\n\nKept [[n]] here.\n\n"
              "EXT. C - NIGHT\n")
    assert [h.location for h in s.of_type(SceneHeading)] == ["A", "C"]
    (a,) = s.of_type(Action)
    assert a.text.plain == "Kept here." and a.line == 10
    assert s.of_type(SceneHeading)[1].line == 12
    assert s.boneyard[0].line == 3 and "Gone." in s.boneyard[0].text


def test_sections_synopses_page_breaks():
    s = parse("# ACT I\n\n## Sequence\n\n= Set up the harbour.\n\n===\n\nINT. A - DAY\n")
    assert [(x.title, x.depth) for x in s.of_type(Section)] == [("ACT I", 1), ("Sequence", 2)]
    assert s.of_type(Synopsis)[0].text == "Set up the harbour."
    assert s.of_type(PageBreak)[0].line == 7


# ------------------------------------------------------------------ encodings & line ends

def test_bom_crlf_cr_give_the_same_script():
    text = "INT. A - DAY\n\nNELL\n(beat)\nHi.\n\n> THE END <\n"
    variants = [text.encode(), b"\xef\xbb\xbf" + text.encode(),
                text.replace("\n", "\r\n").encode(), text.replace("\n", "\r").encode()]
    parsed = [parse_bytes(v).elements for v in variants]
    assert all(p == parsed[0] for p in parsed)


def test_non_utf8_names_byte_offset_and_line(tmp_path: Path):
    f = tmp_path / "latin1.fountain"
    f.write_bytes("INT. CAFÉ - DAY\n".encode() + b"\n" + "Ol\u00e9".encode("latin-1") + b"\n")
    with pytest.raises(ScriptError) as err:
        parse_file(f)
    msg = str(err.value)
    assert str(f) in msg and ":3:" in msg and "byte offset 20" in msg and "0xe9" in msg


@pytest.mark.parametrize("text,line,what", [
    ("INT. A - DAY\n\n/* never closed\n\nmore", 3, "boneyard"),
    ("INT. A - DAY\n\nHi [[ open note\n\nmore", 3, "note"),
    ("   \n\n  \n", 1, "empty"),
    ("/* only boneyard */\n", 1, "empty"),
])
def test_parse_errors_name_the_line(text, line, what):
    with pytest.raises(ScriptError) as err:
        parse(text, source="x.fountain")
    assert err.value.line == line and what in str(err.value)
    assert str(err.value).startswith(f"x.fountain:{line}:")


def test_unreadable_paths(tmp_path: Path):
    with pytest.raises(ScriptError, match="no such file"):
        parse_file(tmp_path / "missing.fountain")
    with pytest.raises(ScriptError, match="directory"):
        parse_file(tmp_path)


# ------------------------------------------------------------------ property-based

def _source_lines(script: Script) -> list[int]:
    """Every line number the script records, in reading order."""
    lines: list[int] = []
    for e in script.elements:
        lines.append(e.line)
        if isinstance(e, DialogueBlock):
            lines.append(e.character.line)
            lines += [item.line for item in e.lines]
    return lines


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_random_text_parses_in_reading_order_with_lines_inside_the_text(text):
    n = text.replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1
    try:
        s = parse(text)
    except ScriptError as err:
        assert err.line is not None and 1 <= err.line <= n
        return
    lines = _source_lines(s)
    assert lines == sorted(lines), "elements out of reading order"
    assert all(1 <= line <= n for line in lines + [w for w, _ in s.warnings])
    assert all(1 <= note.line <= n for note in s.boneyard)


_FRAGMENTS = st.lists(st.sampled_from([
    "INT. HOUSE - DAY", "EXT. PARK - NIGHT #4#", ".FORCED", "NELL", "@Mc", "(beat)", "Hello.",
    "~la", "> THE END <", "> CUT", "CUT TO:", "# Act", "= syn", "===", "[[note]]", "/*", "*/",
    "[[", "]]", "**bold**", "_u_", "  ", "", "Title: X", "BOB ^", "\t tab", "\u00a0",
]), max_size=40)


def _parse_or_error(text: str) -> Script | str:
    try:
        return parse(text)
    except ScriptError as err:
        return str(err)


@settings(max_examples=400, deadline=None)
@given(_FRAGMENTS)
def test_random_fountain_fragments_read_the_same_with_lf_crlf_or_cr_line_ends(fragments):
    unix = _parse_or_error("\n".join(fragments))
    assert _parse_or_error("\r\n".join(fragments)) == unix
    assert _parse_or_error("\r".join(fragments)) == unix
    assert _parse_or_error("\ufeff" + "\n".join(fragments)) == unix


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
@example(b"a\rb\r\n\xff")
@example(b"\xef\xbb\xbfINT. A\n\n\xc3(")
def test_random_bytes_parse_as_their_text_or_name_the_first_bad_byte(data):
    # independent of the parser's decoding: undecodable bytes become lone surrogates
    text = data.decode("utf-8", "surrogateescape")
    bad = next((i for i, c in enumerate(text) if "\udc80" <= c <= "\udcff"), None)
    if bad is None:
        expected = _parse_or_error(data.decode("utf-8-sig"))
        try:
            assert parse_bytes(data) == expected
        except ScriptError as err:
            assert str(err) == expected
        return
    offset = len(text[:bad].encode("utf-8"))
    before = text[:bad].replace("\r\n", "\n").replace("\r", "\n")
    with pytest.raises(ScriptError) as err:
        parse_bytes(data)
    assert err.value.line == before.count("\n") + 1
    assert f"byte 0x{data[offset]:02x} at byte offset {offset}" in str(err.value)


def test_unbalanced_parenthesis_in_a_cue_line_is_not_a_crash():
    # found by hypothesis: "(" followed by a line
    s = parse("(\n0")
    assert s.elements
