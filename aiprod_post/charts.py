"""Charts for ``report.html`` as inline SVG: no network, no JavaScript.

Each function takes plain numbers and returns one ``<svg>`` element as text. Values are
placed exactly (time on x, level on y, both linear in their unit), so a reader of the
SVG gets the figures back from the coordinates: the tests do that.

>>> svg = bar_chart({"speech": 2.0, "masters": 6.0}, unit="s")
>>> svg.count("<rect class=\\"bar\\""), "masters" in svg
(2, True)
"""

from __future__ import annotations

import html
import math
from typing import Sequence

__all__ = ["line_chart", "bar_chart", "waveform_strip", "report_charts", "PALETTE"]

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
_W, _H = 720, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 12, 22, 28


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".") if abs(v) < 1e6 else f"{v:.3g}"


def line_chart(series: dict[str, tuple[float, Sequence[float]]], *, title: str,
               y_range: tuple[float, float], unit: str, seconds: float,
               targets: dict[str, float] | None = None, chart_id: str = "") -> str:
    """Lines over time: ``series`` maps a label to (step in seconds, values); values below
    the y range (silence: -inf) are drawn at its floor. ``targets`` are dashed
    horizontal lines (a loudness target). x is seconds from 0 to ``seconds``."""
    lo, hi = y_range
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    seconds = max(seconds, 1e-6)

    def x(t: float) -> float:
        return _LEFT + pw * min(max(t / seconds, 0.0), 1.0)

    def y(v: float) -> float:
        v = lo if not math.isfinite(v) else min(max(v, lo), hi)
        return _TOP + ph * (hi - v) / (hi - lo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{_esc(chart_id)}" '
           f'viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" '
           f'aria-label="{_esc(title)}" data-seconds="{seconds:g}" data-y-min="{lo:g}" '
           f'data-y-max="{hi:g}">',
           f'<text x="{_LEFT}" y="14" font-size="12" font-weight="bold">{_esc(title)}</text>',
           f'<rect x="{_LEFT}" y="{_TOP}" width="{pw}" height="{ph}" fill="#fafafa" '
           'stroke="#ccc"/>']
    for k in range(5):  # y grid with labels
        v = lo + (hi - lo) * k / 4
        out.append(f'<line x1="{_LEFT}" x2="{_LEFT + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   'stroke="#e4e4e4"/>')
        out.append(f'<text x="{_LEFT - 4}" y="{y(v) + 4:.1f}" font-size="10" '
                   f'text-anchor="end">{_fmt(v)}</text>')
    tick = _nice_step(seconds / 8)
    t = 0.0
    while t <= seconds + 1e-9:
        out.append(f'<text x="{x(t):.1f}" y="{_H - 10}" font-size="10" text-anchor="middle">'
                   f'{_clock(t)}</text>')
        t += tick
    out.append(f'<text x="{_W - _RIGHT}" y="14" font-size="10" text-anchor="end">'
               f'{_esc(unit)}</text>')
    for name, value in (targets or {}).items():
        out.append(f'<line class="target" data-value="{value:g}" x1="{_LEFT}" '
                   f'x2="{_LEFT + pw}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                   f'stroke="#444" stroke-dasharray="5 3"><title>{_esc(name)}: '
                   f'{_fmt(value)} {_esc(unit)}</title></line>')
    for i, (label, (step, values)) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        pts = " ".join(f"{x((j + 1) * step):.1f},{y(v):.1f}" for j, v in enumerate(values))
        out.append(f'<polyline class="series" data-label="{_esc(label)}" data-step="{step:g}" '
                   f'fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>')
        out.append(f'<text x="{_LEFT + 8 + 130 * i}" y="{_TOP + 14}" font-size="11" '
                   f'fill="{colour}">{_esc(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(values: dict[str, float], *, unit: str, title: str = "",
              chart_id: str = "") -> str:
    """Horizontal bars, one per entry (stage seconds), labelled with their value."""
    rows = len(values)
    h = _TOP + 20 * rows + 8
    top = max(values.values(), default=0.0) or 1.0
    pw = _W - 140 - 70
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{_esc(chart_id)}" '
           f'viewBox="0 0 {_W} {h}" width="{_W}" height="{h}" role="img" '
           f'aria-label="{_esc(title)}">',
           f'<text x="4" y="14" font-size="12" font-weight="bold">{_esc(title)}</text>']
    for i, (name, v) in enumerate(values.items()):
        yy = _TOP + 20 * i
        w = pw * max(v, 0.0) / top
        out.append(f'<text x="136" y="{yy + 13}" font-size="11" text-anchor="end">'
                   f'{_esc(name)}</text>')
        out.append(f'<rect class="bar" data-value="{v:g}" x="140" y="{yy + 2}" '
                   f'width="{w:.1f}" height="14" fill="{PALETTE[0]}"/>')
        out.append(f'<text x="{144 + w:.1f}" y="{yy + 13}" font-size="11">{_fmt(v)} '
                   f'{_esc(unit)}</text>')
    out.append("</svg>")
    return "".join(out)


