"""What db.compare costs at scale: a million shadow pairs, logged as workers log them, read kept and scanned.

    .venv/bin/python bench/compare_scale.py                      # 1M pairs, 50k trades, plain PostgreSQL
    .venv/bin/python bench/compare_scale.py --pairs 100k --trades 5k
    BENCH_PG_URL=postgresql+psycopg2://postgres@127.0.0.1:5433/postgres \
        .venv/bin/python bench/compare_scale.py

A scratch database on the admin server (BENCH_PG_ADMIN_URL, or BENCH_PG_URL: a server with
TimescaleDB preloaded, where the log is a hypertable), migrated by `flask --app web db
upgrade` from this checkout. The window is the `--days` before now; its experiment (the
challenger set at its start, threshold 0.5) is recorded first (`record_experiment`), so
its sums are kept as the log is written. Then, each step timed:

* `--pairs` champion predictions of one model (role 'champion', a tenth of them of two
  rows, 1% of their first values null), each shadowed by the challenger 2-5 ms later (its
  values the champion's plus uniform noise of width 0.3, clipped to [0, 1]; null where
  the champion's is), drawn in Python (numpy, seeded: the same rows every run) and written
  through the log's real write path: `db.prediction_log.log_predictions` in batches of
  1,000 rows (a champion, then its shadow with `champion_version` and
  `champion_predictions`, as the workers' log writer gives them), each batch committed.
  The load rate is the rows over the time spent in those calls and commits;
* as many predictions of other models (`--others`, default: as many as the pairs),
  loaded server-side (INSERT ... SELECT ... FROM generate_series, setseed), which the
  comparison must not read;
* `--trades` closed trades linked to champion predictions (evenly spread over them, opened
  a second after theirs), won when their PnL is positive, and a tenth as many open ones,
  loaded server-side: the triggers on trade_history log them for the fold, as for any
  writer; then `fold_all` folds them into the experiment's trade sums (timed);
* VACUUM (ANALYZE), then compare() end to end, on a session of its own each time, the
  kept read (the experiment's window: since its start, no end) and the scan (the same
  start, `until` a second after the last shadow: the same pairs), interleaved round by
  round (a warm-up, then `--rounds`). Both answers must agree (pairs, trades, n, taken and
  declined exactly; the other figures to 1e-9 relative; the bootstrap interval to 1e-6)
  or the run fails. Printed: each side's median, the ratio scan/kept, one answer (JSON),
  and the goal: the kept read in at most 50 ms at 1M pairs (PASS/FAIL);
* the writer's cost of keeping the pair sums: one `log_predictions` batch of 1,000 fresh
  shadows (the pair sums and shadow links written with them) against one of 1,000 fresh
  champions, each committed, interleaved over WRITE_ROUNDS rounds after a warm-up; the
  ratio of their medians.

Drops the database unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import harness
import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from db.compare import compare, fold_all, record_experiment  # noqa: E402
from db.prediction_log import log_predictions  # noqa: E402

BIN = Path(sys.executable).parent
TIMESCALE = bool(os.environ.get("BENCH_PG_URL"))
PG_ADMIN = os.environ.get("BENCH_PG_URL") or os.environ.get(
    "BENCH_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
MODEL = "xgboost_model.json"
CHAMPION = "c0ffee00c0ffee00"
CHALLENGER = "cha11e9e5cha11e9"
THRESHOLD = 0.5
GOAL_MS = 50.0
GOAL_PAIRS = 1_000_000
SEED = 7
BATCH_ROWS = 1_000  # rows per log_predictions call, as the workers' log writer writes them
WRITE_ROUNDS = 7
RELATIVE = 1e-9  # the figures' agreement, kept against scanned
CI_TOLERANCE = 1e-6

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
# Trade i names the champion of rank 1 + (i - 1) * stride (in time), opened a second after
# it; closed, or open (the last tenth).
_TRADES = text(
    """
    WITH champion AS (
        SELECT prediction_id, created_at, row_number() OVER (ORDER BY created_at, prediction_id) AS n
        FROM prediction_log WHERE model_name = :model AND role = 'champion'
    )
    INSERT INTO trade_history (trade_id, "timestamp", symbol, side, order_type, amount, entry_price,
                               realized_pnl, won, closed, close_timestamp, prediction_id, model_name,
                               model_version)
    SELECT md5(:seed || ':trade:' || i), champion.created_at + interval '1 second', 'BTC/USDT', 'buy',
           'market', 1, 60000, CASE WHEN closed THEN pnl END, CASE WHEN closed THEN pnl > 0 END, closed,
           CASE WHEN closed THEN champion.created_at + interval '1 hour' END,
           champion.prediction_id, :model, :champion
    FROM (
        SELECT i, i <= :closed AS closed, 1 + ((i - 1) * :stride) % :count AS n,
               round((20 * (random() - 0.48))::numeric, 2) AS pnl
        FROM generate_series(1, :trades) AS i
    ) AS draws
    JOIN champion USING (n)
    """
)


class Pairs:
    """Champion predictions and their shadows, drawn at once (numpy, seeded), made into the
    log writer's rows a slice at a time."""

    def __init__(self, count: int, start: datetime, span: timedelta, seed: int):
        rng = np.random.default_rng(seed)
        step = span.total_seconds() / count
        self.count, self.start = count, start
        self.champion_at = (np.arange(count) + rng.random(count)) * step  # seconds after start
        self.shadow_at = self.champion_at + 0.002 + 0.003 * rng.random(count)
        self.two = rng.random(count) < 0.1
        self.null = rng.random(count) < 0.01
        self.champion = np.round(rng.random((count, 2)), 6)
        noise = 0.3 * (rng.random((count, 2)) - 0.5)
        self.shadow = np.round(np.clip(self.champion + noise, 0.0, 1.0), 6)
        self.ids = rng.bytes(32 * count)

    @property
    def last_shadow(self) -> datetime:
        return self.start + timedelta(seconds=float(self.shadow_at.max()))

    def rows(self, low: int, high: int, champions: bool = True, shadows: bool = True) -> list[dict]:
        """Pairs low..high-1: each champion's row, then its shadow's."""
        champion_at, shadow_at = self.champion_at[low:high].tolist(), self.shadow_at[low:high].tolist()
        two, null = self.two[low:high].tolist(), self.null[low:high].tolist()
        champion_values, shadow_values = self.champion[low:high].tolist(), self.shadow[low:high].tolist()
        rows = []
        for k in range(high - low):
            n = low + k
            width = 2 if two[k] else 1
            champion, shadow = champion_values[k][:width], shadow_values[k][:width]
            if null[k]:  # a non-finite output: null on both sides, the same input
                champion[0] = shadow[0] = None
            champion_id = str(uuid.UUID(bytes=self.ids[32 * n : 32 * n + 16], version=4))
            if champions:
                rows.append(
                    _row(champion_id, self.start + timedelta(seconds=champion_at[k]), CHAMPION, champion)
                    | {"role": "champion", "shadow_of": None}
                )
            if shadows:
                shadow_id = str(uuid.UUID(bytes=self.ids[32 * n + 16 : 32 * n + 32], version=4))
                rows.append(
                    _row(shadow_id, self.start + timedelta(seconds=shadow_at[k]), CHALLENGER, shadow)
                    | {
                        "role": "shadow",
                        "shadow_of": champion_id,
                        "champion_version": CHAMPION,
                        "champion_predictions": champion,
                    }
                )
        return rows


