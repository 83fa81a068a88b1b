"""Loudness benchmark: a 10-minute 48 kHz stereo programme, full BS.1770 analysis plus
normalisation with the true-peak limiter, and the TTS real-time factor.

Prints one JSON object. Target (issue 3): analysis + normalisation at >= 100x real time
on one core (``measure_and_normalize_x_realtime``, per target). Run pinned to one core: ``taskset -c 0 python benchmarks/bench_loudness.py``.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from aiprod_post.audio.loudness import measure
from aiprod_post.audio.mix import Bed, DialogueClip, mix_stems, procedural_bed
from aiprod_post.audio.normalize import TARGETS, normalize
from aiprod_post.audio.tts import EspeakEngine, assign_voices

FS = 48000
MINUTES = 10


def programme(engine: EspeakEngine) -> tuple[np.ndarray, float]:
    """Dialogue over music and ambience, as the pipeline mixes it."""
    voices = assign_voices(["NELL", "IVO"])
    lines = ["Ferry's gone. Left at six.", "It says seven on the board.",
             "My brother runs a boat. He owes me.", "Why help me?",
             "Because you ran. Nobody runs for a ferry unless something is waiting."]
    speech = []
    t0 = time.perf_counter()
    for i, text in enumerate(lines):
        speech.append(engine.synthesize(text, voices["NELL" if i % 2 else "IVO"]))
    tts_seconds = time.perf_counter() - t0
    spoken = sum(s.duration for s in speech)
    n = MINUTES * 60 * FS
    clips = []
    pos, i = FS, 0
    while pos < n - 5 * FS:
        s = speech[i % len(speech)]
        clips.append(DialogueClip(pos, s.samples))
        pos += len(s.samples) + int(FS * (0.4 + (i * 7919 % 13) / 10))
        i += 1
    music = procedural_bed("music", 64, seed=1, light="night")
    amb = procedural_bed("ambience", 20, seed=2, exterior=True)
    stems = mix_stems(clips, [Bed(0, n, music)], [Bed(0, n, amb)], n)
    return stems.mix.astype(np.float64), tts_seconds / spoken


def main() -> None:
    engine = EspeakEngine()
    x, tts_rtf = programme(engine)
    seconds = x.shape[0] / FS
    t0 = time.perf_counter()
    m = measure(x, FS)
    t_measure = time.perf_counter() - t0
    results = {}
    for name in ("ebu-r128", "streaming"):
        t0 = time.perf_counter()
        y, after, _ = normalize(x, FS, TARGETS[name])
        results[name] = {"seconds": round(time.perf_counter() - t0, 3),
                         "integrated": round(after.integrated, 3),
                         "true_peak": round(after.true_peak, 3)}
    print(json.dumps({
        "benchmark": "loudness",
        "programme_seconds": seconds,
        "channels": 2,
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "input": {"integrated": round(m.integrated, 2), "lra": round(m.loudness_range, 2),
                  "true_peak": round(m.true_peak, 2)},
        "measure_seconds": round(t_measure, 3),
        "measure_x_realtime": round(seconds / t_measure, 1),
        "normalize": results,
        "normalize_x_realtime": {k: round(seconds / v["seconds"], 1) for k, v in results.items()},
        # the figure: a full measurement of the input, then normalisation (which
        # analyses the input itself and measures its output again)
        "measure_and_normalize_x_realtime": {
            k: round(seconds / (t_measure + v["seconds"]), 1) for k, v in results.items()},
        "target_x_realtime": 100,
        "tts_real_time_factor": round(tts_rtf, 4),
    }))


if __name__ == "__main__":
    main()
