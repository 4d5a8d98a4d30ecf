"""The trade journal's Celery tasks (called by name: bots use `send_task`)."""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from celery_batches import SimpleRequest

from db import (
    Ages,
    Entry,
    compare,
    database,
    describe_errors,
    maintenance,
    prune_prediction_log,
    stats,
    utc_now,
)
from tasks import app
from tasks.contract import (
    COMPRESS_CHUNKS_TASK,
    PRUNE_PREDICTIONS_TASK,
    RECORD_TASK,
    REFRESH_STATS_TASK,
    REPLAY_TASK,
    UPDATE_TASK,
    Failure,
    brief,
    classify,
    record_entry,
    update_entry,
)
from tasks.observability import metrics, request_id
from tasks.worker.app import worker_settings
from tasks.worker.batching import BATCH_DONE, JournalBatches
from tasks.worker.journal import StoredNowhere, count_outage, dead_letter, drain_replay_spool, persist

log = logging.getLogger(__name__)


def _call_of(request: SimpleRequest) -> dict[str, Any]:
    return {"task": request.name, "id": request.id, "args": request.args, "kwargs": request.kwargs}


def _parse(requests: list[SimpleRequest], build: Callable[..., Entry]) -> tuple[list[Entry], list[str]]:
    """The entries of a batch's messages, and the ids of the messages kept unparsed (their
    dead letter could not be written)."""
    entries, kept = [], []
    for request in requests:
        # Each message of the batch is handled under the request id it came with.
        with request_id.bound(request_id.of_message(request.request_dict)) as rid:
            try:
                entry = _parse_one(request, build)
            except Exception as exc:  # the dead-letter folder refused: the message waits
                count_outage(classify(exc), exc)
                kept.append(request.id)
                continue
            if entry is not None:
                entries.append(entry)
                if rid is not None:  # sent over HTTP: one line per message, to follow the request
                    log.info("%s %s: trade %s taken into a batch", request.name, request.id, entry.trade_id)
    return entries, kept


def _parse_one(request: SimpleRequest, build: Callable[..., Entry]) -> Entry | None:
    try:
        _signature(build).bind(request.id, *request.args, **request.kwargs)
    except TypeError as exc:
        log.error("%s %s has wrong arguments, dead-lettered: %s", request.name, request.id, exc)
        dead_letter(f"invalid: {exc}", _call_of(request))
        return None
    try:
        return build(request.id, *request.args, **request.kwargs)
    except Exception as exc:
        if classify(exc).failure is not Failure.UNSTORABLE:
            raise
        problems = describe_errors(exc) if hasattr(exc, "errors") else str(exc)
        log.error("%s %s refused, dead-lettered: %s", request.name, request.id, problems)
        dead_letter(f"invalid: {problems}", _call_of(request))
    return None


@functools.cache
def _signature(build: Callable[..., Entry]) -> inspect.Signature:
    return inspect.signature(build)


def _write(requests: list[SimpleRequest], build: Callable[..., Entry]) -> str | dict[str, list[str]]:
    entries, kept = _parse(requests, build)
    kept += [entry.job_id for entry in persist(entries) if entry.job_id is not None]
    return {"held": kept} if kept else BATCH_DONE


@app.task(name=RECORD_TASK, base=JournalBatches)
def record(requests: list[SimpleRequest]) -> str | dict[str, list[str]]:
    """Insert trades, idempotently: the same record twice is stored once."""
    return _write(requests, record_entry)


@app.task(name=UPDATE_TASK, base=JournalBatches)
def update(requests: list[SimpleRequest]) -> str | dict[str, list[str]]:
    """Apply updates, the newest per field; one that arrives before its trade is kept."""
    return _write(requests, update_entry)


