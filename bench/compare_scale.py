"""What db.compare costs at scale: a million shadow pairs and their linked trades, timed.

    .venv/bin/python bench/compare_scale.py                      # 1M pairs, 50k trades, plain PostgreSQL
    .venv/bin/python bench/compare_scale.py --pairs 100k --trades 5k
    BENCH_PG_URL=postgresql+psycopg2://postgres@127.0.0.1:5433/postgres \
        .venv/bin/python bench/compare_scale.py

A scratch database on the admin server (BENCH_PG_ADMIN_URL, or BENCH_PG_URL: a server with
TimescaleDB preloaded, where the log is a hypertable), migrated by `flask --app web db
upgrade` from this checkout, then loaded server-side (INSERT ... SELECT ... FROM
generate_series, setseed: the same rows every run), over the `--days` before now:

* `--pairs` champion predictions of one model (role 'champion', a tenth of them of two
  rows, 1% of the values null), each shadowed by the challenger a few ms later (its
  values the champion's plus noise, clipped to [0, 1]);
* as many predictions of other models (`--others`, default: as many as the pairs), which
  the comparison must not read;
* `--trades` closed trades linked to champion predictions (evenly spread over them), won
  when their PnL is positive, and a tenth as many open ones.

Then the index db.compare reads the shadows by (`ix_prediction_log_shadows`, migration 007's;
made here again if missing, for a database migrated before it), VACUUM (ANALYZE), and
the timings: compare() end to end (a warm-up, then the median of `--rounds`), its SQL
statement alone and its bootstrap alone; the statement's EXPLAIN (ANALYZE, BUFFERS) is
printed once. The goal: 50 ms at 1M pairs. Drops the database unless `--keep`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import harness
import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from db.compare import COMPARE_SQL, bootstrap_ci, compare, parameters  # noqa: E402

BIN = Path(sys.executable).parent
TIMESCALE = bool(os.environ.get("BENCH_PG_URL"))
PG_ADMIN = os.environ.get("BENCH_PG_URL") or os.environ.get(
    "BENCH_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
MODEL = "xgboost_model.json"
CHAMPION = "c0ffee00c0ffee00"
CHALLENGER = "cha11e9e5cha11e9"
GOAL_MS = 50.0
SEED = 7
SHADOW_INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_prediction_log_shadows"
    " ON prediction_log (model_name, model_version, created_at) WHERE role = 'shadow'"
)

# Champion n lies in the n-th of `count` equal slices of the window.
_CHAMPIONS = text(
    """
    INSERT INTO prediction_log (prediction_id, created_at, model_name, model_version, model_type, rows,
                                predictions, latency_ms, role)
    SELECT md5(:seed || ':champion:' || n)::uuid::text,
           CAST(:start AS timestamptz) + (n - 1 + random()) * CAST(:step AS interval),
           :model, :champion, 'xgboost', CASE WHEN two THEN 2 ELSE 1 END,
           CASE WHEN two THEN jsonb_build_array(first, round(random()::numeric, 6))
                ELSE jsonb_build_array(first) END,
           1.0, 'champion'
    FROM (
        SELECT n, random() < 0.1 AS two,
               CASE WHEN random() < 0.01 THEN NULL ELSE round(random()::numeric, 6) END AS first
        FROM generate_series(1, :count) AS n
    ) AS draws
    """
)
# Each champion's shadow, 2-5 ms later: its values plus noise, clipped to [0, 1].
_SHADOWS = text(
    """
    INSERT INTO prediction_log (prediction_id, created_at, model_name, model_version, model_type, rows,
                                predictions, latency_ms, role, shadow_of)
    SELECT md5(:seed || ':shadow:' || champion.prediction_id)::uuid::text,
           champion.created_at + (2 + 3 * random()) * interval '1 millisecond',
           champion.model_name, :challenger, 'xgboost', champion.rows,
           (SELECT jsonb_agg(CASE WHEN jsonb_typeof(value) = 'number'
                                  THEN to_jsonb(round(greatest(0, least(1,
                                      CAST(value AS float8) + 0.3 * (random() - 0.5)))::numeric, 6))
                                  ELSE value END ORDER BY position)
            FROM jsonb_array_elements(champion.predictions) WITH ORDINALITY AS element(value, position)),
           1.5, 'shadow', champion.prediction_id
    FROM prediction_log AS champion
    WHERE champion.model_name = :model AND champion.role = 'champion'
    """
)
_OTHERS = text(
    """
    INSERT INTO prediction_log (prediction_id, created_at, model_name, model_version, model_type, rows,
                                predictions, latency_ms, role)
    SELECT md5(:seed || ':other:' || n)::uuid::text,
           CAST(:start AS timestamptz) + (n - 1 + random()) * CAST(:step AS interval),
           (ARRAY['lightgbm_model.txt', 'lstm_model.pt'])[1 + n % 2], 'feedfacefeedface', 'lightgbm', 1,
           jsonb_build_array(round(random()::numeric, 6)), 1.0, 'champion'
    FROM generate_series(1, :count) AS n
    """
)
# Trade i names champion 1 + (i - 1) * stride (closed), or is open (the last tenth).
_TRADES = text(
    """
    INSERT INTO trade_history (trade_id, "timestamp", symbol, side, order_type, amount, entry_price,
                               realized_pnl, won, closed, close_timestamp, prediction_id, model_name,
                               model_version)
    SELECT md5(:seed || ':trade:' || i), champion_at + interval '1 second', 'BTC/USDT', 'buy', 'market',
           1, 60000, CASE WHEN closed THEN pnl END, CASE WHEN closed THEN pnl > 0 END, closed,
           CASE WHEN closed THEN champion_at + interval '1 hour' END,
           md5(:seed || ':champion:' || champion)::uuid::text, :model, :champion
    FROM (
        SELECT i, i <= :closed AS closed, 1 + ((i - 1) * :stride) % :count AS champion,
               round((20 * (random() - 0.48))::numeric, 2) AS pnl,
               CAST(:start AS timestamptz) + (((i - 1) * :stride) % :count + 0.5) * CAST(:step AS interval)
                   AS champion_at
        FROM generate_series(1, :trades) AS i
    ) AS draws
    """
)


def parse_count(given: str) -> int:
    given = given.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(given[-1:], 1)
    return int(given.rstrip("km")) * scale


def migrate(url: str) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "TIMESCALEDB": "require" if TIMESCALE else "auto",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [str(BIN / "flask"), "--app", "web", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"the migration failed:\n{done.stdout}{done.stderr}")


def timed(label: str, call) -> float:
    started = time.monotonic()
    result = call()
    seconds = time.monotonic() - started
    print(
        f"  {label}: {seconds:,.1f} s" + (f" ({result:,} rows)" if isinstance(result, int) else ""),
        flush=True,
    )
    return seconds


def load(engine, options: argparse.Namespace, start: datetime) -> None:
    window = timedelta(days=options.days)
    common = {"seed": str(SEED), "model": MODEL, "champion": CHAMPION, "challenger": CHALLENGER}

    def insert(statement, seed: float, **given):
        with engine.begin() as connection:
            connection.execute(text("SELECT setseed(:value)"), {"value": seed})
            return connection.execute(statement, {**common, **given}).rowcount

    pairs, trades = options.pairs, options.trades
    slice_ = window / pairs
    timed("champions", lambda: insert(_CHAMPIONS, 0.1, start=start, step=slice_, count=pairs))
    timed("shadows", lambda: insert(_SHADOWS, 0.2))
    if options.others:
        others = window / options.others
        timed("other models", lambda: insert(_OTHERS, 0.3, start=start, step=others, count=options.others))
    closed = trades
    total = trades + trades // 10
    timed(
        "trades",
        lambda: insert(
            _TRADES,
            0.4,
            start=start,
            step=slice_,
            count=pairs,
            trades=total,
            closed=closed,
            stride=max(1, pairs // total),
        ),
    )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        timed("shadow index", lambda: connection.execute(text(SHADOW_INDEX)) and None)
        timed("vacuum analyze", lambda: connection.execute(text("VACUUM (ANALYZE)")) and None)


def milliseconds(call, rounds: int) -> tuple[float, list[float]]:
    call()  # warm-up: the cache, the connection
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), times


def measure(engine, options: argparse.Namespace, since: datetime) -> None:
    given = parameters(MODEL, CHALLENGER, since, None, 0.5, None)
    with Session(engine) as session:
        answer = compare(session, MODEL, CHALLENGER, since=since)
        shown = {
            key: answer[key] for key in ("pairs", "trades", "n", "agreement", "brier_diff_ci", "verdict")
        }
        print(f"\nanswer: {shown}")
        plan = session.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + COMPARE_SQL.text), given).scalars()
        print("\n" + "\n".join(plan))
        whole, whole_all = milliseconds(
            lambda: compare(session, MODEL, CHALLENGER, since=since), options.rounds
        )
        sql, sql_all = milliseconds(lambda: session.execute(COMPARE_SQL, given).one(), options.rounds)
        row = session.execute(COMPARE_SQL, given).one()
    diffs = np.asarray(row.challenger_errors) - np.asarray(row.champion_errors)
    boot, boot_all = milliseconds(lambda: bootstrap_ci(diffs, 2000, 0), options.rounds)
    counts = f"{answer['pairs']:,} row pairs, {answer['trades']:,} closed trades"
    print(f"\n{options.pairs:,} shadow pairs ({counts})")
    print(f"server: {'TimescaleDB' if TIMESCALE else 'PostgreSQL'} at {PG_ADMIN.rsplit('@', 1)[-1]}")
    for label, median, every in (
        ("compare() end to end", whole, whole_all),
        ("  its SQL statement", sql, sql_all),
        ("  its bootstrap (2000 resamples)", boot, boot_all),
    ):
        rounds = ", ".join(f"{value:,.0f}" for value in every)
        print(f"{label:36} median {median:9,.1f} ms  [{rounds}]")
    print(f"goal: {GOAL_MS:.0f} ms -> {'met' if whole <= GOAL_MS else f'{whole / GOAL_MS:,.0f}x over'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=parse_count, default=1_000_000)
    parser.add_argument("--trades", type=parse_count, default=50_000)
    parser.add_argument("--others", type=parse_count, default=None, help="other models' predictions")
    parser.add_argument("--days", type=int, default=14, help="the window: since the challenger was set")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the database on the server")
    options = parser.parse_args()
    if options.others is None:
        options.others = options.pairs
    name = f"bench_compare_{uuid.uuid4().hex[:8]}"
    url = harness.scratch_database(PG_ADMIN, name)
    print(f"database {name}", flush=True)
    engine = create_engine(url)
    try:
        timed("migrate", lambda: migrate(url))
        now = datetime.now(UTC)
        since = now - timedelta(days=options.days)
        load(engine, options, since)
        measure(engine, options, since)
    finally:
        engine.dispose()
        if options.keep:
            print(f"kept {url}")
        else:
            harness.scratch_database(PG_ADMIN, name, drop=True)


if __name__ == "__main__":
    main()
