"""The migrations on a database of their own: upgrade, downgrade, upgrade, and nothing to autogenerate."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from db.timescale import include_name, include_object
from tests.conftest import PG_ADMIN_URL
from tests.support.processes import flask

JOURNAL_TABLES = {"trade_history", "trade_pending_updates"}


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


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_round_trip(scratch_database, tmp_path):
    url, env = scratch_database
    first = flask(["db", "upgrade"], env, tmp_path)
    assert tables(url) == JOURNAL_TABLES
    # Without TimescaleDB (as here) the same migration gives a plain table and says so.
    assert "trade_history is a plain PostgreSQL table" in first.stderr

    flask(["db", "downgrade", "base"], env, tmp_path)
    assert tables(url) == set()

    flask(["db", "upgrade"], env, tmp_path)
    assert tables(url) == JOURNAL_TABLES
    engine = create_engine(url)
    with engine.connect() as connection:
        key = inspect(connection).get_pk_constraint("trade_history")["constrained_columns"]
    engine.dispose()
    assert key == ["trade_id", "timestamp"]  # a hypertable's key must hold its time column


def test_the_models_and_the_migrations_agree(scratch_database, tmp_path):
    _, env = scratch_database
    flask(["db", "upgrade"], env, tmp_path)
    check = flask(["db", "check"], env, tmp_path)
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_timescaledb_require_fails_clearly_without_it_and_leaves_nothing_half_done(
    scratch_database, tmp_path
):
    url, env = scratch_database
    result = flask(["db", "upgrade"], {**env, "TIMESCALEDB": "require"}, tmp_path, check=False)
    assert result.returncode != 0
    assert "TIMESCALEDB=require" in result.stderr
    assert tables(url) == set()  # the DDL ran in one transaction and was rolled back


def test_timescaledb_off_says_so(scratch_database, tmp_path):
    _, env = scratch_database
    result = flask(["db", "upgrade"], {**env, "TIMESCALEDB": "off"}, tmp_path)
    assert "TIMESCALEDB=off" in result.stderr


def test_autogenerate_leaves_timescaledb_objects_alone():
    assert include_name("_timescaledb_catalog", "schema", {}) is False
    assert include_name("timescaledb_information", "schema", {}) is False
    assert include_name("public", "schema", {}) is True
    assert include_object(None, "trade_history_timestamp_idx", "index", True, None) is False
    assert include_object(None, "some_extension_table", "table", True, None) is False
    assert include_object(None, "trade_history", "table", True, object()) is True
    assert include_object(None, "ix_trade_history_timestamp", "index", False, None) is True
