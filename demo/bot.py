"""A demo trading bot to watch: `make demo`, or `python -m demo.bot --help`.

It does what a real bot does with this project and nothing more: it asks the served
models for predictions over HTTP (`POST /api/v1/ml/predict`) and journals the trades it
opens and closes with `tasks.client.TradeJournal`. Prices are a synthetic random walk,
and the trades are worth nothing: they give Flower and the dashboard something to show.
With `--compare-every`, it also prints a model's shadow comparison now and then
(`GET /api/v1/ml/models/<name>/compare`): `make demo` sets a retrained model as the shadow
challenger of xgboost_model.json, and the line shows its verdict forming.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click

from tasks.client import TradeJournal

DEFAULT_MODELS = ("xgboost_model.json", "lightgbm_model.txt")
FEATURES = ("return_1", "return_5", "volatility", "rsi", "volume_z")
FEE_RATE = 0.001  # per side, on the notional
TICK_VOLATILITY = 0.002  # standard deviation of one tick's log return
START_PRICES = {"BTC/USDT": 42_000.0, "ETH/USDT": 2_300.0, "SOL/USDT": 95.0}
HISTORY_TICKS = 20  # the returns the features read; a market starts with this many behind it
VERDICT_MIN_TRADES = 30  # the scored trades a comparison's verdict needs (db.compare.MIN_TRADES)


class PredictionFailed(Exception):
    pass


class ApiCallFailed(Exception):
    """A call the web did not answer with success; `status` is its HTTP status, if it answered."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class WebApi:
    """The project's HTTP API, via the standard library, with the token when one is set."""

    def __init__(self, base_url: str, token: str | None, timeout_s: float = 15.0):
        self.base_url = base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout_s = timeout_s

    def model_url(self, name: str, route: str) -> str:
        return f"{self.base_url}/api/v1/ml/models/{urllib.parse.quote(name, safe='')}/{route}"

    def call(self, method: str, url: str, body: Any = None, timeout_s: float | None = None) -> Any:
        """The JSON answer; ApiCallFailed with the API's error message, or why nothing answered."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers=self._headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout_s or self._timeout_s) as response:  # noqa: S310
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise ApiCallFailed(f"HTTP {exc.code} {_error_message(exc)}", exc.code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as exc:
            raise ApiCallFailed(str(getattr(exc, "reason", exc))) from None


class PredictionApi(WebApi):
    """What the bot asks: predictions (`POST /api/v1/ml/predict`) and a shadow's comparison."""

    def probability_up(self, model_name: str, features: list[float]) -> tuple[float, str | None]:
        """The model's probability that the price rises, and the prediction's id."""
        body = {"model_name": model_name, "features": [features]}
        try:
            payload = self.call("POST", f"{self.base_url}/api/v1/ml/predict", body)
        except ApiCallFailed as exc:
            raise PredictionFailed(f"{model_name}: {exc}") from None
        return float(_flatten(payload["predictions"])[0]), payload.get("prediction_id")

    def comparison(self, model_name: str) -> dict[str, Any]:
        """The shadow comparison of `model_name`'s challenger (`GET .../models/<name>/compare`)."""
        try:
            return self.call(
                "GET", self.model_url(model_name, "compare"), timeout_s=min(self._timeout_s, 10.0)
            )
        except ApiCallFailed as exc:
            raise PredictionFailed(str(exc)) from None


def _flatten(value: Any) -> list[Any]:
    """The numbers of a nested list, in order (a model may answer [p] or [[p]])."""
    if isinstance(value, list):
        return [number for item in value for number in _flatten(item)]
    return [value]


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return json.load(exc)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return str(exc.reason)


