"""The web's commands: `trades import`, `create-database`, `models train-demo` / `list`."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext
from pydantic import ValidationError
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from db import Ages, maintenance, stats, timeouts
from models import ModelArchive, ModelError, ModelStore, check_name
from models.sidecar import sidecar_path
from tasks.client import TradeJournal
from tasks.contract import OUTBOX_SPOOL
from web import releases, trade_import
from web.errors import ApiError
from web.settings import current_settings
from web.trade_import import count

trades_cli = AppGroup("trades", help="Trade journal commands.")

REFUSED_SHOWN = 20
NOT_STORED_HINT = (
    "are the trades workers running? See /readyz (its `workers` check) or "
    "`celery -A tasks inspect ping`. The messages stay queued and are stored once a worker "
    "takes them; a record the database itself refuses is dead-lettered (SPOOL_DIR/dead-letter "
    "on the worker's host)"
)
OUTBOX_HINT = (
    "the broker did not take them; they wait in {outbox} and are sent, in order, once it "
    "answers: by this import while it waits, by the next import (before its own entries), or "
    "by a web server or bot started with this SPOOL_DIR"
)


@trades_cli.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--naive-as-utc",
    is_flag=True,
    help="Read timestamps without a UTC offset as UTC (by default they are rejected).",
)
@click.option(
    "--wait-s",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="How long to wait for the workers to store the imported records.",
)
@click.option("--no-wait", is_flag=True, help="Return once everything is sent; do not wait for the database.")
@click.option(
    "--show-refused",
    type=click.IntRange(min=0),
    default=REFUSED_SHOWN,
    show_default=True,
    help="How many refused entries to list (0: all).",
)
def import_trades(path: Path, naive_as_utc: bool, wait_s: float, no_wait: bool, show_refused: int) -> None:
    """Import trades from PATH: a .json/.jsonl file, or a directory of them.

    A .json file holds one record, a list of records, or {"trades": [...]}; a .jsonl
    file holds one item per line: a record, a spool line ({"kind": "record"|"update",
    ...}, as in an outbox) or a dead letter ({"reason", "at", "payload"}). Each entry is
    validated here and sent to the workers as trades.record / trades.update, keeping its
    job_id; the command then waits until the records are stored. Importing the same
    files again stores nothing twice.
    """
    files = trade_import.files_of(path)
    items, unreadable = trade_import.read_items(files)
    for problem in unreadable:
        click.echo(f"  cannot read {problem}", err=True)
    if unreadable:
        raise click.ClickException(f"{len(unreadable)} of {len(files)} files unreadable; nothing was sent")
    if not items:
        raise click.ClickException(f"no entries in {path} (files read: {len(files)}); nothing was sent")

    journal: TradeJournal = current_app.extensions["trade_journal"]
    sent = trade_import.send_all(journal, items, naive_as_utc)
    records, updates = count(len(sent.records), "record"), count(sent.updates, "update")
    click.echo(
        f"valid {sent.journaled} ({records}, {updates}): sent {sent.journaled - sent.kept}, "
        f"kept in the outbox {sent.kept}; refused {len(sent.refused)}"
    )
    trade_import.show_refused(sent.refused, show_refused)
    outbox = current_settings().spool_dir / OUTBOX_SPOOL
    if sent.kept:
        click.echo(f"{count(sent.kept, 'entry')} kept in the outbox: " + OUTBOX_HINT.format(outbox=outbox))
    if sent.unavailable is not None:
        raise click.ClickException(
            f"stopped at {sent.unavailable}; {sent.not_sent} entries from there on were not sent "
            "(importing again once the broker or the outbox's disk is back stores nothing twice)"
        )
    if not sent.journaled:
        raise click.ClickException(f"nothing valid to import in {path}; nothing was sent")
    if no_wait:
        if sent.kept:
            raise click.ClickException(f"{count(sent.kept, 'entry')} in the outbox, not sent yet")
        return

    waited = trade_import.wait_until_stored(journal, sent.records, wait_s)
    click.echo(
        f"stored {waited.stored} of {records}; {updates} enqueued "
        "(the workers apply them; they are not counted here)"
    )
    trade_import.show_refused(waited.conflicts, show_refused, " (the worker dead-letters it as a conflict)")
    if waited.pending or waited.outbox:
        why = []
        if waited.outbox:
            why.append(f"{count(waited.outbox, 'entry')} in the outbox: {OUTBOX_HINT.format(outbox=outbox)}")
        if waited.database_error is not None:
            why.append(f"the database does not answer ({waited.database_error})")
        elif waited.pending:
            why.append(NOT_STORED_HINT)
        not_stored = f"after {wait_s:g}s, {waited.pending} of {records} not stored yet"
        raise click.ClickException(f"{not_stored}: {'; '.join(why)}")
    if waited.conflicts:
        raise click.ClickException(
            f"{count(len(waited.conflicts), 'record')} not imported: the journal holds "
            "the trade with other opening fields (listed above)"
        )


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


stats_cli = AppGroup("stats", help="Kept statistics commands.")
storage_cli = AppGroup("storage", help="Storage upkeep commands (TimescaleDB's columnstore).")


@contextmanager
def upkeep_session() -> Iterator[Session]:
    """A session for upkeep that may read the whole journal: no statement timeout, no
    client deadline (the web's own connections keep WEB_STATEMENT_TIMEOUT_S)."""
    timeouts.configure(None)
    engine = create_engine(
        current_settings().database_url,
        connect_args={"options": "-c statement_timeout=0", "connect_timeout": 5},
    )
    try:
        with Session(engine) as session:
            yield session
    except OperationalError as exc:
        raise click.ClickException(f"the database does not answer: {exc.orig}") from exc
    finally:
        engine.dispose()


@stats_cli.command("refresh")
@click.option("--rebuild", is_flag=True, help="Build everything from the trades again, whatever is kept.")
def refresh_stats(rebuild: bool) -> None:
    """Bring the kept statistics up to date at once (loaders, restores, tests).

    Folds every change the journal logged and moves the watermark to the last full hour;
    builds everything from the trades where nothing is built yet (after the migration)
    or with --rebuild. Without it, statistics lag at most STATS_MAX_STALENESS_S.
    """
    with upkeep_session() as session:
        now = session.scalar(select(func.now()))
        if rebuild:
            stats.build(session, now, progress=lambda line: click.echo(f"  {line}"))
        done = stats.fold_all(session, now, build_beyond=stats.BULK_CHANGES)
        standing = stats.state(session)
    if rebuild or (done is not None and done.built):
        click.echo(f"built from the trades at {standing.built_at:%Y-%m-%d %H:%M:%S}")
    if done is not None and not done.built:
        click.echo(f"folded {done.changes} logged changes; recomputed {done.days} close days")
    click.echo(f"watermark {standing.watermark:%Y-%m-%d %H:%M} UTC; {standing.pending} changes wait")


@storage_cli.command("compress")
@click.option(
    "--older-than-days",
    type=click.IntRange(min=0),
    default=None,
    help="Convert chunks older than this many days, whatever TRADES_COMPRESS_AFTER_DAYS and "
    "PREDICTION_LOG_COMPRESS_AFTER_DAYS say.",
)
def compress_storage(older_than_days: int | None) -> None:
    """Convert TimescaleDB chunks past their age to the columnstore now (beat does it hourly).

    Nothing to do on plain PostgreSQL."""
    ages = Ages.of(current_settings())
    if older_than_days is not None:
        age = timedelta(days=older_than_days)
        ages = Ages(age, age, ages.retention)
    with upkeep_session() as session:
        now = session.scalar(select(func.now()))
        converted = maintenance.compress_due(session, now, ages)
        standing = maintenance.status(session, now, ages, current_settings().stats_max_staleness_s)
    tables = standing["columnstore"]["tables"]
    if not tables:
        click.echo(standing["columnstore"].get("note", "no hypertable has the columnstore"))
        return
    for name, table in tables.items():
        click.echo(
            f"{name}: {table['compressed']} of {table['chunks']} chunks in the columnstore"
            f" ({converted.get(name, 0)} converted now, {table['due']} due)"
        )


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


# -- releases (the same changes as the routes of web/releases.py) ---------------------


def _operator() -> str:
    """Who changes a release from the command line: the operating system's user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for the uid (a container's)
        return f"cli:uid-{os.getuid()}"


def _release_command(change: Callable[[], dict]) -> None:
    try:
        release = change()
    except ApiError as error:
        raise click.ClickException(f"{error.message} ({error.code})") from None
    except ModelError as error:
        raise click.ClickException(error.message) from None
    except SQLAlchemyError as exc:
        raise click.ClickException(f"the database cannot take the change: {exc.__class__.__name__}") from None
    click.echo(json.dumps(release, default=str, indent=2))


@models_cli.command("release")
@click.argument("name")
@click.option("--challenger", metavar="VERSION", help="A kept version (see GET .../versions).")
@click.option("--clear", is_flag=True, help="Remove the challenger.")
@click.option("--mode", type=click.Choice(["shadow", "canary"]), help="shadow: logged only; canary: answers.")
@click.option("--percent", type=click.IntRange(1, 100), help="A canary's share of requests.")
@click.option("--reason", required=True, help="Why; kept in the release's history.")
def release_model(
    name: str, challenger: str | None, clear: bool, mode: str | None, percent: int | None, reason: str
) -> None:
    """Set (or --clear) the challenger of model NAME."""
    if clear == (challenger is not None):
        raise click.UsageError("give --challenger VERSION or --clear")
    try:
        change = releases.ReleaseChange(challenger=challenger, mode=mode, percent=percent, reason=reason)
    except ValidationError as exc:
        raise click.UsageError("; ".join(error["msg"] for error in exc.errors())) from None
    _release_command(lambda: releases.change_release(name, change, _operator()))


@models_cli.command("promote")
@click.argument("name")
@click.option("--reason", required=True, help="Why; kept in the release's history.")
def promote_model(name: str, reason: str) -> None:
    """Make the challenger of model NAME its champion (once every live worker holds it)."""
    _release_command(lambda: releases.promote(name, reason, _operator()))


@models_cli.command("rollback")
@click.argument("name")
@click.option("--reason", required=True, help="Why; kept in the release's history.")
def rollback_model(name: str, reason: str) -> None:
    """Clear the challenger of model NAME, or restore the champion before the last promotion."""
    _release_command(lambda: releases.rollback(name, reason, _operator()))


@models_cli.command("keep")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def keep_model_version(name: str, path: Path) -> None:
    """Add the model file PATH to the kept versions of model NAME, without serving it: a
    challenger to set with `models release` (prints its version). Its sidecar
    (PATH.meta.json), if any, is kept with it. Runs where MODEL_ARCHIVE_DIR is writable
    (compose: the worker-predict container)."""
    settings = current_settings()
    try:
        check_name(name)
    except ModelError as error:
        raise click.BadParameter(error.message, param_hint="NAME") from None
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging) / name
        shutil.copyfile(path, staged)
        if sidecar_path(path).is_file():
            shutil.copyfile(sidecar_path(path), sidecar_path(staged))
        try:
            file = ModelStore(staging, allow_pickle=settings.allow_pickle_models).resolve(name)
        except ModelError as error:
            raise click.ClickException(f"{path} is not a model served as {name}: {error.message}") from None
        archive = ModelArchive(settings.model_archive, keep=settings.model_versions_kept)
        if not archive.keep_version(file):
            raise click.ClickException(f"{archive.directory} did not take the version (see the log above)")
    click.echo(file.version)
