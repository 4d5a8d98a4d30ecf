"""Several Redis commands in one round trip, without redis-py's pipeline machinery.

A worker answering a prediction sends a few commands per request; redis-py's Pipeline
(command stack, retry wrapper, pool checkout) costs more than Redis takes to run them.
Each thread keeps one connection per Redis client here (`kept_connection`), which the
web's waiting requests use too (`tasks.web_clients.replies`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

import redis

_local = threading.local()


def send_all(
    client: redis.Redis, commands: Sequence[tuple], meanwhile: Callable[[], None] | None = None
) -> list:
    """Run `commands` (each a tuple: name, *args) in order; their replies, or the first error
    raised. `meanwhile` runs once, after the commands went out and before their replies
    are read; if they cannot be sent, before the error is raised."""
    pending = [meanwhile] if meanwhile is not None else []

    def run_meanwhile() -> None:
        while pending:
            pending.pop()()

    try:
        if not commands:
            return []
        try:
            return _send_all(client, commands, run_meanwhile)
        except redis.ConnectionError:
            # A kept connection that Redis closed (a restart): once more on a fresh one. The
            # commands here (SETEX, LPUSH of an outcome) do no harm when repeated.
            return _send_all(client, commands, run_meanwhile)
    finally:
        run_meanwhile()


def _send_all(client: redis.Redis, commands: Sequence[tuple], meanwhile: Callable[[], None]) -> list:
    connection = kept_connection(client)
    try:
        connection.send_packed_command(connection.pack_commands(commands))
        meanwhile()
        return [connection.read_response() for _ in commands]
    except BaseException:
        connection.disconnect()  # replies may be left unread: start afresh next time
        raise


def kept_connection(client: redis.Redis) -> redis.Connection:
    """This thread's own connection to `client`'s server, made on first use; a caller that
    may leave a reply unread disconnects it (the next command reconnects).

    Made with the pool's settings but outside its count: a server that replaces idle
    threads (granian does, after 30 s) would otherwise reach the pool's max_connections
    (100 in redis-py 8) and refuse every request. It closes when its thread's locals go."""
    connections = _local.__dict__.setdefault("connections", {})
    pool = client.connection_pool
    connection = connections.get(id(pool))
    if connection is None or connection.pid != os.getpid():
        connection = connections[id(pool)] = pool.connection_class(**pool.connection_kwargs)
    return connection
