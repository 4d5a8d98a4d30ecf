"""The kept statistics against their definitions, over random histories written the way
production writes them: records and updates through TradeJournal to a real trades worker
(some messages delivered twice, updates arriving out of order and stamped so the newest
wins, trades opened weeks ago closing now), a file imported with `flask trades import`,
then an operator's SQL corrections and deletions. Every statistic of every level (the
whole, each group, each bucket, each group's buckets) of `GET /api/v1/trades/stats`, with
every filter, must equal the README's definitions computed here in Python from the trades
as stored, before and after the watermark moves past their closes."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from db import RecordEntry, TradeRecord, TradeUpdate, UpdateEntry, database, stats
from tasks.client import TradeJournal
from tests.support.processes import flask, wait_for
from tests.test_api_trades import VALID
from tests.test_trade_stats import assert_same_stats, by_key, expected_stats

ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
MODELS = (("alpha", "v1"), ("alpha", "v2"), ("beta", "2024.1"), ("beta", None), (None, None))
WIDTHS = {"1 day": timedelta(days=1), "1 week": timedelta(days=7), "6 hours": timedelta(hours=6)}
KEYS = {
    "model_version": ("model_name", "model_version"),
    "model_name": ("model_name",),
    "symbol": ("symbol",),
}
STORED = text(
    'SELECT trade_id, symbol, "timestamp", closed, close_timestamp, realized_pnl, pnl_pct, fees, won,'
    " model_name, model_version FROM trade_history"
)


def history(seed: int, now: datetime, trades: int) -> tuple[list[RecordEntry], list[UpdateEntry]]:
    """Records opened over the last 45 days, and the updates that close and correct them."""
    rng = random.Random(seed)
    records, updates = [], []
    for number in range(trades):
        opened = now - timedelta(days=45) + timedelta(seconds=rng.randrange(45 * 86_400))
        name, version = rng.choice(MODELS)
        record = {
            **VALID,
            "trade_id": f"s{seed}-{number}",
            "symbol": rng.choice(SYMBOLS),
            "timestamp": opened.isoformat(),
            **({"model_name": name} if name else {}),
            **({"model_version": version} if version else {}),
        }
        if rng.random() < 0.1:  # a trade recorded with its outcome already
            outcome = round(rng.gauss(0, 5), 2)
            record.update(closed=True, realized_pnl=outcome, close_timestamp=opened.isoformat())
        records.append(RecordEntry(TradeRecord.from_dict(record)))
        if rng.random() > 0.75:
            continue  # stays open
        # Held minutes, days, or weeks (a late close: opened weeks ago, closing now).
        held = rng.choice((timedelta(minutes=rng.randrange(1, 600)), timedelta(days=rng.uniform(1, 4))))
        closed_at = min(opened + held, now - timedelta(seconds=rng.randrange(1, 3600)))
        if rng.random() < 0.15:
            closed_at = now - timedelta(minutes=rng.randrange(1, 50))  # late close, in the last hour
        stamp = closed_at + timedelta(seconds=1)
        pnl = round(rng.gauss(0, 10), 2)
        close = {
            "closed": True,
            "close_timestamp": closed_at.isoformat(),
            "realized_pnl": pnl,
            "pnl_pct": round(pnl / 400, 5) if rng.random() < 0.9 else None,
            "fees": round(rng.random(), 3),
            "won": pnl > 0,
            "updated_at": stamp.isoformat(),
        }
        updates.append(_update(record["trade_id"], close))
        if rng.random() < 0.3:  # a later correction, which may arrive first
            corrected = round(pnl + rng.gauss(0, 3), 2)
            later = {
                "realized_pnl": corrected,
                "won": corrected > 0,
                "updated_at": (stamp + timedelta(seconds=5)).isoformat(),
            }
            updates.insert(rng.randrange(len(updates) + 1), _update(record["trade_id"], later))
    return records, updates


def _update(trade_id: str, fields: dict[str, Any]) -> UpdateEntry:
    return UpdateEntry(
        trade_id, TradeUpdate.from_dict({name: v for name, v in fields.items() if v is not None})
    )


def final_state(records: list[RecordEntry], updates: list[UpdateEntry]) -> dict[str, dict[str, Any]]:
    """What each trade must end as: its record, then per field the newest update's value."""
    final = {
        entry.trade_id: {"closed": entry.record.closed, "pnl": entry.record.realized_pnl} for entry in records
    }
    stamps: dict[tuple[str, str], datetime] = {}
    for entry in updates:
        changes = {"closed": entry.update.closed, "pnl": entry.update.realized_pnl}
        for name, value in changes.items():
            key = (entry.trade_id, name)
            if value is not None and (key not in stamps or entry.update.updated_at >= stamps[key]):
                stamps[key] = entry.update.updated_at
                final[entry.trade_id][name] = value
    return final


