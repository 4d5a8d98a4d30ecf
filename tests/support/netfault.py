"""A TCP proxy that a test can cut: a real network fault between a service and its clients.

While cut, new connections are refused and open ones are reset, exactly what a client
sees when a database or broker goes away; `restore` brings it back on the same port.
While stalled, it forwards nothing but closes nothing either (connections are accepted,
bytes are read and kept): a peer that went silent, as a hung server or a network
partition look to a client. `hold_replies` stalls one way only: requests reach the
server, which runs them, and its replies are kept (a link that broke after the request
went out). `resume` sends on what was kept.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._replying = threading.Event()
        self._replying.set()
        self.port = self._listen(0)

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, set()
        if listener is not None:
            # Closing alone leaves the port listening while _accept is blocked in accept()
            # (until a client comes), and a restore right away could not bind it again.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for connection in connections:
            _reset(connection)

    def restore(self) -> None:
        if self._listener is None:
            self._listen(self.port)

    def stall(self) -> None:
        self._flowing.clear()

    def hold_replies(self) -> None:
        self._replying.clear()

    def resume(self) -> None:
        self._flowing.set()
        self._replying.set()

    def close(self) -> None:
        self.resume()
        self.cut()

    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return listener.getsockname()[1]

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed by cut()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._listener is not listener:
                    _reset(client)
                    _reset(upstream)
                    return
                self._connections.update((client, upstream))
            for source, sink, gates in (
                (client, upstream, (self._flowing,)),
                (upstream, client, (self._flowing, self._replying)),
            ):
                threading.Thread(target=self._pump, args=(source, sink, gates), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, gates: tuple[threading.Event, ...]) -> None:
        try:
            while data := source.recv(65536):
                for gate in gates:
                    gate.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with self._lock:
                    self._connections.discard(sock)
                _reset(sock)


def _reset(sock: socket.socket) -> None:
    try:
        # Linger 0: close sends RST, as a vanished server's host would.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass
