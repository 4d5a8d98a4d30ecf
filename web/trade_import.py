"""`flask --app web trades import PATH`: a file-based journal, sent through the journal's own path.

Every item of the files becomes a journal entry, validated at the door as the bot's client
validates it, and is sent with `TradeJournal.send` as a `trades.record` / `trades.update`
message: the workers batch it, retry, spool and dead-letter it like any other, and their
write is idempotent, so importing a file again stores nothing twice. An item is

* a trade record (a `.json` file's record, list or `{"trades": [...]}`; a `.jsonl` line);
* a spool line (`db.entries`: `{"kind": "record" | "update", ..., "job_id"?}`), from an
  outbox or a replay spool;
* a dead letter as workers write it (`{"reason", "at", "payload"}`), whose payload is an
  entry's JSON or a task call (`{"task", "id", "args", "kwargs"}`).

An entry keeps its `job_id` (a call's `id`): the same line imported again is the same
message. A record must carry its `trade_id` and `timestamp`, as a record sent by name
must (`tasks.contract.messages`): defaults made at each import would store it again.
A payload that was sanitized (JSON could not hold it as it came) is refused, as is a
message Celery could not run: neither is the entry that was sent.

The web never writes the journal: it only reads it back (`db.repository`) to wait until
the imported records are stored.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from db import (
    Conflict,
    Entry,
    RecordEntry,
    TradeRepository,
    UnstorableEntry,
    UpdateEntry,
    database,
    describe_errors,
    entry_from_json,
)
from tasks.client import JournalUnavailable, TradeJournal
from tasks.contract import brief, entry_json_of_call, record_entry

SUFFIXES = (".json", ".jsonl")
MAX_JOB_ID = 255
READ_CHUNK = 1000  # trade ids per query while waiting
FIRST_POLL_S = 0.1
MAX_POLL_S = 2.0
_HAS_OFFSET = re.compile(r"(Z|[+-]\d\d:?\d\d)$")
# Where an entry's JSON holds times that --naive-as-utc reads as UTC.
_TIMES = {"trade": ("timestamp", "close_timestamp"), "updates": ("close_timestamp", "updated_at")}


class NotJson(ValueError):
    """A line (or a file) that is not strict JSON."""


# -- reading the files ----------------------------------------------------------------


def files_of(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES)


def read_items(files: Sequence[Path]) -> tuple[list[tuple[str, Any]], list[str]]:
    """The items of the files, each with where it is (`file:line`, `file[index]`); and the
    files that could not be read at all (unreadable, or a .json file that is not JSON)."""
    items, unreadable = [], []
    for file in files:
        try:
            items.extend(_items_of(file))
        except (OSError, UnicodeDecodeError, NotJson) as exc:
            unreadable.append(f"{file}: {exc}")
    return items, unreadable


def _items_of(file: Path) -> list[tuple[str, Any]]:
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".jsonl":
        return [
            (f"{file}:{number}", _loads_or_error(line))
            for number, line in enumerate(text.splitlines(), start=1)
            if line.strip()
        ]
    try:
        document = loads(text)
    except NotJson as exc:
        raise NotJson(f"not JSON: {exc}") from None
    if isinstance(document, dict) and isinstance(document.get("trades"), list):
        document = document["trades"]
    return [(f"{file}[{index}]", item) for index, item in enumerate(_as_list(document))]


def _as_list(document: Any) -> list[Any]:
    return document if isinstance(document, list) else [document]


def loads(text: str) -> Any:
    """Strict JSON: NaN and Infinity are not JSON, and nesting deeper than the parser
    goes is refused, not a crash."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise NotJson("nested too deep") from None
    except ValueError as exc:
        raise NotJson(str(exc)) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _loads_or_error(line: str) -> Any:
    try:
        return loads(line)
    except NotJson as exc:
        return exc


# -- items into entries ---------------------------------------------------------------


def entry_of(item: Any, naive_as_utc: bool = False) -> Entry:
    """The journal entry an item stands for, validated; raises ValueError (a pydantic
    ValidationError, UnstorableEntry, NotJson) saying why it cannot be imported."""
    if isinstance(item, NotJson):
        raise NotJson(f"not JSON: {item}")
    line = _entry_json(item)
    job_id = line.get("job_id")
    if job_id is not None and not (
        isinstance(job_id, str) and 0 < len(job_id) <= MAX_JOB_ID and job_id.isprintable()
    ):
        raise UnstorableEntry(f"job_id must be a string of 1 to {MAX_JOB_ID} printable characters")
    if naive_as_utc:
        line = _naive_as_utc(line)
    if line.get("kind") == "record":
        return record_entry(job_id, line.get("trade"))  # with its trade_id and timestamp
    return entry_from_json(line)


def _entry_json(item: Any) -> dict[str, Any]:
    """An item as an entry's JSON (a spool line), not validated yet."""
    if not isinstance(item, dict):
        raise UnstorableEntry("not a JSON object (a trade record, a spool line or a dead letter)")
    if "reason" in item and "payload" in item:  # a dead letter: what it kept is the entry
        item = _payload_of(item)
    if "kind" in item:
        return item
    if "task" in item:
        return entry_json_of_call(item["task"], item.get("id"), item.get("args", []), item.get("kwargs", {}))
    return {"kind": "record", "trade": item}


