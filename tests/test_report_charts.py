"""Pictures in report.html (issue 22): loudness over time per delivery against its target,
the stems' levels, a waveform strip by shot, stage times as bars. Inline SVG, no network,
no JavaScript; the figures are read back from the SVG coordinates and compared with a
loudness computed here from BS.1770-4's own filter coefficients, and a headless Chromium
screenshot shows the charts drawn."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile
from scipy import signal

from aiprod_post.audio.loudness import loudness_curve
from aiprod_post.audio.stream import ArraySource
from aiprod_post.pipeline import RenderOptions, render

SCRIPT = """Title: Charts

EXT. PIER - DUSK

Gulls over the water. NELL waits.

NELL
The ferry's gone. We wait for the morning boat, then.

IVO
Tonight?

INT. BOOTH - NIGHT

Rain on the glass.

NELL
(quietly)
Drink up.
"""

# ITU-R BS.1770-4, table 1 and 2: the K-weighting's two biquads at 48 kHz
_SHELF = ([1.53512485958697, -2.69169618940638, 1.19839281085285],
          [1.0, -1.69065929318241, 0.73248077421585])
_HIGHPASS = ([1.0, -2.0, 1.0], [1.0, -1.99004745483398, 0.99007225036621])


def _reference_short_term(x: np.ndarray, end_segment: int) -> float:
    """Short-term loudness (3 s, channel gains 1) of the window ending with 100 ms segment
    ``end_segment`` (inclusive), straight from the standard's formula."""
    y = signal.lfilter(*_HIGHPASS, signal.lfilter(*_SHELF, x, axis=0), axis=0)
    a, b = (end_segment - 29) * 4800, (end_segment + 1) * 4800
    power = (y[a:b] ** 2).mean(axis=0).sum()
    return -0.691 + 10 * np.log10(power)


def test_the_curve_of_a_sine_step_is_at_the_levels_the_standard_gives():
    fs = 48000
    t = np.arange(fs * 12) / fs
    x = (np.where(t < 6, 0.5, 0.05) * np.sin(2 * np.pi * 997 * t))[:, None]
    c = loudness_curve(ArraySource(np.repeat(x, 2, axis=1)), fs, points=10_000)
    assert c.step == pytest.approx(0.1)
    stereo = np.repeat(x, 2, axis=1)
    for seg in (40, 59, 100, 119):
        assert c.short_term[seg] == pytest.approx(_reference_short_term(stereo, seg), abs=0.01)
    # a full-scale 997 Hz sine reads -3.01 LUFS per channel: two channels at -6 dBFS, -6.0
    assert c.momentary[30] == pytest.approx(-3.01 + 3.01 - 6.02, abs=0.05)
    assert c.envelope[:, 1].max() == pytest.approx(0.5, abs=1e-3)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("charts") / "out"
    script = out.parent / "charts.fountain"
    script.write_text(SCRIPT)
    result = render(script, out, RenderOptions(width=160, height=96, quiet=True))
    assert result.exit_code == 0
    return out


def _svgs(report: str) -> dict[str, ET.Element]:
    out = {}
    for m in re.finditer(r"<svg\b.*?</svg>", report, re.S):
        el = ET.fromstring(m.group(0))
        out[el.get("id")] = el
    return out


def _values(chart: ET.Element, label: str) -> tuple[float, np.ndarray]:
    ns = "{http://www.w3.org/2000/svg}"
    rect = chart.find(f"{ns}rect")  # the plot area
    top, h = float(rect.get("y")), float(rect.get("height"))
    lo, hi = float(chart.get("data-y-min")), float(chart.get("data-y-max"))
    line = next(p for p in chart.iter(f"{ns}polyline") if p.get("data-label") == label)
    ys = np.array([float(p.split(",")[1]) for p in line.get("points").split()])
    return float(line.get("data-step")), hi - (ys - top) / h * (hi - lo)


def test_report_charts_carry_the_mix_loudness_and_stage_times(rendered):
    report = (rendered / "report.html").read_text()
    data = json.loads((rendered / "report.json").read_text())
    charts = _svgs(report)
    assert {"loudness-web", "loudness-master", "stems", "waveform", "stage-times"} <= set(charts)
    ns = "{http://www.w3.org/2000/svg}"
    # the short-term curve of the web mix, read from the SVG, against the standard's formula
    x, fs = soundfile.read(str(rendered / "audio" / "mix_web.wav"), always_2d=True)
    assert fs == 48000
    step, st = _values(charts["loudness-web"], "short-term (3 s)")
    assert step == pytest.approx(0.1)
    checked = 0
    for seg in range(29, len(st), 7):
        ref = _reference_short_term(x, seg)
        if ref > -59:  # above the chart's floor
            assert st[seg] == pytest.approx(ref, abs=0.4), seg  # 0.35 LU per pixel
            checked += 1
    assert checked >= 3
    # the target line sits at the delivery's target
    target = charts["loudness-web"].findall(f".//{ns}line[@class='target']")[0]
    assert float(target.get("data-value")) == data["loudness"]["web"]["target"]
    # one bar per stage, each the report's seconds
    bars = {float(b.get("data-value")) for b in charts["stage-times"].iter(f"{ns}rect")
            if b.get("class") == "bar"}
    assert bars == {float(v) for v in data["stage_seconds"].values()}
    shots = [r.get("data-shot") for r in charts["waveform"].iter(f"{ns}rect")
             if r.get("class") == "shot"]
    assert shots == [s["id"] for s in data["shots"]]
    assert "<script" not in report and "http://" not in report.replace(
        "http://www.w3.org/2000/svg", "")


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="headless Chromium not installed (.ci/run installs Debian's)")
def test_the_charts_render_in_a_headless_browser(rendered, tmp_path):
    import cv2

    shot = tmp_path / "report.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
           f"--screenshot={shot}", "--window-size=900,4000",
           (rendered / "report.html").as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.is_file()
    img = cv2.imread(str(shot))[..., ::-1].astype(int)

    def pixels(rgb: tuple[int, int, int]) -> int:
        return int((np.abs(img - np.array(rgb)).sum(axis=2) < 40).sum())

    assert pixels((0x1F, 0x77, 0xB4)) > 500  # blue: momentary lines, bars, the waveform
    assert pixels((0xD6, 0x27, 0x28)) > 200  # red: short-term lines
    assert pixels((255, 255, 255)) > 50_000  # the charts' white panels on the dark page
