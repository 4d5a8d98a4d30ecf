"""What waits in the broker, on either broker: whether it answers and each queue's depth.

Redis (the project's transport): one pipelined LLEN round trip over each queue's lists
(kombu keeps prioritised messages in lists of their own) and the prediction lane.
RabbitMQ: a passive `queue.declare` per queue answers its ready messages without ever
creating a queue (the trades queue's arguments are the workers' to declare); the lane then
lives in the result backend's Redis (`lane_store_url`). One connection per reader is kept
and rebuilt after a failure; every read is bounded by `timeout_s`.
"""

from __future__ import annotations

import contextlib
import threading
from urllib.parse import urlparse

import redis
from kombu import Connection
from kombu.exceptions import KombuError
from redis.backoff import NoBackoff
from redis.retry import Retry

from tasks.contract import (
    LANE_KEY,
    PREDICT_QUEUE,
    REDIS_HINT,
    TRADES_DEAD_LETTER_QUEUE,
    TRADES_QUEUE,
    Disagreement,
    is_redis_url,
    lane_store_url,
    redis_problem,
)
from tasks.contract import queue_disagreement as disagreement

# kombu's Redis transport keeps a queue's prioritised messages in lists of their own.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
REDIS_QUEUES = (PREDICT_QUEUE, TRADES_QUEUE)
AMQP_QUEUES = (PREDICT_QUEUE, TRADES_QUEUE, TRADES_DEAD_LETTER_QUEUE)


PROBE_TIMEOUT_S = 2  # the preflight's, as redis_problem's
AMQP_HINT = (
    "start it with `docker compose -f docker-compose.yml -f docker-compose.rabbitmq.yml up -d rabbitmq` "
    "or `sudo apt-get install rabbitmq-server`, or point CELERY_BROKER_URL at a running broker"
)


class BrokerDown(Exception):
    """The broker did not answer (within the timeout)."""