def _row(prediction_id: str, at: datetime, version: str, values: list) -> dict[str, Any]:
    """A logged prediction as tasks/worker/prediction_log.py gives it (no features kept)."""
    return {
        "prediction_id": prediction_id,
        "created_at": at,
        "model_name": MODEL,
        "model_version": version,
        "model_type": "xgboost",
        "rows": len(values),
        "predictions": values,
        "latency_ms": 1.0 if version == CHAMPION else 1.5,
        "request_id": None,
        "features": None,
        "contributions": None,
    }


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


def timed(label: str, call: Callable[[], Any]) -> float:
    started = time.monotonic()
    result = call()
    seconds = time.monotonic() - started
    print(
        f"  {label}: {seconds:,.1f} s" + (f" ({result:,} rows)" if isinstance(result, int) else ""),
        flush=True,
    )
    return seconds


def write_batch(session: Session, rows: list[dict]) -> float:
    """One batch as the log writer writes it: log_predictions, commit. Seconds taken."""
    started = time.perf_counter()
    log_predictions(session, rows)
    session.commit()
    return time.perf_counter() - started


def load_log(engine, pairs: Pairs) -> dict[str, float]:
    """The champions and their shadows through log_predictions, BATCH_ROWS rows a call."""
    per_batch = BATCH_ROWS // 2
    writing = building = 0.0
    rows_written = 0
    next_report = 0.25
    with Session(engine) as session:
        for low in range(0, pairs.count, per_batch):
            started = time.perf_counter()
            rows = pairs.rows(low, min(low + per_batch, pairs.count))
            building += time.perf_counter() - started
            writing += write_batch(session, rows)
            rows_written += len(rows)
            if rows_written >= next_report * 2 * pairs.count:
                print(f"    {rows_written:,} rows, {rows_written / writing:,.0f} rows/s", flush=True)
                next_report += 0.25
    rate = rows_written / writing
    print(
        f"  champions and shadows through log_predictions: {rows_written:,} rows in {writing:,.1f} s"
        f" ({rate:,.0f} rows/s; {BATCH_ROWS:,}-row batches, each committed;"
        f" {building:,.1f} s more building the rows in Python)",
        flush=True,
    )
    return {"rows": rows_written, "seconds": writing, "rate": rate}


