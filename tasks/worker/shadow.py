"""Shadow predictions: a challenger runs the inputs its champion answered, afterwards.

The champion's callers have their answers before anything here starts: `serve` hands the
batch's served predictions over once their outcomes are published, and one thread per
process runs the challenger on them, stacked per model call as the champion's were. Each
shadow prediction is logged with role `shadow` and `shadow_of` (its champion's
`prediction_id`) under an id of its own; it is never returned to anyone.

The thread gathers what arrives over GATHER_S before it runs anything, and runs it as
few stacked model calls: a lone caller's next request then rarely meets the shadow's work
in the interpreter (one burst every GATHER_S instead of a little after every answer).

The queue is bounded: when the challenger cannot keep up (a slower model under full
load), the newest work is skipped and counted in `shadow_predictions_skipped`, rather
than taking CPU from the champion's callers or memory without end.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from models import ModelError, ModelStore, features_array
from tasks.observability import metrics
from tasks.worker.guards import Experiment, GuardTally
from tasks.worker.prediction_log import Served

log = logging.getLogger(__name__)

MAX_WAITING_BATCHES = 256
GATHER_S = 0.05


@dataclass(frozen=True)
class ShadowWork:
    experiment: Experiment  # the model, its shadow challenger, since when
    champions: list[Served]  # what the champion answered


class ShadowRunner:
    def __init__(
        self,
        store: ModelStore,
        record: Callable[[list[Served]], None],
        payload_of: Callable,
        tally: GuardTally,
    ):
        self._store = store
        self._record = record  # the prediction log's
        self._payload_of = payload_of
        self._tally = tally
        self._work: queue.Queue[ShadowWork | None] = queue.Queue(MAX_WAITING_BATCHES)
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)

    def start(self) -> ShadowRunner:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        try:
            self._work.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    def submit(self, work: ShadowWork) -> None:
        """Never blocks the caller's thread."""
        try:
            self._work.put_nowait(work)
        except queue.Full:
            metrics.SHADOW_SKIPPED.labels(work.experiment.model_name).inc(len(work.champions))

    def _run(self) -> None:
        while (work := self._work.get()) is not None:
            time.sleep(GATHER_S)
            gathered, stopping = [work], False
            while not stopping:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                stopping = item is None
                if item is not None:
                    gathered.append(item)
            for merged in _merged(gathered):
                try:
                    self.run(merged)
                except Exception:  # a bug here must not end the thread, nor touch serving
                    log.exception("a shadow batch of %d predictions failed", len(merged.champions))
            if stopping:
                return

    def run(self, work: ShadowWork) -> list[Served]:
        """Run and log one batch of shadow predictions; returns what was logged."""
        name, challenger = work.experiment.model_name, work.experiment.challenger
        started = time.perf_counter()
        try:
            loaded = self._store.load(name, version=challenger)
            arrays = [features_array(loaded.adapter, served.features) for served in work.champions]
        except ModelError as error:
            metrics.PREDICTIONS.labels(name, challenger, error.code, "shadow").inc(len(work.champions))
            self._tally.add(work.experiment, failed=len(work.champions))
            return []
        stacks: dict[tuple[int, ...], list[tuple[Served, np.ndarray]]] = {}
        for served, array in zip(work.champions, arrays, strict=True):
            stacks.setdefault(array.shape[1:], []).append((served, array))
        logged: list[Served] = []
        for stack in stacks.values():
            try:
                predictions = loaded.adapter.predict(np.concatenate([array for _, array in stack]))
            except ModelError as error:
                metrics.PREDICTIONS.labels(name, challenger, error.code, "shadow").inc(len(stack))
                self._tally.add(work.experiment, failed=len(stack))
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            nonfinite = 0
            created_at = datetime.now(UTC)
            start = 0
            for champion, array in stack:
                call = replace(champion.call, id=str(uuid.uuid4()))
                payload = self._payload_of(
                    call, loaded, predictions[start : start + len(array)], None, "shadow"
                )
                start += len(array)
                nonfinite += None in payload["predictions"]
                logged.append(
                    Served(
                        call,
                        created_at,
                        loaded.file.name,
                        loaded.file.version,
                        loaded.file.type,
                        champion.features,
                        len(array),
                        payload,
                        latency_ms,
                        role="shadow",
                        shadow_of=champion.call.id,
                        champion=champion,
                    )
                )
            self._tally.add(
                work.experiment, answered=len(stack), nonfinite=nonfinite, latency_ms=latency_ms, calls=1
            )
        if logged:
            metrics.PREDICTIONS.labels(name, challenger, "ok", "shadow").inc(len(logged))
            self._record(logged)
        return logged


def _merged(gathered: list[ShadowWork]) -> list[ShadowWork]:
    """One work per experiment, in the order they came."""
    merged: dict[Experiment, list[Served]] = {}
    for work in gathered:
        merged.setdefault(work.experiment, []).extend(work.champions)
    return [ShadowWork(experiment, champions) for experiment, champions in merged.items()]
