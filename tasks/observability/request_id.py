"""The id of the HTTP request a piece of work belongs to, carried from the web into Celery.

The web binds it for the duration of a request; `tasks.contract.publisher` copies it into the
headers of every task message it sends (`request_id`), and the worker binds it again
while it handles that message, so log lines on both sides carry the same id.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

#: The Celery message header that carries the id.
HEADER = "request_id"

_VALID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def current() -> str | None:
    return _current.get()


def accept_or_new(given: str | None) -> str:
    """A caller's id when it is sane (printable, at most 128 characters), else a new one."""
    if given and _VALID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def of_message(headers: Mapping[str, Any] | None) -> str | None:
    """The id a task message carries; anything malformed is ignored."""
    value = (headers or {}).get(HEADER)
    return value if isinstance(value, str) and _VALID.fullmatch(value) else None


def bind(request_id: str | None) -> Token:
    """Make `request_id` current; hand the token back to `unbind`."""
    return _current.set(request_id)


def unbind(token: Token) -> None:
    _current.reset(token)


@contextmanager
def bound(request_id: str | None) -> Iterator[str | None]:
    token = bind(request_id)
    try:
        yield request_id
    finally:
        unbind(token)
