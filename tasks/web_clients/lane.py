"""The web's side of the direct lane (`tasks.worker.lane_server` serves it): one small JSON
document per synchronous prediction, pushed onto `LANE_KEY` in the broker's Redis.

A message is `{"id", "model_name", "model_type", "items": [[job_id, features], ...], "expires"}`,
`expires` in seconds since the epoch, plus `"explain": true` when contributions are asked
for and the `"request_id"` of the HTTP request; each job's outcome goes to its reply key.
"""

from __future__ import annotations

import json

import orjson


def encode_request(
    batch_id: str,
    model_name: str,
    model_type: str | None,
    items: list,
    expires: float,
    nan_free: bool = False,
    *,
    explain: bool = False,
    request_id: str | None = None,
) -> bytes:
    """The lane message. `nan_free`: the caller knows the features hold no NaN, so orjson
    (which would write NaN as null) may encode them, several times faster."""
    message = {
        "id": batch_id,
        "model_name": model_name,
        "model_type": model_type,
        "items": items,
        "expires": expires,
    }
    if explain:
        message["explain"] = True
    if request_id is not None:
        message["request_id"] = request_id
    if nan_free:
        return orjson.dumps(message)
    return json.dumps(message, separators=(",", ":")).encode()
