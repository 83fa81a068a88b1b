"""Request bodies read within a byte limit, however they are sent.

A ``Content-Length`` check alone lets a chunked body (no length) grow without bound;
:class:`BodyLimit` counts the bytes as the server reads them and stops the request at the
limit with 413, so nothing larger ever sits in memory or on disk.
"""

from __future__ import annotations

import json
from typing import Any, Callable

__all__ = ["BodyLimit", "BodyTooLarge", "parse_json_object", "MAX_JSON_DEPTH"]

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
