"""How `make run` stops: Ctrl-C, SIGTERM or SIGHUP, once, whatever it is doing then.

Before honcho runs, the signal ends the step under way (`Stopped`); once honcho runs, it
is passed on to honcho alone, which stops the Procfile's processes. honcho runs in a
session of its own, so that it hears a stop exactly once (from here), never twice (from
the terminal and from here) nor not at all (`kill` or make's SIGTERM reach this process
only). Either way the stop is orderly and `make run` exits 0: make stays quiet.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """A stop signal came before honcho ran."""


class Stop:
    """The first stop signal, and honcho once it runs."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self._honcho: subprocess.Popen | None = None
        self._interrupts = True  # a signal ends the step under way (raises Stopped)
        self._passed_on = False

    def install(self) -> None:
        for number in STOP_SIGNALS:
            signal.signal(number, self._received)

    @property
    def name(self) -> str:
        return self.signal.name if self.signal is not None else ""

    def settle(self) -> None:
        """From now on a stop signal is only noted (and passed on to honcho): what runs now
        must not be cut short, honcho or the servers' own stop."""
        self._interrupts = False

    def start_honcho(self, args: list[str], **popen) -> subprocess.Popen:
        """honcho in its own session; a stop that came while it started reaches it too."""
        self.settle()
        self._honcho = subprocess.Popen(args, start_new_session=True, **popen)
        if self.signal is not None:
            self._pass_on()
        return self._honcho

    def _received(self, number: int, _frame) -> None:
        if self.signal is not None:
            return  # one stop is under way; honcho kills what outlives its grace period
        self.signal = signal.Signals(number)
        if self._interrupts:
            raise Stopped
        self._pass_on()

    def _pass_on(self) -> None:
        if self._honcho is None or self._passed_on:
            return
        self._passed_on = True
        # SIGINT stays SIGINT (honcho says "SIGINT received", as under a terminal); a
        # hang-up means the same as SIGTERM: stop.
        number = signal.SIGINT if self.signal == signal.SIGINT else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):  # honcho ended meanwhile
            os.kill(self._honcho.pid, number)
