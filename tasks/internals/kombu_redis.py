"""kombu's Redis transport with the per-message round trips of a busy worker taken out.

kombu's Redis transport pays, for every message: a BRPOP, a MULTI to record the message
as unacknowledged, and another to acknowledge it, each through a freshly built
`redis.Redis` client. A trade worker moves thousands of messages a second, so here:

* a channel keeps one synchronous client per connection pool instead of building one
  per command (redis-py clients are thread-safe);
* the worker waits with `BLMOVE queue queue RIGHT RIGHT`, which wakes it when a message
  arrives but leaves the message in the queue; a Lua script then takes up to the
  prefetch allowance from the consumed queues and records them as unacknowledged in
  the same atomic step. kombu's BRPOP pops a message before recording it, so a worker
  killed between the two lost that message for good. Each take runs under a token and
  its messages stay listed under it until the next take: a take whose reply was lost
  (Redis restarted or the connection dropped after the script ran) is asked again and
  returns the same messages, which would otherwise wait, held by no one, for the
  visibility timeout;
* the acks of one event-loop turn go to Redis in one pipeline. A worker that dies
  before the pipeline runs gets those messages redelivered, which the journal absorbs
  (its writes are idempotent); outside a worker's event loop (a bot, a threads pool's
  threads) acks are immediate.

Two things make a worker outlast a broker that is there but refuses (`tasks.contract.failures`):

* a reply refusing writes (NOREPLICAS, READONLY after a failover, MISCONF, OOM) pauses
  consuming with a growing backoff instead of ending the worker, and acknowledgements
  and rejections the broker refused are kept and sent again;
* the worker renews the visibility of every message it holds (their `unacked_index`
  score) every quarter of the visibility timeout, so kombu's sweep only ever returns
  the messages of a worker that is gone, never those a live worker still holds (in a
  batch, in a long database retry, or held through an outage).

The data in Redis is kombu's own (queues, `unacked`, `unacked_index`), so workers on
this transport and on kombu's stock one can share a broker, and kombu's visibility
timeout still restores what a vanished worker held. Selected for redis:// brokers by
`tasks.contract.connections.transport_for`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from queue import Empty
from time import monotonic, time
from typing import ClassVar

import redis.exceptions
from kombu.asynchronous import get_event_loop
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from tasks.contract import BROKER_UNAVAILABLE, brief
from tasks.internals import written_for

written_for("kombu", "5.7", __name__)

log = logging.getLogger(__name__)

MAX_BULK_FETCH = 100
RETRY_REFUSED_S = 1.0
MAX_CONSUME_PAUSE_S = 10.0

# KEYS: unacked hash, unacked index, this take's list, the previous take's list, then the
# lists to take from in order (kombu's BRPOP order: priority first, then the queue cycle);
# ARGV: how many, now, how long a take's list is kept. Records each message exactly as
# kombu's QoS.append does: index score = time, hash value = [message, exchange,
# routing_key]. Returns [list name, raw message, ...], and keeps that under the take's
# token until the next take: asked again with the same token (its reply was lost), it
# returns the same messages instead of taking others.
_TAKE_AND_RECORD = """
if redis.call('EXISTS', KEYS[3]) == 1 then
  return redis.call('LRANGE', KEYS[3], 0, -1)
end
if KEYS[4] ~= KEYS[3] then
  redis.call('DEL', KEYS[4])
