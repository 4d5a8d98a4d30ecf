"""Soak: a lost worker, a Redis restart and a two-host database outage, again and again.

    make bench-soak BENCH_ARGS="--runs 20"   # or: .venv/bin/python bench/soak_outages.py --runs 20

Each run builds a fresh stack: a private redis-server (the compose service's persistence,
`--appendonly yes --appendfsync always`, on a port of its own), a fresh database on the
shared PostgreSQL (migrated with `flask --app web db upgrade`, dropped afterwards), two
trades workers started as compose starts them (prefork, concurrency 2, hostnames
`trades-a@` and `trades-b@`, each with its own SPOOL_DIR and its own TCP proxy to the
database: two hosts) and beat. A bot (`TradeJournal`) sends trades all along, and:

1. worker A's database goes silent until A holds messages, then A's whole process group
   is SIGKILLed and A started again;
2. Redis is restarted: a clean shutdown (SIGTERM) on odd runs, SIGKILL on even ones
   (`--redis-stop`), and started again on its append-only file; with `--redis-restart
   during-outage`, halfway through step 3 instead, while the pools are busy retrying;
3. the database is cut for both workers while `--outage-trades` trades (and an update
   closing every eighth of them) are sent, and kept down `--outage-s`; then it comes back.

A run passes when every trade is stored, once, with its update: the trades sent
during and after the outage within `--deadline` seconds of the database coming back,
those the killed worker held within the visibility timeout of its death (plus two sweeps).
It prints one line per run and a summary; a failing run also says where the missing
trades are (queue, unacknowledged, spool, outbox, dead letters) and keeps its logs.

The soak shortens the visibility timeout (`--visibility-timeout`, 120 s against
production's 300) so that a run lasts about four minutes; `--deadline` (60 s) stays below
it, so a message left waiting for the visibility timeout still fails the run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import harness
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.support is not installed with the project

from tasks.client import TradeJournal  # noqa: E402
from tasks.contract import DEAD_LETTER_SPOOL, OUTBOX_SPOOL, REPLAY_SPOOL, client_app  # noqa: E402
from tests.support.netfault import TcpProxy  # noqa: E402

BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
HOST = socket.gethostname()
SWEEP_S = 10  # kombu's sweep for timed-out messages: every tenth of the timeout, at most 10 s


# -- the stack ---------------------------------------------------------------------------


class Broker:
    """A redis-server of the soak's own with compose's persistence, restartable on its port."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = harness.free_port()
        self.process: subprocess.Popen | None = None
        self.start()

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> None:
        argv = [
            shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "", "--appendonly", "yes", "--appendfsync", "always",
        ]  # fmt: skip
        self.process = harness.start_process(
            argv, dict(os.environ), self.directory, self.directory / "redis.log"
        )
        wait_until(self._answers, 30, "redis-server to load its append-only file")

    def stop(self, how: str) -> None:
        """`term`: Redis's own shutdown (it fsyncs and exits); `kill`: SIGKILL."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
            self.process.wait(30)

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False


class Worker:
    """`celery -A tasks worker -Q trades` as compose starts it, in a process group of its own."""

    def __init__(self, name: str, env: dict[str, str], directory: Path):
        self.name, self.env, self.directory = name, env, directory
        self.hostname = f"{name}@{HOST}"
        self.process = self.start()

    def start(self) -> subprocess.Popen:
        argv = [
            str(BIN / "celery"), "-A", "tasks", "worker", "-Q", "trades", "--hostname", f"{self.name}@%h",
            "--concurrency", "2", "--loglevel", "INFO",
        ]  # fmt: skip
        self.process = harness.start_process(
            argv, self.env, self.directory, self.directory / f"{self.name}.log"
        )
        return self.process

    def kill(self) -> None:
        """SIGKILL to the main process and its pool at once: a lost host."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@dataclass
class Stack:
    directory: Path
    database: str
    database_url: str
    broker: Broker
    proxies: dict[str, TcpProxy]
    workers: dict[str, Worker]
    beat: subprocess.Popen | None = None

    @property
    def spools(self) -> list[Path]:
        return [self.directory / name / "spool" for name in self.workers]


