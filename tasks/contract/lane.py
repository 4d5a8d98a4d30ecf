"""The direct lane's message: one waiting prediction, its rows already checked by the web.

A message is a JSON header, a newline, then the rows' bytes: the numpy array the web
built when it checked the request (C order, little-endian float64 rows, or float32
sequences), so neither side writes or parses JSON numbers for it, and the worker only
checks that it fits the model it holds (`models.validation.fitted_array`). The header:
`{"id", "model", "type", "dtype", "shape", "expires"}`, with `"explain": true` when
contributions are asked for, the HTTP request's `"request_id"`, the `"version"` asked for
and the `"routing_key"` (a canary's sticky key) when given; `model` is the file
name the web resolved, `expires` seconds since the epoch. The job's outcome goes to its
reply key (`names.reply_key`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy
import orjson

_DTYPES = {"<f8": numpy.dtype("<f8"), "<f4": numpy.dtype("<f4")}
_MAX_DIMENSIONS = 3


class MalformedLaneMessage(ValueError):
    """A lane message that cannot be read; `job_id` is its id when the header has one."""

    def __init__(self, message: str, job_id: str | None = None):
        super().__init__(message)
        self.job_id = job_id


@dataclass(frozen=True)
class LaneRequest:
    job_id: str
    model_name: str
    model_type: str | None
    features: numpy.ndarray
    expires: float
    explain: bool = False
    request_id: str | None = None
    model_version: str | None = None
    routing_key: str | None = None


def encode(request: LaneRequest) -> bytes:
    array = request.features
    if array.dtype.str not in _DTYPES or not array.flags.c_contiguous:
        raise ValueError(f"lane rows must be C-ordered float64 or float32, not {array.dtype}")
    header = {
        "id": request.job_id,
        "model": request.model_name,
        "type": request.model_type,
        "dtype": array.dtype.str,
        "shape": array.shape,
        "expires": request.expires,
    }
    if request.explain:
        header["explain"] = True
    if request.request_id is not None:
        header["request_id"] = request.request_id
    if request.model_version is not None:
        header["version"] = request.model_version
    if request.routing_key is not None:
        header["routing_key"] = request.routing_key
    # orjson escapes every newline inside the header: the first one ends it.
    return orjson.dumps(header) + b"\n" + array.tobytes()


def decode(raw: bytes) -> LaneRequest:
    """The request of a lane message; MalformedLaneMessage when it cannot be read."""
    head, newline, body = raw.partition(b"\n")
    try:
        header = orjson.loads(head)
        job_id = header["id"] if isinstance(header, dict) else None
    except (orjson.JSONDecodeError, KeyError):
        raise MalformedLaneMessage("no readable header") from None
    if not isinstance(job_id, str) or not newline:
        raise MalformedLaneMessage("no job id, or no rows")
    try:
        dtype = _DTYPES[header["dtype"]]
        shape = tuple(header["shape"])
        if not 2 <= len(shape) <= _MAX_DIMENSIONS or not all(type(n) is int and n > 0 for n in shape):
            raise ValueError(f"shape {list(shape)}")
        features = numpy.frombuffer(body, dtype=dtype).reshape(shape)  # a size mismatch raises
        return LaneRequest(
            job_id=job_id,
            model_name=_text(header["model"]),
            model_type=None if header.get("type") is None else _text(header["type"]),
            features=features,
            expires=float(header["expires"]),
            explain=header.get("explain") is True,
            request_id=header.get("request_id"),  # checked where it is bound (request_id.of_message)
            model_version=None if header.get("version") is None else _text(header["version"]),
            routing_key=None if header.get("routing_key") is None else _text(header["routing_key"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedLaneMessage(f"unreadable message {job_id!r}: {exc}", job_id) from None


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {type(value).__name__}")
    return value
