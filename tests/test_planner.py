"""The planner's coverage rules, ids, durations, transitions, seeds and conditioning."""

from __future__ import annotations

from fractions import Fraction

import pytest

from aiprod_post.errors import PlanError, ScriptError
from aiprod_post.fountain import parse
from aiprod_post.plan import CameraMove, Framing, TransitionKind
from aiprod_post.planner import (
    PlannerSettings,
    _Planner,
    camera_move_in,
    plan_bytes,
    plan_script,
    plan_source,
)


def plan_of(text: str, **kw):
    plan, warnings = plan_script(parse(text), PlannerSettings(**kw))
    return plan


TWO_HANDER = """INT. KITCHEN - NIGHT

MARA stirs a pot. TOM leans in the doorway.

MARA
You said you would be home by eight, and it is nearly eleven now.

TOM
The train stopped outside the city for two hours with no word.

MARA
You could have called me from the platform before it left.

TOM (CONT'D)
My phone died somewhere between the office and the station.
"""


def test_scene_heading_fields():
    plan = plan_of("EXT. HARBOUR PIER - DUSK\n\nGulls.\n\nINT. BOOTH - NIGHT\n\nRain.\n")
    s1, s2 = plan.scenes
    assert (s1.int_ext, s1.location, s1.time_of_day, s1.light) == ("EXT", "HARBOUR PIER",
                                                                  "DUSK", "dusk")
    assert (s2.int_ext, s2.location, s2.light) == ("INT", "BOOTH", "night")


def test_every_scene_opens_on_an_establishing_wide():
    plan = plan_of(TWO_HANDER + "\nEXT. STREET - DAY\n\nTOM\nWait!\n")
    for scene in plan.scenes:
        first = scene.shots[0]
        assert first.framing == Framing.WIDE and not first.dialogue
    # the first action paragraph becomes the establishing shot
    assert plan.scenes[0].shots[0].action.startswith("MARA stirs a pot.")


def test_shot_reverse_shot_tightens_to_close_ups():
    plan = plan_of(TWO_HANDER)
    singles = plan.scenes[0].shots[1:]
    assert [s.framing for s in singles] == [Framing.OVER_THE_SHOULDER, Framing.OVER_THE_SHOULDER,
                                            Framing.CLOSE_UP, Framing.CLOSE_UP]
    # speaker first, listener second: the reverse shot swaps them
    assert [s.characters for s in singles] == [["MARA", "TOM"], ["TOM", "MARA"],
                                               ["MARA", "TOM"], ["TOM", "MARA"]]
    assert [s.dialogue[0].speaker for s in singles] == ["MARA", "TOM", "MARA", "TOM"]


def test_quick_exchange_is_one_two_shot():
    plan = plan_of("INT. A - DAY\n\nA man and a woman.\n\nIVO\nTonight?\n\nNELL\nNo.\n\n"
                   "IVO\nTomorrow?\n\nNELL\nMaybe.\n")
    shots = plan.scenes[0].shots
    assert len(shots) == 2
    assert shots[1].framing == Framing.TWO_SHOT
    assert [ln.text for ln in shots[1].dialogue] == ["Tonight?", "No.", "Tomorrow?", "Maybe."]


def test_dual_dialogue_is_a_two_shot_with_both_lines():
    plan = plan_of("INT. A - DAY\n\nBRICK\nScrew retirement.\n\nSTEEL ^\nScrew retirement.\n")
    shot = plan.scenes[0].shots[1]
    assert shot.framing == Framing.TWO_SHOT and shot.characters == ["BRICK", "STEEL"]
    assert all(ln.dual for ln in shot.dialogue)


def test_voice_over_plays_over_the_shot_before_and_off_screen_holds_on_the_listener():
    plan = plan_of("INT. A - DAY\n\nMARA and TOM at the sink.\n\nTOM\nWell?\n\nMARA (O.S.)\n"
                   "Not now.\n\nThe tap drips onto a long row of dirty plates and cups.\n\n"
                   "TOM (V.O.)\nShe never said why.\n")
    shots = plan.scenes[0].shots
    os_shot = shots[2]
    assert os_shot.dialogue[0].speaker == "MARA" and os_shot.characters == ["TOM"]
    assert os_shot.dialogue[0].extensions == ["O.S."]
    assert shots[-1].action.startswith("The tap drips")
    assert shots[-1].dialogue[0].text == "She never said why."


def test_action_wides_and_inserts():
    plan = plan_of(TWO_HANDER + "\nThe kettle whistles.\n\nINSERT - THE LETTER\n\n"
                   "CLOSE ON MARA as she reads it.\n\nMARA and TOM sit down at the table, "
                   "neither of them saying a word.\n")
    tail = plan.scenes[0].shots[-4:]
    assert [s.framing for s in tail] == [Framing.INSERT, Framing.INSERT, Framing.CLOSE_UP,
                                         Framing.WIDE]
    assert tail[2].characters == ["MARA"]