def build_stack(directory: Path, visibility_timeout_s: int) -> Stack:
    (directory / "redis").mkdir()
    broker = Broker(directory / "redis")
    database = f"tradebot_soak_{uuid.uuid4().hex[:8]}"
    try:
        url = harness.scratch_database(PG_ADMIN_URL, database)
    except BaseException:
        broker.stop("term")
        raise
    stack = Stack(directory, database, url, broker, {}, {})
    try:
        base = {
            **os.environ,
            "DATABASE_URL": url,
            "CELERY_BROKER_URL": broker.url(0),
            "CELERY_RESULT_BACKEND": broker.url(1),
            "BROKER_VISIBILITY_TIMEOUT_S": str(visibility_timeout_s),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "LOG_FORMAT": "text",
        }
        migrate = subprocess.run(
            [str(BIN / "flask"), "--app", "web", "db", "upgrade"],
            env={**base, "SPOOL_DIR": str(directory / "spool")},
            cwd=directory,
            capture_output=True,
            text=True,
        )
        if migrate.returncode:
            raise SystemExit(f"migration failed:\n{migrate.stderr}")
        target = make_url(url)
        for name in ("trades-a", "trades-b"):
            host_dir = directory / name
            host_dir.mkdir()
            proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
            stack.proxies[name] = proxy
            env = {
                **base,
                "DATABASE_URL": target.set(host="127.0.0.1", port=proxy.port).render_as_string(False),
                "SPOOL_DIR": str(host_dir / "spool"),
                "MODEL_DIR": str(host_dir / "models"),
            }
            stack.workers[name] = Worker(name, env, host_dir)
        beat_argv = [
            str(BIN / "celery"), "-A", "tasks", "beat", "--scheduler", "celery.beat:Scheduler",
            "--loglevel", "INFO", "--schedule", str(directory / "celerybeat-schedule"),
        ]  # fmt: skip
        stack.beat = harness.start_process(
            beat_argv, {**base, "SPOOL_DIR": str(directory / "spool")}, directory, directory / "beat.log"
        )
        wait_for_workers(stack, 90)
    except BaseException:
        tear_down(stack)
        raise
    return stack


def tear_down(stack: Stack) -> None:
    processes = [(worker.process, True) for worker in stack.workers.values()]
    if stack.beat is not None:
        processes.append((stack.beat, True))
    harness.stop_processes(processes, grace_s=20)
    stack.broker.stop("term")
    for proxy in stack.proxies.values():
        proxy.close()
    harness.scratch_database(PG_ADMIN_URL, stack.database, drop=True)


def wait_for_workers(stack: Stack, timeout_s: float) -> None:
    app = client_app("soak-ping", stack.broker.url(0), timeout_s=1, socket_timeout_s=2)
    try:

        def all_answer() -> bool:
            for worker in stack.workers.values():
                if worker.process.poll() is not None:
                    raise SystemExit(f"{worker.name} exited; see {worker.directory / worker.name}.log")
            try:
                replies = app.control.ping(
                    destination=[w.hostname for w in stack.workers.values()], timeout=1
                )
            except Exception:  # the broker restarting: ask again
                return False
            return {name for reply in replies for name in reply} >= {
                w.hostname for w in stack.workers.values()
            }

        wait_until(all_answer, timeout_s, "both workers to answer a ping")
    finally:
        app.close()


def wait_until(condition, timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)
    return result


# -- the bot -------------------------------------------------------------------------------


