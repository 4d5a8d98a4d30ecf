"""Flower's settings: `celery -A tasks flower` reads this file from the working directory.

Address, port and credentials come from the environment through `config` (FLOWER_ADDRESS,
FLOWER_PORT, FLOWER_BASIC_AUTH), so `.env` works in development as it does for the rest.
Flower shows every task's arguments and can revoke tasks and stop workers, so it refuses
to listen beyond the loopback interface without basic auth.

tornado runs this file and takes every global named as one of its options (`port`,
`address`, `logging`, ...): the other globals here start with an underscore.
"""

import ipaddress
import logging as _logging
import sys
import threading as _threading
import time as _time

from config import get_settings

_settings = get_settings()


def _loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # "" (every interface) or a host name
        return False


address = _settings.flower_address
port = _settings.flower_port
inspect_timeout = 1000.0  # ms, Flower's default: how long a round waits for the workers

if _settings.flower_basic_auth is not None:
    _credentials = _settings.flower_basic_auth.get_secret_value()
    if ":" not in _credentials:
        sys.exit("FLOWER_BASIC_AUTH must be user:password")
    basic_auth = [_credentials]
elif not _loopback(address):
    sys.exit(
        f"Flower refuses to listen on {address or 'every interface'!r} without FLOWER_BASIC_AUTH "
        "(user:password); set it, or FLOWER_ADDRESS=127.0.0.1 for a local Flower"
    )


class _WorkersStillStarting(_logging.Filter):
    """Flower inspects the workers as it starts and logs "Inspect method stats failed" (a
    warning per method: stats, active_queues, registered, conf) when none answers within
    its inspect timeout. Under `make run` the workers start beside Flower and cannot answer
    yet, and Flower lists each one anyway once its events arrive: that first round becomes
    one line that says so. A later round, or a failure with a cause (Flower then adds the
    broker's error to the line), passes as it is."""

    STARTUP_S = 30.0  # the first inspection ends about a second after Flower starts
    # One round's methods are asked together and time out together, within milliseconds
    # of each other; a later round's cannot time out sooner than inspect_timeout after
    # the first round's. A window of 2 s swallowed a refresh's round, one time in five.
    ROUND_S = inspect_timeout / 1000 / 2

    def __init__(self) -> None:
        super().__init__()
        self._started = _time.monotonic()
        self._round_ends: float | None = None
        self._lock = _threading.Lock()  # the methods' answers come in threads of their own

    def filter(self, record: _logging.LogRecord) -> bool:
        if record.msg != "Inspect method %s failed":  # no worker answered (no cause given)
            return True
        now = _time.monotonic()
        with self._lock:
            first = self._round_ends is None and now - self._started < self.STARTUP_S
            if first:
                self._round_ends = now + self.ROUND_S
            elif self._round_ends is not None and now <= self._round_ends:
                return False  # the first round's other methods: said already
        if first:
            record.levelno, record.levelname = _logging.INFO, "INFO"
            record.msg, record.args = (
                "No worker answered Flower's first inspection: they are still starting. Flower "
                "lists each worker as it comes online.",
                (),
            )
        return True


_logging.getLogger("flower.inspector").addFilter(_WorkersStillStarting())