def send(env: dict[str, str], entries: list, rng: random.Random) -> None:
    """Through TradeJournal, each entry once, about one in ten twice (a redelivered message)."""
    with TradeJournal(env["CELERY_BROKER_URL"], env["SPOOL_DIR"]) as journal:
        for entry in entries:
            sent = journal.send(entry)
            if rng.random() < 0.1:
                journal.send(dataclasses.replace(entry, job_id=sent.job_id))


def stored_trades(engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(STORED).mappings()]


def floor(moment: datetime, width: timedelta) -> datetime:
    return ORIGIN + ((moment - ORIGIN) // width) * width


def expected(trades: list[dict[str, Any]], query: dict[str, Any]) -> dict[str, Any]:
    """The answer's statistics from the definitions (test_trade_stats), level by level."""
    chosen = [
        trade
        for trade in trades
        if all(trade[name] == query[name] for name in ("symbol", "model_name") if name in query)
        and ("closed" not in query or trade["closed"] is query["closed"])
        and ("since" not in query or trade["timestamp"] >= query["since"])
        and ("until" not in query or trade["timestamp"] < query["until"])
    ]
    answer: dict[str, Any] = {"whole": expected_stats(chosen)}
    width = WIDTHS.get(query.get("bucket"))
    if width:
        answer["buckets"] = _per_bucket(chosen, width)
    if "group_by" in query:
        names = KEYS[query["group_by"]]
        answer["groups"] = [
            (key, expected_stats(members), _per_bucket(members, width) if width else None)
            for key, members in by_key(chosen, names)
        ]
    return answer


def _per_bucket(trades: list[dict[str, Any]], width: timedelta) -> list[tuple[datetime, dict[str, Any]]]:
    buckets: dict[datetime, list[dict[str, Any]]] = {}
    for trade in trades:
        buckets.setdefault(floor(trade["timestamp"], width), []).append(trade)
    return [(start, expected_stats(buckets[start])) for start in sorted(buckets)]


def assert_answer(http, trades: list[dict[str, Any]], query: dict[str, Any]) -> None:
    params = {name: _query_text(value) for name, value in query.items()}
    response = http.get("/api/v1/trades/stats", query_string=params)
    assert response.status_code == 200, (query, response.get_data(as_text=True))
    body, want = response.get_json(), expected(trades, query)
    where = repr(params)
    assert_same_stats(body, want["whole"], f"{where} whole")
    if "buckets" in want:
        _assert_buckets(body["buckets"], want["buckets"], where)
    if "groups" in want:
        names = KEYS[query["group_by"]]
        keys = [tuple(group[name] for name in names) for group in body["groups"]]
        assert keys == [key for key, *_ in want["groups"]], where
        for group, (key, stats_, buckets) in zip(body["groups"], want["groups"], strict=True):
            assert_same_stats(group, stats_, f"{where} group {key}")
            if buckets is not None:
                _assert_buckets(group["buckets"], buckets, f"{where} group {key}")


def _query_text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value).lower() if isinstance(value, bool) else value


def _assert_buckets(
    actual: list[dict[str, Any]], want: list[tuple[datetime, dict[str, Any]]], where: str
) -> None:
    assert [datetime.fromisoformat(bucket["start"]) for bucket in actual] == [start for start, _ in want], (
        where
    )
    for bucket, (start, stats_) in zip(actual, want, strict=True):
        assert_same_stats(bucket, stats_, f"{where} bucket {start:%Y-%m-%d %H:%M}")


def queries(now: datetime) -> list[dict[str, Any]]:
    """Every level and filter, with ragged `since` and `until` (not on any bucket's edge)."""
    ranges = [
        {},
        {"since": now - timedelta(days=20, hours=3, minutes=17)},
        {"since": now - timedelta(days=33, minutes=5), "until": now - timedelta(days=2, hours=5, seconds=9)},
        {"until": now - timedelta(days=9, hours=1)},
    ]
    found = []
    for window in ranges:
        for group_by in (None, *KEYS):
            for bucket in (None, *WIDTHS):
                chosen = {"group_by": group_by, "bucket": bucket}
                found.append({**window, **{name: value for name, value in chosen.items() if value}})
        found += [
            {**window, "symbol": "ETH/USDT", "group_by": "model_version", "bucket": "1 day"},
            {**window, "model_name": "alpha", "group_by": "symbol", "bucket": "1 week"},
            {**window, "symbol": "SOL/USDT", "model_name": "beta"},
            {**window, "closed": True, "group_by": "model_name", "bucket": "1 day"},
            {**window, "closed": False, "group_by": "symbol", "bucket": "1 week"},
        ]
    return found


def assert_every_answer(http, engine) -> int:
    trades, now = stored_trades(engine), datetime.now(UTC)
    asked = queries(now)
    for query in asked:
        assert_answer(http, trades, query)
    assert_performance_and_dashboard(http, trades)
    return len(asked)


def booked_in_close_order(trades: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        (t for t in trades if t["closed"] and t["realized_pnl"] is not None),
        key=lambda t: (t["close_timestamp"] or t["timestamp"], t["trade_id"]),
    )