class Bot:
    """Sends trades at a steady rate from a thread; `phase` names the ids it sends now."""

    def __init__(self, broker_url: str, outbox_dir: Path, rate: float):
        self.journal = TradeJournal(broker_url, outbox_dir, retry_interval_s=1.0)
        self.rate = rate
        self.phase = "before"
        self.sent: dict[str, list[str]] = {}
        self.updated: list[str] = []
        self.spooled = 0
        self._tag = uuid.uuid4().hex[:6]
        self._start = datetime.now(UTC)
        self._stop = threading.Event()
        self._quota: int | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def send_phase(self, phase: str, count: int | None = None) -> None:
        """From now on send ids of `phase`; with `count`, send that many and then pause."""
        self._done.clear()
        self.phase, self._quota = phase, count

    def wait_phase_sent(self, timeout_s: float) -> None:
        if not self._done.wait(timeout_s):
            raise SystemExit(f"the bot did not send its {self.phase} trades within {timeout_s:.0f} s")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.journal.close()

    def _run(self) -> None:
        interval, next_at, number = 1.0 / self.rate, time.monotonic(), 0
        while not self._stop.is_set():
            phase, ids = self.phase, self.sent.setdefault(self.phase, [])
            if self._quota is not None and len(ids) >= self._quota:
                self._done.set()
                time.sleep(0.05)
                next_at = time.monotonic()
                continue
            trade_id = f"{self._tag}-{phase}-{len(ids)}"
            sent = self.journal.record_trade(self._trade(trade_id, number))
            ids.append(trade_id)
            self.spooled += sent.spooled
            if phase == "outage" and len(ids) % 8 == 0:
                self.journal.update_trade(trade_id, closed=True, exit_price=41_000.0, realized_pnl=10.0)
                self.updated.append(trade_id)
            number += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def _trade(self, trade_id: str, number: int) -> dict:
        return {
            "trade_id": trade_id,
            "symbol": ("BTC/USDT", "ETH/USDT")[number % 2],
            "timestamp": (self._start + timedelta(milliseconds=number)).isoformat(),
            "side": "buy",
            "order_type": "market",
            "amount": 0.01,
            "entry_price": 40_000.0 + number,
        }


# -- one run -------------------------------------------------------------------------------


@dataclass
class Outcome:
    run: int
    redis_stop: str
    sent: int = 0
    stored: int = 0
    lost: int = 0
    doubled: int = 0
    dead_lettered: int = 0
    updates_missing: int = 0
    held_at_kill: int = 0
    drain_s: float | None = None  # the outage's trades, after the database came back
    all_s: float | None = None  # every trade, the killed worker's included
    failures: list[str] = field(default_factory=list)
    where: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def line(self) -> str:
        drain = "-" if self.drain_s is None else f"{self.drain_s:.1f}"
        every = "-" if self.all_s is None else f"{self.all_s:.1f}"
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.failures)
        return (
            f"run {self.run:2d} redis={self.redis_stop:4s} sent={self.sent} stored={self.stored} "
            f"lost={self.lost} doubled={self.doubled} dead={self.dead_lettered} "
            f"updates_missing={self.updates_missing} held_at_kill={self.held_at_kill} "
            f"drain_s={drain} all_s={every} {verdict}"
        )


def run_once(number: int, args: argparse.Namespace, directory: Path) -> Outcome:
    how = args.redis_stop if args.redis_stop != "alternate" else ("term", "kill")[(number + 1) % 2]
    outcome = Outcome(number, how)
    stack = build_stack(directory, args.visibility_timeout)
    bot = Bot(stack.broker.url(0), directory / "bot", args.rate)
    try:
        say(number, "stack up; the bot sends")
        time.sleep(args.warm_s)

        # 1. A whole worker killed while it holds messages, then started again.
        victim, broker = stack.workers["trades-a"], stack.broker.client()
        stack.proxies["trades-a"].stall()
        wait_until(lambda: broker.hlen("unacked") >= args.hold, 60, f"{args.hold} unacknowledged messages")
        victim.kill()
        killed_at = time.monotonic()
        held = held_trade_ids(broker)
        outcome.held_at_kill = len(held)
        stack.proxies["trades-a"].cut()  # its silent connections die with it
        stack.proxies["trades-a"].resume()
        stack.proxies["trades-a"].restore()
        victim.start()
        wait_for_workers(stack, 90)
        say(
            number, f"trades-a killed holding {len(held)} (all held: {broker.hlen('unacked')}), started again"
        )
        time.sleep(args.settle_s)

        # 2. Redis restarted (or, with --redis-restart during-outage, in step 3).
        if args.redis_restart == "before-outage":
            restart_broker(stack, how, number)
            time.sleep(args.settle_s)

        # 3. The database cut for both hosts while the outage's trades are sent.
        for proxy in stack.proxies.values():
            proxy.cut()
        cut_at = time.monotonic()
        bot.send_phase("outage", args.outage_trades)
        if args.redis_restart == "during-outage":
            time.sleep(args.outage_s / 2)  # the pools busy retrying, small batches queued behind
            restart_broker(stack, how, number)
        bot.wait_phase_sent(args.outage_trades / args.rate * 3 + 60)
        time.sleep(max(0.0, args.outage_s - (time.monotonic() - cut_at)))
        for proxy in stack.proxies.values():
            proxy.restore()
        back_at = time.monotonic()
        bot.send_phase("after", args.after_trades)
        say(number, f"database back after {back_at - cut_at:.0f} s; waiting for every trade")

        killed_due = killed_at + args.visibility_timeout + 2 * SWEEP_S + 15
        watch(
            stack,
            bot,
            outcome,
            held,
            back_at,
            back_at + args.deadline,
            max(back_at + args.deadline, killed_due),
        )
    finally:
        bot.close()
        tear_down(stack)
    return outcome


