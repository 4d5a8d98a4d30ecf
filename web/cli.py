"""`flask --app web trades import PATH`: bring a file-based trade journal into the database."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from flask.cli import AppGroup, with_appcontext
from pydantic import ValidationError
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from db.entries import RecordEntry
from db.extension import database
from db.record import TradeRecord, describe_errors
from db.repository import TradeRepository
from models.store import ModelStore
from web.settings import current_settings

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


@click.command("create-database")
@with_appcontext  # reads the app's settings
def create_database() -> None:
    """Create the database named in DATABASE_URL if it does not exist yet."""
    url = make_url(current_settings().database_url)
    maintenance = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with maintenance.connect() as connection:
            exists = connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            )
            if exists:
                click.echo(f"database {url.database!r} exists")
                return
            # CREATE DATABASE takes no bind parameters; the name is quoted by the dialect.
            quoted = connection.dialect.identifier_preparer.quote(url.database)
            connection.execute(text(f"CREATE DATABASE {quoted}"))
            click.echo(f"database {url.database!r} created")
    except OperationalError as exc:
        where = url.render_as_string(hide_password=True)
        raise click.ClickException(
            f"PostgreSQL does not answer at {where}: {exc.orig}\n"
            "Start it (Debian: pg_ctlcluster 15 main start; compose: docker compose up -d db) "
            "or point DATABASE_URL at a running server."
        ) from exc
    finally:
        maintenance.dispose()


models_cli = AppGroup("models", help="Model store commands.")


@models_cli.command("train-demo")
@click.option("--if-empty", is_flag=True, help="Only when MODEL_DIR holds no model yet.")
def train_demo_models(if_empty: bool) -> None:
    """Train small XGBoost, LightGBM and LSTM demo models into MODEL_DIR."""
    settings = current_settings()
    if if_empty and ModelStore(settings.model_dir, allow_pickle=settings.allow_pickle_models).list():
        click.echo(f"{settings.model_dir} already holds models; no demo models trained")
        return
    from models.training import train_demo  # imports the ML libraries: only for this command

    for path in train_demo(settings.model_dir, progress=click.echo):
        click.echo(f"wrote {path}")


@models_cli.command("list")
def list_models() -> None:
    """List the models in MODEL_DIR (name, type, version, size)."""
    store = ModelStore(current_settings().model_dir, allow_pickle=current_settings().allow_pickle_models)
    files = store.list()
    if not files:
        click.echo(f"no models in {store.directory}; try: flask --app web models train-demo")
    for file in files:
        facts = file.to_dict()
        click.echo(
            f"{file.name:<32} {file.type:<9} {file.format:<12} {file.version}  "
            f"{facts['size_mb']:>8.3f} MB  {facts['modified']}"
        )
