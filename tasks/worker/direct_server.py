"""The direct connection's server: a predict process takes its web callers' synchronous
predictions on a TCP port of its own (`tasks.contract.direct` says what goes over it).

A thread watches the listening socket and every connection with a selector (a threads
pool runs one such server per thread of its pool, up to one per core, each on its own
port: `tasks.worker.ml`). It reads every
request that came in, serves them as one batch (the way the Redis lane's threads do:
predictions of one model share a model call), and answers each on its own connection as
its outcome is stored (`tasks.worker.outcomes`). Requests that arrive meanwhile wait in
their sockets for the next batch.

A stop removes the registration first, then answers what was read and closes every
connection: a request the process never read comes back to its web thread as a closed
connection, and the web sends it over the Redis lane instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import ipaddress
import logging
import os
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from tasks.contract import DIRECT_LANE_KEY, Call, FrameReader, FrameTooLong, Registration, frame
from tasks.contract.direct import RENEW_S
from tasks.observability import timeline
from tasks.worker.lane_server import BatchLimits, lane_call

log = logging.getLogger(__name__)

SELECT_S = 0.5  # how long a select waits when nothing comes
_WAKE = object()  # the selector's mark of the wake-up socket
SEND_TIMEOUT_S = 5  # seconds: a caller that takes no answer for this long is dropped
READ_BYTES = 1 << 20


def advertised_host(bind: str, host: str | None) -> str:
    """Where the web reaches a process bound to `bind`: `host` when set; for every
    interface, this host's own address (in a container, the one its network knows)."""
    if host:
        return host
    try:
        every_interface = ipaddress.ip_address(bind).is_unspecified
    except ValueError:  # a host name
        return bind
    if not every_interface:
        return bind
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return socket.gethostname()


class _Connection:
    def __init__(self, sock: socket.socket, selector: selectors.BaseSelector):
        self.sock = sock
        self._selector = selector
        self.reader = FrameReader()
        self.trusted = False  # gave the registration's key
        self.closed = False

    def answerer(self) -> Callable[[bytes], None]:
        """What answers one request: once, whatever else tries to answer it after."""
        answered = False

        def answer(encoded: bytes) -> None:
            nonlocal answered
            if not answered:
                answered = True
                self._send(encoded)

        return answer

    def _send(self, encoded: bytes) -> None:
        if self.closed:
            return  # its caller is gone; the outcome is stored for polling all the same
        try:
            self.sock.sendall(frame(encoded))
        except OSError as exc:  # SO_SNDTIMEO's too: a caller that reads nothing is dropped
            log.info("direct connection: an answer could not be sent (%s); the caller is gone", exc)
            self.close()

    def close(self) -> None:
        """Closed and out of the selector (whose thread is the only one to call this): a
        socket closed while watched would leave its number there for the next one."""
        if not self.closed:
            self.closed = True
            self._selector.unregister(self.sock)
            self.sock.close()


