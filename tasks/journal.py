"""The worker's write path: validate, write with retries, spool while the database is down.

Three directories under SPOOL_DIR:
`replay/` holds entries waiting for the database (drained by `trades.replay_spool`),
`dead-letter/` keeps what was refused (invalid, conflicting, poison) for a person to
look at, and `outbox/` is the bot client's (see `tasks.client`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from config import get_settings
from db.entries import Entry, entry_from_json
from db.extension import database
from db.record import describe_errors
from db.repository import TradeRepository, WriteOutcome
from db.spool import DrainReport, Spool
from tasks import metrics

log = logging.getLogger(__name__)


def replay_spool() -> Spool:
    return Spool(get_settings().spool_dir / "replay")


def dead_letters() -> Spool:
    return Spool(get_settings().spool_dir / "dead-letter")


def is_database_down(exc: BaseException) -> bool:
    """Errors that mean 'cannot reach the database', as opposed to 'bad data'."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def dead_letter(reason: str, payload: Any) -> None:
    dead_letters().append([{"reason": reason, "at": datetime.now(UTC).isoformat(), "payload": payload}])
    metrics.DEAD_LETTERS.labels(reason=reason.split(":", 1)[0]).inc()


def parse_spooled(items: Iterable[dict[str, Any]]) -> list[Entry]:
    """Spooled JSON back into entries; an invalid one is dead-lettered, not retried."""
    entries = []
    for item in items:
        try:
            entries.append(entry_from_json(item))
        except ValidationError as exc:
            log.error("invalid spooled entry dead-lettered: %s", describe_errors(exc))
            dead_letter(f"invalid: {describe_errors(exc)}", item)
        except ValueError as exc:
            log.error("invalid spooled entry dead-lettered: %s", exc)
            dead_letter(f"invalid: {exc}", item)
    return entries


def persist(entries: Sequence[Entry], *, retries: int | None = None, spool: bool = True) -> None:
    """Write entries to the database; when it stays unreachable, spool them.

    With `spool=False` a database outage is raised to the caller instead.
    """
    if not entries:
        return
    try:
        outcome = _write_with_retries(entries, retries)
    except Exception as exc:
        if is_database_down(exc):
            if not spool:
                raise
            replay_spool().append(entry.to_json() for entry in entries)
            metrics.SPOOLED.inc(len(entries))
            log.warning("database unreachable (%s): %d entries spooled", _brief(exc), len(entries))
            return
        if not isinstance(exc, DBAPIError):
            raise
        _isolate_bad_entry(entries, exc, retries, spool)
        return
    _report(outcome)


def replay(chunk: list[dict[str, Any]]) -> None:
    """Apply a chunk of the replay spool; a database outage stops the drain."""
    persist(parse_spooled(chunk), retries=0, spool=False)
    metrics.REPLAYED.inc(len(chunk))


def drain_replay_spool() -> DrainReport | None:
    return replay_spool().drain(replay)


def _write_with_retries(entries: Sequence[Entry], retries: int | None) -> WriteOutcome:
    settings = get_settings()
    attempts = (settings.journal_db_retries if retries is None else retries) + 1
    retrying = Retrying(
        retry=retry_if_exception(is_database_down),
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


def _isolate_bad_entry(entries: Sequence[Entry], exc: DBAPIError, retries: int | None, spool: bool) -> None:
    # The database refused the data itself (not the connection): write the entries
    # one by one so that only the offending one is dead-lettered.
    if len(entries) == 1:
        log.error("entry refused by the database, dead-lettered: %s", _brief(exc))
        dead_letter(f"refused: {_brief(exc)}", entries[0].to_json())
        return
    for entry in entries:
        persist([entry], retries=retries, spool=spool)


def _report(outcome: WriteOutcome) -> None:
    metrics.WRITTEN.labels(outcome="inserted").inc(len(outcome.inserted))
    metrics.WRITTEN.labels(outcome="duplicate").inc(len(outcome.duplicates))
    metrics.WRITTEN.labels(outcome="updated").inc(outcome.updated)
    metrics.WRITTEN.labels(outcome="pending").inc(outcome.pending)
    for conflict in outcome.conflicts:
        fields = conflict.differing_fields()
        log.error(
            "trade %s recorded again with different %s: rejected and dead-lettered",
            conflict.record.trade_id,
            ", ".join(fields),
        )
        metrics.CONFLICTS.inc()
        dead_letter(
            f"conflict: differs in {', '.join(fields)}",
            {"kind": "record", "trade": conflict.record.to_dict()},
        )


def _brief(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
