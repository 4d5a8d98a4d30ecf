"""Journal entries: a record or an update, as the writer applies them and the spool keeps them.

A spool line is one entry as JSON:
`{"kind": "record", "trade": {...}}` or
`{"kind": "update", "trade_id": "...", "updates": {...}}`, with an optional `"job_id"`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from db.record import TRADE_ID, TradeRecord, TradeUpdate


@dataclass(frozen=True)
class RecordEntry:
    record: TradeRecord
    job_id: str | None = None

    @property
    def trade_id(self) -> str:
        return self.record.trade_id

    def to_json(self) -> dict[str, Any]:
        return _with_job({"kind": "record", "trade": self.record.to_dict()}, self.job_id)


@dataclass(frozen=True)
class UpdateEntry:
    trade_id: str
    update: TradeUpdate
    job_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        body = {"kind": "update", "trade_id": self.trade_id, "updates": self.update.to_dict()}
        return _with_job(body, self.job_id)


Entry = RecordEntry | UpdateEntry


class UnstorableEntry(ValueError):
    """An entry that can never be stored as it is (beyond what field validation says)."""


def _with_job(body: dict[str, Any], job_id: str | None) -> dict[str, Any]:
    if job_id is not None:
        body["job_id"] = job_id
    return body


def entry_from_json(data: Any) -> Entry:
    """Parse a spooled entry; raises UnstorableEntry (or pydantic's ValidationError) if invalid."""
    if not isinstance(data, dict):
        raise UnstorableEntry("an entry must be a JSON object")
    job_id = data.get("job_id")
    if data.get("kind") == "record":
        return RecordEntry(TradeRecord.from_dict(data.get("trade")), job_id)
    if data.get("kind") == "update":
        trade_id = TRADE_ID.validate_python(data.get("trade_id"))
        return UpdateEntry(trade_id, TradeUpdate.from_dict(data.get("updates")), job_id)
    raise UnstorableEntry(f"unknown entry kind {data.get('kind')!r}")
