"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright).

The web server serves the app, a predict worker has loaded the demo models, a trades worker
runs, and the journal is seeded through the repository. The screenshot of each run is
written to test-artifacts/dashboard.png.

A slow source is made slow for real: the test holds an ACCESS EXCLUSIVE lock on a table its
route reads, in a connection of its own, and counts what the web server answered from its
access lines.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request
from sqlalchemy import text
from sqlalchemy.orm import Session

from db import PredictionEntry, RecordEntry, TradeRecord, TradeRepository
from tests.support.demo_models import demo_services
from tests.support.processes import WebServer, Worker, wait_for

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
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
        yield {
            "url": services.web.url,
            "token_url": token_web.wait_ready().url,
            "models": services.models,
            "web": services.web,
            "env": services.env,
            "folder": folder,
        }


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
    return PredictionEntry.of(
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
    # The releases panel painted (what it shows is tested in test_dashboard.py).
    page.wait_for_selector("#releases :is(article.release, p.empty, p.note)", timeout=WAIT_MS)
    assert page.locator("#releases").get_attribute("class") != "failed"

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


# -- one request out per source ---------------------------------------------------------

REFRESH_S = 5  # web.dashboard.REFRESH_S, the page's timer
CLIENT_TIMEOUT_S = 12  # REQUEST_TIMEOUT_MS in dashboard.js
PERFORMANCE = "/dashboard/performance.json"
TRADES = "/dashboard/trades"
MODEL_PERFORMANCE = "/dashboard/model-performance"
MODEL_CURVES = "/dashboard/model-performance.json"
HEALTH, MODELS, RELEASES = "/dashboard/health", "/dashboard/models", "/dashboard/releases"
SOURCES = (HEALTH, TRADES, MODELS, PERFORMANCE, MODEL_PERFORMANCE, MODEL_CURVES, RELEASES)
# The kept statistics: the performance charts and both model performance sources read it;
# health, trades and models do not.
STATS_TABLE = "trade_stats_buckets"
ACCESS_LINE = re.compile(r"^(\S+ \S+) INFO web\.access \[\d+\]: GET (\S+) (\d{3}) ([0-9.]+)ms$")
CLOCK_SLACK_S = 0.05  # the access line's time has milliseconds
# A slow source's web gives up on a held read after this, still well before the page's
# CLIENT_TIMEOUT_S (the default 10 s would only make the test wait longer).
STATEMENT_TIMEOUT_S = 6


@dataclass(frozen=True)
class Answered:
    """A request as the web server saw it: from its access line (written once it answered)."""

    path: str
    status: int
    started: float  # Unix seconds, the web's clock
    ended: float


def log_size(web: WebServer) -> int:
    return web.log_path.stat().st_size


def answered(web: WebServer, start: int, end: int | None = None, since: float = 0.0) -> list[Answered]:
    """The dashboard's requests the web answered between two sizes of its log, in order;
    only those that arrived after `since` (Unix seconds): a page of an earlier test, closed
    now, may have left requests that the web answers later."""
    lines = web.log_path.read_bytes()[start:end].decode(errors="replace").splitlines()
    found = []
    for line in lines:
        if match := ACCESS_LINE.match(line):
            at, path, status, duration_ms = match.groups()
            ended = datetime.strptime(at, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            started = ended - float(duration_ms) / 1000
            if started >= since:
                found.append(Answered(path, int(status), started, ended))
    return found


def of(answers: list[Answered], path: str, status: int | None = None) -> list[Answered]:
    return [a for a in answers if a.path == path and (status is None or a.status == status)]


def overlaps(answers: list[Answered], path: str) -> list[tuple[Answered, Answered]]:
    """The pairs of requests for `path` where the second arrived before the first answered."""
    ordered = sorted(of(answers, path), key=lambda a: a.started)
    return [(a, b) for a, b in pairwise(ordered) if b.started < a.ended - CLOCK_SLACK_S]


def arrival_gaps(answers: list[Answered], path: str) -> list[float]:
    starts = sorted(a.started for a in of(answers, path))
    return [b - a for a, b in pairwise(starts)]


class PageRequests:
    """The dashboard's requests as the page sent them (Playwright's events, in order):
    which are out now, and the most that were ever out at once per route."""

    def __init__(self, page: Page):
        self.page = page
        self.sent: list[tuple[str, Request]] = []
        self.failed: list[tuple[str, Request]] = []
        self.out: dict[Request, tuple[str, float]] = {}
        self.most_out: dict[str, int] = defaultdict(int)
        page.on("request", self._sent)
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._failed)

    def _sent(self, request: Request) -> None:
        path = urlsplit(request.url).path
        if path in SOURCES:
            self.sent.append((path, request))
            self.out[request] = (path, time.monotonic())
            self.most_out[path] = max(self.most_out[path], len(self.out_for(path)))

    def _ended(self, request: Request) -> None:
        self.out.pop(request, None)

    def _failed(self, request: Request) -> None:
        if request in self.out:
            self.failed.append((self.out[request][0], request))
        self._ended(request)

    def pump(self) -> PageRequests:
        """Playwright hands over its events while the test calls it."""
        self.page.evaluate("0")
        return self

    def out_for(self, path: str) -> list[Request]:
        return [request for request, (p, _) in self.out.items() if p == path]

    def held(self, path: str, for_s: float) -> Request | None:
        """A request for `path` out for at least `for_s`: held (unheld, these answer within a second)."""
        now = time.monotonic()
        for request, (p, since) in self.pump().out.items():
            if p == path and now - since >= for_s:
                return request
        return None

    def urls(self, path: str, after: int = 0) -> list[str]:
        """The URLs of the requests for `path`, from the `after`th request sent on."""
        return [request.url for p, request in self.sent[after:] if p == path]

    def from_on(self, request: Request) -> list[Request]:
        """The requests for the route of `request` sent since it (itself first)."""
        index = next(i for i, (_, sent) in enumerate(self.sent) if sent is request)
        path = self.sent[index][0]
        return [sent for p, sent in self.sent[index:] if p == path]


@contextmanager
def table_locked(engine, table: str) -> Iterator:
    """`table` locked ACCESS EXCLUSIVE in a transaction of its own: every statement that reads
    it waits. Yields a function that releases it early (the way out releases it anyway)."""
    connection = engine.connect()
    transaction = connection.begin()
    connection.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))

    def release() -> None:
        if transaction.is_active:
            transaction.rollback()
            connection.close()

    try:
        yield release
    finally:
        release()


