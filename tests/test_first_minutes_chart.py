"""The dashboard's "Realized PnL per day" chart in Debian's chromium (Playwright): its x axis
spans exactly the days of its bars, each bar stands in the middle of its day, labelled with
the date under it (issue 28: a single day's bar had an axis of about 36 hours).

The web server alone serves the page and performance.json (they read the journal, seeded
through the repository); the chart's element carries what its canvas shows on the axis
(`data-x-min`, `data-x-max`, `data-x-labels`), and the bars are found in its pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from playwright.sync_api import Browser, Page
from sqlalchemy.orm import Session

from db import RecordEntry, TradeRecord, TradeRepository

WAIT_MS = 30_000
DAY_S = 86_400
BAR_RGB = (13, 148, 136)  # #0d9488, the bars' colour in dashboard.js


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.page_errors = []
    page.on("pageerror", lambda error: page.page_errors.append(str(error)))
    yield page
    context.close()


def closed_trade(trade_id: str, opened: datetime, pnl: float) -> TradeRecord:
    return TradeRecord.from_dict(
        {
            "trade_id": trade_id,
            "symbol": "BTC/USDT",
            "side": "buy",
            "amount": 0.5,
            "entry_price": 100.0,
            "timestamp": opened,
            "closed": True,
            "exit_price": 100.0 + 2 * pnl,
            "realized_pnl": pnl,
            "fees": 0.1,
            "close_timestamp": opened + timedelta(hours=1),
        }
    )


def journal(engine, trades: list[TradeRecord]) -> None:
    with Session(engine) as session:
        TradeRepository(session).write([RecordEntry(trade) for trade in trades])


def midnight(day: datetime) -> float:
    return day.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def drawn_axis(page: Page) -> dict:
    """The daily chart's axis once drawn: its bounds (Unix seconds) and labels."""
    chart = page.locator("#daily-chart")
    page.wait_for_function(
        "document.getElementById('daily-chart').dataset.xLabels !== undefined", timeout=WAIT_MS
    )
    return {
        "min": float(chart.get_attribute("data-x-min")),
        "max": float(chart.get_attribute("data-x-max")),
        "labels": chart.get_attribute("data-x-labels").split(),
    }


def bars(page: Page) -> dict:
    """The bars in the chart's canvas (runs of bar-coloured columns) and the plot area, in
    CSS pixels from the canvas' left edge."""
    return page.locator("#daily-chart").evaluate(
        """(chart, rgb) => {
             const canvas = chart.querySelector('canvas');
             const scale = canvas.width / canvas.clientWidth;
             const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
             const height = new Array(canvas.width).fill(0);  // bar-coloured pixels per column
             for (let i = 0; i < pixels.length; i += 4) {
               if (pixels[i] === rgb[0] && pixels[i + 1] === rgb[1] && pixels[i + 2] === rgb[2])
                 height[(i / 4) % canvas.width] += 1;
             }
             const runs = [];  // [first column, last column, the height in its middle]
             for (let x = 0; x < canvas.width; x++) {
               if (height[x] && (x === 0 || !height[x - 1])) runs.push([x, x]);
               if (height[x]) runs[runs.length - 1][1] = x;
             }
             const over = chart.querySelector('.u-over').getBoundingClientRect();
             const left = canvas.getBoundingClientRect().left;
             return {
               bars: runs.map(([a, b]) => [a / scale, (b + 1) / scale]),
               heights: runs.map(([a, b]) => height[Math.round((a + b) / 2)] / scale),
               plot: [over.left - left, over.right - left],
             };
           }""",
        list(BAR_RGB),
    )


def day_of(plot: list[float], axis: dict, moment: float) -> float:
    """Where `moment` (Unix seconds) falls on the plot, in CSS pixels."""
    share = (moment - axis["min"]) / (axis["max"] - axis["min"])
    return plot[0] + share * (plot[1] - plot[0])


def test_one_days_bar_has_an_axis_of_that_day(web, engine, browser, page):
    server = web()
    day = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    journal(engine, [closed_trade("one-a", day, 12.0), closed_trade("one-b", day + timedelta(hours=5), 3.0)])

    page.goto(server.url + "/")
    axis = drawn_axis(page)
    assert (axis["min"], axis["max"]) == (midnight(day), midnight(day) + DAY_S)
    assert axis["labels"] == ["2026-11-20"]

    drawn = bars(page)
    assert len(drawn["bars"]) == 1, drawn
    (left, right), (plot_left, plot_right) = drawn["bars"][0], drawn["plot"]
    width = plot_right - plot_left
    # The bar stands in the middle of its day, 60 % of it wide (dashboard.js: size 0.6).
    assert abs((left + right) / 2 - (plot_left + plot_right) / 2) <= 2, drawn
    assert abs((right - left) - 0.6 * width) <= 3, drawn
    assert page.page_errors == []


def test_several_days_bars_span_their_days_and_a_day_without_trades_stays_empty(web, engine, browser, page):
    server = web()
    first = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    days = [first, first + timedelta(days=1), first + timedelta(days=3)]  # nothing on Nov 4
    journal(engine, [closed_trade(f"day-{index}", day, 5.0 + index) for index, day in enumerate(days)])

    page.goto(server.url + "/")
    axis = drawn_axis(page)
    assert (axis["min"], axis["max"]) == (midnight(days[0]), midnight(days[-1]) + DAY_S)
    assert axis["labels"] == ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]

    drawn = bars(page)
    assert len(drawn["bars"]) == 3, drawn
    day_px = (drawn["plot"][1] - drawn["plot"][0]) / 4
    for (left, right), day in zip(drawn["bars"], days, strict=True):
        noon = day_of(drawn["plot"], axis, midnight(day) + DAY_S / 2)
        assert abs((left + right) / 2 - noon) <= 2, (drawn, day)
        assert abs((right - left) - 0.6 * day_px) <= 3, (drawn, day)
    # The bars grow from zero: their heights go as their PnL (5, 6, 7).
    heights = drawn["heights"]
    assert heights[0] / heights[2] == pytest.approx(5 / 7, abs=0.03), drawn
    assert heights[1] / heights[2] == pytest.approx(6 / 7, abs=0.03), drawn
    assert page.page_errors == []


def test_many_days_label_every_kth_day_that_fits_and_keep_every_bar(web, engine, browser, page):
    server = web()
    first = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)
    days = [first + timedelta(days=index) for index in range(40)]
    journal(engine, [closed_trade(f"many-{index}", day, 1.0 + index % 3) for index, day in enumerate(days)])

    page.goto(server.url + "/")
    axis = drawn_axis(page)
    assert (axis["min"], axis["max"]) == (midnight(days[0]), midnight(days[-1]) + DAY_S)
    drawn = bars(page)
    assert len(drawn["bars"]) == 40, drawn
    # As many dates as fit (90 px each, dashboard.js), every k-th day from the first.
    labels = [datetime.fromisoformat(label).replace(tzinfo=UTC) for label in axis["labels"]]
    steps = {(later - earlier).days for earlier, later in pairwise(labels)}
    assert labels[0] == days[0].replace(hour=0) and len(steps) == 1, axis
    assert steps.pop() > 1 and len(labels) * 90 <= drawn["plot"][1] - drawn["plot"][0], axis
    assert page.page_errors == []
