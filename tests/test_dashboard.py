"""The dashboard at `/` through Flask's test client: the login, the panels and their data.

The page in a real browser is tested in test_dashboard_browser.py.
"""

from __future__ import annotations

import html as markup
import re
import statistics
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from config import get_settings
from db import PredictionEntry, RecordEntry, TradeRecord, TradeRepository
from db import releases as stored
from tests.support.apps import web_app
from tests.support.model_zoo import version_of
from tests.support.processes import free_port
from web import release_panel
from web.release_panel import ComparisonCache

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
        and 'id="releases" data-src="/dashboard/releases"' in html
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
        "/dashboard/releases",
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
    assert http.get("/dashboard/releases").status_code == 200
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
        ("/dashboard/releases", "database_unavailable"),
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


def logged(
    prediction_id: str, created_at: datetime, version: str, model: str = MODEL, **fields: Any
) -> PredictionEntry:
    return PredictionEntry.of(
        {
            "prediction_id": prediction_id,
            "created_at": created_at,
            "model_name": model,
            "model_version": version,
            "model_type": "xgboost",
            "rows": 1,
            "predictions": [0.5],
            "latency_ms": 1.0,
            **fields,
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


# -- the releases panel ----------------------------------------------------------------

CHALLENGER = "a1a1a1a1a1a1a1a1"
SET_AT = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
HOSTILE = "<script>alert('x')</script> & co"


@pytest.fixture
def releases_http(app, http, zoo):
    """The client, and none of the comparisons an earlier test's app kept (one app a session)."""
    app.extensions[release_panel.EXTENSION].clear()
    return http


def set_challenger(engine, mode="canary", percent=10, reason="try it", guards=None, name=MODEL):
    with Session(engine) as session:
        stored.set_challenger(
            session,
            name,
            challenger=CHALLENGER,
            mode=mode,
            percent=percent if mode == "canary" else None,
            guards=guards,
            who="alice",
            reason=reason,
            now=SET_AT,
        )


def release_section(html: str, name: str = MODEL) -> str:
    found = re.search(
        rf'<article class="release" data-release-model="{re.escape(name)}">(.*?)</article>', html, re.S
    )
    assert found is not None, f"no release section for {name}"
    return found.group(1)


def text_of(fragment: str, field: str) -> str:
    """The text of the element with data-field `field` as a browser shows it."""
    found = re.search(rf'<(\w+) [^>]*data-field="{field}"[^>]*>(.*?)</\1>', fragment, re.S)
    assert found is not None, f"no {field}"
    return shown(found.group(2))


def shown(fragment: str) -> str:
    """Tags dropped, entities unescaped, spaces folded."""
    return " ".join(markup.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def history_rows(fragment: str) -> list[list[str]]:
    """The history's rows, newest first, without their time (the database's clock, UTC)."""
    rows = re.findall(r'<tr data-change="\d+">(.*?)</tr>', fragment, re.S)
    cells = [[shown(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in rows]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row[0]) for row in cells), cells
    return [row[1:] for row in cells]


def test_the_releases_panel_shows_champion_challenger_mode_guards_and_history(releases_http, engine, zoo):
    set_challenger(engine, guards={"max_error_rate": 0.05, "max_p99_ms": 250.0, "min_predictions": 100})
    response = releases_http.get("/dashboard/releases")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    section = release_section(html)
    current = version_of(get_settings().model_dir / MODEL)
    assert text_of(section, "champion") == f"{current} the file's current version"
    assert text_of(section, "challenger") == f"{CHALLENGER} canary 10 % since 2026-04-01 12:00:00 UTC"
    assert text_of(section, "guards") == (
        "rolled back on its own past: error rate above 5 %; p99 latency above 250 ms; "
        "judged after 100 predictions"
    )
    # No shadow pair logged yet: the comparison says so, in words.
    assert text_of(section, "pairs") == "0" and text_of(section, "n") == "0"
    assert 'data-verdict="not enough evidence"' in section
    assert "Not enough evidence yet: 0 scored trades, a verdict needs 30" in section
    assert history_rows(section) == [["alice", "release (canary 10 %)", f"— → {CHALLENGER}", "try it"]]
    # The store's other models have no release: one line.
    others = ", ".join(sorted(set(zoo) - {MODEL}))
    assert f"No release for {others}: each answers with its file's current version." in html


def test_a_store_without_any_release_says_so_in_one_line(releases_http, zoo):
    html = releases_http.get("/dashboard/releases").get_data(as_text=True)
    assert "<article" not in html
    assert (
        f"No release yet: every model ({', '.join(sorted(zoo))}) answers with its file's current version."
        in html
    )


def test_the_history_shows_a_hostile_reason_as_text_and_a_promotion_pins_the_champion(
    releases_http, engine, zoo
):
    set_challenger(engine, mode="shadow", reason=HOSTILE)
    current = version_of(get_settings().model_dir / MODEL)
    with Session(engine) as session:
        stored.promote(
            session,
            MODEL,
            file_version=current,
            who="bob",
            reason="better Brier",
            now=SET_AT + timedelta(hours=1),
        )
    html = releases_http.get("/dashboard/releases").get_data(as_text=True)
    section = release_section(html)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in section
    assert text_of(section, "champion") == f"{CHALLENGER} pinned"
    assert text_of(section, "challenger") == "none"
    assert current in text_of(section, "previous-champion")
    assert 'data-field="comparison"' not in section  # no challenger: nothing to compare
    assert history_rows(section) == [
        ["bob", "promote", f"{current} → {CHALLENGER}", "better Brier"],
        ["alice", "release (shadow)", f"— → {CHALLENGER}", HOSTILE],
    ]


def test_the_history_shows_the_last_five_changes(releases_http, engine, zoo):
    with Session(engine) as session:
        for n in range(7):
            stored.set_challenger(
                session, MODEL, challenger=CHALLENGER if n % 2 == 0 else None, mode="shadow", percent=None,
                guards=None, who="alice", reason=f"step {n}", now=SET_AT + timedelta(minutes=n),
            )  # fmt: skip
    section = release_section(releases_http.get("/dashboard/releases").get_data(as_text=True))
    assert [row[-1] for row in history_rows(section)] == [f"step {n}" for n in (6, 5, 4, 3, 2)]


def shadowed_trades(engine) -> None:
    """40 champion predictions of MODEL, each shadowed by CHALLENGER, each with a closed
    trade: 30 won, 10 lost. The champion says 0.6 every time; the challenger 0.8 before a
    win, 0.3 before a loss."""
    log, trades = [], []
    for n in range(40):
        won = n < 30
        at = SET_AT + timedelta(minutes=n + 1)
        champion = logged(f"c-{n}", at, "c0c0c0c0c0c0c0c0", role="champion", predictions=[0.6])
        shadow = logged(
            f"s-{n}",
            at + timedelta(milliseconds=5),
            CHALLENGER,
            role="shadow",
            shadow_of=f"c-{n}",
            predictions=[0.8 if won else 0.3],
            # As a worker logs a shadow: with the answer of its champion (the kept comparison's).
            champion_version="c0c0c0c0c0c0c0c0",
            champion_predictions=[0.6],
        )
        log += [champion, shadow]
        pnl = 5.0 if won else -3.0
        trades.append(trade(f"t-{n}", "BTC/USDT", at + timedelta(seconds=1), pnl, prediction_id=f"c-{n}"))
    with Session(engine) as session:
        TradeRepository(session).write(log)
        TradeRepository(session).write([RecordEntry(record) for record in trades])


def test_the_comparison_shows_pairs_agreement_brier_and_the_verdict_in_words(releases_http, engine):
    set_challenger(engine, mode="shadow")
    shadowed_trades(engine)
    section = release_section(releases_http.get("/dashboard/releases").get_data(as_text=True))
    assert text_of(section, "pairs") == "40" and text_of(section, "trades") == "40"
    assert text_of(section, "agreement") == "75.0 %"
    assert text_of(section, "n") == "40"
    # Brier: champion (30 * 0.4² + 10 * 0.6²) / 40, challenger (30 * 0.2² + 10 * 0.3²) / 40.
    sides = {
        side: re.search(rf'<tr data-side="{side}">(.*?)</tr>', section, re.S).group(1)
        for side in ("champion", "challenger")
    }
    assert (
        text_of(sides["champion"], "brier") == "0.2100" and text_of(sides["challenger"], "brier") == "0.0525"
    )
    assert text_of(sides["champion"], "accuracy") == "75.0 %"
    assert text_of(sides["challenger"], "accuracy") == "100.0 %"
    assert text_of(section, "brier-diff") == "-0.1575"
    low, high = re.fullmatch(r"\[([-+0-9.]+), ([-+0-9.]+)\]", text_of(section, "brier-diff-ci")).groups()
    assert float(low) <= -0.1575 <= float(high) < 0
    assert 'data-verdict="challenger better"' in section
    assert "The challenger is better: its Brier score is lower than the champion&#39;s" in section
    assert "over 40 scored trades." in section
    assert "would have taken 30 of these trades (PnL +150.00) and declined 10 (PnL -30.00)" in section


def test_a_comparison_that_runs_out_of_time_is_unavailable_and_the_rest_of_the_panel_shows(
    releases_http, engine, monkeypatch
):
    set_challenger(engine, mode="shadow", reason="slow one")
    monkeypatch.setattr(release_panel, "COMPARE_TIMEOUT_S", 0.3)
    with engine.connect() as locker, locker.begin():
        locker.execute(text("LOCK TABLE shadow_pair_sums IN ACCESS EXCLUSIVE MODE"))  # the read waits
        response = releases_http.get("/dashboard/releases")
    assert response.status_code == 200
    section = release_section(response.get_data(as_text=True))
    assert "comparison unavailable: it took longer than 0.3 s; asked again later." in section
    assert text_of(section, "challenger").startswith(f"{CHALLENGER} shadow since")
    assert [row[-1] for row in history_rows(section)] == ["slow one"]
    # The failure is kept like an outcome: the next refresh does not scan again at once.
    again = release_section(releases_http.get("/dashboard/releases").get_data(as_text=True))
    assert "comparison unavailable" in again


# -- the comparisons a process keeps ------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_comparison_is_computed_on_one_thread_at_a_time_and_kept_for_its_ttl():
    clock = Clock()
    cache = ComparisonCache(ttl_s=30, clock=clock)
    calls, started, finish = [], threading.Event(), threading.Event()

    def slow():
        calls.append(1)
        started.set()
        assert finish.wait(5)
        return {"computed": len(calls)}

    answers = []
    first = threading.Thread(target=lambda: answers.append(cache.get("key", slow)))
    first.start()
    assert started.wait(5)
    waiters = [threading.Thread(target=lambda: answers.append(cache.get("key", slow))) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    # Nothing kept yet: a request that may block waits for the thread computing it; one that
    # may not says it is being computed.
    pending, blocked = cache.get("key", slow, may_block=False)
    assert pending.result is None and pending.pending and not blocked
    finish.set()
    for thread in (first, *waiters):
        thread.join(5)
    assert len(calls) == 1
    assert [outcome.result for outcome, _ in answers] == [{"computed": 1}] * 4
    assert all(blocked for _, blocked in answers)

    clock.now = 29.9  # kept
    assert cache.get("key", slow)[0].result == {"computed": 1} and len(calls) == 1

    # Expired: one thread computes again while the others get the last outcome at once.
    clock.now = 30.1
    started.clear()
    finish.clear()
    again = threading.Thread(target=lambda: cache.get("key", slow))
    again.start()
    assert started.wait(5)
    last, blocked = cache.get("key", slow)
    assert last.result == {"computed": 1} and not blocked
    finish.set()
    again.join(5)
    assert cache.get("key", slow)[0].result == {"computed": 2} and len(calls) == 2


def test_a_failed_comparison_is_an_outcome_asked_again_later_and_later():
    clock = Clock()
    cache = ComparisonCache(ttl_s=30, backoff_max_s=100, clock=clock)

    def down():
        raise OperationalError("SELECT", {}, Exception("server closed the connection"))

    for at, kept_for in ((0, 30), (30, 60), (90, 100), (190, 100)):
        clock.now = at
        outcome, blocked = cache.get("key", down)
        assert blocked and outcome.result is None and outcome.problem == "the database did not answer"
        assert outcome.expires == at + kept_for
    clock.now = 290
    outcome, _ = cache.get("key", lambda: {"pairs": 1})
    assert outcome.result == {"pairs": 1} and outcome.failures == 0
