"""The trade journal's Celery tasks (called by name: bots use `send_task`)."""

from __future__ import annotations

import logging
from typing import Any

from celery_batches import SimpleRequest
from pydantic import ValidationError

from db.entries import Entry, RecordEntry, UpdateEntry
from db.record import TRADE_ID, TradeRecord, TradeUpdate, describe_errors
from tasks import app, request_id
from tasks.batching import BATCH_DONE, JournalBatches
from tasks.journal import dead_letter, drain_replay_spool, is_database_down, persist

log = logging.getLogger(__name__)


def _call_of(request: SimpleRequest) -> dict[str, Any]:
    return {"task": request.name, "id": request.id, "args": request.args, "kwargs": request.kwargs}


def _parse(requests: list[SimpleRequest], build) -> list[Entry]:
    entries = []
    for request in requests:
        # Each message of the batch is handled under the request id it came with.
        with request_id.bound(request_id.of_message(request.request_dict)) as rid:
            entry = _parse_one(request, build)
            if entry is not None:
                entries.append(entry)
                if rid is not None:  # sent over HTTP: one line per message, to follow the request
                    log.info("%s %s: trade %s taken into a batch", request.name, request.id, entry.trade_id)
    return entries


def _parse_one(request: SimpleRequest, build) -> Entry | None:
    try:
        return build(request.id, *request.args, **request.kwargs)
    except ValidationError as exc:
        problems = describe_errors(exc)
        log.error("%s %s refused, dead-lettered: %s", request.name, request.id, problems)
        dead_letter(f"invalid: {problems}", _call_of(request))
    except TypeError as exc:
        log.error("%s %s has wrong arguments, dead-lettered: %s", request.name, request.id, exc)
        dead_letter(f"invalid: {exc}", _call_of(request))
    return None


def _record_entry(job_id: str, trade: Any) -> RecordEntry:
    return RecordEntry(TradeRecord.from_dict(trade), job_id)


def _update_entry(job_id: str, trade_id: Any, updates: Any) -> UpdateEntry:
    return UpdateEntry(TRADE_ID.validate_python(trade_id), TradeUpdate.from_dict(updates), job_id)


@app.task(name="trades.record", base=JournalBatches)
def record(requests: list[SimpleRequest]) -> str:
    """Insert trades, idempotently: the same record twice is stored once."""
    persist(_parse(requests, _record_entry))
    return BATCH_DONE


@app.task(name="trades.update", base=JournalBatches)
def update(requests: list[SimpleRequest]) -> str:
    """Apply updates; one that arrives before its trade is kept until the trade lands."""
    persist(_parse(requests, _update_entry))
    return BATCH_DONE


@app.task(name="trades.replay_spool", ignore_result=False)
def replay_spool() -> dict[str, int] | None:
    """Move spooled entries into the database; beat runs it every few seconds."""
    try:
        report = drain_replay_spool()
    except Exception as exc:
        if not is_database_down(exc):
            raise
        log.warning("database still unreachable; spooled entries wait for the next replay")
        return None
    if report is None:
        return None  # another process is draining
    if report.applied or report.skipped:
        log.info("replayed %d spooled entries (%d unreadable lines skipped)", report.applied, report.skipped)
    return {"applied": report.applied, "skipped": report.skipped, "segments": report.segments}


def _dead_letter_poison(request: SimpleRequest, deliveries: int) -> None:
    dead_letter(f"poison: redelivered {deliveries} times", _call_of(request))


JournalBatches.on_poison = staticmethod(_dead_letter_poison)
