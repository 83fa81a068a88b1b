"""Planner benchmark: parse and plan a generated 120-page screenplay.

Prints one JSON object: seconds (best of several runs), pages, scenes, shots.
Target (issue 2): under 1 second. Run: ``python benchmarks/bench_planner.py``.
"""

from __future__ import annotations

import json
import platform
import random
import time

from aiprod_post.fountain import parse
from aiprod_post.planner import plan_script

LINES_PER_PAGE = 55
NAMES = ["NELL", "IVO", "JONAH", "MARA", "TOM", "ADA"]
PLACES = ["HARBOUR PIER", "TICKET BOOTH", "KITCHEN", "LIGHTHOUSE", "FERRY DECK", "STATION"]
TIMES = ["DAY", "NIGHT", "DUSK", "DAWN", "CONTINUOUS"]
WORDS = ("the rain falls on the harbour while gulls wheel over black water and a lamp "
         "swings in the wind as she counts coins into a tin").split()


def screenplay(pages: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    out = ["Title: Benchmark", "Author: generated", ""]
    lines = 0
    scene = 0
    while lines < pages * LINES_PER_PAGE:
        scene += 1
        ie = rng.choice(["INT.", "EXT."])
        out += [f"{ie} {rng.choice(PLACES)} - {rng.choice(TIMES)}", ""]
        for _ in range(rng.randint(4, 12)):
            if rng.random() < 0.35:
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40)))
                move = rng.choice(["", " We PUSH IN.", " The camera pans left.", ""])
                out += [text.capitalize() + "." + move, ""]
            else:
                name = rng.choice(NAMES)
                out.append(name + (" (V.O.)" if rng.random() < 0.05 else ""))
                if rng.random() < 0.2:
                    out.append("(quietly)")
                out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 25))) + ".")
                out.append("")
        if rng.random() < 0.3:
            out += ["CUT TO:", ""]
        lines = len(out)
    out += ["> THE END <", ""]
    return "\n".join(out)


def main() -> None:
    text = screenplay(120)
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        plan, _warnings = plan_script(parse(text))
        runs.append(time.perf_counter() - t0)
    print(json.dumps({
        "benchmark": "planner",
        "pages": 120,
        "lines": text.count("\n"),
        "seconds": round(min(runs), 4),
        "seconds_median": round(sorted(runs)[len(runs) // 2], 4),
        "scenes": len(plan.scenes),
        "shots": len(plan.shots()),
        "target_seconds": 1.0,
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
