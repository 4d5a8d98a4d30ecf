"""Query-string schemas of the HTTP API (request bodies are `db.record` types)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from db import BUCKET_PATTERN, MAX_LIST_LIMIT, Symbol, UtcDatetime


def _plus_restored(value: Any) -> Any:
    # An unencoded "+00:00" in a query string arrives as " 00:00".
    return value.replace(" ", "+") if isinstance(value, str) else value


QueryDatetime = Annotated[UtcDatetime, BeforeValidator(_plus_restored)]


class TradeQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: Symbol | None = None
    since: QueryDatetime | None = None
    until: QueryDatetime | None = None
    closed: bool | None = None
    limit: int = Field(default=100, ge=1, le=MAX_LIST_LIMIT)


class StatsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: Symbol | None = None
    since: QueryDatetime | None = None
    until: QueryDatetime | None = None
    bucket: str | None = Field(default=None, pattern=BUCKET_PATTERN.pattern)
