"""The migrations on a database of their own: upgrade, downgrade, upgrade, and nothing to autogenerate.

The suite runs against whichever server TEST_PG_ADMIN_URL names, and every test here asserts
what is right for that server, which is one of three kinds (found with plain SQL below,
not with the code under test):

- "absent": no TimescaleDB package (a plain PostgreSQL, such as the default 127.0.0.1:5432);
- "preloaded": TimescaleDB installed and in shared_preload_libraries: a hypertable;
- "not_preloaded": installed but not preloaded, where CREATE EXTENSION would be a FATAL
  error: a plain table and one warning naming shared_preload_libraries.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from db.timescale import (
    TimescaleState,
    classify,
    include_name,
    include_object,
    preload_lists_timescaledb,
    timescale_status,
)
from tests.conftest import PG_ADMIN_URL
from tests.support.processes import flask

JOURNAL_TABLES = {
    "trade_history",
    "trade_pending_updates",
    "prediction_log",
    "prediction_counts",
    # the kept statistics (migration 004)
    "trade_stats_changes",
    "trade_stats_buckets",
    "trade_closes",
    "trade_stats_segments",
    "trade_stats_profiles",
    "trade_stats_state",
    "trade_ids",  # migration 006
    "model_release_state",  # migration 007
    "model_releases",
    # the kept comparison (migration 008)
    "shadow_experiments",
    "shadow_pair_sums",
    "shadow_links",
    "shadow_trades",
    "shadow_trade_sums",
    "shadow_trade_changes",
}
ROOT = Path(__file__).resolve().parent.parent
ENABLED = "TimescaleDB enabled: trade_history is a hypertable on timestamp"
NOT_INSTALLED = "TimescaleDB is not installed on this server: trade_history is a plain PostgreSQL table"


@pytest.fixture(scope="module")
def server() -> str:
    """'absent', 'preloaded' or 'not_preloaded': what the server under test is."""
    admin = create_engine(PG_ADMIN_URL)
    try:
        with admin.connect() as connection:
            available = connection.scalar(
                text("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
            )
            preload = connection.scalar(text("SHOW shared_preload_libraries"))
    finally:
        admin.dispose()
    if not available:
        return "absent"
    libraries = [entry.strip().strip('"') for entry in preload.split(",")]
    return "preloaded" if "timescaledb" in libraries else "not_preloaded"


@pytest.fixture
def scratch_database(tmp_path) -> Iterator[tuple[str, dict[str, str]]]:
    name = f"tradebot_migrations_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(False)
    try:
        yield url, {**os.environ, "DATABASE_URL": url}
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def query(url: str, sql: str):
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.scalar(text(sql))
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def extension_created(url: str) -> bool:
    return bool(query(url, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"))


def hypertable_dimension(url: str, table: str = "trade_history") -> str | None:
    """The table's time column if it is a hypertable (TimescaleDB's own catalog), else None."""
    if not extension_created(url):
        return None
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.scalar(
                text(
                    "SELECT d.column_name FROM timescaledb_information.hypertables h"
                    " JOIN timescaledb_information.dimensions d USING (hypertable_schema, hypertable_name)"
                    " WHERE h.hypertable_schema = 'public' AND h.hypertable_name = :table"
                ),
                {"table": table},
            )
    finally:
        engine.dispose()


def lines(output: str, start: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(start)]


def assert_auto_outcome(server: str, url: str, stderr: str) -> None:
    """What `db upgrade` with TIMESCALEDB=auto must have done on this kind of server."""
    assert "Traceback" not in stderr
    assert tables(url) == JOURNAL_TABLES
    warnings = lines(stderr, "WARN")
    if server == "preloaded":
        assert hypertable_dimension(url) == "timestamp"
        assert hypertable_dimension(url, "prediction_log") == "created_at"
        assert hypertable_dimension(url, "trade_closes") == "closed_at"
        assert ENABLED in stderr
        assert "prediction_log is a hypertable on created_at" in stderr
        assert warnings == []
    elif server == "not_preloaded":
        assert not extension_created(url)  # never tried: CREATE EXTENSION would be FATAL here
        assert len(warnings) == 1, stderr
        assert "shared_preload_libraries" in warnings[0]
        assert "trade_history is a plain PostgreSQL table" in warnings[0]
        assert "restart PostgreSQL" in warnings[0]
    else:
        assert not extension_created(url)
        assert len(warnings) == 1, stderr
        assert NOT_INSTALLED in warnings[0]
    if server != "preloaded":
        assert "prediction_log is a plain PostgreSQL table, as trade_history is" in stderr


def test_the_server_kind_is_what_timescale_status_reports(server, scratch_database):
    url, _ = scratch_database
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            status = timescale_status(connection)
    finally:
        engine.dispose()
    expected = {
        "absent": TimescaleState.NOT_INSTALLED,
        "preloaded": TimescaleState.READY,
        "not_preloaded": TimescaleState.NOT_PRELOADED,
    }[server]
    assert status.state is expected
    assert status.usable is (server == "preloaded")
    assert status.created_version is None  # a fresh database
    if server == "not_preloaded":
        assert "shared_preload_libraries" in status.reason
        assert "restart PostgreSQL" in status.fix
    if server == "preloaded":
        assert status.fix is None


def test_upgrade_downgrade_upgrade_round_trip(server, scratch_database, tmp_path):
    url, env = scratch_database
    first = flask(["db", "upgrade"], env, tmp_path)
    assert_auto_outcome(server, url, first.stderr)

    down = flask(["db", "downgrade", "base"], env, tmp_path)
    assert "Traceback" not in down.stderr
    assert tables(url) == set()
    # The extension stays (other tables of the database may use it); the table went.
    assert extension_created(url) is (server == "preloaded")

    again = flask(["db", "upgrade"], env, tmp_path)
    assert_auto_outcome(server, url, again.stderr)
    engine = create_engine(url)
    with engine.connect() as connection:
        key = inspect(connection).get_pk_constraint("trade_history")["constrained_columns"]
        log_key = inspect(connection).get_pk_constraint("prediction_log")["constrained_columns"]
    engine.dispose()
    assert key == ["trade_id", "timestamp"]  # a hypertable's key must hold its time column
    assert log_key == ["prediction_id", "created_at"]


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_the_models_and_the_migrations_agree(server, scratch_database, tmp_path, mode):
    url, env = scratch_database
    env = {**env, "TIMESCALEDB": mode}
    upgrade = flask(["db", "upgrade"], env, tmp_path)
    if mode == "auto":
        assert_auto_outcome(server, url, upgrade.stderr)  # a hypertable, where the server has one
    check = flask(["db", "check"], env, tmp_path)
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_timescaledb_require(server, scratch_database, tmp_path):
    """A hypertable where the server preloads TimescaleDB; elsewhere one clear line, nothing half done."""
    url, env = scratch_database
    result = flask(["db", "upgrade"], {**env, "TIMESCALEDB": "require"}, tmp_path, check=False)
    assert "Traceback" not in result.stderr
    if server == "preloaded":
        assert result.returncode == 0, result.stderr
        assert tables(url) == JOURNAL_TABLES
        assert hypertable_dimension(url) == "timestamp"
        assert ENABLED in result.stderr
        return
    assert result.returncode != 0
    errors = lines(result.stderr, "ERROR")
    assert len(errors) == 1, result.stderr
    assert "TIMESCALEDB=require cannot be met" in errors[0]
    if server == "not_preloaded":
        assert "not preloaded" in errors[0]
        assert "add 'timescaledb' to shared_preload_libraries" in errors[0]
        assert "restart PostgreSQL" in errors[0]
    else:
        assert "no timescaledb extension" in errors[0]
        assert "install TimescaleDB" in errors[0]
    assert tables(url) == set()  # the DDL ran in one transaction and was rolled back
    assert not extension_created(url)


def test_timescaledb_off_says_so(server, scratch_database, tmp_path):
    url, env = scratch_database
    result = flask(["db", "upgrade"], {**env, "TIMESCALEDB": "off"}, tmp_path)
    assert "TIMESCALEDB=off: trade_history is a plain PostgreSQL table" in result.stderr
    assert lines(result.stderr, "WARN") == []
    assert tables(url) == JOURNAL_TABLES
    assert not extension_created(url)  # not even where the server could have made a hypertable


# The not-preloaded decision, on every server: what `timescale_status` concludes from what
# a server reports, and what migration 001 does with that conclusion. On a not-preloaded
# server the tests above also produce it for real.


@pytest.mark.parametrize(
    ("shared_preload_libraries", "loader_present", "created", "state"),
    [
        ("", False, None, TimescaleState.NOT_PRELOADED),
        ("pg_stat_statements", False, None, TimescaleState.NOT_PRELOADED),
        ("timescaledb_toolkit", False, None, TimescaleState.NOT_PRELOADED),
        (None, False, None, TimescaleState.NOT_PRELOADED),  # unreadable by this role, no loader
        ("", False, "2.27.2", TimescaleState.NOT_PRELOADED),  # created, then the preload went
        ("timescaledb", False, None, TimescaleState.READY),
        ("pg_stat_statements, timescaledb", False, None, TimescaleState.READY),
        ('"timescaledb",pg_stat_statements', False, None, TimescaleState.READY),
        ("$libdir/timescaledb", False, None, TimescaleState.READY),
        ("timescaledb.so", False, "2.27.2", TimescaleState.READY),
        (None, True, None, TimescaleState.READY),  # unreadable, but the loader's settings exist
    ],
)
def test_the_decision_for_an_installed_timescaledb(shared_preload_libraries, loader_present, created, state):
    status = classify("2.27.2", created, shared_preload_libraries, loader_present)
    assert status.state is state
    assert status.usable is (state is TimescaleState.READY)
    assert status.preloaded is (state is TimescaleState.READY)
    assert preload_lists_timescaledb(shared_preload_libraries) is (
        state is TimescaleState.READY and not loader_present
    )
    if state is TimescaleState.NOT_PRELOADED:
        assert "shared_preload_libraries" in status.reason
        assert "\n" not in status.reason + status.fix
        assert status.fix == (
            "add 'timescaledb' to shared_preload_libraries in postgresql.conf and restart PostgreSQL"
        )
    else:
        assert status.fix is None


def test_the_decision_without_timescaledb():
    status = classify(None, None, "pg_stat_statements", False)
    assert status.state is TimescaleState.NOT_INSTALLED
    assert status.reason == "this PostgreSQL server has no timescaledb extension"
    assert not status.usable


@pytest.fixture
def migration_001(monkeypatch):
    """Migration 001's module, its settings, database and status replaced by stand-ins."""
    spec = importlib.util.spec_from_file_location(
        "migration_001", ROOT / "migrations" / "versions" / "001_trade_history.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    settings = SimpleNamespace(timescaledb="auto")
    monkeypatch.setattr(module, "get_settings", lambda: settings)
    monkeypatch.setattr(module, "op", SimpleNamespace(get_bind=lambda: "the connection"))
    # What a server with TimescaleDB 2.27.2 installed, preloading only pg_stat_statements, reports.
    status = classify("2.27.2", None, "pg_stat_statements", False)
    monkeypatch.setattr(module, "timescale_status", lambda bind: status)
    return module, settings


def test_migration_without_preload_auto_warns_once_and_makes_a_plain_table(migration_001, caplog):
    module, _ = migration_001
    with caplog.at_level(logging.INFO, logger="alembic.runtime.migration"):
        assert module._timescale_wanted() is False  # no CREATE EXTENSION: it would be FATAL
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "\n" not in message
    assert (
        "not preloaded ('timescaledb' is not in shared_preload_libraries, which is 'pg_stat_statements')"
        in (message)
    )
    assert "trade_history is a plain PostgreSQL table" in message
    assert (
        "add 'timescaledb' to shared_preload_libraries in postgresql.conf and restart PostgreSQL" in message
    )


def test_migration_without_preload_require_fails_in_one_line(migration_001):
    module, settings = migration_001
    settings.timescaledb = "require"
    with pytest.raises(RuntimeError) as failure:
        module._timescale_wanted()
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("TIMESCALEDB=require cannot be met: TimescaleDB is installed on this server")
    assert "shared_preload_libraries" in message
    assert "restart PostgreSQL" in message


def test_autogenerate_leaves_timescaledb_objects_alone():
    assert include_name("_timescaledb_catalog", "schema", {}) is False
    assert include_name("timescaledb_information", "schema", {}) is False
    assert include_name("public", "schema", {}) is True
    assert include_object(None, "trade_history_timestamp_idx", "index", True, None) is False
    assert include_object(None, "some_extension_table", "table", True, None) is False
    assert include_object(None, "trade_history", "table", True, object()) is True
    assert include_object(None, "ix_trade_history_timestamp", "index", False, None) is True
