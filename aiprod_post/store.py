"""A stage cache on an object store (``s3://``, ``gs://``, ``file://``, through fsspec),
with a local folder as this machine's copy.

Cache entries are files named by their inputs' hash (``STAGE/KEY.SUFFIX``), so an
entry's content never changes once written: a :class:`Store` keeps the entries every
node shares at ``URL/STAGE/KEY.SUFFIX`` and this machine's copies at the same names
under its local folder. :meth:`Store.get` gives the local copy, fetching it first when
only the store has it; :meth:`Store.put` publishes a local entry.

Writes are atomic on the store as on a folder: an entry is uploaded to a temporary key
of its own (``STAGE/.part/KEY.SUFFIX.RANDOM``) and then renamed to its name (a
server-side copy on S3 and GCS, a rename on a folder), so a reader never finds half an
entry, an upload that dies leaves no entry (only a temporary key, which
:meth:`Store.remove_stale_parts` clears), and two nodes publishing the same entry each
put a whole one there. A local copy is only a cache: removing the local folder loses
nothing the store has.

Credentials and endpoints are fsspec's and the backends' own: for S3, the AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL`` for an S3-compatible server such as MinIO,
...) or ``FSSPEC_S3_*``; for GCS, Google's application default credentials, and
``STORAGE_EMULATOR_HOST`` for an emulator (anonymous, through the JSON API). ``s3://``
needs ``s3fs`` and ``gs://`` needs ``gcsfs`` (``pip install 'aiprod-post[s3]'``,
``[gcs]``).

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> entry = folder / "made.bin"
>>> _ = entry.write_bytes(b"frames")
>>> one = Store((folder / "shared").as_uri(), folder / "one")
>>> one.put("shots", "k1", ".bin", entry)
True
>>> Store((folder / "shared").as_uri(), folder / "two").get("shots", "k1", ".bin").read_bytes()
b'frames'
>>> shutil.rmtree(folder)
"""

from __future__ import annotations

import posixpath
import shutil
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import AiprodError
from .files import atomic_path

__all__ = ["Store", "BACKENDS"]

#: the fsspec package each store needs, and the extra that installs it
BACKENDS = {"s3": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
            "file": (None, None)}
#: temporary keys of uploads in progress, under each stage's folder
PART = ".part"


