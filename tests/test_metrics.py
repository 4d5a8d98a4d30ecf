"""/metrics under the real web server's workers, with real Celery workers writing their own metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from celery import Celery
from prometheus_client.multiprocess import MultiProcessCollector

from config import get_settings
from db import Spool
from tests.bots.send_task_bot import trade
from tests.conftest import BROKER_DB, BROKER_URL, RESULT_URL
from tests.support.http import call
from tests.support.journal import rows_reach
from tests.support.metrics import scrape, value
from tests.support.model_zoo import ROWS, version_of
from tests.support.processes import Worker, wait_for

LIST = "/api/v1/trades"


def access_log_pids(log: str, path: str) -> set[int]:
    """The web worker processes that answered `path`, from the web's JSON access lines."""
    pids = set()
    for line in log.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "web.access" and entry.get("path") == path:
                pids.add(entry["process"])
    return pids


def test_request_counts_add_up_across_web_workers(clean, start_web):
    # Sync workers (one request at a time each): concurrent requests must spread over both.
    # A short drain: the replacement worker can miss the stop's SIGTERM (see test_web_server).
    web = start_web(workers=2, threads=1, WEB_GRACEFUL_TIMEOUT_S="3")
    sent = 0

    def both_workers_answered() -> bool:
        nonlocal sent
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: call(web.url + LIST + "?limit=1").status, range(16)))
        assert statuses == [200] * 16
        sent += 16
        return len(access_log_pids(web.log(), LIST)) >= 2

    wait_for(both_workers_answered, 60, "requests answered by both web workers")

    def counted() -> float:
        samples = scrape(web.url)
        return value(samples, "http_request_duration_seconds_count", method="GET", route=LIST, status="200")

    # Each worker observes its requests after answering them (web.answered, every 50 ms).
    wait_for(lambda: counted() == sent, 10, f"{sent} requests counted")
    # Whichever worker answers a scrape, it reports the requests of every worker.
    for _ in range(8):
        assert counted() == sent


def test_a_dead_web_worker_keeps_its_counts_and_leaves_no_live_gauge(clean, metrics_dir, start_web):
    # gunicorn's child_exit hook called prometheus_client's mark_process_dead; granian has
    # no such hook. Nothing is lost by that: a dead worker's counters and histograms must
    # keep counting (their files stay), and the live gauges a web process writes are the
    # trades workers' journal_held_entries, which the web imports and never moves, so a
    # dead worker's live files hold 0. A live gauge the web moves would need a hook.
    # A short drain: the replacement worker can miss the stop's SIGTERM (see test_web_server).
    web = start_web(workers=2, threads=1, WEB_GRACEFUL_TIMEOUT_S="3")
    sent = 0

    def counted() -> float:
        samples = scrape(web.url)
        return value(samples, "http_request_duration_seconds_count", method="GET", route=LIST, status="200")

    def both_workers_answered() -> bool:
        nonlocal sent
        assert call(web.url + LIST + "?limit=1").status == 200
        sent += 1
        return len(access_log_pids(web.log(), LIST)) >= 2

    wait_for(both_workers_answered, 60, "requests answered by both web workers")
    wait_for(lambda: counted() == sent, 10, f"{sent} requests counted")
    dead = min(access_log_pids(web.log(), LIST))
    os.kill(dead, signal.SIGKILL)
    wait_for(lambda: dead not in web.worker_pids() and len(web.worker_pids()) == 2, 60, "a new worker")
    assert counted() == sent

    live = sorted((metrics_dir / "web").glob("gauge_live*.db"))
    assert any(path.name.endswith(f"_{dead}.db") for path in live)
    for metric in MultiProcessCollector.merge([str(path) for path in live], accumulate=False):
        assert metric.name == "journal_held_entries", metric.name
        assert {sample.value for sample in metric.samples} <= {0.0}, metric.samples