end
local taken, wanted = {}, tonumber(ARGV[1])
for q = 5, #KEYS do
  while #taken < wanted * 2 do
    local raw = redis.call('RPOP', KEYS[q])
    if not raw then break end
    local ok, message = pcall(cjson.decode, raw)
    if ok and type(message) == 'table' and type(message.properties) == 'table'
        and message.properties.delivery_tag then
      local info = message.properties.delivery_info or {}
      local tag = message.properties.delivery_tag
      redis.call('ZADD', KEYS[2], ARGV[2], tag)
      redis.call('HSET', KEYS[1], tag, '[' .. raw .. ',' .. cjson.encode(info.exchange or '')
        .. ',' .. cjson.encode(info.routing_key or '') .. ']')
    end
    taken[#taken + 1] = KEYS[q]
    taken[#taken + 1] = raw
  end
end
if #taken > 0 then
  redis.call('RPUSH', KEYS[3], unpack(taken))
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
return taken
"""


def _on_event_loop() -> bool:
    # The hub is not thread-safe: off its thread (a threads pool's threads) nothing waits.
    return get_event_loop() is not None and threading.current_thread() is threading.main_thread()


class QoS(kombu_redis.QoS):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._acks: list[str] = []
        self._refused: list[tuple[str, bool]] = []  # rejections the broker refused: (tag, requeue)
        self._retry_scheduled = False
        self._refusing = False  # the broker refused the last try: said once, not every second
        self.recorded: set[str] = set()  # taken by the Lua script, already in Redis

    def append(self, message, delivery_tag):
        if delivery_tag in self.recorded:
            self.recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag):
        if not _on_event_loop():
            try:
                super().ack(delivery_tag)
            except BROKER_UNAVAILABLE as exc:
                # The broker's copy comes back after the visibility timeout; the journal's
                # writes are idempotent and a prediction is only answered once.
                log.warning("the broker refused an acknowledgement (%s)", brief(exc))
                virtual.QoS.ack(self, delivery_tag)
            return
        if not self._acks:
            get_event_loop().call_soon(self._flush_acks)
        self._acks.append(delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        try:
            super().reject(delivery_tag, requeue)
        except BROKER_UNAVAILABLE as exc:
            if not _on_event_loop():
                log.warning("the broker refused a rejection (%s)", brief(exc))
                virtual.QoS.ack(self, delivery_tag)
                return
            self._refused.append((delivery_tag, requeue))
            self._retry_later(exc)

    def _flush_acks(self) -> None:
        tags, self._acks = self._acks, []
        if not tags:
            return
        try:
            with self.pipe_or_acquire() as pipe:
                for tag in tags:
                    self._remove_from_indices(tag, pipe)
                pipe.execute()
        except BROKER_UNAVAILABLE as exc:
            self._acks[:0] = tags  # still held (and kept visible): sent again shortly
            self._retry_later(exc)
            return
        for tag in tags:
            virtual.QoS.ack(self, tag)
        if self._refusing and not self._refused:
            log.info("the broker took the acknowledgements it had refused")
            self._refusing = False

    def _retry_later(self, exc: BaseException) -> None:
        if self._retry_scheduled:
            return
        if not self._refusing:
            log.warning(
                "the broker refused %d acknowledgements and %d rejections (%s): sent again every %gs",
                len(self._acks),
                len(self._refused),
                brief(exc),
                RETRY_REFUSED_S,
            )
            self._refusing = True
        self._retry_scheduled = True
        get_event_loop().call_later(RETRY_REFUSED_S, self._retry_refused)

    def _retry_refused(self) -> None:
        self._retry_scheduled = False
        refused, self._refused = self._refused, []
        for tag, requeue in refused:
            self.reject(tag, requeue)
        self._flush_acks()

    def refresh_visibility(self) -> None:
        """Mark every message this channel holds as delivered now, so no sweep returns it."""
        tags = [tag for tag in list(self._delivered) if tag not in self._dirty]
        if tags:
            with self.channel.conn_or_acquire() as client:
                client.zadd(self.unacked_index_key, dict.fromkeys(tags, time()), xx=True)

    def restore_visible(self, *args, **kwargs):
        try:
            return super().restore_visible(*args, **kwargs)
        except BROKER_UNAVAILABLE as exc:  # the sweep runs again on its next turn
            log.debug("restoring timed-out messages failed: %s", brief(exc))

    def restore_unacked_once(self, stderr=None):
        # On close, what was acknowledged must not be restored to the queue.
        if self._acks:
            self._flush_acks()
        try:
            return super().restore_unacked_once(stderr)
        except BROKER_UNAVAILABLE as exc:
            log.warning(
                "could not return held messages to the queue (%s): they come back after the "
                "visibility timeout",
                brief(exc),
            )


class Channel(kombu_redis.Channel):
    QoS = QoS
    # The take whose reply has not been read (the connection dropped after Redis may have
    # run it), asked again by the next take, and the last one answered, whose list the
    # next take deletes. Process-wide: a reconnection builds new channels, and one thread
    # takes (the consumer's event loop).
    unanswered_take: ClassVar[str | None] = None
    answered_take: ClassVar[str | None] = None
    _sync_client = None
    _take_and_record = None
    _blmove_supported: bool | None = None
    _waiting_without_popping = False
    _paused_until = 0.0
    _pause_s = 0.0

    def __init__(self, *args, **kwargs):
        self._no_ack_queues: set[str] = set()
        super().__init__(*args, **kwargs)

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        if self._sync_client is None or self._sync_client.connection_pool is not self.pool:
            self._sync_client = super()._create_client()
            self._take_and_record = self._sync_client.register_script(_TAKE_AND_RECORD)
        return self._sync_client

    def basic_consume(self, queue, no_ack, *args, **kwargs):
        (self._no_ack_queues.add if no_ack else self._no_ack_queues.discard)(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _waits_without_popping(self) -> bool:
        # BLMOVE is Redis 6.2+; key prefixes and no-ack consumers keep kombu's BRPOP.
        if self._blmove_supported is None:
            version = self._create_client().info("server").get("redis_version", "0")
            self._blmove_supported = tuple(int(part) for part in version.split(".")[:2]) >= (6, 2)
        return (
            self._blmove_supported
            and not self.global_keyprefix
            and not (self._no_ack_queues & set(self.active_queues))
        )

    def _brpop_start(self, timeout=None):
        if monotonic() < self._paused_until:
            return  # the broker refused lately: the next loop turn asks again
        if not self._waits_without_popping():
            self._waiting_without_popping = False
            return super()._brpop_start(timeout)
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        # One list can be watched without popping: the next queue in the cycle. A
        # message on another queue (or priority list) is taken with it, or within
        # brpop_timeout when that queue alone is busy.
        watched = queues[0]
        self._waiting_without_popping = True
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        timeout = self.brpop_timeout if timeout is None else timeout
        self.client.connection.send_command("BLMOVE", watched, watched, "RIGHT", "RIGHT", timeout or 0)

    def _brpop_read(self, **options):
        try:
            delivered = self._read_and_take(**options)
        except redis.exceptions.ResponseError as exc:  # a reply refusing: NOREPLICAS, READONLY, OOM
            self._pause_consuming(exc)
            raise Empty() from None
        if self._pause_s:
            log.info("the broker takes writes again: consuming goes on")
            self._pause_s = 0.0
        return delivered

    def _pause_consuming(self, exc: BaseException) -> None:
        self._pause_s = min(MAX_CONSUME_PAUSE_S, max(0.5, self._pause_s * 2))
        self._paused_until = monotonic() + self._pause_s
        log.warning("the broker refuses (%s): consuming paused for %gs", brief(exc), self._pause_s)

    def _read_and_take(self, **options):
        if not self._waiting_without_popping:
            delivered = super()._brpop_read(**options)
            if delivered:
                self._take_and_deliver()
            return delivered
        try:
            try:
                self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # the next turn reconnects
                raise
            if not self._take_and_deliver():
                raise Empty()
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _take_and_deliver(self) -> int:
        """Take what waits (within the prefetch allowance) and record it, in one atomic step."""
        queues = [queue for queue in self.active_queues if queue not in self._no_ack_queues]
        allowance = self.qos.can_consume_max_estimate()
        wanted = min(MAX_BULK_FETCH, MAX_BULK_FETCH if allowance is None else allowance)
        if not queues or wanted <= 0 or self.global_keyprefix:
            return 0
        lists = [self._q_for_pri(queue, priority) for priority in self.priority_steps for queue in queues]
        taken = self._take(wanted, lists)
        for position in range(0, len(taken), 2):
            payload = loads(taken[position + 1])
            tag = (payload.get("properties") or {}).get("delivery_tag") if isinstance(payload, dict) else None
            if tag is not None:
                self.qos.recorded.add(tag)
            queue = bytes_to_str(taken[position]).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            self.connection._deliver(payload, queue)
        return len(taken) // 2

    def _take(self, wanted: int, lists: list[str]) -> list:
        """Run the take under a token. A take whose reply never came (Redis restarted or the
        connection dropped after the script ran: its messages are recorded as
        unacknowledged, held by no one) is asked again with its token by the next take,
        which gets those messages back instead of leaving them to the visibility timeout."""
        token = Channel.unanswered_take or uuid.uuid4().hex
        Channel.unanswered_take = token
        record = self._take_key(token)
        previous = self._take_key(Channel.answered_take) if Channel.answered_take else record
        taken = self._take_and_record(
            keys=[self.unacked_key, self.unacked_index_key, record, previous, *lists],
            args=[wanted, time(), max(1, int(self.visibility_timeout))],
            client=self._create_client(),
        )
        Channel.unanswered_take, Channel.answered_take = None, token
        return taken

    def _take_key(self, token: str) -> str:
        return f"{self.unacked_key}:take:{token}"


class Transport(kombu_redis.Transport):
    Channel = Channel
    # A reply refusing writes elsewhere (declaring the queues when the consumer starts,
    # after a failover closed its connection) is a broker not available yet: the consumer
    # reconnects with backoff, where kombu would end the worker ("Unrecoverable error").
    connection_errors = (*kombu_redis.Transport.connection_errors, redis.exceptions.ResponseError)

    def register_with_event_loop(self, connection, loop):
        super().register_with_event_loop(connection, loop)
        visibility_timeout = connection.client.transport_options.get("visibility_timeout", 3600)
        loop.call_repeatedly(max(1.0, visibility_timeout / 4), self._refresh_visibility)

    def _refresh_visibility(self) -> None:
        for channel in list(self.cycle._channels):
            try:
                channel.qos.refresh_visibility()
            except BROKER_UNAVAILABLE as exc:  # tried again on the next turn
                log.debug("renewing the visibility of held messages failed: %s", brief(exc))
