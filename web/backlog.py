"""What waits, read when /metrics is scraped: queue depths in the broker, the spools' size.

Both reads are cheap and bounded: one pipelined round trip to Redis with a short
timeout (a broker that does not answer shows as `celery_broker_up 0`, it does not hang
the scrape), and the spool files are counted incrementally (only bytes appended since
the last scrape are read).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry

from db import ACTIVE, Spool
from tasks.contract import LANE_KEY, OUTBOX_SPOOL, PREDICT_QUEUE, REPLAY_SPOOL, TRADES_QUEUE, is_redis_url

SPOOLS = (REPLAY_SPOOL, OUTBOX_SPOOL)
# kombu's Redis transport keeps a queue's prioritised messages in lists of their own.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
# queue label -> the Redis lists that hold its waiting messages
QUEUES = {
    PREDICT_QUEUE: [f"{PREDICT_QUEUE}{suffix}" for suffix in _PRIORITY_SUFFIXES],
    TRADES_QUEUE: [f"{TRADES_QUEUE}{suffix}" for suffix in _PRIORITY_SUFFIXES],
    LANE_KEY: [LANE_KEY],  # the direct lane's waiting predictions
}
_CHUNK = 1 << 20


class BacklogCollector(Collector):
    def __init__(self, broker_url: str, spool_dir: Path, timeout_s: float = 0.5):
        self._broker = None
        if is_redis_url(broker_url):
            self._broker = redis.Redis.from_url(
                broker_url,
                socket_connect_timeout=timeout_s,
                socket_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        self._spools = {name: Spool(spool_dir / name) for name in SPOOLS}
        self._lines = LineCounter()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._broker is not None:
            yield from self._queue_metrics()
        size = GaugeMetricFamily(
            "journal_spool_bytes", "Bytes of entries waiting in a spool", labels=["spool"]
        )
        waiting = GaugeMetricFamily(
            "journal_spool_waiting_entries", "Entries waiting in a spool", labels=["spool"]
        )
        for name, spool in self._spools.items():
            entries, size_bytes = self._lines.count(spool.pending_files())
            size.add_metric([name], size_bytes)
            waiting.add_metric([name], entries)
        yield size
        yield waiting

    def _queue_metrics(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("celery_broker_up", "1 when the broker answered this scrape, else 0")
        depth = GaugeMetricFamily(
            "celery_queue_length", "Messages waiting in a Celery queue", labels=["queue"]
        )
        try:
            with self._broker.pipeline(transaction=False) as pipe:
                for keys in QUEUES.values():
                    for key in keys:
                        pipe.llen(key)
                lengths = iter(pipe.execute())
        except (redis.ConnectionError, redis.TimeoutError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for queue, keys in QUEUES.items():
            depth.add_metric([queue], sum(next(lengths) for _ in keys))
        yield up
        yield depth


class LineCounter:
    """Counts the lines of spool files from an offset.

    Sealed segments never change (their names are unique), so what was counted of one is
    remembered and only what a scrape has not seen is read; the active file is short (the
    drain seals it every few seconds) and is read each time.
    """

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[int, int, int, int]] = {}  # path -> inode, start, end, lines
        self._lock = threading.Lock()  # scrapes may run on several threads of a web process

    def count(self, files: Iterable[tuple[Path, int]]) -> tuple[int, int]:
        """Lines and bytes after each file's start offset, over all files."""
        lines = size = 0
        with self._lock:
            seen = {}
            for path, start in files:
                try:
                    with path.open("rb") as handle:
                        inode = os.fstat(handle.fileno()).st_ino
                        known = self._seen.get(path)
                        end, counted = start, 0
                        if known is not None and known[:2] == (inode, start):
                            end, counted = known[2], known[3]
                        handle.seek(end)
                        while chunk := handle.read(_CHUNK):
                            counted += chunk.count(b"\n")
                            end += len(chunk)
                except FileNotFoundError:
                    continue
                if path.name != ACTIVE:
                    seen[path] = (inode, start, end, counted)
                lines += counted
                size += max(0, end - start)
            self._seen = seen
        return lines, size
