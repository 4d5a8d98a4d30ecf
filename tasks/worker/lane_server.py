"""The direct lane: synchronous predictions that skip Celery's consumer.

A waiting caller cannot afford Celery's per-message cost (decoding the envelope,
Request objects, the batching timer, the pool hand-off: about 1.5 ms a message). Its
prediction is instead pushed as one small message (`tasks.contract.lane`: a JSON header and
the rows the web checked, as bytes) onto the Redis list `predict:direct` in the broker's
database. Every process of a predict worker that holds
the models runs threads that pop them (up to `max_messages` at once; when several wait,
a little longer for more), stack them and answer through the same outcome path as
`ml.predict` (Celery's result format, plus the job's reply key that its caller waits
on). Queued jobs and bots keep using the `ml.predict` task.

Each job's outcome goes to its reply key.
A message popped by a process that then dies is not retried: its callers time out
with a job id whose status stays pending, as with any prediction lost with its worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from tasks.contract import (
    LANE_KEY,
    Call,
    MalformedLaneMessage,
    decode_lane_request,
    kept_connection,
    reply_key,
)
from tasks.observability import request_id, timeline

log = logging.getLogger(__name__)

BLOCK_S = 1  # how long a pop waits; bounds how long a stopping thread takes to notice


def lane_call(raw: bytes) -> Call | None:
    """The prediction of one lane message; a malformed message is logged and dropped (the
    web writes them: one that cannot be read comes from elsewhere)."""
    try:
        lane_request = decode_lane_request(raw)
    except MalformedLaneMessage as exc:
        log.error("malformed direct-lane message dropped: %s", exc)
        return None
    kwargs: dict[str, Any] = {"explain": True} if lane_request.explain else {}
    if lane_request.model_version is not None:
        kwargs["model_version"] = lane_request.model_version
    if lane_request.routing_key is not None:
        kwargs["routing_key"] = lane_request.routing_key
    rid = request_id.of_message({request_id.HEADER: lane_request.request_id})
    features, job_id = lane_request.features, lane_request.job_id
    args = (lane_request.model_name, features, lane_request.model_type)
    return Call(job_id, reply_key(job_id), args, kwargs, lane_request.expires, rid)


@dataclass(frozen=True)
class BatchLimits:
    max_batch: int  # predictions of one model one batch takes at most
    wait_s: float  # how long queueing callers of the model wait for company


Taken = list[tuple[bytes, Call]]  # each call with its message, to give back unread


class LaneServer:
    """Threads that serve the lane in this process until `stop`. `limits_of(model_name)`
    gives a model's batch limits (by default `max_messages` and `busy_wait_s` for all)."""

    def __init__(
        self,
        client: redis.Redis,
        serve: Callable[[list[Call]], Any],
        max_messages: int,
        busy_wait_s: float = 0.0,
        limits_of: Callable[[str], BatchLimits] | None = None,
    ):
        self._client = client
        self._serve = serve
        self._max_messages = max_messages
        default = BatchLimits(max_messages, busy_wait_s)
        self._limits_of = limits_of or (lambda _: default)
        self._stopping = threading.Event()
        self._has_blmpop = True
        self._threads: list[threading.Thread] = []
        self._serving = 0  # lane threads of this process busy with a batch
        self._serving_lock = threading.Lock()

    def start(self, threads: int = 1) -> LaneServer:
        for number in range(threads):
            thread = threading.Thread(target=self._run, name=f"direct-lane-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout_s: float = BLOCK_S + 30) -> None:
        """Stop taking messages; what was taken is answered first (a warm shutdown)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                taken = _read(self._take())
            except redis.RedisError as exc:
                log.warning("direct lane: broker unreachable (%s); retrying", exc)
                self._stopping.wait(0.5)
                continue
            if not taken:
                continue
            timeline.stamp_jobs((call.id for _, call in taken), "popped")
            limits = [self._limits_of(call.args[0]) for _, call in taken]
            wait_s = max(limit.wait_s for limit in limits)
            room = min(self._max_messages, min(limit.max_batch for limit in limits)) - len(taken)
            if room > 0 and self._queueing(taken, wait_s):
                more = _read(self._more_after(wait_s, room))
                timeline.stamp_jobs((call.id for _, call in more), "popped")
                taken += more
            calls = self._within_limits(taken)
            with self._serving_lock:
                self._serving += 1
            try:
                self._serve(calls)
            except Exception:  # one bad batch must not end the lane
                log.exception("direct lane: a batch of %d predictions failed", len(calls))
            finally:
                with self._serving_lock:
                    self._serving -= 1

    def _queueing(self, taken: Taken, wait_s: float) -> bool:
        # Callers are queueing when several messages came at once, or when another lane
        # thread of this process is still busy: then a short wait lets one model call
        # serve the next few too. A lone message on an idle lane is served at once.
        return wait_s > 0 and (len(taken) > 1 or self._serving > 0)

    def _within_limits(self, taken: Taken) -> list[Call]:
        """The calls this batch serves: at most `max_batch` per model. The rest go back to
        the head of the lane, where another lane thread takes them at once: a costly model
        keeps both cores busy instead of one thread holding every caller."""
        kept: list[Call] = []
        excess: list[bytes] = []
        per_model: dict[str, int] = {}
        for raw, call in taken:
            name = call.args[0]
            per_model[name] = per_model.get(name, 0) + 1
            if per_model[name] <= self._limits_of(name).max_batch:
                kept.append(call)
            else:
                excess.append(raw)
        if excess:
            try:
                # Popped from the right: pushed back there in reverse, the oldest is next.
                self._client.rpush(LANE_KEY, *reversed(excess))
            except redis.RedisError:
                return [call for _, call in taken]  # never drop them: serve them here
        return kept

    def _more_after(self, wait_s: float, count: int) -> list[bytes]:
        self._stopping.wait(wait_s)
        try:
            return self._client.rpop(LANE_KEY, count) or []
        except redis.RedisError:
            return []

    def _take(self) -> list[bytes]:
        if self._has_blmpop:
            # Redis 7: the first message and the others waiting, in one command, on this
            # thread's kept connection (redis-py's pool and retry wrapper cost more).
            connection = kept_connection(self._client)
            try:
                connection.send_command("BLMPOP", BLOCK_S, 1, LANE_KEY, "RIGHT", "COUNT", self._max_messages)
                popped = connection.read_response()
                return popped[1] if popped else []
            except redis.ResponseError:
                self._has_blmpop = False  # Redis 6
            except BaseException:
                connection.disconnect()  # a reply may be left unread: start afresh
                raise
        first = self._client.brpop([LANE_KEY], timeout=BLOCK_S)
        if first is None:
            return []
        more = self._client.rpop(LANE_KEY, self._max_messages - 1) if self._max_messages > 1 else None
        return [first[1], *(more or [])]


def _read(messages: list[bytes]) -> Taken:
    return [(raw, call) for raw in messages if (call := lane_call(raw)) is not None]
