"""The web's side of the direct connection: a synchronous prediction sent straight to a
predict process (`tasks.contract.direct` says what goes over it).

Each request thread keeps one connection per predict process and sends to the process
with the fewest of this web process's predictions under way. When no process takes it
(none registered, refused, closed before answering), `NotDelivered` sends the caller to
the Redis lane instead, and a process that refused is left alone for a few seconds. A
connection closed after its request went out may mean the process took it and died:
sent again over Redis, the job runs twice, with the same outcome.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from tasks.contract import DIRECT_LANE_KEY, FrameReader, FrameTooLong, Registration, frame
from tasks.observability import timeline

log = logging.getLogger(__name__)

REFRESH_S = 1.0  # how often the registrations are read again
CONNECT_TIMEOUT_S = 0.5
SHUNNED_S = 5.0  # how long a process that refused or closed is left alone
READ_BYTES = 1 << 16

Address = tuple[str, int]


class NotDelivered(Exception):
    """No predict process took the request: send it over the Redis lane."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason  # unregistered, unreachable or closed


class DirectConnections:
    def __init__(self, registry: redis.Redis, decode: Callable[[bytes], dict[str, Any]]):
        self._registry = registry  # the results' Redis, where predict processes register
        self._decode = decode
        self._local = threading.local()
        self._lock = threading.Lock()
        self._registrations: list[Registration] = []
        self._addresses: frozenset[Address] = frozenset()  # of the registrations
        self._read_at = float("-inf")
        self._shunned: dict[Address, float] = {}  # address -> monotonic time it is tried again
        self._under_way: dict[Address, int] = {}
        self._turn = 0

    def send_and_wait(self, message: bytes, job_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The job's outcome (Celery result meta), or None when the wait ran out (the job
        goes on); raises NotDelivered when no process took it."""
        registration = self._choose()
        address = (registration.host, registration.port)
        try:
            return self._exchange(registration, message, job_id, timeout_s)
        finally:
            with self._lock:
                self._under_way[address] -= 1

    # -- choosing a process ---------------------------------------------------------

    def _choose(self) -> Registration:
        """The process with the fewest of this web process's requests under way (among
        equals, each in turn), counted as one more until its request ends."""
        now = time.monotonic()
        if now - self._read_at >= REFRESH_S:
            self._refresh(now)
        candidates = [r for r in self._registrations if self._shunned.get((r.host, r.port), 0.0) <= now]
        if not candidates:
            raise NotDelivered("unregistered" if not self._registrations else "unreachable")
        with self._lock:
            self._turn = (self._turn + 1) % len(candidates)
            rotated = candidates[self._turn :] + candidates[: self._turn]
            chosen = min(rotated, key=lambda r: self._under_way.get((r.host, r.port), 0))
            address = (chosen.host, chosen.port)
            self._under_way[address] = self._under_way.get(address, 0) + 1
        return chosen

    def _refresh(self, now: float) -> None:
        self._read_at = now  # whatever the outcome: a Redis that is down is not asked per request
        try:
            entries = self._registry.hgetall(DIRECT_LANE_KEY)
        except redis.RedisError as exc:
            log.debug("direct connection: registrations not read (%s); kept the last ones", exc)
            return
        wall = time.time()
        found = (Registration.decode(raw) for raw in entries.values())
        self._registrations = sorted(
            (r for r in found if r is not None and r.is_fresh(wall)), key=lambda r: (r.host, r.port)
        )
        self._addresses = frozenset((r.host, r.port) for r in self._registrations)
        # What processes gone (a restart takes a new port) left behind.
        for address, until in list(self._shunned.items()):
            if until <= now:
                self._shunned.pop(address, None)
        with self._lock:
            for address in [a for a, n in self._under_way.items() if n == 0 and a not in self._addresses]:
                del self._under_way[address]

    def _shun(self, address: Address) -> None:
        self._shunned[address] = time.monotonic() + SHUNNED_S

    # -- one request ----------------------------------------------------------------

    def _exchange(
        self, registration: Registration, message: bytes, job_id: str, timeout_s: float
    ) -> dict[str, Any] | None:
        address = (registration.host, registration.port)
        kept = self._connection(registration)
        try:
            kept.wait_at_most(timeout_s)
            timeline.mark("pushed")
            kept.sock.sendall(frame(message))
            payload = _read_frame(kept.sock)
            timeline.mark("replied")
        except BlockingIOError:  # the wait ran out (SO_RCVTIMEO, SO_SNDTIMEO)
            self._forget(address)  # its answer may still come: not on a connection reused
            return None
        except (OSError, FrameTooLong) as exc:
            self._forget(address)
            self._shun(address)
            raise NotDelivered("closed") from exc
        try:
            outcome = self._decode(payload)
        except ValueError:
            outcome = None
        if not isinstance(outcome, dict) or outcome.get("task_id") != job_id:
            self._forget(address)  # not this request's answer: the connection is out of step
            raise NotDelivered("closed")
        timeline.mark("decoded")
        return outcome

    def _connection(self, registration: Registration) -> _Kept:
        """This thread's connection to the process, made (and given the key) on first use."""
        connections: dict[Address, _Kept] = self._local.__dict__.setdefault("connections", {})
        if getattr(self._local, "addresses", None) is not self._addresses:  # the registrations changed
            self._local.addresses = self._addresses
            for gone in [a for a in connections if a not in self._addresses]:
                connections.pop(gone).sock.close()  # a process that stopped, or is no longer registered
        address = (registration.host, registration.port)
        kept = connections.get(address)
        if kept is not None and kept.still_open():
            return kept
        self._forget(address)
        try:
            sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(frame(registration.key.encode()))
        except OSError as exc:
            self._shun(address)
            log.warning("direct connection to %s:%d failed (%s); using the Redis lane", *address, exc)
            raise NotDelivered("unreachable") from exc
        kept = connections[address] = _Kept(sock)
        return kept

    def _forget(self, address: Address) -> None:
        connections: dict[Address, _Kept] = self._local.__dict__.setdefault("connections", {})
        kept = connections.pop(address, None)
        if kept is not None:
            kept.sock.close()


class _Kept:
    """A connection kept by one request thread. A blocking socket whose waits the kernel
    bounds (SO_RCVTIMEO, SO_SNDTIMEO): each send and receive is one system call, where
    Python's own timeouts add a poll before each."""

    def __init__(self, sock: socket.socket):
        sock.settimeout(None)
        self.sock = sock
        self._timeout_s: float | None = None

    def wait_at_most(self, timeout_s: float) -> None:
        timeout_s = max(timeout_s, 0.001)
        if timeout_s != self._timeout_s:  # the same for most requests: set once
            seconds = int(timeout_s)
            value = struct.pack("ll", seconds, int((timeout_s - seconds) * 1_000_000))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
            self._timeout_s = timeout_s

    def still_open(self) -> bool:
        """False for a connection its process closed (a stop, a restart) while it sat idle."""
        try:
            self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True  # nothing to read: open and idle, as it should be
        except OSError:
            return False
        return False  # closed, or bytes no request asked for: not to be used again


def _read_frame(sock: socket.socket) -> bytes:
    reader = FrameReader()
    while True:
        data = sock.recv(READ_BYTES)
        if not data:
            raise ConnectionResetError("the predict process closed the connection")
        frames = reader.feed(data)
        if frames:
            return frames[0]
