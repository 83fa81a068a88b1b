"""The project's errors: each names the file and line (or JSON path) at fault.

The CLI prints an :class:`AiprodError` on one line and exits with status 2;
any other exception is an internal fault and exits with status 1.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["AiprodError", "ScriptError", "PlanError", "MediaError", "PathError"]


class AiprodError(Exception):
    """Bad input: a message that says where and what was expected.

    >>> str(AiprodError("expected a scene heading", source="a.fountain", line=3))
    'a.fountain:3: expected a scene heading'
    """

    def __init__(self, message: str, *, source: str | Path | None = None,
                 line: int | None = None, where: str | None = None) -> None:
        self.message = message
        self.source = str(source) if source is not None else None
        self.line = line
        self.where = where
        super().__init__(self.__str__())

    def __str__(self) -> str:
        place = self.source or ""
        if self.line is not None:
            place = f"{place}:{self.line}" if place else f"line {self.line}"
        if self.where:
            place = f"{place}: {self.where}" if place else self.where
        return f"{place}: {self.message}" if place else self.message

    def with_source(self, source: str | Path) -> "AiprodError":
        """Return the same error naming ``source`` as its file."""
        return type(self)(self.message, source=source, line=self.line, where=self.where)


class ScriptError(AiprodError):
    """A screenplay that cannot be read or parsed."""


class PlanError(AiprodError):
    """A shot plan that cannot be loaded or is inconsistent."""


class MediaError(AiprodError):
    """Audio, video or LUT input that cannot be read or used as asked."""


class PathError(AiprodError):
    """A name from data (an id, a title, a request) that would make a path outside its
    folder."""
