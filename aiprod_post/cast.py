"""The cast: who each character is, read from the script and kept in an editable cast file.

:func:`read_cast` reads, rule by rule and offline, what a screenplay says about each
speaking character: the introduction (the action sentence where the name first
appears in capitals), age, gender (from titles and role words in the name and the
introduction, then from the pronouns that refer to the character in later action),
wardrobe and its colours, hair, beard, glasses and build. Each fact keeps the
script lines it came from; what the script does not say stays unknown, and nothing
is guessed from a personal name.

The cast file (``Cast.1``, TOML) holds those facts with what they drive: the voice,
the animatic figure, reference images and LoRAs. Users edit it; every key is
checked, and an unknown key or a bad value is an error that names the key.

>>> from aiprod_post.fountain import parse
>>> cast = read_cast(parse('''EXT. PIER - DUSK
...
... NELL, sixties, in a yellow oilskin, counts coins. She looks up.
...
... NELL
... Ferry's gone.
... '''))
>>> nell = cast.characters["NELL"]
>>> nell.gender, nell.age, nell.age_band, nell.colours, nell.lines["gender"]
('female', 65, 'older', ['yellow'], [3])
>>> nell.description
'an older woman in a yellow oilskin'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import AiprodError
from .files import write_atomic
from .script import Action, DialogueBlock, Script, SceneHeading

__all__ = [
    "CAST_VERSION",
    "COLOURS",
    "Figure",
    "CastCharacter",
    "Cast",
    "read_cast",
    "age_band",
    "describe",
    "figure_for",
    "load_cast",
    "cast_to_toml",
    "save_cast",
    "merge_cast",
    "complete",
    "rgb",
    "VoiceChooser",
]

CAST_VERSION = "Cast.1"

Gender = Literal["female", "male", "unknown"]
#: chooses voices for a cast: (names, {name: (voice, pitch, rate) the cast fixes},
#: {name: (gender, age)}) → {name: (voice, pitch, rate)}. The espeak-ng chooser is
#: ``aiprod_post.audio.tts.cast_voices``; the data model imports no stage, so callers hand
#: it in.
VoiceChooser = Callable[[list[str], dict[str, tuple[str, Any, Any]], dict[str, tuple[str, Any]]],
                        dict[str, tuple[str, int, int]]]
AgeBand = Literal["child", "teen", "young", "middle", "older", "unknown"]
HairStyle = Literal["short", "long", "bun", "bald", "unknown"]

#: colour words a script uses for clothes and hair, as display sRGB
COLOURS: dict[str, tuple[int, int, int]] = {
    "yellow": (232, 192, 32), "red": (190, 30, 35), "blue": (40, 80, 170),
    "green": (40, 130, 60), "black": (28, 28, 32), "white": (235, 235, 230),
    "grey": (128, 128, 132), "brown": (110, 70, 40), "orange": (230, 120, 30),
    "purple": (110, 50, 140), "pink": (230, 140, 170), "navy": (25, 35, 80),
    "maroon": (110, 25, 35), "beige": (210, 190, 150), "tan": (190, 150, 100),
    "cream": (240, 230, 200), "olive": (110, 110, 40), "teal": (30, 120, 120),
    "gold": (210, 170, 50), "silver": (190, 190, 195), "khaki": (180, 165, 110),
    "crimson": (170, 20, 40), "scarlet": (220, 35, 25), "turquoise": (50, 190, 180),
    "burgundy": (120, 20, 40), "blonde": (225, 200, 120), "ginger": (190, 90, 40),
    "auburn": (140, 60, 35), "dark": (45, 35, 30), "fair": (220, 195, 130),
}
_COLOUR_ALIASES = {"gray": "grey", "blond": "blonde", "silvery": "silver", "golden": "gold",
                   "mustard": "yellow", "lemon": "yellow", "charcoal": "grey", "violet": "purple",
                   "lilac": "purple", "emerald": "green", "lime": "green", "rust": "orange",
                   "ivory": "cream", "ruby": "red", "cherry": "red", "sky-blue": "blue",
                   "jet-black": "black", "snow-white": "white",
                   # fabrics and things people name colours by
                   "denim": "blue", "camel": "tan", "rusty": "orange",
                   "wine": "burgundy", "plum": "purple", "mint": "green", "coral": "pink",
                   "sand": "beige", "stone": "beige", "slate": "grey", "sage": "green",
                   "forest": "green", "bottle": "green", "blood": "red", "fire-engine": "red"}
# words that are colours of clothes but only hair colours when said of hair
_HAIR_ONLY = {"blonde", "ginger", "auburn", "dark", "fair"}

# ---------------------------------------------------------------- vocabulary

_FEMALE_WORDS = {
    "woman", "women", "girl", "lady", "mother", "mum", "mom", "mama", "sister", "daughter",
    "wife", "widow", "grandmother", "grandma", "granny", "gran", "aunt", "auntie", "aunty",
    "niece", "queen", "princess", "actress", "waitress", "nun", "bride", "girlfriend",
    "matriarch", "schoolgirl", "landlady", "stewardess", "duchess", "empress", "heiress",
    "madam", "madame", "mrs", "ms", "miss", "sister-in-law", "businesswoman", "policewoman",
    "mistress", "goddess", "hostess", "headmistress", "granddaughter", "stepmother",
}
_MALE_WORDS = {
    "man", "men", "boy", "gentleman", "father", "dad", "papa", "brother", "son", "husband",
    "widower", "grandfather", "grandpa", "grandad", "granddad", "uncle", "nephew", "king",
    "prince", "actor", "waiter", "monk", "groom", "boyfriend", "patriarch", "schoolboy",
    "landlord", "steward", "duke", "emperor", "heir", "sir", "mr", "lord", "businessman",
    "policeman", "fisherman", "headmaster", "grandson", "stepfather", "lad", "fellow",
    "bloke", "guy", "master", "brother-in-law", "priest",
}
_TITLES = {"mr": "male", "mrs": "female", "ms": "female", "miss": "female", "sir": "male",
           "lady": "female", "lord": "male", "madam": "female", "madame": "female",
           "dame": "female", "master": "male", "mister": "male", "missus": "female",
           "aunt": "female", "auntie": "female", "uncle": "male", "sister": "female",
           "brother": "male", "father": "male", "mother": "female", "grandma": "female",
           "grandpa": "male", "granny": "female", "mum": "female", "dad": "male",
           "king": "male", "queen": "female", "prince": "male", "princess": "female"}
_MALE_PRONOUN = re.compile(r"\b(he|him|his|himself)\b", re.I)
_PRONOUN = re.compile(r"\b(he|him|his|himself|she|her|hers|herself)\b", re.I)

_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}
_DECADES = {"teens": 15, "twenties": 25, "thirties": 35, "forties": 45, "fifties": 55,
            "sixties": 65, "seventies": 75, "eighties": 85, "nineties": 95}
_NUM = r"(?:\d{1,3}|" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + \
    r")(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?"
# "about forty", "forty-ish", "eighty if a day"
_ABOUT = r"(?:(?:about|around|roughly|nearly|almost|maybe|perhaps|some|at least|barely|" \
    r"just)\s+)?"
_ISH = r"(?:-?ish|\s+or so|\s+if a day|\s+at most|\s+at the most)?"
_AGE_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # "(62)", "(60s)", "(mid-40s)"
    (re.compile(r"^\s*\(\s*(?:(early|mid|late)[- ]?)?(\d{1,2})(s)?\s*\)"), "paren"),
    (re.compile(r"\b(?:(early|mid|late)[- ]?)?(\d0)'?s\b", re.I), "decade_digits"),
    (re.compile(r"\b(?:(early|mid|late)[- ]?)?(" + "|".join(_DECADES) + r")\b", re.I),
     "decade"),
    (re.compile(r"\b(" + _NUM + r")[- ]years?[- ]old\b", re.I), "number"),
    (re.compile(r"\b(?:aged|age)\s+(" + _NUM + r")\b", re.I), "number"),
    (re.compile(r"\b(?:girl|boy|child|kid|man|woman|lad|lass|fellow|person)\s+of\s+" + _ABOUT
                + r"(" + _NUM + r")\b", re.I), "number"),
    (re.compile(r"(?:^|,)\s*" + _ABOUT + r"(" + _NUM + r")" + _ISH + r"\s*(?=,|\.|$|\)|;)",
                re.I), "number"),
    (re.compile(r"\b(elderly|ancient|old|older|aging|ageing|grey-haired|white-haired|"
                r"middle-aged|young|younger|youthful|teenage|teenager|teen|adolescent|"
                r"toddler|baby|infant|child|kid|schoolgirl|schoolboy|boy|girl|retired|"
                r"pensioner|grandmother|grandfather|grandma|grandpa|granny|"
                r"twentysomething|thirtysomething)\b", re.I), "word"),
]
_AGE_WORDS = {
    "elderly": 75, "ancient": 85, "old": 70, "older": 60, "aging": 62, "ageing": 62,
    "grey-haired": 60, "white-haired": 70, "middle-aged": 48, "young": 25, "younger": 25,
    "youthful": 25, "teenage": 16, "teenager": 16, "teen": 16, "adolescent": 15, "toddler": 3,
    "baby": 1, "infant": 1, "child": 8, "kid": 9, "schoolgirl": 11, "schoolboy": 11, "boy": 10,
    "girl": 10, "retired": 68, "pensioner": 72, "grandmother": 68, "grandfather": 68,
    "grandma": 70, "grandpa": 70, "granny": 72, "twentysomething": 27, "thirtysomething": 35,
}

_GARMENTS = [
    # (words, rank): rank 0 is what covers most of the figure (outerwear), 3 accessories
    (("oilskin", "oilskins", "coat", "overcoat", "raincoat", "trench coat", "trenchcoat",
      "parka", "anorak", "mac", "cloak", "cape", "poncho", "windbreaker", "duffel coat",
      "peacoat", "greatcoat", "fur coat", "lab coat", "jacket", "blazer", "hi-vis",
      "robe", "gown", "habit", "cassock", "kimono", "sari", "dress", "frock", "uniform",
      "overalls", "overall", "boiler suit", "jumpsuit", "scrubs", "suit", "tuxedo", "tracksuit",
      "dungarees", "fleece", "hoodie", "cardigan", "sweater", "jumper", "pullover",
      "waistcoat", "apron", "tunic", "leathers", "wetsuit", "pyjamas", "pajamas",
      "nightgown", "nightdress", "dressing gown", "smock", "waterproof", "waterproofs",
      "mackintosh", "puffer", "gilet", "body warmer", "bodywarmer", "kaftan", "caftan",
      "onesie", "jersey", "shell suit", "boilersuit", "coveralls", "sweatshirt",
      "dinner jacket", "bomber", "bomber jacket", "donkey jacket", "pea coat", "duster",
      "shalwar kameez", "abaya", "dashiki", "cheongsam", "hanbok", "toga", "surplice",
      "chef's whites", "whites"), 0),
    (("shirt", "t-shirt", "tee", "blouse", "top", "vest", "polo", "turtleneck", "tank top"), 1),
    (("jeans", "trousers", "skirt", "shorts", "slacks", "leggings", "pants", "kilt"), 2),
    (("scarf", "hat", "cap", "beanie", "beret", "bonnet", "headscarf", "hood", "helmet",
      "boots", "shoes", "sneakers", "trainers", "gloves", "tie", "bow tie", "shawl",
      "bandana", "sou'wester", "wellies", "wellingtons"), 3),
]
_LONG_GARMENTS = {"oilskin", "oilskins", "coat", "overcoat", "raincoat", "trenchcoat", "mac",
                  "cloak", "cape", "robe", "robes", "gown", "habit", "cassock", "dress", "frock",
                  "greatcoat", "duster", "kaftan", "caftan", "abaya", "sari", "nightgown",
                  "nightdress", "mackintosh", "poncho", "smock", "toga", "surplice", "peacoat"}
_GARMENT_RANK = {w: rank for words, rank in _GARMENTS for w in words}
_GARMENT_RE = re.compile(
    r"\b(" + "|".join(re.escape(w) for w in sorted(_GARMENT_RANK, key=len, reverse=True))
    + r")\b", re.I)
_COLOUR_AFTER = re.compile(
    r"\s*(?:,\s*)?(?:(?:that|which) (?:is|was|are|were)|of|in|the colou?r of|colou?red)\s+"
    r"(?:(?:a|an|the|mostly|mainly|all|bright|pale|dark|deep|faded|dirty|muddy|vivid)\s+)*"
    r"(" + "|".join(re.escape(c) for c in sorted(set(COLOURS) | set(_COLOUR_ALIASES), key=len,
                                                reverse=True)) + r")\b", re.I)

_HAIR_RE = re.compile(
    r"\b(?:(?P<len>long|short|cropped|shoulder-length|waist-length|close-cropped|curly|wavy|"
    r"straight|thinning|messy|wild|tangled|neat|slicked|braided)[ ,]+(?:and\s+)?)?"
    r"(?:(?P<len2>long|short|cropped|curly|wavy|straight|thinning|messy|wild)[ ,]+)?"
    r"(?P<col>[a-z-]+)?[ ]?hair\b|\b(?P<col3>[a-z]+)-haired\b|"
    r"\b(?P<style>bald|balding|shaven-headed|shaved head|ponytail|pony tail|bun|braids|plaits|"
    r"pigtails|dreadlocks|dreads|buzz cut|crew cut|mohawk|afro|redhead|blonde|blond)\b", re.I)
_BEARD_RE = re.compile(r"\b(clean-shaven|clean shaven|beard|bearded|moustache|mustache|"
                       r"stubble|goatee|whiskers|sideburns)\b", re.I)
_GLASSES_RE = re.compile(r"\b(glasses|spectacles|bespectacled|specs|sunglasses|eyeglasses|"
                         r"monocle|horn-rimmed|wire-rimmed)\b", re.I)
_BUILD_WORDS = {
    "tall": ("height", 1.07), "towering": ("height", 1.1), "lanky": ("height", 1.08),
    "short": ("height", 0.92), "tiny": ("height", 0.88), "petite": ("height", 0.92),
    "stocky": ("build", 1.18), "heavyset": ("build", 1.2), "heavy-set": ("build", 1.2),
    "burly": ("build", 1.2), "broad": ("build", 1.15), "broad-shouldered": ("build", 1.15),
    "stout": ("build", 1.18), "portly": ("build", 1.2), "plump": ("build", 1.15),
    "large": ("build", 1.15), "big": ("build", 1.12), "muscular": ("build", 1.12),
    "hulking": ("build", 1.22), "thin": ("build", 0.85), "slight": ("build", 0.85),
    "skinny": ("build", 0.82), "wiry": ("build", 0.88), "slim": ("build", 0.88),
    "slender": ("build", 0.87), "gaunt": ("build", 0.84), "frail": ("build", 0.84),
    "athletic": ("build", 1.05),
}
_BUILD_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(_BUILD_WORDS, key=len,
                                                                          reverse=True)) + r")\b",
                       re.I)

_PRESENTED = re.compile(r"(?:[:;,—–-]\s*)?\b(?:this is|that is|that's|this's|it's|it is|meet|"
                        r"here is|here's|enter|enters)\s*$", re.I)
_SENTENCE = re.compile(r"[^.!?]+(?:[.!?]+|$)")
_ABBREVIATION = re.compile(r"(?:^|\s)(?:mr|mrs|ms|dr|st|prof|capt|sgt|lt|det|rev|jr|sr|no)\.$", re.I)


def _sentences(text: str) -> list[tuple[int, str]]:
    """(offset, sentence) for each sentence; "DR. OKAFOR" and "Mrs. Hale" do not end one."""
    out: list[tuple[int, str]] = []
    for m in _SENTENCE.finditer(text):
        if out and _ABBREVIATION.search(out[-1][1]):
            out[-1] = (out[-1][0], out[-1][1] + m.group())
        else:
            out.append((m.start(), m.group()))
    return out


# ---------------------------------------------------------------- the model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _colour_value(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a colour: a name such as \"yellow\" or \"#e8c020\"")
    text = value.strip().lower()
    if re.fullmatch(r"#[0-9a-f]{6}", text):
        return text
    text = _COLOUR_ALIASES.get(text, text)
    if text in COLOURS:
        return "#%02x%02x%02x" % COLOURS[text]
    raise ValueError(f"expected a colour name ({', '.join(sorted(COLOURS))}) or \"#rrggbb\", "
                     f"got {value!r}")


def rgb(value: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` or a colour name as an RGB triple.

    >>> rgb("yellow"), rgb("#102030")
    ((232, 192, 32), (16, 32, 48))
    """
    h = _colour_value(value)
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


