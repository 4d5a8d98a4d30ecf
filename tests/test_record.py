"""The plan's TradeRecord dataclass: what a bot builds and what every part of the journal validates."""

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from db.record import TradeRecord, TradeUpdate


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
