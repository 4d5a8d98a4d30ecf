"""Seeded logs and trades for db.compare's tests, and every figure of a comparison computed
again with plain loops (the independent computation)."""

from __future__ import annotations

import hashlib
import json
import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import zip_longest

import numpy as np
from sqlalchemy import text

from db.compare import MIN_TRADES, RESAMPLES

MODEL = "xgb_model.json"
CHAMPION = "c0c0c0c0c0c0c0c0"
OLD_CHAMPION = "b0b0b0b0b0b0b0b0"
CHALLENGER = "a1a1a1a1a1a1a1a1"
OTHER_CHALLENGER = "d2d2d2d2d2d2d2d2"
SINCE = datetime(2026, 11, 1, tzinfo=UTC)
UNTIL = datetime(2026, 11, 11, tzinfo=UTC)
SHADOW_LAG = timedelta(milliseconds=4)
TOLERANCE = 1e-9


@dataclass
class Logged:
    prediction_id: str
    created_at: datetime
    model_name: str
    model_version: str
    values: list[float | None]
    role: str | None = None
    shadow_of: str | None = None
    champion: Logged | None = None  # a shadow's, as the worker that ran both knew it


@dataclass
class Trade:
    trade_id: str
    opened: datetime
    prediction_id: str | None
    closed: bool
    won: bool | None
    pnl: float | None


@dataclass
class Journal:
    log: list[Logged] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)

    def predict(self, rng: random.Random, at: datetime, version: str, values, **more) -> Logged:
        entry = Logged(
            str(uuid.UUID(int=rng.getrandbits(128))), at, more.pop("model", MODEL), version, values
        )
        entry.role = more.get("role", "champion")
        entry.shadow_of = more.get("shadow_of")
        self.log.append(entry)
        return entry

    def shadow(self, rng: random.Random, of: Logged, version: str, values, lag=SHADOW_LAG) -> Logged:
        entry = self.predict(
            rng,
            of.created_at + lag,
            version,
            values,
            model=of.model_name,
            role="shadow",
            shadow_of=of.prediction_id,
        )
        entry.champion = of
        return entry

    def trade(self, rng: random.Random, prediction: Logged | None, closed=True, won=None, pnl=None) -> Trade:
        at = (prediction.created_at if prediction else SINCE) + timedelta(seconds=1 + rng.random())
        entry = Trade(
            uuid.UUID(int=rng.getrandbits(128)).hex,
            at,
            prediction and prediction.prediction_id,
            closed,
            won,
            pnl,
        )
        self.trades.append(entry)
        return entry

    def write(self, engine) -> None:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "TRUNCATE trade_history, trade_pending_updates, prediction_log, prediction_counts,"
                    " shadow_experiments, shadow_pair_sums, shadow_links"
                )
            )
            if self.log:
                connection.execute(
                    text(
                        "INSERT INTO prediction_log (prediction_id, created_at, model_name, model_version,"
                        " model_type, rows, predictions, latency_ms, role, shadow_of)"
                        " VALUES (:prediction_id, :created_at, :model_name, :model_version, 'xgboost', :rows,"
                        " CAST(:predictions AS jsonb), 1.0, :role, :shadow_of)"
                    ),
                    [
                        {
                            "prediction_id": entry.prediction_id,
                            "created_at": entry.created_at,
                            "model_name": entry.model_name,
                            "model_version": entry.model_version,
                            "rows": len(entry.values),
                            "predictions": json.dumps(entry.values),
                            "role": entry.role,
                            "shadow_of": entry.shadow_of,
                        }
                        for entry in self.log
                    ],
                )
            self.write_trades(connection, self.trades)

    @staticmethod
    def write_trades(connection, trades: list[Trade]) -> None:
        if trades:
            connection.execute(
                text(
                    'INSERT INTO trade_history (trade_id, "timestamp", symbol, side, order_type, amount,'
                    " entry_price, realized_pnl, won, closed, close_timestamp, prediction_id)"
                    " VALUES (:trade_id, :opened, 'BTC/USDT', 'buy', 'market', 1, 100, :pnl, :won,"
                    " :closed, :close_timestamp, :prediction_id)"
                ),
                [
                    {
                        "trade_id": trade.trade_id,
                        "opened": trade.opened,
                        "pnl": trade.pnl,
                        "won": trade.won,
                        "closed": trade.closed,
                        "close_timestamp": trade.opened + timedelta(minutes=5) if trade.closed else None,
                        "prediction_id": trade.prediction_id,
                    }
                    for trade in trades
                ],
            )


