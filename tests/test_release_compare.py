"""db.compare against an independent computation: seeded logs and trades written with plain
SQL into the migrated database, every figure computed again here with plain loops."""

from __future__ import annotations

import json
import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import zip_longest

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from db.compare import COMPARE_SQL, MIN_TRADES, compare, parameters

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
        return self.predict(
            rng,
            of.created_at + lag,
            version,
            values,
            model=of.model_name,
            role="shadow",
            shadow_of=of.prediction_id,
        )

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
                text("TRUNCATE trade_history, trade_pending_updates, prediction_log, prediction_counts")
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
            if self.trades:
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
                        for trade in self.trades
                    ],
                )


@pytest.fixture
def empty(engine):
    """An empty log and trade journal (each journal written empties them first too)."""
    Journal().write(engine)


def run(engine, **given):
    with Session(engine) as session:
        return compare(session, MODEL, given.pop("challenger", CHALLENGER), **given)


# -- the independent computation ------------------------------------------------------------------


def expected(
    journal: Journal, challenger: str, since, until, threshold, champion=None, resamples=2000, seed=0
):
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
    diffs = np.array([(y - won) ** 2 - (x - won) ** 2 for won, x, y in scored])
    figures["n"] = len(scored) if both else 0
    figures["brier_diff"] = float(diffs.mean()) if both and len(scored) else None
    figures["brier_diff_ci"] = None
    if both and len(scored) >= MIN_TRADES:
        rng = np.random.default_rng(seed)
        means = [diffs[rng.integers(0, len(diffs), len(diffs))].mean() for _ in range(resamples)]
        figures["brier_diff_ci"] = [float(bound) for bound in np.percentile(means, [2.5, 97.5])]
    return figures


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


def mixed_journal(seed: int = 11) -> Journal:
    """A few hundred shadow pairs with all that must be left out around them."""
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
    # A shadow logged more than MAX_SHADOW_LAG after its champion: not a pair.
    stale = journal.predict(rng, SINCE + timedelta(days=1), CHAMPION, [0.9])
    journal.shadow(rng, stale, CHALLENGER, [0.1], lag=timedelta(days=1, seconds=1))
    # Another model's shadows of the same challenger version, and a shadow of no logged champion.
    foreign = journal.predict(rng, SINCE + timedelta(hours=5), CHAMPION, [0.3], model="lgbm_model.txt")
    journal.shadow(rng, foreign, CHALLENGER, [0.9])
    orphan = Logged("no-such-" + uuid.UUID(int=rng.getrandbits(128)).hex[:8], SINCE, MODEL, CHAMPION, [0.5])
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


# -- the tests ------------------------------------------------------------------------------------


def test_every_figure_equals_the_independent_computation(engine, empty):
    built = mixed_journal()
    built.write(engine)
    answer = run(engine, since=SINCE, until=UNTIL)
    figures = expected(built, CHALLENGER, SINCE, UNTIL, 0.5)
    assert_figures(answer, figures)
    # The journal exercises what it should: pairs, two-row predictions, a verdict's worth of trades.
    assert answer["pairs"] > 300
    assert answer["trades"] >= MIN_TRADES
    assert answer["taken"] > 0 and answer["declined"] > 0
    assert answer["brier_diff_ci"] is not None
    assert answer["verdict"] in ("challenger better", "champion better", "not enough evidence")
    assert answer["since"] == SINCE and answer["until"] == UNTIL and answer["threshold"] == 0.5


def test_other_thresholds_windows_champions_and_seeds(engine, empty):
    built = mixed_journal(seed=12)
    built.write(engine)
    cases = [
        {"since": SINCE, "until": None, "threshold": 0.3},
        {"since": SINCE + timedelta(days=3), "until": UNTIL - timedelta(days=2), "threshold": 0.5},
        {"since": SINCE, "until": UNTIL, "threshold": 0.5, "champion": OLD_CHAMPION},
        {"since": SINCE, "until": UNTIL, "threshold": 0.7, "champion": CHAMPION, "seed": 3, "resamples": 500},
    ]
    for case in cases:
        answer = run(engine, **case)
        assert_figures(answer, expected(built, CHALLENGER, **case))
    other = run(engine, challenger=OTHER_CHALLENGER, since=SINCE, until=UNTIL)
    assert_figures(other, expected(built, OTHER_CHALLENGER, SINCE, UNTIL, 0.5))
    assert other["pairs"] > 0


