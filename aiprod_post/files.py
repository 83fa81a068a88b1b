"""Writing files so that a half-written one never looks finished."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import PathError

__all__ = ["write_atomic", "publish_mode", "atomic_path", "inside", "sha256_file", "place"]


def publish_mode(path: str | Path) -> None:
    """Give a temporary file (created 0600 by mkstemp) the mode a normal file would get
    (0666 less the umask), so outputs are readable by the user's collaborators."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path``: a reader sees either the old file or all of the new one.

    The bytes go to a temporary file in the same folder (same filesystem, so the
    rename is atomic), are flushed to disk, then renamed over ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (an encoder, a
    library); renamed over ``path`` when the block ends normally, removed otherwise.

    ``suffix`` keeps the extension writers infer the format from (``.part.mov``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def place(src: str | Path, dst: str | Path) -> None:
    """Put ``src`` at ``dst`` as well (a hard link, else a copy), renamed into place, so a
    reader of ``dst`` never sees half of it. Outputs are placed from the stage cache so."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and os.path.samefile(src, dst):
        return
    tmp = dst.with_name(f".{dst.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, read in chunks (weights and masters run to gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def inside(folder: str | Path, *parts: str) -> Path:
    """``folder / part / …`` for names that come from data (shot, line, take ids, titles,
    names in a request), refusing anything that would land outside ``folder``.

    Each part must be one plain name: not empty, not ``.`` or ``..``, no path separator,
    no NUL. The joined path is then resolved (symbolic links included) and must stay
    inside the resolved ``folder``; a link planted in the folder that points elsewhere is
    refused too. Every path the pipeline builds from data goes through here.

    >>> inside("/srv/out", "shots", "3A.mov").as_posix()
    '/srv/out/shots/3A.mov'
    >>> inside("/srv/out", "shots", "../../etc/passwd")
    Traceback (most recent call last):
    ...
    aiprod_post.errors.PathError: '../../etc/passwd': expected a plain file name inside /srv/out, not a path
    """
    base = Path(folder)
    for part in parts:
        if (not isinstance(part, str) or not part or part in (".", "..") or "\x00" in part
                or "/" in part or (os.sep != "/" and os.sep in part)
                or (os.altsep and os.altsep in part)):
            raise PathError(f"{part!r}: expected a plain file name inside {base}, not a path")
    path = base.joinpath(*parts)
    root = base.resolve()
    if not path.resolve().is_relative_to(root):
        raise PathError(f"{'/'.join(parts)!r} resolves outside {base}")
    return path
