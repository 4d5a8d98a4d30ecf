"""Prediction latency and throughput through the full stack, against an in-process baseline.

    make bench-predict        # or: .venv/bin/python bench/predict.py --seconds 10 --rounds 2

Both sides serve the 5-feature demo XGBoost model over HTTP from gunicorn with the same
settings. The stack is HTTP -> Flask -> Redis -> `celery -A tasks worker -Q predict` ->
back; the baseline (bench/inprocess_app.py) predicts inside the web process, the plan's
design. One interleaved run measures single-row latency at 1 client (p50, p99), throughput
at 32 clients (wrk, from Debian's `wrk` package), and a 10,000-row request, then prints
the ratios. A third side, `relay` (bench/relay_app.py), sends the same predictions over the
same lane and worker with none of the API's per-request work, so the output separates the
cost of the dispatch from the cost of that work. A fourth, `no-log`, is the stack with
PREDICTION_LOG=off (its own web server, worker and Redis databases): `stack / no-log` is
what the prediction log costs. Needs Redis and PostgreSQL (a scratch database for the
prediction log, created and dropped here; BENCH_PG_ADMIN_URL says where).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import redis
from harness import free_port, scratch_database
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
BROKER_DB, RESULT_DB = os.environ.get("BENCH_REDIS_DBS", "10,11").split(",")
NOLOG_BROKER_DB, NOLOG_RESULT_DB = os.environ.get("BENCH_NOLOG_REDIS_DBS", "12,13").split(",")
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
ROW = [1.5, 2.3, 0.8, 1.2, 0.5]
BODY = json.dumps({"model_name": "xgboost_model.json", "features": [ROW]})


def wait_http(port: int, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a server exited with {process.returncode}")
        try:
            status, _ = request(port, BODY)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"nothing answered on port {port}")


def request(port: int, body: str, connection: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = connection is None
    connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/api/v1/ml/predict", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    if own:
        connection.close()
    return response.status, data


def latencies(ports: dict[str, int], count: int) -> dict[str, list[float]]:
    """Single-client latencies, one request to each side in turn: a slow moment of the
    host hits both sides alike instead of one side's whole block."""
    connections = {
        side: http.client.HTTPConnection("127.0.0.1", port, timeout=30) for side, port in ports.items()
    }
    samples: dict[str, list[float]] = {side: [] for side in ports}
    for _ in range(count):
        for side, connection in connections.items():
            started = time.perf_counter()
            status, _ = request(ports[side], BODY, connection)
            samples[side].append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise SystemExit(f"{side} answered {status}")
    for connection in connections.values():
        connection.close()
    return samples


def cpu_seconds(processes: dict[str, list[subprocess.Popen]], redis_client) -> dict[str, float]:
    """CPU time used so far by each side's processes (and their children), by Redis and by PostgreSQL."""
    used = {}
    for name, group in processes.items():
        total = 0.0
        for process in group:
            try:
                root = psutil.Process(process.pid)
                for member in [root, *root.children(recursive=True)]:
                    times = member.cpu_times()
                    total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        used[name] = total
    info = redis_client.info("cpu")
    used["redis"] = info["used_cpu_user"] + info["used_cpu_sys"]
    # The prediction log's writes cost the database server too (its backends persist:
    # the workers keep pooled connections).
    used["postgres"] = 0.0
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "postgres":
            try:
                times = process.cpu_times()
                used["postgres"] += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    return used


