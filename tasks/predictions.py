"""The caller's side of `ml.predict`: send a prediction, wait for it, or look a job up.

Waiting costs no subscription per request: each process has one reply list in the
result backend's Redis, which `ml.predict` pushes outcomes to, and one thread that
BRPOPs it and wakes the request waiting for that job. Outcomes are also stored as
Celery results, so a job can be polled after its caller stopped waiting.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, states

from config import get_settings
from models.base import ModelError
from tasks.ml_results import error_from_result
from tasks.publish import LeanPublisher
from tasks.redis_transport import transport_for

log = logging.getLogger(__name__)

QUEUE = "predict"
ISSUED_PREFIX = "ml:job:"
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
    def __init__(self, broker_url: str | None = None, result_url: str | None = None):
        settings = get_settings()
        broker_url = broker_url or settings.celery_broker_url
        result_url = result_url or settings.celery_result_backend
        self._celery = Celery("prediction-client", set_as_current=False, backend=result_url)
        self._celery.conf.update(
            broker_transport=transport_for(broker_url),
            broker_transport_options={"max_retries": 0, "socket_connect_timeout": 2, "socket_timeout": 5},
        )
        self._connection = self._celery.connection_for_write(broker_url)
        self._publisher = LeanPublisher(self._celery, self._connection)
        self._results = redis.Redis.from_url(result_url, socket_connect_timeout=2, socket_timeout=30)
        self._keep_s = int(self._celery.backend.expires or 86400)
        self._replies: _ReplyListener | None = None
        self._lock = threading.Lock()

    @property
    def results(self) -> redis.Redis:
        """The result backend's Redis (where workers also report their loaded models)."""
        return self._results

    def predict(self, model_name: str, features: Any, model_type: str | None, timeout_s: float) -> dict:
        """The prediction payload; raises ModelError, or PredictionTimeout with the job id."""
        job_id = str(uuid.uuid4())
        replies = self._listener()
        waiter = replies.expect(job_id)
        try:
            self._send(job_id, model_name, features, model_type, replies.key)
            meta = waiter.wait(timeout_s)
        finally:
            replies.forget(job_id)
        if meta is None:
            # The job goes on: its id is what the caller polls.
            self._mark_issued(job_id)
            raise PredictionTimeout(job_id)
        return _outcome(meta)

    def submit(self, model_name: str, features: Any, model_type: str | None) -> str:
        """Queue a prediction and return its job id at once."""
        job_id = str(uuid.uuid4())
        self._mark_issued(job_id)
        self._send(job_id, model_name, features, model_type, None)
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

    def _send(
        self,
        job_id: str,
        model_name: str,
        features: Any,
        model_type: str | None,
        reply_to: str | None,
    ) -> None:
        rows = len(features) if isinstance(features, list) else "?"
        with self._lock:  # a kombu connection is not shared between threads
            self._publisher.publish(
                "ml.predict",
                [model_name, features, model_type],
                job_id,
                QUEUE,
                argsrepr=f"({model_name!r}, <{rows} rows>, {model_type!r})",
                reply_to=reply_to,
            )

    def _mark_issued(self, job_id: str) -> None:
        self._results.set(ISSUED_PREFIX + job_id, 1, ex=self._keep_s)

    def _listener(self) -> _ReplyListener:
        # After a fork (gunicorn) the parent's thread is gone: start one per process.
        if self._replies is None or self._replies.pid != os.getpid():
            self._replies = _ReplyListener(self._results, self._celery.backend.decode)
        return self._replies


def _outcome(meta: dict[str, Any]) -> dict[str, Any]:
    if meta.get("status") == states.SUCCESS:
        return meta["result"]
    raise error_from_result(meta.get("result"))


class _Waiter:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.meta: dict[str, Any] | None = None

    def wait(self, timeout_s: float) -> dict[str, Any] | None:
        self.event.wait(timeout_s)
        return self.meta


class _ReplyListener:
    def __init__(self, client: redis.Redis, decode: Any):
        self.pid = os.getpid()
        self.key = f"ml:replies:{socket.gethostname()}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self._client = client
        self._decode = decode
        self._waiters: dict[str, _Waiter] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="prediction-replies", daemon=True).start()

    def expect(self, job_id: str) -> _Waiter:
        waiter = _Waiter()
        with self._lock:
            self._waiters[job_id] = waiter
        return waiter

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._waiters.pop(job_id, None)

    def _run(self) -> None:
        stop = threading.Event()
        while True:
            try:
                item = self._client.brpop([self.key], timeout=5)
            except redis.RedisError as exc:
                log.warning("prediction replies unreachable (%s); retrying", exc)
                stop.wait(0.5)
                continue
            if item is None:
                continue
            meta = self._decode(item[1])
            with self._lock:
                waiter = self._waiters.pop(meta.get("task_id"), None)
            if waiter is not None:  # otherwise its caller stopped waiting
                waiter.meta = meta
                waiter.event.set()
