"""The trades workers hold unacknowledged, as they report them (`tasks.worker.held`)."""

from __future__ import annotations

import redis

from tasks.contract import HELD_PREFIX


def held_reports(client: redis.Redis) -> dict[str, int]:
    """`worker:task` -> messages it holds, as the workers reported them."""
    keys = list(client.scan_iter(match=HELD_PREFIX + "*", count=100))
    counts = client.mget(keys) if keys else []
    return {
        key.decode().removeprefix(HELD_PREFIX): int(count)
        for key, count in zip(keys, counts, strict=True)
        if count is not None
    }