def test_journal_worker_metrics_and_the_backlog_reach_the_web(
    clean, env, engine, metrics_dir, start_web, tmp_path
):
    web = start_web()
    for number in range(5):
        assert call(web.url + LIST, "POST", trade("m", number)).status == 202
    waiting = scrape(web.url)
    assert value(waiting, "celery_broker_up") == 1
    assert value(waiting, "celery_queue_length", queue="trades") == 5
    assert value(waiting, "celery_queue_length", queue="predict") == 0
    assert value(waiting, "celery_queue_length", queue="predict:direct") == 0

    # A worker in another "container": its own directory under METRICS_DIR.
    worker = Worker({**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir / "worker-trades")}, tmp_path)
    try:
        worker.wait_ready()
        wait_for(rows_reach(engine, 5), 30, "the five trades in the database")

        def written() -> float:
            return value(scrape(web.url), "journal_entries_written_total", outcome="inserted")

        wait_for(lambda: written() == 5, 30, "the worker's five inserts in the web's /metrics")
        assert value(scrape(web.url), "celery_queue_length", queue="trades") == 0
    finally:
        worker.stop()

    # Entries that wait in the replay spool (as a worker leaves them during an outage).
    replay = Spool(Path(env["SPOOL_DIR"]) / "replay")
    replay.append(
        {"kind": "record", "trade": trade("s", number), "job_id": f"job-{number}"} for number in range(3)
    )
    samples = scrape(web.url)
    assert value(samples, "journal_spool_waiting_entries", spool="replay") == 3
    assert (
        value(samples, "journal_spool_bytes", spool="replay")
        == (Path(env["SPOOL_DIR"]) / "replay" / "active.jsonl").stat().st_size
    )
    assert value(samples, "journal_spool_waiting_entries", spool="outbox") == 0


def test_metrics_answer_when_the_broker_does_not(clean, start_web):
    # A broker that accepts connections and never answers: the worst case for a scrape.
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(64)
        silent_broker = f"redis://127.0.0.1:{black_hole.getsockname()[1]}/{BROKER_DB}"
        web = start_web(CELERY_BROKER_URL=silent_broker)
        samples = scrape(web.url)
        assert value(samples, "celery_broker_up") == 0
        assert not [key for key in samples if key[0] == "celery_queue_length"]
        assert value(samples, "journal_spool_waiting_entries", spool="replay") == 0


def test_predictions_are_counted_by_model_version_and_outcome(
    clean, zoo, env, metrics_dir, start_web, tmp_path
):
    worker = Worker(
        {**os.environ, **env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir / "worker-predict")},
        tmp_path,
        queues="predict",
        concurrency=1,
    )
    bot = Celery(broker=BROKER_URL, backend=RESULT_URL, set_as_current=False)
    try:
        worker.wait_ready()
        worker.wait_models_loaded(RESULT_URL, {"xgb.json"})
        web = start_web()
        for _ in range(3):
            answer = call(
                web.url + "/api/v1/ml/predict", "POST", {"model_name": "xgb.json", "features": ROWS.tolist()}
            )
            assert answer.status == 200, answer.body
        # A bot's own calls, one with rows of the wrong width and one for a model that is not there.
        narrow = bot.send_task("ml.predict", args=["xgb.json", [[1.0, 2.0]], None], queue="predict")
        unknown = bot.send_task("ml.predict", args=["no-such-model.json", [[1.0]], None], queue="predict")
        for result in (narrow, unknown):
            result.get(timeout=30, propagate=False)

        version = version_of(get_settings().model_dir / "xgb.json")
        samples = scrape(web.url)
        ok = {"model": "xgb.json", "version": version, "outcome": "ok", "role": "champion"}
        assert value(samples, "predictions_total", **ok) == 3
        mismatch = {"model": "xgb.json", "version": "", "outcome": "input_mismatch", "role": ""}
        assert value(samples, "predictions_total", **mismatch) == 1
        unknown = {"model": "unknown", "version": "", "outcome": "model_not_found", "role": ""}
        assert value(samples, "predictions_total", **unknown) == 1
    finally:
        bot.close()
        worker.stop()
