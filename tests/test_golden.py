"""The example film's masters and timeline exports, by hash, against those recorded before the
runner became a stage table (issue 15): a refactor that changes a byte of a delivery fails here.

The render is the bundled example at 160x96. Text exports are hashed with the output folder and
the checkout's path replaced by placeholders (they name media by absolute path); the AAF is
compared as pyaaf2 reads it, with its mob ids and dates (new on every write) left out. H.264
frame threads make x264's output depend on the number of threads, so the recorded hashes are for
the CPU count they were recorded on (2, as CI); elsewhere the test says so and skips. The
render runs in a process of its own with glibc's ``MALLOC_PERTURB_`` set: the conform's
decode path hands x264 memory that nothing wrote (found by this test: the web master's bytes
followed the allocator's history), so fresh memory is given a fixed content.
Regenerate (only when a change of output is intended): ``AIPROD_WRITE_GOLDEN=1 pytest
tests/test_golden.py``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "the_last_ferry.fountain"
GOLDEN = Path(__file__).parent / "fixtures" / "golden_example.json"
HASHED = ("masters/", "timeline/", "audio/", "shots/", "subtitles/")


def aaf_content(path: Path):
    """An AAF as pyaaf2 reads it: every mob's properties, recursively, without the values
    that are new on every write (mob ids become the referenced mob's name)."""
    import aaf2

    with aaf2.open(str(path), "r") as f:
        names = {str(m.mob_id): m.name for m in f.content.mobs}

        def walk(value):
            if isinstance(value, (list, tuple)):
                return [walk(v) for v in value]
            if isinstance(value, dict):
                return {str(k): walk(v) for k, v in sorted(value.items(), key=str)}
            if isinstance(value, (datetime.datetime, datetime.date)):
                return "DATE"
            if hasattr(value, "properties") and callable(value.properties):
                return {p.name: walk(p.value) for p in value.properties()
                        if p.name not in ("CreationTime", "LastModified")}
            text = str(value)
            return names.get(text, text) if text.startswith("urn:smpte:umid:") else text

        return walk(sorted((walk(m) for m in f.content.mobs), key=json.dumps))


def output_hashes(outdir: Path) -> dict[str, str]:
    out = {}
    for p in sorted(outdir.rglob("*")):
        rel = p.relative_to(outdir).as_posix()
        if not p.is_file() or ".cache" in p.parts or p.name.startswith(".") \
                or not rel.startswith(HASHED):
            continue
        data = json.dumps(aaf_content(p), sort_keys=True).encode() if p.suffix == ".aaf" \
            else p.read_bytes()
        for path, mark in ((str(outdir.resolve()), b"OUTDIR"), (str(outdir), b"OUTDIR"),
                           (str(ROOT), b"REPO")):
            data = data.replace(path.encode(), mark)
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def test_example_outputs_are_byte_identical_to_the_recorded_ones(tmp_path):
    out = tmp_path / "film"
    code = ("import sys; from aiprod_post.pipeline import RenderOptions, render; "
            "sys.exit(render(sys.argv[1], sys.argv[2], RenderOptions(width=160, height=96, "
            "quiet=True)).exit_code)")
    subprocess.run([sys.executable, "-c", code, str(EXAMPLE), str(out)], check=True,
                   env={**os.environ, "MALLOC_PERTURB_": "165"})
    got = output_hashes(out)
    assert any(k.startswith("masters/") for k in got) and any(k.endswith(".aaf") for k in got)
    if os.environ.get("AIPROD_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps({"cpu_count": os.cpu_count(), "files": got}, indent=1)
                          + "\n")
    recorded = json.loads(GOLDEN.read_text())
    if recorded["cpu_count"] != os.cpu_count():
        pytest.skip(f"hashes recorded with {recorded['cpu_count']} CPUs, this machine has "
                    f"{os.cpu_count()}: x264's frame threads make other bytes")
    assert sorted(got) == sorted(recorded["files"])
    changed = [k for k in got if got[k] != recorded["files"][k]]
    assert not changed, f"outputs changed: {changed}"
