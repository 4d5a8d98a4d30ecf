"""What reads and ingest cost as the journal grows: loaded journals of a few sizes, timed.

    make bench-scale                                   # 100k/1M and 1M/10M (trades/predictions)
    make bench-scale BENCH_ARGS="--sizes 100k/1M --reuse"
    make bench-scale BENCH_ARGS="--ref fbc6711 --sizes 100k/1M"   # a "before" run
    BENCH_PG_URL=postgresql+psycopg2://postgres@127.0.0.1:5433/postgres make bench-scale  # TimescaleDB

For each size (`--sizes`, a comma list of trades/predictions: 100k/1M, 1M/10M, 10M/100M):

* a scratch database on the admin server (BENCH_PG_ADMIN_URL, or BENCH_PG_URL: a server
  with TimescaleDB preloaded), migrated by the code under test (docker-compose.yml's
  `migrate` command), then loaded server-side (INSERT ... SELECT ... FROM generate_series,
  setseed: the same rows every run): the prediction log over the last 90 days
  (`prediction_log`, 9 model versions, and its `prediction_counts` as the workers keep
  them), then the trades over the two years before now (`trade_history`: 8 symbols, 70%
  closed, holding times of minutes, days and weeks, half of those of the last 90 days
  linked to a logged prediction), with the code's triggers on, as for any writer. Then
  `flask --app web stats refresh` (where the code has it: it builds the kept statistics),
  VACUUM (ANALYZE) (what autovacuum would soon do, done before the reads are timed), and on
  TimescaleDB `flask --app web storage compress` (where the code has it: old chunks to the
  columnstore), then VACUUM (ANALYZE) again. Each step's time is printed. With
  `--reuse` a loaded database is kept and used again; its name holds the size, the seed
  and the code's migration head, so a stale one is never reused.
* sizes: bytes per trade and per logged prediction (tables with indexes and TOAST;
  hypertable_size() for a hypertable), the kept statistics' tables, the whole database;
  before and after compression.
* reads: the web started as docker-compose.yml starts its `web` service (command and
  environment read from the file, as bench/peers.py does), one per size, and 7 routes
  (the trades list, the statistics three ways, a model's performance, the dashboard's two
  JSON routes) each timed with `wrk -t1 -c1` after a warm-up, interleaved: every round
  visits every route on every size. Each route is checked once first: anything but a 200
  fails the run with its body. Reported: the median over the rounds of each round's p50
  and p99 (wrk's histograms, its coordinated-omission correction included), against the
  goals (a JSON route's p50 at most 50 ms at 1M trades, 100 ms at 10M).
* ingest: for each size and for an empty journal (migrated, nothing loaded), one trades
  worker started as compose starts `worker-trades`, and a bot process (this script,
  running the code under test's `tasks.client.TradeJournal`) that records 3,000 fresh
  trades and then closes half of them with `update_trade`; timed from its first send to
  the moment the last close is in the database (polled with SQL). Journals interleave
  (empty, each size, empty, ...; `--ingest-rounds`); reported: the median trades/s and
  the median of the rounds' ratios to the empty journal (goal: at least 0.9x). The
  fresh trades are deleted after each round.

The output: a table per size (route, p50, p99, goal), the ingest table, the sizes and the
load times, then the same as Markdown. `--ref REF` runs the migrations, the web, the worker
and the bot from a commit's code (git archive into the scratch directory, as
bench/peers.py does). Needs wrk, Redis (databases BENCH_SCALE_REDIS_DBS, 10 and 11 by
default, flushed) and PostgreSQL; drops every database it created unless `--reuse`.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import harness
import peers
import redis
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

BIN = Path(sys.executable).parent  # the project's venv
# BENCH_PG_URL: a server with TimescaleDB (its admin URL); else the admin URL of the others.
TIMESCALE = bool(os.environ.get("BENCH_PG_URL"))
PG_ADMIN = os.environ.get("BENCH_PG_URL") or os.environ.get(
    "BENCH_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
# Broker and results of the webs and workers started here (peers.py uses 6 to 11 too, and
# flushes them: do not run both at once). Others: 0 and 1 (make run), 12 and 13
# (bench/ingest.py), 14 and 15 (tests).
REDIS_DBS = [int(db) for db in os.environ.get("BENCH_SCALE_REDIS_DBS", "10,11").split(",")]
# Compose refuses to start without API_TOKEN; the API routes get it as a bearer token, the
# dashboard's the session cookie its login answers.
API_TOKEN = "bench-scale-token"  # noqa: S105 - a scratch stack's, known to the benchmark alone
DATABASE_PREFIX = "bench_scale"
# Changes whenever the generated rows do: a database kept by --reuse says which load it holds.
LOAD_MARK = "bench-scale load 3"
SEED = 7
# An ingest round fails when no progress was seen for this long (a broken worker
# dead-letters what it cannot write instead of writing it).
STALL_S = 60

SYMBOLS = {  # symbol -> a plausible price
    "BTC/USDT": 60_000.0,
    "ETH/USDT": 3_000.0,
    "SOL/USDT": 150.0,
    "BNB/USDT": 550.0,
    "XRP/USDT": 0.6,
    "ADA/USDT": 0.45,
    "DOGE/USDT": 0.12,
    "AVAX/USDT": 35.0,
}
MODELS = {"xgboost_model.json": "xgboost", "lightgbm_model.txt": "lightgbm", "lstm_model.pt": "lstm"}
VERSIONS_PER_MODEL = 3
TRADES_SPAN = timedelta(days=730)
LOG_SPAN = timedelta(days=90)  # the prediction log's retention (PREDICTION_LOG_RETENTION_DAYS)
KEPT_STATISTICS = (
    "trade_stats_buckets",
    "trade_closes",
    "trade_stats_segments",
    "trade_stats_profiles",
    "trade_stats_changes",
)


class BenchError(RuntimeError):
    pass


# Sizes


@dataclass(frozen=True)
class Size:
    trades: int
    predictions: int

    @property
    def label(self) -> str:
        return f"{count_text(self.trades)}/{count_text(self.predictions)}"

    @property
    def goal_ms(self) -> float | None:
        """The p50 a JSON route may take at this size (the goals name 1M and 10M trades)."""
        if self.trades <= 1_000_000:
            return 50.0
        if self.trades <= 10_000_000:
            return 100.0
        return None


def parse_size(given: str) -> Size:
    try:
        trades, predictions = given.split("/")
        return Size(parse_count(trades), parse_count(predictions))
    except ValueError:
        raise SystemExit(f"--sizes: {given!r} is not trades/predictions, e.g. 100k/1M") from None


def parse_count(given: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmM]?)", given.strip())
    if match is None:
        raise ValueError(given)
    return int(match.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]


def count_text(count: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if count >= scale and count % scale == 0:
            return f"{count // scale}{unit}"
    return str(count)


# The code under test


@dataclass
class Code:
    """Where the migrations, the web, the worker and the bot run from, and what it has."""

    scratch: peers.Scratch  # its source: the working tree, or --ref's snapshot
    head: str  # the migration head
    has_refresh: bool = False  # `flask --app web stats refresh`
    has_compress: bool = False  # `flask --app web storage compress`

    @property
    def source(self) -> Path:
        return self.scratch.source


def migration_head(source: Path) -> str:
    """The revision no other migration revises (read from the files: no process to start)."""
    revisions, revised = set(), set()
    for path in (source / "migrations" / "versions").glob("*.py"):
        code = path.read_text()
        revision = re.search(r'^revision = "([^"]+)"', code, re.MULTILINE)
        down = re.search(r'^down_revision = "([^"]+)"', code, re.MULTILINE)
        if revision:
            revisions.add(revision.group(1))
        if down:
            revised.add(down.group(1))
    heads = sorted(revisions - revised)
    if not heads:
        raise BenchError(f"no migration in {source / 'migrations' / 'versions'}")
    return "_".join(heads)


def compose_service(
    code: Code, service: str, database_url: str, directory: Path, port: int | None = None
) -> tuple[list[str], dict[str, str]]:
    """docker-compose.yml's `service`: its command and environment as written there (read
    as bench/peers.py reads them), with this run's database, Redis databases and paths, and
    for the web its address."""
    services = yaml.safe_load((code.source / "docker-compose.yml").read_text())["services"]
    given = {"DATABASE_URL": database_url, "API_TOKEN": API_TOKEN}  # what .env sets
    paths = {
        "MODEL_DIR": code.scratch.model_dir,  # empty: the routes read the database only
        "SPOOL_DIR": directory / "spool",
        "METRICS_DIR": directory / "metrics",
        "MODEL_ARCHIVE_DIR": directory / "model_archive",  # the stack's model_archive volume
    }
    overrides = {
        "CELERY_BROKER_URL": f"{REDIS_URL}/{REDIS_DBS[0]}",
        "CELERY_RESULT_BACKEND": f"{REDIS_URL}/{REDIS_DBS[1]}",
        # Compose's database is TimescaleDB (TIMESCALEDB=require); the default server here is not.
        "TIMESCALEDB": "require" if TIMESCALE else "auto",
        # The image's (Dockerfile ENV): the checkout is /app there, the working directory.
        "PYTHONPATH": str(code.source),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if port is not None:
        overrides["WEB_BIND"] = f"127.0.0.1:{port}"
    env = {**peers.base_env(), **peers.service_env(services[service], given, paths), **overrides}
    return peers.service_command(services[service], given), env


def flask_command(code: Code, database_url: str, *arguments: str) -> tuple[list[str], dict[str, str]]:
    """`flask --app web ...` as compose's migrate service runs it (its environment)."""
    _, env = compose_service(code, "migrate", database_url, code.scratch.subdirectory("cli"))
    return ["flask", "--app", "web", *arguments], env


