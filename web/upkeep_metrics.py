"""Where beat's upkeep stands, read when /metrics is scraped (`db.maintenance.status`).

One short query set per scrape on a connection of its own with a one-second statement
timeout: a database that does not answer shows as `journal_upkeep_up 0`, it does not hang
the scrape. The same report feeds /readyz's `maintenance` entry and the dashboard.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from config import Settings
from db import Ages, maintenance


class UpkeepCollector(Collector):
    def __init__(self, settings: Settings, timeout_s: float = 1.0):
        self._engine = create_engine(
            settings.database_url,
            poolclass=NullPool,
            connect_args={"connect_timeout": 2, "options": f"-c statement_timeout={int(timeout_s * 1000)}"},
        )
        self._ages = Ages.of(settings)
        self._staleness_s = settings.stats_max_staleness_s

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "journal_upkeep_up", "1 when the database answered the upkeep's questions, else 0"
        )
        try:
            with Session(self._engine) as session:
                now = session.scalar(select(func.now()))
                parts = maintenance.status(session, now, self._ages, self._staleness_s)
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _gauges(parts, now)


def _gauges(parts: dict, now: datetime) -> Iterator[GaugeMetricFamily]:
    ok = GaugeMetricFamily(
        "journal_upkeep_ok", "1 while a part of beat's upkeep keeps up, else 0", labels=["part"]
    )
    for name, part in parts.items():
        ok.add_metric([name], 1 if part["ok"] else 0)
    yield ok
    statistics = parts["statistics"]
    yield _gauge(
        "trade_stats_pending_changes",
        "Changes logged, not yet folded into the kept statistics",
        statistics["pending"],
    )
    yield _gauge(
        "trade_stats_lag_seconds",
        "Age of the oldest change waiting to be folded (0: none)",
        statistics["lag_s"],
    )
    yield _gauge(
        "trade_stats_built",
        "1 once the kept statistics are built from the trades",
        1 if statistics["built"] else 0,
    )
    if statistics["watermark"] is not None:
        age = (now - datetime.fromisoformat(statistics["watermark"])).total_seconds()
        yield _gauge("trade_stats_watermark_age_seconds", "How long ago the kept drawdown state ends", age)
    chunks = GaugeMetricFamily(
        "columnstore_chunks",
        "TimescaleDB chunks per hypertable: compressed, in rows, due",
        labels=["table", "state"],
    )
    for name, table in parts["columnstore"]["tables"].items():
        chunks.add_metric([name, "compressed"], table["compressed"])
        chunks.add_metric([name, "rows"], table["chunks"] - table["compressed"])
        chunks.add_metric([name, "due"], table["due"])
    yield chunks
    oldest = parts["retention"]["oldest_prediction"]
    if oldest is not None:
        age = (now - datetime.fromisoformat(oldest)).total_seconds()
        yield _gauge("prediction_log_oldest_age_seconds", "Age of the oldest logged prediction", age)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation)
    gauge.add_metric([], value)
    return gauge
