"""Request ids from the web into the workers' log lines; JSON logs of web, worker and beat."""

from __future__ import annotations

import json
import re
import uuid

from tests.bots.send_task_bot import trade
from tests.support.http import call
from tests.support.journal import rows_reach
from tests.support.processes import Worker, wait_for


def json_lines(log: str) -> list[dict]:
    # Lines printed outside logging (Celery's warning about running as root) are not JSON.
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def test_a_request_id_follows_a_trade_from_the_web_into_the_worker_log(
    clean, env, engine, start_web, tmp_path
):
    worker = Worker({**env, "LOG_FORMAT": "json"}, tmp_path)
    try:
        worker.wait_ready()
        web = start_web()
        request_id = f"trace-{uuid.uuid4().hex}"
        answer = call(web.url + "/api/v1/trades", "POST", trade("r", 1), {"X-Request-ID": request_id})
        assert answer.status == 202
        assert answer.headers["X-Request-ID"] == request_id
        trade_id = answer.json()["trade_id"]
        wait_for(rows_reach(engine, 1), 30, "the trade in the database")

        def worker_lines() -> list[dict]:
            return [line for line in json_lines(worker.log()) if line.get("request_id") == request_id]

        lines = wait_for(worker_lines, 30, "a worker log line with the request id")
        assert any(trade_id in line["message"] and line["logger"] == "tasks.worker.trades" for line in lines)

        def access() -> list[dict]:  # written after the answer (web.answered)
            return [line for line in json_lines(web.log()) if line.get("request_id") == request_id]

        lines = wait_for(access, 10, "the request's access line")
        assert [(line["logger"], line["method"], line["status"]) for line in lines] == [
            ("web.access", "POST", 202)
        ]
        # The worker's own lines are JSON too, with the fields a log pipeline indexes.
        ready = [line for line in json_lines(worker.log()) if line["message"].endswith(" ready.")]
        assert ready and {"time", "level", "logger", "process", "request_id"} <= ready[0].keys()
    finally:
        worker.stop()


def test_the_web_keeps_a_sane_request_id_and_replaces_any_other(http):
    assert http.get("/api/v1/trades?limit=1", headers={"X-Request-ID": "abc-123"}).headers[
        "X-Request-ID"
    ] == ("abc-123")
    fresh = [http.get("/api/v1/trades?limit=1").headers["X-Request-ID"] for _ in range(2)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in fresh)
    assert fresh[0] != fresh[1]
    for insane in ("x" * 129, "two words", 'quote"d', "<script>"):
        replaced = http.get("/api/v1/trades?limit=1", headers={"X-Request-ID": insane}).headers[
            "X-Request-ID"
        ]
        assert re.fullmatch(r"[0-9a-f]{32}", replaced), insane
    # Errors carry it as well.
    missing = http.get("/api/v1/trades/no-such-trade", headers={"X-Request-ID": "err-1"})
    assert missing.status_code == 404
    assert missing.headers["X-Request-ID"] == "err-1"


def test_beat_logs_json_lines_when_asked(start_beat):
    beat = start_beat(LOG_FORMAT="json")
    lines = wait_for(
        lambda: [line for line in json_lines(beat.log()) if line["logger"] == "celery.beat"], 30, "beat"
    )
    assert lines[0]["level"] == "INFO"


def test_workers_log_readable_text_unless_asked_for_json(env, start_worker):
    worker = start_worker(LOG_FORMAT="text")  # the default
    assert json_lines(worker.log()) == []
    assert " ready." in worker.log()
