"""/api/v1/trades over HTTP: the real app, PostgreSQL and Redis (no worker runs here, so
what the API enqueues stays in the queue where the test can count it)."""

from __future__ import annotations

import base64
import json
import socket
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import redis

from db import RecordEntry, TradeRecord, TradeRepository, TradeUpdate, UpdateEntry, database
from tests.bots.send_task_bot import trade
from tests.conftest import BROKER_URL
from tests.support.apps import web_app

queue = redis.Redis.from_url(BROKER_URL)


def queued_calls() -> list[tuple[str, list]]:
    """(task name, args) of each message waiting in the trades queue, oldest first."""
    calls = []
    for raw in reversed(queue.lrange("trades", 0, -1)):
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        calls.append((message["headers"]["task"], args))
    return calls


def queued_tasks() -> list[str]:
    return [name for name, _ in queued_calls()]


def seed(app, records: list[dict], updates: dict[str, dict] | None = None) -> None:
    with app.app_context():
        entries = [RecordEntry(TradeRecord.from_dict(item)) for item in records]
        entries += [UpdateEntry(key, TradeUpdate.from_dict(value)) for key, value in (updates or {}).items()]
        TradeRepository(database.session).write(entries)


def assert_error(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    error = response.get_json()["error"]
    assert error["code"] and error["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    if field is not None:
        assert field in {problem["field"] for problem in error["details"]}, error
    return error


VALID = {"symbol": "BTC/USDT", "side": "buy", "amount": 0.5, "entry_price": 42_000.0}
VALID_JSON = json.dumps(VALID).encode()


def test_a_valid_trade_is_enqueued_as_trades_record(http):
    response = http.post("/api/v1/trades", json={**VALID, "trade_id": "api-1", "signals": {"rsi": 30}})

    assert response.status_code == 202
    body = response.get_json()
    assert body["trade_id"] == "api-1" and body["job_id"] and body["status"] == "queued"
    assert response.headers["Location"] == "/api/v1/trades/api-1"
    assert queued_tasks() == ["trades.record"]


def test_a_trade_without_id_or_timestamp_gets_both(http):
    body = http.post("/api/v1/trades", json=VALID).get_json()
    assert len(body["trade_id"]) == 32
    [(_, [record])] = queued_calls()
    assert record["trade_id"] == body["trade_id"] and record["timestamp"].endswith("Z")


BAD_TRADES = [
    ({**VALID, "side": "up"}, "side"),
    ({**VALID, "order_type": "stop"}, "order_type"),
    ({**VALID, "amount": 0}, "amount"),
    ({**VALID, "amount": -1}, "amount"),
    ({**VALID, "amount": "0.5"}, "amount"),
    ({**VALID, "amount": True}, "amount"),
    ({**VALID, "entry_price": None}, "entry_price"),
    ({**VALID, "fees": -0.1}, "fees"),
    ({**VALID, "bull_confidence": 1.5}, "bull_confidence"),
    ({**VALID, "timestamp": "2026-01-01T00:00:00"}, "timestamp"),
    ({**VALID, "timestamp": "yesterday"}, "timestamp"),
    ({**VALID, "timestamp": 1767225600}, "timestamp"),
    ({**VALID, "trade_id": "x" * 65}, "trade_id"),
    ({**VALID, "trade_id": "../../etc/passwd"}, "trade_id"),
    ({**VALID, "trade_id": 7}, "trade_id"),
    ({**VALID, "symbol": "B" * 33}, "symbol"),
    ({**VALID, "symbol": "BTC USDT; DROP TABLE trade_history"}, "symbol"),
    ({**VALID, "agent_votes": ["buy"]}, "agent_votes"),
    ({**VALID, "signals": {"deep": "x" * 20_000}}, "signals"),
    ({**VALID, "closed": "yes"}, "closed"),
    ({**VALID, "leverage": 100}, "leverage"),
    (
        {
            **VALID,
            "timestamp": "2026-01-02T00:00:00Z",
            "closed": True,
            "close_timestamp": "2026-01-01T00:00:00Z",
        },
        "body",
    ),
    ({"side": "buy"}, "symbol"),
    ([VALID], "body"),
    ("a string", "body"),
    # Values PostgreSQL can never store are refused here, not dead-lettered later.
    ({**VALID, "market_regime": "bull\u0000"}, "market_regime"),
    ({**VALID, "agent_votes": {"momentum": "buy\u0000"}}, "agent_votes"),
    ({**VALID, "signals": {"rsi\u0000": 30}}, "signals"),
    ({**VALID, "timestamp": "9999-12-31T23:00:00-05:00"}, "timestamp"),
    ({**VALID, "timestamp": "0001-01-01T00:30:00+05:00"}, "timestamp"),
    (
        {
            **VALID,
            "timestamp": "2026-01-01T00:00:00Z",
            "closed": True,
            "close_timestamp": "9999-12-31T23:59:59-01:00",
        },
        "close_timestamp",
    ),
    ({**VALID, "amount": 10**400}, "amount"),
]


@pytest.mark.parametrize(("body", "field"), BAD_TRADES)
def test_a_bad_trade_is_refused_naming_the_field_and_nothing_is_enqueued(http, body, field):
    response = http.post("/api/v1/trades", json=body)
    assert_error(response, 422, field)
    assert queued_tasks() == []


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b'{"symbol": "BTC/USDT", "amount": NaN, "side": "buy", "entry_price": 1}', 422),
        (b'{"symbol": "BTC/USDT", "amount": 1e999, "side": "buy", "entry_price": 1}', 422),
        (b'{"symbol": "BTC/USDT", "side": "buy"', 400),
        (b"", 400),
        (b"\xff\xfe not json", 400),
    ],
)
def test_malformed_or_non_finite_json_is_refused(http, raw, status):
    response = http.post("/api/v1/trades", data=raw, content_type="application/json")
    assert_error(response, status)
    assert queued_tasks() == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [(b'"market_regime": "\\ud800"', "market_regime"), (b'"signals": {"a": "\\udc00"}', "signals")],
)
def test_a_lone_surrogate_is_refused_naming_the_field(http, extra, field):
    # Valid JSON, but no UTF-8 (nor PostgreSQL) can hold a lone surrogate.
    raw = VALID_JSON[:-1] + b", " + extra + b"}"
    assert_error(http.post("/api/v1/trades", data=raw, content_type="application/json"), 422, field)
    assert queued_tasks() == []


