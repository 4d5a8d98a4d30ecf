"""The prediction log's writer, in every process that predicts: off the answer's path.

`record` takes the predictions a batch served once their callers have their answers;
a thread writes them every PREDICTION_LOG_FLUSH_S, in batches, through the journal's
write path (`tasks.worker.journal.persist`): retried, spooled to the replay spool while
the database is down, replayed from there by `trades.replay_spool`, written once per
`prediction_id`. A prediction never waits for its log entry, nor fails with it.

What waits for the thread is each entry's JSON, made when `record` is called: bytes,
which Python's garbage collector does not track. Kept as objects (the request's rows,
the answer, the call) until the next flush, the entries outlived young collections and
set off more of every generation, each pausing the process's threads: over one run of
`make bench-peers` on xgb-5, 1,579 young, 143 middle and 13 full collections (up to
6 ms), against 594, 53 and 4 as bytes, and 22, 1 and 0 with the log off.

The thread sends that JSON on as it is, joined into the batch's document: read back into
objects at every flush, the entries cost the thread the GIL (which the lane threads
then waited for) and the collector the young collections above.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy
import orjson
from flask import Flask

from config import Settings
from db import PredictionEntry
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


def logged_fields(served: Served, keep_features: bool, max_rows: int) -> dict[str, Any]:
    """The log entry's fields; `features` as the request gave them (capped), not yet JSON."""
    # A shadow's input is its champion's (`shadow_of`): kept once, with the champion.
    keep_features = keep_features and served.shadow_of is None and max_rows > 0
    features = (
        served.features if keep_features and isinstance(served.features, list | numpy.ndarray) else None
    )
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
        "features": None if features is None else features[:max_rows],
        "contributions": served.payload.get("contributions"),
        "role": served.role,
        "shadow_of": served.shadow_of,
    }
    if served.champion is not None:
        fields["champion_version"] = served.champion.model_version
        fields["champion_predictions"] = served.champion.payload["predictions"]
    return fields


def encoded(served: Served, keep_features: bool, max_rows: int) -> PredictionEntry:
    """The log entry, its fields as JSON; raises for what cannot be encoded."""
    fields = logged_fields(served, keep_features, max_rows)
    try:  # orjson writes a NaN (a missing value) as null: jsonb holds no NaN.
        return PredictionEntry(served.call.id, orjson.dumps(fields, option=orjson.OPT_SERIALIZE_NUMPY))
    except TypeError:  # an integer beyond 64 bits (a bot's send_task): kept exact
        if isinstance(fields["features"], numpy.ndarray):  # one orjson does not take (a view, a dtype)
            fields["features"] = fields["features"].tolist()
        return PredictionEntry.of(fields)


class PredictionLogWriter:
    """A thread that writes what `record` was given, until `stop` (which writes the rest)."""

    def __init__(self, flask_app: Flask, settings: Settings):
        self._flask_app = flask_app
        self._flush_s = settings.prediction_log_flush_s
        self._keep_features = settings.prediction_log_features
        self._max_rows = settings.prediction_log_max_rows
        # What waits, as str and bytes, which the collector does not track (an entry
        # object each would be); the lock keeps the two in step.
        self._lock = threading.Lock()
        self._ids: collections.deque[str] = collections.deque()
        self._documents: collections.deque[bytes] = collections.deque()
        self._unencodable: list[tuple[Served, Exception]] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PredictionLogWriter:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        return self

    def record(self, served: list[Served]) -> None:
        """Hand answered predictions over; costs the caller their JSON (a few µs each)."""
        entries, unencodable = [], []
        for item in served:
            try:
                entries.append(encoded(item, self._keep_features, self._max_rows))
            except Exception as exc:  # dead-lettered by the thread, never the caller's failure
                unencodable.append((item, exc))
        with self._lock:
            self._ids.extend(entry.prediction_id for entry in entries)
            self._documents.extend(entry.document for entry in entries)
            self._unencodable.extend(unencodable)
            waiting = len(self._ids)
        if waiting >= BATCH_ENTRIES:
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
        with self._lock:
            waiting = len(self._ids)
            unencodable, self._unencodable = self._unencodable, []
        for item, error in unencodable:
            self._dead_letter(item, error)
        while waiting > 0:
            with self._lock:
                count = min(BATCH_ENTRIES, waiting)
                ids = [self._ids.popleft() for _ in range(count)]
                documents = [self._documents.popleft() for _ in range(count)]
            waiting -= count
            entries = [PredictionEntry(*entry) for entry in zip(ids, documents, strict=True)]
            try:
                with self._flask_app.app_context():
                    nowhere = persist(entries, retries=1)
            except Exception as exc:  # a bug here must not end the thread, nor the predictions
                log.exception("prediction log: a batch of %d entries failed: %s", len(entries), brief(exc))
                nowhere = []
            if nowhere:
                self._keep(nowhere)
                return  # the database and the spool refuse: try again on the next tick

    def _dead_letter(self, item: Served, error: Exception) -> None:
        """A prediction whose entry cannot be made is dead-lettered, not retried, and never
        costs the others their place in the log."""
        log.error(
            "prediction log: no entry for prediction %s: %s", item.call.id, brief(error), exc_info=error
        )
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

    def _keep(self, entries: list[PredictionEntry]) -> None:
        with self._lock:
            self._ids.extendleft(entry.prediction_id for entry in reversed(entries))
            self._documents.extendleft(entry.document for entry in reversed(entries))
            excess = len(self._ids) - MAX_BUFFERED
            for _ in range(max(excess, 0)):
                self._ids.popleft()
                self._documents.popleft()
        if excess > 0:
            metrics.PREDICTION_LOG_DROPPED.inc(excess)
            log.error(
                "prediction log: %d entries given up, neither the database nor the spool takes them", excess
            )
