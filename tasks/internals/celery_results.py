"""Celery's result metadata, written directly.

A worker stores each prediction's outcome the way Celery's Redis backend stores a result
(so `AsyncResult` reads it), but Celery's own path (`Backend.store_result`, through
`_get_result_meta`) costs more than a small prediction. The fields here are those of
`Backend._get_result_meta` in Celery 5.6 without `result_extended`.
"""

from __future__ import annotations

from typing import Any

import orjson
from celery import Celery

from tasks.internals import written_for

written_for("celery", "5.6", __name__)


def result_meta(app: Celery, task_id: str, state: str, result: Any, done: str | None) -> tuple[bytes, bytes]:
    """The backend key and the encoded meta of `task_id`'s result."""
    meta = {"status": state, "result": result, "traceback": None, "children": None, "date_done": done}
    meta["task_id"] = task_id
    return app.backend.get_key_for_task(task_id), orjson.dumps(meta)
