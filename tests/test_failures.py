"""The failure model against real errors: each produced on the real PostgreSQL or a real
redis-server, then sorted by `tasks.contract.failures.classify` (the README's failure table)."""

from __future__ import annotations

import errno
import shutil
import uuid
from collections.abc import Callable, Iterator

import psycopg2
import pytest
import redis
from pydantic import ValidationError
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from db import TradeRecord, UnstorableEntry, entry_from_json
from tasks.contract import Failure, classify, sqlstate
from tests.support.processes import free_port
from tests.support.redis_server import RedisServer

UNAVAILABLE, UNSTORABLE = Failure.UNAVAILABLE, Failure.UNSTORABLE


def raised(action: Callable[[], object]) -> BaseException:
    try:
        action()
    except BaseException as exc:
        return exc
    raise AssertionError("expected an error")


def run(engine: Engine, *statements: str, params: dict | None = None) -> None:
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement), params or {})


@pytest.fixture(scope="module")
def scratch(engine) -> Iterator[Engine]:
    """A table of our own in the test database, dropped afterwards."""
    run(
        engine,
        "CREATE TABLE failures_scratch (id int PRIMARY KEY, note text NOT NULL CHECK (note <> 'no'),"
        " at timestamptz, doc jsonb, amount numeric(6, 2))",
    )
    yield engine
    run(engine, "DROP TABLE failures_scratch")


@pytest.mark.parametrize(
    ("statement", "params", "code", "failure"),
    [
        # The server, not the entry: retry, spool, replay.
        ("SET TRANSACTION READ ONLY; INSERT INTO failures_scratch VALUES (1, 'x')", {}, "25006", UNAVAILABLE),
        ("SELECT * FROM a_table_not_migrated_yet", {}, "42P01", UNAVAILABLE),
        ("SELECT a_column_not_migrated_yet FROM failures_scratch", {}, "42703", UNAVAILABLE),
        ("SET LOCAL statement_timeout = 10; SELECT pg_sleep(1)", {}, "57014", UNAVAILABLE),
        ("INSERT INTO failures_scratch VALUES (7, 'x'); INSERT INTO failures_scratch VALUES (7, 'x')", {},
         "23505", UNAVAILABLE),
        # The entry itself: dead-lettered, never retried.
        ("INSERT INTO failures_scratch (id, note) VALUES (2, NULL)", {}, "23502", UNSTORABLE),
        ("INSERT INTO failures_scratch (id, note) VALUES (3, 'no')", {}, "23514", UNSTORABLE),
        ("INSERT INTO failures_scratch (id, note, doc) VALUES (4, 'x', CAST(:doc AS jsonb))",
         {"doc": '{"a": "\\u0000"}'}, "22P05", UNSTORABLE),
        ("INSERT INTO failures_scratch (id, note, doc) VALUES (5, 'x', CAST(:doc AS jsonb))",
         {"doc": '{"a": "\\udc00"}'}, "22P02", UNSTORABLE),
        ("INSERT INTO failures_scratch (id, note, at) VALUES (6, 'x', CAST(:at AS timestamptz))",
         {"at": "294277-01-01T00:00:00Z"}, "22008", UNSTORABLE),
        ("INSERT INTO failures_scratch (id, note, amount) VALUES (8, 'x', 1e9)", {}, "22003", UNSTORABLE),
    ],
)  # fmt: skip
def test_database_errors_by_sqlstate(scratch, statement, params, code, failure):
    error = raised(lambda: run(scratch, *statement.split("; "), params=params))
    assert sqlstate(error) == code
    assert classify(error).failure is failure