class Figure(_Strict):
    """How the animatic draws a character (and what its reference sheet shows)."""

    hair_style: HairStyle = "short"
    hair: str = "#3c3028"
    skin: str = "#e0b090"
    coat: str = "#5a5a64"
    trousers: str = "#36363c"
    build: float = Field(1.0, ge=0.6, le=1.5)
    height: float = Field(1.0, ge=0.5, le=1.3)
    beard: bool = False
    glasses: bool = False
    #: an older figure stoops a little and its hair is drawn grey unless the cast says
    older: bool = False
    #: the main garment reaches the knees (a coat, an oilskin, a dress, a robe)
    long_coat: bool = False

    @field_validator("hair", "skin", "coat", "trousers", mode="before")
    @classmethod
    def _colour(cls, value: Any) -> str:
        return _colour_value(value)


class CastCharacter(_Strict):
    """One character: facts read from the script (with their lines) and what they drive."""

    introduction: str = Field("", description="the action sentence that introduces them")
    gender: Gender = "unknown"
    age: int | None = Field(None, ge=0, le=120)
    age_band: AgeBand = "unknown"
    wardrobe: list[str] = Field(default_factory=list, description="\"yellow oilskin\" …")
    colours: list[str] = Field(default_factory=list, description="wardrobe colours, main first")
    hair: str | None = Field(None, description="hair colour as written")
    hairstyle: str | None = Field(None, description="hair length or style as written")
    beard: bool | None = None
    glasses: bool | None = None
    build: str | None = None
    description: str = Field("", description="how prompts name them, the same in every shot")
    #: script lines each fact came from (``introduction``, ``gender``, ``age`` …)
    lines: dict[str, list[int]] = Field(default_factory=dict)
    voice: str | None = Field(None, description="espeak-ng language+variant, e.g. en+f2")
    pitch: int | None = Field(None, ge=0, le=100)
    rate: int | None = Field(None, ge=80, le=450)
    speaker_wav: str | None = None
    speaker: str | None = Field(None, description="coqui: the multi-speaker model's speaker "
                                "(else chosen by gender and age; shared only when given)")
    reference: str | None = Field(None, description="reference image for the diffusion engines")
    lora: str | None = None
    lora_weight: float = Field(1.0, ge=0.0, le=2.0)
    figure: Figure = Field(default_factory=Figure)

    @field_validator("colours", mode="before")
    @classmethod
    def _colours(cls, value: Any) -> Any:
        if isinstance(value, list):
            for v in value:
                _colour_value(v)
        return value

    @field_validator("voice")
    @classmethod
    def _voice(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z]{2,3}(?:-[a-z0-9-]+)?(?:\+[A-Za-z0-9 ]+)?",
                                                  value):
            raise ValueError("expected an espeak-ng voice: language[+variant], e.g. en+f2")
        return value


