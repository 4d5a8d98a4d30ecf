"""What each answered request leaves behind, its access line and its latency observation,
written by a thread of the web process, a batch every FLUSH_S.

Written on the request's thread, the two cost a prediction 100 to 150 µs of the web's CPU
(logging's machinery and prometheus_client's file, run cold between requests) and sat on
the answer's path; written in batches they cost about half, after the answer.

Nothing is lost to the deferral: a scrape of /metrics writes this process's pending
requests first, and a process that ends writes the rest: at exit, and at the end of a
multiprocessing child (granian's workers), which skips atexit.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass

from prometheus_client import Histogram

from tasks.internals.process_exit import at_exit
from tasks.observability.metrics import ensure_multiprocess_directory

FLUSH_S = 0.05
YIELD_EVERY = 8  # lines written between two hand-overs of the GIL

access_log = logging.getLogger("web.access")
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

ensure_multiprocess_directory()  # before the histogram is defined (prometheus_client's multiprocess mode)

REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


@dataclass(frozen=True, slots=True)
class Answered:
    at: float  # time.time() when the response was ready
    duration_s: float
    method: str
    path: str
    route: str  # the URL rule's pattern (label values stay few), or "unmatched"
    status: int
    request_id: str | None


class AnsweredRequests:
    """The requests answered in this process and not written yet."""

    def __init__(self) -> None:
        self._pending: collections.deque[Answered] = collections.deque()
        self._writing = threading.Lock()
        self._owner: int | None = None  # the process whose thread writes (none after a fork)

    def add(self, answered: Answered) -> None:
        self._pending.append(answered)
        if self._owner != os.getpid():
            self._start()

    def write(self) -> None:
        """Write what is pending now (the access lines in order)."""
        with self._writing:
            for written in range(1, len(self._pending) + 1):
                _write(self._pending.popleft())
                if written % YIELD_EVERY == 0:
                    # Let a request thread that waits for the GIL run: a batch held it for
                    # a millisecond or more at a time, a pause a request would wait out.
                    time.sleep(0)

    def _start(self) -> None:
        with self._writing:
            if self._owner == os.getpid():
                return
            self._owner = os.getpid()
            threading.Thread(target=self._run, name="answered-requests", daemon=True).start()
            at_exit(self.write)

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_S)
            try:
                self.write()
            except Exception:  # a handler that fails must not end the thread
                logging.getLogger(__name__).exception("writing the answered requests failed")


def _write(answered: Answered) -> None:
    method = answered.method if answered.method in _METHODS else "other"  # label values stay few
    REQUEST_LATENCY.labels(method, answered.route, str(answered.status)).observe(answered.duration_s)
    if not access_log.isEnabledFor(logging.INFO):
        return
    elapsed_ms = answered.duration_s * 1000
    record = access_log.makeRecord(
        access_log.name,
        logging.INFO,
        __file__,
        0,
        "%s %s %d %.1fms",
        (answered.method, answered.path, answered.status, elapsed_ms),
        None,
        extra={
            "method": answered.method,
            "path": answered.path,
            "status": answered.status,
            "duration_ms": round(elapsed_ms, 3),
            "request_id": answered.request_id,
        },
    )
    # The line carries the time the request was answered, not the time it is written.
    record.created = answered.at
    record.msecs = answered.at % 1 * 1000
    access_log.handle(record)


ANSWERED = AnsweredRequests()
