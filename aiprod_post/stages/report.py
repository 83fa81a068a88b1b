"""The report stage: ``report.html`` (contact sheet, takes, cast, shots, loudness and stems
over time, picture QA, stage times; inline SVG, no network) and ``report.json``, the
manifest of every output with its hash, this machine's stage rates for later estimates, and
the render's record for ``retake``."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Mapping

import numpy as np

from .. import __version__
from ..cache import file_digest
from ..files import sha256_file, write_atomic
from ..plan import ShotPlan, format_frame_rate
from ..project import DELIVERY_PROFILES
from ..scaler import rgb24
from ..takes import RenderRecord, save_render_record, takes_report
from .context import Context, Delivered, Pictures, Planned, Spoken

__all__ = ["run", "record"]


def run(ctx: Context, planned: Planned, spoken: Spoken, pictures: Pictures,
        delivered: Delivered) -> None:
    write_report(ctx, planned, spoken, pictures, delivered.masters)
    record_history(ctx, spoken.plan)
    save_render_record(ctx.outdir, record(ctx))  # what `aiprod-post retake` reruns


def record(ctx: Context) -> RenderRecord:
    """How this render was made, for a rerun of one shot (paths made absolute)."""
    o = ctx.options
    return RenderRecord(
        source=str(ctx.source.resolve()), source_sha256=sha256_file(ctx.source),
        engine=o.engine, profiles=o.profiles,
        fps=format_frame_rate(o.fps) if o.fps else None, width=o.width, height=o.height,
        seed=o.seed, burn_in=o.burn_in, cast=str(Path(o.cast).resolve()) if o.cast else None,
        executor=o.executor, address=o.address,
        # a --cache folder from where the command ran; a URL is absolute already
        cache=o.cache if not o.cache or "://" in o.cache else str(Path(o.cache).resolve()),
        project=ctx.project.model_dump(mode="json"),
        project_root=str(Path(ctx.project.root).resolve()))

# ---- report


def record_history(ctx: Context, plan: ShotPlan) -> None:
    """This render's stage rates, for later estimates on this machine."""
    from ..estimate import record_render, work_of

    video = {p: DELIVERY_PROFILES[p].video for p in ctx.profiles}
    record_render(work_of(plan, list(ctx.profiles), video=video),
                  ctx.report.get("engine", {}).get("name", "animatic"),
                  ctx.reporter.timings, ctx.reporter.done, ctx.reporter.cached)

def _charts(ctx: Context, plan: ShotPlan) -> dict[str, str]:
    """Loudness over time per delivery and per stem, the waveform by shot, stage times."""
    from ..charts import report_charts

    audio = ctx.outdir / "audio"
    mixes = {name: _curve_of(audio / f"mix_{name}.wav")
             for name in ctx.report.get("loudness", {})
             if (audio / f"mix_{name}.wav").is_file()}
    stems = {s: _curve_of(audio / f"{s}.wav") for s in ("DX", "MX", "FX")
             if (audio / f"{s}.wav").is_file()}
    spans, t = [], 0.0
    for _, s in plan.shots():
        d = float(s.duration / plan.fps)
        spans.append((s.id, t, t + d))
        t += d
    return report_charts(
        seconds=float(plan.duration / plan.fps), mixes=mixes, stems=stems, shots=spans,
        targets={k: v["target"] for k, v in ctx.report.get("loudness", {}).items()},
        stage_seconds=ctx.reporter.timings)