def cli_has(code: Code, database_url: str, group: str, command: str) -> bool:
    """Whether the code's flask CLI has `group command` (an older --ref lacks some)."""
    argv, env = flask_command(code, database_url, group, "--help")
    done = subprocess.run(argv, env=env, cwd=code.source, capture_output=True, text=True)
    return done.returncode == 0 and re.search(rf"^\s+{command}\b", done.stdout, re.MULTILINE) is not None


def run_flask(code: Code, database_url: str, *arguments: str) -> tuple[float, str]:
    """Seconds it took and what it printed; BenchError when it fails."""
    argv, env = flask_command(code, database_url, *arguments)
    started = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=code.source, capture_output=True, text=True)
    if done.returncode:
        raise BenchError(f"{shlex.join(argv)} failed:\n{done.stdout}{done.stderr}")
    return time.monotonic() - started, done.stdout.strip()


# Journals: the scratch databases


@dataclass
class Footprint:
    state: str  # "loaded", "reused", "compressed"
    trades: int | None  # trade_history's bytes
    predictions: int | None  # prediction_log's
    kept: int | None  # the kept statistics' tables (None: the code keeps none)
    database: int


@dataclass
class Journal:
    name: str
    url: str
    size: Size | None  # None: the empty journal
    keep: bool  # left on the server at the end (--reuse)
    steps: list[tuple[str, float]] = field(default_factory=list)  # load and preparation, seconds
    footprints: list[Footprint] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.size.label if self.size else "empty"


def database_name(size: Size, seed: int, head: str, run: str | None) -> str:
    """The size, the seed and the migration head: what --reuse finds again. A run without
    --reuse adds its own id (`run`), leaving alone any database kept by one with it."""
    label = f"{count_text(size.trades)}_{count_text(size.predictions)}"
    name = f"{DATABASE_PREFIX}_{label}_s{seed}_m{head}"
    return (name if run is None else f"{name}_{run}").lower()


def run_id(code: Code) -> str:
    """This run's: the scratch directory's random suffix."""
    return code.scratch.directory.name.rsplit("-", 1)[-1].lower()


def loaded_mark(name: str) -> str | None:
    """What a finished load wrote on the database (LOAD_MARK); None when absent or unmarked."""
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            return connection.scalar(
                text("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :name"),
                {"name": name},
            )
    finally:
        engine.dispose()


