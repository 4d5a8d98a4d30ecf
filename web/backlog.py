"""What waits, read when /metrics is scraped: queue depths in the broker, the spools' size.

Both reads are cheap and bounded: the broker's depths (`BrokerQueues`: one pipelined
round trip to Redis, or a passive declare per queue on RabbitMQ) with a short timeout (a
broker that does not answer shows as `celery_broker_up 0`, it does not hang the scrape),
and the spool files are counted incrementally (only bytes appended since the last scrape
are read).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from db import ACTIVE, Spool
from tasks.contract import OUTBOX_SPOOL, REPLAY_SPOOL
from tasks.web_clients import BrokerDown, BrokerQueues

SPOOLS = (REPLAY_SPOOL, OUTBOX_SPOOL)
_CHUNK = 1 << 20


class BacklogCollector(Collector):
    def __init__(self, broker_url: str, spool_dir: Path, result_url: str = "", timeout_s: float = 0.5):
        self._queues = BrokerQueues(broker_url, result_url, timeout_s=timeout_s)
        self._spools = {name: Spool(spool_dir / name) for name in SPOOLS}
        self._lines = LineCounter()

    def collect(self) -> Iterator[GaugeMetricFamily]:
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
            depths = self._queues.depths()
        except BrokerDown:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for queue, count in depths.items():
            depth.add_metric([queue], count)
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
