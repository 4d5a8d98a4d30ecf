"""The trade journal's persistence: the record types, the SQL, the file spool.

Callers import from the package (`from db import TradeRecord, TradeRepository`). The names
load on first use, so a bot that only needs the record types and the spool never loads
SQLAlchemy's ORM or Flask-SQLAlchemy (about a third of a second at start-up).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "db.entries": (
        "Entry",
        "LoggedPrediction",
        "PredictionEntry",
        "RecordEntry",
        "TradeEntry",
        "UnstorableEntry",
        "UpdateEntry",
        "entry_from_json",
    ),
    "db.extension": ("database", "flask_config"),
    "db.jsonb": ("json_text",),
    "db.maintenance": ("Ages",),
    "db.models": ("PendingTradeUpdate", "PredictionLog", "TradeHistory"),
    "db.prediction_log": (
        "logged_model_names",
        "logged_prediction",
        "prune_prediction_log",
        "served_versions",
    ),
    "db.probe": ("postgres_hint", "postgres_problem"),
    "db.releases": ("Release", "ReleaseRefused"),
    "db.record": (
        "TRADE_ID",
        "PREDICTION_ID",
        "PredictionId",
        "ModelName",
        "Symbol",
        "TradeId",
        "TradeRecord",
        "TradeUpdate",
        "UtcDatetime",
        "describe_errors",
        "utc_now",
    ),
    "db.repository": (
        "MAX_LIST_LIMIT",
        "Conflict",
        "TradeRepository",
        "WriteOutcome",
        "trade_as_dict",
    ),
    "db.spool": ("ACTIVE", "DrainReport", "Spool"),
    "db.stats": ("GROUP_KEYS", "STAT_FIELDS", "StatsBehind", "no_trades"),
    "db.stats.buckets": ("BUCKET_PATTERN",),
    "db.timescale": ("TimescaleState", "timescale_status"),
    "db.timeouts": ("statement_timed_out",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'db' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