def totals_text(page: Page) -> list[str]:
    return page.locator("#totals").inner_text().split()


def only_gateway_timeouts(errors: list[str]) -> bool:
    """Chromium logs each error answer as a console error: the 504s are expected here."""
    return all(
        error.startswith("Failed to load resource: the server responded with a status of 504")
        for error in errors
    )


@pytest.fixture
def impatient_web(stack) -> Iterator[WebServer]:
    """A web server of the stack's whose reads give up after STATEMENT_TIMEOUT_S."""
    web = WebServer({**stack["env"], "WEB_STATEMENT_TIMEOUT_S": str(STATEMENT_TIMEOUT_S)}, stack["folder"])
    try:
        yield web.wait_ready()
    finally:
        web.stop()


def test_a_slow_source_has_one_request_out_and_delays_only_itself(impatient_web, page, journal, engine):
    web = impatient_web
    requests = PageRequests(page)
    opened = time.time()
    page.goto(web.url + "/")
    page.wait_for_selector("#model-performance tr[data-performance-model]", timeout=WAIT_MS)
    page.wait_for_function("document.querySelector('#totals').innerText.trim() !== ''", timeout=WAIT_MS)
    page.wait_for_function("document.querySelector('#updated').innerText !== ''", timeout=WAIT_MS)
    painted = totals_text(page)

    start = log_size(web)
    with table_locked(engine, STATS_TABLE) as release:
        locked_at = time.monotonic()
        footer = page.locator("#updated").inner_text()
        # The web's statement timeout ends each held read with a 504, before the page's own
        # 12 s: wait for two of them, the second asked only after the first answered.
        wait_for(
            lambda: len(of(answered(web, start, since=opened), PERFORMANCE, 504)) >= 2,
            4 * REFRESH_S + 3 * STATEMENT_TIMEOUT_S,
            "two answers of performance.json held until the web's statement timeout",
            interval=0.5,
        )
        # Meanwhile the panel said so, the charts kept their data and the footer moved on.
        requests.pump()
        panel = page.locator("#model-performance")
        assert panel.get_attribute("class") == "failed"
        assert f"did not answer within {STATEMENT_TIMEOUT_S}s" in panel.inner_text()
        assert totals_text(page) == painted
        assert page.locator("#updated").inner_text() != footer
        held_s = time.monotonic() - locked_at
        release()
    released = log_size(web)

    while_held = answered(web, start, released, since=opened)
    for path in (PERFORMANCE, MODEL_PERFORMANCE, MODEL_CURVES):
        assert overlaps(while_held, path) == [], path
        held_reads = of(while_held, path, 504)
        assert all(a.ended - a.started > STATEMENT_TIMEOUT_S - 1 for a in held_reads), of(while_held, path)
    # The others kept asking on every tick: no gap of two periods, none skipped.
    for path in (HEALTH, TRADES, MODELS):
        assert len(of(while_held, path)) >= held_s // REFRESH_S - 1, (path, held_s, of(while_held, path))
        assert max(arrival_gaps(while_held, path)) < 1.5 * REFRESH_S, (path, arrival_gaps(while_held, path))
        assert {a.status for a in of(while_held, path)} == {200}, path

    # Released: the charts answer and paint again, and keep refreshing (a new closed trade shows).
    write(engine, [record("after-release", "ETH/USDT", datetime.now(UTC) - timedelta(hours=3), 10.0)])
    page.wait_for_function(
        "document.querySelector('#totals').innerText.split(/\\s+/)[1] === '13'", timeout=WAIT_MS
    )
    page.wait_for_selector("#model-performance tr[data-performance-model]", timeout=WAIT_MS)
    assert page.locator("#model-performance").get_attribute("class") != "failed"
    wait_for(
        lambda: len(of(answered(web, released, since=opened), PERFORMANCE, 200)) >= 2,
        3 * REFRESH_S,
        "performance.json answered on two ticks after the release",
    )

    everything = answered(web, start, since=opened)
    for path in SOURCES:
        assert overlaps(everything, path) == [], path
    requests.pump()
    assert max(requests.most_out.values()) == 1, dict(requests.most_out)
    assert requests.failed == []  # the 504s answered: the page gave up on nothing
    assert only_gateway_timeouts(page.console_errors), page.console_errors