def test_a_revoked_privilege_and_a_full_connection_limit_are_outages(scratch, database_url):
    role = f"failures_{uuid.uuid4().hex[:8]}"
    run(
        scratch,
        f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1',
        f'GRANT CONNECT ON DATABASE "{make_url(database_url).database}" TO "{role}"',
    )
    as_role = create_engine(make_url(database_url).set(username=role))
    try:
        denied = raised(lambda: run(as_role, "INSERT INTO failures_scratch VALUES (9, 'x')"))
        assert (sqlstate(denied), classify(denied).failure) == ("42501", UNAVAILABLE)
        run(scratch, f'ALTER ROLE "{role}" CONNECTION LIMIT 0')
        as_role.dispose()
        refused = raised(lambda: run(as_role, "SELECT 1"))  # 53300, at connect: no SQLSTATE reaches psycopg2
        assert "too many connections" in str(refused) and classify(refused).failure is UNAVAILABLE
    finally:
        as_role.dispose()
        run(scratch, f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')


def test_a_full_disk_on_the_database_server_is_an_outage(scratch, tiny_filesystem):
    shutil.chown(tiny_filesystem, "postgres", "postgres")
    space = f"failures_{uuid.uuid4().hex[:8]}"
    admin = create_engine(make_url(str(scratch.url)).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE TABLESPACE {space} LOCATION '{tiny_filesystem}'"))
    try:
        run(scratch, f"CREATE TABLE failures_full (blob text) TABLESPACE {space}")
        full = raised(
            lambda: run(
                scratch, "INSERT INTO failures_full SELECT md5(g::text) FROM generate_series(1, 100000) g"
            )
        )
        assert (sqlstate(full), classify(full).failure) == ("53100", UNAVAILABLE)
    finally:
        run(scratch, "DROP TABLE IF EXISTS failures_full")
        with admin.connect() as connection:
            connection.execute(text(f"DROP TABLESPACE {space}"))
        admin.dispose()


def test_a_database_that_does_not_answer_is_an_outage():
    nobody = create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/postgres")
    error = raised(lambda: nobody.connect())
    assert classify(error).failure is UNAVAILABLE and classify(error).dependency == "database"


def test_values_the_driver_refuses_are_unstorable(scratch):
    nul = raised(
        lambda: run(
            scratch, "INSERT INTO failures_scratch (id, note) VALUES (10, :note)", params={"note": "a\x00"}
        )
    )
    surrogate = raised(
        lambda: run(
            scratch, "INSERT INTO failures_scratch (id, note) VALUES (11, :note)", params={"note": "a\ud800"}
        )
    )
    assert classify(nul).failure is UNSTORABLE and classify(surrogate).failure is UNSTORABLE


def test_entries_that_fail_validation_are_unstorable():
    assert classify(raised(lambda: TradeRecord.from_dict({"side": "up"}))).failure is UNSTORABLE
    assert isinstance(raised(lambda: entry_from_json({"kind": "teleport"})), UnstorableEntry)
    assert classify(raised(lambda: entry_from_json([]))).failure is UNSTORABLE
    assert isinstance(raised(lambda: TradeRecord.from_dict({"side": "up"})), ValidationError)


@pytest.fixture
def refusing_redis(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def test_every_reply_of_a_redis_that_refuses_writes_is_an_outage(refusing_redis, tmp_path):
    client = redis.Redis(port=refusing_redis.port)
    refusals = {}
    client.config_set("min-replicas-to-write", 1)
    refusals["NOREPLICAS"] = raised(lambda: client.lpush("trades", "x"))
    client.config_set("min-replicas-to-write", 0)

    client.config_set("maxmemory", "1mb")
    refusals["OOM"] = raised(lambda: [client.set(f"k{n}", b"x" * 100_000) for n in range(100)])
    client.flushall()
    client.config_set("maxmemory", "0")

    master = RedisServer(tmp_path)
    try:
        client.replicaof("127.0.0.1", master.port)
        refusals["READONLY"] = raised(lambda: client.lpush("trades", "x"))
    finally:
        client.replicaof("NO", "ONE")
        master.stop()

    refusals["connection refused"] = raised(lambda: redis.Redis(port=free_port()).ping())
    for reply, error in refusals.items():
        verdict = classify(error)
        assert (reply, verdict.failure, verdict.dependency) == (reply, UNAVAILABLE, "broker"), error


def test_a_full_or_missing_spool_disk_is_an_outage_and_an_unknown_error_too():
    full = OSError(errno.ENOSPC, "No space left on device")
    assert (classify(full).failure, classify(full).dependency) == (UNAVAILABLE, "spool")
    unknown = classify(KeyError("a bug"))
    assert unknown.failure is UNAVAILABLE and unknown.known is False
    assert (
        classify(psycopg2.OperationalError("server closed the connection unexpectedly")).failure
        is UNAVAILABLE
    )
