"""The web server: granian serving `create_app()` on the settings of `config`.

`python -m web.server` is how the Procfile (`make run`), compose, the Dockerfile and the
tests start the web. WEB_BIND, WEB_WORKERS, WEB_THREADS and WEB_GRACEFUL_TIMEOUT_S size
it; LOG_FORMAT and PROMETHEUS_MULTIPROC_DIR reach granian's own processes too (README,
"Web server", "Metrics" and "Logs").

What granian does, read in its source and checked by tests/test_web_server.py: on
SIGTERM or SIGINT the main process sends SIGTERM to every worker at once; each closes its
listening socket (new connections are refused), closes idle keep-alive connections and
lets the requests in flight finish; the main process waits up to `workers_kill_timeout`
(WEB_GRACEFUL_TIMEOUT_S, one budget for all workers), SIGKILLs a worker still busy
after it, and exits 0.
"""

from __future__ import annotations

import logging
import logging.config
import socket
import sys
from typing import Any

from flask import Flask
from granian import Granian
from granian.constants import HTTPModes, Interfaces

from config import Settings, get_settings
from tasks.observability.logs import TEXT_FORMAT
from tasks.observability.metrics import ensure_multiprocess_directory
from web import create_app

log = logging.getLogger("web.server")


def bind_address(bind: str) -> tuple[str, int]:
    """WEB_BIND (`host:port`, `[v6]:port`; an empty host is every interface) as the IP
    address and port granian binds; a host name is resolved here."""
    host, separator, port = bind.rpartition(":")
    if not separator or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"WEB_BIND must be host:port, not {bind!r}")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - what an empty host means
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:  # a name
        host = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0][4][0]
    return host, int(port)


def refuse_a_taken_address(host: str, port: int) -> None:
    """Exit when something listens on host:port already.

    Each granian worker binds a socket of its own with SO_REUSEPORT, which Linux lets a
    second server of the same user share silently (the kernel would split connections
    between the two); a plain bind, as this probe's, fails on any listener instead.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            log.error("cannot listen on %s:%s: %s (is another server running there?)", host, port, error)
            sys.exit(1)


def logging_config(json_lines: bool) -> dict[str, Any]:
    """granian's own lines (start, workers, stop) and the app's, in the project's format:
    JSON lines with LOG_FORMAT=json (`tasks.observability.logs`), else its text format,
    on stderr. granian's access log stays off: the app writes `web.access` lines itself."""
    formatter = {"()": "tasks.observability.logs.json_formatter"} if json_lines else {"format": TEXT_FORMAT}
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "project",
        "filters": ["request_id"],
        "stream": "ext://sys.stderr",
    }
    own = {"level": "INFO", "handlers": ["stderr"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"project": formatter},
        "filters": {"request_id": {"()": "tasks.observability.logs.RequestIdFilter"}},
        "handlers": {"stderr": handler},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "_granian": own,  # granian's Python and Rust lines (`_granian.*`)
            "granian.access": {**own, "level": "WARNING"},
            # Alembic announces each of its plugins at INFO when Flask-Migrate loads it.
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }


def worker_app() -> Flask:
    """granian's factory, called in each worker: the app, or one logged line and exit 1
    (granian respawns the worker once, then stops on a crash loop)."""
    try:
        return create_app()
    except Exception:
        log.exception("the web app could not be built")
        sys.exit(1)


def build_server(settings: Settings) -> Granian:
    host, port = bind_address(settings.web_bind)
    return Granian(
        "web.server:worker_app",
        factory=True,
        interface=Interfaces.WSGI,
        address=host,
        port=port,
        # HTTP/1.1 only, as clients and health checks speak it (no h2c prior knowledge).
        http=HTTPModes.http1,
        websockets=False,
        workers=settings.web_workers,
        # Python threads per worker: a synchronous prediction holds one while it waits.
        blocking_threads=settings.web_threads,
        # SIGTERM: the requests in flight get this long (all workers together), then
        # their workers are killed.
        workers_kill_timeout=settings.web_graceful_timeout_s,
        # A worker that dies is replaced, as gunicorn's arbiter did (a second death
        # within 5.5 s of its replacement stops the server: a crash loop).
        respawn_failed_workers=True,
        log_dictconfig=logging_config(settings.log_format == "json"),
        log_access=False,
    )


def main() -> None:
    settings = get_settings()
    json_lines = settings.log_format == "json"
    logging.config.dictConfig(logging_config(json_lines))
    if json_lines:
        logging.captureWarnings(True)  # a warning becomes a JSON line too, not raw stderr
    # Before the workers fork: they inherit the directory, `{hostname}` made real.
    ensure_multiprocess_directory()
    server = build_server(settings)
    refuse_a_taken_address(server.bind_addr, server.bind_port)
    server.serve()


if __name__ == "__main__":
    main()
