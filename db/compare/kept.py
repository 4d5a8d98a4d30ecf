"""The comparison from an experiment's kept sums: a few rows, however many pairs it holds.

It answers a window that is an experiment's: from the time its challenger was set
(`since`, a release's `challenger_since`) to now, at the decision threshold its sums are
kept at. The later experiments of the same challenger are in the window too, and are
added; a window that starts elsewhere, ends (`until`), or is asked at another threshold
is not kept, and the caller scans (`db.compare.scan`). Pending trade changes are folded
first, so the answer is as current as a scan's.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.compare.fold import fold_all
from db.compare.sums import PAIR_SUMS, TRADE_SUMS, Sums, Window
from db.models import ShadowExperiment, ShadowPairSums, ShadowTradeSums


def record_experiment(
    session: Session, model_name: str, challenger: str, since: datetime, threshold: float
) -> None:
    """A challenger set at `since`: its shadows' sums are kept from now on. Does not commit."""
    session.merge(
        ShadowExperiment(model_name=model_name, challenger=challenger, since=since, threshold=threshold)
    )


def kept(session: Session, window: Window) -> Sums | None:
    """The window's sums, or None when they are not kept. Commits (the fold)."""
    if window.until is not None:
        return None
    experiments = session.execute(
        select(ShadowExperiment.since, ShadowExperiment.threshold)
        .where(
            ShadowExperiment.model_name == window.model_name,
            ShadowExperiment.challenger == window.challenger,
            ShadowExperiment.since >= window.since,
        )
        .order_by(ShadowExperiment.since)
    ).all()
    if not experiments or experiments[0].since != window.since:
        return None
    if any(experiment.threshold != window.threshold for experiment in experiments):
        return None
    fold_all(session)
    sums = Sums.zero()
    pair = session.execute(
        select(
            *(func.coalesce(func.sum(getattr(ShadowPairSums, name)), 0).label(name) for name in PAIR_SUMS)
        ).where(*_of(ShadowPairSums, window))
    ).one()
    sums.values.update(pair._mapping)
    rows = session.scalars(select(ShadowTradeSums).where(*_of(ShadowTradeSums, window))).all()
    for row in rows:
        for name in TRADE_SUMS:
            sums.values[name] += getattr(row, name)
        if row.replicate_diffs is not None:
            sums.weighted = np.asarray(row.replicate_diffs) + (0 if sums.weighted is None else sums.weighted)
            sums.total = np.asarray(row.replicate_weights) + (0 if sums.total is None else sums.total)
    return sums


def _of(table, window: Window) -> list:
    conditions = [
        table.model_name == window.model_name,
        table.challenger == window.challenger,
        table.since >= window.since,
    ]
    if window.champion is not None:
        conditions.append(table.champion == window.champion)
    return conditions
