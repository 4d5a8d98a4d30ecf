"""A redis-server of a test's own, so that restarting, filling or refusing it disturbs no other test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.processes import Service, free_port, wait_for


class RedisServer:
    def __init__(self, cwd: Path, *options: str, port: int | None = None):
        self.port = port or free_port()
        self._cwd = cwd
        self._options = options
        self._server = self._start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def restart(self) -> None:
        """A new, empty server on the same port."""
        self._server.stop()
        self._server = self._start()

    def stop(self) -> None:
        self._server.stop()

    def _start(self) -> Service:
        args = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self._cwd), *self._options,
        ]  # fmt: skip
        log = self._cwd / f"redis-{self.port}.log"
        server = Service(args, dict(os.environ), self._cwd, log)
        wait_for(self._answers, 20, f"redis-server on port {self.port} to answer")
        return server

    def _answers(self) -> bool:
        ping = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True)
        return ping.stdout.strip() == b"PONG"
