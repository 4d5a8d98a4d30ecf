"""The worker's write path: write with retries, spool while the database is down,
dead-letter what can never be stored. Every error is sorted by `tasks.contract.failures`.

Three directories under SPOOL_DIR:
`replay/` holds entries waiting for the database (drained by `trades.replay_spool`),
`dead-letter/` keeps what was refused (invalid, conflicting, unstorable, poison) for a
person to look at, and `outbox/` is the bot client's (see `tasks.client`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from tenacity import Retrying, before_sleep_log, retry_if_exception, stop_after_attempt, wait_exponential

from db import (
    DrainReport,
    Entry,
    Spool,
    TradeRepository,
    WriteOutcome,
    database,
    describe_errors,
    entry_from_json,
)
from tasks.contract import DEAD_LETTER_SPOOL, REPLAY_SPOOL, Failure, Verdict, brief, classify
from tasks.observability import metrics
from tasks.worker.app import worker_settings
from tasks.worker.dead_letters import json_safe

log = logging.getLogger(__name__)


class StoredNowhere(Exception):
    """Neither the database nor the spool took these entries (replay stops on it)."""

    def __init__(self, entries: Sequence[Entry], cause: BaseException):
        super().__init__(f"{len(entries)} entries stored nowhere: {brief(cause)}")
        self.entries = list(entries)
        self.cause = cause


def replay_spool() -> Spool:
    return Spool(worker_settings().spool_dir / REPLAY_SPOOL)


def dead_letters() -> Spool:
    return Spool(worker_settings().spool_dir / DEAD_LETTER_SPOOL)


def dead_letter(reason: str, payload: Any) -> None:
    """Keep a refused entry for a person. Its content cannot make this fail (NaN, bytes,
    depth are written as text); only the spool's disk can, and then it raises OSError."""
    letter = {"reason": reason, "at": datetime.now(UTC).isoformat(), "payload": json_safe(payload)}
    dead_letters().append([letter])
    metrics.DEAD_LETTERS.labels(reason=reason.split(":", 1)[0]).inc()


def count_outage(verdict: Verdict, error: BaseException) -> None:
    metrics.OUTAGES.labels(dependency=verdict.dependency).inc()
    if not verdict.known:  # no rule for it: treated as an outage, shown with its traceback
        log.error("unexpected error, handled as an outage: %s", brief(error), exc_info=error)


def parse_spooled(items: Iterable[dict[str, Any]]) -> list[Entry]:
    """Spooled JSON back into entries; an invalid one is dead-lettered, not retried."""
    entries = []
    for item in items:
        try:
            entries.append(entry_from_json(item))
        except Exception as exc:
            if classify(exc).failure is not Failure.UNSTORABLE:
                raise
            problems = describe_errors(exc) if hasattr(exc, "errors") else str(exc)
            log.error("invalid spooled entry dead-lettered: %s", problems)
            dead_letter(f"invalid: {problems}", item)
    return entries


def persist(entries: Sequence[Entry], *, retries: int | None = None, spool: bool = True) -> list[Entry]:
    """Write entries to the database; while it stays unavailable, spool them.

    Returns the entries stored nowhere: the database was unavailable and the spool (or,
    for an unstorable entry, the dead-letter folder) refused them too. The caller keeps
    them (the worker holds their messages). With `spool=False` (the replay), a database
    outage raises instead of spooling.
    """
    if not entries:
        return []
    try:
        outcome = _write_with_retries(entries, retries)
    except Exception as exc:
        verdict = classify(exc, talking_to="database")
        if verdict.failure is Failure.UNSTORABLE:
            return _isolate_unstorable(entries, exc, retries, spool)
        count_outage(verdict, exc)
        if not spool:
            raise
        return _spool(entries, exc)
    return _report(outcome)


def replay(chunk: list[dict[str, Any]]) -> None:
    """Apply a chunk of the replay spool; an outage stops the drain (the chunk stays)."""
    nowhere = persist(parse_spooled(chunk), retries=0, spool=False)
    if nowhere:
        raise StoredNowhere(nowhere, OSError("the dead-letter folder refused an entry"))
    metrics.REPLAYED.inc(len(chunk))


def drain_replay_spool() -> DrainReport | None:
    return replay_spool().drain(replay)


def _write_with_retries(entries: Sequence[Entry], retries: int | None) -> WriteOutcome:
    settings = worker_settings()
    attempts = (settings.journal_db_retries if retries is None else retries) + 1
    retrying = Retrying(
        retry=retry_if_exception(lambda exc: classify(exc, talking_to="database").unavailable),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=settings.journal_db_backoff_s, max=30),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            try:
                return TradeRepository(database.session).write(entries)
            finally:
                database.session.remove()
    raise AssertionError("unreachable: tenacity re-raises the last error")


def _spool(entries: Sequence[Entry], cause: BaseException) -> list[Entry]:
    try:
        replay_spool().append(entry.to_json() for entry in entries)
    except Exception as exc:
        count_outage(classify(exc), exc)
        log.error(
            "database unavailable (%s) and the spool refused (%s): %d entries stay in the broker",
            brief(cause),
            brief(exc),
            len(entries),
        )
        return list(entries)
    metrics.SPOOLED.inc(len(entries))
    log.warning("database unavailable (%s): %d entries spooled", brief(cause), len(entries))
    return []


def _isolate_unstorable(
    entries: Sequence[Entry], exc: BaseException, retries: int | None, spool: bool
) -> list[Entry]:
    # The database (or its driver) refused the data itself: halve the batch until the
    # entry at fault is alone, so that only it is dead-lettered, at its first try.
    if len(entries) == 1:
        log.error("%s can never be stored, dead-lettered: %s", entries[0].subject, brief(exc))
        try:
            dead_letter(f"unstorable: {brief(exc)}", entries[0].to_json())
        except Exception as spool_error:  # only the disk can refuse (json_safe never raises)
            count_outage(classify(spool_error), spool_error)
            return list(entries)
        return []
    middle = len(entries) // 2
    return [
        *persist(entries[:middle], retries=retries, spool=spool),
        *persist(entries[middle:], retries=retries, spool=spool),
    ]


def _report(outcome: WriteOutcome) -> list[Entry]:
    metrics.WRITTEN.labels(outcome="inserted").inc(len(outcome.inserted))
    metrics.WRITTEN.labels(outcome="duplicate").inc(len(outcome.duplicates))
    metrics.WRITTEN.labels(outcome="updated").inc(outcome.updated)
    metrics.WRITTEN.labels(outcome="stale").inc(outcome.stale)
    metrics.WRITTEN.labels(outcome="pending").inc(outcome.pending)
    if outcome.predictions_logged or outcome.predictions_repeated:
        metrics.PREDICTIONS_LOGGED.labels(outcome="inserted").inc(outcome.predictions_logged)
        metrics.PREDICTIONS_LOGGED.labels(outcome="duplicate").inc(outcome.predictions_repeated)
    metrics.TRADES_LINKED.inc(outcome.trades_linked)
    kept = []
    for conflict in outcome.conflicts:
        fields = conflict.differing_fields()
        log.error(
            "trade %s recorded again with different %s: rejected and dead-lettered",
            conflict.record.trade_id,
            ", ".join(fields),
        )
        metrics.CONFLICTS.inc()
        try:
            dead_letter(
                f"conflict: differs in {', '.join(fields)}",
                {"kind": "record", "trade": conflict.record.to_dict()},
            )
        except Exception as exc:
            count_outage(classify(exc), exc)
            kept.append(conflict.entry)
    return kept