def mark_loaded(name: str) -> None:
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            quoted = connection.dialect.identifier_preparer.quote(name)  # DDL takes no parameters
            connection.execute(text(f"COMMENT ON DATABASE {quoted} IS '{LOAD_MARK}'"))
    finally:
        engine.dispose()


def open_journal(code: Code, size: Size, options: argparse.Namespace, journals: list[Journal]) -> None:
    """A journal of `size`, migrated, loaded and prepared, appended to `journals`: made
    now, or kept by an earlier --reuse run that finished its load."""
    name = database_name(size, options.seed, code.head, None if options.reuse else run_id(code))
    url = make_url(PG_ADMIN).set(database=name).render_as_string(False)
    journal = Journal(name, url, size, keep=options.reuse)
    if options.reuse and loaded_mark(name) == LOAD_MARK:
        print(f"\n{size.label}: reusing {name}", flush=True)
        journals.append(journal)
        prepare(code, journal, "reused")
        return
    print(f"\n{size.label}: loading {name}", flush=True)
    if options.reuse:  # an unfinished load, or one of an older generator: never reused
        harness.scratch_database(PG_ADMIN, name, drop=True)
    harness.scratch_database(PG_ADMIN, name)
    journal.keep = False  # until the load is whole: half a load is worth nothing
    journals.append(journal)
    migrate(code, journal)
    load(journal, size, options.seed)
    prepare(code, journal, "loaded")
    if options.reuse:
        mark_loaded(name)
        journal.keep = True


def open_empty_journal(code: Code, journals: list[Journal]) -> Journal:
    """A migrated journal with nothing loaded, for this run only."""
    name = f"{DATABASE_PREFIX}_empty_{run_id(code)}"
    journal = Journal(name, harness.scratch_database(PG_ADMIN, name), None, keep=False)
    journals.append(journal)
    print(f"\nempty: {name}", flush=True)
    migrate(code, journal)
    return journal


def migrate(code: Code, journal: Journal) -> None:
    """docker-compose.yml's migrate service (`flask --app web db upgrade`) on this journal."""
    argv, env = compose_service(code, "migrate", journal.url, code.scratch.subdirectory("cli"))
    started = time.monotonic()
    peers.run_checked(argv, env, code.source, f"the migration of {journal.name}")
    step(journal, "migrate", time.monotonic() - started)


def step(journal: Journal, name: str, seconds: float, said: str = "") -> None:
    journal.steps.append((name, seconds))
    detail = f" ({'; '.join(said.splitlines())})" if said else ""
    print(f"  {journal.label}: {name} {seconds:,.1f} s{detail}", flush=True)


def prepare(code: Code, journal: Journal, state: str) -> None:
    """The kept statistics built (where the code keeps them), the planner's statistics
    fresh, old chunks compressed (where the code can), and the sizes before and after."""
    if code.has_refresh:
        seconds, said = run_flask(code, journal.url, "stats", "refresh")
        step(journal, "stats refresh", seconds, said)
    vacuum_analyze(journal)
    journal.footprints.append(footprint(journal.url, state))
    if TIMESCALE and code.has_compress:
        seconds, said = run_flask(code, journal.url, "storage", "compress")
        step(journal, "storage compress", seconds, said)
        vacuum_analyze(journal)
        journal.footprints.append(footprint(journal.url, "compressed"))


def vacuum_analyze(journal: Journal) -> None:
    # VACUUM as well as ANALYZE: autovacuum would soon vacuum the freshly loaded tables
    # anyway (setting the visibility map that index-only scans read), and must not do it
    # while the reads are timed.
    engine = create_engine(journal.url, isolation_level="AUTOCOMMIT")
    started = time.monotonic()
    try:
        with engine.connect() as connection:
            connection.execute(text("VACUUM (ANALYZE)"))
    finally:
        engine.dispose()
    step(journal, "vacuum analyze", time.monotonic() - started)


# Loading: rows made by the server, never by Python

