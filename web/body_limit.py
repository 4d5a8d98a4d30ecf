"""MAX_REQUEST_BYTES for request bodies sent without a Content-Length (chunked uploads).

werkzeug answers 413 before reading a body whose Content-Length is over Flask's
MAX_CONTENT_LENGTH. A chunked body it reads only up to the limit, then stops as if the
body had ended there: the app would see it cut at MAX_REQUEST_BYTES (a 400 for broken
JSON; a 200 for a JSON document followed by padding). Under gunicorn and granian alike,
which both announce that they end chunked streams themselves (`wsgi.input_terminated`).
Here reading past the limit is the 413 the JSON error handlers answer; the rest of the
body is never read (the server closes the connection after the answer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from flask import Flask
from werkzeug.exceptions import RequestEntityTooLarge


class BoundedBodies:
    """WSGI middleware: a body without Content-Length that goes on past the app's
    MAX_CONTENT_LENGTH raises RequestEntityTooLarge when it is read."""

    def __init__(self, app: Flask, wsgi_app: Callable[..., Iterable[bytes]]):
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        limit = self.app.config.get("MAX_CONTENT_LENGTH")
        if limit is not None and not environ.get("CONTENT_LENGTH") and "wsgi.input" in environ:
            environ["wsgi.input"] = _BoundedInput(environ["wsgi.input"], limit)
        return self.wsgi_app(environ, start_response)


class _BoundedInput:
    """A WSGI input stream that refuses to yield more than `limit` bytes in all.

    werkzeug never asks it for more than the limit: so when a read reaches the limit
    exactly, one more byte is asked of the server's stream; any byte there is the 413.
    Lines are cut from reads too (granian's own readline ignores its size argument).
    """

    def __init__(self, stream: IO[bytes], limit: int):
        self._stream = stream
        self._left = limit
        self._pending = b""  # read from the stream, not yet given out (readline)

    def _pull(self, size: int) -> bytes:
        data = self._stream.read(size)
        self._left -= len(data)
        if self._left < 0 or (self._left == 0 and data and self._stream.read(1)):
            raise RequestEntityTooLarge()
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self._left + len(self._pending) + 1  # never the whole of an unbounded body
        data, self._pending = self._pending[:size], self._pending[size:]
        if len(data) < size:
            data += self._pull(size - len(data))
        return data

    def readline(self, size: int | None = -1) -> bytes:
        line = b""
        while size is None or size < 0 or len(line) < size:
            chunk = self.read(65536 if size is None or size < 0 else min(65536, size - len(line)))
            if not chunk:
                break
            end = chunk.find(b"\n") + 1
            if end:
                line, self._pending = line + chunk[:end], chunk[end:] + self._pending
                break
            line += chunk
        return line

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(self)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line