def hidden_password(url: str) -> str:
    """`url` with its password replaced by ***, for messages and logs."""
    parts = urlparse(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def redis_client(url: str, timeout_s: float) -> redis.Redis:
    """A client that tries once per call, within `timeout_s`."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )


def broker_problem(broker_url: str) -> str | None:
    """What is wrong with the broker at `broker_url` (Redis or RabbitMQ), and how to start it;
    None when it answers."""
    if is_redis_url(broker_url):
        problem = redis_problem(broker_url)
        return None if problem is None else f"{problem}\n  {REDIS_HINT}"
    reader = AmqpQueues(broker_url, PROBE_TIMEOUT_S)
    try:
        disagreeing = reader.disagreements(AMQP_QUEUES)
    except BrokerDown as exc:
        return f"RabbitMQ does not answer at {hidden_password(broker_url)}: {exc}\n  {AMQP_HINT}"
    finally:
        reader.close()
    return "\n".join(found.describe() for found in disagreeing) or None


class BrokerQueues:
    """`ping()` and `depths()` of the broker at `broker_url`; the lane's depth from its store."""

    def __init__(self, broker_url: str, result_url: str, timeout_s: float = 0.5):
        self.broker_url = broker_url
        self.is_redis = is_redis_url(broker_url)
        lane_url = lane_store_url(broker_url, result_url)
        if self.is_redis:
            self._redis = redis_client(broker_url, timeout_s)
            self._amqp = None
            self._lane = None  # the lane is a list of the broker's own: read in the same round trip
        else:
            self._redis = None
            self._amqp = AmqpQueues(broker_url, timeout_s)
            self._lane = redis_client(lane_url, timeout_s) if lane_url is not None else None

    @property
    def where(self) -> str:
        return hidden_password(self.broker_url)

    @property
    def queues(self) -> tuple[str, ...]:
        return REDIS_QUEUES if self.is_redis else AMQP_QUEUES

    def ping(self) -> None:
        """Returns when the broker answers; raises BrokerDown otherwise."""
        if self._redis is not None:
            try:
                self._redis.ping()
            except redis.RedisError as exc:
                raise BrokerDown(str(exc)) from exc
        else:
            self._amqp.ping()

    def disagreements(self) -> list[Disagreement]:
        """The queues RabbitMQ holds declared otherwise than the contract (none on Redis, whose
        queues have no declarations); asking is the round trip that shows the broker answers.
        Raises BrokerDown when it does not."""
        if self._amqp is None:
            self.ping()
            return []
        return self._amqp.disagreements(AMQP_QUEUES)

    def depths(self) -> dict[str, int]:
        """Messages waiting in each queue, and in the lane (LANE_KEY) when its store answers.
        Raises BrokerDown when the broker does not answer."""
        if self._redis is not None:
            return self._redis_depths()
        found = self._amqp.depths(AMQP_QUEUES)
        if self._lane is not None:
            # The lane's store down: its gauge is left out, the queues' stay.
            with contextlib.suppress(redis.RedisError):
                found[LANE_KEY] = int(self._lane.llen(LANE_KEY))
        return found

    def _redis_depths(self) -> dict[str, int]:
        lists = {queue: [f"{queue}{suffix}" for suffix in _PRIORITY_SUFFIXES] for queue in REDIS_QUEUES}
        lists[LANE_KEY] = [LANE_KEY]
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for keys in lists.values():
                    for key in keys:
                        pipe.llen(key)
                lengths = iter(pipe.execute())
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BrokerDown(str(exc)) from exc
        return {queue: sum(next(lengths) for _ in keys) for queue, keys in lists.items()}


class AmqpQueues:
    """Passive declares over one kept AMQP connection (py-amqp, through kombu)."""

    def __init__(self, url: str, timeout_s: float):
        self._url = url
        self._timeout_s = timeout_s
        self._connection: Connection | None = None
        self._channel = None
        self._lock = threading.Lock()  # a channel is not for several threads at once

    def ping(self) -> None:
        # A round trip: a kept socket may be dead without knowing it.
        self.depths((TRADES_QUEUE,))

    def depths(self, queues: tuple[str, ...]) -> dict[str, int]:
        return self._asked(lambda: {queue: self._depth(queue) for queue in queues})

    def disagreements(self, queues: tuple[str, ...]) -> list[Disagreement]:
        return self._asked(lambda: [found for queue in queues if (found := self._disagreement(queue))])

    def _asked(self, ask):
        with self._lock:
            kept = self._connection is not None
            try:
                return ask()
            except BrokerDown:
                if not kept:
                    raise
                # The kept connection was closed under us (a broker restart): one fresh try.
                return ask()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _depth(self, queue: str) -> int:
        channel = self._open_channel()
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except self._connection.channel_errors:
            # 404: the queue does not exist (yet), so nothing waits in it. The broker closed
            # the channel with that answer: the next declare needs a new one.
            self._channel = None
            return 0
        except (*self._connection.connection_errors, OSError) as exc:
            self._drop()
            raise BrokerDown(str(exc) or type(exc).__name__) from exc

    def _disagreement(self, queue: str) -> Disagreement | None:
        self._open_channel()  # the kept connection, opened (or rebuilt) on the way
        try:
            return disagreement(self._connection, queue)
        except (*self._connection.connection_errors, *self._connection.channel_errors, OSError) as exc:
            self._drop()
            raise BrokerDown(str(exc) or type(exc).__name__) from exc

    def _open_channel(self):
        if self._channel is not None and self._connection is not None and self._connection.connected:
            return self._channel
        self._drop()
        connection = Connection(
            self._url,
            connect_timeout=self._timeout_s,
            transport_options={"read_timeout": self._timeout_s, "write_timeout": self._timeout_s},
        )
        try:
            connection.ensure_connection(max_retries=0)  # one attempt: no retry loop behind a probe
            channel = connection.channel()
        except (*connection.connection_errors, *connection.channel_errors, OSError, KombuError) as exc:
            # A channel error here is a refusal (bad credentials, no such vhost): not ready either.
            connection.collect()
            raise BrokerDown(str(exc) or type(exc).__name__) from exc
        self._connection, self._channel = connection, channel
        return channel

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.collect()  # frees the socket without waiting on a dead peer
        self._connection = self._channel = None
