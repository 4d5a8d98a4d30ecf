"""The journal's reads in a request: a repository on the request's session that folds
what waits beyond STATS_MAX_STALENESS_S before it reads a statistic."""

from __future__ import annotations

from db import TradeRepository, database
from web.settings import current_settings


def repository() -> TradeRepository:
    return TradeRepository(database.session, current_settings().stats_max_staleness_s)
