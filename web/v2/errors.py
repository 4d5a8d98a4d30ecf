"""Errors on /v2 paths in the protocol's shape, `{"error": "<message>"}`.

The app's own handlers decide the status and the message of every failure (401 from the
token check, 404 of an unknown route, 413, 503 with Retry-After...); on /v2 paths their
`{"error": {"code", "message", "details"}}` body is rewritten after the fact, so no
failure, wherever it is raised, escapes the protocol's shape.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Flask, Response, request

log = logging.getLogger(__name__)

# The protocol knows 400 for a request it cannot serve; 422 is this API's finer "valid JSON,
# wrong for the model", which V2 clients do not expect.
STATUS_IN_PROTOCOL = {422: 400}


def answer_errors_in_protocol_shape(app: Flask, prefix: str) -> None:
    @app.after_request
    def _protocol_error(response: Response) -> Response:
        if response.status_code < 400 or not _under(request.path, prefix) or not response.is_json:
            return response
        body = response.get_json(silent=True)
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return response  # already in the protocol's shape
        response.set_data(orjson.dumps({"error": protocol_message(error)}))
        response.status_code = STATUS_IN_PROTOCOL.get(response.status_code, response.status_code)
        return response


def protocol_message(error: dict[str, Any]) -> str:
    """The message, with what the details add that a person needs (each bad field, the job id)."""
    message = str(error.get("message") or error.get("code") or "error")
    details = error.get("details")
    if isinstance(details, list):
        fields = [f"{item['field']}: {item['message']}" for item in details if isinstance(item, dict)]
        if fields:
            message = f"{message} ({'; '.join(fields[:5])})"
    elif isinstance(details, dict) and "expected" in details and "received" in details:
        message = f"{message} (expected {details['expected']}, received {details['received']})"
    return message


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")
