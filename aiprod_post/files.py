"""Writing files so that a half-written one never looks finished."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["write_atomic", "publish_mode", "atomic_path"]


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


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, read in chunks (weights and masters run to gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
