"""The stage cache: what a stage's output is keyed by, and where it lives.

Every stage output is written under the cache folder by a hash of its inputs and settings
(:func:`key_of`), atomically: a rerun with nothing changed finds everything, a render killed at
any point resumes, an edit redoes only what depends on it, and renders, output folders and
nodes can share one folder. Files the render names from data are digested once per process
(:func:`file_digest`); outputs are placed from the cache into the documented layout
(:func:`place`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from .errors import AiprodError
from .files import place, sha256_file, write_atomic

__all__ = ["CACHE_VERSION", "Cache", "array_digest", "cache_folder", "file_digest", "key_of",
           "place", "store_url", "write_if_changed"]

#: object stores the cache can live on (through fsspec; :mod:`aiprod_post.store`)
OBJECT_STORES = ("s3", "gs", "gcs")

CACHE_VERSION = "1"


def key_of(*parts: Any) -> str:
    """A stable hash of a stage's inputs and settings.

    >>> key_of("speech", "Hello", {"b": 1, "a": 2}) == key_of("speech", "Hello", {"a": 2, "b": 1})
    True
    >>> len(key_of("x"))
    24
    """
    blob = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file, remembered by path, size and modification time: the same look
    is asked for by every shot, and masters of gigabytes by the QA stage and the
    manifest, so each file is read once per process."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def array_digest(a: np.ndarray) -> str:
    """SHA-256 of an array's bytes (a keyframe, a reference image)."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``path`` atomically unless it already holds ``data``; True if it was written."""
    if path.exists() and path.read_bytes() == data:
        return False
    write_atomic(path, data)
    return True


def cache_folder(location: str | None, root: Path, outdir: Path, where: str = "[run] cache"
                 ) -> Path:
    """Where the stage cache is: ``OUTDIR/.cache`` unless a folder or a ``file://`` URL is
    given (relative folders against the project's). Entries are named by their inputs'
    hash and written to a name of their own then renamed, so folders, renders and nodes
    can share one.

    >>> cache_folder("file:///srv/cache", Path("."), Path("out"))
    PosixPath('/srv/cache')
    >>> cache_folder(None, Path("."), Path("out"))
    PosixPath('out/.cache')

    On an object store (``s3://BUCKET/PREFIX``, ``gs://…``) the folder is this machine's
    copy of it, under the user's cache (``AIPROD_CACHE``): the same on every node.
    """
    if not location:
        return outdir / ".cache"
    scheme, sep, _ = location.partition("://")
    if not sep:
        path = Path(location)
        return path if path.is_absolute() else root / path
    if scheme in OBJECT_STORES:
        mine = Path(os.environ.get("AIPROD_CACHE") or Path.home() / ".cache" / "aiprod-post")
        return mine / "stores" / hashlib.sha256(location.encode()).hexdigest()[:16]
    if scheme != "file":
        raise AiprodError(f"{scheme}:// is not a store the cache can use: give a folder (a "
                          "shared mount), a file:// URL, s3://BUCKET/PREFIX or "
                          "gs://BUCKET/PREFIX", where=where)
    parts = urlsplit(location)
    if parts.netloc not in ("", "localhost"):
        raise AiprodError(f"{location}: a file:// URL names a path on this machine "
                          "(file:///PATH)", where=where)
    return Path(unquote(parts.path))


def store_url(location: str | None) -> str | None:
    """The object store URL of a cache location (None for a folder or file:// URL).

    >>> store_url("s3://films/cache"), store_url("/srv/cache")
    ('s3://films/cache', None)
    """
    if location and location.partition("://")[0] in OBJECT_STORES:
        return location
    return None


class Cache:
    """One cache folder: ``path(stage, key, suffix)`` is where a stage's entry lives (its
    folder made)."""

    def __init__(self, root: Path, store: str | None = None) -> None:
        self.root = Path(root)
        #: the object store the shots' entries are published to and fetched from (every
        #: node's shots meet there), with ``root`` this machine's copy; None: a folder
        self.store = store

    def __str__(self) -> str:
        return str(self.root)

    def path(self, stage: str, key: str, suffix: str) -> Path:
        p = self.root / stage / f"{key}{suffix}"
        p.parent.mkdir(parents=True, exist_ok=True)
        return p
