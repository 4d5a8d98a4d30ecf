"""`make run`'s ready line: it says once when the stack serves, or what it still waits for.

The URLs are printed before the processes start; the workers, the models and Flower take
a few seconds more, and a newcomer cannot tell when it is done. So a thread asks the web's
`/readyz` (no token needed) until it answers 200, then prints one line. If it is not
ready after NOT_READY_AFTER_S, one line names the checks that fail, and the wait goes on.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

POLL_S = 0.5
NOT_READY_AFTER_S = 120.0


def ready_line(elapsed_s: float, urls: dict[str, str]) -> str:
    return (
        f"make run: ready in {elapsed_s:.0f} s: the dashboard and API at {urls['web']}, "
        f"Flower at {urls['flower']}. Ctrl-C stops it."
    )


def failing_checks(body: bytes) -> str:
    """The checks of a 503 from /readyz that fail, each with its error: one line."""
    try:
        checks = json.loads(body)["checks"]
    except (ValueError, KeyError, TypeError):
        return "no readable answer"
    failing = [
        f"{name} ({check['error']})" if check.get("error") else name
        for name, check in checks.items()
        if isinstance(check, dict) and not check.get("ok", True)
    ]
    return ", ".join(failing) or "no failing check named"


def readyz(url: str) -> tuple[int | None, bytes]:
    """/readyz's status and body; None when the web does not answer (yet)."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:  # noqa: S310 - our own URL
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (OSError, ValueError):
        return None, b""


class ReadyWatch(threading.Thread):
    """Prints the ready line once /readyz answers 200, unless `stop()` came first."""

    def __init__(self, urls: dict[str, str], started: float, echo: Callable[[str], None]):
        super().__init__(name="ready-watch", daemon=True)
        self.urls = urls
        self.started = started  # time.monotonic() when `make run` began
        self.echo = echo
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        hinted = False
        while not self._stopping.is_set():
            status, body = readyz(self.urls["web"])
            elapsed = time.monotonic() - self.started
            if status == 200:
                self._say(ready_line(elapsed, self.urls))
                return
            if not hinted and elapsed >= NOT_READY_AFTER_S:
                hinted = True
                why = failing_checks(body) if status is not None else "the web does not answer"
                self._say(f"make run: not ready after {elapsed:.0f} s, waiting for: {why}")
            self._stopping.wait(POLL_S)

    def _say(self, line: str) -> None:
        if not self._stopping.is_set():  # a stop under way: its lines only
            self.echo(line)