# Prediction n (1..count) lies in the n-th of `count` equal slices of the last 90 days, and
# its id and model follow from n alone: a trade finds "the prediction just before it"
# arithmetically, without a join (see _TRADES).
_PREDICTIONS = text(
    """
    INSERT INTO prediction_log (prediction_id, created_at, model_name, model_version, model_type, rows,
                                predictions, latency_ms, request_id, features)
    SELECT md5(:seed || ':prediction:' || n)::uuid::text,
           CAST(:start AS timestamptz) + (n - 1 + random()) * CAST(:step AS interval),
           (CAST(:names AS text[]))[n % 9 + 1],
           (CAST(:versions AS text[]))[n % 9 + 1],
           (CAST(:types AS text[]))[n % 9 + 1],
           1,
           jsonb_build_array(round(random()::numeric, 6)),
           round((0.3 + 1.5 * -ln(1 - random()))::numeric, 3),
           md5(:seed || ':request:' || n),
           jsonb_build_array(jsonb_build_array(
               round((random() * 2 - 1)::numeric, 6), round((random() * 2 - 1)::numeric, 6),
               round((random() * 2 - 1)::numeric, 6), round((random() * 2 - 1)::numeric, 6),
               round((random() * 2 - 1)::numeric, 6)))
    FROM generate_series(1, :count) AS n
    """
)
# As the workers count them (db/prediction_log.py): per model version and UTC day.
_PREDICTION_COUNTS = text(
    """
    INSERT INTO prediction_counts (model_name, model_version, day, predictions, first_served, last_served)
    SELECT model_name, model_version, date_trunc('day', created_at, 'UTC'), count(*), min(created_at),
           max(created_at)
    FROM prediction_log
    GROUP BY 1, 2, 3
    """
)
# Layers from the inside: `draws` holds every random number of a trade (a subquery with
# volatile outputs is never flattened into its users, so each is drawn once), the others
# derive the rest. Trade i opens in the i-th of `count` equal slices of the two years
# before now, so trades arrive in time order, as a journal's do. Of those opened since the
# first logged prediction, half name the prediction just before them (and its model);
# 10% of the others have no model.
_TRADES = text(
    """
    INSERT INTO trade_history (trade_id, "timestamp", symbol, side, order_type, amount, entry_price,
                               exit_price, realized_pnl, pnl_pct, fees, market_regime, bull_confidence,
                               bear_confidence, decision_confidence, won, closed, close_timestamp,
                               agent_votes, signals, prediction_id, model_name, model_version)
    SELECT md5(:seed || ':trade:' || i), opened, (CAST(:symbols AS text[]))[symbol], side, order_type,
           notional / price, price,
           CASE WHEN closed THEN price * (1 + direction * pnl_pct / 100) END,
           CASE WHEN closed THEN notional * pnl_pct / 100 END,
           CASE WHEN closed THEN pnl_pct END,
           CASE WHEN closed THEN notional * 0.002 END,
           (ARRAY['bull', 'bear', 'sideways'])[regime],
           round(u_bull::numeric, 3), round(((1 - u_bull) * u_bear)::numeric, 3),
           round((0.5 + 0.5 * u_decision)::numeric, 3),
           CASE WHEN closed THEN pnl_pct > 0 END,
           closed,
           CASE WHEN closed THEN opened + hold END,
           jsonb_build_object('momentum', side, 'trend', CASE WHEN u_bull > 0.5 THEN 'buy' ELSE 'hold' END),
           jsonb_build_object('rsi', round((100 * u_rsi)::numeric, 2)),
           CASE WHEN linked THEN md5(:seed || ':prediction:' || prediction)::uuid::text END,
           (CAST(:names AS text[]))[model + 1],
           (CAST(:versions AS text[]))[model + 1]
    FROM (
        SELECT *,
               u_close < 0.7 AND opened + hold <= CAST(:now AS timestamptz) AS closed,
               CASE WHEN linked THEN (prediction % 9)::int
                    WHEN u_model < 0.1 THEN NULL
                    ELSE floor((u_model - 0.1) / 0.9 * 9)::int END AS model
        FROM (
            SELECT *,
                   (CAST(:prices AS float8[]))[symbol] * price_move AS price,
                   CASE WHEN buy THEN 'buy' ELSE 'sell' END AS side,
                   CASE WHEN buy THEN 1 ELSE -1 END AS direction,
                   CASE WHEN market THEN 'market' ELSE 'limit' END AS order_type,
                   CASE WHEN u_kind < 0.95 THEN -ln(1 - u_hold) * interval '30 minutes'
                        WHEN u_kind < 0.995 THEN (1 + 2 * u_hold) * interval '1 day'
                        ELSE (1 + 7 * u_hold) * interval '1 week' END AS hold,
                   0.05 + 1.5 * z AS pnl_pct,
                   prediction BETWEEN 1 AND :predictions AND u_link < 0.5 AS linked
            FROM (
                SELECT *,
                       floor(extract(epoch FROM opened - CAST(:log_start AS timestamptz))
                             / :log_step_s)::bigint AS prediction
                FROM (
                    SELECT i,
                           CAST(:start AS timestamptz) + (i - 1 + random()) * CAST(:step AS interval)
                               AS opened,
                           1 + floor(random() * 8)::int AS symbol,
                           random() < 0.55 AS buy,
                           random() < 0.8 AS market,
                           50 + 1950 * random() AS notional,
                           1 + 0.3 * (random() - 0.5) AS price_move,
                           random() AS u_kind, random() AS u_hold, random() AS u_close,
                           sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z,
                           random() AS u_link, random() AS u_model,
                           1 + floor(random() * 3)::int AS regime,
                           random() AS u_bull, random() AS u_bear, random() AS u_decision,
                           random() AS u_rsi
                    FROM generate_series(1, :count) AS i
                ) AS draws
            ) AS placed
        ) AS shaped
    ) AS decided
    """
)


def model_versions(seed: int) -> list[str]:
    """16 hex digits per version, as the model store names them; 3 per model, in MODELS' order."""
    return [
        hashlib.sha256(f"{seed}:{name}:{version}".encode()).hexdigest()[:16]
        for name in MODELS
        for version in range(VERSIONS_PER_MODEL)
    ]


def load(journal: Journal, size: Size, seed: int) -> None:
    """The prediction log and its counts, then the trades (they link to the log)."""
    engine = create_engine(journal.url)
    try:
        with engine.connect() as connection:
            now = connection.scalar(text("SELECT now()"))
        names = [name for name in MODELS for _ in range(VERSIONS_PER_MODEL)]
        models = {"names": names, "versions": model_versions(seed), "types": [MODELS[name] for name in names]}
        log_start, log_step = now - LOG_SPAN, LOG_SPAN / max(size.predictions, 1)
        predictions = {"start": log_start, "step": log_step, "count": size.predictions}
        trades = {
            "start": now - TRADES_SPAN,
            "step": TRADES_SPAN / size.trades,
            "count": size.trades,
            "now": now,
            "symbols": list(SYMBOLS),
            "prices": list(SYMBOLS.values()),
            "log_start": log_start,
            "log_step_s": log_step.total_seconds(),
            "predictions": size.predictions,
        }
        insert(engine, journal, "prediction_log", _PREDICTIONS, seed, models | predictions)
        insert(engine, journal, "prediction_counts", _PREDICTION_COUNTS, seed, {})
        insert(engine, journal, "trade_history", _TRADES, seed, models | trades)
    finally:
        engine.dispose()


def insert(engine, journal: Journal, table: str, statement, seed: int, parameters: dict) -> None:
    """One INSERT ... SELECT in a transaction of its own, its random numbers seeded by the
    seed and the table (each table the same whatever the other's size)."""
    started = time.monotonic()
    with engine.begin() as connection:
        # The triggers stay on, as for any writer: what the code keeps by trigger (the
        # statistics' change log, trade_ids, ...) stays equal to the rows, and `stats
        # refresh` then builds from the trades as it does after any loader.
        connection.execute(text("SELECT setseed(:value)"), {"value": seed_fraction(seed, table)})
        rows = connection.execute(statement, {"seed": str(seed), **parameters}).rowcount
    step(journal, f"insert {table} ({rows:,} rows)", time.monotonic() - started)


def seed_fraction(seed: int, table: str) -> float:
    """setseed's argument (-1 to 1) for `table` under `seed`."""
    return int(hashlib.sha256(f"{seed}:{table}".encode()).hexdigest()[:8], 16) / 2**32