def comparison_line(answer: dict[str, Any]) -> str:
    """One line of a comparison's answer: what a user watching the verdict form reads."""

    def brier(side: str) -> str:
        value = (answer.get(side) or {}).get("brier")
        return "-" if value is None else f"{value:.4f}"

    agreement = answer.get("agreement")
    n = answer.get("n", 0)
    needs = f", the verdict needs {VERDICT_MIN_TRADES}" if n < VERDICT_MIN_TRADES else ""
    return (
        f"{_now()} compare   {answer.get('model_name')}: {answer.get('pairs', 0)} pairs"
        f" (agree {'-' if agreement is None else f'{agreement:.0%}'}), {answer.get('trades', 0)} trades,"
        f" brier champion {brier('champion')} vs challenger {brier('challenger')},"
        f" verdict {answer.get('verdict')} (n {n}{needs})"
    )


class Comparisons:
    """Prints `model_name`'s shadow comparison every `every_s` seconds (0: never)."""

    def __init__(self, api: PredictionApi, model_name: str, every_s: float, echo=click.echo):
        self.api = api
        self.model_name = model_name
        self.every_s = every_s
        self.echo = echo
        self._next = time.monotonic() + every_s

    def due(self) -> None:
        if self.every_s and time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every_s
            self.show()

    def show(self) -> None:
        try:
            self.echo(comparison_line(self.api.comparison(self.model_name)))
        except PredictionFailed as exc:
            self.echo(f"{_now()} compare   {self.model_name}: no comparison ({exc})")


@dataclass
class Market:
    """A synthetic price series and the five features the demo models read (models/training.py)."""

    symbol: str
    price: float
    rng: random.Random
    returns: deque[float] = field(default_factory=lambda: deque(maxlen=20))
    drift: float = 0.0

    def step(self) -> None:
        if self.rng.random() < 0.05:  # now and then the regime changes
            self.drift = self.rng.gauss(0, TICK_VOLATILITY / 2)
        change = self.rng.gauss(self.drift, TICK_VOLATILITY)
        self.returns.append(change)
        self.price *= math.exp(change)

    def ready(self) -> bool:
        return len(self.returns) >= 14

    def features(self) -> list[float]:
        """return_1, return_5, volatility, rsi, volume_z, scaled to the unit variance the models saw."""
        recent = list(self.returns)
        return_1 = recent[-1] / TICK_VOLATILITY
        return_5 = sum(recent[-5:]) / (TICK_VOLATILITY * math.sqrt(5))
        mean = sum(recent) / len(recent)
        volatility = math.sqrt(sum((r - mean) ** 2 for r in recent) / len(recent))
        gains = sum(r for r in recent[-14:] if r > 0)
        losses = -sum(r for r in recent[-14:] if r < 0)
        rsi = 100.0 if losses == 0 else 100 - 100 / (1 + gains / losses)
        return [
            round(return_1, 6),
            round(return_5, 6),
            round((volatility - TICK_VOLATILITY) / (TICK_VOLATILITY / 3), 6),
            round((rsi - 50) / 15, 6),
            round(self.rng.gauss(0, 1), 6),
        ]

    def regime(self) -> str:
        if abs(self.drift) < TICK_VOLATILITY / 8:
            return "ranging"
        return "trending_up" if self.drift > 0 else "trending_down"


@dataclass
class Position:
    trade_id: str
    side: str
    amount: float
    entry_price: float
    ticks: int = 0


