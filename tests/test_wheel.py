"""The wheel installs and works like a checkout (issue 15), and the architecture holds.

The wheel is built from this checkout, installed into a fresh virtual environment outside
it (its dependencies borrowed from the test environment through a path entry, so nothing
is downloaded and the checkout's editable install is not on the path), and a short script
is rendered from there with a bundled look and a timeline export. The import-linter
contracts in pyproject.toml are checked against that installed layout, where the stage
packages really sit inside ``aiprod_post``.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """Title: From A Wheel

EXT. PIER - NIGHT

Gulls over the water.

NELL
Ferry's gone.
"""


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(ROOT)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp / "dist").glob("aiprod_post-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the test environment's packages as a plain path entry: its .pth files (the
    # checkout's editable finder among them) are not processed there
    deps = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    (Path(purelib) / "zz_test_dependencies.pth").write_text(
        "\n".join(dict.fromkeys(deps)) + "\n")
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "--no-deps", "-q", str(wheel)], capture_output=True, text=True)
    if inst.returncode != 0:  # pip too old for --python: install by unpacking with pip's target
        inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                               "--target", purelib, str(wheel)], capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr[-3000:]
    work = tmp / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {"python": python, "purelib": Path(purelib), "work": work, "env": env,
            "wheel": wheel}


def _run(env: dict, *code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(env["python"]), *code], cwd=env["work"], env=env["env"],
                          capture_output=True, text=True, timeout=timeout)


def test_the_wheel_holds_the_packages_inside_aiprod_post_and_the_looks(wheel_env):
    import zipfile

    names = zipfile.ZipFile(wheel_env["wheel"]).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"aiprod_post"}, tops  # no generic top-level audio/, editing/ …
    for pkg in ("audio", "editing", "generation", "grading"):
        assert f"aiprod_post/{pkg}/__init__.py" in names
    assert "aiprod_post/luts/warm_film.cube" in names
    assert "aiprod_post/service/migrations/env.py" in names
    r = _run(wheel_env, "-c", "import aiprod_post, aiprod_post.grading.looks as l; "
             "print(aiprod_post.__file__); print(l.load_look('warm_film').size)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(str(wheel_env["purelib"]))  # the wheel's copy, not the checkout
    r = _run(wheel_env, "-c", "import audio")
    assert r.returncode != 0 and "No module named 'audio'" in r.stderr


def test_a_render_with_a_look_and_an_export_from_the_installed_wheel(wheel_env):
    work = wheel_env["work"]
    (work / "s.fountain").write_text(SCRIPT)
    (work / "p.toml").write_text('[looks]\nscene = { "1" = "noir" }\n')
    cli = "import sys; from aiprod_post.cli import main; sys.exit(main())"
    r = _run(wheel_env, "-c", cli, "render", "s.fountain", "-o", "out", "--size", "160x96",
             "--profile", "web", "--quiet", "--project", "p.toml")
    assert r.returncode == 0, r.stderr[-3000:]
    out = work / "out"
    assert (out / "masters" / "From_A_Wheel_web.mp4").stat().st_size > 0
    otio_file = out / "timeline" / "From_A_Wheel.otio"
    r = _run(wheel_env, "-c", cli, "export", str(otio_file), "--format", "edl", "-o",
             str(work / "cut.edl"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "TITLE:" in (work / "cut.edl").read_text()
    # the scene's look came from the bundled library (package data in the wheel): the
    # timeline names it, and the picture is black and white
    import av
    import numpy as np

    assert '"look": "noir"' in otio_file.read_text().replace('"look":"noir"', '"look": "noir"')
    with av.open(str(out / "masters" / "From_A_Wheel_web.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
    mid = frames[len(frames) // 2]
    assert mid.mean() > 8  # not a black frame
    assert np.abs(mid - mid.mean(axis=2, keepdims=True)).mean() < 3.0  # grey: noir


def test_import_contracts_hold_on_the_installed_layout(wheel_env):
    code = ("import sys; from importlinter.cli import lint_imports_command; "
            "sys.argv = ['lint-imports', sys.argv[1], '--no-cache']; "
            "lint_imports_command()")
    r = _run(wheel_env, "-c", code, str(ROOT / "pyproject.toml"), timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "Contracts: 5 kept, 0 broken." in r.stdout