# Sizes on disk


def footprint(url: str, state: str) -> Footprint:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            kept = [
                size for name in KEPT_STATISTICS if (size := relation_bytes(connection, name)) is not None
            ]
            return Footprint(
                state,
                relation_bytes(connection, "trade_history"),
                relation_bytes(connection, "prediction_log"),
                sum(kept) if kept else None,
                connection.scalar(text("SELECT pg_database_size(current_database())")),
            )
    finally:
        engine.dispose()


def relation_bytes(connection, name: str) -> int | None:
    """A table with its indexes and TOAST (a hypertable with its chunks, in the columnstore
    or not); None when the table is absent."""
    if connection.scalar(text("SELECT to_regclass(:name)"), {"name": name}) is None:
        return None
    if is_hypertable(connection, name):
        return connection.scalar(text("SELECT hypertable_size(CAST(:name AS regclass))"), {"name": name})
    return connection.scalar(text("SELECT pg_total_relation_size(CAST(:name AS regclass))"), {"name": name})


def is_hypertable(connection, name: str) -> bool:
    if not connection.scalar(
        text("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')")
    ):
        return False
    return connection.scalar(
        text(
            "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = :name)"
        ),
        {"name": name},
    )


# Reads


@dataclass(frozen=True)
class Route:
    label: str
    path: str
    dashboard: bool = False  # the session cookie, not the bearer token
    goal: bool = True  # a statistics, performance or dashboard JSON route: p50 goals apply


def routes(since: datetime) -> list[Route]:
    window = urllib.parse.urlencode(
        {"bucket": "1 day", "since": since.isoformat()}, quote_via=urllib.parse.quote
    )
    model = next(iter(MODELS))
    return [
        Route("GET /api/v1/trades?limit=100", "/api/v1/trades?limit=100", goal=False),
        Route("GET /api/v1/trades/stats", "/api/v1/trades/stats"),
        Route(
            "GET /api/v1/trades/stats?group_by=model_version", "/api/v1/trades/stats?group_by=model_version"
        ),
        Route("GET /api/v1/trades/stats?bucket=1 day&since=<90 days ago>", f"/api/v1/trades/stats?{window}"),
        Route(
            f"GET /api/v1/ml/models/{model}/performance",
            f"/api/v1/ml/models/{urllib.parse.quote(model, safe='')}/performance",
        ),
        Route("GET /dashboard/performance.json", "/dashboard/performance.json", dashboard=True),
        Route("GET /dashboard/model-performance.json", "/dashboard/model-performance.json", dashboard=True),
    ]


def since_90_days() -> datetime:
    """90 days before now, to the second, never on a day's boundary (so that the window
    has ragged edges, as a user's has)."""
    since = (datetime.now(UTC) - LOG_SPAN).replace(microsecond=0)
    if since.time() == datetime.min.time():
        since += timedelta(minutes=17)
    return since


@dataclass
class Web:
    journal: Journal
    port: int
    process: subprocess.Popen
    log: Path
    headers: dict[bool, dict[str, str]] = field(default_factory=dict)  # a dashboard route? -> headers
    scripts: dict[str, Path] = field(default_factory=dict)  # route path -> its wrk script
    # Route path -> how long its check took: a burst lasts long enough for a few answers
    # even on a slow side (a `--ref` from before the kept statistics takes seconds a read).
    once_s: dict[str, float] = field(default_factory=dict)


class WebFailed(BenchError):
    def __init__(self, web: Web, message: str):
        super().__init__(f"{web.journal.label}: {message}")
        self.web = web


def start_web(code: Code, journal: Journal) -> Web:
    port = harness.free_port()
    argv, env = compose_service(
        code, "web", journal.url, code.scratch.subdirectory(f"web-{journal.name}"), port
    )
    log = code.scratch.subdirectory("logs") / f"web-{journal.name}.log"
    print(f"  {journal.label}: {shlex.join(argv)} on 127.0.0.1:{port}", flush=True)
    return Web(journal, port, harness.start_process(argv, env, code.source, log), log)