@pytest.mark.parametrize("text,move", [
    ("The CAMERA PANS along the pier.", CameraMove.PAN),
    ("We TILT UP to the stars.", CameraMove.TILT),
    ("The camera dollies back.", CameraMove.DOLLY),
    ("We PUSH IN on her face.", CameraMove.PUSH_IN),
    ("TRACKING with the boat.", CameraMove.TRACKING),
    ("The lens zooms to the window.", CameraMove.ZOOM),
    ("HANDHELD. Torch beams.", CameraMove.HANDHELD),
    ("She scrubs a pan and tracks mud in.", CameraMove.STATIC),
    ("He zooms off on a moped.", CameraMove.STATIC),
])
def test_camera_moves_from_action_text(text, move):
    assert camera_move_in(text) == move


def test_shot_ids_follow_film_convention_and_skip_i_and_o():
    lines = "\n\n".join(f"Beat number {i} with many words in it to keep it wide enough, "
                        f"as the rain falls on the harbour." for i in range(20))
    plan = plan_of(f"INT. A - DAY #7#\n\n{lines}\n")
    ids = [s.id for s in plan.scenes[0].shots]
    assert ids[:4] == ["7", "7A", "7B", "7C"]
    assert "7I" not in ids and "7O" not in ids and ids[8:10] == ["7H", "7J"]
    assert len(set(ids)) == len(ids)


def test_plan_is_stable_across_reruns(example_path):
    a, _ = plan_source(example_path)
    b, _ = plan_source(example_path)
    assert a.model_dump() == b.model_dump()


def test_duplicate_scene_numbers_are_an_error():
    with pytest.raises(ScriptError, match="scene number '2' is already used"):
        plan_of("INT. A - DAY #2#\n\nX.\n\nINT. B - DAY #2#\n\nY.\n")


def test_durations_are_bounded_frames_that_grow_with_words():
    short = "INT. A - DAY\n\nX.\n\nNELL\nNo.\n"
    long = "INT. A - DAY\n\nX.\n\nNELL\n" + "word " * 30 + "\n"
    huge = "INT. A - DAY\n\nX.\n\nNELL\n" + "word " * 500 + "\n"
    fps = Fraction(24000, 1001)
    d = [plan_of(t, fps=fps).scenes[0].shots[1].duration for t in (short, long, huge)]
    assert all(isinstance(x, int) for x in d)
    assert d[0] < d[1] < d[2]
    s = PlannerSettings()
    assert d[0] == round(Fraction(s.min_shot_seconds) * fps)
    assert d[2] == round(s.max_dialogue_seconds * fps)


def test_transitions_land_on_the_right_shots():
    plan = plan_of("FADE IN:\n\nINT. A - DAY\n\nOne.\n\nDISSOLVE TO:\n\nEXT. B - DAY\n\nTwo.\n\n"
                   "CUT TO:\n\nINT. C - NIGHT\n\nThree.\n\nFADE OUT.\n")
    a, b, c = (s.shots for s in plan.scenes)
    assert a[0].transition_in.kind == TransitionKind.FADE_IN and a[0].transition_in.duration == 24
    assert b[0].transition_in.kind == TransitionKind.DISSOLVE
    assert b[0].transition_in.text == "DISSOLVE TO:" and b[0].transition_in.source_line == 7
    assert c[0].transition_in.kind == TransitionKind.CUT
    assert c[-1].transition_out is not None
    assert c[-1].transition_out.kind == TransitionKind.FADE_OUT


def test_seeds_are_deterministic_distinct_and_follow_the_plan_seed():
    a = plan_of(TWO_HANDER)
    b = plan_of(TWO_HANDER, seed=7)
    seeds_a = [s.seed for _, s in a.shots()]
    assert len(set(seeds_a)) == len(seeds_a)
    assert seeds_a == [s.seed for _, s in plan_of(TWO_HANDER).shots()]
    assert seeds_a != [s.seed for _, s in b.shots()]


def test_conditioning_on_establishing_and_on_previous_shot_when_continuous():
    plan = plan_of(TWO_HANDER + "\nINT. HALLWAY - CONTINUOUS\n\nTOM walks out.\n\n"
                   "EXT. STREET - DAY\n\nA bus.\n")
    kitchen, hallway, street = plan.scenes
    assert kitchen.shots[0].conditioning.keyframe == "none"
    assert all(s.conditioning.keyframe == "establishing" and s.conditioning.shot == "1"
               for s in kitchen.shots[1:])
    assert hallway.continuous and hallway.light == "night"  # light carries over
    assert hallway.shots[0].conditioning.keyframe == "previous-shot"
    assert hallway.shots[0].conditioning.shot == kitchen.shots[-1].id
    assert street.shots[0].conditioning.keyframe == "none"


