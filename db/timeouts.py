"""No database call waits forever, even on a server that stops answering without closing.

The server's `statement_timeout` ends a statement that runs (or waits for a lock) too
long. It cannot help when the server, or something on the way, goes silent with the
socket left open: the client then waits for a reply that never comes. libpq has no
client-side deadline, so every wait of psycopg2 goes through `psycopg2`'s documented
wait callback here, which gives up `CLIENT_MARGIN_S` after the statement timeout (or
after the connect timeout while connecting) by shutting the socket down: the call then
fails as a lost connection, which SQLAlchemy invalidates and the journal treats as the
database being unavailable.
"""

from __future__ import annotations

import os
import select
import socket
import time

import psycopg2
import psycopg2.errors
import psycopg2.extensions as pg

CLIENT_MARGIN_S = 5.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
# Statuses of a connection still being set up (psycopg2's internal SETUP, CONNECTING,
# DATESTYLE): the connect timeout applies, not the statement's.
_CONNECTING = {pg.STATUS_SETUP, 20, 21}

_statement_deadline_s: float | None = 30.0 + CLIENT_MARGIN_S


def connect_args(statement_timeout_s: float, connect_timeout_s: int = 5) -> dict:
    """psycopg2 connection arguments: server-side statement timeout, TCP keepalives."""
    configure(statement_timeout_s)
    return {
        "connect_timeout": connect_timeout_s,
        "options": f"-c statement_timeout={int(statement_timeout_s * 1000)}",
        # An idle pooled connection whose peer vanished is found out by the kernel.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }


def configure(statement_timeout_s: float | None) -> None:
    """Install the wait callback, giving up `CLIENT_MARGIN_S` after `statement_timeout_s`
    (None: statements may take as long as they take, as migrations do)."""
    global _statement_deadline_s
    _statement_deadline_s = None if statement_timeout_s is None else statement_timeout_s + CLIENT_MARGIN_S
    pg.set_wait_callback(wait_with_deadline)


def statement_timed_out(error: BaseException) -> bool:
    """The server cancelled a statement that ran past its statement_timeout (not a
    connection lost, not a server away)."""
    return isinstance(getattr(error, "orig", error), psycopg2.errors.QueryCanceled)


def wait_with_deadline(connection) -> None:
    allowed = _deadline_for(connection)
    deadline = None if allowed is None else time.monotonic() + allowed
    while True:
        state = connection.poll()
        if state == pg.POLL_OK:
            return
        if state == pg.POLL_READ:
            events = select.POLLIN
        elif state == pg.POLL_WRITE:
            events = select.POLLOUT
        else:
            raise psycopg2.OperationalError(f"unexpected poll state {state}")
        waiting = select.poll()  # not select(): it fails on descriptors above 1023
        waiting.register(connection.fileno(), events)
        remaining_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
        if not waiting.poll(remaining_ms):
            _give_up(connection)
            deadline = time.monotonic() + CLIENT_MARGIN_S  # poll() now fails at once


def _deadline_for(connection) -> float | None:
    if connection.status in _CONNECTING:
        try:
            return float(connection.get_dsn_parameters().get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT_S)
        except (psycopg2.Error, ValueError):
            return DEFAULT_CONNECT_TIMEOUT_S
    return _statement_deadline_s


def _give_up(connection) -> None:
    # Shut the socket down under libpq: its next read fails as "server closed the
    # connection unexpectedly", and the caller gets an OperationalError.
    try:
        probe = socket.socket(fileno=os.dup(connection.fileno()))
    except OSError:
        return
    try:
        probe.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        probe.close()