def _payload_of(letter: dict[str, Any]) -> dict[str, Any]:
    payload, reason = letter["payload"], str(letter["reason"])[:200]
    if isinstance(payload, dict) and payload.get("sanitized") is True:
        raise UnstorableEntry(
            f"dead letter ({reason}) whose payload was sanitized (NaN, bytes or depth kept as "
            "text): it is not what was sent; fix it and import the fixed entry"
        )
    if isinstance(payload, dict) and "body" in payload and "args" not in payload:
        raise UnstorableEntry(
            f"dead letter ({reason}) of a message Celery could not run "
            f"(content type {payload.get('content_type')!r}): it holds no entry"
        )
    if not isinstance(payload, dict) or not ("kind" in payload or "task" in payload):
        raise UnstorableEntry(f"dead letter ({reason}) whose payload is neither an entry nor a task call")
    return payload


def _naive_as_utc(line: dict[str, Any]) -> dict[str, Any]:
    fixed = dict(line)
    for key, names in _TIMES.items():
        fields = line.get(key)
        if isinstance(fields, dict):
            fixed[key] = {
                name: f"{value}+00:00"
                if name in names and isinstance(value, str) and not _HAS_OFFSET.search(value)
                else value
                for name, value in fields.items()
            }
    return fixed


def reason_of(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{p['field']}: {p['message']}" for p in describe_errors(error, root="entry"))
    return str(error)


# -- sending --------------------------------------------------------------------------


@dataclass
class SendReport:
    records: list[RecordEntry] = field(default_factory=list)  # sent or kept in the outbox
    updates: int = 0
    kept: int = 0  # of them, in the outbox: the broker did not take them
    refused: list[str] = field(default_factory=list)
    unavailable: str | None = None  # JournalUnavailable: what stopped the import
    not_sent: int = 0  # items left when it stopped

    @property
    def journaled(self) -> int:
        return len(self.records) + self.updates


def send_all(journal: TradeJournal, items: Sequence[tuple[str, Any]], naive_as_utc: bool) -> SendReport:
    """Validate and send every item, with a progress bar; stops at JournalUnavailable."""
    report = SendReport()
    with click.progressbar(items, label=f"Importing {count(len(items), 'entry')}", show_pos=True) as bar:
        for done, (where, item) in enumerate(bar):
            try:
                entry = entry_of(item, naive_as_utc)
            except (ValueError, RecursionError) as exc:
                report.refused.append(f"{where}: {reason_of(exc)}")
                continue
            try:
                enqueued = journal.send(entry)
            except JournalUnavailable as exc:
                report.unavailable = f"{where}: {exc}"
                report.not_sent = len(items) - done
                break
            report.kept += enqueued.spooled
            if isinstance(entry, UpdateEntry):
                report.updates += 1
            else:
                report.records.append(entry)
    return report


# -- waiting until stored -------------------------------------------------------------


@dataclass
class WaitReport:
    stored: int = 0
    conflicts: list[str] = field(default_factory=list)
    pending: int = 0  # records not in the database yet
    outbox: int = 0  # entries still in the outbox
    database_error: str | None = None


def wait_until_stored(journal: TradeJournal, records: Sequence[RecordEntry], wait_s: float) -> WaitReport:
    """Poll the database (bounded backoff) until every record is stored, or stored with
    other opening fields (a conflict: the worker dead-letters it), and the outbox is empty."""
    report = WaitReport()
    pending: dict[str, list[RecordEntry]] = {}
    for entry in records:
        pending.setdefault(entry.trade_id, []).append(entry)
    deadline = time.monotonic() + wait_s
    delay = FIRST_POLL_S
    label = f"Waiting up to {wait_s:g}s for the workers to store {count(len(records), 'record')}"
    with click.progressbar(length=len(records), label=label, show_pos=True) as bar:
        while True:
            before = report.stored + len(report.conflicts)
            _settle(pending, report)
            bar.update(report.stored + len(report.conflicts) - before)
            report.outbox = journal.waiting
            remaining = deadline - time.monotonic()
            if (not pending and report.outbox == 0) or remaining <= 0:
                break
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_POLL_S)
    report.pending = sum(len(entries) for entries in pending.values())
    return report


def _settle(pending: dict[str, list[RecordEntry]], report: WaitReport) -> None:
    """Take the records found in the database out of `pending` (read only)."""
    repository = TradeRepository(database.session)
    try:
        ids = list(pending)
        for start in range(0, len(ids), READ_CHUNK):
            for trade_id, stored in repository.opening_fields_of(ids[start : start + READ_CHUNK]).items():
                for entry in pending.pop(trade_id):
                    differing = Conflict(entry, stored).differing_fields()
                    if not differing:
                        report.stored += 1
                        continue
                    report.conflicts.append(
                        f"trade {trade_id}: already stored with different {', '.join(differing)}"
                    )
        report.database_error = None
    except SQLAlchemyError as exc:  # down, silent, mid-migration: try again on the next poll
        report.database_error = brief(exc)
    finally:
        database.session.remove()


def count(number: int, noun: str) -> str:
    """`1 record`, `2 records`; `1 entry`, `2 entries`."""
    if number == 1:
        return f"1 {noun}"
    return f"{number} {noun[:-1]}ies" if noun.endswith("y") else f"{number} {noun}s"


def show_refused(lines: Sequence[str], show: int, after: str = "") -> None:
    """List the first `show` refusals (all for 0) on stderr, then how many more there are."""
    shown = lines if show == 0 else lines[:show]
    for line in shown:
        click.echo(f"  refused {line}{after}", err=True)
    if len(lines) > len(shown):
        click.echo(f"  ... and {len(lines) - len(shown)} more (--show-refused 0 lists all)", err=True)
