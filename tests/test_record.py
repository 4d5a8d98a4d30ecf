"""The plan's TradeRecord dataclass: what a bot builds and what every part of the journal validates."""

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from db import TradeRecord, TradeUpdate


def test_a_record_is_a_dataclass_that_round_trips_through_json():
    record = TradeRecord(symbol="BTC/USDT", side="buy", amount=0.1, entry_price=42_000, signals={"rsi": 30})
    assert dataclasses.is_dataclass(record)
    data = record.to_dict()
    assert data["timestamp"].endswith("Z") and len(data["trade_id"]) == 32
    assert TradeRecord.from_dict(data) == record


def test_timestamps_are_stored_in_utc_and_must_carry_an_offset():
    tokyo = datetime(2026, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=9)))
    record = TradeRecord(symbol="ETH/USDT", side="sell", amount=1, entry_price=2_000, timestamp=tokyo)
    assert record.timestamp == datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    with pytest.raises(ValidationError, match="timezone"):
        TradeRecord(
            symbol="ETH/USDT", side="sell", amount=1, entry_price=2_000, timestamp=datetime(2026, 3, 1)
        )


def test_a_close_fills_its_time_and_outcome():
    update = TradeUpdate(closed=True, realized_pnl=-3.5)
    assert update.won is False and update.close_timestamp is not None
    assert set(update.to_dict()) == {"closed", "realized_pnl", "won", "close_timestamp"}
    with pytest.raises(ValidationError):
        TradeUpdate()


STORABLE = {"symbol": "BTC/USDT", "side": "buy", "amount": 1.0, "entry_price": 1.0}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"market_regime": "bull\x00"}, "market_regime"),
        ({"market_regime": "bull\ud800"}, "market_regime"),
        ({"agent_votes": {"momentum": "buy\x00"}}, "agent_votes"),
        ({"agent_votes": {"momentum\x00": "buy"}}, "agent_votes"),
        ({"signals": {"rsi": ["x\udc00"]}}, "signals"),
        ({"timestamp": "9999-12-31T23:00:00-05:00"}, "timestamp"),
        ({"timestamp": "0001-01-01T00:30:00+05:00"}, "timestamp"),
        ({"amount": 10**400}, "amount"),
        ({"signals": {"x": float("nan")}}, "signals"),
    ],
)
def test_values_postgresql_cannot_store_are_refused_by_the_record_itself(fields, field):
    with pytest.raises(ValidationError) as refused:
        TradeRecord.from_dict({**STORABLE, **fields})
    assert refused.value.errors()[0]["loc"][0] == field


def test_the_widest_storable_values_are_kept():
    record = TradeRecord.from_dict(
        {
            **STORABLE,
            "timestamp": "0001-01-01T00:00:00Z",
            "market_regime": "bär 🐻 \\u0000 as text",
            "signals": {"big": 10**300, "text": "\\x00"},
        }
    )
    assert record.timestamp.year == 1 and record.signals["big"] == 10**300
    assert TradeRecord.from_dict({**STORABLE, "timestamp": "9999-12-31T23:59:59Z"}).timestamp.year == 9999


def test_an_update_is_ordered_by_its_updated_at():
    early = TradeUpdate.from_dict({"fees": 0.4, "updated_at": "2026-01-01T00:00:00.000001Z"})
    late = TradeUpdate.from_dict({"fees": 0.8, "updated_at": "2026-01-01T01:00:00+01:00"})
    assert early.order == late.order + 1  # 00:00:00.000001 UTC comes a microsecond after 00:00 UTC
    assert TradeUpdate(fees=1.0).order == 0  # unstamped: older than any stamped change
    stamped = TradeUpdate(fees=1.0).stamped()
    assert stamped.updated_at is not None and stamped.stamped() == stamped
    assert TradeUpdate.from_dict(stamped.to_dict()) == stamped
    with pytest.raises(ValidationError, match="at least one"):
        TradeUpdate.from_dict({"updated_at": "2026-01-01T00:00:00Z"})
