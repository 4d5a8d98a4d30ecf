"""Trade ingest: trades per second from enqueue to durable row, ours against the plan's style.

    make bench-ingest            # or: .venv/bin/python bench/ingest.py --trades 5000 --rounds 3
    make bench-ingest-durability # or: .venv/bin/python bench/ingest.py --durability

Each round enqueues the same number of fresh trades and times from the first enqueue to
the moment the last row is committed, with only the worker under test running:

* journal   - the project's worker (`celery -A tasks worker -Q trades`), batched writes;
* plan      - the plan's style: a worker doing one ORM add + commit per trade task;
* journal-rabbitmq - the same journal with RabbitMQ as the broker (quorum `trades` queue,
  publisher confirms; Redis stays the result backend), in a fresh vhost of its own on
  127.0.0.1:5672 (made and removed with `rabbitmqctl`; BENCH_RABBITMQ_URL to use another);
* in-process - for reference, the plan's repository called directly (no queue at all).

Each queued pipeline is fed by its own bot side, one message per trade: the journal by
`tasks.client.TradeJournal`, the plan's worker by Celery's `send_task`. Rounds
alternate so that machine noise falls on both. It needs the PostgreSQL and Redis of
the README; it creates and drops its own database.

`--durability` measures what the broker's fsync policy costs instead: the journal alone
(TradeJournal -> `celery -A tasks worker -Q trades` -> PostgreSQL) against three private
`redis-server` processes it starts on free ports, their append-only files on disk in a
temporary directory (`--aof-dir` to choose the disk; tmpfs would make fsync free):

* everysec - `--appendonly yes --appendfsync everysec`, what `--appendonly yes` means;
* always   - `--appendonly yes --appendfsync always`: Redis fsyncs before it answers;
* no-aof   - `--appendonly no`, for reference (no disk writes at all).

RDB snapshots are off on all three (`--save ""`) and each round starts from an emptied,
rewritten AOF, so only the fsync policy differs. Rounds interleave the sides (everysec,
always, no-aof, everysec, ...; 5 rounds by default), and it prints per side the median
trades/s, its ratio to everysec (the median of the rounds' ratios: the machine is
shared, absolute figures drift) and the bot's own cost, the time one `record_trade`
call takes (p50/p99 over every call of every round). `redis-server` comes from PATH
(or BENCH_REDIS_SERVER).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
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
RABBITMQ_URL = os.environ.get("BENCH_RABBITMQ_URL")

# A round fails when no row has arrived for this long (a broken worker dead-letters its
# messages instead of writing them).
STALL_S = 60

# The broker settings --durability compares, in the order each round runs them.
FSYNC_SIDES = {
    "everysec": ["--appendonly", "yes", "--appendfsync", "everysec"],
    "always": ["--appendonly", "yes", "--appendfsync", "always"],
    "no-aof": ["--appendonly", "no"],
}


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


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


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

    def wait_for_rows(self, expected: int, log_name: str) -> None:
        """Until `expected` rows are in; fails when none has come for STALL_S."""
        rows, progress_at = 0, time.monotonic()
        while rows < expected:
            time.sleep(0.02)
            if (now := self.rows()) > rows:
                rows, progress_at = now, time.monotonic()
            elif time.monotonic() - progress_at > STALL_S:
                raise SystemExit(f"{rows} of {expected} rows and none for {STALL_S} s; see {log_name}")

    def queued(
        self,
        app_module: str,
        queue: str,
        task: str,
        batch: list[dict],
        *,
        broker_url: str = REDIS_URL,
        result_url: str | None = None,
        name: str | None = None,
        call_times: list[float] | None = None,
    ) -> float:
        """Start a worker, enqueue `batch`, return trades/s from first enqueue to last row.

        For the journal, the seconds each `record_trade` call took go to `call_times`.
        """
        import redis
        from celery import Celery

        from tasks.client import TradeJournal

        name = name or queue
        if broker_url.startswith("redis"):
            redis.Redis.from_url(broker_url).flushdb()
        self.truncate()
        env = {**self.env, "CELERY_BROKER_URL": broker_url}
        if result_url is not None:
            env["CELERY_RESULT_BACKEND"] = result_url
        log = (self.workdir / f"{name}.log").open("ab")
        cwd = ROOT / "bench" if app_module == "plan_style" else self.workdir
        worker = subprocess.Popen(
            [str(BIN / "celery"), "-A", app_module, "worker", "-Q", queue, "-c", "2", "--loglevel", "WARNING",
             "--without-gossip", "--without-mingle", "-n", f"bench-{name}@%h"],
            env=env, cwd=cwd, stdout=log, stderr=log,
        )  # fmt: skip
        sender = Celery(broker=broker_url, set_as_current=False)
        sender.conf.task_serializer = "json"
        try:
            while not sender.control.ping(destination=[f"bench-{name}@{os.uname().nodename}"], timeout=0.5):
                if worker.poll() is not None:
                    raise SystemExit(f"{app_module} worker exited; see {log.name}")
            times = call_times if call_times is not None else []
            clock = time.perf_counter
            started = clock()
            if app_module == "tasks":
                spooled = 0
                with TradeJournal(broker_url, self.workdir / "outbox") as journal:
                    for trade in batch:
                        before = clock()
                        spooled += journal.record_trade(trade).spooled
                        times.append(clock() - before)
                if spooled:
                    raise SystemExit(
                        f"{spooled} trades went to the outbox: the broker at {broker_url} failed"
                    )
            else:
                with sender.producer_or_acquire() as producer:
                    for trade in batch:
                        sender.send_task(task, args=[trade], queue=queue, producer=producer)
            self.wait_for_rows(len(batch), log.name)
            return len(batch) / (time.perf_counter() - started)
        finally:
            sender.close()
            worker.terminate()
            worker.wait(60)
            log.close()

    def in_process(self, batch: list[dict]) -> float:
        import dataclasses

        from sqlalchemy.orm import Session

        from db.models import TradeHistory
        from db.record import TradeRecord

        self.truncate()
        columns = [field.name for field in dataclasses.fields(TradeRecord)]  # the plan's columns
        started = time.perf_counter()
        for trade in batch:
            record = TradeRecord.from_dict(trade)
            with Session(self.engine) as session:
                session.add(TradeHistory(**{name: getattr(record, name) for name in columns}))
                session.commit()
        return len(batch) / (time.perf_counter() - started)


class PrivateRedis:
    """A redis-server of the benchmark's own, on a free port, its data in `directory`."""

    def __init__(self, binary: str, directory: Path, settings: list[str]):
        import redis

        directory.mkdir(parents=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"  # the broker
        self.result_url = f"redis://127.0.0.1:{self.port}/1"  # and the result backend
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory),
             "--save", "", "--daemonize", "no", "--logfile", str(directory / "redis.log"), *settings],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"redis-server did not start; see {directory / 'redis.log'}") from None
                time.sleep(0.05)
        config = self.client.config_get("append*")
        self.appendonly = config["appendonly"]
        self.appendfsync = config["appendfsync"] if self.appendonly == "yes" else "-"

    def reset(self) -> None:
        """Empty every database and, with an AOF, rewrite it small, before a round."""
        self.client.flushall()
        if self.appendonly != "yes":
            return
        self.client.bgrewriteaof()
        while True:
            info = self.client.info("persistence")
            if not (info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]):
                break
            time.sleep(0.05)

    def delayed_fsyncs(self) -> int:
        return int(self.client.info("persistence").get("aof_delayed_fsync", 0))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def filesystem_of(path: Path) -> str:
    """The type of the filesystem `path` is on, from /proc/mounts (Linux); '?' elsewhere."""
    best, kind = "", "?"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        point = fields[1]
        if (resolved == point or resolved.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


class RabbitVhost:
    """A fresh vhost on the machine's RabbitMQ for the benchmark (BENCH_RABBITMQ_URL: none)."""

    def __init__(self) -> None:
        self.name = None
        if RABBITMQ_URL:
            self.url = RABBITMQ_URL
            return
        self.name = f"tradebot_bench_{uuid.uuid4().hex[:6]}"
        self._ctl("add_vhost", self.name)
        self._ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        self.url = f"amqp://guest:guest@127.0.0.1:5672/{self.name}"

    def close(self) -> None:
        if self.name is not None:
            self._ctl("delete_vhost", self.name)

    @staticmethod
    def _ctl(*args: str) -> None:
        command = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        done = subprocess.run([command, *args], capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise SystemExit(f"rabbitmqctl {' '.join(args)} failed (set BENCH_RABBITMQ_URL?): {done.stderr}")


def compare(options: argparse.Namespace) -> None:
    rounds = options.rounds or 3
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as workdir:
        bench = Bench(Path(workdir))
        rabbit = RabbitVhost()
        results: dict[str, list[float]] = {
            "journal": [],
            "journal-rabbitmq": [],
            "plan": [],
            "in-process": [],
        }
        calls: dict[str, list[float]] = {"journal": [], "journal-rabbitmq": []}
        try:
            for round_ in range(1, rounds + 1):
                results["journal"].append(
                    bench.queued(
                        "tasks",
                        "trades",
                        "trades.record",
                        trades(options.trades),
                        call_times=calls["journal"],
                    )
                )
                results["journal-rabbitmq"].append(
                    bench.queued(
                        "tasks",
                        "trades",
                        "trades.record",
                        trades(options.trades),
                        broker_url=rabbit.url,
                        result_url=REDIS_URL,
                        name="trades-rabbitmq",
                        call_times=calls["journal-rabbitmq"],
                    )
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
            rabbit.close()

    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"\ntrades/s, enqueue to durable row (median of {rounds} rounds of {options.trades}):")
    for name, value in median.items():
        print(f"  {name:<16} {value:>9,.0f}")
    print(f"ratio journal / plan-style worker: {median['journal'] / median['plan']:.1f}x (goal: 10x)")
    print(f"ratio journal / in-process add+commit: {median['journal'] / median['in-process']:.1f}x")
    ratio = statistics.median(
        rabbit / redis_
        for rabbit, redis_ in zip(results["journal-rabbitmq"], results["journal"], strict=True)
    )
    print(f"ratio journal over RabbitMQ / over Redis: {ratio:.2f}x (median of the rounds' ratios)")
    for name, times in calls.items():
        times.sort()
        print(
            f"  record_trade, {name:<16} p50 {percentile(times, 0.5) * 1e6:>7,.0f} µs"
            f"  p99 {percentile(times, 0.99) * 1e6:>7,.0f} µs"
        )


def durability(options: argparse.Namespace) -> None:
    rounds = options.rounds or 5
    binary = os.environ.get("BENCH_REDIS_SERVER") or shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is missing (apt-get install redis-server, or set BENCH_REDIS_SERVER)")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split()
    version = next((word[2:] for word in version if word.startswith("v=")), "?")
    rates: dict[str, list[float]] = {side: [] for side in FSYNC_SIDES}
    calls: dict[str, list[float]] = {side: [] for side in FSYNC_SIDES}
    with (
        tempfile.TemporaryDirectory(prefix="bench-ingest-") as workdir,
        tempfile.TemporaryDirectory(prefix="bench-aof-", dir=options.aof_dir) as aof_dir,
    ):
        kind = filesystem_of(Path(aof_dir))
        print(
            f"journal (TradeJournal -> celery -A tasks worker -Q trades -c 2 -> PostgreSQL) against "
            f"redis-server {version}; append-only files in {aof_dir} ({kind})"
        )
        if kind in ("tmpfs", "ramfs"):
            print("  warning: that is memory, fsync costs nothing there; choose a disk with --aof-dir")
        servers: dict[str, PrivateRedis] = {}
        bench = Bench(Path(workdir))
        try:
            for side, settings in FSYNC_SIDES.items():
                servers[side] = PrivateRedis(binary, Path(aof_dir) / side, settings)
                server = servers[side]
                print(
                    f"  {side:<8} port {server.port}: "
                    f"appendonly {server.appendonly}, appendfsync {server.appendfsync}"
                )
            for round_ in range(1, rounds + 1):
                line = []
                for side, server in servers.items():
                    server.reset()
                    times: list[float] = []
                    rate = bench.queued(
                        "tasks",
                        "trades",
                        "trades.record",
                        trades(options.trades),
                        broker_url=server.url,
                        result_url=server.result_url,
                        name=f"trades-{side}",
                        call_times=times,
                    )
                    rates[side].append(rate)
                    calls[side].extend(times)
                    times.sort()
                    line.append(f"{side} {rate:,.0f}/s (p50 {percentile(times, 0.5) * 1e6:,.0f} µs)")
                print(f"round {round_}: " + ", ".join(line), flush=True)
            delayed = {side: server.delayed_fsyncs() for side, server in servers.items()}
        finally:
            bench.close()
            for server in servers.values():
                server.stop()

    print(
        f"\nbroker fsync policy, {rounds} interleaved rounds of {options.trades} trades "
        "(trades/s enqueue to durable row, median; ratio: median of the rounds' ratios to everysec;"
        " record_trade: every call of every round):"
    )
    print(
        f"  {'side':<9} {'trades/s':>9} {'vs everysec':>12} "
        f"{'record_trade p50':>17} {'p99':>9} {'p50 vs everysec':>16}"
    )
    base_p50 = percentile(sorted(calls["everysec"]), 0.5)
    for side in FSYNC_SIDES:
        ratio = statistics.median(
            rate / base for rate, base in zip(rates[side], rates["everysec"], strict=True)
        )
        times = sorted(calls[side])
        p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
        print(
            f"  {side:<9} {statistics.median(rates[side]):>9,.0f} {ratio:>11.2f}x "
            f"{p50 * 1e6:>14,.0f} µs {p99 * 1e6:>6,.0f} µs {p50 / base_p50:>15.2f}x"
        )
    slow = {side: count for side, count in delayed.items() if count}
    if slow:
        print(f"  Redis wrote without waiting for a slow background fsync (aof_delayed_fsync): {slow}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=5000, help="trades per round (default 5000)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds per pipeline (default 3; 5 with --durability)"
    )
    parser.add_argument(
        "--durability",
        action="store_true",
        help="the journal against private redis-servers: appendfsync everysec, always, and no AOF",
    )
    parser.add_argument(
        "--aof-dir",
        default=None,
        help="with --durability: where the append-only files go (default: the temp dir; must be a disk)",
    )
    options = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C: the database, the workers and private servers are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if options.durability:
        durability(options)
    else:
        compare(options)


if __name__ == "__main__":
    main()
