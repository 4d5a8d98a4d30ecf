"""Reading a request's JSON body and query string, with JSON errors for bad ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from flask import request
from pydantic import BaseModel, ValidationError

from web.errors import ApiError, invalid

T = TypeVar("T")


def json_body() -> Any:
    raw = request.get_data(cache=True)  # beyond MAX_CONTENT_LENGTH: 413
    try:
        body = orjson.loads(raw)  # several times faster than the standard library
    except orjson.JSONDecodeError:
        # What orjson refuses but Python's json reads as it always did here: NaN and
        # Infinity, integers beyond 64 bits, UTF-16 and UTF-32 documents.
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        except RecursionError:  # nested deeper than Python's parser goes (orjson: 1024)
            raise ApiError(400, "malformed_json", "the request body is nested too deeply") from None
    if body is None:
        raise ApiError(400, "malformed_json", "the request body must be a JSON document")
    return body


def body_as(parse: Callable[[Any], T]) -> T:
    """The JSON body parsed by `parse` (a pydantic validator); 422 naming each bad field."""
    try:
        return parse(json_body())
    except ValidationError as exc:
        raise invalid(exc) from exc


def query(model: type[BaseModel]) -> Any:
    args = request.args.to_dict(flat=False)
    repeated = [name for name, values in args.items() if len(values) > 1]
    if repeated:
        raise ApiError(400, "invalid_query", f"query parameter given twice: {', '.join(repeated)}")
    try:
        return model.model_validate({name: values[0] for name, values in args.items()})
    except ValidationError as exc:
        raise invalid(exc, 400, "query string") from exc
