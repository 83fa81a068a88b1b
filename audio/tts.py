"""Text to speech with word and phoneme timings.

One interface, :class:`SpeechEngine`, and the offline default engine
:class:`EspeakEngine`: libespeak-ng (shipped, with its data, by the
``espeakng-loader`` package, so nothing is installed system-wide) driven
through ctypes. Word and phoneme times come from the synthesiser's own
events, not from an aligner. Output is mono float32 at 48 kHz.

>>> speech = EspeakEngine().synthesize("Ferry's gone.", Voice("en", "m3"))
>>> speech.sample_rate, [w.text for w in speech.words]
(48000, ["Ferry's", 'gone'])
"""

from __future__ import annotations

import _ctypes
import ctypes
import os
import re
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Protocol

import numpy as np
from scipy import signal

from aiprod_post.errors import MediaError

__all__ = [
    "Voice",
    "Speaker",
    "Delivery",
    "TimedUnit",
    "Speech",
    "SpeechEngine",
    "EspeakEngine",
    "delivery_for",
    "assign_voices",
    "cast_voices",
    "voice_settings",
    "speakable_text",
    "OUTPUT_RATE",
]

OUTPUT_RATE = 48000
_HEADROOM_DB = 8.0


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: language, variant (``m1``–``m7``, ``f1``–``f5``, ``whisper`` …),
    pitch (0–100), pitch range (0–100) and rate (words per minute)."""

    language: str = "en-us"
    variant: str = "m3"
    pitch: int = 50
    range: int = 50
    rate: int = 165
    #: a recording of the voice, for engines that clone (coqui with YourTTS or XTTS)
    reference: str | None = None
    #: a multi-speaker model's speaker (coqui): chosen for the cast by
    #: :meth:`audio.coqui.CoquiEngine.cast_speakers`; None: one picked from the voice
    speaker: str | None = None

    @property
    def name(self) -> str:
        return f"{self.language}+{self.variant}" if self.variant else self.language


@dataclass(frozen=True)
class Delivery:
    """How a parenthetical changes a line: gain and rate multipliers, pauses in seconds."""

    gain_db: float = 0.0
    rate: float = 1.0
    pitch_offset: int = 0
    whisper: bool = False
    pause_before: float = 0.0
    pause_after: float = 0.0


_DELIVERIES: list[tuple[re.Pattern[str], Delivery]] = [
    (re.compile(r"whisper", re.I), Delivery(gain_db=-10.0, rate=0.85, whisper=True)),
    (re.compile(r"quiet|softly|under (?:her|his|their) breath|murmur", re.I),
     Delivery(gain_db=-6.0, rate=0.9, pitch_offset=-4)),
    (re.compile(r"shout|yell|scream|over the (?:engine|noise|music|wind)|calling", re.I),
     Delivery(gain_db=6.0, rate=1.12, pitch_offset=10)),
    (re.compile(r"\b(?:beat|pause|a moment)\b", re.I), Delivery(pause_before=0.6)),
]


def delivery_for(parenthetical: str | None) -> Delivery:
    """The delivery a parenthetical asks for (the first rule that matches), else neutral.

    >>> delivery_for("(whispering)").whisper, delivery_for("(beat)").pause_before
    (True, 0.6)
    """
    if not parenthetical:
        return Delivery()
    for pattern, delivery in _DELIVERIES:
        if pattern.search(parenthetical):
            return delivery
    return Delivery()


@dataclass(frozen=True)
class TimedUnit:
    """A word or phoneme and where it sits in the audio, in seconds."""

    text: str
    start: float
    end: float


@dataclass
class Speech:
    samples: np.ndarray  # mono float32
    sample_rate: int
    words: list[TimedUnit] = field(default_factory=list)
    phonemes: list[TimedUnit] = field(default_factory=list)
    voice: Voice | None = None
    text: str = ""

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def timings(self) -> dict:
        """Word and phoneme timings as plain JSON-ready data."""
        return {
            "text": self.text,
            "voice": asdict(self.voice) if self.voice else None,
            "sample_rate": self.sample_rate,
            "duration": round(self.duration, 4),
            "words": [asdict(w) for w in self.words],
            "phonemes": [asdict(p) for p in self.phonemes],
        }


class SpeechEngine(Protocol):
    name: str

    def synthesize(self, text: str, voice: Voice, delivery: Delivery | None = None) -> Speech:
        ...


# ----------------------------------------------------------------- text

_ABBREVIATIONS = {
    "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miz", "Dr.": "Doctor", "St.": "Saint",
    "Jr.": "Junior", "Sr.": "Senior", "Capt.": "Captain", "Lt.": "Lieutenant",
    "Sgt.": "Sergeant", "Prof.": "Professor", "Gen.": "General", "Det.": "Detective",
    "Ave.": "Avenue", "Rd.": "Road", "vs.": "versus", "etc.": "et cetera", "approx.": "approximately",
    "OK": "okay", "TV": "T V", "FBI": "F B I", "CIA": "C I A",
}
_ABBREV_RE = re.compile(r"(?<![\w.])(" + "|".join(re.escape(k) for k in _ABBREVIATIONS) + r")(?!\w)")
_NUMBER_SIGN = re.compile(r"\bNo\.\s*(\d)")
_MONEY = re.compile(r"\$(\d+)(?:\.(\d\d))?")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_CLOCK = re.compile(r"\b(\d{1,2}):(\d{2})\b")


def speakable_text(text: str) -> str:
    """Spell out what a synthesiser would misread: abbreviations, money, percent, clock times.

    Plain numbers are left to espeak-ng, which reads them as words itself.

    >>> speakable_text("Dr. Ames owes $5.50, 20% by 7:05.")
    'Doctor Ames owes 5 dollars 50 cents, 20 percent by 7 oh 5.'
    """
    text = _ABBREV_RE.sub(lambda m: _ABBREVIATIONS[m.group(1)], text)
    text = _NUMBER_SIGN.sub(r"Number \1", text)  # "No. 5", but "No." alone stays "no"

    def money(m: re.Match[str]) -> str:
        dollars = f"{m.group(1)} dollar{'s' * (m.group(1) != '1')}"
        if m.group(2) and m.group(2) != "00":
            return f"{dollars} {int(m.group(2))} cent{'s' * (m.group(2) != '01')}"
        return dollars

    text = _MONEY.sub(money, text)
    text = _PERCENT.sub(lambda m: f"{m.group(1)} percent", text)

    def clock(m: re.Match[str]) -> str:
        h, mm = m.group(1), m.group(2)
        if mm == "00":
            return f"{h} o'clock"
        return f"{h} oh {int(mm)}" if mm.startswith("0") else f"{h} {mm}"

    return _CLOCK.sub(clock, text)


# ----------------------------------------------------------------- voices


@dataclass(frozen=True)
class Speaker:
    """What the script says about whoever speaks: ``gender`` (``female``, ``male`` or
    ``unknown``) and ``age`` in years (None when the script does not say)."""

    gender: str = "unknown"
    age: int | None = None


# espeak-ng variants (voices/!v) by who speaks, in order of preference: the f* and m*
# formant sets, then the named female and male variants; "grandma" and "grandpa" are
# espeak-ng's older voices, so they come first for older speakers.
_VARIANTS = {
    "female": ["f2", "f4", "f5", "f1", "f3", "steph", "belinda", "Andrea", "Alicia", "linda"],
    "female-older": ["grandma", "f1", "f4", "aunty", "f2", "f3", "f5", "steph"],
    "male": ["m3", "m1", "m7", "m2", "m6", "m5", "m4", "m8"],
    "male-older": ["grandpa", "m2", "m6", "m3", "m1", "m7", "m5", "m4"],
    # children's voices are the lighter formant sets pitched up
    "child": ["f5", "f2", "steph", "f4", "belinda", "f3"],
    # nothing said: alternate, so neither is the default for everyone
    "unknown": ["m5", "f3", "m4", "f1", "m8", "f5", "m6", "f4"],
}
# accents only widen the bank once a pool's variants are all taken
_ACCENTS = ["en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-us-nyc", "en-029",
            "en-gb-x-gbclan"]


def _pool(speaker: Speaker) -> str:
    if speaker.age is not None and speaker.age < 13:
        return "child"
    if speaker.gender in ("female", "male"):
        older = speaker.age is not None and speaker.age >= 55
        return speaker.gender + ("-older" if older else "")
    return "unknown"


def voice_settings(speaker: Speaker) -> tuple[int, int]:
    """(pitch 0-100, rate in words a minute) for an age: children high and quick, older
    speakers lower and slower; 50 and 165 when the age is not known.

    >>> voice_settings(Speaker("female", 8)), voice_settings(Speaker("male", 70))
    ((80, 175), (36, 145))
    """
    age = speaker.age
    if age is None:
        return 50, 165
    if age < 13:
        return 80, 175
    if age < 20:
        return 62, 172
    if age < 35:
        return 54, 168
    if age < 55:
        return 46, 160
    return (40 if speaker.gender == "female" else 36), 145


def assign_voices(names: list[str], overrides: dict[str, Voice] | None = None,
                  speakers: dict[str, Speaker] | None = None) -> dict[str, Voice]:
    """A voice per character, in cast order, no two alike (language and variant).

    A speaker's gender picks the espeak-ng variant pool (female, male, child, older),
    their age the pitch and rate. Voices are handed out in cast order, so a
    character keeps their voice when others are added after them. ``overrides``
    (from the cast or project file) win and are never handed to anyone else; two
    characters share a voice only when the overrides say so.

    >>> v = assign_voices(["NELL", "IVO"], speakers={"NELL": Speaker("female", 65),
    ...                                              "IVO": Speaker("male", 20)})
    >>> v["NELL"].name, v["IVO"].name, v["IVO"].pitch
    ('en+grandma', 'en+m3', 54)
    """
    overrides = {k.upper(): v for k, v in (overrides or {}).items()}
    speakers = {k.upper(): v for k, v in (speakers or {}).items()}
    taken = {(v.language, v.variant) for v in overrides.values()}
    out: dict[str, Voice] = {}
    for name in names:
        if name.upper() in overrides:
            out[name] = overrides[name.upper()]
            continue
        speaker = speakers.get(name.upper(), Speaker())
        pool = _VARIANTS[_pool(speaker)]
        choice = next(((lang, var) for lang in _ACCENTS for var in pool
                       if (lang, var) not in taken), None)
        if choice is None:  # every accent of the pool taken: any free voice at all
            choice = next(((lang, var) for lang in _ACCENTS for p in _VARIANTS.values()
                           for var in p if (lang, var) not in taken), (_ACCENTS[0], pool[0]))
        taken.add(choice)
        pitch, rate = voice_settings(speaker)
        out[name] = Voice(choice[0], choice[1], pitch=pitch, range=50, rate=rate)
    return out


def cast_voices(names: list[str], given: dict[str, tuple[str, int | None, int | None]],
                people: dict[str, tuple[str, int | None]]) -> dict[str, tuple[str, int, int]]:
    """:func:`assign_voices` for a cast in plain data (``aiprod_post.cast`` hands it in).

    ``given``: name → (``language+variant``, pitch, rate) the cast file fixes (pitch or rate
    None: by age); ``people``: name → (gender, age). Returns name → (voice, pitch, rate).

    >>> cast_voices(["NELL", "IVO"], {"IVO": ("en+m3", None, 150)},
    ...             {"NELL": ("female", 65), "IVO": ("male", 20)})
    {'NELL': ('en+grandma', 40, 145), 'IVO': ('en+m3', 54, 150)}
    """
    speakers = {k: Speaker(*people.get(k, ("unknown", None))) for k in names}
    overrides = {}
    for name, (voice, pitch, rate) in given.items():
        language, _, variant = voice.partition("+")
        by_age = voice_settings(speakers.get(name, Speaker()))
        overrides[name] = Voice(language, variant, by_age[0] if pitch is None else pitch, 50,
                                by_age[1] if rate is None else rate)
    chosen = assign_voices(names, overrides, speakers)
    return {k: (v.name, v.pitch, v.rate) for k, v in chosen.items()}


# ----------------------------------------------------------------- espeak-ng


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.POINTER(_Event))
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_END, _EVENT_PHONEME = 0, 1, 5, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS, _INITIALIZE_PHONEME_IPA, _INITIALIZE_DONT_EXIT = 0x1, 0x2, 0x8000
_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4

_LOCK = threading.Lock()  # libespeak-ng keeps global state: one synthesis at a time
_LIB: tuple[ctypes.CDLL, int] | None = None
_CALLBACK = None


_LIBC = ctypes.CDLL(None)


def _load_private_copy(path: str) -> ctypes.CDLL:
    """Load a private copy of the shared library, so it can be unloaded and loaded again
    (a path of its own is a new instance). The copy is deleted as soon as it is loaded
    (the mapping stays): nothing is left in the temporary folder, even by a killed process."""
    folder = tempfile.mkdtemp(prefix="aiprod-espeak-")
    try:
        copy = os.path.join(folder, os.path.basename(path))
        shutil.copyfile(path, copy)
        return ctypes.CDLL(copy)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _library(fresh: bool = False) -> tuple[ctypes.CDLL, int]:
    """The loaded, initialised library.

    ``fresh`` loads a new instance. libespeak-ng keeps static state from one utterance to
    the next (pitch flutter and the like), which espeak_Terminate does not reset: the same
    line comes out a few samples different after other lines. Unloading the library and
    loading it again gives every line the same starting state, so the same input always
    gives the same samples. It costs a few milliseconds a line.
    """
    global _LIB
    if _LIB is not None and not fresh:
        return _LIB
    if _LIB is not None:
        old = _LIB[0]
        old.espeak_Terminate()
        _LIB = None
        _ctypes.dlclose(old._handle)
    try:
        import espeakng_loader
    except ImportError as exc:
        raise MediaError("the espeak TTS engine needs the 'espeakng-loader' package "
                         "(pip install espeakng-loader)") from exc
    lib = _load_private_copy(espeakng_loader.get_library_path())
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint),
                                 ctypes.c_void_p]
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    data_dir = espeakng_loader.get_data_path()
    # espeak_Initialize wants the folder that *contains* espeak-ng-data
    parent = os.path.dirname(data_dir).encode()
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, parent,
                                 _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA
                                 | _INITIALIZE_DONT_EXIT)
    if rate <= 0:
        raise MediaError(f"libespeak-ng failed to initialise with data in {data_dir}")
    _LIB = (lib, rate)
    return _LIB


class EspeakEngine:
    """espeak-ng through ctypes, with word and phoneme events."""

    name = "espeak"

    def synthesize(self, text: str, voice: Voice, delivery: Delivery | None = None) -> Speech:
        delivery = delivery or Delivery()
        spoken = speakable_text(" ".join(text.split()))
        if not spoken.strip():
            raise MediaError("nothing to speak: the line is empty once markup is removed")
        chunks: list[np.ndarray] = []
        events: list[tuple[int, int, int, int, str]] = []

        def on_audio(wav, n, ev) -> int:
            if wav and n > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            i = 0
            while ev[i].type != _EVENT_LIST_TERMINATED:
                e = ev[i]
                ident = e.id.string.decode("utf-8", "replace") if e.type == _EVENT_PHONEME else ""
                events.append((e.type, e.text_position, e.length, e.audio_position, ident))
                i += 1
            return 0

        callback = _SYNTH_CALLBACK(on_audio)
        variant = "whisper" if delivery.whisper else voice.variant
        name = f"{voice.language}+{variant}" if variant else voice.language
        data = spoken.encode("utf-8") + b"\0"
        with _LOCK:
            lib, rate = _library(fresh=True)
            # breathy and whispering voices draw noise from a generator seeded from the
            # clock at start-up (and from libc's rand()): seed both for repeatable output
            lib.espeak_ng_SetRandSeed(0)
            _LIBC.srand(0)
            global _CALLBACK
            _CALLBACK = callback  # the library keeps the pointer: keep the object alive
            lib.espeak_SetSynthCallback(callback)
            if lib.espeak_SetVoiceByName(name.encode()) != 0:
                raise MediaError(f"unknown espeak-ng voice {name!r}: expected a language such as "
                                 "en (British), en-us or en-gb-scotland, optionally +variant "
                                 "(m1-m7, f1-f5)")
            lib.espeak_SetParameter(_RATE, int(round(voice.rate * delivery.rate)), 0)
            lib.espeak_SetParameter(_PITCH, max(0, min(100, voice.pitch + delivery.pitch_offset)),
                                    0)
            lib.espeak_SetParameter(_RANGE, voice.range, 0)
            lib.espeak_SetParameter(_VOLUME, 100, 0)
            err = lib.espeak_Synth(data, len(data), 0, 1, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
        if err != 0:
            raise MediaError(f"espeak-ng failed to synthesise the line (error {err})")

        raw = (np.concatenate(chunks).astype(np.float32) / 32768.0) if chunks else \
            np.zeros(0, np.float32)
        ratio = Fraction(OUTPUT_RATE, rate)
        audio = signal.resample_poly(raw, ratio.numerator, ratio.denominator).astype(np.float32)
        # espeak-ng peaks near full scale; 8 dB of headroom keeps shouted lines unclipped
        audio *= np.float32(10 ** ((delivery.gain_db - _HEADROOM_DB) / 20))
        lead = int(round(delivery.pause_before * OUTPUT_RATE))
        tail = int(round(delivery.pause_after * OUTPUT_RATE))
        audio = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(tail, np.float32)])
        offset = delivery.pause_before
        end_of_speech = offset + len(raw) / rate
        ends = [offset + e[3] / 1000 for e in events if e[0] == _EVENT_END]
        if ends:
            end_of_speech = min(end_of_speech, max(ends))

        text_chars = data[:-1].decode("utf-8")
        voiced = _voiced_until(audio)
        words: list[TimedUnit] = []
        phonemes: list[TimedUnit] = []
        word_events = [e for e in events if e[0] == _EVENT_WORD]
        phone_events = [e for e in events if e[0] == _EVENT_PHONEME and e[4].strip()]
        spans: list[list] = []  # [first char, last char, start s, end s]
        for k, (_t, pos, length, ms, _i) in enumerate(word_events):
            start = offset + ms / 1000
            end = offset + word_events[k + 1][3] / 1000 if k + 1 < len(word_events) \
                else end_of_speech
            first, last = pos - 1, pos - 1 + length  # espeak counts characters from 1
            if spans and first < spans[-1][1]:
                spans[-1][1], spans[-1][3] = max(last, spans[-1][1]), end  # "42" is two words
            else:
                spans.append([first, last, start, end])
        words = _words_of(text_chars, spans, voiced)
        for k, (_t, _p, _l, ms, ident) in enumerate(phone_events):
            start = offset + ms / 1000
            end = offset + phone_events[k + 1][3] / 1000 if k + 1 < len(phone_events) \
                else end_of_speech
            if end > start:
                phonemes.append(TimedUnit(ident, round(start, 4), round(voiced(start, end), 4)))
        return Speech(audio, OUTPUT_RATE, words, phonemes, voice, spoken)


_TOKEN = re.compile(r"\S+")
_EDGE_PUNCT = " ,.;:!?\"“”‘’()[]-–—…"


def _words_of(text: str, spans: list[list], voiced) -> list[TimedUnit]:
    """Every word of ``text`` with a time. espeak-ng reports a word event for most words
    but folds some unstressed ones (``the``, ``a``) into a neighbour; those share the
    time of the word they were folded into, split by length."""
    tokens = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(text)]
    timed: dict[int, tuple[float, float]] = {}
    for first, _last, start, end in spans:
        for k, (a, b, _w) in enumerate(tokens):
            if a <= first < b and k not in timed:
                timed[k] = (start, end)
                break
    if not timed:
        return []
    out: list[TimedUnit] = []
    k = 0
    while k < len(tokens):
        if k not in timed:
            k += 1  # before the first event: skipped (nothing was heard yet)
            continue
        group = [k]
        j = k + 1
        while j < len(tokens) and j not in timed:
            group.append(j)
            j += 1
        start, end = timed[k]
        weights = [max(1, len(tokens[g][2].strip(_EDGE_PUNCT))) for g in group]
        t = start
        for g, w in zip(group, weights):
            d = (end - start) * w / sum(weights)
            word = tokens[g][2].strip(_EDGE_PUNCT)
            if word:
                out.append(TimedUnit(word, round(t, 4), round(voiced(t, t + d), 4)))
            t += d
        k = j
    return out


def _voiced_until(audio: np.ndarray, hop: float = 0.005, floor_db: float = -45.0):
    """A function ``(start, end) -> end'`` that pulls ``end`` back to the last moment
    of sound in ``[start, end]``, so a word before a pause does not own the pause."""
    n = int(OUTPUT_RATE * hop)
    frames = len(audio) // n
    if frames == 0:
        return lambda start, end: end
    rms = np.sqrt(np.mean(audio[: frames * n].reshape(frames, n).astype(np.float64) ** 2, axis=1))
    loud = rms > (rms.max() * 10 ** (floor_db / 20))

    def trim(start: float, end: float) -> float:
        a, b = int(start / hop), min(frames, int(np.ceil(end / hop)))
        idx = np.flatnonzero(loud[a:b])
        if idx.size == 0:
            return end
        return float(max(start + hop, min(end, (a + idx[-1] + 1) * hop)))

    return trim


ENGINES: dict[str, type] = {"espeak": EspeakEngine}


def engine_by_name(name: str, **settings) -> SpeechEngine:
    """``espeak`` (no settings) or ``coqui`` (``model``: a local folder, ``device``)."""
    if name == "coqui":
        from .coqui import CoquiEngine

        return CoquiEngine(**settings)
    if name not in ENGINES:
        raise MediaError(f"unknown TTS engine {name!r}: expected espeak or coqui")
    return ENGINES[name]()
