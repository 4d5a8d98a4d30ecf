"""The fold: keeps each experiment's linked-trade sums equal to its trades, in one transaction.

Triggers on trade_history (migration 008) log the trades that a change may concern (a trade
whose champion prediction has a shadow, or that the sums hold); a shadow logged after its
champion's trades logs them too (db.prediction_log). A fold takes the oldest logged
trades and, for each, sets its part in the sums to what trade_history and the shadow
links say now: it takes back the part `shadow_trades` holds and adds the part of its
current state. So a trade logged twice, or changed again meanwhile, is counted once.

A trade's part, per experiment (its champion prediction's first shadow by that experiment's
challenger), is that of a closed trade: counted, scored when its outcome is known, its PnL
taken or declined by the challenger, and its weighted Brier difference in every bootstrap
resample (`db.compare.bootstrap`). Folds are serialised by an advisory lock.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.orm import Session

from db.compare.bootstrap import RESAMPLES, weights_of
from db.compare.scan import CLIP
from db.compare.sums import TRADE_SUMS
from db.models import ShadowExperiment, ShadowLink, ShadowTrade, ShadowTradeSums, TradeHistory

BATCH = 5_000  # logged trades one fold takes
_LOCK = text("SELECT pg_advisory_xact_lock(30563, 1)")  # "sc": the shadow comparison's folds
_TAKE = text(
    """
    DELETE FROM shadow_trade_changes
    WHERE id IN (SELECT id FROM shadow_trade_changes ORDER BY id LIMIT :limit)
    RETURNING trade_id, opened_at
    """
)
_PART = ("since", "champion", "champion_value", "challenger_value", "threshold", "won", "pnl")

TradeKey = tuple[str, datetime]
ExperimentKey = tuple[str, str, datetime, str]  # model_name, challenger, since, champion


def fold(session: Session, limit: int = BATCH) -> int:
    """Fold up to `limit` logged trades; returns how many were taken. Commits."""
    session.execute(_LOCK)
    taken = {(row.trade_id, row.opened_at) for row in session.execute(_TAKE, {"limit": limit})}
    if taken:
        _refold(session, taken)
    session.commit()
    return len(taken)


def fold_all(session: Session, deadline: float | None = None) -> int:
    """Fold until nothing is logged, or past `deadline` (time.monotonic()); returns how many."""
    folded = 0
    while deadline is None or time.monotonic() < deadline:
        done = fold(session)
        folded += done
        if done < BATCH:
            break
    return folded


def _refold(session: Session, keys: set[TradeKey]) -> None:
    held = session.scalars(
        select(ShadowTrade).where(tuple_(ShadowTrade.trade_id, ShadowTrade.opened_at).in_(keys))
    ).all()
    now = _current(session, keys)
    deltas: dict[ExperimentKey, _Delta] = defaultdict(_Delta)
    for part in held:
        deltas[(part.model_name, part.challenger, part.since, part.champion)].add(
            part.trade_id, {name: getattr(part, name) for name in _PART}, -1
        )
    for part in now:
        deltas[(part["model_name"], part["challenger"], part["since"], part["champion"])].add(
            part["trade_id"], part, 1
        )
    session.execute(
        delete(ShadowTrade)
        .where(tuple_(ShadowTrade.trade_id, ShadowTrade.opened_at).in_(keys))
        .execution_options(synchronize_session=False)  # what it held is read above: nothing to update
    )
    if now:
        session.execute(insert(ShadowTrade), now)
    for key in sorted(deltas):
        _apply(session, key, deltas[key])


def _current(session: Session, keys: set[TradeKey]) -> list[dict[str, Any]]:
    """The parts of these trades now: each closed one's, per experiment that shadowed its
    champion prediction (with the first shadow of it)."""
    trade_ids, opened = {key[0] for key in keys}, {key[1] for key in keys}
    # The opening times as constants: TimescaleDB excludes chunks by them.
    trades = [
        row
        for row in session.execute(
            select(
                TradeHistory.trade_id,
                TradeHistory.timestamp,
                TradeHistory.prediction_id,
                TradeHistory.won,
                TradeHistory.realized_pnl,
            ).where(
                TradeHistory.trade_id.in_(trade_ids),
                TradeHistory.timestamp.in_(opened),
                TradeHistory.closed.is_(True),
                TradeHistory.prediction_id.is_not(None),
            )
        )
        if (row.trade_id, row.timestamp) in keys
    ]
    if not trades:
        return []
    first: dict[str, dict[tuple[str, str], Any]] = defaultdict(dict)
    links = session.execute(
        select(ShadowLink, ShadowExperiment.threshold)
        .join(
            ShadowExperiment,
            (ShadowExperiment.model_name == ShadowLink.model_name)
            & (ShadowExperiment.challenger == ShadowLink.challenger)
            & (ShadowExperiment.since == ShadowLink.since),
        )
        .where(ShadowLink.prediction_id.in_({trade.prediction_id for trade in trades}))
        .order_by(ShadowLink.shadowed_at, ShadowLink.shadow_id)
    )
    for link, threshold in links:
        first[link.prediction_id].setdefault((link.model_name, link.challenger), (link, threshold))
    parts = []
    for trade in trades:
        for link, threshold in first.get(trade.prediction_id, {}).values():
            parts.append(
                {
                    "trade_id": trade.trade_id,
                    "opened_at": trade.timestamp,
                    "model_name": link.model_name,
                    "challenger": link.challenger,
                    "since": link.since,
                    "champion": link.champion,
                    "champion_value": link.champion_value,
                    "challenger_value": link.challenger_value,
                    "threshold": threshold,
                    "won": trade.won,
                    "pnl": None if trade.realized_pnl is None else Decimal(str(trade.realized_pnl)),
                }
            )
    return parts


class _Delta:
    """What an experiment's trade sums gain (and lose) in one fold."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = dict.fromkeys(TRADE_SUMS, 0)
        self.weighted = np.zeros(RESAMPLES)
        self.total = np.zeros(RESAMPLES)

    def add(self, trade_id: str, part: dict[str, Any], sign: int) -> None:
        champion, challenger, threshold = part["champion_value"], part["challenger_value"], part["threshold"]
        won, pnl = part["won"], part["pnl"]
        sums = self.sums
        sums["trades"] += sign
        if pnl is not None:
            side = "taken" if (champion >= threshold) == (challenger >= threshold) else "declined"
            sums[side] += sign
            sums[f"pnl_{side}"] += sign * pnl
        if won is None:
            return
        outcome = 1.0 if won else 0.0
        errors = {}
        sums["scored"] += sign
        for name, value in (("champion", champion), ("challenger", challenger)):
            sums[f"{name}_right"] += sign * ((value >= threshold) == won)
            errors[name] = (value - outcome) * (value - outcome)
            sums[f"{name}_error"] += sign * errors[name]
            clipped = max(min(value, 1.0 - CLIP), CLIP)
            sums[f"{name}_log"] += sign * math.log(clipped if won else 1.0 - clipped)
        weights = weights_of(trade_id)
        self.weighted += sign * weights * (errors["challenger"] - errors["champion"])
        self.total += sign * weights