def test_a_huge_body_is_refused_with_413(http):
    huge = json.dumps({**VALID, "signals": {"blob": "x" * 5_000_000}})
    response = http.post("/api/v1/trades", data=huge, content_type="application/json")
    assert_error(response, 413)
    assert queued_tasks() == []


def test_an_update_is_enqueued_as_trades_update(http):
    response = http.patch(
        "/api/v1/trades/api-9", json={"closed": True, "exit_price": 43_000, "realized_pnl": 10}
    )
    assert response.status_code == 202
    assert response.get_json()["trade_id"] == "api-9"
    [(name, (trade_id, updates))] = queued_calls()
    assert (name, trade_id) == ("trades.update", "api-9")
    assert updates["exit_price"] == 43_000 and updates["won"] is True and updates["close_timestamp"]


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/api/v1/trades/api-9", {}, 422, "body"),
        ("/api/v1/trades/api-9", {"exit_price": -1}, 422, "exit_price"),
        ("/api/v1/trades/api-9", {"symbol": "ETH/USDT"}, 422, "symbol"),
        ("/api/v1/trades/api-9", {"closed": "true"}, 422, "closed"),
        ("/api/v1/trades/bad$id", {"closed": True}, 400, "trade_id"),
    ],
)
def test_a_bad_update_is_refused_and_nothing_is_enqueued(http, path, body, status, field):
    assert_error(http.patch(path, json=body), status, field)
    assert queued_tasks() == []


def test_the_journal_lists_newest_first_with_filters(app, http):
    records = [trade("list", number) for number in range(12)]
    seed(app, records, {"list-0": {"closed": True, "realized_pnl": 5.0}, "list-3": {"closed": True}})

    listed = http.get("/api/v1/trades").get_json()
    assert listed["count"] == 12
    assert [item["trade_id"] for item in listed["trades"]][:3] == ["list-11", "list-10", "list-9"]

    eth = http.get("/api/v1/trades?symbol=ETH/USDT").get_json()["trades"]
    assert {item["symbol"] for item in eth} == {"ETH/USDT"} and len(eth) == 4

    closed = http.get("/api/v1/trades?closed=true").get_json()["trades"]
    assert [item["trade_id"] for item in closed] == ["list-3", "list-0"]

    window = http.get("/api/v1/trades?since=2026-01-01T00:02:00+00:00&until=2026-01-01T00:05:00Z").get_json()
    assert [item["trade_id"] for item in window["trades"]] == ["list-4", "list-3", "list-2"]

    assert http.get("/api/v1/trades?limit=2").get_json()["count"] == 2


