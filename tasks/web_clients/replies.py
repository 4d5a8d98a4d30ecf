"""Waiting for a prediction: the waiting thread BRPOPs its job's own reply key.

No subscription, no listener thread and no hand-off between threads: the worker LPUSHes
the outcome to `ml:reply:<job_id>` (`tasks.contract.names.reply_key`) and the request thread
that waits for it pops it, on a connection of its own. On the direct lane the
request and the wait go out together, before either reply is read: one round trip
instead of two. When the lane and the replies live on one Redis server (in two of its
databases, as compose and `make run` set them), they go out as one packet on one
connection, which switches database for the wait and back: each sent packet costs the
web and Redis a system call and a wake-up, as much as the commands themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from tasks.contract import kept_connection, reply_key
from tasks.observability import timeline


class Replies:
    def __init__(
        self,
        client: redis.Redis,
        decode: Callable[[bytes], dict[str, Any]],
        lane_waits: redis.Redis | None = None,
    ):
        """`client`: the result backend's Redis, its socket timeout longer than any wait
        (BRPOP blocks); `lane_waits`: the lane's Redis with the same timeouts, used when it
        is the same server."""
        self._client = client
        self._decode = decode
        self._one_server = lane_waits if lane_waits is not None and _same_server(lane_waits, client) else None

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
        if self._one_server is not None:
            return self._send_and_wait_on_one(self._one_server, lane_key, message, job_id, timeout_s)
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

    def _send_and_wait_on_one(
        self, lane: redis.Redis, lane_key: str, message: bytes, job_id: str, timeout_s: float
    ) -> dict[str, Any] | None:
        lane_db, reply_db = _db(lane), _db(self._client)
        wait = ("BRPOP", reply_key(job_id), _positive(timeout_s))
        commands = [("LPUSH", lane_key, message)]
        commands += [("SELECT", reply_db), wait, ("SELECT", lane_db)] if reply_db != lane_db else [wait]
        connection = kept_connection(lane)
        try:
            packed = connection.pack_commands(commands)
            timeline.mark("pushed")  # before the push: the worker may take it before this thread goes on
            connection.send_packed_command(packed)
            # The push's reply comes back at once (a refusal raises here, before any wait),
            # while the worker predicts; then the outcome.
            for _ in commands[: commands.index(wait)]:
                connection.read_response()
            item = connection.read_response()
            timeline.mark("replied")
            for _ in commands[commands.index(wait) + 1 :]:
                connection.read_response()
        except BaseException:
            connection.disconnect()  # replies may be left unread, or the wrong database selected
            raise
        outcome = None if item is None else self._decode(item[1])
        timeline.mark("decoded")
        return outcome


_SERVER_AND_USER = ("host", "port", "path", "username", "password")


def _db(client: redis.Redis) -> int:
    return int(client.connection_pool.connection_kwargs.get("db") or 0)


def _same_server(one: redis.Redis, other: redis.Redis) -> bool:
    """Whether two clients reach the same server as the same user, differing in the database
    alone (one connection can then serve both, switching with SELECT)."""
    first, second = (client.connection_pool.connection_kwargs for client in (one, other))
    return all(first.get(name) == second.get(name) for name in _SERVER_AND_USER) and (
        one.connection_pool.connection_class is other.connection_pool.connection_class  # TLS or not
    )


def _positive(timeout_s: float) -> float:
    return max(timeout_s, 0.001)  # BRPOP's 0 means forever
