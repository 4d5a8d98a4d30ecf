"""Waiting for a prediction: the waiting thread BRPOPs its job's own reply key.

No subscription, no listener thread and no hand-off between threads: the worker LPUSHes
the outcome to `ml:reply:<job_id>` (`tasks.contract.names.reply_key`) and the request thread
that waits for it pops it, on a connection of its own. On the direct lane the
request and the wait go out together, on two connections, before either reply is read:
one round trip instead of two. (One connection switching between the lane's database and
the replies' with SELECT saves a packet but costs as much in packing and reading: measured
with bench/timeline.py, no faster.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from tasks.contract import kept_connection, reply_key
from tasks.observability import timeline


class Replies:
    def __init__(self, client: redis.Redis, decode: Callable[[bytes], dict[str, Any]]):
        self._client = client  # the result backend's Redis, no socket timeout: BRPOP blocks
        self._decode = decode

    def wait(self, job_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The job's outcome (Celery result meta), or None when the wait ran out."""
        item = self._client.brpop([reply_key(job_id)], timeout=_positive(timeout_s))
        return None if item is None else self._decode(item[1])

    def send_and_wait(
        self, lane: redis.Redis, lane_key: str, message: bytes, job_id: str, timeout_s: float
    ) -> dict[str, Any] | None:
        """LPUSH `message` to the lane and wait for the job's outcome, in one round trip."""
        try:
            return self._send_and_wait(lane, lane_key, message, job_id, timeout_s)
        except redis.ConnectionError:
            # A kept connection that Redis closed (a restart): once more on fresh ones.
            # Should the first push have landed, the job runs twice; its outcome is the same.
            return self._send_and_wait(lane, lane_key, message, job_id, timeout_s)

    def _send_and_wait(
        self, lane: redis.Redis, lane_key: str, message: bytes, job_id: str, timeout_s: float
    ) -> dict[str, Any] | None:
        sender, waiter = kept_connection(lane), kept_connection(self._client)
        try:
            timeline.mark("pushed")  # before the push: the worker may take it before this thread goes on
            sender.send_command("LPUSH", lane_key, message)
            waiter.send_command("BRPOP", reply_key(job_id), _positive(timeout_s))
            # The outcome first: by then the push's reply is in, so the thread sleeps once.
            # Should the push have been refused (Redis out of memory), the wait runs out
            # first and the refusal is raised then.
            item = waiter.read_response()
            timeline.mark("replied")
            sender.read_response()
        except BaseException:
            # Either connection may hold an unread reply: start both afresh.
            sender.disconnect()
            waiter.disconnect()
            raise
        outcome = None if item is None else self._decode(item[1])
        timeline.mark("decoded")
        return outcome


def _positive(timeout_s: float) -> float:
    return max(timeout_s, 0.001)  # BRPOP's 0 means forever