def restart_broker(stack: Stack, how: str, number: int) -> None:
    stack.broker.stop(how)
    time.sleep(1)
    stack.broker.start()
    wait_for_workers(stack, 120)
    say(number, f"redis stopped ({how}) and started again; both workers answer")


def watch(stack: Stack, bot: Bot, outcome: Outcome, held: set[str], back_at: float, due: float, last: float):
    """Poll the journal until every trade is in, or `last` (and a while longer, to time a late drain)."""
    engine = create_engine(stack.database_url)
    expected = {trade_id for ids in bot.sent.values() for trade_id in ids}
    prompt = expected - held  # what must be in within the deadline
    outage = set(bot.sent.get("outage", []))
    report_until = last + 120  # a failing run still says when the stragglers came
    late, lost = False, False
    try:
        while True:
            with engine.connect() as connection:
                rows = connection.execute(text("SELECT trade_id, closed FROM trade_history")).all()
            stored = {trade_id for trade_id, _ in rows}
            closed = {trade_id for trade_id, is_closed in rows if is_closed}
            now = time.monotonic()
            if outcome.drain_s is None and outage <= stored and set(bot.updated) <= closed:
                outcome.drain_s = now - back_at
            if outcome.all_s is None and expected <= stored and set(bot.updated) <= closed:
                outcome.all_s = now - back_at
            if not late and now > due and not prompt <= stored:
                late = True
                missing = len(prompt - stored)
                outcome.failures.append(
                    f"{missing} not stored {now - back_at:.0f} s after the database came back"
                )
                outcome.where = locate_missing(stack, bot, outcome, stored)
            if not lost and now > last and not expected <= stored:
                lost = True
                outcome.failures.append(
                    f"{len(expected - stored)} not stored when the killed worker's were due"
                )
                outcome.where = locate_missing(stack, bot, outcome, stored)
            if outcome.all_s is not None or now > report_until:
                break
            time.sleep(0.5)
        outcome.sent, outcome.stored = len(expected), len(expected & stored)
        outcome.lost = len(expected - stored)
        outcome.doubled = len(rows) - len(stored)
        outcome.updates_missing = len(set(bot.updated) - closed)
        outcome.dead_lettered = sum(count_lines(spool / DEAD_LETTER_SPOOL) for spool in stack.spools)
        if outcome.doubled:
            outcome.failures.append(f"{outcome.doubled} trades stored twice")
        if outcome.dead_lettered:
            outcome.failures.append(f"{outcome.dead_lettered} dead letters")
        if outcome.lost or outcome.updates_missing:
            outcome.failures.append(
                f"{outcome.lost} lost, {outcome.updates_missing} updates missing at the end"
            )
    finally:
        engine.dispose()


# -- where a missing trade is --------------------------------------------------------------


