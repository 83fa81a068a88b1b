"""Request bodies read within a byte limit, however they are sent.

A ``Content-Length`` check alone lets a chunked body (no length) grow without bound;
:class:`BodyLimit` counts the bytes as the server reads them and stops the request at the
limit with 413, so nothing larger ever sits in memory or on disk. A multipart upload is
parsed as it arrives (:func:`read_multipart`): each file goes straight to a file in a folder
of the caller's choosing, each part within its own limit, counted while it is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["BodyLimit", "BodyTooLarge", "parse_json_object", "MAX_JSON_DEPTH",
           "UploadedFile", "read_multipart", "FormRefused"]

MAX_JSON_DEPTH = 64


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class BodyLimit:
    """ASGI middleware: a request body of more than ``limit_for(content_type)`` bytes gets 413."""

    def __init__(self, app, limit_for: Callable[[str], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        limit = self.limit_for(headers.get("content-type", ""))
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:
            if not started:
                await _too_large(send, exc.limit)


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"detail": f"request body is over the limit of {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict)
                                                  else item))
    return deepest


def parse_json_object(raw: bytes) -> dict:
    """A JSON object from ``raw``; ValueError with a message for the client otherwise."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ValueError(f"body is not JSON this service reads: it nests deeper than "
                         f"{MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object with 'script' or 'plan'")
    if _depth(body) > MAX_JSON_DEPTH:
        raise ValueError(f"body nests deeper than {MAX_JSON_DEPTH} levels")
    try:  # "\ud800" is valid JSON but no text a file can hold
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"body holds text that is not Unicode (a lone surrogate "
                         f"{exc.object[exc.start:exc.end]!a})") from None
    return body


class FormRefused(ValueError):
    """A multipart body this service does not take; the message is for the client."""


@dataclass
class UploadedFile:
    """A file part: on disk at ``path`` (file parts with a ``spool`` limit) or in ``data``."""

    name: str
    filename: str
    size: int = 0
    sha256: str = ""
    path: Path | None = None
    data: bytearray = field(default_factory=bytearray)


async def read_multipart(stream: AsyncIterator[bytes], content_type: str,
                         file_limits: dict[str, int], spool: Path, spooled: frozenset[str],
                         field_limit: int = 10_000, max_parts: int = 20
                         ) -> tuple[list[tuple[str, str]], dict[str, UploadedFile]]:
    """Parse a multipart/form-data body as it arrives: (text fields, files by field name).

    File parts named in ``file_limits`` are taken (others refused), each within its limit;
    those in ``spooled`` are written to a new file in ``spool`` (the caller moves or removes
    it), the others kept in memory. FormRefused says what is wrong.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise FormRefused("multipart body without a boundary")
    fields: list[tuple[str, str]] = []
    files: dict[str, UploadedFile] = {}
    part: dict[str, Any] = {}
    header = [b"", b""]

    def begin() -> None:
        if len(fields) + len(files) >= max_parts:
            raise FormRefused(f"more than {max_parts} parts")
        part.clear()
        part["headers"] = {}

    def header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def header_end() -> None:
        part["headers"][header[0].decode("latin-1").lower()] = header[1]
        header[0], header[1] = b"", b""

    def headers_done() -> None:
        _, options = parse_options_header(part["headers"].get("content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            part.update(kind="field", name=name, data=bytearray())
            return
        if name not in file_limits:
            raise FormRefused(f"unexpected file field {name!r}: expected "
                              f"{' or '.join(map(repr, file_limits))}")
        if name in files:
            raise FormRefused(f"more than one file in field {name!r}")
        upload = UploadedFile(name, options[b"filename"].decode("utf-8", "replace"))
        if name in spooled:
            upload.path = spool / f"{uuid.uuid4().hex}.upload"
            part["fh"] = open(upload.path, "xb")
        files[name] = upload
        part.update(kind="file", name=name, upload=upload, hash=hashlib.sha256())

    def data(chunk: bytes, start: int, end: int) -> None:
        piece = chunk[start:end]
        if part["kind"] == "field":
            part["data"] += piece
            if len(part["data"]) > field_limit:
                raise FormRefused(f"field {part['name']!r} is over {field_limit} bytes")
            return
        upload: UploadedFile = part["upload"]
        upload.size += len(piece)
        limit = file_limits[upload.name]
        if upload.size > limit:
            raise FormRefused(f"{upload.name} is over the limit of {limit} bytes")
        part["hash"].update(piece)
        if "fh" in part:
            part["fh"].write(piece)
        else:
            upload.data += piece

    def end() -> None:
        if part["kind"] == "field":
            fields.append((part["name"], part["data"].decode("utf-8", "replace")))
            return
        part["upload"].sha256 = part["hash"].hexdigest()
        if "fh" in part:
            part.pop("fh").close()

    parser = MultipartParser(boundary, {
        "on_part_begin": begin, "on_header_field": header_field,
        "on_header_value": header_value, "on_header_end": header_end,
        "on_headers_finished": headers_done, "on_part_data": data, "on_part_end": end})
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        _discard(part, files)
        raise FormRefused(f"multipart body is malformed: {exc}") from None
    except BaseException:
        _discard(part, files)
        raise
    return fields, files


def _discard(part: dict, files: dict[str, UploadedFile]) -> None:
    if "fh" in part:
        part.pop("fh").close()
    for upload in files.values():
        if upload.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(upload.path)