def insert(engine, statement, random_seed: float, **given) -> int:
    with engine.begin() as connection:
        connection.execute(text("SELECT setseed(:value)"), {"value": random_seed})
        return connection.execute(statement, given).rowcount


def load_trades(engine, options: argparse.Namespace) -> dict[str, float]:
    total = options.trades + options.trades // 10
    timed(
        "trades (the triggers log them for the fold)",
        lambda: insert(
            engine,
            _TRADES,
            0.4,
            seed=str(SEED),
            model=MODEL,
            champion=CHAMPION,
            count=options.pairs,
            trades=total,
            closed=options.trades,
            stride=max(1, options.pairs // total),
        ),
    )
    with engine.connect() as connection:
        logged = connection.execute(text("SELECT count(*) FROM shadow_trade_changes")).scalar_one()
    with Session(engine) as session:
        started = time.perf_counter()
        folded = fold_all(session)
        seconds = time.perf_counter() - started
    print(
        f"  fold_all: {folded:,} logged trades folded in {seconds:,.2f} s"
        f" ({folded / seconds:,.0f} trades/s; {logged:,} were logged)",
        flush=True,
    )
    return {"folded": folded, "seconds": seconds}


def vacuum(engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        timed("vacuum analyze", lambda: connection.execute(text("VACUUM (ANALYZE)")) and None)


def compared(engine, since: datetime, until: datetime | None) -> tuple[float, dict]:
    """compare() end to end on a session of its own: (milliseconds, answer)."""
    with Session(engine) as session:
        started = time.perf_counter()
        answer = compare(session, MODEL, CHALLENGER, since=since, until=until, threshold=THRESHOLD)
        return (time.perf_counter() - started) * 1000, answer


def disagreements(kept: dict, scanned: dict) -> list[str]:
    """What differs between the two answers, beyond the tolerances."""
    found = []
    if kept["source"] != "kept":
        found.append(f"the kept read answered from {kept['source']!r}")
    if scanned["source"] != "scan":
        found.append(f"the scan answered from {scanned['source']!r}")

    def close(name: str, mine, theirs, relative: float = RELATIVE, absolute: float = 0.0) -> None:
        if mine is None or theirs is None:
            if mine is not theirs:
                found.append(f"{name}: kept {mine!r}, scan {theirs!r}")
        elif not math.isclose(mine, theirs, rel_tol=relative, abs_tol=absolute):
            found.append(f"{name}: kept {mine!r}, scan {theirs!r}")

    for name in ("pairs", "trades", "n", "taken", "declined", "verdict"):
        if kept[name] != scanned[name]:
            found.append(f"{name}: kept {kept[name]!r}, scan {scanned[name]!r}")
    for name in ("agreement", "mean_abs_diff", "correlation", "brier_diff", "pnl_taken", "pnl_declined"):
        close(name, kept[name], scanned[name])
    for side in ("champion", "challenger"):
        for name in ("accuracy", "brier", "log_loss"):
            close(f"{side}.{name}", kept[side][name], scanned[side][name])
    kept_ci, scanned_ci = kept["brier_diff_ci"], scanned["brier_diff_ci"]
    if (kept_ci is None) != (scanned_ci is None):
        found.append(f"brier_diff_ci: kept {kept_ci!r}, scan {scanned_ci!r}")
    elif kept_ci is not None:
        for bound, mine, theirs in zip(("low", "high"), kept_ci, scanned_ci, strict=True):
            close(f"brier_diff_ci.{bound}", mine, theirs, relative=0.0, absolute=CI_TOLERANCE)
    return found


def measure_reads(engine, options: argparse.Namespace, since: datetime, until: datetime) -> dict:
    """The kept read and the scan, interleaved round by round after a warm-up."""
    compared(engine, since, None)
    compared(engine, since, until)
    kept_ms, scan_ms = [], []
    for _ in range(options.rounds):
        ms, kept = compared(engine, since, None)
        kept_ms.append(ms)
        ms, scanned = compared(engine, since, until)
        scan_ms.append(ms)
        problems = disagreements(kept, scanned)
        if problems:
            raise SystemExit("the kept read and the scan disagree:\n  " + "\n  ".join(problems))
    return {
        "kept": statistics.median(kept_ms),
        "scan": statistics.median(scan_ms),
        "kept_all": kept_ms,
        "scan_all": scan_ms,
        "answer": kept,
    }


def measure_writes(engine, rounds: int) -> dict:
    """One batch of 1,000 fresh champions against one of their 1,000 shadows, interleaved."""
    fresh = Pairs(BATCH_ROWS * (rounds + 1), datetime.now(UTC), timedelta(minutes=1), SEED + 1)
    champion_s, shadow_s = [], []
    with Session(engine) as session:
        for index in range(rounds + 1):  # the first: a warm-up
            low, high = index * BATCH_ROWS, (index + 1) * BATCH_ROWS
            champion = write_batch(session, fresh.rows(low, high, shadows=False))
            shadow = write_batch(session, fresh.rows(low, high, champions=False))
            if index:
                champion_s.append(champion * 1000)
                shadow_s.append(shadow * 1000)
    return {
        "champion": statistics.median(champion_s),
        "shadow": statistics.median(shadow_s),
        "champion_all": champion_s,
        "shadow_all": shadow_s,
    }


def report(options: argparse.Namespace, loaded: dict, folded: dict, reads: dict, writes: dict) -> None:
    answer = reads["answer"]
    print("\none answer (kept):")
    print(json.dumps(answer, indent=2, default=str))

    def every(values: list[float]) -> str:
        return ", ".join(f"{value:,.1f}" for value in values)

    server = f"{'TimescaleDB' if TIMESCALE else 'PostgreSQL'} at {PG_ADMIN.rsplit('@', 1)[-1]}"
    print(f"\n{options.pairs:,} shadowed champions, {options.trades:,} closed trades; {server}")
    print(f"  {answer['pairs']:,} row pairs, {answer['trades']:,} linked closed trades, n {answer['n']:,}")
    print(f"load through log_predictions   {loaded['rate']:12,.0f} rows/s")
    print(
        f"fold_all                        {folded['seconds']:12,.2f} s  ({folded['folded']:,} trades,"
        f" {folded['folded'] / folded['seconds']:,.0f}/s)"
    )
    print(f"compare() kept (median)         {reads['kept']:12,.1f} ms  [{every(reads['kept_all'])}]")
    print(f"compare() scan (median)         {reads['scan']:12,.1f} ms  [{every(reads['scan_all'])}]")
    print(f"scan / kept                     {reads['scan'] / reads['kept']:12,.0f}x")
    print(
        f"batch of 1,000 champions        {writes['champion']:12,.1f} ms  [{every(writes['champion_all'])}]"
    )
    print(f"batch of 1,000 shadows          {writes['shadow']:12,.1f} ms  [{every(writes['shadow_all'])}]")
    print(f"write cost shadow / champion    {writes['shadow'] / writes['champion']:12,.2f}x")
    met = reads["kept"] <= GOAL_MS
    scale = "" if options.pairs >= GOAL_PAIRS else f" (measured at {options.pairs:,} pairs only)"
    print(
        f"goal: the kept read <= {GOAL_MS:.0f} ms at {GOAL_PAIRS:,} pairs: "
        f"{'PASS' if met else 'FAIL'} ({reads['kept']:,.1f} ms){scale}"
    )


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
    if options.rounds < 1:
        parser.error("--rounds: at least 1")
    if options.others is None:
        options.others = options.pairs
    name = f"bench_compare_{uuid.uuid4().hex[:8]}"
    url = harness.scratch_database(PG_ADMIN, name)
    print(f"database {name}", flush=True)
    engine = create_engine(url)
    try:
        timed("migrate", lambda: migrate(url))
        span = timedelta(days=options.days)
        since = datetime.now(UTC) - span
        with Session(engine) as session:
            record_experiment(session, MODEL, CHALLENGER, since=since, threshold=THRESHOLD)
            session.commit()
        started = time.monotonic()
        pairs = Pairs(options.pairs, since, span, SEED)
        print(f"  drawing {options.pairs:,} pairs: {time.monotonic() - started:,.1f} s", flush=True)
        loaded = load_log(engine, pairs)
        if options.others:
            step = span / options.others
            timed(
                "other models (server-side)",
                lambda: insert(
                    engine, _OTHERS, 0.3, seed=str(SEED), start=since, step=step, count=options.others
                ),
            )
        folded = load_trades(engine, options)
        vacuum(engine)
        reads = measure_reads(engine, options, since, pairs.last_shadow + timedelta(seconds=1))
        writes = measure_writes(engine, WRITE_ROUNDS)
        report(options, loaded, folded, reads, writes)
    finally:
        engine.dispose()
        if options.keep:
            print(f"kept {url}")
        else:
            harness.scratch_database(PG_ADMIN, name, drop=True)


if __name__ == "__main__":
    main()