def write_report(ctx: Context, planned: Planned, spoken: Spoken, pictures: Pictures,
                 masters: Mapping[str, Path]) -> None:
    import cv2

    plan = spoken.plan
    ctx.reporter.end_stage()
    ctx.report.update({
        "title": plan.title,
        "fps": format_frame_rate(plan.fps),
        "size": [plan.width, plan.height],
        "duration_frames": plan.duration,
        "duration_seconds": round(float(plan.duration / plan.fps), 3),
        "shots": [{"id": s.id, "scene": sc.id, "framing": s.framing.value,
                   "move": s.camera_move.value, "frames": s.duration,
                   "characters": s.characters,
                   "dialogue": [f"{d.speaker}: {d.text}" for d in s.dialogue],
                   "failed": ctx.failed.get(s.id), "cached": pictures.cached.get(s.id)}
                  for sc, s in plan.shots()],
        "failed_shots": ctx.failed,
        "stage_seconds": ctx.reporter.timings,
        "peak_rss_mib_after_stage": ctx.reporter.peak_rss_mib,
        "made": ctx.reporter.done,
        "cached": ctx.reporter.cached,
        "masters": {k: str(v.relative_to(ctx.outdir)) for k, v in masters.items()},
        "takes": takes_report(ctx.outdir, planned.takes),
    })
    for _, s in plan.shots():  # each character's first line: their voice sample
        for d in s.dialogue:
            entry = ctx.report.get("cast", {}).get("characters", {}).get(
                " ".join(d.speaker.split()).upper())
            if entry is not None and "sample" not in entry:
                entry["sample"] = f"audio/lines/{d.id}.wav"
    def thumb(path: Path, index: int) -> str | None:
        """The frame as a JPEG the width of a contact-sheet cell, base64."""
        frame = _frame_at(path, index)
        if frame is None:
            return None
        small = cv2.resize(frame, (320, max(2, round(320 * plan.height / plan.width))))
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        return base64.b64encode(jpg.tobytes()).decode()

    thumbs = []
    for sc, s in plan.shots():
        m = pictures.media[s.id]
        b64 = thumb(m.path, m.head + s.duration // 2)
        if b64 is not None:
            thumbs.append((s.id, sc.heading, b64))
    # each shot's takes side by side, the same frame of each
    takes = {s.id: (pictures.media[s.id].head + s.duration // 2, ctx.report["takes"][s.id])
             for _, s in plan.shots() if s.id in ctx.report["takes"]}
    takes_html = _takes_html({sid: [(t, thumb(ctx.outdir / t["file"], at)
                                      if t["kept"] else None) for t in entry["takes"]]
                              for sid, (at, entry) in takes.items()})
    write_atomic(ctx.outdir / "report.json", json.dumps(ctx.report, indent=2).encode())
    write_atomic(ctx.outdir / "report.html",
                 _report_html(ctx.report, thumbs, _charts(ctx, plan), takes_html).encode())
    files = {}
    for p in sorted(ctx.outdir.rglob("*")):
        if p.is_file() and ".cache" not in p.parts and p.name != "manifest.json" \
                and not p.name.startswith("."):
            files[str(p.relative_to(ctx.outdir))] = {"bytes": p.stat().st_size,
                                                      "sha256": file_digest(p)}
    manifest = {"schema": "Manifest.1", "generator": f"aiprod-post {__version__}",
                "source": str(ctx.source), "engine": ctx.report.get("engine"),
                "voices": ctx.report.get("voices"), "files": files}
    write_atomic(ctx.outdir / "manifest.json", json.dumps(manifest, indent=2).encode())



def _curve_of(path: Path):
    """Loudness over time of a WAV the render wrote, read a block at a time."""
    from aiprod_post.audio.loudness import loudness_curve
    from aiprod_post.audio.stream import FileSource

    src = FileSource(path)
    try:
        return loudness_curve(src, src.rate)
    finally:
        src.close()



def _frame_at(path: Path, index: int) -> np.ndarray | None:
    import av

    try:
        with av.open(str(path)) as c:
            for i, fr in enumerate(c.decode(video=0)):
                if i >= index:
                    return rgb24(fr)
    except Exception:  # noqa: BLE001 - a contact sheet without one frame is still a report
        return None
    return None


def _takes_html(takes: dict[str, list[tuple[dict, str | None]]]) -> str:
    """Each retaken shot's takes side by side: a frame of each, its seed, prompt and note,
    the take the film uses marked."""
    if not takes:
        return ""
    e = html.escape
    rows = []
    for sid, entries in takes.items():
        cells = "".join(
            f"<figure{' class=chosen' if t['chosen'] else ''}>"
            + (f"<img src='data:image/jpeg;base64,{b64}' alt='{e(sid)} take {t['take']}'>"
               if b64 else "<p>(file missing)</p>")
            + f"<figcaption><b>{e(sid)} take {t['take']}</b>"
            + (" (in the film)" if t["chosen"] else "")
            + f"<br><a href='{e(t['file'])}'>{e(t['file'])}</a> seed {t['seed']}"
            + (f"<br>prompt: +{e(t['prompt_extra'])}" if t.get("prompt_extra") else "")
            + (f"<br>note: {e(t['note'])}" if t.get("note") else "")
            + "</figcaption></figure>" for t, b64 in entries)
        rows.append(f"<div class='sheet takes'>{cells}</div>")
    return "<h2>Takes</h2>" + "".join(rows)


def _made_on(placement: dict | None) -> str:
    """Where a shot was made, how long it took and waited for a CPU or GPU."""
    if not placement or not placement.get("host"):
        return ""
    node = placement["node"]
    where = placement["host"] + (f" ({node[:8]})" if node != placement["host"] else "")
    return html.escape(f"{where}, {placement['seconds']} s, waited {placement['waited_s']} s")


def _report_html(report: dict, thumbs: list[tuple[str, str, str]],
                 charts: dict[str, str] | None = None, takes: str = "") -> str:
    charts = charts or {}
    e = html.escape
    cells = "".join(f"<figure><img src='data:image/jpeg;base64,{b64}' alt='{e(sid)}'>"
                    f"<figcaption><b>{e(sid)}</b> {e(head)}</figcaption></figure>"
                    for sid, head, b64 in thumbs)
    rows = "".join(
        f"<tr{' class=failed' if s['failed'] else ''}><td>{e(s['scene'])}</td><td>{e(s['id'])}"
        f"</td><td>{e(s['framing'])}</td><td>{e(s['move'])}</td><td>{s['frames']}</td>"
        f"<td>{e(', '.join(s['characters']))}</td><td>{e(' / '.join(s['dialogue'])[:160])}</td>"
        f"<td>{_made_on(report.get('placement', {}).get(s['id']))}</td>"
        f"</tr>" for s in report["shots"])
    loud = "".join(
        f"<tr><td>{e(k)}</td><td>{v.get('target')}</td><td>{v.get('integrated')}</td>"
        f"<td>{v.get('true_peak')}</td><td>{v.get('loudness_range')}</td></tr>"
        for k, v in report.get("loudness", {}).items())
    stages = "".join(
        f"<tr><td>{e(k)}</td><td>{v}</td><td>{report['made'].get(k, 0)}</td>"
        f"<td>{report['cached'].get(k, 0)}</td></tr>" for k, v in report["stage_seconds"].items())
    failed = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in report["failed_shots"].items())
    qa = "".join(
        f"<tr><td>{e(v.get('measured_on', k))}</td><td>{'pass' if v['levels']['pass'] else 'FAIL'} "
        f"({v['levels']['share_outside']:.4%} outside {v['levels']['legal']})</td>"
        f"<td>{'pass' if v['flashes']['pass'] else 'FAIL'} "
        f"(max {v['flashes']['max_per_second']}/s)</td><td>{len(v['black_frames'])}</td>"
        f"<td>{len(v['frozen_frames'])}</td></tr>" for k, v in report.get("qa", {}).items())
    if report.get("qa_note"):  # no SDR master to measure
        qa += f"<tr><td colspan=5>{e(report['qa_note'])}</td></tr>"
    from urllib.parse import quote

    identity = report.get("identity", {}).get("characters", {})
    cast = "".join(
        f"<tr><td><b>{e(name)}</b><br><img class=castsheet src='cast/{e(quote(name))}.png' "
        f"alt='{e(name)} turnaround'></td><td>{e(c['description'])}</td>"
        f"<td>{e(c['gender'])}, {e(str(c['age']) if c['age'] is not None else 'age unknown')}"
        f" ({e(c['age_band'])})<br>{e(', '.join(c['wardrobe']))}<br><i>{e(c['introduction'])}"
        f"</i><br>lines: {e('; '.join(k + ' ' + ', '.join(map(str, v)) for k, v in c['lines'].items()))}"
        f"</td><td>{e(c['voice'] or '')} pitch {c['pitch']} rate {c['rate']}"
        + (f"<br><a href='{e(c['sample'])}'>voice sample</a>" if c.get("sample") else "")
        + "</td><td>" + (f"self {identity[name]['self']} / others {identity[name]['others']}"
                         if identity.get(name, {}).get("self") is not None else "")
        + "</td></tr>" for name, c in report.get("cast", {}).get("characters", {}).items())
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>{e(report['title'])} - aiprod-post report</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;background:#111;color:#ddd}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #444;padding:3px 8px}}
.sheet{{display:flex;flex-wrap:wrap;gap:8px}}figure{{margin:0;width:320px}}
img{{width:320px;display:block}}figcaption{{font-size:12px}}tr.failed{{background:#600}}
img.castsheet{{width:240px}}figure.chosen{{outline:3px solid #4c4}}.takes a{{color:#8cf}}
svg.chart{{background:#fff;color:#111;display:block;
margin:8px 0;max-width:100%;height:auto}}</style>
</head><body><h1>{e(report['title'])}</h1>
<p>{report['duration_seconds']} s, {report['duration_frames']} frames at {e(report['fps'])} fps,
{report['size'][0]}x{report['size'][1]}, aiprod-post {e(report['version'])}</p>
{'<h2>Failed shots</h2><ul>' + failed + '</ul>' if failed else ''}
<h2>Contact sheet</h2><div class="sheet">{cells}</div>
{takes}
{charts.get('waveform', '')}
<h2>Cast</h2><table><tr><th>character</th><th>described as</th><th>facts (script lines)</th>
<th>voice</th><th>identity across shots</th></tr>{cast}</table>
<h2>Shots</h2><table><tr><th>scene</th><th>shot</th><th>framing</th><th>move</th>
<th>frames</th><th>characters</th><th>dialogue</th><th>made on</th></tr>{rows}</table>
<h2>Loudness</h2><table><tr><th>profile</th><th>target LUFS</th><th>integrated</th>
<th>true peak dBTP</th><th>LRA</th></tr>{loud}</table>
{charts.get('loudness', '')}{charts.get('stems', '')}
<h2>Picture QA</h2><table><tr><th>measured on</th><th>levels (EBU R 103)</th>
<th>flashes (ITU-R BT.1702)</th><th>black runs</th><th>frozen runs</th></tr>{qa}</table>
<h2>Stages</h2>{charts.get('stages', '')}
<table><tr><th>stage</th><th>seconds</th><th>made</th><th>cached</th></tr>
{stages}</table></body></html>"""