def waveform_strip(envelope: Sequence[tuple[float, float]], step: float,
                   spans: Sequence[tuple[str, float, float]], *, chart_id: str = "") -> str:
    """The programme's waveform (lowest and highest sample per step) as a filled band,
    with each shot's span marked and labelled: it sits under the contact sheet."""
    n = len(envelope)
    seconds = max(n * step, 1e-6)
    h, mid, amp = 90, 50, 36
    pw = _W - _LEFT - _RIGHT

    def x(t: float) -> float:
        return _LEFT + pw * min(max(t / seconds, 0.0), 1.0)

    upper = [f"{x(j * step):.1f},{mid - amp * max(0.0, hi):.1f}"
             for j, (_, hi) in enumerate(envelope)]
    lower = [f"{x(j * step):.1f},{mid - amp * min(0.0, lo):.1f}"
             for j, (lo, _) in reversed(list(enumerate(envelope)))]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{_esc(chart_id)}" '
           f'viewBox="0 0 {_W} {h}" width="{_W}" height="{h}" role="img" '
           f'aria-label="waveform by shot" data-seconds="{seconds:g}">',
           f'<polygon class="wave" fill="{PALETTE[0]}" fill-opacity="0.7" '
           f'points="{" ".join(upper + lower)}"/>']
    for i, (name, a, b) in enumerate(spans):
        out.append(f'<rect class="shot" data-shot="{_esc(name)}" x="{x(a):.1f}" y="8" '
                   f'width="{max(0.5, x(b) - x(a)):.1f}" height="{2 * amp + 4}" '
                   f'fill="{"#000" if i % 2 else "#888"}" fill-opacity="0.06" stroke="#bbb" '
                   'stroke-width="0.5"/>')
        out.append(f'<text x="{x(a) + 2:.1f}" y="{h - 2}" font-size="9">{_esc(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _nice_step(raw: float) -> float:
    """1, 2, 5 × 10^k seconds at or above ``raw`` (at least a second)."""
    raw = max(raw, 1.0)
    k = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * k >= raw:
            return m * k
    return 10 * k


def _clock(t: float) -> str:
    m, s = divmod(int(round(t)), 60)
    return f"{m}:{s:02d}"


def report_charts(*, seconds: float, mixes: dict, targets: dict[str, float], stems: dict,
                  shots: Sequence[tuple[str, float, float]], stage_seconds: dict[str, float]
                  ) -> dict[str, str]:
    """The report's charts by section. ``mixes`` and ``stems`` map a name to a loudness
    curve (``step``, ``momentary``, ``short_term``, ``envelope``: see
    :func:`aiprod_post.audio.loudness.loudness_curve`); ``targets`` each delivery's
    integrated target; ``shots`` (id, start s, end s) on the programme."""
    out: dict[str, str] = {}
    loud = []
    for name, c in mixes.items():
        loud.append(line_chart(
            {"momentary (400 ms)": (c.step, c.momentary), "short-term (3 s)":
             (c.step, c.short_term)},
            title=f"Loudness over time: {name}", y_range=(-60.0, 0.0), unit="LUFS",
            seconds=seconds, targets={"target": targets[name]} if name in targets else None,
            chart_id=f"loudness-{name}"))
    out["loudness"] = "".join(loud)
    if stems:
        out["stems"] = line_chart({n: (c.step, c.short_term) for n, c in stems.items()},
                                  title="Stems: short-term loudness (3 s)",
                                  y_range=(-70.0, 0.0), unit="LUFS", seconds=seconds,
                                  chart_id="stems")
    main = mixes.get("master") or next(iter(mixes.values()), None)
    if main is not None:
        out["waveform"] = waveform_strip(main.envelope, main.step, shots, chart_id="waveform")
    out["stages"] = bar_chart(stage_seconds, unit="s", title="Stage times",
                              chart_id="stage-times")
    return out
