"""A small HTTP client for the servers the tests start (every status is an answer, not an error)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from werkzeug.datastructures import Headers


@dataclass
class Answer:
    status: int
    headers: Headers  # case-insensitive, as HTTP's are (granian sends them in lower case)
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    url: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 20,
) -> Answer:
    """One request on a connection of its own (so that the web server's workers share them out)."""
    parts = urlsplit(url)
    headers = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=data, headers=headers)
        response = connection.getresponse()
        return Answer(response.status, Headers(response.getheaders()), response.read())
    finally:
        connection.close()