def message_trade_id(message: dict) -> str | None:
    """The trade id a kombu Redis message carries (record or update), None if it carries none."""
    body = message.get("body")
    if (message.get("properties") or {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    task_args = json.loads(body)[0]
    first = task_args[0] if task_args else None
    return first.get("trade_id") if isinstance(first, dict) else first


def held_trade_ids(broker: redis.Redis) -> set[str]:
    return {
        trade_id
        for value in broker.hvals("unacked")
        if (trade_id := message_trade_id(json.loads(value)[0])) is not None
    }


def locate_missing(
    stack: Stack, bot: Bot, outcome: Outcome, stored: set[str] | None = None
) -> dict[str, int]:
    if stored is None:
        engine = create_engine(stack.database_url)
        with engine.connect() as connection:
            stored = set(connection.scalars(text("SELECT trade_id FROM trade_history")))
        engine.dispose()
    missing = {trade_id for ids in bot.sent.values() for trade_id in ids} - stored
    where: dict[str, int] = {"missing": len(missing)}
    try:
        broker = stack.broker.client()
        queued = {message_trade_id(json.loads(raw)) for raw in broker.lrange("trades", 0, -1)}
        where["in queue"] = len(missing & queued)
        now, unacked = time.time(), {}
        for tag, value in broker.hgetall("unacked").items():
            unacked[message_trade_id(json.loads(value)[0])] = tag
        scores = dict(broker.zrange("unacked_index", 0, -1, withscores=True))
        stuck = [unacked[trade_id] for trade_id in missing if trade_id in unacked]
        where["unacked"] = len(stuck)
        if stuck:
            ages = [now - scores[tag] for tag in stuck if tag in scores]
            where["unacked not indexed"] = len(stuck) - len(ages)
            if ages:
                where["unacked oldest age s"] = round(max(ages))
                where["unacked newest age s"] = round(min(ages))
        where["unacked mutex ttl ms"] = broker.pttl("unacked_mutex")
    except redis.RedisError as exc:
        where[f"broker unreadable: {exc}"] = 0
    where["replay spools"] = sum(count_lines(spool / REPLAY_SPOOL) for spool in stack.spools)
    where["bot outbox"] = count_lines(stack.directory / "bot" / OUTBOX_SPOOL)
    say(outcome.run, f"missing trades: {where}")
    return where


def count_lines(directory: Path) -> int:
    """Entries left in a spool folder (applied segments are deleted, so a rough count)."""
    if not directory.is_dir():
        return 0
    return sum(
        sum(1 for line in path.read_bytes().splitlines() if line.strip())
        for path in directory.glob("*.jsonl")
    )


# -- main ----------------------------------------------------------------------------------


def say(run: int, message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} run {run}: {message}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--outage-trades", type=int, default=1600)
    parser.add_argument("--after-trades", type=int, default=200, help="sent once the database is back")
    parser.add_argument("--rate", type=float, default=80, help="trades per second the bot sends")
    parser.add_argument("--outage-s", type=float, default=40, help="the shortest database outage")
    parser.add_argument("--hold", type=int, default=200, help="unacknowledged messages before the kill")
    parser.add_argument("--visibility-timeout", type=int, default=120, help="BROKER_VISIBILITY_TIMEOUT_S")
    parser.add_argument("--deadline", type=float, default=60, help="seconds after the database is back")
    parser.add_argument("--redis-stop", choices=["alternate", "term", "kill"], default="alternate")
    parser.add_argument(
        "--redis-restart",
        choices=["before-outage", "during-outage"],
        default="before-outage",
        help="when Redis restarts: before the database outage (the issue's order) or halfway through it",
    )
    parser.add_argument("--warm-s", type=float, default=5)
    parser.add_argument("--settle-s", type=float, default=5)
    parser.add_argument("--keep-going", action="store_true", help="go on after a failing run")
    parser.add_argument("--workdir", type=Path, help="where runs keep logs (default: a temporary folder)")
    args = parser.parse_args()

    # SIGTERM ends the soak as Ctrl-C does: every run's finally tears its stack down.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tradebot-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"logs under {workdir}", flush=True)
    outcomes: list[Outcome] = []
    try:
        for number in range(1, args.runs + 1):
            directory = workdir / f"run-{number:02d}"
            directory.mkdir()
            outcome = run_once(number, args, directory)
            outcomes.append(outcome)
            print(outcome.line(), flush=True)
            if outcome.passed:
                shutil.rmtree(directory, ignore_errors=True)
            elif not args.keep_going:
                break
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        summarize(outcomes)
    sys.exit(0 if outcomes and all(o.passed for o in outcomes) else 1)


def summarize(outcomes: list[Outcome]) -> None:
    passed = sum(o.passed for o in outcomes)
    drains = sorted(o.drain_s for o in outcomes if o.drain_s is not None)
    print(f"\n{passed} of {len(outcomes)} runs passed", flush=True)
    if drains:
        print(
            f"drain after the database came back: min {drains[0]:.1f} s, max {drains[-1]:.1f} s", flush=True
        )
    for outcome in outcomes:
        if not outcome.passed:
            print(f"run {outcome.run}: {'; '.join(outcome.failures)} {outcome.where}", flush=True)


if __name__ == "__main__":
    main()
