"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright).

The web server serves the app, a predict worker has loaded the demo models, a trades worker
runs, and the journal is seeded through the repository. The screenshot of each run is
written to test-artifacts/dashboard.png.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import text
from sqlalchemy.orm import Session

from db import PredictionEntry, RecordEntry, TradeRecord, TradeRepository
from tests.support.demo_models import demo_services
from tests.support.processes import WebServer, Worker

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
GREEN, RED = "rgb(21, 128, 61)", "rgb(185, 28, 28)"  # --ok and --bad in dashboard.css
WAIT_MS = 30_000
LINKED_MODEL = "xgboost_model.json"  # one of the demo models
VERSIONS = ("0a1b2c3d4e5f6071", "8192a3b4c5d6e7f8")  # the journal's first five trades, its next five


@pytest.fixture(scope="module")
def stack(tmp_path_factory, database_url) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("dashboard-stack")
    with demo_services(folder) as services:
        trades = Worker(services.env, folder, queues="trades")
        services.started.append(trades)
        trades.wait_ready()
        token_web = WebServer({**services.env, "API_TOKEN": "browser-s3cret"}, folder)
        services.started.append(token_web)
        yield {"url": services.web.url, "token_url": token_web.wait_ready().url, "models": services.models}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # Debian's chromium; `playwright install` (a browser download) is never needed.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    yield page
    context.close()


def record(trade_id: str, symbol: str, opened: datetime, pnl: float | None, **fields) -> TradeRecord:
    closed = pnl is not None
    return TradeRecord.from_dict(
        {
            "trade_id": trade_id,
            "symbol": symbol,
            "side": "buy" if (pnl or 0) >= 0 else "sell",
            "amount": 0.25,
            "entry_price": 40_000.0,
            "timestamp": opened,
            "closed": closed,
            "exit_price": 40_000.0 + 4 * pnl if closed else None,
            "realized_pnl": pnl,
            "fees": 0.4 if closed else None,
            "close_timestamp": opened + timedelta(hours=2) if closed else None,
            **fields,
        }
    )


def prediction(prediction_id: str, created_at: datetime, version: str) -> PredictionEntry:
    return PredictionEntry(
        {
            "prediction_id": prediction_id,
            "created_at": created_at,
            "model_name": LINKED_MODEL,
            "model_version": version,
            "model_type": "xgboost",
            "rows": 1,
            "predictions": [0.5],
            "latency_ms": 1.0,
        }
    )


def write(engine, records: list[TradeRecord]) -> None:
    with Session(engine) as session:
        TradeRepository(session).write([RecordEntry(item) for item in records])


