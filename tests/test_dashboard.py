"""The dashboard at `/` through Flask's test client: the login, the panels and their data.

The page in a real browser is tested in test_dashboard_browser.py.
"""

from __future__ import annotations

import re
import statistics
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from config import get_settings
from db import PredictionEntry, RecordEntry, TradeRecord, TradeRepository
from tests.support.apps import web_app
from tests.support.model_zoo import version_of
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
        "/dashboard/model-performance",
        "/dashboard/model-performance.json",
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
    assert http.get("/dashboard/model-performance").status_code == 200
    assert http.get("/dashboard/model-performance.json").get_json() == {"models": []}
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
        ("/dashboard/model-performance", "database_unavailable"),
        ("/dashboard/model-performance.json", "database_unavailable"),
    ]:
        response = client.get(path)
        assert response.status_code == 503, path
        assert response.get_json()["error"]["code"] == code
    health = client.get("/dashboard/health").get_data(as_text=True)
    assert '<tr data-check="database"><th>database</th><td><span class="state bad">' in health
    assert '<tr data-check="broker"><th>broker</th><td><span class="state ok">' in health


# -- the models performance panel ------------------------------------------------------

MODEL = "xgb.json"  # a file of the zoo's MODEL_DIR, whose current version is neither of these
OLD, NEW = "v-old", "v-new"
# Per version: (realized PnL, PnL %) of its closed trades, in close order.
CLOSED = {OLD: [(10.0, 1.0), (-4.0, -0.4), (6.0, 0.6)], NEW: [(-2.0, -0.2), (-3.0, -0.3), (8.0, 0.8)]}
SERVED = {OLD: 3, NEW: 2}


def logged(prediction_id: str, created_at: datetime, version: str, model: str = MODEL) -> PredictionEntry:
    return PredictionEntry(
        {
            "prediction_id": prediction_id,
            "created_at": created_at,
            "model_name": model,
            "model_version": version,
            "model_type": "xgboost",
            "rows": 1,
            "predictions": [0.5],
            "latency_ms": 1.0,
        }
    )


def version_trades() -> list[TradeRecord]:
    """v-old's trades name their predictions (linked by the log); v-new's name the model."""
    records = []
    for index, (pnl, pct) in enumerate(CLOSED[OLD]):
        opened = DAY_1 + timedelta(hours=index)
        records.append(
            trade(f"old-{index}", "BTC/USDT", opened, pnl, pnl_pct=pct, prediction_id=f"p-old-{index}")
        )
    records.append(trade("old-open", "BTC/USDT", DAY_2, None, prediction_id="p-old-0"))
    for index, (pnl, pct) in enumerate(CLOSED[NEW]):
        opened = DAY_2 + timedelta(hours=index)
        lineage = {"model_name": MODEL, "model_version": NEW}
        records.append(trade(f"new-{index}", "ETH/USDT", opened, pnl, pnl_pct=pct, **lineage))
    records.append(trade("unlinked", "ETH/USDT", DAY_2, 99.0))  # no model: in no version's figures
    return records


@pytest.fixture
def versions(http, engine, zoo):
    served = [logged(f"p-old-{n}", DAY_1 - timedelta(hours=3 - n), OLD) for n in range(SERVED[OLD])]
    served += [logged(f"p-new-{n}", DAY_2 - timedelta(hours=2 - n), NEW) for n in range(SERVED[NEW])]
    with Session(engine) as session:
        TradeRepository(session).write(served)
        outcome = TradeRepository(session).write([RecordEntry(record) for record in version_trades()])
    assert outcome.trades_linked == 4
    return http


def expected_figures(closed: list[tuple[float, float]]) -> dict[str, float]:
    """Win rate, total PnL, max drawdown (the largest fall of the running PnL from its
    peak, which starts at 0) and Sharpe (mean PnL % over its sample deviation)."""
    pnls = [pnl for pnl, _ in closed]
    equity, peak, drawdown = 0.0, 0.0, 0.0
    for pnl in pnls:
        equity += pnl
        peak = max(peak, equity)
        drawdown = max(drawdown, peak - equity)
    pcts = [pct for _, pct in closed]
    return {
        "win_rate": sum(pnl > 0 for pnl in pnls) / len(pnls),
        "total_pnl": sum(pnls),
        "max_drawdown": drawdown,
        "sharpe": statistics.mean(pcts) / statistics.stdev(pcts),
        "equity": [sum(pnls[: n + 1]) for n in range(len(pnls))],
    }


