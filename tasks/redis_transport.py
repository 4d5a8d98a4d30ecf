"""kombu's Redis transport with the per-message round trips of a busy worker taken out.

kombu's Redis transport pays, for every message: a BRPOP, a MULTI to record the message
as unacknowledged, and another to acknowledge it, each through a freshly built
`redis.Redis` client. A trade worker moves thousands of messages a second, so here:

* a channel keeps one synchronous client per connection pool instead of building one
  per command (redis-py clients are thread-safe);
* when a BRPOP wakes the worker, a Lua script takes up to the prefetch allowance more
  messages from the consumed queues and records them as unacknowledged in the same
  atomic step (kombu leaves a gap between popping a message and recording it);
* the acks of one event-loop turn go to Redis in one pipeline. A worker that dies
  before the pipeline runs gets those messages redelivered, which the journal absorbs
  (its writes are idempotent); outside a worker's event loop (a bot, a threads pool's
  threads) acks are immediate.

The data in Redis is kombu's own (queues, `unacked`, `unacked_index`), so workers on
this transport and on kombu's stock one can share a broker, and kombu's visibility
timeout still restores what a vanished worker held. Selected for redis:// brokers by
`transport_for` (celeryconfig, tasks.client).
"""

from __future__ import annotations

import threading
from time import time
from urllib.parse import urlparse

from kombu.asynchronous import get_event_loop
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import loads

TRANSPORT = "tasks.redis_transport:Transport"
MAX_BULK_FETCH = 100

# KEYS: unacked hash, unacked index, then the queues; ARGV: how many, now.
# Takes round-robin from the queues and records each message exactly as kombu's
# QoS.append does: index score = time, hash value = [message, exchange, routing_key].
_TAKE_AND_RECORD = """
local taken, queues, wanted = {}, #KEYS - 2, tonumber(ARGV[1])
local empty = 0
while #taken < wanted * 2 and empty < queues do
  empty = 0
  for q = 3, #KEYS do
    if #taken >= wanted * 2 then break end
    local raw = redis.call('RPOP', KEYS[q])
    if raw then
      local ok, message = pcall(cjson.decode, raw)
      if ok and type(message) == 'table' and type(message.properties) == 'table'
          and message.properties.delivery_tag then
        local info = message.properties.delivery_info or {}
        local tag = message.properties.delivery_tag
        redis.call('ZADD', KEYS[2], ARGV[2], tag)
        redis.call('HSET', KEYS[1], tag, '[' .. raw .. ',' .. cjson.encode(info.exchange or '')
          .. ',' .. cjson.encode(info.routing_key or '') .. ']')
      end
      taken[#taken + 1] = q - 3
      taken[#taken + 1] = raw
    else
      empty = empty + 1
    end
  end
end
return taken
"""


def transport_for(broker_url: str) -> str | None:
    """This transport for a Redis broker URL; None (kombu's choice) for any other broker."""
    return TRANSPORT if urlparse(broker_url).scheme in ("redis", "rediss") else None


class QoS(kombu_redis.QoS):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._acks: list[str] = []
        self.recorded: set[str] = set()  # taken by the Lua script, already in Redis

    def append(self, message, delivery_tag):
        if delivery_tag in self.recorded:
            self.recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag):
        hub = get_event_loop()
        if hub is None or threading.current_thread() is not threading.main_thread():
            # No loop, or a pool thread (threads pool): the hub is not thread-safe.
            super().ack(delivery_tag)
            return
        if not self._acks:
            hub.call_soon(self._flush_acks)
        self._acks.append(delivery_tag)

    def _flush_acks(self) -> None:
        tags, self._acks = self._acks, []
        with self.pipe_or_acquire() as pipe:
            for tag in tags:
                self._remove_from_indices(tag, pipe)
            pipe.execute()
        for tag in tags:
            virtual.QoS.ack(self, tag)

    def restore_unacked_once(self, stderr=None):
        # On close, what was acknowledged must not be restored to the queue.
        if self._acks:
            self._flush_acks()
        return super().restore_unacked_once(stderr)


class Channel(kombu_redis.Channel):
    QoS = QoS
    _sync_client = None
    _take_and_record = None

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

    def _brpop_read(self, **options):
        delivered = super()._brpop_read(**options)
        if delivered:
            self._deliver_more()
        return delivered

    def _deliver_more(self) -> None:
        """Take what else waits (within the prefetch allowance) in one round trip."""
        queues = [queue for queue in self.active_queues if queue not in self._no_ack_queues]
        allowance = self.qos.can_consume_max_estimate()
        wanted = min(MAX_BULK_FETCH, MAX_BULK_FETCH if allowance is None else allowance)
        if not queues or wanted <= 0 or self.global_keyprefix:
            return
        client = self._create_client()
        taken = self._take_and_record(
            keys=[self.unacked_key, self.unacked_index_key, *queues], args=[wanted, time()], client=client
        )
        for position in range(0, len(taken), 2):
            payload = loads(taken[position + 1])
            tag = (payload.get("properties") or {}).get("delivery_tag") if isinstance(payload, dict) else None
            if tag is not None:
                self.qos.recorded.add(tag)
            self.connection._deliver(payload, queues[int(taken[position])])


class Transport(kombu_redis.Transport):
    Channel = Channel