def curve(trades: list[dict[str, Any]], limit: int) -> list[tuple[float, float]]:
    """Cumulative realized PnL after each close, the last `limit` points (Unix seconds)."""
    points, equity = [], 0.0
    for trade in booked_in_close_order(trades):
        equity += trade["realized_pnl"]
        points.append(((trade["close_timestamp"] or trade["timestamp"]).timestamp(), equity))
    return points[-limit:]


def assert_points(actual: list[dict[str, Any]], want: list[tuple[float, float]], where: str) -> None:
    assert [point["at"] for point in actual] == pytest.approx([at for at, _ in want]), where
    assert [point["equity"] for point in actual] == pytest.approx([value for _, value in want], rel=1e-9), (
        where
    )


def assert_performance_and_dashboard(http, trades: list[dict[str, Any]]) -> None:
    """/api/v1/ml/models/<name>/performance and the dashboard's two JSON routes, from the
    same definitions."""
    for name in ("alpha", "beta"):
        body = http.get(f"/api/v1/ml/models/{name}/performance").get_json()
        members = [t for t in trades if t["model_name"] == name]
        versions = {
            version: expected_stats(group) for (version,), group in by_key(members, ("model_version",))
        }
        assert {v["model_version"] for v in body["versions"]} == set(versions), name
        for version in body["versions"]:
            assert_same_stats(
                version, versions[version["model_version"]], f"{name} {version['model_version']}"
            )

    body = http.get("/dashboard/performance.json").get_json()
    assert_same_stats(body["totals"], expected_stats(trades), "dashboard totals")
    per_day = _per_bucket(trades, timedelta(days=1))
    assert [point["at"] for point in body["per_bucket"]] == [start.timestamp() for start, _ in per_day]
    assert [point["pnl"] for point in body["per_bucket"]] == pytest.approx(
        [s["total_pnl"] for _, s in per_day]
    )
    assert_points(body["equity"], curve(trades, 1000), "dashboard equity")

    models = {
        model["model_name"]: model
        for model in http.get("/dashboard/model-performance.json").get_json()["models"]
    }
    for name in {t["model_name"] for t in trades if t["model_name"]}:
        members = [t for t in trades if t["model_name"] == name]
        for version in models[name]["versions"]:
            mine = [t for t in members if t["model_version"] == version["model_version"]]
            assert_points(version["equity"], curve(mine, 500), f"curve of {name} {version['model_version']}")
        booked_versions = {t["model_version"] for t in booked_in_close_order(members)}
        assert {v["model_version"] for v in models[name]["versions"]} == booked_versions, name


@pytest.mark.parametrize("seed", [7, 8])
def test_every_statistic_equals_its_definition_over_a_random_history(
    seed, app, http, engine, env, tmp_path, start_worker
):
    rng = random.Random(seed)
    now = datetime.now(UTC)
    records, updates = history(seed, now, trades=140)
    imported, journaled = records[:20], records[20:]
    start_worker()
    # Some records come from a file, as `flask trades import` reads it (it waits until stored).
    journal_file = tmp_path / "old-journal.jsonl"
    journal_file.write_text("".join(json.dumps(entry.record.to_dict()) + "\n" for entry in imported))
    flask(["trades", "import", str(journal_file), "--wait-s", "120"], env, tmp_path)
    # Updates first for some trades: an update that arrives before its trade waits for it.
    early = [u for u in updates if rng.random() < 0.1]
    send(env, early + journaled + [u for u in updates if u not in early], rng)

    final = final_state(records, updates)

    def settled() -> bool:
        stored = {
            trade["trade_id"]: {"closed": trade["closed"], "pnl": trade["realized_pnl"]}
            for trade in stored_trades(engine)
        }
        return stored == final

    wait_for(settled, 120, "every record and update to be applied")
    assert assert_every_answer(http, engine) == 4 * (4 * 4 + 5)  # every range, level and filter

    # An operator corrects trades in SQL and removes one: the statistics follow.
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE trade_history SET realized_pnl = realized_pnl * -2, pnl_pct = -pnl_pct"
                " WHERE closed AND trade_id LIKE :prefix AND right(trade_id, 1) IN ('1', '4')"
            ),
            {"prefix": f"s{seed}-%"},
        )
        connection.execute(
            text(
                "UPDATE trade_history SET model_name = 'gamma', model_version = 'g1'"
                " WHERE right(trade_id, 2) = '17'"
            )
        )
        connection.execute(text("DELETE FROM trade_history WHERE right(trade_id, 2) = '23'"))
    assert_every_answer(http, engine)

    # An hour passes: the watermark moves past the last closes, which leave the last hour's
    # reads for the kept segments and profiles.
    with app.app_context():
        stats.fold_all(database.session, datetime.now(UTC) + timedelta(hours=2))
        assert stats.state(database.session).watermark > datetime.now(UTC)
    assert_every_answer(http, engine)