@pytest.fixture
def journal(engine) -> list[TradeRecord]:
    """Ten closed trades over five days, winners and losers, and two open ones. Each closed
    trade names a logged prediction: the first five of one version of a demo model, the
    next five of another."""
    with engine.begin() as connection:
        connection.execute(
            text("TRUNCATE trade_history, trade_pending_updates, prediction_log, prediction_counts")
        )
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=5, hours=3)
    pnls = [42.0, -13.5, 27.25, 8.0, -31.0, 55.5, -6.75, 19.0, -22.0, 36.5]
    with Session(engine) as session:
        TradeRepository(session).write(
            [
                prediction(f"seed-p-{index:02d}", start + timedelta(hours=12 * index), VERSIONS[index // 5])
                for index in range(len(pnls))
            ]
        )
    records = [
        record(
            f"seed-{index:02d}",
            ["BTC/USDT", "ETH/USDT"][index % 2],
            start + timedelta(hours=12 * index),
            pnl,
            pnl_pct=pnl / 100,
            prediction_id=f"seed-p-{index:02d}",
        )
        for index, pnl in enumerate(pnls)
    ]
    records += [
        record("seed-open-btc", "BTC/USDT", start + timedelta(days=5, hours=1), None),
        record("seed-open-eth", "ETH/USDT", start + timedelta(days=5, hours=2), None),
    ]
    write(engine, records)
    return records


def trade_ids(page: Page) -> list[str]:
    return page.locator("#trades tr[data-trade-id]").evaluate_all("rows => rows.map(r => r.dataset.tradeId)")


def colour(page: Page, selector: str) -> str:
    return page.locator(selector).evaluate("element => getComputedStyle(element).color")


def chart_pixels(page: Page, chart: str) -> dict:
    """The size of the canvas of the chart `chart` (a selector) and how many of its pixels are painted."""
    return page.locator(f"{chart} canvas").evaluate(
        """canvas => {
             const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
             let painted = 0;
             for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) painted++;
             return {width: canvas.clientWidth, height: canvas.clientHeight, painted};
           }"""
    )


def test_the_dashboard_shows_trades_performance_models_and_health(stack, page, journal):
    page.goto(stack["url"] + "/")
    page.wait_for_selector("#trades tr[data-trade-id]", timeout=WAIT_MS)
    expected = [item.trade_id for item in sorted(journal, key=lambda item: item.timestamp, reverse=True)]
    assert trade_ids(page) == expected

    assert colour(page, '#trades tr[data-trade-id="seed-00"] td.pnl') == GREEN
    assert colour(page, '#trades tr[data-trade-id="seed-01"] td.pnl') == RED
    assert page.locator('#trades tr[data-trade-id="seed-open-btc"] td.pnl').inner_text() == "—"
    # The totals come with the charts' data, fetched after the panels.
    page.wait_for_function("document.querySelector('#totals').innerText.trim() !== ''", timeout=WAIT_MS)
    assert page.locator("#totals").inner_text().split() == [
        "trades", "12", "closed", "10", "win", "rate", "60.0", "%",
        "total", "PnL", "115.00", "average", "PnL", "11.50", "fees", "4.00",
    ]  # fmt: skip

    for chart in ("equity-chart", "daily-chart"):
        page.wait_for_selector(f"#{chart} canvas", timeout=WAIT_MS)
        drawn = chart_pixels(page, f"#{chart}")
        assert drawn["width"] > 200 and drawn["height"] > 100 and drawn["painted"] > 500, drawn

    # Models performance: a row per version of the linked model, and its equity chart.
    page.wait_for_selector("#model-performance tr[data-performance-model]", timeout=WAIT_MS)
    rows = page.locator("#model-performance tr[data-performance-model]")
    assert rows.evaluate_all(
        "rows => rows.map(r => [r.dataset.performanceModel, r.dataset.modelVersion])"
    ) == [[LINKED_MODEL, version] for version in VERSIONS]
    for version, won, total in ((VERSIONS[0], "60.0 %", "32.75"), (VERSIONS[1], "60.0 %", "82.25")):
        row = page.locator(f'#model-performance tr[data-model-version="{version}"]')
        assert row.locator('[data-field="predictions"]').inner_text() == "5"
        assert row.locator('[data-field="trades"]').inner_text() == "5"
        assert row.locator('[data-field="win_rate"]').inner_text() == won
        assert row.locator('[data-field="total_pnl"]').inner_text() == total
        assert row.locator('[data-field="sharpe"]').inner_text() != "—"
    assert colour(page, f'#model-performance tr[data-model-version="{VERSIONS[0]}"] .pnl span') == GREEN
    curves = f'#model-curves figure[data-curves-model="{LINKED_MODEL}"]'
    page.wait_for_selector(f"{curves} canvas", timeout=WAIT_MS)
    drawn = chart_pixels(page, f"{curves} .chart")
    assert drawn["width"] > 200 and drawn["height"] > 100 and drawn["painted"] > 500, drawn
    legend = page.locator(f"{curves} .u-legend").inner_text()
    assert all(version in legend for version in VERSIONS), legend

    for name in stack["models"]:
        row = page.locator(f'#models tr[data-model="{name}"]')
        assert row.locator("td").nth(6).inner_text() == "yes"
        assert row.locator("td").nth(3).inner_text() == "5"

    health = page.locator("#health")
    for check in ("database", "broker", "queue-predict", "queue-trades", "models", "spool"):
        assert health.locator(f'tr[data-check="{check}"] .state').get_attribute("class") == "state ok"
    assert page.locator("#flower-link").get_attribute("href") == "http://127.0.0.1:5555"

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
    assert page.console_errors == []


def test_new_trades_appear_without_a_reload_and_filters_apply(stack, page, journal, engine):
    page.goto(stack["url"] + "/")
    page.wait_for_selector("#trades tr[data-trade-id]", timeout=WAIT_MS)
    page.evaluate("window.sameDocument = true")

    write(engine, [record("arrived-later", "SOL/USDT", datetime.now(UTC), None)])
    page.wait_for_selector('#trades tr[data-trade-id="arrived-later"]', timeout=WAIT_MS)
    assert trade_ids(page)[0] == "arrived-later"
    assert page.evaluate("window.sameDocument") is True  # refreshed in place, not reloaded

    page.select_option("#filter-closed", "false")
    page.wait_for_function(
        "() => document.querySelectorAll('#trades tr[data-trade-id]').length === 3", timeout=WAIT_MS
    )
    assert set(trade_ids(page)) == {"arrived-later", "seed-open-btc", "seed-open-eth"}

    page.fill("#filter-symbol", "ETH/USDT")
    page.dispatch_event("#filter-symbol", "change")
    page.wait_for_function(
        "() => document.querySelectorAll('#trades tr[data-trade-id]').length === 1", timeout=WAIT_MS
    )
    assert trade_ids(page) == ["seed-open-eth"]
    assert page.console_errors == []


def test_with_a_token_the_browser_logs_in_once(stack, page, journal):
    page.goto(stack["token_url"] + "/")
    assert page.locator("#trades").count() == 0

    page.fill("#token", "not-it")
    page.click("button[type=submit]")
    assert page.locator(".error").inner_text() == "That is not the API token."

    page.fill("#token", "browser-s3cret")
    page.click("button[type=submit]")
    page.wait_for_selector("#trades tr[data-trade-id]", timeout=WAIT_MS)
    cookie = next(c for c in page.context.cookies() if c["name"] == "session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # scripts cannot read the session

    page.reload()  # the session holds: no second prompt
    page.wait_for_selector("#trades tr[data-trade-id]", timeout=WAIT_MS)
    page.click("text=Log out")
    page.wait_for_selector("#token", timeout=WAIT_MS)
