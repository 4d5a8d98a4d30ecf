"""The caller's side of `ml.predict`: send a prediction, wait for it, or look a job up.

Waiting costs no subscription: the waiting thread pops its job's reply key
(`tasks.web_clients.replies`), which the worker pushes the outcome to. A synchronous prediction
goes straight to a predict process over its direct connection (`tasks.web_clients.direct`),
else over the direct lane, a Redis list, in the same round trip as the wait, else (no
Redis to hold the lane) as an `ml.predict` task; the worker stacks whatever
predictions wait for the same model into one model call. Outcomes are also stored as
Celery results, so a job can be polled after its caller stopped waiting.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy
import orjson
import redis
from celery import states

from config import get_settings
from models import ModelError
from tasks.contract import (
    BROKER_DOWN,
    ISSUED_PREFIX,
    LANE_KEY,
    PREDICT_QUEUE,
    PREDICT_TASK,
    BrokerUnavailable,
    LaneRequest,
    LeanPublisher,
    client_app,
    encode_lane_request,
    error_from_result,
    lane_store_url,
    reply_key,
)
from tasks.observability import metrics, request_id, timeline
from tasks.web_clients.direct import DirectConnections, NotDelivered
from tasks.web_clients.loaded_models import ModelReports, live_workers
from tasks.web_clients.replies import Replies

log = logging.getLogger(__name__)

WAIT_MARGIN_S = 2.0
STATUS_OF = {
    states.PENDING: "pending",
    states.RECEIVED: "pending",
    states.STARTED: "running",
    states.SUCCESS: "succeeded",
    states.FAILURE: "failed",
}


class PredictionTimeout(Exception):
    def __init__(self, job_id: str):
        super().__init__(job_id)
        self.job_id = job_id


@dataclass(frozen=True)
class Job:
    job_id: str
    status: str  # pending, running, succeeded, failed
    result: dict[str, Any] | None = None
    error: ModelError | None = None


class PredictionClient:
    def __init__(
        self,
        broker_url: str | None = None,
        result_url: str | None = None,
        direct_lane: bool | None = None,
        *,
        direct_connection: bool = True,
        longest_wait_s: float | None = None,
        expires_s: float | None = None,
    ):
        """What is not given comes from `get_settings()`: CELERY_BROKER_URL,
        CELERY_RESULT_BACKEND, PREDICT_TIMEOUT_S (the longest wait), PREDICT_EXPIRES_S.
        `direct_lane`: waiting predictions go over Redis's lane (by default when Redis can
        hold it), else as `ml.predict` tasks; `direct_connection`: straight to a predict
        process when one registered, before the lane."""
        broker_url = broker_url or get_settings().celery_broker_url
        result_url = result_url or get_settings().celery_result_backend
        lane_url = lane_store_url(broker_url, result_url)
        if direct_lane is None:
            direct_lane = lane_url is not None
        self._lane = None
        if direct_lane and lane_url is not None:
            self._lane = redis.Redis.from_url(lane_url, socket_connect_timeout=2, socket_timeout=5)
        self._celery = client_app(
            "prediction-client", broker_url, timeout_s=2, socket_timeout_s=5, backend=result_url
        )
        self._connection = self._celery.connection_for_write(broker_url)
        self._publisher = LeanPublisher(self._celery, self._connection)
        self._results = redis.Redis.from_url(result_url, socket_connect_timeout=2, socket_timeout=5)
        # Waits block in Redis (BRPOP with the caller's timeout): the socket waits a little
        # longer than the longest wait, so a Redis gone silent fails the request instead
        # of holding its thread for ever.
        self._longest_wait_s = get_settings().predict_timeout_s if longest_wait_s is None else longest_wait_s
        waits = redis.Redis.from_url(
            result_url,
            socket_connect_timeout=2,
            socket_timeout=self._longest_wait_s + WAIT_MARGIN_S,
            socket_keepalive=True,
        )
        self._replies = Replies(waits, orjson.loads)  # outcomes are written by tasks.worker.outcomes
        self._direct = None
        if direct_connection and self._lane is not None:
            # Read once a second by a request thread: a Redis gone silent costs it half a second.
            registry = redis.Redis.from_url(result_url, socket_connect_timeout=0.5, socket_timeout=0.5)
            self._direct = DirectConnections(registry, orjson.loads)
        self._keep_s = int(self._celery.backend.expires or 86400)
        self._expires_s = get_settings().predict_expires_s if expires_s is None else expires_s
        self._send_lock = threading.Lock()  # one kombu connection, many request threads
        self._reports: tuple[float, ModelReports] | None = None

    def loaded_models(self, max_age_s: float = 1.0) -> dict[str, dict[str, Any]]:
        """`name@version` -> description, as the workers reported; re-read at most every max_age_s."""
        return self.model_reports(max_age_s).loaded

    def model_reports(self, max_age_s: float = 1.0) -> ModelReports:
        """What the workers reported loaded, and could not load; re-read at most every max_age_s."""
        now = time.monotonic()
        if self._reports is None or now - self._reports[0] > max_age_s:
            self._reports = (now, ModelReports.read(self._results))
        return self._reports[1]

    def live_workers(self) -> dict[str, set[str]]:
        """host:pid -> name@version of every version each live predict process holds."""
        return live_workers(self._results)

    def predict(
        self,
        model_name: str,
        features: numpy.ndarray,
        model_type: str | None,
        timeout_s: float,
        *,
        explain: bool = False,
        model_version: str | None = None,
        routing_key: str | None = None,
    ) -> dict:
        """The prediction payload; raises ModelError, or PredictionTimeout with the job id.
        `model_name` is a resolved file name and `features` the array `models.features_array`
        checked against the model: the worker takes both as they are. `explain`: per-feature
        contributions too (tree models). `model_version`: that kept version answers;
        `routing_key`: a canary's sticky key (the worker routes by the model's release)."""
        job_id = str(uuid.uuid4())
        timeout_s = min(timeout_s, self._longest_wait_s)
        try:
            if self._lane is not None:
                timeline.name(job_id)
                message = encode_lane_request(
                    LaneRequest(
                        job_id,
                        model_name,
                        model_type,
                        features,
                        time.time() + self._expires_s,
                        explain=explain,
                        request_id=request_id.current(),
                        model_version=model_version,
                        routing_key=routing_key,
                    )
                )
                meta = self._send_and_wait(message, job_id, timeout_s)
            else:  # a broker other than Redis: an `ml.predict` task, its rows as JSON
                args = [model_name, features.tolist(), model_type, *([True] if explain else [])]
                kwargs = _routing(model_version, routing_key)
                argsrepr = f"({model_name!r}, ...)"
                self._publish(PREDICT_TASK, args, job_id, reply_key(job_id), argsrepr, self._expiry(), kwargs)
                meta = self._replies.wait(job_id, timeout_s)
        except BROKER_DOWN as exc:
            raise BrokerUnavailable(f"Redis cannot take the prediction ({exc}); try again") from exc
        if meta is None:
            # The job goes on: its id is what the caller polls.
            self._mark_issued(job_id)
            raise PredictionTimeout(job_id)
        return _outcome(meta)

    def _send_and_wait(self, message: bytes, job_id: str, timeout_s: float) -> dict[str, Any] | None:
        """Over a direct connection when a predict process takes it, else over the Redis lane."""
        if self._direct is not None:
            started = time.monotonic()
            try:
                return self._direct.send_and_wait(message, job_id, timeout_s)
            except NotDelivered as exc:
                metrics.DIRECT_FALLBACKS.labels(exc.reason).inc()
                timeout_s -= time.monotonic() - started
        return self._replies.send_and_wait(self._lane, LANE_KEY, message, job_id, timeout_s)

    def submit(
        self,
        model_name: str,
        features: Any,
        model_type: str | None,
        *,
        explain: bool = False,
        model_version: str | None = None,
        routing_key: str | None = None,
    ) -> str:
        """Queue a prediction and return its job id at once."""
        job_id = str(uuid.uuid4())
        rows = len(features) if isinstance(features, list) else "?"
        try:
            self._mark_issued(job_id)
            args = [model_name, features, model_type, *([True] if explain else [])]
            kwargs = _routing(model_version, routing_key)
            self._publish(PREDICT_TASK, args, job_id, None, f"<{rows} rows>", self._expiry(), kwargs)
        except BROKER_DOWN as exc:
            raise BrokerUnavailable(f"the broker cannot take the job ({exc}); nothing was queued") from exc
        return job_id

    def job(self, job_id: str) -> Job | None:
        """The job's state; None for an id this service never issued."""
        backend = self._celery.backend
        with self._results.pipeline(transaction=False) as pipe:
            pipe.get(backend.get_key_for_task(job_id))
            pipe.exists(ISSUED_PREFIX + job_id)
            raw, issued = pipe.execute()
        if raw is None:
            return Job(job_id, "pending") if issued else None
        meta = backend.decode(raw)
        status = STATUS_OF.get(meta.get("status"), "pending")
        if status == "succeeded":
            return Job(job_id, status, result=meta.get("result"))
        if status == "failed":
            return Job(job_id, status, error=error_from_result(meta.get("result")))
        return Job(job_id, status)

    # -- internals ----------------------------------------------------------------

    def _publish(
        self,
        name: str,
        args: list,
        task_id: str,
        reply_to: str | None,
        argsrepr: str,
        expires: datetime,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        with self._send_lock:
            self._publisher.publish(
                name,
                args,
                task_id,
                PREDICT_QUEUE,
                argsrepr=argsrepr,
                reply_to=reply_to,
                expires=expires,
                kwargs=kwargs,
            )

    def _expiry(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._expires_s)

    def _mark_issued(self, job_id: str) -> None:
        self._results.set(ISSUED_PREFIX + job_id, 1, ex=self._keep_s)


def _outcome(meta: dict[str, Any]) -> dict[str, Any]:
    if meta.get("status") == states.SUCCESS:
        return meta["result"]
    raise error_from_result(meta.get("result"))


def _routing(model_version: str | None, routing_key: str | None) -> dict[str, Any]:
    kwargs = {}
    if model_version is not None:
        kwargs["model_version"] = model_version
    if routing_key is not None:
        kwargs["routing_key"] = routing_key
    return kwargs