class Cast(_Strict):
    """Everyone in a film or a series, by upper-case name, in order of appearance."""

    schema_version: Literal["Cast.1"] = CAST_VERSION
    title: str | None = None
    source: str | None = None
    characters: dict[str, CastCharacter] = Field(default_factory=dict)

    def get(self, name: str) -> CastCharacter | None:
        return self.characters.get(_key(name))


def _key(name: str) -> str:
    return " ".join(name.split()).upper()


# ---------------------------------------------------------------- reading the script


@dataclass
class _Facts:
    name: str
    key: str
    introduction: str = ""
    intro_line: int | None = None
    strong_gender: dict[str, list[int]] = field(default_factory=dict)
    votes: dict[str, list[int]] = field(default_factory=dict)
    age: tuple[int, int] | None = None  # (years, line)
    name_age: tuple[int, int] | None = None  # from a role word in the name: OLD MAN
    wardrobe: list[tuple[int, int, str, str | None, int]] = field(default_factory=list)
    hair: tuple[str, int] | None = None
    hairstyle: tuple[str, int] | None = None
    beard: tuple[bool, int] | None = None
    glasses: tuple[bool, int] | None = None
    build: list[tuple[str, int]] = field(default_factory=list)


def _line_at(action: Action, text: str, pos: int) -> int:
    return action.line + text.count("\n", 0, pos)


