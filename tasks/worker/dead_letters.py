"""What a dead letter holds: the refused payload, as JSON that any payload can become.

A dead letter is written because its entry is bad, so its content must not be able to
stop the write: a NaN, a value JSON has no type for, or nesting deeper than a JSON
parser takes are written as text (and the letter says so) instead of raising.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 100
MAX_TEXT = 4096


def json_safe(payload: Any) -> Any:
    """`payload` itself when it is strict JSON, else a copy with the offending values as text."""
    try:
        json.dumps(payload, allow_nan=False)
        return payload
    except (ValueError, TypeError, RecursionError):
        pass
    return {"sanitized": True, "value": _safe(payload, 0)}


def _safe(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if depth >= MAX_DEPTH:
        return f"<nested deeper than {MAX_DEPTH} levels: {_text(value)}>"
    if isinstance(value, dict):
        return {str(key): _safe(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_safe(item, depth + 1) for item in value]
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "backslashreplace")
    return _text(value)


def _text(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a repr that recurses too deep or raises
        text = f"<{type(value).__name__}: unrepresentable ({type(exc).__name__})>"
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."