@app.task(name=REPLAY_TASK, ignore_result=False)
def replay_spool() -> dict[str, int] | None:
    """Move spooled entries into the database; beat runs it every few seconds."""
    try:
        report = drain_replay_spool()
    except Exception as exc:
        cause = exc.cause if isinstance(exc, StoredNowhere) else exc
        verdict = classify(cause)  # a database error says so; anything else is the spool's disk
        count_outage(verdict, cause)
        log.warning("replay stopped, %s unavailable (%s): the spool waits", verdict.dependency, brief(cause))
        return None
    if report is None:
        return None  # another process is draining
    if report.applied or report.skipped:
        log.info("replayed %d spooled entries (%d unreadable lines skipped)", report.applied, report.skipped)
    return {"applied": report.applied, "skipped": report.skipped, "segments": report.segments}


@app.task(name=PRUNE_PREDICTIONS_TASK, ignore_result=False)
def prune_predictions() -> dict[str, int] | None:
    """Remove prediction log entries older than PREDICTION_LOG_RETENTION_DAYS; beat runs it hourly."""
    days = worker_settings().prediction_log_retention_days
    if days == 0:
        return None  # kept for ever
    done = _upkeep(
        "prediction log not pruned", lambda: prune_prediction_log(database.session, utc_now(), days)
    )
    if done is None:
        return None
    removed, unit = done
    if removed:
        log.info("prediction log pruned: %d %s older than %d days", removed, unit, days)
    return {unit: removed}


@app.task(name=REFRESH_STATS_TASK, ignore_result=False)
def refresh_stats() -> dict[str, object] | None:
    """Fold the logged changes into the kept statistics (beat runs it every half of
    STATS_MAX_STALENESS_S; another process folding already is left to it), and the
    changed trades into the kept comparisons (`db.compare`)."""
    deadline = time.monotonic() + worker_settings().database_statement_timeout_s
    done = _upkeep(
        "statistics not refreshed",
        lambda: stats.fold_all(
            database.session, utc_now(), wait=False, deadline=deadline, build_beyond=stats.BULK_CHANGES
        ),
    )
    # The comparisons' trades too: a comparison folds what is pending before it answers,
    # so this only keeps the pending few.
    shadow_trades = _upkeep("comparisons not refreshed", lambda: compare.fold_all(database.session, deadline))
    if done is None:
        return None
    metrics.STATS_FOLDED.inc(done.changes)
    if done.built:
        log.info("kept statistics built from the trades: %d close days", done.days)
    return {"changes": done.changes, "days": done.days, "built": done.built, "shadow_trades": shadow_trades}


@app.task(name=COMPRESS_CHUNKS_TASK, ignore_result=False)
def compress_chunks() -> dict[str, int] | None:
    """Convert the TimescaleDB chunks past their age to the columnstore (beat, hourly; a
    no-op on plain PostgreSQL)."""
    ages = Ages.of(worker_settings())
    converted = _upkeep(
        "chunks not converted", lambda: maintenance.compress_due(database.session, utc_now(), ages)
    )
    for table, count in (converted or {}).items():
        metrics.CHUNKS_CONVERTED.labels(table=table).inc(count)
    if converted:
        log.info("converted to the columnstore: %s", ", ".join(f"{n} {t}" for t, n in converted.items()))
    return converted


def _upkeep(failed: str, work: Callable[[], Any]) -> Any:
    """One run of beat's upkeep. A dependency that does not answer is counted as an outage
    and logged (`failed`, then why); the next run tries again."""
    try:
        return work()
    except Exception as exc:
        verdict = classify(exc, talking_to="database")
        count_outage(verdict, exc)
        log.warning(
            "%s, %s unavailable (%s): the next run tries again", failed, verdict.dependency, brief(exc)
        )
        return None
    finally:
        database.session.remove()


def _dead_letter_poison(request: SimpleRequest, deliveries: int) -> None:
    dead_letter(f"poison: its worker died {deliveries} times while writing it", _call_of(request))


JournalBatches.on_poison = staticmethod(_dead_letter_poison)