def _name_pattern(name: str, caps_only: bool) -> re.Pattern[str]:
    words = name.split()
    caps = r"\s+".join(re.escape(w) for w in words)
    if caps_only:
        return re.compile(r"(?<![\w'])" + caps + r"(?![\w])")
    title = r"\s+".join(re.escape(w.capitalize()) for w in words)
    return re.compile(r"(?<![\w'])(?:" + caps + "|" + title + r")(?:'s|’s)?(?![\w])")


def _age_from(segment: str) -> int | None:
    for pattern, kind in _AGE_PATTERNS:
        m = pattern.search(segment)
        if not m:
            continue
        if kind == "paren":
            years = int(m.group(2))
            if m.group(3):
                years += {"early": 2, "mid": 5, "late": 8}.get((m.group(1) or "").lower(), 5)
            return years
        if kind in ("decade", "decade_digits"):
            base = _DECADES[m.group(2).lower()] - 5 if kind == "decade" else int(m.group(2))
            return base + {"early": 2, "mid": 5, "late": 8}.get((m.group(1) or "").lower(), 5)
        if kind == "number":
            years = _number(m.group(1))
            if years is not None and 0 < years <= 110:
                return years
            continue
        word = m.group(1).lower()
        if word in ("boy", "girl"):
            # "a girl of eight" was read above; "the young girl" is a child, "girlfriend" not
            return _AGE_WORDS[word]
        return _AGE_WORDS[word]
    return None


def _number(text: str) -> int | None:
    text = text.lower().strip()
    if text.isdigit():
        return int(text)
    parts = re.split(r"[- ]", text)
    total = 0
    for p in parts:
        if p not in _NUMBER_WORDS:
            return None
        total += _NUMBER_WORDS[p]
    return total


def age_band(age: int | None) -> AgeBand:
    """The band an age falls in: child (<13), teen, young (20-34), middle (35-54), older.

    >>> [age_band(a) for a in (8, 16, 20, 45, 65, None)]
    ['child', 'teen', 'young', 'middle', 'older', 'unknown']
    """
    if age is None:
        return "unknown"
    if age < 13:
        return "child"
    if age < 20:
        return "teen"
    if age < 35:
        return "young"
    if age < 55:
        return "middle"
    return "older"


def _gender_words(text: str) -> str | None:
    """``female``/``male`` when the text's role words (not possessives) say one of them."""
    found = set()
    for m in re.finditer(r"[A-Za-z-]+(?:'s|’s)?", text):
        word = m.group().lower()
        if word.endswith(("'s", "’s")):
            continue  # "Nell's brother": the brother is someone else's
        if word in _FEMALE_WORDS:
            found.add("female")
        elif word in _MALE_WORDS:
            found.add("male")
    return found.pop() if len(found) == 1 else None


def _clauses(segment: str, n: int) -> str:
    """The first ``n`` comma-separated clauses: where an appositive describes the name."""
    return ",".join(segment.split(",")[:n])


