"""Coalesce the concurrent predictions of one process into few messages.

A web process waiting on many predictions at once sends them as one `ml.predict_batch`
message per model instead of one message each: the worker's consumer then pays its
per-message cost once per batch. Nothing waits for company: a prediction is sent at
once, by its own thread, unless `max_in_flight` batches are already on their way; what
arrives meanwhile goes out together, from the coalescer's thread, as soon as one of them
is answered.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pending:
    job_id: str
    model_name: str
    model_type: str | None
    features: Any


class Coalescer:
    def __init__(
        self,
        send: Callable[[str, list[Pending]], None],
        fail: Callable[[list[Pending], Exception], None],
        max_batch: int = 64,
        max_in_flight: int = 2,
    ):
        self.pid = os.getpid()
        self._send = send
        self._fail = fail
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queue: deque[Pending] = deque()
        self._in_flight: set[str] = set()
        self._batch_of: dict[str, str] = {}
        self._changed = threading.Condition()
        threading.Thread(target=self._run, name="prediction-coalescer", daemon=True).start()

    def add(self, item: Pending) -> None:
        with self._changed:
            if self._queue or len(self._in_flight) >= self._max_in_flight:
                self._queue.append(item)
                self._changed.notify()
                return
            batch_id = self._open([item])
        self._dispatch(batch_id, [item])  # an idle lane: no hand-off to another thread

    def settled(self, job_id: str) -> None:
        """A job was answered or given up on: its batch's slot is free (outcomes come together)."""
        with self._changed:
            batch_id = self._batch_of.pop(job_id, None)
            if batch_id in self._in_flight:
                self._in_flight.discard(batch_id)
                self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue or len(self._in_flight) >= self._max_in_flight:
                    self._changed.wait()
                batch = self._take()
                batch_id = self._open(batch)
            self._dispatch(batch_id, batch)

    def _open(self, batch: list[Pending]) -> str:
        batch_id = str(uuid.uuid4())
        self._in_flight.add(batch_id)
        for item in batch:
            self._batch_of[item.job_id] = batch_id
        return batch_id

    def _dispatch(self, batch_id: str, batch: list[Pending]) -> None:
        try:
            self._send(batch_id, batch)
        except Exception as exc:
            log.warning("could not send %d predictions: %s", len(batch), exc)
            self._fail(batch, exc)
            for item in batch:
                self.settled(item.job_id)

    def _take(self) -> list[Pending]:
        """The oldest waiting prediction and the others for the same model, in order."""
        first = self._queue[0]
        batch, rest = [], deque()
        while self._queue:
            item = self._queue.popleft()
            same = (item.model_name, item.model_type) == (first.model_name, first.model_type)
            (batch if same and len(batch) < self._max_batch else rest).append(item)
        self._queue = rest
        return batch
