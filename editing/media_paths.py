"""How an export names its media: absolute paths, ``file://`` URLs, relative, or re-rooted.

DaVinci Resolve 20 does not relink ``file://`` URLs in an .otio but does relink
plain absolute paths (OpenTimelineIO issue 1985), so an .otio names its media by
plain path unless asked for URLs. The XML formats and AAF need URLs (FCP 7 XML
``pathurl``, FCPXML ``src``, AAF ``NetworkLocator``); EDL carries a plain path
in a remark.

``relative`` writes each path relative to the exported file's folder, so the
timeline and its media move together; ``media_root`` moves the media to another
machine's folder (``OLD=NEW`` replaces the prefix ``OLD``; a bare ``NEW``
replaces the folder all the media share).

>>> p = MediaPaths(Path("/out"), media_root="/media=/Volumes/show")
>>> p.path(Path("/media/shots/1A.mov"))
'/Volumes/show/shots/1A.mov'
>>> p.url(Path("/media/shots/Café 1A.mov"))
'file:///Volumes/show/shots/Caf%C3%A9%201A.mov'
>>> MediaPaths(Path("/out"), relative=True).url(Path("/out/shots/1A 2.mov"))
'shots/1A%202.mov'
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aiprod_post.errors import AiprodError

__all__ = ["MediaPaths"]


@dataclass
class MediaPaths:
    folder: Path  # where the exported file goes
    relative: bool = False
    media_root: str | None = None
    common: Path | None = None  # the media's shared folder, for a bare ``media_root``

    def __post_init__(self) -> None:
        if self.relative and self.media_root:
            raise AiprodError("--relative and --media-root contradict each other: choose one",
                              where="--media-root")
        if self.media_root is not None and not self.media_root.strip():
            raise AiprodError("--media-root is empty: expected NEW or OLD=NEW",
                              where="--media-root")

    def with_media(self, paths: list[Path]) -> "MediaPaths":
        """The same policy, knowing every media path (for a bare ``media_root``)."""
        absolute = [str(Path(p).absolute()) for p in paths]
        common = Path(os.path.commonpath(absolute)) if absolute else None
        if common is not None and len(absolute) == 1:
            common = common.parent
        return MediaPaths(self.folder, self.relative, self.media_root, common)

    def path(self, media: Path) -> str:
        """The media's path as the export should say it (plain, not percent-encoded)."""
        media = Path(media).absolute()
        if self.relative:
            return Path(os.path.relpath(media, Path(self.folder).absolute())).as_posix()
        if self.media_root:
            old, sep, new = self.media_root.partition("=")
            if not sep:
                old, new = str(self.common or media.parent), self.media_root
            try:
                rest = media.relative_to(old)
            except ValueError:
                return str(media)  # not under the old root: left where it is
            return str(PurePosixPath(new) / rest.as_posix()) if new.startswith("/") \
                else str(Path(new) / rest)
        return str(media)

    def url(self, media: Path) -> str:
        """The media as a URL: ``file://`` and percent-encoded, or relative and encoded."""
        p = self.path(media)
        if self.relative:
            return urllib.parse.quote(p)
        if not p.startswith("/"):  # a Windows root (D:\\show): file:///D:/show
            p = "/" + p.replace("\\", "/")
        return "file://" + urllib.parse.quote(p)