def test_a_page_of_the_list_spans_old_and_new_trades_in_order(app, http):
    """The list reads the last day, then week, then 90 days, then everything: each page
    is still the newest trades, however far apart they are (and a trade dated ahead)."""
    now = datetime.now(UTC)
    ages = {"ahead": -1 / 24, "hour": 1 / 24, "days": 3, "month": 30, "year": 400, "years": 800}
    records = []
    for number, (name, days) in enumerate(ages.items()):
        record = trade("spread", number) | {"trade_id": name, "symbol": "BTC/USDT"}
        records.append(record | {"timestamp": (now - timedelta(days=days)).isoformat()})
    seed(app, records)

    newest_first = list(ages)
    for limit in range(1, len(ages) + 2):
        listed = http.get(f"/api/v1/trades?limit={limit}").get_json()["trades"]
        assert [item["trade_id"] for item in listed] == newest_first[:limit]
    until = quote((now - timedelta(days=2)).isoformat())
    older = http.get(f"/api/v1/trades?limit=2&until={until}").get_json()["trades"]
    assert [item["trade_id"] for item in older] == ["days", "month"]
    since = quote((now - timedelta(days=100)).isoformat())
    recent = http.get(f"/api/v1/trades?since={since}").get_json()["trades"]
    assert [item["trade_id"] for item in recent] == ["ahead", "hour", "days", "month"]
    # A bound in the first days of the year 1: no window reaches before it, nothing is there.
    for until in ("0001-01-01T00:00:00Z", "0001-01-02T12:00:00Z", "0001-03-01T00:00:00Z"):
        answer = http.get(f"/api/v1/trades?until={until}")
        assert (answer.status_code, answer.get_json()["trades"]) == (200, []), until


@pytest.mark.parametrize(
    "query",
    [
        "limit=1001",
        "limit=0",
        "limit=ten",
        "closed=maybe",
        "since=noon",
        "sort=price",
        "symbol=a%20b",
        "limit=1&limit=2",
        # Within ISO-8601, beyond a UTC timestamp (the year 10000, the year 0, in UTC).
        "since=9999-12-31T23:00:00-05:00",
        "since=0001-01-01T00:30:00%2B05:00",
        "until=9999-12-31T23:00:00-05:00",
    ],
)
def test_a_bad_query_is_a_400(http, query):
    assert_error(http.get(f"/api/v1/trades?{query}"), 400)
    assert_error(http.get(f"/api/v1/trades/stats?{query}"), 400)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


@pytest.mark.parametrize("depth", [1_025, 5_000, 100_000])
def test_json_nested_thousands_deep_is_a_400_on_every_route_that_reads_json(app, http, depth):
    body_routes = [
        (method, rule.rule.replace("<trade_id>", "t-1"))
        for rule in app.url_map.iter_rules()
        for method in sorted(rule.methods & {"POST", "PATCH", "PUT"})
        if rule.rule.startswith("/api/")
    ]
    assert len(body_routes) >= 3  # trades, trade updates, predictions
    for method, path in body_routes:
        for body in (_nested(depth), b'{"model_name": "m", "features": ' + _nested(depth) + b"}"):
            response = http.open(path, method=method, data=body, content_type="application/json")
            assert assert_error(response, 400)["code"] == "malformed_json", (method, path)
    assert queued_tasks() == []


def test_json_nested_just_within_the_parser_is_refused_by_shape_not_a_500(http):
    deep = b'{"symbol": "BTC/USDT", "side": "buy", "amount": 1, "entry_price": 1, "signals": {"a": '
    response = http.post(
        "/api/v1/trades", data=deep + _nested(1_000) + b"}}", content_type="application/json"
    )
    [problem] = assert_error(response, 422)["details"]
    assert problem["field"].startswith("signals.a.") and problem["field"].endswith("...")
    assert len(response.get_data()) < 1_000
    assert queued_tasks() == []


def test_one_trade_and_unknown_ids(app, http):
    seed(app, [trade("one", 0)])

    found = http.get("/api/v1/trades/one-0")
    assert found.status_code == 200
    assert found.get_json()["entry_price"] == 40_000.0
    assert found.get_json()["timestamp"] == "2026-01-01T00:00:00+00:00"

    assert_error(http.get("/api/v1/trades/never-issued"), 404)
    assert_error(http.get("/api/v1/trades/..%2F..%2Fetc%2Fpasswd"), 404)
    assert_error(http.get("/api/v1/trades/bad$id"), 400, "trade_id")


