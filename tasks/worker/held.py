"""Trades a worker holds unacknowledged because neither the database nor its spool takes
them: each trades worker reports its count in the results' Redis, and /readyz adds them up
(`tasks.web_clients.held`).

A report expires unless renewed (the worker renews it each time it tries them again), so
a worker that vanished stops counting.
"""

from __future__ import annotations

import redis

from tasks.contract import HELD_PREFIX

REPORT_TTL_S = 90


def report_held(client: redis.Redis, reporter: str, count: int) -> None:
    """Record that `reporter` (worker:task) holds `count` messages; raises RedisError."""
    if count:
        client.set(HELD_PREFIX + reporter, count, ex=REPORT_TTL_S)
    else:
        client.delete(HELD_PREFIX + reporter)
