"""Trade ingest: trades per second from enqueue to durable row, ours against the plan's style.

    make bench-ingest            # or: .venv/bin/python bench/ingest.py --trades 5000 --rounds 3

Each round enqueues the same number of fresh trades and times from the first enqueue to
the moment the last row is committed, with only the worker under test running:

* journal   - the project's worker (`celery -A tasks worker -Q trades`), batched writes;
* plan      - the plan's style: a worker doing one ORM add + commit per trade task;
* in-process - for reference, the plan's repository called directly (no queue at all).

Each queued pipeline is fed by its own bot side, one message per trade: the journal by
`tasks.client.TradeJournal`, the plan's worker by Celery's `send_task`. Rounds
alternate so that machine noise falls on both. It needs the PostgreSQL and Redis of
the README; it creates and drops its own database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")


def trades(count: int) -> list[dict]:
    run = uuid.uuid4().hex[:6]
    start = datetime.now(UTC)
    return [
        {
            "trade_id": f"{run}-{number}",
            "symbol": ("BTC/USDT", "ETH/USDT")[number % 2],
            "timestamp": (start + timedelta(milliseconds=number)).isoformat(),
            "side": "buy",
            "order_type": "market",
            "amount": 0.01,
            "entry_price": 40_000.0 + number,
            "market_regime": "bull",
            "bull_confidence": 0.7,
            "bear_confidence": 0.2,
            "decision_confidence": 0.6,
            "agent_votes": {"momentum": "buy"},
            "signals": {"rsi": 30.5},
        }
        for number in range(count)
    ]


class Bench:
    def __init__(self, workdir: Path):
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        self.text = text
        self.workdir = workdir
        name = f"tradebot_bench_{uuid.uuid4().hex[:6]}"
        self.admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        self.database = name
        self.url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(False)
        self.env = {
            **os.environ,
            "DATABASE_URL": self.url,
            "CELERY_BROKER_URL": REDIS_URL,
            "SPOOL_DIR": str(workdir / "spool"),
            "PYTHONUNBUFFERED": "1",
        }
        migrate = subprocess.run(
            [str(BIN / "flask"), "--app", "web", "db", "upgrade"],
            env=self.env,
            cwd=workdir,
            capture_output=True,
        )
        if migrate.returncode:
            raise SystemExit(migrate.stderr.decode())
        self.engine = create_engine(self.url)

    def close(self) -> None:
        self.engine.dispose()
        with self.admin.connect() as connection:
            connection.execute(self.text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))

    def rows(self) -> int:
        with self.engine.connect() as connection:
            return connection.scalar(self.text("SELECT count(*) FROM trade_history"))

    def truncate(self) -> None:
        with self.engine.begin() as connection:
            connection.execute(self.text("TRUNCATE trade_history, trade_pending_updates"))

    def queued(self, app_module: str, queue: str, task: str, batch: list[dict]) -> float:
        """Start a worker, enqueue `batch`, return trades/s from first enqueue to last row."""
        import redis
        from celery import Celery

        from tasks.client import TradeJournal

        redis.Redis.from_url(REDIS_URL).flushdb()
        self.truncate()
        log = (self.workdir / f"{queue}.log").open("ab")
        cwd = ROOT / "bench" if app_module == "plan_style" else self.workdir
        worker = subprocess.Popen(
            [str(BIN / "celery"), "-A", app_module, "worker", "-Q", queue, "-c", "2", "--loglevel", "WARNING",
             "--without-gossip", "--without-mingle", "-n", f"bench-{queue}@%h"],
            env=self.env, cwd=cwd, stdout=log, stderr=log,
        )  # fmt: skip
        sender = Celery(broker=REDIS_URL, set_as_current=False)
        sender.conf.task_serializer = "json"
        try:
            while not sender.control.ping(destination=[f"bench-{queue}@{os.uname().nodename}"], timeout=0.5):
                if worker.poll() is not None:
                    raise SystemExit(f"{app_module} worker exited; see {log.name}")
            started = time.perf_counter()
            if app_module == "tasks":
                with TradeJournal(REDIS_URL, self.workdir / "outbox") as journal:
                    for trade in batch:
                        journal.record_trade(trade)
            else:
                with sender.producer_or_acquire() as producer:
                    for trade in batch:
                        sender.send_task(task, args=[trade], queue=queue, producer=producer)
            while self.rows() < len(batch):
                time.sleep(0.02)
            return len(batch) / (time.perf_counter() - started)
        finally:
            sender.close()
            worker.terminate()
            worker.wait(60)
            log.close()

    def in_process(self, batch: list[dict]) -> float:
        from sqlalchemy.orm import Session

        from db.models import TradeHistory
        from db.record import TradeRecord

        self.truncate()
        columns = TradeHistory.__table__.columns.keys()
        started = time.perf_counter()
        for trade in batch:
            record = TradeRecord.from_dict(trade)
            with Session(self.engine) as session:
                session.add(TradeHistory(**{name: getattr(record, name) for name in columns}))
                session.commit()
        return len(batch) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=5000, help="trades per round (default 5000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per pipeline (default 3)")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as workdir:
        bench = Bench(Path(workdir))
        results: dict[str, list[float]] = {"journal": [], "plan": [], "in-process": []}
        try:
            for round_ in range(1, options.rounds + 1):
                results["journal"].append(
                    bench.queued("tasks", "trades", "trades.record", trades(options.trades))
                )
                results["plan"].append(
                    bench.queued("plan_style", "plan_trades", "plan.record_trade", trades(options.trades))
                )
                results["in-process"].append(bench.in_process(trades(options.trades)))
                print(
                    f"round {round_}: "
                    + ", ".join(f"{name} {values[-1]:,.0f}/s" for name, values in results.items())
                )
        finally:
            bench.close()

    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"\ntrades/s, enqueue to durable row (median of {options.rounds} rounds of {options.trades}):")
    for name, value in median.items():
        print(f"  {name:<11} {value:>9,.0f}")
    print(f"ratio journal / plan-style worker: {median['journal'] / median['plan']:.1f}x (goal: 10x)")
    print(f"ratio journal / in-process add+commit: {median['journal'] / median['in-process']:.1f}x")


if __name__ == "__main__":
    main()