class DemoBot:
    def __init__(
        self,
        api: PredictionApi,
        journal: TradeJournal,
        symbols: list[str],
        models: list[str],
        *,
        seed: int,
        notional: float,
        hold_ticks: int,
        max_trades: int = 0,
        echo=click.echo,
    ):
        rng = random.Random(seed)  # noqa: S311 - a demo price series, not a secret
        self.markets = {
            symbol: Market(symbol, START_PRICES.get(symbol, 100.0), random.Random(rng.random()))  # noqa: S311
            for symbol in symbols
        }
        # A history behind every market, so the first tick already decides (the bot was
        # silent for its first 14 ticks while the features filled).
        for market in self.markets.values():
            for _ in range(HISTORY_TICKS):
                market.step()
        self.api = api
        self.journal = journal
        self.models = models
        self.notional = notional
        self.hold_ticks = hold_ticks
        self.max_trades = max_trades  # 0: no limit
        self.positions: dict[str, Position] = {}
        self.opened = 0
        self.closed = 0
        self.total_pnl = 0.0
        self.echo = echo

    def done(self) -> bool:
        """Every one of max_trades trades opened and closed."""
        return bool(self.max_trades) and self.closed >= self.max_trades

    def run(self, rate: float, duration: float = 0, every_tick=lambda: None) -> None:
        """Tick `rate` times a second until done(), `duration` seconds or Ctrl-C; then close
        the positions still open."""
        started = time.monotonic()
        try:
            while True:
                self.tick()
                if self.done() or (duration and time.monotonic() - started >= duration):
                    break
                every_tick()
                time.sleep(1 / rate)
        except KeyboardInterrupt:
            self.echo("stopping")
        finally:
            self.close_all("bot stopping")

    def tick(self) -> None:
        for market in self.markets.values():
            market.step()
            if market.ready():
                self._decide(market)

    def _decide(self, market: Market) -> None:
        if market.symbol not in self.positions and self.max_trades and self.opened >= self.max_trades:
            # All max_trades are opened: no more. (The loop stopped at the Nth close, and
            # another symbol had opened trade N + 1 meanwhile: --trades 10 opened 11.)
            return
        features = market.features()
        try:
            answers = {name: self.api.probability_up(name, features) for name in self.models}
        except PredictionFailed as exc:
            self.echo(f"{_now()} {market.symbol:<9} no prediction ({exc}); skipping this tick")
            return
        votes = {name: p for name, (p, _) in answers.items()}
        p_up = sum(votes.values()) / len(votes)
        position = self.positions.get(market.symbol)
        if position is None:
            if p_up >= 0.6 or p_up <= 0.4:
                self._open(market, "buy" if p_up >= 0.6 else "sell", p_up, answers, features)
            return
        position.ticks += 1
        against = (position.side == "buy" and p_up < 0.4) or (position.side == "sell" and p_up > 0.6)
        if against or position.ticks >= self.hold_ticks:
            self._close(market, position, "signal reversed" if against else "held long enough")

    def _open(
        self,
        market: Market,
        side: str,
        p_up: float,
        answers: dict[str, tuple[float, str | None]],
        features: list[float],
    ) -> None:
        amount = round(self.notional / market.price, 6)
        votes = {name: p for name, (p, _) in answers.items()}
        # Lineage: the trade is the prediction of the model most sure of its side; the
        # journal looks that prediction's model version up in the prediction log.
        lead = max(answers, key=lambda name: votes[name] if side == "buy" else -votes[name])
        sent = self.journal.record_trade(
            {
                "symbol": market.symbol,
                "side": side,
                "order_type": "market",
                "amount": amount,
                "entry_price": round(market.price, 4),
                "market_regime": market.regime(),
                "bull_confidence": round(p_up, 4),
                "bear_confidence": round(1 - p_up, 4),
                "decision_confidence": round(abs(p_up - 0.5) * 2, 4),
                "agent_votes": {name: round(p, 4) for name, p in votes.items()},
                "signals": dict(zip(FEATURES, features, strict=True)),
                "prediction_id": answers[lead][1],
            }
        )
        self.positions[market.symbol] = Position(sent.trade_id, side, amount, round(market.price, 4))
        self.opened += 1
        note = " (broker down: kept in the outbox)" if sent.spooled else ""
        self.echo(
            f"{_now()} {market.symbol:<9} open  {side:<4} {amount:.6f} @ {market.price:,.2f}"
            f"  p_up {p_up:.2f}  trade {sent.trade_id}{note}"
        )

    def close_all(self, reason: str) -> None:
        for symbol, position in list(self.positions.items()):
            self._close(self.markets[symbol], position, reason)

    def _close(self, market: Market, position: Position, reason: str) -> None:
        exit_price = round(market.price, 4)
        direction = 1 if position.side == "buy" else -1
        gross = (exit_price - position.entry_price) * position.amount * direction
        fees = FEE_RATE * position.amount * (position.entry_price + exit_price)
        pnl = gross - fees
        self.journal.update_trade(
            position.trade_id,
            closed=True,
            exit_price=exit_price,
            realized_pnl=round(pnl, 6),
            pnl_pct=round(100 * pnl / (position.entry_price * position.amount), 6),
            fees=round(fees, 6),
            won=pnl > 0,
            close_timestamp=datetime.now(UTC),
        )
        del self.positions[market.symbol]
        self.closed += 1
        self.total_pnl += pnl
        self.echo(
            f"{_now()} {market.symbol:<9} close {position.side:<4} @ {exit_price:,.2f}  pnl {pnl:+.2f}"
            f"  ({reason})  trade {position.trade_id}"
        )


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