def test_a_clearly_better_challenger_is_called_better(engine, empty):
    built = scored_journal(250, challenger_noise=0.3, champion_noise=0.9)
    built.write(engine)
    answer = run(engine, since=SINCE)
    assert_figures(answer, expected(built, CHALLENGER, SINCE, None, 0.5))
    assert answer["n"] == 250
    assert answer["challenger"]["brier"] < answer["champion"]["brier"] / 2
    assert answer["brier_diff_ci"][1] < 0
    assert answer["verdict"] == "challenger better"
    # The other way round: the champion is the better one.
    worse = scored_journal(250, challenger_noise=0.9, champion_noise=0.3, seed=6)
    worse.write(engine)
    assert run(engine, since=SINCE)["verdict"] == "champion better"


def test_identical_predictions_are_not_enough_evidence(engine, empty):
    built = scored_journal(200, challenger_noise=0.5, champion_noise=0.5, identical=True)
    built.write(engine)
    answer = run(engine, since=SINCE)
    assert_figures(answer, expected(built, CHALLENGER, SINCE, None, 0.5))
    assert answer["agreement"] == 1.0 and answer["mean_abs_diff"] == 0.0
    assert answer["brier_diff"] == 0.0 and answer["brier_diff_ci"] == [0.0, 0.0]
    assert answer["pnl_declined"] == 0.0 and answer["declined"] == 0
    assert answer["verdict"] == "not enough evidence"


def test_fewer_than_min_trades_are_not_enough_evidence(engine, empty):
    built = scored_journal(MIN_TRADES - 1, challenger_noise=0.05, champion_noise=1.0)
    built.write(engine)
    answer = run(engine, since=SINCE)
    assert_figures(answer, expected(built, CHALLENGER, SINCE, None, 0.5))
    assert answer["n"] == MIN_TRADES - 1
    assert answer["challenger"]["brier"] < answer["champion"]["brier"]
    assert answer["brier_diff_ci"] is None
    assert answer["verdict"] == "not enough evidence"


def test_signed_outputs_have_agreement_and_pnl_but_no_probability_scores(engine, empty):
    rng = random.Random(9)
    built = Journal()
    for index in range(120):
        mine = round(rng.uniform(-2, 2), 6)
        entry = built.predict(
            rng, SINCE + timedelta(minutes=index), CHAMPION, [mine, round(rng.uniform(-2, 2), 6)]
        )
        built.shadow(rng, entry, CHALLENGER, [round(mine + rng.gauss(0, 0.8), 6), None])
        pnl = round(rng.gauss(0, 5), 2)
        built.trade(rng, entry, won=pnl > 0, pnl=pnl)
    built.write(engine)
    answer = run(engine, since=SINCE, threshold=0.0)
    assert_figures(answer, expected(built, CHALLENGER, SINCE, None, 0.0))
    assert answer["pairs"] == 120 and answer["trades"] == 120
    for side in ("champion", "challenger"):
        assert answer[side]["brier"] is None and answer[side]["log_loss"] is None
        assert answer[side]["accuracy"] is not None
    assert answer["agreement"] is not None and answer["correlation"] is not None
    assert answer["taken"] + answer["declined"] == 120
    assert answer["pnl_taken"] != 0 and answer["pnl_declined"] != 0
    assert answer["brier_diff"] is None and answer["brier_diff_ci"] is None and answer["n"] == 0
    assert answer["verdict"] == "not enough evidence"


def test_no_pairs(engine, empty):
    answer = run(engine, since=SINCE)
    assert answer["pairs"] == 0 and answer["trades"] == 0
    assert answer["agreement"] is None and answer["mean_abs_diff"] is None and answer["correlation"] is None
    assert answer["champion"]["accuracy"] is None and answer["challenger"]["brier"] is None
    assert answer["pnl_taken"] == 0.0 and answer["pnl_declined"] == 0.0
    assert answer["verdict"] == "not enough evidence"


def test_the_pairs_are_found_by_indexes(engine, empty):
    """Among other models' predictions, the shadows come from their index and their
    champions from the log's key or its time index: never a scan of the whole log."""
    mixed_journal().write(engine)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO prediction_log (prediction_id, created_at, model_name, model_version,"
                " model_type, rows, predictions, latency_ms, role)"
                " SELECT md5('other:' || n), CAST(:start AS timestamptz) + n * interval '1 minute',"
                " 'lgbm_model.txt', 'e0e0e0e0e0e0e0e0', 'lightgbm', 1, '[0.5]', 1.0, 'champion'"
                " FROM generate_series(1, 60000) AS n"
            ),
            {"start": SINCE - timedelta(days=30)},
        )
        connection.execute(text("ANALYZE prediction_log"))
        explained = connection.execute(
            text("EXPLAIN " + COMPARE_SQL.text), parameters(MODEL, CHALLENGER, SINCE, UNTIL, 0.5, None)
        ).scalars()
        plan = "\n".join(explained)
    assert "ix_prediction_log_shadows" in plan, plan
    assert "Seq Scan on prediction_log" not in plan, plan