class DirectServer:
    """Serves the direct connection in this process until `stop`."""

    def __init__(
        self,
        registry: redis.Redis,
        serve: Callable[[list[Call]], Any],
        bind: str,
        advertise: str | None = None,
        *,
        max_messages: int,
        limits_of: Callable[[str], BatchLimits],
        number: int = 0,
    ):
        self._registry = registry
        self._serve = serve
        self._max_messages = max_messages
        self._limits_of = limits_of
        self._listener = socket.create_server((bind, 0), family=_family(bind), backlog=128)
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        # A byte on it wakes the thread from its select: a stop takes effect at once.
        self._wake_up, self._waker = socket.socketpair()
        self._selector.register(self._wake_up, selectors.EVENT_READ, _WAKE)
        self._field = f"{socket.gethostname()}:{os.getpid()}:{number}"
        self._host = advertised_host(bind, advertise)
        self._key = secrets.token_hex(16)
        self._registry_down = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"direct-connection-{number}", daemon=True)
        # Its own thread: a Redis gone silent must not hold up the predictions.
        self._renewer = threading.Thread(
            target=self._keep_registered, name=f"direct-registration-{number}", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        return self._host, self._listener.getsockname()[1]

    def start(self) -> DirectServer:
        self._forget_stale()
        self._renew()
        self._thread.start()
        self._renewer.start()
        log.info("direct connection: taking predictions on %s:%d", *self.address)
        return self

    def stop(self, timeout_s: float = SELECT_S + 30) -> None:
        """Deregister, answer what was read, then close every connection (a warm shutdown)."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._waker.send(b"x")
        if self._renewer.is_alive():
            self._renewer.join()
        try:
            self._registry.hdel(DIRECT_LANE_KEY, self._field)
        except redis.RedisError as exc:
            log.warning("direct connection: registration not removed (%s); it goes stale", exc)
        self._thread.join(timeout_s)

    # -- the serving thread ---------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                calls = self._read(SELECT_S)
                if not calls:
                    continue
                if len(calls) > 1:  # callers queue: a short wait lets one model call serve the next few
                    wait_s = max(self._limits_of(call.args[0]).wait_s for call in calls)
                    if wait_s > 0:
                        time.sleep(wait_s)
                        calls += self._read(0)
                for start in range(0, len(calls), self._max_messages):
                    self._serve_batch(calls[start : start + self._max_messages])
        finally:
            self._close_all()

    def _serve_batch(self, calls: list[Call]) -> None:
        try:
            self._serve(calls)
        except Exception:  # one bad batch must not end the connection's thread
            log.exception("direct connection: a batch of %d predictions failed", len(calls))

    def _read(self, timeout_s: float) -> list[Call]:
        calls: list[Call] = []
        for key, _ in self._selector.select(timeout_s):
            if key.data is None:
                self._accept()
            elif key.data is _WAKE:
                continue  # a stop: the loop sees it
            else:
                calls += self._requests(key.data)
        timeline.stamp_jobs((call.id for call in calls), "popped")
        return calls

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: the web falls back meanwhile
                log.warning("direct connection: accept failed (%s)", exc)
                return
            # Blocking, each call one system call: it reads only what the selector said is
            # there, and the kernel bounds how long an answer may wait to be sent.
            sock.setblocking(True)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT_S, 0))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._selector.register(sock, selectors.EVENT_READ, _Connection(sock, self._selector))

    def _requests(self, connection: _Connection) -> list[Call]:
        try:
            data = connection.sock.recv(READ_BYTES)
            frames = connection.reader.feed(data) if data else None
        except (OSError, FrameTooLong) as exc:
            log.warning("direct connection: dropped (%s)", exc)
            frames = None
        if frames is None:  # closed by its caller, broken, or not ours
            connection.close()
            return []
        calls = []
        for payload in frames:
            if not connection.trusted:
                connection.trusted = hmac.compare_digest(payload, self._key.encode())
                if not connection.trusted:
                    log.warning("direct connection: a caller gave a wrong key; closed")
                    connection.close()
                    return []
                continue
            call = lane_call(payload)  # a malformed one is logged and dropped
            if call is None:
                connection.close()  # its caller learns at once, rather than by its timeout
                return []
            calls.append(dataclasses.replace(call, reply_to=None, answer=connection.answerer()))
        return calls

    def _close_all(self) -> None:
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, _Connection):
                key.data.close()
            else:
                self._selector.unregister(key.fileobj)
        self._selector.close()
        for sock in (self._listener, self._wake_up, self._waker):
            sock.close()

    # -- the registration -----------------------------------------------------------

    def _keep_registered(self) -> None:
        while not self._stopping.wait(RENEW_S):
            self._renew()

    def _renew(self) -> None:
        host, port = self.address
        registration = Registration(host, port, self._key, time.time())
        try:
            self._registry.hset(DIRECT_LANE_KEY, self._field, registration.encode())
        except redis.RedisError as exc:
            if not self._registry_down:
                log.warning("direct connection: registration not renewed (%s); retrying", exc)
            self._registry_down = True
            return
        self._registry_down = False

    def _forget_stale(self) -> None:
        """Remove the registrations of processes that died without removing theirs."""
        try:
            entries = self._registry.hgetall(DIRECT_LANE_KEY)
            stale = [field for field, raw in entries.items() if not _fresh(raw)]
            if stale:
                self._registry.hdel(DIRECT_LANE_KEY, *stale)
        except redis.RedisError:
            pass  # the web ignores them anyway; the next start tries again


def _fresh(raw: bytes) -> bool:
    registration = Registration.decode(raw)
    return registration is not None and registration.is_fresh()


def _family(bind: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET
