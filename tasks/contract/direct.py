"""The direct connection: a waiting prediction sent straight to a predict process.

Over Redis, a synchronous prediction costs two hops each way (web → Redis → worker, and
back); a TCP connection from the web's request thread to a predict process costs one.
Each predict process that serves the lane listens on a port of its own and registers it
in the results' Redis (`names.DIRECT_LANE_KEY`, a hash: `host:pid:n` -> `Registration`, n
for each serving thread of the process); the web keeps a connection per request thread
and port.

On a connection, every message is a frame: a 4-byte big-endian length, then that many
bytes. The web's first frame is the registration's `key`: whoever reads it from Redis
could push to the Redis lane anyway, so the connection trusts exactly what the lane does.
Then each request is one frame, a lane message (`tasks.contract.lane`), answered by one
frame holding the job's outcome in Celery's result format, the bytes a reply key holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

LENGTH_BYTES = 4
# A frame this long is no request of ours (the web refuses bodies far smaller): the
# connection is closed instead of buffering it.
MAX_FRAME_BYTES = 256 * 1024 * 1024
# A registration renewed longer ago than this is a process that died without removing it.
REGISTRATION_TTL_S = 30.0
RENEW_S = 2.0


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(LENGTH_BYTES, "big") + payload


class FrameTooLong(ValueError):
    pass


class FrameReader:
    """Frames out of the bytes a connection delivered, in whatever pieces they came."""

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES):
        self._buffer = bytearray()
        self._max_bytes = max_bytes

    def feed(self, data: bytes) -> list[bytes]:
        """The frames `data` completed; raises FrameTooLong for a length past the limit."""
        self._buffer += data
        frames = []
        while len(self._buffer) >= LENGTH_BYTES:
            length = int.from_bytes(self._buffer[:LENGTH_BYTES], "big")
            if length > self._max_bytes:
                raise FrameTooLong(f"a frame of {length} bytes (at most {self._max_bytes})")
            end = LENGTH_BYTES + length
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[LENGTH_BYTES:end]))
            del self._buffer[:end]
        return frames


@dataclass(frozen=True)
class Registration:
    host: str
    port: int
    key: str  # the connection's first frame
    renewed_at: float  # epoch seconds

    def encode(self) -> bytes:
        return orjson.dumps([self.host, self.port, self.key, self.renewed_at])

    @classmethod
    def decode(cls, raw: bytes) -> Registration | None:
        """The registration, or None for a value that is not one (never trusted blindly)."""
        try:
            host, port, key, renewed_at = orjson.loads(raw)
            if isinstance(host, str) and type(port) is int and isinstance(key, str):
                return cls(host, port, key, float(renewed_at))
        except (orjson.JSONDecodeError, TypeError, ValueError):
            pass
        return None

    def is_fresh(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) - self.renewed_at < REGISTRATION_TTL_S