# -- the independent computation ------------------------------------------------------------------


def expected(journal: Journal, challenger: str, since, until, threshold, champion=None):
    """Every figure of compare(), with loops over the Python-side rows."""
    pairs = []  # (champion prediction_id, shadow created_at, row index, champion value, challenger value)
    for shadow in journal.log:
        if not (
            shadow.role == "shadow"
            and shadow.model_name == MODEL
            and shadow.model_version == challenger
            and shadow.created_at >= since
            and (until is None or shadow.created_at < until)
        ):
            continue
        candidates = [
            entry
            for entry in journal.log
            if entry.prediction_id == shadow.shadow_of
            and entry.model_name == shadow.model_name
            and entry.role != "shadow"
            and shadow.created_at - timedelta(days=1) <= entry.created_at <= shadow.created_at
            and (champion is None or entry.model_version == champion)
        ]
        for ran_on in candidates:  # one, unless a task id was reused within MAX_SHADOW_LAG
            for index, (mine, theirs) in enumerate(zip_longest(ran_on.values, shadow.values)):
                if mine is not None and theirs is not None:
                    pairs.append(
                        (ran_on.prediction_id, (shadow.created_at, shadow.prediction_id), index, mine, theirs)
                    )

    def positive(value):
        return value >= threshold

    figures = {"pairs": len(pairs)}
    xs = [pair[3] for pair in pairs]
    ys = [pair[4] for pair in pairs]
    figures["agreement"] = (
        sum(1 for x, y in zip(xs, ys, strict=True) if positive(x) == positive(y)) / len(pairs)
        if pairs
        else None
    )
    figures["mean_abs_diff"] = (
        sum(abs(x - y) for x, y in zip(xs, ys, strict=True)) / len(pairs) if pairs else None
    )
    figures["correlation"] = pearson(xs, ys)

    first = {}  # champion prediction_id -> (x, y) of its first row, from its first shadow (ties: by id)
    for prediction_id, _, index, x, y in sorted(pairs, key=lambda pair: pair[1]):
        if index == 0 and prediction_id not in first:
            first[prediction_id] = (x, y)
    traded = [
        (trade, *first[trade.prediction_id])
        for trade in sorted(journal.trades, key=lambda trade: trade.trade_id)
        if trade.closed and trade.prediction_id in first
    ]
    figures["trades"] = len(traded)
    scored = [(trade.won, x, y) for trade, x, y in traded if trade.won is not None]
    probabilities = {
        "champion": bool(pairs) and all(0 <= x <= 1 for x in xs),
        "challenger": bool(pairs) and all(0 <= y <= 1 for y in ys),
    }
    for side in ("champion", "challenger"):
        values = [(won, x if side == "champion" else y) for won, x, y in scored]
        right = sum(1 for won, value in values if positive(value) == won)
        figures[side] = {
            "model_version": champion if side == "champion" else challenger,
            "accuracy": right / len(values) if values else None,
            "brier": None,
            "log_loss": None,
        }
        if probabilities[side] and values:
            figures[side]["brier"] = sum((value - won) ** 2 for won, value in values) / len(values)
            figures[side]["log_loss"] = -sum(log_likelihood(won, value) for won, value in values) / len(
                values
            )
    taken = [trade.pnl for trade, x, y in traded if trade.pnl is not None and positive(x) == positive(y)]
    declined = [trade.pnl for trade, x, y in traded if trade.pnl is not None and positive(x) != positive(y)]
    figures.update(taken=len(taken), declined=len(declined), pnl_taken=sum(taken), pnl_declined=sum(declined))
    both = probabilities["champion"] and probabilities["challenger"]
    diffs = [(y - won) ** 2 - (x - won) ** 2 for won, x, y in scored]
    figures["n"] = len(scored) if both else 0
    figures["brier_diff"] = sum(diffs) / len(diffs) if both and scored else None
    figures["brier_diff_ci"] = None
    if both and len(scored) >= MIN_TRADES:
        ids = [trade.trade_id for trade, _, _ in traded if trade.won is not None]
        weights = [poisson_weights(trade_id) for trade_id in ids]
        means = []
        for resample in range(RESAMPLES):
            total = sum(weight[resample] for weight in weights)
            if total:
                means.append(sum(w[resample] * d for w, d in zip(weights, diffs, strict=True)) / total)
        figures["brier_diff_ci"] = [float(bound) for bound in np.percentile(means, [2.5, 97.5])]
    return figures


