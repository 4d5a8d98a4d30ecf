"""The prediction log's writer, in every process that predicts: off the answer's path.

`record` takes the predictions a batch served once their callers have their answers;
a thread writes them every PREDICTION_LOG_FLUSH_S, in batches, through the journal's
write path (`tasks.worker.journal.persist`): retried, spooled to the replay spool while
the database is down, replayed from there by `trades.replay_spool`, written once per
`prediction_id`. A prediction never waits for its log entry, nor fails with it.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy
import orjson
from flask import Flask

from config import Settings
from db import PredictionEntry, json_text
from tasks.contract import Call, brief
from tasks.observability import metrics
from tasks.worker.journal import dead_letter, persist

log = logging.getLogger(__name__)

BATCH_ENTRIES = 500  # entries per transaction
# Entries kept in memory while neither the database nor the spool's disk takes them;
# beyond it the oldest are given up (counted in prediction_log_dropped_entries).
MAX_BUFFERED = 50_000


@dataclass(frozen=True)
class Served:
    """One answered prediction, as the log keeps it."""

    call: Call
    created_at: datetime
    model_name: str
    model_version: str
    model_type: str
    features: Any  # the request's: parsed JSON, or the array the web checked (direct lane)
    rows: int
    payload: dict[str, Any]
    latency_ms: float
    role: str = "champion"  # champion, challenger, shadow, pinned
    shadow_of: str | None = None  # a shadow's champion prediction_id
    champion: Served | None = None  # a shadow's champion, whose answer it is compared with


def entry_of(served: Served, keep_features: bool, max_rows: int) -> PredictionEntry:
    # A shadow's input is its champion's (`shadow_of`): kept once, with the champion.
    keep_features = keep_features and served.shadow_of is None
    features = served.features if keep_features and max_rows > 0 else None
    if isinstance(features, list | numpy.ndarray):
        try:  # orjson writes a NaN (a missing value) as null: jsonb holds no NaN.
            features = orjson.loads(orjson.dumps(features[:max_rows], option=orjson.OPT_SERIALIZE_NUMPY))
        except TypeError:  # an integer beyond 64 bits (a bot's send_task): kept exact
            features = json.loads(json_text(features[:max_rows]))
    else:
        features = None
    fields = {
        "prediction_id": served.call.id,
        "created_at": served.created_at,
        "model_name": served.model_name,
        "model_version": served.model_version,
        "model_type": served.model_type,
        "rows": served.rows,
        "predictions": served.payload["predictions"],
        "latency_ms": round(served.latency_ms, 3),
        "request_id": served.call.request_id,
        "features": features,
        "contributions": served.payload.get("contributions"),
        "role": served.role,
        "shadow_of": served.shadow_of,
    }
    if served.champion is not None:
        fields["champion_version"] = served.champion.model_version
        fields["champion_predictions"] = served.champion.payload["predictions"]
    return PredictionEntry(fields)


class PredictionLogWriter:
    """A thread that writes what `record` was given, until `stop` (which writes the rest)."""

    def __init__(self, flask_app: Flask, settings: Settings):
        self._flask_app = flask_app
        self._flush_s = settings.prediction_log_flush_s
        self._keep_features = settings.prediction_log_features
        self._max_rows = settings.prediction_log_max_rows
        self._pending: collections.deque[Served] = collections.deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PredictionLogWriter:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        return self

    def record(self, served: list[Served]) -> None:
        """Hand answered predictions over; costs the caller an append."""
        self._pending.extend(served)
        if len(self._pending) >= BATCH_ENTRIES:
            self._wake.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Write what is pending (or spool it), then stop."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.flush()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._flush_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write the entries pending now, a batch at a time; never raises. What arrives
        meanwhile waits for the next tick: chasing it would write batches of a few entries,
        each paying a transaction's fixed cost."""
        waiting = len(self._pending)
        while waiting > 0:
            taken = [self._pending.popleft() for _ in range(min(BATCH_ENTRIES, waiting))]
            waiting -= len(taken)
            served, entries = self._entries(taken)
            try:
                with self._flask_app.app_context():
                    nowhere = persist(entries, retries=1)
            except Exception as exc:  # a bug here must not end the thread, nor the predictions
                log.exception("prediction log: a batch of %d entries failed: %s", len(entries), brief(exc))
                nowhere = []
            if nowhere:
                refused = {id(entry) for entry in nowhere}
                self._keep(
                    [item for item, entry in zip(served, entries, strict=True) if id(entry) in refused]
                )
                return  # the database and the spool refuse: try again on the next tick

    def _entries(self, taken: list[Served]) -> tuple[list[Served], list[PredictionEntry]]:
        """The log entries of `taken`, and what each is of. One that cannot be made is
        dead-lettered, not retried, and never costs the others their place in the log."""
        served, entries = [], []
        for item in taken:
            try:
                entries.append(entry_of(item, self._keep_features, self._max_rows))
                served.append(item)
            except Exception as exc:
                log.exception("prediction log: no entry for prediction %s: %s", item.call.id, brief(exc))
                self._dead_letter(item, exc)
        return served, entries

    def _dead_letter(self, item: Served, error: Exception) -> None:
        letter = {
            "prediction_id": item.call.id,
            "model_name": item.model_name,
            "model_version": item.model_version,
            "features": item.features,
            "payload": item.payload,
        }
        try:
            dead_letter(f"unstorable: {brief(error)}", letter)
        except OSError:
            metrics.PREDICTION_LOG_DROPPED.inc()

    def _keep(self, served: list[Served]) -> None:
        self._pending.extendleft(reversed(served))
        excess = len(self._pending) - MAX_BUFFERED
        if excess > 0:
            for _ in range(excess):
                self._pending.popleft()
            metrics.PREDICTION_LOG_DROPPED.inc(excess)
            log.error(
                "prediction log: %d entries given up, neither the database nor the spool takes them", excess
            )
