"""Trades a worker holds unacknowledged because neither the database nor its spool takes
them: each trades worker reports its count in the results' Redis, and /readyz adds them up.

A report expires unless renewed (the worker renews it each time it tries them again), so
a worker that vanished stops counting.
"""

from __future__ import annotations

import redis

KEY_PREFIX = "journal:held:"
REPORT_TTL_S = 90


def report_held(client: redis.Redis, reporter: str, count: int) -> None:
    """Record that `reporter` (worker:task) holds `count` messages; raises RedisError."""
    if count:
        client.set(KEY_PREFIX + reporter, count, ex=REPORT_TTL_S)
    else:
        client.delete(KEY_PREFIX + reporter)


def held_reports(client: redis.Redis) -> dict[str, int]:
    """`worker:task` -> messages it holds, as the workers reported them."""
    keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=100))
    counts = client.mget(keys) if keys else []
    return {
        key.decode().removeprefix(KEY_PREFIX): int(count)
        for key, count in zip(keys, counts, strict=True)
        if count is not None
    }
