"""The dashboard's releases panel: per model with a release, its champion, its challenger
and mode, the shadow comparison and the last changes.

The comparison (`db.compare`) is an exact scan of the shadow pairs, seconds at a million of
them, while the panel is asked every few seconds by every open page. So each process keeps
a comparison's outcome for COMPARISON_TTL_S per (name, challenger, since) and computes a
key on one thread at a time (`ComparisonCache`): a request that finds another thread
computing the key shows the last outcome, or waits for that thread when there is none. A
request blocks on at most one comparison (computing or waiting), and the comparison runs in
a session of its own under COMPARE_TIMEOUT_S: a comparison that fails or runs out of time
shows "comparison unavailable" (kept as long as an outcome, longer after repeated
failures) and the rest of the panel shows as ever.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from db import Release, database, statement_timed_out
from db import releases as stored
from db.compare import CHALLENGER_BETTER, CHAMPION_BETTER, CONFIDENCE, MIN_TRADES, compare
from models import ModelError
from tasks.contract import brief
from web.model_versions import current_version, threshold_of
from web.settings import current_settings

log = logging.getLogger(__name__)

EXTENSION = "release_comparisons"
HISTORY_SHOWN = 5
COMPARISON_TTL_S = 30.0
# After repeated failures a key is asked again less often: twice as late each time, up to this.
FAILURE_BACKOFF_MAX_S = 300.0
# A comparison's statement gives up after this (or WEB_STATEMENT_TIMEOUT_S when lower), so
# the panel answers before the page gives up on it (12 s).
COMPARE_TIMEOUT_S = 8.0
# Outcomes unused this long are dropped (a challenger replaced long ago).
FORGET_AFTER_S = 600.0

GUARD_LABELS = {
    "max_error_rate": ("error rate above", "rate"),
    "max_nonfinite_rate": ("non-finite outputs above", "rate"),
    "max_p99_ms": ("p99 latency above", "ms"),
    "min_predictions": ("judged after", "predictions"),
}


@dataclass(frozen=True)
class Outcome:
    """A comparison's outcome as the panel shows it: compare()'s answer, or why there is none."""

    result: dict[str, Any] | None
    problem: str | None
    computed_at: datetime | None  # wall clock (UTC), for the panel
    expires: float  # the cache's clock
    failures: int = 0  # failures in a row, for the backoff

    @property
    def pending(self) -> bool:
        return self.result is None and self.computed_at is None


class ComparisonCache:
    """compare()'s outcomes per key, each kept `ttl_s` and computed on one thread at a time."""

    def __init__(
        self,
        ttl_s: float = COMPARISON_TTL_S,
        backoff_max_s: float = FAILURE_BACKOFF_MAX_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ttl_s = ttl_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock
        self._changed = threading.Condition()
        self._kept: dict[Hashable, Outcome] = {}
        self._busy: set[Hashable] = set()

    def clear(self) -> None:
        with self._changed:
            self._kept.clear()

    def get(
        self,
        key: Hashable,
        compute: Callable[[], dict[str, Any]],
        *,
        may_block: bool = True,
        wait_s: float = COMPARE_TIMEOUT_S,
    ) -> tuple[Outcome, bool]:
        """The outcome of `key` and whether this call blocked (computed it, or waited for the
        thread computing it). A kept outcome is returned until it expires; then one caller
        computes it again while the others get the expired one (or, with none kept and
        `may_block`, wait up to `wait_s` for it). `compute` raising is an outcome too."""
        with self._changed:
            kept = self._kept.get(key)
            if kept is not None and self._clock() < kept.expires:
                return kept, False
            if key in self._busy or not may_block:
                if kept is not None:
                    return kept, False
                if not may_block:
                    return self._pending(), False
                self._changed.wait_for(lambda: key not in self._busy, timeout=wait_s)
                return self._kept.get(key) or self._pending(), True
            self._busy.add(key)
        outcome = None
        try:
            outcome = self._compute(compute, kept)
        finally:
            with self._changed:
                self._busy.discard(key)
                if outcome is not None:
                    self._kept[key] = outcome
                self._forget_unused()
                self._changed.notify_all()
        return outcome, True

    def _compute(self, compute: Callable[[], dict[str, Any]], last: Outcome | None) -> Outcome:
        try:
            result = compute()
        except Exception as error:  # whatever fails, the panel shows the rest
            failures = (last.failures if last is not None else 0) + 1
            delay = min(self.ttl_s * 2 ** (failures - 1), max(self.backoff_max_s, self.ttl_s))
            return Outcome(None, _problem(error), datetime.now(UTC), self._clock() + delay, failures)
        return Outcome(result, None, datetime.now(UTC), self._clock() + self.ttl_s)

    def _pending(self) -> Outcome:
        return Outcome(None, "being computed; it shows on a later refresh", None, 0.0)

    def _forget_unused(self) -> None:
        stale = self._clock() - FORGET_AFTER_S
        for key in [key for key, kept in self._kept.items() if kept.expires < stale]:
            if key not in self._busy:
                del self._kept[key]


def _problem(error: Exception) -> str:
    if statement_timed_out(error):
        log.warning("dashboard: the release comparison ran out of time: %s", brief(error))
        return f"it took longer than {_compare_timeout_s():g} s"
    if isinstance(error, SQLAlchemyError):
        log.warning("dashboard: the release comparison failed: %s", brief(error))
        return "the database did not answer"
    log.exception("dashboard: the release comparison failed")
    return "it failed; see the server log"


def install(app: Flask) -> None:
    app.extensions[EXTENSION] = ComparisonCache()


def comparisons() -> ComparisonCache:
    return current_app.extensions[EXTENSION]


def _compare_timeout_s() -> float:
    return min(COMPARE_TIMEOUT_S, current_settings().web_statement_timeout_s)


def _compare_now(name: str, challenger: str, since: datetime) -> dict[str, Any]:
    """compare() in a transaction of its own: a failure leaves the request's session as it was."""
    with Session(database.engine) as session:
        session.execute(text(f"SET LOCAL statement_timeout = {int(_compare_timeout_s() * 1000)}"))
        return compare(session, name, challenger, since=since, threshold=threshold_of(name))


class Budget:
    """A request blocks on one comparison at most: computing it, or waiting for it."""

    def __init__(self, wait_s: float):
        self.wait_s = wait_s
        self.spent = False


def panel(session: Session) -> dict[str, Any]:
    """What releases.html shows: a section per name with a release row, and the store's
    names without one."""
    kept = stored.releases(session)
    in_store = {file.name for file in current_app.extensions["model_store"].list()}
    budget = Budget(_compare_timeout_s())
    sections = [_section(session, kept[name], budget) for name in sorted(kept)]
    return {"sections": sections, "unreleased": sorted(in_store - set(kept))}


def _section(session: Session, release: Release, budget: Budget) -> dict[str, Any]:
    name = release.model_name
    file_version = _file_version(name)
    comparison = None
    if release.challenger is not None and release.challenger_since is not None:
        challenger, since = release.challenger, release.challenger_since
        comparison, blocked = comparisons().get(
            (name, challenger, since),
            lambda: _compare_now(name, challenger, since),
            may_block=not budget.spent,
            wait_s=budget.wait_s,
        )
        budget.spent = budget.spent or blocked
    return {
        "name": name,
        "champion": release.champion_or(file_version),
        "pinned": release.champion is not None,
        "previous_champion": release.previous_champion,
        "challenger": release.challenger,
        "mode": mode_text(release.mode, release.percent),
        "since": utc_text(release.challenger_since),
        "guards": guards_text(release.guards),
        "comparison": comparison,
        "verdict": verdict_text(comparison.result) if comparison and comparison.result else None,
        "history": [
            {**change, "at": utc_text(change["at"]), "mode": mode_text(change["mode"], change["percent"])}
            for change in stored.history(session, name, HISTORY_SHOWN)
        ],
    }


def _file_version(name: str) -> str | None:
    try:
        return current_version(name)
    except ModelError:  # a name the store refuses outright: no file version to show
        return None


def mode_text(mode: str | None, percent: int | None) -> str | None:
    if mode == "canary" and percent is not None:
        return f"canary {percent} %"
    return mode


def guards_text(guards: dict[str, Any]) -> list[str]:
    """The guards in words, e.g. ['error rate above 5 %', 'judged after 100 predictions']."""
    described = []
    known = [key for key in GUARD_LABELS if key in guards]
    for key in known + sorted(set(guards) - set(known)):
        value = guards[key]
        label, unit = GUARD_LABELS.get(key, (key.replace("_", " "), ""))
        if unit == "rate" and _is_number(value):
            described.append(f"{label} {100 * value:g} %")
        else:
            shown = f"{value:g}" if _is_number(value) else str(value)
            described.append(f"{label} {shown} {unit}".rstrip())
    return described


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def verdict_text(result: dict[str, Any]) -> dict[str, str]:
    """compare()'s verdict in plain words, and its tone (a class)."""
    n, ci, verdict = result["n"], result["brier_diff_ci"], result["verdict"]
    trades = f"{n} scored trade{'' if n == 1 else 's'}"
    level = f"{100 * CONFIDENCE:g} %"
    if ci is None:
        return {
            "tone": "undecided",
            "text": f"Not enough evidence yet: {trades}, a verdict needs {MIN_TRADES} with "
            "probabilities from both versions.",
        }
    interval = f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"
    if verdict == CHALLENGER_BETTER:
        return {
            "tone": "challenger-better",
            "text": f"The challenger is better: its Brier score is lower than the champion's "
            f"({level} interval of the difference {interval}, below 0) over {trades}.",
        }
    if verdict == CHAMPION_BETTER:
        return {
            "tone": "champion-better",
            "text": f"The champion is better: the challenger's Brier score is higher "
            f"({level} interval of the difference {interval}, above 0) over {trades}.",
        }
    return {
        "tone": "undecided",
        "text": f"No clear difference yet: the {level} interval of the Brier difference {interval} "
        f"includes 0, over {trades}.",
    }


def utc_text(moment: datetime | None) -> str | None:
    """A time as the dashboard shows it (its panels' too)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment is not None else None