def test_stats_overall_and_per_bucket(app, http):
    records = [trade("stat", number) for number in range(4)]
    records[3]["timestamp"] = "2026-01-02T10:00:00+00:00"
    seed(
        app,
        records,
        {
            "stat-0": {"closed": True, "realized_pnl": 10.0, "fees": 1.0},
            "stat-1": {"closed": True, "realized_pnl": -4.0, "fees": 1.0},
            "stat-3": {"closed": True, "realized_pnl": 2.0, "fees": 0.5},
        },
    )

    stats = http.get("/api/v1/trades/stats").get_json()
    assert stats["trades"] == 4 and stats["closed"] == 3 and stats["wins"] == 2
    assert stats["win_rate"] == pytest.approx(2 / 3)
    assert stats["total_pnl"] == 8.0 and stats["avg_pnl"] == pytest.approx(8 / 3)
    assert stats["fees"] == 2.5

    daily = http.get("/api/v1/trades/stats?bucket=1 day").get_json()["buckets"]
    assert [(day["start"][:10], day["trades"], day["total_pnl"]) for day in daily] == [
        ("2026-01-01", 3, 6.0),
        ("2026-01-02", 1, 2.0),
    ]


def test_a_bucket_of_the_first_trade_in_year_1_starts_in_year_1(app, http):
    """A bucket that would start before the year 1 (which Python cannot hold) starts on its second day."""
    early = trade("early", 0)
    early["timestamp"] = "0001-01-01T12:00:00+00:00"
    seed(app, [early])
    for bucket in ("475 hours", "3 weeks", "7 days"):
        answer = http.get("/api/v1/trades/stats", query_string={"bucket": bucket})
        assert answer.status_code == 200, (bucket, answer.get_json())
        assert [b["start"][:4] for b in answer.get_json()["buckets"]] == ["0001"]
        assert http.get("/dashboard/performance.json", query_string={"bucket": bucket}).status_code == 200


@pytest.mark.parametrize(
    "bucket", ["1 fortnight", "1 day'; DROP TABLE trade_history; --", "0 days", "1 month"]
)
def test_a_bad_bucket_is_a_400(http, bucket):
    assert_error(http.get("/api/v1/trades/stats", query_string={"bucket": bucket}), 400, "bucket")


def test_unknown_routes_and_methods_are_json(http):
    assert_error(http.get("/api/v1/nowhere"), 404)
    response = http.delete("/api/v1/trades/x")
    assert_error(response, 405)
    assert "GET" in response.headers["Allow"]


@pytest.fixture
def api_token() -> str:
    return "s3cret-token"


@pytest.fixture
def token_http(database_url, clean, api_token):
    """A client of an app whose API_TOKEN is set."""
    return web_app(api_token=api_token).test_client()


def test_with_api_token_set_every_trades_route_needs_the_bearer_token(token_http, api_token):
    http = token_http
    assert_error(http.get("/api/v1/trades"), 401)
    assert_error(http.post("/api/v1/trades", json=VALID, headers={"Authorization": "Bearer wrong"}), 401)
    assert_error(http.get("/api/v1/trades/stats", headers={"Authorization": api_token}), 401)
    assert queued_tasks() == []

    authorized = {"Authorization": f"Bearer {api_token}"}
    assert http.get("/api/v1/trades", headers=authorized).status_code == 200
    assert http.post("/api/v1/trades", json=VALID, headers=authorized).status_code == 202


def test_stats_of_huge_amounts_answer_rather_than_overflow(app, http):
    # Found by schemathesis: each value is a legal double, their sum is not one.
    huge = {"closed": True, "realized_pnl": 1.5e308, "fees": 1e308}
    seed(
        app, [{**VALID, "trade_id": f"huge-{n}", **huge} for n in range(2)] + [{**VALID, "trade_id": "small"}]
    )
    stats = http.get("/api/v1/trades/stats")
    assert stats.status_code == 200, stats.get_data(as_text=True)
    body = stats.get_json()
    assert body["trades"] == 3 and body["total_pnl"] is None and body["fees"] is None
    assert body["avg_pnl"] == 1.5e308
    assert body["max_drawdown"] == 0 and body["profit_factor"] is None  # it only rose
    bucket = http.get("/api/v1/trades/stats?bucket=1 day").get_json()["buckets"][0]
    assert bucket["trades"] == 3 and bucket["total_pnl"] is None


@pytest.fixture
def app_without_database():
    """An app whose DATABASE_URL names a port nothing listens on: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return web_app(database_url=f"postgresql+psycopg2://postgres@127.0.0.1:{port}/tradebot")


def test_reads_answer_503_while_the_database_is_down_and_writes_still_queue(app_without_database):
    client = app_without_database.test_client()
    for path in ("/api/v1/trades", "/api/v1/trades/stats", "/api/v1/trades/some-trade"):
        assert assert_error(client.get(path), 503)["code"] == "database_unavailable"
    assert client.post("/api/v1/trades", json=VALID).status_code == 202
