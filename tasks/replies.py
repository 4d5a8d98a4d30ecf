"""One reply list per process: a thread BRPOPs it and wakes the request waiting for each job."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

import redis

log = logging.getLogger(__name__)


class Waiter:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.meta: dict[str, Any] | None = None
        self.error: Exception | None = None

    def wait(self, timeout_s: float) -> dict[str, Any] | None:
        """The job's stored outcome; None if the wait ran out; raises a sending error."""
        self.event.wait(timeout_s)
        if self.error is not None:
            raise self.error
        return self.meta


class ReplyListener:
    def __init__(self, client: redis.Redis, decode: Callable[[bytes], dict], on_reply: Callable[[str], None]):
        self.pid = os.getpid()
        self.key = f"ml:replies:{socket.gethostname()}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self._client = client
        self._decode = decode
        self._on_reply = on_reply
        self._waiters: dict[str, Waiter] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="prediction-replies", daemon=True).start()

    def expect(self, job_id: str) -> Waiter:
        waiter = Waiter()
        with self._lock:
            self._waiters[job_id] = waiter
        return waiter

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._waiters.pop(job_id, None)

    def fail(self, job_id: str, error: Exception) -> None:
        with self._lock:
            waiter = self._waiters.pop(job_id, None)
        if waiter is not None:
            waiter.error = error
            waiter.event.set()

    def _run(self) -> None:
        pause = threading.Event()
        while True:
            try:
                item = self._client.brpop([self.key], timeout=5)
            except redis.RedisError as exc:
                log.warning("prediction replies unreachable (%s); retrying", exc)
                pause.wait(0.5)
                continue
            if item is None:
                continue
            meta = self._decode(item[1])
            job_id = meta.get("task_id")
            self._on_reply(job_id)
            with self._lock:
                waiter = self._waiters.pop(job_id, None)
            if waiter is not None:  # otherwise its caller stopped waiting
                waiter.meta = meta
                waiter.event.set()
