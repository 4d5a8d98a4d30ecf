"""The dashboard at `/` through Flask's test client: the login, the panels and their data.

The page in a real browser is tested in test_dashboard_browser.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from config import get_settings
from db import RecordEntry, TradeRecord, TradeRepository
from tests.support.apps import web_app
from tests.support.processes import free_port

DAY_1 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY_2 = DAY_1 + timedelta(days=1)


def trade(trade_id: str, symbol: str, opened: datetime, pnl: float | None, **fields) -> TradeRecord:
    closed = pnl is not None
    return TradeRecord.from_dict(
        {
            "trade_id": trade_id,
            "symbol": symbol,
            "side": "buy",
            "amount": 0.5,
            "entry_price": 100.0,
            "timestamp": opened,
            "closed": closed,
            "exit_price": 100.0 + pnl if closed else None,
            "realized_pnl": pnl,
            "fees": 0.1 if closed else None,
            "close_timestamp": opened + timedelta(minutes=30) if closed else None,
            **fields,
        }
    )


SEEDED = [
    trade("win-1", "BTC/USDT", DAY_1, 12.5),
    trade("loss-1", "ETH/USDT", DAY_1 + timedelta(hours=1), -4.0),
    trade("win-2", "BTC/USDT", DAY_2, 3.5),
    trade("open-1", "BTC/USDT", DAY_2 + timedelta(hours=2), None),
]


@pytest.fixture
def seeded(http, engine):
    with Session(engine) as session:
        TradeRepository(session).write([RecordEntry(record) for record in SEEDED])
    return http


@pytest.fixture
def api_token() -> str:
    return "dashboard-s3cret"


@pytest.fixture
def token_http(database_url, clean, api_token):
    """A client of an app whose API_TOKEN is set."""
    return web_app(api_token=api_token).test_client()


def rows_of(html: str) -> list[str]:
    return [chunk.split('"', 1)[0] for chunk in html.split('data-trade-id="')[1:]]


def test_without_a_token_the_page_is_open(http):
    page = http.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert (
        'id="trades"' in html
        and 'id="equity-chart"' in html
        and "/dashboard/static/vendor/uPlot.iife.min.js" in html
    )
    assert 'name="token"' not in html
    assert http.get("/dashboard/trades").status_code == 200


def test_with_a_token_the_page_asks_for_it_once_and_keeps_a_strict_httponly_session(token_http, api_token):
    http = token_http
    form = http.get("/")
    assert form.status_code == 200 and 'name="token"' in form.get_data(as_text=True)
    for panel in (
        "/dashboard/trades",
        "/dashboard/models",
        "/dashboard/health",
        "/dashboard/performance.json",
    ):
        refused = http.get(panel)
        assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "unauthorized"

    assert http.get("/dashboard/static/dashboard.css").status_code == 200  # the form's styles

    wrong = http.post("/login", data={"token": "guess"})
    assert wrong.status_code == 401 and "not the API token" in wrong.get_data(as_text=True)
    assert http.get("/dashboard/trades").status_code == 401

    logged_in = http.post("/login", data={"token": api_token})
    assert logged_in.status_code == 303 and logged_in.headers["Location"] == "/"
    cookie = logged_in.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert api_token not in cookie
    assert 'id="trades"' in http.get("/").get_data(as_text=True)
    assert http.get("/dashboard/trades").status_code == 200
    # The API itself still wants the bearer header: the dashboard's session is not an API key.
    assert http.get("/api/v1/trades").status_code == 401

    assert http.post("/logout").status_code == 303
    assert http.get("/dashboard/trades").status_code == 401


def test_a_login_holds_across_web_processes_sharing_the_token(database_url, api_token):
    shared = {"api_token": api_token, "web_secret_key": None}
    first, second = web_app(**shared).test_client(), web_app(**shared).test_client()
    assert first.post("/login", data={"token": api_token}).status_code == 303
    second.set_cookie("session", first.get_cookie("session").value)
    assert second.get("/dashboard/trades").status_code == 200

    other = web_app(**{**shared, "web_secret_key": "another-key"}).test_client()
    other.set_cookie("session", first.get_cookie("session").value)
    assert other.get("/dashboard/trades").status_code == 401  # signed with another key


def test_the_trades_panel_lists_newest_first_with_pnl_coloured(seeded):
    html = seeded.get("/dashboard/trades").get_data(as_text=True)
    assert rows_of(html) == ["open-1", "win-2", "loss-1", "win-1"]
    assert html.count("pnl-positive") == 2 and html.count("pnl-negative") == 1
    assert "12.50" in html and "-4.00" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("symbol=BTC/USDT", ["open-1", "win-2", "win-1"]),
        ("closed=false", ["open-1"]),
        ("closed=true&symbol=ETH/USDT", ["loss-1"]),
        ("symbol=DOGE/USDT", []),
    ],
)
def test_the_trades_panel_filters_by_symbol_and_status(seeded, query, expected):
    html = seeded.get(f"/dashboard/trades?{query}").get_data(as_text=True)
    assert rows_of(html) == expected
    if not expected:
        assert "No trades for DOGE/USDT yet." in html


@pytest.mark.parametrize("query", ["closed=maybe", "limit=0", "symbol=", "colour=red", "since=yesterday"])
def test_a_bad_filter_is_a_json_400(seeded, query):
    response = seeded.get(f"/dashboard/trades?{query}")
    assert response.status_code == 400
    assert set(response.get_json()["error"]) == {"code", "message", "details"}


def test_performance_gives_the_equity_curve_and_pnl_per_day(seeded):
    body = seeded.get("/dashboard/performance.json").get_json()
    assert body["totals"]["trades"] == 4 and body["totals"]["closed"] == 3
    assert body["totals"]["total_pnl"] == pytest.approx(12.0)
    close_times = [(t.close_timestamp).timestamp() for t in SEEDED[:3]]
    assert body["equity"] == [
        {"at": close_times[0], "equity": 12.5},
        {"at": close_times[1], "equity": 8.5},
        {"at": close_times[2], "equity": 12.0},
    ]
    day_1 = DAY_1.replace(hour=0).timestamp()
    day_2 = DAY_2.replace(hour=0).timestamp()
    assert body["per_bucket"] == [{"at": day_1, "pnl": 8.5}, {"at": day_2, "pnl": 3.5}]

    btc = seeded.get("/dashboard/performance.json?symbol=BTC/USDT").get_json()
    assert [point["equity"] for point in btc["equity"]] == [12.5, 16.0]
    assert seeded.get("/dashboard/performance.json?bucket=fortnight").status_code == 400


def test_an_equity_curve_beyond_a_double_answers_with_gaps_not_a_500(http, engine):
    huge = [trade(f"huge-{n}", "BTC/USDT", DAY_1 + timedelta(hours=n), 1.5e308) for n in range(2)]
    with Session(engine) as session:
        TradeRepository(session).write([RecordEntry(record) for record in huge])
    response = http.get("/dashboard/performance.json")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [point["equity"] for point in response.get_json()["equity"]] == [1.5e308, None]


def test_the_health_panel_shows_database_broker_workers_and_spool(http):
    get_settings().spool_dir.joinpath("replay").mkdir(parents=True, exist_ok=True)
    get_settings().spool_dir.joinpath("replay", "active.jsonl").write_text('{"kind": "record"}\n' * 3)
    html = http.get("/dashboard/health").get_data(as_text=True)
    assert '<tr data-check="database"><th>database</th><td><span class="state ok">' in html
    assert '<tr data-check="broker"><th>broker</th><td><span class="state ok">' in html
    # No worker runs in this test: each queue says so.
    assert html.count("no live worker consumes this queue") == 2
    assert "replay 3, outbox 0, dead letters 0" in html
    assert '<tr data-check="models">' in html
    assert 'href="http://127.0.0.1:5555"' in html  # where Flower listens (FLOWER_ADDRESS, FLOWER_PORT)

    flowered = web_app(flower_url="https://flower.example.org").test_client()
    html = flowered.get("/dashboard/health").get_data(as_text=True)
    assert 'href="https://flower.example.org"' in html
    assert 'href="https://flower.example.org"' in flowered.get("/").get_data(as_text=True)


def test_the_models_panel_lists_the_store(http, zoo):
    html = http.get("/dashboard/models").get_data(as_text=True)
    for name in zoo:
        assert f'data-model="{name}"' in html


def test_a_panel_whose_source_is_down_says_so_with_a_503(database_url):
    client = web_app(
        database_url=f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nowhere",
        celery_result_backend=f"redis://127.0.0.1:{free_port()}/0",
    ).test_client()
    for path, code in [
        ("/dashboard/trades", "database_unavailable"),
        ("/dashboard/performance.json", "database_unavailable"),
        ("/dashboard/models", "broker_unavailable"),
    ]:
        response = client.get(path)
        assert response.status_code == 503, path
        assert response.get_json()["error"]["code"] == code
    health = client.get("/dashboard/health").get_data(as_text=True)
    assert '<tr data-check="database"><th>database</th><td><span class="state bad">' in health
    assert '<tr data-check="broker"><th>broker</th><td><span class="state ok">' in health
