"""Planner benchmark: parse and plan a generated 120-page screenplay.

Prints one JSON object: seconds (best of several runs), pages, scenes, shots.
Target (issue 2): under 1 second. Run: ``python benchmarks/bench_planner.py``.

``--pathological`` adds, for each ~1 MB hostile script of tests/test_fountain_fuzz.py
(issue 14), the CPU seconds to parse it and to plan it with the service's shot limit.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import random
import time
from pathlib import Path

from aiprod_post.errors import PlanError
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


def pathological() -> dict[str, dict[str, float | int | str]]:
    """CPU seconds to parse and to plan each hostile script the fuzz tests hold."""
    path = Path(__file__).resolve().parent.parent / "tests" / "test_fountain_fuzz.py"
    spec = importlib.util.spec_from_file_location("test_fountain_fuzz", path)
    assert spec is not None and spec.loader is not None
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    out: dict[str, dict[str, float | int | str]] = {}
    for make in fuzz.PATHOLOGICAL:
        text = make()
        t0 = time.process_time()
        script = parse(text)
        t1 = time.process_time()
        try:
            plan, _ = plan_script(script, max_shots=fuzz.SERVICE_MAX_SHOTS)
            outcome = f"{len(plan.shots())} shots"
        except PlanError:
            outcome = f"over {fuzz.SERVICE_MAX_SHOTS} shots"
        t2 = time.process_time()
        out[make.__name__] = {"bytes": len(text), "parse_seconds": round(t1 - t0, 3),
                              "plan_seconds": round(t2 - t1, 3), "plan": outcome}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pathological", action="store_true",
                        help="also time the ~1 MB hostile scripts of the fuzz tests")
    args = parser.parse_args()
    text = screenplay(120)
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        plan, _warnings = plan_script(parse(text))
        runs.append(time.perf_counter() - t0)
    result = {
        "benchmark": "planner",
        "pages": 120,
        "lines": text.count("\n"),
        "seconds": round(min(runs), 4),
        "seconds_median": round(sorted(runs)[len(runs) // 2], 4),
        "scenes": len(plan.scenes),
        "shots": len(plan.shots()),
        "target_seconds": 1.0,
        "python": platform.python_version(),
    }
    if args.pathological:
        result["pathological_cpu"] = pathological()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
