#!/usr/bin/env python3
"""Create the project's virtual environment and install aiprod-post into it.

Run by ``make demo`` and ``make test`` (and so by CI). It installs only from
package registries and it never lets pip pull a CUDA build of torch onto a
machine without an NVIDIA GPU:

* a torch the user already has (in the interpreter that runs this script, or
  in an existing ``.venv``) is kept: its exact version becomes a constraint;
* on a machine without ``nvidia-smi`` the CPU pins in ``constraints/cpu.txt``
  apply;
* on a machine with a GPU nothing is forced, so pip picks the CUDA build.

A stamp file records what was installed, so a second run with the same
``pyproject.toml``, constraints and extras does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _torch_version_of(python: Path | str) -> str | None:
    probe = (
        "import importlib.metadata as m\n"
        "try:\n print(m.version('torch'))\n"
        "except m.PackageNotFoundError:\n print('')\n"
    )
    try:
        out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _torch_without_cuda_download(kept_torch: str | None) -> bool:
    """True where torch can be had without pulling a CUDA build onto a CPU machine: a
    torch is already there, the machine has a GPU (the CUDA build is wanted), or a CPU
    wheel of the pinned version lies in pip's find-links folders."""
    if kept_torch or _has_nvidia_gpu():
        return True
    pin = next((line.split("==", 1)[1] for line in (ROOT / "constraints" / "cpu.txt")
                .read_text().splitlines() if line.startswith("torch==")), None)
    folders = os.environ.get("PIP_FIND_LINKS", "").split()
    try:  # find-links from pip's own configuration files
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                             text=True, check=False).stdout
        for line in out.splitlines():
            if "find-links" in line and "=" in line:
                folders += line.split("=", 1)[1].strip().strip("'\"").split()
    except OSError:
        pass
    for folder in folders:
        p = Path(folder.removeprefix("file://"))
        if p.is_dir() and pin and any(p.glob(f"torch-{pin}+cpu-*.whl")):
            return True
    return False


def _has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=os.environ.get("AIPROD_VENV", str(ROOT / ".venv")))
    parser.add_argument("--extras", default="", help="comma-separated extras, e.g. test")
    args = parser.parse_args(argv)

    venv_dir = Path(args.venv)
    venv_python = venv_dir / "bin" / "python"
    host_torch = None
    try:
        host_torch = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        pass

    if not venv_python.exists():
        cmd = [sys.executable, "-m", "venv", str(venv_dir)]
        if host_torch:
            # The user's own torch (CPU or CUDA) stays in use: the venv sees it.
            cmd.append("--system-site-packages")
        subprocess.run(cmd, check=True)

    constraints = [line for line in (ROOT / "constraints" / "common.txt").read_text().splitlines()
                   if line.strip() and not line.startswith("#")]
    kept_torch = _torch_version_of(venv_python) or host_torch
    if kept_torch:
        constraints = [c for c in constraints if not c.startswith("torch")]
        constraints.append(f"torch=={kept_torch}")
        torch_policy = f"keep installed torch {kept_torch}"
    elif not _has_nvidia_gpu():
        constraints += [line for line in (ROOT / "constraints" / "cpu.txt").read_text().splitlines()
                        if line.strip() and not line.startswith("#")]
        torch_policy = "no NVIDIA GPU: CPU torch pins from constraints/cpu.txt"
    else:
        torch_policy = "NVIDIA GPU present: pip chooses torch"

    generated = venv_dir / "aiprod-constraints.txt"
    generated.write_text("\n".join(constraints) + "\n")

    extras = [e for e in args.extras.split(",") if e]
    if "test" in extras and "ltx" not in extras and _torch_without_cuda_download(kept_torch):
        # the ltx engine's CPU tests need torch; take it only where that costs no CUDA build
        extras.append("ltx")
    spec = "." + (f"[{','.join(extras)}]" if extras else "")
    fingerprint = hashlib.sha256(
        json.dumps([(ROOT / "pyproject.toml").read_text(), constraints, spec]).encode()
    ).hexdigest()
    stamp = venv_dir / ".aiprod-installed"
    if stamp.exists() and stamp.read_text() == fingerprint:
        return 0

    print(f"bootstrap: installing aiprod-post{spec[1:]} into {venv_dir} ({torch_policy})", flush=True)
    subprocess.run(
        [str(venv_python), "-m", "pip", "install", "--quiet", "-c", str(generated), "-e", spec],
        check=True,
        cwd=ROOT,
    )
    stamp.write_text(fingerprint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
