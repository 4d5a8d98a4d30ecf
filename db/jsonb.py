"""JSON as the jsonb columns take it, for the writers and the log's entries alike: light to
import (the bot's client loads `db.entries`, which uses it, without SQLAlchemy's ORM)."""

import json
import math
from datetime import datetime
from typing import Any

import orjson


def json_text(value: object) -> str:
    """JSON for a jsonb column: NaN and infinities as null (jsonb has none), datetimes in
    ISO 8601."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits, which jsonb holds and orjson does not write
        return json.dumps(_finite(value), default=datetime.isoformat)


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities as None, as orjson writes them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    return value
