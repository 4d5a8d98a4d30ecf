"""Waiting for a prediction: the waiting thread BRPOPs its job's own reply key.

No subscription and no listener thread: the worker LPUSHes the outcome to
`ml:reply:<job_id>` (`tasks.ml_results.reply_key`) and the request thread that waits
for it is the one that pops it, so nothing is handed between threads and concurrent
waiters pop in parallel, each on its own pooled connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from tasks.ml_results import REPLY_TTL_S, reply_key


class Replies:
    def __init__(self, client: redis.Redis, decode: Callable[[bytes], dict[str, Any]]):
        self._client = client
        self._decode = decode

    def wait(self, job_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The job's outcome (Celery result meta), or None when the wait ran out."""
        item = self._client.brpop([reply_key(job_id)], timeout=max(timeout_s, 0.001))
        return None if item is None else self._decode(item[1])

    def answer(self, outcomes: dict[str, bytes]) -> None:
        """Wake waiters with outcomes of their own (job id -> encoded meta): a failure to send, say."""
        with self._client.pipeline(transaction=False) as pipe:
            for job_id, encoded in outcomes.items():
                pipe.lpush(reply_key(job_id), encoded)
                pipe.expire(reply_key(job_id), REPLY_TTL_S)
            pipe.execute()