def test_a_filter_change_waits_for_the_request_out_and_asks_with_the_latest_filter(
    stack, page, journal, engine
):
    web = stack["web"]
    requests = PageRequests(page)
    opened = time.time()
    page.goto(stack["url"] + "/")
    page.wait_for_function(
        "() => document.querySelectorAll('#trades tr[data-trade-id]').length === 12", timeout=WAIT_MS
    )
    page.wait_for_function("document.querySelector('#totals').innerText.trim() !== ''", timeout=WAIT_MS)

    start = log_size(web)
    with table_locked(engine, "trade_history") as release:
        # The next tick's trades request waits for the lock.
        held = wait_for(lambda: requests.held(TRADES, 1.0), 2 * REFRESH_S, "a trades request held")
        assert "symbol" not in parse_qs(urlsplit(held.url).query)
        # Every repaint of the trades panel from now on, with the symbols of its rows.
        page.evaluate(
            """() => {
                 window.tradePaints = [];
                 const panel = document.getElementById('trades');
                 new MutationObserver(() => window.tradePaints.push(
                   [...panel.querySelectorAll('tr[data-symbol]')].map(row => row.dataset.symbol)
                 )).observe(panel, {childList: true});
               }"""
        )
        for symbol in ("BTC/USDT", "ETH/USDT"):
            page.fill("#filter-symbol", symbol)
            page.dispatch_event("#filter-symbol", "change")
        # A tick later (the health panel asked again), still nothing more for trades.
        asked = len(requests.pump().sent)
        wait_for(lambda: requests.pump().urls(HEALTH, asked), 2 * REFRESH_S, "the next tick")
        assert requests.from_on(held) == [held]
        assert requests.out_for(TRADES) == [held]
        release()  # the held answer (all symbols, an older filter) arrives, and is not painted

    page.wait_for_function(
        "() => [...document.querySelectorAll('#trades tr[data-symbol]')].map(r => r.dataset.symbol).join() "
        "=== 'ETH/USDT,ETH/USDT,ETH/USDT,ETH/USDT,ETH/USDT,ETH/USDT'",
        timeout=WAIT_MS,
    )
    # After the held one, the trades were asked only with the latest filter (never BTC/USDT).
    trades_asked = requests.pump().from_on(held)
    assert len(trades_asked) >= 2
    assert all(parse_qs(urlsplit(r.url).query) == {"symbol": ["ETH/USDT"]} for r in trades_asked[1:])
    paints = page.evaluate("window.tradePaints")
    assert paints and all(set(symbols) == {"ETH/USDT"} for symbols in paints), paints

    # The charts follow the same filter: the ETH trades' totals (five closed, one open).
    page.wait_for_function(
        "document.querySelector('#totals').innerText.split(/\\s+/)[1] === '6'", timeout=WAIT_MS
    )
    assert totals_text(page)[:12] == [
        "trades", "6", "closed", "5", "win", "rate", "80.0", "%", "total", "PnL", "105.50", "average",
    ]  # fmt: skip
    charts_asked = requests.urls(PERFORMANCE)
    assert parse_qs(urlsplit(charts_asked[-1]).query) == {"symbol": ["ETH/USDT"]}

    # The web writes its access lines a moment after the answers (web/answered.py).
    wait_for(lambda: of(answered(web, start, since=opened), TRADES), 10, "the trades requests' access lines")
    everything = answered(web, start, since=opened)
    held_answer = of(everything, TRADES)[0]
    assert held_answer.status == 200 and held_answer.ended - held_answer.started > 2, held_answer
    for path in SOURCES:
        assert overlaps(everything, path) == [], path
    assert max(requests.most_out.values()) == 1, dict(requests.most_out)
    assert page.console_errors == []


