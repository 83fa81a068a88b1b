"""A job's outputs: regular files in its ``out`` folder, never through a symlink."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

from .deps import ServiceDep, TokenDep, own_job

__all__ = ["router", "list_files", "find_file"]

router = APIRouter()

# names a client may ask for: printable, no backslash; hidden parts are refused separately
_NAME = re.compile(r"^[^\x00-\x1f\x7f\\]{1,1000}$")


@router.get("/v1/jobs/{job_id}/artifacts", name="list_artifacts")
def list_artifacts(job_id: str, request: Request, svc: ServiceDep, tok: TokenDep) -> dict:
    own_job(svc, job_id, tok)
    files = []
    for rel, size in list_files(svc.job_folder(job_id) / "out"):
        files.append({"name": rel, "bytes": size,
                      "url": str(request.url_for("get_artifact", job_id=job_id, name=rel))})
    return {"id": job_id, "artifacts": files}


@router.get("/v1/jobs/{job_id}/artifacts/{name:path}", name="get_artifact")
def get_artifact(job_id: str, name: str, svc: ServiceDep, tok: TokenDep) -> FileResponse:
    own_job(svc, job_id, tok)
    target = find_file(svc.job_folder(job_id) / "out", name)
    if target is None:
        raise HTTPException(404, f"no artifact {name!r}")
    return FileResponse(target)  # answers Range requests


def list_files(root: Path) -> list[tuple[str, int]]:
    """Regular files under ``root`` (no symlinks, nothing hidden), sorted by name."""
    found = []
    for folder, dirs, files in os.walk(root):  # never descends a symlinked folder
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                found.append((path.relative_to(root).as_posix(), st.st_size))
    return sorted(found)


def find_file(root: Path, name: str) -> Path | None:
    """``root/name`` if it is a regular file reached through no symlink; None otherwise."""
    if not _NAME.match(name):
        return None
    parts = name.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    path = root
    for part in parts:
        path = path / part
        try:
            st = path.lstat()
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return None
    return path if stat.S_ISREG(st.st_mode) else None