def _apply(session: Session, key: ExperimentKey, delta: _Delta) -> None:
    model_name, challenger, since, champion = key
    arrays = session.execute(
        select(ShadowTradeSums.replicate_diffs, ShadowTradeSums.replicate_weights).where(
            ShadowTradeSums.model_name == model_name,
            ShadowTradeSums.challenger == challenger,
            ShadowTradeSums.since == since,
            ShadowTradeSums.champion == champion,
        )
    ).first()
    weighted, total = delta.weighted, delta.total
    if arrays is not None and arrays.replicate_diffs is not None:
        weighted = weighted + np.asarray(arrays.replicate_diffs)
        total = total + np.asarray(arrays.replicate_weights)
    statement = upsert(ShadowTradeSums).values(
        model_name=model_name,
        challenger=challenger,
        since=since,
        champion=champion,
        **delta.sums,
        replicate_diffs=weighted.tolist(),
        replicate_weights=total.tolist(),
    )
    columns = ShadowTradeSums.__table__.c
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["model_name", "challenger", "since", "champion"],
            set_={
                **{name: columns[name] + statement.excluded[name] for name in TRADE_SUMS},
                "replicate_diffs": statement.excluded.replicate_diffs,
                "replicate_weights": statement.excluded.replicate_weights,
            },
        )
    )
