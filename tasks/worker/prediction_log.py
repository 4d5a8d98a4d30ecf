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
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

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


# A pending entry: its fields' JSON, by orjson (bytes), or by the standard library's json
# (str) when it holds an integer beyond 64 bits (orjson writes none, and would read one
# back as a float); or, rarely, what could not be encoded, for the thread to dead-letter.
Pending: TypeAlias = bytes | str | Served


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


def encoded(served: Served, keep_features: bool, max_rows: int) -> Pending:
    """The entry's JSON; never raises (what cannot be encoded is returned as it is)."""
    try:
        fields = logged_fields(served, keep_features, max_rows)
    except Exception:
        return served
    try:  # orjson writes a NaN (a missing value) as null: jsonb holds no NaN.
        return orjson.dumps(fields, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # an integer beyond 64 bits (a bot's send_task): kept exact
        try:
            if isinstance(fields["features"], numpy.ndarray):  # one orjson does not take (a view, a dtype)
                fields["features"] = fields["features"].tolist()
            return json_text(fields)
        except Exception:
            return served


def entry_of(pending: Pending, keep_features: bool, max_rows: int) -> PredictionEntry:
    """The entry of a pending one; raises for what cannot be made one (`Served`)."""
    if isinstance(pending, Served):
        fields = logged_fields(pending, keep_features, max_rows)
        pending = json_text(fields)  # raises what `encoded` met, for the dead letter
    fields = orjson.loads(pending) if isinstance(pending, bytes) else json.loads(pending)
    fields["created_at"] = datetime.fromisoformat(fields["created_at"])
    return PredictionEntry(fields)


class PredictionLogWriter:
    """A thread that writes what `record` was given, until `stop` (which writes the rest)."""

    def __init__(self, flask_app: Flask, settings: Settings):
        self._flask_app = flask_app
        self._flush_s = settings.prediction_log_flush_s
        self._keep_features = settings.prediction_log_features
        self._max_rows = settings.prediction_log_max_rows
        self._pending: collections.deque[Pending] = collections.deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PredictionLogWriter:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        return self

    def record(self, served: list[Served]) -> None:
        """Hand answered predictions over; costs the caller their JSON (a few µs each)."""
        self._pending.extend(encoded(item, self._keep_features, self._max_rows) for item in served)
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
            kept, entries = self._entries(taken)
            try:
                with self._flask_app.app_context():
                    nowhere = persist(entries, retries=1)
            except Exception as exc:  # a bug here must not end the thread, nor the predictions
                log.exception("prediction log: a batch of %d entries failed: %s", len(entries), brief(exc))
                nowhere = []
            if nowhere:
                refused = {id(entry) for entry in nowhere}
                self._keep([item for item, entry in zip(kept, entries, strict=True) if id(entry) in refused])
                return  # the database and the spool refuse: try again on the next tick

    def _entries(self, taken: list[Pending]) -> tuple[list[Pending], list[PredictionEntry]]:
        """The log entries of `taken`, and what each is of. One that cannot be made is
        dead-lettered, not retried, and never costs the others their place in the log."""
        kept, entries = [], []
        for item in taken:
            try:
                entries.append(entry_of(item, self._keep_features, self._max_rows))
                kept.append(item)
            except Exception as exc:
                of = f"prediction {item.call.id}" if isinstance(item, Served) else "an entry"
                log.exception("prediction log: no entry for %s: %s", of, brief(exc))
                self._dead_letter(item, exc)
        return kept, entries

    def _dead_letter(self, item: Pending, error: Exception) -> None:
        if isinstance(item, Served):
            letter = {
                "prediction_id": item.call.id,
                "model_name": item.model_name,
                "model_version": item.model_version,
                "features": item.features,
                "payload": item.payload,
            }
        else:  # JSON this module wrote that does not read back (a bug): kept as it is
            letter = {"entry": item.decode(errors="replace") if isinstance(item, bytes) else item}
        try:
            dead_letter(f"unstorable: {brief(error)}", letter)
        except OSError:
            metrics.PREDICTION_LOG_DROPPED.inc()

    def _keep(self, pending: list[Pending]) -> None:
        self._pending.extendleft(reversed(pending))
        excess = len(self._pending) - MAX_BUFFERED
        if excess > 0:
            for _ in range(excess):
                self._pending.popleft()
            metrics.PREDICTION_LOG_DROPPED.inc(excess)
            log.error(
                "prediction log: %d entries given up, neither the database nor the spool takes them", excess
            )