@click.command()
@click.option("--url", default="http://127.0.0.1:5173", show_default=True, help="The web API's base URL.")
@click.option("--token", envvar="API_TOKEN", default=None, help="Bearer token (default: $API_TOKEN).")
@click.option(
    "--symbols", default="BTC/USDT,ETH/USDT", show_default=True, help="Comma-separated symbols to trade."
)
@click.option(
    "--models",
    default=",".join(DEFAULT_MODELS),
    show_default=True,
    help="Comma-separated models that vote (5 features each, as the demo models).",
)
@click.option("--rate", type=click.FloatRange(0.01, 100), default=1.0, help="Ticks per second (1).")
@click.option(
    "--trades",
    type=click.IntRange(min=0),
    default=0,
    help="Open this many trades, stop once they are closed.",
)
@click.option("--duration", type=click.FloatRange(min=0), default=0, help="Stop after this many seconds.")
@click.option("--hold", type=click.IntRange(min=1), default=5, help="Most ticks a trade is held (5).")
@click.option("--notional", type=click.FloatRange(min=1), default=1000.0, help="Quote per trade (1000).")
@click.option("--seed", type=int, default=None, help="Seed of the price series (default: random).")
@click.option(
    "--compare-every",
    type=click.FloatRange(min=0),
    default=0,
    help="Print the shadow comparison of --compare-model every this many seconds, and at the end "
    "(0: never; `make demo`: 30).",
)
@click.option(
    "--compare-model",
    default=DEFAULT_MODELS[0],
    show_default=True,
    help="The model whose shadow challenger --compare-every compares.",
)
def main(
    url, token, symbols, models, rate, trades, duration, hold, notional, seed, compare_every, compare_model
):
    """Trade a synthetic price series on the demo models' predictions and journal every trade.

    Runs until Ctrl-C, --trades trades opened and closed or --duration seconds; open
    positions are closed before it exits.
    """
    symbols = [symbol.strip() for symbol in symbols.split(",") if symbol.strip()]
    models = [name.strip() for name in models.split(",") if name.strip()]
    if not symbols or not models:
        raise click.BadParameter("give at least one symbol and one model")
    api = PredictionApi(url, token or None)
    comparisons = Comparisons(api, compare_model, compare_every)
    with TradeJournal() as journal:
        bot = DemoBot(
            api,
            journal,
            symbols,
            models,
            seed=seed if seed is not None else random.SystemRandom().randrange(2**32),
            notional=notional,
            hold_ticks=hold,
            max_trades=trades,
        )
        click.echo(f"demo bot: {', '.join(symbols)} on {', '.join(models)} via {url}, {rate:g} ticks/s")
        if compare_every:
            click.echo(f"demo bot: the shadow comparison of {compare_model} every {compare_every:g} s")
        try:
            bot.run(rate, duration, comparisons.due)
        finally:
            if not journal.flush():
                click.echo(f"{journal.waiting} journal entries wait in the outbox for the broker")
    click.echo(f"demo bot: opened {bot.opened}, closed {bot.closed}, realized PnL {bot.total_pnl:+.2f}")
    if compare_every:
        with contextlib.suppress(KeyboardInterrupt):
            comparisons.show()


if __name__ == "__main__":
    main()
