"""A bot that knows nothing of this project but the task names: it only calls `send_task`.

    python send_task_bot.py BROKER_URL PREFIX COUNT CLOSE [--repeat N]

Records COUNT trades (ids PREFIX-0 ...), closes the first CLOSE of them, and sends the
records REPEAT times in all (duplicates on purpose).
"""

import argparse
from datetime import UTC, datetime, timedelta

from celery import Celery


def trade(prefix: str, number: int) -> dict:
    opened = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=number)
    return {
        "trade_id": f"{prefix}-{number}",
        "symbol": ("BTC/USDT", "ETH/USDT", "SOL/USDT")[number % 3],
        "timestamp": opened.isoformat(),
        "side": "buy" if number % 2 else "sell",
        "order_type": "market",
        "amount": 0.01 * (1 + number % 7),
        "entry_price": 40_000.0 + number,
        "market_regime": "bull",
        "bull_confidence": 0.7,
        "bear_confidence": 0.2,
        "decision_confidence": 0.65,
        "agent_votes": {"momentum": "buy", "mean_reversion": "hold"},
        "signals": {"rsi": 31.5, "macd": -0.2},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("broker_url")
    parser.add_argument("prefix")
    parser.add_argument("count", type=int)
    parser.add_argument("close", type=int)
    parser.add_argument("--repeat", type=int, default=1)
    options = parser.parse_args()

    app = Celery(broker=options.broker_url)
    app.conf.task_serializer = "json"
    for _ in range(options.repeat):
        for number in range(options.count):
            app.send_task("trades.record", args=[trade(options.prefix, number)], queue="trades")
    for number in range(options.close):
        pnl = 12.5 if number % 2 else -7.25
        updates = {"closed": True, "exit_price": 40_100.0 + number, "realized_pnl": pnl, "fees": 0.4}
        app.send_task("trades.update", args=[f"{options.prefix}-{number}", updates], queue="trades")
    app.close()


if __name__ == "__main__":
    main()
