"""db.compare's scan against an independent computation: seeded logs and trades written
with plain SQL into the migrated database (no experiment is kept: every window is scanned),
every figure computed again with plain loops (tests/support/compare_journal.py)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from db.compare import MIN_TRADES, Window, compare
from db.compare.scan import COMPARE_SQL, parameters
from tests.support.compare_journal import (
    CHALLENGER,
    CHAMPION,
    MODEL,
    OLD_CHAMPION,
    OTHER_CHALLENGER,
    SINCE,
    UNTIL,
    Journal,
    assert_figures,
    expected,
    mixed_journal,
    scored_journal,
)


@pytest.fixture
def empty(engine):
    """An empty log and trade journal (each journal written empties them first too)."""
    Journal().write(engine)


def run(engine, **given):
    with Session(engine) as session:
        return compare(session, MODEL, given.pop("challenger", CHALLENGER), **given)


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
        {"since": SINCE, "until": UNTIL, "threshold": 0.7, "champion": CHAMPION},
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
            text("EXPLAIN " + COMPARE_SQL.text),
            parameters(Window(MODEL, CHALLENGER, SINCE, UNTIL, 0.5, None)),
        ).scalars()
        plan = "\n".join(explained)
    assert "ix_prediction_log_shadows" in plan, plan
    assert "Seq Scan on prediction_log" not in plan, plan
