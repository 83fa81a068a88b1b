"""Cast reading accuracy on the hand-labelled test set (tests/fixtures/cast).

Eleven short scripts written for the tests (our own text, 81 speaking characters), each
character labelled by hand with gender, age band and main wardrobe colour as a reader
can tell them from the text (``labels.toml`` says how). Eight scripts (61 characters) were
used while the rules were written; three (``held_out_*``, 20 characters) were written after
the rules were frozen and never used to change them, so their figures are the honest ones. Prints one JSON
object: accuracy per fact for each part, the same where the script states the fact, per
script, every miss, and the seconds the reading took.

Run: ``python benchmarks/bench_cast.py``.
"""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

from aiprod_post.cast import Cast, read_cast
from aiprod_post.fountain import parse_file

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "cast"


def predicted(cast: Cast, name: str) -> dict[str, str]:
    ch = cast.characters[name]
    return {"gender": ch.gender, "age_band": ch.age_band,
            "colour": ch.colours[0] if ch.wardrobe and ch.colours and
            ch.wardrobe[0].startswith(ch.colours[0]) else ""}


def _score(labels: dict, casts: dict[str, Cast]) -> dict:
    facts = ("gender", "age_band", "colour")
    right = {f: 0 for f in facts}
    stated = {f: [0, 0] for f in facts}  # right, total where the label is known
    per_script: dict[str, dict] = {}
    misses = []
    total = 0
    for stem, people in labels.items():
        cast = casts[stem]
        ok = {f: 0 for f in facts}
        for name, label in people.items():
            total += 1
            got = predicted(cast, name) if name in cast.characters else \
                {f: "(not found)" for f in facts}
            for f in facts:
                want = label[f]
                good = got[f] in want if isinstance(want, list) else got[f] == want
                known = want not in ("unknown", "", ["unknown"])
                right[f] += good
                ok[f] += good
                if known:
                    stated[f][0] += good
                    stated[f][1] += 1
                if not good:
                    misses.append({"script": stem, "character": name, "fact": f,
                                   "label": want, "read": got[f]})
        per_script[stem] = {"characters": len(people),
                            **{f: round(ok[f] / len(people), 3) for f in facts}}
    return {
        "scripts": len(labels),
        "characters": total,
        "accuracy": {f: round(right[f] / total, 3) for f in facts},
        "accuracy_where_stated": {f: round(r / n, 3) if n else None
                                  for f, (r, n) in stated.items()},
        "stated": {f: n for f, (_r, n) in stated.items()},
        "per_script": per_script,
        "misses": misses,
    }


def evaluate(folder: Path = FIXTURES) -> dict:
    labels = tomllib.loads((folder / "labels.toml").read_text())
    read_cast(parse_file(folder / f"{next(iter(labels))}.fountain"))  # imports, untimed
    t0 = time.perf_counter()
    casts = {stem: read_cast(parse_file(folder / f"{stem}.fountain")) for stem in labels}
    seconds = time.perf_counter() - t0
    held = {k: v for k, v in labels.items() if k.startswith("held_out_")}
    dev = {k: v for k, v in labels.items() if k not in held}
    return {"benchmark": "cast", "all": _score(labels, casts), "held_out": _score(held, casts),
            "development": _score(dev, casts), "seconds": round(seconds, 4)}


if __name__ == "__main__":
    print(json.dumps(evaluate(), indent=2))