def cells(html: str, version: str, model: str = MODEL) -> dict[str, str]:
    """The panel's row of `version`: its cells' text by data-field."""
    pattern = rf'<tr data-performance-model="{re.escape(model)}" data-model-version="{version}">(.*?)</tr>'
    row = re.search(pattern, html, re.S)
    assert row is not None, f"no row for {model} {version}"
    found = re.findall(r'<td class="[^"]*" data-field="(\w+)">(.*?)</td>', row.group(1), re.S)
    return {field: re.sub(r"<[^>]+>", "", text).strip() for field, text in found}


def test_the_models_performance_panel_shows_each_version(versions, zoo):
    response = versions.get("/dashboard/model-performance")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    # Oldest first served first.
    assert re.findall(r'data-model-version="([^"]*)"', html) == [OLD, NEW]
    for version, trades in ((OLD, 4), (NEW, 3)):
        figures = expected_figures(CLOSED[version])
        assert cells(html, version) == {
            "version": version,
            "predictions": str(SERVED[version]),
            "trades": str(trades),
            "closed": "3",
            "win_rate": f"{100 * figures['win_rate']:.1f} %",
            "total_pnl": f"{figures['total_pnl']:,.2f}",
            "max_drawdown": f"{figures['max_drawdown']:,.2f}",
            "sharpe": f"{figures['sharpe']:,.2f}",
        }
    # The numbers themselves, so a formatting slip cannot hide a wrong figure.
    assert cells(html, OLD)["win_rate"] == "66.7 %" and cells(html, NEW)["max_drawdown"] == "5.00"
    assert 'class="pnl-positive">12.00' in html and 'class="pnl-positive">3.00' in html
    assert "99.00" not in html  # the trade without a model is no version's
    # The zoo's other files served nothing yet; the current version is neither seeded one.
    others = sorted(set(zoo) - {MODEL})
    assert f"Nothing served or traded yet by {', '.join(others)}." in html
    assert '<span class="current">' not in html


def test_the_models_performance_json_gives_an_equity_curve_per_version(versions):
    body = versions.get("/dashboard/model-performance.json").get_json()
    [model] = body["models"]
    assert model["model_name"] == MODEL
    assert [version["model_version"] for version in model["versions"]] == [OLD, NEW]
    for version, opened in ((OLD, DAY_1), (NEW, DAY_2)):
        close_times = [(opened + timedelta(hours=n, minutes=30)).timestamp() for n in range(3)]
        expected = expected_figures(CLOSED[version])["equity"]
        [curve] = [entry["equity"] for entry in model["versions"] if entry["model_version"] == version]
        assert curve == [
            {"at": at, "equity": pytest.approx(e)} for at, e in zip(close_times, expected, strict=True)
        ]


def test_the_models_performance_panel_without_predictions_or_linked_trades_says_what_to_do(seeded):
    html = seeded.get("/dashboard/model-performance").get_data(as_text=True)  # trades, none linked
    assert "No predictions logged and no trades linked to a model yet; run <code>make demo</code>" in html
    assert "data-performance-model" not in html
    assert seeded.get("/dashboard/model-performance.json").get_json() == {"models": []}


def test_a_version_that_served_but_traded_nothing_is_listed_and_marked_current(http, engine, zoo):
    current = version_of(get_settings().model_dir / "gbm.txt")
    with Session(engine) as session:
        TradeRepository(session).write([logged("p-gbm", DAY_1, current, model="gbm.txt")])
    html = http.get("/dashboard/model-performance").get_data(as_text=True)
    assert cells(html, current, model="gbm.txt") == {
        "version": f"{current} current",
        "predictions": "1",
        "trades": "0",
        "closed": "0",
        "win_rate": "—",
        "total_pnl": "0.00",
        "max_drawdown": "—",
        "sharpe": "—",
    }
    assert http.get("/dashboard/model-performance.json").get_json() == {"models": []}  # nothing closed
