"""Estimates before a run (issue 22): per stage and in total, learnt from this machine's
finished renders; GPU engines from their benchmark figures with GPU-hours and a cost."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from aiprod_post.cli import main
from aiprod_post.estimate import GPU_FIGURES, estimate_work, history_path, read_history

CALIBRATION = """Title: Calibration

EXT. QUAY - DAY

Nets dry on the rails. MARA mends one.

MARA
Wind's turning.

TOMAS
Then we go at dawn.

INT. NET LOFT - NIGHT

A lamp swings.

MARA
(softly)
Dawn, then. Bring the lamp.
"""


def _render(source, out, size="160x96"):
    """A render as a user runs one: its own process (imports and compiled kernels
    included), timed from outside; AIPROD_CACHE comes from the environment."""
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "aiprod_post.cli", "render", str(source), "-o",
                        str(out), "--size", size, "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return time.monotonic() - t0


def _estimate(source, *flags):
    r = CliRunner().invoke(main, ["estimate", str(source), "--json", *flags])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_the_estimate_learns_from_other_films_and_predicts_the_example(tmp_path, monkeypatch,
                                                                      example_path):
    """Rates learnt from a short, different script predict the example's render time on
    this machine within 30 %. The short script is rendered before and after the example
    (whose own render teaches nothing: it records into another cache), so a machine whose
    load drifts during the test is measured on both sides of it."""
    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    script = tmp_path / "calibration.fountain"
    script.write_text(CALIBRATION)
    before = _estimate(example_path, "--size", "160x96")
    assert set(before["from"].values()) == {"reference table"}
    _render(script, tmp_path / "calibration1")
    history = read_history()
    assert len(history) == 1 and history_path().parent == tmp_path / "cache"
    assert {"speech", "generation", "mix", "masters"} <= set(history[0]["rates"])
    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "elsewhere"))
    measured = _render(example_path, tmp_path / "example")
    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    _render(script, tmp_path / "calibration2")
    assert len(read_history()) == 2
    after = _estimate(example_path, "--size", "160x96")
    assert after["from"]["generation"] == "2 earlier render(s)"
    assert after["total_seconds"] == pytest.approx(measured, rel=0.30), (after, measured)


def test_a_cached_rerun_teaches_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    script = tmp_path / "calibration.fountain"
    script.write_text(CALIBRATION)
    _render(script, tmp_path / "out")
    _render(script, tmp_path / "out")  # everything from the stage cache
    history = read_history()
    assert len(history) in (1, 2)  # the rerun adds only what it measured, if anything
    assert "generation" in history[0]["rates"]
    for later in history[1:]:
        assert not {"speech", "generation", "mix", "masters"} & set(later["rates"])


def test_gpu_engines_estimate_from_their_benchmark_with_a_cost(example_path):
    fig = GPU_FIGURES["ltx"]
    r = CliRunner().invoke(main, ["estimate", str(example_path), "--engine", "ltx", "--size",
                                  f"{fig['width']}x{fig['height']}", "--price-per-gpu-hour",
                                  "4", "--json"])
    assert r.exit_code == 0, r.output
    est = json.loads(r.output)
    per_frame = fig["seconds_per_shot"]["distilled"] / fig["frames"]
    # every generated frame (handles included) at the benchmark's size
    from aiprod_post.planner import plan_source

    plan, _ = plan_source(example_path)
    frames = sum(s.duration + 24 for _, s in plan.shots())
    assert est["stages"]["generation"] == pytest.approx(per_frame * frames, rel=0.01)
    assert est["gpu"]["gpu"] == fig["gpu"]
    assert est["gpu"]["cost"] == pytest.approx(est["gpu"]["gpu_hours"] * 4, abs=0.01)
    dev = estimate_work_for(example_path, "dev")
    assert dev > est["stages"]["generation"] * 5  # 40 steps with guidance


def estimate_work_for(example_path, preset):
    from aiprod_post.estimate import work_of
    from aiprod_post.planner import plan_source

    plan, _ = plan_source(example_path)
    fig = GPU_FIGURES["ltx"]
    work = work_of(plan, ["web"], fig["width"], fig["height"])
    return estimate_work(work, "ltx", history=[], preset=preset)["stages"]["generation"]


def test_bad_input_is_named(tmp_path, example_path):
    r = CliRunner().invoke(main, ["estimate", str(example_path), "--profile", "cinema"])
    assert r.exit_code == 2 and "--profile" in r.output and "cinema" in r.output
    r = CliRunner().invoke(main, ["estimate", str(tmp_path / "none.fountain")])
    assert r.exit_code == 2 and "none.fountain" in r.output


def test_a_gpu_engine_without_benchmark_figures_says_so(example_path, tmp_path, monkeypatch):
    """ltx2 has H200 figures for its distilled preset only: dev is unknown (with no renders
    of it on record: other tests' ltx2 renders write into the session's cache)."""
    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    flags = ["--engine", "ltx2", "--preset", "dev"]
    r = CliRunner().invoke(main, ["estimate", str(example_path), *flags, "--json"])
    assert r.exit_code == 0, r.output
    est = json.loads(r.output)
    assert est["stages"]["generation"] is None and est["complete"] is False
    assert "no GPU benchmark figures for ltx2 (dev)" in est["from"]["generation"]
    r = CliRunner().invoke(main, ["estimate", str(example_path), *flags])
    assert "? s" in r.output and "without the stages marked ?" in r.output


def test_ltx2_estimates_from_its_film_benchmark_with_its_warm_up(example_path):
    """ltx2 (distilled) from its whole-film H200 figures: seconds per generated frame at
    the benchmark's size, plus the warm-up that compiles the film's shapes once."""
    from aiprod_post.estimate import work_of
    from aiprod_post.planner import plan_source

    fig = GPU_FIGURES["ltx2"]
    size = f"{fig['width']}x{fig['height']}"
    r = CliRunner().invoke(main, ["estimate", str(example_path), "--engine", "ltx2", "--size",
                                  size, "--price-per-gpu-hour", "3", "--json"])
    assert r.exit_code == 0, r.output
    est = json.loads(r.output)
    plan, _ = plan_source(example_path)
    frames = sum(s.duration + 24 for _, s in plan.shots())
    expected = fig["seconds_per_shot"]["distilled"] / fig["frames"] * frames \
        + fig["warm_up_seconds"]["distilled"]
    assert est["stages"]["generation"] == pytest.approx(expected, rel=0.01)
    assert est["complete"] and "bench_ltx2_film.py on NVIDIA H200" in est["from"]["generation"]
    assert est["gpu"]["gpu"] == "NVIDIA H200"
    assert est["gpu"]["cost"] == pytest.approx(est["gpu"]["gpu_hours"] * 3, abs=0.01)
    # half the pixels: half the per-frame time, the same warm-up
    work = work_of(plan, ["web"], fig["width"] // 2, fig["height"])
    half = estimate_work(work, "ltx2", history=[])["stages"]["generation"]
    assert half - fig["warm_up_seconds"]["distilled"] == pytest.approx(
        (expected - fig["warm_up_seconds"]["distilled"]) / 2, rel=0.01)