def _wardrobe_in(text: str) -> list[tuple[int, str, str | None, int]]:
    """(rank, item as written, colour name or None, offset) for each garment in ``text``."""
    out = []
    for m in _GARMENT_RE.finditer(text):
        before = text[max(0, m.start() - 40):m.start()]
        # a colour among the three words before the garment, in the same phrase
        words = re.split(r"[,;.]| and a | with ", before)[-1].split()[-3:]
        colour = None
        for w in words:
            w = w.lower().strip("-")
            for part in w.split("-"):
                part = _COLOUR_ALIASES.get(part, part)
                if part in COLOURS and part not in _HAIR_ONLY and colour is None:
                    colour = part
        if colour is None:
            # or said after it: "a raincoat that is mostly green", "the colour of rust"
            after = _COLOUR_AFTER.match(text[m.end():m.end() + 50])
            if after:
                colour = _COLOUR_ALIASES.get(after.group(1).lower(), after.group(1).lower())
        item = m.group(1).lower()
        out.append((_GARMENT_RANK[item], f"{colour} {item}" if colour else item, colour,
                    m.start()))
    return out


def _hair_in(text: str) -> tuple[str | None, str | None]:
    """(colour, style) said about hair in ``text``."""
    colour = style = None
    for m in _HAIR_RE.finditer(text):
        if m.group("style"):
            s = m.group("style").lower()
            if s in ("redhead",):
                colour = colour or "red"
            elif s in ("blonde", "blond"):
                colour = colour or "blonde"
            else:
                style = style or s
            continue
        col = (m.group("col") or m.group("col3") or "").lower()
        col = _COLOUR_ALIASES.get(col, col)
        if col in ("white", "grey", "silver", "black", "brown", "red", "blonde", "ginger",
                   "auburn", "dark", "fair", "salt-and-pepper"):
            colour = colour or col
        elif col in ("long", "short", "curly", "cropped"):
            style = style or col
        style = style or (m.group("len") or m.group("len2") or "").lower() or None
    return colour, style