class Store:
    """The cache entries at ``url`` (``s3://BUCKET/PREFIX``, ``gs://BUCKET/PREFIX``,
    ``file:///PATH``), with this machine's copies under ``local``. ``options`` go to the
    fsspec filesystem (an ``endpoint_url``, credentials); ``where`` names the setting the
    URL came from in errors."""

    def __init__(self, url: str, local: str | Path, options: dict[str, Any] | None = None,
                 where: str = "--cache") -> None:
        self.url, self.local, self.where = url, Path(local), where
        scheme, sep, _ = url.partition("://")
        if not sep or scheme not in BACKENDS:
            raise AiprodError(f"{url!r} is not a store URL: expected "
                              "s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or file:///PATH",
                              where=where)
        package, extra = BACKENDS[scheme]
        parts = urlsplit(url)
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise AiprodError(f"{url}: a file:// URL names a path on this machine "
                                  "(file:///PATH)", where=where)
            self.root = unquote(parts.path).rstrip("/") or "/"
        else:
            if not parts.netloc:
                raise AiprodError(f"{url}: no bucket named ({scheme}://BUCKET/PREFIX)",
                                  where=where)
            self.root = f"{parts.netloc}{unquote(parts.path)}".rstrip("/")
        try:
            import fsspec

            self.fs = fsspec.filesystem(scheme, **(options or {}))
        except ImportError:
            raise AiprodError(f"{scheme}:// needs the {package} package: pip install "
                              f"'aiprod-post[{extra}]'", where=where) from None
        if package == "gcsfs" and not getattr(self.fs, "on_google", True):
            # a GCS emulator (STORAGE_EMULATOR_HOST, an endpoint_url): gcsfs's default
            # filesystem asks Google's Storage Control API (gRPC) for each bucket's layout,
            # which an emulator does not serve, and retries it for a minute per call; the
            # JSON API's own filesystem is all a store uses
            from gcsfs.core import GCSFileSystem

            if type(self.fs) is not GCSFileSystem:
                self.fs = GCSFileSystem(**(options or {}))
        self._checked = False

    def __repr__(self) -> str:
        return f"Store({self.url!r}, {str(self.local)!r})"

    # ---- names
    def key(self, stage: str, key: str, suffix: str) -> str:
        """The entry's name on the store."""
        return posixpath.join(self.root, stage, f"{key}{suffix}")

    def local_path(self, stage: str, key: str, suffix: str) -> Path:
        """Where this machine keeps its copy of the entry (its folder made)."""
        path = self.local / stage / f"{key}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # ---- entries
    def exists(self, stage: str, key: str, suffix: str) -> bool:
        """Whether the store has the entry (asked of the store, not of a listing this
        process saw before another node wrote)."""
        remote = self.key(stage, key, suffix)
        self.fs.invalidate_cache(posixpath.dirname(remote))
        return self._call("look for", remote, self.fs.exists, remote)

    def get(self, stage: str, key: str, suffix: str) -> Path | None:
        """The local copy of the entry, fetched from the store (atomically: a reader of
        the local folder never sees half of it) if this machine has none; None if the
        store has none either."""
        path = self.local_path(stage, key, suffix)
        if path.exists():
            return path
        remote = self.key(stage, key, suffix)
        if not self.exists(stage, key, suffix):
            return None
        with atomic_path(path, suffix=".part") as tmp:
            self._call("fetch", remote, self.fs.get_file, remote, str(tmp))
        return path

    def put(self, stage: str, key: str, suffix: str, source: str | Path | None = None
            ) -> bool:
        """Publish the entry: ``source`` (else the local copy) is uploaded to a temporary
        key and renamed to the entry's name. A ``source`` elsewhere becomes the local
        copy too. False if the store had the entry already (another render or node made
        it: entries of one name have one content) and nothing was sent."""
        path = self.local_path(stage, key, suffix)
        source = Path(source) if source is not None else path
        if not source.is_file():
            raise AiprodError("no such cache entry to publish", source=source)
        if source != path and not path.exists():
            with atomic_path(path, suffix=".part") as tmp:
                shutil.copyfile(source, tmp)
        remote = self.key(stage, key, suffix)
        if self.exists(stage, key, suffix):
            return False
        part = posixpath.join(self.root, stage, PART, f"{key}{suffix}.{uuid.uuid4().hex}")
        if self.url.startswith("file:"):
            self.fs.makedirs(posixpath.dirname(part), exist_ok=True)
        try:
            self._call("upload", remote, self.fs.put_file, str(source), part)
            # a rename on a folder; on a bucket a server-side copy, whose object appears
            # whole (gcsfs's mv tries GCS's moveTo first, which emulators lack and gcsfs
            # retries for half a minute; s3fs's mv is this copy)
            publish = self.fs.mv if self.url.startswith("file:") else self.fs.copy
            self._call("publish", remote, publish, part, remote)
        finally:
            try:
                if self.fs.exists(part):
                    self.fs.rm(part)
            except Exception:  # noqa: BLE001 - a stale part is cleared later, not an error
                pass
        return True

    def remove_stale_parts(self, older_than: float = 24 * 3600) -> int:
        """Remove temporary keys left by uploads that died more than ``older_than``
        seconds ago; how many were removed."""
        removed = 0
        for part in self._call("list", self.root, self.fs.glob,
                               posixpath.join(self.root, "*", PART, "*")):
            try:
                modified = self.fs.modified(part).timestamp()
            except (NotImplementedError, FileNotFoundError):
                continue
            if time.time() - modified > older_than:
                self.fs.rm(part)
                removed += 1
        return removed

    # ---- errors that name the store
    def _call(self, doing: str, name: str, fn, *args):
        try:
            return fn(*args)
        except FileNotFoundError as exc:
            if doing in ("look for",):
                return False
            raise AiprodError(f"cannot {doing} {self._url_of(name)}: the store has no such "
                              f"bucket or folder ({exc})", where=self.where) from None
        except PermissionError as exc:
            raise AiprodError(f"cannot {doing} {self._url_of(name)}: permission denied "
                              f"({exc})", where=self.where) from None
        except OSError as exc:
            # a backend's own OSError (aiohttp's "Cannot connect to host HOST:PORT ...")
            # says more than its strerror; Python's says it without "[Errno N]"
            detail = str(exc)
            if detail.startswith("[Errno") and exc.strerror:
                detail = exc.strerror
            raise AiprodError(f"cannot {doing} {self._url_of(name)}: {detail}",
                              where=self.where) from None
        except Exception as exc:  # noqa: BLE001 - a backend's own (botocore, aiohttp)
            if isinstance(exc, AiprodError):
                raise
            raise AiprodError(f"cannot {doing} {self._url_of(name)}: "
                              f"{type(exc).__name__}: {exc}", where=self.where) from None

    def _url_of(self, name: str) -> str:
        scheme = self.url.partition("://")[0]
        return f"{scheme}://{name}" if scheme != "file" else Path(name).as_uri()