def wait_ready(web: Web, seconds: float = 120) -> None:
    """Until /healthz answers 200; then the headers each kind of route needs."""
    deadline = time.monotonic() + seconds
    while True:
        if web.process.poll() is not None:
            raise WebFailed(web, f"the web exited with {web.process.returncode}")
        try:
            if get(web, "/healthz", {}, timeout=5)[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise WebFailed(web, f"no 200 from /healthz in {seconds:.0f} s")
        time.sleep(0.2)
    web.headers = {False: {"Authorization": f"Bearer {API_TOKEN}"}, True: {"Cookie": login_cookie(web)}}


def login_cookie(web: Web) -> str:
    """The dashboard's session cookie, from its login form (as a browser gets it)."""
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    try:
        body = urllib.parse.urlencode({"token": API_TOKEN})
        connection.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
        answer = connection.getresponse()
        answer.read()
        cookie = answer.getheader("Set-Cookie")
    finally:
        connection.close()
    if answer.status != 303 or not cookie:
        raise WebFailed(web, f"POST /login answered {answer.status} without a session cookie")
    return cookie.split(";", 1)[0]


def get(web: Web, path: str, headers: dict[str, str], timeout: float = 60) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{web.port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - our own server
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def check_routes(web: Web, all_routes: list[Route]) -> None:
    """Every route answers 200 once, before anything is timed; else the run fails with the body."""
    for route in all_routes:
        started = time.monotonic()
        status, body = get(web, route.path, web.headers[route.dashboard])
        if status != 200:
            raise WebFailed(web, f"{route.label} answered {status}: {body[:3000].decode(errors='replace')}")
        took_ms = (time.monotonic() - started) * 1000
        web.once_s[route.path] = took_ms / 1000
        print(
            f"  {web.journal.label}: {route.label}: 200, {len(body):,} bytes in {took_ms:,.0f} ms", flush=True
        )


def wrk_get_script(path: Path, headers: dict[str, str]) -> Path:
    """A wrk script that GETs with `headers` and hands its latency histogram back (harness's hook)."""
    lines = [f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}" for name, value in headers.items()]
    path.write_text("\n".join(lines) + "\n" + harness._HISTOGRAM_LUA)
    return path


def wrk(code: Code, web: Web, route: Route, seconds: float) -> Counter:
    """One `wrk -t1 -c1` burst on `route`: its latency histogram (µs -> requests)."""
    directory = code.scratch.subdirectory("wrk")
    if route.path not in web.scripts:
        script = directory / f"{web.journal.name}-{len(web.scripts)}.lua"
        web.scripts[route.path] = wrk_get_script(script, web.headers[route.dashboard])
    histogram = directory / "histogram.txt"
    cpu_before = harness.children_cpu_seconds()
    url = f"http://127.0.0.1:{web.port}{route.path}"
    once_s = web.once_s.get(route.path, 0.0)
    seconds = max(seconds, math.ceil(5 * once_s))  # wrk takes whole seconds
    process = harness.start_wrk(
        url, web.scripts[route.path], 1, 1, seconds, histogram, max(10, math.ceil(3 * once_s))
    )
    try:
        run = harness.finish_wrk(process, histogram, cpu_before)
    except harness.WrkFailed as exc:
        status, body = get(web, route.path, web.headers[route.dashboard])
        after = f"a request after it: {status} {body[:1000].decode(errors='replace')}"
        raise WebFailed(web, f"wrk on {route.label} failed:\n{exc}{after}") from None
    if run.requests == 0:
        raise WebFailed(web, f"{route.label}: no answer in {seconds:g} s")
    return run.histogram


@dataclass
class Latency:
    p50: list[float] = field(default_factory=list)  # ms, one per round
    p99: list[float] = field(default_factory=list)


@dataclass
class Reads:
    routes: list[Route]
    latency: dict[tuple[str, str], Latency]  # (journal name, route label) ->
    rounds: int


def measure_reads(code: Code, journals: list[Journal], options: argparse.Namespace) -> Reads:
    """Every route on every size in each round, after a check and a warm-up of each."""
    since = since_90_days()
    all_routes = routes(since)
    print(f"\nreads: a web per size, as docker-compose.yml's web service; since = {since.isoformat()}")
    webs: list[Web] = []
    try:
        for journal in journals:
            webs.append(start_web(code, journal))
        for web in webs:
            wait_ready(web)
            check_routes(web, all_routes)
        for web in webs:
            for route in all_routes:
                wrk(code, web, route, options.warmup_seconds)
        reads = Reads(all_routes, {(w.journal.name, r.label): Latency() for w in webs for r in all_routes}, 0)
        for round_ in range(options.rounds):
            for route in all_routes:
                for web in webs:
                    histogram = wrk(code, web, route, options.seconds)
                    latency = reads.latency[web.journal.name, route.label]
                    latency.p50.append(harness.percentile(histogram, 0.5) / 1000)
                    latency.p99.append(harness.percentile(histogram, 0.99) / 1000)
            reads.rounds += 1
            print_round(round_, reads, webs)
        return reads
    finally:
        harness.stop_processes([(web.process, True) for web in webs])


def print_round(round_: int, reads: Reads, webs: list[Web]) -> None:
    parts = []
    for web in webs:
        p50s = "/".join(
            f"{reads.latency[web.journal.name, route.label].p50[-1]:.1f}" for route in reads.routes
        )
        parts.append(f"{web.journal.label} {p50s}")
    print(f"round {round_ + 1}, p50 ms of each route: {'; '.join(parts)}", flush=True)


# Ingest


def fresh_trades(count: int, run: str, seed: int) -> list[dict]:
    """Trades opened now, as a bot records them, with the loaded models' names and versions."""
    start = datetime.now(UTC)
    symbols, names, versions = list(SYMBOLS), list(MODELS), model_versions(seed)
    trades = []
    for number in range(count):
        model = number % len(versions)
        trades.append(
            {
                "trade_id": f"{run}-{number}",
                "symbol": symbols[number % len(symbols)],
                "timestamp": (start + timedelta(milliseconds=number)).isoformat(),
                "side": ("buy", "sell")[number % 2],
                "order_type": "market",
                "amount": 0.01,
                "entry_price": 100.0 + number % 50,
                "market_regime": "bull",
                "bull_confidence": 0.7,
                "bear_confidence": 0.2,
                "decision_confidence": 0.6,
                "agent_votes": {"momentum": "buy"},
                "signals": {"rsi": 30.5},
                "model_name": names[model // VERSIONS_PER_MODEL],
                "model_version": versions[model],
            }
        )
    return trades


def send_trades(count: int, run: str, seed: int) -> None:
    """The bot, a process of its own running the code under test (PYTHONPATH): records
    `count` trades, then closes every other one; prints when its first send began
    (time.time()) and how many entries went to its outbox."""
    from tasks.client import TradeJournal

    trades = fresh_trades(count, run, seed)
    spooled = 0
    with TradeJournal(os.environ["CELERY_BROKER_URL"], os.environ["SPOOL_DIR"]) as journal:
        started = time.time()
        for trade in trades:
            spooled += journal.record_trade(trade).spooled
        for number, trade in enumerate(trades[::2]):
            move = (number % 3 - 1) * 0.5  # a win, a loss, a flat one
            spooled += journal.update_trade(
                trade["trade_id"],
                closed=True,
                exit_price=trade["entry_price"] + move,
                realized_pnl=move * trade["amount"],
                pnl_pct=move / trade["entry_price"] * 100,
                fees=0.001,
            ).spooled
    print(json.dumps({"started": started, "spooled": spooled}))


def flush_redis() -> None:
    for db in REDIS_DBS:
        redis.Redis.from_url(f"{REDIS_URL}/{db}").flushdb()


def worker_node() -> str:
    """The worker's name as compose's `--hostname trades@%h` makes it on this host."""
    return f"trades@{socket.gethostname()}"


def wait_worker(worker: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    from celery import Celery

    app = Celery(broker=f"{REDIS_URL}/{REDIS_DBS[0]}", set_as_current=False)
    deadline = time.monotonic() + seconds
    try:
        while not app.control.ping(destination=[worker_node()], timeout=0.5):
            if worker.poll() is not None:
                raise BenchError(f"the trades worker exited with {worker.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise BenchError(f"the trades worker answered no ping in {seconds:.0f} s; see {log}")
    finally:
        app.close()


def ingest_round(code: Code, journal: Journal, options: argparse.Namespace) -> float:
    """Trades/s from the bot's first send to the last close applied in the database."""
    flush_redis()
    directory = code.scratch.subdirectory(f"worker-{journal.name}")
    argv, env = compose_service(code, "worker-trades", journal.url, directory)
    log = code.scratch.subdirectory("logs") / f"worker-{journal.name}.log"
    worker = harness.start_process(argv, env, code.source, log)
    run = f"ingest{uuid.uuid4().hex[:8]}"
    since = datetime.now(UTC) - timedelta(seconds=1)
    engine = create_engine(journal.url)
    bot = None
    try:
        wait_worker(worker, log)
        env["SPOOL_DIR"] = str(code.scratch.subdirectory(f"bot-{run}"))  # the bot's outbox
        bot = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--send-trades", str(options.ingest_trades),
             "--run", run, "--seed", str(options.seed)],
            env=env, cwd=code.source, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        done_at = wait_for_closes(engine, bot, run, since, options.ingest_trades, log)
        output, errors = bot.communicate(timeout=60)
        if bot.returncode:
            raise BenchError(f"the bot failed:\n{errors}")
        sent = json.loads(output.strip().splitlines()[-1])
        if sent["spooled"]:
            raise BenchError(f"{sent['spooled']} entries went to the bot's outbox: the broker failed")
        return options.ingest_trades / (done_at - sent["started"])
    finally:
        harness.stop_processes([(worker, True), *([(bot, False)] if bot else [])])
        forget(engine, run, since)
        engine.dispose()


_PROGRESS = text(
    'SELECT count(*), count(*) FILTER (WHERE closed) FROM trade_history WHERE "timestamp" >= :since'
    " AND trade_id LIKE :run"
)


def wait_for_closes(engine, bot: subprocess.Popen, run: str, since: datetime, count: int, log: Path) -> float:
    """time.time() when all `count` trades are in and every other one is closed."""
    closes = (count + 1) // 2
    seen, progress_at = (0, 0), time.monotonic()
    with engine.connect() as connection:
        while True:
            now = tuple(connection.execute(_PROGRESS, {"since": since, "run": f"{run}-%"}).one())
            connection.rollback()  # the next look takes a fresh snapshot
            if now == (count, closes):
                return time.time()
            if bot.poll():
                raise BenchError(f"the bot failed:\n{bot.stderr.read()}")
            if now != seen:
                seen, progress_at = now, time.monotonic()
            elif time.monotonic() - progress_at > STALL_S:
                got = f"{seen[0]} of {count} trades, {seen[1]} of {closes} closes"
                raise BenchError(f"{got}, and nothing more for {STALL_S} s; see {log}")
            time.sleep(0.02)


def forget(engine, run: str, since: datetime) -> None:
    """The round's trades deleted: every round, and a later run with --reuse, starts from the load."""
    parameters = {"since": since, "run": f"{run}-%"}
    with engine.begin() as connection:
        connection.execute(
            text('DELETE FROM trade_history WHERE "timestamp" >= :since AND trade_id LIKE :run'), parameters
        )
        connection.execute(text("DELETE FROM trade_pending_updates WHERE trade_id LIKE :run"), parameters)


def measure_ingest(
    code: Code, journals: list[Journal], options: argparse.Namespace
) -> dict[str, list[float]]:
    """journal name -> trades/s of each round; each round visits every journal."""
    argv, _ = compose_service(code, "worker-trades", journals[0].url, code.scratch.subdirectory("cli"))
    print(f"\ningest: {options.ingest_trades:,} trades a round, every other one closed; {shlex.join(argv)}")
    rates: dict[str, list[float]] = {journal.name: [] for journal in journals}
    for round_ in range(options.ingest_rounds):
        for journal in journals:
            rates[journal.name].append(ingest_round(code, journal, options))
        line = ", ".join(f"{journal.label} {rates[journal.name][-1]:,.0f}/s" for journal in journals)
        print(f"round {round_ + 1}: {line}", flush=True)
    return rates


# Report

READ_HEADER = ["route", "p50 ms", "p99 ms", "goal p50 ms", "met"]
INGEST_HEADER = ["journal", "trades/s", "vs empty", "goal", "met"]
SIZE_HEADER = ["journal", "state", "trade_history", "per trade", "prediction_log", "per prediction"]
SIZE_HEADER += ["kept statistics", "database"]
LOAD_HEADER = ["journal", "step", "seconds"]


def read_rows(journal: Journal, reads: Reads) -> list[list[str]]:
    rows = []
    for route in reads.routes:
        latency = reads.latency[journal.name, route.label]
        p50, p99 = statistics.median(latency.p50), statistics.median(latency.p99)
        goal = journal.size.goal_ms if route.goal else None
        met = "-" if goal is None else ("yes" if p50 <= goal else "NO")
        rows.append([route.label, f"{p50:,.1f}", f"{p99:,.1f}", f"{goal:g}" if goal else "-", met])
    return rows


def ingest_rows(journals: list[Journal], rates: dict[str, list[float]]) -> list[list[str]]:
    """Each journal's median, and the median of its rounds' ratios to the empty journal's
    (a round's journals ran close together on a shared machine)."""
    empty = rates[journals[0].name]
    rows = []
    for journal in journals:
        ratio = statistics.median(mine / base for mine, base in zip(rates[journal.name], empty, strict=True))
        goal = journal.size is not None
        met = ("yes" if ratio >= 0.9 else "NO") if goal else "-"
        median = statistics.median(rates[journal.name])
        rows.append([journal.label, f"{median:,.0f}", f"{ratio:.2f}x", ">= 0.9x" if goal else "-", met])
    return rows


def size_rows(journals: list[Journal]) -> list[list[str]]:
    rows = []
    for journal in journals:
        for seen in journal.footprints:
            rows.append(
                [
                    journal.label,
                    seen.state,
                    mib(seen.trades),
                    per_row(seen.trades, journal.size.trades),
                    mib(seen.predictions),
                    per_row(seen.predictions, journal.size.predictions),
                    mib(seen.kept),
                    mib(seen.database),
                ]
            )
    return rows


def mib(size: int | None) -> str:
    return "-" if size is None else f"{size / 2**20:,.1f} MiB"


def per_row(size: int | None, rows: int) -> str:
    return "-" if size is None or not rows else f"{size / rows:,.0f} B"


def load_rows(journals: list[Journal]) -> list[list[str]]:
    return [
        [journal.label, name, f"{seconds:,.1f}"] for journal in journals for name, seconds in journal.steps
    ]


def plain_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def report(
    loaded: list[Journal], reads: Reads, ingested: list[Journal], rates: dict[str, list[float]]
) -> None:
    rounds = len(next(iter(rates.values())))
    tables = [
        (
            f"reads, {journal.label} trades/predictions (medians of {reads.rounds} rounds)",
            READ_HEADER,
            read_rows(journal, reads),
        )
        for journal in loaded
    ]
    tables.append(
        (
            f"ingest: trades/s from the first send to the last close applied (median of {rounds} rounds;"
            " vs empty: the median of the rounds' ratios)",
            INGEST_HEADER,
            ingest_rows(ingested, rates),
        )
    )
    tables.append(("sizes: tables with their indexes and TOAST", SIZE_HEADER, size_rows(loaded)))
    tables.append(("load and preparation", LOAD_HEADER, load_rows(loaded)))
    for title, header, rows in tables:
        print(f"\n{title}:\n{plain_table(header, rows)}")
    print("\nThe same as Markdown:")
    for title, header, rows in tables:
        print(f"\n{title}:\n\n{markdown_table(header, rows)}")


# Main


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="100k/1M,1M/10M", help="trades/predictions, comma-separated (e.g. 10M/100M too)"
    )
    parser.add_argument(
        "--seed", type=int, default=SEED, help="of the generated rows (and in the databases' names)"
    )
    parser.add_argument("--reuse", action="store_true", help="keep the loaded databases, and use those kept")
    parser.add_argument("--rounds", type=int, default=3, help="read rounds: every route on every size each")
    parser.add_argument("--seconds", type=float, default=3, help="each timed wrk burst")
    parser.add_argument("--warmup-seconds", type=float, default=2, help="per route and size, before round 1")
    parser.add_argument("--ingest-rounds", type=int, default=3)
    parser.add_argument(
        "--ingest-trades", type=int, default=3000, help="trades a round (every other one closed)"
    )
    parser.add_argument(
        "--ref",
        help="run the migrations, the web, the worker and the bot from this commit (git archive) instead "
        "of the working tree",
    )
    parser.add_argument("--keep", action="store_true", help="leave the scratch directory (logs)")
    # The bot of an ingest round runs this file again with these (send_trades).
    parser.add_argument("--send-trades", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    options = parser.parse_args()
    options.sizes = [parse_size(given) for given in options.sizes.split(",") if given.strip()]
    if not options.sizes:
        raise SystemExit("--sizes: none given")
    return options


def raise_on_signal(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def inspect_code(code: Code, database_url: str) -> None:
    """What the code's CLI has (an older --ref lacks `stats refresh` and `storage compress`)."""
    code.has_refresh = cli_has(code, database_url, "stats", "refresh")
    code.has_compress = cli_has(code, database_url, "storage", "compress")
    compress = "run" if code.has_compress else "absent: skipped"
    if not TIMESCALE:
        compress = "not run (no columnstore on plain PostgreSQL)"
    refresh = "run" if code.has_refresh else "absent: skipped"
    print(f"  flask --app web stats refresh: {refresh}; storage compress: {compress}")


def main() -> None:
    options = parse_options()
    if options.send_trades is not None:
        send_trades(options.send_trades, options.run, options.seed)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("bench/scale.py needs wrk: apt-get install wrk")
    started = time.monotonic()
    signal.signal(signal.SIGTERM, raise_on_signal)
    signal.signal(signal.SIGHUP, raise_on_signal)
    scratch = peers.Scratch(Path(tempfile.mkdtemp(prefix="bench-scale-")), BIN)
    journals: list[Journal] = []
    try:
        print(f"the code under test: {peers.use_source(scratch, options.ref)}")
        scratch.model_dir.mkdir()
        code = Code(scratch, migration_head(scratch.source))
        server = make_url(PG_ADMIN).render_as_string(True)
        kind = "TimescaleDB" if TIMESCALE else "PostgreSQL"
        print(f"server: {server} ({kind}); migration head {code.head}; seed {options.seed}")
        flush_redis()
        empty = open_empty_journal(code, journals)
        inspect_code(code, empty.url)
        prepare(code, empty, "empty")
        for size in options.sizes:
            open_journal(code, size, options, journals)
        loaded = [journal for journal in journals if journal.size is not None]
        reads = measure_reads(code, loaded, options)
        rates = measure_ingest(code, [empty, *loaded], options)
        report(loaded, reads, [empty, *loaded], rates)
    except WebFailed as exc:
        print(f"\n--- last lines of {exc.web.log} ---")
        print("\n".join(exc.web.log.read_text(errors="replace").splitlines()[-40:]))
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        clean_up(scratch, journals, options.keep)
        print(f"\ntook {(time.monotonic() - started) / 60:.1f} minutes")


def clean_up(scratch: peers.Scratch, journals: list[Journal], keep: bool) -> None:
    for journal in journals:
        if journal.keep:
            print(f"kept for --reuse: {journal.name}")
        else:
            harness.scratch_database(PG_ADMIN, journal.name, drop=True)
    flush_redis()
    if keep:
        print(f"scratch directory kept: {scratch.directory}")
    else:
        shutil.rmtree(scratch.directory, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except (BenchError, peers.BenchError) as exc:
        sys.exit(f"\nbench/scale.py failed: {exc}")
    except KeyboardInterrupt:
        sys.exit("\ninterrupted")