def _outermost(found: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Sorted (start, end, key) matches less those inside a longer one ("FATHER OF THE
    BRIDE" holds "BRIDE", "MRS. HALE" holds "HALE")."""
    out: list[tuple[int, int, str]] = []
    for item in found:
        if out and item[0] < out[-1][1]:
            if item[1] - item[0] > out[-1][1] - out[-1][0]:
                out[-1] = item
            continue
        out.append(item)
    return out


class _Reader:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.people: dict[str, _Facts] = {}
        for block in script.of_type(DialogueBlock):
            key = _key(block.character.name)
            if key not in self.people:
                self.people[key] = _Facts(block.character.name, key)
        self.caps = {k: _name_pattern(k, True) for k in self.people}
        self.mention = {k: _name_pattern(f.name, False) for k, f in self.people.items()}

    def mentions(self, sentence: str) -> list[tuple[int, int, str]]:
        found = []
        for key, pattern in self.mention.items():
            for m in pattern.finditer(sentence):
                found.append((m.start(), m.end(), key))
        return _outermost(sorted(found))

    def read(self) -> list[_Facts]:
        self._from_names()
        self._introductions()
        self._pronouns_and_traits()
        return list(self.people.values())

    # titles and role words in the name itself: MRS. HALE, OLD MAN, GIRL
    def _from_names(self) -> None:
        """Titles and role words in the name itself (MRS. HALE, OLD MAN, GIRL), read at the
        character's first cue. A personal name says nothing."""
        seen: set[str] = set()
        for block in self.script.of_type(DialogueBlock):
            f = self.people[_key(block.character.name)]
            if f.key in seen:
                continue
            seen.add(f.key)
            words = [w.strip(".").lower() for w in f.key.split()]
            for w in words:
                g = _TITLES.get(w) or ("female" if w in _FEMALE_WORDS else "male"
                                       if w in _MALE_WORDS else None)
                if g:
                    f.strong_gender.setdefault(g, []).append(block.character.line)
                    break
            years = _age_from(" ".join(words)) if len(words) > 1 or words[0] in _AGE_WORDS \
                else None
            if years is not None:
                f.name_age = (years, block.character.line)

    def _introductions(self) -> None:
        for action in self.script.of_type(Action):
            text = action.text.plain
            for start0, sentence in _sentences(text):
                caps = _outermost(sorted((m.start(), m.end(), k) for k, p in self.caps.items()
                                         for m in p.finditer(sentence)))
                for i, (start, end, key) in enumerate(caps):
                    f = self.people[key]
                    if f.intro_line is not None:
                        continue
                    nxt = caps[i + 1][0] if i + 1 < len(caps) else len(sentence)
                    segment = sentence[end:nxt]
                    pre = sentence[:start] if i == 0 else ""
                    # a description before the name belongs to it as an appositive ("A woman
                    # in her sixties, NELL, ...") or when the name is presented ("...: this
                    # is PRIYA", "Meet ZED")
                    if _PRESENTED.search(pre):
                        pre = _PRESENTED.sub("", pre)
                    elif not pre.rstrip().endswith(","):
                        pre = ""
                    line = _line_at(action, text, start0 + start)
                    f.intro_line = line
                    f.introduction = " ".join(sentence.split())
                    self._describe(f, segment, line, intro=True, pre=pre)

    def _describe(self, f: _Facts, segment: str, line: int, intro: bool, pre: str = "") -> None:
        """Facts in the words about one character: ``segment`` follows the name, ``pre``
        is a description before it."""
        head = _clauses(segment, 3)
        if intro:
            # role words in the appositive next to the name, not in what they do after it
            near = pre.rstrip(" ,").split(",")[-1]  # the clause just before the name
            after = _clauses(segment, 3 if segment.lstrip().startswith("(") else 2)
            g = _gender_words(f"{near} , {after}")
            if g:
                f.strong_gender.setdefault(g, []).append(line)
            if f.age is None:
                years = _age_from(segment)
                years = _age_from(pre) if years is None and pre else years
                if years is not None:
                    f.age = (years, line)
        segment = f"{pre} , {segment}" if pre else segment
        for rank, item, colour, _pos in _wardrobe_in(segment):
            if item not in [w[2] for w in f.wardrobe]:
                f.wardrobe.append((rank, len(f.wardrobe), item, colour, line))
        colour, style = _hair_in(segment)
        if colour and f.hair is None:
            f.hair = (colour, line)
        if style and f.hairstyle is None:
            f.hairstyle = (style, line)
        b = _BEARD_RE.search(segment)
        if b and f.beard is None:
            f.beard = (not b.group(1).lower().startswith("clean"), line)
        g = _GLASSES_RE.search(segment)
        if g and f.glasses is None:
            f.glasses = (True, line)
        if intro:
            for m in _BUILD_RE.finditer(head):
                word = m.group(1).lower()
                if word == "short" and re.match(r"\s+(?:grey|gray|white|black|brown|red|dark|"
                                                r"fair|blonde?)?\s*hair", head[m.end():]):
                    continue  # "short hair" is a hairstyle
                if word not in [b[0] for b in f.build]:
                    f.build.append((word, line))

    def _pronouns_and_traits(self) -> None:
        """Two passes of pronoun votes: the second knows the genders the first settled
        ("He turns the gain up" after Zoe, known female by then, speaks is not Zoe)."""
        strong = {k: (next(iter(f.strong_gender)) if len(f.strong_gender) == 1 else None)
                  for k, f in self.people.items()}
        votes = self._pronouns(strong, traits=False)
        settled = dict(strong)
        for k, v in votes.items():
            if settled[k] is None:
                g, _ = _majority(v)
                settled[k] = None if g == "unknown" else g
        for k, v in self._pronouns(settled, traits=True).items():
            self.people[k].votes = v

    def _pronouns(self, known: dict[str, str | None], traits: bool
                  ) -> dict[str, dict[str, list[int]]]:
        """Each he/she in action votes for the character it most likely refers to.

        Candidates, nearest first: characters named earlier in the sentence (for a
        pronoun that opens the sentence: the last speaker when the action follows
        dialogue, then the previous sentence's subject), then those named earlier in the
        scene. The first candidate whose ``known`` gender does not contradict the pronoun
        gets the vote. An object pronoun (him, "beside her") is never the subject of its
        own sentence ("He offers her a charger": she is someone else).
        """
        votes: dict[str, dict[str, list[int]]] = {k: {} for k in self.people}
        recent: list[str] = []  # most recent first
        last_speaker: str | None = None
        after_dialogue = False
        for e in self.script.elements:
            if isinstance(e, SceneHeading):
                recent, last_speaker = [], None
                continue
            if isinstance(e, DialogueBlock):
                last_speaker = _key(e.character.name)
                after_dialogue = True
                continue
            if not isinstance(e, Action):
                continue
            text = e.text.plain
            subject_prev: str | None = None
            for n_sentence, (start0, sentence) in enumerate(_sentences(text)):
                named = self.mentions(sentence)
                referents: dict[str, int] = {}
                subject: str | None = None
                if named and not sentence[:named[0][0]].strip(" \n\"'(").lower().startswith(
                        ("beside", "behind", "with", "to", "for", "near", "after", "across")):
                    subject = named[0][2]
                for m in _PRONOUN.finditer(sentence):
                    pos, word = m.start(), m.group().lower()
                    gender = "male" if _MALE_PRONOUN.fullmatch(word) else "female"
                    # possessors are not who a pronoun means ("Nell's brother ... his beard")
                    before = [k for s_, e_, k in reversed(named) if s_ < pos
                              and not sentence[s_:e_].endswith(("'s", "’s"))]
                    cands = list(before)
                    if not before or _is_object(word, sentence[m.end():]):
                        if after_dialogue and n_sentence == 0 and last_speaker:
                            cands.append(last_speaker)
                        if subject_prev:
                            cands.append(subject_prev)
                        cands += recent
                    if _is_object(word, sentence[m.end():]):
                        cands = [c for c in cands if c != subject]
                    cands = [c for c in dict.fromkeys(cands) if c in self.people]
                    for c in cands:
                        if known.get(c) in (None, gender):
                            votes[c].setdefault(gender, []).append(
                                _line_at(e, text, start0 + pos))
                            referents.setdefault(c, pos)
                            if subject is None and pos == len(sentence) - len(
                                    sentence.lstrip()):
                                subject = c  # "He offers her …": he is the subject
                            break
                # traits said of one person: "Ivo wipes his glasses", "her red scarf"
                who = {k for _s, _e, k in named} | set(referents)
                if traits and len(who) == 1:
                    key = next(iter(who))
                    f = self.people[key]
                    line = _line_at(e, text, start0)
                    if line != f.intro_line:
                        possessed = re.findall(
                            r"\b(?:his|her|" + "|".join(re.escape(w) for w in
                                                        f.name.split()) + r"['’]s)\s+((?:[\w-]+\s+)"
                            r"{0,3}[\w'-]+)", sentence, re.I)
                        worn = re.findall(r"\b(?:wears|wearing|dressed in|in (?:a|an|his|her))"
                                          r"\s+((?:[\w-]+\s+){0,3}[\w'-]+)", sentence, re.I)
                        said = " , ".join(possessed + worn)
                        if said:
                            self._describe(f, said, line, intro=False)
                if named:
                    subject_prev = subject or named[0][2]
                    for _s, _e, k in named:
                        recent = [k] + [r for r in recent if r != k]
                elif referents:
                    subject_prev = subject or min(referents, key=referents.get)  # type: ignore[arg-type]
            after_dialogue = False
        return votes


# words after "her" that show it is an object ("beside her.", "hands her a cup"), not a
# possessive ("her phone")
_AFTER_OBJECT = {"a", "an", "the", "to", "and", "or", "but", "with", "in", "on", "at", "up",
                 "down", "out", "back", "off", "away", "again", "over", "into", "as", "from",
                 "for", "by", "round", "around", "too", "two", "one", "some", "his", "her",
                 "their", "no", "this", "that", "go", "alone", "close", "tight"}


def _is_object(word: str, after: str) -> bool:
    """Whether ``him``/``her`` here is the object of a verb or preposition."""
    if word == "him":
        return True
    if word != "her":
        return False
    nxt = re.match(r"\s*([A-Za-z']+)", after)
    return nxt is None or after.lstrip()[:1] in ".,;:!?)" or nxt.group(1).lower() in _AFTER_OBJECT


def _majority(votes: dict[str, list[int]]) -> tuple[Gender, list[int]]:
    """A clear majority of the pronouns that refer to someone: 2 to 1 or better."""
    fem, mal = len(votes.get("female", [])), len(votes.get("male", []))
    if fem > 0 and fem >= 2 * mal:
        return "female", sorted(set(votes["female"]))
    if mal > 0 and mal >= 2 * fem:
        return "male", sorted(set(votes["male"]))
    return "unknown", []


def _gender_of(f: _Facts) -> tuple[Gender, list[int]]:
    if len(f.strong_gender) == 1:
        g, lines = next(iter(f.strong_gender.items()))
        return g, sorted(set(lines + f.votes.get(g, [])))  # type: ignore[return-value]
    return _majority(f.votes)


def describe(ch: CastCharacter) -> str:
    """How a prompt names a character: age band, gender, then what they wear.

    >>> describe(CastCharacter(gender="female", age_band="older", wardrobe=["yellow oilskin"]))
    'an older woman in a yellow oilskin'
    """
    noun = {("female", "child"): "girl", ("male", "child"): "boy", ("unknown", "child"): "child",
            ("female", "teen"): "teenage girl", ("male", "teen"): "teenage boy",
            ("unknown", "teen"): "teenager"}.get((ch.gender, ch.age_band))
    if noun is None:
        noun = {"female": "woman", "male": "man"}.get(ch.gender, "person")
        adjective = {"young": "young", "middle": "middle-aged", "older": "older"}.get(
            ch.age_band)
        noun = f"{adjective} {noun}" if adjective else noun
    traits = []
    if ch.hair and ch.hairstyle:
        traits.append(f"{ch.hairstyle} {ch.hair} hair")
    elif ch.hair:
        traits.append(f"{ch.hair} hair")
    elif ch.hairstyle:
        traits.append(ch.hairstyle if ch.hairstyle in ("bald", "balding") else
                      f"{ch.hairstyle} hair")
    if ch.beard:
        traits.append("a beard")
    if ch.glasses:
        traits.append("glasses")
    if ch.build:
        noun = f"{ch.build} {noun}"
    text = ("an " if noun[0] in "aeiou" else "a ") + noun
    if ch.wardrobe:
        item = ch.wardrobe[0]
        plural = item.endswith(("s", "jeans", "trousers")) and not item.endswith("dress")
        text += f" in {item}" if plural else f" in {'an' if item[0] in 'aeiou' else 'a'} {item}"
    if traits:
        text += " with " + (", ".join(traits[:-1]) + " and " + traits[-1] if len(traits) > 1
                            else traits[0])
    return text


# muted coats for characters whose clothes the script does not describe: distinct from
# one another in cast order so the animatic tells people apart, never taken from the name
_DEFAULT_COATS = ["#3c5a8c", "#8c3c3c", "#3c7850", "#6e5a82", "#8c6e3c", "#3c7882",
                  "#7a7a84", "#5a3c28"]


def figure_for(ch: CastCharacter, index: int = 0, taken: Iterable[str] = ()) -> Figure:
    """The animatic figure the facts call for; ``index`` picks an undescribed coat."""
    older = ch.age_band == "older"
    if ch.hairstyle and re.search(r"bald|shav", ch.hairstyle):
        style: HairStyle = "bald"
    elif ch.hairstyle and re.search(r"bun", ch.hairstyle):
        style = "bun"
    elif ch.hairstyle and re.search(r"long|pony|braid|plait|pigtail|dread|waist|shoulder",
                                    ch.hairstyle):
        style = "long"
    elif ch.hairstyle:
        style = "short"
    elif ch.gender == "female":
        style = "bun" if older else "long"
    else:
        style = "short"
    if ch.hair and ch.hair in COLOURS or ch.hair in _COLOUR_ALIASES:
        hair = _colour_value(ch.hair)
    elif ch.hair == "salt-and-pepper":
        hair = "#8c8c8c"
    elif older:
        hair = "#c8c8c8"
    else:
        hair = "#3c3028"
    garments = [w for w in ch.colours if w]
    free = [c for c in _DEFAULT_COATS if c not in set(taken)] or _DEFAULT_COATS
    coat = _colour_value(garments[0]) if garments else free[index % len(free)]
    trousers = _colour_value(garments[1]) if len(garments) > 1 else "#36363c"
    build = height = 1.0
    for word in (ch.build or "").split():
        kind, value = _BUILD_WORDS.get(word, ("", 1.0))
        if kind == "build":
            build = value
        elif kind == "height":
            height = value
    height *= {"child": 0.68, "teen": 0.94}.get(ch.age_band, 1.0)
    main = ch.wardrobe[0].split()[-1] if ch.wardrobe else ""
    return Figure(hair_style=style, hair=hair, coat=coat, trousers=trousers, build=build,
                  height=height, beard=bool(ch.beard), glasses=bool(ch.glasses), older=older,
                  long_coat=main in _LONG_GARMENTS)


def read_cast(script: Script, title: str | None = None, voices: VoiceChooser | None = None
              ) -> Cast:
    """Every speaking character's facts, read from the script, with figures (and voices,
    given a chooser such as ``aiprod_post.audio.tts.cast_voices``)."""
    people = _Reader(script).read()
    characters: dict[str, CastCharacter] = {}
    for f in people:
        lines: dict[str, list[int]] = {}
        data: dict[str, Any] = {}
        if f.intro_line is not None:
            data["introduction"] = f.introduction
            lines["introduction"] = [f.intro_line]
        gender, glines = _gender_of(f)
        data["gender"] = gender
        if glines:
            lines["gender"] = glines
        age = f.age or f.name_age  # what the introduction says beats a word in the name
        if age:
            data["age"], data["age_band"] = age[0], age_band(age[0])
            lines["age"] = [age[1]]
        if f.wardrobe:
            ordered = sorted(f.wardrobe)  # outerwear first, then as written
            data["wardrobe"] = [w[2] for w in ordered]
            data["colours"] = list(dict.fromkeys(w[3] for w in ordered if w[3]))
            lines["wardrobe"] = sorted({w[4] for w in ordered})
        for fact in ("hair", "hairstyle", "beard", "glasses"):
            value = getattr(f, fact)
            if value is not None:
                data[fact] = value[0]
                lines[fact] = [value[1]]
        if f.build:
            data["build"] = " ".join(b[0] for b in f.build)
            lines["build"] = sorted({b[1] for b in f.build})
        ch = CastCharacter(**data, lines=lines)
        characters[f.key] = ch
    cast = Cast(title=title or script.title, source=script.source, characters=characters)
    return complete(cast, voices)


def complete(cast: Cast, voices: VoiceChooser | None = None) -> Cast:
    """Fill what the facts drive where the cast leaves it out: the description, the figure
    (keys a cast file gives win over those worked out from the facts) and, given a
    ``voices`` chooser, the voice (one no other character has; voices the cast gives are
    kept, shared ones included)."""
    taken_coats = [ch.figure.coat for ch in cast.characters.values()
                   if "coat" in ch.figure.model_fields_set]
    out: dict[str, CastCharacter] = {}
    for i, (key, ch) in enumerate(cast.characters.items()):
        update: dict[str, Any] = {}
        if not ch.description:
            update["description"] = describe(ch)
        given = ch.figure.model_fields_set if "figure" in ch.model_fields_set else set()
        if "coat" in given:
            fig = ch.figure
        else:
            fig = figure_for(ch, i, taken_coats)
            taken_coats.append(fig.coat)
        update["figure"] = fig.model_copy(update={k: getattr(ch.figure, k) for k in given})
        out[key] = ch.model_copy(update=update)
    if voices is not None:
        chosen = voices(list(out), {k: (ch.voice, ch.pitch, ch.rate) for k, ch in out.items()
                                    if ch.voice},
                        {k: (ch.gender, ch.age) for k, ch in out.items()})
        for key, ch in out.items():
            voice, pitch, rate = chosen[key]
            out[key] = ch.model_copy(update={
                "voice": voice, "pitch": ch.pitch if ch.pitch is not None else pitch,
                "rate": ch.rate if ch.rate is not None else rate})
    return cast.model_copy(update={"characters": out})


def merge_cast(base: Cast, episode: Cast, voices: VoiceChooser | None = None
               ) -> tuple[Cast, list[str]]:
    """A series cast with an episode's characters: everyone in ``base`` stays exactly as
    written there (same voice, same look); characters new to the episode are added with a
    voice and a coat no one in ``base`` has. Returns the merged cast and the names added."""
    added = [k for k in episode.characters if k not in base.characters]
    characters = dict(base.characters)
    for k in added:
        # only the facts travel: figure and voice are worked out again beside the series
        facts = episode.characters[k].model_dump(exclude={"figure", "voice", "pitch", "rate"})
        characters[k] = CastCharacter(**facts)
    return complete(base.model_copy(update={"characters": characters}), voices), added


# ---------------------------------------------------------------- the file


def load_cast(path: str | Path, voices: VoiceChooser | None = None) -> Cast:
    """Read and check a cast file; errors name the file and the key."""
    from .project import read_toml_model

    def version(data: dict) -> None:
        if data.get("schema_version") != CAST_VERSION:
            raise AiprodError(f"expected schema_version = \"{CAST_VERSION}\", got "
                              f"{data.get('schema_version')!r}", where="schema_version")

    cast = read_toml_model(path, Cast, "cast file", version)
    characters: dict[str, CastCharacter] = {}
    for name, ch in cast.characters.items():
        if _key(name) in characters:
            raise AiprodError("the same character twice", source=path,
                              where=f"characters.{name}")
        characters[_key(name)] = ch
    # complete() fills only what a hand-written file leaves out (a voice, a description)
    return complete(cast.model_copy(update={"characters": characters}), voices)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def cast_to_toml(cast: Cast) -> str:
    """The cast as a commented TOML file; unknown facts are left out (``tomllib`` reads it)."""
    out = [f"# aiprod-post cast file: edit freely; `render --cast` reads it.",
           f"# Facts come from the script lines listed under [characters.NAME.lines];",
           f"# a fact the script does not state is left out or says \"unknown\".",
           f"schema_version = {_toml_value(CAST_VERSION)}"]
    if cast.title:
        out.append(f"title = {_toml_value(cast.title)}")
    if cast.source:
        out.append(f"source = {_toml_value(cast.source)}")
    for name, ch in cast.characters.items():
        data = ch.model_dump(exclude_none=True)
        figure, lines = data.pop("figure"), data.pop("lines")
        out.append(f"\n[characters.{_toml_key(name)}]")
        for k, v in data.items():
            if v == [] or v == "" or (k == "lora_weight" and v == 1.0):
                continue
            out.append(f"{k} = {_toml_value(v)}")
        out.append(f"\n[characters.{_toml_key(name)}.lines]")
        out.extend(f"{k} = {_toml_value(v)}" for k, v in lines.items())
        out.append(f"\n[characters.{_toml_key(name)}.figure]")
        out.extend(f"{k} = {_toml_value(v)}" for k, v in figure.items())
    return "\n".join(out) + "\n"


def save_cast(cast: Cast, path: str | Path) -> Path:
    """Write the cast file atomically."""
    path = Path(path)
    write_atomic(path, cast_to_toml(cast).encode("utf-8"))
    return path