def logged_predictions(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.scalar(text("SELECT count(*) FROM prediction_log"))
    finally:
        engine.dispose()


def throughput(port: int, seconds: int, workdir: Path) -> tuple[float, int]:
    script = workdir / "post.lua"
    lua = [f"wrk.method = {json.dumps('POST')}", f"wrk.body = {json.dumps(BODY)}"]
    lua.append('wrk.headers["Content-Type"] = "application/json"')
    script.write_text("\n".join(lua) + "\n")
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", "32", "-d", f"{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}/api/v1/ml/predict"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out:
        raise SystemExit(f"errors under load on port {port}:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), int(
        re.search(r"(\d+) requests in", out).group(1)
    )


def big_request(port: int, rows: int = 10_000) -> float:
    rng = random.Random(1)
    body = json.dumps(
        {
            "model_name": "xgboost_model.json",
            "features": [[rng.gauss(0, 1) for _ in ROW] for _ in range(rows)],
        }
    )
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        status, _ = request(port, body)
        timings.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise SystemExit(f"port {port} answered {status} to {rows} rows")
    return statistics.median(timings)


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per measurement")
    parser.add_argument("--requests", type=int, default=300, help="single-client requests per round")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=16)
    parser.add_argument(
        "--worker-pool", default="threads", help="the predict worker's pool (threads, as make run starts it)"
    )
    parser.add_argument("--worker-concurrency", type=int, default=4)
    parser.add_argument(
        "--no-relay",
        dest="relay",
        action="store_false",
        help="leave out the third side: the dispatch path without the API's per-request work",
    )
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/predict.py needs wrk: apt-get install wrk")

    workdir = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    database = f"bench_predict_{workdir.name.rsplit('-', 1)[-1].lower()}"
    database_url = scratch_database(PG_ADMIN, database)
    env = {
        **os.environ,
        "MODEL_DIR": str(workdir / "model_store"),  # not "models": that would shadow the package
        "SPOOL_DIR": str(workdir / "spool"),
        "CELERY_BROKER_URL": f"{REDIS}/{BROKER_DB}",
        "CELERY_RESULT_BACKEND": f"{REDIS}/{RESULT_DB}",
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": database_url,
    }
    nolog_env = {
        **env,
        "CELERY_BROKER_URL": f"{REDIS}/{NOLOG_BROKER_DB}",
        "CELERY_RESULT_BACKEND": f"{REDIS}/{NOLOG_RESULT_DB}",
        "PREDICTION_LOG": "off",
    }
    for command in (["db", "upgrade"], ["models", "train-demo"]):
        subprocess.run(
            [str(BIN / "flask"), "--app", "web", *command], env=env, check=True, capture_output=True
        )
    stack_port, baseline_port, relay_port, nolog_port = free_port(), free_port(), free_port(), free_port()
    gunicorn = [
        str(BIN / "gunicorn"),
        "--no-control-socket",  # gunicorn 27's default socket path is one per user
        # A listening socket per worker: the kernel spreads wrk's 32 connections over
        # both. With one shared socket the first idle worker accepts them, and a run
        # where one worker holds nearly all measures the accept lottery (both sides).
        "--reuse-port",
        "--workers",
        str(options.web_workers),
        "--threads",
        str(options.web_threads),
    ]
    log = (workdir / "servers.log").open("ab")
    worker = [
        str(BIN / "celery"),
        "-A",
        "tasks",
        "worker",
        "-Q",
        "predict",
        "-P",
        options.worker_pool,
        "-c",
        str(options.worker_concurrency),
        "--loglevel",
        "WARNING",
    ]
    stack = [*gunicorn, "--bind", f"127.0.0.1:{stack_port}", "web:create_app()"]
    baseline = [*gunicorn, "--bind", f"127.0.0.1:{baseline_port}", "--chdir", str(ROOT / "bench")]
    commands = [worker, stack, [*baseline, "inprocess_app:create_app()"]]
    if options.relay:
        relay = [*gunicorn, "--bind", f"127.0.0.1:{relay_port}", "--chdir", str(ROOT / "bench")]
        commands.append([*relay, "relay_app:create_app()"])
    processes = [
        subprocess.Popen(command, env=env, cwd=workdir, stdout=log, stderr=log) for command in commands
    ]
    nolog = [
        subprocess.Popen(command, env=nolog_env, cwd=workdir, stdout=log, stderr=log)
        for command in (worker, [*gunicorn, "--bind", f"127.0.0.1:{nolog_port}", "web:create_app()"])
    ]
    try:
        wait_http(stack_port, processes[1])
        wait_http(baseline_port, processes[2])
        wait_http(nolog_port, nolog[1])
        sides = {"stack": stack_port, "no-log": nolog_port, "baseline": baseline_port}
        groups = {
            "web": [processes[1]],
            "worker": [processes[0]],
            "baseline": [processes[2]],
            "web-nolog": [nolog[1]],
            "worker-nolog": [nolog[0]],
        }
        if options.relay:
            wait_http(relay_port, processes[3])
            sides["relay"] = relay_port
            groups["relay"] = [processes[3]]
        latencies(sides, 50)  # warm up: connections, first predictions

        single = {side: [] for side in sides}
        rates = {side: [] for side in sides}
        big = {side: [] for side in sides}
        cpu = {side: {} for side in sides}
        redis_client = redis.Redis.from_url(f"{REDIS}/{BROKER_DB}")
        for round_ in range(1, options.rounds + 1):
            for side, samples in latencies(sides, options.requests).items():
                single[side] += samples
            for side, port in sides.items():
                before = cpu_seconds(groups, redis_client)
                rate, served = throughput(port, options.seconds, workdir)
                after = cpu_seconds(groups, redis_client)
                rates[side].append(rate)
                for name in after:
                    cpu[side].setdefault(name, []).append((after[name] - before[name]) / served * 1e6)
                big[side].append(big_request(port))
            print(
                f"round {round_}: " + ", ".join(f"{side} {rates[side][-1]:,.0f} req/s" for side in sides),
                flush=True,
            )

        print(f"\n{'':<10} {'p50 ms':>8} {'p99 ms':>8} {'32 clients req/s':>17} {'10k rows ms':>12}")
        for side in sides:
            print(
                f"{side:<10} {percentile(single[side], 0.5):>8.2f} {percentile(single[side], 0.99):>8.2f}"
                f" {statistics.median(rates[side]):>17,.0f} {statistics.median(big[side]):>12.1f}"
            )
        print("\nCPU per request at 32 clients, microseconds (wrk's own not counted):")
        for side in sides:
            busy = {name: statistics.median(values) for name, values in cpu[side].items()}
            busy = {name: value for name, value in busy.items() if value >= 1}
            print(f"  {side:<10} " + ", ".join(f"{name} {value:,.0f}" for name, value in busy.items()))
        print()
        for side in [side for side in sides if side != "baseline"]:
            p50 = percentile(single[side], 0.5) / percentile(single["baseline"], 0.5)
            # Each round's throughput runs follow each other: the ratio within a round is
            # the least disturbed by the host's slow spells.
            pairs = zip(rates[side], rates["baseline"], strict=True)
            rate = statistics.median(own / base for own, base in pairs)
            goal = "   (goal <= 1.5x)" if side == "stack" else ""
            print(f"p50 latency ratio ({side} / in-process): {p50:.2f}x{goal}")
            goal = "   (goal >= 1.0x)" if side == "stack" else ""
            print(
                f"throughput ratio at 32 clients ({side} / in-process, median of the rounds' ratios): "
                f"{rate:.2f}x{goal}"
            )
        # What the log costs: the stack against itself with PREDICTION_LOG=off.
        p50 = percentile(single["stack"], 0.5) / percentile(single["no-log"], 0.5)
        pairs = zip(rates["stack"], rates["no-log"], strict=True)
        rate = statistics.median(own / base for own, base in pairs)
        print(f"\nprediction log's cost: p50 ratio (stack / no-log) {p50:.2f}x, throughput ratio {rate:.2f}x")
    finally:
        for process in [*processes, *nolog]:
            process.send_signal(signal.SIGTERM)
        for process in [*processes, *nolog]:
            process.wait(30)
        log.close()
        try:
            print(f"predictions logged by the stack: {logged_predictions(database_url):,}")
        finally:
            scratch_database(PG_ADMIN, database, drop=True)
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