def poisson_weights(trade_id: str) -> list[int]:
    """A trade's weight in each resample, as db.compare.bootstrap defines it: PCG64's stream
    seeded by the trade id's hash, each draw turned into Poisson(1) by walking its CDF."""
    key = int.from_bytes(hashlib.blake2b(trade_id.encode(), digest_size=8).digest(), "big")
    weights = []
    for raw in np.random.PCG64([0x5AD0, key]).random_raw(RESAMPLES):
        uniform = int(raw >> np.uint64(11)) / 2**53
        draw, term = 0, math.exp(-1)
        below = term
        while uniform >= below:
            draw += 1
            term /= draw
            below += term
        weights.append(draw)
    return weights


def pearson(xs, ys):
    n = len(xs)
    if n < 2:
        return None
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mean_x) ** 2 for x in xs)
    syy = sum((y - mean_y) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def log_likelihood(won: bool, value: float) -> float:
    clipped = min(max(value, 1e-15), 1 - 1e-15)
    return math.log(clipped) if won else math.log(1 - clipped)


def assert_figures(answer: dict, figures: dict) -> None:
    for name, value in figures.items():
        assert_close(answer[name], value, name)


def assert_close(got, want, name: str) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict), name
        for key, value in want.items():
            assert_close(got[key], value, f"{name}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (name, got, want)
        for index, (mine, theirs) in enumerate(zip(got, want, strict=True)):
            assert_close(mine, theirs, f"{name}[{index}]")
    elif want is None or isinstance(want, str | bool):
        assert got == want, (name, got, want)
    else:
        assert got is not None and abs(got - want) <= TOLERANCE * max(1.0, abs(want)), (name, got, want)


# -- the journals ---------------------------------------------------------------------------------


def noisy(rng: random.Random, value: float | None, spread: float) -> float | None:
    if value is None or rng.random() < 0.04:
        return None
    return round(min(1.0, max(0.0, value + rng.gauss(0, spread))), 6)


def mixed_journal(seed: int = 11, worker_like: bool = False) -> Journal:
    """A few hundred shadow pairs with all that must be left out around them. `worker_like`:
    without the shadows no worker logs (of no logged champion, or a day after it)."""
    rng = random.Random(seed)
    journal = Journal()
    span = (UNTIL - SINCE).total_seconds()
    champions = []
    for _ in range(320):
        at = SINCE + timedelta(seconds=rng.uniform(0, span - 1))
        rows = 2 if rng.random() < 0.3 else 1
        values = [None if rng.random() < 0.04 else round(rng.random(), 6) for _ in range(rows)]
        version = OLD_CHAMPION if rng.random() < 0.1 else CHAMPION
        role = None if rng.random() < 0.1 else "champion"  # logged before releases had roles
        entry = journal.predict(rng, at, version, values, role=role)
        champions.append(entry)
        if rng.random() < 0.92:
            journal.shadow(rng, entry, CHALLENGER, [noisy(rng, value, 0.2) for value in values])
        if rng.random() < 0.3:  # another challenger's shadows: never read
            journal.shadow(rng, entry, OTHER_CHALLENGER, [round(rng.random(), 6) for _ in values])
    # Shadowed twice by the challenger: both pairs count, its trades once.
    for entry in champions[:3]:
        journal.shadow(
            rng, entry, CHALLENGER, [round(rng.random(), 6) for _ in entry.values], lag=SHADOW_LAG * 3
        )
    # A shadow whose output has a row fewer, and one with a row more than its champion.
    two_rows = next(entry for entry in champions if len(entry.values) == 2)
    journal.shadow(rng, two_rows, CHALLENGER, [0.25])
    journal.shadow(rng, champions[5], CHALLENGER, [*champions[5].values, 0.5])
    # Around the window: at `since` exactly (in, its champion before), at `until` (out), before.
    edge = journal.predict(rng, SINCE - SHADOW_LAG, CHAMPION, [0.81])
    journal.shadow(rng, edge, CHALLENGER, [0.12])
    late = journal.predict(rng, UNTIL - SHADOW_LAG, CHAMPION, [0.6])
    journal.shadow(rng, late, CHALLENGER, [0.4])
    early = journal.predict(rng, SINCE - timedelta(hours=3), CHAMPION, [0.7])
    journal.shadow(rng, early, CHALLENGER, [0.2])
    foreign = journal.predict(rng, SINCE + timedelta(hours=5), CHAMPION, [0.3], model="lgbm_model.txt")
    journal.shadow(rng, foreign, CHALLENGER, [0.9])
    stale = journal.predict(rng, SINCE + timedelta(days=1), CHAMPION, [0.9])
    if not worker_like:
        # A shadow logged more than MAX_SHADOW_LAG after its champion: not a pair.
        journal.shadow(rng, stale, CHALLENGER, [0.1], lag=timedelta(days=1, seconds=1))
        # A shadow of no logged champion.
        orphan = Logged(
            "no-such-" + uuid.UUID(int=rng.getrandbits(128)).hex[:8], SINCE, MODEL, CHAMPION, [0.5]
        )
        journal.shadow(rng, orphan, CHALLENGER, [0.5])
    # Trades: several per prediction, open ones, unknown outcomes, no PnL, no prediction.
    linked = [*champions, edge, late, early, stale, foreign]
    for entry in linked:
        for _ in range(rng.choice((0, 1, 1, 1, 2))):
            kind = rng.random()
            if kind < 0.15:
                journal.trade(rng, entry, closed=False)
            elif kind < 0.2:
                journal.trade(rng, entry, won=None, pnl=None)  # closed without an outcome
            elif kind < 0.25:
                journal.trade(rng, entry, won=rng.random() < 0.5, pnl=None)
            else:
                pnl = round(rng.gauss(0, 20), 2)
                journal.trade(rng, entry, won=pnl > 0, pnl=pnl)
    for _ in range(20):
        pnl = round(rng.gauss(0, 20), 2)
        journal.trade(rng, None, won=pnl > 0, pnl=pnl)
    return journal


def scored_journal(
    trades: int, challenger_noise: float, champion_noise: float, seed: int = 5, identical=False
) -> Journal:
    """One trade per one-row prediction; each side's probability is the outcome plus noise."""
    rng = random.Random(seed)
    journal = Journal()
    for index in range(trades):
        won = rng.random() < 0.5
        at = SINCE + timedelta(minutes=index + 1)
        truth = 1.0 if won else 0.0
        mine = round(min(1.0, max(0.0, truth + (0.5 - truth) * 2 * rng.random() * champion_noise)), 6)
        theirs = (
            mine
            if identical
            else round(min(1.0, max(0.0, truth + (0.5 - truth) * 2 * rng.random() * challenger_noise)), 6)
        )
        entry = journal.predict(rng, at, CHAMPION, [mine])
        journal.shadow(rng, entry, CHALLENGER, [theirs])
        journal.trade(rng, entry, won=won, pnl=round(rng.gauss(1 if won else -1, 0.5), 2))
    return journal