def test_cast_names_are_normalised():
    plan = plan_of(TWO_HANDER + "\nMARA (V.O.)\nLater.\n\nmara's cat sleeps.\n\n"
                   "MARA (CONT'D)\nMuch later.\n")
    assert [c.name for c in plan.cast] == ["MARA", "TOM"]
    assert plan.cast[0].lines == 4
    line = [ln for _, s in plan.shots() for ln in s.dialogue if ln.text == "Much later."][0]
    assert line.extensions == []  # CONT'D is dropped


def test_parenthetical_goes_with_the_line_it_precedes():
    plan = plan_of("INT. A - DAY\n\nX.\n\nNELL\n(quietly)\nMy brother.\n(beat)\nHe owes me.\n")
    l1, l2 = plan.scenes[0].shots[1].dialogue
    assert (l1.parenthetical, l2.parenthetical) == ("(quietly)", "(beat)")
    assert (l1.id, l2.id) == ("1.1", "1.2")


def test_centred_text_is_a_title_card():
    plan = plan_of("INT. A - DAY\n\nX.\n\n> THE END <\n")
    card = plan.scenes[0].shots[-1]
    assert card.framing == Framing.TITLE and card.title == "THE END"
    assert card.conditioning.keyframe == "none"


def test_prose_without_headings_plans_as_one_scene():
    plan = plan_of("It was a dark and stormy night.\n\nThe rain fell on the roofs.\n")
    (scene,) = plan.scenes
    assert scene.id == "0" and len(scene.shots) == 2


def test_the_bundled_example_covers_what_the_demo_needs(example_path):
    plan, warnings = plan_source(example_path)
    assert not warnings
    assert 3 <= len(plan.scenes) <= 4 and 2 <= len(plan.cast) <= 3
    assert {s.int_ext for s in plan.scenes} >= {"INT", "EXT"}
    assert {s.light for s in plan.scenes} & {"day", "dusk"} and "night" in {
        s.light for s in plan.scenes}
    shots = [s for _, s in plan.shots()]
    assert any(s.transition_in.kind == TransitionKind.DISSOLVE for s in shots)
    assert any(ln.parenthetical for s in shots for ln in s.dialogue)
    assert any(ln.dual for s in shots for ln in s.dialogue)
    assert 60 <= plan.duration / plan.fps <= 90


# ------------------------------------------------------------------ shot limit

CONVERSATION = "INT. A - DAY\n\nA ferry leaves the pier in the rain.\n\n" + "".join(
    f"NELL\nWhere were you at {i}?\n\nIVO\nOut on the water, all the way to the lighthouse.\n\n"
    for i in range(40))


def test_max_shots_plans_up_to_the_limit_and_refuses_one_more(monkeypatch):
    full, _ = plan_script(parse(CONVERSATION))
    n = len(full.shots())
    assert n > 40
    assert plan_script(parse(CONVERSATION), max_shots=n)[0] == full
    assert plan_script(parse(CONVERSATION), PlannerSettings(max_shots=n))[0] == full

    drafted = []
    count_shot = _Planner._count_shot
    monkeypatch.setattr(_Planner, "_count_shot",
                        lambda self, d: (drafted.append(d), count_shot(self, d)))
    with pytest.raises(PlanError) as err:
        plan_script(parse(CONVERSATION, source="x.fountain"), max_shots=10)
    # stopped at the eleventh shot, not after drafting all of them
    assert len(drafted) == 11
    line = full.shots()[10][1].source_lines[0]
    assert str(err.value) == (f"x.fountain:{line}: more than 10 shots: the shot limit "
                              "(max_shots) is 10; plan a shorter script or raise the limit")
    # the keyword overrides the setting
    with pytest.raises(PlanError):
        plan_script(parse(CONVERSATION), PlannerSettings(max_shots=n), max_shots=n - 1)


def test_max_shots_reaches_every_entry_point(tmp_path):
    path = tmp_path / "talk.fountain"
    path.write_text(CONVERSATION)
    with pytest.raises(PlanError, match=r"talk\.fountain:\d+: more than 3 shots"):
        plan_source(path, max_shots=3)
    with pytest.raises(PlanError, match=r"^upload:\d+: more than 3 shots"):
        plan_bytes(CONVERSATION.encode(), source="upload", max_shots=3)
    with pytest.raises(ValueError, match="at least 1"):
        plan_script(parse(CONVERSATION), max_shots=0)


def test_max_cast_refuses_the_first_character_past_the_limit():
    crowd = "INT. A - DAY\n\n" + "".join(f"N{i}\nHi.\n\n" for i in range(6))
    plan, _ = plan_script(parse(crowd), PlannerSettings(max_cast=6))
    assert [m.name for m in plan.cast] == [f"N{i}" for i in range(6)]
    with pytest.raises(PlanError) as err:
        plan_script(parse(crowd), PlannerSettings(max_cast=5))
    assert err.value.line == 3 + 3 * 5  # N5's cue
    assert "the cast limit (max_cast) is 5" in str(err.value)