def test_a_request_without_an_answer_gives_up_and_the_panel_asks_again(stack, page, journal, engine):
    # A server that waits for the lock longer than the page does (statement timeout 60 s).
    web = WebServer({**stack["env"], "WEB_STATEMENT_TIMEOUT_S": "60"}, stack["folder"])
    try:
        web.wait_ready()
        requests = PageRequests(page)
        page.goto(web.url + "/")
        page.wait_for_selector("#model-performance tr[data-performance-model]", timeout=WAIT_MS)
        page.wait_for_function("document.querySelector('#totals').innerText.trim() !== ''", timeout=WAIT_MS)

        start = log_size(web)
        with table_locked(engine, STATS_TABLE) as release:
            locked = time.time()  # a request out before then was answered before the lock
            panel = page.locator("#model-performance")
            gave_up_text = f"no answer within {CLIENT_TIMEOUT_S} s"
            page.wait_for_function(
                "text => document.getElementById('model-performance').innerText === text",
                arg=gave_up_text,
                timeout=(2 * REFRESH_S + CLIENT_TIMEOUT_S) * 1000,
            )
            assert panel.get_attribute("class") == "failed"
            gave_up = [request for path, request in requests.pump().failed if path == MODEL_PERFORMANCE]
            assert len(gave_up) == 1
            # The next tick asks again (and that request waits too).
            again = wait_for(
                lambda: requests.held(MODEL_PERFORMANCE, 0.5),
                2 * REFRESH_S,
                "the model performance panel asking again",
            )
            assert requests.from_on(gave_up[0]) == [gave_up[0], again]
            release()

        page.wait_for_selector("#model-performance tr[data-performance-model]", timeout=WAIT_MS)
        assert panel.get_attribute("class") != "failed"
        # The web answered the request the page gave up on only after the release: the lock held
        # it past the page's 12 s.
        wait_for(
            lambda: len(of(answered(web, start, since=locked), MODEL_PERFORMANCE)) >= 2,
            WAIT_MS / 1000,
            "both answered",
        )
        # (in the order they arrived: the two answer at once, in either order)
        abandoned, asked_again = sorted(
            of(answered(web, start, since=locked), MODEL_PERFORMANCE), key=lambda a: a.started
        )[:2]
        assert abandoned.status == 200 and abandoned.ended - abandoned.started > CLIENT_TIMEOUT_S, abandoned
        assert asked_again.started > abandoned.started + CLIENT_TIMEOUT_S, (abandoned, asked_again)
        assert max(requests.most_out.values()) == 1, dict(requests.most_out)
        assert page.console_errors == []
    finally:
        web.stop()
