"""`flask --app web trades import PATH`: bring a file-based trade journal into the database."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from flask.cli import AppGroup
from pydantic import ValidationError

from db.entries import RecordEntry
from db.extension import database
from db.record import TradeRecord, describe_errors
from db.repository import TradeRepository

trades_cli = AppGroup("trades", help="Trade journal commands.")

BATCH_SIZE = 500
_HAS_OFFSET = re.compile(r"(Z|[+-]\d\d:?\d\d)$")
_TIMESTAMPS = ("timestamp", "close_timestamp")


@trades_cli.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--naive-as-utc",
    is_flag=True,
    help="Read timestamps without a UTC offset as UTC (by default they are rejected).",
)
def import_trades(path: Path, naive_as_utc: bool) -> None:
    """Import trades from PATH: a .json/.jsonl file, or a directory of them.

    A .json file holds one record, a list of records, or {"trades": [...]}; a .jsonl
    file holds one record per line. Importing the same files again changes nothing.
    """
    files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl")) if path.is_dir() else [path]
    items = [item for file in files for item in _items_of(file)]
    totals: Counter[str] = Counter()
    rejected: list[str] = []
    batch: list[RecordEntry] = []
    repository = TradeRepository(database.session)
    with click.progressbar(items, label=f"Importing {len(items)} records", show_pos=True) as bar:
        for where, raw in bar:
            entry = _entry_of(raw, naive_as_utc)
            if isinstance(entry, str):
                rejected.append(f"{where}: {entry}")
                continue
            batch.append(entry)
            if len(batch) >= BATCH_SIZE:
                _write(repository, batch, totals, rejected)
                batch = []
        _write(repository, batch, totals, rejected)
    click.echo(
        f"imported {totals['imported']}, already present {totals['present']}, rejected {len(rejected)}"
    )
    for reason in rejected:
        click.echo(f"  rejected {reason}", err=True)
    if rejected:
        raise SystemExit(1)


def _items_of(file: Path) -> Iterator[tuple[str, Any]]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        yield str(file), exc
        return
    if file.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield f"{file}:{number}", _loads(line)
        return
    document = _loads(text)
    if isinstance(document, dict) and isinstance(document.get("trades"), list):
        document = document["trades"]
    for index, item in enumerate(document if isinstance(document, list) else [document]):
        yield f"{file}[{index}]", item


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        return exc


def _entry_of(raw: Any, naive_as_utc: bool) -> RecordEntry | str:
    if isinstance(raw, Exception):
        return f"unreadable: {raw}"
    if naive_as_utc and isinstance(raw, dict):
        raw = {
            key: f"{value}+00:00"
            if key in ("timestamp", "close_timestamp")
            and isinstance(value, str)
            and not _HAS_OFFSET.search(value)
            else value
            for key, value in raw.items()
        }
    try:
        return RecordEntry(TradeRecord.from_dict(raw))
    except ValidationError as exc:
        return "; ".join(f"{p['field']}: {p['message']}" for p in describe_errors(exc))


def _write(
    repository: TradeRepository, batch: list[RecordEntry], totals: Counter, rejected: list[str]
) -> None:
    if not batch:
        return
    outcome = repository.write(batch)
    totals["imported"] += len(outcome.inserted)
    totals["present"] += len(outcome.duplicates)
    for conflict in outcome.conflicts:
        differing = ", ".join(conflict.differing_fields())
        rejected.append(f"trade {conflict.record.trade_id}: already stored with different {differing}")
