"""GET /api/v1/trades/stats against the real PostgreSQL: every statistic, of the whole, per
group and per bucket, compared with the README's definitions computed here in plain Python
from the same trades; and the repository's per-version statistics and equity curves."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

import pytest
from sqlalchemy import update

from db import STAT_FIELDS, TradeHistory, TradeRepository, database
from tests.test_api_trades import VALID, assert_error, seed

START = datetime(2026, 3, 2, tzinfo=UTC)
A1, A2, B, B0, NO_MODEL = ("alpha", "v1"), ("alpha", "v2"), ("beta", "2024.1"), ("beta", None), (None, None)

# trade_id, symbol, opened (hours after START), closed after (hours; None: open), model, pnl, pnl_pct, fees
JOURNAL = [
    ("r01", "BTC/USDT", 1, 2, A1, 10.0, 0.05, 0.5),
    ("r02", "ETH/USDT", 2, 1, A1, -4.0, -0.02, 0.25),
    ("r03", "BTC/USDT", 3, 5, A2, -3.5, -0.0175, 0.25),
    ("r04", "SOL/USDT", 4, 1, B, 12.0, 0.06, 0.5),
    ("r05", "BTC/USDT", 5, 30, A1, -9.0, -0.045, 0.75),  # closes on the second day, after r13-r16
    ("r06", "ETH/USDT", 6, None, A2, None, None, None),  # open
    ("r07", "ETH/USDT", 7, 2, NO_MODEL, 2.5, None, 0.1),  # closed without pnl_pct
    ("r08", "SOL/USDT", 8, 3, NO_MODEL, -6.0, -0.03, 0.2),
    ("r09", "BTC/USDT", 9, None, NO_MODEL, 1.5, 0.01, None),  # open, PnL so far: in total_pnl only
    ("r10", "BTC/USDT", 10, 1, A2, 7.0, 0.035, 0.3),
    ("r11", "ETH/USDT", 11, 4, B, 0.0, 0.0, 0.0),  # break-even: neither profit nor loss
    ("r12", "SOL/USDT", 12, 1, A1, None, None, 0.1),  # closed without PnL
    ("r13", "BTC/USDT", 26, 1, A1, 5.0, 0.025, 0.2),
    ("r14", "ETH/USDT", 27, 0, A2, -8.0, -0.04, 0.4),  # closes with r13: trade_id breaks the tie
    ("r15", "SOL/USDT", 28, 1, B, -2.0, -0.01, 0.1),
    ("r16", "BTC/USDT", 29, 3, NO_MODEL, 4.0, 0.02, 0.2),
    ("r17", "ETH/USDT", 30, 1, A1, 15.0, 0.075, 0.6),
    ("r18", "SOL/USDT", 31, 2, A2, -1.0, -0.005, 0.05),
    ("r19", "BTC/USDT", 32, None, B, None, None, None),  # open
    ("r20", "ETH/USDT", 33, 1, A1, -12.0, -0.06, 0.5),
    ("r21", "BTC/USDT", 34, 1, NO_MODEL, 3.0, 0.015, 0.1),  # its close time is erased below
    ("r22", "SOL/USDT", 35, 1, B0, 1.0, 0.005, 0.05),  # a model without a version
]
NO_CLOSE_TIME = "r21"  # a closed trade stored without close_timestamp: ordered by its opening time


def journal() -> list[dict[str, Any]]:
    trades = []
    for trade_id, symbol, opened, closed_after, (name, version), pnl, pct, fees in JOURNAL:
        timestamp = START + timedelta(hours=opened)
        closed = closed_after is not None
        close_timestamp = timestamp + timedelta(hours=closed_after) if closed else None
        trades.append(
            {
                **VALID,
                "trade_id": trade_id,
                "symbol": symbol,
                "timestamp": timestamp,
                "closed": closed,
                "close_timestamp": close_timestamp,
                "realized_pnl": pnl,
                "pnl_pct": pct,
                "fees": fees,
                "won": pnl > 0 if closed and pnl is not None else None,
                "model_name": name,
                "model_version": version,
            }
        )
    return trades


def as_json(trade: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in trade.items()
        if value is not None
    }


@pytest.fixture
def trades(app, http) -> list[dict[str, Any]]:
    """The journal, stored; as this module's definitions see it."""
    trades = journal()
    seed(app, [as_json(trade) for trade in trades])
    with app.app_context():
        database.session.execute(
            update(TradeHistory).where(TradeHistory.trade_id == NO_CLOSE_TIME).values(close_timestamp=None)
        )
        database.session.commit()
    for trade in trades:
        if trade["trade_id"] == NO_CLOSE_TIME:
            trade["close_timestamp"] = None
    return trades


# -- the definitions, in plain Python --------------------------------------------------


