"""What the dashboard's health panel shows: database, broker, workers per queue, spool backlog.

Every probe is bounded by a short timeout, so a dependency that is down turns its line
red within a couple of seconds instead of hanging the page. The readiness endpoint
(`/readyz`) checks the same facts; this module is the dashboard's own, small view of them.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from config import get_settings
from db.spool import Spool

TIMEOUT_S = 1.0
# psycopg2's connect_timeout counts whole seconds (and libpq treats 1 as 2).
DATABASE_CONNECT_TIMEOUT_S = 2
MAX_AGE_S = 2.0  # several browsers polling cost the dependencies one probe per process
SPOOL_FOLDERS = ("replay", "outbox", "dead-letter")


class StackStatus:
    def __init__(self) -> None:
        settings = get_settings()
        # A fresh connection per probe: a pooled one to a silent server could hang it.
        self._engine = create_engine(
            settings.database_url,
            poolclass=NullPool,
            connect_args={"connect_timeout": DATABASE_CONNECT_TIMEOUT_S},
        )
        self._broker = redis.Redis.from_url(
            settings.celery_broker_url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S
        )
        self._celery = Celery("dashboard-status", broker=settings.celery_broker_url, set_as_current=False)
        self._celery.conf.update(
            broker_connection_timeout=TIMEOUT_S,
            broker_connection_retry=False,
            broker_transport_options={
                "max_retries": 0,
                "socket_connect_timeout": TIMEOUT_S,
                "socket_timeout": TIMEOUT_S,
            },
        )
        self._spool_dir = Path(settings.spool_dir)
        self._lock = threading.Lock()
        self._report: tuple[float, dict[str, Any]] | None = None

    def report(self) -> dict[str, Any]:
        with self._lock:
            if self._report is None or time.monotonic() - self._report[0] > MAX_AGE_S:
                self._report = (time.monotonic(), self._probe())
            return self._report[1]

    def _probe(self) -> dict[str, Any]:
        broker = self._broker_answers()
        return {
            "database": self._database(),
            "broker": broker,
            # Workers answer through the broker: without it there is nobody to ask.
            "workers": self._workers() if broker["ok"] else {"ok": False, "queues": {}, "error": "no broker"},
            "spool": self._spool(),
        }

    def _database(self) -> dict[str, Any]:
        try:
            with self._engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return {"ok": False, "error": _first_line(exc)}
        return {"ok": True}

    def _broker_answers(self) -> dict[str, Any]:
        try:
            self._broker.ping()
        except redis.RedisError as exc:
            return {"ok": False, "error": _first_line(exc)}
        return {"ok": True}

    def _workers(self) -> dict[str, Any]:
        """Queue -> names of the live workers consuming it (they answer within TIMEOUT_S)."""
        try:
            replies = self._celery.control.inspect(timeout=TIMEOUT_S).active_queues() or {}
        except Exception as exc:  # kombu raises transport-specific errors
            return {"ok": False, "queues": {}, "error": _first_line(exc)}
        queues: dict[str, list[str]] = {"predict": [], "trades": []}
        for worker, consumed in sorted(replies.items()):
            for queue in consumed:
                queues.setdefault(queue["name"], []).append(worker)
        return {"ok": all(queues.values()), "queues": queues}

    def _spool(self) -> dict[str, Any]:
        """Entries waiting in each spool folder of this host."""
        backlog = {folder: Spool(self._spool_dir / folder).waiting() for folder in SPOOL_FOLDERS}
        return {"ok": backlog["replay"] == 0 and backlog["outbox"] == 0, **backlog}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