def close_order(trade: dict[str, Any]) -> tuple:
    return (trade["close_timestamp"] or trade["timestamp"], trade["trade_id"])


def booked(trades: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Closed trades with realized PnL, in close order."""
    return sorted((t for t in trades if t["closed"] and t["realized_pnl"] is not None), key=close_order)


def expected_stats(trades: list[dict[str, Any]]) -> dict[str, Any]:
    pnls = [t["realized_pnl"] for t in trades if t["realized_pnl"] is not None]
    decided = [t for t in trades if t["won"] is not None]
    wins = sum(1 for t in trades if t["won"] is True)
    closed_pnls = [t["realized_pnl"] for t in booked(trades)]
    gross_profit = sum(p for p in closed_pnls if p > 0)
    gross_loss = -sum(p for p in closed_pnls if p < 0)
    max_drawdown = None
    if closed_pnls:
        peak, max_drawdown = 0.0, 0.0
        for equity in accumulate(closed_pnls):
            peak = max(peak, equity)
            max_drawdown = max(max_drawdown, peak - equity)
    pcts = [t["pnl_pct"] for t in trades if t["closed"] and t["pnl_pct"] is not None]
    sharpe = sortino = None
    if len(pcts) >= 2:
        mean = statistics.fmean(pcts)
        deviation = statistics.stdev(pcts)
        sharpe = mean / deviation if deviation else None
        downside = math.sqrt(statistics.fmean(min(p, 0.0) ** 2 for p in pcts))
        sortino = mean / downside if downside else None
    return {
        "trades": len(trades),
        "closed": sum(1 for t in trades if t["closed"]),
        "wins": wins,
        "win_rate": wins / len(decided) if decided else None,
        "total_pnl": sum(pnls),
        "avg_pnl": statistics.fmean(pnls) if pnls else None,
        "fees": sum(t["fees"] for t in trades if t["fees"] is not None),
        "profit_factor": gross_profit / gross_loss if gross_loss else None,
        "max_drawdown": max_drawdown,
        "sharpe": sharpe,
        "sortino": sortino,
    }


KEYS = {
    "model_version": ("model_name", "model_version"),
    "model_name": ("model_name",),
    "symbol": ("symbol",),
}


def by_key(trades: list[dict[str, Any]], names: tuple[str, ...]) -> list[tuple[tuple, list[dict[str, Any]]]]:
    """The trades per value of the columns `names`, sorted by key, nulls last."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for trade in trades:
        groups.setdefault(tuple(trade[name] for name in names), []).append(trade)
    return sorted(groups.items(), key=lambda item: [(value is None, value or "") for value in item[0]])


def day_of(trade: dict[str, Any]) -> datetime:
    return trade["timestamp"].replace(hour=0, minute=0, second=0, microsecond=0)


def expected_buckets(trades: list[dict[str, Any]]) -> list[dict[str, Any]]:
    days: dict[datetime, list[dict[str, Any]]] = {}
    for trade in trades:
        days.setdefault(day_of(trade), []).append(trade)
    return [{"start": day, **expected_stats(days[day])} for day in sorted(days)]


def assert_same_stats(actual: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    for name in STAT_FIELDS:
        want = expected[name]
        if want is None:
            assert actual[name] is None, (where, name, actual[name])
        else:
            assert actual[name] == pytest.approx(want, rel=1e-9, abs=1e-12), (where, name)


def assert_same_buckets(actual: list[dict[str, Any]], trades: list[dict[str, Any]], where: str) -> None:
    expected = expected_buckets(trades)
    assert [datetime.fromisoformat(bucket["start"]) for bucket in actual] == [b["start"] for b in expected]
    for bucket, want in zip(actual, expected, strict=True):
        assert_same_stats(bucket, want, f"{where} bucket {want['start']:%Y-%m-%d}")


# -- the tests ------------------------------------------------------------------------


def test_the_journal_exercises_what_the_statistics_must_handle(trades):
    # Guards the data set itself: a drawdown that recovers and falls again, ties, gaps.
    equity = list(accumulate(t["realized_pnl"] for t in booked(trades)))
    peaks = list(accumulate(equity, max))
    falls = [peak - value for peak, value in zip(peaks, equity, strict=True)]
    recovered = [i for i in range(1, len(equity)) if falls[i - 1] > 0 and falls[i] == 0]
    assert recovered and any(fall > 0 for fall in falls[recovered[0] :])
    stats = expected_stats(trades)
    assert stats["max_drawdown"] > 0 and stats["profit_factor"] and stats["sharpe"] and stats["sortino"]


def test_the_whole_matches_the_definitions(trades, http):
    answer = http.get("/api/v1/trades/stats")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert_same_stats(body, expected_stats(trades), "whole")
    assert "groups" not in body and "buckets" not in body
    assert body["trades"] == 22 and body["closed"] == 19


def test_buckets_match_the_definitions(trades, http):
    body = http.get("/api/v1/trades/stats", query_string={"bucket": "1 day"}).get_json()
    assert_same_stats(body, expected_stats(trades), "whole")
    assert_same_buckets(body["buckets"], trades, "whole")
    assert len(body["buckets"]) == 2


@pytest.mark.parametrize("group_by", sorted(KEYS))
def test_each_group_matches_the_definitions(trades, http, group_by):
    body = http.get("/api/v1/trades/stats", query_string={"group_by": group_by}).get_json()
    assert_same_stats(body, expected_stats(trades), "whole")
    names = KEYS[group_by]
    expected = by_key(trades, names)
    assert [tuple(group[name] for name in names) for group in body["groups"]] == [key for key, _ in expected]
    for group, (key, members) in zip(body["groups"], expected, strict=True):
        assert set(group) == {*names, *STAT_FIELDS}, group
        assert_same_stats(group, expected_stats(members), f"group {key}")


def test_the_groups_by_model_version_and_where_trades_without_a_model_go(trades, http):
    groups = http.get("/api/v1/trades/stats?group_by=model_version").get_json()["groups"]
    keys = [(group["model_name"], group["model_version"]) for group in groups]
    assert keys == [A1, A2, B, B0, NO_MODEL]
    assert [group["trades"] for group in groups] == [7, 5, 4, 1, 5]
    symbols = http.get("/api/v1/trades/stats?group_by=symbol").get_json()["groups"]
    assert [group["symbol"] for group in symbols] == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


@pytest.mark.parametrize("group_by", sorted(KEYS))
def test_groups_with_buckets_match_the_definitions(trades, http, group_by):
    body = http.get("/api/v1/trades/stats", query_string={"group_by": group_by, "bucket": "1 day"}).get_json()
    assert_same_stats(body, expected_stats(trades), "whole")
    assert_same_buckets(body["buckets"], trades, "whole")
    names = KEYS[group_by]
    expected = by_key(trades, names)
    assert len(body["groups"]) == len(expected)
    for group, (key, members) in zip(body["groups"], expected, strict=True):
        assert tuple(group[name] for name in names) == key
        assert_same_stats(group, expected_stats(members), f"group {key}")
        assert_same_buckets(group["buckets"], members, f"group {key}")


def test_filters_narrow_the_trades_including_model_name(trades, http):
    alpha = [t for t in trades if t["model_name"] == "alpha"]
    query = {"model_name": "alpha", "group_by": "model_version", "bucket": "1 day"}
    body = http.get("/api/v1/trades/stats", query_string=query).get_json()
    assert_same_stats(body, expected_stats(alpha), "alpha")
    assert [group["model_version"] for group in body["groups"]] == ["v1", "v2"]
    for group, (key, members) in zip(body["groups"], by_key(alpha, ("model_version",)), strict=True):
        assert_same_stats(group, expected_stats(members), f"alpha {key}")
        assert_same_buckets(group["buckets"], members, f"alpha {key}")

    window = {
        "symbol": "BTC/USDT",
        "since": (START + timedelta(hours=3)).isoformat(),
        "until": "2026-03-03T12:00:00Z",
    }
    chosen = [
        t
        for t in trades
        if t["symbol"] == "BTC/USDT"
        and START + timedelta(hours=3) <= t["timestamp"] < START + timedelta(hours=36)
    ]
    assert_same_stats(
        http.get("/api/v1/trades/stats", query_string=window).get_json(), expected_stats(chosen), "window"
    )

    nothing = http.get("/api/v1/trades/stats?model_name=gamma&group_by=model_version").get_json()
    assert nothing["trades"] == 0 and nothing["groups"] == []


def test_stats_by_version_and_equity_curves_of_a_model(trades, app):
    with app.app_context():
        repository = TradeRepository(database.session, stats_staleness_s=0)  # folds what waits first
        per_version = repository.stats_by_version("beta")
        curves = repository.equity_curves("alpha")
        last_two = repository.equity_curves("alpha", limit_per_version=2)
        assert repository.stats_by_version("gamma") == {} and repository.equity_curves("gamma") == {}

    beta = [t for t in trades if t["model_name"] == "beta"]
    assert list(per_version) == ["2024.1", None]
    for version, members in by_key(beta, ("model_version",)):
        assert set(per_version[version[0]]) == set(STAT_FIELDS)
        assert_same_stats(per_version[version[0]], expected_stats(members), f"beta {version}")

    alpha = [t for t in trades if t["model_name"] == "alpha"]
    expected = {}
    for (version,), members in by_key(alpha, ("model_version",)):
        points = booked(members)
        equity = accumulate(t["realized_pnl"] for t in points)
        expected[version] = [
            {"at": t["close_timestamp"] or t["timestamp"], "equity": value}
            for t, value in zip(points, equity, strict=True)
        ]
    assert curves == expected
    assert last_two == {version: points[-2:] for version, points in expected.items()}


def test_no_trades_at_all_counts_zero_and_computes_nothing(http):
    for query in ({}, {"group_by": "model_name", "bucket": "1 hour"}):
        answer = http.get("/api/v1/trades/stats", query_string=query)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        body = answer.get_json()
        assert (body["trades"], body["closed"], body["wins"]) == (0, 0, 0)
        assert (body["total_pnl"], body["fees"]) == (0, 0)  # sums of nothing
        for name in ("win_rate", "avg_pnl", "profit_factor", "max_drawdown", "sharpe", "sortino"):
            assert body[name] is None, name
        if query:
            assert body["groups"] == [] and body["buckets"] == []


def _closed(trade_id: str, pnl: float, pct: float | None, hour: int, **fields) -> dict[str, Any]:
    opened = START + timedelta(hours=hour)
    return as_json(
        {
            **VALID,
            "trade_id": trade_id,
            "timestamp": opened,
            "closed": True,
            "close_timestamp": opened + timedelta(minutes=30),
            "realized_pnl": pnl,
            "pnl_pct": pct,
            **fields,
        }
    )


def test_only_wins_have_no_profit_factor_and_no_drawdown(app, http):
    seed(app, [_closed("w1", 3.0, 0.01, 1), _closed("w2", 5.0, 0.02, 2), _closed("w3", 1.0, 0.01, 3)])
    body = http.get("/api/v1/trades/stats").get_json()
    assert body["wins"] == 3 and body["win_rate"] == 1.0
    assert body["profit_factor"] is None and body["max_drawdown"] == 0
    assert body["sharpe"] == pytest.approx(
        statistics.fmean([0.01, 0.02, 0.01]) / statistics.stdev([0.01, 0.02, 0.01])
    )
    assert body["sortino"] is None  # no negative pnl_pct: no downside


def test_equal_returns_have_no_sharpe_and_losses_only_fall_from_zero(app, http):
    seed(app, [_closed("l1", -2.0, -0.01, 1), _closed("l2", -3.0, -0.01, 2)])
    body = http.get("/api/v1/trades/stats").get_json()
    assert body["profit_factor"] == 0 and body["max_drawdown"] == 5.0
    assert body["sharpe"] is None  # zero deviation
    assert body["sortino"] == pytest.approx(-1.0)


def test_a_single_closed_trade_has_no_sharpe_or_sortino(app, http):
    seed(app, [_closed("one", -2.0, -0.01, 1), {**VALID, "trade_id": "open", "pnl_pct": 0.5}])
    body = http.get("/api/v1/trades/stats?group_by=symbol").get_json()
    for part in (body, *body["groups"]):
        assert part["sharpe"] is None and part["sortino"] is None
        assert part["max_drawdown"] == 2.0 and part["profit_factor"] == 0


def test_risk_statistics_of_huge_values_answer_rather_than_overflow(app, http):
    # Squares of these percentages and sums of these PnLs are far beyond a double.
    seed(
        app,
        [
            _closed("big-1", 1.5e308, 1.5e308, 1),
            _closed("big-2", -1.7e308, -1.5e308, 2),
            _closed("big-3", -1.7e308, 1.5e308, 3),
        ],
    )
    answer = http.get("/api/v1/trades/stats?bucket=1 day&group_by=model_version")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["max_drawdown"] is None and body["total_pnl"] is None  # 4.9e308 and -1.9e308
    assert body["avg_pnl"] == pytest.approx(-1.9 / 3 * 1e308)
    assert body["profit_factor"] == pytest.approx(1.5 / 3.4)
    assert body["sharpe"] == pytest.approx(0.5 / statistics.stdev([1.5, -1.5, 1.5]))
    assert body["sortino"] == pytest.approx(0.5 / math.sqrt(1.5**2 / 3))
    assert body["groups"][0]["buckets"][0]["sharpe"] == body["sharpe"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"group_by": "side"}, "group_by"),
        ({"group_by": "model_version; DROP TABLE trade_history"}, "group_by"),
        ({"group_by": ""}, "group_by"),
        ({"model_name": ""}, "model_name"),
        ({"model_name": "m" * 256}, "model_name"),
        ({"model_name": "bad\u0000name"}, "model_name"),
    ],
)
def test_a_bad_group_by_or_model_name_is_a_400_naming_it(http, query, field):
    assert_error(http.get("/api/v1/trades/stats", query_string=query), 400, field)
